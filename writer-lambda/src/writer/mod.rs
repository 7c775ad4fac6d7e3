//! The writer library: validate, group-commit per partition, return once durable.

mod group;

use std::sync::Arc;

use ikv_core::bucket::load_config;
use ikv_core::clock::{Clock, SystemClock};
use ikv_core::limits::{MAX_BATCH_PAYLOAD_BYTES, MAX_DELTA_PAYLOAD_BYTES};
use ikv_core::{
    DeltaOp, Document, Error, Operation, Result, Storage, StorageOptions, StoreConfig, StoreLayout,
    partition_operations,
};
use tokio::sync::{mpsc, oneshot};

use group::{GroupCommitTask, Pending};
pub use ikv_core::bucket::CommitPolicy;
use ikv_core::bucket::{CommitStats, PartitionCommitter};
use ikv_core::metrics::MetricSet;

/// Options of a [`Writer`].
#[derive(Debug, Clone, Default)]
pub struct WriterOptions {
    /// Recorded in every delta; a random UUID when not set.
    pub writer_id: Option<String>,
    pub commit_policy: CommitPolicy,
    /// Time for the commit path (tip age, idleness, hint age, backoff); the system clock
    /// when not set. Tests pass a `ManualClock` to cross thresholds without waiting.
    pub clock: Option<Arc<dyn Clock>>,
}

/// Where one call's operations landed: one entry per partition it touched.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WriteReceipt {
    pub commits: Vec<PartitionCommit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PartitionCommit {
    pub partition: u32,
    /// Sequence number of the delta holding the call's operations for this partition.
    pub sequence: u64,
}

/// Writes to one store. Cheap to clone; all clones share the per-partition commit queues, so
/// concurrent callers' operations coalesce into one delta per partition (group commit).
/// Must be created inside a tokio runtime (it spawns one commit task per partition).
#[derive(Clone)]
pub struct Writer {
    inner: Arc<WriterInner>,
}

struct WriterInner {
    config: StoreConfig,
    writer_id: String,
    queues: Vec<mpsc::UnboundedSender<Pending>>,
    hints: Vec<ikv_core::bucket::HintFlush>,
    stats: Arc<CommitStats>,
    storage: Storage,
    /// What times to live count from.
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("store", &self.inner.config.store_name)
            .field("writer_id", &self.inner.writer_id)
            .finish()
    }
}

impl Writer {
    /// Opens a writer on a storage URL; the store's own retries are turned off for it
    /// (see [`StorageOptions::disable_retries`]).
    pub async fn open_url(
        url: &str,
        storage_options: &StorageOptions,
        store_name: &str,
        options: WriterOptions,
    ) -> Result<Writer> {
        let mut storage_options = storage_options.clone();
        storage_options.disable_retries = true;
        let storage = Storage::open(url, &storage_options)?;
        Writer::open(storage, store_name, options).await
    }

