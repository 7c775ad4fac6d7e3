//! Which partitions the owner polls at each tick, and how long it waits before the next
//! (rfcs/0009): the request bill of a host follows the writes, not its partitions.
//!
//! - A partition that changed within [`QUIET_AFTER`] is *active*: polled every
//!   `poll_interval` (one GET when nothing is new), as before.
//! - A partition that has not changed for that long is *quiet*: the owner leaves it to the
//!   store's wake signal (`ikv_core::bucket::wake`), checked with one conditional GET every
//!   `idle_poll_interval` whatever the number of partitions, and polls it directly only
//!   every [`slow_poll`] (a safety net: a writer whose signal PUT failed, or an older writer
//!   that writes none). When the signal changes, every quiet partition is polled at once.
//! - A partition turns quiet only at a tick that checked the signal *before* polling it, so
//!   the version this owner holds predates every commit it has not seen: the first of those
//!   commits finds its predecessor `QUIET_AFTER` old and replaces the signal (the wake
//!   module's protocol), and the next check sees a new version.
//! - After an unchanged check, the quiet partitions are caught up as of that check: nothing
//!   was committed to them before it that this owner has not applied.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use ikv_core::bucket::wake::{QUIET_AFTER, WakeCheck, WakeWatch};
use ikv_core::{Storage, StoreLayout};

/// How often a quiet partition is polled directly: every 10 minutes, or 15 s per partition
/// of the host when that is longer (so that the safety net costs a host at most one request
/// per 15 s, whatever its partitions).
pub(crate) fn slow_poll(partitions: usize) -> Duration {
    Duration::from_secs(600).max(Duration::from_secs(15).saturating_mul(partitions as u32))
}

/// A tick that comes this much later than planned means the process was stopped (SIGSTOP, a
/// suspended machine): retention may have removed deltas meanwhile, so every partition is
/// polled and checked for gaps.
const STALL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Track {
    /// When the partition last advanced (the clock's `elapsed()`), or when polling it began.
    changed: Duration,
    /// When it was last polled.
    polled: Duration,
    quiet: bool,
}

/// What one tick polls.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Partitions to poll now.
    pub(crate) due: BTreeSet<u32>,
    /// Every partition, checked for gaps (a stall was noticed).
    pub(crate) stalled: bool,
    /// The partitions polled as active ones (quiet ones are not checked for gaps: nothing
    /// was committed to them that could have left one, unless the process stalled).
    pub(crate) active: BTreeSet<u32>,
    /// When the signal was checked this tick and found unchanged: the quiet partitions not
    /// polled are caught up as of then.
    unchanged_at: Option<SystemTime>,
    /// Whether the signal was checked (whatever it said) before the polls.
    checked: bool,
}

/// The owner's schedule.
pub(crate) struct Cadence {
    tracks: BTreeMap<u32, Track>,
    watch: WakeWatch,
    last_check: Option<Duration>,
    /// When the next tick was planned for.
    next_tick: Option<Duration>,
    poll_interval: Duration,
    idle_poll_interval: Duration,
    slow_poll: Duration,
}

impl Cadence {
    /// Every partition active as of `now` (the clock's `elapsed()`).
    pub(crate) fn new(
        partitions: impl IntoIterator<Item = u32>,
        now: Duration,
        poll_interval: Duration,
        idle_poll_interval: Duration,
    ) -> Cadence {
        let tracks: BTreeMap<u32, Track> = partitions
            .into_iter()
            .map(|p| {
                (
                    p,
                    Track {
                        changed: now,
                        polled: now,
                        quiet: false,
                    },
                )
            })
            .collect();
        Cadence {
            slow_poll: slow_poll(tracks.len()),
            tracks,
            watch: WakeWatch::new(),
            last_check: None,
            next_tick: None,
            poll_interval,
            idle_poll_interval: idle_poll_interval.max(poll_interval),
        }
    }

    /// Quiet partitions, counted (for metrics and status).
    pub(crate) fn quiet(&self) -> usize {
        self.tracks.values().filter(|t| t.quiet).count()
    }

