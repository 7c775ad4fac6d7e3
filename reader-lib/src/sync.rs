//! Keeping the local store in step with the bucket: catching a partition up, noticing a gap
//! left by retention, and (re)bootstrapping.

use std::collections::{BTreeMap, BTreeSet};

use ikv_core::bucket::committed::decode_committed;
use ikv_core::bucket::{list_snapshot_seqs, read_delta};
use ikv_core::{Error, Result, Storage, StoreLayout};

use crate::bootstrap::{bootstrap, newest_snapshots};
use crate::local::PartitionState;
use crate::owner::Owner;
use crate::status::StatusBoard;

/// Most deltas fetched at once while catching up.
const MAX_FETCH_WINDOW: u64 = 32;

/// An import delta a partition reached: applied together with the other partitions' (one
/// rebuild of the local copy for all of them, `import.rs`) before the partition goes on.
pub struct PendingImport {
    pub partition: u32,
    pub sequence: u64,
    pub delta: ikv_core::Delta,
}

/// Applies every delta after `applied` that exists, up to `upto` and no further, in order,
/// stopping before an import delta (returned for the caller to apply); returns the new
/// applied sequence (the caller decides whether that is "caught up"). Idle, that is one GET (the one that finds nothing new); while deltas keep
/// coming, the GETs of the next ones go out together, in a window that grows to 32, so a
/// reader far behind is bounded by bandwidth rather than by one round trip per delta. A
/// missing delta ends the run: a delta exists only after every earlier one does.
pub async fn catch_up(
    storage: &Storage,
    layout: &StoreLayout,
    owner: &mut Owner,
    status: &StatusBoard,
    partition: u32,
    mut applied: u64,
    upto: u64,
) -> Result<(u64, Option<PendingImport>)> {
    let mut window = 1;
    let mut found = 0;
    loop {
        let last = applied.saturating_add(window).min(upto);
        if last <= applied {
            return Ok((applied, None));
        }
        let fetches = (applied + 1..=last).map(|seq| read_delta(storage, layout, partition, seq));
        let fetched = futures::future::join_all(fetches).await;
        // Deltas now known to exist beyond `applied` (those found before the first missing
        // one), for `lag_deltas`: each apply below counts one down.
        let present = fetched
            .iter()
            .take_while(|f| matches!(f, Ok(Some(_))))
            .count() as u64;
        status.known_beyond(partition, present);
        let mut complete = true;
        for bytes in fetched {
            match bytes? {
                Some(bytes) => {
                    let next = applied + 1;
                    let delta = decode_committed(&bytes, layout, partition, next)
                        .map_err(|e| status.counters.note(e))?;
                    if delta.import()?.is_some() {
                        return Ok((
                            applied,
                            Some(PendingImport {
                                partition,
                                sequence: next,
                                delta,
                            }),
                        ));
                    }
                    let started = ikv_core::clock::Stopwatch::start();
                    let written_at_ms = i64::try_from(delta.meta.created_at_ms).unwrap_or(i64::MAX);
                    owner.apply_delta(partition, next, (&delta.ops, written_at_ms))?;
                    status.counters.apply_seconds.record(started.elapsed());
                    status.counters.applied(delta.ops.len());
                    applied = next;
                    status.applied(partition, applied);
                }
                None => {
                    complete = false;
                    break;
                }
            }
        }
        if !complete {
            return Ok((applied, None));
        }
        // Grow with what this run has found so far: a trickle of single deltas keeps costing
        // one extra GET each, a backlog doubles the window.
        found += window;
        window = found.clamp(1, MAX_FETCH_WINDOW);
    }
}

/// Applies the imports the partitions' catch-ups stopped at, all in one rebuild of the local
/// copy, and moves each partition's state past its import.
pub async fn apply_pending_imports(
    storage: &Storage,
    layout: &StoreLayout,
    owner: &mut Owner,
    status: &StatusBoard,
    states: &mut BTreeMap<u32, PartitionState>,
    imports: &[PendingImport],
) -> Result<()> {
    crate::import::apply_imports(storage, layout, owner, imports).await?;
    for i in imports {
        if let Some(s) = states.get_mut(&i.partition) {
            s.applied = i.sequence;
        }
        status.applied(i.partition, i.sequence);
    }
    Ok(())
}

