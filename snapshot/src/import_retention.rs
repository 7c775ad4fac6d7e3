//! Retention of bulk imports' files (`p<part>/imports/`).
//!
//! A run's files are needed while the delta that names it is in the log: readers apply that
//! delta from them, and the compactor folds it. Snapshots copy what they fold, so once the
//! delta is gone nothing reads the run again. Rules:
//! - a run the newest snapshot lists as folded by delta `s` is deleted once the log starts
//!   after `s` (retention removed the delta);
//! - a run older than the window that no snapshot lists and no delta after the newest
//!   snapshot names was never committed (a crashed or abandoned import) or was folded long
//!   ago: deleted. Younger ones may belong to an import still being committed;
//! - an import's commit marker and commit intent go once they are older than the window and
//!   none of its runs remain.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use ikv_core::bucket::ObjectMeta;
use ikv_core::bucket::read_delta;
use ikv_core::delta::decode_delta;
use ikv_core::{Result, Storage, StoreLayout};

use crate::manifest::Manifest;
use crate::options::Retention;
use crate::retention::{delete, list, older_than};

/// Suffixes of an import's commit marker and commit intent, beside its runs.
const MARKER_SUFFIXES: [&str; 2] = [".committed.json", ".intent.json"];

/// Deletes what the rules allow; returns how many run files and markers went.
pub async fn retain_imports(
    storage: &Storage,
    layout: &StoreLayout,
    partition: u32,
    newest: &Manifest,
    first_in_log: u64,
    retention: &Retention,
    now: SystemTime,
) -> Result<usize> {
    let dir = layout.imports_dir(partition);
    let objects = list(storage, &dir).await?;
    if objects.is_empty() {
        return Ok(0);
    }
    let mut runs: BTreeMap<String, Vec<ObjectMeta>> = BTreeMap::new();
    let mut markers: Vec<(String, ObjectMeta)> = Vec::new();
    for meta in objects {
        let rel: Vec<String> = meta
            .location
            .prefix_match(&dir)
            .map(|p| p.map(|part| part.as_ref().to_owned()).collect())
            .unwrap_or_default();
        let marker_of = |name: &str| {
            MARKER_SUFFIXES
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .map(str::to_owned)
        };
        match rel.as_slice() {
            [name] if marker_of(name).is_some() => {
                let id = marker_of(name).unwrap_or_default();
                markers.push((id, meta));
            }
            [run, _, ..] => runs.entry(run.clone()).or_default().push(meta),
            _ => {}
        }
    }
    let folded: BTreeMap<&str, u64> = newest
        .imports
        .iter()
        .map(|i| (i.id.as_str(), i.sequence))
        .collect();
    // Runs named by deltas after the newest snapshot, read only when a run is in question.
    let mut pending: Option<BTreeSet<String>> = None;
    let mut deleted = 0;
    let mut remaining_runs: BTreeSet<String> = BTreeSet::new();
    for (run, files) in &runs {
        let old = files.iter().all(|m| older_than(m, now, retention));
        let delete_run = match folded.get(run.as_str()) {
            Some(seq) => *seq < first_in_log,
            None if !old => false,
            None => {
                if pending.is_none() {
                    pending =
                        Some(runs_named_after(storage, layout, partition, newest.sequence).await?);
                }
                !pending.as_ref().is_some_and(|p| p.contains(run))
            }
        };
        if delete_run {
            for m in files {
                delete(storage, &m.location).await?;
                deleted += 1;
            }
            tracing::info!(
                partition,
                run,
                "removed an import's files no delta names any more"
            );
        } else {
            remaining_runs.insert(run.clone());
        }
    }
    for (id, meta) in markers {
        let prefix = format!("{id}.");
        let has_runs = remaining_runs.iter().any(|r| r.starts_with(&prefix));
        if !has_runs && older_than(&meta, now, retention) {
            delete(storage, &meta.location).await?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Run ids the deltas after `after` name (they are still to be folded).
async fn runs_named_after(
    storage: &Storage,
    layout: &StoreLayout,
    partition: u32,
    after: u64,
) -> Result<BTreeSet<String>> {
    let mut named = BTreeSet::new();
    let mut seq = after + 1;
    while let Some(bytes) = read_delta(storage, layout, partition, seq).await? {
        let what = layout.delta(partition, seq).to_string();
        let delta = decode_delta(&bytes, &what)?;
        if let Some(import) = delta.import()? {
            named.extend(import.runs.iter().map(|r| r.id.to_owned()));
        }
        seq += 1;
    }
    Ok(named)
}
