//! Finding where a partition's log ends, in a bounded number of storage round trips however
//! far behind the caller's knowledge is, and refusing to extend a log that has a hole.
//!
//! The log is dense above its newest snapshot: delta `n` exists for every `n` from the
//! snapshot's sequence (or 1) up to the tip, and retention only deletes deltas a committed
//! snapshot covers. So the search is:
//!
//! 1. At once: LIST the snapshots (the base is at least the newest one), LIST the first page
//!    (1,000 keys) after the base, and HEAD `base + 1000 × 2^i` for `i` in 0..=10. A page
//!    that is not full holds the whole rest of the log: its dense run ends at the tip. That
//!    is the usual case, one round trip.
//! 2. A full page means the caller is far behind: the first missing probe brackets the tip;
//!    31 HEADs inside the bracket, sent at once, divide it by 32 per round until it fits a
//!    page, and a LIST of that page gives the tip.
//!
//! Any delta past a missing one in a LIST is a hole: nothing may be written after it. A LIST
//! is one consistent view, but a store may acknowledge a competitor's write while another is
//! still in flight, so an apparent hole is looked at again a few times before it is called
//! corruption. A writer 10,000 deltas behind needs three round trips before its PUT. A stray
//! object that lands exactly on a probe point can hide a hole below it from the search;
//! readers report such a hole (`status().gap`) in any case.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};

use crate::bucket::Storage;
use crate::bucket::exists;
use crate::bucket::list_snapshot_seqs;
use crate::error::{Error, Result};
use crate::layout::{StoreLayout, parse_delta_seq};

/// Keys in one S3 LIST page.
const LIST_PAGE: u64 = 1000;
/// Probes ahead per round: `base + 1000 × 2^0 ..= base + 1000 × 2^10`.
const GALLOP: u32 = 11;
/// Bisection probes per round.
const SPLIT: u64 = 31;

fn hole(partition: u32, missing: u64, present: u64) -> Error {
    tracing::error!(
        partition,
        missing,
        found = present,
        "a delta exists past a missing one; refusing to extend the log"
    );
    Error::Corrupt {
        what: format!("log of partition {partition}"),
        reason: format!(
            "delta {missing} is missing while delta {present} exists: the log has a hole, and nothing is written after it"
        ),
    }
}

/// Whether each of `seqs` exists, probed concurrently.
async fn probe(
    storage: &Storage,
    layout: &StoreLayout,
    partition: u32,
    seqs: &[u64],
) -> Result<Vec<bool>> {
    futures::future::try_join_all(
        seqs.iter()
            .map(|s| async move { exists(storage, &layout.delta(partition, *s)).await }),
    )
    .await
}

/// How recently the caller confirmed the number it knows, which decides what the search
/// sends in its first round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Knowledge {
    /// Just now (it lost a race for the next number): the tip is near; one page LIST.
    Fresh,
    /// A while ago (an idle writer): the tip may be far; probes ahead go with the page LIST.
    Recent,
    /// Long ago or never: retention may have removed what follows, so the snapshots are
    /// listed too.
    Old,
}

