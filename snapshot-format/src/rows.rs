//! Converting between documents and the Arrow record batches of snapshot files.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use ikv_core::{Error, FieldType, FieldValue, Result, ValueRef};

use crate::manifest::{KEY_COLUMN, SnapshotColumn};

/// A document of a snapshot: primary-key bytes and fields.
pub type SnapshotDoc = (Vec<u8>, BTreeMap<String, FieldValue>);

/// The Arrow type a snapshot column of field type `t` has.
pub fn data_type(t: FieldType) -> DataType {
    match t {
        FieldType::String => DataType::Utf8,
        FieldType::Bytes => DataType::Binary,
        FieldType::Int64 => DataType::Int64,
        FieldType::Float64 => DataType::Float64,
        FieldType::Bool => DataType::Boolean,
    }
}

/// The Arrow schema of a snapshot with these columns.
pub fn schema(columns: &[SnapshotColumn]) -> SchemaRef {
    let mut fields = vec![Field::new(KEY_COLUMN, DataType::Binary, false)];
    for c in columns {
        fields.push(
            Field::new(&c.name, data_type(c.field_type), true).with_metadata(HashMap::from([
                ("ikv.field".to_owned(), c.field.clone()),
                ("ikv.type".to_owned(), c.field_type.name().to_owned()),
            ])),
        );
    }
    Arc::new(Schema::new(fields))
}

enum ColumnBuilder {
    String(StringBuilder),
    Bytes(BinaryBuilder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Bool(BooleanBuilder),
}

impl ColumnBuilder {
    fn new(t: FieldType) -> Self {
        match t {
            FieldType::String => ColumnBuilder::String(StringBuilder::new()),
            FieldType::Bytes => ColumnBuilder::Bytes(BinaryBuilder::new()),
            FieldType::Int64 => ColumnBuilder::Int64(Int64Builder::new()),
            FieldType::Float64 => ColumnBuilder::Float64(Float64Builder::new()),
            FieldType::Bool => ColumnBuilder::Bool(BooleanBuilder::new()),
        }
    }

    /// Appends the value if it has this column's type, else a null.
    fn append(&mut self, value: Option<ValueRef<'_>>) {
        match (self, value) {
            (ColumnBuilder::String(b), Some(ValueRef::String(v))) => b.append_value(v),
            (ColumnBuilder::Bytes(b), Some(ValueRef::Bytes(v))) => b.append_value(v),
            (ColumnBuilder::Int64(b), Some(ValueRef::Int64(v))) => b.append_value(v),
            (ColumnBuilder::Float64(b), Some(ValueRef::Float64(v))) => b.append_value(v),
            (ColumnBuilder::Bool(b), Some(ValueRef::Bool(v))) => b.append_value(v),
            (ColumnBuilder::String(b), _) => b.append_null(),
            (ColumnBuilder::Bytes(b), _) => b.append_null(),
            (ColumnBuilder::Int64(b), _) => b.append_null(),
            (ColumnBuilder::Float64(b), _) => b.append_null(),
            (ColumnBuilder::Bool(b), _) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::String(b) => Arc::new(b.finish()),
            ColumnBuilder::Bytes(b) => Arc::new(b.finish()),
            ColumnBuilder::Int64(b) => Arc::new(b.finish()),
            ColumnBuilder::Float64(b) => Arc::new(b.finish()),
            ColumnBuilder::Bool(b) => Arc::new(b.finish()),
        }
    }
}

/// Builds one record batch in a snapshot's columns, a row at a time (rows in key order).
pub struct BatchBuilder {
    keys: BinaryBuilder,
    builders: Vec<ColumnBuilder>,
    rows: usize,
}

impl BatchBuilder {
    pub fn new(columns: &[SnapshotColumn]) -> BatchBuilder {
        BatchBuilder {
            keys: BinaryBuilder::new(),
            builders: columns
                .iter()
                .map(|c| ColumnBuilder::new(c.field_type))
                .collect(),
            rows: 0,
        }
    }

