//! A compaction pass's metrics mean what they say: snapshots committed, deltas left after the
//! newest snapshot, partitions that failed, the pass's duration and the root's requests.

use std::time::Duration;

use ikv_core::metrics::catalog::*;
use ikv_core::{Document, FieldValue, Operation, StoreLayout};
use ikv_snapshot::pass_metrics::pass_metrics;
use ikv_snapshot::{
    PartitionReport, PassOutcome, SnapshotOptions, Triggers, run_pass_reporting, snapshot_partition,
};
use ikv_tests::fixture::local_store;
use ikv_writer::{Writer, WriterOptions};
use object_store::ObjectStoreExt;

#[test]
fn a_pass_reports_snapshots_backlog_and_failures() {
    let store = local_store("c", "id", None, 2);
    let rt = &store.rt;
    let writer = rt
        .block_on(Writer::open(
            store.storage.clone(),
            "c",
            WriterOptions::default(),
        ))
        .unwrap();
    let write = |n: u32| {
        for i in 0..n {
            let doc = Document::new()
                .with("id", FieldValue::String(format!("k{i}")))
                .with("v", FieldValue::Int64(i64::from(i)));
            rt.block_on(writer.write(&[Operation::UpsertFields(doc)]))
                .unwrap();
        }
    };
    write(10);
    let forced = SnapshotOptions {
        force: true,
        ..SnapshotOptions::default()
    };
    let pass = rt
        .block_on(run_pass_reporting(&store.storage, &[], &[], &forced))
        .unwrap();
    let m = pass_metrics(&store.storage, &pass, Duration::from_millis(30));
    let s = [("store", "c")];
    assert_eq!(
        m.value(&COMPACTOR_SNAPSHOTS, &s),
        Some(2.0),
        "one per partition"
    );
    assert_eq!(
        m.value(&COMPACTOR_DELTAS_FOLDED, &s),
        Some(10.0),
        "every delta written"
    );
    // Rows are field operations: two fields per document.
    assert_eq!(m.value(&COMPACTOR_ROWS_FOLDED, &s), Some(20.0));
    let layout = StoreLayout::new(&store.storage.prefix, "c").unwrap();
    let written: u64 = pass
        .reports
        .iter()
        .map(|r| {
            let manifest = rt
                .block_on(ikv_snapshot_format::Manifest::load_newest(
                    &store.storage,
                    &layout,
                    r.partition,
                ))
                .unwrap()
                .unwrap();
            manifest.files.iter().map(|f| f.bytes).sum::<u64>()
        })
        .sum();
    assert!(written > 0);
    assert_eq!(m.value(&COMPACTOR_BYTES_WRITTEN, &s), Some(written as f64));
    assert_eq!(m.value(&COMPACTOR_PARTITION_FAILURES, &s), Some(0.0));
    assert_eq!(m.sum(&COMPACTOR_DELTAS_SINCE_SNAPSHOT, &s), 0.0);
    assert_eq!(m.value(&COMPACTOR_PASS_SECONDS, &[]), Some(1.0));
    assert!(
        m.sum(
            &STORAGE_REQUESTS,
            &[("component", "compactor"), ("kind", "put")]
        ) > 0.0
    );

    assert_eq!(
        m.value(&COMPACTOR_LAYERS, &s),
        Some(0.0),
        "first snapshots are full"
    );

    // One more document: its partition's pass writes only that change, a layer.
    write(1);
    let layered = SnapshotOptions {
        force: true,
        layering: ikv_snapshot::Layering {
            max_layers: 8,
            max_rows_percent: 1000,
        },
        ..SnapshotOptions::default()
    };
    let pass = rt
        .block_on(run_pass_reporting(&store.storage, &[], &[], &layered))
        .unwrap();
    let m = pass_metrics(&store.storage, &pass, Duration::from_millis(30));
    assert_eq!(m.value(&COMPACTOR_SNAPSHOTS, &s), Some(1.0));
    assert_eq!(m.value(&COMPACTOR_LAYERS, &s), Some(1.0));

    // Three new deltas, no trigger fires: the backlog is reported per partition.
    write(3);
    let pass = rt
        .block_on(run_pass_reporting(
            &store.storage,
            &[],
            &[],
            &SnapshotOptions::default(),
        ))
        .unwrap();
    let m = pass_metrics(&store.storage, &pass, Duration::from_millis(1));
    assert_eq!(m.value(&COMPACTOR_SNAPSHOTS, &s), Some(0.0));
    assert_eq!(m.sum(&COMPACTOR_DELTAS_SINCE_SNAPSHOT, &s), 3.0);
    // Judged an hour later (the pass's `now`), those deltas are an hour stale: the gauge says
    // so for the partition that has them.
    let later = ikv_core::clock::wall_time() + Duration::from_secs(3600);
    let mut stale = PassOutcome::default();
    for partition in 0..2 {
        let outcome = rt
            .block_on(snapshot_partition(
                &store.storage,
                &store.config,
                partition,
                &SnapshotOptions {
                    triggers: Triggers {
                        max_age: Duration::from_secs(86_400),
                        ..Triggers::default()
                    },
                    ..SnapshotOptions::default()
                },
                later,
            ))
            .unwrap();
        stale.reports.push(PartitionReport {
            store: "c".into(),
            partition,
            outcome,
            retention: Default::default(),
        });
    }
    let m = pass_metrics(&store.storage, &stale, Duration::from_millis(1));
    let lag: Vec<f64> = (0..2)
        .map(|p| {
            m.value(
                &COMPACTOR_SNAPSHOT_LAG_SECONDS,
                &[("partition", p.to_string().as_str())],
            )
            .unwrap()
        })
        .collect();
    assert!(lag.iter().any(|l| *l >= 3590.0), "{lag:?}");
    assert!(lag.iter().all(|l| *l == 0.0 || *l >= 3590.0), "{lag:?}");

    // A damaged delta stops its partition's snapshot, not the other's: one failure.
    let layout = StoreLayout::new(&store.storage.prefix, "c").unwrap();
    let (bad_partition, bad_seq) = (0..2)
        .map(|p| {
            let tip = rt
                .block_on(ikv_core::bucket::discover_tip(&store.storage, &layout, p))
                .unwrap();
            (p, tip)
        })
        .find(|(_, tip)| *tip > 0)
        .unwrap();
    rt.block_on(store.storage.object_store().put(
        &layout.delta(bad_partition, bad_seq),
        b"garbage".to_vec().into(),
    ))
    .unwrap();
    let pass = rt
        .block_on(run_pass_reporting(&store.storage, &[], &[], &forced))
        .unwrap();
    let m = pass_metrics(&store.storage, &pass, Duration::from_millis(1));
    assert_eq!(m.value(&COMPACTOR_PARTITION_FAILURES, &s), Some(1.0));
    assert_eq!(pass.reports.len(), 1, "the other partition was done");
    let line = ikv_core::metrics::emf::line(&m, &[], 1).unwrap();
    let v = ikv_core::metrics::emf::check(&line).unwrap();
    assert_eq!(v["ikv_compactor_partition_failures_total.c"], 1.0);
}
