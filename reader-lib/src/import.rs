//! Applying import deltas ([FORMAT.md], "Imports"): the read image is rebuilt in one sorted
//! pass that merges the durable state's documents (base image and tail, [`crate::durable`])
//! with the imports' runs, the way a bootstrap merges snapshots; the new image becomes the
//! base.
//!
//! Why a rebuild rather than applying the imported documents one by one: an import is large
//! (it is how millions of documents arrive), and the read image must be rewritten afterwards
//! anyway; a sorted merge writes each document once, sequentially, at bootstrap speed, where
//! millions of single writes would churn the tail. One import commits a delta in every
//! partition it touches: the poller stops each partition at its import delta and applies all
//! of them in one rebuild (`sync.rs`). Atomicity and crash safety come with it: the new
//! image (as the base, with an empty tail) and the partitions' states become the state in one
//! batch ([`Owner::finish_rebuild`]), so readers switch from the state before the imports to
//! the state after them in one step, and a process killed midway leaves the previous state and
//! an unfinished image that the next publication deletes.
//!
//! Documents the imports do not name are copied as they are: a replacing import's drop-all
//! epoch hides their old sections in its partition (removed physically when the document is
//! next rewritten), as `drop_all_fields` does.
//!
//! [FORMAT.md]: ../../docs/FORMAT.md

use std::collections::VecDeque;

use ikv_core::{Error, Result, Storage, StoreLayout};
use ikv_snapshot_format::{Manifest, SnapshotStream};

use crate::apply::{PartitionImport, imported_entry};
use crate::drops::DropState;
use crate::image::ImageWriter;
use crate::keys::epoch;
use crate::owner::Owner;
use crate::run_merge::RunMerge;
use crate::snapshot_rows::encode_rows;
use crate::sync::PendingImport;

/// Imported documents sent to the merging thread per message.
const BATCH: usize = 4096;

/// A primary key and each import's encoded section of it.
type Imported = (Vec<u8>, Vec<(PartitionImport, Vec<u8>)>);

fn local(e: impl std::fmt::Display) -> Error {
    Error::Local {
        path: "local store".into(),
        message: e.to_string(),
    }
}

/// One partition's imported documents as encoded sections, in key order.
enum Documents {
    /// One run: record batches encoded straight into sections, as a bootstrap does.
    Run {
        stream: Box<SnapshotStream>,
        rows: VecDeque<(Vec<u8>, Vec<u8>)>,
        done: bool,
    },
    /// Several runs, merged by key (later runs win): stretches of one run encoded as slices,
    /// keys several runs hold document by document.
    Merged {
        merge: RunMerge,
        rows: VecDeque<(Vec<u8>, Vec<u8>)>,
        done: bool,
    },
}

/// One partition's import, with its next document read ahead and its order checked.
struct Source {
    import: PartitionImport,
    documents: Documents,
    head: Option<(Vec<u8>, Vec<u8>)>,
    last: Option<Vec<u8>>,
}

impl Source {
    async fn next(&mut self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let e = epoch(self.import.seq, 1);
        let next = match &mut self.documents {
            Documents::Run { stream, rows, done } => {
                while rows.is_empty() && !*done {
                    match stream.next_record_batch().await? {
                        Some(batch) => {
                            let m = stream.manifest();
                            rows.extend(encode_rows(
                                &batch,
                                &m.key_column,
                                &m.columns,
                                self.import.partition,
                                e,
                            )?);
                        }
                        None => *done = true,
                    }
                }
                rows.pop_front()
            }
            Documents::Merged { merge, rows, done } => {
                while rows.is_empty() && !*done {
                    *done = !merge.next_rows(self.import.partition, e, rows).await?;
                }
                rows.pop_front()
            }
        };
        if let Some((key, _)) = &next {
            if self.last.as_ref().is_some_and(|l| l >= key) {
                let what = match &self.documents {
                    Documents::Run { stream, .. } => format!(
                        "import {} of partition {} (committed by delta {})",
                        stream.manifest().import_id.as_deref().unwrap_or("?"),
                        self.import.partition,
                        self.import.seq
                    ),
                    Documents::Merged { .. } => format!(
                        "import of partition {} (committed by delta {})",
                        self.import.partition, self.import.seq
                    ),
                };
                return Err(Error::Corrupt {
                    what,
                    reason: "rows are not strictly ascending by primary key".into(),
                });
            }
            self.last = Some(key.clone());
        }
        Ok(next)
    }
}

