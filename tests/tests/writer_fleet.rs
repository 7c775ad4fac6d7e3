//! Writers as a fleet: many instances, each with its own idea of the tip, some idle while
//! others write. A writer far behind commits in a bounded number of requests; a stray delta
//! past the tip is refused; 16 bursty writers on the S3 emulator leave a dense log holding
//! every acknowledged batch exactly once.
#![allow(clippy::disallowed_methods)] // tests and benches run real processes, sockets and timings on the wall clock

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ikv_core::bucket::tip_hint::{self, TipHint};
use ikv_core::bucket::{create_store, list_delta_seqs, read_delta};
use ikv_core::delta::{DeltaMeta, decode_delta, encode_delta};
use ikv_core::{
    DeltaOp, Document, ErrorKind, FieldValue, Operation, Storage, StoreConfig, StoreLayout,
};
use ikv_tests::counting::{CountingStore, CountsOf};
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

/// `storage`, or with every listing shuffled when the test script asks
/// (`IKV_TEST_SHUFFLED_LISTINGS`: the whole suite runs again on listings in no order).
fn shuffled(storage: Storage) -> Storage {
    ikv_tests::unordered::shuffled_if_asked(storage)
}

/// A storage view of `inner` that counts its requests.
fn counted(
    inner: Arc<dyn object_store::ObjectStore>,
    prefix: &str,
) -> (Arc<CountingStore>, Storage) {
    let counting = Arc::new(CountingStore::new(inner));
    let storage = shuffled(Storage::new(
        counting.clone(),
        Path::from(prefix),
        "memory://counted",
    ));
    (counting, storage)
}

/// What the hint of partition 0 is made to say before the idle writer's commit.
enum HintBefore {
    /// As the busy writer left it.
    Published,
    /// Gone (an older writer version, or never written).
    Removed,
    /// Damaged bytes.
    Damaged,
    /// A number ahead of the idle writer, committed longer ago than writers trust a tip.
    Stale,
    /// A number ahead, committed an hour from now by its publisher's clock.
    FromTheFuture,
}

/// A one-partition store with an idle writer (its requests counted) that committed once, then
/// `n` commits by a busy writer, then over a second of idleness, as an idle Lambda
/// instance's (by then the busy writer's last hint, at most 100 ms behind its last commit,
/// has landed).
struct Overtaken {
    counts: Arc<CountingStore>,
    idle: Writer,
    storage: Storage,
    layout: StoreLayout,
}

