//! The mount's owner: the one process of a host that holds the durable state, applies deltas
//! and writes what every reader process maps (the read image and its overlay).
//!
//! Invariants (`docs/READER.md`, "One local copy per host"):
//! - The durable state is the base image plus the tail of changes since it
//!   ([`crate::local`]): each value has one home on disk. The published generation's image is
//!   the base image; only a crash between naming a new base and publishing it leaves them
//!   apart, and the next owner then folds rather than adopts.
//! - A delta is committed to the tail first, then appended to the overlay. So the overlay
//!   never holds what the durable state lacks; an owner that finds the overlay behind the
//!   durable state (its predecessor died between the two) folds a new image from base and
//!   tail rather than trusting the overlay.
//! - A new generation is published in this order: image and empty overlay written and synced,
//!   `current` replaced, the old overlay marked superseded, old files deleted. A process that
//!   sees "superseded" therefore finds the new generation in `current`.
//! - Folds run in the background: a fold merges the base image with a snapshot of the tail on
//!   a thread of its own while the owner keeps applying deltas to the current generation, so
//!   freshness never waits for a fold. The snapshot and the overlay's committed length are
//!   taken together, between two deltas: the deltas committed after that length are exactly
//!   what the new image lacks, and they are carried into the new generation's overlay and
//!   into the new tail (named with the new base in one batch) before it is published.
//!   Anything that replaces the durable state or folds in the foreground (a bootstrap, an
//!   import's rebuild, a repair, a full overlay) first cancels a fold in flight, whose image
//!   is then never published.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use ikv_core::{DeltaOp, Error, Result};

use crate::apply::{Entries, stage};
use crate::durable::Durable;
use crate::image::{Image, ImageWriter};
use crate::local::{LocalStore, PartitionState};
use crate::mount::{Current, Identity, MountDir};
use crate::overlay::{Overlay, Record};
use crate::view::{ImagePartition, ImageState, PublishedView, ReadView};

/// Least capacity of an overlay (a sparse file: what is not written takes no disk), so that
/// deltas keep landing while a background fold runs however low the fold threshold is.
const OVERLAY_MIN_CAPACITY: u64 = 64 << 20;

/// Nice increment of a fold's thread over the poller that starts it.
const FOLD_NICE: i32 = 5;

/// A fold writing a new image on a thread of its own.
struct Fold {
    generation: u64,
    /// Overlay records committed from here on came after the fold's snapshot of the durable
    /// copy: they are carried into the new generation's overlay.
    from: u64,
    started: ikv_core::clock::Stopwatch,
    cancel: Arc<AtomicBool>,
    thread: JoinHandle<Result<Image>>,
}

impl Fold {
    /// Stops the thread (it checks between two documents and removes what it wrote) and
    /// waits for it: nothing of a cancelled fold outlives this call, not even its hold on the
    /// durable state's files.
    fn cancel(self) {
        self.cancel.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
    }
}

/// How a published image becomes the durable state's base.
enum NewBase {
    /// Rebuilt from the bucket (a bootstrap, an import): an empty tail and these states.
    Rebuilt(BTreeMap<u32, ImagePartition>),
    /// Folded from the old base and tail: the tail keeps the deltas the old overlay committed
    /// from this record offset on (none for a foreground fold).
    Folded { carry: Option<u64> },
}

/// Writes generation `generation`'s image from `docs` with `state` (a fold's thread).
fn write_image(
    path: &std::path::Path,
    docs: &Durable,
    state: &ImageState,
    cancel: &AtomicBool,
) -> Result<Image> {
    // Below the poller, which applies deltas (freshness), as the poller is below the
    // application: on a busy host the fold waits, not the next delta.
    crate::priority::lower_this_thread(FOLD_NICE);
    ikv_core::failpoint!("reader.fold.background");
    let cancelled = || Error::Local {
        path: path.display().to_string(),
        message: "the fold was cancelled".into(),
    };
    let mut image = ImageWriter::create(path)?;
    let added = docs.for_each_doc(|k, v| {
        if cancel.load(Ordering::Relaxed) {
            return Err(cancelled());
        }
        image.add(k, v)
    });
    if let Err(e) = added {
        image.abandon();
        return Err(e);
    }
    image.finish(&state.encode())?;
    if cancel.load(Ordering::SeqCst) {
        let _ = std::fs::remove_file(path);
        return Err(cancelled());
    }
    Image::open(path)
}

