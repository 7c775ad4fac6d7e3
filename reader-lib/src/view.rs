//! What reads see: an immutable [`ReadView`] that the poller replaces whole.
//!
//! Invariants (see `docs/READER.md`, "Reads never wait"):
//! - A view never changes after it is published. The poller builds the next view beside the
//!   current one (staging a delta reads the current view; the poller is its only writer) and
//!   publishes it with one pointer swap, so reads never wait for an apply and see a delta
//!   entirely or not at all.
//! - On disk, a view reads fjall at the snapshot taken after its delta's batch committed:
//!   a later commit is invisible to it until its own view is published with its drop state.
//! - In memory, a view is an immutable base map (built at bootstrap or by a fold) plus a
//!   persistent overlay of the entries changed since (a tombstone for a deleted entry). A
//!   new view shares both with the previous one; the overlay is folded into a new base when
//!   it grows past a quarter of the base, so lookups stay one small-trie probe plus one hash
//!   probe and memory stays near one copy of the documents.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use fjall::{Keyspace, Readable, Snapshot};
use ikv_core::{Error, Result};

use crate::drops::DropState;
use crate::keys::doc_key;

/// Documents of a bootstrap, for reads from memory: primary-key bytes → encoded entry.
pub type BaseIndex = rustc_hash::FxHashMap<Box<[u8]>, Box<[u8]>>;

/// Entries changed since the base was built; `None` is a deleted entry.
type Overlay = imbl::GenericHashMap<
    Arc<[u8]>,
    Option<Arc<[u8]>>,
    rustc_hash::FxBuildHasher,
    imbl::shared_ptr::DefaultSharedPtr,
>;

/// Below this many overlay entries a fold is never worth its copy of the base.
const FOLD_MIN_ENTRIES: usize = 65_536;

/// The in-memory documents of a view: a shared base and the changes since.
#[derive(Clone)]
pub struct MemoryIndex {
    base: Arc<BaseIndex>,
    overlay: Overlay,
}

impl MemoryIndex {
    pub fn new(base: BaseIndex) -> MemoryIndex {
        MemoryIndex {
            base: Arc::new(base),
            overlay: Overlay::default(),
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        // Right after a bootstrap or a fold the overlay is empty: skip its hash and probe.
        if !self.overlay.is_empty()
            && let Some(changed) = self.overlay.get(key)
        {
            return changed.as_deref();
        }
        self.base.get(key).map(|v| &**v)
    }

    /// Entries in the overlay (changed since the base was built).
    pub fn overlay_len(&self) -> usize {
        self.overlay.len()
    }

    /// This index with `changes` applied (`None` deletes); `self` is left as it was. Folds
    /// the overlay into a new base when it has grown past a quarter of the base.
    pub fn with_changes<'a>(
        &self,
        changes: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    ) -> MemoryIndex {
        let mut next = self.clone();
        for (k, v) in changes {
            next.overlay.insert(Arc::from(k), v.map(Arc::from));
        }
        if next.overlay.len() > FOLD_MIN_ENTRIES.max(next.base.len() / 4) {
            next.fold()
        } else {
            next
        }
    }

    /// A new base holding base and overlay; costs one copy of the base, amortised over the
    /// quarter-of-the-base changes that made the overlay this large.
    fn fold(self) -> MemoryIndex {
        let started = Instant::now();
        let mut base = (*self.base).clone();
        for (k, v) in self.overlay.iter() {
            match v {
                Some(v) => {
                    base.insert(Box::from(&**k), Box::from(&**v));
                }
                None => {
                    base.remove(&**k);
                }
            }
        }
        tracing::debug!(entries = base.len(), folded = self.overlay.len(), elapsed = ?started.elapsed(), "folded the memory index overlay");
        MemoryIndex::new(base)
    }
}

/// Data and drop state that reads need, published together.
pub struct ReadView {
    pub docs: Keyspace,
    /// The fjall state this view reads (on-disk mode): taken after the view's last commit.
    pub snapshot: Snapshot,
    /// Indexed by partition number (unmounted partitions stay empty).
    pub drops: Vec<DropState>,
    /// Present when reads are served from memory.
    pub memory: Option<MemoryIndex>,
    /// Set when a read finds the local copy damaged; the poller then rebuilds it.
    pub damaged: Arc<AtomicBool>,
}

/// An encoded document, borrowed from memory or read from disk.
pub enum DocBytes<'a> {
    Memory(&'a [u8]),
    Disk(fjall::UserValue),
}

impl std::ops::Deref for DocBytes<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            DocBytes::Memory(b) => b,
            DocBytes::Disk(v) => v,
        }
    }
}

