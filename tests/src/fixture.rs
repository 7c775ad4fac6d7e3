//! The one set-up most tests start from: a store on a fresh local directory used as the
//! bucket, with a runtime to drive it; and the waits tests make on readers.

use std::time::{Duration, Instant};

use ikv_core::bucket::create_store;
use ikv_core::{Document, FieldValue, Storage, StoreConfig};
use ikv_reader::Reader;

/// A store on a fresh local directory (`<dir>/bucket`).
pub struct LocalStore {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub storage: Storage,
    pub config: StoreConfig,
    pub rt: tokio::runtime::Runtime,
}

/// Creates store `name` (primary key `primary_key`, `partitions` partitions) on a fresh local
/// directory.
pub fn local_store(
    name: &str,
    primary_key: &str,
    partitioning_key: Option<&str>,
    partitions: u32,
) -> LocalStore {
    let rt = crate::runtime();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let bucket = dir.path().join("bucket");
    std::fs::create_dir_all(&bucket).expect("the bucket directory");
    let url = format!("file://{}", bucket.display());
    let storage = Storage::open(&url, &Default::default()).expect("open the bucket");
    let config = StoreConfig::new(name, primary_key, partitioning_key, partitions)
        .expect("a valid configuration");
    rt.block_on(create_store(&storage, &config))
        .expect("create the store");
    LocalStore {
        dir,
        url,
        storage,
        config,
        rt,
    }
}

/// Waits (up to a minute) until `done`; fails the test naming `what` otherwise.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until `reader` applied at least `tips[p]` in every partition it mounts.
pub fn wait_caught_up(reader: &Reader, tips: &[u64]) {
    wait_until("the reader caught up", || {
        reader
            .status()
            .iter()
            .all(|s| s.applied_sequence >= tips[s.partition as usize])
    });
}

/// The first key of the form `k<i>` that lands in partition `p` of `partitions`.
pub fn key_in(p: u32, partitions: u32) -> String {
    (0..)
        .map(|i| format!("k{i}"))
        .find(|k| ikv_core::partition::partition_of(k.as_bytes(), partitions) == p)
        .unwrap_or_default()
}

/// A document `key` with one int64 field `v`.
pub fn doc_v(key: &str, v: i64) -> Document {
    Document::new()
        .with("id", FieldValue::String(key.into()))
        .with("v", FieldValue::Int64(v))
}
