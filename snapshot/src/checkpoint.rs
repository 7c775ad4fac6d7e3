//! Checkpoints: a store pinned as committed at one moment, for reads of that state later
//! (reproducible training sets, offline evaluation) whatever was written and compacted since.
//!
//! `<store>/checkpoints/<name>.json` names, per partition, the sequence committed when it was
//! made and the snapshot (full, or a layer) that state builds on. Retention keeps, while the
//! checkpoint exists, that snapshot's stack and every delta after the lowest of those
//! snapshots (the log stays without holes), so the state can always be read: a snapshot plus
//! the deltas up to the pinned sequence (`state.rs`).
//!
//! Invariants: created with a conditional create (never overwritten); its snapshot is the
//! newest at or below the pinned sequence when it is made, so retention, which keeps the newest
//! snapshot and every delta it does not cover, cannot remove what it needs before it exists.

use std::time::SystemTime;

use ikv_core::bucket::{Created, Path, create_if_absent, discover_tip, load_config};
use ikv_core::{Error, Result, Storage, StoreLayout};
use serde::{Deserialize, Serialize};

/// What a checkpoint pins in one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedPartition {
    pub partition: u32,
    /// The partition's state after deltas 1..=sequence.
    pub sequence: u64,
    /// The snapshot it builds on (0: none, the deltas from the first).
    pub snapshot: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub format_version: u32,
    pub store_name: String,
    pub name: String,
    pub created_at_ms: u64,
    pub partitions: Vec<PinnedPartition>,
}

/// Checks a checkpoint name: 1 to 128 of `A-Z a-z 0-9 . _ -`, not starting with a dot.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidOperation(format!(
            "checkpoint name {name:?} must be 1 to 128 of A-Z a-z 0-9 . _ - (not starting with a dot)"
        )))
    }
}

fn path(layout: &StoreLayout, name: &str) -> Path {
    layout
        .checkpoints_dir()
        .join(format!("{name}.json").as_str())
}

/// Pins the store as committed now under `name`; an existing checkpoint of that name is an
/// error and is not touched.
pub async fn create_checkpoint(
    storage: &Storage,
    store: &str,
    name: &str,
    now: SystemTime,
) -> Result<Checkpoint> {
    validate_name(name)?;
    let config = load_config(storage, store).await?;
    let layout = StoreLayout::new(&storage.prefix, store)?;
    let mut partitions = Vec::with_capacity(config.num_partitions as usize);
    for p in 0..config.num_partitions {
        let sequence = discover_tip(storage, &layout, p).await?;
        let snapshots = ikv_core::bucket::list_snapshot_seqs(storage, &layout, p).await?;
        let snapshot = snapshots
            .iter()
            .rev()
            .find(|s| **s <= sequence)
            .copied()
            .unwrap_or(0);
        partitions.push(PinnedPartition {
            partition: p,
            sequence,
            snapshot,
        });
    }
    let checkpoint = Checkpoint {
        format_version: ikv_core::config::FORMAT_VERSION,
        store_name: store.to_owned(),
        name: name.to_owned(),
        created_at_ms: now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        partitions,
    };
    let body =
        ikv_core::checksum::seal_json(serde_json::to_vec_pretty(&checkpoint).unwrap_or_default());
    match create_if_absent(storage, &path(&layout, name), bytes::Bytes::from(body)).await? {
        Created::Created => Ok(checkpoint),
        Created::Exists => Err(Error::CheckpointExists {
            store: store.to_owned(),
            name: name.to_owned(),
        }),
    }
}

/// The checkpoint `name` of `store`, checked (checksum, store, name, partitions).
pub async fn load_checkpoint(storage: &Storage, store: &str, name: &str) -> Result<Checkpoint> {
    validate_name(name)?;
    let layout = StoreLayout::new(&storage.prefix, store)?;
    let at = path(&layout, name);
    let bytes =
        ikv_core::bucket::read(storage, &at)
            .await?
            .ok_or_else(|| Error::CheckpointNotFound {
                store: store.to_owned(),
                name: name.to_owned(),
            })?;
    decode(&bytes, store, name, at.as_ref())
}

