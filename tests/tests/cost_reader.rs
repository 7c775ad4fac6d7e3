//! What a reader host costs in requests (rfcs/0009, docs/OPERATIONS.md "Request budget"),
//! counted on its storage root over simulated time (a `ManualClock` the test moves one poll
//! at a time), never timed:
//!
//! - an idle host averages at most 0.4 requests a second at 16 partitions and 0.5 at 64 once
//!   its partitions have been quiet for 30 s, over an hour;
//! - the first write after a quiet spell is applied at the next check of the wake signal,
//!   and the partition is then polled at the poll interval again;
//! - a commit whose wake signal was lost is still applied, by the slow poll of its partition;
//! - catching up 1,000 deltas of one partition through a store 25 ms away applies them in
//!   order with at most 32 GETs in flight, about one GET per delta.

use std::sync::Arc;
use std::time::Duration;

use ikv_core::bucket::create_store;
use ikv_core::clock::{Clock, ManualClock, wall_time};
use ikv_core::{FieldValue, Storage, StoreConfig};
use ikv_reader::{Reader, ReaderOptions};
use ikv_tests::faulty::{FaultyStore, PutFault};
use ikv_tests::fixture::{doc_v as doc, key_in, wait_until};
use ikv_writer::{Writer, WriterOptions};
use object_store::ObjectStore;
use object_store::memory::InMemory;
use object_store::path::Path;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A store of `partitions` partitions, one document committed to each, a writer on its own
/// clock and a reader (its requests counted on its own root) on another, both moved together.
struct Host {
    rt: tokio::runtime::Runtime,
    writer: Writer,
    writer_clock: Arc<ManualClock>,
    reader: Reader,
    reader_clock: Arc<ManualClock>,
    reader_storage: Storage,
    keys: Vec<String>,
    _mount: tempfile::TempDir,
}

fn host(partitions: u32, inner: Arc<dyn ObjectStore>) -> Host {
    let rt = runtime();
    let start = wall_time();
    let writer_clock = ManualClock::new(start);
    let writer_storage = Storage::new(inner.clone(), Path::from("root"), "memory://cost");
    rt.block_on(create_store(
        &writer_storage,
        &StoreConfig::new("s", "id", None, partitions).unwrap(),
    ))
    .unwrap();
    let writer = rt
        .block_on(Writer::open(
            writer_storage,
            "s",
            WriterOptions {
                clock: Some(writer_clock.clone() as Arc<dyn Clock>),
                ..WriterOptions::default()
            },
        ))
        .unwrap();
    let keys: Vec<String> = (0..partitions).map(|p| key_in(p, partitions)).collect();
    for k in &keys {
        rt.block_on(writer.upsert_fields(doc(k, 0))).unwrap();
    }
    let reader_clock = ManualClock::new(start);
    let reader_storage = Storage::new(inner, Path::from("root"), "memory://cost");
    let mount = tempfile::tempdir().unwrap();
    let mut options = ReaderOptions::new("memory://cost", "s", mount.path());
    options.storage = Some(reader_storage.clone());
    options.clock = reader_clock.clone();
    // The test steps the poller tick by tick: at the default nice 10 its thread starves
    // behind a busy test run, and every step waits on it.
    options.background_nice = 0;
    let reader = Reader::open(options).unwrap();
    wait_until("the first poll's sleep", || {
        !reader_clock.sleeps().is_empty()
    });
    Host {
        rt,
        writer,
        writer_clock,
        reader,
        reader_clock,
        reader_storage,
        keys,
        _mount: mount,
    }
}

impl Host {
    /// Lets the reader's poller sleep its last wait out and run one more tick; returns the
    /// wait it then chose.
    fn tick(&self) -> Duration {
        let sleeps = self.reader_clock.sleeps();
        let wait = *sleeps.last().unwrap();
        self.reader_clock.advance(wait);
        self.writer_clock.advance(wait);
        wait_until("the next poll", || {
            self.reader_clock.sleeps().len() > sleeps.len()
        });
        *self.reader_clock.sleeps().last().unwrap()
    }

    /// Ticks until `secs` of simulated time passed; returns the time that did.
    fn run_for(&self, secs: u64) -> Duration {
        let mut passed = Duration::ZERO;
        while passed < Duration::from_secs(secs) {
            passed += *self.reader_clock.sleeps().last().unwrap();
            self.tick();
        }
        passed
    }

    fn requests(&self) -> u64 {
        self.reader_storage.requests().total()
    }

    fn applied(&self, p: u32) -> u64 {
        self.reader.status()[p as usize].applied_sequence
    }
}

