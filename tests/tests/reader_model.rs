//! The embedded reader against the reference model: seeded random workloads, snapshots at
//! random points, readers opened and restarted at random points; on a local directory and on
//! the S3 emulator, with 1 and 4 partitions, with and without a partitioning key (documents
//! moving between partitions). Also: live visibility, sharding, locking, and falling behind
//! retention.
#![allow(clippy::disallowed_methods)] // tests and benches run real processes, sockets and timings on the wall clock

use std::time::{Duration, Instant, SystemTime};

use ikv_core::bucket::{create_store, discover_tip};
use ikv_core::partition::partition_of;
use ikv_core::{ErrorKind, FieldValue, Storage, StorageOptions, StoreConfig, StoreLayout};
use ikv_reader::{Reader, ReaderOptions};
use ikv_snapshot::{Layering, Retention, SnapshotOptions, apply_retention, snapshot_partition};
use ikv_tests::fixture::wait_caught_up;
use ikv_tests::model::Model;
use ikv_tests::model_check::{assert_equals_model, write_and_record};
use ikv_tests::random_ops::{PARTITIONING_KEY, PRIMARY_KEY, Workload};
use ikv_tests::runtime;
use ikv_tests::{localstack_storage, s3_endpoint};
use ikv_writer::{Writer, WriterOptions};
use rand::Rng;

const KEYS: usize = 150;

struct Store {
    /// Whether readers opened on a mount in use attach to it (a second process on the host)
    /// rather than replacing the one there.
    shared: bool,
    /// The readers' fold threshold (1: a background fold after every delta).
    fold_min_bytes: u64,
    storage: Storage,
    url: String,
    options: StorageOptions,
    /// Readers use `storage` itself rather than opening `url` (a wrapped store).
    inject: bool,
    config: StoreConfig,
    layout: StoreLayout,
}

fn local_store(
    dir: &std::path::Path,
    name: &str,
    partitions: u32,
    rt: &tokio::runtime::Runtime,
) -> Store {
    local_store_keyed(dir, name, partitions, None, rt)
}

/// A store on a local directory, with a partitioning key when `partitioning` says so.
fn local_store_keyed(
    dir: &std::path::Path,
    name: &str,
    partitions: u32,
    partitioning: Option<&str>,
    rt: &tokio::runtime::Runtime,
) -> Store {
    let url = format!("file://{}/bucket", dir.display());
    let options = StorageOptions::default();
    let storage = Storage::open(&url, &options).unwrap();
    make(storage, url, options, name, partitions, partitioning, rt)
}

fn s3_store(name: &str, partitions: u32, rt: &tokio::runtime::Runtime) -> Store {
    let storage = rt.block_on(localstack_storage(true));
    let options = StorageOptions::default()
        .with("aws_endpoint", s3_endpoint())
        .with("aws_region", "us-east-1")
        .with("aws_access_key_id", "test")
        .with("aws_secret_access_key", "test");
    let url = storage.url.clone();
    make(
        storage,
        url,
        options,
        name,
        partitions,
        Some(PARTITIONING_KEY),
        rt,
    )
}

fn make(
    storage: Storage,
    url: String,
    options: StorageOptions,
    name: &str,
    partitions: u32,
    partitioning: Option<&str>,
    rt: &tokio::runtime::Runtime,
) -> Store {
    // The whole suite runs again with every listing shuffled when the test script asks
    // (`IKV_TEST_SHUFFLED_LISTINGS`): the readers then list through the same wrapper.
    let shuffled = std::env::var_os(ikv_tests::unordered::SHUFFLE_ENV).is_some();
    let storage = ikv_tests::unordered::shuffled_if_asked(storage);
    let config = StoreConfig::new(name, PRIMARY_KEY, partitioning, partitions).unwrap();
    rt.block_on(create_store(&storage, &config)).unwrap();
    let layout = StoreLayout::new(&storage.prefix, name).unwrap();
    Store {
        shared: false,
        fold_min_bytes: ReaderOptions::new("", "", "").fold_min_bytes,
        inject: shuffled,
        storage,
        url,
        options,
        config,
        layout,
    }
}

