//! Converting between documents and the Arrow record batches of snapshot files.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::builder::BinaryBuilder;
use arrow_array::{ArrayRef, BinaryArray, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use ikv_core::arrow_column::{ColumnBuilder, TypedColumn, data_type};
use ikv_core::{Error, FieldValue, Result, ValueRef};

use crate::manifest::{KEY_COLUMN, SnapshotColumn};

/// A document of a snapshot: primary-key bytes and fields.
pub type SnapshotDoc = (Vec<u8>, BTreeMap<String, FieldValue>);

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
        let column = TypedColumn::of(array.as_ref(), c.field_type)
            .ok_or_else(|| corrupt(format!("column {:?} has an unexpected type", c.name)))?;
        for (i, (_, doc)) in out[start..].iter_mut().enumerate() {
            if let Some(v) = column.value(i) {
                doc.insert(c.field.clone(), v.to_owned_value());
            }
        }
    }
    Ok(())
}
