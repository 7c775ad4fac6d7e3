//! Writing a snapshot's Parquet files: zstd, bounded row groups, split at a target size.

use std::sync::Arc;

use arrow_schema::SchemaRef;
use futures::future::BoxFuture;
use ikv_core::checksum::{BlockHasher, DEFAULT_BLOCK_SIZE};
use ikv_core::{Error, Result, Storage};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::AsyncArrowWriter;
use parquet::arrow::async_writer::AsyncFileWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::manifest::{SnapshotColumn, SnapshotFile};
use ikv_core::ValueRef;

use crate::rows::{BatchBuilder, SnapshotDoc, schema};

/// Sizes of what a snapshot writes.
#[derive(Debug, Clone)]
pub struct FileLayout {
    /// Rows per Parquet row group: small enough for readers to stream.
    pub row_group_rows: usize,
    /// A new file starts once a file has this many bytes.
    pub target_file_bytes: usize,
}

impl Default for FileLayout {
    fn default() -> Self {
        FileLayout {
            row_group_rows: 64 * 1024,
            target_file_bytes: 128 << 20,
        }
    }
}

fn parquet_error(what: &str, e: impl ToString) -> Error {
    Error::StorageMessage {
        context: format!("writing {what}"),
        message: e.to_string(),
    }
}

/// The upload of one Parquet file, computing its block checksums from the bytes as they go.
struct HashingSink {
    inner: BufWriter,
    hasher: Arc<std::sync::Mutex<BlockHasher>>,
}

impl AsyncFileWriter for HashingSink {
    fn write(&mut self, bs: bytes::Bytes) -> BoxFuture<'_, parquet::errors::Result<()>> {
        self.hasher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .update(&bs);
        AsyncFileWriter::write(&mut self.inner, bs)
    }

    fn complete(&mut self) -> BoxFuture<'_, parquet::errors::Result<()>> {
        AsyncFileWriter::complete(&mut self.inner)
    }
}

type OpenFile = (
    AsyncArrowWriter<HashingSink>,
    String,
    u64,
    Arc<std::sync::Mutex<BlockHasher>>,
);

/// Writes documents, in key order, into `<run dir>/part-NNNNN.parquet` files.
pub struct SnapshotWriter {
    storage: Storage,
    run_dir: Path,
    run_name: String,
    columns: Vec<SnapshotColumn>,
    schema: SchemaRef,
    layout: FileLayout,
    properties: WriterProperties,
    current: Option<OpenFile>,
    pending: BatchBuilder,
    files: Vec<SnapshotFile>,
    rows: u64,
}

