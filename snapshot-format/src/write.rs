//! Writing a snapshot's Parquet files: zstd, bounded row groups, split at a target size.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use ikv_core::bucket::Path;
use ikv_core::{Error, Result, Storage, ValueRef};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::manifest::{SnapshotColumn, SnapshotFile};
use crate::parquet_upload::{Encoding, ParquetUpload};
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

/// Writes documents, in key order, into `<run dir>/part-NNNNN.parquet` files. Rows are
/// gathered into row groups; a row group is encoded while the next is gathered
/// (`parquet_upload.rs`).
pub struct SnapshotWriter {
    storage: Storage,
    run_dir: Path,
    run_name: String,
    columns: Vec<SnapshotColumn>,
    schema: SchemaRef,
    layout: FileLayout,
    properties: WriterProperties,
    current: Option<ParquetUpload>,
    /// The row group being encoded, for the current file.
    encoding: Option<Encoding>,
    /// Rows of the next row group.
    group: Vec<RecordBatch>,
    group_rows: usize,
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
            encoding: None,
            group: Vec::new(),
            group_rows: 0,
            files: Vec::new(),
            rows: 0,
        })
    }

    /// A writer of a layer's files (`layer.rs`): its batches, built by a
    /// [`crate::layer::LayerBatchBuilder`], go through [`SnapshotWriter::push_batch`].
    pub fn new_layer(
        storage: Storage,
        snapshot_dir: &Path,
        run_name: &str,
        columns: Vec<SnapshotColumn>,
        layout: FileLayout,
    ) -> Result<Self> {
        let mut writer = SnapshotWriter::new(storage, snapshot_dir, run_name, columns, layout)?;
        writer.schema = crate::layer::layer_schema(&writer.columns);
        Ok(writer)
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
        // Built rows join the row group being gathered in batches of at most 8,192.
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
    pub async fn push_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        self.flush_pending().await?;
        if batch.schema().fields() != self.schema.fields() {
            return Err(parquet_error(
                "snapshot",
                "a batch's columns differ from the snapshot's",
            ));
        }
        self.write_batch(batch).await
    }

    /// Adds rows to the row group being gathered, sealing it whenever it is full.
    async fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let group_rows = self.layout.row_group_rows.max(1);
        let mut offset = 0;
        while offset < batch.num_rows() {
            let take = (group_rows - self.group_rows).min(batch.num_rows() - offset);
            self.group.push(batch.slice(offset, take));
            self.group_rows += take;
            self.rows += take as u64;
            offset += take;
            if self.group_rows == group_rows {
                self.seal_group().await?;
            }
        }
        Ok(())
    }

    /// Starts encoding the gathered rows as a row group, after appending the previous one.
    async fn seal_group(&mut self) -> Result<()> {
        if self.group.is_empty() {
            return Ok(());
        }
        self.append_encoded().await?;
        if self.current.is_none() {
            let name = format!("part-{:05}.parquet", self.files.len());
            let path = self.run_dir.clone().join(name.as_str());
            self.current = Some(ParquetUpload::create(
                &self.storage,
                path,
                &name,
                self.schema.clone(),
                self.properties.clone(),
            )?);
        }
        let group = std::mem::take(&mut self.group);
        self.group_rows = 0;
        if let Some(file) = &self.current {
            self.encoding = Some(file.encode(group)?);
        }
        Ok(())
    }

    /// Appends the row group being encoded; closes the file once it reaches its target size.
    async fn append_encoded(&mut self) -> Result<()> {
        let Some(encoding) = self.encoding.take() else {
            return Ok(());
        };
        let Some(file) = self.current.as_mut() else {
            return Err(parquet_error("snapshot", "a row group without its file"));
        };
        file.append(encoding).await?;
        if file.bytes() >= self.layout.target_file_bytes as u64 {
            self.close_file().await?;
        }
        Ok(())
    }

    async fn close_file(&mut self) -> Result<()> {
        if let Some(file) = self.current.take() {
            let file = file.finish().await?;
            ikv_core::failpoint!("snapshot.file_written");
            self.files.push(SnapshotFile {
                path: format!("{}/{}", self.run_name, file.name),
                rows: file.rows,
                bytes: file.bytes,
                checksums: Some(file.checksums),
            });
        }
        Ok(())
    }

    /// Flushes and closes everything; returns the files written.
    pub async fn finish(mut self) -> Result<(Vec<SnapshotFile>, Vec<SnapshotColumn>)> {
        self.flush_pending().await?;
        self.seal_group().await?;
        self.append_encoded().await?;
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
