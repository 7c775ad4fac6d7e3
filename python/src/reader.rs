//! `NativeReader`: the embedded reader. Startup, shutdown and batch reads release the GIL;
//! single gets keep it (a lookup in the mapped shared copy takes about a microsecond, less
//! than releasing and re-taking the GIL would cost).
//!
//! Processes: every reader of a host on one mount directory shares one local copy (the first
//! owns it, the others attach). A reader started before `fork()` reopens in the child on
//! first use, attached to the same copy, and so keeps seeing new writes; a reader made from a
//! pickle (`lazy`) starts on first use.
//!
//! Lock design (no call ever waits on a lock, a channel or the runtime while holding the
//! GIL): the reader's state is an atomically swapped pointer. Reads load it without locking
//! and fail at once with `IKVRuntimeError` when it is not running; `startup()` and
//! `shutdown()` swap it (a racing second call fails at once) and do their slow work with the
//! GIL released. A shut-down reader is freed once the reads still using it return.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use arc_swap::ArcSwap;
use ikv_core::{FieldType, FieldValue};
use ikv_reader::{Pin, Reader, ReaderOptions};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use crate::arrow::{ArrowBatch, BatchBuilder, table_of};
use crate::convert::{key_bytes, to_python};
use crate::errors::{self, raise, to_py};
use crate::fork;

enum Lifecycle {
    NotStarted,
    Starting,
    Running {
        reader: Arc<Reader>,
        /// Fork generation the reader was opened in; in a later one its poller is gone.
        generation: u64,
    },
    ShuttingDown,
    ShutDown,
}

#[pyclass(frozen, module = "ikvpy._internal")]
pub struct NativeReader {
    options: ReaderOptions,
    state: ArcSwap<Lifecycle>,
    /// Start on first use (a reader rebuilt from a pickle in another process).
    lazy: bool,
}

fn not_running(state: &Lifecycle) -> PyErr {
    let message = match state {
        Lifecycle::NotStarted => "the reader is not started: call startup()",
        Lifecycle::Starting => {
            "the reader is starting in another thread: wait for its startup() to return"
        }
        Lifecycle::ShuttingDown | Lifecycle::ShutDown => {
            "the reader was shut down: call startup() to open it again"
        }
        Lifecycle::Running { .. } => "the reader is running",
    };
    raise("IKVRuntimeError", message.into())
}

/// Batches up to this many values are read with the GIL held (see `multiget_small`).
const SMALL_BATCH_VALUES: usize = 1024;

/// How long `shutdown()` waits (GIL released) for reads still using the reader before it
/// leaves them to free it.
const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(30);

/// Waits for the other users of `reader` to finish, then drops it (closing the local copy and
/// releasing the mount directory). Call with the GIL released.
fn release(reader: Arc<Reader>) {
    if !ikv_reader::drop_when_unshared(reader, SHUTDOWN_PATIENCE, Duration::from_millis(1)) {
        tracing::warn!("reads still use a shut-down reader; it closes when they finish");
    }
}

impl NativeReader {
    /// The running reader, or `IKVRuntimeError` at once. Never blocks, except the first call
    /// in a forked child or in a lazy reader, which opens the reader (GIL released).
    fn running(&self, py: Python<'_>) -> PyResult<Arc<Reader>> {
        match &**self.state.load() {
            Lifecycle::Running { reader, generation } if *generation == fork::generation() => {
                return Ok(reader.clone());
            }
            Lifecycle::Running { .. } => {}
            Lifecycle::NotStarted if self.lazy => {}
            other => return Err(not_running(other)),
        }
        self.startup(py)?;
        match &**self.state.load() {
            Lifecycle::Running { reader, .. } => Ok(reader.clone()),
            other => Err(not_running(other)),
        }
    }

