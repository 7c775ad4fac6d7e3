//! Snapshots are ordinary tables: pyarrow, pandas and DuckDB read one written from a random
//! workload (type changes included) and find exactly the model's documents; DuckDB reads a
//! store whose newest snapshots are layers through the query `ikv snapshot-sql` prints.
#![allow(clippy::disallowed_methods)] // tests and benches run real processes, sockets and timings on the wall clock

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use ikv_core::bucket::create_store;
use ikv_core::clock::{ManualClock, epoch_ms};
use ikv_core::{FieldValue, Storage, StorageOptions, StoreConfig, StoreLayout};
use ikv_snapshot::{PartitionOutcome, SnapshotOptions, snapshot_partition};
use ikv_snapshot_format::write::FileLayout;
use ikv_snapshot_format::{Manifest, Stack};
use ikv_tests::model::Model;
use ikv_tests::model_check::{commits, write_and_record};
use ikv_tests::random_ops::Workload;
use ikv_writer::{Writer, WriterOptions};
use serde_json::{Value, json};

/// The project's test Python (`IKV_TEST_PYTHON`, else `.venv/bin/python` made by
/// `scripts/python-env.sh`).
fn python() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("IKV_TEST_PYTHON") {
        return p.into();
    }
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        venv.exists(),
        "no test Python: run scripts/python-env.sh (scripts/test.sh does)"
    );
    venv
}

fn to_json(value: &FieldValue) -> Value {
    match value {
        FieldValue::String(s) => json!(["string", s]),
        FieldValue::Bytes(b) => json!([
            "bytes",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ]),
        FieldValue::Int64(i) => json!(["int64", i]),
        FieldValue::Float64(f) => json!(["float64", f]),
        FieldValue::Bool(b) => json!(["bool", b]),
    }
}

#[tokio::test]
async fn pyarrow_pandas_and_duckdb_read_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(
        &format!("file://{}", dir.path().display()),
        &StorageOptions::default(),
    )
    .unwrap();
    let config = StoreConfig::new("tables", "id", None, 1).unwrap();
    create_store(&storage, &config).await.unwrap();
    let writer = Writer::open(storage.clone(), "tables", WriterOptions::default())
        .await
        .unwrap();
    let mut work = Workload::new(99, 400).with_ascii_keys();
    let mut model = Model::new("id", None, 1);
    for _ in 0..300 {
        write_and_record(&writer, &mut model, &work.batch(10)).await;
    }
    // Random drop_all calls may have emptied the store; end with every key present.
    let refill: Vec<ikv_core::Operation> = (0..400)
        .map(|i| {
            ikv_core::Operation::UpsertFields(
                ikv_core::Document::new()
                    .with("id", FieldValue::String(format!("k{i:04}")))
                    .with(
                        "n",
                        if i % 3 == 0 {
                            FieldValue::Int64(i)
                        } else {
                            FieldValue::Float64(i as f64 / 7.0)
                        },
                    ),
            )
        })
        .collect();
    write_and_record(&writer, &mut model, &refill).await;
    let options = SnapshotOptions {
        force: true,
        files: FileLayout {
            row_group_rows: 50,
            target_file_bytes: 6_000,
        },
        ..SnapshotOptions::default()
    };
    snapshot_partition(&storage, &config, 0, &options, SystemTime::now())
        .await
        .unwrap();
    let layout = StoreLayout::new(&storage.prefix, "tables").unwrap();
    let manifest = Manifest::load_newest(&storage, &layout, 0)
        .await
        .unwrap()
        .unwrap();
    assert!(manifest.files.len() > 1, "split into several files");
    let expected = model.partition_at(0, manifest.sequence);
    assert!(!expected.is_empty());
    let expected: BTreeMap<String, BTreeMap<String, Value>> = expected
        .into_iter()
        .map(|(k, doc)| {
            (
                String::from_utf8(k).unwrap(),
                doc.iter().map(|(f, v)| (f.clone(), to_json(v))).collect(),
            )
        })
        .collect();
    let expected_path = dir.path().join("expected.json");
    std::fs::write(&expected_path, serde_json::to_vec(&expected).unwrap()).unwrap();

    let snapshot_dir = dir
        .path()
        .join("tables/p0000/snapshots")
        .join(format!("{:020}", manifest.sequence));
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/check_snapshot.py");
    let out = std::process::Command::new(python())
        .arg(script)
        .arg(&snapshot_dir)
        .arg(&expected_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok:"));
}

/// The model's documents, as the Python checks read them: key → field → [type, value].
fn expected_json(
    docs: ikv_tests::model::PartitionDocs,
) -> BTreeMap<String, BTreeMap<String, Value>> {
    docs.into_iter()
        .map(|(k, doc)| {
            (
                String::from_utf8(k).unwrap(),
                doc.iter().map(|(f, v)| (f.clone(), to_json(v))).collect(),
            )
        })
        .collect()
}

