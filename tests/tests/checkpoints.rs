//! Checkpoints (docs/SNAPSHOTS.md, "Checkpoints"): a store pinned as committed at one moment
//! reads back exactly as the model says it was, after more writes, layers, folds and retention
//! three hours later; deleting it lets retention reclaim what only it kept; names and
//! duplicates are refused by name.
#![allow(clippy::disallowed_methods)] // tests and benches run real processes, sockets and timings on the wall clock

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use ikv_core::bucket::{list_delta_seqs, list_snapshot_seqs};
use ikv_core::{Error, ErrorKind, Storage, StoreConfig, StoreLayout};
use ikv_snapshot::checkpoint::{
    create_checkpoint, delete_checkpoint, list_checkpoints, load_checkpoint,
};
use ikv_snapshot::state::{ReadPoint, point_as_of, read_partition};
use ikv_snapshot::{Retention, apply_retention, snapshot_partition};
use ikv_tests::fixture::local_store;
use ikv_tests::layered_pass;
use ikv_tests::model::Model;
use ikv_tests::model_check::write_and_record;
use ikv_tests::random_ops::{PRIMARY_KEY, Workload};
use ikv_writer::{Writer, WriterOptions};

async fn read_at(
    storage: &Storage,
    config: &StoreConfig,
    partition: u32,
    at: ReadPoint,
) -> ikv_core::Result<ikv_tests::model::PartitionDocs> {
    let mut rx = read_partition(storage.clone(), config.clone(), partition, at, i64::MIN, 7);
    let mut out = BTreeMap::new();
    while let Some(batch) = rx.recv().await {
        for (k, doc) in batch? {
            assert!(out.insert(k, doc).is_none(), "a key twice");
        }
    }
    Ok(out)
}

