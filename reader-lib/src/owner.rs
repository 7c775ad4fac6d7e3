//! The mount's owner: the one process of a host that holds the durable copy, applies deltas
//! and writes what every reader process maps (the read image and its overlay).
//!
//! Invariants (`docs/READER.md`, "One local copy per host"):
//! - A delta is committed to the durable copy first, then appended to the overlay. So the
//!   overlay never holds what the durable copy lacks; an owner that finds the overlay behind
//!   the durable copy (its predecessor died between the two) folds a new image from the
//!   durable copy rather than trusting the overlay.
//! - A new generation is published in this order: image and empty overlay written and synced,
//!   `current` replaced, the old overlay marked superseded, old files deleted. A process that
//!   sees "superseded" therefore finds the new generation in `current`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fjall::Keyspace;
use ikv_core::{DeltaOp, Error, Result};

use crate::apply::stage;
use crate::image::{Image, ImageWriter};
use crate::local::{LocalStore, PartitionState};
use crate::mount::{Current, Identity, MountDir};
use crate::overlay::Overlay;
use crate::view::{ImagePartition, ImageState, PublishedView, ReadView};

/// Overlay bytes past which the owner folds a new image: a quarter of the image, at least
/// this much (folding rewrites the whole image).
const FOLD_MIN_BYTES: u64 = 64 << 20;

pub struct Owner {
    mount: Arc<MountDir>,
    identity: Identity,
    local: LocalStore,
    /// The generation being appended to, once one is published.
    overlay: Option<(u64, Arc<Overlay>)>,
    published: Option<Arc<PublishedView>>,
    damaged: Arc<AtomicBool>,
    /// Durations of the folds of new read images, for the reader's metrics.
    folds: Arc<ikv_core::metrics::Histogram>,
}

impl Owner {
    /// Opens the durable copy as the mount's owner. With a complete copy, adopts the
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
    ) -> Result<(Owner, Option<BTreeMap<u32, PartitionState>>)> {
        let (local, resumed) = LocalStore::open(&mount.db_path(), &identity, cache_bytes)?;
        let mut owner = Owner {
            mount,
            identity,
            local,
            overlay: None,
            published,
            damaged,
            folds,
        };
        let current = owner.mount.read_current().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the mount's current generation is unreadable; replacing it");
            None
        });
        let Some(states) = resumed else {
            if current.is_some_and(|c| c.identity != owner.identity) {
                // Processes of the old identity keep their view; new ones wait for ours.
                owner.mount.clear_current()?;
            }
            return Ok((owner, None));
        };
        let adopted = current
            .filter(|c| c.identity == owner.identity)
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
        let image = Arc::new(Image::open(&self.mount.image_path(generation))?);
        let overlay = Arc::new(Overlay::open(&self.mount.overlay_path(generation), true)?);
        let view = self.view_of(generation, image, &overlay)?;
        let same = states.iter().all(|(p, s)| {
            view.applied[*p as usize] == s.applied && view.drops[*p as usize] == s.drops
        });
        if !same {
            tracing::info!("the read image is behind the durable copy; folding a new one");
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

    /// The next generation number (past every file and the published one).
    fn next_generation(&self) -> Result<u64> {
        let files = self.mount.generations()?.last().copied().unwrap_or(0);
        let published = self.overlay.as_ref().map_or(0, |(g, _)| *g);
        Ok(files.max(published) + 1)
    }

    /// Starts a bootstrap: a fresh keyspace of the durable copy and a new image beside it.
    pub fn start_bootstrap(&mut self) -> Result<(u64, Keyspace, u64, ImageWriter)> {
        let (docs_generation, docs) = self.local.new_generation()?;
        let generation = self.next_generation()?;
        let image = ImageWriter::create(&self.mount.image_path(generation))?;
        Ok((docs_generation, docs, generation, image))
    }

    /// Makes a finished bootstrap the state of the durable copy and of every reader.
    pub fn finish_bootstrap(
        &mut self,
        docs_generation: u64,
        docs: Keyspace,
        generation: u64,
        image: ImageWriter,
        states: &BTreeMap<u32, PartitionState>,
    ) -> Result<()> {
        self.local.activate(docs_generation, docs, states)?;
        let state = ImageState {
            partitions: states
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
                .collect(),
        };
        self.publish_generation(generation, image, &state)
    }

    /// Writes a new image from the durable copy and publishes it with an empty overlay.
    pub fn fold(&mut self) -> Result<()> {
        let started = ikv_core::clock::Stopwatch::start();
        let generation = self.next_generation()?;
        let mut image = ImageWriter::create(&self.mount.image_path(generation))?;
        let state = ImageState {
            partitions: self.local.states(&self.identity.partitions)?,
        };
        if let Err(e) = self.local.for_each_doc(|k, v| image.add(k, v)) {
            image.abandon();
            return Err(e);
        }
        let documents = image.len();
        self.publish_generation(generation, image, &state)?;
        self.folds.record(started.elapsed());
        tracing::info!(generation, documents, elapsed = ?started.elapsed(), "folded a new read image");
        Ok(())
    }

    fn publish_generation(
        &mut self,
        generation: u64,
        image: ImageWriter,
        state: &ImageState,
    ) -> Result<()> {
        image.finish(&state.encode())?;
        let image = Arc::new(Image::open(&self.mount.image_path(generation))?);
        let threshold = FOLD_MIN_BYTES.max(image.bytes() / 4);
        let overlay = Arc::new(Overlay::create(
            &self.mount.overlay_path(generation),
            self.identity.config.num_partitions,
            threshold * 4,
        )?);
        let view = self.view_of(generation, image, &overlay)?;
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

    /// Applies delta `seq` of `partition`: committed to the durable copy, then appended to
    /// the overlay and published (or folded into a new image when the overlay is full).
    pub fn apply_delta(&mut self, partition: u32, seq: u64, ops: &[DeltaOp]) -> Result<()> {
        let view = self.view()?;
        let config = &self.identity.config;
        let staged = stage(
            &view,
            partition,
            seq,
            ops,
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
            drop(view);
            return self.fold();
        }
        let threshold = FOLD_MIN_BYTES.max(view.image.bytes() / 4);
        let over = overlay.committed() > threshold;
        if let Some(next) = view.advanced()? {
            drop(view);
            self.publish(next);
        }
        if over { self.fold() } else { Ok(()) }
    }

    /// The durable copy's documents and every partition's state, for rebuilding it with an
    /// import merged in ([`crate::import`]).
    pub fn rebuild_source(
        &self,
    ) -> Result<((fjall::Database, Keyspace), BTreeMap<u32, ImagePartition>)> {
        Ok((
            self.local.docs_handle(),
            self.local.states(&self.identity.partitions)?,
        ))
    }

    /// Makes a rebuilt keyspace and image (started with [`Owner::start_bootstrap`]) the state
    /// of the durable copy and of every reader, with each partition's state.
    pub fn finish_rebuild(
        &mut self,
        docs_generation: u64,
        docs: Keyspace,
        generation: u64,
        image: ImageWriter,
        partitions: BTreeMap<u32, ImagePartition>,
    ) -> Result<()> {
        self.local
            .activate_with_drops(docs_generation, docs, &partitions)?;
        self.publish_generation(generation, image, &ImageState { partitions })
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
    pub fn release(self) -> Result<()> {
        let persisted = self.local.persist();
        let mount = self.mount.clone();
        drop(self);
        mount.disown();
        persisted
    }
}
