//! `ikvpy._internal`: the native half of the ikvpy package. The Python modules in `ikvpy/`
//! give the IKV API; this module holds the reader, the writer and the admin calls.

mod arrow;
mod bucket_read;
mod bulk;
mod convert;
mod errors;
mod feast_read;
mod fork;
mod metrics;
mod reader;
mod writer;

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use ikv_core::{Storage, StoreConfig};
use ikv_snapshot::{SnapshotOptions, run_pass};
use pyo3::prelude::*;

use crate::errors::{raise, to_py};

/// A tokio runtime and the fork generation it was built in.
pub(crate) struct ForkRuntime {
    generation: u64,
    runtime: tokio::runtime::Runtime,
}

impl std::ops::Deref for ForkRuntime {
    type Target = tokio::runtime::Runtime;

    fn deref(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }
}

/// The runtime writers and admin calls run on (readers own theirs). A forked child builds its
/// own on first use: the parent's worker threads do not exist there.
pub(crate) fn runtime() -> PyResult<Arc<ForkRuntime>> {
    static RUNTIME: ArcSwapOption<ForkRuntime> = ArcSwapOption::const_empty();
    let generation = fork::generation();
    if let Some(rt) = RUNTIME.load_full()
        && rt.generation == generation
    {
        return Ok(rt);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ikvpy")
        .enable_all()
        .build()
        .map_err(|e| {
            raise(
                "IKVRuntimeError",
                format!("cannot start the async runtime: {e}"),
            )
        })?;
    let fresh = Arc::new(ForkRuntime {
        generation,
        runtime,
    });
    if let Some(old) = RUNTIME.swap(Some(fresh.clone()))
        && old.generation != generation
    {
        // The parent's runtime: dropping it would join threads this process lacks.
        std::mem::forget(old);
    }
    Ok(fresh)
}

/// Creates a store; an existing store is an error and is never overwritten.
#[pyfunction]
#[pyo3(signature = (store_name, primary_key_field, partitioning_key_field, num_partitions, storage_url, storage_options=None, ttl_seconds=None))]
#[allow(clippy::too_many_arguments)]
fn create_store(
    py: Python<'_>,
    store_name: String,
    primary_key_field: String,
    partitioning_key_field: Option<String>,
    num_partitions: u32,
    storage_url: String,
    storage_options: Option<BTreeMap<String, String>>,
    ttl_seconds: Option<u64>,
) -> PyResult<()> {
    let config = StoreConfig::new(
        &store_name,
        &primary_key_field,
        partitioning_key_field.as_deref(),
        num_partitions,
    )
    .and_then(|c| c.with_ttl_seconds(ttl_seconds))
    .map_err(to_py)?;
    let mut options = crate::convert::storage_options(storage_options);
    options.disable_retries = true;
    let storage = Storage::open(&storage_url, &options).map_err(to_py)?;
    let rt = runtime()?;
    py.detach(|| rt.block_on(ikv_core::bucket::create_store(&storage, &config)))
        .map_err(to_py)
}

/// One compaction pass over a store; returns one line per partition.
#[pyfunction]
#[pyo3(signature = (store_name, storage_url, storage_options=None, force=true))]
fn run_snapshot(
    py: Python<'_>,
    store_name: String,
    storage_url: String,
    storage_options: Option<BTreeMap<String, String>>,
    force: bool,
) -> PyResult<Vec<String>> {
    let storage = Storage::open(
        &storage_url,
        &crate::convert::storage_options(storage_options),
    )
    .map_err(to_py)?;
    let options = SnapshotOptions {
        force,
        ..SnapshotOptions::default()
    };
    let rt = runtime()?;
    let reports = py
        .detach(|| {
            rt.block_on(run_pass(
                &storage,
                std::slice::from_ref(&store_name),
                &[],
                &options,
            ))
        })
        .map_err(to_py)?;
    Ok(reports.iter().map(ToString::to_string).collect())
}

/// Sends the library's logs to stderr or to a file at `level`. The first call wins: logging
/// is process-wide.
#[pyfunction]
#[pyo3(signature = (level, path=None))]
fn init_logging(level: &str, path: Option<std::path::PathBuf>) -> PyResult<bool> {
    let filter = tracing_subscriber::EnvFilter::try_new(format!("warn,ikv_core={level},ikv_reader={level},ikv_writer={level},ikv_snapshot={level},ikv_import={level},_internal={level}"))
        .map_err(|e| raise("IKVValueError", format!("bad log level {level:?}: {e}")))?;
    let result = match path {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| {
                    raise(
                        "IKVValueError",
                        format!("cannot open log file {}: {e}", path.display()),
                    )
                })?;
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .try_init()
        }
        None => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init(),
    };
    Ok(result.is_ok())
}

#[pymodule]
fn _internal(m: &Bound<'_, PyModule>) -> PyResult<()> {
    fork::install();
    m.add_class::<writer::NativeWriter>()?;
    m.add_class::<reader::NativeReader>()?;
    m.add_class::<reader::NativeScan>()?;
    m.add_class::<arrow::ArrowBatch>()?;
    m.add_class::<bucket_read::NativePartitionRead>()?;
    m.add_function(wrap_pyfunction!(bucket_read::store_tips, m)?)?;
    m.add_function(wrap_pyfunction!(bucket_read::points_as_of, m)?)?;
    m.add_function(wrap_pyfunction!(bucket_read::create_checkpoint, m)?)?;
    m.add_function(wrap_pyfunction!(bucket_read::list_checkpoints, m)?)?;
    m.add_function(wrap_pyfunction!(bucket_read::delete_checkpoint, m)?)?;
    m.add_function(wrap_pyfunction!(create_store, m)?)?;
    m.add_function(wrap_pyfunction!(run_snapshot, m)?)?;
    m.add_function(wrap_pyfunction!(init_logging, m)?)?;
    m.add_function(wrap_pyfunction!(bulk::write_runs, m)?)?;
    m.add_function(wrap_pyfunction!(bulk::commit_runs, m)?)?;
    m.add_function(wrap_pyfunction!(bulk::import_parquet, m)?)?;
    m.add_function(wrap_pyfunction!(bulk::partition_of, m)?)?;

    Ok(())
}
