//! Times to live against the reference model (rfcs/0013): a seeded workload whose upserts
//! carry times to live (and a store default for those that do not), written, compacted and
//! read under one manual clock that the test moves — by seconds, and past the compactor's
//! drop margin. Every reader (opened fresh from snapshots and deltas, or resumed) answers
//! what the model says is live at the clock's time, on every read path; every snapshot holds
//! the model's documents as of its sequence, keeps each expiry beside its value, and holds
//! no value expired a retention window before the pass.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use ikv_core::bucket::create_store;
use ikv_core::clock::{Clock, ManualClock, epoch_ms};
use ikv_core::event_time::field_of_event;
use ikv_core::expiry::{field_of_expiry, served_at};
use ikv_core::{FieldValue, Storage, StorageOptions, StoreConfig, StoreLayout};
use ikv_reader::{Pin, Reader, ReaderOptions};
use ikv_snapshot::checkpoint::create_checkpoint;
use ikv_snapshot::state::{ReadPoint, read_partition};
use ikv_snapshot::{Layering, Retention, SnapshotOptions, snapshot_partition};
use ikv_snapshot_format::{Manifest, StackDocs};
use ikv_tests::model::{Model, PartitionDocs};
use ikv_tests::model_check::{assert_equals_model, commits};
use ikv_tests::random_ops::{PARTITIONING_KEY, PRIMARY_KEY, Workload};
use ikv_tests::runtime;
use ikv_writer::{Writer, WriterOptions};
use rand::Rng;

const KEYS: usize = 60;
/// The store's default time to live.
const DEFAULT_TTL: u64 = 60;
/// The compactor's retention window: values are dropped this long after they expired.
const WINDOW: Duration = Retention::MIN_WINDOW;

/// A snapshot's documents as a reader at `now_ms` would see them: expired values, their
/// companions and documents whose key expired left out.
fn live_at(docs: Vec<(Vec<u8>, BTreeMap<String, FieldValue>)>, now_ms: i64) -> PartitionDocs {
    docs.into_iter()
        .filter_map(|(key, doc)| Some((key, served_at(doc, PRIMARY_KEY, now_ms)?)))
        .collect()
}

struct Run {
    storage: Storage,
    url: String,
    config: StoreConfig,
    layout: StoreLayout,
    clock: std::sync::Arc<ManualClock>,
    /// Expiries seen in snapshots, and values the snapshots no longer hold because they
    /// expired: the run checks nothing unless both happened.
    companions_seen: usize,
    /// Event times seen in snapshots.
    events_seen: usize,
}

impl Run {
    fn reader(&self, mount: &std::path::Path) -> Reader {
        let mut o = ReaderOptions::new(&self.url, &self.config.store_name, mount);
        o.storage_options = StorageOptions::default();
        o.clock = self.clock.clone();
        Reader::open(o).unwrap()
    }

    fn now_ms(&self) -> i64 {
        epoch_ms(self.clock.as_ref())
    }

    /// Compacts `partition` at the clock's time and checks the snapshot against the model.
    fn compact(
        &mut self,
        rt: &tokio::runtime::Runtime,
        model: &mut Model,
        partition: u32,
        layers: usize,
    ) {
        let options = SnapshotOptions {
            force: true,
            retention: Retention {
                window: WINDOW,
                ..Retention::default()
            },
            layering: Layering {
                max_layers: layers,
                max_rows_percent: 1000,
            },
            ..SnapshotOptions::default()
        };
        let now = self.clock.now();
        rt.block_on(snapshot_partition(
            &self.storage,
            &self.config,
            partition,
            &options,
            now,
        ))
        .unwrap();
        let Some(manifest) = rt
            .block_on(Manifest::load_newest(
                &self.storage,
                &self.layout,
                partition,
            ))
            .unwrap()
        else {
            return;
        };
        let seq = manifest.sequence;
        let docs = rt
            .block_on(async {
                StackDocs::open(&self.storage, &self.layout, manifest)
                    .await?
                    .collect_all()
                    .await
            })
            .unwrap();
        let dropped_by = self.now_ms() - WINDOW.as_millis() as i64;
        for (key, doc) in &docs {
            for (name, value) in doc {
                if let Some(field) = field_of_event(name) {
                    self.events_seen += 1;
                    assert!(doc.contains_key(field), "{key:?}: {name} without its field");
                    assert!(
                        matches!(value, FieldValue::Int64(_)),
                        "{key:?}: {name} {value:?}"
                    );
                    continue;
                }
                let Some(field) = field_of_expiry(name) else {
                    continue;
                };
                self.companions_seen += 1;
                let FieldValue::Int64(e) = value else {
                    panic!("{key:?}: companion {name} holds {value:?}");
                };
                assert!(
                    *e > dropped_by,
                    "{key:?}: {field} expired at {e}, kept past the pass's cutoff {dropped_by}"
                );
                assert!(doc.contains_key(field), "{key:?}: {name} without its field");
            }
        }
        model.judge_at(self.now_ms());
        assert_eq!(
            live_at(docs, self.now_ms()),
            model.partition_at(partition, seq),
            "snapshot {seq} of partition {partition} at {}",
            self.now_ms()
        );
        // A read straight from the bucket (Ray's read_ikv) at the tip, judged at the clock's
        // time, serves what the model does.
        let tip = model.tip(partition);
        let read = rt.block_on(async {
            let mut rx = read_partition(
                self.storage.clone(),
                self.config.clone(),
                partition,
                ReadPoint {
                    upto: tip,
                    snapshot: None,
                },
                self.now_ms(),
                16,
            );
            let mut out = PartitionDocs::new();
            while let Some(batch) = rx.recv().await {
                out.extend(batch.unwrap());
            }
            out
        });
        assert_eq!(
            read,
            model.partition(partition),
            "read_partition of {partition} at {tip}"
        );
    }
}

