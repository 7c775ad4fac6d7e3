//! Layers (docs/SNAPSHOTS.md, "Layers"): a pass after a small change writes only what changed;
//! readers bootstrap from a stack of layers to the model's state; retention keeps every
//! snapshot a kept layer stands on and reclaims the stack once it is folded; a layer pass
//! reads no document of the store; a broken or forged stack is refused by name, never served.
#![allow(clippy::disallowed_methods)] // tests and benches run real processes, sockets and timings on the wall clock

use std::time::{Duration, SystemTime};

use ikv_core::bucket::list_snapshot_seqs;
use ikv_core::{Storage, StoreConfig, StoreLayout};
use ikv_reader::{Reader, ReaderOptions};
use ikv_snapshot::{
    PartitionOutcome, Retention, SnapshotOptions, apply_retention, snapshot_partition,
};
use ikv_snapshot_format::{Manifest, StackDocs};
use ikv_tests::fixture::local_store;
use ikv_tests::layered_pass;
use ikv_tests::model::Model;
use ikv_tests::model_check::{assert_equals_model, write_and_record};
use ikv_tests::random_ops::{PRIMARY_KEY, Workload};
use ikv_writer::{Writer, WriterOptions};

const KEYS: usize = 400;

async fn pass(storage: &Storage, config: &StoreConfig, p: u32, options: &SnapshotOptions) -> usize {
    match snapshot_partition(storage, config, p, options, SystemTime::now())
        .await
        .unwrap()
    {
        PartitionOutcome::Snapshotted { layers, .. } => layers,
        other => panic!("partition {p}: {other}"),
    }
}

async fn newest(storage: &Storage, layout: &StoreLayout, p: u32) -> Manifest {
    Manifest::load_newest(storage, layout, p)
        .await
        .unwrap()
        .unwrap()
}

async fn assert_stack_is_model(storage: &Storage, layout: &StoreLayout, model: &Model, p: u32) {
    let top = newest(storage, layout, p).await;
    let seq = top.sequence;
    let docs: std::collections::BTreeMap<_, _> = StackDocs::open(storage, layout, top)
        .await
        .unwrap()
        .collect_all()
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(docs, model.partition_at(p, seq), "partition {p} at {seq}");
}

#[test]
fn readers_bootstrap_from_stacks_of_layers_to_the_model() {
    let store = local_store("layers", PRIMARY_KEY, None, 2);
    let rt = &store.rt;
    let layout = StoreLayout::new(&store.storage.prefix, "layers").unwrap();
    let writer = rt
        .block_on(Writer::open(
            store.storage.clone(),
            "layers",
            WriterOptions::default(),
        ))
        .unwrap();
    let mut work = Workload::new(7, KEYS);
    let keys = work.all_keys();
    let mut model = Model::new(PRIMARY_KEY, None, 2);
    for _ in 0..60 {
        rt.block_on(write_and_record(&writer, &mut model, &work.batch(10)));
    }
    for p in 0..2 {
        rt.block_on(pass(&store.storage, &store.config, p, &layered_pass(0)));
    }
    let mounts = tempfile::tempdir().unwrap();
    let (mut layers, mut deepest, mut folds) = (0, 0, 0);
    for round in 0..10 {
        for _ in 0..6 {
            let ops = work.keyed_batch(10);
            rt.block_on(write_and_record(&writer, &mut model, &ops));
        }
        for p in 0..2 {
            let was_layer = rt.block_on(newest(&store.storage, &layout, p)).is_layer();
            let wrote = rt.block_on(pass(&store.storage, &store.config, p, &layered_pass(3)));
            let top = rt.block_on(newest(&store.storage, &layout, p));
            layers += wrote;
            deepest = deepest.max(top.stacked_on.len());
            folds += usize::from(was_layer && !top.is_layer());
            rt.block_on(assert_stack_is_model(&store.storage, &layout, &model, p));
        }
        // A reader on a fresh mount bootstraps from each partition's stack: no delta after it.
        let mut options =
            ReaderOptions::new(&store.url, "layers", mounts.path().join(round.to_string()));
        options.poll_interval = Duration::from_millis(20);
        let reader = Reader::open(options).unwrap();
        for status in reader.status() {
            assert_eq!(
                status.snapshot_sequence, status.applied_sequence,
                "partition {} bootstrapped from its newest snapshot",
                status.partition
            );
        }
        assert_equals_model(&reader, &keys, &model.state());
        reader.shutdown().unwrap();
    }
    // Three layers at most over a full snapshot, then a full snapshot again.
    // Per partition, ten passes: three layers, a fold, three layers, a fold, two layers.
    assert_eq!(layers, 16, "{deepest} deep, {folds} folds");
    assert_eq!(deepest, 3, "a full snapshot and two layers below the top");
    assert_eq!(folds, 4);
}

