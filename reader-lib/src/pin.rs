//! Point-in-time readers: a reader pinned to a checkpoint, or to the newest state committed at
//! or before a time, serves exactly that state and never polls (`docs/READER.md`,
//! "Point-in-time readers").
//!
//! A pin is resolved once, at open, into one point per mounted partition (the sequence and
//! the snapshot it builds on). The mount of a pinned reader is a directory of its own, named
//! by the store and a hash of its points (`<store>@<hash>`: store names never hold `@`), so
//! pinned readers of the same points share one copy, as live readers do, and never meet a
//! live reader's copy or one of another point. Its identity names the points too: a copy
//! built for other points is never adopted.
//!
//! Invariant: a pinned copy's every partition is at exactly its point, or open fails. A copy
//! never goes past its point (deltas are fetched up to it and no further), and a point whose
//! deltas are gone is an error naming the pin, never a silently newer state.

use std::collections::BTreeMap;
use std::time::SystemTime;

use ikv_core::clock::Clock;
use ikv_core::{Error, Result, Storage, StoreConfig, StoreLayout};
use ikv_snapshot_format::Manifest;
use serde::{Deserialize, Serialize};

use crate::local::PartitionState;
use crate::owner::Owner;
use crate::status::StatusBoard;
use crate::sync::catch_up;

/// What a reader serves: the tip (kept fresh by polling), or a fixed point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// The state the named checkpoint pinned (`ikv checkpoint create`).
    Checkpoint(String),
    /// The newest state committed at or before this time, per partition (within retention:
    /// a delta's commit time is its object's modification time in the bucket).
    AsOf(SystemTime),
}

impl std::fmt::Display for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pin::Checkpoint(name) => write!(f, "checkpoint {name:?}"),
            Pin::AsOf(time) => {
                let ms = time
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                write!(f, "the state as of {ms} ms since the epoch")
            }
        }
    }
}

/// One partition's fixed point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedPoint {
    pub partition: u32,
    /// The state after deltas 1..=sequence.
    pub sequence: u64,
    /// The snapshot it is read from (0: none, the deltas from the first).
    pub snapshot: u64,
}

/// A resolved pin: what it was asked as (for messages) and its points, in partition order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    pub pin: Pin,
    pub points: Vec<PinnedPoint>,
    /// The time expiries are judged at (ms since the Unix epoch): the checkpoint's creation,
    /// or the time asked for, so that a point-in-time read serves what was live then.
    pub at_ms: i64,
}

impl Pinned {
    /// Resolves `pin` for `partitions` of the store: one GET of the checkpoint, or per
    /// partition the LISTs of its deltas and snapshots.
    pub async fn resolve(
        storage: &Storage,
        config: &StoreConfig,
        partitions: &[u32],
        pin: &Pin,
    ) -> Result<Pinned> {
        let store = &config.store_name;
        let at_ms: i64;
        let points = match pin {
            Pin::Checkpoint(name) => {
                let checkpoint =
                    ikv_snapshot::checkpoint::load_checkpoint(storage, store, name).await?;
                at_ms = i64::try_from(checkpoint.created_at_ms).unwrap_or(i64::MAX);
                partitions
                    .iter()
                    .map(|p| {
                        checkpoint
                            .partitions
                            .iter()
                            .find(|c| c.partition == *p)
                            .map(|c| PinnedPoint {
                                partition: *p,
                                sequence: c.sequence,
                                snapshot: c.snapshot,
                            })
                            .ok_or_else(|| Error::InvalidOperation(format!(
                                "checkpoint {name:?} of store {store:?} pins partitions 0 to {} only, not partition {p} (the store was recreated with more partitions since)",
                                checkpoint.partitions.len().saturating_sub(1)
                            )))
                    })
                    .collect::<Result<Vec<_>>>()?
            }
            Pin::AsOf(time) => {
                at_ms = time
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                let layout = StoreLayout::new(&storage.prefix, store)?;
                let mut points = Vec::with_capacity(partitions.len());
                for &p in partitions {
                    let at = ikv_snapshot::state::point_as_of(storage, store, p, *time).await?;
                    let snapshot = match at.snapshot {
                        Some(seq) => seq,
                        None => ikv_core::bucket::list_snapshot_seqs(storage, &layout, p)
                            .await?
                            .into_iter()
                            .rfind(|s| *s <= at.upto)
                            .unwrap_or(0),
                    };
                    points.push(PinnedPoint {
                        partition: p,
                        sequence: at.upto,
                        snapshot,
                    });
                }
                points
            }
        };
        Ok(Pinned {
            pin: pin.clone(),
            points,
            at_ms,
        })
    }

