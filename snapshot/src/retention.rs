//! Deleting what no reader can need any more.
//!
//! Rules (with `W` the retention window and "now" injected for tests):
//! - a delta is deleted when a committed snapshot covers it **and** it was written more than
//!   `W` ago;
//! - a committed snapshot is deleted when it is not among the newest `keep_snapshots` **and**
//!   the snapshot that superseded it was committed more than `W` ago; its manifest goes first,
//!   so it stops being visible before its files go;
//! - files no manifest references (crashed or lost compactor runs) are deleted once older
//!   than `W`;
//! - a snapshot a kept layer is stacked on is kept with it, whatever its age;
//! - a checkpoint keeps the snapshot it builds on (with its stack) and every delta above the
//!   lowest such snapshot, until it is deleted (`checkpoint.rs`).
//!
//! Guarantee to readers: a reader that has applied sequence `a` and polled within `W` finds
//! delta `a + 1` (or newer deltas) still there; one that has not polled for longer than `W`
//! may find its next delta gone, and must re-bootstrap from the newest snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use ikv_core::bucket::SNAPSHOT_MANIFEST;
use ikv_core::bucket::{ObjectMeta, Path};
use ikv_core::layout::{parse_delta_seq, parse_seq};
use ikv_core::{Result, Storage, StoreLayout};

use crate::import_retention::retain_imports;
use crate::manifest::Manifest;
use crate::options::Retention;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub deltas_deleted: usize,
    pub snapshots_deleted: usize,
    pub orphan_files_deleted: usize,
    /// Staging files of uploads a killed process left in a local directory.
    pub staging_files_deleted: usize,
    /// Files of imports no delta names any more, and their commit markers.
    pub import_files_deleted: usize,
}

pub(crate) fn older_than(meta: &ObjectMeta, now: SystemTime, retention: &Retention) -> bool {
    let modified: SystemTime = meta.last_modified.into();
    now.duration_since(modified)
        .is_ok_and(|age| age > retention.window)
}

pub(crate) async fn list(storage: &Storage, dir: &Path) -> Result<Vec<ObjectMeta>> {
    ikv_core::bucket::list(storage, dir).await
}

pub(crate) async fn delete(storage: &Storage, path: &Path) -> Result<()> {
    ikv_core::failpoint!("retention.delete");
    ikv_core::bucket::delete(storage, path).await
}

/// On a local directory, an upload is written to `<name>#<number>` and renamed when done; a
/// process killed mid-upload leaves that file, which the store's listings never show.
/// Removes the partition's staging files older than the retention window (younger ones may
/// belong to a live upload). Failures are logged, not fatal: they are only disk space.
fn remove_stale_staging(
    storage: &Storage,
    layout: &StoreLayout,
    partition: u32,
    retention: &Retention,
    now: SystemTime,
) -> usize {
    let Some(root) = storage.local_dir() else {
        return 0;
    };
    let mut pending = vec![root.join(layout.partition_dir(partition).as_ref())];
    let mut removed = 0;
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                pending.push(path);
                continue;
            }
            let name = entry.file_name();
            let staging = name
                .to_str()
                .and_then(|n| n.rsplit_once('#'))
                .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            let old = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age > retention.window);
            if staging && old {
                match std::fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "could not remove a staging file")
                    }
                }
            }
        }
    }
    removed
}

