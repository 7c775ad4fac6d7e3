//! Store-level operations on a storage root: create, load the configuration, find a log's tip.

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;

use crate::bucket::{Created, create_if_absent};

use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::layout::{StoreLayout, parse_delta_seq, parse_seq};
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

/// Sequence numbers of the deltas present in a partition's log, ascending.
pub async fn list_delta_seqs(
    storage: &Storage,
    layout: &StoreLayout,
    partition: u32,
) -> Result<Vec<u64>> {
    let dir = layout.deltas_dir(partition);
    let metas: Vec<_> = storage
        .store
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(|e| Error::storage(format!("listing {dir}"), e))?;
    let mut seqs: Vec<u64> = metas
        .iter()
        .filter_map(|m| parse_delta_seq(&m.location))
        .collect();
    seqs.sort_unstable();
    Ok(seqs)
}

/// Sequence numbers covered by committed snapshots (those whose manifest exists), ascending.
pub async fn list_snapshot_seqs(
    storage: &Storage,
    layout: &StoreLayout,
    partition: u32,
) -> Result<Vec<u64>> {
    let dir = layout.snapshots_dir(partition);
    let metas: Vec<_> = storage
        .store
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(|e| Error::storage(format!("listing {dir}"), e))?;
    let mut seqs: Vec<u64> = metas
        .iter()
        .filter(|m| m.location.filename() == Some(SNAPSHOT_MANIFEST))
        .filter_map(|m| {
            let parts: Vec<_> = m.location.parts().collect();
            let seq_dir = parts.get(parts.len().checked_sub(2)?)?;
            parse_seq(seq_dir.as_ref())
        })
        .collect();
    seqs.sort_unstable();
    Ok(seqs)
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
