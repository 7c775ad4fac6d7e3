//! `NativeReader`: the embedded reader. Startup, shutdown and batch reads release the GIL;
//! single gets keep it (a local lookup takes about a microsecond, less than releasing and
//! re-taking the GIL would cost).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::RwLock;
use std::time::{Duration, UNIX_EPOCH};

use ikv_core::FieldValue;
use ikv_reader::{Reader, ReaderOptions};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use crate::arrow::{ArrowBatch, table_of};
use crate::convert::{key_bytes, to_python};
use crate::errors::{raise, to_py};

#[pyclass(frozen, module = "ikvpy._internal")]
pub struct NativeReader {
    options: ReaderOptions,
    reader: RwLock<Option<Reader>>,
}

fn closed() -> PyErr {
    raise(
        "IKVRuntimeError",
        "the reader is not started (call startup()) or was shut down".into(),
    )
}

impl NativeReader {
    fn with<T>(&self, f: impl FnOnce(&Reader) -> PyResult<T>) -> PyResult<T> {
        let guard = self.reader.read().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(r) => f(r),
            None => Err(closed()),
        }
    }

    fn keys(keys: &Bound<'_, PyList>) -> PyResult<Vec<Vec<u8>>> {
        keys.iter()
            .map(|k| key_bytes(&k).map(|b| b.into_owned()))
            .collect()
    }
}

#[pymethods]
impl NativeReader {
    #[new]
    #[pyo3(signature = (store_name, storage_url, mount_directory, storage_options=None, partitions=None, poll_interval_ms=500, memory_index=true))]
    fn new(
        store_name: String,
        storage_url: String,
        mount_directory: PathBuf,
        storage_options: Option<BTreeMap<String, String>>,
        partitions: Option<Vec<u32>>,
        poll_interval_ms: u64,
        memory_index: bool,
    ) -> Self {
        let mut options = ReaderOptions::new(&storage_url, &store_name, mount_directory);
        options.storage_options = crate::convert::storage_options(storage_options);
        options.partitions = partitions.unwrap_or_default();
        options.poll_interval = Duration::from_millis(poll_interval_ms.max(1));
        options.memory_index = memory_index;
        NativeReader {
            options,
            reader: RwLock::new(None),
        }
    }

    /// Opens the local copy and catches up with the bucket (blocking, GIL released).
    fn startup(&self, py: Python<'_>) -> PyResult<()> {
        let mut guard = self.reader.write().unwrap_or_else(|p| p.into_inner());
        if guard.is_some() {
            return Ok(());
        }
        let options = self.options.clone();
        let reader = py.detach(|| Reader::open(options)).map_err(to_py)?;
        *guard = Some(reader);
        Ok(())
    }

    /// Stops polling, flushes the local copy and releases the mount directory.
    fn shutdown(&self, py: Python<'_>) -> PyResult<()> {
        let reader = self
            .reader
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match reader {
            Some(r) => py.detach(|| r.shutdown()).map_err(to_py),
            None => Ok(()),
        }
    }

    fn get_value<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        field: &str,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let key = key_bytes(key)?;
        self.with(|r| match r.get(&key, field).map_err(to_py)? {
            Some(v) => Ok(Some(to_python(py, &v)?)),
            None => Ok(None),
        })
    }

    fn get_bytes<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        field: &str,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let key = key_bytes(key)?;
        self.with(|r| {
            Ok(r.get_bytes(&key, field)
                .map_err(to_py)?
                .map(|b| PyBytes::new(py, &b)))
        })
    }

    fn get_string<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        field: &str,
    ) -> PyResult<Option<Bound<'py, PyString>>> {
        let key = key_bytes(key)?;
        self.with(|r| {
            Ok(r.get_string(&key, field)
                .map_err(to_py)?
                .map(|s| PyString::new(py, &s)))
        })
    }

    fn get_int64(&self, key: &Bound<'_, PyAny>, field: &str) -> PyResult<Option<i64>> {
        let key = key_bytes(key)?;
        self.with(|r| r.get_int64(&key, field).map_err(to_py))
    }

    fn get_float64(&self, key: &Bound<'_, PyAny>, field: &str) -> PyResult<Option<f64>> {
        let key = key_bytes(key)?;
        self.with(|r| r.get_float64(&key, field).map_err(to_py))
    }

    fn get_bool(&self, key: &Bound<'_, PyAny>, field: &str) -> PyResult<Option<bool>> {
        let key = key_bytes(key)?;
        self.with(|r| r.get_bool(&key, field).map_err(to_py))
    }

    /// Key-major values of `fields` for `keys`; `as_string` decodes bytes as UTF-8, otherwise
    /// strings come back as their UTF-8 bytes. Other types are refused.
    fn multiget<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyList>,
        fields: Vec<String>,
        as_string: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let keys = Self::keys(keys)?;
        let values = self.with(|r| py.detach(|| r.multiget(&keys, &fields)).map_err(to_py))?;
        let nf = fields.len().max(1);
        let out = PyList::empty(py);
        for (i, v) in values.into_iter().enumerate() {
            let field = &fields[i % nf];
            match v {
                None => out.append(py.None())?,
                Some(FieldValue::String(s)) if as_string => out.append(PyString::new(py, &s))?,
                Some(FieldValue::String(s)) => out.append(PyBytes::new(py, s.as_bytes()))?,
                Some(FieldValue::Bytes(b)) if as_string => match String::from_utf8(b) {
                    Ok(s) => out.append(PyString::new(py, &s))?,
                    Err(_) => {
                        return Err(raise(
                            "IKVTypeError",
                            format!(
                                "field {field:?} holds bytes that are not valid UTF-8; read it as bytes"
                            ),
                        ));
                    }
                },
                Some(FieldValue::Bytes(b)) => out.append(PyBytes::new(py, &b))?,
                Some(other) => {
                    let want = if as_string { "string" } else { "bytes" };
                    return Err(raise(
                        "IKVTypeError",
                        format!(
                            "field {field:?} holds a {} value, not {want}",
                            other.field_type()
                        ),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Keys × fields as an Arrow record batch (exported through the Arrow C data interface).
    fn multiget_batch(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyList>,
        fields: Vec<String>,
    ) -> PyResult<ArrowBatch> {
        let keys = Self::keys(keys)?;
        let values = self.with(|r| py.detach(|| r.multiget(&keys, &fields)).map_err(to_py))?;
        py.detach(|| table_of(&keys, &fields, values))
            .map_err(|m| raise("IKVTypeError", m))
    }

    /// Freshness of every mounted partition.
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let status = self.with(|r| Ok(r.status()))?;
        let out = PyList::empty(py);
        let secs = |t: Option<std::time::SystemTime>| {
            t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64())
        };
        for s in status {
            let d = PyDict::new(py);
            d.set_item("partition", s.partition)?;
            d.set_item("applied_sequence", s.applied_sequence)?;
            d.set_item("snapshot_sequence", s.snapshot_sequence)?;
            d.set_item("caught_up_at", secs(s.caught_up_at))?;
            d.set_item("last_successful_poll", secs(s.last_successful_poll))?;
            d.set_item("lag_deltas", s.lag_deltas)?;
            d.set_item("last_error", s.last_error)?;
            d.set_item("gap", s.gap)?;
            out.append(d)?;
        }
        Ok(out)
    }
}
