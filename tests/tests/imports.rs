//! Bulk imports through the log: an import equals the same rows written through
//! `upsert_fields` (replace: after a drop of everything), in order with the writes around it,
//! as running readers, fresh readers and the compactor's snapshots see it; bad input commits
//! nothing; runs written but not committed are invisible; a retry commits nothing twice.
#![allow(clippy::disallowed_methods)] // tests and benches run real processes, sockets and timings on the wall clock

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field, Schema};
use ikv_core::bucket::create_store;
use ikv_core::{Document, FieldValue, Operation, Storage, StoreConfig, StoreLayout};
use ikv_import::{ImportMode, ImportOptions, Importer, MemoryBudget, WrittenImport, commit};
use ikv_reader::{Reader, ReaderOptions};
use ikv_tests::fixture::wait_caught_up;
use ikv_tests::model::{Committed, Model};
use ikv_tests::model_check::{assert_equals_model, write_and_record};
use ikv_tests::random_ops::{PRIMARY_KEY, Workload, key_value};
use ikv_tests::{force_snapshot, localstack_storage, runtime};
use ikv_writer::{Writer, WriterOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KEYS: usize = 60;
const PARTITIONS: u32 = 4;

/// The columns an import of these tests carries (names the model check reads).
fn import_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new(PRIMARY_KEY, DataType::Utf8, false),
        Field::new("a", DataType::Int64, true),
        Field::new("b", DataType::Utf8, true),
        Field::new("city", DataType::Utf8, true),
        Field::new("n", DataType::Float64, true),
        Field::new("t", DataType::Boolean, true),
        Field::new("tmp_x", DataType::Binary, true),
    ]))
}

/// `rows` random rows over the workload's string keys (so keys repeat, within a batch and
/// across batches), each field null about a third of the time; and the same rows as the
/// documents `upsert_fields` would be given (null fields left out).
fn random_rows(seed: u64, rows: usize) -> (RecordBatch, Vec<Document>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut keys = Vec::new();
    let (mut a, mut b, mut city, mut n, mut t, mut x) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let mut docs = Vec::new();
    for _ in 0..rows {
        // Keys of the workload's universe that are strings (every fourth is bytes).
        let i = loop {
            let i = rng.random_range(0..KEYS);
            if i % 4 != 3 {
                break i;
            }
        };
        let FieldValue::String(key) = key_value(i) else {
            unreachable!()
        };
        let mut doc = Document::new();
        doc.put(PRIMARY_KEY, FieldValue::String(key.clone()));
        let some = |rng: &mut StdRng| rng.random_range(0..3) != 0;
        let va = some(&mut rng).then(|| rng.random_range(-5i64..5));
        let vb = some(&mut rng).then(|| format!("b{}", rng.random_range(0..9)));
        let vc =
            some(&mut rng).then(|| ["Oslo", "Lima", "Pune"][rng.random_range(0..3)].to_owned());
        let vn = some(&mut rng).then(|| rng.random_range(0..100) as f64 / 8.0);
        let vt = some(&mut rng).then(|| rng.random_bool(0.5));
        let vx = some(&mut rng).then(|| vec![0u8, 0xFF, rng.random_range(0..255)]);
        if let Some(v) = va {
            doc.put("a", FieldValue::Int64(v));
        }
        if let Some(v) = &vb {
            doc.put("b", FieldValue::String(v.clone()));
        }
        if let Some(v) = &vc {
            doc.put("city", FieldValue::String(v.clone()));
        }
        if let Some(v) = vn {
            doc.put("n", FieldValue::Float64(v));
        }
        if let Some(v) = vt {
            doc.put("t", FieldValue::Bool(v));
        }
        if let Some(v) = &vx {
            doc.put("tmp_x", FieldValue::Bytes(v.clone()));
        }
        keys.push(key);
        a.push(va);
        b.push(vb);
        city.push(vc);
        n.push(vn);
        t.push(vt);
        x.push(vx);
        docs.push(doc);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(keys)),
        Arc::new(Int64Array::from(a)),
        Arc::new(StringArray::from(b)),
        Arc::new(StringArray::from(city)),
        Arc::new(Float64Array::from(n)),
        Arc::new(BooleanArray::from(t)),
        Arc::new(BinaryArray::from_iter(x)),
    ];
    (
        RecordBatch::try_new(import_schema(), columns).unwrap(),
        docs,
    )
}

