//! A reader's metrics mean what they say: applied sequence and lag follow the log, reads are
//! counted per call, an apply records its duration, a rebuild counts, a damaged delta counts
//! as a corrupt object and fails the poll, a hole sets the gap gauge.

use std::time::Duration;

use ikv_core::bucket::discover_tip;
use ikv_core::delta::{DeltaMeta, encode_delta, place_delta};
use ikv_core::metrics::MetricSet;
use ikv_core::metrics::catalog::*;
use ikv_core::{DeltaOp, Document, FieldValue, Operation, StoreLayout};
use ikv_reader::{Reader, ReaderOptions};
use ikv_tests::fixture::{LocalStore, local_store, wait_until};
use ikv_writer::{Writer, WriterOptions};
use object_store::ObjectStoreExt;

fn options(store: &LocalStore) -> ReaderOptions {
    let mut o = ReaderOptions::new(&store.url, "m", store.dir.path().join("mount"));
    o.poll_interval = Duration::from_millis(10);
    o.gap_check_interval = Duration::from_millis(20);
    o
}

fn write(store: &LocalStore, writer: &Writer, ids: std::ops::Range<u32>) {
    for i in ids {
        let doc = Document::new()
            .with("id", FieldValue::String(format!("k{i}")))
            .with("v", FieldValue::Int64(i64::from(i)));
        store
            .rt
            .block_on(writer.write(&[Operation::UpsertFields(doc)]))
            .unwrap();
    }
}

fn writer(store: &LocalStore) -> Writer {
    store
        .rt
        .block_on(Writer::open(
            store.storage.clone(),
            "m",
            WriterOptions::default(),
        ))
        .unwrap()
}

fn tip(store: &LocalStore) -> u64 {
    let layout = StoreLayout::new(&store.storage.prefix, "m").unwrap();
    store
        .rt
        .block_on(discover_tip(&store.storage, &layout, 0))
        .unwrap()
}

fn at0() -> [(&'static str, &'static str); 1] {
    [("partition", "0")]
}

#[test]
fn applied_lag_reads_and_applies_follow_the_log() {
    let store = local_store("m", "id", None, 1);
    let writer = writer(&store);
    write(&store, &writer, 0..3);
    let reader = Reader::open(options(&store)).unwrap();
    let m = reader.metrics();
    assert_eq!(
        m.value(&READER_REBUILDS, &[]),
        Some(1.0),
        "the first start bootstraps"
    );
    assert_eq!(m.value(&READER_APPLIED_SEQUENCE, &at0()), Some(3.0));
    assert_eq!(m.value(&READER_DELTAS_APPLIED, &[]), Some(3.0));
    assert_eq!(
        m.value(&READER_APPLY_SECONDS, &[]),
        Some(3.0),
        "one duration per apply"
    );
    write(&store, &writer, 3..8);
    // A poll is counted when it ends, after the deltas it applies are visible.
    wait_until("the reader applied 8 and counted its poll", || {
        let m = reader.metrics();
        m.value(&READER_APPLIED_SEQUENCE, &at0()) == Some(8.0) && m.sum(&READER_POLLS, &[]) > 0.0
    });
    let m = reader.metrics();
    assert_eq!(m.value(&READER_DELTAS_APPLIED, &[]), Some(8.0));
    // Each delta holds one document's two fields.
    assert_eq!(m.value(&READER_DOCUMENTS_APPLIED, &[]), Some(16.0));
    assert_eq!(m.value(&READER_LAG_DELTAS, &at0()), Some(0.0));
    assert_eq!(m.value(&READER_LAG_SECONDS, &at0()), Some(0.0));
    assert_eq!(m.value(&READER_GAP, &at0()), Some(0.0));
    assert_eq!(m.value(&READER_OWNS_MOUNT, &[]), Some(1.0));
    assert!(m.value(&READER_LOCAL_BYTES, &[("part", "image")]).unwrap() > 0.0);
    let polls = m.sum(&READER_POLLS, &[]);
    assert!(polls > 0.0);
    assert_eq!(
        m.value(&READER_POLL_SECONDS, &[]),
        Some(polls),
        "every poll timed"
    );

    let before = reader.metrics();
    for i in 0..5 {
        reader.get(format!("k{i}").as_bytes(), "v").unwrap();
    }
    reader.get_document(b"k1").unwrap();
    reader.multiget(&[b"k1", b"k2"], &["v"]).unwrap();
    reader.multiget(&[b"k3"], &["v", "id"]).unwrap();
    let after = reader.metrics();
    let delta = |m: &MetricSet, d| m.value(d, &[]).unwrap();
    assert_eq!(
        delta(&after, &READER_GETS) - delta(&before, &READER_GETS),
        6.0
    );
    assert_eq!(
        delta(&after, &READER_MULTIGETS) - delta(&before, &READER_MULTIGETS),
        2.0
    );
    assert!(
        after
            .to_prometheus()
            .contains("ikv_reader_gets_total{store=\"m\"}")
    );
}

