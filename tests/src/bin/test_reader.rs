//! A process that opens a reader and keeps it polling, for crash and locking tests:
//! `ikv-test-reader STORAGE_URL STORE MOUNT_DIR`. Prints `ready` once caught up; exits 3 with
//! the error on stderr if the reader cannot open.

use std::time::Duration;

use ikv_reader::{Reader, ReaderOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: ikv-test-reader STORAGE_URL STORE MOUNT_DIR");
        std::process::exit(2);
    }
    let mut options = ReaderOptions::new(&args[1], &args[2], &args[3]);
    options.poll_interval = Duration::from_millis(5);
    match Reader::open(options) {
        Ok(_reader) => {
            println!("ready");
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(3);
        }
    }
}