#[test]
fn a_layer_pass_reads_no_document_and_retention_keeps_its_stack() {
    let store = local_store("kept", PRIMARY_KEY, None, 1);
    let rt = &store.rt;
    let storage = &store.storage;
    let layout = StoreLayout::new(&storage.prefix, "kept").unwrap();
    let writer = rt
        .block_on(Writer::open(
            storage.clone(),
            "kept",
            WriterOptions::default(),
        ))
        .unwrap();
    let mut work = Workload::new(8, KEYS);
    let mut model = Model::new(PRIMARY_KEY, None, 1);
    for _ in 0..80 {
        rt.block_on(write_and_record(&writer, &mut model, &work.batch(10)));
    }
    rt.block_on(pass(storage, &store.config, 0, &layered_pass(0)));
    let full = rt.block_on(newest(storage, &layout, 0));
    assert!(!full.is_layer() && full.row_count > 0);

    // The full snapshot's files are moved away: a layer pass does not need them.
    let root = storage.local_dir().unwrap();
    let moved: Vec<_> = full
        .files
        .iter()
        .map(|f| {
            let path = root.join(full.file_path(&layout, f).as_ref());
            let aside = path.with_extension("aside");
            std::fs::rename(&path, &aside).unwrap();
            (path, aside)
        })
        .collect();
    let ops = work.keyed_batch(5);
    rt.block_on(write_and_record(&writer, &mut model, &ops));
    assert_eq!(
        rt.block_on(pass(storage, &store.config, 0, &layered_pass(8))),
        1
    );
    for (path, aside) in moved {
        std::fs::rename(aside, path).unwrap();
    }
    rt.block_on(assert_stack_is_model(storage, &layout, &model, 0));

    // Two more layers: the full snapshot and the first layer are older than any window and
    // beyond the newest two, yet the newest layer stands on them.
    for _ in 0..2 {
        let ops = work.keyed_batch(5);
        rt.block_on(write_and_record(&writer, &mut model, &ops));
        assert_eq!(
            rt.block_on(pass(storage, &store.config, 0, &layered_pass(8))),
            1
        );
    }
    let later = SystemTime::now() + Duration::from_secs(3 * 3600);
    let retention = Retention {
        window: Duration::from_secs(3600),
        keep_snapshots: 1,
    };
    let report = rt
        .block_on(apply_retention(storage, &layout, 0, &retention, later))
        .unwrap();
    assert_eq!(
        report.snapshots_deleted, 0,
        "every snapshot is in the stack"
    );
    rt.block_on(assert_stack_is_model(storage, &layout, &model, 0));

    // Folded: the stack below the new full snapshot is reclaimed.
    rt.block_on(write_and_record(&writer, &mut model, &work.batch(5)));
    rt.block_on(pass(storage, &store.config, 0, &layered_pass(0)));
    let report = rt
        .block_on(apply_retention(storage, &layout, 0, &retention, later))
        .unwrap();
    assert_eq!(
        report.snapshots_deleted, 4,
        "the full snapshot and its three layers"
    );
    let left = rt
        .block_on(list_snapshot_seqs(storage, &layout, 0))
        .unwrap();
    assert_eq!(
        left,
        vec![rt.block_on(newest(storage, &layout, 0)).sequence]
    );
    rt.block_on(assert_stack_is_model(storage, &layout, &model, 0));
}

