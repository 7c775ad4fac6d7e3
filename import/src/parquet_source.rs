//! Reading the Parquet data an import loads: a local file or directory, or an object-store
//! URL (`s3://bucket/path`, `file:///dir`) naming one object or a prefix of `.parquet` objects.
//! Files are read in name order, a record batch at a time; the objects of a prefix are read
//! with ranged GETs a row group at a time, so an import's memory does not follow the size of
//! its source objects (a URL naming one object fetches it whole).

use std::path::{Path as FsPath, PathBuf};

use arrow_array::RecordBatch;
use bytes::Bytes;
use futures::StreamExt;
use ikv_core::{Error, Result, Storage, StorageOptions};
use ikv_snapshot_format::object_reader::ObjectReader;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Rows per batch read from a file.
const BATCH_ROWS: usize = 64 * 1024;

fn parquet_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::InvalidImport(format!("{what} is not a readable Parquet file: {e}"))
}

/// Where an import's Parquet data is.
#[derive(Debug, Clone)]
pub enum ParquetSource {
    /// Local files, in name order.
    Files(Vec<PathBuf>),
    /// Objects of a storage root (opened on the URL), by key, in key order, with their sizes
    /// where a listing gave them.
    Objects(Storage, Vec<(ikv_core::bucket::Path, Option<u64>)>),
}

impl ParquetSource {
    /// Resolves `location`: a URL with a scheme (`s3://`, `file://`) or a local path; a
    /// directory or prefix means every `.parquet` file below it.
    pub async fn resolve(location: &str, options: &StorageOptions) -> Result<ParquetSource> {
        // A file:// URL is a local path: read as one, with its errors (a storage root on a
        // file that is not there answers no better than "not supported").
        let location = location.strip_prefix("file://").unwrap_or(location);
        if location.contains("://") {
            let storage = Storage::open(location, options)?;
            let listed = ikv_core::bucket::list(&storage, &storage.prefix).await?;
            let mut keys: Vec<_> = listed
                .into_iter()
                .filter(|m| m.location.as_ref().ends_with(".parquet"))
                .map(|m| (m.location, Some(m.size)))
                .collect();
            keys.sort();
            if keys.is_empty() {
                // Not a prefix: the URL names one object.
                keys.push((storage.prefix.clone(), None));
            }
            return Ok(ParquetSource::Objects(storage, keys));
        }
        let path = FsPath::new(location);
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::InvalidImport(format!("cannot read {location}: {e}")))?;
        if meta.is_file() {
            return Ok(ParquetSource::Files(vec![path.to_path_buf()]));
        }
        let mut files = Vec::new();
        let mut pending = vec![path.to_path_buf()];
        while let Some(dir) = pending.pop() {
            let entries = std::fs::read_dir(&dir)
                .map_err(|e| Error::InvalidImport(format!("cannot list {}: {e}", dir.display())))?;
            for entry in entries.flatten() {
                let p = entry.path();
                if p.is_dir() {
                    pending.push(p);
                } else if p.extension().is_some_and(|e| e == "parquet") {
                    files.push(p);
                }
            }
        }
        if files.is_empty() {
            return Err(Error::InvalidImport(format!(
                "{location} holds no .parquet files"
            )));
        }
        files.sort();
        Ok(ParquetSource::Files(files))
    }

    /// Calls `each` with every record batch, file after file. Decoding a local file blocks the
    /// calling thread a batch at a time.
    pub async fn for_each_batch(
        &self,
        mut each: impl AsyncFnMut(RecordBatch) -> Result<()>,
    ) -> Result<()> {
        match self {
            ParquetSource::Files(files) => {
                for file in files {
                    let what = file.display().to_string();
                    let f = std::fs::File::open(file)
                        .map_err(|e| Error::InvalidImport(format!("cannot open {what}: {e}")))?;
                    for batch in batches(f, &what)? {
                        each(batch.map_err(|e| parquet_error(&what, e))?).await?;
                    }
                }
            }
            ParquetSource::Objects(storage, keys) => {
                for (key, listed_size) in keys {
                    let what = format!("{}/{key}", storage.url.trim_end_matches('/'));
                    let Some(size) = listed_size else {
                        // A URL naming one object: fetched whole, as its size is not listed
                        // (and a local root naming a file answers no HEAD).
                        let bytes: Bytes =
                            ikv_core::bucket::read(storage, key).await?.ok_or_else(|| {
                                Error::InvalidImport(format!("{what} does not exist"))
                            })?;
                        for batch in batches(bytes, &what)? {
                            each(batch.map_err(|e| parquet_error(&what, e))?).await?;
                        }
                        continue;
                    };
                    let size = *size;
                    let reader = ObjectReader::new(storage.clone(), key.clone(), size, None)?;
                    let mut stream = ParquetRecordBatchStreamBuilder::new(reader)
                        .await
                        .map_err(|e| parquet_error(&what, e))?
                        .with_batch_size(BATCH_ROWS)
                        .build()
                        .map_err(|e| parquet_error(&what, e))?;
                    while let Some(batch) = stream.next().await {
                        each(batch.map_err(|e| parquet_error(&what, e))?).await?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn batches<R: parquet::file::reader::ChunkReader + 'static>(
    reader: R,
    what: &str,
) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader> {
    ParquetRecordBatchReaderBuilder::try_new(reader)
        .map_err(|e| parquet_error(what, e))?
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| parquet_error(what, e))
}
