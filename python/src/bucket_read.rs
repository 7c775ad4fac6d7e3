//! Reading a store's documents straight from the bucket, a partition at a time, without a
//! mount: the native side of `ikvpy.ray.read_ikv` (`ikv_snapshot::state`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use ikv_core::bucket::{discover_tip, load_config};
use ikv_core::{Storage, StoreConfig, StoreLayout, ValueRef};
use ikv_snapshot::checkpoint::Checkpoint;
use ikv_snapshot::state::{DocBatches, ReadPoint, read_partition};
use pyo3::prelude::*;

use crate::arrow::{ArrowBatch, BatchBuilder};
use crate::errors::{class_for, raise, to_py};
use crate::runtime;

/// The store's configuration and each partition's tip now: what `read_ikv` pins its read to.
#[pyfunction]
#[pyo3(signature = (store_name, storage_url, storage_options=None))]
pub fn store_tips(
    py: Python<'_>,
    store_name: String,
    storage_url: String,
    storage_options: Option<BTreeMap<String, String>>,
) -> PyResult<Vec<u64>> {
    let storage = Storage::open(
        &storage_url,
        &crate::convert::storage_options(storage_options),
    )
    .map_err(to_py)?;
    let rt = runtime()?;
    py.detach(|| {
        rt.block_on(async {
            let config = load_config(&storage, &store_name).await?;
            let layout = StoreLayout::new(&storage.prefix, &store_name)?;
            let mut tips = Vec::with_capacity(config.num_partitions as usize);
            for p in 0..config.num_partitions {
                tips.push(discover_tip(&storage, &layout, p).await?);
            }
            Ok(tips)
        })
    })
    .map_err(to_py)
}

fn open_storage(url: &str, options: Option<BTreeMap<String, String>>) -> PyResult<Storage> {
    Storage::open(url, &crate::convert::storage_options(options)).map_err(to_py)
}

/// A checkpoint as Python's admin module builds it: (name, created at in ms, per partition
/// (sequence, snapshot)).
type CheckpointTuple = (String, u64, Vec<(u64, u64)>);

fn as_tuple(c: Checkpoint) -> CheckpointTuple {
    let pins = c
        .partitions
        .iter()
        .map(|p| (p.sequence, p.snapshot))
        .collect();
    (c.name, c.created_at_ms, pins)
}

/// Pins the store as committed now under `name`.
#[pyfunction]
#[pyo3(signature = (store_name, name, storage_url, storage_options=None))]
pub fn create_checkpoint(
    py: Python<'_>,
    store_name: String,
    name: String,
    storage_url: String,
    storage_options: Option<BTreeMap<String, String>>,
) -> PyResult<CheckpointTuple> {
    let storage = open_storage(&storage_url, storage_options)?;
    let rt = runtime()?;
    let now = ikv_core::clock::wall_time();
    py.detach(|| {
        rt.block_on(ikv_snapshot::checkpoint::create_checkpoint(
            &storage,
            &store_name,
            &name,
            now,
        ))
    })
    .map(as_tuple)
    .map_err(to_py)
}

/// The store's checkpoints, by name; or only `name`'s (an error when it does not exist).
#[pyfunction]
#[pyo3(signature = (store_name, storage_url, storage_options=None, name=None))]
pub fn list_checkpoints(
    py: Python<'_>,
    store_name: String,
    storage_url: String,
    storage_options: Option<BTreeMap<String, String>>,
    name: Option<String>,
) -> PyResult<Vec<CheckpointTuple>> {
    let storage = open_storage(&storage_url, storage_options)?;
    let rt = runtime()?;
    py.detach(|| {
        rt.block_on(async {
            match name {
                Some(name) => {
                    ikv_snapshot::checkpoint::load_checkpoint(&storage, &store_name, &name)
                        .await
                        .map(|c| vec![c])
                }
                None => {
                    load_config(&storage, &store_name).await?;
                    ikv_snapshot::checkpoint::list_checkpoints(&storage, &store_name).await
                }
            }
        })
    })
    .map(|all| all.into_iter().map(as_tuple).collect())
    .map_err(to_py)
}

/// Deletes checkpoint `name` (an error when it does not exist).
#[pyfunction]
#[pyo3(signature = (store_name, name, storage_url, storage_options=None))]
pub fn delete_checkpoint(
    py: Python<'_>,
    store_name: String,
    name: String,
    storage_url: String,
    storage_options: Option<BTreeMap<String, String>>,
) -> PyResult<()> {
    let storage = open_storage(&storage_url, storage_options)?;
    let rt = runtime()?;
    py.detach(|| {
        rt.block_on(ikv_snapshot::checkpoint::delete_checkpoint(
            &storage,
            &store_name,
            &name,
        ))
    })
    .map_err(to_py)
}

