//! Writers as a fleet: many instances, each with its own idea of the tip, some idle while
//! others write. A writer far behind commits in a bounded number of requests; a stray delta
//! past the tip is refused; 16 bursty writers on the S3 emulator leave a dense log holding
//! every acknowledged batch exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ikv_core::delta::{DeltaMeta, decode_delta, encode_delta};
use ikv_core::store::{create_store, list_delta_seqs, read_delta};
use ikv_core::{
    DeltaOp, Document, ErrorKind, FieldValue, Operation, Storage, StoreConfig, StoreLayout,
};
use ikv_tests::counting::CountingStore;
use ikv_tests::localstack_storage;
use ikv_writer::{Writer, WriterOptions};
use object_store::ObjectStoreExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use rand::{Rng, SeedableRng};

fn doc(key: &str, marker: &str) -> Document {
    Document::new()
        .with("id", FieldValue::String(key.into()))
        .with("m", FieldValue::String(marker.into()))
}

/// A storage view of `inner` that counts its requests.
fn counted(
    inner: Arc<dyn object_store::ObjectStore>,
    prefix: &str,
) -> (Arc<CountingStore>, Storage) {
    let counting = Arc::new(CountingStore::new(inner));
    let storage = Storage::new(counting.clone(), Path::from(prefix), "memory://counted");
    (counting, storage)
}

#[tokio::test]
async fn a_writer_ten_thousand_deltas_behind_commits_in_bounded_requests() {
    let inner: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
    let (counts, idle_view) = counted(inner.clone(), "root");
    let busy_view = Storage::new(inner.clone(), Path::from("root"), "memory://busy");
    create_store(&busy_view, &StoreConfig::new("s", "id", None, 1).unwrap())
        .await
        .unwrap();
    let idle = Writer::open(idle_view, "s", WriterOptions::default())
        .await
        .unwrap();
    assert_eq!(
        idle.upsert_fields(doc("a", "first")).await.unwrap().commits[0].sequence,
        1
    );
    let busy = Writer::open(busy_view.clone(), "s", WriterOptions::default())
        .await
        .unwrap();
    for i in 0..10_000 {
        busy.upsert_fields(doc("b", &i.to_string())).await.unwrap();
    }
    // The idle writer's knowledge is over a second old, as an idle Lambda instance's is.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = counts.counts();
    let receipt = idle.upsert_fields(doc("a", "late")).await.unwrap();
    let used = counts.counts().since(&before);
    assert_eq!(receipt.commits[0].sequence, 10_002);
    // One lost race, then one search: a LIST of the next page (full) beside 11 HEADs a page
    // and more ahead, one round of 31 bisection HEADs, a final LIST; then the PUT. Round
    // trips beyond that PUT: the lost PUT and three. (An in-memory store answers a lost race
    // without S3's 412, so the lost race also costs one HEAD to look.)
    assert!(used.puts <= 2, "{used:?}");
    assert!(used.lists <= 2, "{used:?}");
    assert!(used.total() <= 50, "{used:?}");
    let layout = StoreLayout::new(&busy_view.prefix, "s").unwrap();
    assert_eq!(
        list_delta_seqs(&busy_view, &layout, 0).await.unwrap().len(),
        10_002,
        "dense"
    );
}