    /// Opens a writer on an opened storage root. For S3, open it with
    /// `disable_retries: true` so that a lost race is never confused with a retried PUT.
    pub async fn open(
        storage: Storage,
        store_name: &str,
        options: WriterOptions,
    ) -> Result<Writer> {
        let config = load_config(&storage, store_name).await?;
        let layout = StoreLayout::new(&storage.prefix, store_name)?;
        let writer_id = options
            .writer_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let clock = options.clock.unwrap_or_else(SystemClock::shared);
        let mut queues = Vec::with_capacity(config.num_partitions as usize);
        let mut hints = Vec::with_capacity(config.num_partitions as usize);
        let stats = Arc::new(CommitStats::default());
        for partition in 0..config.num_partitions {
            let (tx, rx) = mpsc::unbounded_channel();
            let committer = PartitionCommitter::new(
                storage.clone(),
                layout.clone(),
                partition,
                options.commit_policy.clone(),
                clock.clone(),
                &writer_id,
                stats.clone(),
            );
            hints.push(committer.hint_flusher());
            let task = GroupCommitTask {
                committer,
                queue: rx,
                writer_id: writer_id.clone(),
                store_name: store_name.to_owned(),
                partition,
            };
            tokio::spawn(task.run());
            queues.push(tx);
        }
        tracing::info!(store = store_name, %writer_id, partitions = config.num_partitions, "writer opened");
        Ok(Writer {
            inner: Arc::new(WriterInner {
                config,
                writer_id,
                queues,
                hints,
                stats,
                storage,
                clock,
            }),
        })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// Writes every partition's pending tip hint now (they are otherwise written within
    /// about 100 ms of a commit, in the background). Call it before a process that committed
    /// exits, so that the next idle writer learns the tip with one GET instead of a search.
    pub async fn flush_hints(&self) {
        futures::future::join_all(self.inner.hints.iter().map(|h| h.flush())).await;
    }

    /// This writer's metrics (operations, commits, bytes, commit latency, lost races, tip
    /// searches, hint reads and publishes), labelled with its store. The storage root's
    /// requests are [`Writer::storage_metrics`]: a root may be shared by several writers.
    pub fn metrics(&self) -> MetricSet {
        self.inner.stats.metrics(&self.inner.config.store_name)
    }

    /// The requests this writer's storage root made (with those of every writer sharing
    /// it), labelled `component="writer"`.
    pub fn storage_metrics(&self) -> MetricSet {
        let mut set = MetricSet::new();
        set.requests(self.inner.storage.requests(), &[("component", "writer")]);
        set
    }

    pub fn writer_id(&self) -> &str {
        &self.inner.writer_id
    }

    /// Validates every operation, then commits them; returns once they are durable. On a
    /// validation error nothing is written. Operations on one partition are atomic (one
    /// delta); a call touching several partitions commits one delta in each.
    pub async fn write(&self, ops: &[Operation]) -> Result<WriteReceipt> {
        let now_ms = ikv_core::clock::epoch_ms(self.inner.clock.as_ref());
        let partitioned = partition_operations(&self.inner.config, ops, now_ms)?;
        let mut waits = Vec::new();
        // Check every partition's size, and the whole call's, before enqueuing any, so
        // nothing lands on error.
        let total: usize = partitioned
            .non_empty()
            .map(|(_, rows)| rows.iter().map(|r| r.payload_bytes()).sum::<usize>())
            .sum();
        if total > MAX_BATCH_PAYLOAD_BYTES {
            return Err(Error::InvalidOperation(format!(
                "the batch makes {total} payload bytes across its partitions, more than the {MAX_BATCH_PAYLOAD_BYTES} one call may; split it"
            )));
        }
        for (partition, rows) in partitioned.non_empty() {
            let bytes: usize = rows.iter().map(|r| r.payload_bytes()).sum();
            if bytes > MAX_DELTA_PAYLOAD_BYTES {
                return Err(Error::InvalidOperation(format!(
                    "the batch holds {bytes} bytes for partition {partition}, more than the {MAX_DELTA_PAYLOAD_BYTES} one delta may hold; split it"
                )));
            }
        }
        for (partition, rows) in partitioned.into_non_empty() {
            let payload_bytes = rows.iter().map(|r| r.payload_bytes()).sum();
            let (tx, rx) = oneshot::channel();
            self.inner.queues[partition as usize]
                .send(Pending {
                    ops: rows,
                    payload_bytes,
                    reply: tx,
                    alone: None,
                })
                .map_err(|_| Error::Closed("writer"))?;
            waits.push((partition, rx));
        }
        let mut commits = Vec::with_capacity(waits.len());
        let mut first_error = None;
        for (partition, rx) in waits {
            match rx.await {
                Ok(Ok(sequence)) => commits.push(PartitionCommit {
                    partition,
                    sequence,
                }),
                Ok(Err(e)) => {
                    first_error.get_or_insert(Error::Shared(e));
                }
                Err(_) => {
                    first_error.get_or_insert(Error::Closed("writer"));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => {
                self.inner.stats.acknowledged(ops.len() as u64);
                Ok(WriteReceipt { commits })
            }
        }
    }

    /// Commits an import's delta for `partition`: `ops` is import rows after at most one
    /// `DropAll`, committed alone (never grouped with other callers' operations) under
    /// `batch_id`, in order with this writer's other commits to the partition. Returns its
    /// sequence number.
    pub async fn commit_import(
        &self,
        partition: u32,
        ops: Vec<DeltaOp>,
        batch_id: String,
    ) -> Result<u64> {
        let replace = ops.first() == Some(&DeltaOp::DropAll);
        let runs = &ops[usize::from(replace)..];
        if (runs.is_empty() && !replace)
            || !runs.iter().all(|op| matches!(op, DeltaOp::Import { .. }))
        {
            return Err(Error::InvalidOperation(
                "an import delta holds import rows, after at most one drop-all row".into(),
            ));
        }
        let queue = self.inner.queues.get(partition as usize).ok_or_else(|| {
            Error::InvalidOperation(format!(
                "partition {partition} does not exist (the store has {})",
                self.inner.config.num_partitions
            ))
        })?;
        let payload_bytes = ops.iter().map(|r| r.payload_bytes()).sum();
        let (tx, rx) = oneshot::channel();
        queue
            .send(Pending {
                ops,
                payload_bytes,
                reply: tx,
                alone: Some(batch_id),
            })
            .map_err(|_| Error::Closed("writer"))?;
        match rx.await {
            Ok(Ok(sequence)) => Ok(sequence),
            Ok(Err(e)) => Err(Error::Shared(e)),
            Err(_) => Err(Error::Closed("writer")),
        }
    }

    pub async fn upsert_fields(&self, document: Document) -> Result<WriteReceipt> {
        self.write(&[Operation::UpsertFields(document)]).await
    }

    pub async fn delete_fields(
        &self,
        document: Document,
        field_names: Vec<String>,
    ) -> Result<WriteReceipt> {
        self.write(&[Operation::DeleteFields {
            document,
            field_names,
        }])
        .await
    }

    pub async fn delete_document(&self, document: Document) -> Result<WriteReceipt> {
        self.write(&[Operation::DeleteDocument(document)]).await
    }

    pub async fn drop_fields_by_name(&self, field_names: Vec<String>) -> Result<WriteReceipt> {
        self.write(&[Operation::DropFieldsByName(field_names)])
            .await
    }

    pub async fn drop_fields_by_name_prefix(&self, prefixes: Vec<String>) -> Result<WriteReceipt> {
        self.write(&[Operation::DropFieldsByNamePrefix(prefixes)])
            .await
    }

    pub async fn drop_all_fields(&self) -> Result<WriteReceipt> {
        self.write(&[Operation::DropAllFields]).await
    }
}