/// The import's commits in the model's terms.
fn committed(receipt: &ikv_import::ImportReceipt) -> Vec<Committed> {
    receipt
        .commits
        .iter()
        .map(|c| Committed {
            partition: c.partition,
            sequence: c.sequence,
        })
        .collect()
}

struct Fixture {
    dir: tempfile::TempDir,
    url: String,
    storage: Storage,
    config: StoreConfig,
    rt: tokio::runtime::Runtime,
    /// The importers' memory budget (the default when `None`).
    memory_budget: Option<MemoryBudget>,
}

fn fixture() -> Fixture {
    let ikv_tests::fixture::LocalStore {
        dir,
        url,
        storage,
        config,
        rt,
    } = ikv_tests::fixture::local_store("imports", PRIMARY_KEY, None, PARTITIONS);
    Fixture {
        dir,
        url,
        storage,
        config,
        rt,
        memory_budget: None,
    }
}

impl Fixture {
    fn reader(&self, mount: &str) -> Reader {
        let mut o = ReaderOptions::new(&self.url, "imports", self.dir.path().join(mount));
        o.poll_interval = Duration::from_millis(10);
        Reader::open(o).unwrap()
    }

    fn writer(&self) -> Writer {
        self.rt
            .block_on(Writer::open(
                self.storage.clone(),
                "imports",
                WriterOptions::default(),
            ))
            .unwrap()
    }

    fn write_runs(&self, batches: &[RecordBatch], import_id: Option<&str>) -> WrittenImport {
        let options = ImportOptions {
            import_id: import_id.map(str::to_owned),
            memory_budget: self.memory_budget,
            ..ImportOptions::default()
        };
        let mut importer =
            Importer::with_config(self.storage.clone(), self.config.clone(), options).unwrap();
        for b in batches {
            self.rt.block_on(importer.add(b)).unwrap();
        }
        self.rt.block_on(importer.write()).unwrap()
    }

    /// Imports `batches` and records in the model what `upsert_fields` of the same rows
    /// (after a drop of everything, for replace) would have done at the import's numbers.
    fn import_and_record(
        &self,
        writer: &Writer,
        model: &mut Model,
        batches: &[(RecordBatch, Vec<Document>)],
        mode: ImportMode,
    ) {
        let only: Vec<RecordBatch> = batches.iter().map(|(b, _)| b.clone()).collect();
        let written = self.write_runs(&only, None);
        let receipt = self
            .rt
            .block_on(commit(writer, &self.storage, &written, mode))
            .unwrap();
        let mut ops = Vec::new();
        if mode == ImportMode::Replace {
            ops.push(Operation::DropAllFields);
        }
        for (_, docs) in batches {
            ops.extend(docs.iter().cloned().map(Operation::UpsertFields));
        }
        let commits = committed(&receipt);
        model.record(&ops, &commits);
    }

    fn tips(&self, model: &Model) -> Vec<u64> {
        (0..PARTITIONS).map(|p| model.tip(p)).collect()
    }

    fn snapshot_all(&self) {
        for p in 0..PARTITIONS {
            self.rt
                .block_on(force_snapshot(&self.storage, &self.config, p))
                .unwrap();
        }
    }
}