/// The documents an overlay holds (the last entry of each key; `None`: deleted): what a
/// fold's new tail keeps.
fn carried(overlay: &Overlay) -> Result<Entries> {
    let mut last = BTreeMap::new();
    for record in overlay.records(0, overlay.committed())? {
        if let Record::Entry { key, doc, .. } = record {
            last.insert(key.to_vec(), doc.map(<[u8]>::to_vec));
        }
    }
    Ok(last.into_iter().collect())
}

pub struct Owner {
    mount: Arc<MountDir>,
    identity: Identity,
    local: LocalStore,
    /// The base image (the durable state's, also the published one's), once there is one.
    base: Option<Arc<Image>>,
    /// The generation being appended to, once one is published.
    overlay: Option<(u64, Arc<Overlay>)>,
    published: Option<Arc<PublishedView>>,
    damaged: Arc<AtomicBool>,
    /// Durations of the folds of new read images, for the reader's metrics.
    folds: Arc<ikv_core::metrics::Histogram>,
    /// Overlay bytes past which a fold starts (at least a quarter of the image: folding
    /// rewrites the whole image).
    fold_min_bytes: u64,
    /// The highest generation number handed out (published, folding or cancelled): a
    /// cancelled fold's number is never reused.
    last_generation: u64,
    folding: Option<Fold>,
}

