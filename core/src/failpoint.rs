//! Failpoints for crash tests, compiled only with the `failpoints` feature (which only the
//! test crate turns on): named places in the write, snapshot, retention and reader paths where
//! a test process can be stopped, so that a test's `kill -9` provably lands there.
//!
//! `IKV_FAILPOINTS="name=N[,name=N...]"` arms a point: its N-th hit in the process prints
//! `failpoint NAME N` on stdout (flushed) and then blocks the calling thread forever, waiting
//! for the test to kill the process. Without the variable, or without the feature, a point
//! does nothing; without the feature, it is not even compiled.

#[cfg(feature = "failpoints")]
use std::collections::HashMap;
#[cfg(feature = "failpoints")]
use std::io::Write;
#[cfg(feature = "failpoints")]
use std::sync::{Mutex, OnceLock};

#[cfg(feature = "failpoints")]
struct Armed {
    /// Point name → (hit number to stop at, hits so far).
    points: Mutex<HashMap<String, (u64, u64)>>,
}

#[cfg(feature = "failpoints")]
fn armed() -> &'static Armed {
    static ARMED: OnceLock<Armed> = OnceLock::new();
    ARMED.get_or_init(|| {
        let spec = std::env::var("IKV_FAILPOINTS").unwrap_or_default();
        let points = spec
            .split(',')
            .filter_map(|item| {
                let (name, n) = item.trim().split_once('=')?;
                Some((name.to_owned(), (n.parse().ok()?, 0)))
            })
            .collect();
        Armed {
            points: Mutex::new(points),
        }
    })
}

/// Counts a hit of `name`; on the armed hit, reports it and blocks forever.
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    let stop = {
        let mut points = armed().points.lock().unwrap_or_else(|p| p.into_inner());
        match points.get_mut(name) {
            Some((at, hits)) => {
                *hits += 1;
                (*hits == *at).then_some(*hits)
            }
            None => None,
        }
    };
    if let Some(n) = stop {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "failpoint {name} {n}");
        let _ = out.flush();
        drop(out);
        loop {
            std::thread::park();
        }
    }
}

/// Marks a failpoint named `$name` (a string literal). Expands to nothing unless the calling
/// crate is built with its `failpoints` feature.
#[macro_export]
macro_rules! failpoint {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        $crate::failpoint::hit($name);
    };
}
