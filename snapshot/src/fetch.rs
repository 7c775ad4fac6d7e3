//! Fetching a partition's deltas ahead of the fold: GETs in flight and decoding on the
//! runtime's workers, handed over in log order. Object-store latency, not the fold, would
//! otherwise bound a pass over many small deltas.
//!
//! Deltas go in chunks (a task per chunk, its GETs concurrent): a task, or a blocking-pool hop,
//! per delta cost more in thread wake-ups than a small delta's decode. What is in flight is
//! bounded by count and by bytes, so that large deltas do not multiply memory. (Measured:
//! 8 or 16 in flight were slower on a local directory; 256 were slower on the S3 emulator,
//! which is CPU-bound here. Real S3 latency may favour more; not measured.)

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use ikv_core::bucket::{ObjectMeta, Path};
use ikv_core::delta::{Delta, DeltaBatches, decode_delta_batches};
use ikv_core::{Error, Result, Storage, StoreLayout};

/// Deltas per fetching task, and bytes per task beyond which it takes no more.
const CHUNK_DELTAS: usize = 8;
const CHUNK_BYTES: u64 = 8 << 20;
/// Deltas in flight at most.
const IN_FLIGHT_DELTAS: usize = 32;
/// The same for a local directory, read as plain files in one blocking task per chunk: a
/// file read costs about what a delta's decode does, far less than a thread hop each.
const LOCAL_CHUNK_DELTAS: usize = 64;
const LOCAL_IN_FLIGHT_DELTAS: usize = 128;
/// Bytes in flight at most (one chunk may exceed it alone).
const IN_FLIGHT_BYTES: u64 = 64 << 20;

/// A delta fetched for folding: most are read borrowed from their Arrow batches; an import
/// delta (its runs open a round) is read whole and checked by [`Delta::import`].
pub(crate) enum Fetched {
    Rows(DeltaBatches),
    Import(Delta),
}

impl Fetched {
    /// Decodes delta `seq` of `partition` read from `path`, checked to say it is that delta.
    fn decode(
        bytes: &bytes::Bytes,
        layout: &StoreLayout,
        partition: u32,
        seq: u64,
        path: &Path,
    ) -> Result<Fetched> {
        let batches = decode_delta_batches(bytes, path.as_ref())?;
        batches.check_origin(layout.store_name(), partition, seq, path)?;
        if !batches.has_import_rows() {
            return Ok(Fetched::Rows(batches));
        }
        let delta = batches.into_delta()?;
        // An import row out of place is corruption: refused here, before anything folds.
        delta.import()?;
        Ok(Fetched::Import(delta))
    }
}

/// A fetched delta: its sequence number, its size in bytes, and its content.
pub(crate) type FetchedDelta = (u64, u64, Fetched);

/// A chunk being fetched: its deltas and bytes (released from the bounds when it is handed
/// over) and what it fetched.
type ChunkFuture = Pin<Box<dyn Future<Output = (usize, u64, Result<Vec<FetchedDelta>>)> + Send>>;

/// Hands out a partition's deltas in log order, fetching ahead.
pub(crate) struct DeltaFetcher {
    storage: Storage,
    layout: StoreLayout,
    partition: u32,
    /// Chunks not started yet: (sequence, size) of each delta.
    todo: VecDeque<Vec<(u64, u64)>>,
    in_flight: FuturesOrdered<ChunkFuture>,
    in_flight_deltas: usize,
    in_flight_bytes: u64,
    /// Deltas in flight at most (local directories take more, in larger chunks).
    max_in_flight: usize,
    /// Whether chunks are read as plain files ([`Storage::local_files`]).
    local: bool,
    ready: VecDeque<FetchedDelta>,
}

