//! Encoding a delta as an Arrow IPC file, and placing it at a sequence number.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_array::builder::{BinaryBuilder, StringBuilder, UInt8Builder};
use arrow_ipc::writer::FileWriter;
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;

use crate::error::{Error, Result};

use super::*;

pub(crate) fn schema(meta: &DeltaMeta) -> Schema {
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
pub fn place_delta(encoded: &Bytes, seq: u64) -> Result<crate::bucket::Payload> {
    let (ipc, trailer) = crate::checksum::reseal_trailer(encoded, seq)
        .ok_or_else(|| Error::corrupt("delta being committed", "it has no trailer to place"))?;
    Ok(crate::bucket::Payload::from_iter([ipc, trailer]))
}
