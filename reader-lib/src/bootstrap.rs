//! Bootstrap: stream the newest snapshot of every mounted partition, merged by primary key,
//! into a new read image (the durable state's base to be: in key order, which folds and
//! imports rely on). Memory holds one read batch per partition and a few batches in flight.

use std::collections::{BTreeMap, VecDeque};

use ikv_core::{Error, Result, Storage, StoreLayout};
use ikv_snapshot_format::layer::{LayerChange, LayerChanges};
use ikv_snapshot_format::{Manifest, SnapshotStream, Stack};

use crate::doc::{DocView, OwnedDoc, join_sections};
use crate::image::ImageWriter;
use crate::keys::epoch;
use crate::local::PartitionState;
use crate::snapshot_rows::encode_rows;

/// One partition's documents, encoded, in key order: its full snapshot's rows, with the
/// changes of the layers stacked on it (if any) applied.
struct Source {
    partition: u32,
    epoch: u64,
    stream: SnapshotStream,
    /// Rows of the full snapshot, encoded, not yet merged with the layers.
    base: VecDeque<(Vec<u8>, Vec<u8>)>,
    base_done: bool,
    layers: Option<LayerChanges>,
    /// Rows ready, in key order.
    rows: VecDeque<(Vec<u8>, Vec<u8>)>,
}

impl Source {
    async fn open(
        storage: &Storage,
        layout: &StoreLayout,
        partition: u32,
        top: Manifest,
    ) -> Result<Source> {
        let epoch = epoch(top.sequence, 0);
        let stack = Stack::load(storage, layout, top).await?;
        let layers = if stack.layers.is_empty() {
            None
        } else {
            Some(LayerChanges::open(storage, layout, stack.layers).await?)
        };
        let mut source = Source {
            partition,
            epoch,
            stream: SnapshotStream::new(storage.clone(), layout.clone(), stack.full),
            base: VecDeque::new(),
            base_done: false,
            layers,
            rows: VecDeque::new(),
        };
        source.fill().await?;
        Ok(source)
    }

    /// Makes sure the next row (if any) is ready.
    async fn fill(&mut self) -> Result<()> {
        while self.rows.is_empty() {
            if self.base.is_empty() && !self.base_done {
                match self.stream.next_record_batch().await? {
                    Some(batch) => {
                        let m = self.stream.manifest();
                        self.base.extend(encode_rows(
                            &batch,
                            &m.key_column,
                            &m.columns,
                            self.partition,
                            self.epoch,
                        )?);
                    }
                    None => self.base_done = true,
                }
                continue;
            }
            let layer_key = self.layers.as_ref().and_then(|l| l.peek_key());
            let Some(layer_key) = layer_key else {
                if self.base.is_empty() {
                    return Ok(()); // both drained
                }
                std::mem::swap(&mut self.rows, &mut self.base);
                continue;
            };
            // Rows no layer touched go as they are; a touched one is decoded and changed.
            let untouched = self
                .base
                .iter()
                .take_while(|(k, _)| k.as_slice() < layer_key)
                .count();
            if untouched > 0 {
                self.rows.extend(self.base.drain(..untouched));
                continue;
            }
            if self.base.is_empty() && !self.base_done {
                continue; // the next batch may hold the key
            }
            let Some((key, change)) = (match self.layers.as_mut() {
                Some(layers) => layers.next_change().await?,
                None => None,
            }) else {
                continue;
            };
            let below = match self.base.front() {
                Some((k, _)) if *k == key => self.base.pop_front().map(|(_, doc)| doc),
                _ => None,
            };
            if let Some(doc) = self.changed(&key, below.as_deref(), &change)? {
                self.rows.push_back((key, doc));
            }
        }
        Ok(())
    }

    /// The document of `key` after a layer's change, encoded; `None` when none remains.
    fn changed(
        &self,
        key: &[u8],
        below: Option<&[u8]>,
        change: &LayerChange,
    ) -> Result<Option<Vec<u8>>> {
        let mut doc = match below {
            Some(bytes) if !change.replaces => OwnedDoc::decode_live(bytes, key, &[], "")?,
            _ => OwnedDoc::new(self.partition),
        };
        for field in &change.unset {
            doc.fields.remove(field);
        }
        doc.set_snapshot_fields(change.set.iter().map(|(f, v)| (f.as_str(), v)), self.epoch);
        Ok((!doc.fields.is_empty()).then(|| doc.encode(key)))
    }
}

/// What a bootstrap ingested.
#[derive(Debug, Clone, Default)]
pub struct BootstrapStats {
    pub documents: u64,
    pub values: u64,
}

/// What a bootstrap produced: each partition's state (applied = snapshot sequence), counts,
/// and the read image with every document added (to be finished with the state).
pub type Bootstrapped = (BTreeMap<u32, PartitionState>, BootstrapStats, ImageWriter);

