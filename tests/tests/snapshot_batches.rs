//! A snapshot stream (a reader's bootstrap, the compactor's fold) decodes batches bounded by
//! bytes, not only rows: with 100 KB values a batch holds at most 8 MiB of them, so the memory
//! a bootstrap holds does not grow with the size of the values. Counted in rows, not measured.

use ikv_core::bucket::create_store;
use ikv_core::{Document, FieldValue, Operation, Storage, StoreConfig, StoreLayout};
use ikv_snapshot_format::Manifest;
use ikv_snapshot_format::read::{READ_BATCH_BYTES, SnapshotStream};
use ikv_writer::{Writer, WriterOptions};

#[tokio::test]
async fn batches_of_large_values_stay_within_the_byte_budget() {
    let storage = Storage::memory();
    let config = StoreConfig::new("s", "id", None, 1).unwrap();
    create_store(&storage, &config).await.unwrap();
    let writer = Writer::open(storage.clone(), "s", WriterOptions::default())
        .await
        .unwrap();
    let value = 100_000usize;
    let docs = 300;
    for chunk in 0..docs / 10 {
        let batch: Vec<Operation> = (0..10)
            .map(|i| {
                let n = chunk * 10 + i;
                Operation::UpsertFields(
                    Document::new()
                        .with("id", FieldValue::String(format!("k{n:05}")))
                        .with(
                            "blob",
                            FieldValue::String(format!("{n:05}{}", "x".repeat(value - 5))),
                        ),
                )
            })
            .collect();
        writer.write(&batch).await.unwrap();
    }
    ikv_tests::force_snapshot(&storage, &config, 0)
        .await
        .unwrap();
    let layout = StoreLayout::new(&storage.prefix, "s").unwrap();
    let manifest = Manifest::load_newest(&storage, &layout, 0)
        .await
        .unwrap()
        .unwrap();
    let mut stream = SnapshotStream::new(storage.clone(), layout, manifest);
    let (mut rows, mut batches, mut largest) = (0, 0, 0);
    while let Some(batch) = stream.next_record_batch().await.unwrap() {
        rows += batch.num_rows();
        batches += 1;
        largest = largest.max(batch.num_rows());
    }
    assert_eq!(rows, docs);
    let fits = (READ_BATCH_BYTES / value as u64) as usize;
    assert!(
        largest <= fits,
        "a batch of {largest} rows of {value} bytes is over {READ_BATCH_BYTES} bytes"
    );
    assert!(batches >= docs.div_ceil(fits), "{batches} batches");
}
