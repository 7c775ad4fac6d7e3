//! A clock for tests of code that sleeps: time moves only when told to (`advance`) or when
//! the code under test sleeps, and a sleep completes at once by moving time forward by its
//! length. Deterministic: no test waits on the wall clock, and backoffs cost nothing.

use std::sync::Mutex;

use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use ikv_core::clock::Clock;

#[derive(Debug)]
pub struct SteppingClock {
    start: SystemTime,
    elapsed: Mutex<Duration>,
}

impl SteppingClock {
    /// A clock reading the wall clock's time now, started an hour ago (so that tips and
    /// hints from the recent past can be placed on it, as on a long-running writer's).
    pub fn new() -> SteppingClock {
        let started = Duration::from_secs(3600);
        SteppingClock {
            start: SystemTime::now() - started,
            elapsed: Mutex::new(started),
        }
    }

    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        *self.elapsed.lock().unwrap_or_else(|p| p.into_inner()) += by;
    }
}

impl Clock for SteppingClock {
    fn now(&self) -> SystemTime {
        self.start + self.elapsed()
    }

    fn elapsed(&self) -> Duration {
        *self.elapsed.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        self.advance(duration);
        Box::pin(async {})
    }
}

impl Default for SteppingClock {
    fn default() -> Self {
        SteppingClock::new()
    }
}
