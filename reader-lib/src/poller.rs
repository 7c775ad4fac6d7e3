//! The background task of a reader: the owner's polls of the bucket, an attached process's
//! following of the owner's overlay, and the change of role when the owner goes away.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use ikv_core::{Error, Result};
use tokio::sync::watch;

use crate::roles::*;
use crate::sync::{rebuild, sync_all};

/// An attached process's status: the shared copy's state and its owner's freshness.
pub(crate) fn refresh_status(shared: &Shared) {
    let view = shared.view.load();
    for &p in &shared.partitions {
        let ms = view.overlay.caught_up_ms(p);
        let at = (ms > 0).then(|| UNIX_EPOCH + Duration::from_millis(ms));
        shared
            .status
            .attached(p, view.applied[p as usize], view.snapshot[p as usize], at);
    }
}

/// One step of an attached process: index what the owner committed since, or switch to the
/// generation that replaced ours.
pub(crate) fn follow(shared: &Shared, check_current: bool) -> Result<()> {
    if shared.damaged.swap(false, Ordering::SeqCst) {
        shared.mount.report_damage();
    }
    let view = shared.view.load_full();
    if (check_current || view.overlay.superseded_by().is_some())
        && let Some(current) = shared.mount.read_current()?
        && current.generation != view.generation
    {
        // Generations only grow while one owner after another holds the mount: one that goes
        // back was written by a process that should not own it. Never follow it back.
        if current.generation < view.generation {
            return Err(Error::Local {
                path: shared.mount.path().display().to_string(),
                message: format!(
                    "the mount's published generation went back from {} to {} (owner pid {}): a process that does not hold the mount's lock wrote it; serving the data as it was",
                    view.generation, current.generation, current.owner_pid
                ),
            });
        }
        if current.identity.config != shared.config
            || current.identity.partitions != shared.partitions
        {
            return Err(Error::Local {
                path: shared.mount.path().display().to_string(),
                message: "the mount's owner now serves another store configuration or other partitions; serving the data as it was".into(),
            });
        }
        if let Some(next) = attach_view(&shared.mount, &current, &shared.damaged)? {
            drop(view);
            shared.view.publish(next);
            refresh_status(shared);
        }
        return Ok(());
    }
    if let Some(next) = view.advanced()? {
        drop(view);
        shared.view.publish(next);
    }
    refresh_status(shared);
    Ok(())
}

/// What the push path (`crate::push`) tells a poll.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Push {
    /// A wake arrived: check the signal now.
    pub(crate) woken: bool,
    /// The wake queue answers: a quiet host may check the signal rarely.
    pub(crate) healthy: bool,
}

