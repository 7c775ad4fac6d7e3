//! The writer library on in-memory and fault-injecting stores: ambiguous outcomes never
//! commit twice, failures surface, group commit coalesces, drops reach every partition.
#![allow(clippy::disallowed_methods)] // tests and benches run real processes, sockets and timings on the wall clock

use std::sync::Arc;

use ikv_core::bucket::{create_store, list_delta_seqs, read_delta};
use ikv_core::delta::decode_delta;
use ikv_core::{
    DeltaOp, Document, ErrorKind, FieldValue, Operation, Storage, StoreConfig, StoreLayout,
};
use ikv_tests::faulty::{FaultyStore, PutFault};
use ikv_writer::{CommitPolicy, Writer, WriterOptions};
use object_store::memory::InMemory;
use object_store::path::Path;

fn doc(key: &str) -> Document {
    Document::new().with("id", FieldValue::String(key.into()))
}

async fn store_on(storage: &Storage, partitions: u32) -> StoreLayout {
    let config = StoreConfig::new("s", "id", None, partitions).unwrap();
    create_store(storage, &config).await.unwrap();
    StoreLayout::new(&storage.prefix, "s").unwrap()
}

fn fast_policy() -> WriterOptions {
    WriterOptions {
        commit_policy: CommitPolicy {
            failure_backoff_base: std::time::Duration::from_millis(1),
            failure_backoff_cap: std::time::Duration::from_millis(5),
            ..CommitPolicy::default()
        },
        ..WriterOptions::default()
    }
}

fn faulty() -> (Arc<FaultyStore>, Storage) {
    let faulty = Arc::new(FaultyStore::new(Arc::new(InMemory::new())));
    let storage = Storage::new(faulty.clone(), Path::from("root"), "memory://faulty");
    (faulty, storage)
}

async fn all_ops(
    storage: &Storage,
    layout: &StoreLayout,
    partition: u32,
) -> Vec<(u64, Vec<DeltaOp>)> {
    let mut out = Vec::new();
    for seq in list_delta_seqs(storage, layout, partition).await.unwrap() {
        let bytes = read_delta(storage, layout, partition, seq)
            .await
            .unwrap()
            .unwrap();
        out.push((seq, decode_delta(&bytes, "delta").unwrap().ops));
    }
    out
}

#[tokio::test]
async fn a_put_that_landed_but_timed_out_is_not_committed_again() {
    let (faulty, storage) = faulty();
    let layout = store_on(&storage, 1).await;
    faulty.inject("deltas/00000000000000000001", PutFault::LandThenTimeout);
    let writer = Writer::open(storage.clone(), "s", fast_policy())
        .await
        .unwrap();
    let receipt = writer.upsert_fields(doc("a")).await.unwrap();
    assert_eq!(receipt.commits[0].sequence, 1);
    let receipt = writer.upsert_fields(doc("b")).await.unwrap();
    assert_eq!(
        receipt.commits[0].sequence, 2,
        "the next batch follows, no hole, no duplicate"
    );
    let log = all_ops(&storage, &layout, 0).await;
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].1.len(), 1, "batch a exactly once");
    let attempts = faulty.attempts.lock().unwrap().clone();
    let at_one = attempts
        .iter()
        .filter(|(p, _)| p.contains("00000000000000000001"))
        .count();
    assert_eq!(
        at_one, 2,
        "one ambiguous attempt, one retry that found it landed: {attempts:?}"
    );
}

#[tokio::test]
async fn a_put_that_failed_before_landing_is_retried_once() {
    let (faulty, storage) = faulty();
    let layout = store_on(&storage, 1).await;
    faulty.inject("deltas/", PutFault::FailBeforeLanding);
    faulty.inject("deltas/", PutFault::FailBeforeLanding);
    let writer = Writer::open(storage.clone(), "s", fast_policy())
        .await
        .unwrap();
    assert_eq!(
        writer.upsert_fields(doc("a")).await.unwrap().commits[0].sequence,
        1
    );
    assert_eq!(all_ops(&storage, &layout, 0).await.len(), 1);
}

#[tokio::test]
async fn giving_up_reports_an_error_and_nothing_lands() {
    let (faulty, storage) = faulty();
    let layout = store_on(&storage, 1).await;
    for _ in 0..20 {
        faulty.inject("deltas/", PutFault::FailBeforeLanding);
    }
    let writer = Writer::open(storage.clone(), "s", fast_policy())
        .await
        .unwrap();
    let err = writer.upsert_fields(doc("a")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Storage);
    assert!(err.to_string().contains("after 9 attempts"), "{err}");
    assert!(all_ops(&storage, &layout, 0).await.is_empty());
}

