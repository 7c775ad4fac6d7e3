//! What a writer's commit loops did, counted for its metrics: shared by every partition's
//! committer and hint publisher of one writer, read by `Writer::metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::metrics::catalog::*;
use crate::metrics::{Histogram, MetricSet};

/// Counters of one writer (one store).
#[derive(Debug, Default)]
pub struct CommitStats {
    operations: AtomicU64,
    commits: AtomicU64,
    commit_bytes: AtomicU64,
    failures: AtomicU64,
    lost_races: AtomicU64,
    tip_searches: AtomicU64,
    hint_reads: AtomicU64,
    hint_publishes: AtomicU64,
    wake_signals: AtomicU64,
    wake_failures: AtomicU64,
    commit_seconds: Histogram,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl CommitStats {
    /// A call's `n` operations were acknowledged (all its deltas are durable).
    pub fn acknowledged(&self, n: u64) {
        add(&self.operations, n);
    }

    /// A delta of `bytes` was committed in `took`.
    pub(crate) fn committed(&self, bytes: u64, took: Duration) {
        add(&self.commits, 1);
        add(&self.commit_bytes, bytes);
        self.commit_seconds.record(took);
    }

    pub(crate) fn failed(&self) {
        add(&self.failures, 1);
    }

    pub(crate) fn lost_race(&self) {
        add(&self.lost_races, 1);
    }

    pub(crate) fn searched(&self) {
        add(&self.tip_searches, 1);
    }

    pub(crate) fn read_hint(&self) {
        add(&self.hint_reads, 1);
    }

    pub(crate) fn published_hint(&self) {
        add(&self.hint_publishes, 1);
    }

    /// A commit that ended a partition's quiet spell wrote the wake signal (or failed to).
    pub(crate) fn woke(&self, written: bool) {
        add(
            if written {
                &self.wake_signals
            } else {
                &self.wake_failures
            },
            1,
        );
    }

    /// The writer's metrics, labelled with its store.
    pub fn metrics(&self, store: &str) -> MetricSet {
        let l = [("store", store)];
        let mut set = MetricSet::new();
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        set.number(&WRITER_OPERATIONS, &l, n(&self.operations));
        set.number(&WRITER_COMMITS, &l, n(&self.commits));
        set.number(&WRITER_COMMIT_BYTES, &l, n(&self.commit_bytes));
        set.number(&WRITER_COMMIT_FAILURES, &l, n(&self.failures));
        set.histogram(&WRITER_COMMIT_SECONDS, &l, &self.commit_seconds);
        set.number(&WRITER_LOST_RACES, &l, n(&self.lost_races));
        set.number(&WRITER_TIP_SEARCHES, &l, n(&self.tip_searches));
        set.number(&WRITER_TIP_HINT_READS, &l, n(&self.hint_reads));
        set.number(&WRITER_TIP_HINT_PUBLISHES, &l, n(&self.hint_publishes));
        set.number(&WRITER_WAKE_SIGNALS, &l, n(&self.wake_signals));
        set.number(&WRITER_WAKE_FAILURES, &l, n(&self.wake_failures));
        set
    }
}