#[test]
fn a_broken_or_forged_stack_is_refused_by_name() {
    let store = local_store("forged", PRIMARY_KEY, None, 1);
    let rt = &store.rt;
    let storage = &store.storage;
    let layout = StoreLayout::new(&storage.prefix, "forged").unwrap();
    let writer = rt
        .block_on(Writer::open(
            storage.clone(),
            "forged",
            WriterOptions::default(),
        ))
        .unwrap();
    let mut work = Workload::new(9, KEYS);
    let mut model = Model::new(PRIMARY_KEY, None, 1);
    for _ in 0..40 {
        let ops = work.keyed_batch(10);
        rt.block_on(write_and_record(&writer, &mut model, &ops));
    }
    rt.block_on(pass(storage, &store.config, 0, &layered_pass(0)));
    for _ in 0..2 {
        let ops = work.keyed_batch(5);
        rt.block_on(write_and_record(&writer, &mut model, &ops));
        assert_eq!(
            rt.block_on(pass(storage, &store.config, 0, &layered_pass(8))),
            1
        );
    }
    let top = rt.block_on(newest(storage, &layout, 0));
    let [full, first] = top.stacked_on[..] else {
        panic!("stacked on {:?}", top.stacked_on)
    };
    let root = storage.local_dir().unwrap();
    let manifest_file = |seq: u64| root.join(Manifest::path(&layout, 0, seq).as_ref());
    let open =
        |m: Manifest| rt.block_on(async { StackDocs::open(storage, &layout, m).await.map(|_| ()) });

    // A forged top (valid checksum) that leaves out the full snapshot: the layer below says
    // it stands on one, so the stacks disagree.
    let mut forged = top.clone();
    forged.stacked_on = vec![first];
    let original = std::fs::read(manifest_file(top.sequence)).unwrap();
    let sealed = ikv_core::checksum::seal_json(serde_json::to_vec_pretty(&forged).unwrap());
    std::fs::write(manifest_file(top.sequence), sealed).unwrap();
    let err = open(rt.block_on(newest(storage, &layout, 0))).unwrap_err();
    assert!(
        err.to_string().contains(&format!("snapshot {first}"))
            && err.to_string().contains("stacked on"),
        "{err}"
    );
    std::fs::write(manifest_file(top.sequence), original).unwrap();

    // Stacked on an order no stack has: refused as the manifest is read.
    let mut unordered = top.clone();
    unordered.stacked_on = vec![first, full];
    let sealed = ikv_core::checksum::seal_json(serde_json::to_vec_pretty(&unordered).unwrap());
    let err = Manifest::decode(&sealed, "test manifest").unwrap_err();
    assert!(err.to_string().contains("not ascending"), "{err}");

    // The full snapshot's manifest gone (a broken bucket): readers of the stack, and the
    // compactor, name what is missing; nothing is served from half a stack.
    std::fs::remove_file(manifest_file(full)).unwrap();
    let err = open(top.clone()).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("stacked on snapshot {full}, which is gone")),
        "{err}"
    );
    let ops = work.keyed_batch(5);
    rt.block_on(write_and_record(&writer, &mut model, &ops));
    let err = rt
        .block_on(snapshot_partition(
            storage,
            &store.config,
            0,
            &layered_pass(8),
            SystemTime::now(),
        ))
        .unwrap_err();
    assert!(err.to_string().contains("which is gone"), "{err}");
    let mounts = tempfile::tempdir().unwrap();
    let options = ReaderOptions::new(&store.url, "forged", mounts.path().join("m"));
    let Err(err) = Reader::open(options) else {
        panic!("a reader refuses half a stack")
    };
    assert!(err.to_string().contains("which is gone"), "{err}");
}
