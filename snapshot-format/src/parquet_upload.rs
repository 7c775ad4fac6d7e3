//! One Parquet file of a snapshot, uploaded while it is written. A row group is encoded
//! column by column on the blocking pool ([`ParquetUpload::encode`]) while the caller gathers
//! the next one; encoded row groups are appended in order, and their bytes checksummed and
//! uploaded as they leave the Parquet writer. On two cores this keeps both busy: one merging
//! documents, the other compressing columns.
//!
//! Invariant: at most one row group is encoded per file at a time, and it is appended before
//! the next is started (`create_column_writers` is given the index it will have).

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use ikv_core::bucket::{self, Path, Upload};
use ikv_core::checksum::{BlockChecksums, BlockHasher, DEFAULT_BLOCK_SIZE};
use ikv_core::{Error, Result, Storage};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{ArrowColumnChunk, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

fn parquet_error(what: &str, e: impl ToString) -> Error {
    Error::StorageMessage {
        context: format!("writing {what}"),
        message: e.to_string(),
    }
}

/// Bytes the Parquet writer produced and the upload has not taken yet.
#[derive(Clone, Default)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A row group being encoded: one blocking task per column.
pub struct Encoding {
    rows: u64,
    columns: Vec<JoinHandle<parquet::errors::Result<ArrowColumnChunk>>>,
}

/// What a finished file is: its name, rows, bytes and block checksums.
pub struct UploadedFile {
    pub name: String,
    pub rows: u64,
    pub bytes: u64,
    pub checksums: BlockChecksums,
}

/// A Parquet file being written and uploaded.
pub struct ParquetUpload {
    name: String,
    schema: SchemaRef,
    writer: SerializedFileWriter<SharedBuffer>,
    factory: ArrowRowGroupWriterFactory,
    buffer: SharedBuffer,
    upload: Upload,
    hasher: BlockHasher,
    rows: u64,
    bytes: u64,
    row_groups: usize,
}

impl ParquetUpload {
    pub fn create(
        storage: &Storage,
        path: Path,
        name: &str,
        schema: SchemaRef,
        properties: WriterProperties,
    ) -> Result<ParquetUpload> {
        let buffer = SharedBuffer::default();
        // Through ArrowWriter so that the file carries the Arrow schema as readers expect.
        let (writer, factory) =
            ArrowWriter::try_new(buffer.clone(), schema.clone(), Some(properties))
                .and_then(ArrowWriter::into_serialized_writer)
                .map_err(|e| parquet_error(name, e))?;
        Ok(ParquetUpload {
            name: name.to_owned(),
            schema,
            writer,
            factory,
            buffer,
            upload: bucket::upload(storage, path),
            hasher: BlockHasher::new(DEFAULT_BLOCK_SIZE),
            rows: 0,
            bytes: 0,
            row_groups: 0,
        })
    }

    /// Bytes uploaded (or handed to the upload) so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Starts encoding one row group made of `batches` (in the file's schema), in order.
    pub fn encode(&self, batches: Vec<RecordBatch>) -> Result<Encoding> {
        let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        let writers = self
            .factory
            .create_column_writers(self.row_groups)
            .map_err(|e| parquet_error(&self.name, e))?;
        // A flat schema: column i is leaf i, one writer per field.
        if writers.len() != self.schema.fields().len() {
            return Err(parquet_error(
                &self.name,
                "the snapshot schema is not flat (a column writer per field)",
            ));
        }
        let batches = Arc::new(batches);
        let columns = writers
            .into_iter()
            .zip(self.schema.fields().iter().cloned())
            .enumerate()
            .map(|(i, (mut writer, field))| {
                let batches = Arc::clone(&batches);
                tokio::task::spawn_blocking(move || {
                    for batch in batches.iter() {
                        let column = batch.columns().get(i).ok_or_else(|| {
                            ParquetError::General(format!("a batch has no column {i}"))
                        })?;
                        for leaf in compute_leaves(&field, column)? {
                            writer.write(&leaf)?;
                        }
                    }
                    writer.close()
                })
            })
            .collect();
        Ok(Encoding { rows, columns })
    }

    /// Appends an encoded row group and uploads its bytes.
    pub async fn append(&mut self, encoding: Encoding) -> Result<()> {
        let mut chunks = Vec::with_capacity(encoding.columns.len());
        for column in encoding.columns {
            let chunk = column
                .await
                .map_err(|e| parquet_error(&self.name, e))?
                .map_err(|e| parquet_error(&self.name, e))?;
            chunks.push(chunk);
        }
        let mut row_group = self
            .writer
            .next_row_group()
            .map_err(|e| parquet_error(&self.name, e))?;
        for chunk in chunks {
            chunk
                .append_to_row_group(&mut row_group)
                .map_err(|e| parquet_error(&self.name, e))?;
        }
        row_group
            .close()
            .map_err(|e| parquet_error(&self.name, e))?;
        self.writer
            .flush()
            .map_err(|e| parquet_error(&self.name, e))?;
        self.row_groups += 1;
        self.rows += encoding.rows;
        self.upload_pending().await
    }

    async fn upload_pending(&mut self) -> Result<()> {
        let bytes = self.buffer.take();
        if bytes.is_empty() {
            return Ok(());
        }
        self.hasher.update(&bytes);
        self.bytes += bytes.len() as u64;
        self.upload
            .put(Bytes::from(bytes))
            .await
            .map_err(|e| parquet_error(&self.name, e))
    }

    /// Writes the footer and completes the upload (a single PUT or the multipart completion).
    pub async fn finish(mut self) -> Result<UploadedFile> {
        self.writer
            .finish()
            .map_err(|e| parquet_error(&self.name, e))?;
        self.upload_pending().await?;
        self.upload
            .shutdown()
            .await
            .map_err(|e| parquet_error(&self.name, e))?;
        let checksums = self.hasher.finish();
        if checksums.size != self.bytes {
            return Err(parquet_error(
                &self.name,
                format!(
                    "{} bytes checksummed but {} written",
                    checksums.size, self.bytes
                ),
            ));
        }
        Ok(UploadedFile {
            name: self.name,
            rows: self.rows,
            bytes: self.bytes,
            checksums,
        })
    }
}