impl DeltaFetcher {
    pub(crate) fn new(
        storage: &Storage,
        layout: &StoreLayout,
        partition: u32,
        deltas: &[(u64, ObjectMeta)],
    ) -> DeltaFetcher {
        let sizes: Vec<(u64, u64)> = deltas.iter().map(|(seq, m)| (*seq, m.size)).collect();
        let local = storage.local_files().is_some();
        let (chunk, max_in_flight) = if local {
            (LOCAL_CHUNK_DELTAS, LOCAL_IN_FLIGHT_DELTAS)
        } else {
            (CHUNK_DELTAS, IN_FLIGHT_DELTAS)
        };
        DeltaFetcher {
            storage: storage.clone(),
            layout: layout.clone(),
            partition,
            todo: plan_chunks(&sizes, chunk),
            in_flight: FuturesOrdered::new(),
            in_flight_deltas: 0,
            in_flight_bytes: 0,
            max_in_flight,
            local,
            ready: VecDeque::new(),
        }
    }

    /// Starts chunks while the bounds allow (always one, when nothing is in flight).
    fn fill(&mut self) {
        while let Some(chunk) = self.todo.front() {
            let bytes: u64 = chunk.iter().map(|(_, size)| size).sum();
            let room = self.in_flight_deltas + chunk.len() <= self.max_in_flight
                && self.in_flight_bytes + bytes <= IN_FLIGHT_BYTES;
            if !room && !self.in_flight.is_empty() {
                break;
            }
            let Some(chunk) = self.todo.pop_front() else {
                break;
            };
            self.in_flight_deltas += chunk.len();
            self.in_flight_bytes += bytes;
            let len = chunk.len();
            let (storage, layout, partition) =
                (self.storage.clone(), self.layout.clone(), self.partition);
            let task = if self.local {
                tokio::task::spawn_blocking(move || {
                    read_local_chunk(&storage, &layout, partition, chunk)
                })
            } else {
                tokio::spawn(fetch_chunk(storage, layout, partition, chunk))
            };
            self.in_flight.push_back(Box::pin(async move {
                let fetched = task.await.map_err(|e| Error::StorageMessage {
                    context: "fetching deltas".into(),
                    message: e.to_string(),
                });
                (len, bytes, fetched.and_then(|r| r))
            }));
        }
    }

    /// The next delta in log order; `None` after the last.
    pub(crate) async fn next(&mut self) -> Result<Option<FetchedDelta>> {
        if self.ready.is_empty() {
            self.fill();
            if let Some((deltas, bytes, fetched)) = self.in_flight.next().await {
                self.in_flight_deltas -= deltas;
                self.in_flight_bytes -= bytes;
                self.ready.extend(fetched?);
                self.fill();
            }
        }
        Ok(self.ready.pop_front())
    }
}

/// Deltas (sequence, size) in order, cut into chunks of at most `per_chunk`, each closed once
/// it holds [`CHUNK_BYTES`].
fn plan_chunks(deltas: &[(u64, u64)], per_chunk: usize) -> VecDeque<Vec<(u64, u64)>> {
    let mut chunks: VecDeque<Vec<(u64, u64)>> = VecDeque::new();
    let mut bytes = 0;
    for &(seq, size) in deltas {
        match chunks.back_mut() {
            Some(chunk) if chunk.len() < per_chunk && bytes < CHUNK_BYTES => {
                chunk.push((seq, size));
                bytes += size;
            }
            _ => {
                chunks.push_back(vec![(seq, size)]);
                bytes = size;
            }
        }
    }
    chunks
}

/// Delta `seq`'s bytes, or the error that it is gone (the listing named it).
fn present(bytes: Option<bytes::Bytes>, partition: u32, seq: u64) -> Result<bytes::Bytes> {
    bytes.ok_or_else(|| Error::Corrupt {
        what: format!("log of partition {partition}"),
        reason: format!("delta {seq} disappeared while compacting"),
    })
}

/// Reads and decodes a chunk of deltas of a local directory, in this (blocking) thread.
fn read_local_chunk(
    storage: &Storage,
    layout: &StoreLayout,
    partition: u32,
    chunk: Vec<(u64, u64)>,
) -> Result<Vec<FetchedDelta>> {
    let paths: Vec<Path> = chunk
        .iter()
        .map(|(seq, _)| layout.delta(partition, *seq))
        .collect();
    let read =
        ikv_core::bucket::read_local(storage, &paths).ok_or_else(|| Error::StorageMessage {
            context: "reading deltas".into(),
            message: "the local directory store was replaced".into(),
        })?;
    chunk
        .into_iter()
        .zip(read)
        .zip(&paths)
        .map(|(((seq, size), bytes), path)| {
            let bytes = present(bytes?, partition, seq)?;
            Ok((
                seq,
                size,
                Fetched::decode(&bytes, layout, partition, seq, path)?,
            ))
        })
        .collect()
}

