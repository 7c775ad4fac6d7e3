//! A pass compacts partitions independently, several at once (`parallel_partitions`, `ikv
//! snapshot --parallel N`): the same snapshots as one at a time, more requests in flight
//! (counted through a store that holds each request 5 ms), and a partition that fails fails
//! alone, the next pass finishing it. Counts, never seconds.

use std::sync::Arc;
use std::time::Duration;

use ikv_core::bucket::create_store;
use ikv_core::{Storage, StoreConfig, StoreLayout};
use ikv_snapshot::{SnapshotOptions, run_pass_reporting};
use ikv_snapshot_format::Manifest;
use ikv_tests::faulty::{FaultyStore, PutFault};
use ikv_tests::fixture::{doc_v, key_in};
use ikv_tests::latency::LatencyStore;
use ikv_writer::{Writer, WriterOptions};
use object_store::ObjectStore;
use object_store::memory::InMemory;
use object_store::path::Path;

const PARTITIONS: u32 = 8;

/// A store of 8 partitions, 3 deltas in each, written straight to `inner`.
async fn store_on(inner: Arc<dyn ObjectStore>) -> StoreConfig {
    let storage = Storage::new(inner, Path::from("root"), "memory://pass");
    let config = StoreConfig::new("s", "id", None, PARTITIONS).unwrap();
    create_store(&storage, &config).await.unwrap();
    let writer = Writer::open(storage, "s", WriterOptions::default())
        .await
        .unwrap();
    for v in 0..3 {
        for p in 0..PARTITIONS {
            writer
                .upsert_fields(doc_v(&key_in(p, PARTITIONS), v))
                .await
                .unwrap();
        }
    }
    config
}

fn options(parallel: usize) -> SnapshotOptions {
    SnapshotOptions {
        force: true,
        parallel_partitions: parallel,
        ..SnapshotOptions::default()
    }
}

async fn newest(storage: &Storage, partition: u32) -> Option<u64> {
    let layout = StoreLayout::new(&storage.prefix, "s").unwrap();
    Manifest::load_newest(storage, &layout, partition)
        .await
        .unwrap()
        .map(|m| m.sequence)
}

/// Runs a forced pass at `parallel` through a 5 ms store; returns the most GETs it had in
/// flight at once.
async fn pass_in_flight(parallel: usize) -> usize {
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    store_on(inner.clone()).await;
    let far = Arc::new(LatencyStore::new(inner, Duration::from_millis(5)));
    let storage = Storage::new(far.clone(), Path::from("root"), "memory://far");
    let pass = run_pass_reporting(&storage, &[], &[], &options(parallel))
        .await
        .unwrap();
    assert!(pass.failures.is_empty(), "{:?}", pass.failures);
    assert_eq!(
        pass.reports.iter().map(|r| r.partition).collect::<Vec<_>>(),
        (0..PARTITIONS).collect::<Vec<_>>(),
        "reports in partition order"
    );
    for p in 0..PARTITIONS {
        assert_eq!(newest(&storage, p).await, Some(3), "partition {p}");
    }
    far.most_gets_in_flight()
}

#[tokio::test]
async fn partitions_are_compacted_together_to_the_same_snapshots() {
    let one = pass_in_flight(1).await;
    let four = pass_in_flight(4).await;
    assert!(
        four > one,
        "4 partitions at once had {four} GETs in flight at most, one at a time {one}"
    );
}

#[tokio::test]
async fn a_partition_that_fails_fails_alone_and_the_next_pass_finishes_it() {
    let faulty = Arc::new(FaultyStore::new(Arc::new(InMemory::new())));
    store_on(faulty.clone()).await;
    let storage = Storage::new(faulty.clone(), Path::from("root"), "memory://faulty");
    faulty.inject("p0003/snapshots", PutFault::FailBeforeLanding);
    let pass = run_pass_reporting(&storage, &[], &[], &options(4))
        .await
        .unwrap();
    assert_eq!(
        pass.failures
            .iter()
            .map(|f| f.partition)
            .collect::<Vec<_>>(),
        vec![3]
    );
    assert_eq!(pass.reports.len(), PARTITIONS as usize - 1);
    for p in 0..PARTITIONS {
        let expected = (p != 3).then_some(3);
        assert_eq!(newest(&storage, p).await, expected, "partition {p}");
    }
    let again = run_pass_reporting(&storage, &[], &[3], &options(4))
        .await
        .unwrap();
    assert!(again.failures.is_empty(), "{:?}", again.failures);
    assert_eq!(newest(&storage, 3).await, Some(3));
}

/// Passes over the shards 0/3, 1/3 and 2/3 snapshot every partition once between them; a
/// scheduled event names its shard, and a bad one is refused before anything is touched.
#[tokio::test]
async fn shards_split_a_store_between_passes() {
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    store_on(inner.clone()).await;
    let storage = Storage::new(inner, Path::from("root"), "memory://shards");
    let mut seen = Vec::new();
    for k in 0..3 {
        let shard: ikv_snapshot::Shard = format!("{k}/3").parse().unwrap();
        let pass = run_pass_reporting(
            &storage,
            &[],
            &[],
            &SnapshotOptions {
                shard: Some(shard),
                ..options(2)
            },
        )
        .await
        .unwrap();
        seen.extend(pass.reports.iter().map(|r| r.partition));
        for p in 0..PARTITIONS {
            let done = newest(&storage, p).await.is_some();
            assert_eq!(done, p % 3 <= k, "after shard {k}, partition {p}");
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..PARTITIONS).collect::<Vec<_>>());

    let fresh: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    store_on(fresh.clone()).await;
    let storage = Storage::new(fresh, Path::from("root"), "memory://event");
    let event = serde_json::json!({"id": "e", "shard": "1/4"});
    ikv_snapshot::handle_scheduled_event(&storage, &[], &options(1), &event)
        .await
        .unwrap();
    for p in 0..PARTITIONS {
        assert_eq!(
            newest(&storage, p).await.is_some(),
            p % 4 == 1,
            "partition {p}"
        );
    }
    for bad in [
        serde_json::json!({"shard": "4/4"}),
        serde_json::json!({"shard": 1}),
    ] {
        let err = ikv_snapshot::handle_scheduled_event(&storage, &[], &options(1), &bad)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("shard"), "{err}");
    }
    for p in 0..PARTITIONS {
        assert_eq!(
            newest(&storage, p).await.is_some(),
            p % 4 == 1,
            "a refused event touched partition {p}"
        );
    }
}