    /// One single-key read, with the GIL held: a lookup in the mapped copy costs less than
    /// handing the GIL over (a page not yet in memory is read from the local disk).
    fn lookup<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&Reader) -> ikv_core::Result<T> + Send,
    ) -> PyResult<T> {
        let state = self.state.load();
        match &**state {
            Lifecycle::Running { reader, generation } if *generation == fork::generation() => {
                f(reader).map_err(to_py)
            }
            _ => {
                drop(state);
                let reader = self.running(py)?;
                f(&reader).map_err(to_py)
            }
        }
    }

    /// Key-major values of `fields` for `keys`; `as_string` decodes bytes as UTF-8, otherwise
    /// strings come back as their UTF-8 bytes. Other types are refused.
    fn multiget_keys<'py>(
        &self,
        py: Python<'py>,
        keys: Vec<Vec<u8>>,
        fields: Vec<String>,
        as_string: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        if keys.len() * fields.len() <= SMALL_BATCH_VALUES {
            return self.multiget_small(py, &keys, &fields, as_string);
        }
        let reader = self.running(py)?;
        let values = py
            .detach(|| reader.multiget(&keys, &fields))
            .map_err(to_py)?;
        drop(reader);
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

    /// A small batch read with the GIL held, Python objects made straight from the shared
    /// copy's bytes: releasing the GIL and copying each value first would cost more than the
    /// lookups (about a microsecond per key).
    fn multiget_small<'py>(
        &self,
        py: Python<'py>,
        keys: &[Vec<u8>],
        fields: &[String],
        as_string: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let reader = self.running(py)?;
        let nf = fields.len();
        let mut out: Vec<Option<Bound<'py, PyAny>>> = vec![None; keys.len() * nf];
        let mut refused: Option<PyErr> = None;
        reader
            .multiget_visit(keys, fields, |i, j, stored| {
                let value = match stored.field_type {
                    FieldType::String | FieldType::Bytes if !as_string => {
                        PyBytes::new(py, stored.payload).into_any()
                    }
                    FieldType::String | FieldType::Bytes => {
                        match std::str::from_utf8(stored.payload) {
                            Ok(s) => PyString::new(py, s).into_any(),
                            Err(_) => {
                                refused.get_or_insert_with(|| {
                                    raise(
                                        "IKVTypeError",
                                        format!(
                                            "field {:?} holds bytes that are not valid UTF-8; read it as bytes",
                                            fields[j]
                                        ),
                                    )
                                });
                                return Ok(());
                            }
                        }
                    }
                    other => {
                        let want = if as_string { "string" } else { "bytes" };
                        refused.get_or_insert_with(|| {
                            raise(
                                "IKVTypeError",
                                format!("field {:?} holds a {other} value, not {want}", fields[j]),
                            )
                        });
                        return Ok(());
                    }
                };
                out[i * nf + j] = Some(value);
                Ok(())
            })
            .map_err(to_py)?;
        if let Some(e) = refused {
            return Err(e);
        }
        PyList::new(
            py,
            out.into_iter()
                .map(|v| v.unwrap_or_else(|| py.None().into_bound(py))),
        )
    }

    fn keys(keys: &Bound<'_, PyList>) -> PyResult<Vec<Vec<u8>>> {
        keys.iter()
            .map(|k| key_bytes(&k).map(|b| b.into_owned()))
            .collect()
    }

    /// Replaces the state if it is still `expected` (by identity); false when another thread
    /// changed it first.
    fn transition(&self, expected: &Arc<Lifecycle>, next: Lifecycle) -> bool {
        let previous = self.state.compare_and_swap(expected, Arc::new(next));
        Arc::ptr_eq(&*previous, expected)
    }
}

/// The keys of one of the split multiget lists: all bytes, or all str.
fn typed_keys(values: &Bound<'_, PyAny>, what: &str, bytes: bool) -> PyResult<Vec<Vec<u8>>> {
    let type_name =
        |v: &Bound<'_, PyAny>| -> PyResult<String> { Ok(v.get_type().name()?.to_string()) };
    if values.is_instance_of::<PyBytes>() || values.is_instance_of::<PyString>() {
        return Err(raise(
            "IKVTypeError",
            format!("{what} must be a list, not {}", type_name(values)?),
        ));
    }
    let Ok(items) = values.try_iter() else {
        return Err(raise(
            "IKVTypeError",
            format!("{what} must be a list, not {}", type_name(values)?),
        ));
    };
    let mut out = Vec::new();
    for item in items {
        let item = item?;
        let ok = if bytes {
            item.is_instance_of::<PyBytes>()
        } else {
            item.is_instance_of::<PyString>()
        };
        if !ok {
            let want = if bytes { "bytes" } else { "str" };
            return Err(raise(
                "IKVTypeError",
                format!("{what} must hold {want}, not {}", type_name(&item)?),
            ));
        }
        out.push(key_bytes(&item)?.into_owned());
    }
    Ok(out)
}