impl Store {
    fn reader_options(&self, mount: &std::path::Path) -> ReaderOptions {
        let mut o = ReaderOptions::new(&self.url, &self.config.store_name, mount);
        o.storage_options = self.options.clone();
        o.poll_interval = Duration::from_millis(20);
        o.fold_min_bytes = self.fold_min_bytes;
        if self.inject {
            o.storage = Some(self.storage.clone());
        }
        o
    }

    fn tips(&self, rt: &tokio::runtime::Runtime) -> Vec<u64> {
        (0..self.config.num_partitions)
            .map(|p| {
                rt.block_on(discover_tip(&self.storage, &self.layout, p))
                    .unwrap()
            })
            .collect()
    }

    fn workload(&self, seed: u64) -> Workload {
        if self.config.partitioning_key_field.is_some() {
            Workload::partitioned(seed, KEYS)
        } else {
            Workload::new(seed, KEYS)
        }
    }

    fn new_model(&self) -> Model {
        Model::new(
            PRIMARY_KEY,
            self.config.partitioning_key_field.as_deref(),
            self.config.num_partitions,
        )
    }
}

fn run(store: Store, seed: u64, rt: &tokio::runtime::Runtime) {
    let mounts = tempfile::tempdir().unwrap();
    let writer = rt
        .block_on(Writer::open(
            store.storage.clone(),
            &store.config.store_name,
            WriterOptions::default(),
        ))
        .unwrap();
    let mut work = store.workload(seed);
    let keys = work.all_keys();
    let mut model = store.new_model();
    let mut live: Vec<(usize, Reader)> = Vec::new();
    let mut opened = 0;
    for step in 0..240 {
        let ops = work.batch(10);
        rt.block_on(write_and_record(&writer, &mut model, &ops));
        let roll = work.rng().random_range(0..100);
        if roll < 5 {
            let p = work.rng().random_range(0..store.config.num_partitions);
            // Readers opened later bootstrap from full snapshots and from layers' stacks.
            let options = SnapshotOptions {
                force: true,
                layering: Layering {
                    // Not drawn from the workload's generator: its sequence stays the seed's.
                    max_layers: step % 4,
                    max_rows_percent: 1000,
                },
                ..SnapshotOptions::default()
            };
            rt.block_on(snapshot_partition(
                &store.storage,
                &store.config,
                p,
                &options,
                SystemTime::now(),
            ))
            .unwrap();
        } else if roll < 8 || step % 80 == 40 {
            // Open a reader on a new mount, or restart one on its old mount (resume); at
            // least every 80 steps whatever the seed.
            let mount = work.rng().random_range(0..3);
            if !store.shared {
                live.retain(|(m, _)| *m != mount); // closing it first: one reader per mount
            }
            let reader =
                Reader::open(store.reader_options(&mounts.path().join(mount.to_string()))).unwrap();
            opened += 1;
            if !reader.owns_mount() {
                // An attached reader serves what its owner has applied: at most a poll behind.
                wait_caught_up(&reader, &store.tips(rt));
            }
            assert_equals_model(&reader, &keys, &model.state());
            live.push((mount, reader));
        } else if roll < 9 && !live.is_empty() {
            let (_, reader) = live.remove(0);
            reader.shutdown().unwrap();
        }
    }
    assert!(opened >= 3, "seed {seed}: only {opened} readers opened");
    let tips = store.tips(rt);
    let expected_tips: Vec<u64> = (0..store.config.num_partitions)
        .map(|p| model.tip(p))
        .collect();
    assert_eq!(
        tips, expected_tips,
        "every call committed where its receipt says"
    );
    let state = model.state();
    for (_, reader) in &live {
        wait_caught_up(reader, &tips);
        assert_equals_model(reader, &keys, &state);
    }
    if store.fold_min_bytes == 1 {
        // Every delta past a 1-byte threshold started a background fold: many were published
        // (each carrying the deltas applied while it ran) and cancelled (by shutdowns).
        let generations = (0..3)
            .filter_map(|m| newest_generation(&mounts.path().join(m.to_string()), &store))
            .max()
            .unwrap_or(0);
        assert!(generations >= 10, "seed {seed}: {generations} generations");
    }
    // And every mount resumes to the same state.
    drop(live);
    for mount in 0..3 {
        let path = mounts.path().join(mount.to_string());
        if path.exists() {
            let reader = Reader::open(store.reader_options(&path)).unwrap();
            assert_equals_model(&reader, &keys, &state);
        }
    }
    // With a partitioning key, a reader of some partitions answers from those only.
    if store.config.partitioning_key_field.is_some() && store.config.num_partitions > 2 {
        let mut options = store.reader_options(&mounts.path().join("some"));
        options.partitions = vec![1, store.config.num_partitions - 1];
        let reader = Reader::open(options).unwrap();
        assert_equals_model(&reader, &keys, &state);
        reader.shutdown().unwrap();
    }
}