    /// Decides this tick's polls, checking the signal first when some partition is quiet or
    /// about to turn quiet. `all` polls every partition whatever (after failures, a gap check).
    pub(crate) async fn plan(
        &mut self,
        storage: &Storage,
        layout: &StoreLayout,
        now: Duration,
        wall: SystemTime,
        all: bool,
        pushed: bool,
    ) -> Plan {
        let stalled = self
            .next_tick
            .is_some_and(|planned| now > planned.saturating_add(STALL));
        let turning = self
            .tracks
            .values()
            .any(|t| !t.quiet && now.saturating_sub(t.changed) >= QUIET_AFTER);
        let any_quiet = self.tracks.values().any(|t| t.quiet);
        // (`idle_poll_interval` as the period: a pushed host's ticks come every 30 s anyway.)
        let check_due = self.last_check.is_none()
            || pushed
            || turning
            || (any_quiet
                && self
                    .last_check
                    .is_none_or(|c| now.saturating_sub(c) >= self.idle_poll_interval));
        let mut woken = false;
        let mut unchanged_at = None;
        let mut checked = false;
        if check_due {
            match self.watch.check(storage, layout).await {
                Ok(WakeCheck::Unchanged) => unchanged_at = Some(wall),
                Ok(WakeCheck::First) => {}
                Ok(WakeCheck::Woken(wake)) => {
                    tracing::debug!(
                        ?wake,
                        "the store's wake signal changed; polling the quiet partitions"
                    );
                    woken = true;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "the wake signal could not be read; polling the quiet partitions");
                    woken = true;
                }
            }
            checked = true;
            self.last_check = Some(now);
        }
        let due = self
            .tracks
            .iter()
            .filter(|(_, t)| {
                all || stalled
                    || woken
                    || !t.quiet
                    || now.saturating_sub(t.polled) >= self.slow_poll
            })
            .map(|(p, _)| *p)
            .collect();
        let active = self
            .tracks
            .iter()
            .filter(|(_, t)| !t.quiet)
            .map(|(p, _)| *p)
            .collect();
        Plan {
            due,
            active,
            stalled,
            unchanged_at,
            checked,
        }
    }

    /// Records what a tick's polls found (`advanced`: partitions that applied something) and
    /// returns the quiet partitions not polled that an unchanged signal shows caught up, with
    /// the time they are caught up as of; then how long to wait before the next tick.
    pub(crate) fn after(
        &mut self,
        plan: &Plan,
        polled_ok: &BTreeSet<u32>,
        advanced: &BTreeSet<u32>,
        now: Duration,
        pushed: bool,
    ) -> (Vec<u32>, Option<SystemTime>, Duration) {
        for (p, t) in self.tracks.iter_mut() {
            if advanced.contains(p) {
                t.changed = now;
                t.quiet = false;
            }
            if polled_ok.contains(p) {
                t.polled = now;
                // Quiet from here on only when the signal was read before this poll.
                if plan.checked
                    && !advanced.contains(p)
                    && now.saturating_sub(t.changed) >= QUIET_AFTER
                {
                    t.quiet = true;
                }
            }
        }
        let caught_up: Vec<u32> = match plan.unchanged_at {
            Some(_) => self
                .tracks
                .iter()
                .filter(|(p, t)| t.quiet && !plan.due.contains(p))
                .map(|(p, _)| *p)
                .collect(),
            None => Vec::new(),
        };
        let wait = if self.tracks.values().any(|t| !t.quiet) {
            self.poll_interval
        } else if pushed {
            // The wake queue answers: it brings the next wake; checks are a safety net.
            self.idle_poll_interval
                .max(crate::push::PUSHED_CHECK_INTERVAL)
        } else {
            self.idle_poll_interval
        };
        self.next_tick = Some(now.saturating_add(wait));
        (caught_up, plan.unchanged_at, wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_safety_poll_costs_a_host_at_most_one_request_per_15_s() {
        assert_eq!(slow_poll(1), Duration::from_secs(600));
        assert_eq!(slow_poll(16), Duration::from_secs(600));
        assert_eq!(slow_poll(64), Duration::from_secs(960));
        for p in [1usize, 16, 40, 64, 256, 1024] {
            assert!(slow_poll(p).as_secs_f64() / p as f64 >= 15.0, "{p}");
        }
    }
}