/// Applies the retention rules to one partition.
pub async fn apply_retention(
    storage: &Storage,
    layout: &StoreLayout,
    partition: u32,
    retention: &Retention,
    now: SystemTime,
) -> Result<RetentionReport> {
    let mut report = RetentionReport {
        staging_files_deleted: remove_stale_staging(storage, layout, partition, retention, now),
        ..RetentionReport::default()
    };
    let snapshots_dir = layout.snapshots_dir(partition);
    let objects = list(storage, &snapshots_dir).await?;
    // Objects grouped by snapshot sequence directory.
    let mut by_seq: BTreeMap<u64, Vec<ObjectMeta>> = BTreeMap::new();
    for meta in objects {
        let rel: Vec<_> = meta
            .location
            .prefix_match(&snapshots_dir)
            .map(|p| p.collect())
            .unwrap_or_default();
        if let Some(seq) = rel.first().and_then(|s| parse_seq(s.as_ref())) {
            by_seq.entry(seq).or_default().push(meta);
        }
    }
    // Committed snapshots, newest first, with their manifest's time.
    let committed: Vec<(u64, ObjectMeta)> = by_seq
        .iter()
        .rev()
        .filter_map(|(seq, objs)| {
            objs.iter()
                .find(|m| m.location.filename() == Some(SNAPSHOT_MANIFEST))
                .map(|m| (*seq, m.clone()))
        })
        .collect();
    let Some((newest, _)) = committed.first() else {
        return Ok(report); // nothing covers any delta yet
    };
    let newest = *newest;

    // Manifests of the committed snapshots, read once: what each references, and what the
    // layers among them are stacked on.
    let mut manifests: BTreeMap<u64, Option<Manifest>> = BTreeMap::new();
    for (seq, _) in &committed {
        let loaded = match Manifest::load(storage, layout, partition, *seq).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(partition, seq, error = %e, "unreadable manifest; leaving its directory alone");
                None
            }
        };
        manifests.insert(*seq, loaded);
    }

    // Snapshots: beyond the newest few, and superseded longer than the window ago, unless a
    // snapshot that stays is stacked on them (a layer needs every snapshot below it).
    let deletable: BTreeSet<u64> = committed
        .iter()
        .enumerate()
        .skip(retention.keep_snapshots.max(1))
        .filter(|(i, _)| older_than(&committed[i - 1].1, now, retention))
        .map(|(_, (seq, _))| *seq)
        .collect();
    // Checkpoints keep the snapshots they build on, with their stacks, and every delta above
    // the lowest of them.
    let pins = crate::checkpoint::pins(storage, layout, partition).await?;
    let mut needed: BTreeSet<u64> = BTreeSet::new();
    if pins.keep_all {
        needed.extend(committed.iter().map(|(s, _)| *s));
    }
    for seq in &pins.snapshots {
        needed.insert(*seq);
        match manifests.get(seq) {
            Some(Some(m)) => needed.extend(m.stacked_on.iter().copied()),
            Some(None) => needed.extend(committed.iter().map(|(s, _)| *s).filter(|s| s < seq)),
            None => {}
        }
    }
    for (seq, _) in &committed {
        if deletable.contains(seq) {
            continue;
        }
        match manifests.get(seq) {
            Some(Some(m)) => needed.extend(m.stacked_on.iter().copied()),
            // Unreadable: what it stands on is unknown, so nothing older goes.
            _ => needed.extend(committed.iter().map(|(s, _)| *s).filter(|s| s < seq)),
        }
    }
    // Newest first: a layer's manifest goes before the snapshots it is stacked on.
    let mut deleted_snapshots = BTreeSet::new();
    for (seq, _) in &committed {
        if !deletable.contains(seq) || needed.contains(seq) {
            continue;
        }
        let manifest_path = Manifest::path(layout, partition, *seq);
        delete(storage, &manifest_path).await?;
        for m in &by_seq[seq] {
            if m.location != manifest_path {
                delete(storage, &m.location).await?;
            }
        }
        deleted_snapshots.insert(*seq);
        report.snapshots_deleted += 1;
    }

    // Orphans: files of runs no manifest references.
    for (seq, objs) in &by_seq {
        if deleted_snapshots.contains(seq) {
            continue;
        }
        let referenced: BTreeSet<Path> = match manifests.get(seq) {
            Some(Some(m)) => m.files.iter().map(|f| m.file_path(layout, f)).collect(),
            Some(None) => continue, // unreadable: left alone
            None => match Manifest::load(storage, layout, partition, *seq).await {
                Ok(Some(m)) => m.files.iter().map(|f| m.file_path(layout, f)).collect(),
                Ok(None) => BTreeSet::new(),
                Err(e) => {
                    tracing::warn!(partition, seq, error = %e, "unreadable manifest; leaving its directory alone");
                    continue;
                }
            },
        };
        for m in objs {
            let is_manifest = m.location.filename() == Some(SNAPSHOT_MANIFEST);
            if !is_manifest && !referenced.contains(&m.location) && older_than(m, now, retention) {
                delete(storage, &m.location).await?;
                report.orphan_files_deleted += 1;
            }
        }
    }

    // Deltas covered by the newest snapshot and older than the window, oldest first: an
    // interrupted pass leaves a log that starts later, never one with a hole.
    let log: Vec<(u64, ObjectMeta)> = list(storage, &layout.deltas_dir(partition))
        .await?
        .into_iter()
        .filter_map(|m| parse_delta_seq(&m.location).map(|seq| (seq, m)))
        .collect();
    let mut covered: Vec<&(u64, ObjectMeta)> = log
        .iter()
        .filter(|(seq, m)| {
            *seq <= newest
                && older_than(m, now, retention)
                && !pins.keep_all
                && pins.lowest.is_none_or(|lowest| *seq <= lowest)
        })
        .collect();
    covered.sort_by_key(|(seq, _)| *seq);
    let mut deleted = BTreeSet::new();
    for (seq, meta) in covered {
        delete(storage, &meta.location).await?;
        deleted.insert(*seq);
        report.deltas_deleted += 1;
    }
    // Where the log starts now: imports folded by a delta below it are named by none.
    let first_in_log = log
        .iter()
        .map(|(seq, _)| *seq)
        .filter(|seq| !deleted.contains(seq))
        .min()
        .unwrap_or(u64::MAX);
    match Manifest::load(storage, layout, partition, newest).await {
        Ok(Some(manifest)) => {
            report.import_files_deleted = retain_imports(
                storage,
                layout,
                partition,
                &manifest,
                first_in_log,
                retention,
                now,
            )
            .await?;
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(partition, error = %e, "unreadable newest manifest; leaving imports alone")
        }
    }
    if report != RetentionReport::default() {
        tracing::info!(partition, ?report, "retention applied");
    }
    Ok(report)
}