#[test]
fn a_damaged_delta_counts_as_corrupt_and_a_hole_sets_the_gap() {
    let store = local_store("m", "id", None, 1);
    let writer = writer(&store);
    write(&store, &writer, 0..2);
    let reader = Reader::open(options(&store)).unwrap();
    let layout = StoreLayout::new(&store.storage.prefix, "m").unwrap();
    assert_eq!(
        reader.metrics().value(&READER_CORRUPT_OBJECTS, &[]),
        Some(0.0)
    );

    // Garbage at the next number: refused, counted, the poll fails.
    store
        .rt
        .block_on(
            store
                .storage
                .object_store()
                .put(&layout.delta(0, 3), b"not a delta".to_vec().into()),
        )
        .unwrap();
    wait_until("the damaged delta was met", || {
        let m = reader.metrics();
        m.value(&READER_CORRUPT_OBJECTS, &[]).unwrap() >= 1.0
            && m.value(&READER_POLL_FAILING, &at0()) == Some(1.0)
            && m.value(&READER_POLLS, &[("outcome", "error")]).unwrap() >= 1.0
    });
    assert_eq!(
        reader.metrics().value(&READER_APPLIED_SEQUENCE, &at0()),
        Some(2.0)
    );

    // Replace it by a hole: 3 missing, 4 a committed delta.
    store
        .rt
        .block_on(store.storage.object_store().delete(&layout.delta(0, 3)))
        .unwrap();
    let body = encode_delta(
        &DeltaMeta::new("b4".into(), "test".into(), "m".into(), 0),
        &[DeltaOp::SetField {
            key: b"k9".to_vec(),
            field: "v".into(),
            value: FieldValue::Int64(9),
            expires_ms: None,
            event_us: None,
        }],
    )
    .unwrap();
    store
        .rt
        .block_on(
            store
                .storage
                .object_store()
                .put(&layout.delta(0, 4), place_delta(&body, 4).unwrap()),
        )
        .unwrap();
    assert_eq!(tip(&store), 4);
    wait_until("the hole is reported", || {
        reader.metrics().value(&READER_GAP, &at0()) == Some(1.0)
    });
    let m = reader.metrics();
    assert!(
        m.value(&READER_LAG_DELTAS, &at0()).unwrap() >= 2.0,
        "4 exists, 2 applied"
    );
    assert!(m.value(&READER_LAG_SECONDS, &at0()).unwrap() >= 0.0);
}

#[test]
fn a_fold_records_its_duration() {
    let store = local_store("m", "id", None, 1);
    let writer = writer(&store);
    write(&store, &writer, 0..3);
    let reader = Reader::open(options(&store)).unwrap();
    assert_eq!(
        reader.metrics().value(&READER_FOLD_SECONDS, &[]),
        Some(0.0),
        "a bootstrap builds its image without a fold"
    );
    reader.shutdown().unwrap();
    // Without a published generation to adopt, the resumed copy is folded into a new image.
    // (The mount's published generation: `<mount>/<store>/current`.)
    let current = store.dir.path().join("mount").join("m").join("current");
    std::fs::remove_file(&current).unwrap();
    let reader = Reader::open(options(&store)).unwrap();
    let m = reader.metrics();
    assert_eq!(m.value(&READER_FOLD_SECONDS, &[]), Some(1.0));
    assert_eq!(
        m.value(&READER_REBUILDS, &[]),
        Some(0.0),
        "resumed, not rebuilt"
    );
}
