//! The reader under injected storage faults (503 SlowDown, timeouts, bodies cut short, on
//! every Nth read): reads keep serving the last good state, nothing is lost or served
//! corrupt, status shows the error while it lasts, and recovery needs no help.
#![allow(clippy::disallowed_methods)] // tests and benches run real processes, sockets and timings on the wall clock

use std::sync::Arc;
use std::time::{Duration, Instant};

use ikv_core::bucket::create_store;
use ikv_core::clock::ManualClock;
use ikv_core::{Storage, StoreConfig};
use ikv_reader::{Reader, ReaderOptions};
use ikv_tests::faulty::{FaultyStore, ReadFault};
use ikv_tests::fixture::wait_until;
use ikv_tests::model::Model;
use ikv_tests::model_check::{assert_equals_model, write_and_record};
use ikv_tests::random_ops::Workload;
use ikv_tests::runtime;
use ikv_writer::{Writer, WriterOptions};
use object_store::memory::InMemory;
use object_store::path::Path;

const PARTITIONS: u32 = 2;

/// Store `name` of `partitions` on an in-memory bucket behind a fault-injecting store, and a
/// writer of it.
fn faulty_store(
    rt: &tokio::runtime::Runtime,
    name: &str,
    partitions: u32,
) -> (Arc<FaultyStore>, Storage, StoreConfig, Writer) {
    let faulty = Arc::new(FaultyStore::new(Arc::new(InMemory::new())));
    let storage = Storage::new(faulty.clone(), Path::default(), "memory://faulty");
    let config = StoreConfig::new(name, "id", None, partitions).unwrap();
    rt.block_on(create_store(&storage, &config)).unwrap();
    let writer = rt
        .block_on(Writer::open(
            storage.clone(),
            name,
            WriterOptions::default(),
        ))
        .unwrap();
    (faulty, storage, config, writer)
}