impl SnapshotWriter {
    pub fn new(
        storage: Storage,
        snapshot_dir: &Path,
        run_name: &str,
        columns: Vec<SnapshotColumn>,
        layout: FileLayout,
    ) -> Result<Self> {
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(3).map_err(|e| parquet_error("snapshot", e))?,
            ))
            .set_max_row_group_row_count(Some(layout.row_group_rows))
            // Keys are unique and feature values mostly are: dictionary encoding would hash
            // every value only to fall back to plain pages; zstd takes the repetition.
            .set_dictionary_enabled(false)
            .build();
        Ok(SnapshotWriter {
            storage,
            run_dir: snapshot_dir.clone().join(run_name),
            run_name: run_name.to_owned(),
            schema: schema(&columns),
            pending: BatchBuilder::new(&columns),
            columns,
            layout,
            properties,
            current: None,
            files: Vec::new(),
            rows: 0,
        })
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub async fn push(&mut self, doc: SnapshotDoc) -> Result<()> {
        self.pending.push_doc(&self.columns, &doc.0, &doc.1);
        self.flush_if_full().await
    }

    /// Appends a row given column by column (`values[i]` for column `i` of
    /// [`SnapshotWriter::columns`]), in key order after every row before.
    pub async fn push_values(&mut self, key: &[u8], values: &[Option<ValueRef<'_>>]) -> Result<()> {
        self.pending.push_values(key, values);
        self.flush_if_full().await
    }

    async fn flush_if_full(&mut self) -> Result<()> {
        // Flushing at row-group granularity lets files split close to the target size.
        if self.pending.len() >= self.layout.row_group_rows.clamp(1, 8192) {
            self.flush_pending().await?;
        }
        Ok(())
    }

    async fn flush_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = self.pending.finish(&self.schema)?;
        self.write_batch(&batch).await
    }

    /// Writes rows already in the snapshot's columns (its [`SnapshotWriter::schema`]), in
    /// key order after every row pushed before: the bulk importer's path, which sorts whole
    /// columns rather than building documents. Large batches are written a row group at a
    /// time so that files still split near their target size.
    pub async fn push_batch(&mut self, batch: &arrow_array::RecordBatch) -> Result<()> {
        self.flush_pending().await?;
        if batch.schema().fields() != self.schema.fields() {
            return Err(parquet_error(
                "snapshot",
                "a batch's columns differ from the snapshot's",
            ));
        }
        let step = self.layout.row_group_rows.max(1);
        let mut offset = 0;
        while offset < batch.num_rows() {
            let len = step.min(batch.num_rows() - offset);
            self.write_batch(&batch.slice(offset, len)).await?;
            offset += len;
        }
        Ok(())
    }

    async fn write_batch(&mut self, batch: &arrow_array::RecordBatch) -> Result<()> {
        if self.current.is_none() {
            let name = format!("part-{:05}.parquet", self.files.len());
            let path = self.run_dir.clone().join(name.as_str());
            let hasher = Arc::new(std::sync::Mutex::new(BlockHasher::new(DEFAULT_BLOCK_SIZE)));
            let sink = HashingSink {
                inner: BufWriter::new(self.storage.store.clone(), path),
                hasher: hasher.clone(),
            };
            let writer =
                AsyncArrowWriter::try_new(sink, self.schema.clone(), Some(self.properties.clone()))
                    .map_err(|e| parquet_error(&name, e))?;
            self.current = Some((writer, name, 0, hasher));
        }
        let n = batch.num_rows() as u64;
        self.rows += n;
        let Some((writer, name, rows, _)) = self.current.as_mut() else {
            return Ok(());
        };
        writer
            .write(batch)
            .await
            .map_err(|e| parquet_error(name, e))?;
        *rows += n;
        if writer.bytes_written() + writer.in_progress_size() >= self.layout.target_file_bytes {
            self.close_file().await?;
        }
        Ok(())
    }

    async fn close_file(&mut self) -> Result<()> {
        if let Some((writer, name, rows, hasher)) = self.current.take() {
            let mut writer = writer;
            writer.finish().await.map_err(|e| parquet_error(&name, e))?;
            // finish() also completes the upload (single PUT or multipart completion).
            let bytes = writer.bytes_written() as u64;
            drop(writer);
            let checksums = match Arc::try_unwrap(hasher) {
                Ok(hasher) => hasher
                    .into_inner()
                    .unwrap_or_else(|p| p.into_inner())
                    .finish(),
                Err(_) => return Err(parquet_error(&name, "the upload still holds its checksums")),
            };
            if checksums.size != bytes {
                return Err(parquet_error(
                    &name,
                    format!("{} bytes checksummed but {bytes} written", checksums.size),
                ));
            }
            ikv_core::failpoint!("snapshot.file_written");
            self.files.push(SnapshotFile {
                path: format!("{}/{name}", self.run_name),
                rows,
                bytes,
                checksums: Some(checksums),
            });
        }
        Ok(())
    }

    /// Flushes and closes everything; returns the files written.
    pub async fn finish(mut self) -> Result<(Vec<SnapshotFile>, Vec<SnapshotColumn>)> {
        self.flush_pending().await?;
        self.close_file().await?;
        Ok((self.files, self.columns))
    }

    pub fn columns(&self) -> &[SnapshotColumn] {
        &self.columns
    }

    pub fn schema(&self) -> Arc<arrow_schema::Schema> {
        self.schema.clone()
    }
}