/// One poll of the owner; returns how long to wait before the next.
pub(crate) async fn poll_once(
    shared: &Shared,
    owned: &mut Owned,
    failures: &mut u32,
    last_gap_check: &mut Duration,
    stop: &watch::Receiver<bool>,
    push: Push,
) -> Duration {
    let options = &shared.options;
    let clock = options.clock.clone();
    if owned.owner.take_damage() {
        tracing::warn!("a read found the shared copy damaged; rebuilding it");
        // The durable copy has its own checksums: a new image from it first, the bucket if
        // that fails too.
        let repaired = match owned.owner.fold() {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "the durable copy cannot rebuild the image; bootstrapping from the bucket");
                rebuild(
                    &owned.storage,
                    &owned.layout,
                    &mut owned.owner,
                    &shared.status,
                    &shared.partitions,
                )
                .await
                .map(|rebuilt| owned.states = rebuilt)
            }
        };
        if let Err(e) = repaired {
            tracing::warn!(error = %e, "rebuilding the damaged local copy failed; retrying");
            for p in &shared.partitions {
                shared.status.failed(
                    *p,
                    &format!("the local copy is damaged and rebuilding it failed: {e}"),
                );
            }
            shared.damaged.store(true, Ordering::SeqCst);
        }
    }
    // A fold that finished while no delta came is published now, not at the next delta.
    if let Err(e) = owned.owner.publish_finished_fold() {
        tracing::warn!(error = %e, "a background fold failed");
    }
    let now = clock.elapsed();
    let plan = owned
        .cadence
        .plan(
            &owned.storage,
            &owned.layout,
            now,
            clock.now(),
            *failures > 0,
            push.woken,
        )
        .await;
    let Owned {
        owner,
        storage,
        layout,
        states,
        cadence,
        ..
    } = owned;
    let gaps_due = now.saturating_sub(*last_gap_check) >= options.gap_check_interval;
    let check_gaps = gaps_due || *failures > 0 || plan.stalled;
    let gap_checked = if *failures > 0 || plan.stalled {
        plan.due.clone()
    } else if gaps_due {
        plan.active.clone()
    } else {
        BTreeSet::new()
    };
    let before: Vec<(u32, u64)> = states.iter().map(|(p, s)| (*p, s.applied)).collect();
    let started = clock.elapsed();
    let synced = sync_all(
        storage,
        layout,
        owner,
        &shared.status,
        states,
        crate::sync::Scope {
            due: &plan.due,
            check_gaps: &gap_checked,
        },
        clock.as_ref(),
    )
    .await;
    if !*stop.borrow() {
        shared
            .status
            .counters
            .polled(synced.is_ok(), clock.elapsed().saturating_sub(started));
    }
    let advanced: BTreeSet<u32> = before
        .iter()
        .filter(|(p, applied)| states.get(p).is_some_and(|s| s.applied != *applied))
        .map(|(p, _)| *p)
        .collect();
    let failed: BTreeSet<u32> = match &synced {
        Ok(()) => BTreeSet::new(),
        Err(crate::sync::SyncFailure::Partitions(failed)) => {
            failed.iter().map(|(p, _)| *p).collect()
        }
        Err(crate::sync::SyncFailure::All(_)) => plan.due.clone(),
    };
    let polled_ok: BTreeSet<u32> = plan.due.difference(&failed).copied().collect();
    let (caught_up, as_of, wait) =
        cadence.after(&plan, &polled_ok, &advanced, clock.elapsed(), push.healthy);
    shared
        .status
        .counters
        .quiet_partitions
        .store(cadence.quiet() as u64, Ordering::Relaxed);
    if let Some(at) = as_of {
        // The signal, read before anything was committed that this owner has not applied,
        // is unchanged: its quiet partitions are as fresh as that read.
        let ms = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        for p in caught_up {
            if let Some(s) = states.get(&p)
                && shared.status.caught_up(p, s.applied, at)
            {
                owner.set_caught_up(p, ms);
            }
        }
    }
    match synced {
        Ok(()) => {
            if check_gaps {
                *last_gap_check = clock.elapsed();
            }
            *failures = 0;
            owned.local_failures = 0;
            wait
        }
        // Cut short by shutdown: not a failure.
        Err(_) if *stop.borrow() => Duration::ZERO,
        Err(failure) => {
            *failures += 1;
            owned.local_failures = match &failure {
                crate::sync::SyncFailure::All(e) if e.kind() == ikv_core::ErrorKind::Local => {
                    owned.local_failures + 1
                }
                _ => 0,
            };
            for (p, e) in failure.per_partition(&shared.partitions) {
                tracing::warn!(partition = p, error = %e, failures, "poll failed; serving local data and retrying");
                shared.status.failed(p, &e);
            }
            options
                .poll_interval
                .max(Duration::from_millis(100))
                .saturating_mul(1 << (*failures).min(6))
                .min(Duration::from_secs(30))
        }
    }
}

pub(crate) async fn run(shared: Arc<Shared>, mut role: Role, mut stop: watch::Receiver<bool>) {
    let clock = shared.options.clock.clone();
    let mut push: Option<(Arc<crate::push::PushState>, tokio::task::JoinHandle<()>)> = None;
    let mut woken = false;
    let mut failures: u32 = 0;
    let mut last_gap_check = clock.elapsed();
    let mut ticks: u64 = 0;
    let follow_tick = shared
        .options
        .poll_interval
        .clamp(Duration::from_millis(1), ATTACH_TICK);
    loop {
        if *stop.borrow() {
            break;
        }
        let wait = match &mut role {
            Role::Owner(owned) => {
                ticks += 1;
                if ticks.is_multiple_of(50) && !shared.mount.in_place() {
                    let e = format!(
                        "the mount directory {} was removed or replaced while this process owned it: it serves what it has and cannot publish more; restart this host's readers",
                        shared.mount.path().display()
                    );
                    tracing::error!("{e}");
                    for p in &shared.partitions {
                        shared.status.failed(*p, &e);
                    }
                }
                if push.is_none()
                    && shared.pinned.is_none()
                    && let Some(topic) = &shared.options.wake_topic
                {
                    push = Some(crate::push::start(
                        topic.clone(),
                        shared.options.storage_options.clone(),
                        clock.clone(),
                        shared.clone(),
                        stop.clone(),
                    ));
                }
                let pushed = Push {
                    woken: std::mem::take(&mut woken),
                    healthy: push
                        .as_ref()
                        .is_some_and(|(p, _)| p.healthy.load(Ordering::SeqCst)),
                };
                let wait = match &shared.pinned {
                    Some(pinned) => keep_pinned(&shared, owned, pinned).await,
                    None => {
                        poll_once(
                            &shared,
                            owned,
                            &mut failures,
                            &mut last_gap_check,
                            &stop,
                            pushed,
                        )
                        .await
                    }
                };
                if owned.local_failures >= REOPEN_AFTER_LOCAL_FAILURES {
                    // The durable copy keeps failing (a full disk poisons it: every later
                    // write fails too). Give the mount up and take it again: the copy is
                    // reopened from disk, and once there is room, polling goes on.
                    tracing::warn!(
                        failures = owned.local_failures,
                        "the local copy keeps failing; reopening it"
                    );
                    if let Role::Owner(owned) = std::mem::replace(&mut role, Role::Attached) {
                        shared.owns.store(false, Ordering::SeqCst);
                        if let Err(e) = owned.owner.release() {
                            tracing::warn!(error = %e, "persisting the failing local copy failed");
                        }
                    }
                }
                wait
            }
            Role::Attached => {
                ticks += 1;
                // `current` is read about once a second; an overlay's superseded mark tells
                // of a new generation at once.
                if let Err(e) = follow(&shared, ticks.is_multiple_of(50)) {
                    for p in &shared.partitions {
                        shared.status.failed(*p, &e.to_string());
                    }
                }
                if ticks.is_multiple_of(50) && shared.pinned.is_none() {
                    check_owner_freshness(&shared);
                }
                match shared.mount.try_own() {
                    Ok(true) => match take_over(&shared).await {
                        Ok(owned) => {
                            tracing::info!("the mount's owner went away; this process owns it now");
                            shared.owns.store(true, Ordering::SeqCst);
                            last_gap_check = clock.elapsed();
                            role = Role::Owner(Box::new(owned));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "taking the mount over failed; serving the shared copy as it is");
                            for p in &shared.partitions {
                                shared.status.failed(*p, &e.to_string());
                            }
                            shared.mount.disown();
                        }
                    },
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot check the mount's owner lock"),
                }
                follow_tick
            }
        };
        let wake = async {
            match &push {
                Some((state, _)) => state.woken.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = clock.sleep(wait) => {}
            _ = wake => woken = true,
            _ = stop.changed() => break,
        }
    }
    if let Some((_, task)) = push {
        // Its queue is removed before the runtime goes (the task saw `stop` too).
        let _ = task.await;
    }
    if let Role::Owner(owned) = role {
        shared.owns.store(false, Ordering::SeqCst);
        if let Err(e) = owned.owner.release() {
            tracing::warn!(error = %e, "persisting the local copy at shutdown failed");
        }
    }
}