/// The last committed sequence number of `partition` (0 for an empty log), given `known`, a
/// number the caller knows to be committed (or 0), confirmed as `knowledge` says. Errors
/// with `Corrupt` when a delta exists past a missing one.
pub async fn find_tip(
    storage: &Storage,
    layout: &StoreLayout,
    partition: u32,
    known: u64,
    knowledge: Knowledge,
) -> Result<u64> {
    let snapshots = async {
        if knowledge == Knowledge::Old {
            list_snapshot_seqs(storage, layout, partition).await
        } else {
            Ok(Vec::new())
        }
    };
    // Beside the first page, probes a page and more ahead (known + 1000 × 2^i), in case the
    // page is full: they bracket a far tip in the same round trip.
    // (Saturating: near `u64::MAX` the probes stop at it; sequence arithmetic never wraps.)
    let ahead = |from: u64| -> Vec<u64> {
        (0..GALLOP)
            .map(|i| from.saturating_add(LIST_PAGE << i))
            .collect()
    };
    let first_probes = ahead(known);
    let probes = async {
        if knowledge == Knowledge::Fresh {
            Ok(Vec::new())
        } else {
            probe(storage, layout, partition, &first_probes).await
        }
    };
    let (snapshots, near, mut found) = futures::try_join!(
        snapshots,
        list_after(storage, layout, partition, known),
        probes,
    )?;
    let base = known.max(snapshots.last().copied().unwrap_or(0));
    let (near, mut points) = if base > known {
        // Deltas at or below the snapshot may be gone: look after it instead.
        let points = ahead(base);
        let (near, again) = futures::try_join!(
            list_after(storage, layout, partition, base),
            probe(storage, layout, partition, &points),
        )?;
        found = again;
        (near, points)
    } else {
        (near, first_probes)
    };
    let page_end = match dense_run(base, &near) {
        Run::End(tip) => return Ok(tip),
        Run::Hole(..) => return settle(storage, layout, partition, base).await,
        Run::FullPage(end) => end,
    };
    if found.is_empty() {
        found = probe(storage, layout, partition, &points).await?;
    }
    // Far behind: the probes bracket the tip (lo exists, hi does not); bisect to one page.
    let (mut lo, mut hi) = loop {
        match found.iter().position(|e| !e) {
            Some(0) => break (page_end, points[0].max(page_end.saturating_add(1))),
            Some(k) => break (points[k - 1].max(page_end), points[k]),
            // Every probe up to the last number there is exists: the tip is at or near it.
            None if points.last() == Some(&u64::MAX) => break (page_end, u64::MAX),
            None => {
                // More than a million behind: keep probing from the last probe.
                points = ahead(points[points.len() - 1]);
                found = probe(storage, layout, partition, &points).await?;
            }
        }
    };
    while hi.saturating_sub(lo) > LIST_PAGE {
        let step = (hi - lo).div_ceil(SPLIT + 1);
        let points: Vec<u64> = (1..=SPLIT)
            .map(|i| lo.saturating_add(i * step))
            .filter(|p| *p < hi)
            .collect();
        let found = probe(storage, layout, partition, &points).await?;
        match found.iter().position(|e| !e) {
            Some(i) => {
                hi = points[i];
                if i > 0 {
                    lo = points[i - 1];
                }
            }
            None => lo = *points.last().unwrap_or(&lo),
        }
    }
    settle(storage, layout, partition, lo).await
}

/// What one LIST after `from` says about the log.
enum Run {
    /// The dense run ends at this tip and nothing follows it.
    End(u64),
    /// A full page of dense deltas ending here: there may be more.
    FullPage(u64),
    /// Delta `.0` is missing while `.1` exists.
    Hole(u64, u64),
}

fn dense_run(from: u64, after: &[u64]) -> Run {
    let mut tip = from;
    for seq in after {
        if Some(*seq) != tip.checked_add(1) {
            return Run::Hole(tip.saturating_add(1), *seq);
        }
        tip = *seq;
    }
    if after.len() as u64 >= LIST_PAGE {
        Run::FullPage(tip)
    } else {
        Run::End(tip)
    }
}

/// Sequence numbers after `from`, ascending: the first page's worth where the store lists
/// in key order from an offset (one request); where it does not (a local directory, an S3
/// Express directory bucket), the whole directory, in whatever order it comes, sorted here.
async fn list_after(
    storage: &Storage,
    layout: &StoreLayout,
    partition: u32,
    from: u64,
) -> Result<Vec<u64>> {
    let dir = layout.deltas_dir(partition);
    let metas: Vec<_> = if storage.lists_in_key_order() {
        let offset = layout.delta(partition, from);
        storage
            .store
            .list_with_offset(Some(&dir), &offset)
            .take(LIST_PAGE as usize)
            .try_collect()
            .await
            .map_err(|e| Error::storage(format!("listing {dir}"), e))?
    } else {
        storage
            .store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| Error::storage(format!("listing {dir}"), e))?
    };
    let mut seqs: Vec<u64> = metas
        .iter()
        .filter_map(|m| parse_delta_seq(&m.location))
        .filter(|s| *s > from)
        .collect();
    seqs.sort_unstable();
    if !storage.lists_in_key_order() {
        seqs.truncate(LIST_PAGE as usize);
    }
    Ok(seqs)
}