#[test]
fn local_directory_one_and_four_partitions_match_the_model() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    // One reader per mount, and readers sharing mounts (attached ones, owners handing over).
    run(local_store(dir.path(), "one", 1, &rt), 21, &rt);
    run(local_store(dir.path(), "four", 4, &rt), 22, &rt);
    run(
        Store {
            shared: true,
            ..local_store(dir.path(), "one-disk", 1, &rt)
        },
        23,
        &rt,
    );
    run(
        Store {
            shared: true,
            ..local_store(dir.path(), "four-disk", 4, &rt)
        },
        24,
        &rt,
    );
}

#[test]
fn listings_in_no_order_from_no_offset_match_the_model() {
    // As an S3 Express directory bucket lists: shuffled, and refusing `start-after`.
    let rt = runtime();
    for (partitions, seed) in [(1, 25), (4, 26)] {
        let unordered = std::sync::Arc::new(ikv_tests::unordered::UnorderedListings::new(
            std::sync::Arc::new(object_store::memory::InMemory::new()),
            seed,
        ));
        let storage = Storage::new(
            unordered.clone(),
            object_store::path::Path::from("root"),
            "memory://unordered",
        )
        .with_unordered_listings();
        let store = Store {
            inject: true,
            shared: partitions == 4,
            ..make(
                storage,
                "memory://unordered".into(),
                StorageOptions::default(),
                "unordered",
                partitions,
                None,
                &rt,
            )
        };
        run(store, seed, &rt);
        unordered.assert_listed_without_offsets(10);
    }
}

/// The highest image generation of `store` under `mount` (from the files' names).
fn newest_generation(mount: &std::path::Path, store: &Store) -> Option<u64> {
    std::fs::read_dir(mount.join(&store.config.store_name))
        .ok()?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("image-")?.parse().ok()
        })
        .max()
}

/// Folds in the background after every delta (a 1-byte threshold), with readers opened,
/// attached, handed over and shut down meanwhile: every view equals the model.
#[test]
fn readers_folding_in_the_background_after_every_delta_match_the_model() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    run(
        Store {
            fold_min_bytes: 1,
            ..local_store(dir.path(), "folds", 2, &rt)
        },
        25,
        &rt,
    );
    run(
        Store {
            shared: true,
            fold_min_bytes: 1,
            ..local_store(dir.path(), "folds-disk", 4, &rt)
        },
        26,
        &rt,
    );
}

#[test]
fn local_directory_partitioning_key_matches_the_model() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let keyed = |name, partitions| {
        local_store_keyed(dir.path(), name, partitions, Some(PARTITIONING_KEY), &rt)
    };
    run(keyed("region4", 4), 25, &rt);
    run(
        Store {
            shared: true,
            ..keyed("region3-disk", 3)
        },
        26,
        &rt,
    );
}

