//! Bootstrap: stream the newest snapshot of every mounted partition, merged by primary key,
//! into fjall's sorted bulk ingestion. Memory holds one read batch per partition.

use std::collections::BTreeMap;

use fjall::Keyspace;
use ikv_core::{Error, FieldValue, Result, Storage, StoreLayout};
use ikv_snapshot::{Manifest, SnapshotStream};

use crate::keys::{encode_value, epoch, field_key};
use crate::local::PartitionState;

fn local(e: fjall::Error) -> Error {
    Error::Local {
        path: "local store".into(),
        message: e.to_string(),
    }
}

struct Source {
    partition: u32,
    stream: SnapshotStream,
    head: Option<(Vec<u8>, BTreeMap<String, FieldValue>)>,
}

/// What a bootstrap ingested.
#[derive(Debug, Clone, Default)]
pub struct BootstrapStats {
    pub documents: u64,
    pub values: u64,
}

/// Ingests the given snapshots (partition → manifest; partitions without one start empty) into
/// `docs`, which must be empty. Returns each partition's state (applied = snapshot sequence).
pub async fn bootstrap(
    storage: &Storage,
    layout: &StoreLayout,
    docs: &Keyspace,
    snapshots: BTreeMap<u32, Option<Manifest>>,
    mut progress: impl FnMut(&BootstrapStats),
) -> Result<(BTreeMap<u32, PartitionState>, BootstrapStats)> {
    let mut states = BTreeMap::new();
    let mut sources = Vec::new();
    let mut epochs = BTreeMap::new();
    for (partition, manifest) in snapshots {
        let seq = manifest.as_ref().map_or(0, |m| m.sequence);
        states.insert(
            partition,
            PartitionState {
                applied: seq,
                snapshot: seq,
            },
        );
        epochs.insert(partition, epoch(seq, 0));
        if let Some(m) = manifest {
            let mut stream = SnapshotStream::new(storage.clone(), layout.clone(), m);
            let head = stream.next_doc().await?;
            sources.push(Source {
                partition,
                stream,
                head,
            });
        }
    }
    // fjall's ingestion is not Send: it runs on a blocking thread, fed sorted entries in
    // batches through a small bounded channel (decode and ingest overlap on two cores).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<(Vec<u8>, Vec<u8>)>>(4);
    let ingest_into = docs.clone();
    let ingester = tokio::task::spawn_blocking(move || -> Result<()> {
        let mut ingestion = ingest_into.start_ingestion().map_err(local)?;
        while let Some(batch) = rx.blocking_recv() {
            for (k, v) in batch {
                ingestion.write(k, v).map_err(local)?;
            }
        }
        ingestion.finish().map_err(local)
    });
    let mut stats = BootstrapStats::default();
    let mut last_key: Option<Vec<u8>> = None;
    let mut batch = Vec::with_capacity(INGEST_BATCH);
    let produced: Result<()> = async {
        // The smallest primary key among the sources' heads, until all are drained.
        while let Some(min) = sources
            .iter()
            .filter_map(|s| s.head.as_ref().map(|h| h.0.clone()))
            .min()
        {
            // Every source at that key (normally one; a key in two partitions merges, later
            // partition winning per field).
            let mut fields: BTreeMap<String, (u32, FieldValue)> = BTreeMap::new();
            for s in sources.iter_mut() {
                if s.head.as_ref().is_some_and(|h| h.0 == min) {
                    if let Some((_, doc)) = s.head.take() {
                        for (f, v) in doc {
                            fields.insert(f, (s.partition, v));
                        }
                    }
                    s.head = s.stream.next_doc().await?;
                }
            }
            for (field, (partition, value)) in &fields {
                let key = field_key(&min, field);
                // Ingestion needs strictly ascending keys; a snapshot out of order is corrupt.
                if last_key.as_ref().is_some_and(|l| *l >= key) {
                    return Err(Error::Corrupt {
                        what: format!("snapshot of partition {partition}"),
                        reason: "rows are not sorted by primary key".into(),
                    });
                }
                let e = epochs.get(partition).copied().unwrap_or(0);
                last_key = Some(key.clone());
                batch.push((key, encode_value(value, *partition, e)));
                stats.values += 1;
            }
            stats.documents += 1;
            if batch.len() >= INGEST_BATCH {
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
    let ingested = ingester.await.map_err(|e| Error::Local {
        path: docs.path().display().to_string(),
        message: format!("ingestion thread failed: {e}"),
    })?;
    produced?;
    ingested?;
    progress(&stats);
    Ok((states, stats))
}

const INGEST_BATCH: usize = 16 * 1024;

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