    /// The name of the pinned copy's directory under the mount directory.
    pub fn mount_name(&self, store: &str) -> String {
        let mut key = Vec::with_capacity(self.points.len() * 20);
        for p in &self.points {
            key.extend_from_slice(&p.partition.to_le_bytes());
            key.extend_from_slice(&p.sequence.to_le_bytes());
            key.extend_from_slice(&p.snapshot.to_le_bytes());
        }
        format!("{store}@{:016x}", xxhash_rust::xxh3::xxh3_64(&key))
    }

    /// The snapshot each point is read from, loaded and checked.
    pub async fn snapshots(
        &self,
        storage: &Storage,
        layout: &StoreLayout,
    ) -> Result<BTreeMap<u32, Option<Manifest>>> {
        let mut out = BTreeMap::new();
        for point in &self.points {
            let manifest = match point.snapshot {
                0 => None,
                seq => Some(
                    Manifest::load(storage, layout, point.partition, seq)
                        .await?
                        .ok_or_else(|| self.gone(point, &format!("its snapshot {seq} is gone")))?,
                ),
            };
            out.insert(point.partition, manifest);
        }
        Ok(out)
    }

    fn gone(&self, point: &PinnedPoint, why: &str) -> Error {
        Error::InvalidOperation(format!(
            "{} of partition {} (sequence {}) is no longer in the bucket: {why} (retention removed it: a checkpoint keeps what it pins only while it exists; a time only within retention)",
            self.pin, point.partition, point.sequence
        ))
    }

    /// Applies every partition's deltas up to its point and no further (imports included),
    /// then marks each caught up: a pinned copy is complete once, and never polls again.
    pub async fn catch_up(
        &self,
        storage: &Storage,
        layout: &StoreLayout,
        owner: &mut Owner,
        status: &StatusBoard,
        states: &mut BTreeMap<u32, PartitionState>,
        clock: &dyn Clock,
    ) -> Result<()> {
        let started = clock.now();
        loop {
            let mut imports = Vec::new();
            for point in &self.points {
                let state = states
                    .get_mut(&point.partition)
                    .ok_or_else(|| Error::Local {
                        path: layout.store_dir().to_string(),
                        message: format!("the pinned copy lacks partition {}", point.partition),
                    })?;
                if state.applied > point.sequence {
                    return Err(Error::Local {
                        path: layout.store_dir().to_string(),
                        message: format!(
                            "the pinned copy holds partition {} at {}, past its point {}",
                            point.partition, state.applied, point.sequence
                        ),
                    });
                }
                let (applied, import) = catch_up(
                    storage,
                    layout,
                    owner,
                    status,
                    point.partition,
                    state.applied,
                    point.sequence,
                )
                .await?;
                state.applied = applied;
                imports.extend(import);
            }
            if imports.is_empty() {
                break;
            }
            crate::sync::apply_pending_imports(storage, layout, owner, status, states, &imports)
                .await?;
        }
        for point in &self.points {
            let applied = states.get(&point.partition).map_or(0, |s| s.applied);
            if applied < point.sequence {
                return Err(self.gone(point, &format!("delta {} is gone", applied + 1)));
            }
        }
        let ms = started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        for point in &self.points {
            status.caught_up(point.partition, point.sequence, started);
            owner.set_caught_up(point.partition, ms);
        }
        Ok(())
    }
}
