//! Delta files: one committed batch of one partition, as an Arrow IPC file.
//!
//! Columns (one row per elementary change, applied in row order):
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `op` | UInt8, not null | 1 set field, 2 delete field, 3 delete document, 4 drop field, 5 drop field prefix, 6 drop all, 7 import a sorted run |
//! | `key` | Binary, null for store-wide ops and 7 | primary-key bytes |
//! | `field` | Utf8, null for 3 and 6 | field name (1, 2, 4), prefix (5) or run id (7) |
//! | `type` | UInt8, null unless op 1 | [`FieldType`] code |
//! | `value` | Binary, null unless op 1 or 7 | [`FieldValue::encode`] bytes (1), the run's description (7) |
//!
//! The reference is `docs/FORMAT.md` (version 1). [`decode_delta`] gives owned rows;
//! [`decode_delta_batches`] keeps the record batches and hands out rows borrowed, checked the
//! same way (the compactor's path).
//!
//! Schema metadata: `ikv.format_version`, `ikv.batch_id`, `ikv.writer_id`, `ikv.store`,
//! `ikv.partition`, `ikv.created_at_ms`.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, StringBuilder, UInt8Builder};
use arrow_array::{Array, BinaryArray, RecordBatch, StringArray, UInt8Array};
use arrow_ipc::reader::FileReader;
use arrow_ipc::writer::FileWriter;
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;

use crate::config::FORMAT_VERSION;
use crate::error::{Error, Result};
use crate::value::{FieldType, FieldValue, ValueRef};

/// One elementary change inside a delta.
#[derive(Debug, Clone, PartialEq)]
pub enum DeltaOp {
    SetField {
        key: Vec<u8>,
        field: String,
        value: FieldValue,
    },
    DeleteField {
        key: Vec<u8>,
        field: String,
    },
    DeleteDocument {
        key: Vec<u8>,
    },
    DropField {
        field: String,
    },
    DropFieldPrefix {
        prefix: String,
    },
    DropAll,
    /// Bulk-imported documents (op 7): one sorted run of key-sorted files for this
    /// partition, in directory `id`, described by `spec` (a snapshot-format manifest, JSON).
    /// Each imported document's fields are set as `SetField` rows would set them. Only in a
    /// delta of import rows, after at most one `DropAll`: see [`Delta::import`].
    Import {
        id: String,
        spec: Vec<u8>,
    },
}

/// One elementary change borrowed from a delta's Arrow buffers ([`DeltaBatches::for_each_row`]):
/// the same rows as [`DeltaOp`], without an allocation per key, field and value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DeltaRow<'a> {
    SetField {
        key: &'a [u8],
        field: &'a str,
        value: ValueRef<'a>,
    },
    DeleteField {
        key: &'a [u8],
        field: &'a str,
    },
    DeleteDocument {
        key: &'a [u8],
    },
    DropField {
        field: &'a str,
    },
    DropFieldPrefix {
        prefix: &'a str,
    },
    DropAll,
    Import {
        id: &'a str,
        spec: &'a [u8],
    },
}

impl DeltaRow<'_> {
    /// The row owned.
    pub fn to_op(&self) -> DeltaOp {
        match *self {
            DeltaRow::SetField { key, field, value } => DeltaOp::SetField {
                key: key.to_vec(),
                field: field.to_owned(),
                value: value.to_owned_value(),
            },
            DeltaRow::DeleteField { key, field } => DeltaOp::DeleteField {
                key: key.to_vec(),
                field: field.to_owned(),
            },
            DeltaRow::DeleteDocument { key } => DeltaOp::DeleteDocument { key: key.to_vec() },
            DeltaRow::DropField { field } => DeltaOp::DropField {
                field: field.to_owned(),
            },
            DeltaRow::DropFieldPrefix { prefix } => DeltaOp::DropFieldPrefix {
                prefix: prefix.to_owned(),
            },
            DeltaRow::DropAll => DeltaOp::DropAll,
            DeltaRow::Import { id, spec } => DeltaOp::Import {
                id: id.to_owned(),
                spec: spec.to_vec(),
            },
        }
    }
}

impl DeltaOp {
    /// The row borrowed.
    pub fn as_row(&self) -> DeltaRow<'_> {
        match self {
            DeltaOp::SetField { key, field, value } => DeltaRow::SetField {
                key,
                field,
                value: value.as_value_ref(),
            },
            DeltaOp::DeleteField { key, field } => DeltaRow::DeleteField { key, field },
            DeltaOp::DeleteDocument { key } => DeltaRow::DeleteDocument { key },
            DeltaOp::DropField { field } => DeltaRow::DropField { field },
            DeltaOp::DropFieldPrefix { prefix } => DeltaRow::DropFieldPrefix { prefix },
            DeltaOp::DropAll => DeltaRow::DropAll,
            DeltaOp::Import { id, spec } => DeltaRow::Import { id, spec },
        }
    }
}

