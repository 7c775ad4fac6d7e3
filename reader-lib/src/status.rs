//! What a reader can tell about its freshness, per partition.

use std::sync::Arc;

use arc_swap::ArcSwap;
use std::time::SystemTime;

/// Freshness of one mounted partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStatus {
    pub partition: u32,
    /// Last delta applied locally.
    pub applied_sequence: u64,
    /// Sequence of the snapshot the local copy was built from.
    pub snapshot_sequence: u64,
    /// When a poll last found no newer delta while no hole was known below a later delta: the
    /// reader held everything committed up to then. Does not advance while `gap` is set.
    pub caught_up_at: Option<SystemTime>,
    /// When a poll last succeeded.
    pub last_successful_poll: Option<SystemTime>,
    /// Deltas known to exist beyond `applied_sequence` and not applied yet: the highest
    /// sequence number the poller has seen exist (fetched ahead, named by a writer's tip hint
    /// while deltas flow, or beyond a hole), minus the applied one. 0 when caught up; a lower
    /// bound otherwise (the hint trails the writers by about 100 ms). Never forgotten by a
    /// fetch that finds less: only a poll that finds nothing newer resets it.
    pub lag_deltas: u64,
    /// The last error of the background poller, if its last attempt failed.
    pub last_error: Option<String>,
    /// A delta found missing while later deltas exist and no snapshot covers it (a hole in
    /// the log): reads keep serving the state before it. Cleared once the reader is past it.
    pub gap: Option<u64>,
    /// The highest sequence number seen to exist (for `lag_deltas`).
    known_tip: u64,
}

impl PartitionStatus {
    /// A partition nothing is known of yet.
    fn new(partition: u32) -> PartitionStatus {
        PartitionStatus {
            partition,
            applied_sequence: 0,
            snapshot_sequence: 0,
            caught_up_at: None,
            last_successful_poll: None,
            lag_deltas: 0,
            last_error: None,
            gap: None,
            known_tip: 0,
        }
    }

    /// Sets `lag_deltas` from what is known.
    fn relag(&mut self) {
        self.lag_deltas = self.known_tip.saturating_sub(self.applied_sequence);
    }
}

/// Status of every mounted partition, updated by the poller. Reading it never waits (a
/// health check during a long apply, or a forked child, must not block on the poller).
#[derive(Debug, Default)]
pub struct StatusBoard {
    partitions: ArcSwap<Vec<PartitionStatus>>,
    /// What this process did (polls, applies, rebuilds, reads), for its metrics.
    pub(crate) counters: crate::counters::ReaderCounters,
}

impl StatusBoard {
    pub fn new(partitions: &[u32]) -> StatusBoard {
        StatusBoard {
            partitions: ArcSwap::from_pointee(
                partitions
                    .iter()
                    .map(|&p| PartitionStatus::new(p))
                    .collect(),
            ),
            counters: Default::default(),
        }
    }

    /// Adds entries for `partitions` not listed yet (the partitions become known when the
    /// store's configuration is read).
    pub fn set_partitions(&self, partitions: &[u32]) {
        self.partitions.rcu(|all| {
            let mut all = Vec::clone(all);
            for &p in partitions {
                if !all.iter().any(|s| s.partition == p) {
                    all.push(PartitionStatus::new(p));
                }
            }
            all.sort_by_key(|s| s.partition);
            Arc::new(all)
        });
    }

    fn with(&self, partition: u32, f: impl Fn(&mut PartitionStatus)) {
        self.partitions.rcu(|all| {
            let mut all = Vec::clone(all);
            if let Some(s) = all.iter_mut().find(|s| s.partition == partition) {
                f(s);
            }
            Arc::new(all)
        });
    }

    pub fn applied(&self, partition: u32, seq: u64) {
        self.with(partition, |s| {
            s.applied_sequence = seq;
            if s.gap.is_some_and(|g| g <= seq) {
                s.gap = None;
            }
            s.relag();
        });
    }

    /// A fetch found `present` deltas after the applied one.
    pub fn known_beyond(&self, partition: u32, present: u64) {
        self.with(partition, |s| {
            s.known_tip = s.known_tip.max(s.applied_sequence.saturating_add(present));
            s.relag();
        });
    }

    /// Delta `seq` is known to exist (a writer's tip hint named it).
    pub fn seen_tip(&self, partition: u32, seq: u64) {
        self.with(partition, |s| {
            s.known_tip = s.known_tip.max(seq);
            s.relag();
        });
    }