fn decode(bytes: &[u8], store: &str, name: &str, what: &str) -> Result<Checkpoint> {
    let json = ikv_core::checksum::open_json(bytes, what)?;
    let checkpoint: Checkpoint = serde_json::from_slice(&json).map_err(|e| Error::Corrupt {
        what: what.to_owned(),
        reason: e.to_string(),
    })?;
    let in_order = checkpoint
        .partitions
        .iter()
        .enumerate()
        .all(|(i, p)| p.partition as usize == i && p.snapshot <= p.sequence);
    if checkpoint.format_version != ikv_core::config::FORMAT_VERSION
        || checkpoint.store_name != store
        || checkpoint.name != name
        || !in_order
    {
        return Err(Error::Corrupt {
            what: what.to_owned(),
            reason: format!(
                "it says version {}, store {:?}, name {:?}, partitions {:?}",
                checkpoint.format_version,
                checkpoint.store_name,
                checkpoint.name,
                checkpoint.partitions
            ),
        });
    }
    Ok(checkpoint)
}

/// Every checkpoint of `store`, by name. One that does not decode is an error naming it.
pub async fn list_checkpoints(storage: &Storage, store: &str) -> Result<Vec<Checkpoint>> {
    let layout = StoreLayout::new(&storage.prefix, store)?;
    let mut names: Vec<String> = ikv_core::bucket::list(storage, &layout.checkpoints_dir())
        .await?
        .into_iter()
        .filter_map(|m| {
            m.location
                .filename()
                .and_then(|f| f.strip_suffix(".json"))
                .filter(|n| validate_name(n).is_ok())
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        match load_checkpoint(storage, store, &name).await {
            Ok(c) => out.push(c),
            // Deleted between the listing and the read.
            Err(Error::CheckpointNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Deletes checkpoint `name`; its snapshots and deltas become retention's to reclaim.
pub async fn delete_checkpoint(storage: &Storage, store: &str, name: &str) -> Result<()> {
    load_checkpoint(storage, store, name).await?;
    let layout = StoreLayout::new(&storage.prefix, store)?;
    ikv_core::bucket::delete(storage, &path(&layout, name)).await
}

/// What the store's checkpoints need kept in one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pins {
    /// The snapshots they build on (each with its stack).
    pub snapshots: Vec<u64>,
    /// The lowest of those: no delta above it may go (the log stays without holes).
    pub lowest: Option<u64>,
    /// A checkpoint did not decode: retention keeps every snapshot and delta rather than guess.
    pub keep_all: bool,
}

/// The pins of every checkpoint of the store in `partition`.
pub async fn pins(storage: &Storage, layout: &StoreLayout, partition: u32) -> Result<Pins> {
    let listed = ikv_core::bucket::list(storage, &layout.checkpoints_dir()).await?;
    let mut pins = Pins::default();
    for meta in listed {
        let Some(name) = meta
            .location
            .filename()
            .and_then(|f| f.strip_suffix(".json"))
            .filter(|n| validate_name(n).is_ok())
            .map(str::to_owned)
        else {
            continue;
        };
        match load_checkpoint(storage, layout.store_name(), &name).await {
            Ok(c) => {
                if let Some(p) = c.partitions.iter().find(|p| p.partition == partition) {
                    pins.snapshots.push(p.snapshot);
                    pins.lowest = Some(pins.lowest.map_or(p.snapshot, |l| l.min(p.snapshot)));
                }
            }
            Err(Error::CheckpointNotFound { .. }) => {}
            Err(e) => {
                tracing::warn!(partition, checkpoint = %name, error = %e, "unreadable checkpoint; retention keeps every delta and snapshot");
                pins.keep_all = true;
            }
        }
    }
    Ok(pins)
}