#[test]
fn imports_equal_the_same_rows_through_upsert_fields_in_log_order() {
    let f = fixture();
    let writer = f.writer();
    let mut model = Model::new(PRIMARY_KEY, None, PARTITIONS);
    let mut work = Workload::new(11, KEYS);
    let keys = work.all_keys();
    for _ in 0..15 {
        let ops = work.batch(6);
        f.rt.block_on(write_and_record(&writer, &mut model, &ops));
    }
    let running = f.reader("running");
    // Upsert: two batches sharing keys (the later row wins field by field).
    let first = [random_rows(1, 120), random_rows(2, 80)];
    f.import_and_record(&writer, &mut model, &first, ImportMode::Upsert);
    for _ in 0..10 {
        let ops = work.batch(6);
        f.rt.block_on(write_and_record(&writer, &mut model, &ops));
    }
    wait_caught_up(&running, &f.tips(&model));
    assert_equals_model(&running, &keys, &model.state());

    // The compactor folds the import; a fresh reader bootstraps from its snapshot.
    f.snapshot_all();
    let fresh = f.reader("fresh");
    assert_equals_model(&fresh, &keys, &model.state());
    fresh.shutdown().unwrap();

    // Replace: the documents become exactly the imported ones, then writes go on.
    let second = [random_rows(3, 40)];
    f.import_and_record(&writer, &mut model, &second, ImportMode::Replace);
    for _ in 0..5 {
        let ops = work.batch(4);
        f.rt.block_on(write_and_record(&writer, &mut model, &ops));
    }
    wait_caught_up(&running, &f.tips(&model));
    assert_equals_model(&running, &keys, &model.state());
    // An import folded together with the deltas after it, and one in the middle of a round.
    let third = [random_rows(4, 30)];
    f.import_and_record(&writer, &mut model, &third, ImportMode::Upsert);
    for _ in 0..5 {
        let ops = work.batch(4);
        f.rt.block_on(write_and_record(&writer, &mut model, &ops));
    }
    f.snapshot_all();
    let fresh = f.reader("fresh-2");
    assert_equals_model(&fresh, &keys, &model.state());
    wait_caught_up(&running, &f.tips(&model));
    assert_equals_model(&running, &keys, &model.state());
}

/// An import larger than its memory budget is written as several runs per partition, each
/// sorted alone; readers (catching up, and bootstrapping from the compactor's snapshot) merge
/// them so that the last row of a key in the input still wins, field by field.
#[test]
fn an_import_over_its_memory_budget_writes_several_runs_and_equals_the_model() {
    let mut f = fixture();
    f.memory_budget = Some(MemoryBudget::new(ikv_import::MIN_MEMORY_BUDGET).unwrap());
    let writer = f.writer();
    let mut model = Model::new(PRIMARY_KEY, None, PARTITIONS);
    let mut work = Workload::new(12, KEYS);
    let keys = work.all_keys();
    for _ in 0..5 {
        let ops = work.batch(6);
        f.rt.block_on(write_and_record(&writer, &mut model, &ops));
    }
    let running = f.reader("running");
    let batches: Vec<(RecordBatch, Vec<Document>)> =
        (0..40).map(|i| random_rows(100 + i, 1000)).collect();
    let only: Vec<RecordBatch> = batches.iter().map(|(b, _)| b.clone()).collect();
    let written = f.write_runs(&only, Some("over-budget"));
    let runs: Vec<usize> = written.runs.values().map(Vec::len).collect();
    assert!(
        runs.iter().all(|r| *r >= 3),
        "every partition gets several runs at a 1 MiB budget: {runs:?}"
    );
    assert_eq!(written.rows, 40_000);
    let receipt =
        f.rt.block_on(commit(&writer, &f.storage, &written, ImportMode::Upsert))
            .unwrap();
    let ops: Vec<Operation> = batches
        .iter()
        .flat_map(|(_, docs)| docs.iter().cloned().map(Operation::UpsertFields))
        .collect();
    model.record(&ops, &committed(&receipt));
    for _ in 0..5 {
        let ops = work.batch(6);
        f.rt.block_on(write_and_record(&writer, &mut model, &ops));
    }
    wait_caught_up(&running, &f.tips(&model));
    assert_equals_model(&running, &keys, &model.state());
    f.snapshot_all();
    let fresh = f.reader("fresh");
    assert_equals_model(&fresh, &keys, &model.state());
}

