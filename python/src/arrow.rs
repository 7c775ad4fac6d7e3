//! The columnar multiget result, handed to pyarrow through the Arrow PyCapsule interface
//! (`__arrow_c_array__`, the C data interface): no copy, and pyarrow stays optional.

use std::sync::{Arc, Mutex};

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
};
use arrow_array::ffi::{FFI_ArrowArray, FFI_ArrowSchema, to_ffi};
use arrow_array::{Array, ArrayRef, RecordBatch, StructArray};
use arrow_schema::{DataType, Field, Schema};
use ikv_core::{FieldType, FieldValue};
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

enum Column {
    Null,
    String(StringBuilder),
    Bytes(BinaryBuilder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Bool(BooleanBuilder),
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
    let mut columns: Vec<Column> = types
        .iter()
        .map(|t| match t {
            None => Column::Null,
            Some(FieldType::String) => Column::String(StringBuilder::new()),
            Some(FieldType::Bytes) => Column::Bytes(BinaryBuilder::new()),
            Some(FieldType::Int64) => Column::Int64(Int64Builder::new()),
            Some(FieldType::Float64) => Column::Float64(Float64Builder::new()),
            Some(FieldType::Bool) => Column::Bool(BooleanBuilder::new()),
        })
        .collect();
    for (i, v) in values.into_iter().enumerate() {
        match (&mut columns[i % nf], v) {
            (Column::Null, _) => {}
            (Column::String(b), Some(FieldValue::String(s))) => b.append_value(s),
            (Column::Bytes(b), Some(FieldValue::Bytes(s))) => b.append_value(s),
            (Column::Int64(b), Some(FieldValue::Int64(s))) => b.append_value(s),
            (Column::Float64(b), Some(FieldValue::Float64(s))) => b.append_value(s),
            (Column::Bool(b), Some(FieldValue::Bool(s))) => b.append_value(s),
            (Column::String(b), _) => b.append_null(),
            (Column::Bytes(b), _) => b.append_null(),
            (Column::Int64(b), _) => b.append_null(),
            (Column::Float64(b), _) => b.append_null(),
            (Column::Bool(b), _) => b.append_null(),
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
            Column::Null => Arc::new(arrow_array::NullArray::new(keys.len())),
            Column::String(mut b) => Arc::new(b.finish()),
            Column::Bytes(mut b) => Arc::new(b.finish()),
            Column::Int64(mut b) => Arc::new(b.finish()),
            Column::Float64(mut b) => Arc::new(b.finish()),
            Column::Bool(mut b) => Arc::new(b.finish()),
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
