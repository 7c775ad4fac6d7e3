//! Decoding a delta: its checksum first, then its metadata and rows, each row checked.

use std::io::Cursor;

use arrow_array::{Array, BinaryArray, Int64Array, RecordBatch, StringArray, UInt8Array};
use arrow_ipc::reader::FileReader;
use bytes::Bytes;

use crate::error::{Error, Result};
use crate::value::{FieldType, ValueRef};

use super::meta::check_origin;
use super::*;

/// A decoded delta file.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    pub meta: DeltaMeta,
    pub ops: Vec<DeltaOp>,
    /// The sequence its trailer places it at (`None` for a delta written before trailers).
    pub sequence: Option<u64>,
}

impl Delta {
    /// The import this delta commits, if it is an import delta: one or more import rows,
    /// after at most one drop-all row. An import row anywhere else is corruption (no writer
    /// makes it), refused rather than given a meaning.
    pub fn import(&self) -> Result<Option<ImportDelta<'_>>> {
        if !self
            .ops
            .iter()
            .any(|op| matches!(op, DeltaOp::Import { .. }))
        {
            return Ok(None);
        }
        let replace = self.ops.first() == Some(&DeltaOp::DropAll);
        let mut runs = Vec::with_capacity(self.ops.len());
        for op in &self.ops[usize::from(replace)..] {
            match op {
                DeltaOp::Import { id, spec } => runs.push(ImportRun { id, spec }),
                _ => {
                    return Err(Error::corrupt(
                        "delta",
                        "an import delta holds only import rows, after at most one drop-all row",
                    ));
                }
            }
        }
        Ok(Some(ImportDelta { replace, runs }))
    }

    /// A delta read from `path`, delta `seq` of `partition` of `store`, must say so: one of
    /// another store or partition, or another place in the log, copied there (by mistake or
    /// on purpose) is corruption, never applied.
    pub fn check_origin(
        &self,
        store: &str,
        partition: u32,
        seq: u64,
        path: &impl std::fmt::Display,
    ) -> Result<()> {
        check_origin(&self.meta, self.sequence, store, partition, seq, path)
    }
}

/// The IPC reader of a delta's bytes, verified against its trailer first: corrupt bytes are
/// refused before Arrow decodes anything. `what` names the object in errors.
fn open_delta(
    bytes: &Bytes,
    what: &str,
) -> Result<(FileReader<Cursor<Bytes>>, DeltaMeta, Option<u64>)> {
    let (ipc, sequence) = crate::checksum::open_trailer(bytes, what)?;
    let sealed = sequence.is_some();
    // Bytes that fail the checksum never reach Arrow; a legacy delta (no trailer) is decoded
    // unverified, and a decoder panic on it (arrow trusts some offsets) becomes an error.
    let opened = std::panic::catch_unwind(|| -> Result<_> {
        let reader =
            FileReader::try_new(Cursor::new(ipc), None).map_err(|e| Error::corrupt(what, e))?;
        let meta =
            DeltaMeta::from_metadata(reader.schema().metadata()).map_err(|e| rename(e, what))?;
        Ok((reader, meta))
    })
    .unwrap_or_else(|_| {
        crate::checksum::note_contained_panic();
        Err(Error::corrupt(what, "the Arrow data does not decode"))
    })?;
    if !sealed && opened.0.schema().metadata().contains_key("ikv.checksum") {
        return Err(Error::corrupt(
            what,
            "its checksum trailer is missing (the object is truncated)",
        ));
    }
    Ok((opened.0, opened.1, sequence))
}

/// A metadata error of a delta, naming the object.
fn rename(e: Error, what: &str) -> Error {
    match e {
        Error::Corrupt { reason, .. } => Error::Corrupt {
            what: what.to_owned(),
            reason,
        },
        other => other,
    }
}

/// Reads only the metadata of a delta file; `what` (its path) names it in errors.
pub fn decode_delta_meta(bytes: &Bytes, what: &str) -> Result<DeltaMeta> {
    Ok(open_delta(bytes, what)?.1)
}

/// A delta file decoded to its Arrow record batches (checksum verified, metadata read), whose
/// rows are read borrowed: the compactor's path, which copies only what it keeps.
#[derive(Debug, Clone)]
pub struct DeltaBatches {
    pub meta: DeltaMeta,
    /// The sequence its trailer places it at (`None` for a delta written before trailers).
    pub sequence: Option<u64>,
    batches: Vec<RecordBatch>,
    what: String,
}

/// Decodes a delta file to its record batches; `what` (its path) names it in errors.
pub fn decode_delta_batches(bytes: &Bytes, what: &str) -> Result<DeltaBatches> {
    let (reader, meta, sequence) = open_delta(bytes, what)?;
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(
        || -> Result<Vec<RecordBatch>> {
            reader
                .map(|batch| batch.map_err(|e| Error::corrupt(what, e)))
                .collect()
        },
    ));
    let batches = read.unwrap_or_else(|_| {
        crate::checksum::note_contained_panic();
        Err(Error::corrupt(what, "the Arrow data does not decode"))
    })?;
    Ok(DeltaBatches {
        meta,
        sequence,
        batches,
        what: what.to_owned(),
    })
}

/// Decodes a whole delta file; `what` (its path) names it in errors.
pub fn decode_delta(bytes: &Bytes, what: &str) -> Result<Delta> {
    decode_delta_batches(bytes, what)?.into_delta()
}