#[test]
fn runs_written_but_not_committed_are_invisible_and_a_retry_commits_once() {
    let f = fixture();
    let writer = f.writer();
    let (batch, docs) = random_rows(7, 50);
    // A crash between writing the runs and committing: files, no delta.
    let orphan = f.write_runs(std::slice::from_ref(&batch), Some("daily-1"));
    assert!(!orphan.runs.is_empty());
    let layout = StoreLayout::new(&f.storage.prefix, "imports").unwrap();
    for p in 0..PARTITIONS {
        let tip =
            f.rt.block_on(ikv_core::bucket::discover_tip(&f.storage, &layout, p))
                .unwrap();
        assert_eq!(tip, 0, "nothing is committed before the commit");
    }
    // The retry writes its own runs and commits them; committing again changes nothing.
    let retry = f.write_runs(std::slice::from_ref(&batch), Some("daily-1"));
    let first =
        f.rt.block_on(commit(&writer, &f.storage, &retry, ImportMode::Upsert))
            .unwrap();
    assert!(first.commits.iter().all(|c| !c.earlier));
    let again =
        f.rt.block_on(commit(&writer, &f.storage, &retry, ImportMode::Upsert))
            .unwrap();
    assert!(again.commits.iter().all(|c| c.earlier));
    assert_eq!(
        first
            .commits
            .iter()
            .map(|c| (c.partition, c.sequence))
            .collect::<Vec<_>>(),
        again
            .commits
            .iter()
            .map(|c| (c.partition, c.sequence))
            .collect::<Vec<_>>()
    );
    for c in &first.commits {
        let tip =
            f.rt.block_on(ikv_core::bucket::discover_tip(
                &f.storage,
                &layout,
                c.partition,
            ))
            .unwrap();
        assert_eq!(tip, 1, "partition {} holds one delta", c.partition);
    }
    let mut model = Model::new(PRIMARY_KEY, None, PARTITIONS);
    let ops: Vec<Operation> = docs.into_iter().map(Operation::UpsertFields).collect();
    let commits = committed(&first);
    model.record(&ops, &commits);
    let reader = f.reader("mount");
    let keys = Workload::new(0, KEYS).all_keys();
    assert_equals_model(&reader, &keys, &model.state());
}

#[test]
fn writes_racing_an_import_land_in_log_order_on_localstack() {
    let rt = runtime();
    let storage = rt.block_on(localstack_storage(true));
    let config = StoreConfig::new("imports", PRIMARY_KEY, None, 2).unwrap();
    rt.block_on(create_store(&storage, &config)).unwrap();
    let writer = rt
        .block_on(Writer::open(
            storage.clone(),
            "imports",
            WriterOptions::default(),
        ))
        .unwrap();
    let mut model = Model::new(PRIMARY_KEY, None, 2);
    let (batch, docs) = random_rows(21, 200);
    let mut importer =
        Importer::with_config(storage.clone(), config.clone(), ImportOptions::default()).unwrap();
    rt.block_on(importer.add(&batch)).unwrap();
    let written = rt.block_on(importer.write()).unwrap();
    // Writes to the same keys go on while the import commits.
    let mut work = Workload::new(5, KEYS);
    let keys = work.all_keys();
    let mut calls = Vec::new();
    let receipt = rt.block_on(async {
        let import = commit(&writer, &storage, &written, ImportMode::Upsert);
        let writes = async {
            for _ in 0..12 {
                let ops = work.batch(5);
                let receipt = writer.write(&ops).await.unwrap();
                calls.push((ops, receipt));
            }
        };
        let (receipt, ()) = futures::join!(import, writes);
        receipt.unwrap()
    });
    for (ops, receipt) in &calls {
        model.record(ops, &ikv_tests::model_check::commits(receipt));
    }
    let ops: Vec<Operation> = docs.into_iter().map(Operation::UpsertFields).collect();
    let commits = committed(&receipt);
    model.record(&ops, &commits);
    let dir = tempfile::tempdir().unwrap();
    let options = ReaderOptions {
        storage_options: storage_options(),
        ..ReaderOptions::new(&storage.url, "imports", dir.path().join("mount"))
    };
    let reader = Reader::open(options).unwrap();
    assert_equals_model(&reader, &keys, &model.state());
    // And after the compactor folded it.
    for p in 0..2 {
        rt.block_on(force_snapshot(&storage, &config, p)).unwrap();
    }
    let options = ReaderOptions {
        storage_options: storage_options(),
        ..ReaderOptions::new(&storage.url, "imports", dir.path().join("fresh"))
    };
    let fresh = Reader::open(options).unwrap();
    assert_equals_model(&fresh, &keys, &model.state());
}

