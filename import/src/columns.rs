//! What an import's columns become: the key columns and one typed field per other column,
//! with every input array converted to the one Arrow type the snapshot format stores for its
//! field type.
//!
//! Accepted input types: strings (Utf8, LargeUtf8, Utf8View) → string; binary (Binary,
//! LargeBinary, BinaryView, FixedSizeBinary) → bytes; signed and unsigned integers → int64
//! (a UInt64 above `i64::MAX` is an error); Float32/Float64 → float64; Boolean → bool; a
//! column of type Null holds no values and is skipped. Anything else is refused by name.
//! A null value means the document lacks that field (nothing is set), as in `upsert_fields`.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Int8Type, Int16Type, Int32Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow_schema::{DataType, Schema};
use ikv_core::config::validate_field_name;
use ikv_core::limits::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
use ikv_core::{Error, FieldType, Result, StoreConfig};

fn invalid(message: String) -> Error {
    Error::InvalidImport(message)
}

/// The field type an input column's Arrow type maps to; `None` for a Null column.
fn field_type_of(name: &str, t: &DataType) -> Result<Option<FieldType>> {
    Ok(Some(match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => FieldType::String,
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => FieldType::Bytes,
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => FieldType::Int64,
        DataType::Float32 | DataType::Float64 => FieldType::Float64,
        DataType::Boolean => FieldType::Bool,
        DataType::Null => return Ok(None),
        other => {
            return Err(invalid(format!(
                "column {name:?} has type {other}, which ikv cannot store; cast it to a string, binary, integer, float or boolean column first"
            )));
        }
    }))
}

/// One input column that becomes a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportColumn {
    /// Its position in the input schema.
    pub index: usize,
    pub field: String,
    pub field_type: FieldType,
}

/// How an import's input maps onto the store.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportSchema {
    /// Input column of the primary key.
    pub key: usize,
    /// Input column choosing the partition (the partitioning key, or the primary key).
    pub partition_key: usize,
    /// Every input column with values, the key columns included (they are fields too).
    pub columns: Vec<ImportColumn>,
    /// Input column of each row's time to live ([`crate::times::TTL_COLUMN`]), if any.
    pub ttl: Option<usize>,
    /// Input column of each row's event time ([`crate::times::EVENT_TIME_COLUMN`]), if any.
    pub event_time: Option<usize>,
    /// Whether rows carry times (their own, or the store's default time to live): then each
    /// field but the primary key gets its companion columns.
    pub timed: bool,
    primary_key: String,
    input: Arc<Schema>,
}

impl ImportSchema {
    /// Checks an input schema against the store: key columns present and of a key type,
    /// every column name a valid field name, every type supported.
    pub fn new(config: &StoreConfig, input: Arc<Schema>) -> Result<ImportSchema> {
        let find = |name: &str, role: &str| -> Result<usize> {
            let index = input.index_of(name).map_err(|_| {
                invalid(format!(
                    "the data has no column {name:?} (the store's {role}); its columns are {:?}",
                    input.fields().iter().map(|f| f.name()).collect::<Vec<_>>()
                ))
            })?;
            match field_type_of(name, input.field(index).data_type())? {
                Some(FieldType::String | FieldType::Bytes) => Ok(index),
                _ => Err(invalid(format!(
                    "column {name:?} (the store's {role}) has type {}; a key must be a string or binary column",
                    input.field(index).data_type()
                ))),
            }
        };
        let key = find(&config.primary_key_field, "primary key")?;
        let partition_key = match &config.partitioning_key_field {
            Some(name) => find(name, "partitioning key")?,
            None => key,
        };
        let mut columns = Vec::new();
        let (mut ttl, mut event_time) = (None, None);
        let mut seen = std::collections::BTreeSet::new();
        for (index, f) in input.fields().iter().enumerate() {
            if !seen.insert(f.name().as_str()) {
                return Err(invalid(format!("column {:?} appears twice", f.name())));
            }
            let time = match f.name().as_str() {
                crate::times::TTL_COLUMN => Some(&mut ttl),
                crate::times::EVENT_TIME_COLUMN => Some(&mut event_time),
                _ => None,
            };
            if let Some(slot) = time {
                if field_type_of(f.name(), f.data_type())? != Some(FieldType::Int64) {
                    return Err(invalid(format!(
                        "column {:?} has type {}; it must be an integer column",
                        f.name(),
                        f.data_type()
                    )));
                }
                *slot = Some(index);
                continue;
            }
            validate_field_name(f.name())
                .map_err(|m| invalid(format!("column {:?}: {m}", f.name())))?;
            if let Some(field_type) = field_type_of(f.name(), f.data_type())? {
                columns.push(ImportColumn {
                    index,
                    field: f.name().clone(),
                    field_type,
                });
            }
        }
        let timed = ttl.is_some() || event_time.is_some() || config.ttl_seconds.is_some();
        Ok(ImportSchema {
            key,
            partition_key,
            columns,
            ttl,
            event_time,
            timed,
            primary_key: config.primary_key_field.clone(),
            input,
        })
    }

