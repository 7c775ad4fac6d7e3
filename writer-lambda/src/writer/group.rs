//! Group commit: one task per partition drains every caller's pending operations into one
//! delta while the previous delta is being committed.
//!
//! Invariants:
//! - Operations of one partition are committed in the order callers enqueued them: one task,
//!   one FIFO queue, one commit at a time. So a writer's later batch never lands before an
//!   earlier one in the same partition.
//! - A caller is answered only after the delta holding its operations is durable (the PUT
//!   succeeded) or definitely failed.

use std::sync::Arc;

use ikv_core::delta::{DeltaMeta, encode_delta};
use ikv_core::limits::MAX_DELTA_PAYLOAD_BYTES;
use ikv_core::{DeltaOp, Error};
use tokio::sync::{mpsc, oneshot};

use ikv_core::bucket::PartitionCommitter;

/// What a caller learns about its operations in one partition.
pub(crate) type CommitReply = Result<u64, Arc<Error>>;

pub(crate) struct Pending {
    pub(crate) ops: Vec<DeltaOp>,
    pub(crate) payload_bytes: usize,
    pub(crate) reply: oneshot::Sender<CommitReply>,
    /// Committed as a delta of its own, under this batch id (an import's delta, which must
    /// be alone and which its importer recognizes by id).
    pub(crate) alone: Option<String>,
}

pub(crate) struct GroupCommitTask {
    pub(crate) committer: PartitionCommitter,
    pub(crate) queue: mpsc::UnboundedReceiver<Pending>,
    pub(crate) writer_id: String,
    pub(crate) store_name: String,
    pub(crate) partition: u32,
}

impl GroupCommitTask {
    pub(crate) async fn run(mut self) {
        let mut carried: Option<Pending> = None;
        loop {
            let first = match carried.take() {
                Some(p) => p,
                None => match self.queue.recv().await {
                    Some(p) => p,
                    None => return, // every Writer handle is gone
                },
            };
            let mut bytes = first.payload_bytes;
            let alone = first.alone.is_some();
            let mut group = vec![first];
            while !alone && let Ok(next) = self.queue.try_recv() {
                if next.alone.is_some() || bytes + next.payload_bytes > MAX_DELTA_PAYLOAD_BYTES {
                    carried = Some(next);
                    break;
                }
                bytes += next.payload_bytes;
                group.push(next);
            }
            let reply = self.commit_group(&group).await;
            for pending in group {
                // A caller that stopped waiting is not an error for the others.
                let _ = pending.reply.send(reply.clone());
            }
        }
    }

    async fn commit_group(&mut self, group: &[Pending]) -> CommitReply {
        let batch_id = match group.first().and_then(|p| p.alone.clone()) {
            Some(id) => id,
            None => uuid::Uuid::new_v4().to_string(),
        };
        let mut meta = DeltaMeta::new(
            batch_id.clone(),
            self.writer_id.clone(),
            self.store_name.clone(),
            self.partition,
        );
        // On the writer's clock: the next writer reads it to tell whether its own commit
        // ends a quiet spell (`ikv_core::bucket::wake`).
        meta.created_at_ms = self
            .committer
            .clock()
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let body =
            encode_delta(&meta, group.iter().flat_map(|p| p.ops.iter())).map_err(Arc::new)?;
        let callers = group.len();
        let result = self.committer.commit(body, &batch_id).await;
        match &result {
            Ok(seq) => tracing::debug!(partition = self.partition, seq, callers, "group committed"),
            Err(e) => {
                tracing::error!(partition = self.partition, callers, error = %e, "group commit failed")
            }
        }
        result.map_err(Arc::new)
    }
}
