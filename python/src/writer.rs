//! `NativeWriter`: direct mode (the writer library in this process) or HTTP mode (the writer
//! service). Every call releases the GIL while it waits.

use std::collections::BTreeMap;

use ikv_core::Operation;
use ikv_writer::client::HttpWriterClient;
use ikv_writer::{Writer, WriterOptions};
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::convert::operation;
use crate::errors::{client_to_py, raise, to_py};
use crate::runtime;

enum Mode {
    Direct(Writer),
    Http {
        client: HttpWriterClient,
        store: String,
    },
}

#[pyclass(frozen, module = "ikvpy._internal")]
pub struct NativeWriter {
    mode: Mode,
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
        let rt = runtime()?;
        if let Some(url) = writer_url {
            let (Some(id), Some(passkey)) = (account_id, account_passkey) else {
                return Err(raise(
                    "IKVValueError",
                    "a writer URL needs an account id and passkey".into(),
                ));
            };
            let client = HttpWriterClient::new(&url, &id, &passkey);
            let store = store_name.clone();
            let checked = client.clone();
            py.detach(|| rt.block_on(async move { checked.describe(&store).await }))
                .map_err(client_to_py)?;
            return Ok(NativeWriter {
                mode: Mode::Http {
                    client,
                    store: store_name,
                },
            });
        }
        let Some(url) = storage_url else {
            return Err(raise(
                "IKVValueError",
                "no storage URL: set it in the options or IKV_STORAGE_URL, or give a writer URL"
                    .into(),
            ));
        };
        let options = crate::convert::storage_options(storage_options);
        let writer = py
            .detach(|| {
                rt.block_on(async move {
                    Writer::open_url(&url, &options, &store_name, WriterOptions::default()).await
                })
            })
            .map_err(to_py)?;
        Ok(NativeWriter {
            mode: Mode::Direct(writer),
        })
    }

    /// Validates and commits operations; returns once they are durable.
    fn write(&self, py: Python<'_>, ops: &Bound<'_, PyList>) -> PyResult<()> {
        let ops: Vec<Operation> = ops
            .iter()
            .map(|op| operation(&op))
            .collect::<PyResult<_>>()?;
        let rt = runtime()?;
        match &self.mode {
            Mode::Direct(writer) => py
                .detach(|| rt.block_on(writer.write(&ops)))
                .map(|_| ())
                .map_err(to_py),
            Mode::Http { client, store } => py
                .detach(|| rt.block_on(client.write(store, &ops)))
                .map(|_| ())
                .map_err(client_to_py),
        }
    }

    /// The store's primary-key field and partitioning-key field (direct mode only knows them
    /// without a request).
    fn key_fields(&self, py: Python<'_>) -> PyResult<(String, Option<String>)> {
        let config = match &self.mode {
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