async fn overtaken(n: usize) -> Overtaken {
    let inner: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
    let (counts, idle_view) = counted(inner.clone(), "root");
    let storage = shuffled(Storage::new(
        inner.clone(),
        Path::from("root"),
        "memory://busy",
    ));
    create_store(&storage, &StoreConfig::new("s", "id", None, 1).unwrap())
        .await
        .unwrap();
    let layout = StoreLayout::new(&storage.prefix, "s").unwrap();
    let idle = Writer::open(idle_view, "s", WriterOptions::default())
        .await
        .unwrap();
    assert_eq!(
        idle.upsert_fields(doc("a", "first")).await.unwrap().commits[0].sequence,
        1
    );
    let busy = Writer::open(storage.clone(), "s", WriterOptions::default())
        .await
        .unwrap();
    for i in 0..n {
        busy.upsert_fields(doc("b", &i.to_string())).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    Overtaken {
        counts,
        idle,
        storage,
        layout,
    }
}

/// An idle writer commits once after another writer committed 10,000 deltas to the one
/// partition; returns the requests the idle writer made for it.
async fn commit_ten_thousand_behind(hint: HintBefore) -> ikv_tests::counting::Counts {
    let Overtaken {
        counts,
        idle,
        storage: busy_view,
        layout,
    } = overtaken(10_000).await;
    assert_eq!(
        tip_hint::read(&busy_view, &layout, 0)
            .await
            .unwrap()
            .map(|h| h.seq),
        Some(10_001),
        "the busy writer published its last commit"
    );
    let hint_path = layout.tip_hint(0);
    match hint {
        HintBefore::Published => {}
        HintBefore::Removed => busy_view.object_store().delete(&hint_path).await.unwrap(),
        HintBefore::Damaged => {
            busy_view
                .object_store()
                .put(&hint_path, b"{\"format\":1,\"seq\":99999".to_vec().into())
                .await
                .unwrap();
        }
        HintBefore::Stale => {
            let stale = TipHint {
                seq: 9_000,
                committed_at: SystemTime::now() - Duration::from_secs(600),
            };
            tip_hint::write(&busy_view, &layout, 0, &stale)
                .await
                .unwrap();
        }
        HintBefore::FromTheFuture => {
            let ahead = TipHint {
                seq: 9_000,
                committed_at: SystemTime::now() + Duration::from_secs(3600),
            };
            tip_hint::write(&busy_view, &layout, 0, &ahead)
                .await
                .unwrap();
        }
    }
    let before = counts.counts();
    let receipt = idle.upsert_fields(doc("a", "late")).await.unwrap();
    let used = counts.counts().since(&before);
    assert_eq!(receipt.commits[0].sequence, 10_002);
    assert_eq!(
        list_delta_seqs(&busy_view, &layout, 0).await.unwrap().len(),
        10_002,
        "dense"
    );
    used
}

#[tokio::test]
async fn a_writer_ten_thousand_deltas_behind_commits_with_the_hint_in_three_round_trips() {
    let used = commit_ten_thousand_behind(HintBefore::Published).await;
    // One GET of the hint; one of the delta it names (the commit rule: it must be a committed
    // delta before anything is written after it) beside a HEAD of the number after it (a
    // hint may trail the tip), which is free; one PUT there, which lands: no lost race, no
    // search. (Its own hint PUT, in the background, may or may not be counted.)
    assert_eq!(used.gets, 2, "{used:?}");
    assert_eq!(used.lists, 0, "{used:?}");
    assert_eq!(used.heads, 1, "{used:?}");
    assert!((1..=2).contains(&used.puts), "{used:?}");
}

#[tokio::test]
async fn without_a_usable_hint_a_writer_ten_thousand_behind_searches_in_bounded_requests() {
    for hint in [
        HintBefore::Removed,
        HintBefore::Damaged,
        HintBefore::Stale,
        HintBefore::FromTheFuture,
    ] {
        let used = commit_ten_thousand_behind(hint).await;
        // The hint GET, one lost race (and a GET of the delta it lost to), then one search:
        // a LIST of the next page (full) beside 11 HEADs a page and more ahead, one round of
        // 31 bisection HEADs, a final LIST; a GET of the tip found (the commit rule); then
        // the PUT. Round trips beyond that PUT: the GET, the lost PUT and its GET, three for
        // the search and one GET.
        assert_eq!(used.gets, 3, "{used:?}");
        assert!(used.puts <= 3, "{used:?}");
        assert!(used.lists <= 2, "{used:?}");
        assert!(used.total() <= 51, "{used:?}");
    }
}

/// An idle writer that nobody overtook lands its first PUT; the hint it reads first changes
/// nothing.
#[tokio::test]
async fn an_idle_writer_nobody_overtook_commits_with_its_first_put() {
    let inner: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
    let (counts, view) = counted(inner, "root");
    create_store(&view, &StoreConfig::new("s", "id", None, 1).unwrap())
        .await
        .unwrap();
    let writer = Writer::open(view, "s", WriterOptions::default())
        .await
        .unwrap();
    for i in 0..3 {
        writer
            .upsert_fields(doc("a", &i.to_string()))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = counts.counts();
    let receipt = writer.upsert_fields(doc("a", "late")).await.unwrap();
    let used = counts.counts().since(&before);
    assert_eq!(receipt.commits[0].sequence, 4);
    assert_eq!((used.gets, used.lists, used.heads), (1, 0, 0), "{used:?}");
    assert!((1..=2).contains(&used.puts), "{used:?}");
}

/// A hint a few numbers behind the tip (hints are published every 64th number, after bursts
/// and by overtaken writers): the writer that follows it finds the number after it taken and
/// the tip with one LIST, and lands densely after it without losing a race.
#[tokio::test]
async fn a_hint_behind_the_tip_costs_one_list_not_a_lost_race_per_number() {
    let Overtaken {
        counts,
        idle,
        storage: busy_view,
        layout,
    } = overtaken(50).await;
    // The hint says 48 while the tip is 51.
    let lagging = TipHint {
        seq: 48,
        committed_at: SystemTime::now(),
    };
    tip_hint::write(&busy_view, &layout, 0, &lagging)
        .await
        .unwrap();
    let before = counts.counts();
    let receipt = idle.upsert_fields(doc("a", "late")).await.unwrap();
    let used = counts.counts().since(&before);
    assert_eq!(receipt.commits[0].sequence, 52);
    // The hint; its delta beside a HEAD of 49; a LIST from 48; the tip's delta (51); the PUT
    // (and, in the background, this overtaken writer's own hint).
    assert_eq!((used.gets, used.heads, used.lists), (3, 1, 1), "{used:?}");
    assert!((1..=2).contains(&used.puts), "no lost race: {used:?}");
    assert_eq!(
        list_delta_seqs(&busy_view, &layout, 0).await.unwrap(),
        (1..=52).collect::<Vec<_>>()
    );
}

/// A valid delta of store `s`, partition 0, put at `seq` behind the writers' backs (no
/// conditional create): a stray far past the tip, as a bug or a hand-made copy would leave.
async fn put_stray_delta(storage: &Storage, layout: &StoreLayout, seq: u64) {
    let stray = encode_delta(
        &DeltaMeta::new("stray".into(), "elsewhere".into(), "s".into(), 0),
        &[DeltaOp::SetField {
            key: b"x".to_vec(),
            field: "m".into(),
            value: FieldValue::String("stray".into()),
            expires_ms: None,
            event_us: None,
        }],
    )
    .unwrap();
    let stray = ikv_core::delta::place_delta(&stray, seq).unwrap();
    storage
        .object_store()
        .put(&layout.delta(0, seq), stray)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_stray_delta_past_the_tip_is_refused_and_nothing_is_written() {
    let storage = shuffled(Storage::memory());
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
    put_stray_delta(&storage, &layout, 1000).await;
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
        let (counts, view) = counted(storage.object_store().clone(), storage.prefix.as_ref());
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
                    // PUT is bounded (a GET of the delta it lost to, a page LIST to find the
                    // tip and a GET to check the tip found), plus one search from an idle
                    // writer's old tip per call.
                    let used = counts.counts().since(&before);
                    let extra = used.total().saturating_sub(4 * used.puts);
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
    // page LIST, 11 HEADs ahead, and when far 31 more and a LIST) on top of four requests
    // per attempt.
    assert!(
        worst <= 50,
        "a call needed {worst} requests beyond four per attempt: {worst_counts:?}"
    );
}

/// A writer committing back to back publishes the tip hint on every 64th number and when
/// its burst ends: the hint ends at its last commit, for a tenth of the PUTs of a hint per
/// 100 ms.
#[tokio::test]
async fn a_burst_publishes_every_64th_number_and_its_end() {
    let inner: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
    let (counts, view) = counted(inner, "root");
    create_store(&view, &StoreConfig::new("s", "id", None, 1).unwrap())
        .await
        .unwrap();
    let layout = StoreLayout::new(&view.prefix, "s").unwrap();
    let writer = Writer::open(view.clone(), "s", WriterOptions::default())
        .await
        .unwrap();
    writer.upsert_fields(doc("a", "0")).await.unwrap();
    let before = counts.counts();
    for i in 1..2_000 {
        writer
            .upsert_fields(doc("a", &i.to_string()))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let used = counts.counts().since(&before);
    let hint_puts = used.puts - 1_999;
    assert!(
        (1..=2_000 / ikv_core::bucket::HINT_EVERY + 2).contains(&hint_puts),
        "{hint_puts} hint PUTs for 1,999 commits"
    );
    assert_eq!(
        tip_hint::read(&view, &layout, 0)
            .await
            .unwrap()
            .map(|h| h.seq),
        Some(2_000)
    );
}

/// The hint is never on a commit's path to success: a hint PUT that fails leaves the commit
/// acknowledged (and the hint as it was), and an idle writer whose hint GET fails commits
/// all the same.
#[tokio::test]
async fn failing_hint_reads_and_writes_never_fail_a_commit() {
    use ikv_tests::faulty::{FaultyStore, PutFault, ReadFault};
    let faulty = Arc::new(FaultyStore::new(Arc::new(InMemory::new())));
    let storage = shuffled(Storage::new(
        faulty.clone(),
        Path::from("root"),
        "memory://faulty",
    ));
    create_store(&storage, &StoreConfig::new("s", "id", None, 1).unwrap())
        .await
        .unwrap();
    let layout = StoreLayout::new(&storage.prefix, "s").unwrap();
    for _ in 0..20 {
        faulty.inject("tip.json", PutFault::FailBeforeLanding);
    }
    let writer = Writer::open(storage.clone(), "s", WriterOptions::default())
        .await
        .unwrap();
    for i in 0..3 {
        let receipt = writer
            .upsert_fields(doc("a", &i.to_string()))
            .await
            .unwrap();
        assert_eq!(receipt.commits[0].sequence, i + 1);
    }
    // The burst's end is published once it has been quiet for `BURST_GAP`.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(tip_hint::read(&storage, &layout, 0).await.unwrap(), None);
    let refused = faulty
        .attempts
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, f)| p.ends_with("tip.json") && f.is_some())
        .count();
    assert!(refused >= 1, "the hint PUTs were attempted and failed");

    // Idle, and every read fails: the hint GET among them.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    faulty.fault_every_nth_read(1, &[ReadFault::Timeout]);
    let receipt = writer.upsert_fields(doc("a", "idle")).await.unwrap();
    assert_eq!(receipt.commits[0].sequence, 4);
    assert!(
        faulty
            .faulted_reads
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 1
    );
    faulty.stop_read_faults();
    assert_eq!(
        list_delta_seqs(&storage, &layout, 0).await.unwrap(),
        vec![1, 2, 3, 4]
    );
}

/// A writer about to go away flushes its pending hint: the next idle writer finds the last
/// commit in it, not one up to 100 ms older.
#[tokio::test]
async fn a_writer_leaving_flushes_its_pending_hint() {
    let storage = shuffled(Storage::memory());
    create_store(&storage, &StoreConfig::new("s", "id", None, 1).unwrap())
        .await
        .unwrap();
    let layout = StoreLayout::new(&storage.prefix, "s").unwrap();
    let writer = Writer::open(storage.clone(), "s", WriterOptions::default())
        .await
        .unwrap();
    for i in 0..5 {
        writer
            .upsert_fields(doc("a", &i.to_string()))
            .await
            .unwrap();
    }
    writer.flush_hints().await;
    assert_eq!(
        tip_hint::read(&storage, &layout, 0)
            .await
            .unwrap()
            .map(|h| h.seq),
        Some(5)
    );
}

/// As on an S3 Express directory bucket (listings shuffled, none from an offset): a writer
/// 2,500 deltas behind without a hint finds the tip and commits after it; a stray delta past
/// the tip is still found to be a hole, and nothing is written.
#[tokio::test]
async fn on_listings_in_no_order_a_writer_far_behind_finds_the_tip_and_a_hole_is_refused() {
    let unordered = Arc::new(ikv_tests::unordered::UnorderedListings::new(
        Arc::new(InMemory::new()),
        29,
    ));
    let storage = Storage::new(unordered.clone(), Path::from("root"), "memory://unordered")
        .with_unordered_listings();
    create_store(&storage, &StoreConfig::new("s", "id", None, 1).unwrap())
        .await
        .unwrap();
    let layout = StoreLayout::new(&storage.prefix, "s").unwrap();
    let idle = Writer::open(storage.clone(), "s", WriterOptions::default())
        .await
        .unwrap();
    idle.upsert_fields(doc("a", "first")).await.unwrap();
    let busy = Writer::open(storage.clone(), "s", WriterOptions::default())
        .await
        .unwrap();
    for i in 0..2_500 {
        busy.upsert_fields(doc("b", &i.to_string())).await.unwrap();
    }
    drop(busy);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Without a hint the idle writer must search: HEADs, then a whole listing, in any order.
    storage
        .object_store()
        .delete(&layout.tip_hint(0))
        .await
        .unwrap();
    let listings = unordered.listings();
    let receipt = idle.upsert_fields(doc("a", "late")).await.unwrap();
    assert_eq!(receipt.commits[0].sequence, 2_502);
    assert!(unordered.listings() > listings, "the search listed");
    assert_eq!(
        list_delta_seqs(&storage, &layout, 0).await.unwrap(),
        (1..=2_502).collect::<Vec<_>>()
    );
    // A stray delta far past the tip: a new writer finds the hole whatever the order.
    put_stray_delta(&storage, &layout, 5_000).await;
    let fresh = Writer::open(storage.clone(), "s", WriterOptions::default())
        .await
        .unwrap();
    let err = fresh.upsert_fields(doc("c", "refused")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(
        err.to_string()
            .contains("delta 2503 is missing while delta 5000 exists"),
        "{err}"
    );
    unordered.assert_listed_without_offsets(0);
}