    /// The fields (name, type) the import's rows hold: each column's, and where rows carry
    /// times, each field's companions but the primary key's (an imported key never expires).
    pub fn stored_fields(&self) -> Vec<(String, FieldType)> {
        let mut out: Vec<(String, FieldType)> = self
            .columns
            .iter()
            .map(|c| (c.field.clone(), c.field_type))
            .collect();
        if self.timed {
            for c in self.timed_columns() {
                out.push((ikv_core::expiry::expiry_field(&c.field), FieldType::Int64));
                out.push((
                    ikv_core::event_time::event_field(&c.field),
                    FieldType::Int64,
                ));
            }
        }
        out
    }

    /// The columns that get companions when rows carry times.
    pub fn timed_columns(&self) -> impl Iterator<Item = &ImportColumn> {
        self.columns.iter().filter(|c| c.field != self.primary_key)
    }

    /// Whether a batch has the schema this import started with (same names and types).
    pub fn check_batch(&self, batch: &RecordBatch) -> Result<()> {
        let same = batch.schema().fields().len() == self.input.fields().len()
            && batch
                .schema()
                .fields()
                .iter()
                .zip(self.input.fields())
                .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
        if same {
            Ok(())
        } else {
            Err(invalid(format!(
                "a batch's columns ({}) differ from the import's first batch ({}); every batch of one import has the same columns and types",
                describe(&batch.schema()),
                describe(&self.input)
            )))
        }
    }
}

fn describe(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{}: {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The key bytes of each row of a key column, checked: no nulls, 1..=1024 bytes.
pub fn key_bytes<'a>(name: &str, column: &'a ArrayRef, row_base: u64) -> Result<Vec<&'a [u8]>> {
    let bad_key = |row: usize, why: &str| {
        invalid(format!(
            "row {}: the key column {name:?} {why}",
            row_base + row as u64
        ))
    };
    let mut out = Vec::with_capacity(column.len());
    let mut push = |row: usize, bytes: Option<&'a [u8]>| -> Result<()> {
        let bytes = bytes.ok_or_else(|| bad_key(row, "is null"))?;
        if bytes.is_empty() {
            return Err(bad_key(row, "is empty"));
        }
        if bytes.len() > MAX_KEY_BYTES {
            return Err(bad_key(
                row,
                &format!("holds {} bytes, more than {MAX_KEY_BYTES}", bytes.len()),
            ));
        }
        out.push(bytes);
        Ok(())
    };
    match column.data_type() {
        DataType::Utf8 => {
            for (row, v) in column.as_string::<i32>().iter().enumerate() {
                push(row, v.map(str::as_bytes))?;
            }
        }
        DataType::LargeUtf8 => {
            for (row, v) in column.as_string::<i64>().iter().enumerate() {
                push(row, v.map(str::as_bytes))?;
            }
        }
        DataType::Utf8View => {
            for (row, v) in column.as_string_view().iter().enumerate() {
                push(row, v.map(str::as_bytes))?;
            }
        }
        DataType::Binary => {
            for (row, v) in column.as_binary::<i32>().iter().enumerate() {
                push(row, v)?;
            }
        }
        DataType::LargeBinary => {
            for (row, v) in column.as_binary::<i64>().iter().enumerate() {
                push(row, v)?;
            }
        }
        DataType::BinaryView => {
            for (row, v) in column.as_binary_view().iter().enumerate() {
                push(row, v)?;
            }
        }
        DataType::FixedSizeBinary(_) => {
            for (row, v) in column.as_fixed_size_binary().iter().enumerate() {
                push(row, v)?;
            }
        }
        other => return Err(invalid(format!("key column {name:?} has type {other}"))),
    }
    Ok(out)
}

