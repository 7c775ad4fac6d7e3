//! What a writer's commits cost in requests (rfcs/0009, docs/OPERATIONS.md "Request budget"),
//! counted on the store, never timed: time is a `ManualClock` the test moves.
//!
//! - a sole writer at a steady rate, 0.1 to 100 commits a second: at most 1.05 PUTs a commit
//!   (the delta; a tip hint every 64th number; a wake signal only for a partition's first
//!   commit after a quiet spell);
//! - a partition quiet for 20 s or more: its next commit writes the store's wake signal,
//!   before the commit is acknowledged, and later ones do not;
//! - a wake signal that cannot be written never fails the commit.

use std::sync::Arc;
use std::time::Duration;

use ikv_core::bucket::create_store;
use ikv_core::bucket::requests::RequestKind;
use ikv_core::bucket::wake::{Wake, WakeCheck, WakeWatch};
use ikv_core::clock::{Clock, ManualClock, wall_time};
use ikv_core::metrics::catalog::{WRITER_WAKE_FAILURES, WRITER_WAKE_SIGNALS};
use ikv_core::{Document, FieldValue, Storage, StoreConfig, StoreLayout};
use ikv_tests::faulty::{FaultyStore, PutFault};
use ikv_writer::{Writer, WriterOptions};
use object_store::memory::InMemory;
use object_store::path::Path;

fn doc(key: &str, marker: &str) -> Document {
    Document::new()
        .with("id", FieldValue::String(key.into()))
        .with("m", FieldValue::String(marker.into()))
}

/// A one-partition store and a writer on it whose time is `clock`.
async fn writer_on(storage: &Storage, clock: &Arc<ManualClock>) -> Writer {
    create_store(storage, &StoreConfig::new("s", "id", None, 1).unwrap())
        .await
        .unwrap();
    let options = WriterOptions {
        clock: Some(clock.clone() as Arc<dyn Clock>),
        ..WriterOptions::default()
    };
    Writer::open(storage.clone(), "s", options).await.unwrap()
}

/// Lets the writer's background tasks (the hint publisher) run what is due.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

fn puts(storage: &Storage) -> u64 {
    storage.requests().of_kind(RequestKind::Put)
}

#[tokio::test]
async fn a_writer_at_any_steady_rate_makes_at_most_1_05_puts_per_commit() {
    for per_second in [0.1, 1.0, 3.3, 10.0, 100.0] {
        let storage = Storage::memory();
        let clock = ManualClock::new(wall_time());
        let writer = writer_on(&storage, &clock).await;
        let before = puts(&storage);
        let commits = 300u64;
        let gap = Duration::from_secs_f64(1.0 / per_second);
        for i in 0..commits {
            writer
                .upsert_fields(doc("a", &i.to_string()))
                .await
                .unwrap();
            settle().await;
            clock.advance(gap);
            settle().await;
        }
        writer.flush_hints().await;
        let per_commit = (puts(&storage) - before) as f64 / commits as f64;
        assert!(
            per_commit <= 1.05,
            "{per_second} commits/s: {per_commit:.3} PUTs per commit"
        );
        assert!(per_commit >= 1.0, "{per_commit}");
    }
}

