//! A compaction pass's metrics: its duration, the snapshots it committed, the partitions it
//! could not do, the deltas left after each partition's newest snapshot, the objects
//! retention deleted, and the storage requests of the root (`component="compactor"`).

use std::time::Duration;

use ikv_core::Storage;
use ikv_core::metrics::catalog::*;
use ikv_core::metrics::{Histogram, MetricSet};

use crate::{PartitionOutcome, PassOutcome};

pub fn pass_metrics(storage: &Storage, pass: &PassOutcome, took: Duration) -> MetricSet {
    let mut set = MetricSet::new();
    let duration = Histogram::default();
    duration.record(took);
    set.histogram(&COMPACTOR_PASS_SECONDS, &[], &duration);
    let mut stores: Vec<&str> = pass.reports.iter().map(|r| r.store.as_str()).collect();
    stores.extend(pass.failures.iter().map(|f| f.store.as_str()));
    stores.sort_unstable();
    stores.dedup();
    for store in stores {
        let reports = pass.reports.iter().filter(|r| r.store == store);
        let l = [("store", store)];
        let snapshots: usize = reports
            .clone()
            .map(|r| match r.outcome {
                PartitionOutcome::Snapshotted { rounds, .. } => rounds,
                _ => 0,
            })
            .sum();
        set.number(&COMPACTOR_SNAPSHOTS, &l, snapshots as f64);
        let layers: usize = reports
            .clone()
            .map(|r| match r.outcome {
                PartitionOutcome::Snapshotted { layers, .. } => layers,
                _ => 0,
            })
            .sum();
        set.number(&COMPACTOR_LAYERS, &l, layers as f64);
        let (mut deltas, mut rows, mut bytes) = (0u64, 0u64, 0u64);
        for r in reports.clone() {
            if let PartitionOutcome::Snapshotted {
                deltas_merged,
                delta_rows_merged,
                bytes_written,
                ..
            } = r.outcome
            {
                deltas += deltas_merged as u64;
                rows += delta_rows_merged;
                bytes += bytes_written;
            }
        }
        set.number(&COMPACTOR_DELTAS_FOLDED, &l, deltas as f64);
        set.number(&COMPACTOR_ROWS_FOLDED, &l, rows as f64);
        set.number(&COMPACTOR_BYTES_WRITTEN, &l, bytes as f64);
        let failures = pass.failures.iter().filter(|f| f.store == store).count();
        set.number(&COMPACTOR_PARTITION_FAILURES, &l, failures as f64);
        let deleted: usize = reports
            .clone()
            .map(|r| {
                let d = &r.retention;
                d.deltas_deleted
                    + d.snapshots_deleted
                    + d.orphan_files_deleted
                    + d.staging_files_deleted
                    + d.import_files_deleted
            })
            .sum();
        set.number(&COMPACTOR_OBJECTS_DELETED, &l, deleted as f64);
        for r in reports {
            let (since, oldest) = match r.outcome {
                PartitionOutcome::NotDue { deltas, oldest, .. } => (deltas, oldest),
                _ => (0, Duration::ZERO),
            };
            let p = r.partition.to_string();
            let l = [("store", store), ("partition", p.as_str())];
            set.number(&COMPACTOR_DELTAS_SINCE_SNAPSHOT, &l, since as f64);
            set.number(&COMPACTOR_SNAPSHOT_LAG_SECONDS, &l, oldest.as_secs_f64());
        }
    }
    set.requests(storage.requests(), &[("component", "compactor")]);
    set
}
