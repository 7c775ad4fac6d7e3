//! The options of a snapshot pass as command-line arguments (each also read from the
//! environment), shared by `ikv snapshot` and the Lambda entry point so they are named once.

use std::time::Duration;

use crate::{Retention, SnapshotOptions};

/// What a pass covers and when a partition is due.
#[derive(clap::Args, Clone, Debug)]
pub struct PassArgs {
    /// Stores to compact (repeatable); all stores when omitted
    #[arg(long = "store", env = "IKV_SNAPSHOT_STORES", value_delimiter = ',')]
    pub stores: Vec<String>,
    /// Partitions to compact (repeatable); all when omitted
    #[arg(long = "partition")]
    pub partitions: Vec<u32>,
    /// Snapshot every partition that has new deltas, whether or not a trigger fired
    #[arg(long, env = "IKV_SNAPSHOT_FORCE")]
    pub force: bool,
    /// Trigger: deltas since the last snapshot
    #[arg(long, default_value_t = 1000)]
    pub min_deltas: usize,
    /// Trigger: bytes of deltas since the last snapshot
    #[arg(long, default_value_t = 64 << 20)]
    pub min_bytes: u64,
    /// Trigger: age of the oldest delta not in a snapshot (e.g. 10m)
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub max_age: Duration,
    /// Retention window (e.g. 1h): nothing younger is deleted
    #[arg(long, env = "IKV_RETENTION", default_value = "1h", value_parser = humantime::parse_duration)]
    pub retention: Duration,
    /// Bytes of memory one round's folded deltas may hold (bounds memory)
    #[arg(long, default_value_t = SnapshotOptions::DEFAULT_ROUND_BUDGET_BYTES)]
    pub round_budget_bytes: u64,
    /// Partitions compacted at once, each independently (memory: up to this many round budgets)
    #[arg(long, env = "IKV_SNAPSHOT_PARALLEL", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallel: u16,
    /// Only partitions whose number is K modulo N (K/N, e.g. 0/4): one pass per shard, on as
    /// many schedules or machines, covers a store side by side
    #[arg(long, env = "IKV_SNAPSHOT_SHARD")]
    pub shard: Option<crate::Shard>,
    /// Most layers (snapshots of only what changed) over one full snapshot; 0 writes a full
    /// snapshot every pass
    #[arg(long, env = "IKV_SNAPSHOT_MAX_LAYERS", default_value_t = crate::options::Layering::default().max_layers)]
    pub max_layers: usize,
    /// Most rows a full snapshot's layers hold together, in percent of its rows, before a pass
    /// folds them into a new full snapshot
    #[arg(long, default_value_t = crate::options::Layering::default().max_rows_percent, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub layer_rows_percent: u64,
}

impl PassArgs {
    /// The pass's options; a retention window below [`Retention::MIN_WINDOW`] is refused
    /// (a usage error, found before the bucket is touched).
    pub fn options(&self) -> Result<SnapshotOptions, String> {
        if self.retention < Retention::MIN_WINDOW {
            return Err(format!(
                "--retention {} is too short: the minimum is {} (writers trust a tip they learned for 5 minutes, and readers need time to catch up)",
                humantime::format_duration(self.retention),
                humantime::format_duration(Retention::MIN_WINDOW)
            ));
        }
        let mut o = SnapshotOptions {
            force: self.force,
            round_budget_bytes: Some(self.round_budget_bytes),
            parallel_partitions: usize::from(self.parallel),
            shard: self.shard,
            layering: crate::options::Layering {
                max_layers: self.max_layers,
                max_rows_percent: self.layer_rows_percent,
            },
            ..SnapshotOptions::default()
        };
        o.triggers.min_deltas = self.min_deltas;
        o.triggers.min_bytes = self.min_bytes;
        o.triggers.max_age = self.max_age;
        o.retention.window = self.retention;
        Ok(o)
    }
}