#[tokio::test]
async fn the_first_commit_after_a_quiet_spell_writes_the_wake_signal_once() {
    let storage = Storage::memory();
    let layout = StoreLayout::new(&storage.prefix, "s").unwrap();
    let clock = ManualClock::new(wall_time());
    let writer = writer_on(&storage, &clock).await;
    let mut watch = WakeWatch::new();
    assert_eq!(
        watch.check(&storage, &layout).await.unwrap(),
        WakeCheck::First
    );
    // The log's first commit ends the longest quiet spell there is.
    writer.upsert_fields(doc("a", "1")).await.unwrap();
    let woken = |check: WakeCheck| match check {
        WakeCheck::Woken(Some(Wake { partition, seq, .. })) => Some((partition, seq)),
        _ => None,
    };
    assert_eq!(
        woken(watch.check(&storage, &layout).await.unwrap()),
        Some((0, 1))
    );
    // Commits less than 20 s apart: the signal stays as it was.
    for (i, gap) in [1u64, 5, 19].into_iter().enumerate() {
        clock.advance(Duration::from_secs(gap));
        writer
            .upsert_fields(doc("a", &i.to_string()))
            .await
            .unwrap();
        assert_eq!(
            watch.check(&storage, &layout).await.unwrap(),
            WakeCheck::Unchanged,
            "after {gap} s"
        );
    }
    // 20 s of quiet: the next commit (number 5) wakes, and the signal is out when the call
    // returns.
    clock.advance(Duration::from_secs(20));
    let receipt = writer.upsert_fields(doc("a", "late")).await.unwrap();
    assert_eq!(receipt.commits[0].sequence, 5);
    assert_eq!(
        woken(watch.check(&storage, &layout).await.unwrap()),
        Some((0, 5))
    );
    let metrics = writer.metrics();
    assert_eq!(metrics.value(&WRITER_WAKE_SIGNALS, &[]), Some(2.0));
}

/// A second writer that was told nothing: its commit after another's recent one does not
/// wake (the predecessor it checks is recent), while one after a quiet spell does.
#[tokio::test]
async fn whether_a_commit_wakes_follows_the_log_not_the_writer() {
    let storage = Storage::memory();
    let layout = StoreLayout::new(&storage.prefix, "s").unwrap();
    let clock = ManualClock::new(wall_time());
    let first = writer_on(&storage, &clock).await;
    first.upsert_fields(doc("a", "1")).await.unwrap();
    clock.advance(Duration::from_secs(600));
    let mut watch = WakeWatch::new();
    watch.check(&storage, &layout).await.unwrap();
    first.upsert_fields(doc("a", "2")).await.unwrap();
    assert!(matches!(
        watch.check(&storage, &layout).await.unwrap(),
        WakeCheck::Woken(_)
    ));
    // Another writer's first commit, 2 s after delta 2.
    let options = WriterOptions {
        clock: Some(clock.clone() as Arc<dyn Clock>),
        ..WriterOptions::default()
    };
    let second = Writer::open(storage.clone(), "s", options).await.unwrap();
    clock.advance(Duration::from_secs(2));
    assert_eq!(
        second.upsert_fields(doc("b", "1")).await.unwrap().commits[0].sequence,
        3
    );
    assert_eq!(
        watch.check(&storage, &layout).await.unwrap(),
        WakeCheck::Unchanged,
        "delta 2, which it checked, was 2 s old"
    );
    // The first writer's next commit, 20 s after the second's: it knew the tip only from its
    // own commit (2), loses to 3, reads it, and wakes since 3 is 20 s old.
    clock.advance(Duration::from_secs(20));
    assert_eq!(
        first.upsert_fields(doc("a", "3")).await.unwrap().commits[0].sequence,
        4
    );
    assert!(matches!(
        watch.check(&storage, &layout).await.unwrap(),
        WakeCheck::Woken(Some(Wake { seq: 4, .. }))
    ));
}

#[tokio::test]
async fn a_wake_signal_that_cannot_be_written_never_fails_the_commit() {
    let faulty = Arc::new(FaultyStore::new(Arc::new(InMemory::new())));
    let storage = Storage::new(faulty.clone(), Path::from("root"), "memory://faulty");
    let clock = ManualClock::new(wall_time());
    let writer = writer_on(&storage, &clock).await;
    faulty.inject("wake.json", PutFault::FailBeforeLanding);
    faulty.inject("wake.json", PutFault::FailBeforeLanding);
    let receipt = writer.upsert_fields(doc("a", "1")).await.unwrap();
    assert_eq!(receipt.commits[0].sequence, 1);
    let metrics = writer.metrics();
    assert_eq!(metrics.value(&WRITER_WAKE_FAILURES, &[]), Some(1.0));
    assert_eq!(metrics.value(&WRITER_WAKE_SIGNALS, &[]), Some(0.0));
}