#[test]
fn localstack_one_and_four_partitions_match_the_model() {
    let rt = runtime();
    run(s3_store("one", 1, &rt), 31, &rt);
    run(
        Store {
            shared: true,
            ..s3_store("four", 4, &rt)
        },
        32,
        &rt,
    );
}

#[test]
fn azurite_one_and_four_partitions_match_the_model() {
    let rt = runtime();
    for (partitions, seed) in [(1, 27), (4, 28)] {
        let (url, storage) = rt.block_on(ikv_tests::azurite_storage());
        let store = make(
            storage,
            url,
            ikv_tests::azurite_options(),
            "azure",
            partitions,
            None,
            &rt,
        );
        run(store, seed, &rt);
    }
}

#[test]
fn a_write_becomes_visible_to_a_running_reader() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path(), "live", 2, &rt);
    let reader = Reader::open(store.reader_options(&dir.path().join("mount"))).unwrap();
    assert_eq!(reader.get_string(b"Alice", "city").unwrap(), None);
    let writer = rt
        .block_on(Writer::open(
            store.storage.clone(),
            "live",
            WriterOptions::default(),
        ))
        .unwrap();
    let doc = ikv_core::Document::new()
        .with("id", FieldValue::String("Alice".into()))
        .with("city", FieldValue::String("San Francisco".into()));
    rt.block_on(writer.upsert_fields(doc)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while reader.get_string(b"Alice", "city").unwrap().is_none() {
        assert!(Instant::now() < deadline, "the write never became visible");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        reader.get_string(b"Alice", "city").unwrap().as_deref(),
        Some("San Francisco")
    );
    let status = reader.status();
    assert!(
        status
            .iter()
            .all(|s| s.caught_up_at.is_some() && s.last_error.is_none()),
        "{status:?}"
    );
}

#[test]
fn typed_reads_and_sharding_say_what_is_wrong() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path(), "typed", 4, &rt);
    let writer = rt
        .block_on(Writer::open(
            store.storage.clone(),
            "typed",
            WriterOptions::default(),
        ))
        .unwrap();
    let doc = ikv_core::Document::new()
        .with("id", FieldValue::String("Alice".into()))
        .with("age", FieldValue::Int64(22))
        .with("raw", FieldValue::Bytes(vec![0xff, 0xfe]))
        .with("ok", FieldValue::Bytes(b"fine".to_vec()))
        .with("score", FieldValue::Float64(0.5))
        .with("vip", FieldValue::Bool(true));
    rt.block_on(writer.upsert_fields(doc)).unwrap();
    let alice_partition = partition_of(b"Alice", 4);
    let mut options = store.reader_options(&dir.path().join("mount"));
    options.partitions = vec![alice_partition];
    let reader = Reader::open(options).unwrap();
    assert_eq!(reader.get_int64(b"Alice", "age").unwrap(), Some(22));
    assert_eq!(reader.get_float64(b"Alice", "score").unwrap(), Some(0.5));
    assert_eq!(reader.get_bool(b"Alice", "vip").unwrap(), Some(true));
    assert_eq!(
        reader.get_string(b"Alice", "ok").unwrap().as_deref(),
        Some("fine"),
        "bytes holding UTF-8 read as a string"
    );
    assert_eq!(
        reader.get_bytes(b"Alice", "id").unwrap(),
        Some(b"Alice".to_vec()),
        "a string reads as its UTF-8 bytes"
    );
    let err = reader.get_string(b"Alice", "raw").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TypeMismatch);
    assert!(err.to_string().contains("not valid UTF-8"), "{err}");
    let err = reader.get_string(b"Alice", "age").unwrap_err();
    assert!(
        err.to_string().contains("holds a int64 value, not bytes"),
        "{err}"
    );
    let err = reader.get_int64(b"Alice", "score").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TypeMismatch);
    assert_eq!(reader.get_int64(b"Alice", "missing").unwrap(), None);
    // A key of an unmounted partition.
    let other = (0..100)
        .map(|i| format!("x{i}"))
        .find(|k| partition_of(k.as_bytes(), 4) != alice_partition)
        .unwrap();
    let err = reader.get(other.as_bytes(), "age").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotMounted);
    assert!(err.to_string().contains("does not mount"), "{err}");
    assert_eq!(
        reader
            .multiget(&[other.as_bytes()], &["age"])
            .unwrap_err()
            .kind(),
        ErrorKind::NotMounted
    );
    // A partition the store does not have.
    let mut bad = store.reader_options(&dir.path().join("mount2"));
    bad.partitions = vec![9];
    let err = Reader::open(bad).unwrap_err();
    assert!(
        err.to_string().contains("cannot mount partition 9"),
        "{err}"
    );
    let err = Reader::open(ReaderOptions::new(
        &store.url,
        "nope",
        dir.path().join("m3"),
    ))
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreNotFound);
}