#[tokio::test]
async fn giving_up_after_a_landed_attempt_reports_success() {
    let (faulty, storage) = faulty();
    let layout = store_on(&storage, 1).await;
    faulty.inject("deltas/", PutFault::LandThenTimeout);
    for _ in 0..20 {
        faulty.inject("deltas/", PutFault::FailBeforeLanding);
    }
    let writer = Writer::open(storage.clone(), "s", fast_policy())
        .await
        .unwrap();
    let receipt = writer.upsert_fields(doc("a")).await.unwrap();
    assert_eq!(
        receipt.commits[0].sequence, 1,
        "a caller told 'failed' must be able to trust it"
    );
    assert_eq!(all_ops(&storage, &layout, 0).await.len(), 1);
}

#[tokio::test]
async fn a_409_conflict_whose_winner_never_lands_leaves_no_hole() {
    let (faulty, storage) = faulty();
    let layout = store_on(&storage, 1).await;
    faulty.inject(
        "deltas/00000000000000000001",
        PutFault::ConflictWithoutWinner,
    );
    let writer = Writer::open(storage.clone(), "s", fast_policy())
        .await
        .unwrap();
    let receipt = writer.upsert_fields(doc("a")).await.unwrap();
    assert_eq!(
        receipt.commits[0].sequence, 1,
        "retried the same number instead of skipping it"
    );
    assert_eq!(
        list_delta_seqs(&storage, &layout, 0).await.unwrap(),
        vec![1]
    );
}