impl Drop for NativeReader {
    fn drop(&mut self) {
        let state = self.state.swap(Arc::new(Lifecycle::ShutDown));
        match &*state {
            Lifecycle::Running { generation, .. } if *generation != fork::generation() => {
                // Inherited from the parent: its poller thread is not in this process, and
                // dropping the reader would wait for it forever.
                std::mem::forget(state);
            }
            Lifecycle::Running { reader, .. } => {
                let reader = reader.clone();
                drop(state);
                // Stopping waits for the poller's current delta: never with the GIL held.
                Python::attach(|py| py.detach(|| release(reader)));
            }
            _ => {}
        }
    }
}

#[pymethods]
impl NativeReader {
    #[new]
    #[pyo3(signature = (store_name, storage_url, mount_directory, storage_options=None, partitions=None, poll_interval_ms=500, lazy=false, idle_poll_interval_ms=3000, wake_topic=None, checkpoint=None, as_of_ms=None))]
    #[allow(clippy::too_many_arguments)] // Python's keyword arguments
    fn new(
        store_name: String,
        storage_url: String,
        mount_directory: PathBuf,
        storage_options: Option<BTreeMap<String, String>>,
        partitions: Option<Vec<u32>>,
        poll_interval_ms: u64,
        lazy: bool,
        idle_poll_interval_ms: u64,
        wake_topic: Option<String>,
        checkpoint: Option<String>,
        as_of_ms: Option<u64>,
    ) -> PyResult<Self> {
        let mut options = ReaderOptions::new(&storage_url, &store_name, mount_directory);
        options.storage_options = crate::convert::storage_options(storage_options);
        options.partitions = partitions.unwrap_or_default();
        options.poll_interval = Duration::from_millis(poll_interval_ms.max(1));
        options.idle_poll_interval = Duration::from_millis(idle_poll_interval_ms.max(1));
        options.wake_topic = wake_topic;
        options.pin = match (checkpoint, as_of_ms) {
            (Some(_), Some(_)) => {
                return Err(pyo3::exceptions::PyValueError::new_err(
                    "a reader is pinned to a checkpoint or to a time (as_of), not both",
                ));
            }
            (Some(name), None) => Some(Pin::Checkpoint(name)),
            (None, Some(ms)) => Some(Pin::AsOf(std::time::UNIX_EPOCH + Duration::from_millis(ms))),
            (None, None) => None,
        };
        Ok(NativeReader {
            options,
            state: ArcSwap::from_pointee(Lifecycle::NotStarted),
            lazy,
        })
    }

    /// Opens the local copy (attaching to the one another process of the host serves) and
    /// catches up with the bucket (blocking, GIL released). Does nothing when already
    /// running; fails at once while another thread starts or shuts down this reader. In a
    /// forked child, reopens a reader started before the fork.
    fn startup(&self, py: Python<'_>) -> PyResult<()> {
        let current = self.state.load_full();
        match &*current {
            Lifecycle::Running { generation, .. } if *generation == fork::generation() => {
                return Ok(());
            }
            Lifecycle::Running { .. } => {
                // Inherited at a fork: its poller is not in this process, and dropping it
                // would wait for that thread forever. Never freed here.
                std::mem::forget(current.clone());
            }
            Lifecycle::Starting | Lifecycle::ShuttingDown => return Err(not_running(&current)),
            Lifecycle::NotStarted | Lifecycle::ShutDown => {}
        }
        if !self.transition(&current, Lifecycle::Starting) {
            return Err(not_running(&self.state.load()));
        }
        let options = self.options.clone();
        match py.detach(|| Reader::open(options)) {
            Ok(reader) => {
                self.state.store(Arc::new(Lifecycle::Running {
                    reader: Arc::new(reader),
                    generation: fork::generation(),
                }));
                Ok(())
            }
            Err(e) => {
                self.state.store(Arc::new(Lifecycle::NotStarted));
                Err(to_py(e))
            }
        }
    }

    /// Stops polling, flushes the local copy and releases the mount directory once the reads
    /// in progress return. Reads after it fail at once. In a forked child, only forgets the
    /// inherited reader (its poller is not in this process).
    fn shutdown(&self, py: Python<'_>) -> PyResult<()> {
        let current = self.state.load_full();
        let Lifecycle::Running { reader, generation } = &*current else {
            return match &*current {
                Lifecycle::Starting | Lifecycle::ShuttingDown => Err(not_running(&current)),
                _ => Ok(()),
            };
        };
        if *generation != fork::generation() {
            self.state.store(Arc::new(Lifecycle::ShutDown));
            std::mem::forget(current);
            return Ok(());
        }
        let reader = reader.clone();
        if !self.transition(&current, Lifecycle::ShuttingDown) {
            return Err(not_running(&self.state.load()));
        }
        drop(current);
        let result = py.detach(|| {
            let stopped = reader.stop();
            release(reader);
            stopped
        });
        self.state.store(Arc::new(Lifecycle::ShutDown));
        result.map_err(to_py)
    }

