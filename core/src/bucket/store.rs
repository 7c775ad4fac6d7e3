//! Store-level operations on a storage root: create, load the configuration, read a delta,
//! find a log's tip.

use super::{Created, Storage, create_if_absent, list_delta_seqs, list_snapshot_seqs, read};
use bytes::Bytes;

use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::layout::StoreLayout;

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
    let Some(bytes) = read(storage, &layout.config()).await? else {
        return Err(Error::StoreNotFound(store_name.to_owned()));
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
    read(storage, &layout.delta(partition, seq)).await
}

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

/// Names of the stores under a storage root (directories holding a `store.json`).
pub async fn list_stores(storage: &Storage) -> Result<Vec<String>> {
    let listing = storage
        .store
        .list_with_delimiter(Some(&storage.prefix))
        .await
        .map_err(|e| Error::storage(format!("listing {}", storage.url), e))?;
    let mut names = Vec::new();
    for dir in listing.common_prefixes {
        if let Some(name) = dir.filename()
            && crate::config::validate_store_name(name).is_ok()
            && load_config(storage, name).await.is_ok()
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}