fn storage_options() -> ikv_core::StorageOptions {
    ikv_core::StorageOptions::default()
        .with("aws_endpoint", ikv_tests::s3_endpoint())
        .with("aws_region", "us-east-1")
        .with("aws_access_key_id", "test")
        .with("aws_secret_access_key", "test")
}

/// Import files under `p<part>/imports/` of the fixture's store.
fn import_files(f: &Fixture) -> Vec<String> {
    f.rt.block_on(ikv_tests::bucket_contents(&f.storage))
        .into_keys()
        .filter(|k| k.contains("/imports/"))
        .collect()
}

#[test]
fn retention_removes_import_files_once_no_delta_names_them_and_keeps_pending_ones() {
    let f = fixture();
    let writer = f.writer();
    let layout = StoreLayout::new(&f.storage.prefix, "imports").unwrap();
    let (batch, _) = random_rows(9, 60);
    // An abandoned import (runs, no commit), a committed and folded one, and one committed
    // after the newest snapshot.
    let abandoned = f.write_runs(std::slice::from_ref(&batch), Some("abandoned"));
    let folded = f.write_runs(std::slice::from_ref(&batch), Some("folded"));
    f.rt.block_on(commit(&writer, &f.storage, &folded, ImportMode::Upsert))
        .unwrap();
    f.snapshot_all();
    let pending = f.write_runs(std::slice::from_ref(&batch), Some("pending"));
    f.rt.block_on(commit(&writer, &f.storage, &pending, ImportMode::Upsert))
        .unwrap();
    let before = import_files(&f);
    for (name, written) in [
        ("abandoned", &abandoned),
        ("folded", &folded),
        ("pending", &pending),
    ] {
        assert!(
            before
                .iter()
                .any(|k| k.contains(&format!("/imports/{name}."))),
            "{name}'s runs are there: {before:?}"
        );
        assert!(!written.runs.is_empty());
    }
    let retention = ikv_snapshot::Retention {
        window: Duration::from_secs(60),
        keep_snapshots: 1,
    };
    let later = std::time::SystemTime::now() + Duration::from_secs(3600);
    // Within the window nothing goes.
    for p in 0..PARTITIONS {
        f.rt.block_on(ikv_snapshot::apply_retention(
            &f.storage,
            &layout,
            p,
            &retention,
            std::time::SystemTime::now(),
        ))
        .unwrap();
    }
    assert_eq!(import_files(&f), before);
    let mut deleted = 0;
    for p in 0..PARTITIONS {
        deleted +=
            f.rt.block_on(ikv_snapshot::apply_retention(
                &f.storage, &layout, p, &retention, later,
            ))
            .unwrap()
            .import_files_deleted;
    }
    let after = import_files(&f);
    assert!(deleted > 0);
    assert!(
        !after
            .iter()
            .any(|k| k.contains("/imports/abandoned") || k.contains("/imports/folded")),
        "abandoned and folded imports are gone: {after:?}"
    );
    for p in pending.runs.keys() {
        assert!(
            after
                .iter()
                .any(|k| k.contains(&format!("p{p:04}/imports/pending."))),
            "partition {p}'s pending run stays: {after:?}"
        );
    }
    // The pending import still reads, from a fresh reader, after retention.
    let reader = f.reader("after-retention");
    let status = reader.status();
    assert!(status.iter().all(|s| s.last_error.is_none()), "{status:?}");
}