/// A delta that imports documents: what [`Delta::import`] finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportDelta<'a> {
    /// The partition's documents are dropped first (the import replaces them).
    pub replace: bool,
    /// The import's sorted runs, in the order they apply.
    pub runs: Vec<ImportRun<'a>>,
}

/// One sorted run of an import: its id (its directory) and its description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRun<'a> {
    pub id: &'a str,
    pub spec: &'a [u8],
}

/// Whether an import id can name a directory: 1..=128 ASCII letters, digits, `-`, `_`, `.`,
/// not starting with `.`.
pub fn validate_import_id(id: &str) -> std::result::Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "import id {id:?} must be 1 to 128 ASCII letters, digits, '-', '_' or '.', not starting with '.'"
        ))
    }
}

impl DeltaOp {
    fn code(&self) -> u8 {
        match self {
            DeltaOp::SetField { .. } => 1,
            DeltaOp::DeleteField { .. } => 2,
            DeltaOp::DeleteDocument { .. } => 3,
            DeltaOp::DropField { .. } => 4,
            DeltaOp::DropFieldPrefix { .. } => 5,
            DeltaOp::DropAll => 6,
            DeltaOp::Import { .. } => 7,
        }
    }

    /// Approximate bytes this row adds to a delta, for batch sizing.
    pub fn payload_bytes(&self) -> usize {
        8 + match self {
            DeltaOp::SetField { key, field, value } => {
                key.len() + field.len() + value.encoded_len()
            }
            DeltaOp::DeleteField { key, field } => key.len() + field.len(),
            DeltaOp::DeleteDocument { key } => key.len(),
            DeltaOp::DropField { field } => field.len(),
            DeltaOp::DropFieldPrefix { prefix } => prefix.len(),
            DeltaOp::DropAll => 0,
            DeltaOp::Import { id, spec } => id.len() + spec.len(),
        }
    }
}

/// `ikv.checksum` of deltas followed by a CRC32C trailer (`checksum.rs`).
const CHECKSUM_TRAILER: &str = "crc32c-trailer";

/// Who wrote a delta and which batch it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaMeta {
    pub format_version: u32,
    /// Unique per committed batch; how a writer recognizes its own delta after an ambiguous PUT.
    pub batch_id: String,
    pub writer_id: String,
    pub store_name: String,
    pub partition: u32,
    pub created_at_ms: u64,
}

impl DeltaMeta {
    pub fn new(batch_id: String, writer_id: String, store_name: String, partition: u32) -> Self {
        DeltaMeta {
            format_version: FORMAT_VERSION,
            batch_id,
            writer_id,
            store_name,
            partition,
            created_at_ms: crate::config::now_ms(),
        }
    }

    fn to_metadata(&self) -> HashMap<String, String> {
        HashMap::from([
            ("ikv.format_version".into(), self.format_version.to_string()),
            ("ikv.batch_id".into(), self.batch_id.clone()),
            ("ikv.writer_id".into(), self.writer_id.clone()),
            ("ikv.store".into(), self.store_name.clone()),
            ("ikv.partition".into(), self.partition.to_string()),
            ("ikv.created_at_ms".into(), self.created_at_ms.to_string()),
            // Says the file is followed by a checksum trailer: a delta cut exactly at its
            // trailer would otherwise pass for one written before trailers existed.
            ("ikv.checksum".into(), CHECKSUM_TRAILER.into()),
        ])
    }

    fn from_metadata(md: &arrow_schema::Metadata) -> Result<DeltaMeta> {
        let get = |k: &str| {
            md.get(k)
                .cloned()
                .ok_or_else(|| Error::corrupt("delta metadata", format!("missing {k}")))
        };
        let num = |k: &str| -> Result<u64> {
            get(k)?
                .parse()
                .map_err(|_| Error::corrupt("delta metadata", format!("{k} is not a number")))
        };
        let format_version = num("ikv.format_version")? as u32;
        if format_version != FORMAT_VERSION {
            return Err(Error::corrupt(
                "delta",
                format!(
                    "format version {format_version} is not supported (this build reads {FORMAT_VERSION})"
                ),
            ));
        }
        Ok(DeltaMeta {
            format_version,
            batch_id: get("ikv.batch_id")?,
            writer_id: get("ikv.writer_id")?,
            store_name: get("ikv.store")?,
            partition: num("ikv.partition")? as u32,
            created_at_ms: num("ikv.created_at_ms")?,
        })
    }
}

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

