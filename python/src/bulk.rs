//! Bulk imports from Python: Arrow data (anything with `__arrow_c_stream__`: a pyarrow
//! Table, RecordBatchReader or Dataset scanner, a polars frame) or Parquet files, written as
//! sorted runs and committed through the log (`ikv-import`). The GIL is released while
//! batches are read, sorted, written and committed.

use std::collections::BTreeMap;

use arrow_array::ffi_stream::{FFI_ArrowArrayStream, RecordBatchStreamReader};
use ikv_core::{Error, Storage, StorageOptions};
use ikv_import::{ImportMode, ImportOptions, Importer, MemoryBudget, WrittenImport};
use pyo3::prelude::*;
use pyo3::types::PyCapsule;

use crate::errors::{raise, to_py};
use crate::runtime;

/// The Arrow C stream `data` exports, as a batch reader.
fn arrow_stream(data: &Bound<'_, PyAny>) -> PyResult<RecordBatchStreamReader> {
    if !data.hasattr("__arrow_c_stream__")? {
        return Err(raise(
            "IKVTypeError",
            format!(
                "cannot import a {}: pass a pyarrow Table, RecordBatch or RecordBatchReader, or any object with __arrow_c_stream__",
                data.get_type().name()?
            ),
        ));
    }
    let capsule = data.call_method0("__arrow_c_stream__")?;
    let capsule = capsule.cast::<PyCapsule>().map_err(|_| {
        raise(
            "IKVTypeError",
            "__arrow_c_stream__ did not return a capsule".into(),
        )
    })?;
    let pointer = capsule.pointer_checked(Some(c"arrow_array_stream"))?;
    // SAFETY: the capsule is named "arrow_array_stream", so it holds an FFI_ArrowArrayStream
    // (the PyCapsule interface); `from_raw` moves it out and leaves the capsule's copy
    // released, so the capsule's destructor does not release it again.
    let stream = unsafe { FFI_ArrowArrayStream::from_raw(pointer.as_ptr().cast()) };
    RecordBatchStreamReader::try_new(stream).map_err(|e| {
        raise(
            "IKVValueError",
            format!("cannot read the Arrow stream: {e}"),
        )
    })
}

fn parse_budget(budget: Option<String>) -> PyResult<Option<MemoryBudget>> {
    budget
        .map(|b| b.parse::<MemoryBudget>())
        .transpose()
        .map_err(to_py)
}

fn open_storage(
    storage_url: &str,
    storage_options: Option<BTreeMap<String, String>>,
) -> PyResult<Storage> {
    let mut options = crate::convert::storage_options(storage_options);
    // The writer inside needs its own retries only (see `Writer::open_url`).
    options.disable_retries = true;
    Storage::open(storage_url, &options).map_err(to_py)
}

/// Reads `data` and writes its runs for `store_name`; returns the written import as JSON
/// (for [`commit_runs`], possibly in another process).
#[pyfunction]
#[pyo3(signature = (data, store_name, storage_url, storage_options=None, import_id=None, memory_budget=None))]
pub fn write_runs(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    store_name: String,
    storage_url: String,
    storage_options: Option<BTreeMap<String, String>>,
    import_id: Option<String>,
    memory_budget: Option<String>,
) -> PyResult<String> {
    let memory_budget = parse_budget(memory_budget)?;
    let reader = arrow_stream(data)?;
    let storage = open_storage(&storage_url, storage_options)?;
    let rt = runtime()?;
    let written = py
        .detach(|| {
            rt.block_on(async {
                let options = ImportOptions {
                    import_id,
                    memory_budget,
                    ..ImportOptions::default()
                };
                let mut importer = Importer::open(storage, &store_name, options).await?;
                for batch in reader {
                    let batch = batch.map_err(|e| {
                        Error::InvalidImport(format!("reading the Arrow stream: {e}"))
                    })?;
                    importer.add(&batch).await?;
                }
                importer.write().await
            })
        })
        .map_err(to_py)?;
    serde_json::to_string(&written).map_err(|e| raise("IKVRuntimeError", e.to_string()))
}

/// Commits written imports (JSON from [`write_runs`], joined in the order given); returns
/// the receipt as JSON.
#[pyfunction]
#[pyo3(signature = (written, store_name, mode, storage_url, storage_options=None))]
pub fn commit_runs(
    py: Python<'_>,
    written: Vec<String>,
    store_name: String,
    mode: String,
    storage_url: String,
    storage_options: Option<BTreeMap<String, String>>,
) -> PyResult<String> {
    let mode: ImportMode = mode.parse().map_err(to_py)?;
    let parts = written
        .iter()
        .map(|w| {
            serde_json::from_str::<WrittenImport>(w).map_err(|e| {
                raise(
                    "IKVValueError",
                    format!("not a written import from write_runs: {e}"),
                )
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    let joined = WrittenImport::join(parts).map_err(to_py)?;
    let storage = open_storage(&storage_url, storage_options)?;
    let rt = runtime()?;
    let receipt = py
        .detach(|| {
            rt.block_on(async {
                let writer = ikv_writer::Writer::open(
                    storage.clone(),
                    &store_name,
                    ikv_writer::WriterOptions::default(),
                )
                .await?;
                ikv_import::commit(&writer, &storage, &joined, mode).await
            })
        })
        .map_err(to_py)?;
    serde_json::to_string(&receipt).map_err(|e| raise("IKVRuntimeError", e.to_string()))
}

/// Imports Parquet data (local path or URL) and commits it; returns the receipt as JSON.
#[pyfunction]
#[pyo3(signature = (location, store_name, mode, storage_url, storage_options=None, import_id=None, source_options=None, memory_budget=None))]
#[allow(clippy::too_many_arguments)]
pub fn import_parquet(
    py: Python<'_>,
    location: String,
    store_name: String,
    mode: String,
    storage_url: String,
    storage_options: Option<BTreeMap<String, String>>,
    import_id: Option<String>,
    source_options: Option<BTreeMap<String, String>>,
    memory_budget: Option<String>,
) -> PyResult<String> {
    let mode: ImportMode = mode.parse().map_err(to_py)?;
    let memory_budget = parse_budget(memory_budget)?;
    let storage = open_storage(&storage_url, storage_options)?;
    let source_options = StorageOptions {
        options: source_options.unwrap_or_default(),
        disable_retries: false,
    };
    let rt = runtime()?;
    let receipt = py
        .detach(|| {
            rt.block_on(ikv_import::import_parquet(
                &storage,
                &store_name,
                &location,
                &source_options,
                mode,
                ImportOptions {
                    import_id,
                    memory_budget,
                    ..ImportOptions::default()
                },
            ))
        })
        .map_err(to_py)?;
    serde_json::to_string(&receipt).map_err(|e| raise("IKVRuntimeError", e.to_string()))
}

/// The partition a key belongs to: `fnv1a_64(key) mod num_partitions` (docs/FORMAT.md).
#[pyfunction]
pub fn partition_of(key: &Bound<'_, PyAny>, num_partitions: u32) -> PyResult<u32> {
    if num_partitions == 0 {
        return Err(raise(
            "IKVValueError",
            "num_partitions must be at least 1".into(),
        ));
    }
    let bytes: Vec<u8> = if let Ok(s) = key.extract::<String>() {
        s.into_bytes()
    } else if let Ok(b) = key.extract::<Vec<u8>>() {
        b
    } else {
        return Err(raise(
            "IKVTypeError",
            format!("a key is str or bytes, not {}", key.get_type().name()?),
        ));
    };
    Ok(ikv_core::partition::partition_of(&bytes, num_partitions))
}