#[test]
fn imports_into_a_store_with_a_partitioning_key_equal_the_model() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/bucket", dir.path().display());
    let storage = Storage::open(&url, &Default::default()).unwrap();
    let config = StoreConfig::new("regions", PRIMARY_KEY, Some("region"), 4).unwrap();
    rt.block_on(create_store(&storage, &config)).unwrap();
    let writer = rt
        .block_on(Writer::open(
            storage.clone(),
            "regions",
            WriterOptions::default(),
        ))
        .unwrap();
    let mut model = Model::new(PRIMARY_KEY, Some("region"), 4);
    let mut options = ReaderOptions::new(&url, "regions", dir.path().join("mount"));
    options.poll_interval = Duration::from_millis(10);
    let reader = Reader::open(options).unwrap();
    let mut work = Workload::partitioned(13, KEYS);
    let keys = work.all_keys();
    for _ in 0..10 {
        let ops = work.batch(6);
        rt.block_on(write_and_record(&writer, &mut model, &ops));
    }
    // One primary key under several regions: one document per partition, each imported.
    let mut rng = StdRng::seed_from_u64(5);
    for (round, mode) in [
        (0, ImportMode::Upsert),
        (1, ImportMode::Replace),
        (2, ImportMode::Upsert),
    ] {
        let (batch, docs) = random_rows(40 + round, 150);
        let regions: Vec<&str> = (0..batch.num_rows())
            .map(|_| ikv_tests::random_ops::REGIONS[rng.random_range(0..3)])
            .collect();
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(StringArray::from(regions.clone())));
        let mut fields: Vec<Field> = import_schema()
            .fields()
            .iter()
            .map(|f| (**f).clone())
            .collect();
        fields.push(Field::new("region", DataType::Utf8, false));
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        let docs: Vec<Document> = docs
            .into_iter()
            .zip(&regions)
            .map(|(d, r)| d.with("region", FieldValue::String((*r).to_owned())))
            .collect();
        let mut importer =
            Importer::with_config(storage.clone(), config.clone(), ImportOptions::default())
                .unwrap();
        rt.block_on(importer.add(&batch)).unwrap();
        let written = rt.block_on(importer.write()).unwrap();
        let receipt = rt
            .block_on(commit(&writer, &storage, &written, mode))
            .unwrap();
        let mut ops = Vec::new();
        if mode == ImportMode::Replace {
            ops.push(Operation::DropAllFields);
        }
        ops.extend(docs.into_iter().map(Operation::UpsertFields));
        let commits = committed(&receipt);
        model.record(&ops, &commits);
        let ops = work.batch(4);
        rt.block_on(write_and_record(&writer, &mut model, &ops));
        let tips: Vec<u64> = (0..4).map(|p| model.tip(p)).collect();
        wait_caught_up(&reader, &tips);
        assert_equals_model(&reader, &keys, &model.state());
    }
    for p in 0..4 {
        rt.block_on(force_snapshot(&storage, &config, p)).unwrap();
    }
    let mut options = ReaderOptions::new(&url, "regions", dir.path().join("fresh"));
    options.poll_interval = Duration::from_millis(10);
    let fresh = Reader::open(options).unwrap();
    assert_equals_model(&fresh, &keys, &model.state());
}

