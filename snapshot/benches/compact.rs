//! Compactor benchmark: merge 10k small deltas into a snapshot of a 1M-document store and of a
//! 4M-document store, in a child `snapshot` process so that its peak RSS is measured alone.
//! Prints delta operations merged per second, snapshot bytes written per second, peak RSS.
//!
//! `cargo bench -p ikv-snapshot --bench compact [-- SIZES...]` (default 1000000 4000000).

use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use ikv_core::delta::decode_delta;
use ikv_core::store::create_store;
use ikv_core::store::read_delta;
use ikv_core::{
    Document, FieldValue, Operation, Storage, StorageOptions, StoreConfig, StoreLayout,
};
use ikv_snapshot::overlay::Overlay;
use ikv_snapshot::{Manifest, SnapshotOptions, snapshot_partition};
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

/// Reads and decodes deltas as the compactor does (32 in flight).
async fn fold_deltas(
    storage: &Storage,
    layout: &StoreLayout,
    seqs: std::ops::RangeInclusive<u64>,
) -> Vec<ikv_core::Delta> {
    use futures::StreamExt;
    futures::stream::iter(seqs.map(|seq| async move {
        let bytes = read_delta(storage, layout, 0, seq).await.unwrap().unwrap();
        tokio::task::spawn_blocking(move || decode_delta(&bytes).unwrap())
            .await
            .unwrap()
    }))
    .buffered(32)
    .collect()
    .await
}

/// Peak resident memory of a process, sampled from /proc until it exits (kB).
fn run_measured(mut cmd: Command) -> (Duration, u64, String) {
    let started = Instant::now();
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
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
        String::from_utf8_lossy(&out.stdout).into_owned(),
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
        "| store size | deltas merged | delta ops folded/s (read + decode + overlay) | whole snapshot: documents rewritten/s | snapshot bytes written/s | wall time | peak RSS of the compactor |"
    );
    println!("|---|---|---|---|---|---|---|");
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
        // 10k small deltas: updates spread over the whole store.
        for d in 0..DELTAS {
            let ops: Vec<Operation> = (0..OPS_PER_DELTA)
                .map(|j| doc((d * 7919 + j * 104_729) % docs, 1))
                .collect();
            rt.block_on(writer.write(&ops)).unwrap();
        }
        // Folding the deltas (read, decode, apply to the overlay), in process.
        let layout = StoreLayout::new(&storage.prefix, "bench").unwrap();
        let base_seq = rt
            .block_on(Manifest::load_newest(&storage, &layout, 0))
            .unwrap()
            .unwrap()
            .sequence;
        let t = Instant::now();
        let mut overlay = Overlay::new("id");
        let deltas = rt.block_on(fold_deltas(
            &storage,
            &layout,
            base_seq + 1..=base_seq + DELTAS as u64,
        ));
        for delta in deltas {
            for op in delta.ops {
                overlay.apply_owned(op);
            }
        }
        let fold = t.elapsed();
        let folded = overlay.rows_applied;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_snapshot"));
        cmd.args(["run", "--storage-url", &url, "--store", "bench", "--force"]);
        let (wall, peak_kb, _) = run_measured(cmd);
        let manifest = rt
            .block_on(Manifest::load_newest(&storage, &layout, 0))
            .unwrap()
            .unwrap();
        assert_eq!(manifest.row_count as usize, docs);
        let bytes: u64 = manifest.files.iter().map(|f| f.bytes).sum();
        let rows_merged = DELTAS * OPS_PER_DELTA * 4; // four field values per upsert
        assert_eq!(folded as usize, rows_merged);
        println!(
            "| {docs} documents | {DELTAS} ({rows_merged} field operations) | {:.2}M/s | {:.2}M/s | {:.1} MB/s ({:.1} MB) | {:.2} s | {:.0} MiB |",
            folded as f64 / fold.as_secs_f64() / 1e6,
            docs as f64 / wall.as_secs_f64() / 1e6,
            bytes as f64 / wall.as_secs_f64() / 1e6,
            bytes as f64 / 1e6,
            wall.as_secs_f64(),
            peak_kb as f64 / 1024.0
        );
    }
}
