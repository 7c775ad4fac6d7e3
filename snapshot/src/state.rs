//! A partition's documents as committed up to a sequence number, read from the bucket alone:
//! the newest snapshot at or below it (a layer's stack resolved) with the deltas after it
//! folded in, in key order. What a batch job reads without a mount (Ray's `read_ikv`).
//!
//! Memory: the deltas after the snapshot (an overlay, as a compaction round holds) plus one
//! read batch and the batches in flight to the consumer. An import committed after the
//! snapshot is refused by name (its runs would be merged as a compaction round merges them;
//! a snapshot pass first folds it).

use ikv_core::{Error, Result, Storage, StoreConfig, StoreLayout};
use tokio::sync::mpsc;

use crate::fetch::{DeltaFetcher, Fetched};
use crate::layer::StackDocs;
use crate::manifest::Manifest;
use crate::overlay::Overlay;
use crate::rows::SnapshotDoc;

/// Batches of documents, sent as they are resolved; an error ends the stream.
pub type DocBatches = mpsc::Receiver<Result<Vec<SnapshotDoc>>>;

/// Where a read starts and ends in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPoint {
    /// The state after deltas 1..=upto.
    pub upto: u64,
    /// The snapshot to start from (0: none); `None`: the newest at or below `upto`.
    pub snapshot: Option<u64>,
}

/// The point of `partition` committed at or before `time`: the highest sequence whose delta
/// was written by then (a delta's write time is its object's modification time; sequence order
/// is commit order). Within retention only: when the deltas written by then are gone, a state
/// that old cannot be told and the error says so; when every delta was written later (and
/// the log still starts at 1), the partition was empty.
pub async fn point_as_of(
    storage: &Storage,
    store: &str,
    partition: u32,
    time: std::time::SystemTime,
) -> Result<ReadPoint> {
    let layout = StoreLayout::new(&storage.prefix, store)?;
    let deltas = ikv_core::bucket::list_deltas(storage, &layout, partition).await?;
    let written_by =
        |m: &ikv_core::bucket::ObjectMeta| std::time::SystemTime::from(m.last_modified) <= time;
    match deltas.iter().rev().find(|(_, m)| written_by(m)) {
        Some((seq, _)) => Ok(ReadPoint {
            upto: *seq,
            snapshot: None,
        }),
        // Nothing written by then: empty, if the log still starts at the first delta (or
        // nothing was ever written); otherwise retention took what would tell.
        None if match deltas.first() {
            Some((first, _)) => *first == 1,
            None => ikv_core::bucket::list_snapshot_seqs(storage, &layout, partition)
                .await?
                .is_empty(),
        } =>
        {
            Ok(ReadPoint {
                upto: 0,
                snapshot: Some(0),
            })
        }
        None => Err(Error::InvalidOperation(format!(
            "partition {partition} of store {store:?} at that time is no longer in the bucket: no delta written by then is left (retention removed them; the oldest left is {:?})",
            deltas.first().map(|(s, _)| *s)
        ))),
    }
}

/// Starts reading partition `partition` as committed at `at` on the current runtime,
/// `batch_rows` documents a batch (at most two batches wait for the consumer). Expiries are
/// judged at `served_at_ms` (ms since the Unix epoch): documents come as a reader at that
/// time serves them, without expired values or companion fields.
pub fn read_partition(
    storage: Storage,
    config: StoreConfig,
    partition: u32,
    at: ReadPoint,
    served_at_ms: i64,
    batch_rows: usize,
) -> DocBatches {
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let failed = tx.clone();
        let sent = send_partition(
            &storage,
            &config,
            partition,
            at,
            served_at_ms,
            batch_rows,
            tx,
        );
        if let Err(e) = sent.await {
            let _ = failed.send(Err(e)).await;
        }
    });
    rx
}

