//! Several sorted runs of one partition's import (an import written within a memory budget
//! has one run per flush) merged by key into encoded sections, later runs winning field by
//! field.
//!
//! Why not document by document: most keys are in one run only (an import of distinct keys
//! has disjoint runs, or runs that interleave in stretches), so the rows of the run with the
//! smallest key that come before every other run's next key are encoded as a slice of their
//! record batch, as a single run is; only a key several runs hold is merged as a document.
//! A run out of order is not trusted here: its rows come out in the order they are stored
//! and the caller's ascending check refuses them.

use std::collections::VecDeque;

use arrow_array::{Array, BinaryArray, RecordBatch};
use ikv_core::{Error, Result};
use ikv_snapshot_format::SnapshotStream;
use ikv_snapshot_format::rows::from_batch;

use crate::doc::OwnedDoc;
use crate::snapshot_rows::encode_rows;

fn corrupt(stream: &SnapshotStream, reason: &str) -> Error {
    let m = stream.manifest();
    Error::Corrupt {
        what: format!(
            "import {} of partition {}",
            m.import_id.as_deref().unwrap_or("?"),
            m.partition
        ),
        reason: reason.to_owned(),
    }
}

/// One run, positioned at its next row.
struct Cursor {
    stream: SnapshotStream,
    batch: Option<(RecordBatch, BinaryArray)>,
    offset: usize,
    done: bool,
}

impl Cursor {
    /// Loads the next non-empty batch once the current one is used up.
    async fn fill(&mut self) -> Result<()> {
        while !self.done
            && self
                .batch
                .as_ref()
                .is_none_or(|(b, _)| self.offset >= b.num_rows())
        {
            self.batch = None;
            self.offset = 0;
            let Some(batch) = self.stream.next_record_batch().await? else {
                self.done = true;
                break;
            };
            let key_column = &self.stream.manifest().key_column;
            let keys = batch
                .column_by_name(key_column)
                .and_then(|c| c.as_any().downcast_ref::<BinaryArray>())
                .ok_or_else(|| corrupt(&self.stream, "no binary key column"))?
                .clone();
            if keys.null_count() > 0 {
                return Err(corrupt(&self.stream, "a key is null"));
            }
            self.batch = Some((batch, keys));
        }
        Ok(())
    }

    fn head(&self) -> Option<&[u8]> {
        let (batch, keys) = self.batch.as_ref()?;
        (self.offset < batch.num_rows()).then(|| keys.value(self.offset))
    }
}

/// Runs in the order they apply.
pub struct RunMerge {
    runs: Vec<Cursor>,
}

impl RunMerge {
    pub fn new(runs: Vec<SnapshotStream>) -> RunMerge {
        RunMerge {
            runs: runs
                .into_iter()
                .map(|stream| Cursor {
                    stream,
                    batch: None,
                    offset: 0,
                    done: false,
                })
                .collect(),
        }
    }

    /// Appends the next stretch of merged documents (key, encoded sections at `epoch`) to
    /// `out`; `false` at the end.
    pub async fn next_rows(
        &mut self,
        partition: u32,
        epoch: u64,
        out: &mut VecDeque<(Vec<u8>, Vec<u8>)>,
    ) -> Result<bool> {
        for run in &mut self.runs {
            run.fill().await?;
        }
        // The run with the smallest next key (the first of equals), and the smallest next
        // key of the others.
        let mut first: Option<usize> = None;
        for (i, run) in self.runs.iter().enumerate() {
            if let Some(head) = run.head()
                && first.is_none_or(|f| self.runs[f].head().is_none_or(|h| head < h))
            {
                first = Some(i);
            }
        }
        let Some(first) = first else {
            return Ok(false);
        };
        let bound: Option<Vec<u8>> = self
            .runs
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != first)
            .filter_map(|(_, r)| r.head())
            .min()
            .map(<[u8]>::to_vec);
        let run = &mut self.runs[first];
        let Some((batch, keys)) = run.batch.as_ref() else {
            return Ok(false);
        };
        let from = run.offset;
        let mut end = from;
        match &bound {
            None => end = batch.num_rows(),
            Some(b) => {
                while end < batch.num_rows() && keys.value(end) < b.as_slice() {
                    end += 1;
                }
            }
        }
        if end > from {
            let m = run.stream.manifest();
            let slice = batch.slice(from, end - from);
            out.extend(encode_rows(
                &slice,
                &m.key_column,
                &m.columns,
                partition,
                epoch,
            )?);
            run.offset = end;
            return Ok(true);
        }
        // The smallest key is in several runs: one document, later runs winning.
        let key = keys.value(from).to_vec();
        let mut doc = OwnedDoc::new(partition);
        for run in &mut self.runs {
            if run.head() != Some(key.as_slice()) {
                continue;
            }
            let Some((batch, _)) = run.batch.as_ref() else {
                continue;
            };
            let mut docs = Vec::with_capacity(1);
            from_batch(
                &batch.slice(run.offset, 1),
                &run.stream.manifest().columns,
                &mut docs,
            )?;
            for (_, fields) in &docs {
                doc.set_snapshot_fields(fields.iter().map(|(n, v)| (n.as_str(), v)), epoch);
            }
            run.offset += 1;
        }
        let doc = doc.encode(&key);
        out.push_back((key, doc));
        Ok(true)
    }
}