#[test]
fn a_reader_that_fell_behind_retention_rebuilds_and_skips_nothing() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path(), "behind", 2, &rt);
    let writer = rt
        .block_on(Writer::open(
            store.storage.clone(),
            "behind",
            WriterOptions::default(),
        ))
        .unwrap();
    let mut work = Workload::new(5, KEYS);
    let mut model = store.new_model();
    for _ in 0..30 {
        let ops = work.batch(8);
        rt.block_on(write_and_record(&writer, &mut model, &ops));
    }
    let mount = dir.path().join("mount");
    Reader::open(store.reader_options(&mount))
        .unwrap()
        .shutdown()
        .unwrap();
    // While the reader is away: more writes, snapshots, and retention far in the future.
    for _ in 0..30 {
        let ops = work.batch(8);
        rt.block_on(write_and_record(&writer, &mut model, &ops));
    }
    let options = SnapshotOptions {
        force: true,
        ..SnapshotOptions::default()
    };
    let later = SystemTime::now() + Duration::from_secs(3 * 3600);
    for p in 0..2 {
        rt.block_on(snapshot_partition(
            &store.storage,
            &store.config,
            p,
            &options,
            SystemTime::now(),
        ))
        .unwrap();
        let report = rt
            .block_on(apply_retention(
                &store.storage,
                &store.layout,
                p,
                &Retention::default(),
                later,
            ))
            .unwrap();
        assert!(report.deltas_deleted > 0);
    }
    for _ in 0..10 {
        let ops = work.batch(8);
        rt.block_on(write_and_record(&writer, &mut model, &ops));
    }
    let reader = Reader::open(store.reader_options(&mount)).unwrap();
    assert_equals_model(&reader, &work.all_keys(), &model.state());
    let status = reader.status();
    assert!(
        status.iter().all(|s| s.snapshot_sequence > 0),
        "rebuilt from the new snapshots: {status:?}"
    );
}

