//! Keeping the local store in step with the bucket: catching a partition up, noticing a gap
//! left by retention, and (re)bootstrapping.

use std::collections::BTreeMap;
use std::time::SystemTime;

use ikv_core::delta::decode_delta;
use ikv_core::store::{list_snapshot_seqs, read_delta};
use ikv_core::{Error, Result, Storage, StoreLayout};

use crate::bootstrap::{bootstrap, newest_snapshots};
use crate::local::{LocalStore, PartitionState};
use crate::status::StatusBoard;

/// Most deltas fetched at once while catching up.
const MAX_FETCH_WINDOW: u64 = 32;

/// Applies every delta after `applied` that exists, in order; returns the new applied
/// sequence. Idle, that is one GET (the one that finds nothing new); while deltas keep
/// coming, the GETs of the next ones go out together, in a window that grows to 32, so a
/// reader far behind is bounded by bandwidth rather than by one round trip per delta. A
/// missing delta ends the run: a delta exists only after every earlier one does.
pub async fn catch_up(
    storage: &Storage,
    layout: &StoreLayout,
    local: &LocalStore,
    status: &StatusBoard,
    partition: u32,
    mut applied: u64,
) -> Result<u64> {
    let mut window = 1;
    let mut found = 0;
    loop {
        let fetches =
            (applied + 1..=applied + window).map(|seq| read_delta(storage, layout, partition, seq));
        let fetched = futures::future::join_all(fetches).await;
        let mut complete = true;
        for bytes in fetched {
            match bytes? {
                Some(bytes) => {
                    let next = applied + 1;
                    let delta = decode_delta(&bytes)?;
                    local.apply_delta(partition, next, &delta.ops)?;
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
            status.caught_up(partition, applied, SystemTime::now());
            return Ok(applied);
        }
        // Grow with what this run has found so far: a trickle of single deltas keeps costing
        // one extra GET each, a backlog doubles the window.
        found += window;
        window = found.clamp(1, MAX_FETCH_WINDOW);
    }
}

/// Whether the partition's next delta was removed by retention while newer data exists (a
/// committed snapshot beyond `applied`, or a later delta). One LIST; not on the steady path.
pub async fn has_gap(
    storage: &Storage,
    layout: &StoreLayout,
    partition: u32,
    applied: u64,
) -> Result<bool> {
    if read_delta(storage, layout, partition, applied + 1)
        .await?
        .is_some()
    {
        return Ok(false);
    }
    let snapshots = list_snapshot_seqs(storage, layout, partition).await?;
    if snapshots.last().is_some_and(|s| *s > applied) {
        return Ok(true);
    }
    let deltas = ikv_core::store::list_delta_seqs(storage, layout, partition).await?;
    Ok(deltas.last().is_some_and(|s| *s > applied + 1))
}

/// Builds a fresh local copy from the newest snapshots, activates it, and returns the states.
pub async fn rebuild(
    storage: &Storage,
    layout: &StoreLayout,
    local: &LocalStore,
    status: &StatusBoard,
    partitions: &[u32],
) -> Result<BTreeMap<u32, PartitionState>> {
    let snapshots = newest_snapshots(storage, layout, partitions).await?;
    let (generation, docs) = local.new_generation()?;
    let started = std::time::Instant::now();
    let (states, stats, memory) = bootstrap(
        storage,
        layout,
        &docs,
        snapshots,
        local.has_memory_index(),
        |s| {
            tracing::info!(documents = s.documents, values = s.values, "bootstrapping");
        },
    )
    .await?;
    ikv_core::failpoint!("reader.bootstrap.before_activate");
    local.activate(generation, docs, memory, &states)?;
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

/// Catches every partition up; on a retention gap, rebuilds from snapshots (once) and catches
/// up again, so no data is ever skipped.
pub async fn sync_all(
    storage: &Storage,
    layout: &StoreLayout,
    local: &LocalStore,
    status: &StatusBoard,
    states: &mut BTreeMap<u32, PartitionState>,
    check_gaps: bool,
) -> Result<()> {
    let partitions: Vec<u32> = states.keys().copied().collect();
    if check_gaps {
        for (p, s) in states.iter() {
            if has_gap(storage, layout, *p, s.applied).await? {
                tracing::warn!(
                    partition = p,
                    applied = s.applied,
                    "fell behind retention; rebuilding from the newest snapshots"
                );
                *states = rebuild(storage, layout, local, status, &partitions).await?;
                break;
            }
        }
    }
    for (p, s) in states.iter_mut() {
        s.applied = catch_up(storage, layout, local, status, *p, s.applied).await?;
    }
    Ok(())
}

/// An error for a partition whose next delta is gone (used when rebuilding is not allowed).
pub fn fell_behind(partition: u32, applied: u64) -> Error {
    Error::FellBehind {
        partition,
        missing: applied + 1,
    }
}
