//! Applying an import delta ([FORMAT.md], "Imports"): the durable copy and the read image are
//! rebuilt in one sorted pass that merges the copy's documents with the import's runs, the
//! way a bootstrap merges snapshots, through fjall's sorted ingestion.
//!
//! Why a rebuild rather than applying the imported documents one by one: an import is large
//! (it is how millions of documents arrive), and the read image must be rewritten afterwards
//! anyway; a sorted merge writes each document once, sequentially, at bootstrap speed, where
//! millions of single writes would churn the LSM tree. Atomicity and crash safety come with
//! it: the new keyspace and image become the state together ([`Owner::finish_rebuild`]), so
//! readers switch from the state before the import to the state after it in one step, and a
//! process killed midway leaves the previous state and an unfinished keyspace that the next
//! open deletes.
//!
//! [FORMAT.md]: ../../docs/FORMAT.md

use std::collections::BTreeMap;

use ikv_core::delta::ImportDelta;
use ikv_core::{Error, FieldValue, Result, Storage, StoreLayout};
use ikv_snapshot_format::{Manifest, MergedRuns, SnapshotStream};

use crate::apply::imported_entry;
use crate::drops::DropState;
use crate::image::ImageWriter;
use crate::keys::{doc_key, epoch, split_doc_key};
use crate::owner::Owner;

/// Imported documents sent to the merging thread per message.
const BATCH: usize = 4096;

type Imported = (Vec<u8>, BTreeMap<String, FieldValue>);

fn local(e: impl std::fmt::Display) -> Error {
    Error::Local {
        path: "local store".into(),
        message: e.to_string(),
    }
}

/// Applies import delta `seq` of `partition`.
pub async fn apply_import(
    storage: &Storage,
    layout: &StoreLayout,
    owner: &mut Owner,
    partition: u32,
    seq: u64,
    import: &ImportDelta<'_>,
) -> Result<()> {
    let started = std::time::Instant::now();
    let what = layout.delta(partition, seq).to_string();
    let mut runs = Vec::with_capacity(import.runs.len());
    for run in &import.runs {
        let manifest = Manifest::decode_import_spec(run.spec, layout, partition, run.id, &what)?;
        runs.push(SnapshotStream::new(
            storage.clone(),
            layout.clone(),
            manifest,
        ));
    }
    let mut merged = MergedRuns::open(runs).await?;
    let ((db, old_docs), mut states) = owner.rebuild_source()?;
    let drops_before: Vec<DropState> = {
        let n = states.keys().max().map_or(0, |p| *p as usize + 1);
        let mut d = vec![DropState::default(); n];
        for (p, s) in &states {
            d[*p as usize] = s.drops.clone();
        }
        d
    };
    let (docs_generation, docs, generation, image) = owner.start_bootstrap()?;
    let primary_key = owner.identity().config.primary_key_field.clone();
    let replace = import.replace;

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Imported>>(4);
    let ingest_into = docs.clone();
    let merger = tokio::task::spawn_blocking(move || -> (Result<u64>, ImageWriter) {
        let mut image = image;
        let merged = (|| -> Result<u64> {
            let mut ingestion = ingest_into.start_ingestion().map_err(local)?;
            let mut pending: std::collections::VecDeque<Imported> = Default::default();
            let mut done = false;
            let mut next_imported = |pending: &mut std::collections::VecDeque<Imported>,
                                     done: &mut bool|
             -> Option<Imported> {
                while pending.is_empty() && !*done {
                    match rx.blocking_recv() {
                        Some(batch) => pending.extend(batch),
                        None => *done = true,
                    }
                }
                pending.pop_front()
            };
            let mut write = |pk: &[u8], entry: Option<Vec<u8>>| -> Result<()> {
                if let Some(entry) = entry {
                    image.add(pk, &entry)?;
                    ingestion.write(doc_key(pk), entry).map_err(local)?;
                }
                Ok(())
            };
            let mut documents = 0u64;
            let mut head = next_imported(&mut pending, &mut done);
            let snapshot = db.snapshot();
            for kv in fjall::Readable::iter(&snapshot, &old_docs) {
                let (k, v) = kv.into_inner().map_err(local)?;
                let pk = split_doc_key(&k).ok_or_else(|| local("a document key is malformed"))?;
                // Imported documents before this one are new.
                while let Some((ik, fields)) = head.take_if(|(ik, _)| *ik < pk) {
                    let entry = imported_entry(
                        None,
                        Some(&fields),
                        partition,
                        seq,
                        replace,
                        &drops_before,
                        &primary_key,
                    )?;
                    write(&ik, entry)?;
                    documents += 1;
                    head = next_imported(&mut pending, &mut done);
                }
                let fields = match head.take_if(|(ik, _)| *ik == pk) {
                    Some((_, fields)) => {
                        head = next_imported(&mut pending, &mut done);
                        documents += 1;
                        Some(fields)
                    }
                    None => None,
                };
                let entry = if fields.is_some() || replace {
                    imported_entry(
                        Some(&v),
                        fields.as_ref(),
                        partition,
                        seq,
                        replace,
                        &drops_before,
                        &primary_key,
                    )?
                } else {
                    Some(v.to_vec())
                };
                write(&pk, entry)?;
            }
            while let Some((ik, fields)) = head.take() {
                let entry = imported_entry(
                    None,
                    Some(&fields),
                    partition,
                    seq,
                    replace,
                    &drops_before,
                    &primary_key,
                )?;
                write(&ik, entry)?;
                documents += 1;
                head = next_imported(&mut pending, &mut done);
            }
            ingestion.finish().map_err(local)?;
            Ok(documents)
        })();
        (merged, image)
    });

    let produced: Result<()> = async {
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(doc) = merged.next_doc().await? {
            batch.push(doc);
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
    let state = states.entry(partition).or_default();
    state.applied = seq;
    if replace {
        // As a drop-all row 0 of the delta: nothing of the partition before it is live.
        state.drops = DropState {
            all: epoch(seq, 0),
            ..DropState::default()
        };
    }
    owner.finish_rebuild(docs_generation, docs, generation, image, states)?;
    tracing::info!(partition, seq, documents, replace, elapsed = ?started.elapsed(), "applied an import");
    Ok(())
}