#[tokio::test]
async fn a_stray_delta_past_the_tip_is_refused_and_nothing_is_written() {
    let storage = Storage::memory();
    create_store(&storage, &StoreConfig::new("s", "id", None, 1).unwrap())
        .await
        .unwrap();
    let layout = StoreLayout::new(&storage.prefix, "s").unwrap();
    let writer = Writer::open(storage.clone(), "s", WriterOptions::default())
        .await
        .unwrap();
    for i in 0..40 {
        writer
            .upsert_fields(doc("a", &i.to_string()))
            .await
            .unwrap();
    }
    let stray = encode_delta(
        &DeltaMeta::new("stray".into(), "elsewhere".into(), "s".into(), 0),
        &[DeltaOp::SetField {
            key: b"x".to_vec(),
            field: "m".into(),
            value: FieldValue::String("stray".into()),
        }],
    )
    .unwrap();
    let stray = ikv_core::delta::place_delta(&stray, 1000).unwrap();
    storage
        .store
        .put(&layout.delta(0, 1000), stray)
        .await
        .unwrap();
    let before = list_delta_seqs(&storage, &layout, 0).await.unwrap();
    // A writer that starts now (a new Lambda instance) must find the hole, not commit 1001.
    let fresh = Writer::open(storage.clone(), "s", WriterOptions::default())
        .await
        .unwrap();
    let err = fresh.upsert_fields(doc("b", "refused")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(
        err.to_string()
            .contains("delta 41 is missing while delta 1000 exists"),
        "{err}"
    );
    assert_eq!(list_delta_seqs(&storage, &layout, 0).await.unwrap(), before);
}

/// 16 writers, one partition, each writing in bursts with random pauses, so that most find
/// the tip moved when they wake. Every acknowledged call lands exactly once in a dense log, and
/// no call needs more than a bounded number of requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_bursty_writers_leave_a_dense_log_of_every_call_once() {
    let storage = localstack_storage(true).await;
    create_store(&storage, &StoreConfig::new("fleet", "id", None, 1).unwrap())
        .await
        .unwrap();
    let layout = StoreLayout::new(&storage.prefix, "fleet").unwrap();
    let tasks = (0..16u64).map(|w| {
        let (counts, view) = counted(storage.store.clone(), storage.prefix.as_ref());
        async move {
            let writer = Writer::open(view, "fleet", WriterOptions::default())
                .await
                .unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(w);
            let mut acked = Vec::new();
            let mut worst = (0, ikv_tests::counting::Counts::default());
            for burst in 0..6 {
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..150))).await;
                for call in 0..rng.random_range(1..4) {
                    let marker = format!("w{w}-b{burst}-c{call}");
                    let before = counts.counts();
                    writer
                        .write(&[Operation::UpsertFields(doc(&format!("k{w}"), &marker))])
                        .await
                        .unwrap();
                    // Each PUT is one attempt at a number; what an attempt may cost beyond its
                    // PUT is bounded (a HEAD after a 409, a page LIST to find the tip), plus
                    // one search from an idle writer's old tip per call.
                    let used = counts.counts().since(&before);
                    let extra = used.total().saturating_sub(3 * used.puts);
                    if extra > worst.0 {
                        worst = (extra, used);
                    }
                    acked.push(marker);
                }
            }
            (acked, worst)
        }
    });
    let results = futures::future::join_all(tasks).await;
    let (worst, worst_counts) = results.iter().map(|(_, w)| *w).max_by_key(|w| w.0).unwrap();
    let acked: Vec<String> = results.into_iter().flat_map(|(a, _)| a).collect();
    let seqs = list_delta_seqs(&storage, &layout, 0).await.unwrap();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "dense");
    let mut landed: BTreeMap<String, usize> = BTreeMap::new();
    for seq in seqs {
        let bytes = read_delta(&storage, &layout, 0, seq)
            .await
            .unwrap()
            .unwrap();
        for op in decode_delta(&bytes, "delta").unwrap().ops {
            if let DeltaOp::SetField {
                field,
                value: FieldValue::String(m),
                ..
            } = op
                && field == "m"
            {
                *landed.entry(m).or_default() += 1;
            }
        }
    }
    assert_eq!(landed.len(), acked.len(), "every acknowledged call landed");
    for marker in &acked {
        assert_eq!(landed.get(marker), Some(&1), "{marker} landed exactly once");
    }
    // However far the tip moved while a writer slept: at most one search from an old tip (a
    // page LIST, 11 HEADs ahead, and when far 31 more and a LIST) on top of three requests
    // per attempt.
    assert!(
        worst <= 50,
        "a call needed {worst} requests beyond three per attempt: {worst_counts:?}"
    );
}