#[tokio::test]
async fn duckdb_reads_layers_through_the_generated_query() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(
        &format!("file://{}", dir.path().display()),
        &StorageOptions::default(),
    )
    .unwrap();
    let config = StoreConfig::new("stacked", "id", None, 2).unwrap();
    create_store(&storage, &config).await.unwrap();
    let writer = Writer::open(storage.clone(), "stacked", WriterOptions::default())
        .await
        .unwrap();
    let mut work = Workload::new(5, 300).with_ascii_keys();
    let mut model = Model::new("id", None, 2);
    // Per-key changes only (a store-wide drop makes a full snapshot), type changes included.
    for _ in 0..80 {
        let ops = work.keyed_batch(10);
        write_and_record(&writer, &mut model, &ops).await;
    }
    let layered = ikv_tests::layered_pass(8);
    let layout = StoreLayout::new(&storage.prefix, "stacked").unwrap();
    let mut stacks = Vec::new();
    for p in 0..2 {
        for round in 0..4 {
            if round > 0 {
                for _ in 0..5 {
                    let ops = work.keyed_batch(10);
                    write_and_record(&writer, &mut model, &ops).await;
                }
            }
            let outcome = snapshot_partition(&storage, &config, p, &layered, SystemTime::now())
                .await
                .unwrap();
            assert!(
                matches!(outcome, PartitionOutcome::Snapshotted { .. }),
                "{outcome}"
            );
        }
        let top = Manifest::load_newest(&storage, &layout, p)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(top.stacked_on.len(), 3, "a full snapshot and three layers");
        stacks.push(Stack::load(&storage, &layout, top).await.unwrap());
    }
    let mut expected = BTreeMap::new();
    for (p, stack) in stacks.iter().enumerate() {
        expected.extend(expected_json(
            model.partition_at(p as u32, stack.top().sequence),
        ));
    }
    assert!(!expected.is_empty());
    check_sql(dir.path(), &layout, &stacks, &expected);
}

/// Runs the query `ikv snapshot-sql` would print for `stacks` in DuckDB and checks its rows
/// are `expected`.
fn check_sql(
    dir: &std::path::Path,
    layout: &StoreLayout,
    stacks: &[Stack],
    expected: &BTreeMap<String, BTreeMap<String, Value>>,
) {
    let root = dir.to_path_buf();
    let query = ikv_snapshot_format::sql::duckdb_query(stacks, |m, f| {
        root.join(m.file_path(layout, f).as_ref())
            .display()
            .to_string()
    })
    .unwrap();
    let columns = ikv_snapshot_format::sql::query_columns(stacks);
    let (query_path, columns_path, expected_path) = (
        dir.join("query.sql"),
        dir.join("columns.json"),
        dir.join("expected.json"),
    );
    std::fs::write(&query_path, &query).unwrap();
    std::fs::write(&columns_path, serde_json::to_vec(&columns).unwrap()).unwrap();
    std::fs::write(&expected_path, serde_json::to_vec(expected).unwrap()).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/check_sql.py");
    let out = std::process::Command::new(python())
        .arg(script)
        .arg(&query_path)
        .arg(&columns_path)
        .arg(&expected_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok:"));
}

/// A store with times to live and event times: the query leaves out what expired by the time
/// DuckDB runs it (as readers do), and companions are no columns of its result.
#[tokio::test]
async fn duckdb_leaves_out_what_expired() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(
        &format!("file://{}", dir.path().display()),
        &StorageOptions::default(),
    )
    .unwrap();
    let config = StoreConfig::new("ttl", "id", None, 2)
        .unwrap()
        .with_ttl_seconds(Some(60))
        .unwrap();
    create_store(&storage, &config).await.unwrap();
    // Written ten minutes ago, a second a batch: every expiry is at least five minutes from
    // the time the query runs (TTLs of 120 s or less are long past; 900 s and more ahead).
    let now = SystemTime::now();
    let clock = ManualClock::new(now - Duration::from_secs(600));
    let writer = Writer::open(
        storage.clone(),
        "ttl",
        WriterOptions {
            clock: Some(clock.clone()),
            ..WriterOptions::default()
        },
    )
    .await
    .unwrap();
    let mut work = Workload::new(9, 300)
        .with_ascii_keys()
        .with_ttls()
        .with_event_times();
    let mut model = Model::new("id", None, 2).with_default_ttl(Some(60));
    for _ in 0..80 {
        let ops = work.batch(10);
        let receipt = writer.write(&ops).await.unwrap();
        model.record_at(&ops, &commits(&receipt), epoch_ms(clock.as_ref()));
        clock.advance(Duration::from_secs(1));
    }
    let layout = StoreLayout::new(&storage.prefix, "ttl").unwrap();
    let mut stacks = Vec::new();
    let options = SnapshotOptions {
        force: true,
        ..SnapshotOptions::default()
    };
    for p in 0..2 {
        snapshot_partition(&storage, &config, p, &options, now)
            .await
            .unwrap();
        let top = Manifest::load_newest(&storage, &layout, p)
            .await
            .unwrap()
            .unwrap();
        assert!(
            top.columns
                .iter()
                .any(|c| c.field.starts_with("_ikv_expires_ms:")),
            "the snapshot holds expiries"
        );
        stacks.push(Stack::load(&storage, &layout, top).await.unwrap());
    }
    model.judge_at(epoch_ms(&ikv_core::clock::SystemClock::new()));
    let mut expected = BTreeMap::new();
    let mut every = 0;
    for (p, stack) in stacks.iter().enumerate() {
        let seq = stack.top().sequence;
        expected.extend(expected_json(model.partition_at(p as u32, seq)));
        model.judge_at(i64::MIN);
        every += model
            .partition_at(p as u32, seq)
            .values()
            .map(|d| d.len())
            .sum::<usize>();
        model.judge_at(epoch_ms(&ikv_core::clock::SystemClock::new()));
    }
    let served: usize = expected.values().map(|d| d.len()).sum();
    assert!(
        served > 0 && served < every,
        "some values expired ({served} of {every} served)"
    );
    assert!(
        ikv_snapshot_format::sql::query_columns(&stacks)
            .iter()
            .all(|c| !c.field.starts_with("_ikv_")),
        "companions are not result columns"
    );
    check_sql(dir.path(), &layout, &stacks, &expected);
}