#[test]
fn a_failing_poll_backs_off_keeps_serving_and_recovers() {
    use ikv_core::delta::{DeltaMeta, encode_delta};
    use object_store::ObjectStoreExt;
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path(), "flaky", 1, &rt);
    let writer = rt
        .block_on(Writer::open(
            store.storage.clone(),
            "flaky",
            WriterOptions::default(),
        ))
        .unwrap();
    let doc = |v: i64| {
        ikv_core::Document::new()
            .with("id", FieldValue::String("k".into()))
            .with("n", FieldValue::Int64(v))
    };
    rt.block_on(writer.upsert_fields(doc(1))).unwrap();
    let reader = Reader::open(store.reader_options(&dir.path().join("mount"))).unwrap();
    assert_eq!(reader.get_int64(b"k", "n").unwrap(), Some(1));

    // Delta 2 arrives unreadable: the poller fails, backs off, and reads keep their data.
    let path = store.layout.delta(0, 2);
    rt.block_on(
        store
            .storage
            .object_store()
            .put(&path, b"not an arrow file".to_vec().into()),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while reader.status()[0].last_error.is_none() {
        assert!(
            Instant::now() < deadline,
            "the poller never reported the failure"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        reader.status()[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("corrupt"),
        "{:?}",
        reader.status()
    );
    assert_eq!(
        reader.get_int64(b"k", "n").unwrap(),
        Some(1),
        "reads are served from local data"
    );
    assert_eq!(reader.status()[0].applied_sequence, 1);

    // Repaired: the next retry applies it and the error clears.
    let ops = vec![ikv_core::DeltaOp::SetField {
        key: b"k".to_vec(),
        field: "n".into(),
        value: FieldValue::Int64(2),
        expires_ms: None,
        event_us: None,
    }];
    let good = encode_delta(
        &DeltaMeta::new("repair".into(), "test".into(), "flaky".into(), 0),
        &ops,
    )
    .unwrap();
    let good = ikv_core::delta::place_delta(&good, 2).unwrap();
    rt.block_on(store.storage.object_store().put(&path, good))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while reader.get_int64(b"k", "n").unwrap() != Some(2) {
        assert!(
            Instant::now() < deadline,
            "the reader never recovered: {:?}",
            reader.status()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while reader.status()[0].last_error.is_some() {
        assert!(Instant::now() < deadline, "the error never cleared");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A document written under partitioning-key values of two partitions, a drop, and the
/// document rewritten under the first: the rewritten field is live for a running reader and a
/// fresh one, whichever partition's log is longer (the epochs of the two logs are never
/// compared), and reads answer from the lower partition's document.
#[test]
fn a_document_in_two_partitions_is_judged_by_each_partitions_own_drops() {
    use ikv_core::{Document, Operation};
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let region_of = |p: u32| {
        (0..)
            .map(|i| format!("r{i}"))
            .find(|r| partition_of(r.as_bytes(), 4) == p)
            .unwrap()
    };
    let mut case = 0;
    for (p, q) in [(0u32, 3u32), (3, 0)] {
        for dropped in ["e", "u"] {
            case += 1;
            let name = format!("moves{case}");
            let store = local_store_keyed(dir.path(), &name, 4, Some(PARTITIONING_KEY), &rt);
            let writer = rt
                .block_on(Writer::open(
                    store.storage.clone(),
                    &name,
                    WriterOptions::default(),
                ))
                .unwrap();
            let mut model = store.new_model();
            let mut write = |ops: Vec<Operation>| {
                rt.block_on(write_and_record(&writer, &mut model, &ops));
            };
            let a = |region: &str, field: &str, value: &str| {
                Operation::UpsertFields(
                    Document::new()
                        .with(PRIMARY_KEY, FieldValue::String("A".into()))
                        .with(PARTITIONING_KEY, FieldValue::String(region.into()))
                        .with(field, FieldValue::String(value.into())),
                )
            };
            let (rp, rq) = (region_of(p), region_of(q));
            write(vec![a(&rp, "e", "old-e")]);
            for i in 0..80 {
                write(vec![a(&rq, "n", &format!("filler{i}"))]);
            }
            write(vec![a(&rq, "u", "old-u")]);
            for part in 0..4 {
                let options = SnapshotOptions {
                    force: true,
                    ..SnapshotOptions::default()
                };
                rt.block_on(snapshot_partition(
                    &store.storage,
                    &store.config,
                    part,
                    &options,
                    SystemTime::now(),
                ))
                .unwrap();
            }
            let running = Reader::open(store.reader_options(&dir.path().join(&name))).unwrap();
            write(vec![Operation::DropFieldsByName(vec![dropped.into()])]);
            write(vec![a(&rp, dropped, "NEW")]);
            let state = model.state();
            let tips = store.tips(&rt);
            wait_caught_up(&running, &tips);
            let fresh =
                Reader::open(store.reader_options(&dir.path().join(format!("{name}-fresh"))))
                    .unwrap();
            for (which, reader) in [("running", &running), ("fresh", &fresh)] {
                // The lower partition's document answers.
                let expected = Model::answer(&state, &[0, 1, 2, 3], b"A").unwrap();
                assert_eq!(
                    reader.get_document(b"A").unwrap().as_ref(),
                    Some(expected),
                    "{which} reader, P={p} Q={q}, dropped {dropped}"
                );
                let want = (p < q).then(|| FieldValue::String("NEW".into()));
                assert_eq!(
                    reader.get(b"A", dropped).unwrap(),
                    want,
                    "{which} reader, P={p} Q={q}, dropped {dropped}"
                );
                assert_equals_model(reader, &[b"A".to_vec()], &state);
            }
            // A reader of P alone sees the rewrite whichever partition is lower.
            let mut only_p = store.reader_options(&dir.path().join(format!("{name}-p")));
            only_p.partitions = vec![p];
            let reader = Reader::open(only_p).unwrap();
            assert_eq!(
                reader.get(b"A", dropped).unwrap(),
                Some(FieldValue::String("NEW".into()))
            );
        }
    }
}

/// A scan holds the view it started from: writes applied while it runs (and the background
/// folds they start, replacing the image it walks) are not seen by it; the next scan sees
/// them. Documents deleted before it started are not yielded.
#[test]
fn a_scan_reads_one_view_while_writes_and_folds_go_on() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = Store {
        fold_min_bytes: 1,
        ..local_store(dir.path(), "scan", 2, &rt)
    };
    let writer = rt
        .block_on(Writer::open(
            store.storage.clone(),
            "scan",
            WriterOptions::default(),
        ))
        .unwrap();
    let doc = |i: usize, round: i64| {
        ikv_core::Document::new()
            .with(PRIMARY_KEY, FieldValue::String(format!("k{i:03}")))
            .with("n", FieldValue::Int64(round))
    };
    let upsert = |range: std::ops::Range<usize>, round: i64| {
        let ops: Vec<_> = range
            .map(|i| ikv_core::Operation::UpsertFields(doc(i, round)))
            .collect();
        rt.block_on(writer.write(&ops)).unwrap();
    };
    upsert(0..100, 1);
    let deleted = ikv_core::Document::new().with(PRIMARY_KEY, FieldValue::String("k007".into()));
    rt.block_on(writer.delete_document(deleted)).unwrap();
    let reader = Reader::open(store.reader_options(&dir.path().join("mount"))).unwrap();
    let mount = dir.path().join("mount");
    let before = newest_generation(&mount, &store).unwrap();
    let mut scan = reader.scan(&["n", PRIMARY_KEY]);
    let first = scan.next().unwrap().unwrap();
    upsert(0..200, 2);
    wait_caught_up(&reader, &store.tips(&rt));
    let deadline = Instant::now() + Duration::from_secs(20);
    while newest_generation(&mount, &store).unwrap() == before {
        assert!(
            Instant::now() < deadline,
            "no fold replaced the image the scan walks"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        reader.get(b"k150", "n").unwrap(),
        Some(FieldValue::Int64(2))
    );
    let mut seen: Vec<_> = std::iter::once(Ok(first))
        .chain(scan)
        .collect::<Result<_, _>>()
        .unwrap();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    let expected: Vec<_> = (0..100)
        .filter(|i| *i != 7)
        .map(|i| {
            let key = format!("k{i:03}");
            let values = vec![
                Some(FieldValue::Int64(1)),
                Some(FieldValue::String(key.clone())),
            ];
            (key.into_bytes(), values)
        })
        .collect();
    assert_eq!(seen, expected);
    let after: Vec<_> = reader.scan(&["n"]).collect::<Result<_, _>>().unwrap();
    assert_eq!(after.len(), 200);
    assert!(
        after
            .iter()
            .all(|(_, v)| v == &[Some(FieldValue::Int64(2))])
    );
    // No field asked for: every live document, keys only.
    assert_eq!(reader.scan::<&str>(&[]).count(), 200);
}