/// A column converted to the Arrow type the snapshot format stores for its field type
/// (Utf8, Binary, Int64, Float64, Boolean), with values over the size limit refused.
pub fn canonical(
    name: &str,
    column: &ArrayRef,
    field_type: FieldType,
    row_base: u64,
) -> Result<ArrayRef> {
    let converted: ArrayRef = match (field_type, column.data_type()) {
        (FieldType::String, DataType::Utf8) => column.clone(),
        (FieldType::String, DataType::LargeUtf8) => {
            Arc::new(column.as_string::<i64>().iter().collect::<StringArray>())
        }
        (FieldType::String, DataType::Utf8View) => {
            Arc::new(column.as_string_view().iter().collect::<StringArray>())
        }
        (FieldType::Bytes, DataType::Binary) => column.clone(),
        (FieldType::Bytes, DataType::LargeBinary) => {
            Arc::new(column.as_binary::<i64>().iter().collect::<BinaryArray>())
        }
        (FieldType::Bytes, DataType::BinaryView) => {
            Arc::new(column.as_binary_view().iter().collect::<BinaryArray>())
        }
        (FieldType::Bytes, DataType::FixedSizeBinary(_)) => Arc::new(
            column
                .as_fixed_size_binary()
                .iter()
                .collect::<BinaryArray>(),
        ),
        (FieldType::Int64, DataType::Int64) => column.clone(),
        (FieldType::Int64, DataType::Int8) => widen::<Int8Type>(column),
        (FieldType::Int64, DataType::Int16) => widen::<Int16Type>(column),
        (FieldType::Int64, DataType::Int32) => widen::<Int32Type>(column),
        (FieldType::Int64, DataType::UInt8) => widen::<UInt8Type>(column),
        (FieldType::Int64, DataType::UInt16) => widen::<UInt16Type>(column),
        (FieldType::Int64, DataType::UInt32) => widen::<UInt32Type>(column),
        (FieldType::Int64, DataType::UInt64) => {
            let values = column.as_primitive::<UInt64Type>();
            let mut out = Vec::with_capacity(values.len());
            for (row, v) in values.iter().enumerate() {
                out.push(match v {
                    Some(v) => Some(i64::try_from(v).map_err(|_| {
                        invalid(format!(
                            "row {}: column {name:?} holds {v}, more than an int64 can",
                            row_base + row as u64
                        ))
                    })?),
                    None => None,
                });
            }
            Arc::new(Int64Array::from(out))
        }
        (FieldType::Float64, DataType::Float64) => column.clone(),
        (FieldType::Float64, DataType::Float32) => Arc::new(
            column
                .as_primitive::<Float32Type>()
                .iter()
                .map(|v| v.map(f64::from))
                .collect::<Float64Array>(),
        ),
        (FieldType::Bool, DataType::Boolean) => column.clone(),
        (t, other) => {
            return Err(invalid(format!(
                "column {name:?} of type {other} cannot hold {t} values"
            )));
        }
    };
    let longest = match field_type {
        FieldType::String => longest_value(converted.as_string::<i32>().offsets()),
        FieldType::Bytes => longest_value(converted.as_binary::<i32>().offsets()),
        _ => None,
    };
    if let Some((row, len)) = longest.filter(|(_, len)| *len > MAX_VALUE_BYTES) {
        return Err(invalid(format!(
            "row {}: column {name:?} holds a value of {len} bytes, more than {MAX_VALUE_BYTES}",
            row_base + row as u64
        )));
    }
    // Keep the types this module promises, whatever slipped through.
    debug_assert!(matches!(
        (field_type, converted.data_type()),
        (FieldType::String, DataType::Utf8)
            | (FieldType::Bytes, DataType::Binary)
            | (FieldType::Int64, DataType::Int64)
            | (FieldType::Float64, DataType::Float64)
            | (FieldType::Bool, DataType::Boolean)
    ));
    Ok(converted)
}

fn widen<T>(column: &ArrayRef) -> ArrayRef
where
    T: arrow_array::types::ArrowPrimitiveType,
    T::Native: Into<i64>,
{
    Arc::new(
        column
            .as_primitive::<T>()
            .iter()
            .map(|v| v.map(Into::into))
            .collect::<Int64Array>(),
    )
}

/// The row and length of the longest value, from an offsets buffer.
fn longest_value(offsets: &arrow_buffer::OffsetBuffer<i32>) -> Option<(usize, usize)> {
    offsets
        .windows(2)
        .enumerate()
        .map(|(row, w)| (row, (w[1] - w[0]).max(0) as usize))
        .max_by_key(|(_, len)| *len)
}