/// What lies after a partition's applied delta when the next one is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gap {
    /// Nothing newer exists, or the next delta is there: no gap.
    None,
    /// Retention removed the next delta and a committed snapshot beyond `applied` covers it:
    /// rebuilding from the newest snapshots repairs it.
    Retention,
    /// The next delta is missing while delta `later` exists and no snapshot covers the
    /// missing one: a hole that no rebuild can close.
    Hole { later: u64 },
}

/// Whether the partition's next delta is gone while newer data exists (a committed snapshot
/// beyond `applied`, or a later delta). Up to two LISTs; not on the steady path.
pub async fn find_gap(
    storage: &Storage,
    layout: &StoreLayout,
    partition: u32,
    applied: u64,
) -> Result<Gap> {
    if read_delta(storage, layout, partition, applied + 1)
        .await?
        .is_some()
    {
        return Ok(Gap::None);
    }
    let snapshots = list_snapshot_seqs(storage, layout, partition).await?;
    if snapshots.last().is_some_and(|s| *s > applied) {
        return Ok(Gap::Retention);
    }
    let deltas = ikv_core::bucket::list_delta_seqs(storage, layout, partition).await?;
    Ok(match deltas.last() {
        Some(&later) if later > applied + 1 => Gap::Hole { later },
        _ => Gap::None,
    })
}

/// Builds a fresh local copy from the newest snapshots, activates it, and returns the states.
pub async fn rebuild(
    storage: &Storage,
    layout: &StoreLayout,
    owner: &mut Owner,
    status: &StatusBoard,
    partitions: &[u32],
) -> Result<BTreeMap<u32, PartitionState>> {
    crate::counters::bump(&status.counters.rebuilds);
    let snapshots = newest_snapshots(storage, layout, partitions)
        .await
        .map_err(|e| status.counters.note(e))?;
    rebuild_from(storage, layout, owner, status, snapshots).await
}

/// Builds a fresh local copy from the given snapshots (partition → manifest, `None`: empty),
/// activates it, and returns the states.
pub async fn rebuild_from(
    storage: &Storage,
    layout: &StoreLayout,
    owner: &mut Owner,
    status: &StatusBoard,
    snapshots: BTreeMap<u32, Option<ikv_snapshot_format::Manifest>>,
) -> Result<BTreeMap<u32, PartitionState>> {
    let (generation, image) = owner.start_bootstrap()?;
    let started = ikv_core::clock::Stopwatch::start();
    let (states, stats, image) = bootstrap(storage, layout, image, snapshots, |s| {
        tracing::info!(documents = s.documents, values = s.values, "bootstrapping");
    })
    .await
    .map_err(|e| status.counters.note(e))?;
    ikv_core::failpoint!("reader.bootstrap.before_activate");
    owner.finish_bootstrap(generation, image, &states)?;
    for (p, s) in &states {
        status.bootstrapped(*p, s.snapshot);
    }
    tracing::info!(
        documents = stats.documents,
        values = stats.values,
        secs = started.elapsed().as_secs_f64(),
        "bootstrap complete"
    );
    Ok(states)
}

/// Which partitions a round of [`sync_all`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// Caught up.
    pub due: &'a BTreeSet<u32>,
    /// Then checked for gaps (of those in `due`).
    pub check_gaps: &'a BTreeSet<u32>,
}

