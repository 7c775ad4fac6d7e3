//! A latency histogram of fixed buckets, recorded with relaxed atomics (no lock, no
//! allocation): cheap enough for every commit, poll and fold, never used per read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (Prometheus `le`); one more counts everything.
pub const BOUNDS_SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Durations recorded so far, by bucket.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts: `buckets[i]` holds durations in `(BOUNDS[i-1], BOUNDS[i]]`, the
    /// last one those above every bound.
    buckets: [AtomicU64; BOUNDS_SECONDS.len() + 1],
    sum_nanos: AtomicU64,
}

/// What a histogram held at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Cumulative counts for each bound of [`BOUNDS_SECONDS`], as Prometheus reports them.
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let seconds = d.as_secs_f64();
        let i = BOUNDS_SECONDS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(BOUNDS_SECONDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = Vec::with_capacity(BOUNDS_SECONDS.len());
        let mut running = 0u64;
        for bucket in &self.buckets[..BOUNDS_SECONDS.len()] {
            running += bucket.load(Ordering::Relaxed);
            cumulative.push(running);
        }
        let count = running + self.buckets[BOUNDS_SECONDS.len()].load(Ordering::Relaxed);
        HistogramSnapshot {
            cumulative,
            count,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_their_bucket_and_the_sum() {
        let h = Histogram::default();
        h.record(Duration::from_micros(300)); // ≤ 0.5 ms
        h.record(Duration::from_millis(1)); // ≤ 1 ms, on the bound
        h.record(Duration::from_millis(30)); // ≤ 50 ms
        h.record(Duration::from_secs(60)); // above every bound
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.cumulative[0], 1);
        assert_eq!(s.cumulative[1], 2);
        assert_eq!(s.cumulative[5], 2, "≤ 25 ms");
        assert_eq!(s.cumulative[6], 3, "≤ 50 ms");
        assert_eq!(*s.cumulative.last().unwrap(), 3, "60 s is only in +Inf");
        assert!((s.sum_seconds - 60.0313).abs() < 1e-9, "{}", s.sum_seconds);
    }
}
