//! `NativeWriter`: direct mode (the writer library in this process) or HTTP mode (the writer
//! service). Every call releases the GIL while it waits.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use ikv_core::Operation;
use ikv_writer::client::HttpWriterClient;
use ikv_writer::{Writer, WriterOptions};
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::convert::operation;
use crate::errors::{client_to_py, raise, to_py};
use crate::{fork, runtime};

enum Mode {
    Direct(Writer),
    Http {
        client: HttpWriterClient,
        store: String,
    },
}

/// How the writer was opened, to open it again in a forked child.
struct Settings {
    store_name: String,
    storage_url: Option<String>,
    storage_options: Option<BTreeMap<String, String>>,
    writer_url: Option<String>,
    account_id: Option<String>,
    account_passkey: Option<String>,
}

/// A connection made in one fork generation: its pooled connections and background tasks
/// belong to that generation's runtime.
struct Connected {
    generation: u64,
    mode: Mode,
}

#[pyclass(frozen, module = "ikvpy._internal")]
pub struct NativeWriter {
    settings: Settings,
    connected: ArcSwap<Connected>,
}

impl Settings {
    /// Opens the writer (checking credentials in HTTP mode). GIL released while waiting.
    fn connect(&self, py: Python<'_>) -> PyResult<Connected> {
        let rt = runtime()?;
        let store_name = self.store_name.clone();
        let mode = if let Some(url) = &self.writer_url {
            let (Some(id), Some(passkey)) = (&self.account_id, &self.account_passkey) else {
                return Err(raise(
                    "IKVValueError",
                    "a writer URL needs an account id and passkey".into(),
                ));
            };
            let client = HttpWriterClient::new(url, id, passkey);
            let checked = client.clone();
            let store = store_name.clone();
            py.detach(|| rt.block_on(async move { checked.describe(&store).await }))
                .map_err(client_to_py)?;
            Mode::Http {
                client,
                store: store_name,
            }
        } else {
            let Some(url) = self.storage_url.clone() else {
                return Err(raise(
                    "IKVValueError",
                    "no storage URL: set it in the options or IKV_STORAGE_URL, or give a writer URL"
                        .into(),
                ));
            };
            let options = crate::convert::storage_options(self.storage_options.clone());
            let writer = py
                .detach(|| {
                    rt.block_on(async move {
                        Writer::open_url(&url, &options, &store_name, WriterOptions::default())
                            .await
                    })
                })
                .map_err(to_py)?;
            Mode::Direct(writer)
        };
        Ok(Connected {
            generation: fork::generation(),
            mode,
        })
    }
}

impl NativeWriter {
    /// The connection of this process; a forked child opens its own on first use.
    fn connected(&self, py: Python<'_>) -> PyResult<Arc<Connected>> {
        let current = self.connected.load_full();
        if current.generation == fork::generation() {
            return Ok(current);
        }
        let fresh = Arc::new(self.settings.connect(py)?);
        let replaced = self.connected.swap(fresh.clone());
        if replaced.generation != fork::generation() {
            // The parent's connection: dropping it could wait on threads this process lacks.
            std::mem::forget(replaced);
        }
        Ok(fresh)
    }
}

impl Drop for NativeWriter {
    fn drop(&mut self) {
        let current = self.connected.load_full();
        if current.generation != fork::generation() {
            // Inherited from the parent: one reference that is never released keeps it from
            // being dropped (which could wait on threads this process lacks).
            std::mem::forget(current);
        }
    }
}

#[pymethods]
impl NativeWriter {
    /// Opens a writer; with `writer_url` it talks to the writer service (and checks the
    /// credentials now), otherwise it commits directly to `storage_url`.
    #[new]
    #[pyo3(signature = (store_name, storage_url=None, storage_options=None, writer_url=None, account_id=None, account_passkey=None))]
    fn new(
        py: Python<'_>,
        store_name: String,
        storage_url: Option<String>,
        storage_options: Option<BTreeMap<String, String>>,
        writer_url: Option<String>,
        account_id: Option<String>,
        account_passkey: Option<String>,
    ) -> PyResult<Self> {
        let settings = Settings {
            store_name,
            storage_url,
            storage_options,
            writer_url,
            account_id,
            account_passkey,
        };
        let connected = settings.connect(py)?;
        Ok(NativeWriter {
            settings,
            connected: ArcSwap::from_pointee(connected),
        })
    }

