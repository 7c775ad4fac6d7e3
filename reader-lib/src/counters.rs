//! What one reader process did, counted for its metrics (`Reader::metrics`). Only the
//! mount's owner polls and applies, so a host's processes never count the same poll twice;
//! reads are counted by every process that serves them, on per-thread shards (no contention
//! between the threads that read).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ikv_core::Storage;
use ikv_core::metrics::{Histogram, ShardedCounter};

#[derive(Debug, Default)]
pub(crate) struct ReaderCounters {
    pub(crate) polls_ok: AtomicU64,
    pub(crate) polls_failed: AtomicU64,
    pub(crate) poll_seconds: Histogram,
    pub(crate) deltas_applied: AtomicU64,
    pub(crate) operations_applied: AtomicU64,
    pub(crate) apply_seconds: Histogram,
    /// Shared with the owner, which folds new read images.
    pub(crate) fold_seconds: std::sync::Arc<Histogram>,
    pub(crate) corrupt_objects: AtomicU64,
    pub(crate) rebuilds: AtomicU64,
    /// Partitions the owner leaves to the store's wake signal (`crate::cadence`).
    pub(crate) quiet_partitions: AtomicU64,
    /// 1 while the owner's wake queue is subscribed and answers (`crate::push`).
    pub(crate) wake_queue_up: AtomicU64,
    /// Requests to the wake queue (receives, deletes; SQS bills them apart from S3).
    pub(crate) wake_queue_requests: AtomicU64,
    pub(crate) gets: ShardedCounter,
    pub(crate) multigets: ShardedCounter,
    /// The root this process polls with, while it owns the mount (its requests are counted).
    storage: Mutex<Option<Storage>>,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl ReaderCounters {
    pub(crate) fn set_storage(&self, storage: &Storage) {
        *self.storage.lock().unwrap_or_else(|p| p.into_inner()) = Some(storage.clone());
    }

    pub(crate) fn storage(&self) -> Option<Storage> {
        self.storage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn polled(&self, ok: bool, took: Duration) {
        bump(if ok {
            &self.polls_ok
        } else {
            &self.polls_failed
        });
        self.poll_seconds.record(took);
    }

    pub(crate) fn applied(&self, operations: usize) {
        bump(&self.deltas_applied);
        self.operations_applied
            .fetch_add(operations as u64, Ordering::Relaxed);
    }

    /// Counts `e` when it says an object was damaged or foreign; returns it.
    pub(crate) fn note(&self, e: ikv_core::Error) -> ikv_core::Error {
        if e.kind() == ikv_core::ErrorKind::Corrupt {
            bump(&self.corrupt_objects);
        }
        e
    }
}
