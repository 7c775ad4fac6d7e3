//! Committing written runs: one delta per partition through the writer, ordered with every
//! other write to that partition, then a marker that makes a retry of the same import a
//! no-op for partitions already committed.
//!
//! A partition's delta is `[Import run, ...]` (upsert) or `[DropAll, Import run, ...]`
//! (replace; a partition the import has no rows for gets `[DropAll]`, so it ends empty). The
//! delta is the commit point: before it, the runs are invisible files; after it, every
//! reader applies them in log order. The marker
//! `p<part>/imports/<import id>.committed.json` is written after the delta.
//!
//! No partition is committed twice, even when a process is killed between its delta and its
//! marker: before the delta, an intent `p<part>/imports/<import id>.intent.json` records the
//! partition's tip; a retry that finds an intent without a marker reads the deltas after
//! that tip for the import's batch id (`import-<id>`) and, when one is there, writes the
//! marker instead of committing again.
//!
//! An import id names one import: a retry must ask for the same mode and bring the same
//! number of input rows to each partition, or it is refused (`InvalidImport`) rather than
//! silently importing nothing or part.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use ikv_core::bucket::{Path, create_if_absent, put, read};
use ikv_core::metrics::catalog::{IMPORTER_BYTES, IMPORTER_ROWS, IMPORTER_RUNS, IMPORTER_SECONDS};
use ikv_core::metrics::{Histogram, MetricSet};
use ikv_core::{DeltaOp, Error, Result, Storage, StoreLayout};
use ikv_snapshot_format::manifest::Manifest;
use ikv_writer::Writer;
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
    /// Run files this attempt uploaded, and their bytes (0 when earlier attempts had).
    #[serde(default)]
    pub runs: u64,
    #[serde(default)]
    pub bytes: u64,
}

impl ImportReceipt {
    /// The import's metrics (rows, runs, bytes uploaded, and its duration `took`), for a
    /// batch job to hand to its exporter (`ikv import --metrics-file`: node_exporter's
    /// textfile collector).
    pub fn metrics(&self, store: &str, took: std::time::Duration) -> MetricSet {
        let l = [("store", store)];
        let mut set = MetricSet::new();
        set.number(&IMPORTER_ROWS, &l, self.rows as f64);
        set.number(&IMPORTER_RUNS, &l, self.runs as f64);
        set.number(&IMPORTER_BYTES, &l, self.bytes as f64);
        let h = Histogram::default();
        h.record(took);
        set.histogram(&IMPORTER_SECONDS, &l, &h);
        set
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    import_id: String,
    sequence: u64,
    runs: Vec<String>,
    replace: bool,
    /// The partition's input rows (absent in markers of earlier versions).
    #[serde(default)]
    rows_in: Option<u64>,
    /// Documents the partition's runs held.
    #[serde(default)]
    documents: Option<u64>,
}

/// What a committing process records before a partition's delta.
#[derive(Debug, Serialize, Deserialize)]
struct Intent {
    import_id: String,
    /// The partition's tip before the delta: the import's delta, if any, is after it.
    after: u64,
}

fn intent_path(layout: &StoreLayout, partition: u32, import_id: &str) -> Path {
    layout
        .imports_dir(partition)
        .join(format!("{import_id}.intent.json"))
}

fn sealed<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(ikv_core::checksum::seal_json(
        serde_json::to_vec(value).unwrap_or_default(),
    ))
}