#[test]
fn a_reader_under_read_faults_keeps_serving_and_recovers_by_itself() {
    let rt = runtime();
    let (faulty, storage, config, writer) = faulty_store(&rt, "faults", PARTITIONS);
    let mut model = Model::new("id", None, PARTITIONS);
    let mut workload = Workload::new(7, 60);
    for _ in 0..20 {
        let ops = workload.batch(8);
        rt.block_on(write_and_record(&writer, &mut model, &ops));
    }
    // A snapshot, so that the reader's bootstrap streams Parquet through the faulty store.
    for p in 0..PARTITIONS {
        rt.block_on(ikv_tests::force_snapshot(&storage, &config, p))
            .unwrap();
    }
    for _ in 0..10 {
        let ops = workload.batch(8);
        rt.block_on(write_and_record(&writer, &mut model, &ops));
    }

    let mount = tempfile::tempdir().unwrap();
    let mut options = ReaderOptions::new("memory://faulty", "faults", mount.path());
    options.storage = Some(storage.clone());
    options.poll_interval = Duration::from_millis(10);
    let reader = Reader::open(options).unwrap();
    let keys = workload.all_keys();
    assert_equals_model(&reader, &keys, &model.state());

    // Every third read fails, one way or another, while writes go on.
    faulty.fault_every_nth_read(
        4,
        &[
            ReadFault::SlowDown,
            ReadFault::Timeout,
            ReadFault::Truncated,
        ],
    );
    let mut saw_error = false;
    let faulted = || {
        faulty
            .faulted_reads
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut round = 0;
    // Until several reads of each kind failed (the poller backs off after a failure, so
    // this takes a few seconds of writing).
    while round < 15 || faulted() < 6 || !saw_error {
        assert!(Instant::now() < deadline, "faults did not reach the reader");
        round += 1;
        let ops = workload.batch(8);
        rt.block_on(write_and_record(&writer, &mut model, &ops));
        // Reads never fail and never show anything but a state the model went through:
        // here, at least as new as before the faults and never newer than now.
        let applied: u64 = reader.status().iter().map(|s| s.applied_sequence).sum();
        let tips: u64 = (0..PARTITIONS).map(|p| model.tip(p)).sum();
        assert!(applied <= tips, "round {round}: applied beyond the log");
        for k in &keys {
            reader
                .get_document(k)
                .expect("reads keep serving during faults");
        }
        saw_error |= reader.status().iter().any(|s| s.last_error.is_some());
        std::thread::sleep(Duration::from_millis(50));
    }

    // Faults end: the reader catches up by itself, equal to the model, errors cleared.
    faulty.stop_read_faults();
    wait_until("the reader caught up after the faults", || {
        reader
            .status()
            .iter()
            .all(|s| s.applied_sequence == model.tip(s.partition) && s.last_error.is_none())
    });
    assert_equals_model(&reader, &keys, &model.state());
    assert!(reader.status().iter().all(|s| s.gap.is_none()));
    reader.shutdown().unwrap();
}

#[test]
fn a_bootstrap_under_read_faults_fails_clearly_or_succeeds_whole() {
    let rt = runtime();
    let (faulty, storage, config, writer) = faulty_store(&rt, "boot", 1);
    let mut model = Model::new("id", None, 1);
    let mut workload = Workload::new(11, 40);
    for _ in 0..12 {
        let ops = workload.batch(6);
        rt.block_on(write_and_record(&writer, &mut model, &ops));
    }
    rt.block_on(ikv_tests::force_snapshot(&storage, &config, 0))
        .unwrap();
    let keys = workload.all_keys();
    // Each fault kind in turn, on every 2nd read: an open either fails with an error naming
    // storage, or opens equal to the model; a later open without faults always succeeds.
    for kind in [
        ReadFault::SlowDown,
        ReadFault::Timeout,
        ReadFault::Truncated,
    ] {
        let mount = tempfile::tempdir().unwrap();
        let mut options = ReaderOptions::new("memory://faulty", "boot", mount.path());
        options.storage = Some(storage.clone());
        faulty.fault_every_nth_read(2, &[kind]);
        match Reader::open(options.clone()) {
            Ok(reader) => {
                assert_equals_model(&reader, &keys, &model.state());
                reader.shutdown().unwrap();
            }
            Err(e) => {
                let message = e.to_string();
                assert!(
                    message.contains("injected")
                        || message.contains("orrupt")
                        || message.contains("storage"),
                    "{kind:?}: unclear error: {message}"
                );
            }
        }
        faulty.stop_read_faults();
        let reader = Reader::open(options).expect("opens once the faults stop");
        assert_equals_model(&reader, &keys, &model.state());
        reader.shutdown().unwrap();
    }
}

/// With an injected clock the poller's schedule is exact: one poll per interval, a backoff
/// that doubles per failed poll up to its cap, back to the interval after a success, and
/// freshness stamped with the clock's time. Counted, not timed.
#[test]
fn the_poll_backoff_and_freshness_follow_the_injected_clock() {
    let rt = runtime();
    let (faulty, storage, _config, _writer) = faulty_store(&rt, "clock", 1);
    let start = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let clock = ManualClock::new(start);
    let mount = tempfile::tempdir().unwrap();
    let mut options = ReaderOptions::new("memory://faulty", "clock", mount.path());
    options.storage = Some(storage.clone());
    options.clock = clock.clone();
    options.poll_interval = Duration::from_secs(1);
    options.gap_check_interval = Duration::from_secs(3600);
    let reader = Reader::open(options).unwrap();
    assert_eq!(reader.status()[0].caught_up_at, Some(start));
    let secs = Duration::from_secs;
    wait_until("the first poll's sleep", || clock.sleeps().len() == 1);
    assert_eq!(clock.sleeps(), vec![secs(1)]);

    faulty.fault_every_nth_read(1, &[ReadFault::SlowDown]);
    let mut elapsed = Duration::ZERO;
    for (n, backoff) in [2, 4, 8, 16, 30, 30].into_iter().enumerate() {
        let last = *clock.sleeps().last().unwrap();
        clock.advance(last);
        elapsed += last;
        wait_until("the failed poll's backoff", || {
            clock.sleeps().len() == n + 2
        });
        assert_eq!(
            clock.sleeps()[n + 1],
            secs(backoff),
            "after {} failed polls",
            n + 1
        );
        assert!(reader.status()[0].last_error.is_some());
    }

    faulty.stop_read_faults();
    clock.advance(secs(30));
    elapsed += secs(30);
    wait_until("the recovered poll's sleep", || clock.sleeps().len() == 8);
    // Back to the schedule: the partition has not changed for two minutes, so it is quiet
    // (rfcs/0009), left to the store's wake signal, checked every 3 s.
    assert_eq!(
        clock.sleeps()[7],
        secs(3),
        "back to the schedule, not the backoff"
    );
    let status = &reader.status()[0];
    assert_eq!(status.last_error, None);
    assert_eq!(status.caught_up_at, Some(start + elapsed));
    reader.shutdown().unwrap();
}

/// A partition whose next delta is bad stops there and says so; the other partitions keep
/// following writes, with no error copied to them.
#[test]
fn one_partitions_error_is_its_own() {
    let rt = runtime();
    let (_faulty, storage, _config, writer) = faulty_store(&rt, "apart", PARTITIONS);
    let key_in = |p: u32| {
        (0..)
            .map(|i| format!("k{i}"))
            .find(|k| ikv_core::partition::partition_of(k.as_bytes(), PARTITIONS) == p)
            .unwrap()
    };
    let (k0, k1) = (key_in(0), key_in(1));
    let put = |key: &str, v: i64| {
        rt.block_on(
            writer.upsert_fields(
                ikv_core::Document::new()
                    .with("id", ikv_core::FieldValue::String(key.into()))
                    .with("v", ikv_core::FieldValue::Int64(v)),
            ),
        )
        .unwrap();
    };
    put(&k0, 1);
    put(&k1, 1);
    let mount = tempfile::tempdir().unwrap();
    let mut options = ReaderOptions::new("memory://faulty", "apart", mount.path());
    options.storage = Some(storage.clone());
    options.poll_interval = Duration::from_millis(10);
    let reader = Reader::open(options).unwrap();
    // Partition 1's delta 2 is garbage (a writer would refuse to go past it; this one was put
    // there by hand).
    let layout = ikv_core::StoreLayout::new(&storage.prefix, "apart").unwrap();
    rt.block_on(object_store::ObjectStoreExt::put(
        storage.object_store(),
        &layout.delta(1, 2),
        bytes::Bytes::from_static(b"garbage").into(),
    ))
    .unwrap();
    wait_until("partition 1 reports its bad delta", || {
        reader.status()[1]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("00000000000000000002.arrow"))
    });
    for v in 2..=5 {
        put(&k0, v);
    }
    wait_until("partition 0 follows", || {
        reader.get_int64(k0.as_bytes(), "v").unwrap() == Some(5)
    });
    let status = reader.status();
    assert_eq!(status[0].last_error, None, "{status:?}");
    assert!(status[1].last_error.is_some(), "{status:?}");
    assert_eq!(reader.get_int64(k1.as_bytes(), "v").unwrap(), Some(1));
}
