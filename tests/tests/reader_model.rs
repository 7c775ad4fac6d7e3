//! The embedded reader against the reference model: seeded random workloads, snapshots at
//! random points, readers opened and restarted at random points; on a local directory and on
//! the S3 emulator, with 1 and 4 partitions. Also: live visibility, sharding, locking, and
//! falling behind retention.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use ikv_core::partition::partition_of;
use ikv_core::store::{create_store, discover_tip};
use ikv_core::{ErrorKind, FieldValue, Storage, StorageOptions, StoreConfig, StoreLayout};
use ikv_reader::{Reader, ReaderOptions};
use ikv_snapshot::{Retention, SnapshotOptions, apply_retention, snapshot_partition};
use ikv_tests::model_check::expected_state;
use ikv_tests::random_ops::{FIELDS, Workload};
use ikv_tests::{localstack_storage, s3_endpoint};
use ikv_writer::{Writer, WriterOptions};
use rand::Rng;

const KEYS: usize = 150;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

struct Store {
    /// Whether readers serve from the in-memory index or from fjall.
    memory: bool,
    storage: Storage,
    url: String,
    options: StorageOptions,
    config: StoreConfig,
    layout: StoreLayout,
}

fn local_store(
    dir: &std::path::Path,
    name: &str,
    partitions: u32,
    rt: &tokio::runtime::Runtime,
) -> Store {
    let url = format!("file://{}/bucket", dir.display());
    let options = StorageOptions::default();
    let storage = Storage::open(&url, &options).unwrap();
    make(storage, url, options, name, partitions, rt)
}

fn s3_store(name: &str, partitions: u32, rt: &tokio::runtime::Runtime) -> Store {
    let storage = rt.block_on(localstack_storage(true));
    let options = StorageOptions::default()
        .with("aws_endpoint", s3_endpoint())
        .with("aws_region", "us-east-1")
        .with("aws_access_key_id", "test")
        .with("aws_secret_access_key", "test");
    let url = storage.url.clone();
    make(storage, url, options, name, partitions, rt)
}

