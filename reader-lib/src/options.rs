//! How to open a reader: [`ReaderOptions`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ikv_core::clock::{Clock, SystemClock};
use ikv_core::{Storage, StorageOptions};

use crate::pin::Pin;

/// How to open a reader.
#[derive(Debug, Clone)]
pub struct ReaderOptions {
    /// Storage root URL (`s3://bucket/prefix`, `file:///dir`).
    pub storage_url: String,
    pub storage_options: StorageOptions,
    pub store_name: String,
    /// Directory for the local copy (one subdirectory per store), shared by every reader
    /// process of the host that opens the same store there.
    pub mount_directory: PathBuf,
    /// Partitions to mount; all when empty.
    pub partitions: Vec<u32>,
    /// Time between polls for new deltas (owner), and the longest time an attached process
    /// takes to see what its owner applied.
    pub poll_interval: Duration,
    /// Time between checks of the store's wake signal once every partition of this host
    /// has been quiet for 30 s (one conditional GET per check, whatever the number of
    /// partitions; rfcs/0009): how long the first write after a quiet spell takes at most to
    /// be seen, plus a round trip. Never shorter than `poll_interval`.
    pub idle_poll_interval: Duration,
    /// The bucket's wake topic (an SNS topic ARN `ikv prepare-bucket --notify` prints): the
    /// mount's owner subscribes a queue of its own to it and learns of the first write after
    /// a quiet spell within a long poll, checking the signal only every 30 s meanwhile. Needs
    /// SQS (create, receive, delete a queue) and SNS (subscribe, unsubscribe) permissions;
    /// without them the host polls as without a topic. `None`: polling only.
    pub wake_topic: Option<String>,
    /// fjall block cache size (the owner's tail of changes since the image).
    pub cache_bytes: u64,
    /// Bytes of changes since the read image past which the owner folds a new image in the
    /// background (at least a quarter of the image, whatever this says: a fold rewrites the
    /// whole image). Smaller folds more often; the overlay holds four times this much.
    pub fold_min_bytes: u64,
    /// How often a running reader checks (with a LIST) that no delta it has not applied was
    /// removed by retention or is missing below a later one. Also checked at open and after
    /// a failed poll.
    pub gap_check_interval: Duration,
    /// An already opened storage root to read from instead of opening `storage_url` (a
    /// custom object store, or one that injects faults in tests); `storage_url` then only
    /// names it in messages and in what the mount serves.
    pub storage: Option<Storage>,
    /// How much lower than the application's the CPU priority of the reader's background
    /// threads (polling, applying deltas, bootstrap ingestion) is, as a `nice` increment
    /// (Linux; 0 keeps the same priority). Applying a large delta is CPU work: on a busy host
    /// it should wait for the application's threads rather than preempt them, as database
    /// engines run compaction below foreground work.
    pub background_nice: i32,
    /// A point-in-time reader: `Some` serves exactly the state the pin names (a checkpoint,
    /// or the newest state committed at or before a time) and never polls; `None` follows
    /// the tip.
    pub pin: Option<Pin>,
    /// The reader's time: poll and backoff sleeps, gap-check intervals, freshness stamps. The
    /// real clock unless a test drives it (`ikv_core::clock::ManualClock`).
    pub clock: Arc<dyn Clock>,
}

impl ReaderOptions {
    pub fn new(storage_url: &str, store_name: &str, mount_directory: impl Into<PathBuf>) -> Self {
        ReaderOptions {
            storage_url: storage_url.to_owned(),
            storage_options: StorageOptions::default(),
            store_name: store_name.to_owned(),
            mount_directory: mount_directory.into(),
            partitions: Vec::new(),
            poll_interval: Duration::from_millis(500),
            idle_poll_interval: Duration::from_secs(3),
            wake_topic: None,
            cache_bytes: 64 << 20,
            fold_min_bytes: 64 << 20,
            gap_check_interval: Duration::from_secs(600),
            storage: None,
            background_nice: 10,
            pin: None,
            clock: SystemClock::shared(),
        }
    }
}
