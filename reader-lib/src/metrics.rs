//! A reader's metrics (`Reader::metrics`): freshness per partition from the status board,
//! what this process did from its counters, the local copy's size, and the storage requests
//! of the root it polls with (an attached process makes none).

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use ikv_core::metrics::MetricSet;
use ikv_core::metrics::catalog::*;

use crate::reader::Reader;

impl Reader {
    /// This process's metrics now, labelled with the store (and partition where per
    /// partition). Counters count what this process did since it opened the reader: only
    /// the mount's owner polls and applies, so summing a host's processes counts each poll
    /// once. Cheap: atomic loads and one status copy, no I/O.
    pub fn metrics(&self) -> MetricSet {
        let shared = &self.shared;
        let store = shared.config.store_name.as_str();
        let s = [("store", store)];
        let mut set = MetricSet::new();
        let now = shared.options.clock.now();
        for st in shared.status.snapshot() {
            let p = st.partition.to_string();
            let l = [("store", store), ("partition", p.as_str())];
            set.number(&READER_APPLIED_SEQUENCE, &l, st.applied_sequence as f64);
            set.number(&READER_LAG_DELTAS, &l, st.lag_deltas as f64);
            set.number(&READER_LAG_SECONDS, &l, lag_seconds(&st, now));
            set.number(&READER_GAP, &l, f64::from(u8::from(st.gap.is_some())));
            set.number(
                &READER_POLL_FAILING,
                &l,
                f64::from(u8::from(st.last_error.is_some())),
            );
        }
        let owns = shared.owns.load(Ordering::Relaxed);
        set.number(&READER_OWNS_MOUNT, &s, f64::from(u8::from(owns)));
        let c = &shared.status.counters;
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
        set.number(
            &READER_POLLS,
            &[("store", store), ("outcome", "ok")],
            n(&c.polls_ok),
        );
        set.number(
            &READER_POLLS,
            &[("store", store), ("outcome", "error")],
            n(&c.polls_failed),
        );
        set.histogram(&READER_POLL_SECONDS, &s, &c.poll_seconds);
        set.number(&READER_DELTAS_APPLIED, &s, n(&c.deltas_applied));
        set.number(&READER_DOCUMENTS_APPLIED, &s, n(&c.operations_applied));
        set.histogram(&READER_APPLY_SECONDS, &s, &c.apply_seconds);
        set.histogram(&READER_FOLD_SECONDS, &s, &c.fold_seconds);
        set.number(&READER_CORRUPT_OBJECTS, &s, n(&c.corrupt_objects));
        set.number(&READER_REBUILDS, &s, n(&c.rebuilds));
        set.number(&READER_QUIET_PARTITIONS, &s, n(&c.quiet_partitions));
        set.number(&READER_WAKE_QUEUE_UP, &s, n(&c.wake_queue_up));
        set.number(&READER_WAKE_QUEUE_REQUESTS, &s, n(&c.wake_queue_requests));
        set.number(&READER_GETS, &s, c.gets.get() as f64);
        set.number(&READER_MULTIGETS, &s, c.multigets.get() as f64);
        let view = shared.view.load();
        set.number(
            &READER_LOCAL_BYTES,
            &[("store", store), ("part", "image")],
            view.image.bytes() as f64,
        );
        set.number(
            &READER_LOCAL_BYTES,
            &[("store", store), ("part", "overlay")],
            view.overlay.committed() as f64,
        );
        if let Some(storage) = c.storage() {
            set.requests(
                storage.requests(),
                &[("component", "reader"), ("store", store)],
            );
        }
        set
    }
}

/// Seconds since the partition last held everything committed, while it does not (deltas
/// known beyond it, a hole, or a failing poll); 0 while caught up.
fn lag_seconds(st: &crate::PartitionStatus, now: SystemTime) -> f64 {
    let behind = st.lag_deltas > 0 || st.gap.is_some() || st.last_error.is_some();
    match (behind, st.caught_up_at) {
        (false, _) => 0.0,
        (true, Some(at)) => now.duration_since(at).map_or(0.0, |d| d.as_secs_f64()),
        // Never caught up since it opened: unknown, reported as 0 with the lag in deltas.
        (true, None) => 0.0,
    }
}