    /// This writer's metrics as plain data (see `ikvpy.metrics`): in direct mode its
    /// commits and its storage requests; through the writer service, none (the service
    /// reports them at `/metrics`).
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let connected = self.connected(py)?;
        let set = match &connected.mode {
            Mode::Direct(writer) => py.detach(|| {
                let mut set = writer.metrics();
                set.extend(writer.storage_metrics());
                set
            }),
            Mode::Http { .. } => ikv_core::metrics::MetricSet::new(),
        };
        crate::metrics::to_dict(py, &set)
    }

    /// Validates and commits operations; returns once they are durable, with the
    /// `(partition, sequence)` of each delta that holds them.
    fn write(&self, py: Python<'_>, ops: &Bound<'_, PyList>) -> PyResult<Vec<(u32, u64)>> {
        let ops = operations(py, ops)?;
        let connected = self.connected(py)?;
        let rt = runtime()?;
        match &connected.mode {
            Mode::Direct(writer) => py
                .detach(|| rt.block_on(writer.write(&ops)))
                .map(|r| {
                    r.commits
                        .iter()
                        .map(|c| (c.partition, c.sequence))
                        .collect()
                })
                .map_err(to_py),
            Mode::Http { client, store } => py
                .detach(|| rt.block_on(client.write(store, &ops)))
                .map(|r| {
                    r.commits
                        .iter()
                        .map(|c| (c.partition, c.sequence))
                        .collect()
                })
                .map_err(client_to_py),
        }
    }

    /// Writes every pending tip hint now (direct mode; the service writes its own), so that
    /// the next idle writer learns the tip with one GET. Called at shutdown.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let connected = self.connected(py)?;
        if let Mode::Direct(writer) = &connected.mode {
            let rt = runtime()?;
            py.detach(|| rt.block_on(writer.flush_hints()));
        }
        Ok(())
    }

    /// The store's primary-key field and partitioning-key field (direct mode only knows them
    /// without a request).
    fn key_fields(&self, py: Python<'_>) -> PyResult<(String, Option<String>)> {
        let connected = self.connected(py)?;
        let config = match &connected.mode {
            Mode::Direct(w) => w.config().clone(),
            Mode::Http { client, store } => {
                let rt = runtime()?;
                py.detach(|| rt.block_on(client.describe(store)))
                    .map_err(client_to_py)?
            }
        };
        Ok((config.primary_key_field, config.partitioning_key_field))
    }
}

/// Operations converted per hold of the GIL (a few milliseconds of work): a large batch
/// lets other Python threads run between chunks instead of stalling them for the whole
/// conversion.
const CONVERT_CHUNK: usize = 1024;

/// How long the GIL is let go between chunks. Letting it go and taking it straight back
/// hands it to nobody: a waiting thread is woken, but the releasing thread retakes it first,
/// and the interpreter only forces a switch when no switch happened in a whole interval.
/// A pause long enough for a woken thread to run costs about 3% of a large conversion.
const CONVERT_PAUSE: std::time::Duration = std::time::Duration::from_micros(100);

/// Converts `ops` from Python, letting the GIL go for a moment after every chunk.
fn operations(py: Python<'_>, ops: &Bound<'_, PyList>) -> PyResult<Vec<Operation>> {
    let mut out = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        out.push(operation(&op)?);
        if (i + 1) % CONVERT_CHUNK == 0 {
            py.detach(|| std::thread::sleep(CONVERT_PAUSE));
        }
    }
    Ok(out)
}
