//! Compactor benchmark: the real compactor (the `snapshot` binary, in a child process so that
//! its peak RSS is measured alone) merges 10k small deltas into the snapshot of a 1M- and a
//! 4M-document store, three passes each. Prints, as the median of the passes with the range,
//! delta field operations merged per second while folding (reading, decoding and folding the
//! deltas: the `fold_ms` the compactor logs per round) and over the whole pass (also
//! rewriting the snapshot), documents rewritten per second, wall time and peak RSS.
//!
//! `cargo bench -p ikv-snapshot --bench compact [-- SIZES...]` (default 1000000 4000000).
//! `IKV_BENCH_SNAPSHOT_BIN=<path>` times another build of the compactor (an earlier design,
//! beside this one, in the same run). With `IKV_BENCH_KEEP=<dir>`, a copy of the store as the first pass finds it is left in
//! `<dir>`, for profiling the compactor by hand.
#![allow(clippy::disallowed_methods)] // tests and benches run real processes, sockets and timings on the wall clock

use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use ikv_core::bucket::create_store;
use ikv_core::{
    Document, FieldValue, Operation, Storage, StorageOptions, StoreConfig, StoreLayout,
};
use ikv_snapshot::{SnapshotOptions, snapshot_partition};
use ikv_snapshot_format::Manifest;
use ikv_writer::{Writer, WriterOptions};

const DELTAS: usize = 10_000;
const OPS_PER_DELTA: usize = 10;

fn doc(i: usize, round: usize) -> Operation {
    Operation::UpsertFields(
        Document::new()
            .with("id", FieldValue::String(format!("k{i:09}")))
            .with("f1", FieldValue::String(format!("{round}{i:0>49}")))
            .with("f2", FieldValue::String(format!("{i:0>50}")))
            .with("f3", FieldValue::String(format!("{i:0>50}"))),
    )
}

/// The sum of a numeric field (`name=123`) over the compactor's "snapshot committed" lines.
fn logged_sum(log: &str, name: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("snapshot committed"))
        .filter_map(|l| l.split(&format!("{name}=")).nth(1))
        .filter_map(|v| {
            v.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Wall time, peak resident memory (sampled from /proc until it exits, kB) and the log
/// (stderr) of a process.
fn run_measured(mut cmd: Command) -> (Duration, u64, String) {
    let started = Instant::now();
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0;
    loop {
        if let Ok(status) = std::fs::read_to_string(&status_path) {
            for line in status.lines() {
                if let Some(v) = line.strip_prefix("VmHWM:") {
                    peak_kb =
                        peak_kb.max(v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0));
                }
            }
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    (
        started.elapsed(),
        peak_kb,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000_000, 4_000_000]
    } else {
        sizes
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| store size | deltas merged per pass | delta field operations merged/s (read, decode, fold) | delta field operations merged/s (whole pass) | documents rewritten/s | snapshot size | wall time of the pass | peak RSS of the compactor |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for docs in sizes {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/bucket", dir.path().display());
        let storage = Storage::open(&url, &StorageOptions::default()).unwrap();
        let config = StoreConfig::new("bench", "id", None, 1).unwrap();
        rt.block_on(create_store(&storage, &config)).unwrap();
        let writer = rt
            .block_on(Writer::open(
                storage.clone(),
                "bench",
                WriterOptions::default(),
            ))
            .unwrap();
        for start in (0..docs).step_by(50_000) {
            let ops: Vec<Operation> = (start..(start + 50_000).min(docs))
                .map(|i| doc(i, 0))
                .collect();
            rt.block_on(writer.write(&ops)).unwrap();
        }
        let base = SnapshotOptions {
            force: true,
            ..SnapshotOptions::default()
        };
        rt.block_on(snapshot_partition(
            &storage,
            &config,
            0,
            &base,
            SystemTime::now(),
        ))
        .unwrap();
        // Three runs: 10k small deltas (updates spread over the whole store), then one pass
        // of the real compactor (the `snapshot` binary) over them, timed whole.
        let layout = StoreLayout::new(&storage.prefix, "bench").unwrap();
        let rows_merged = DELTAS * OPS_PER_DELTA * 4; // four field values per upsert
        let (mut ops_rate, mut docs_rate, mut walls, mut peaks) = (vec![], vec![], vec![], vec![]);
        let mut fold_rate = vec![];
        let mut bytes = 0;
        for run in 1..=3 {
            for d in 0..DELTAS {
                let ops: Vec<Operation> = (0..OPS_PER_DELTA)
                    .map(|j| doc((d * 7919 + j * 104_729 + run) % docs, run))
                    .collect();
                rt.block_on(writer.write(&ops)).unwrap();
            }
            if let (1, Ok(keep)) = (run, std::env::var("IKV_BENCH_KEEP")) {
                // For profiling the pass by hand: the store as the first pass finds it.
                let status = Command::new("cp")
                    .args(["-r", &format!("{}/bucket", dir.path().display()), &keep])
                    .status()
                    .unwrap();
                assert!(status.success());
            }
            let binary = std::env::var("IKV_BENCH_SNAPSHOT_BIN")
                .unwrap_or_else(|_| env!("CARGO_BIN_EXE_snapshot").to_owned());
            let mut cmd = Command::new(binary);
            cmd.args(["run", "--storage-url", &url, "--store", "bench", "--force"])
                .env("RUST_LOG", "ikv_snapshot=info")
                .env("NO_COLOR", "1");
            let (wall, peak_kb, log) = run_measured(cmd);
            let (fold_ms, folded) = (logged_sum(&log, "fold_ms"), logged_sum(&log, "delta_rows"));
            // A compactor built before it logged its fold has no fold rate.
            if folded > 0 {
                assert_eq!(
                    folded as usize, rows_merged,
                    "rows folded, from the log:\n{log}"
                );
                fold_rate.push(folded as f64 / (fold_ms.max(1) as f64 / 1e3) / 1e6);
            }
            let manifest = rt
                .block_on(Manifest::load_newest(&storage, &layout, 0))
                .unwrap()
                .unwrap();
            assert_eq!(manifest.row_count as usize, docs);
            bytes = manifest.files.iter().map(|f| f.bytes).sum::<u64>();
            ops_rate.push(rows_merged as f64 / wall.as_secs_f64() / 1e6);
            docs_rate.push(docs as f64 / wall.as_secs_f64() / 1e6);
            walls.push(wall.as_secs_f64());
            peaks.push(peak_kb as f64 / 1024.0);
        }
        println!(
            "| {docs} documents | {DELTAS} ({rows_merged} field operations) | {} | {} | {} | {:.1} MB | {} | {} |",
            median_range(&fold_rate, "M/s"),
            median_range(&ops_rate, "M/s"),
            median_range(&docs_rate, "M/s"),
            bytes as f64 / 1e6,
            median_range(&walls, "s"),
            median_range(&peaks, "MiB"),
        );
    }
}

/// The median of three or more runs, with their range.
fn median_range(runs: &[f64], unit: &str) -> String {
    if runs.is_empty() {
        return "–".to_owned();
    }
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    format!(
        "{:.2} {unit} [{:.2}–{:.2}]",
        sorted[sorted.len() / 2],
        sorted[0],
        sorted[sorted.len() - 1]
    )
}
