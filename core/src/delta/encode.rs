//! Encoding a delta as an Arrow IPC file, and placing it at a sequence number.

use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, Int64Builder, StringBuilder, UInt8Builder};
use arrow_array::{Array, RecordBatch};
use arrow_ipc::writer::FileWriter;
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;

use crate::error::{Error, Result};

use super::*;

/// The delta's schema; `timed` adds the `expires_ms` and `event_us` columns (and says format
/// version [`TIMED_FORMAT_VERSION`], which builds before it refuse rather than serve expired
/// values or apply writes out of event-time order).
pub(crate) fn schema(meta: &DeltaMeta, timed: bool) -> Schema {
    let mut fields = vec![
        Field::new("op", DataType::UInt8, false),
        Field::new("key", DataType::Binary, true),
        Field::new("field", DataType::Utf8, true),
        Field::new("type", DataType::UInt8, true),
        Field::new("value", DataType::Binary, true),
    ];
    let mut metadata = meta.to_metadata();
    if timed {
        fields.push(Field::new(EXPIRES_COLUMN, DataType::Int64, true));
        fields.push(Field::new(EVENT_COLUMN, DataType::Int64, true));
        metadata.insert(
            "ikv.format_version".into(),
            TIMED_FORMAT_VERSION.to_string(),
        );
    }
    Schema::new_with_metadata(fields, metadata)
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
    let mut expires_col = Int64Builder::new();
    let mut event_col = Int64Builder::new();
    for op in ops {
        op_col.append_value(op.code());
        expires_col.append_option(op.expires_ms());
        event_col.append_option(op.event_us());
        match op {
            DeltaOp::SetField {
                key, field, value, ..
            } => {
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
    let expires = expires_col.finish();
    let events = event_col.finish();
    // A delta without expiries or event times is written as before they existed: no
    // columns, version 1.
    let timed = expires.null_count() < expires.len() || events.null_count() < events.len();
    let schema = Arc::new(schema(meta, timed));
    let mut columns: Vec<arrow_array::ArrayRef> = vec![
        Arc::new(op_col.finish()),
        Arc::new(key_col.finish()),
        Arc::new(field_col.finish()),
        Arc::new(type_col.finish()),
        Arc::new(value_col.finish()),
    ];
    if timed {
        columns.push(Arc::new(expires));
        columns.push(Arc::new(events));
    }
    let batch = RecordBatch::try_new(schema.clone(), columns)
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
pub fn place_delta(encoded: &Bytes, seq: u64) -> Result<crate::bucket::Payload> {
    let (ipc, trailer) = crate::checksum::reseal_trailer(encoded, seq)
        .ok_or_else(|| Error::corrupt("delta being committed", "it has no trailer to place"))?;
    Ok(crate::bucket::Payload::from_iter([ipc, trailer]))
}