#[tokio::test]
async fn a_lost_race_moves_to_the_next_number() {
    let storage = Storage::memory();
    let layout = store_on(&storage, 1).await;
    let a = Writer::open(storage.clone(), "s", WriterOptions::default())
        .await
        .unwrap();
    let b = Writer::open(storage.clone(), "s", WriterOptions::default())
        .await
        .unwrap();
    // a learns tip 0 and commits 1; b learns tip 1 and commits 2 and 3; a, still believing
    // the tip is 1, loses the races at 2 and 3 and lands at 4.
    assert_eq!(
        a.upsert_fields(doc("a0")).await.unwrap().commits[0].sequence,
        1
    );
    assert_eq!(
        b.upsert_fields(doc("b0")).await.unwrap().commits[0].sequence,
        2
    );
    assert_eq!(
        b.upsert_fields(doc("b1")).await.unwrap().commits[0].sequence,
        3
    );
    assert_eq!(
        a.upsert_fields(doc("a1")).await.unwrap().commits[0].sequence,
        4
    );
    let keys: Vec<Vec<u8>> = all_ops(&storage, &layout, 0)
        .await
        .into_iter()
        .map(|(_, ops)| match &ops[0] {
            DeltaOp::SetField { key, .. } => key.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        keys,
        vec![
            b"a0".to_vec(),
            b"b0".to_vec(),
            b"b1".to_vec(),
            b"a1".to_vec()
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_coalesce_into_fewer_deltas() {
    let (faulty, storage) = faulty();
    let layout = store_on(&storage, 1).await;
    // Slow the first commit down so that callers pile up behind it.
    faulty.inject("deltas/00000000000000000001", PutFault::FailBeforeLanding);
    let writer = Writer::open(storage.clone(), "s", fast_policy())
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let w = writer.clone();
        tasks.spawn(async move { w.upsert_fields(doc(&format!("k{i}"))).await });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    let log = all_ops(&storage, &layout, 0).await;
    let rows: usize = log.iter().map(|(_, ops)| ops.len()).sum();
    assert_eq!(rows, 200, "every caller's operation exactly once");
    assert!(
        log.len() < 200,
        "group commit coalesced {} deltas for 200 callers",
        log.len()
    );
}

#[tokio::test]
async fn store_wide_drops_reach_every_partition() {
    let storage = Storage::memory();
    let layout = store_on(&storage, 4).await;
    let writer = Writer::open(storage.clone(), "s", WriterOptions::default())
        .await
        .unwrap();
    let receipt = writer
        .write(&[
            Operation::DropFieldsByName(vec!["a".into()]),
            Operation::DropFieldsByNamePrefix(vec!["b".into()]),
            Operation::DropAllFields,
        ])
        .await
        .unwrap();
    assert_eq!(receipt.commits.len(), 4);
    for p in 0..4 {
        let log = all_ops(&storage, &layout, p).await;
        assert_eq!(
            log,
            vec![(
                1,
                vec![
                    DeltaOp::DropField { field: "a".into() },
                    DeltaOp::DropFieldPrefix { prefix: "b".into() },
                    DeltaOp::DropAll,
                ]
            )]
        );
    }
}

#[tokio::test]
async fn invalid_batches_write_nothing_and_missing_stores_are_named() {
    let storage = Storage::memory();
    let layout = store_on(&storage, 2).await;
    let writer = Writer::open(storage.clone(), "s", WriterOptions::default())
        .await
        .unwrap();
    let err = writer
        .write(&[
            Operation::UpsertFields(doc("ok")),
            Operation::UpsertFields(Document::new()),
        ])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    // Names ikv keeps for itself, in a document, a delete, a drop or a store's keys.
    let reserved = [
        Operation::UpsertFields(doc("ok").with("_ikv_key", FieldValue::String("x".into()))),
        Operation::DeleteFields {
            document: doc("ok"),
            field_names: vec!["_ikv_anything".into()],
        },
        Operation::DropFieldsByName(vec!["_ikv_key".into()]),
        Operation::DropFieldsByNamePrefix(vec!["_ikv".into()]),
    ];
    for op in reserved {
        let err = writer.write(&[op]).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("reserved"), "{err}");
    }
    assert!(StoreConfig::new("t", "_ikv_id", None, 1).is_err());
    for p in 0..2 {
        assert!(all_ops(&storage, &layout, p).await.is_empty());
    }
    let err = Writer::open(storage.clone(), "nope", WriterOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreNotFound);
    assert!(err.to_string().contains("\"nope\""), "{err}");
    let err = Writer::open(storage.clone(), "../s", WriterOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn creating_an_existing_store_never_overwrites_it() {
    let storage = Storage::memory();
    store_on(&storage, 2).await;
    let other = StoreConfig::new("s", "other", None, 8).unwrap();
    let err = create_store(&storage, &other).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreExists);
    let kept = ikv_core::bucket::load_config(&storage, "s").await.unwrap();
    assert_eq!(
        (kept.primary_key_field.as_str(), kept.num_partitions),
        ("id", 2)
    );
}

#[tokio::test]
async fn store_wide_operations_are_bounded_by_the_rows_they_make() {
    let storage = Storage::memory();
    let layout = store_on(&storage, 512).await;
    let writer = Writer::open(storage.clone(), "s", WriterOptions::default())
        .await
        .unwrap();
    // 196 names × 512 partitions = 100,352 rows: one over the limit.
    let names: Vec<String> = (0..196).map(|i| format!("f{i}")).collect();
    let err = writer
        .write(&[Operation::DropFieldsByName(names.clone())])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        err.to_string().contains("196 fields or prefixes") && err.to_string().contains("split it"),
        "{err}"
    );
    for p in [0, 255, 511] {
        assert!(all_ops(&storage, &layout, p).await.is_empty());
    }
    // 195 names fit.
    let receipt = writer
        .write(&[Operation::DropFieldsByName(names[..195].to_vec())])
        .await
        .unwrap();
    assert_eq!(receipt.commits.len(), 512);
}

/// Store creation and manifest commits share the writer's care with conditional creates: a
/// 409 whose winner never lands is not "exists", and an attempt that landed but lost its
/// answer is recognised as ours.
#[tokio::test]
async fn conditional_creates_settle_409s_and_lost_answers() {
    let config = StoreConfig::new("s", "id", None, 1).unwrap();
    let (conflicted, storage) = faulty();
    conflicted.inject("store.json", PutFault::ConflictWithoutWinner);
    create_store(&storage, &config).await.unwrap();
    let (faults, storage) = faulty();
    faults.inject("store.json", PutFault::LandThenTimeout);
    create_store(&storage, &config).await.unwrap();
    assert_eq!(
        create_store(&storage, &config).await.unwrap_err().kind(),
        ErrorKind::StoreExists,
        "a second creation still finds it"
    );
    // A snapshot manifest the same way.
    let writer = Writer::open(storage.clone(), "s", fast_policy())
        .await
        .unwrap();
    writer.upsert_fields(doc("a")).await.unwrap();
    faults.inject("manifest.json", PutFault::LandThenTimeout);
    let options = ikv_snapshot::SnapshotOptions {
        force: true,
        ..ikv_snapshot::SnapshotOptions::default()
    };
    let outcome = ikv_snapshot::snapshot_partition(
        &storage,
        &config,
        0,
        &options,
        std::time::SystemTime::now(),
    )
    .await
    .unwrap();
    assert!(
        matches!(outcome, ikv_snapshot::PartitionOutcome::Snapshotted { .. }),
        "{outcome:?}"
    );
}
