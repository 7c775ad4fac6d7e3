//! What reads see: an immutable [`ReadView`] (a mapped read image, the mapped overlay and this
//! process's index of the overlay's committed records), replaced whole by pointer swap.
//!
//! Invariants (see `docs/READER.md`, "Reads never wait" and "One local copy per host"):
//! - A view never changes after it is published. The next one is built beside it (indexing
//!   the overlay records committed since) and published with one pointer swap, so reads never
//!   wait and see a delta entirely or not at all.
//! - The image and the overlay are shared by every process of the host through the page
//!   cache; what a process holds privately is only the overlay index (keys and offsets).
//! - Documents are read from the mappings and checked (image entries by their CRC at each
//!   read, overlay records when indexed); damage is an error that marks the view damaged,
//!   never a wrong answer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use ikv_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::drops::DropState;
use crate::image::Image;
use crate::overlay::{Overlay, Record};

/// A key the overlay holds a document for, and the document's location in it.
pub type OverlayDoc = (Arc<[u8]>, (usize, usize));

/// Overlay entries indexed by this process: key → document location (`None`: deleted).
type OverlayIndex = imbl::GenericHashMap<
    Arc<[u8]>,
    Option<(usize, usize)>,
    rustc_hash::FxBuildHasher,
    imbl::shared_ptr::DefaultSharedPtr,
>;

/// One partition's state as an image records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePartition {
    pub applied: u64,
    pub snapshot: u64,
    #[serde(default)]
    pub drops: DropState,
}

/// The state written into an image: every mounted partition's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageState {
    pub partitions: BTreeMap<u32, ImagePartition>,
}

