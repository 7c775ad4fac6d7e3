//! Compactor settings: when to snapshot, how much to merge per round, file sizes, retention.

use std::time::Duration;

use crate::write::FileLayout;

/// When a partition is due for a snapshot: any one of these, counted over the deltas since
/// the newest snapshot.
#[derive(Debug, Clone)]
pub struct Triggers {
    pub min_deltas: usize,
    pub min_bytes: u64,
    /// Age of the oldest delta not yet in a snapshot.
    pub max_age: Duration,
}

impl Default for Triggers {
    fn default() -> Self {
        Triggers {
            min_deltas: 1000,
            min_bytes: 64 << 20,
            max_age: Duration::from_secs(10 * 60),
        }
    }
}

/// What may be deleted. See `docs/SNAPSHOTS.md` for the guarantee this gives readers.
#[derive(Debug, Clone)]
pub struct Retention {
    /// Nothing younger than this is deleted: deltas written, snapshots superseded, or
    /// orphaned files created within the window stay.
    pub window: Duration,
    /// Committed snapshots always kept, newest first.
    pub keep_snapshots: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            window: Duration::from_secs(60 * 60),
            keep_snapshots: 2,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct SnapshotOptions {
    pub triggers: Triggers,
    /// Snapshot even when no trigger fires (as long as there are new deltas).
    pub force: bool,
    /// Most bytes of memory a round's fold may hold (the overlay, plus the next delta);
    /// deltas beyond it are compacted in further rounds, each committing a snapshot. Bounds
    /// the compactor's memory whatever the store's size or how far behind it is.
    pub round_budget_bytes: Option<u64>,
    pub files: FileLayout,
    pub retention: Retention,
}

impl SnapshotOptions {
    pub const DEFAULT_ROUND_BUDGET_BYTES: u64 = 512 << 20;

    pub fn round_budget(&self) -> u64 {
        self.round_budget_bytes
            .unwrap_or(Self::DEFAULT_ROUND_BUDGET_BYTES)
            .max(1)
    }
}
