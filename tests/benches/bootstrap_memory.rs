//! Bootstrap memory by value size: a one-partition store holding 64 MB of values, as
//! 160-byte, 4 KiB and 32 KiB values, snapshotted; a child process bootstraps a reader from it
//! and prints its peak RSS (VmHWM). Self-contained, so that the same file runs against the
//! previous tree. `cargo bench -p ikv-tests --bench bootstrap_memory`.
#![allow(clippy::disallowed_methods)] // benches run real processes on the wall clock

use std::process::Command;

use ikv_core::bucket::create_store;
use ikv_core::{Document, FieldValue, Operation, Storage, StorageOptions, StoreConfig};
use ikv_reader::{Reader, ReaderOptions};
use ikv_writer::{Writer, WriterOptions};

const VALUES_BYTES: usize = 64 << 20;

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        let mut options = ReaderOptions::new(&args[2], "m", &args[3]);
        options.storage_options = StorageOptions::default();
        let reader = Reader::open(options).unwrap();
        println!("{}", peak_rss_kb());
        reader.shutdown().unwrap();
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("| values | documents | bootstrap peak RSS |");
    println!("|---|---|---|");
    for value in [160usize, 4096, 32768] {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/bucket", dir.path().display());
        let storage = Storage::open(&url, &StorageOptions::default()).unwrap();
        let config = StoreConfig::new("m", "id", None, 1).unwrap();
        rt.block_on(create_store(&storage, &config)).unwrap();
        let writer = rt
            .block_on(Writer::open(storage.clone(), "m", WriterOptions::default()))
            .unwrap();
        let docs = VALUES_BYTES / value;
        let filler = "x".repeat(value - 8);
        // Calls of at most 16 MiB (a call holds at most 32 MiB per partition).
        let per_call = ((16usize << 20) / value).clamp(1, 2000);
        for chunk in (0..docs).collect::<Vec<_>>().chunks(per_call) {
            let ops: Vec<Operation> = chunk
                .iter()
                .map(|n| {
                    Operation::UpsertFields(
                        Document::new()
                            .with("id", FieldValue::String(format!("k{n:09}")))
                            .with("v", FieldValue::String(format!("{n:08}{filler}"))),
                    )
                })
                .collect();
            rt.block_on(writer.write(&ops)).unwrap();
        }
        rt.block_on(ikv_tests::force_snapshot(&storage, &config, 0))
            .unwrap();
        let mount = dir.path().join("mount");
        let out = Command::new(&args[0])
            .args(["child", &url, mount.to_str().unwrap()])
            .output()
            .unwrap();
        let kb: u64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        println!("| {value} B | {docs} | {:.0} MB |", kb as f64 / 1024.0);
    }
}
