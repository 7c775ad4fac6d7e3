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

impl Retention {
    /// The shortest window a pass accepts. Writers trust a tip they learned, or read in a tip
    /// hint, for 5 minutes without looking (`writer/commit.rs`, `TIP_TTL`): a delta younger
    /// than that must never be deleted, or a writer could commit into a number a snapshot
    /// already covers, acknowledged and never read.
    pub const MIN_WINDOW: Duration = Duration::from_secs(10 * 60);

    /// Refuses a window under [`Retention::MIN_WINDOW`].
    pub fn check(&self) -> ikv_core::Result<()> {
        if self.window < Self::MIN_WINDOW {
            return Err(ikv_core::Error::InvalidConfig(format!(
                "retention window {}s is under the minimum of 600s (10m): writers trust a tip they learned for 5 minutes, so younger deltas must stay",
                self.window.as_secs()
            )));
        }
        Ok(())
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            window: Duration::from_secs(60 * 60),
            keep_snapshots: 2,
        }
    }
}

/// One of `count` disjoint parts of the partitions: those whose number is `index` modulo
/// `count`. Several schedules (or machines), one per shard, compact a store's partitions
/// side by side, each pass touching only its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Whether `partition` is in this shard.
    pub fn holds(&self, partition: u32) -> bool {
        partition % self.count == self.index
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `K/N`, with `N` at least 1 and `K` below it.
    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("shard {s:?} is not K/N with 0 <= K < N (e.g. 0/4)");
        let (k, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let index: u32 = k.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// When a pass writes a layer (only what changed, over the snapshots below it) rather than a
/// full snapshot (docs/SNAPSHOTS.md, "Layers").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layering {
    /// Most layers over one full snapshot; 0 writes a full snapshot every time.
    pub max_layers: usize,
    /// Most rows all the layers of a stack hold together, as a percentage of the full
    /// snapshot's rows: beyond it, the next pass folds the stack into a full snapshot.
    pub max_rows_percent: u64,
}

impl Default for Layering {
    fn default() -> Self {
        Layering {
            max_layers: 8,
            max_rows_percent: 25,
        }
    }
}

impl Layering {
    /// Whether a stack of `layers` layers holding `layer_rows` rows over a full snapshot of
    /// `full_rows` rows may stand (or take one more layer of that size).
    pub fn allows(&self, layers: usize, layer_rows: u64, full_rows: u64) -> bool {
        layers <= self.max_layers
            && u128::from(layer_rows) * 100
                <= u128::from(full_rows) * u128::from(self.max_rows_percent)
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
    /// Partitions compacted at once (each independently: one failing does not stop the
    /// others). Memory grows with it: up to this many round budgets. 0 counts as 1.
    pub parallel_partitions: usize,
    /// Only the partitions of this shard (all when `None`).
    pub shard: Option<Shard>,
    pub layering: Layering,
}

impl SnapshotOptions {
    pub const DEFAULT_ROUND_BUDGET_BYTES: u64 = 512 << 20;

    pub fn round_budget(&self) -> u64 {
        self.round_budget_bytes
            .unwrap_or(Self::DEFAULT_ROUND_BUDGET_BYTES)
            .max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_split_the_partitions_disjointly() {
        let shards: Vec<Shard> = (0..3).map(|k| format!("{k}/3").parse().unwrap()).collect();
        for p in 0..100u32 {
            assert_eq!(
                shards.iter().filter(|s| s.holds(p)).count(),
                1,
                "partition {p}"
            );
        }
        assert_eq!(" 1 / 2 ".parse::<Shard>(), Ok(Shard { index: 1, count: 2 }));
        for bad in ["3/3", "0/0", "1", "a/2", "-1/2", "1/2/3", ""] {
            let err = bad.parse::<Shard>().unwrap_err();
            assert!(err.contains("is not K/N"), "{bad}: {err}");
        }
    }
}
