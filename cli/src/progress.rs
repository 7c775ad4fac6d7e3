//! Progress for long work: a spinner with elapsed time on a terminal, plain lines otherwise.

use std::io::IsTerminal;
use std::time::Duration;

use ikv_core::clock::Stopwatch;

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    started: Stopwatch,
    what: String,
}

impl Progress {
    pub fn start(what: &str) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
                bar.set_style(style);
            }
            bar.set_message(what.to_owned());
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        if bar.is_none() {
            eprintln!("{what}...");
        }
        Progress {
            bar,
            started: Stopwatch::start(),
            what: what.to_owned(),
        }
    }

    pub fn finish(self, outcome: &str) {
        let secs = self.started.elapsed().as_secs_f64();
        match self.bar {
            Some(bar) => bar.finish_with_message(format!("{}: {outcome} ({secs:.2} s)", self.what)),
            None => eprintln!("{}: {outcome} ({secs:.2} s)", self.what),
        }
    }
}