    /// Rows pushed so far.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends a document; `columns` are the ones the builder was made with.
    pub fn push_doc(
        &mut self,
        columns: &[SnapshotColumn],
        key: &[u8],
        doc: &BTreeMap<String, FieldValue>,
    ) {
        self.keys.append_value(key);
        for (builder, column) in self.builders.iter_mut().zip(columns) {
            builder.append(doc.get(&column.field).map(FieldValue::as_value_ref));
        }
        self.rows += 1;
    }

    /// Appends a row given column by column (`values[i]` for the builder's column `i`; a
    /// value of another type than its column's is written as null).
    pub fn push_values(&mut self, key: &[u8], values: &[Option<ValueRef<'_>>]) {
        self.keys.append_value(key);
        for (i, builder) in self.builders.iter_mut().enumerate() {
            builder.append(values.get(i).copied().flatten());
        }
        self.rows += 1;
    }

    /// The batch of the rows pushed; the builder starts empty again.
    pub fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(self.keys.finish())];
        arrays.extend(self.builders.iter_mut().map(ColumnBuilder::finish));
        self.rows = 0;
        RecordBatch::try_new(schema.clone(), arrays).map_err(|e| Error::Corrupt {
            what: "snapshot batch being built".into(),
            reason: e.to_string(),
        })
    }
}

/// Builds one record batch from documents (in key order).
pub fn to_batch(
    schema: &SchemaRef,
    columns: &[SnapshotColumn],
    docs: &[SnapshotDoc],
) -> Result<RecordBatch> {
    let mut builder = BatchBuilder::new(columns);
    for (key, doc) in docs {
        builder.push_doc(columns, key, doc);
    }
    builder.finish(schema)
}

fn corrupt(reason: impl ToString) -> Error {
    Error::Corrupt {
        what: "snapshot file".into(),
        reason: reason.to_string(),
    }
}

fn downcast<'a, T: 'static>(array: &'a ArrayRef, name: &str) -> Result<&'a T> {
    array
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| corrupt(format!("column {name:?} has an unexpected type")))
}

/// Reads the documents of one record batch, using the manifest's column descriptions.
pub fn from_batch(
    batch: &RecordBatch,
    columns: &[SnapshotColumn],
    out: &mut Vec<SnapshotDoc>,
) -> Result<()> {
    let keys = batch
        .column_by_name(KEY_COLUMN)
        .ok_or_else(|| corrupt(format!("no {KEY_COLUMN} column")))?;
    let keys = downcast::<BinaryArray>(keys, KEY_COLUMN)?;
    let rows = batch.num_rows();
    let start = out.len();
    for i in 0..rows {
        out.push((keys.value(i).to_vec(), BTreeMap::new()));
    }
    for c in columns {
        let array = batch
            .column_by_name(&c.name)
            .ok_or_else(|| corrupt(format!("column {:?} of the manifest is missing", c.name)))?;
        macro_rules! fill {
            ($ty:ty, $make:expr) => {{
                let a = downcast::<$ty>(array, &c.name)?;
                for i in 0..rows {
                    if a.is_valid(i) {
                        out[start + i].1.insert(c.field.clone(), $make(a, i));
                    }
                }
            }};
        }
        match c.field_type {
            FieldType::String => fill!(StringArray, |a: &StringArray, i| FieldValue::String(
                a.value(i).to_owned()
            )),
            FieldType::Bytes => fill!(BinaryArray, |a: &BinaryArray, i| FieldValue::Bytes(
                a.value(i).to_vec()
            )),
            FieldType::Int64 => fill!(Int64Array, |a: &Int64Array, i| FieldValue::Int64(
                a.value(i)
            )),
            FieldType::Float64 => fill!(Float64Array, |a: &Float64Array, i| FieldValue::Float64(
                a.value(i)
            )),
            FieldType::Bool => fill!(BooleanArray, |a: &BooleanArray, i| FieldValue::Bool(
                a.value(i)
            )),
        }
    }
    Ok(())
}