async fn send_partition(
    storage: &Storage,
    config: &StoreConfig,
    partition: u32,
    at: ReadPoint,
    served_at_ms: i64,
    batch_rows: usize,
    tx: mpsc::Sender<Result<Vec<SnapshotDoc>>>,
) -> Result<()> {
    let upto = at.upto;
    let layout = StoreLayout::new(&storage.prefix, &config.store_name)?;
    let what = || format!("partition {partition} of store {:?}", config.store_name);
    // The snapshot named, or the newest at or below `upto`.
    let snapshot = match at.snapshot {
        Some(0) => None,
        Some(seq) if seq > upto => {
            return Err(Error::InvalidOperation(format!(
                "snapshot {seq} is past sequence {upto} in {}",
                what()
            )));
        }
        Some(seq) => Some(
            Manifest::load(storage, &layout, partition, seq)
                .await?
                .ok_or_else(|| Error::Corrupt {
                    what: what(),
                    reason: format!("snapshot {seq} is gone"),
                })?,
        ),
        None => {
            let seqs = ikv_core::bucket::list_snapshot_seqs(storage, &layout, partition).await?;
            match seqs.iter().rev().find(|s| **s <= upto) {
                Some(seq) => Manifest::load(storage, &layout, partition, *seq).await?,
                None => None,
            }
        }
    };
    let from = snapshot.as_ref().map_or(0, |m| m.sequence);
    // Retention removed the deltas right after the snapshot: that state is gone (a hole
    // higher up is corruption, named below).
    let listed = ikv_core::bucket::list_deltas(storage, &layout, partition).await?;
    let next = listed.iter().map(|(s, _)| *s).find(|s| *s > from);
    if from < upto && next.is_none_or(|first| first > from + 1) {
        let last_gone = next.map_or(upto, |first| (first - 1).min(upto));
        return Err(Error::InvalidOperation(format!(
            "{}'s state at {upto} is no longer in the bucket: it builds on snapshot {from}, and deltas {} to {last_gone} are gone (retention removed them, or they were never committed)",
            what(),
            from + 1,
        )));
    }
    // The deltas after the snapshot, up to the point: dense, or the log is corrupt.
    let deltas: Vec<_> = listed
        .into_iter()
        .filter(|(s, _)| *s > from && *s <= upto)
        .collect();
    for (expected, (seq, _)) in (from + 1..).zip(&deltas) {
        if *seq != expected {
            return Err(Error::Corrupt {
                what: format!("log of {}", what()),
                reason: format!(
                    "delta {expected} is missing but {seq} exists (snapshot covers {from})"
                ),
            });
        }
    }
    if deltas.last().map_or(from, |(s, _)| *s) < upto {
        return Err(Error::Corrupt {
            what: what(),
            reason: format!(
                "its state at {upto} is no longer in the bucket: the deltas after snapshot {from} end before it (retention removed them, or the sequence was never committed)"
            ),
        });
    }
    let mut overlay = Overlay::new(&config.primary_key_field);
    // A snapshot holding event times is always a full one (a store with them compacts by
    // full snapshots only): its own columns tell.
    if snapshot.as_ref().is_some_and(|m| {
        m.columns
            .iter()
            .any(|c| ikv_core::event_time::field_of_event(&c.field).is_some())
    }) {
        overlay.order_against_base_events();
    }
    let mut fetcher = DeltaFetcher::new(storage, &layout, partition, &deltas);
    while let Some((seq, _, delta)) = fetcher.next().await? {
        match delta {
            Fetched::Rows(delta) => overlay.apply_delta(&delta)?,
            Fetched::Import(_) => {
                return Err(Error::InvalidConfig(format!(
                    "{} has an import (delta {seq}) after its newest snapshot ({from}): run a snapshot pass first (`ikv snapshot --store {} --partition {partition}`)",
                    what(),
                    config.store_name
                )));
            }
        }
    }
    let mut base = match snapshot {
        Some(m) => Some(StackDocs::open(storage, &layout, m).await?),
        None => None,
    };
    let mut next_base = match base.as_mut() {
        Some(b) => b.next_doc().await?,
        None => None,
    };
    // Walked by index: an iterator adapter held across the awaits below would not be Send.
    let sorted = overlay.sorted();
    let mut at = 0;
    let mut batch = Vec::with_capacity(batch_rows);
    loop {
        let order = match (&next_base, sorted.get(at)) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((bk, _)), Some((ck, _))) => bk.as_slice().cmp(ck),
        };
        let below = if order == std::cmp::Ordering::Greater {
            None
        } else {
            let taken = next_base.take();
            next_base = match base.as_mut() {
                Some(b) => b.next_doc().await?,
                None => None,
            };
            taken
        };
        let change = if order == std::cmp::Ordering::Less {
            None
        } else {
            at += 1;
            sorted.get(at - 1).copied()
        };
        let key = match (&below, change) {
            (Some((k, _)), _) => k.clone(),
            (None, Some((k, _))) => k.to_vec(),
            (None, None) => break,
        };
        let resolved = overlay.resolve(below.map(|(_, d)| d), change.map(|(_, c)| c))?;
        let served = resolved.and_then(|doc| {
            ikv_core::expiry::served_at(doc, &config.primary_key_field, served_at_ms)
        });
        if let Some(doc) = served {
            batch.push((key, doc));
            if batch.len() >= batch_rows.max(1) {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_rows));
                if tx.send(Ok(full)).await.is_err() {
                    return Ok(()); // the consumer is gone
                }
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(Ok(batch)).await;
    }
    Ok(())
}
