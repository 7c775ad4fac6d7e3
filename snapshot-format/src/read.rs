//! Streaming a committed snapshot's documents in key order, one record batch at a time.

use std::collections::VecDeque;

use futures::{FutureExt, StreamExt};
use ikv_core::{Error, Result, Storage, StoreLayout};
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::async_reader::ParquetRecordBatchStream;

use crate::manifest::Manifest;
use crate::object_reader::ObjectReader;
use crate::rows::{SnapshotDoc, from_batch};

/// Most rows decoded per record batch.
pub const READ_BATCH_ROWS: usize = 8192;

/// Most bytes (uncompressed, as the file's row groups average them) decoded per record batch:
/// with large values a batch holds fewer rows, so the memory a stream (a bootstrap, a fold)
/// holds depends on this budget, not on the size of the values.
pub const READ_BATCH_BYTES: u64 = 8 << 20;

/// Rows per batch for a file of `rows` rows taking `bytes` uncompressed: as many as fit
/// [`READ_BATCH_BYTES`], at least 1, at most [`READ_BATCH_ROWS`].
pub fn batch_rows(bytes: u64, rows: u64) -> usize {
    if rows == 0 || bytes == 0 {
        return READ_BATCH_ROWS;
    }
    let per_row = bytes.div_ceil(rows).max(1);
    usize::try_from(READ_BATCH_BYTES / per_row)
        .unwrap_or(READ_BATCH_ROWS)
        .clamp(1, READ_BATCH_ROWS)
}

/// Documents of a snapshot, in ascending key order.
pub struct SnapshotStream {
    storage: Storage,
    layout: StoreLayout,
    manifest: Manifest,
    next_file: usize,
    current: Option<ParquetRecordBatchStream<ObjectReader>>,
    /// The file `current` reads, for errors.
    current_path: String,
    buffer: VecDeque<SnapshotDoc>,
}

/// What a failed read of a snapshot file means: the bucket failed (retry later), a checksum
/// did not match, or the bytes do not decode as the manifest says (both corruption).
fn parquet_error(path: &str, e: parquet::errors::ParquetError) -> Error {
    if let parquet::errors::ParquetError::External(source) = e {
        // The reader's own failures (the bucket's, a checksum's) come back as they were.
        return match source.downcast::<Error>() {
            Ok(ikv) => *ikv,
            Err(other) => Error::Corrupt {
                what: path.to_owned(),
                reason: other.to_string(),
            },
        };
    }
    Error::Corrupt {
        what: path.to_owned(),
        reason: e.to_string(),
    }
}

impl SnapshotStream {
    pub fn new(storage: Storage, layout: StoreLayout, manifest: Manifest) -> Self {
        SnapshotStream {
            storage,
            layout,
            manifest,
            next_file: 0,
            current: None,
            current_path: String::new(),
            buffer: VecDeque::new(),
        }
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The next batch of documents, or `None` at the end.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<SnapshotDoc>>> {
        if !self.buffer.is_empty() {
            return Ok(Some(self.buffer.drain(..).collect()));
        }
        while let Some(batch) = self.next_record_batch().await? {
            let mut docs = Vec::with_capacity(batch.num_rows());
            from_batch(&batch, &self.manifest.columns, &mut docs)?;
            if !docs.is_empty() {
                return Ok(Some(docs));
            }
        }
        Ok(None)
    }

    /// The next Arrow record batch as stored (columns as the manifest describes them), for
    /// readers that convert rows themselves. Do not mix with `next_doc` on one stream.
    pub async fn next_record_batch(&mut self) -> Result<Option<arrow_array::RecordBatch>> {
        loop {
            if self.current.is_none() {
                let Some(file) = self.manifest.files.get(self.next_file) else {
                    return Ok(None);
                };
                self.next_file += 1;
                let path = self.manifest.file_path(&self.layout, file);
                let reader = ObjectReader::new(
                    self.storage.clone(),
                    path.clone(),
                    file.bytes,
                    file.checksums.clone(),
                )?;
                self.current_path = path.to_string();
                let builder =
                    std::panic::AssertUnwindSafe(ParquetRecordBatchStreamBuilder::new(reader))
                        .catch_unwind()
                        .await
                        .map_err(|_| {
                            ikv_core::checksum::note_contained_panic();
                            Error::Corrupt {
                                what: path.to_string(),
                                reason: "the Parquet footer does not decode".into(),
                            }
                        })?;
                let builder = builder.map_err(|e| parquet_error(path.as_ref(), e))?;
                let (bytes, rows) = builder.metadata().row_groups().iter().fold(
                    (0u64, 0u64),
                    |(bytes, rows), g| {
                        (
                            bytes.saturating_add(u64::try_from(g.total_byte_size()).unwrap_or(0)),
                            rows.saturating_add(u64::try_from(g.num_rows()).unwrap_or(0)),
                        )
                    },
                );
                let stream = builder
                    .with_batch_size(batch_rows(bytes, rows))
                    .build()
                    .map_err(|e| parquet_error(path.as_ref(), e))?;
                self.current = Some(stream);
            }
            let Some(stream) = self.current.as_mut() else {
                continue;
            };
            // A snapshot file without checksums (written before them) reaches the decoder
            // unverified; a decoder panic on such bytes becomes a corruption error.
            let next = std::panic::AssertUnwindSafe(stream.next())
                .catch_unwind()
                .await;
            let next = next.unwrap_or_else(|_| {
                ikv_core::checksum::note_contained_panic();
                Some(Err(parquet::errors::ParquetError::General(
                    "the Parquet data does not decode".into(),
                )))
            });
            match next {
                Some(Ok(batch)) => return Ok(Some(batch)),
                Some(Err(e)) => return Err(parquet_error(&self.current_path, e)),
                None => self.current = None,
            }
        }
    }

    /// The next document, or `None` at the end.
    pub async fn next_doc(&mut self) -> Result<Option<SnapshotDoc>> {
        if self.buffer.is_empty() {
            match self.next_batch().await? {
                Some(docs) => self.buffer.extend(docs),
                None => return Ok(None),
            }
        }
        Ok(self.buffer.pop_front())
    }

    /// Reads every document (tests and small stores).
    pub async fn collect_all(mut self) -> Result<Vec<SnapshotDoc>> {
        let mut out = Vec::new();
        while let Some(batch) = self.next_batch().await? {
            out.extend(batch);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_holds_a_byte_budget_of_rows() {
        // 160-byte rows: the row cap (1.3 MB a batch).
        assert_eq!(batch_rows(160 * 1_000_000, 1_000_000), READ_BATCH_ROWS);
        // 4 KiB rows: 2,048 rows, 8 MiB, where 8,192 rows were 32 MiB.
        assert_eq!(batch_rows(4096 * 10_000, 10_000), 2048);
        // Rows larger than the budget: one at a time.
        assert_eq!(batch_rows(64 << 20, 2), 1);
        // Nothing known: the row cap.
        assert_eq!(batch_rows(0, 0), READ_BATCH_ROWS);
        assert_eq!(batch_rows(5, 0), READ_BATCH_ROWS);
        for (bytes, rows) in [(1u64, 1u64), (u64::MAX, 1), (u64::MAX, u64::MAX), (7, 3)] {
            let n = batch_rows(bytes, rows);
            assert!((1..=READ_BATCH_ROWS).contains(&n), "{bytes} {rows}: {n}");
        }
    }
}