fn run(seed: u64, partitions: u32, partitioning: Option<&str>, event_times: bool) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/bucket", dir.path().display());
    let storage = Storage::open(&url, &StorageOptions::default()).unwrap();
    let config = StoreConfig::new("ttl", PRIMARY_KEY, partitioning, partitions)
        .unwrap()
        .with_ttl_seconds(Some(DEFAULT_TTL))
        .unwrap();
    rt.block_on(create_store(&storage, &config)).unwrap();
    let layout = StoreLayout::new(&storage.prefix, "ttl").unwrap();
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let mut run = Run {
        storage: storage.clone(),
        url,
        config: config.clone(),
        layout,
        clock: clock.clone(),
        companions_seen: 0,
        events_seen: 0,
    };
    let writer = rt
        .block_on(Writer::open(
            storage.clone(),
            "ttl",
            WriterOptions {
                clock: Some(clock.clone()),
                ..WriterOptions::default()
            },
        ))
        .unwrap();
    let mut work = if partitioning.is_some() {
        Workload::partitioned(seed, KEYS)
    } else {
        Workload::new(seed, KEYS)
    }
    .with_ttls();
    if event_times {
        work = work.with_event_times();
    }
    let keys = work.all_keys();
    let mut model =
        Model::new(PRIMARY_KEY, partitioning, partitions).with_default_ttl(Some(DEFAULT_TTL));
    let mounts = tempfile::tempdir().unwrap();
    let mut expired_reads = 0;
    let mut at_checkpoint = None;
    for step in 0..160 {
        if step == 80 {
            // A checkpoint: a reader pinned to it serves what was live when it was made,
            // whatever expires, is written and compacted after.
            rt.block_on(create_checkpoint(&storage, "ttl", "cp", clock.now()))
                .unwrap();
            model.judge_at(run.now_ms());
            at_checkpoint = Some(model.state());
        }
        let ops = work.batch(8);
        let receipt = rt.block_on(writer.write(&ops)).unwrap();
        model.record_at(&ops, &commits(&receipt), run.now_ms());
        // Mostly seconds pass; now and then more than a retention window, so that passes
        // drop what expired.
        let roll = work.rng().random_range(0..100);
        let by = match roll {
            0..=59 => Duration::from_millis(work.rng().random_range(0..4000)),
            60..=94 => Duration::from_secs(work.rng().random_range(5..200)),
            _ => WINDOW + Duration::from_secs(work.rng().random_range(1..600)),
        };
        clock.advance(by);
        if work.rng().random_range(0..100) < 12 {
            let p = work.rng().random_range(0..partitions);
            run.compact(&rt, &mut model, p, step % 3);
        }
        if step % 20 == 19 {
            // A reader on a fresh or a used mount, caught up at open, then the same reader
            // after time passed with no delta: expiry is judged at read time.
            let mount = mounts
                .path()
                .join(work.rng().random_range(0..2).to_string());
            let reader = run.reader(&mount);
            model.judge_at(run.now_ms());
            let state = model.state();
            assert_equals_model(&reader, &keys, &state);
            let before: usize = state
                .iter()
                .map(|p| p.values().map(|d| d.len()).sum::<usize>())
                .sum();
            clock.advance(Duration::from_secs(work.rng().random_range(1..90)));
            model.judge_at(run.now_ms());
            let later = model.state();
            let after: usize = later
                .iter()
                .map(|p| p.values().map(|d| d.len()).sum::<usize>())
                .sum();
            expired_reads += before - after.min(before);
            if later.iter().any(|p| !p.is_empty()) {
                assert_equals_model(&reader, &keys, &later);
            }
            reader.shutdown().unwrap();
        }
    }
    // Every partition compacted at the end; a reader bootstrapping from those snapshots
    // alone answers as the model.
    for p in 0..partitions {
        run.compact(&rt, &mut model, p, 0);
    }
    let reader = run.reader(&mounts.path().join("fresh"));
    model.judge_at(run.now_ms());
    let state = model.state();
    if state.iter().any(|p| !p.is_empty()) {
        assert_equals_model(&reader, &keys, &state);
    }
    let at_checkpoint = at_checkpoint.unwrap_or_default();
    if at_checkpoint.iter().any(|p| !p.is_empty()) {
        let mut o = ReaderOptions::new(&run.url, "ttl", mounts.path().join("pinned"));
        o.pin = Some(Pin::Checkpoint("cp".into()));
        o.clock = clock.clone();
        let pinned = Reader::open(o).unwrap();
        assert_equals_model(&pinned, &keys, &at_checkpoint);
        assert_ne!(
            at_checkpoint, state,
            "seed {seed}: the tip moved on from the checkpoint"
        );
    }
    assert!(
        run.companions_seen > 0,
        "seed {seed}: no snapshot held an expiry"
    );
    assert!(
        expired_reads > 0,
        "seed {seed}: no value expired between two reads"
    );
    assert_eq!(
        run.events_seen > 0,
        event_times,
        "seed {seed}: snapshots hold event times exactly when writes had them"
    );
}