#[test]
fn an_idle_host_costs_at_most_half_a_request_a_second_whatever_its_partitions() {
    for (partitions, budget) in [(1u32, 0.4), (16, 0.4), (64, 0.5)] {
        let host = host(partitions, Arc::new(InMemory::new()));
        // The first 30 s: every partition is polled each interval, as while writes flow.
        let busy_start = host.requests();
        let busy = host.run_for(30);
        let busy_rate = (host.requests() - busy_start) as f64 / busy.as_secs_f64();
        assert!(
            busy_rate >= f64::from(partitions),
            "{partitions}: {busy_rate} requests/s while active"
        );
        // Then an hour of quiet.
        host.run_for(30);
        let before = host.requests();
        let idle = host.run_for(3600);
        let rate = (host.requests() - before) as f64 / idle.as_secs_f64();
        eprintln!("{partitions} partitions: {busy_rate:.2} requests/s active, {rate:.3} idle");
        assert!(
            rate <= budget,
            "{partitions} partitions: {rate:.3} requests/s over an idle hour (budget {budget})"
        );
        let quiet = host
            .reader
            .metrics()
            .value(&ikv_core::metrics::catalog::READER_QUIET_PARTITIONS, &[]);
        assert_eq!(quiet, Some(f64::from(partitions)));
        // Quiet partitions stay fresh: each unchanged check stamps them.
        let now = host.reader_clock.now();
        for s in host.reader.status() {
            let at = s.caught_up_at.expect("caught up");
            assert!(
                now.duration_since(at).unwrap() <= Duration::from_secs(6),
                "partition {} caught up {:?} ago",
                s.partition,
                now.duration_since(at)
            );
        }
        host.reader.shutdown().unwrap();
    }
}

#[test]
fn the_first_write_after_a_quiet_spell_is_applied_at_the_next_check() {
    let partitions = 16;
    let host = host(partitions, Arc::new(InMemory::new()));
    host.run_for(120);
    let wait = *host.reader_clock.sleeps().last().unwrap();
    assert_eq!(wait, Duration::from_secs(3), "quiet: the idle interval");
    let p = 9;
    host.rt
        .block_on(host.writer.upsert_fields(doc(&host.keys[p as usize], 1)))
        .unwrap();
    let before = host.requests();
    let next = host.tick();
    assert_eq!(
        host.applied(p),
        2,
        "applied at the first check after the write"
    );
    let used = host.requests() - before;
    // The signal; each quiet partition's next number; the delta found, the number after it
    // and the tip hint of the partition that moved.
    assert!(
        used <= u64::from(partitions) + 4,
        "{used} requests for the wake-up"
    );
    // Active again: polled at the poll interval, so the next write is seen within it.
    assert_eq!(next, Duration::from_millis(500));
    host.rt
        .block_on(host.writer.upsert_fields(doc(&host.keys[p as usize], 2)))
        .unwrap();
    host.tick();
    assert_eq!(host.applied(p), 3, "seen at the next poll, without a wake");
    host.reader.shutdown().unwrap();
}

#[test]
fn a_commit_whose_wake_signal_was_lost_is_applied_by_the_slow_poll() {
    let faulty = Arc::new(FaultyStore::new(Arc::new(InMemory::new())));
    let host = host(2, faulty.clone());
    host.run_for(120);
    faulty.inject("wake.json", PutFault::FailBeforeLanding);
    faulty.inject("wake.json", PutFault::FailBeforeLanding);
    host.rt
        .block_on(host.writer.upsert_fields(doc(&host.keys[1], 1)))
        .unwrap();
    host.run_for(60);
    assert_eq!(host.applied(1), 1, "not woken: still quiet");
    host.run_for(600);
    assert_eq!(host.applied(1), 2, "found by the partition's slow poll");
    host.reader.shutdown().unwrap();
}

#[test]
fn catching_up_a_thousand_deltas_keeps_order_with_at_most_32_gets_in_flight() {
    use ikv_tests::latency::LatencyStore;
    let rt = runtime();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let writer_storage = Storage::new(inner.clone(), Path::from("root"), "memory://cost");
    rt.block_on(create_store(
        &writer_storage,
        &StoreConfig::new("s", "id", None, 1).unwrap(),
    ))
    .unwrap();
    let writer = rt
        .block_on(Writer::open(writer_storage, "s", WriterOptions::default()))
        .unwrap();
    for v in 1..=1000 {
        rt.block_on(writer.upsert_fields(doc("k", v))).unwrap();
    }
    let far = Arc::new(LatencyStore::new(inner, Duration::from_millis(25)));
    let storage = Storage::new(far.clone(), Path::from("root"), "memory://far");
    let mount = tempfile::tempdir().unwrap();
    let mut options = ReaderOptions::new("memory://far", "s", mount.path());
    options.storage = Some(storage.clone());
    let reader = Reader::open(options).unwrap();
    assert_eq!(reader.status()[0].applied_sequence, 1000);
    let got = reader.get(b"k", "v").unwrap();
    assert_eq!(got, Some(FieldValue::Int64(1000)), "the last write wins");
    let most = far.most_gets_in_flight();
    assert!((2..=32).contains(&most), "{most} GETs in flight");
    let gets = storage
        .requests()
        .of_kind(ikv_core::bucket::requests::RequestKind::Get);
    assert!(gets <= 1000 + 32 + 8, "{gets} GETs for 1,000 deltas");
    reader.shutdown().unwrap();
}
