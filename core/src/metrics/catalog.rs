//! Every metric ikv reports, declared once. `docs/OPERATIONS.md` "What to watch" has the same
//! table for operators (a test checks that every name here is documented there).

use super::{MetricDef, MetricType};

macro_rules! metric {
    ($id:ident, $name:literal, $kind:ident, $unit:literal, $help:literal) => {
        pub static $id: MetricDef = MetricDef {
            name: $name,
            kind: MetricType::$kind,
            unit: $unit,
            help: $help,
        };
    };
}

// Storage, for every component (label `component`: writer, reader, compactor).
metric!(
    STORAGE_REQUESTS,
    "ikv_storage_requests_total",
    Counter,
    "Count",
    "Requests made to the bucket, by kind (get, head, put, list, delete) and outcome (ok, not_found, precondition, error)."
);
metric!(
    STORAGE_BYTES,
    "ikv_storage_bytes_total",
    Counter,
    "Bytes",
    "Bytes of bodies moved, by kind: get (read) and put (written; multipart uploads count by requests only)."
);

// Writer (library, `ikv serve`, the Lambda function).
metric!(
    WRITER_OPERATIONS,
    "ikv_writer_operations_total",
    Counter,
    "Count",
    "Operations acknowledged (each upsert, delete or drop in a committed batch)."
);
metric!(
    WRITER_COMMITS,
    "ikv_writer_commits_total",
    Counter,
    "Count",
    "Deltas committed (one per partition per group commit)."
);
metric!(
    WRITER_COMMIT_BYTES,
    "ikv_writer_commit_bytes_total",
    Counter,
    "Bytes",
    "Bytes of deltas committed."
);
metric!(
    WRITER_COMMIT_FAILURES,
    "ikv_writer_commit_failures_total",
    Counter,
    "Count",
    "Commits that failed (the callers were told; nothing of theirs was written)."
);
metric!(
    WRITER_COMMIT_SECONDS,
    "ikv_writer_commit_seconds",
    Histogram,
    "Seconds",
    "Time from a partition's commit start to its delta being durable."
);
metric!(
    WRITER_LOST_RACES,
    "ikv_writer_lost_races_total",
    Counter,
    "Count",
    "Conditional PUTs that found another writer's delta at the number tried."
);
metric!(
    WRITER_TIP_SEARCHES,
    "ikv_writer_tip_searches_total",
    Counter,
    "Count",
    "Bounded searches for a partition's tip (a cold writer, one idle past the tip's trust, or after many lost races)."
);
metric!(
    WRITER_TIP_HINT_READS,
    "ikv_writer_tip_hint_reads_total",
    Counter,
    "Count",
    "Tip hints read by a writer waking from idleness."
);
metric!(
    WRITER_TIP_HINT_PUBLISHES,
    "ikv_writer_tip_hint_publishes_total",
    Counter,
    "Count",
    "Tip hints written: on every 64th number, after a burst of commits, and by writers others overtook (at most one per partition per 100 ms)."
);
metric!(
    WRITER_WAKE_SIGNALS,
    "ikv_writer_wake_signals_total",
    Counter,
    "Count",
    "Wake signals written: commits that ended a partition's quiet spell (its previous delta 20 s old or more)."
);
metric!(
    WRITER_WAKE_FAILURES,
    "ikv_writer_wake_signal_failures_total",
    Counter,
    "Count",
    "Wake signals that could not be written (twice): idle readers see those commits at their next slow poll."
);
metric!(
    WRITER_REFUSALS,
    "ikv_writer_refusals_total",
    Counter,
    "Count",
    "Requests the writer service refused, by HTTP status `code` and the answer's machine `error` code (4xx: the caller's; 5xx: ours or the bucket's)."
);

