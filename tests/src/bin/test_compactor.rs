//! A compactor process for crash tests:
//! `ikv-test-compactor STORAGE_URL STORE PARTITION snapshot ROUND_BUDGET_BYTES FILE_BYTES`
//! (one forced snapshot pass, tiny files and rounds as asked) or
//! `ikv-test-compactor STORAGE_URL STORE PARTITION retention HOURS_AHEAD` (one retention pass
//! with a clock that many hours ahead). Prints `done` when the pass completes; exits 3 with
//! the error on stderr when it fails. Crash tests arm failpoints through `IKV_FAILPOINTS`.
#![allow(clippy::disallowed_methods)] // tests and benches run real processes, sockets and timings on the wall clock

use std::time::{Duration, SystemTime};

use ikv_core::bucket::load_config;
use ikv_core::{Storage, StorageOptions, StoreLayout};
use ikv_snapshot::{Retention, SnapshotOptions, apply_retention, snapshot_partition};
use ikv_snapshot_format::write::FileLayout;

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or_else(|| {
        eprintln!("usage: ikv-test-compactor URL STORE PARTITION (snapshot BUDGET FILE_BYTES | retention HOURS)");
        std::process::exit(2)
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (url, store): (String, String) = (arg(&args, 1), arg(&args, 2));
    let partition: u32 = arg(&args, 3);
    let mode: String = arg(&args, 4);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let result = rt.block_on(async {
        let storage = ikv_tests::unordered::shuffled_if_asked(Storage::open(
            &url,
            &StorageOptions::default(),
        )?);
        let layout = StoreLayout::new(&storage.prefix, &store)?;
        match mode.as_str() {
            "snapshot" => {
                let config = load_config(&storage, &store).await?;
                let options = SnapshotOptions {
                    force: true,
                    round_budget_bytes: Some(arg(&args, 5)),
                    files: FileLayout {
                        row_group_rows: 64,
                        target_file_bytes: arg(&args, 6),
                    },
                    ..SnapshotOptions::default()
                };
                snapshot_partition(&storage, &config, partition, &options, SystemTime::now())
                    .await
                    .map(|_| ())
            }
            "retention" => {
                let ahead = Duration::from_secs(3600 * arg::<u64>(&args, 5));
                let now = SystemTime::now() + ahead;
                apply_retention(&storage, &layout, partition, &Retention::default(), now)
                    .await
                    .map(|_| ())
            }
            other => {
                eprintln!("unknown mode {other}");
                std::process::exit(2)
            }
        }
    });
    match result {
        Ok(()) => println!("done"),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(3);
        }
    }
}
