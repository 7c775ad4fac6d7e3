//! Freshness while the owner folds a new read image: a store of N documents (default 1M,
//! 10-byte keys, 3 × 50-byte fields) is read by a mount's owner (poll 10 ms); then a third of
//! the documents are rewritten twice in chunks of 2,000 (each chunk visible before the next is
//! written), enough to pass the fold threshold (a quarter of the image, at least 64 MiB), while
//! a probe writes one document every 20 ms and times how long each takes from acknowledgement
//! to visibility in the reader. Prints the probe's p50, p99 and
//! maximum and the number of image generations the mount went through (folds). Only public
//! APIs and default options: the same file runs against an earlier tree for comparison.
//!
//! `cargo bench -p ikv-reader --bench fold_freshness [-- DOCS]`
#![allow(clippy::disallowed_methods)] // tests and benches run real processes, sockets and timings on the wall clock

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ikv_core::bucket::create_store;
use ikv_core::{Document, FieldValue, Operation, Storage, StorageOptions, StoreConfig};
use ikv_reader::{Reader, ReaderOptions};
use ikv_writer::{Writer, WriterOptions};

const FIELDS: [&str; 3] = ["f1", "f2", "f3"];

fn doc(i: usize, round: usize) -> Operation {
    let mut d = Document::new().with("id", FieldValue::String(format!("k{i:09}")));
    for (f, name) in FIELDS.iter().enumerate() {
        d.put(*name, FieldValue::String(format!("{f}{round}{i:0>48}")));
    }
    Operation::UpsertFields(d)
}

fn generations(mount: &std::path::Path) -> usize {
    std::fs::read_dir(mount.join("bench"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("image-"))
                .count()
        })
        .unwrap_or(0)
}

fn newest_generation(mount: &std::path::Path) -> u64 {
    std::fs::read_dir(mount.join("bench"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_prefix("image-")?.parse().ok()
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

fn main() {
    let docs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/bucket", dir.path().display());
    let storage = Storage::open(&url, &StorageOptions::default()).unwrap();
    let config = StoreConfig::new("bench", "id", None, 1).unwrap();
    rt.block_on(create_store(&storage, &config)).unwrap();
    let writer = Arc::new(
        rt.block_on(Writer::open(
            storage.clone(),
            "bench",
            WriterOptions::default(),
        ))
        .unwrap(),
    );
    let write_range = |from: usize, to: usize, round: usize| {
        for start in (from..to).step_by(20_000) {
            let ops: Vec<Operation> = (start..(start + 20_000).min(to))
                .map(|i| doc(i, round))
                .collect();
            rt.block_on(writer.write(&ops)).unwrap();
        }
    };
    write_range(0, docs, 0);
    let mount = dir.path().join("mount");
    let mut options = ReaderOptions::new(&url, "bench", &mount);
    options.poll_interval = Duration::from_millis(10);
    let reader = Arc::new(Reader::open(options).unwrap());
    let before = newest_generation(&mount);

    // The probe: one document every 20 ms, timed from acknowledgement to visibility.
    let stop = Arc::new(AtomicBool::new(false));
    let probe = {
        let (stop, reader, writer) = (stop.clone(), reader.clone(), writer.clone());
        let handle = rt.handle().clone();
        std::thread::spawn(move || {
            let mut waits = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let value = format!("probe-{n}");
                let d = Document::new()
                    .with("id", FieldValue::String("probe".into()))
                    .with("p", FieldValue::String(value.clone()));
                handle
                    .block_on(writer.write(&[Operation::UpsertFields(d)]))
                    .unwrap();
                let acked = Instant::now();
                while reader.get_string(b"probe", "p").unwrap().as_deref() != Some(&value) {
                    std::thread::sleep(Duration::from_micros(200));
                }
                waits.push(acked.elapsed());
                std::thread::sleep(Duration::from_millis(20));
            }
            waits
        })
    };
    // A third of the documents rewritten, twice (past the threshold at least once), in
    // chunks of 2,000, each applied before the next is written: the probe never queues
    // behind a backlog of the log, so what it measures is what a fold does to freshness.
    let t = Instant::now();
    for round in [1, 2] {
        for start in (0..docs / 3).step_by(2_000) {
            let end = (start + 2_000).min(docs / 3);
            let ops: Vec<Operation> = (start..end).map(|i| doc(i, round)).collect();
            rt.block_on(writer.write(&ops)).unwrap();
            let last = format!("k{:09}", end - 1);
            let want = format!("0{round}{:0>48}", end - 1);
            while reader.get_string(last.as_bytes(), "f1").unwrap().as_deref() != Some(&want) {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
    // Let the owner apply and finish what it folds.
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    let mut waits = probe.join().unwrap();
    waits.sort();
    let pct = |p: f64| waits[((waits.len() - 1) as f64 * p).round() as usize];
    println!(
        "{docs} documents; {} rewritten in {:.1} s; {} probes: ack → visible p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; image generations {} → {} ({} file(s) now)",
        2 * (docs / 3),
        t.elapsed().as_secs_f64(),
        waits.len(),
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        waits.last().unwrap().as_secs_f64() * 1e3,
        before,
        newest_generation(&mount),
        generations(&mount),
    );
}
