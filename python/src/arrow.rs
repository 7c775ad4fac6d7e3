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

impl ArrowBatch {
    pub fn new(batch: RecordBatch) -> ArrowBatch {
        ArrowBatch {
            batch: Mutex::new(Some(batch)),
        }
    }
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
    let mut batch = BatchBuilder::new(fields);
    let mut row: Vec<Option<ValueRef<'_>>> = Vec::with_capacity(nf);
    for (i, key) in keys.iter().enumerate() {
        row.clear();
        row.extend(
            values[i * nf..(i + 1) * nf]
                .iter()
                .map(|v| v.as_ref().map(FieldValue::as_value_ref)),
        );
        batch.append(key, &row)?;
    }
    batch.finish()
}

/// One column of a batch being built: typed by the first value found, nulls before it
/// counted.
enum BatchColumn {
    Pending(usize),
    Typed(FieldType, ColumnBuilder),
}

/// Builds a record batch a document at a time (a scan's batches straight from the values
/// borrowed from the mapped copy, a columnar multiget's from its values): `_ikv_key`
/// (binary), then one column per field typed by its values in this batch (a field none of the
/// batch's documents has is all-null, of Arrow type null; one holding two types is refused,
/// naming it).
pub struct BatchBuilder {
    fields: Vec<String>,
    keys: BinaryBuilder,
    columns: Vec<BatchColumn>,
    rows: usize,
}

impl BatchBuilder {
    pub fn new(fields: &[String]) -> BatchBuilder {
        BatchBuilder {
            fields: fields.to_vec(),
            keys: BinaryBuilder::new(),
            columns: fields.iter().map(|_| BatchColumn::Pending(0)).collect(),
            rows: 0,
        }
    }

    /// One document: its key and one value per field (the fields given to `new`).
    pub fn append(&mut self, key: &[u8], values: &[Option<ValueRef<'_>>]) -> Result<(), String> {
        for (j, (column, value)) in self.columns.iter_mut().zip(values).enumerate() {
            match column {
                BatchColumn::Pending(nulls) => match value {
                    None => *nulls += 1,
                    Some(v) => {
                        let mut builder = ColumnBuilder::new(v.field_type());
                        for _ in 0..*nulls {
                            builder.append(None);
                        }
                        builder.append(Some(*v));
                        *column = BatchColumn::Typed(v.field_type(), builder);
                    }
                },
                BatchColumn::Typed(t, builder) => {
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
                BatchColumn::Pending(_) => Arc::new(arrow_array::NullArray::new(self.rows)),
                BatchColumn::Typed(_, mut b) => b.finish(),
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
