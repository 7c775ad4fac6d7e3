//! Publishing a partition's tip hint (`ikv_core::tip_hint`) after commits, off the commit
//! path: a caller is answered when its delta is durable, not when the hint is.
//!
//! One task per partition writes the newest committed number; commits made while a hint PUT
//! is in flight, or within `MIN_INTERVAL` of the last one, coalesce into the next, so a busy
//! partition costs at most one hint PUT per `MIN_INTERVAL` per writer, and the hint trails the
//! newest commit by at most about that much. Failures are logged at debug level and
//! forgotten: the hint only saves idle writers a search.

use std::sync::Arc;
use std::time::Duration;

use ikv_core::clock::Clock;

use ikv_core::tip_hint::{self, TipHint};
use ikv_core::{Storage, StoreLayout};
use tokio::sync::watch;

/// Least time between two hint PUTs of one partition by one writer.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// A hint whose commit is older than this when its turn comes is not written: it would move
/// the shared hint back (a Lambda instance thawed after a long freeze with a write pending).
const STALE: Duration = Duration::from_secs(5);

/// The sending side, owned by the partition's committer; dropping it ends the task.
pub(crate) struct HintPublisher {
    latest: watch::Sender<Option<TipHint>>,
    clock: Arc<dyn Clock>,
}

impl HintPublisher {
    /// Starts the partition's publishing task (needs a tokio runtime).
    pub(crate) fn start(
        storage: Storage,
        layout: StoreLayout,
        partition: u32,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let (latest, rx) = watch::channel(None);
        tokio::spawn(run(storage, layout, partition, rx, clock.clone()));
        HintPublisher { latest, clock }
    }

    /// Records that `seq` was committed just now.
    pub(crate) fn publish(&self, seq: u64) {
        let hint = TipHint {
            seq,
            committed_at: self.clock.now(),
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

async fn run(
    storage: Storage,
    layout: StoreLayout,
    partition: u32,
    mut rx: watch::Receiver<Option<TipHint>>,
    clock: Arc<dyn Clock>,
) {
    let mut written = 0u64;
    while rx.changed().await.is_ok() {
        let Some(hint) = *rx.borrow_and_update() else {
            continue;
        };
        if hint.seq <= written || hint.age(clock.now()) > STALE {
            continue;
        }
        match tip_hint::write(&storage, &layout, partition, &hint).await {
            Ok(()) => written = hint.seq,
            Err(e) => {
                tracing::debug!(partition, seq = hint.seq, error = %e, "tip hint not written")
            }
        }
        clock.sleep(MIN_INTERVAL).await;
    }
}
