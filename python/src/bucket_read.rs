//! Reading a store's documents straight from the bucket, a partition at a time, without a
//! mount: the native side of `ikvpy.ray.read_ikv` (`ikv_snapshot::state`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use ikv_core::bucket::{discover_tip, load_config};
use ikv_core::{Storage, StoreConfig, StoreLayout, ValueRef};
use ikv_snapshot::state::{DocBatches, read_partition};
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

/// One partition's documents as committed up to a sequence, in key order, as Arrow batches.
#[pyclass(module = "ikvpy._internal")]
pub struct NativePartitionRead {
    fields: Vec<String>,
    batches: Mutex<Option<DocBatches>>,
}

#[pymethods]
impl NativePartitionRead {
    #[new]
    #[pyo3(signature = (store_name, partition, upto, field_names, storage_url, storage_options=None, batch_size=65536))]
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
            read_partition(storage, config, partition, upto, batch_size)
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
