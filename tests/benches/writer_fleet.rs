//! Writer processes contending for one partition on the LocalStack S3 emulator: 16 processes
//! (this binary, started again as children), each committing one-document writes back to back
//! for a fixed time, beside one process doing the same in the same run. Reports throughput
//! (commits/s), commit latency p50 / p99, storage requests per commit (lost races, hint
//! reads and writes, searches), and checks that the log is dense and holds every acknowledged
//! commit.
//!
//! `cargo bench -p ikv-tests --bench writer_fleet` (LocalStack running, bucket ikv-test).
#![allow(clippy::disallowed_methods)] // tests and benches run real processes, sockets and timings on the wall clock

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ikv_core::bucket::{create_store, list_delta_seqs};
use ikv_core::{Document, FieldValue, Storage, StoreConfig, StoreLayout};
use ikv_tests::counting::{CountingStore, Counts, CountsOf};
use ikv_tests::{localstack_storage, localstack_storage_at};
use ikv_writer::{Writer, WriterOptions};

/// How long each round commits, in every process at once.
const COMMIT_FOR: Duration = Duration::from_secs(6);
/// Time the children get to start and warm up before the common start.
const START_AFTER: Duration = Duration::from_secs(3);
const CHILD_ENV: &str = "IKV_BENCH_FLEET_CHILD";

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn doc(key: &str, i: usize) -> Document {
    Document::new()
        .with("id", FieldValue::String(key.to_owned()))
        .with("a", FieldValue::String(format!("{i:0>50}")))
}

/// A child: open a writer, warm up, wait for the common start, commit until the end, print
/// one latency (µs) per line, then `requests <n>`: what the timed commits sent.
async fn child(url: &str, start_ms: u64, name: &str) {
    let s3 = localstack_storage_at(url, true);
    let counting = std::sync::Arc::new(CountingStore::new(s3.object_store().clone()));
    let storage = Storage::new(counting.clone(), s3.prefix.clone(), s3.url.clone());
    let writer = Writer::open(storage, "fleet", WriterOptions::default())
        .await
        .unwrap();
    writer.upsert_fields(doc(name, 0)).await.unwrap();
    let wait = start_ms.saturating_sub(unix_ms());
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let before = counting.counts();
    let end = Instant::now() + COMMIT_FOR;
    let mut out = String::new();
    let mut i = 1;
    while Instant::now() < end {
        let t = Instant::now();
        writer.upsert_fields(doc(name, i)).await.unwrap();
        out.push_str(&format!("{}\n", t.elapsed().as_micros()));
        i += 1;
    }
    let used: Counts = counting.counts().since(&before);
    out.push_str(&format!("requests {}\n", used.total()));
    std::io::stdout().write_all(out.as_bytes()).unwrap();
}

/// Starts `n` children on the store at `url`; their latencies, all together, and the storage
/// requests their timed commits sent.
fn round(url: &str, n: usize) -> (Vec<Duration>, u64) {
    let start_ms = unix_ms() + START_AFTER.as_millis() as u64;
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..n)
        .map(|i| {
            Command::new(&exe)
                .env(CHILD_ENV, format!("{url} {start_ms} n{n}-w{i}"))
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let (mut lat, mut requests) = (Vec::new(), 0);
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "a writer process failed");
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            match line.strip_prefix("requests ") {
                Some(n) => requests += n.parse::<u64>().unwrap(),
                None => lat.push(Duration::from_micros(line.parse().unwrap())),
            }
        }
    }
    lat.sort();
    (lat, requests)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    if let Ok(args) = std::env::var(CHILD_ENV) {
        let mut parts = args.split(' ');
        let (url, start, name) = (
            parts.next().unwrap().to_owned(),
            parts.next().unwrap().parse().unwrap(),
            parts.next().unwrap().to_owned(),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(child(&url, start, &name));
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let storage = rt.block_on(localstack_storage(true));
    rt.block_on(create_store(
        &storage,
        &StoreConfig::new("fleet", "id", None, 1).unwrap(),
    ))
    .unwrap();
    let layout = StoreLayout::new(&storage.prefix, "fleet").unwrap();
    println!(
        "| writer processes on one partition | commits/s | p50 | p99 | storage requests per commit |"
    );
    println!("|---|---|---|---|---|");
    let mut committed = 0usize;
    for n in [1usize, 16] {
        let (lat, requests) = round(&storage.url, n);
        let before = committed;
        let seqs = rt.block_on(list_delta_seqs(&storage, &layout, 0)).unwrap();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "dense");
        committed = seqs.len();
        // Each process's warm-up commit, then the timed ones: the log holds exactly these.
        assert_eq!(
            committed - before,
            n + lat.len(),
            "every acknowledged commit, once"
        );
        println!(
            "| {n} | {:.0} | {} | {} | {:.2} |",
            lat.len() as f64 / COMMIT_FOR.as_secs_f64(),
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99)),
            requests as f64 / lat.len() as f64,
        );
    }
}