/// Reads and decodes a chunk of deltas, its GETs concurrently.
async fn fetch_chunk(
    storage: Storage,
    layout: StoreLayout,
    partition: u32,
    chunk: Vec<(u64, u64)>,
) -> Result<Vec<FetchedDelta>> {
    let (storage, layout) = (&storage, &layout);
    futures::future::try_join_all(chunk.into_iter().map(|(seq, size)| async move {
        let path = layout.delta(partition, seq);
        let bytes = present(
            ikv_core::bucket::read_listed(storage, &path, size).await?,
            partition,
            seq,
        )?;
        Ok::<_, Error>((
            seq,
            size,
            Fetched::decode(&bytes, layout, partition, seq, &path)?,
        ))
    }))
    .await
}

#[cfg(test)]
mod tests {
    use ikv_core::bucket::create_store;
    use ikv_core::{Document, FieldValue, Operation, StoreConfig};
    use ikv_writer::{Writer, WriterOptions};

    use super::*;

    #[test]
    fn chunks_keep_order_and_bound_count_and_bytes() {
        let small: Vec<(u64, u64)> = (1..=20).map(|s| (s, 1000)).collect();
        let chunks = plan_chunks(&small, CHUNK_DELTAS);
        assert_eq!(
            chunks.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![8, 8, 4]
        );
        let big = [(1, 5 << 20), (2, 5 << 20), (3, 1), (4, 40 << 20), (5, 1)];
        let chunks: Vec<Vec<u64>> = plan_chunks(&big, CHUNK_DELTAS)
            .into_iter()
            .map(|c| c.into_iter().map(|(s, _)| s).collect())
            .collect();
        assert_eq!(chunks, vec![vec![1, 2], vec![3, 4], vec![5]]);
    }

    /// Every delta of a partition, in log order, whatever the chunking, and a delta whose
    /// bytes are not there is an error, not a gap: on an object store (tasks and GETs) and on
    /// a local directory (plain file reads in blocking tasks).
    #[tokio::test]
    async fn hands_out_every_delta_in_order_and_refuses_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let local = Storage::open(&url, &ikv_core::StorageOptions::default()).unwrap();
        assert!(local.local_files().is_some());
        for storage in [Storage::memory(), local] {
            fetches_in_order_and_refuses_a_missing_delta(storage).await;
        }
    }

    async fn fetches_in_order_and_refuses_a_missing_delta(storage: Storage) {
        let config = StoreConfig::new("f", "id", None, 1).unwrap();
        create_store(&storage, &config).await.unwrap();
        let writer = Writer::open(storage.clone(), "f", WriterOptions::default())
            .await
            .unwrap();
        for i in 0..150 {
            let doc = Document::new().with("id", FieldValue::String(format!("k{i}")));
            writer.write(&[Operation::UpsertFields(doc)]).await.unwrap();
        }
        let layout = StoreLayout::new(&storage.prefix, "f").unwrap();
        let listed = ikv_core::bucket::list_deltas(&storage, &layout, 0)
            .await
            .unwrap();
        let mut fetcher = DeltaFetcher::new(&storage, &layout, 0, &listed);
        let mut seqs = Vec::new();
        while let Some((seq, _, delta)) = fetcher.next().await.unwrap() {
            assert!(matches!(delta, Fetched::Rows(_)));
            seqs.push(seq);
        }
        assert_eq!(seqs, (1..=150).collect::<Vec<u64>>(), "{}", storage.url);

        ikv_core::bucket::delete(&storage, &layout.delta(0, 130))
            .await
            .unwrap();
        let mut fetcher = DeltaFetcher::new(&storage, &layout, 0, &listed);
        let mut failed = None;
        for _ in 0..150 {
            match fetcher.next().await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        let message = failed.expect("the missing delta is reported");
        assert!(message.contains("delta 130"), "{message}");
    }
}