impl ImageState {
    pub fn encode(&self) -> Vec<u8> {
        ikv_core::checksum::seal_json(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(image: &Image) -> Result<ImageState> {
        let json = ikv_core::checksum::open_json(image.state(), "read image state")?;
        serde_json::from_slice(&json).map_err(|e| Error::Corrupt {
            what: format!("read image {}", image.path().display()),
            reason: format!("state: {e}"),
        })
    }
}

/// Data and drop state that reads need, published together. A clone shares the files and
/// the index's unchanged paths (cheap).
#[derive(Clone)]
pub struct ReadView {
    pub generation: u64,
    pub image: Arc<Image>,
    pub overlay: Arc<Overlay>,
    index: OverlayIndex,
    /// Overlay record bytes indexed so far.
    pub indexed: u64,
    /// Indexed by partition number (unmounted partitions stay empty).
    pub drops: Vec<DropState>,
    /// Last delta in this view, by partition number.
    pub applied: Vec<u64>,
    /// Snapshot the image's data started from, by partition number.
    pub snapshot: Vec<u64>,
    /// Set when a read finds the local copy damaged; the owner then rebuilds it.
    pub damaged: Arc<AtomicBool>,
}

impl ReadView {
    /// The view of a generation's image and overlay, with every committed record indexed.
    pub fn open(
        generation: u64,
        image: Arc<Image>,
        overlay: Arc<Overlay>,
        num_partitions: u32,
        damaged: Arc<AtomicBool>,
    ) -> Result<ReadView> {
        let state = ImageState::decode(&image)?;
        let n = num_partitions as usize;
        let mut view = ReadView {
            generation,
            image,
            overlay,
            index: OverlayIndex::default(),
            indexed: 0,
            drops: vec![DropState::default(); n],
            applied: vec![0; n],
            snapshot: vec![0; n],
            damaged,
        };
        for (p, s) in state.partitions {
            let Some(slot) = view.applied.get_mut(p as usize) else {
                return Err(Error::Corrupt {
                    what: format!("read image {}", view.image.path().display()),
                    reason: format!("state names partition {p} of a store with {n}"),
                });
            };
            *slot = s.applied;
            view.snapshot[p as usize] = s.snapshot;
            view.drops[p as usize] = s.drops;
        }
        view.index_to(view.overlay.committed())?;
        Ok(view)
    }

    /// This view with the overlay records committed since indexed, or `None` when nothing
    /// new is committed.
    pub fn advanced(&self) -> Result<Option<ReadView>> {
        let committed = self.overlay.committed();
        if committed <= self.indexed {
            return Ok(None);
        }
        let mut next = ReadView {
            generation: self.generation,
            image: self.image.clone(),
            overlay: self.overlay.clone(),
            index: self.index.clone(),
            indexed: self.indexed,
            drops: self.drops.clone(),
            applied: self.applied.clone(),
            snapshot: self.snapshot.clone(),
            damaged: self.damaged.clone(),
        };
        next.index_to(committed)?;
        Ok(Some(next))
    }

    fn index_to(&mut self, committed: u64) -> Result<()> {
        for record in self.overlay.records(self.indexed, committed)? {
            match record {
                Record::Entry { key, doc, at } => {
                    self.index.insert(Arc::from(key), doc.map(|_| at));
                }
                Record::Commit {
                    partition,
                    sequence,
                    drops,
                } => {
                    let p = partition as usize;
                    if p >= self.applied.len() {
                        return Err(Error::Corrupt {
                            what: format!("overlay {}", self.overlay.path().display()),
                            reason: format!("a commit names partition {partition}"),
                        });
                    }
                    self.applied[p] = sequence;
                    self.drops[p] = drops;
                }
            }
        }
        self.indexed = committed;
        Ok(())
    }

    /// Whether the overlay changed `key` since the image (the image's entry is not current).
    pub fn changed(&self, key: &[u8]) -> bool {
        !self.index.is_empty() && self.index.contains_key(key)
    }

    /// The keys the overlay holds a document for (deleted ones left out) with the
    /// document's location, for scans.
    pub fn overlay_docs(&self) -> Vec<OverlayDoc> {
        self.index
            .iter()
            .filter_map(|(k, at)| at.map(|at| (k.clone(), at)))
            .collect()
    }

    /// The stored document of `key` (live fields and dropped ones alike).
    pub fn doc(&self, key: &[u8]) -> Result<Option<&[u8]>> {
        // Right after a fold the overlay is empty: skip its hash and probe.
        if !self.index.is_empty()
            && let Some(changed) = self.index.get(key)
        {
            return Ok(changed.map(|at| self.overlay.doc_at(at)));
        }
        self.image.get(key).map_err(|e| {
            // The mount is a cache of the bucket: damage is repaired by rebuilding, never
            // served.
            self.damaged.store(true, Ordering::SeqCst);
            Error::Local {
                path: self.image.path().display().to_string(),
                message: format!("the local copy is damaged ({e}); the reader is rebuilding it"),
            }
        })
    }
}

/// The current view, replaced with one pointer swap; loads never block.
pub struct PublishedView {
    current: ArcSwap<ReadView>,
}

/// How long a publisher waits for reads still holding a replaced view before it leaves the
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
    /// finish in time, so that a read does not pay for unmapping what a fold replaced.
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
    // Counted in checks, not read off a clock: `patience / every` checks, `every` apart.
    let checks = (patience.as_nanos() / every.as_nanos().max(1)).max(1);
    let mut shared = shared;
    for check in 0.. {
        match Arc::try_unwrap(shared) {
            Ok(owned) => {
                drop(owned);
                return true;
            }
            Err(still_held) if check < checks => {
                shared = still_held;
                std::thread::sleep(every);
            }
            Err(_) => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ImageWriter;

    #[test]
    fn overlay_records_shadow_the_image_and_leave_older_views_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ImageWriter::create(&dir.path().join("image")).unwrap();
        for k in ["a", "b", "c"] {
            w.add(k.as_bytes(), b"base").unwrap();
        }
        let state = ImageState {
            partitions: BTreeMap::from([(
                0,
                ImagePartition {
                    applied: 4,
                    snapshot: 4,
                    drops: DropState::default(),
                },
            )]),
        };
        w.finish(&state.encode()).unwrap();
        let image = Arc::new(Image::open(&dir.path().join("image")).unwrap());
        let path = dir.path().join("overlay");
        let writer = Overlay::create(&path, 1, 1 << 16).unwrap();
        let overlay = Arc::new(Overlay::open(&path, false).unwrap());
        let damaged = Arc::new(AtomicBool::new(false));
        let old = ReadView::open(1, image, overlay, 1, damaged).unwrap();
        assert_eq!(old.applied, vec![4]);
        assert!(old.advanced().unwrap().is_none(), "nothing committed");
        let dropped = DropState {
            all: 0,
            fields: BTreeMap::from([("f".to_owned(), 9)]),
            prefixes: BTreeMap::new(),
        };
        writer
            .append(
                &[
                    (b"b".to_vec(), Some(b"new".to_vec())),
                    (b"c".to_vec(), None),
                    (b"d".to_vec(), Some(b"added".to_vec())),
                ],
                0,
                5,
                &dropped,
            )
            .unwrap();
        let next = old.advanced().unwrap().unwrap();
        assert_eq!(next.doc(b"a").unwrap(), Some(&b"base"[..]));
        assert_eq!(next.doc(b"b").unwrap(), Some(&b"new"[..]));
        assert_eq!(
            next.doc(b"c").unwrap(),
            None,
            "a tombstone hides the image entry"
        );
        assert_eq!(next.doc(b"d").unwrap(), Some(&b"added"[..]));
        assert_eq!(next.applied, vec![5]);
        assert_eq!(next.drops[0], dropped);
        assert_eq!(
            old.doc(b"b").unwrap(),
            Some(&b"base"[..]),
            "a published view never changes"
        );
        assert_eq!(old.doc(b"d").unwrap(), None);
        assert_eq!(old.applied, vec![4]);
    }
}