/// Writes the given snapshots (partition → manifest; partitions without one start empty) into
/// `image`, in key order.
pub async fn bootstrap(
    storage: &Storage,
    layout: &StoreLayout,
    image: ImageWriter,
    snapshots: BTreeMap<u32, Option<Manifest>>,
    mut progress: impl FnMut(&BootstrapStats),
) -> Result<Bootstrapped> {
    let mut states = BTreeMap::new();
    let mut sources = Vec::new();
    for (partition, manifest) in snapshots {
        let seq = manifest.as_ref().map_or(0, |m| m.sequence);
        states.insert(
            partition,
            PartitionState {
                applied: seq,
                snapshot: seq,
            },
        );
        if let Some(m) = manifest {
            sources.push(Source::open(storage, layout, partition, m).await?);
        }
    }
    // The image is written on a blocking thread, fed sorted entries in batches through a
    // small bounded channel (decoding and writing overlap on two cores).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<(Vec<u8>, Vec<u8>)>>(4);
    let mut image = image;
    let ingester = tokio::task::spawn_blocking(move || -> (Result<()>, ImageWriter) {
        let ingested = (|| {
            while let Some(batch) = rx.blocking_recv() {
                for (pk, v) in batch {
                    image.add(&pk, &v)?;
                }
            }
            Ok(())
        })();
        (ingested, image)
    });
    let mut stats = BootstrapStats::default();
    let mut last_key: Option<Vec<u8>> = None;
    let mut batch = Vec::with_capacity(INGEST_BATCH);
    let mut batch_bytes = 0usize;
    let produced: Result<()> = async {
        // The smallest primary key among the sources' heads, until all are drained.
        while let Some(min) = sources
            .iter()
            .filter_map(|s| s.rows.front().map(|r| r.0.clone()))
            .min()
        {
            let at_min: Vec<usize> = (0..sources.len())
                .filter(|i| sources[*i].rows.front().is_some_and(|r| r.0 == min))
                .collect();
            let mut encoded = Vec::with_capacity(at_min.len());
            for i in at_min {
                if let Some((_, doc)) = sources[i].rows.pop_front() {
                    encoded.push(doc);
                }
                sources[i].fill().await?;
            }
            // Sources are in ascending partition order, as entries keep their sections.
            let value = join_sections(encoded);
            stats.values += live_field_count(&min, &value);
            // Images are written in strictly ascending key order (folds and imports merge
            // them by key); a snapshot out of order is corrupt.
            if last_key.as_ref().is_some_and(|l| *l >= min) {
                return Err(Error::Corrupt {
                    what: "snapshot".into(),
                    reason: "rows are not sorted by primary key".into(),
                });
            }
            last_key = Some(min.clone());
            batch_bytes += min.len() + value.len();
            batch.push((min, value));
            stats.documents += 1;
            if batch.len() >= INGEST_BATCH || batch_bytes >= INGEST_BATCH_BYTES {
                ikv_core::failpoint!("reader.bootstrap.batch");
                batch_bytes = 0;
                let full = std::mem::replace(&mut batch, Vec::with_capacity(INGEST_BATCH));
                if tx.send(full).await.is_err() {
                    break; // the ingester failed; its error is reported below
                }
            }
            if stats.documents % 100_000 == 0 {
                progress(&stats);
            }
        }
        if !batch.is_empty() {
            let _ = tx.send(std::mem::take(&mut batch)).await;
        }
        Ok(())
    }
    .await;
    drop(tx);
    let (ingested, image) = ingester.await.map_err(|e| Error::Local {
        path: "read image".into(),
        message: format!("the image writing thread failed: {e}"),
    })?;
    if let Err(e) = produced.and(ingested) {
        image.abandon();
        return Err(e);
    }
    progress(&stats);
    Ok((states, stats, image))
}

/// Entries handed to the ingestion thread at once: at most this many, and at most
/// `INGEST_BATCH_BYTES` of keys and values, so that the batches in flight (the channel holds
/// four) take memory by a byte budget, whatever the size of the values.
const INGEST_BATCH: usize = 4 * 1024;
const INGEST_BATCH_BYTES: usize = 4 << 20;

/// Field values an entry holds, over all its sections (for progress counts).
fn live_field_count(key: &[u8], entry: &[u8]) -> u64 {
    match DocView::parse(entry, key) {
        Ok(single) => single.field_count(),
        _ => crate::doc::decode_entry_live(entry, key, &[], "")
            .map(|s| s.values().map(|d| d.fields.len() as u64).sum())
            .unwrap_or(0),
    }
}

/// The newest snapshot of each partition.
pub async fn newest_snapshots(
    storage: &Storage,
    layout: &StoreLayout,
    partitions: &[u32],
) -> Result<BTreeMap<u32, Option<Manifest>>> {
    let mut out = BTreeMap::new();
    for &p in partitions {
        out.insert(p, Manifest::load_newest(storage, layout, p).await?);
    }
    Ok(out)
}
