//! Store-level operations on a storage root: create, load the configuration, find a log's tip.

use bytes::Bytes;
use object_store::ObjectStoreExt;

use crate::bucket::{Created, create_if_absent};

use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::layout::StoreLayout;
use crate::storage::Storage;

/// File name that commits a snapshot directory; written last.
pub const SNAPSHOT_MANIFEST: &str = "manifest.json";

/// Creates a store with a conditional PUT of its `store.json`: an existing store is never
/// overwritten, whatever its configuration.
pub async fn create_store(storage: &Storage, config: &StoreConfig) -> Result<()> {
    config.validate()?;
    let layout = StoreLayout::new(&storage.prefix, &config.store_name)?;
    match create_if_absent(storage, &layout.config(), Bytes::from(config.to_json())).await {
        Ok(Created::Created) => {
            tracing::info!(store = %config.store_name, partitions = config.num_partitions, "created store");
            Ok(())
        }
        Ok(Created::Exists) => Err(Error::StoreExists(config.store_name.clone())),
        Err(e) => Err(e),
    }
}

/// Reads and validates a store's configuration.
pub async fn load_config(storage: &Storage, store_name: &str) -> Result<StoreConfig> {
    let layout = StoreLayout::new(&storage.prefix, store_name)?;
    let bytes = match storage.store.get(&layout.config()).await {
        Ok(got) => got
            .bytes()
            .await
            .map_err(|e| Error::storage(format!("reading {}", layout.config()), e))?,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(Error::StoreNotFound(store_name.to_owned()));
        }
        Err(e) => return Err(Error::storage(format!("reading {}", layout.config()), e)),
    };
    let config = StoreConfig::from_json(&bytes, layout.config().as_ref())?;
    if config.store_name != store_name {
        return Err(Error::corrupt(
            layout.config().to_string(),
            format!("names store {:?}", config.store_name),
        ));
    }
    Ok(config)
}

/// Reads delta `seq` of a partition; `None` when it does not exist.
pub async fn read_delta(
    storage: &Storage,
    layout: &StoreLayout,
    partition: u32,
    seq: u64,
) -> Result<Option<Bytes>> {
    crate::bucket::read(storage, &layout.delta(partition, seq)).await
}

pub use crate::bucket::{list_delta_seqs, list_snapshot_seqs};

/// The newest committed sequence number of a partition's log (0 when it is empty): the
/// highest delta present, or the highest snapshot when retention removed the deltas it covers.
pub async fn discover_tip(storage: &Storage, layout: &StoreLayout, partition: u32) -> Result<u64> {
    let deltas = list_delta_seqs(storage, layout, partition).await?;
    let snapshots = list_snapshot_seqs(storage, layout, partition).await?;
    Ok(deltas
        .last()
        .copied()
        .unwrap_or(0)
        .max(snapshots.last().copied().unwrap_or(0)))
}
