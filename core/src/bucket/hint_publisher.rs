//! Publishing a partition's tip hint (`crate::tip_hint`) after commits, off the commit
//! path: a caller is answered when its delta is durable, not when the hint is.
//!
//! One task per partition writes the newest committed number; commits made while a hint PUT
//! is in flight, or within `MIN_INTERVAL` of the last one, coalesce into the next, so a busy
//! partition costs at most one hint PUT per `MIN_INTERVAL` per writer, and the hint trails the
//! newest commit by at most about that much. Failures are logged at debug level and
//! forgotten: the hint only saves idle writers a search. A writer about to go away (a
//! one-shot `ikv put`, a shut-down service or SDK writer) flushes what is pending
//! ([`HintFlush::flush`]), so that the next idle writer does not search.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::CommitStats;
use crate::bucket::tip_hint::{self, TipHint};
use crate::clock::Clock;
use crate::{Storage, StoreLayout};
use tokio::sync::watch;

/// Least time between two hint PUTs of one partition by one writer.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// A hint whose commit is older than this when its turn comes is not written: it would move
/// the shared hint back (a Lambda instance thawed after a long freeze with a write pending).
const STALE: Duration = Duration::from_secs(5);

/// What the committer, the publishing task and a flush share.
struct Shared {
    storage: Storage,
    layout: StoreLayout,
    partition: u32,
    clock: Arc<dyn Clock>,
    stats: Arc<CommitStats>,
    /// The highest number this writer has written as the hint.
    written: AtomicU64,
    /// One hint PUT at a time (the task's and a flush's).
    writing: tokio::sync::Mutex<()>,
}

impl Shared {
    /// Writes the newest pending hint unless it was written or is stale.
    async fn write_pending(&self, latest: &watch::Receiver<Option<TipHint>>) {
        let _one = self.writing.lock().await;
        let Some(hint) = *latest.borrow() else {
            return;
        };
        if hint.seq <= self.written.load(Ordering::SeqCst) || hint.age(self.clock.now()) > STALE {
            return;
        }
        match tip_hint::write(&self.storage, &self.layout, self.partition, &hint).await {
            Ok(()) => {
                self.stats.published_hint();
                self.written.fetch_max(hint.seq, Ordering::SeqCst);
            }
            Err(e) => {
                tracing::debug!(partition = self.partition, seq = hint.seq, error = %e, "tip hint not written")
            }
        }
    }
}

/// The sending side, owned by the partition's committer; dropping it ends the task.
pub(crate) struct HintPublisher {
    shared: Arc<Shared>,
    latest: watch::Sender<Option<TipHint>>,
}

/// A handle that writes a partition's pending hint at once.
#[derive(Clone)]
pub struct HintFlush {
    shared: Arc<Shared>,
    latest: watch::Receiver<Option<TipHint>>,
}

impl HintFlush {
    pub async fn flush(&self) {
        self.shared.write_pending(&self.latest).await;
    }
}

impl HintPublisher {
    /// Starts the partition's publishing task (needs a tokio runtime).
    pub(crate) fn start(
        storage: Storage,
        layout: StoreLayout,
        partition: u32,
        clock: Arc<dyn Clock>,
        stats: Arc<CommitStats>,
    ) -> Self {
        let (latest, rx) = watch::channel(None);
        let shared = Arc::new(Shared {
            storage,
            layout,
            partition,
            clock,
            stats,
            written: AtomicU64::new(0),
            writing: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(run(shared.clone(), rx));
        HintPublisher { shared, latest }
    }

    pub(crate) fn flusher(&self) -> HintFlush {
        HintFlush {
            shared: self.shared.clone(),
            latest: self.latest.subscribe(),
        }
    }

    /// Records that `seq` was committed just now.
    pub(crate) fn publish(&self, seq: u64) {
        let hint = TipHint {
            seq,
            committed_at: self.shared.clock.now(),
        };
        self.latest.send_if_modified(|latest| {
            if latest.is_some_and(|l| l.seq >= seq) {
                return false;
            }
            *latest = Some(hint);
            true
        });
    }
}

/// Ends when the committer (the sender) is gone.
async fn run(shared: Arc<Shared>, mut rx: watch::Receiver<Option<TipHint>>) {
    while rx.changed().await.is_ok() {
        rx.borrow_and_update();
        shared.write_pending(&rx).await;
        shared.clock.sleep(MIN_INTERVAL).await;
    }
}
