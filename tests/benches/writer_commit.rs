//! Writer benchmark against the LocalStack S3 emulator: commit latency beside a raw PUT of the
//! same bytes to the same bucket, batched throughput from one client, and the commit latency
//! of writers 1,000 and 10,000 deltas behind (idle instances of a fleet).
//!
//! `cargo bench -p ikv-tests --bench writer_commit` (LocalStack running, bucket ikv-test).

use std::time::{Duration, Instant};

use ikv_core::delta::{DeltaMeta, encode_delta};
use ikv_core::store::create_store;
use ikv_core::{Document, FieldValue, Operation, StoreConfig, partition_operations};
use ikv_tests::localstack_storage;
use ikv_writer::{Writer, WriterOptions};
use object_store::ObjectStoreExt;
use object_store::path::Path;

const LATENCY_SAMPLES: usize = 400;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn doc(i: usize) -> Document {
    let key = format!("k{i:09}");
    Document::new()
        .with("id", FieldValue::String(key))
        .with("a", FieldValue::String(format!("{i:0>50}")))
        .with("b", FieldValue::String(format!("{i:0>50}")))
        .with("c", FieldValue::String(format!("{i:0>50}")))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let storage = localstack_storage(true).await;
    let config = StoreConfig::new("bench", "id", None, 1).unwrap();
    create_store(&storage, &config).await.unwrap();
    let writer = Writer::open(storage.clone(), "bench", WriterOptions::default())
        .await
        .unwrap();

    // The bytes one commit of one document PUTs.
    let parts = partition_operations(&config, &[Operation::UpsertFields(doc(0))]).unwrap();
    let meta = DeltaMeta::new("b".into(), "w".into(), "bench".into(), 0);
    let body = encode_delta(&meta, &parts.partitions[0]).unwrap();

    // Warm both paths (connections, LocalStack's first-request costs).
    for i in 0..20 {
        let path = Path::from(format!("{}/raw-warm/{i}", storage.prefix));
        storage.store.put(&path, body.clone().into()).await.unwrap();
        writer.upsert_fields(doc(i)).await.unwrap();
    }

    // Interleave the two so that drift of the emulator affects both equally.
    let mut raw = Vec::with_capacity(LATENCY_SAMPLES);
    let mut commit = Vec::with_capacity(LATENCY_SAMPLES);
    for i in 0..LATENCY_SAMPLES {
        let path = Path::from(format!("{}/raw/{i:020}", storage.prefix));
        let t = Instant::now();
        storage.store.put(&path, body.clone().into()).await.unwrap();
        raw.push(t.elapsed());
        let t = Instant::now();
        writer.upsert_fields(doc(1000 + i)).await.unwrap();
        commit.push(t.elapsed());
    }
    raw.sort();
    commit.sort();

    // Throughput: one client, batches of 2,500 documents × 4 fields, 4 calls in flight.
    let docs_per_batch = 2_500;
    let batches = 80;
    let in_flight = 4;
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..in_flight {
        let w = writer.clone();
        tasks.spawn(async move {
            for b in (lane..batches).step_by(in_flight) {
                let ops: Vec<Operation> = (0..docs_per_batch)
                    .map(|i| Operation::UpsertFields(doc(1_000_000 + b * docs_per_batch + i)))
                    .collect();
                w.write(&ops).await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    let field_ops = batches * docs_per_batch * 4;

    // Writers behind: 20 writers each learn the tip with one commit, then another writer's
    // N deltas land (raw PUTs of valid deltas, 64 at once, so that setting up is quick),
    // then, after a second of idleness (as an idle Lambda instance has), each commits once,
    // timed; the i-th is N + i behind.
    let mut behind = Vec::new();
    for n in [1_000u64, 10_000] {
        let layout = ikv_core::StoreLayout::new(&storage.prefix, "bench").unwrap();
        let idle: Vec<Writer> = futures::future::join_all(
            (0..20).map(|_| Writer::open(storage.clone(), "bench", WriterOptions::default())),
        )
        .await
        .into_iter()
        .map(|w| w.unwrap())
        .collect();
        for (i, w) in idle.iter().enumerate() {
            w.upsert_fields(doc(5_000_000 + i)).await.unwrap();
        }
        let tip = ikv_core::tip::find_tip(&storage, &layout, 0, 0, ikv_core::tip::Knowledge::Old)
            .await
            .unwrap();
        use futures::StreamExt;
        futures::stream::iter(tip + 1..=tip + n)
            .map(|seq| {
                let (storage, path, body) = (storage.clone(), layout.delta(0, seq), body.clone());
                async move { storage.store.put(&path, body.into()).await.unwrap() }
            })
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let mut lat = Vec::new();
        for (i, w) in idle.iter().enumerate() {
            let t = Instant::now();
            w.upsert_fields(doc(6_000_000 + i)).await.unwrap();
            lat.push(t.elapsed());
        }
        lat.sort();
        behind.push((n, lat));
    }

    println!("| measure | raw PUT | ikv commit | ratio |");
    println!("|---|---|---|---|");
    for (name, p) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
        let (r, c) = (percentile(&raw, p), percentile(&commit, p));
        println!(
            "| {name} latency, 1 document ({} B delta) | {} | {} | {:.2}× |",
            body.len(),
            ms(r),
            ms(c),
            c.as_secs_f64() / r.as_secs_f64()
        );
    }
    println!(
        "| throughput, one client, {docs_per_batch}-document batches, {in_flight} in flight | | {:.0} field ops/s ({field_ops} in {secs:.2} s) | |",
        field_ops as f64 / secs
    );
    let fresh_p50 = percentile(&commit, 0.5);
    for (n, lat) in &behind {
        println!(
            "| commit of a writer {n} deltas behind, p50 / p99 of {} | {} (raw PUT p50) | {} / {} | {:.2}× the up-to-date writer's p50 |",
            lat.len(),
            ms(percentile(&raw, 0.5)),
            ms(percentile(lat, 0.5)),
            ms(percentile(lat, 0.99)),
            percentile(lat, 0.5).as_secs_f64() / fresh_p50.as_secs_f64()
        );
    }
}