impl Owner {
    /// Opens the durable state as the mount's owner. With a complete copy, adopts the
    /// published generation when it holds exactly what the copy holds, and otherwise folds a
    /// new one from the copy: either way, reads are served on return and each partition's
    /// state is returned. `None`: a bootstrap is needed ([`crate::sync::rebuild`]).
    pub fn open(
        mount: Arc<MountDir>,
        identity: Identity,
        cache_bytes: u64,
        published: Option<Arc<PublishedView>>,
        damaged: Arc<AtomicBool>,
        folds: Arc<ikv_core::metrics::Histogram>,
        fold_min_bytes: u64,
    ) -> Result<(Owner, Option<BTreeMap<u32, PartitionState>>)> {
        let (local, resumed) = LocalStore::open(&mount.db_path(), &identity, cache_bytes)?;
        let mut owner = Owner {
            mount,
            identity,
            local,
            base: None,
            overlay: None,
            published,
            damaged,
            folds,
            fold_min_bytes,
            last_generation: 0,
            folding: None,
        };
        let current = owner.mount.read_current().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the mount's current generation is unreadable; replacing it");
            None
        });
        let base = resumed.as_ref().and_then(|_| {
            let path = owner.mount.image_path(owner.local.base());
            Image::open(&path)
                .inspect_err(|e| {
                    tracing::warn!(error = %e, "the base image of the durable state does not open; bootstrapping");
                })
                .ok()
        });
        let (Some(states), Some(base)) = (resumed, base) else {
            if current
                .as_ref()
                .is_some_and(|c| c.identity != owner.identity)
            {
                // Processes of the old identity keep their view; new ones wait for ours.
                owner.mount.clear_current()?;
            }
            return Ok((owner, None));
        };
        owner.base = Some(Arc::new(base));
        let base_generation = owner.local.base();
        let adopted = current
            .filter(|c| c.identity == owner.identity && c.generation == base_generation)
            .map(|c| owner.adopt(c.generation, &states));
        match adopted {
            Some(Ok(true)) => {}
            Some(Err(e)) => {
                tracing::warn!(error = %e, "the published read image is unusable; folding a new one");
                owner.fold()?;
            }
            _ => owner.fold()?,
        }
        let states = states
            .into_iter()
            .map(|(p, s)| {
                (
                    p,
                    PartitionState {
                        applied: s.applied,
                        snapshot: s.snapshot,
                    },
                )
            })
            .collect();
        Ok((owner, Some(states)))
    }

    /// Takes over generation `generation` if its image and overlay hold exactly the durable
    /// copy's state.
    fn adopt(&mut self, generation: u64, states: &BTreeMap<u32, ImagePartition>) -> Result<bool> {
        let Some(image) = self.base.clone() else {
            return Ok(false);
        };
        let overlay = Arc::new(Overlay::open(&self.mount.overlay_path(generation), true)?);
        let view = self.view_of(generation, image, &overlay)?;
        let same = states.iter().all(|(p, s)| {
            view.applied[*p as usize] == s.applied && view.drops[*p as usize] == s.drops
        });
        if !same {
            tracing::info!("the read image is behind the durable state; folding a new one");
            return Ok(false);
        }
        tracing::info!(generation, "adopted the published read image");
        // `current` names the owner: attaching processes wait for a live owner's catch-up.
        self.mount.write_current(&Current {
            generation,
            identity: self.identity.clone(),
            owner_pid: std::process::id(),
        })?;
        self.overlay = Some((generation, overlay));
        self.publish(view);
        Ok(true)
    }

    fn view_of(
        &self,
        generation: u64,
        image: Arc<Image>,
        overlay: &Arc<Overlay>,
    ) -> Result<ReadView> {
        ReadView::open(
            generation,
            image,
            overlay.clone(),
            self.identity.config.num_partitions,
            self.damaged.clone(),
        )
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The view readers use (present once a generation is published).
    pub fn published(&self) -> Option<Arc<PublishedView>> {
        self.published.clone()
    }

    fn publish(&mut self, view: ReadView) {
        match &self.published {
            Some(p) => p.publish(view),
            None => self.published = Some(Arc::new(PublishedView::new(view))),
        }
    }

    fn view(&self) -> Result<Arc<ReadView>> {
        self.published
            .as_ref()
            .map(|p| p.load_full())
            .ok_or_else(|| Error::Local {
                path: self.mount.path().display().to_string(),
                message: "no read image is published yet".into(),
            })
    }

    /// The next generation number (past every file, the published one and any handed out).
    fn next_generation(&mut self) -> Result<u64> {
        let files = self.mount.generations()?.last().copied().unwrap_or(0);
        let published = self.overlay.as_ref().map_or(0, |(g, _)| *g);
        self.last_generation = files.max(published).max(self.last_generation) + 1;
        Ok(self.last_generation)
    }

    fn fold_threshold(&self, image: &Image) -> u64 {
        self.fold_min_bytes.max(image.bytes() / 4)
    }

    fn cancel_fold(&mut self) {
        if let Some(fold) = self.folding.take() {
            tracing::info!(generation = fold.generation, "cancelled a background fold");
            fold.cancel();
        }
    }

    /// The durable state as it is now: the base image and a snapshot of the tail.
    fn durable(&self) -> Result<Durable> {
        let image = self.base.clone().ok_or_else(|| Error::Local {
            path: self.mount.path().display().to_string(),
            message: "the durable state has no base image yet".into(),
        })?;
        Ok(Durable {
            image,
            tail: self.local.tail_snapshot(),
        })
    }

    /// Starts a background fold of the durable state as it is now.
    fn start_fold(&mut self) -> Result<()> {
        let Some((_, overlay)) = &self.overlay else {
            return Ok(());
        };
        let from = overlay.committed();
        let state = ImageState {
            partitions: self.local.states(&self.identity.partitions)?,
        };
        let docs = self.durable()?;
        let generation = self.next_generation()?;
        let path = self.mount.image_path(generation);
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = cancel.clone();
        let thread = std::thread::Builder::new()
            .name("ikv-fold".into())
            .spawn(move || write_image(&path, &docs, &state, &stop))
            .map_err(|e| Error::Local {
                path: self.mount.path().display().to_string(),
                message: format!("cannot start a fold thread: {e}"),
            })?;
        tracing::debug!(generation, "started a background fold");
        self.folding = Some(Fold {
            generation,
            from,
            started: ikv_core::clock::Stopwatch::start(),
            cancel,
            thread,
        });
        Ok(())
    }

    /// Publishes a background fold that has finished (carrying the deltas applied since it
    /// started into the new overlay); nothing while it runs. A failed fold is reported and
    /// the next delta past the threshold starts another.
    pub fn publish_finished_fold(&mut self) -> Result<()> {
        if !self
            .folding
            .as_ref()
            .is_some_and(|f| f.thread.is_finished())
        {
            return Ok(());
        }
        let Some(fold) = self.folding.take() else {
            return Ok(());
        };
        let image = match fold.thread.join() {
            Ok(image) => image?,
            Err(_) => {
                return Err(Error::Local {
                    path: self.mount.path().display().to_string(),
                    message: "the fold thread panicked".into(),
                });
            }
        };
        let carry = Some(fold.from);
        match self.publish_image(fold.generation, image, NewBase::Folded { carry }) {
            Ok(()) => {
                self.folds.record(fold.started.elapsed());
                tracing::info!(generation = fold.generation, elapsed = ?fold.started.elapsed(), "published a background fold");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "publishing a background fold failed; folding in the foreground");
                self.fold()
            }
        }
    }

    /// Starts a bootstrap or an import's rebuild: a new image, the base to be.
    pub fn start_bootstrap(&mut self) -> Result<(u64, ImageWriter)> {
        self.cancel_fold();
        let generation = self.next_generation()?;
        let image = ImageWriter::create(&self.mount.image_path(generation))?;
        Ok((generation, image))
    }

    /// Makes a finished bootstrap the durable state (its image the base, an empty tail) and
    /// the state of every reader.
    pub fn finish_bootstrap(
        &mut self,
        generation: u64,
        image: ImageWriter,
        states: &BTreeMap<u32, PartitionState>,
    ) -> Result<()> {
        let partitions = states
            .iter()
            .map(|(p, s)| {
                (
                    *p,
                    ImagePartition {
                        applied: s.applied,
                        snapshot: s.snapshot,
                        drops: Default::default(),
                    },
                )
            })
            .collect();
        self.finish_rebuild(generation, image, partitions)
    }

    /// Writes a new image from the durable state (base image and tail) in the foreground and
    /// publishes it, as the new base with an empty tail and overlay (cancelling a background
    /// fold in flight). Fails on a damaged base image: the caller bootstraps.
    pub fn fold(&mut self) -> Result<()> {
        self.cancel_fold();
        let started = ikv_core::clock::Stopwatch::start();
        let docs = self.durable()?;
        let generation = self.next_generation()?;
        let mut image = ImageWriter::create(&self.mount.image_path(generation))?;
        let state = ImageState {
            partitions: self.local.states(&self.identity.partitions)?,
        };
        if let Err(e) = docs.for_each_doc(|k, v| image.add(k, v)) {
            image.abandon();
            return Err(e);
        }
        drop(docs);
        let documents = image.len();
        let folded = NewBase::Folded { carry: None };
        self.publish_generation(generation, image, &state, folded)?;
        self.folds.record(started.elapsed());
        tracing::info!(generation, documents, elapsed = ?started.elapsed(), "folded a new read image");
        Ok(())
    }

    fn publish_generation(
        &mut self,
        generation: u64,
        image: ImageWriter,
        state: &ImageState,
        base: NewBase,
    ) -> Result<()> {
        image.finish(&state.encode())?;
        let image = Image::open(&self.mount.image_path(generation))?;
        self.publish_image(generation, image, base)
    }

    /// Makes `image` (complete and synced) the durable state's base and publishes it as
    /// generation `generation` with a new overlay (holding the current overlay's deltas from
    /// a fold's record offset on).
    fn publish_image(&mut self, generation: u64, image: Image, base: NewBase) -> Result<()> {
        let image = Arc::new(image);
        let carry = match &base {
            NewBase::Folded { carry } => *carry,
            NewBase::Rebuilt(_) => None,
        };
        let overlay = Arc::new(Overlay::create(
            &self.mount.overlay_path(generation),
            self.identity.config.num_partitions,
            (self.fold_threshold(&image) * 4).max(OVERLAY_MIN_CAPACITY),
        )?);
        if let (Some(from), Some((_, current))) = (carry, &self.overlay)
            && !current.carry_to(from, &overlay)?
        {
            return Err(Error::Local {
                path: overlay.path().display().to_string(),
                message: "the deltas applied during the fold do not fit the new overlay".into(),
            });
        }
        let view = self.view_of(generation, image.clone(), &overlay)?;
        let switched = match base {
            NewBase::Rebuilt(states) => self.local.activate(generation, &states),
            NewBase::Folded { .. } => {
                carried(&overlay).and_then(|c| self.local.rebase(generation, &c))
            }
        };
        // The durable state names the base even when its sync failed after the batch: folds
        // then read this image with the new tail, never the old image with it.
        if self.local.base() == generation {
            self.base = Some(image);
        }
        switched?;
        ikv_core::failpoint!("reader.generation.before_current");
        self.mount.write_current(&Current {
            generation,
            identity: self.identity.clone(),
            owner_pid: std::process::id(),
        })?;
        if let Some((_, old)) = self.overlay.replace((generation, overlay)) {
            old.supersede(generation);
        }
        self.publish(view);
        self.mount.remove_generations_except(generation)
    }

    /// Applies delta `seq` of `partition` (its rows, and when its writer wrote it, ms since
    /// the Unix epoch): committed to the durable copy, then appended to the overlay and
    /// published (or folded into a new image when the overlay is full).
    pub fn apply_delta(
        &mut self,
        partition: u32,
        seq: u64,
        delta: (&[DeltaOp], i64),
    ) -> Result<()> {
        let view = self.view()?;
        let config = &self.identity.config;
        let staged = stage(
            &view,
            partition,
            seq,
            delta,
            &config.primary_key_field,
            config.partitioning_key_field.is_none(),
        )?;
        self.local.commit(
            partition,
            seq,
            &staged.entries,
            staged.drops_changed.then_some(&staged.drops),
        )?;
        ikv_core::failpoint!("reader.apply.before_overlay");
        let Some((_, overlay)) = &self.overlay else {
            return self.fold();
        };
        if !overlay.append(&staged.entries, partition, seq, &staged.drops)? {
            // Full: the changes since the image outran a fold (or none was started).
            drop(view);
            return self.fold();
        }
        if let Some(next) = view.advanced()? {
            drop(view);
            self.publish(next);
        }
        if let Err(e) = self.publish_finished_fold() {
            // The delta is applied and served; the next one past the threshold folds again.
            tracing::warn!(error = %e, "a background fold failed");
        }
        let view = self.view()?;
        let over = self
            .overlay
            .as_ref()
            .is_some_and(|(_, o)| o.committed() > self.fold_threshold(&view.image));
        if over && self.folding.is_none() {
            self.start_fold()?;
        }
        Ok(())
    }

    /// The durable state's documents and every partition's state, for rebuilding it with an
    /// import merged in ([`crate::import`]).
    pub fn rebuild_source(&self) -> Result<(Durable, BTreeMap<u32, ImagePartition>)> {
        Ok((
            self.durable()?,
            self.local.states(&self.identity.partitions)?,
        ))
    }

    /// Makes a rebuilt image (started with [`Owner::start_bootstrap`]) the durable state's
    /// base, with an empty tail and each partition's state, and the state of every reader.
    pub fn finish_rebuild(
        &mut self,
        generation: u64,
        image: ImageWriter,
        partitions: BTreeMap<u32, ImagePartition>,
    ) -> Result<()> {
        let state = ImageState {
            partitions: partitions.clone(),
        };
        self.publish_generation(generation, image, &state, NewBase::Rebuilt(partitions))
    }

    /// Records that `partition` was caught up at `ms` (ms since the epoch) for every process.
    pub fn set_caught_up(&self, partition: u32, ms: u64) {
        if let Some((_, overlay)) = &self.overlay {
            overlay.set_caught_up(partition, ms);
        }
    }

    /// Whether a read in any process found the mapped copy damaged (clears the marks).
    pub fn take_damage(&self) -> bool {
        let here = self.damaged.swap(false, Ordering::SeqCst);
        let elsewhere = self.mount.take_damage_report();
        here || elsewhere
    }

    /// Persists, closes the durable copy and gives the mount up to the next process.
    pub fn release(mut self) -> Result<()> {
        self.cancel_fold();
        let persisted = self.local.persist();
        let mount = self.mount.clone();
        drop(self);
        mount.disown();
        persisted
    }
}
