//! Model equivalence: seeded random sequences of all six operations through the writer;
//! snapshots taken at random points (with tiny files, row groups and round budgets so that
//! splitting and multi-round compaction are exercised); each snapshot's content equals the
//! reference model of the generated operations up to the sequence it covers; layers of random
//! depth and size are written and folded back into full snapshots. With and
//! without a partitioning key.
#![allow(clippy::disallowed_methods)] // tests and benches run real processes, sockets and timings on the wall clock

use std::sync::Arc;
use std::time::SystemTime;

use ikv_core::bucket::create_store;
use ikv_core::{Storage, StoreConfig, StoreLayout};
use ikv_snapshot::{Layering, PartitionOutcome, SnapshotOptions, snapshot_partition};
use ikv_snapshot_format::write::FileLayout;
use ikv_snapshot_format::{Manifest, StackDocs};
use ikv_tests::model::Model;
use ikv_tests::model_check::write_and_record;
use ikv_tests::random_ops::{PARTITIONING_KEY, PRIMARY_KEY, Workload};
use ikv_writer::{Writer, WriterOptions};
use rand::Rng;

async fn check_newest_snapshot(
    storage: &Storage,
    config: &StoreConfig,
    model: &Model,
    partition: u32,
) -> u64 {
    let layout = StoreLayout::new(&storage.prefix, &config.store_name).unwrap();
    let Some(manifest) = Manifest::load_newest(storage, &layout, partition)
        .await
        .unwrap()
    else {
        return 0;
    };
    let seq = manifest.sequence;
    let rows = (!manifest.is_layer()).then_some(manifest.row_count);
    let docs = StackDocs::open(storage, &layout, manifest)
        .await
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    if let Some(rows) = rows {
        assert_eq!(docs.len() as u64, rows, "manifest row count");
    }
    assert!(
        docs.windows(2).all(|w| w[0].0 < w[1].0),
        "sorted by key, no duplicates"
    );
    let expected = model.partition_at(partition, seq);
    let got: std::collections::BTreeMap<_, _> = docs.into_iter().collect();
    assert_eq!(got, expected, "partition {partition} at sequence {seq}");
    seq
}

async fn run(seed: u64, partitions: u32, batches: usize, partitioned: bool) {
    // Every listing shuffled when the test script asks (`IKV_TEST_SHUFFLED_LISTINGS`).
    let storage = ikv_tests::unordered::shuffled_if_asked(Storage::memory());
    run_on(storage, seed, partitions, batches, partitioned).await;
}

async fn run_on(storage: Storage, seed: u64, partitions: u32, batches: usize, partitioned: bool) {
    let partitioning = partitioned.then_some(PARTITIONING_KEY);
    let config = StoreConfig::new("model", PRIMARY_KEY, partitioning, partitions).unwrap();
    create_store(&storage, &config).await.unwrap();
    let writer = Writer::open(storage.clone(), "model", WriterOptions::default())
        .await
        .unwrap();
    let mut work = if partitioned {
        Workload::partitioned(seed, 120)
    } else {
        Workload::new(seed, 120)
    };
    let mut model = Model::new(PRIMARY_KEY, partitioning, partitions);
    let mut snapshots = 0;
    let mut multi_round = 0;
    let (mut layers, mut stacks_folded) = (0, 0);
    for _ in 0..batches {
        let ops = work.batch(12);
        write_and_record(&writer, &mut model, &ops).await;
        if work.rng().random_bool(0.06) {
            let partition = work.rng().random_range(0..partitions);
            let options = SnapshotOptions {
                force: true,
                round_budget_bytes: Some(if work.rng().random_bool(0.3) {
                    1
                } else {
                    1 << 30
                }),
                files: FileLayout {
                    row_group_rows: work.rng().random_range(1..40),
                    target_file_bytes: work.rng().random_range(1..8000),
                },
                // Layers of every depth and size, and stacks folded into full snapshots.
                layering: Layering {
                    max_layers: work.rng().random_range(0..5),
                    max_rows_percent: [10, 100, 400, 1000][work.rng().random_range(0..4)],
                },
                ..SnapshotOptions::default()
            };
            let layout = StoreLayout::new(&storage.prefix, &config.store_name).unwrap();
            let before = ikv_core::bucket::list_snapshot_seqs(&storage, &layout, partition)
                .await
                .unwrap();
            let outcome =
                snapshot_partition(&storage, &config, partition, &options, SystemTime::now())
                    .await
                    .unwrap();
            if let PartitionOutcome::Snapshotted {
                rounds,
                layers: layered,
                ..
            } = outcome
            {
                snapshots += 1;
                layers += layered;
                if rounds > 1 {
                    multi_round += 1;
                }
                stacks_folded += stacks_folded_by(&storage, &layout, partition, &before).await;
            }
            check_newest_snapshot(&storage, &config, &model, partition).await;
        }
    }
    // A final snapshot of every partition covers the whole log.
    for p in 0..partitions {
        let options = SnapshotOptions {
            force: true,
            ..SnapshotOptions::default()
        };
        snapshot_partition(&storage, &config, p, &options, SystemTime::now())
            .await
            .unwrap();
        assert_eq!(
            check_newest_snapshot(&storage, &config, &model, p).await,
            model.tip(p)
        );
    }
    assert!(
        snapshots > 3,
        "seed {seed}: only {snapshots} intermediate snapshots"
    );
    assert!(
        multi_round > 0,
        "seed {seed}: no multi-round compaction exercised"
    );
    assert!(
        layers > 2 && stacks_folded > 0,
        "seed {seed}: {layers} layers written, {stacks_folded} stacks folded"
    );
}

/// How many of the snapshots not in `before` are full snapshots over a layer.
async fn stacks_folded_by(
    storage: &Storage,
    layout: &StoreLayout,
    partition: u32,
    before: &[u64],
) -> usize {
    let mut folded = 0;
    for seq in ikv_core::bucket::list_snapshot_seqs(storage, layout, partition)
        .await
        .unwrap()
    {
        if before.contains(&seq) {
            continue;
        }
        let m = Manifest::load(storage, layout, partition, seq)
            .await
            .unwrap()
            .unwrap();
        let below = Manifest::load(storage, layout, partition, m.base_sequence)
            .await
            .unwrap();
        if !m.is_layer() && below.is_some_and(|b| b.is_layer()) {
            folded += 1;
        }
    }
    folded
}

#[tokio::test]
async fn one_partition_matches_the_model() {
    for seed in [1, 2, 3] {
        run(seed, 1, 400, false).await;
    }
}

#[tokio::test]
async fn several_partitions_match_the_model() {
    for seed in [10, 11] {
        run(seed, 4, 500, false).await;
    }
    run(12, 7, 300, false).await;
}

#[tokio::test]
async fn listings_in_no_order_from_no_offset_match_the_model() {
    // As an S3 Express directory bucket lists: shuffled, and refusing `start-after`.
    let unordered = Arc::new(ikv_tests::unordered::UnorderedListings::new(
        Arc::new(object_store::memory::InMemory::new()),
        15,
    ));
    let storage = Storage::new(
        unordered.clone(),
        object_store::path::Path::from("root"),
        "memory://unordered",
    )
    .with_unordered_listings();
    run_on(storage, 10, 4, 500, false).await;
    unordered.assert_listed_without_offsets(50);
}

#[tokio::test]
async fn a_partitioning_key_matches_the_model() {
    run(13, 4, 500, true).await;
    run(14, 3, 300, true).await;
}
