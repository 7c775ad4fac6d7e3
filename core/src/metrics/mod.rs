//! ikv's metrics: one catalogue of names ([`catalog`]), values gathered on demand from the
//! components that keep them (a [`MetricSet`]), and the formats each ecosystem reads:
//! Prometheus text ([`MetricSet::to_prometheus`]) and CloudWatch's embedded metric format
//! ([`emf`]). Nothing is exported unless a program asks: a reader or writer keeps relaxed
//! atomic counters, and `metrics()` reads them.
//!
//! Names follow Prometheus conventions: an `ikv_` prefix, the unit in the name (`_seconds`,
//! `_bytes`), `_total` on counters; labels are few and bounded (`store`, `partition`,
//! `kind`, `outcome`, `code`). The table in `docs/OPERATIONS.md` says what each means and
//! when to act.

pub mod catalog;
pub mod emf;
mod histogram;
mod prometheus;
mod sharded;

pub use histogram::{BOUNDS_SECONDS, Histogram, HistogramSnapshot};
pub use sharded::ShardedCounter;

use crate::bucket::requests::{Outcome, RequestCounts, RequestKind};

/// What kind of value a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// Only goes up (until the process restarts).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Durations, in [`BOUNDS_SECONDS`] buckets.
    Histogram,
}

/// A metric's name and meaning, declared once in [`catalog`].
#[derive(Debug, PartialEq, Eq)]
pub struct MetricDef {
    pub name: &'static str,
    pub kind: MetricType,
    /// CloudWatch's unit for it (`Count`, `Seconds`, `Bytes`, `None`).
    pub unit: &'static str,
    pub help: &'static str,
}

/// A value of one metric.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Histogram(HistogramSnapshot),
}

/// One metric with its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub def: &'static MetricDef,
    pub labels: Vec<(&'static str, String)>,
    pub value: Value,
}

/// The values of a component's metrics at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricSet {
    pub samples: Vec<Sample>,
}

impl MetricSet {
    pub fn new() -> MetricSet {
        MetricSet::default()
    }

    /// Adds a counter's or a gauge's value.
    pub fn number(&mut self, def: &'static MetricDef, labels: &[(&'static str, &str)], v: f64) {
        self.samples.push(Sample {
            def,
            labels: owned(labels),
            value: Value::Number(v),
        });
    }

    /// Adds a histogram's value.
    pub fn histogram(
        &mut self,
        def: &'static MetricDef,
        labels: &[(&'static str, &str)],
        h: &Histogram,
    ) {
        self.samples.push(Sample {
            def,
            labels: owned(labels),
            value: Value::Histogram(h.snapshot()),
        });
    }

    /// Adds the storage requests a root made, by kind and outcome, and the bytes they moved
    /// by kind (zeros left out).
    pub fn requests(&mut self, counts: &RequestCounts, labels: &[(&'static str, &str)]) {
        for kind in RequestKind::ALL {
            let bytes = counts.bytes(kind);
            if bytes > 0 {
                let mut l = labels.to_vec();
                l.push(("kind", kind.name()));
                self.number(&catalog::STORAGE_BYTES, &l, bytes as f64);
            }
            for outcome in Outcome::ALL {
                let n = counts.get(kind, outcome);
                if n == 0 {
                    continue;
                }
                let mut l = labels.to_vec();
                l.push(("kind", kind.name()));
                l.push(("outcome", outcome.name()));
                self.number(&catalog::STORAGE_REQUESTS, &l, n as f64);
            }
        }
    }

    /// Appends another set's samples.
    pub fn extend(&mut self, other: MetricSet) {
        self.samples.extend(other.samples);
    }

    /// The samples of `def` whose labels include `labels`, as numbers (a histogram counts).
    fn matching<'a>(
        &'a self,
        def: &'a MetricDef,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = f64> + 'a {
        self.samples
            .iter()
            .filter(move |s| {
                s.def.name == def.name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|s| match &s.value {
                Value::Number(n) => *n,
                Value::Histogram(h) => h.count as f64,
            })
    }

    /// The value of the first sample of `def` whose labels include `labels`, if any (a
    /// histogram answers with its count).
    pub fn value(&self, def: &MetricDef, labels: &[(&str, &str)]) -> Option<f64> {
        self.matching(def, labels).next()
    }

    /// The sum of every sample of `def` whose labels include `labels` (0 when none).
    pub fn sum(&self, def: &MetricDef, labels: &[(&str, &str)]) -> f64 {
        self.matching(def, labels).sum()
    }

    /// What changed since `earlier` (the same component's set, taken before): counters and
    /// histograms as their increase, gauges as they are now. For one log line per invocation.
    pub fn since(&self, earlier: &MetricSet) -> MetricSet {
        let samples = self
            .samples
            .iter()
            .map(|s| {
                let before = earlier
                    .samples
                    .iter()
                    .find(|e| e.def.name == s.def.name && e.labels == s.labels);
                let value = match (&s.value, before.map(|b| &b.value)) {
                    (Value::Number(now), Some(Value::Number(then)))
                        if s.def.kind == MetricType::Counter =>
                    {
                        Value::Number((now - then).max(0.0))
                    }
                    (Value::Histogram(now), Some(Value::Histogram(then))) => {
                        Value::Histogram(HistogramSnapshot {
                            cumulative: now
                                .cumulative
                                .iter()
                                .zip(&then.cumulative)
                                .map(|(n, t)| n.saturating_sub(*t))
                                .collect(),
                            count: now.count.saturating_sub(then.count),
                            sum_seconds: (now.sum_seconds - then.sum_seconds).max(0.0),
                        })
                    }
                    (now, _) => now.clone(),
                };
                Sample {
                    def: s.def,
                    labels: s.labels.clone(),
                    value,
                }
            })
            .collect();
        MetricSet { samples }
    }

    /// The set in Prometheus's text exposition format (version 0.0.4).
    pub fn to_prometheus(&self) -> String {
        prometheus::render(self)
    }
}

fn owned(labels: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

#[cfg(test)]
mod tests {
    use super::catalog::{READER_LAG_DELTAS, WRITER_COMMIT_SECONDS, WRITER_COMMITS};
    use super::*;

    #[test]
    fn since_gives_counter_increases_and_current_gauges() {
        let h = Histogram::default();
        let mut before = MetricSet::new();
        before.number(&WRITER_COMMITS, &[("store", "s")], 5.0);
        before.number(&READER_LAG_DELTAS, &[("partition", "0")], 9.0);
        h.record(std::time::Duration::from_millis(1));
        before.histogram(&WRITER_COMMIT_SECONDS, &[], &h);
        let mut after = MetricSet::new();
        after.number(&WRITER_COMMITS, &[("store", "s")], 8.0);
        after.number(&WRITER_COMMITS, &[("store", "new")], 2.0);
        after.number(&READER_LAG_DELTAS, &[("partition", "0")], 4.0);
        h.record(std::time::Duration::from_millis(1));
        after.histogram(&WRITER_COMMIT_SECONDS, &[], &h);
        let d = after.since(&before);
        assert_eq!(d.value(&WRITER_COMMITS, &[("store", "s")]), Some(3.0));
        assert_eq!(d.value(&WRITER_COMMITS, &[("store", "new")]), Some(2.0));
        assert_eq!(d.value(&READER_LAG_DELTAS, &[]), Some(4.0));
        assert_eq!(d.value(&WRITER_COMMIT_SECONDS, &[]), Some(1.0));
        assert_eq!(d.sum(&WRITER_COMMITS, &[]), 5.0);
    }
}
