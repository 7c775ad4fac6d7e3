//! A process that opens a reader and keeps it polling, for crash and mount-sharing tests:
//! `ikv-test-reader STORAGE_URL STORE MOUNT_DIR [PARTITIONS]` (partitions as `0,2`). Prints
//! `ready owner` or `ready attached` once open; exits 3 with the error on stderr if the reader
//! cannot open. `IKV_TEST_FOLD_BYTES` sets the fold threshold (1: fold after every delta);
//! `IKV_TEST_SHUFFLED_LISTINGS` lists through a store that shuffles every listing.

use std::time::Duration;

use ikv_reader::{Reader, ReaderOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !(4..=5).contains(&args.len()) {
        eprintln!("usage: ikv-test-reader STORAGE_URL STORE MOUNT_DIR [PARTITIONS]");
        std::process::exit(2);
    }
    let mut options = ReaderOptions::new(&args[1], &args[2], &args[3]);
    options.poll_interval = Duration::from_millis(5);
    if let Some(bytes) = std::env::var("IKV_TEST_FOLD_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        options.fold_min_bytes = bytes;
    }
    if let Some(list) = args.get(4) {
        options.partitions = list.split(',').filter_map(|p| p.parse().ok()).collect();
    }
    if std::env::var_os(ikv_tests::unordered::SHUFFLE_ENV).is_some() {
        match ikv_core::Storage::open(&args[1], &Default::default()) {
            Ok(storage) => options.storage = Some(ikv_tests::unordered::shuffled_if_asked(storage)),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(3);
            }
        }
    }
    match Reader::open(options) {
        Ok(reader) => {
            let role = if reader.owns_mount() {
                "owner"
            } else {
                "attached"
            };
            println!("ready {role}");
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