async fn read_sealed<T: serde::de::DeserializeOwned>(
    storage: &Storage,
    path: &Path,
) -> Result<Option<T>> {
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

/// Refuses a retry that is not the import its id committed.
fn check_same_import(
    marker: &Marker,
    partition: u32,
    mode: ImportMode,
    rows_in: Option<u64>,
) -> Result<()> {
    let asked = mode == ImportMode::Replace;
    if marker.replace != asked {
        return Err(Error::InvalidImport(format!(
            "import id {:?} was committed to partition {partition} in {} mode; this retry asks for {} mode: an import id names one import, use a new id",
            marker.import_id,
            if marker.replace { "replace" } else { "upsert" },
            if asked { "replace" } else { "upsert" },
        )));
    }
    if let (Some(was), Some(now)) = (marker.rows_in, rows_in)
        && was != now
    {
        return Err(Error::InvalidImport(format!(
            "import id {:?} committed {was} input rows to partition {partition}; this retry brings {now}: an import id names one import, use a new id for other data",
            marker.import_id
        )));
    }
    Ok(())
}

/// Whether an earlier attempt of `import_id` committed any partition (one GET a partition).
pub async fn has_markers(storage: &Storage, store: &str, import_id: &str) -> Result<bool> {
    let config = ikv_core::bucket::load_config(storage, store).await?;
    let layout = StoreLayout::new(&storage.prefix, store)?;
    let found = futures::future::try_join_all((0..config.num_partitions).map(|p| {
        let path = marker_path(&layout, p, import_id);
        async move { read(storage, &path).await.map(|m| m.is_some()) }
    }))
    .await?;
    Ok(found.into_iter().any(|f| f))
}

/// Before anything is uploaded: the receipt of an import whose every target partition (each
/// with rows, or every one for a replace) was committed by an earlier attempt, read from its
/// markers (so a retry of a finished import uploads nothing); `None` when some are not
/// committed yet. A retry that is not the same import (another mode, other rows in a
/// partition, or no rows for a partition the id committed) is refused before anything is
/// written. One GET per partition of the store.
pub async fn committed_earlier(
    storage: &Storage,
    store: &str,
    import_id: &str,
    mode: ImportMode,
    partition_rows: &std::collections::BTreeMap<u32, u64>,
) -> Result<Option<ImportReceipt>> {
    let config = ikv_core::bucket::load_config(storage, store).await?;
    let layout = StoreLayout::new(&storage.prefix, store)?;
    let all: Vec<u32> = (0..config.num_partitions).collect();
    let targets: Vec<u32> = match mode {
        ImportMode::Replace => all.clone(),
        ImportMode::Upsert => partition_rows.keys().copied().collect(),
    };
    let markers = futures::future::try_join_all(all.iter().map(|p| {
        let path = marker_path(&layout, *p, import_id);
        async move { read_sealed::<Marker>(storage, &path).await }
    }))
    .await?;
    let mut commits = Vec::new();
    let mut documents = 0;
    for (p, marker) in all.iter().zip(markers) {
        let Some(marker) = marker else {
            continue;
        };
        if !targets.contains(p) {
            return Err(Error::InvalidImport(format!(
                "import id {import_id:?} committed rows to partition {p}, and this retry has none for it: an import id names one import, use a new id for other data"
            )));
        }
        check_same_import(
            &marker,
            *p,
            mode,
            Some(partition_rows.get(p).copied().unwrap_or(0)),
        )?;
        documents += marker.documents.unwrap_or(0);
        commits.push(ImportCommit {
            partition: *p,
            sequence: marker.sequence,
            earlier: true,
        });
    }
    if commits.len() < targets.len() {
        return Ok(None);
    }
    tracing::info!(
        import = import_id,
        "every partition was committed by an earlier attempt; nothing uploaded"
    );
    Ok(Some(ImportReceipt {
        import_id: import_id.to_owned(),
        commits,
        rows: partition_rows.values().sum(),
        documents,
        runs: 0,
        bytes: 0,
    }))
}

/// After a process was killed between a partition's delta and its marker: the import's
/// delta among those after the intent's tip, if it landed.
async fn landed_after(
    storage: &Storage,
    layout: &StoreLayout,
    partition: u32,
    intent: &Intent,
    batch_id: &str,
) -> Result<Option<u64>> {
    let tip = ikv_core::bucket::tip::find_tip(
        storage,
        layout,
        partition,
        intent.after,
        ikv_core::bucket::tip::Knowledge::Old,
    )
    .await?;
    for seq in intent.after.saturating_add(1)..=tip {
        let Some(bytes) = ikv_core::bucket::read_delta(storage, layout, partition, seq).await?
        else {
            continue; // removed by retention: a snapshot covers it, and so would a marker
        };
        let meta =
            ikv_core::delta::decode_delta_meta(&bytes, layout.delta(partition, seq).as_ref())?;
        if meta.batch_id == batch_id {
            return Ok(Some(seq));
        }
    }
    Ok(None)
}

fn marker_path(layout: &StoreLayout, partition: u32, import_id: &str) -> Path {
    layout
        .imports_dir(partition)
        .join(format!("{import_id}.committed.json"))
}

async fn read_marker(storage: &Storage, path: &Path) -> Result<Option<Marker>> {
    read_sealed(storage, path).await
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
            let rows_in = (!written.partition_rows.is_empty())
                .then(|| written.partition_rows.get(&partition).copied().unwrap_or(0));
            if let Some(m) = read_marker(storage, &marker).await? {
                check_same_import(&m, partition, mode, rows_in)?;
                tracing::info!(partition, sequence = m.sequence, import = %written.import_id, "already committed by an earlier attempt");
                return Ok(ImportCommit {
                    partition,
                    sequence: m.sequence,
                    earlier: true,
                });
            }
            let batch_id = format!("import-{}", written.import_id);
            let write_marker = |sequence: u64| {
                let body = sealed(&Marker {
                    import_id: written.import_id.clone(),
                    sequence,
                    runs: runs.iter().filter_map(|r| r.import_id.clone()).collect(),
                    replace: mode == ImportMode::Replace,
                    rows_in,
                    documents: Some(runs.iter().map(|r| r.row_count).sum()),
                });
                let marker = marker.clone();
                async move { create_if_absent(storage, &marker, body).await }
            };
            // Killed between the delta and the marker before? Then the delta is after the
            // intent's tip: find it rather than commit again.
            let intent_at = intent_path(&layout, partition, &written.import_id);
            if let Some(intent) = read_sealed::<Intent>(storage, &intent_at).await?
                && let Some(sequence) =
                    landed_after(storage, &layout, partition, &intent, &batch_id).await?
            {
                write_marker(sequence).await?;
                tracing::info!(partition, sequence, import = %written.import_id, "an earlier attempt had committed the partition; its marker is written now");
                return Ok(ImportCommit {
                    partition,
                    sequence,
                    earlier: true,
                });
            }
            let after = ikv_core::bucket::tip::find_tip(
                storage,
                &layout,
                partition,
                0,
                ikv_core::bucket::tip::Knowledge::Old,
            )
            .await?;
            let intent = sealed(&Intent {
                import_id: written.import_id.clone(),
                after,
            });
            // Replaced if there: a later intent only narrows the search.
            put(storage, &intent_at, intent).await?;
            ikv_core::failpoint!("import.before_commit");
            let sequence = writer
                .commit_import(partition, import_rows(runs, mode), batch_id.clone())
                .await?;
            ikv_core::failpoint!("import.before_marker");
            write_marker(sequence).await?;
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
        runs: written.runs.values().map(|r| r.len() as u64).sum(),
        bytes: written
            .runs
            .values()
            .flatten()
            .flat_map(|m| &m.files)
            .map(|f| f.bytes)
            .sum(),
    })
}
