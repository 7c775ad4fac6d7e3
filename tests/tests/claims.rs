//! Claims of the docs that need a test of their own: a call is all-or-nothing per partition
//! for readers and a multiget sees one view (ARCHITECTURE.md, READER.md), a call that fails in
//! one partition keeps what the others committed, a storage failure is a 503
//! `storage_unavailable` (API.md), a running reader notices retention at its check interval,
//! and `caught_up_at` never claims freshness across a hole.
#![allow(clippy::disallowed_methods)] // tests and benches run real processes, sockets and timings on the wall clock

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use ikv_core::bucket::{create_store, discover_tip, list_delta_seqs};
use ikv_core::delta::{DeltaMeta, encode_delta};
use ikv_core::partition::partition_of;
use ikv_core::{
    DeltaOp, Document, ErrorKind, FieldValue, Operation, Storage, StorageOptions, StoreConfig,
    StoreLayout,
};
use ikv_reader::{Reader, ReaderOptions};
use ikv_snapshot::{Retention, apply_retention};
use ikv_tests::faulty::{FaultyStore, PutFault};
use ikv_tests::model::Model;
use ikv_tests::model_check::write_and_record;
use ikv_tests::runtime;
use ikv_writer::service::auth::{Accounts, hash_passkey};
use ikv_writer::service::{ServiceState, router};
use ikv_writer::{CommitPolicy, Writer, WriterOptions};
use object_store::ObjectStoreExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use tower::ServiceExt;

fn fast_policy() -> WriterOptions {
    WriterOptions {
        commit_policy: CommitPolicy {
            failure_backoff_base: Duration::from_millis(1),
            failure_backoff_cap: Duration::from_millis(5),
            ..CommitPolicy::default()
        },
        ..WriterOptions::default()
    }
}

fn s(v: &str) -> FieldValue {
    FieldValue::String(v.into())
}

/// A key of `partition` among `n`.
fn key_in(partition: u32, n: u32, tag: &str) -> String {
    (0..)
        .map(|i| format!("{tag}{i}"))
        .find(|k| partition_of(k.as_bytes(), n) == partition)
        .unwrap()
}

fn local(dir: &std::path::Path) -> (String, Storage) {
    let url = format!("file://{}/bucket", dir.display());
    let storage = Storage::open(&url, &StorageOptions::default()).unwrap();
    (url, storage)
}

/// A store on a local directory with a writer: what the tests below start from.
struct LocalStore {
    dir: tempfile::TempDir,
    url: String,
    storage: Storage,
    config: StoreConfig,
    layout: StoreLayout,
    writer: Writer,
}

fn local_store(rt: &tokio::runtime::Runtime, name: &str, partitions: u32) -> LocalStore {
    let dir = tempfile::tempdir().unwrap();
    let (url, storage) = local(dir.path());
    let config = StoreConfig::new(name, "id", None, partitions).unwrap();
    rt.block_on(create_store(&storage, &config)).unwrap();
    let layout = StoreLayout::new(&storage.prefix, name).unwrap();
    let writer = rt
        .block_on(Writer::open(
            storage.clone(),
            name,
            WriterOptions::default(),
        ))
        .unwrap();
    LocalStore {
        dir,
        url,
        storage,
        config,
        layout,
        writer,
    }
}

