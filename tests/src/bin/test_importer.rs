//! A process that bulk-imports generated rows, for crash tests:
//! `ikv-test-importer STORAGE_URL STORE IMPORT_ID ROWS ROUND`. Row `i` is document
//! `imp{i:06}` with `a = "i-{round}-{i}"` and `b = i * 3 + round` ([`import_row`] in the
//! tests builds the same). Prints `done` once committed; exits 3 with the error on stderr.

use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch, StringArray};
use ikv_core::Storage;
use ikv_import::{ImportMode, ImportOptions, Importer, commit};
use ikv_writer::{Writer, WriterOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: ikv-test-importer STORAGE_URL STORE IMPORT_ID ROWS ROUND");
        std::process::exit(2);
    }
    let rows: usize = args[4].parse().unwrap_or(0);
    let round: i64 = args[5].parse().unwrap_or(0);
    let rt = ikv_tests::runtime();
    let result = rt.block_on(async {
        let storage =
            ikv_tests::unordered::shuffled_if_asked(Storage::open(&args[1], &Default::default())?);
        let options = ImportOptions {
            import_id: Some(args[3].clone()),
            ..ImportOptions::default()
        };
        let mut importer = Importer::open(storage.clone(), &args[2], options).await?;
        let batch = RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|i| format!("imp{i:06}")),
                )) as _,
            ),
            (
                "a",
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|i| format!("i-{round}-{i}")),
                )) as _,
            ),
            (
                "b",
                Arc::new(Int64Array::from_iter_values(
                    (0..rows).map(|i| i as i64 * 3 + round),
                )) as _,
            ),
        ])
        .map_err(|e| ikv_core::Error::InvalidImport(e.to_string()))?;
        importer.add(&batch).await?;
        let written = importer.write().await?;
        let writer = Writer::open(storage.clone(), &args[2], WriterOptions::default()).await?;
        commit(&writer, &storage, &written, ImportMode::Upsert).await
    });
    match result {
        Ok(_) => println!("done"),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(3);
        }
    }
}
