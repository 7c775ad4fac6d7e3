//! The push path of a quiet host (rfcs/0009): with a wake topic (`ikv prepare-bucket
//! --notify`), the owner subscribes a queue of its own to it and long-polls it; a message
//! (a writer replaced the store's wake signal) makes the poller check the signal at once
//! instead of at its next interval. While the queue answers, a quiet host checks the signal
//! only every 30 s (a safety net); when it does not (no permission, no such topic), the
//! host polls as without a topic.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ikv_aws::wake_queue::{RETRY_AFTER, WakeQueue};
use ikv_core::StorageOptions;
use ikv_core::clock::Clock;
use tokio::sync::{Notify, watch};

/// The check interval of a quiet host while its queue answers.
pub(crate) const PUSHED_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// What the poller shares with the queue task.
#[derive(Debug, Default)]
pub(crate) struct PushState {
    /// A wake arrived since the poller last looked.
    pub(crate) woken: Notify,
    /// The queue is subscribed and its last receive answered.
    pub(crate) healthy: AtomicBool,
}

impl PushState {
    fn set_healthy(&self, up: &AtomicU64, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
        up.store(u64::from(healthy), Ordering::Relaxed);
    }
}

/// Starts the queue task; it closes the queue (unsubscribes, deletes) when `stop` turns true.
pub(crate) fn start(
    topic: String,
    options: StorageOptions,
    clock: Arc<dyn Clock>,
    up: Arc<crate::roles::Shared>,
    mut stop: watch::Receiver<bool>,
) -> (Arc<PushState>, tokio::task::JoinHandle<()>) {
    let state = Arc::new(PushState::default());
    let shared = state.clone();
    let task = tokio::spawn(async move {
        let config = ikv_aws::sdk_config(&options).await;
        let requests = &up.status.counters.wake_queue_requests;
        let up = &up.status.counters.wake_queue_up;
        let queue = loop {
            match WakeQueue::open(&config, &topic).await {
                Ok(queue) => {
                    shared.set_healthy(up, true);
                    break queue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no wake queue: polling as without a wake topic");
                    tokio::select! {
                        _ = clock.sleep(RETRY_AFTER.saturating_mul(6)) => {}
                        _ = stop.changed() => return,
                    }
                }
            }
        };
        loop {
            if *stop.borrow() {
                break;
            }
            tokio::select! {
                received = queue.receive() => match received {
                    Ok((n, made)) => {
                        requests.fetch_add(made, Ordering::Relaxed);
                        shared.set_healthy(up, true);
                        if n > 0 {
                            shared.woken.notify_one();
                        }
                    }
                    Err(e) => {
                        requests.fetch_add(1, Ordering::Relaxed);
                        shared.set_healthy(up, false);
                        tracing::warn!(error = %e, "the wake queue does not answer; polling meanwhile");
                        tokio::select! {
                            _ = clock.sleep(RETRY_AFTER) => {}
                            _ = stop.changed() => {}
                        }
                    }
                },
                _ = stop.changed() => {}
            }
        }
        shared.set_healthy(up, false);
        queue.close().await;
    });
    (state, task)
}