/// Two writer tasks, one per partition, each call rewriting 8 documents of its group with the
/// call's number; reader threads multiget all 16 keys meanwhile. Within a group the 8 values
/// are always equal (a call is seen whole or not at all, and a multiget sees one view), and
/// they never go backwards.
#[test]
fn readers_never_see_part_of_a_call_or_a_mixed_multiget() {
    for attached in [false, true] {
        let rt = runtime();
        let dir = tempfile::tempdir().unwrap();
        let (url, storage) = local(dir.path());
        let config = StoreConfig::new("atomic", "id", Some("g"), 2).unwrap();
        rt.block_on(create_store(&storage, &config)).unwrap();
        let groups: Vec<String> = (0..2).map(|p| key_in(p, 2, "group")).collect();
        let keys: Vec<Vec<u8>> = groups
            .iter()
            .flat_map(|g| (0..8).map(move |i| format!("{g}-{i}").into_bytes()))
            .collect();
        let mut options = ReaderOptions::new(&url, "atomic", dir.path().join("mount"));
        options.poll_interval = Duration::from_millis(1);
        // Read through the mount's owner, or through a second reader attached to it.
        let owner = Reader::open(options.clone()).unwrap();
        let reader = Arc::new(if attached {
            Reader::open(options).unwrap()
        } else {
            owner
        });
        let writing = Arc::new(AtomicBool::new(true));
        let watchers: Vec<_> = (0..2)
            .map(|_| {
                let (reader, writing, keys) = (reader.clone(), writing.clone(), keys.clone());
                std::thread::spawn(move || {
                    let mut last = [-1i64; 2];
                    let mut versions = 0;
                    while writing.load(Ordering::Relaxed) {
                        let got = reader.multiget(&keys, &["v"]).unwrap();
                        for (g, values) in got.chunks(8).enumerate() {
                            let v: Vec<i64> = values
                                .iter()
                                .map(|x| match x {
                                    Some(FieldValue::Int64(v)) => *v,
                                    None => -1,
                                    other => panic!("unexpected {other:?}"),
                                })
                                .collect();
                            assert!(
                                v.iter().all(|x| *x == v[0]),
                                "group {g}: part of a call is visible: {v:?}"
                            );
                            assert!(v[0] >= last[g], "group {g} went backwards");
                            if v[0] != last[g] {
                                versions += 1;
                            }
                            last[g] = v[0];
                        }
                    }
                    versions
                })
            })
            .collect();
        let writer = rt
            .block_on(Writer::open(
                storage.clone(),
                "atomic",
                WriterOptions::default(),
            ))
            .unwrap();
        rt.block_on(async {
            let tasks = groups.iter().map(|g| {
                let (writer, g) = (writer.clone(), g.clone());
                async move {
                    for n in 0..60i64 {
                        let ops: Vec<Operation> = (0..8)
                            .map(|i| {
                                Operation::UpsertFields(
                                    Document::new()
                                        .with("id", s(&format!("{g}-{i}")))
                                        .with("g", s(&g))
                                        .with("v", FieldValue::Int64(n)),
                                )
                            })
                            .collect();
                        writer.write(&ops).await.unwrap();
                    }
                }
            });
            futures::future::join_all(tasks).await;
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while reader.multiget(&keys, &["v"]).unwrap() != vec![Some(FieldValue::Int64(59)); 16] {
            assert!(Instant::now() < deadline, "never caught up");
            std::thread::sleep(Duration::from_millis(5));
        }
        writing.store(false, Ordering::Relaxed);
        let versions: usize = watchers.into_iter().map(|w| w.join().unwrap()).sum();
        assert!(
            versions > 4,
            "the readers saw only {versions} versions: they did not read while writes landed"
        );
    }
}

/// A call touching two partitions whose second partition's PUTs all fail: the call reports
/// the failure, the first partition's delta stays committed (calls are atomic per partition
/// only), the failed partition's log is unchanged, and the HTTP face answers 503
/// `storage_unavailable` for the same failure.
#[test]
fn a_call_failing_in_one_partition_keeps_the_others_and_is_a_503_over_http() {
    let rt = runtime();
    let faulty = Arc::new(FaultyStore::new(Arc::new(InMemory::new())));
    let storage = Storage::new(faulty.clone(), Path::from("root"), "memory://faulty");
    let config = StoreConfig::new("s", "id", None, 2).unwrap();
    rt.block_on(create_store(&storage, &config)).unwrap();
    let layout = StoreLayout::new(&storage.prefix, "s").unwrap();
    let (k0, k1) = (key_in(0, 2, "a"), key_in(1, 2, "b"));
    let call = vec![
        Operation::UpsertFields(Document::new().with("id", s(&k0)).with("x", s("0"))),
        Operation::UpsertFields(Document::new().with("id", s(&k1)).with("x", s("1"))),
    ];
    for _ in 0..40 {
        faulty.inject("p0001/deltas/", PutFault::FailBeforeLanding);
    }
    let writer = rt
        .block_on(Writer::open(storage.clone(), "s", fast_policy()))
        .unwrap();
    let err = rt.block_on(writer.write(&call)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Storage, "{err}");
    let seqs = |p| rt.block_on(list_delta_seqs(&storage, &layout, p)).unwrap();
    assert_eq!(seqs(0), vec![1], "partition 0 committed its part");
    assert!(seqs(1).is_empty(), "partition 1 has nothing");
    let mut model = Model::new("id", None, 2);
    model.record(
        &call[..1],
        &[ikv_tests::model::Committed {
            partition: 0,
            sequence: 1,
        }],
    );
    let delta = rt
        .block_on(ikv_core::bucket::read_delta(&storage, &layout, 0, 1))
        .unwrap()
        .unwrap();
    assert_eq!(
        ikv_core::delta::decode_delta(&delta, "delta").unwrap().ops,
        vec![
            DeltaOp::set(k0.clone().into_bytes(), "id", s(&k0)),
            DeltaOp::set(k0.clone().into_bytes(), "x", s("0")),
        ]
    );

    // Over HTTP: the same failure is a 503 storage_unavailable.
    let accounts = Accounts::from_json(&format!(
        r#"{{"accounts":[{{"account_id":"me","passkey_hash":"{}","stores":["*"]}}]}}"#,
        hash_passkey("pass-0123456789abcdef").unwrap()
    ))
    .unwrap();
    let app = router(Arc::new(ServiceState::new(
        storage.clone(),
        accounts,
        fast_policy(),
    )));
    let body = serde_json::json!({"operations": [
        {"op": "upsert_fields", "document": {"id": {"string": k1}, "x": {"string": "2"}}}
    ]});
    let request = Request::builder()
        .method("POST")
        .uri("/v1/stores/s/operations")
        .header("content-type", "application/json")
        .header("x-ikv-account-id", "me")
        .header("x-ikv-account-passkey", "pass-0123456789abcdef")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap();
    let response = rt.block_on(app.oneshot(request)).unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let bytes = rt
        .block_on(response.into_body().collect())
        .unwrap()
        .to_bytes();
    let reply: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(reply["error"]["code"], "storage_unavailable", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap_or("");
    assert!(
        !message.contains("root/") && !message.contains("deltas"),
        "no server paths in replies: {message}"
    );
    assert!(seqs(1).is_empty());
}

/// A reader that has not polled while deltas were written, snapshotted and removed by
/// retention notices at its next poll, because its gap-check interval has passed, and
/// rebuilds from the snapshot; nothing is skipped.
#[test]
fn a_running_reader_notices_retention_at_its_check_interval() {
    let rt = runtime();
    let LocalStore {
        dir,
        url,
        storage,
        config,
        layout,
        writer,
    } = local_store(&rt, "ret", 1);
    let mut model = Model::new("id", None, 1);
    let put = |model: &mut Model, k: &str, v: i64| {
        let ops = vec![Operation::UpsertFields(
            Document::new()
                .with("id", s(k))
                .with("v", FieldValue::Int64(v)),
        )];
        rt.block_on(write_and_record(&writer, model, &ops));
    };
    put(&mut model, "a", 1);
    let mut options = ReaderOptions::new(&url, "ret", dir.path().join("mount"));
    // Polls 4 s apart on a clock the test moves (the setup below happens between two polls,
    // however slow the machine), gap checks at every poll.
    let clock = ikv_core::clock::ManualClock::new(SystemTime::now());
    options.clock = clock.clone();
    options.poll_interval = Duration::from_secs(4);
    options.gap_check_interval = Duration::from_millis(1);
    let reader = Reader::open(options).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while clock.sleeps().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the poller never finished its first poll"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    for i in 0..10 {
        put(&mut model, &format!("k{i}"), i);
    }
    rt.block_on(ikv_tests::force_snapshot(&storage, &config, 0))
        .unwrap();
    let later = SystemTime::now() + Duration::from_secs(3 * 3600);
    let report = rt
        .block_on(apply_retention(
            &storage,
            &layout,
            0,
            &Retention::default(),
            later,
        ))
        .unwrap();
    assert_eq!(report.deltas_deleted, 11);
    put(&mut model, "after", 99);
    assert_eq!(
        reader.status()[0].applied_sequence,
        1,
        "no poll ran during the setup"
    );
    clock.advance(Duration::from_secs(4));
    let deadline = Instant::now() + Duration::from_secs(30);
    while reader.status()[0].applied_sequence < 12 {
        assert!(Instant::now() < deadline, "{:?}", reader.status());
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = &reader.status()[0];
    assert_eq!(status.snapshot_sequence, 11, "rebuilt from the snapshot");
    assert_eq!(status.gap, None);
    for (key, doc) in model.partition(0) {
        assert_eq!(reader.get(&key, "v").unwrap(), doc.get("v").cloned());
    }
}

/// A delta missing below a later one (a hole): the running reader reports the gap, keeps
/// serving the state before it, and `caught_up_at` stops advancing; a new reader opening on
/// the same bucket reports the same without rebuilding; once the hole is filled both move on.
#[test]
fn caught_up_at_is_never_claimed_across_a_hole() {
    let rt = runtime();
    let LocalStore {
        dir,
        url,
        storage,
        layout,
        writer,
        ..
    } = local_store(&rt, "hole", 1);
    for v in 1..=5 {
        rt.block_on(
            writer.upsert_fields(
                Document::new()
                    .with("id", s("k"))
                    .with("v", FieldValue::Int64(v)),
            ),
        )
        .unwrap();
    }
    let options = |mount: &str| {
        let mut o = ReaderOptions::new(&url, "hole", dir.path().join(mount));
        o.poll_interval = Duration::from_millis(10);
        o.gap_check_interval = Duration::from_millis(50);
        o
    };
    let reader = Reader::open(options("a")).unwrap();
    assert_eq!(reader.status()[0].gap, None);
    // Delta `v`, placed at sequence `v`.
    let delta = |v: i64| {
        let encoded = encode_delta(
            &DeltaMeta::new(format!("b{v}"), "test".into(), "hole".into(), 0),
            &[DeltaOp::set(b"k".to_vec(), "v", FieldValue::Int64(v))],
        )
        .unwrap();
        ikv_core::delta::place_delta(&encoded, v as u64).unwrap()
    };
    // Delta 8 lands while 6 and 7 never did.
    rt.block_on(storage.object_store().put(&layout.delta(0, 8), delta(8)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while reader.status()[0].gap.is_none() {
        assert!(
            Instant::now() < deadline,
            "never noticed: {:?}",
            reader.status()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let first = reader.status()[0].clone();
    assert_eq!(first.gap, Some(6));
    assert_eq!(first.lag_deltas, 3);
    assert!(
        first
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("delta 6"),
        "{first:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let still = reader.status()[0].clone();
    assert_eq!(
        still.caught_up_at, first.caught_up_at,
        "no freshness claimed"
    );
    assert!(
        still.last_successful_poll > first.last_successful_poll,
        "it kept polling"
    );
    assert_eq!(reader.get_int64(b"k", "v").unwrap(), Some(5));
    // A new reader reports the same at open, without a rebuild loop.
    let fresh = Reader::open(options("b")).unwrap();
    assert_eq!(fresh.status()[0].gap, Some(6));
    assert_eq!(fresh.get_int64(b"k", "v").unwrap(), Some(5));
    // Filled: both apply 6, 7, 8, and freshness is claimed again.
    for v in [6, 7] {
        rt.block_on(
            storage
                .object_store()
                .put(&layout.delta(0, v as u64), delta(v)),
        )
        .unwrap();
    }
    assert_eq!(rt.block_on(discover_tip(&storage, &layout, 0)).unwrap(), 8);
    for r in [&reader, &fresh] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.get_int64(b"k", "v").unwrap() != Some(8) {
            assert!(Instant::now() < deadline, "{:?}", r.status());
            std::thread::sleep(Duration::from_millis(10));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.status()[0].caught_up_at <= still.caught_up_at {
            assert!(Instant::now() < deadline, "{:?}", r.status());
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(r.status()[0].gap, None);
    }
}

/// A delta of partition 1 copied into partition 0's log says where it belongs: the reader
/// refuses to apply it (the error names the object) and keeps serving, and the compactor
/// refuses to fold it.
#[test]
fn a_delta_copied_into_another_partitions_log_is_never_applied_or_compacted() {
    let rt = runtime();
    let LocalStore {
        dir,
        url,
        storage,
        config,
        layout,
        writer,
    } = local_store(&rt, "moved", 2);
    let (k0, k1) = (key_in(0, 2, "a"), key_in(1, 2, "b"));
    for k in [&k0, &k1] {
        rt.block_on(writer.upsert_fields(Document::new().with("id", s(k)).with("v", s("1"))))
            .unwrap();
    }
    let mut options = ReaderOptions::new(&url, "moved", dir.path().join("mount"));
    options.poll_interval = Duration::from_millis(10);
    let reader = Reader::open(options).unwrap();
    // Partition 1's delta 1, copied as partition 0's delta 2.
    let stolen = std::fs::read(
        dir.path()
            .join("bucket/moved/p0001/deltas/00000000000000000001.arrow"),
    )
    .unwrap();
    rt.block_on(
        storage
            .object_store()
            .put(&layout.delta(0, 2), stolen.into()),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while reader.status()[0].last_error.is_none() {
        assert!(Instant::now() < deadline, "{:?}", reader.status());
        std::thread::sleep(Duration::from_millis(10));
    }
    let error = reader.status()[0].last_error.clone().unwrap_or_default();
    assert!(
        error.contains("partition 1, not store \"moved\", partition 0")
            && error.contains("p0000/deltas"),
        "{error}"
    );
    assert_eq!(reader.status()[0].applied_sequence, 1);
    assert_eq!(reader.get(k1.as_bytes(), "v").unwrap(), Some(s("1")));
    // A delta of the right store and partition moved to another place in its log (its own
    // delta 1, copied as delta 2): the trailer's sequence gives it away.
    let own = rt
        .block_on(ikv_core::bucket::read_delta(&storage, &layout, 0, 1))
        .unwrap()
        .unwrap();
    let moved = ikv_core::delta::decode_delta(&own, "p0/1").unwrap();
    let err = moved
        .check_origin("moved", 0, 2, &layout.delta(0, 2))
        .unwrap_err();
    assert!(
        err.to_string().contains("says it is delta 1, not delta 2"),
        "{err}"
    );
    let err = rt
        .block_on(ikv_tests::force_snapshot(&storage, &config, 0))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
}