fn check_origin(
    meta: &DeltaMeta,
    sequence: Option<u64>,
    store: &str,
    partition: u32,
    seq: u64,
    path: &impl std::fmt::Display,
) -> Result<()> {
    meta.check_origin(store, partition, path)?;
    match sequence {
        Some(placed) if placed != seq => Err(Error::Corrupt {
            what: path.to_string(),
            reason: format!("the delta says it is delta {placed}, not delta {seq}"),
        }),
        _ => Ok(()),
    }
}

impl DeltaMeta {
    /// A delta read from `path` must say it belongs there: a delta of another store or
    /// partition copied into this log (by mistake or on purpose) is corruption, never applied.
    /// (Its sequence number is in the trailer: [`Delta::check_origin`] checks all three.)
    pub fn check_origin(
        &self,
        store: &str,
        partition: u32,
        path: &impl std::fmt::Display,
    ) -> Result<()> {
        if self.store_name != store || self.partition != partition {
            return Err(Error::Corrupt {
                what: path.to_string(),
                reason: format!(
                    "the delta says it belongs to store {:?}, partition {}, not store {store:?}, partition {partition}",
                    self.store_name, self.partition
                ),
            });
        }
        Ok(())
    }
}

fn schema(meta: &DeltaMeta) -> Schema {
    Schema::new_with_metadata(
        vec![
            Field::new("op", DataType::UInt8, false),
            Field::new("key", DataType::Binary, true),
            Field::new("field", DataType::Utf8, true),
            Field::new("type", DataType::UInt8, true),
            Field::new("value", DataType::Binary, true),
        ],
        meta.to_metadata(),
    )
}

/// Encodes a delta as Arrow IPC file bytes.
pub fn encode_delta<'a>(
    meta: &DeltaMeta,
    ops: impl IntoIterator<Item = &'a DeltaOp>,
) -> Result<Bytes> {
    let mut op_col = UInt8Builder::new();
    let mut key_col = BinaryBuilder::new();
    let mut field_col = StringBuilder::new();
    let mut type_col = UInt8Builder::new();
    let mut value_col = BinaryBuilder::new();
    for op in ops {
        op_col.append_value(op.code());
        match op {
            DeltaOp::SetField { key, field, value } => {
                key_col.append_value(key);
                field_col.append_value(field);
                type_col.append_value(value.field_type().code());
                value_col.append_value(value.encode());
            }
            DeltaOp::DeleteField { key, field } => {
                key_col.append_value(key);
                field_col.append_value(field);
                type_col.append_null();
                value_col.append_null();
            }
            DeltaOp::DeleteDocument { key } => {
                key_col.append_value(key);
                field_col.append_null();
                type_col.append_null();
                value_col.append_null();
            }
            DeltaOp::DropField { field: name } | DeltaOp::DropFieldPrefix { prefix: name } => {
                key_col.append_null();
                field_col.append_value(name);
                type_col.append_null();
                value_col.append_null();
            }
            DeltaOp::DropAll => {
                key_col.append_null();
                field_col.append_null();
                type_col.append_null();
                value_col.append_null();
            }
            DeltaOp::Import { id, spec } => {
                key_col.append_null();
                field_col.append_value(id);
                type_col.append_null();
                value_col.append_value(spec);
            }
        }
    }
    let schema = Arc::new(schema(meta));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(op_col.finish()),
            Arc::new(key_col.finish()),
            Arc::new(field_col.finish()),
            Arc::new(type_col.finish()),
            Arc::new(value_col.finish()),
        ],
    )
    .map_err(|e| Error::corrupt("delta being encoded", e))?;
    let mut writer = FileWriter::try_new(Vec::new(), &schema)
        .map_err(|e| Error::corrupt("delta being encoded", e))?;
    writer
        .write(&batch)
        .and_then(|_| writer.finish())
        .map_err(|e| Error::corrupt("delta being encoded", e))?;
    let buf = writer
        .into_inner()
        .map_err(|e| Error::corrupt("delta being encoded", e))?;
    Ok(Bytes::from(crate::checksum::seal_trailer(buf, 0)))
}

/// An encoded delta placed at sequence `seq` (its trailer names it): what a writer PUTs at
/// `seq`, as two chunks (the encoded bytes are shared, not copied). Bytes that are not an
/// encoded delta are refused.
pub fn place_delta(encoded: &Bytes, seq: u64) -> Result<object_store::PutPayload> {
    let (ipc, trailer) = crate::checksum::reseal_trailer(encoded, seq)
        .ok_or_else(|| Error::corrupt("delta being committed", "it has no trailer to place"))?;
    Ok(object_store::PutPayload::from_iter([ipc, trailer]))
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