/// The tip from one page after `lo`, looking again at an apparent hole before calling it one.
async fn settle(storage: &Storage, layout: &StoreLayout, partition: u32, lo: u64) -> Result<u64> {
    let mut waits = HOLE_RECHECKS.iter();
    let mut from = lo;
    loop {
        let after = list_after(storage, layout, partition, from).await?;
        match dense_run(from, &after) {
            Run::End(tip) => return Ok(tip),
            // The log grew by a page meanwhile: go on from there.
            Run::FullPage(end) => from = end,
            Run::Hole(missing, present) => match waits.next() {
                Some(wait) => storage.clock().sleep(*wait).await,
                None => return Err(hole(partition, missing, present)),
            },
        }
    }
}

/// Pauses before looking at an apparent hole again.
const HOLE_RECHECKS: [Duration; 3] = [
    Duration::from_millis(50),
    Duration::from_millis(200),
    Duration::from_millis(1000),
];

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::{ObjectStoreExt, PutPayload};

    async fn log_with(seqs: impl IntoIterator<Item = u64>) -> (Storage, StoreLayout) {
        let storage = Storage::memory();
        let layout = StoreLayout::new(&storage.prefix, "s").unwrap();
        for s in seqs {
            storage
                .store
                .put(&layout.delta(0, s), PutPayload::from_static(b"x"))
                .await
                .unwrap();
        }
        (storage, layout)
    }

    #[tokio::test]
    async fn finds_the_tip_from_anywhere_below_it() {
        for tip in [0u64, 1, 2, 3, 31, 32, 999, 1000, 1001, 4097, 10_000] {
            let (storage, layout) = log_with(1..=tip).await;
            for (known, knowledge) in [
                (0, Knowledge::Old),
                (tip / 3, Knowledge::Recent),
                (tip.saturating_sub(1), Knowledge::Fresh),
                (tip / 2, Knowledge::Fresh),
                (tip, Knowledge::Old),
            ] {
                assert_eq!(
                    find_tip(&storage, &layout, 0, known, knowledge)
                        .await
                        .unwrap(),
                    tip,
                    "tip {tip}, known {known} ({knowledge:?})"
                );
            }
        }
    }

    /// Near the last sequence number there is, the search neither wraps nor panics.
    #[tokio::test]
    async fn the_search_never_wraps_near_the_last_number() {
        let top = [u64::MAX - 2, u64::MAX - 1, u64::MAX];
        let (storage, layout) = log_with(top).await;
        for knowledge in [Knowledge::Fresh, Knowledge::Recent, Knowledge::Old] {
            assert_eq!(
                find_tip(&storage, &layout, 0, u64::MAX - 3, knowledge)
                    .await
                    .unwrap(),
                u64::MAX,
                "{knowledge:?}"
            );
            assert_eq!(
                find_tip(&storage, &layout, 0, u64::MAX, knowledge)
                    .await
                    .unwrap(),
                u64::MAX,
                "{knowledge:?}"
            );
        }
        // Far below them, they are past a hole.
        let err = find_tip(&storage, &layout, 0, 0, Knowledge::Old)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corrupt, "{err}");
    }

    #[tokio::test]
    async fn a_delta_past_a_missing_one_is_refused() {
        let (storage, layout) = log_with((1..=40).chain([1000])).await;
        let err = find_tip(&storage, &layout, 0, 0, Knowledge::Old)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corrupt);
        assert!(
            err.to_string()
                .contains("delta 41 is missing while delta 1000 exists"),
            "{err}"
        );
        // Also when the hole is right after what the caller knows.
        let (storage, layout) = log_with([1, 2, 3, 5]).await;
        let err = find_tip(&storage, &layout, 0, 3, Knowledge::Fresh)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("delta 4 is missing"), "{err}");
    }
}