fn make(
    storage: Storage,
    url: String,
    options: StorageOptions,
    name: &str,
    partitions: u32,
    rt: &tokio::runtime::Runtime,
) -> Store {
    let config = StoreConfig::new(name, "id", None, partitions).unwrap();
    rt.block_on(create_store(&storage, &config)).unwrap();
    let layout = StoreLayout::new(&storage.prefix, name).unwrap();
    Store {
        memory: true,
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
        o.memory_index = self.memory;
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

    /// The model of every partition at its tip.
    fn model(
        &self,
        rt: &tokio::runtime::Runtime,
    ) -> Vec<BTreeMap<Vec<u8>, BTreeMap<String, FieldValue>>> {
        self.tips(rt)
            .iter()
            .enumerate()
            .map(|(p, tip)| {
                rt.block_on(expected_state(
                    &self.storage,
                    &self.layout,
                    "id",
                    p as u32,
                    *tip,
                ))
            })
            .collect()
    }
}

fn wait_caught_up(reader: &Reader, tips: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = reader.status();
        if status
            .iter()
            .all(|s| s.applied_sequence >= tips[s.partition as usize])
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "reader did not catch up: {status:?} vs {tips:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every key × field of the workload reads as the model says, by get and by multiget.
fn assert_equals_model(
    reader: &Reader,
    store: &Store,
    model: &[BTreeMap<Vec<u8>, BTreeMap<String, FieldValue>>],
) {
    let n = store.config.num_partitions;
    let keys: Vec<Vec<u8>> = (0..KEYS).map(|i| format!("k{i:04}").into_bytes()).collect();
    let fields: Vec<&str> = FIELDS.iter().copied().chain(["id"]).collect();
    let live_docs: usize = model.iter().map(|m| m.len()).sum();
    assert!(live_docs > 0, "a model with no documents checks nothing");
    let mut expected_all = Vec::new();
    for key in &keys {
        let doc = model[partition_of(key, n) as usize].get(key);
        for f in &fields {
            let expected = doc.and_then(|d| d.get(*f)).cloned();
            assert_eq!(
                reader.get(key, f).unwrap(),
                expected,
                "get({}, {f})",
                String::from_utf8_lossy(key)
            );
            expected_all.push(expected);
        }
    }
    assert_eq!(
        reader.multiget(&keys, &fields).unwrap(),
        expected_all,
        "multiget, 8 fields"
    );
    let two: Vec<&str> = vec!["a", "id"];
    let got = reader.multiget(&keys, &two).unwrap();
    for (i, key) in keys.iter().enumerate() {
        let doc = model[partition_of(key, n) as usize].get(key);
        for (j, f) in two.iter().enumerate() {
            assert_eq!(got[i * 2 + j], doc.and_then(|d| d.get(*f)).cloned());
        }
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
    let mut work = Workload::new(seed, "id", KEYS);
    let mut live: Vec<(usize, Reader)> = Vec::new();
    let mut opened = 0;
    for step in 0..240 {
        rt.block_on(writer.write(&work.batch(10))).unwrap();
        let roll = work.rng().random_range(0..100);
        if roll < 5 {
            let p = work.rng().random_range(0..store.config.num_partitions);
            let options = SnapshotOptions {
                force: true,
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
        } else if roll < 8 {
            // Open a reader on a new mount, or restart one on its old mount (resume).
            let mount = work.rng().random_range(0..3);
            live.retain(|(m, _)| *m != mount); // closing it first: one process per mount
            let reader =
                Reader::open(store.reader_options(&mounts.path().join(mount.to_string()))).unwrap();
            opened += 1;
            assert_equals_model(&reader, &store, &store.model(rt));
            live.push((mount, reader));
        } else if roll < 9 && !live.is_empty() {
            let (_, reader) = live.remove(0);
            reader.shutdown().unwrap();
        }
        let _ = step;
    }
    assert!(opened >= 3, "seed {seed}: only {opened} readers opened");
    let tips = store.tips(rt);
    let model = store.model(rt);
    for (_, reader) in &live {
        wait_caught_up(reader, &tips);
        assert_equals_model(reader, &store, &model);
    }
    // And every mount resumes to the same state.
    drop(live);
    for mount in 0..3 {
        let path = mounts.path().join(mount.to_string());
        if path.exists() {
            let reader = Reader::open(store.reader_options(&path)).unwrap();
            assert_equals_model(&reader, &store, &model);
        }
    }
}

#[test]
fn local_directory_one_and_four_partitions_match_the_model() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    // Reads from the memory index, and from fjall.
    run(local_store(dir.path(), "one", 1, &rt), 21, &rt);
    run(local_store(dir.path(), "four", 4, &rt), 22, &rt);
    run(
        Store {
            memory: false,
            ..local_store(dir.path(), "one-disk", 1, &rt)
        },
        23,
        &rt,
    );
    run(
        Store {
            memory: false,
            ..local_store(dir.path(), "four-disk", 4, &rt)
        },
        24,
        &rt,
    );
}

#[test]
fn localstack_one_and_four_partitions_match_the_model() {
    let rt = runtime();
    run(s3_store("one", 1, &rt), 31, &rt);
    run(
        Store {
            memory: false,
            ..s3_store("four", 4, &rt)
        },
        32,
        &rt,
    );
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
fn a_second_process_on_the_same_mount_gets_a_clear_error() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path(), "locked", 1, &rt);
    let mount = dir.path().join("mount");
    let _reader = Reader::open(store.reader_options(&mount)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ikv-test-reader"))
        .args([&store.url, "locked", mount.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is in use by another process"), "{stderr}");
    // In-process, too.
    let err = Reader::open(store.reader_options(&mount)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Local);
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
    let mut work = Workload::new(5, "id", KEYS);
    for _ in 0..30 {
        rt.block_on(writer.write(&work.batch(8))).unwrap();
    }
    let mount = dir.path().join("mount");
    Reader::open(store.reader_options(&mount))
        .unwrap()
        .shutdown()
        .unwrap();
    // While the reader is away: more writes, snapshots, and retention far in the future.
    for _ in 0..30 {
        rt.block_on(writer.write(&work.batch(8))).unwrap();
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
        rt.block_on(writer.write(&work.batch(8))).unwrap();
    }
    // The model from the snapshots' content plus the deltas after them.
    let tips = store.tips(&rt);
    let mut model = Vec::new();
    for p in 0..2u32 {
        let manifest = rt
            .block_on(ikv_snapshot::Manifest::load_newest(
                &store.storage,
                &store.layout,
                p,
            ))
            .unwrap()
            .unwrap();
        let snap_seq = manifest.sequence;
        let docs = rt
            .block_on(
                ikv_snapshot::SnapshotStream::new(
                    store.storage.clone(),
                    store.layout.clone(),
                    manifest,
                )
                .collect_all(),
            )
            .unwrap();
        let mut m = ikv_core::model::StoreModel::new("id");
        m.documents = docs.into_iter().collect();
        for seq in snap_seq + 1..=tips[p as usize] {
            let bytes = rt
                .block_on(ikv_core::store::read_delta(
                    &store.storage,
                    &store.layout,
                    p,
                    seq,
                ))
                .unwrap()
                .unwrap();
            ikv_core::delta::decode_delta(&bytes)
                .unwrap()
                .ops
                .iter()
                .for_each(|op| m.apply(op));
        }
        model.push(m.documents.into_iter().collect());
    }
    let reader = Reader::open(store.reader_options(&mount)).unwrap();
    assert_equals_model(&reader, &store, &model);
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
            .store
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
    }];
    let good = encode_delta(
        &DeltaMeta::new("repair".into(), "test".into(), "flaky".into(), 0),
        &ops,
    )
    .unwrap();
    rt.block_on(store.storage.store.put(&path, good.into()))
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
