//! Time as a dependency: the reader's polling, backoff, gap checks and freshness stamps, the
//! writer's tip age, idleness and backoff, and the bucket protocol's waits go through a
//! [`Clock`], so that tests can drive them step by step ([`ManualClock`]) instead of waiting
//! on wall time. (The compactor takes `now` as an argument for the same reason.)
//!
//! This is the one module that reads the system's clocks (`clippy.toml` refuses
//! `SystemTime::now`, `Instant::now`, `tokio::time::sleep` and unseeded randomness anywhere
//! else): behaviour takes a [`Clock`]; what is only shown to people (a progress line, a
//! duration in a log, a creation stamp) uses [`Stopwatch`] and [`wall_time`].
#![allow(clippy::disallowed_methods)]

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;

/// A source of time.
pub trait Clock: Send + Sync + Debug + 'static {
    /// Wall-clock time, for what is shown to people (`caught_up_at`).
    fn now(&self) -> SystemTime;
    /// Monotonic time since the clock was made, for intervals.
    fn elapsed(&self) -> Duration;
    /// Completes after `duration` of this clock's time.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
    /// Wall time in ms since the Unix epoch, where a few milliseconds of coarseness buy a
    /// cheaper read (what reads judge expiries by, once per call).
    fn coarse_epoch_ms(&self) -> i64 {
        system_ms(self.now())
    }
}

/// `time` in ms since the Unix epoch (0 before it).
fn system_ms(time: SystemTime) -> i64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `clock`'s wall time in milliseconds since the Unix epoch (0 before it): what expiries are
/// made of and compared with.
pub fn epoch_ms(clock: &dyn Clock) -> i64 {
    system_ms(clock.now())
}

/// The real clock (tokio's timer for sleeps).
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    started: Instant,
}

impl SystemClock {
    pub fn new() -> SystemClock {
        SystemClock {
            started: Instant::now(),
        }
    }

    /// The real clock, shared.
    pub fn shared() -> Arc<dyn Clock> {
        Arc::new(SystemClock::new())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    /// Linux's coarse real-time clock: the time of the last tick (1 to 4 ms old), read from
    /// memory the kernel shares, without reading the hardware counter.
    #[cfg(target_os = "linux")]
    fn coarse_epoch_ms(&self) -> i64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; the call only writes it.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
        if rc != 0 {
            return system_ms(SystemTime::now());
        }
        ts.tv_sec
            .saturating_mul(1000)
            .saturating_add(ts.tv_nsec / 1_000_000)
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// The wall clock's time, for stamps shown to people (a store's creation time, a snapshot's
/// age in `ikv status`). Behaviour that depends on time takes a [`Clock`] instead.
pub fn wall_time() -> SystemTime {
    SystemTime::now()
}

/// Measures how long something took, for logs and progress lines (never for behaviour).
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch {
    started: Instant,
}

impl Stopwatch {
    pub fn start() -> Stopwatch {
        Stopwatch {
            started: Instant::now(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// A clock that moves only when told to ([`ManualClock::advance`]); it records every sleep
/// asked of it, so a test can assert a schedule (a backoff) by counting, not by timing.
#[derive(Debug)]
pub struct ManualClock {
    start: SystemTime,
    elapsed: tokio::sync::watch::Sender<Duration>,
    sleeps: Mutex<Vec<Duration>>,
}

impl ManualClock {
    pub fn new(start: SystemTime) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            start,
            elapsed: tokio::sync::watch::Sender::new(Duration::ZERO),
            sleeps: Mutex::new(Vec::new()),
        })
    }

    /// Moves time forward, waking the sleeps that are due.
    pub fn advance(&self, by: Duration) {
        self.elapsed.send_modify(|e| *e += by);
    }

    /// Every sleep asked so far, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.sleeps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.start + *self.elapsed.borrow()
    }

    fn elapsed(&self) -> Duration {
        *self.elapsed.borrow()
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        self.sleeps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(duration);
        let deadline = *self.elapsed.borrow() + duration;
        let mut time = self.elapsed.subscribe();
        Box::pin(async move {
            while *time.borrow_and_update() < deadline {
                if time.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarse_clock_is_the_clock_within_its_tick() {
        let clock = SystemClock::new();
        let fine = epoch_ms(&clock);
        let coarse = clock.coarse_epoch_ms();
        assert!((fine - coarse).abs() < 1000, "{fine} vs {coarse}");
        let manual = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_millis(1234));
        assert_eq!(manual.coarse_epoch_ms(), 1234, "a manual clock is exact");
    }

    #[tokio::test]
    async fn a_manual_sleep_ends_only_when_time_is_advanced_past_it() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH);
        let mut sleep = clock.sleep(Duration::from_secs(2));
        assert!(futures::poll!(&mut sleep).is_pending());
        clock.advance(Duration::from_secs(1));
        assert!(futures::poll!(&mut sleep).is_pending());
        clock.advance(Duration::from_secs(1));
        assert!(futures::poll!(&mut sleep).is_ready());
        assert_eq!(clock.sleeps(), vec![Duration::from_secs(2)]);
        assert_eq!(clock.now(), SystemTime::UNIX_EPOCH + Duration::from_secs(2));
    }
}
