//! Bad import input is refused by name, before anything is written: a missing or mistyped key
//! column, null, empty or oversized keys, unsupported column types, bad import ids; and an
//! import whose run upload fails midway refuses to go on.
#![allow(clippy::disallowed_methods)] // tests and benches run real processes, sockets and timings on the wall clock

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, BinaryArray, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use ikv_core::ErrorKind;
use ikv_import::{ImportOptions, Importer};
use ikv_tests::fixture::local_store;
use ikv_tests::random_ops::PRIMARY_KEY;

fn one_column_batch(name: &str, column: ArrayRef) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new(
        name,
        column.data_type().clone(),
        true,
    )]));
    RecordBatch::try_new(schema, vec![column]).unwrap()
}

fn with_key(keys: Vec<Option<&str>>, extra: Option<(&str, ArrayRef)>) -> RecordBatch {
    let mut fields = vec![Field::new(PRIMARY_KEY, DataType::Utf8, true)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from(keys))];
    if let Some((name, column)) = extra {
        fields.push(Field::new(name, column.data_type().clone(), true));
        columns.push(column);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

#[test]
fn bad_input_is_refused_by_name_before_anything_is_written() {
    let f = local_store("imports", PRIMARY_KEY, None, 4);
    let long = "k".repeat(1025);
    let cases: Vec<(RecordBatch, &str)> = vec![
        (
            one_column_batch("user", Arc::new(StringArray::from(vec!["x"]))),
            "no column \"id\"",
        ),
        (
            one_column_batch(PRIMARY_KEY, Arc::new(Int64Array::from(vec![1]))),
            "a key must be a string or binary column",
        ),
        (
            with_key(vec![Some("a"), None], None),
            "row 1: the key column \"id\" is null",
        ),
        (
            with_key(vec![Some("")], None),
            "row 0: the key column \"id\" is empty",
        ),
        (
            with_key(vec![Some(long.as_str())], None),
            "holds 1025 bytes",
        ),
        (
            with_key(
                vec![Some("a")],
                Some((
                    "day",
                    Arc::new(arrow_array::Date32Array::from(vec![1])) as ArrayRef,
                )),
            ),
            "column \"day\" has type Date32, which ikv cannot store",
        ),
        (
            with_key(
                vec![Some("a")],
                Some((
                    "_ikv_key",
                    Arc::new(StringArray::from(vec!["x"])) as ArrayRef,
                )),
            ),
            "reserved",
        ),
        (
            with_key(
                vec![Some("a")],
                Some((
                    "big",
                    Arc::new(arrow_array::UInt64Array::from(vec![u64::MAX])) as ArrayRef,
                )),
            ),
            "more than an int64 can",
        ),
        (
            with_key(
                vec![Some("a")],
                Some((
                    "blob",
                    Arc::new(BinaryArray::from_iter_values([vec![7u8; (1 << 20) + 1]])) as ArrayRef,
                )),
            ),
            "more than 1048576",
        ),
    ];
    for (batch, expected) in cases {
        let mut importer = Importer::with_config(
            f.storage.clone(),
            f.config.clone(),
            ImportOptions::default(),
        )
        .unwrap();
        let err = f.rt.block_on(importer.add(&batch)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(
            err.to_string().contains(expected),
            "{err} lacks {expected:?}"
        );
    }
    // A batch whose columns change midway is refused; what came before stays.
    let mut importer = Importer::with_config(
        f.storage.clone(),
        f.config.clone(),
        ImportOptions::default(),
    )
    .unwrap();
    f.rt.block_on(importer.add(&with_key(vec![Some("a")], None)))
        .unwrap();
    let err =
        f.rt.block_on(importer.add(&with_key(
            vec![Some("b")],
            Some(("a", Arc::new(Int64Array::from(vec![1])) as ArrayRef)),
        )))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("differ from the import's first batch"),
        "{err}"
    );
    assert_eq!(importer.rows(), 1);
    // Bad import ids.
    for id in ["", "../x", "a/b", ".hidden", &"x".repeat(65)] {
        let options = ImportOptions {
            import_id: Some(id.to_owned()),
            ..ImportOptions::default()
        };
        let err = Importer::with_config(f.storage.clone(), f.config.clone(), options)
            .err()
            .unwrap();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{id:?}: {err}");
    }
    let contents = f.rt.block_on(ikv_tests::bucket_contents(&f.storage));
    assert_eq!(
        contents.keys().cloned().collect::<Vec<_>>(),
        vec!["imports/store.json".to_owned()],
        "nothing but the store's configuration"
    );
}

/// Rows of `n` distinct keys starting at `from`, each with a 200-byte value.
fn padded_rows(from: usize, n: usize) -> RecordBatch {
    let keys: Vec<String> = (from..from + n).map(|i| format!("key-{i:08}")).collect();
    let pad = "p".repeat(200);
    with_key(
        keys.iter().map(|k| Some(k.as_str())).collect(),
        Some((
            "pad",
            Arc::new(StringArray::from(vec![pad.as_str(); n])) as ArrayRef,
        )),
    )
}

/// When writing runs fails while an import goes on (a storage error in the middle of a
/// flush), the rows gathered for that flush are gone: the importer says so on every later
/// call rather than commit part of the input, and a retry with the same id imports all.
#[tokio::test]
async fn a_failed_flush_stops_the_import_and_a_retry_imports_everything() {
    use ikv_core::{Storage, StoreConfig};
    use ikv_import::{ImportMode, MIN_MEMORY_BUDGET, MemoryBudget, commit};
    use ikv_tests::faulty::{FaultyStore, PutFault};
    use object_store::memory::InMemory;
    use object_store::path::Path;

    let faulty = Arc::new(FaultyStore::new(Arc::new(InMemory::new())));
    let storage = Storage::new(faulty.clone(), Path::from("root"), "memory://faulty");
    let config = StoreConfig::new("budget", PRIMARY_KEY, None, 2).unwrap();
    ikv_core::bucket::create_store(&storage, &config)
        .await
        .unwrap();
    let options = || ImportOptions {
        import_id: Some("day-1".into()),
        memory_budget: Some(MemoryBudget::new(MIN_MEMORY_BUDGET).unwrap()),
        ..ImportOptions::default()
    };
    faulty.inject("imports/day-1.", PutFault::FailBeforeLanding);
    let mut importer = Importer::with_config(storage.clone(), config.clone(), options()).unwrap();
    let mut failed = None;
    for i in 0..40 {
        if let Err(e) = importer.add(&padded_rows(i * 500, 500)).await {
            failed = Some(e);
            break;
        }
    }
    let failed = failed.expect("a flush met the injected failure");
    assert!(failed.to_string().contains("injected"), "{failed}");
    let again = importer.add(&padded_rows(0, 10)).await.unwrap_err();
    assert!(
        again
            .to_string()
            .contains("failed earlier; start the import again"),
        "{again}"
    );
    assert!(importer.write().await.is_err(), "nothing to commit");

    let mut retry = Importer::with_config(storage.clone(), config.clone(), options()).unwrap();
    for i in 0..40 {
        retry.add(&padded_rows(i * 500, 500)).await.unwrap();
    }
    let written = retry.write().await.unwrap();
    assert!(
        written.runs.values().all(|r| r.len() > 1),
        "several flushes"
    );
    let writer = ikv_writer::Writer::open(storage.clone(), "budget", Default::default())
        .await
        .unwrap();
    let receipt = commit(&writer, &storage, &written, ImportMode::Upsert)
        .await
        .unwrap();
    assert_eq!((receipt.rows, receipt.documents), (20_000, 20_000));
}