impl ReadView {
    /// The stored document of `key` (live fields and dropped ones alike).
    pub fn doc(&self, key: &[u8]) -> Result<Option<DocBytes<'_>>> {
        match &self.memory {
            Some(index) => Ok(index.get(key).map(DocBytes::Memory)),
            None => self
                .snapshot
                .get(&self.docs, doc_key(key))
                .map(|v| v.map(DocBytes::Disk))
                .map_err(|e| {
                    // The mount is a cache of the bucket: a block that fails its checksum or a
                    // missing table file is repaired by rebuilding, never served.
                    self.damaged.store(true, Ordering::SeqCst);
                    Error::Local {
                        path: "local store".into(),
                        message: format!(
                            "the local copy is damaged ({e}); the reader is rebuilding it from the bucket"
                        ),
                    }
                }),
        }
    }
}

/// The current view, replaced by the poller with one pointer swap; loads never block.
pub struct PublishedView {
    current: ArcSwap<ReadView>,
}

/// How long the poller waits for reads still holding a replaced view before it leaves the
/// last one to free it. Reads hold a view for one lookup or one batch.
const RETIRE_PATIENCE: Duration = Duration::from_millis(200);

impl PublishedView {
    pub fn new(view: ReadView) -> PublishedView {
        PublishedView {
            current: ArcSwap::from_pointee(view),
        }
    }

    pub fn load(&self) -> arc_swap::Guard<Arc<ReadView>> {
        self.current.load()
    }

    pub fn load_full(&self) -> Arc<ReadView> {
        self.current.load_full()
    }

    /// Makes `view` current. The replaced view is freed here when the reads still using it
    /// finish in time, so that a read does not pay for freeing what a delta replaced.
    pub fn publish(&self, view: ReadView) {
        let old = self.current.swap(Arc::new(view));
        drop_when_unshared(old, RETIRE_PATIENCE, Duration::from_micros(50));
    }
}

/// Drops `shared` on this thread once no one else holds it, waiting up to `patience` (checking
/// every `every`); past that, leaves it to whoever drops the last reference. Returns whether it
/// was dropped here. For handing the cost of freeing (or closing) something large to the
/// thread that replaced it rather than to a reader.
pub fn drop_when_unshared<T>(shared: Arc<T>, patience: Duration, every: Duration) -> bool {
    let deadline = Instant::now() + patience;
    let mut shared = shared;
    loop {
        match Arc::try_unwrap(shared) {
            Ok(owned) => {
                drop(owned);
                return true;
            }
            Err(still_held) if Instant::now() < deadline => {
                shared = still_held;
                std::thread::sleep(every);
            }
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(n: u32) -> BaseIndex {
        (0..n)
            .map(|i| {
                (
                    i.to_be_bytes().to_vec().into_boxed_slice(),
                    vec![1u8].into_boxed_slice(),
                )
            })
            .collect()
    }

    #[test]
    fn overlay_changes_shadow_the_base_and_leave_the_old_index_untouched() {
        let old = MemoryIndex::new(base(10));
        let k3 = 3u32.to_be_bytes();
        let k4 = 4u32.to_be_bytes();
        let k99 = 99u32.to_be_bytes();
        let next = old.with_changes([
            (&k3[..], Some(&b"new"[..])),
            (&k4[..], None),
            (&k99[..], Some(&b"added"[..])),
        ]);
        assert_eq!(next.get(&k3), Some(&b"new"[..]));
        assert_eq!(next.get(&k4), None, "a tombstone hides the base entry");
        assert_eq!(next.get(&k99), Some(&b"added"[..]));
        assert_eq!(
            old.get(&k3),
            Some(&[1u8][..]),
            "the published index never changes"
        );
        assert_eq!(old.get(&k4), Some(&[1u8][..]));
        assert_eq!(old.get(&k99), None);
    }

    #[test]
    fn a_large_overlay_folds_into_an_equal_base() {
        let n = FOLD_MIN_ENTRIES as u32 + 10;
        let mut index = MemoryIndex::new(base(4));
        let keys: Vec<[u8; 4]> = (0..n).map(|i| (i + 100).to_be_bytes()).collect();
        index = index.with_changes(keys.iter().map(|k| (&k[..], Some(&b"v"[..]))));
        assert_eq!(index.overlay_len(), 0, "folded");
        let two = 2u32.to_be_bytes();
        index = index.with_changes([(&two[..], None)]);
        assert_eq!(index.get(&two), None);
        assert_eq!(index.get(&1u32.to_be_bytes()), Some(&[1u8][..]));
        assert!(keys.iter().all(|k| index.get(k) == Some(&b"v"[..])));
    }
}