/// How often a pinned copy's owner looks for damage a read reported (it never polls).
const PINNED_TICK: Duration = Duration::from_millis(200);

/// A pinned copy's owner between opens: no requests at all, only a repair when a read found
/// the shared copy damaged (a new image from the durable copy; failing that, the pinned state
/// again from the bucket).
async fn keep_pinned(shared: &Shared, owned: &mut Owned, pinned: &crate::pin::Pinned) -> Duration {
    if owned.owner.take_damage() {
        tracing::warn!("a read found the pinned copy damaged; rebuilding it");
        let repaired = match owned.owner.fold() {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "the durable copy cannot rebuild the image; reading the pinned state from the bucket again");
                rebuild_pinned(shared, owned, pinned).await
            }
        };
        if let Err(e) = repaired {
            tracing::warn!(error = %e, "rebuilding the damaged pinned copy failed; retrying");
            for p in &shared.partitions {
                shared.status.failed(
                    *p,
                    &format!("the local copy is damaged and rebuilding it failed: {e}"),
                );
            }
            shared.damaged.store(true, Ordering::SeqCst);
        }
    }
    PINNED_TICK
}

async fn rebuild_pinned(
    shared: &Shared,
    owned: &mut Owned,
    pinned: &crate::pin::Pinned,
) -> Result<()> {
    let snapshots = pinned.snapshots(&owned.storage, &owned.layout).await?;
    owned.states = crate::sync::rebuild_from(
        &owned.storage,
        &owned.layout,
        &mut owned.owner,
        &shared.status,
        snapshots,
    )
    .await?;
    pinned
        .catch_up(
            &owned.storage,
            &owned.layout,
            &mut owned.owner,
            &shared.status,
            &mut owned.states,
            shared.options.clock.as_ref(),
        )
        .await
}

/// Prefix of the `last_error` an attached process sets when its owner stops catching up.
const OWNER_STALE: &str = "the mount's owner";

/// An attached process's check that its owner still polls: the owner marks each partition
/// caught up in the overlay at every poll that finds nothing newer, so a mark older than
/// `max(1 s, 50 poll intervals)` means the owner stopped (SIGSTOP, a debugger, a frozen
/// container), keeps failing, or is far behind; `last_error` says so, and clears when the
/// mark moves again.
fn check_owner_freshness(shared: &Shared) {
    let view = shared.view.load();
    let limit = shared
        .options
        .poll_interval
        .saturating_mul(50)
        .max(Duration::from_secs(1));
    let now_ms = shared
        .options
        .clock
        .now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let owner = shared
        .mount
        .read_current()
        .ok()
        .flatten()
        .map_or_else(|| "?".to_owned(), |c| c.owner_pid.to_string());
    for &p in &shared.partitions {
        let marked = view.overlay.caught_up_ms(p);
        let behind = Duration::from_millis(now_ms.saturating_sub(marked));
        let stale = (marked > 0 && behind > limit).then(|| {
            format!(
                "{OWNER_STALE} (pid {owner}) has not found partition {p} caught up for {} s: it may be stopped (SIGSTOP, a debugger, a frozen container: `kill -CONT {owner}`, or kill it and a reader here takes over), failing (its log says why), or far behind",
                behind.as_secs()
            )
        });
        shared
            .status
            .owner_freshness(p, stale.as_deref(), OWNER_STALE);
    }
}