    fn get_value<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        field: &str,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let key = key_bytes(key)?;
        match self.lookup(py, |r| r.get(&key, field))? {
            Some(v) => Ok(Some(to_python(py, &v)?)),
            None => Ok(None),
        }
    }

    fn get_bytes<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        field: &str,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let key = key_bytes(key)?;
        Ok(self
            .lookup(py, |r| r.get_bytes(&key, field))?
            .map(|b| PyBytes::new(py, &b)))
    }

    fn get_string<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        field: &str,
    ) -> PyResult<Option<Bound<'py, PyString>>> {
        let key = key_bytes(key)?;
        Ok(self
            .lookup(py, |r| r.get_string(&key, field))?
            .map(|s| PyString::new(py, &s)))
    }

    fn get_int64(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        field: &str,
    ) -> PyResult<Option<i64>> {
        let key = key_bytes(key)?;
        self.lookup(py, |r| r.get_int64(&key, field))
    }

    fn get_float64(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        field: &str,
    ) -> PyResult<Option<f64>> {
        let key = key_bytes(key)?;
        self.lookup(py, |r| r.get_float64(&key, field))
    }

    fn get_bool(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        field: &str,
    ) -> PyResult<Option<bool>> {
        let key = key_bytes(key)?;
        self.lookup(py, |r| r.get_bool(&key, field))
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
        self.multiget_keys(py, keys, fields, as_string)
    }

    /// As `multiget`, for bytes keys then str keys, each list checked here (one type check
    /// per key costs less in Rust than the read itself; in Python it cost more).
    fn multiget_split<'py>(
        &self,
        py: Python<'py>,
        bytes_keys: &Bound<'py, PyAny>,
        str_keys: &Bound<'py, PyAny>,
        fields: Vec<String>,
        as_string: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let mut keys = typed_keys(bytes_keys, "bytes_primary_keys", true)?;
        keys.extend(typed_keys(str_keys, "str_primary_keys", false)?);
        self.multiget_keys(py, keys, fields, as_string)
    }

    /// Keys × fields as an Arrow record batch (exported through the Arrow C data interface).
    fn multiget_batch(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyList>,
        fields: Vec<String>,
    ) -> PyResult<ArrowBatch> {
        let keys = Self::keys(keys)?;
        let reader = self.running(py)?;
        let values = py
            .detach(|| reader.multiget(&keys, &fields))
            .map_err(to_py)?;
        drop(reader);
        py.detach(|| table_of(&keys, &fields, values))
            .map_err(|m| raise("IKVTypeError", m))
    }

    /// One Feast feature view's features of `keys` (serialized entity keys) as an Arrow batch:
    /// a column per field of `fields` decoded as `kinds` says (`feast_read.rs`), the row's
    /// event time read from `ts_field`; a row without one, or older than `expired_before`
    /// (microseconds since the epoch), is all null. Columns are named `columns` (default: the
    /// fields' names). The GIL is released throughout.
    #[pyo3(signature = (keys, fields, kinds, ts_field, expired_before, columns=None, int_key=None))]
    #[allow(clippy::too_many_arguments)] // Python's arguments
    fn feast_read(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyList>,
        fields: Vec<String>,
        kinds: Vec<u8>,
        ts_field: String,
        expired_before: Option<i64>,
        columns: Option<Vec<String>>,
        int_key: Option<(String, Vec<u8>, Vec<i64>)>,
    ) -> PyResult<ArrowBatch> {
        if kinds.len() != fields.len() {
            return Err(raise(
                "IKVValueError",
                format!("{} kinds for {} fields", kinds.len(), fields.len()),
            ));
        }
        let kinds = kinds
            .iter()
            .map(|k| {
                crate::feast_read::Kind::from_code(*k)
                    .ok_or_else(|| raise("IKVValueError", format!("unknown column kind {k}")))
            })
            .collect::<PyResult<Vec<_>>>()?;
        // One int64 join key: the keys are its values after one prefix (Feast's key names and
        // the value's type and length), built here, and its column leads the batch.
        let (keys, key_column) = match int_key {
            Some((name, prefix, values)) => {
                let keys = values
                    .iter()
                    .map(|v| [prefix.as_slice(), &v.to_le_bytes()].concat())
                    .collect();
                (keys, Some((name, values)))
            }
            None => (Self::keys(keys)?, None),
        };
        let reader = self.running(py)?;
        let batch = py.detach(|| -> ikv_core::Result<Result<_, String>> {
            let mut all = fields.clone();
            all.push(ts_field);
            let names = match columns {
                Some(names) if names.len() == fields.len() => names,
                Some(names) => {
                    return Ok(Err(format!(
                        "{} column names for {} fields",
                        names.len(),
                        fields.len()
                    )));
                }
                None => fields,
            };
            let mut collected = crate::feast_read::Collector::new(names, kinds, keys.len());
            let mut refused = None;
            reader.multiget_visit(&keys, &all, |i, j, stored| {
                match stored.field_type {
                    FieldType::Bytes | FieldType::String => collected.visit(i, j, stored.payload),
                    other => {
                        refused.get_or_insert_with(|| {
                            format!(
                                "field {:?} holds a {other} value; IKVOnlineStore writes bytes",
                                all[j]
                            )
                        });
                    }
                }
                Ok(())
            })?;
            Ok(match refused {
                Some(e) => Err(e),
                None => collected
                    .finish(expired_before)
                    .and_then(|batch| match key_column {
                        Some((name, values)) => {
                            crate::feast_read::with_int_column(batch, &name, values)
                        }
                        None => Ok(batch),
                    }),
            })
        });
        drop(reader);
        batch
            .map_err(to_py)?
            .map(ArrowBatch::new)
            .map_err(|m| raise("CorruptDataError", m))
    }

    /// A scan of every live document of the current view (see `NativeScan`).
    fn scan(&self, py: Python<'_>, fields: Vec<String>) -> PyResult<NativeScan> {
        let reader = self.running(py)?;
        Ok(NativeScan {
            fields: fields.clone(),
            scan: Mutex::new(Some(reader.scan(&fields))),
        })
    }

    /// This process's reader metrics as plain data (see `ikvpy.metrics`).
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let reader = self.running(py)?;
        let set = py.detach(|| reader.metrics());
        crate::metrics::to_dict(py, &set)
    }

    /// Freshness of every mounted partition, and whether this process owns the mount.
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let reader = self.running(py)?;
        let owns = reader.owns_mount();
        let status = reader.status();
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
            d.set_item("owns_mount", owns)?;
            out.append(d)?;
        }
        Ok(out)
    }
}

