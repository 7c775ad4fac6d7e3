//! Compactors racing on the S3 emulator, and retention with an injected clock.
#![allow(clippy::disallowed_methods)] // tests and benches run real processes, sockets and timings on the wall clock

use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use ikv_core::bucket::{create_store, list_delta_seqs, list_snapshot_seqs};
use ikv_core::{Storage, StoreConfig, StoreLayout};
use ikv_snapshot::{
    PartitionOutcome, Retention, RetentionReport, SnapshotOptions, apply_retention,
    snapshot_partition,
};
use ikv_snapshot_format::{Manifest, StackDocs};
use ikv_tests::localstack_storage;
use ikv_tests::model::Model;
use ikv_tests::model_check::write_and_record;
use ikv_tests::random_ops::Workload;
use ikv_writer::{Writer, WriterOptions};
use object_store::ObjectStoreExt;

fn forced() -> SnapshotOptions {
    SnapshotOptions {
        force: true,
        ..SnapshotOptions::default()
    }
}

async fn assert_valid(storage: &Storage, layout: &StoreLayout, model: &Model, manifest: Manifest) {
    let seq = manifest.sequence;
    let docs = StackDocs::open(storage, layout, manifest)
        .await
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    let expected = model.partition_at(0, seq);
    assert_eq!(
        docs.into_iter()
            .collect::<std::collections::BTreeMap<_, _>>(),
        expected
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_compactors_leave_exactly_one_valid_snapshot() {
    let storage = localstack_storage(false).await;
    let config = StoreConfig::new("race", "id", None, 1).unwrap();
    create_store(&storage, &config).await.unwrap();
    let layout = StoreLayout::new(&storage.prefix, "race").unwrap();
    let writer = Writer::open(storage.clone(), "race", WriterOptions::default())
        .await
        .unwrap();
    let mut work = Workload::new(7, 300);
    let mut model = Model::new("id", None, 1);
    let mut lost = 0;
    for round in 0..5 {
        for _ in 0..30 {
            write_and_record(&writer, &mut model, &work.batch(20)).await;
        }
        let options = forced();
        let (a, b) = tokio::join!(
            snapshot_partition(&storage, &config, 0, &options, SystemTime::now()),
            snapshot_partition(&storage, &config, 0, &options, SystemTime::now()),
        );
        let outcomes = [a.unwrap(), b.unwrap()];
        let won = outcomes
            .iter()
            .filter(|o| matches!(o, PartitionOutcome::Snapshotted { .. }))
            .count();
        assert_eq!(
            won, 1,
            "round {round}: exactly one compactor commits: {outcomes:?}"
        );
        lost += outcomes
            .iter()
            .filter(|o| matches!(o, PartitionOutcome::LostRace { .. }))
            .count();
        let seqs = list_snapshot_seqs(&storage, &layout, 0).await.unwrap();
        assert_eq!(seqs.len(), round + 1, "one manifest per sequence number");
        let newest = Manifest::load_newest(&storage, &layout, 0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(newest.sequence, 30 * (round as u64 + 1));
        assert_valid(&storage, &layout, &model, newest).await;
    }
    assert!(lost > 0, "the compactors never actually raced");
}

#[tokio::test]
async fn retention_keeps_the_window_and_reclaims_the_rest() {
    let storage = Storage::memory();
    let config = StoreConfig::new("ret", "id", None, 1).unwrap();
    create_store(&storage, &config).await.unwrap();
    let layout = StoreLayout::new(&storage.prefix, "ret").unwrap();
    let writer = Writer::open(storage.clone(), "ret", WriterOptions::default())
        .await
        .unwrap();
    let mut work = Workload::new(3, 50);
    let mut model = Model::new("id", None, 1);
    for _ in 0..10 {
        write_and_record(&writer, &mut model, &work.batch(5)).await;
    }
    snapshot_partition(&storage, &config, 0, &forced(), SystemTime::now())
        .await
        .unwrap();
    for _ in 0..10 {
        write_and_record(&writer, &mut model, &work.batch(5)).await;
    }
    snapshot_partition(&storage, &config, 0, &forced(), SystemTime::now())
        .await
        .unwrap();
    for _ in 0..5 {
        write_and_record(&writer, &mut model, &work.batch(5)).await;
    }
    // A dead run's file (a crashed or losing compactor).
    let orphan = layout
        .snapshot_dir(0, 20)
        .join("dead-run")
        .join("part-00000.parquet");
    storage
        .object_store()
        .put(&orphan, b"partial".to_vec().into())
        .await
        .unwrap();
    let expected_at_20 = model.partition_at(0, 20);

    let retention = Retention {
        window: Duration::from_secs(3600),
        keep_snapshots: 1,
    };
    let now = SystemTime::now();
    // Inside the window nothing goes, whatever is covered.
    let report = apply_retention(
        &storage,
        &layout,
        0,
        &retention,
        now + Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(report, RetentionReport::default());
    assert_eq!(
        list_delta_seqs(&storage, &layout, 0).await.unwrap(),
        (1..=25).collect::<Vec<_>>()
    );

    // Past the window: covered deltas, the superseded snapshot and the orphan go.
    let later = now + Duration::from_secs(2 * 3600);
    let report = apply_retention(&storage, &layout, 0, &retention, later)
        .await
        .unwrap();
    assert_eq!(report.deltas_deleted, 20);
    assert_eq!(report.snapshots_deleted, 1);
    assert_eq!(report.orphan_files_deleted, 1);
    assert_eq!(
        list_delta_seqs(&storage, &layout, 0).await.unwrap(),
        (21..=25).collect::<Vec<_>>(),
        "uncovered deltas stay"
    );
    assert_eq!(
        list_snapshot_seqs(&storage, &layout, 0).await.unwrap(),
        vec![20]
    );
    let first_run: Vec<_> = storage
        .object_store()
        .list(Some(&layout.snapshot_dir(0, 10)))
        .try_collect()
        .await
        .unwrap();
    assert!(
        first_run.is_empty(),
        "the old snapshot's files are gone too"
    );
    // What is left still reads as the state at 20.
    let newest = Manifest::load_newest(&storage, &layout, 0)
        .await
        .unwrap()
        .unwrap();
    let docs = StackDocs::open(&storage, &layout, newest)
        .await
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    assert_eq!(
        docs.into_iter()
            .collect::<std::collections::BTreeMap<_, _>>(),
        expected_at_20
    );
    // The tip is still known after the deltas it came from are gone, so writers continue densely.
    let writer = Writer::open(storage.clone(), "ret", WriterOptions::default())
        .await
        .unwrap();
    let receipt = writer.write(&work.batch(1)).await.unwrap();
    assert_eq!(receipt.commits[0].sequence, 26);
    // A second pass has nothing more to do.
    let again = apply_retention(&storage, &layout, 0, &retention, later)
        .await
        .unwrap();
    assert_eq!(again, RetentionReport::default());
}

#[tokio::test]
async fn kept_snapshots_survive_any_age() {
    let storage = Storage::memory();
    let config = StoreConfig::new("keep", "id", None, 1).unwrap();
    create_store(&storage, &config).await.unwrap();
    let layout = StoreLayout::new(&storage.prefix, "keep").unwrap();
    let writer = Writer::open(storage.clone(), "keep", WriterOptions::default())
        .await
        .unwrap();
    let mut work = Workload::new(4, 20);
    for _ in 0..3 {
        writer.write(&work.batch(3)).await.unwrap();
        snapshot_partition(&storage, &config, 0, &forced(), SystemTime::now())
            .await
            .unwrap();
    }
    let retention = Retention {
        window: Duration::from_secs(3600),
        keep_snapshots: 2,
    };
    let far = SystemTime::now() + Duration::from_secs(30 * 24 * 3600);
    let report = apply_retention(&storage, &layout, 0, &retention, far)
        .await
        .unwrap();
    assert_eq!(report.snapshots_deleted, 1);
    assert_eq!(
        list_snapshot_seqs(&storage, &layout, 0).await.unwrap(),
        vec![2, 3]
    );
}

/// A store with five small deltas and no snapshot.
async fn five_deltas() -> (Storage, StoreConfig) {
    let storage = Storage::memory();
    let config = StoreConfig::new("trig", "id", None, 1).unwrap();
    create_store(&storage, &config).await.unwrap();
    let writer = Writer::open(storage.clone(), "trig", WriterOptions::default())
        .await
        .unwrap();
    let mut work = Workload::new(8, 20);
    for _ in 0..5 {
        writer.write(&work.batch(3)).await.unwrap();
    }
    (storage, config)
}

#[tokio::test]
async fn triggers_decide_when_a_partition_is_due() {
    use ikv_snapshot::Triggers;
    let now = SystemTime::now();
    let later = now + Duration::from_secs(11 * 60);
    let defaults = SnapshotOptions::default();
    // None fires: 5 deltas of a few hundred bytes, just written.
    let (storage, config) = five_deltas().await;
    let outcome = snapshot_partition(&storage, &config, 0, &defaults, now)
        .await
        .unwrap();
    assert!(
        matches!(outcome, PartitionOutcome::NotDue { deltas: 5, .. }),
        "{outcome:?}"
    );
    // Each trigger alone makes it due.
    let by_count = SnapshotOptions {
        triggers: Triggers {
            min_deltas: 5,
            ..Triggers::default()
        },
        ..SnapshotOptions::default()
    };
    let by_bytes = SnapshotOptions {
        triggers: Triggers {
            min_bytes: 1,
            ..Triggers::default()
        },
        ..SnapshotOptions::default()
    };
    for (what, options, at) in [
        ("count", &by_count, now),
        ("bytes", &by_bytes, now),
        ("age", &defaults, later),
    ] {
        let (storage, config) = five_deltas().await;
        let outcome = snapshot_partition(&storage, &config, 0, options, at)
            .await
            .unwrap();
        assert!(
            matches!(outcome, PartitionOutcome::Snapshotted { sequence: 5, .. }),
            "{what}: {outcome:?}"
        );
        let again = snapshot_partition(&storage, &config, 0, options, at)
            .await
            .unwrap();
        assert_eq!(again, PartitionOutcome::UpToDate { sequence: 5 }, "{what}");
    }
}

/// Uploads to a local directory go through `<name>#<n>` staging files; a process killed
/// mid-upload leaves them, invisible to listings. Retention removes those older than its
/// window and leaves younger ones (they may be live uploads).
#[tokio::test]
async fn retention_removes_staging_files_a_killed_upload_left() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(
        &format!("file://{}", dir.path().display()),
        &ikv_core::StorageOptions::default(),
    )
    .unwrap();
    let config = StoreConfig::new("st", "id", None, 1).unwrap();
    create_store(&storage, &config).await.unwrap();
    let layout = StoreLayout::new(&storage.prefix, "st").unwrap();
    let writer = Writer::open(storage.clone(), "st", WriterOptions::default())
        .await
        .unwrap();
    let mut work = Workload::new(9, 20);
    for _ in 0..3 {
        writer.write(&work.batch(3)).await.unwrap();
    }
    snapshot_partition(&storage, &config, 0, &forced(), SystemTime::now())
        .await
        .unwrap();
    let root = dir.path().join("st/p0000");
    let old = SystemTime::now() - Duration::from_secs(2 * 3600);
    let stale = [
        root.join("deltas/00000000000000000004.arrow#17"),
        root.join("snapshots/00000000000000000003/run/part-00000.parquet#2"),
    ];
    for path in &stale {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"partial").unwrap();
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let live = root.join("deltas/00000000000000000005.arrow#3");
    std::fs::write(&live, b"in progress").unwrap();
    let report = apply_retention(
        &storage,
        &layout,
        0,
        &Retention::default(),
        SystemTime::now(),
    )
    .await
    .unwrap();
    assert_eq!(report.staging_files_deleted, 2, "{report:?}");
    assert!(stale.iter().all(|p| !p.exists()));
    assert!(live.exists(), "a young staging file may be a live upload");
    assert_eq!(
        list_delta_seqs(&storage, &layout, 0).await.unwrap(),
        vec![1, 2, 3],
        "committed deltas are untouched"
    );
}

/// A pass refuses a retention window shorter than writers trust a learned tip (and nothing is
/// snapshotted or deleted).
#[tokio::test]
async fn a_pass_refuses_a_retention_window_writers_could_outlive() {
    let (storage, _) = five_deltas().await;
    let layout = StoreLayout::new(&storage.prefix, "trig").unwrap();
    let options = SnapshotOptions {
        force: true,
        retention: Retention {
            window: Duration::from_secs(60),
            keep_snapshots: 1,
        },
        ..SnapshotOptions::default()
    };
    let err = ikv_snapshot::run_pass(&storage, &[], &[], &options)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ikv_core::ErrorKind::InvalidInput, "{err}");
    assert!(
        err.to_string()
            .contains("retention window 60s is under the minimum"),
        "{err}"
    );
    assert!(
        list_snapshot_seqs(&storage, &layout, 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        list_delta_seqs(&storage, &layout, 0).await.unwrap().len(),
        5
    );
}