// Reader (per process; only the mount's owner polls and applies).
metric!(
    READER_APPLIED_SEQUENCE,
    "ikv_reader_applied_sequence",
    Gauge,
    "None",
    "Sequence number of the last delta applied to the local copy, per partition."
);
metric!(
    READER_LAG_DELTAS,
    "ikv_reader_lag_deltas",
    Gauge,
    "Count",
    "Deltas known to exist beyond the applied one (0 when caught up; a lower bound otherwise)."
);
metric!(
    READER_LAG_SECONDS,
    "ikv_reader_lag_seconds",
    Gauge,
    "Seconds",
    "Seconds since the reader last held everything committed to the partition (0 while caught up): how stale a read may be."
);
metric!(
    READER_GAP,
    "ikv_reader_gap",
    Gauge,
    "Count",
    "1 while a hole in the partition's log stops the reader (a missing delta no snapshot covers)."
);
metric!(
    READER_POLL_FAILING,
    "ikv_reader_poll_failing",
    Gauge,
    "Count",
    "1 while the partition's last poll failed."
);
metric!(
    READER_POLLS,
    "ikv_reader_polls_total",
    Counter,
    "Count",
    "Polls of the bucket by this process, by outcome (ok, error); attached processes make none."
);
metric!(
    READER_POLL_SECONDS,
    "ikv_reader_poll_seconds",
    Histogram,
    "Seconds",
    "Duration of one poll round over the mounted partitions, applying what it found."
);
metric!(
    READER_DELTAS_APPLIED,
    "ikv_reader_deltas_applied_total",
    Counter,
    "Count",
    "Deltas applied to the local copy by this process."
);
metric!(
    READER_DOCUMENTS_APPLIED,
    "ikv_reader_documents_applied_total",
    Counter,
    "Count",
    "Document operations applied to the local copy by this process."
);
metric!(
    READER_APPLY_SECONDS,
    "ikv_reader_apply_seconds",
    Histogram,
    "Seconds",
    "Duration of applying one fetched run of deltas to one partition."
);
metric!(
    READER_FOLD_SECONDS,
    "ikv_reader_fold_seconds",
    Histogram,
    "Seconds",
    "Duration of folding the local copy into a new read image (at start-up, when the overlay fills, after damage)."
);
metric!(
    READER_CORRUPT_OBJECTS,
    "ikv_reader_corrupt_objects_total",
    Counter,
    "Count",
    "Objects refused as damaged or foreign (a checksum, a name or a place did not match)."
);
metric!(
    READER_QUIET_PARTITIONS,
    "ikv_reader_quiet_partitions",
    Gauge,
    "Count",
    "Partitions the mount's owner leaves to the store's wake signal (no change for 30 s): polled directly only every 10 minutes or more."
);
metric!(
    READER_WAKE_QUEUE_UP,
    "ikv_reader_wake_queue_up",
    Gauge,
    "Count",
    "1 while the mount owner's queue on the bucket's wake topic is subscribed and answers (only with a wake topic)."
);
metric!(
    READER_WAKE_QUEUE_REQUESTS,
    "ikv_reader_wake_queue_requests_total",
    Counter,
    "Count",
    "Requests to the owner's wake queue (SQS receives, each a long poll of up to 20 s, and deletes): billed by SQS, apart from the bucket's."
);
metric!(
    READER_REBUILDS,
    "ikv_reader_rebuilds_total",
    Counter,
    "Count",
    "Local copies rebuilt from a snapshot (first start, fell behind retention, damaged local files)."
);
metric!(
    READER_OWNS_MOUNT,
    "ikv_reader_owns_mount",
    Gauge,
    "Count",
    "1 when this process owns the mount (polls and applies), 0 when attached to another's."
);
metric!(
    READER_GETS,
    "ikv_reader_gets_total",
    Counter,
    "Count",
    "Single-key reads served by this process."
);
metric!(
    READER_MULTIGETS,
    "ikv_reader_multigets_total",
    Counter,
    "Count",
    "Multi-key reads served by this process (one per call)."
);
metric!(
    READER_LOCAL_BYTES,
    "ikv_reader_local_bytes",
    Gauge,
    "Bytes",
    "Bytes of the local copy on disk, by part (image: the mapped read image; overlay: deltas since it)."
);

// Compactor and retention (per pass).
metric!(
    COMPACTOR_PASS_SECONDS,
    "ikv_compactor_pass_seconds",
    Histogram,
    "Seconds",
    "Duration of one compaction pass over the chosen stores."
);
metric!(
    COMPACTOR_SNAPSHOTS,
    "ikv_compactor_snapshots_total",
    Counter,
    "Count",
    "Snapshots committed."
);
metric!(
    COMPACTOR_LAYERS,
    "ikv_compactor_layers_total",
    Counter,
    "Count",
    "Snapshots committed as layers: only what changed, over the snapshots below."
);
metric!(
    COMPACTOR_DELTAS_FOLDED,
    "ikv_compactor_deltas_folded_total",
    Counter,
    "Count",
    "Deltas folded into snapshots."
);
metric!(
    COMPACTOR_ROWS_FOLDED,
    "ikv_compactor_rows_folded_total",
    Counter,
    "Count",
    "Delta rows (field and document operations) folded into snapshots."
);
metric!(
    COMPACTOR_BYTES_WRITTEN,
    "ikv_compactor_bytes_written_total",
    Counter,
    "Bytes",
    "Bytes of snapshot files written."
);
metric!(
    COMPACTOR_PARTITION_FAILURES,
    "ikv_compactor_partition_failures_total",
    Counter,
    "Count",
    "Partitions a pass could not snapshot or clean (retried at the next pass)."
);
metric!(
    COMPACTOR_DELTAS_SINCE_SNAPSHOT,
    "ikv_compactor_deltas_since_snapshot",
    Gauge,
    "Count",
    "Deltas after the newest snapshot, per partition, as the last pass left it."
);
metric!(
    COMPACTOR_SNAPSHOT_LAG_SECONDS,
    "ikv_compactor_snapshot_lag_seconds",
    Gauge,
    "Seconds",
    "Age of the oldest delta no snapshot covers yet, per partition, as the last pass left it (0 when up to date)."
);
metric!(
    COMPACTOR_OBJECTS_DELETED,
    "ikv_compactor_objects_deleted_total",
    Counter,
    "Count",
    "Objects retention deleted (deltas, superseded snapshots, unreferenced files)."
);

