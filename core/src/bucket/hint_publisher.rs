//! Publishing a partition's tip hint (`crate::tip_hint`) after commits, off the commit
//! path: a caller is answered when its delta is durable, not when the hint is.
//!
//! A hint costs a PUT, so it is written only where a later idle writer needs it (rfcs/0009):
//! - on every [`HINT_EVERY`]th number at least: a hint then trails the tip by less than that,
//!   and an idle writer that follows it finds the tip with one LIST;
//! - when a burst of commits ends (commits less than [`BURST_GAP`] apart, then that long
//!   without one): a batch job's last commit is exact for whoever comes next;
//! - when the writer was overtaken during the commit (a fleet whose writers take turns):
//!   the next one behind finds the tip in the hint, without a LIST.
//!
//! A sole writer at a steady rate thus writes one hint per 64 commits. Commits made while a
//! hint PUT is in flight, or within `MIN_INTERVAL` of the last one, coalesce into the next.
//! Failures are logged at debug level and forgotten: the hint only saves idle writers a
//! search. A writer about to go away (a one-shot `ikv put`, a shut-down service or SDK
//! writer) flushes what is pending ([`HintFlush::flush`]).

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

/// A hint at least every this many numbers.
pub const HINT_EVERY: u64 = 64;

/// Commits closer than this are a burst; a burst ends when this passes without one.
pub const BURST_GAP: Duration = Duration::from_millis(250);

/// The newest commit not yet published, and why it should be.
#[derive(Debug, Clone, Copy)]
struct Pending {
    hint: TipHint,
    /// Write as soon as `MIN_INTERVAL` allows (overtaken, or `HINT_EVERY` since the last).
    urgent: bool,
    /// Write when no commit follows within `BURST_GAP` (it ends a burst).
    trailing: bool,
}

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
    async fn write_pending(&self, latest: &watch::Receiver<Option<Pending>>) {
        let _one = self.writing.lock().await;
        let Some(Pending { hint, .. }) = *latest.borrow() else {
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
    latest: watch::Sender<Option<Pending>>,
    /// When this writer last committed to the partition (the clock's `elapsed()`).
    last_commit: Option<Duration>,
}

/// A handle that writes a partition's pending hint at once.
#[derive(Clone)]
pub struct HintFlush {
    shared: Arc<Shared>,
    latest: watch::Receiver<Option<Pending>>,
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
        HintPublisher {
            shared,
            latest,
            last_commit: None,
        }
    }

    pub(crate) fn flusher(&self) -> HintFlush {
        HintFlush {
            shared: self.shared.clone(),
            latest: self.latest.subscribe(),
        }
    }

    /// Records that `seq` was committed just now; `overtaken` when the committer learned of
    /// others' commits on the way.
    pub(crate) fn publish(&mut self, seq: u64, overtaken: bool) {
        let now = self.shared.clock.elapsed();
        let burst = self
            .last_commit
            .is_some_and(|last| now.saturating_sub(last) < BURST_GAP);
        self.last_commit = Some(now);
        let written = self.shared.written.load(Ordering::SeqCst);
        let hint = TipHint {
            seq,
            committed_at: self.shared.clock.now(),
        };
        self.latest.send_if_modified(|latest| {
            if latest.is_some_and(|l| l.hint.seq >= seq) {
                return false;
            }
            // A reason not yet acted on carries over to the newer commit.
            let carried = latest.filter(|l| l.hint.seq > written);
            *latest = Some(Pending {
                hint,
                urgent: overtaken
                    || seq >= written.saturating_add(HINT_EVERY)
                    || carried.is_some_and(|l| l.urgent),
                trailing: burst || carried.is_some_and(|l| l.trailing),
            });
            true
        });
    }
}

/// Ends when the committer (the sender) is gone.
async fn run(shared: Arc<Shared>, mut rx: watch::Receiver<Option<Pending>>) {
    while rx.changed().await.is_ok() {
        let Some(pending) = *rx.borrow_and_update() else {
            continue;
        };
        if pending.urgent {
            shared.write_pending(&rx).await;
            shared.clock.sleep(MIN_INTERVAL).await;
        } else if pending.trailing {
            shared.clock.sleep(BURST_GAP).await;
            // A newer commit came: it carries the reason, and is looked at next.
            if !rx.has_changed().unwrap_or(true) {
                shared.write_pending(&rx).await;
            }
        }
    }
}