/// Catches the partitions in `scope.due` up (the others are left as they are: `crate::cadence`
/// decides). For those in `scope.check_gaps`, then tells "nothing newer" from a gap: on
/// a retention gap, rebuilds from snapshots (once) and catches up again, so no data is ever
/// skipped; a hole is reported in the status. Freshness (`caught_up_at`, the time this pass
/// started) is claimed only after that, and never for a partition with a known hole.
pub async fn sync_all(
    storage: &Storage,
    layout: &StoreLayout,
    owner: &mut Owner,
    status: &StatusBoard,
    states: &mut BTreeMap<u32, PartitionState>,
    scope: Scope<'_>,
    clock: &dyn ikv_core::clock::Clock,
) -> std::result::Result<(), SyncFailure> {
    let Scope { due, check_gaps } = scope;
    let partitions: Vec<u32> = states.keys().copied().collect();
    let mut due = due.clone();
    let mut rebuilt = false;
    // Partitions whose catch-up failed this poll: the others go on, and each failed one
    // reports its own error.
    let mut failed: Vec<(u32, Error)> = Vec::new();
    loop {
        let started = clock.now();
        // Imports stop a partition's catch-up; those every partition reached are applied in
        // one rebuild, and catching up goes on after them.
        loop {
            let mut imports = Vec::new();
            for (p, s) in states.iter_mut() {
                if !due.contains(p) || failed.iter().any(|(f, _)| f == p) {
                    continue;
                }
                let before = s.applied;
                match catch_up(storage, layout, owner, status, *p, s.applied, u64::MAX).await {
                    Ok((applied, import)) => {
                        s.applied = applied;
                        imports.extend(import);
                        if applied > before {
                            note_writers_tip(storage, layout, status, *p).await;
                        }
                    }
                    // The local copy failing is every partition's failure.
                    Err(e) if e.kind() == ikv_core::ErrorKind::Local => {
                        return Err(SyncFailure::All(e));
                    }
                    // Logged by the poller (not at all when it is cut short by a shutdown).
                    Err(e) => failed.push((*p, e)),
                }
            }
            if imports.is_empty() {
                break;
            }
            apply_pending_imports(storage, layout, owner, status, states, &imports).await?;
        }
        let mut retention_gap = None;
        {
            for (p, s) in states
                .iter()
                .filter(|(p, _)| due.contains(p) && (rebuilt || check_gaps.contains(p)))
            {
                match find_gap(storage, layout, *p, s.applied).await? {
                    Gap::None => {}
                    Gap::Retention => {
                        tracing::warn!(
                            partition = p,
                            applied = s.applied,
                            "fell behind retention; rebuilding from the newest snapshots"
                        );
                        retention_gap.get_or_insert((*p, s.applied));
                    }
                    Gap::Hole { later } => {
                        tracing::error!(
                            partition = p,
                            missing = s.applied + 1,
                            later,
                            "a delta is missing below a later one; serving the state before it"
                        );
                        status.hole(*p, s.applied + 1, later);
                    }
                }
            }
        }
        match retention_gap {
            // Retention ran again during the rebuild: report it; the next poll retries.
            Some((p, applied)) if rebuilt => return Err(fell_behind(p, applied).into()),
            Some(_) => {
                *states = rebuild(storage, layout, owner, status, &partitions).await?;
                // Every partition starts again from its snapshot: all of them catch up.
                due = partitions.iter().copied().collect();
                rebuilt = true;
                continue;
            }
            None => {}
        }
        for (p, s) in states.iter() {
            if !due.contains(p) || failed.iter().any(|(f, _)| f == p) {
                continue;
            }
            if status.caught_up(*p, s.applied, started) {
                let ms = started
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                owner.set_caught_up(*p, ms);
            }
        }
        if !failed.is_empty() {
            return Err(SyncFailure::Partitions(failed));
        }
        return Ok(());
    }
}

/// Why a poll failed: for every partition (the local copy, a rebuild), or for some.
#[derive(Debug)]
pub enum SyncFailure {
    All(Error),
    Partitions(Vec<(u32, Error)>),
}

impl From<Error> for SyncFailure {
    fn from(e: Error) -> Self {
        SyncFailure::All(e)
    }
}

impl SyncFailure {
    /// Each affected partition with its error's text (`all` when every one is affected).
    pub fn per_partition(&self, all: &[u32]) -> Vec<(u32, String)> {
        match self {
            SyncFailure::All(e) => all.iter().map(|p| (*p, e.to_string())).collect(),
            SyncFailure::Partitions(failed) => {
                failed.iter().map(|(p, e)| (*p, e.to_string())).collect()
            }
        }
    }

    /// One error standing for the failure (the first partition's, when several).
    pub fn into_error(self) -> Error {
        match self {
            SyncFailure::All(e) => e,
            SyncFailure::Partitions(mut failed) => failed.swap_remove(0).1,
        }
    }
}

/// While deltas flow, what the writers' tip hint says exists (one GET), so that `lag_deltas`
/// tells how far behind the reader is, not only what its last fetch found. A missing or
/// unreadable hint changes nothing.
async fn note_writers_tip(storage: &Storage, layout: &StoreLayout, status: &StatusBoard, p: u32) {
    match ikv_core::bucket::tip_hint::read(storage, layout, p).await {
        Ok(Some(hint)) => status.seen_tip(p, hint.seq),
        Ok(None) => {}
        Err(e) => tracing::debug!(partition = p, error = %e, "tip hint not read"),
    }
}

/// An error for a partition whose next delta is gone (used when rebuilding is not allowed).
pub fn fell_behind(partition: u32, applied: u64) -> Error {
    Error::FellBehind {
        partition,
        missing: applied + 1,
    }
}
