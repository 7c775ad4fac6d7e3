//! Several sorted runs of documents merged into one stream in key order: a snapshot and the
//! runs of the imports applied on top of it.
//!
//! Runs are given in the order they apply; where several hold a key, its fields are unioned
//! and a later run's value wins, exactly as one `upsert_fields` per document, run after run,
//! would leave it. Runs come from the bucket: each must be strictly ascending by key, or the
//! merge fails as corrupt rather than yield documents out of order.

use ikv_core::{Error, Result};

use crate::layer::StackDocs;
use crate::read::SnapshotStream;
use crate::rows::SnapshotDoc;

/// A sorted input: one snapshot's or import's files, or a layer's whole stack resolved.
pub enum RunInput {
    Files(SnapshotStream),
    Stack(StackDocs),
}

impl RunInput {
    async fn next_doc(&mut self) -> Result<Option<SnapshotDoc>> {
        match self {
            RunInput::Files(s) => s.next_doc().await,
            RunInput::Stack(s) => s.next_doc().await,
        }
    }
}

impl From<SnapshotStream> for RunInput {
    fn from(stream: SnapshotStream) -> RunInput {
        RunInput::Files(stream)
    }
}

/// One sorted input, with its next document read ahead and its order checked.
struct Run {
    stream: RunInput,
    what: String,
    next: Option<SnapshotDoc>,
    last_key: Option<Vec<u8>>,
}

impl Run {
    async fn open(mut stream: RunInput) -> Result<Run> {
        let what = match &stream {
            RunInput::Files(s) => {
                let m = s.manifest();
                match &m.import_id {
                    Some(id) => format!("import {id} of partition {}", m.partition),
                    None => format!("snapshot {} of partition {}", m.sequence, m.partition),
                }
            }
            RunInput::Stack(_) => "a snapshot's stack".to_owned(),
        };
        let next = stream.next_doc().await?;
        Ok(Run {
            stream,
            what,
            next,
            last_key: None,
        })
    }

    fn what(&self) -> String {
        self.what.clone()
    }

    async fn take(&mut self) -> Result<Option<SnapshotDoc>> {
        let Some(doc) = self.next.take() else {
            return Ok(None);
        };
        if self.last_key.as_ref().is_some_and(|last| *last >= doc.0) {
            return Err(Error::Corrupt {
                what: self.what(),
                reason: "rows are not strictly ascending by primary key".into(),
            });
        }
        self.last_key = Some(doc.0.clone());
        self.next = self.stream.next_doc().await?;
        Ok(Some(doc))
    }
}

/// Documents of several sorted runs, merged by key.
pub struct MergedRuns {
    runs: Vec<Run>,
}

impl MergedRuns {
    /// `runs` in the order they apply (later runs win).
    pub async fn open(runs: Vec<RunInput>) -> Result<MergedRuns> {
        let mut opened = Vec::with_capacity(runs.len());
        for stream in runs {
            opened.push(Run::open(stream).await?);
        }
        Ok(MergedRuns { runs: opened })
    }

    /// The next document, or `None` at the end.
    pub async fn next_doc(&mut self) -> Result<Option<SnapshotDoc>> {
        // Few runs: a scan for the smallest head is cheaper than a heap.
        let Some(min) = self
            .runs
            .iter()
            .filter_map(|r| r.next.as_ref().map(|(k, _)| k))
            .min()
            .cloned()
        else {
            return Ok(None);
        };
        let mut merged: Option<SnapshotDoc> = None;
        for run in &mut self.runs {
            if run.next.as_ref().is_some_and(|(k, _)| *k == min) {
                let Some((key, fields)) = run.take().await? else {
                    continue;
                };
                match merged.as_mut() {
                    // A later run's value replaces an earlier one with its expiry and event
                    // time (or none), as the reader's import does.
                    Some((_, into)) => ikv_core::expiry::replace_fields(into, fields),
                    None => merged = Some((key, fields)),
                }
            }
        }
        Ok(merged)
    }
}