#[test]
fn a_checkpoint_reads_back_as_it_was_after_writes_passes_and_retention() {
    let store = local_store("pinned", PRIMARY_KEY, None, 2);
    let (rt, storage, config) = (&store.rt, &store.storage, &store.config);
    let layout = StoreLayout::new(&storage.prefix, "pinned").unwrap();
    let writer = rt
        .block_on(Writer::open(
            storage.clone(),
            "pinned",
            WriterOptions::default(),
        ))
        .unwrap();
    let mut work = Workload::new(31, 300);
    let mut model = Model::new(PRIMARY_KEY, None, 2);
    let write = |work: &mut Workload, model: &mut Model, batches: usize| {
        for _ in 0..batches {
            rt.block_on(write_and_record(&writer, model, &work.batch(10)));
        }
    };
    write(&mut work, &mut model, 40);
    for p in 0..2 {
        rt.block_on(snapshot_partition(
            storage,
            config,
            p,
            &layered_pass(0),
            SystemTime::now(),
        ))
        .unwrap();
    }
    // Deltas after the snapshots: the checkpoint's state is a snapshot plus deltas.
    write(&mut work, &mut model, 10);
    let made = rt
        .block_on(create_checkpoint(
            storage,
            "pinned",
            "train-1",
            SystemTime::now(),
        ))
        .unwrap();
    let pinned: Vec<u64> = made.partitions.iter().map(|p| p.sequence).collect();
    assert_eq!(pinned, vec![model.tip(0), model.tip(1)]);
    assert!(
        made.partitions
            .iter()
            .all(|p| p.snapshot > 0 && p.snapshot < p.sequence)
    );

    // Refused: the same name again (untouched), a bad name, a checkpoint that does not exist.
    let again = rt
        .block_on(create_checkpoint(
            storage,
            "pinned",
            "train-1",
            SystemTime::now(),
        ))
        .unwrap_err();
    assert!(matches!(again, Error::CheckpointExists { .. }), "{again}");
    assert_eq!(again.kind(), ErrorKind::StoreExists);
    assert_eq!(
        rt.block_on(load_checkpoint(storage, "pinned", "train-1"))
            .unwrap(),
        made
    );
    for bad in ["", ".hidden", "a/b", "spaces no", &"x".repeat(129)] {
        let err = rt
            .block_on(create_checkpoint(storage, "pinned", bad, SystemTime::now()))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}: {err}");
    }
    let missing = rt
        .block_on(load_checkpoint(storage, "pinned", "nope"))
        .unwrap_err();
    assert!(
        missing.to_string().contains("no checkpoint \"nope\""),
        "{missing}"
    );
    assert_eq!(missing.kind(), ErrorKind::StoreNotFound);

    // Much later: more writes, layers, folds, and retention three hours on keeping one snapshot.
    for round in 0..6 {
        write(&mut work, &mut model, 6);
        for p in 0..2 {
            rt.block_on(snapshot_partition(
                storage,
                config,
                p,
                &layered_pass(if round == 5 { 0 } else { 2 }),
                SystemTime::now(),
            ))
            .unwrap();
        }
    }
    let later = SystemTime::now() + Duration::from_secs(3 * 3600);
    let retention = Retention {
        window: Duration::from_secs(3600),
        keep_snapshots: 1,
    };
    for p in 0..2 {
        let report = rt
            .block_on(apply_retention(storage, &layout, p, &retention, later))
            .unwrap();
        assert!(report.snapshots_deleted > 0, "p{p}: {report:?}");
        let pin = &made.partitions[p as usize];
        let snapshots = rt
            .block_on(list_snapshot_seqs(storage, &layout, p))
            .unwrap();
        assert!(snapshots.contains(&pin.snapshot), "p{p}: {snapshots:?}");
        let deltas = rt.block_on(list_delta_seqs(storage, &layout, p)).unwrap();
        assert_eq!(
            deltas.first().copied(),
            Some(pin.snapshot + 1),
            "p{p}: the log starts after the pinned snapshot"
        );
        // The checkpoint reads as the model was; the tip reads as it is.
        let at = ReadPoint {
            upto: pin.sequence,
            snapshot: Some(pin.snapshot),
        };
        assert_eq!(
            rt.block_on(read_at(storage, config, p, at)).unwrap(),
            model.partition_at(p, pin.sequence),
            "p{p} at the checkpoint"
        );
        let tip = ReadPoint {
            upto: model.tip(p),
            snapshot: None,
        };
        assert_eq!(
            rt.block_on(read_at(storage, config, p, tip)).unwrap(),
            model.partition_at(p, model.tip(p)),
            "p{p} at the tip"
        );
    }
    assert_eq!(
        rt.block_on(list_checkpoints(storage, "pinned")).unwrap(),
        vec![made.clone()]
    );

    // Deleted: retention reclaims what only the checkpoint kept.
    rt.block_on(delete_checkpoint(storage, "pinned", "train-1"))
        .unwrap();
    let gone = rt
        .block_on(delete_checkpoint(storage, "pinned", "train-1"))
        .unwrap_err();
    assert!(matches!(gone, Error::CheckpointNotFound { .. }), "{gone}");
    for p in 0..2 {
        rt.block_on(apply_retention(storage, &layout, p, &retention, later))
            .unwrap();
        let snapshots = rt
            .block_on(list_snapshot_seqs(storage, &layout, p))
            .unwrap();
        assert_eq!(snapshots.len(), 1, "p{p}: only the newest: {snapshots:?}");
        let deltas = rt.block_on(list_delta_seqs(storage, &layout, p)).unwrap();
        assert!(
            deltas.is_empty(),
            "p{p}: every delta covered and old: {deltas:?}"
        );
        let pin = &made.partitions[p as usize];
        let at = ReadPoint {
            upto: pin.sequence,
            snapshot: Some(pin.snapshot),
        };
        let err = rt.block_on(read_at(storage, config, p, at)).unwrap_err();
        assert!(err.to_string().contains("is gone"), "{err}");
        // Nor can a time that early be told any more: its deltas are gone too.
        let early = SystemTime::UNIX_EPOCH + Duration::from_secs(86_400);
        let err = rt
            .block_on(point_as_of(storage, "pinned", p, early))
            .unwrap_err();
        assert!(err.to_string().contains("no longer in the bucket"), "{err}");
        // A point whose snapshot is gone and whose deltas were reclaimed is refused by name.
        let newest = *snapshots.last().unwrap();
        let at = ReadPoint {
            upto: newest,
            snapshot: Some(0),
        };
        let err = rt.block_on(read_at(storage, config, p, at)).unwrap_err();
        assert!(err.to_string().contains("deltas 1 to"), "{err}");
    }
    assert!(
        rt.block_on(list_checkpoints(storage, "pinned"))
            .unwrap()
            .is_empty()
    );
}