/// An import over values with expiries and event times replaces them whole (value, expiry and
/// event time), as upsert_fields after a deletion of the same fields would: a reader that
/// applied the import and one bootstrapped from the pass after it serve the same, after the
/// old expiries passed, and a later write with an older event time is made over it.
#[test]
fn an_import_replaces_timed_values_with_their_times() {
    let f = fixture();
    let clock = ikv_core::clock::ManualClock::new(ikv_core::clock::wall_time());
    let now_ms = || ikv_core::clock::epoch_ms(clock.as_ref());
    let writer =
        f.rt.block_on(Writer::open(
            f.storage.clone(),
            "imports",
            WriterOptions {
                clock: Some(clock.clone()),
                ..WriterOptions::default()
            },
        ))
        .unwrap();
    let mut model = Model::new(PRIMARY_KEY, None, PARTITIONS);
    let (_, written) = random_rows(71, 40);
    let timed: Vec<Operation> = written
        .iter()
        .cloned()
        .map(|document| Operation::UpsertFieldsWith {
            document,
            ttl_seconds: Some(60),
            event_time_us: Some(1_000),
        })
        .collect();
    let receipt = f.rt.block_on(writer.write(&timed)).unwrap();
    model.record_at(&timed, &ikv_tests::model_check::commits(&receipt), now_ms());
    f.snapshot_all();
    // The import, recorded as the deletion of its fields and their upsert without times.
    let (batch, imported) = random_rows(72, 40);
    let runs = f.write_runs(std::slice::from_ref(&batch), None);
    let receipt =
        f.rt.block_on(commit(&writer, &f.storage, &runs, ImportMode::Upsert))
            .unwrap();
    let mut ops = Vec::new();
    for doc in &imported {
        let names: Vec<String> = doc
            .fields()
            .map(|(n, _)| n.to_owned())
            .filter(|n| n != PRIMARY_KEY)
            .collect();
        if !names.is_empty() {
            ops.push(Operation::DeleteFields {
                document: doc.clone(),
                field_names: names,
            });
        }
        ops.push(Operation::UpsertFields(doc.clone()));
    }
    model.record_at(&ops, &committed(&receipt), now_ms());
    let reader_at = |mount: &str| {
        let mut o = ReaderOptions::new(&f.url, "imports", f.dir.path().join(mount));
        o.clock = clock.clone();
        Reader::open(o).unwrap()
    };
    // A reader applies the import over the timed values; then a pass folds it.
    let applied = reader_at("applied");
    f.snapshot_all();
    let bootstrapped = reader_at("bootstrapped");
    clock.advance(Duration::from_secs(120));
    model.judge_at(now_ms());
    let state = model.state();
    let keys: Vec<Vec<u8>> = imported
        .iter()
        .chain(&written)
        .map(|d| match d.get(PRIMARY_KEY) {
            Some(FieldValue::String(s)) => s.clone().into_bytes(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(
        state.iter().any(|p| !p.is_empty()),
        "the imported values outlive the old expiries"
    );
    assert_equals_model(&applied, &keys, &state);
    assert_equals_model(&bootstrapped, &keys, &state);
}

/// `rows` random rows with a time to live (null: the store's default; 0: never) and an event
/// time (null: none) each, and what the model records for them: per row, the key set to
/// never expire (an imported key never does), its fields deleted, then set with the row's
/// times (an import replaces values whole, times included).
fn timed_rows(seed: u64, rows: usize) -> (RecordBatch, Vec<Operation>) {
    let (batch, docs) = random_rows(seed, rows);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x7157);
    let ttls: Vec<Option<i32>> = (0..rows)
        .map(|_| [None, Some(0), Some(5), Some(60), Some(1200)][rng.random_range(0..5)])
        .collect();
    let events: Vec<Option<i64>> = (0..rows)
        .map(|_| rng.random_bool(0.8).then(|| rng.random_range(0..40)))
        .collect();
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| (**f).clone())
        .collect();
    fields.push(Field::new("_ikv_ttl_seconds", DataType::Int32, true));
    fields.push(Field::new("_ikv_event_time_us", DataType::Int64, true));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(arrow_array::Int32Array::from(ttls.clone())));
    columns.push(Arc::new(Int64Array::from(events.clone())));
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    let mut ops = Vec::new();
    for ((doc, ttl), event) in docs.into_iter().zip(ttls).zip(events) {
        let key = Document::new().with(PRIMARY_KEY, doc.get(PRIMARY_KEY).unwrap().clone());
        ops.push(Operation::UpsertFieldsWith {
            document: key.clone(),
            ttl_seconds: Some(0),
            event_time_us: None,
        });
        let names: Vec<String> = doc
            .fields()
            .map(|(n, _)| n.to_owned())
            .filter(|n| n != PRIMARY_KEY)
            .collect();
        if !names.is_empty() {
            ops.push(Operation::DeleteFields {
                document: key,
                field_names: names,
            });
        }
        ops.push(Operation::UpsertFieldsWith {
            document: doc,
            ttl_seconds: ttl.map(|t| t as u64),
            event_time_us: event,
        });
    }
    (batch, ops)
}