    /// A poll found no delta after `seq`. Freshness is claimed only while no hole is known.
    /// Returns whether the partition is now caught up (no known hole).
    pub fn caught_up(&self, partition: u32, seq: u64, at: SystemTime) -> bool {
        self.with(partition, |s| {
            s.applied_sequence = seq;
            s.last_successful_poll = Some(at);
            if s.gap.is_none() {
                s.caught_up_at = Some(at);
                s.known_tip = seq;
                s.lag_deltas = 0;
                s.last_error = None;
            }
        });
        self.snapshot()
            .iter()
            .any(|s| s.partition == partition && s.gap.is_none())
    }

    /// A hole: delta `missing` is gone while `later` (a later delta) exists.
    pub fn hole(&self, partition: u32, missing: u64, later: u64) {
        self.with(partition, |s| {
            s.gap = Some(missing);
            s.known_tip = s.known_tip.max(later);
            s.relag();
            s.last_error = Some(format!(
                "delta {missing} of partition {partition} is missing while delta {later} exists; serving the state before it"
            ));
        });
    }

    pub fn bootstrapped(&self, partition: u32, snapshot: u64) {
        self.with(partition, |s| {
            s.snapshot_sequence = snapshot;
            s.applied_sequence = snapshot;
            s.relag();
        });
    }

    /// What an attached process knows of a partition: the shared copy's state, and when its
    /// owner last found it caught up.
    pub fn attached(
        &self,
        partition: u32,
        applied: u64,
        snapshot: u64,
        caught_up_at: Option<SystemTime>,
    ) {
        self.with(partition, |s| {
            s.applied_sequence = applied;
            s.snapshot_sequence = snapshot;
            s.known_tip = applied;
            s.lag_deltas = 0;
            s.gap = None;
            if caught_up_at.is_some() {
                s.caught_up_at = caught_up_at;
                s.last_successful_poll = caught_up_at;
            }
        });
    }

    pub fn failed(&self, partition: u32, error: &str) {
        self.with(partition, |s| s.last_error = Some(error.to_owned()));
    }

    /// An attached process's view of its owner: `stale` sets `last_error`; `None` clears an
    /// error that began with `prefix` (an earlier staleness), and leaves any other.
    pub fn owner_freshness(&self, partition: u32, stale: Option<&str>, prefix: &str) {
        self.with(partition, |s| match stale {
            Some(message) => s.last_error = Some(message.to_owned()),
            None => {
                if s.last_error
                    .as_deref()
                    .is_some_and(|e| e.starts_with(prefix))
                {
                    s.last_error = None;
                }
            }
        });
    }

    pub fn snapshot(&self) -> Vec<PartitionStatus> {
        Vec::clone(&self.partitions.load())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_deltas_known_and_not_yet_applied() {
        let board = StatusBoard::new(&[0]);
        board.known_beyond(0, 5);
        assert_eq!(board.snapshot()[0].lag_deltas, 5);
        board.applied(0, 1);
        board.applied(0, 2);
        assert_eq!(board.snapshot()[0].lag_deltas, 3);
        board.caught_up(0, 5, SystemTime::UNIX_EPOCH);
        assert_eq!(board.snapshot()[0].lag_deltas, 0);
        // Beyond a hole the lag stays what the hole showed, however little a fetch finds.
        board.hole(0, 6, 9);
        board.known_beyond(0, 0);
        assert_eq!(board.snapshot()[0].lag_deltas, 4);
    }

    /// Under load the lag is what has been seen to exist, not what the last fetch found: a
    /// fetch of one delta does not make a reader 11 behind look 1 (or 0) behind.
    #[test]
    fn lag_is_not_forgotten_by_a_smaller_fetch() {
        let board = StatusBoard::new(&[0]);
        board.seen_tip(0, 12);
        assert_eq!(board.snapshot()[0].lag_deltas, 12);
        board.known_beyond(0, 1);
        board.applied(0, 1);
        assert_eq!(board.snapshot()[0].lag_deltas, 11);
        board.caught_up(0, 12, SystemTime::UNIX_EPOCH);
        assert_eq!(board.snapshot()[0].lag_deltas, 0);
        board.known_beyond(0, 3);
        assert_eq!(board.snapshot()[0].lag_deltas, 3);
    }
}