impl DeltaBatches {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// Calls `f` with every row in order, each checked as [`decode_delta`] checks it; stops
    /// at the first error (`f`'s or the delta's).
    pub fn for_each_row(&self, mut f: impl FnMut(DeltaRow<'_>) -> Result<()>) -> Result<()> {
        let what = self.what.as_str();
        let walked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<()> {
            for batch in &self.batches {
                walk_batch(batch, &mut f).map_err(|e| rename(e, what))?;
            }
            Ok(())
        }));
        walked.unwrap_or_else(|_| {
            crate::checksum::note_contained_panic();
            Err(Error::corrupt(what, "the Arrow data does not decode"))
        })
    }

    /// Whether any row is an import row (op 7): such a delta is read whole, through
    /// [`Delta::import`].
    pub fn has_import_rows(&self) -> bool {
        self.batches.iter().any(|b| {
            b.column_by_name("op")
                .and_then(|c| c.as_any().downcast_ref::<UInt8Array>())
                .is_some_and(|ops| ops.values().contains(&7))
        })
    }

    /// The delta with owned rows.
    pub fn into_delta(self) -> Result<Delta> {
        let mut ops = Vec::with_capacity(self.rows());
        self.for_each_row(|row| {
            ops.push(row.to_op());
            Ok(())
        })?;
        Ok(Delta {
            meta: self.meta,
            ops,
            sequence: self.sequence,
        })
    }

    /// As [`Delta::check_origin`].
    pub fn check_origin(
        &self,
        store: &str,
        partition: u32,
        seq: u64,
        path: &impl std::fmt::Display,
    ) -> Result<()> {
        check_origin(&self.meta, self.sequence, store, partition, seq, path)
    }
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| {
            Error::corrupt(
                "delta",
                format!("column {name:?} missing or of the wrong type"),
            )
        })
}

fn walk_batch(batch: &RecordBatch, f: &mut impl FnMut(DeltaRow<'_>) -> Result<()>) -> Result<()> {
    let op = column::<UInt8Array>(batch, "op")?;
    let key = column::<BinaryArray>(batch, "key")?;
    let field = column::<StringArray>(batch, "field")?;
    let ty = column::<UInt8Array>(batch, "type")?;
    let value = column::<BinaryArray>(batch, "value")?;
    let optional = |name: &str| match batch.column_by_name(name) {
        None => Ok(None),
        Some(_) => column::<Int64Array>(batch, name).map(Some),
    };
    let expires = optional(EXPIRES_COLUMN)?;
    let events = optional(EVENT_COLUMN)?;
    let missing =
        |row: usize, col: &str| Error::corrupt("delta", format!("row {row}: {col} is null"));
    for row in 0..batch.num_rows() {
        let key_at = || {
            (!key.is_null(row))
                .then(|| key.value(row))
                .ok_or_else(|| missing(row, "key"))
        };
        let field_at = || {
            (!field.is_null(row))
                .then(|| field.value(row))
                .ok_or_else(|| missing(row, "field"))
        };
        // Keys and field names a writer would have refused are refused here too: such a
        // delta was not written by ikv.
        let key_at = || {
            let k = key_at()?;
            if k.is_empty() || k.len() > crate::limits::MAX_KEY_BYTES {
                return Err(Error::corrupt(
                    "delta",
                    format!(
                        "row {row}: a key of {} bytes (1 to {} allowed)",
                        k.len(),
                        crate::limits::MAX_KEY_BYTES
                    ),
                ));
            }
            Ok(k)
        };
        let name_at = || {
            let name = field_at()?;
            if !crate::config::stored_field_name_ok(name) {
                return Err(Error::corrupt(
                    "delta",
                    format!("row {row}: field name {name:?} is not one a writer accepts"),
                ));
            }
            Ok(name)
        };
        let decoded = match op.value(row) {
            1 => {
                if ty.is_null(row) || value.is_null(row) {
                    return Err(missing(row, "type or value"));
                }
                let t = FieldType::from_code(ty.value(row)).ok_or_else(|| {
                    Error::corrupt(
                        "delta",
                        format!("row {row}: unknown type code {}", ty.value(row)),
                    )
                })?;
                DeltaRow::SetField {
                    key: key_at()?,
                    field: name_at()?,
                    value: ValueRef::decode(t, value.value(row))?,
                    expires_ms: expires.filter(|e| !e.is_null(row)).map(|e| e.value(row)),
                    event_us: events.filter(|e| !e.is_null(row)).map(|e| e.value(row)),
                }
            }
            2 => DeltaRow::DeleteField {
                key: key_at()?,
                field: name_at()?,
            },
            3 => DeltaRow::DeleteDocument { key: key_at()? },
            4 => DeltaRow::DropField { field: name_at()? },
            5 => DeltaRow::DropFieldPrefix {
                prefix: field_at()?,
            },
            6 => DeltaRow::DropAll,
            7 => {
                let id = field_at()?;
                validate_import_id(id)
                    .map_err(|m| Error::corrupt("delta", format!("row {row}: {m}")))?;
                if value.is_null(row) {
                    return Err(missing(row, "value"));
                }
                DeltaRow::Import {
                    id,
                    spec: value.value(row),
                }
            }
            other => {
                return Err(Error::corrupt(
                    "delta",
                    format!("row {row}: unknown op code {other}"),
                ));
            }
        };
        f(decoded)?;
    }
    Ok(())
}
