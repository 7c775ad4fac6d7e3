//! The time reads judge expiries at: the reader's clock, read at most once per call and only
//! when a value has an expiry (a store without times to live never reads it), or a
//! point-in-time reader's fixed time.

use std::cell::Cell;
use std::sync::Arc;

use ikv_core::clock::Clock;

use crate::doc::FieldRef;

/// Where a reader's time comes from.
#[derive(Debug, Clone)]
pub enum TimeSource {
    /// The live reader's clock.
    Clock(Arc<dyn Clock>),
    /// A pinned reader's point in time (ms since the Unix epoch).
    Fixed(i64),
}

/// One call's time: the source is read on first need, then kept for the call.
pub struct ReadTime<'s> {
    source: &'s TimeSource,
    at: Cell<Option<i64>>,
}

impl<'s> ReadTime<'s> {
    pub fn new(source: &'s TimeSource) -> ReadTime<'s> {
        ReadTime {
            source,
            at: Cell::new(None),
        }
    }

    /// The call's time, ms since the Unix epoch.
    pub fn ms(&self) -> i64 {
        if let Some(at) = self.at.get() {
            return at;
        }
        let at = match self.source {
            TimeSource::Clock(clock) => clock.coarse_epoch_ms(),
            TimeSource::Fixed(at) => *at,
        };
        self.at.set(Some(at));
        at
    }

    /// Whether `field` is served now (it has no expiry, or its expiry is still ahead).
    pub fn serves(&self, field: &FieldRef<'_>) -> bool {
        field.expires_ms.is_none_or(|e| self.ms() < e)
    }

    /// Whether a value expiring at `expires_ms` is served now.
    pub fn serves_expiry(&self, expires_ms: Option<i64>) -> bool {
        expires_ms.is_none_or(|e| self.ms() < e)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use ikv_core::clock::ManualClock;

    use super::*;

    #[test]
    fn the_clock_is_read_once_per_call_and_only_when_needed() {
        let clock = ManualClock::new(UNIX_EPOCH + Duration::from_millis(1000));
        let source = TimeSource::Clock(clock.clone());
        let time = ReadTime::new(&source);
        assert!(time.serves_expiry(None));
        assert_eq!(time.at.get(), None, "no expiry, no clock read");
        assert!(time.serves_expiry(Some(1001)));
        clock.advance(Duration::from_millis(5));
        // Still the call's first reading: one call judges every value at one time.
        assert!(time.serves_expiry(Some(1001)));
        assert!(!time.serves_expiry(Some(1000)));
        assert!(!ReadTime::new(&source).serves_expiry(Some(1001)));
        let fixed = TimeSource::Fixed(50);
        assert!(ReadTime::new(&fixed).serves_expiry(Some(51)));
        assert!(!ReadTime::new(&fixed).serves_expiry(Some(50)));
    }
}
