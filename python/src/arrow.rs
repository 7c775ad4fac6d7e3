//! The columnar multiget result, handed to pyarrow through the Arrow PyCapsule interface
//! (`__arrow_c_array__`, the C data interface): no copy, and pyarrow stays optional.

use std::sync::{Arc, Mutex};

use arrow_array::builder::BinaryBuilder;
use arrow_array::ffi::{FFI_ArrowArray, FFI_ArrowSchema, to_ffi};
use arrow_array::{Array, ArrayRef, RecordBatch, StructArray};
use arrow_schema::{DataType, Field, Schema};
use ikv_core::arrow_column::ColumnBuilder;
use ikv_core::{FieldType, FieldValue, ValueRef};
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyTuple};

use crate::errors::raise;

/// One record batch waiting to be imported by pyarrow (once).
#[pyclass(frozen, module = "ikvpy._internal")]
pub struct ArrowBatch {
    batch: Mutex<Option<RecordBatch>>,
}

#[pymethods]
impl ArrowBatch {
    /// The Arrow PyCapsule interface: `(schema capsule, array capsule)`.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_array__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let _ = requested_schema; // the batch's own schema is the only one offered
        let batch = self
            .batch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| raise("IKVRuntimeError", "this batch was already imported".into()))?;
        let array: StructArray = batch.into();
        let (ffi_array, ffi_schema): (FFI_ArrowArray, FFI_ArrowSchema) =
            to_ffi(&array.to_data()).map_err(|e| raise("IKVRuntimeError", e.to_string()))?;
        let schema = PyCapsule::new_with_value(py, ffi_schema, c"arrow_schema")?;
        let array = PyCapsule::new_with_value(py, ffi_array, c"arrow_array")?;
        PyTuple::new(py, [schema.into_any(), array.into_any()])
    }
}

/// `_ikv_key` (binary) plus one column per field, typed by the values found; a field whose
/// values have different types is refused (say which), a field never found is all-null.
pub fn table_of(
    keys: &[Vec<u8>],
    fields: &[String],
    values: Vec<Option<FieldValue>>,
) -> Result<ArrowBatch, String> {
    let nf = fields.len();
    let mut types: Vec<Option<FieldType>> = vec![None; nf];
    for (i, v) in values.iter().enumerate() {
        if let Some(v) = v {
            let slot = &mut types[i % nf];
            match slot {
                None => *slot = Some(v.field_type()),
                Some(t) if *t != v.field_type() => {
                    return Err(format!(
                        "field {:?} holds both {t} and {} values; a column needs one type (read it with get_value)",
                        fields[i % nf],
                        v.field_type()
                    ));
                }
                Some(_) => {}
            }
        }
    }
    // `None`: a field no document has, all null.
    let mut columns: Vec<Option<ColumnBuilder>> =
        types.iter().map(|t| t.map(ColumnBuilder::new)).collect();
    for (i, v) in values.iter().enumerate() {
        if let Some(column) = &mut columns[i % nf] {
            column.append(v.as_ref().map(FieldValue::as_value_ref));
        }
    }
    let mut key_col = BinaryBuilder::new();
    for k in keys {
        key_col.append_value(k);
    }
    let mut schema_fields = vec![Field::new("_ikv_key", DataType::Binary, false)];
    let mut arrays: Vec<ArrayRef> = vec![Arc::new(key_col.finish())];
    for (name, column) in fields.iter().zip(columns) {
        let array: ArrayRef = match column {
            None => Arc::new(arrow_array::NullArray::new(keys.len())),
            Some(mut b) => b.finish(),
        };
        schema_fields.push(Field::new(name, array.data_type().clone(), true));
        arrays.push(array);
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(schema_fields)), arrays)
        .map_err(|e| e.to_string())?;
    Ok(ArrowBatch {
        batch: Mutex::new(Some(batch)),
    })
}

/// One column of a scan's batch: typed by the first value found, nulls before it counted.
enum ScanColumn {
    Pending(usize),
    Typed(FieldType, ColumnBuilder),
}

/// Builds a scan's record batch a document at a time, straight from the values borrowed from
/// the mapped copy: `_ikv_key` (binary), then one column per field typed by its values in
/// this batch (a field none of the batch's documents has is all-null, of Arrow type null).
pub struct ScanBatchBuilder {
    fields: Vec<String>,
    keys: BinaryBuilder,
    columns: Vec<ScanColumn>,
    rows: usize,
}

impl ScanBatchBuilder {
    pub fn new(fields: &[String]) -> ScanBatchBuilder {
        ScanBatchBuilder {
            fields: fields.to_vec(),
            keys: BinaryBuilder::new(),
            columns: fields.iter().map(|_| ScanColumn::Pending(0)).collect(),
            rows: 0,
        }
    }

    /// One document: its key and one value per field (the fields given to `new`).
    pub fn append(&mut self, key: &[u8], values: &[Option<ValueRef<'_>>]) -> Result<(), String> {
        for (j, (column, value)) in self.columns.iter_mut().zip(values).enumerate() {
            match column {
                ScanColumn::Pending(nulls) => match value {
                    None => *nulls += 1,
                    Some(v) => {
                        let mut builder = ColumnBuilder::new(v.field_type());
                        for _ in 0..*nulls {
                            builder.append(None);
                        }
                        builder.append(Some(*v));
                        *column = ScanColumn::Typed(v.field_type(), builder);
                    }
                },
                ScanColumn::Typed(t, builder) => {
                    if let Some(v) = value
                        && v.field_type() != *t
                    {
                        return Err(format!(
                            "field {:?} holds both {t} and {} values; a column needs one type (read it with get_value)",
                            self.fields[j],
                            v.field_type()
                        ));
                    }
                    builder.append(*value);
                }
            }
        }
        self.keys.append_value(key);
        self.rows += 1;
        Ok(())
    }

    pub fn finish(mut self) -> Result<ArrowBatch, String> {
        let mut schema_fields = vec![Field::new("_ikv_key", DataType::Binary, false)];
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(self.keys.finish())];
        for (name, column) in self.fields.iter().zip(self.columns) {
            let array: ArrayRef = match column {
                ScanColumn::Pending(_) => Arc::new(arrow_array::NullArray::new(self.rows)),
                ScanColumn::Typed(_, mut b) => b.finish(),
            };
            schema_fields.push(Field::new(name, array.data_type().clone(), true));
            arrays.push(array);
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(schema_fields)), arrays)
            .map_err(|e| e.to_string())?;
        Ok(ArrowBatch {
            batch: Mutex::new(Some(batch)),
        })
    }
}