/// Imported rows with times to live and event times (and a store default): readers that
/// applied the import, readers bootstrapped from the pass after it, and later writes weighed
/// against the imported event times all agree with the model as the clock moves past the
/// expiries.
#[test]
fn imported_rows_carry_their_times_to_live_and_event_times() {
    let ikv_tests::fixture::LocalStore {
        dir,
        url,
        storage,
        config,
        rt,
    } = ikv_tests::fixture::local_store("imports", PRIMARY_KEY, None, PARTITIONS);
    // The store gets a default time to live: recreated under another name with one.
    let config = StoreConfig {
        store_name: "timed".into(),
        ..config
    }
    .with_ttl_seconds(Some(30))
    .unwrap();
    rt.block_on(create_store(&storage, &config)).unwrap();
    let clock = ikv_core::clock::ManualClock::new(ikv_core::clock::wall_time());
    let now_ms = || ikv_core::clock::epoch_ms(clock.as_ref());
    let writer = rt
        .block_on(Writer::open(
            storage.clone(),
            "timed",
            WriterOptions {
                clock: Some(clock.clone()),
                ..WriterOptions::default()
            },
        ))
        .unwrap();
    let mut model = Model::new(PRIMARY_KEY, None, PARTITIONS).with_default_ttl(Some(30));
    let mut work = Workload::new(73, KEYS).with_ttls().with_event_times();
    let write = |model: &mut Model, work: &mut Workload| {
        let ops = work.keyed_batch(10);
        let receipt = rt.block_on(writer.write(&ops)).unwrap();
        model.record_at(&ops, &ikv_tests::model_check::commits(&receipt), now_ms());
    };
    for _ in 0..20 {
        write(&mut model, &mut work);
    }
    let snapshot_all = || {
        for p in 0..PARTITIONS {
            rt.block_on(force_snapshot(&storage, &config, p)).unwrap();
        }
    };
    snapshot_all();
    let (batch, ops) = timed_rows(74, 80);
    let options = ImportOptions {
        clock: Some(clock.clone()),
        ..ImportOptions::default()
    };
    let mut importer = Importer::with_config(storage.clone(), config.clone(), options).unwrap();
    rt.block_on(importer.add(&batch)).unwrap();
    let runs = rt.block_on(importer.write()).unwrap();
    let receipt = rt
        .block_on(commit(&writer, &storage, &runs, ImportMode::Upsert))
        .unwrap();
    model.record_at(&ops, &committed(&receipt), now_ms());
    let reader_at = |mount: &str| {
        let mut o = ReaderOptions::new(&url, "timed", dir.path().join(mount));
        o.clock = clock.clone();
        Reader::open(o).unwrap()
    };
    let keys = Workload::new(0, KEYS).all_keys();
    let check = |model: &mut Model, readers: &[&Reader]| {
        model.judge_at(now_ms());
        let state = model.state();
        for r in readers {
            assert_equals_model(r, &keys, &state);
        }
    };
    let applied = reader_at("applied");
    snapshot_all();
    let bootstrapped = reader_at("bootstrapped");
    check(&mut model, &[&applied, &bootstrapped]);
    // Later writes, some with event times older than the imported ones (ignored), some without
    // any (applied by commit order), then a pass.
    let mut untimed = Workload::new(75, KEYS).with_ttls();
    for _ in 0..10 {
        write(&mut model, &mut work);
        write(&mut model, &mut untimed);
    }
    snapshot_all();
    for (step, secs) in [0u64, 10, 100, 2000].into_iter().enumerate() {
        clock.advance(Duration::from_secs(secs));
        let fresh = reader_at(&format!("fresh-{step}"));
        check(&mut model, &[&fresh]);
    }
}