/// Applies the import deltas `imports` (at most one per partition) in one rebuild.
pub async fn apply_imports(
    storage: &Storage,
    layout: &StoreLayout,
    owner: &mut Owner,
    imports: &[PendingImport],
) -> Result<()> {
    let started = ikv_core::clock::Stopwatch::start();
    let mut sources = Vec::with_capacity(imports.len());
    for pending in imports {
        let (partition, seq) = (pending.partition, pending.sequence);
        let Some(import) = pending.delta.import()? else {
            return Err(local(format!(
                "delta {seq} of partition {partition} was taken for an import but is not one"
            )));
        };
        let what = layout.delta(partition, seq).to_string();
        let mut runs = Vec::with_capacity(import.runs.len());
        for run in &import.runs {
            let manifest =
                Manifest::decode_import_spec(run.spec, layout, partition, run.id, &what)?;
            runs.push(SnapshotStream::new(
                storage.clone(),
                layout.clone(),
                manifest,
            ));
        }
        let documents = if runs.len() == 1 {
            Documents::Run {
                stream: Box::new(runs.remove(0)),
                rows: VecDeque::new(),
                done: false,
            }
        } else {
            Documents::Merged {
                merge: RunMerge::new(runs),
                rows: VecDeque::new(),
                done: false,
            }
        };
        let mut source = Source {
            import: PartitionImport {
                partition,
                seq,
                replace: import.replace,
            },
            documents,
            head: None,
            last: None,
        };
        source.head = source.next().await?;
        sources.push(source);
    }
    let (durable, mut states) = owner.rebuild_source()?;
    let drops_before: Vec<DropState> = {
        let n = states.keys().max().map_or(0, |p| *p as usize + 1);
        let mut d = vec![DropState::default(); n];
        for (p, s) in &states {
            d[*p as usize] = s.drops.clone();
        }
        d
    };
    let (generation, image) = owner.start_bootstrap()?;
    let primary_key = owner.identity().config.primary_key_field.clone();

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Imported>>(4);
    let merger = tokio::task::spawn_blocking(move || -> (Result<u64>, ImageWriter) {
        let mut image = image;
        let merged = (|| -> Result<u64> {
            let mut pending: VecDeque<Imported> = VecDeque::new();
            let mut done = false;
            let mut next_imported = || -> Option<Imported> {
                while pending.is_empty() && !done {
                    match rx.blocking_recv() {
                        Some(batch) => pending.extend(batch),
                        None => done = true,
                    }
                }
                pending.pop_front()
            };
            let mut write = |pk: &[u8], entry: Option<Vec<u8>>| -> Result<()> {
                if let Some(entry) = entry {
                    image.add(pk, &entry)?;
                }
                Ok(())
            };
            let mut documents = 0u64;
            let mut head = next_imported();
            // Imported documents with keys below `bound` (all, without one) are new.
            macro_rules! new_documents_below {
                ($bound:expr) => {
                    while let Some((ik, imported)) =
                        head.take_if(|(ik, _)| $bound.is_none_or(|b: &[u8]| ik.as_slice() < b))
                    {
                        let entry =
                            imported_entry(&ik, None, imported, &drops_before, &primary_key)?;
                        write(&ik, entry)?;
                        documents += 1;
                        head = next_imported();
                    }
                };
            }
            durable.for_each_doc(|pk, v| {
                new_documents_below!(Some(pk));
                match head.take_if(|(ik, _)| ik.as_slice() == pk) {
                    Some((_, imported)) => {
                        let entry =
                            imported_entry(pk, Some(v), imported, &drops_before, &primary_key)?;
                        write(pk, entry)?;
                        documents += 1;
                        head = next_imported();
                    }
                    None => write(pk, Some(v.to_vec()))?,
                }
                Ok(())
            })?;
            new_documents_below!(None::<&[u8]>);
            Ok(documents)
        })();
        (merged, image)
    });

    // The partitions' imported documents merged by key (a key can be in several partitions
    // of a store with a partitioning key), in batches to the merging thread.
    let produced: Result<()> = async {
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(min) = sources
            .iter()
            .filter_map(|s| s.head.as_ref().map(|(k, _)| k))
            .min()
            .cloned()
        {
            let mut imported = Vec::with_capacity(1);
            for source in &mut sources {
                if source.head.as_ref().is_some_and(|(k, _)| *k == min) {
                    if let Some((_, section)) = source.head.take() {
                        imported.push((source.import, section));
                    }
                    source.head = source.next().await?;
                }
            }
            batch.push((min, imported));
            if batch.len() >= BATCH {
                ikv_core::failpoint!("reader.import.batch");
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                if tx.send(full).await.is_err() {
                    return Ok(()); // the merger failed; its error is reported below
                }
            }
        }
        if !batch.is_empty() {
            let _ = tx.send(batch).await;
        }
        Ok(())
    }
    .await;
    drop(tx);
    let (documents, image) = merger
        .await
        .map_err(|e| local(format!("import thread failed: {e}")))?;
    let documents = match produced.and(documents) {
        Ok(d) => d,
        Err(e) => {
            image.abandon();
            return Err(e);
        }
    };
    for source in &sources {
        let import = source.import;
        let state = states.entry(import.partition).or_default();
        state.applied = import.seq;
        if import.replace {
            // As the delta's drop-all row 0: nothing of the partition before it is live.
            state.drops = DropState {
                all: epoch(import.seq, 0),
                ..DropState::default()
            };
        }
    }
    owner.finish_rebuild(generation, image, states)?;
    tracing::info!(
        partitions = sources.len(),
        documents,
        elapsed = ?started.elapsed(),
        "applied imports"
    );
    Ok(())
}