/// Per partition, (sequence, snapshot) committed at or before `time_ms` (ms since the epoch).
#[pyfunction]
#[pyo3(signature = (store_name, time_ms, storage_url, storage_options=None))]
pub fn points_as_of(
    py: Python<'_>,
    store_name: String,
    time_ms: u64,
    storage_url: String,
    storage_options: Option<BTreeMap<String, String>>,
) -> PyResult<Vec<(u64, Option<u64>)>> {
    let storage = open_storage(&storage_url, storage_options)?;
    let rt = runtime()?;
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(time_ms);
    py.detach(|| {
        rt.block_on(async {
            let config = load_config(&storage, &store_name).await?;
            let mut points = Vec::with_capacity(config.num_partitions as usize);
            for p in 0..config.num_partitions {
                let at = ikv_snapshot::state::point_as_of(&storage, &store_name, p, time).await?;
                points.push((at.upto, at.snapshot));
            }
            Ok(points)
        })
    })
    .map_err(to_py)
}

/// One partition's documents as committed up to a sequence, in key order, as Arrow batches.
#[pyclass(module = "ikvpy._internal")]
pub struct NativePartitionRead {
    fields: Vec<String>,
    batches: Mutex<Option<DocBatches>>,
}

#[pymethods]
impl NativePartitionRead {
    #[new]
    #[pyo3(signature = (store_name, partition, upto, field_names, storage_url, storage_options=None, batch_size=65536, snapshot=None, served_at_ms=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        store_name: String,
        partition: u32,
        upto: u64,
        field_names: Vec<String>,
        storage_url: String,
        storage_options: Option<BTreeMap<String, String>>,
        batch_size: usize,
        snapshot: Option<u64>,
        served_at_ms: Option<i64>,
    ) -> PyResult<NativePartitionRead> {
        if batch_size == 0 {
            return Err(raise(
                "IKVValueError",
                "batch_size must be at least 1".into(),
            ));
        }
        let storage = Storage::open(
            &storage_url,
            &crate::convert::storage_options(storage_options),
        )
        .map_err(to_py)?;
        let rt = runtime()?;
        let config: StoreConfig = py
            .detach(|| rt.block_on(load_config(&storage, &store_name)))
            .map_err(to_py)?;
        if partition >= config.num_partitions {
            return Err(raise(
                "IKVValueError",
                format!(
                    "partition {partition} does not exist: store {store_name:?} has {} (0 to {})",
                    config.num_partitions,
                    config.num_partitions - 1
                ),
            ));
        }
        let batches = {
            let _entered = rt.enter();
            // Expiries are judged at the read's time: the caller's (a checkpoint's creation,
            // the time asked for, or when the read was planned), else now.
            let at_ms = served_at_ms
                .unwrap_or_else(|| ikv_core::clock::epoch_ms(&ikv_core::clock::SystemClock::new()));
            read_partition(
                storage,
                config,
                partition,
                ReadPoint { upto, snapshot },
                at_ms,
                batch_size,
            )
        };
        Ok(NativePartitionRead {
            fields: field_names,
            batches: Mutex::new(Some(batches)),
        })
    }

    /// The next batch (`_ikv_key` and the fields asked for); `None` at the end.
    fn next_batch(&self, py: Python<'_>) -> PyResult<Option<ArrowBatch>> {
        let fields = &self.fields;
        let batches = &self.batches;
        py.detach(|| {
            let mut guard = batches.lock().unwrap_or_else(|p| p.into_inner());
            let Some(rx) = guard.as_mut() else {
                return Ok(None);
            };
            let docs = match rx.blocking_recv() {
                None => {
                    *guard = None;
                    return Ok(None);
                }
                Some(Err(e)) => {
                    *guard = None;
                    return Err((class_for(&e), e.to_string()));
                }
                Some(Ok(docs)) => docs,
            };
            let mut batch = BatchBuilder::new(fields);
            let mut values: Vec<Option<ValueRef<'_>>> = Vec::with_capacity(fields.len());
            for (key, doc) in &docs {
                values.clear();
                values.extend(fields.iter().map(|f| doc.get(f).map(|v| v.as_value_ref())));
                if let Err(m) = batch.append(key, &values) {
                    *guard = None;
                    return Err(("IKVTypeError", m));
                }
            }
            batch.finish().map(Some).map_err(|m| ("IKVRuntimeError", m))
        })
        .map_err(|(class, message)| raise(class, message))
    }
}
