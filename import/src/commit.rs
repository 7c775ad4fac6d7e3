//! Committing written runs: one delta per partition through the writer, ordered with every
//! other write to that partition, then a marker that makes a retry of the same import a
//! no-op for partitions already committed.
//!
//! A partition's delta is `[Import run, ...]` (upsert) or `[DropAll, Import run, ...]`
//! (replace; a partition the import has no rows for gets `[DropAll]`, so it ends empty). The
//! delta is the commit point: before it, the runs are invisible files; after it, every
//! reader applies them in log order. The marker
//! `p<part>/imports/<import id>.committed.json` is written after the delta; a process killed
//! between the two commits that partition again on retry (upsert and replace are both
//! idempotent on their own, but writes that landed in between would be overwritten again).

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use ikv_core::bucket::{create_if_absent, read};
use ikv_core::{DeltaOp, Error, Result, Storage, StoreLayout};
use ikv_snapshot::manifest::Manifest;
use ikv_writer::Writer;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use crate::{ImportMode, WrittenImport};

/// Where an import landed in one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportCommit {
    pub partition: u32,
    /// Sequence number of the delta that committed it.
    pub sequence: u64,
    /// Committed by an earlier attempt of this import (found by its marker).
    pub earlier: bool,
}

/// What an import committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReceipt {
    pub import_id: String,
    pub commits: Vec<ImportCommit>,
    /// Input rows, and documents after combining rows of one key.
    pub rows: u64,
    pub documents: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    import_id: String,
    sequence: u64,
    runs: Vec<String>,
    replace: bool,
}

fn marker_path(layout: &StoreLayout, partition: u32, import_id: &str) -> Path {
    layout
        .imports_dir(partition)
        .join(format!("{import_id}.committed.json"))
}

async fn read_marker(storage: &Storage, path: &Path) -> Result<Option<Marker>> {
    let Some(bytes) = read(storage, path).await? else {
        return Ok(None);
    };
    let json = ikv_core::checksum::open_json(&bytes, path.as_ref())?;
    serde_json::from_slice(&json)
        .map(Some)
        .map_err(|e| Error::Corrupt {
            what: path.to_string(),
            reason: e.to_string(),
        })
}

/// The delta rows committing `runs` to one partition.
fn import_rows(runs: &[Manifest], mode: ImportMode) -> Vec<DeltaOp> {
    let mut ops = Vec::with_capacity(runs.len() + 1);
    if mode == ImportMode::Replace {
        ops.push(DeltaOp::DropAll);
    }
    for run in runs {
        ops.push(DeltaOp::Import {
            id: run.import_id.clone().unwrap_or_default(),
            spec: run.encode_import_spec(),
        });
    }
    ops
}

/// Commits `written` through `writer` (opened on the same store): one delta per partition,
/// all partitions at once. A partition whose marker says this import committed there is
/// left alone.
pub async fn commit(
    writer: &Writer,
    storage: &Storage,
    written: &WrittenImport,
    mode: ImportMode,
) -> Result<ImportReceipt> {
    let config = writer.config();
    if written.store != config.store_name {
        return Err(Error::InvalidImport(format!(
            "the runs were written for store {:?}, not {:?}",
            written.store, config.store_name
        )));
    }
    let layout = StoreLayout::new(&storage.prefix, &config.store_name)?;
    let partitions: Vec<u32> = match mode {
        ImportMode::Replace => (0..config.num_partitions).collect(),
        ImportMode::Upsert => written.runs.keys().copied().collect(),
    };
    let empty = Vec::new();
    let commits = partitions.into_iter().map(|partition| {
        let runs = written.runs.get(&partition).unwrap_or(&empty);
        let layout = layout.clone();
        async move {
            let marker = marker_path(&layout, partition, &written.import_id);
            if let Some(m) = read_marker(storage, &marker).await? {
                tracing::info!(partition, sequence = m.sequence, import = %written.import_id, "already committed by an earlier attempt");
                return Ok(ImportCommit {
                    partition,
                    sequence: m.sequence,
                    earlier: true,
                });
            }
            ikv_core::failpoint!("import.before_commit");
            let sequence = writer
                .commit_import(
                    partition,
                    import_rows(runs, mode),
                    format!("import-{}", written.import_id),
                )
                .await?;
            let body = serde_json::to_vec(&Marker {
                import_id: written.import_id.clone(),
                sequence,
                runs: runs
                    .iter()
                    .filter_map(|r| r.import_id.clone())
                    .collect(),
                replace: mode == ImportMode::Replace,
            })
            .unwrap_or_default();
            let body = ikv_core::checksum::seal_json(body);
            create_if_absent(storage, &marker, Bytes::from(body)).await?;
            tracing::info!(partition, sequence, runs = runs.len(), import = %written.import_id, "import committed");
            Ok::<_, Error>(ImportCommit {
                partition,
                sequence,
                earlier: false,
            })
        }
    });
    let mut commits: Vec<ImportCommit> = futures::stream::iter(commits)
        .buffer_unordered(16)
        .try_collect()
        .await?;
    commits.sort_by_key(|c| c.partition);
    Ok(ImportReceipt {
        import_id: written.import_id.clone(),
        commits,
        rows: written.rows,
        documents: written.documents(),
    })
}