/// A scan in progress: record batches of the view it started from, until it is over.
#[pyclass(frozen, module = "ikvpy._internal")]
pub struct NativeScan {
    fields: Vec<String>,
    /// `None` once over (or failed: the same entry would fail again).
    scan: Mutex<Option<ikv_reader::Scan>>,
}

#[pymethods]
impl NativeScan {
    /// The next batch of at most `max_rows` documents; `None` once the scan is over.
    fn next_batch(&self, py: Python<'_>, max_rows: usize) -> PyResult<Option<ArrowBatch>> {
        let fields = &self.fields;
        let scan = &self.scan;
        let built = py
            .detach(|| {
                let mut guard = scan.lock().unwrap_or_else(|p| p.into_inner());
                let Some(running) = guard.as_mut() else {
                    return Ok(None);
                };
                let mut batch = BatchBuilder::new(fields);
                let mut refused = None;
                let visited = running.next_batch(max_rows.max(1), |key, values| {
                    if refused.is_none()
                        && let Err(m) = batch.append(key, values)
                    {
                        refused = Some(m);
                    }
                    Ok(())
                });
                // Errors leave the closure as (class, message): raising needs the GIL.
                let failed = match (visited, refused) {
                    (Err(e), _) => Some((errors::class_for(&e), e.to_string())),
                    (Ok(_), Some(m)) => Some(("IKVTypeError", m)),
                    (Ok(0), None) => {
                        *guard = None;
                        return Ok(None);
                    }
                    (Ok(_), None) => None,
                };
                if let Some(failed) = failed {
                    *guard = None;
                    return Err(failed);
                }
                batch.finish().map(Some).map_err(|m| ("IKVRuntimeError", m))
            })
            .map_err(|(class, message)| raise(class, message))?;
        Ok(built)
    }
}