#[test]
fn times_to_live_on_one_and_three_partitions_match_the_model() {
    run(31, 1, None, false);
    run(32, 3, None, false);
}

#[test]
fn times_to_live_with_a_partitioning_key_match_the_model() {
    run(33, 3, Some(PARTITIONING_KEY), false);
}

/// Writes with event times committed out of event-time order (backfills, ties), with times to
/// live, across passes and readers.
#[test]
fn event_times_with_times_to_live_match_the_model() {
    run(41, 1, None, true);
    run(42, 3, None, true);
    run(44, 3, Some(PARTITIONING_KEY), true);
}

/// Requests of each kind so far on a root.
fn request_counts(storage: &Storage) -> Vec<u64> {
    use ikv_core::bucket::requests::RequestKind;
    [
        RequestKind::Put,
        RequestKind::Get,
        RequestKind::Head,
        RequestKind::List,
        RequestKind::Delete,
    ]
    .iter()
    .map(|k| storage.requests().of_kind(*k))
    .collect()
}

/// The same writes with and without times to live, compacted and read the same way, make
/// the same requests of every kind (docs/OPERATIONS.md, "The price of times to live").
#[test]
fn a_time_to_live_costs_no_request() {
    let rt = runtime();
    let counts = |ttl: Option<u64>| {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/bucket", dir.path().display());
        let storage = Storage::open(&url, &StorageOptions::default()).unwrap();
        let config = StoreConfig::new("cost", PRIMARY_KEY, None, 2).unwrap();
        rt.block_on(create_store(&storage, &config)).unwrap();
        let writer = rt
            .block_on(Writer::open(
                storage.clone(),
                "cost",
                WriterOptions::default(),
            ))
            .unwrap();
        let mut work = Workload::new(5, KEYS);
        let mut per_phase = Vec::new();
        for _ in 0..40 {
            let ops: Vec<_> = work
                .batch(8)
                .into_iter()
                .map(|op| match (op, ttl) {
                    (ikv_core::Operation::UpsertFields(document), Some(ttl_seconds)) => {
                        ikv_core::Operation::UpsertFieldsWith {
                            document,
                            ttl_seconds: Some(ttl_seconds),
                            event_time_us: None,
                        }
                    }
                    (op, _) => op,
                })
                .collect();
            rt.block_on(writer.write(&ops)).unwrap();
        }
        rt.block_on(writer.flush_hints());
        per_phase.push(request_counts(&storage));
        for p in 0..2 {
            let options = SnapshotOptions {
                force: true,
                ..SnapshotOptions::default()
            };
            rt.block_on(snapshot_partition(
                &storage,
                &config,
                p,
                &options,
                ikv_core::clock::wall_time(),
            ))
            .unwrap();
        }
        per_phase.push(request_counts(&storage));
        let mut o = ReaderOptions::new(&url, "cost", dir.path().join("mount"));
        o.poll_interval = Duration::from_secs(3600);
        o.idle_poll_interval = Duration::from_secs(3600);
        let reader = Reader::open(o).unwrap();
        per_phase.push(request_counts(&storage));
        let served = work
            .all_keys()
            .iter()
            .filter(|k| reader.get_document(k).unwrap().is_some())
            .count();
        assert!(served > 0);
        reader.shutdown().unwrap();
        per_phase
    };
    let plain = counts(None);
    let timed = counts(Some(3600));
    assert!(plain[0][0] >= 40, "every call committed: {plain:?}");
    assert_eq!(
        timed, plain,
        "writes, a pass, a bootstrap: requests of each kind"
    );
}
