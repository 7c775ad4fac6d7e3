//! Python values ↔ ikv values.

use std::borrow::Cow;
use std::collections::BTreeMap;

use ikv_core::{Document, FieldType, FieldValue, Operation, StorageOptions};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyString};

use crate::errors::raise;

/// A primary key given as `bytes` or `str` (a string key equals its UTF-8 bytes).
pub fn key_bytes<'a>(key: &'a Bound<'_, PyAny>) -> PyResult<Cow<'a, [u8]>> {
    if let Ok(b) = key.cast::<PyBytes>() {
        return Ok(Cow::Borrowed(b.as_bytes()));
    }
    if let Ok(s) = key.cast::<PyString>() {
        return match s.to_cow() {
            Ok(s) => Ok(Cow::Owned(s.into_owned().into_bytes())),
            Err(_) => Err(not_unicode("a primary key")),
        };
    }
    Err(raise(
        "IKVTypeError",
        format!(
            "a primary key must be str or bytes, not {}",
            key.get_type().name()?
        ),
    ))
}

/// A str that UTF-8 cannot encode (a lone surrogate) is bad input, not an encoding crash.
fn not_unicode(what: &str) -> PyErr {
    raise(
        "IKVValueError",
        format!(
            "{what} is not valid Unicode text (it holds a lone surrogate); pass bytes for binary data"
        ),
    )
}

/// A field value from the document builder: `(type code, value)`.
fn field_value(name: &str, code: u8, value: &Bound<'_, PyAny>) -> PyResult<FieldValue> {
    let wrong = |want: &str| -> PyResult<FieldValue> {
        Err(raise(
            "IKVTypeError",
            format!(
                "field {name:?}: expected {want}, got {}",
                value.get_type().name()?
            ),
        ))
    };
    let ty = FieldType::from_code(code).ok_or_else(|| {
        raise(
            "IKVValueError",
            format!("field {name:?}: unknown type code {code}"),
        )
    })?;
    Ok(match ty {
        FieldType::String => match value.cast::<PyString>() {
            Ok(s) => FieldValue::String(
                s.to_cow()
                    .map_err(|_| not_unicode(&format!("field {name:?}")))?
                    .into_owned(),
            ),
            Err(_) => return wrong("str"),
        },
        FieldType::Bytes => match value.cast::<PyBytes>() {
            Ok(b) => FieldValue::Bytes(b.as_bytes().to_vec()),
            Err(_) => return wrong("bytes"),
        },
        FieldType::Int64 => {
            if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
                return wrong("int");
            }
            FieldValue::Int64(value.extract::<i64>().map_err(|_| {
                raise(
                    "IKVValueError",
                    format!("field {name:?}: {value} does not fit in 64 bits"),
                )
            })?)
        }
        FieldType::Float64 => {
            if value.is_instance_of::<PyBool>()
                || !(value.is_instance_of::<PyFloat>() || value.is_instance_of::<PyInt>())
            {
                return wrong("float");
            }
            FieldValue::Float64(value.extract::<f64>()?)
        }
        FieldType::Bool => match value.cast::<PyBool>() {
            Ok(b) => FieldValue::Bool(b.is_true()),
            Err(_) => return wrong("bool"),
        },
    })
}

/// A document as the Python builder hands it over: a list of `(name, type code, value)`.
pub fn document(fields: &Bound<'_, PyAny>) -> PyResult<Document> {
    let mut doc = Document::new();
    for item in fields.try_iter()? {
        let (name, code, value): (String, u8, Bound<'_, PyAny>) = item?.extract()?;
        let v = field_value(&name, code, &value)?;
        doc.put(name, v);
    }
    Ok(doc)
}

/// An operation tuple from the Python writer: `(name, ...)`.
pub fn operation(op: &Bound<'_, PyAny>) -> PyResult<Operation> {
    let name: String = op.get_item(0)?.extract()?;
    let names = |i: usize| -> PyResult<Vec<String>> { op.get_item(i)?.extract() };
    Ok(match name.as_str() {
        "upsert_fields" => {
            let document = document(&op.get_item(1)?)?;
            // A third item is the write's time to live (`None`: the store's default), a
            // fourth its event time in µs.
            let item = |i: usize| -> PyResult<Option<Bound<'_, PyAny>>> {
                Ok(if op.len()? > i {
                    Some(op.get_item(i)?)
                } else {
                    None
                })
            };
            let ttl_seconds: Option<u64> = item(2)?.map(|v| v.extract()).transpose()?.flatten();
            let event_time_us: Option<i64> = item(3)?.map(|v| v.extract()).transpose()?.flatten();
            match (ttl_seconds, event_time_us) {
                (None, None) => Operation::UpsertFields(document),
                _ => Operation::UpsertFieldsWith {
                    document,
                    ttl_seconds,
                    event_time_us,
                },
            }
        }
        "delete_fields" => Operation::DeleteFields {
            document: document(&op.get_item(1)?)?,
            field_names: names(2)?,
        },
        "delete_document" => Operation::DeleteDocument(document(&op.get_item(1)?)?),
        "drop_fields_by_name" => Operation::DropFieldsByName(names(1)?),
        "drop_fields_by_name_prefix" => Operation::DropFieldsByNamePrefix(names(1)?),
        "drop_all_fields" => Operation::DropAllFields,
        other => {
            return Err(raise(
                "IKVValueError",
                format!("unknown operation {other:?}"),
            ));
        }
    })
}

pub fn storage_options(options: Option<BTreeMap<String, String>>) -> StorageOptions {
    StorageOptions {
        options: options.unwrap_or_default(),
        disable_retries: false,
    }
}

/// A value as a Python object.
pub fn to_python<'py>(py: Python<'py>, value: &FieldValue) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        FieldValue::String(s) => PyString::new(py, s).into_any(),
        FieldValue::Bytes(b) => PyBytes::new(py, b).into_any(),
        FieldValue::Int64(i) => i.into_pyobject(py)?.into_any(),
        FieldValue::Float64(f) => f.into_pyobject(py)?.into_any(),
        FieldValue::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
    })
}