// Importer (per import: a batch job's metrics).
metric!(
    IMPORTER_ROWS,
    "ikv_importer_rows_total",
    Counter,
    "Count",
    "Input rows an import read."
);
metric!(
    IMPORTER_RUNS,
    "ikv_importer_runs_total",
    Counter,
    "Count",
    "Run files an import uploaded (0 for a retry that found everything committed)."
);
metric!(
    IMPORTER_BYTES,
    "ikv_importer_bytes_total",
    Counter,
    "Bytes",
    "Bytes of run files an import uploaded."
);
metric!(
    IMPORTER_SECONDS,
    "ikv_importer_import_seconds",
    Histogram,
    "Seconds",
    "Duration of an import, reading its input to committing every partition."
);

/// Every metric, for documentation checks.
pub static ALL: &[&MetricDef] = &[
    &STORAGE_REQUESTS,
    &STORAGE_BYTES,
    &WRITER_OPERATIONS,
    &WRITER_COMMITS,
    &WRITER_COMMIT_BYTES,
    &WRITER_COMMIT_FAILURES,
    &WRITER_COMMIT_SECONDS,
    &WRITER_LOST_RACES,
    &WRITER_TIP_SEARCHES,
    &WRITER_TIP_HINT_READS,
    &WRITER_TIP_HINT_PUBLISHES,
    &WRITER_WAKE_SIGNALS,
    &WRITER_WAKE_FAILURES,
    &WRITER_REFUSALS,
    &READER_APPLIED_SEQUENCE,
    &READER_LAG_DELTAS,
    &READER_LAG_SECONDS,
    &READER_GAP,
    &READER_POLL_FAILING,
    &READER_POLLS,
    &READER_POLL_SECONDS,
    &READER_DELTAS_APPLIED,
    &READER_DOCUMENTS_APPLIED,
    &READER_APPLY_SECONDS,
    &READER_FOLD_SECONDS,
    &READER_CORRUPT_OBJECTS,
    &READER_REBUILDS,
    &READER_QUIET_PARTITIONS,
    &READER_WAKE_QUEUE_UP,
    &READER_WAKE_QUEUE_REQUESTS,
    &READER_OWNS_MOUNT,
    &READER_GETS,
    &READER_MULTIGETS,
    &READER_LOCAL_BYTES,
    &COMPACTOR_PASS_SECONDS,
    &COMPACTOR_SNAPSHOTS,
    &COMPACTOR_LAYERS,
    &COMPACTOR_DELTAS_FOLDED,
    &COMPACTOR_ROWS_FOLDED,
    &COMPACTOR_BYTES_WRITTEN,
    &COMPACTOR_PARTITION_FAILURES,
    &COMPACTOR_DELTAS_SINCE_SNAPSHOT,
    &COMPACTOR_SNAPSHOT_LAG_SECONDS,
    &COMPACTOR_OBJECTS_DELETED,
    &IMPORTER_ROWS,
    &IMPORTER_RUNS,
    &IMPORTER_BYTES,
    &IMPORTER_SECONDS,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for m in ALL {
            assert!(seen.insert(m.name), "{} twice", m.name);
            assert!(m.name.starts_with("ikv_"), "{}", m.name);
            assert!(
                m.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                m.name
            );
            match m.kind {
                MetricType::Counter => assert!(m.name.ends_with("_total"), "{}", m.name),
                MetricType::Histogram => assert!(m.name.ends_with("_seconds"), "{}", m.name),
                MetricType::Gauge => assert!(!m.name.ends_with("_total"), "{}", m.name),
            }
            assert!(
                ["Count", "Seconds", "Bytes", "None"].contains(&m.unit),
                "{}",
                m.name
            );
        }
    }
}
