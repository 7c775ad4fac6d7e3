//! ikv snapshot compactor: turns each partition's delta log into Parquet snapshots that
//! readers bootstrap from (and that pandas, pyarrow, DuckDB read as ordinary tables), and
//! deletes what the retention rules allow. Design and guarantees: `docs/SNAPSHOTS.md`.

#[cfg(feature = "args")]
pub mod args;
pub mod checkpoint;
mod columnar;
pub mod compact;
mod fetch;
mod import_retention;
pub mod options;
pub mod overlay;
pub mod pass_metrics;
pub mod plan;
pub mod retention;
pub mod state;

// The format it writes, shared with the reader and the importer (`ikv_snapshot_format`).
use ikv_snapshot_format::{layer, manifest, merge, read, rows, write};

use futures::StreamExt;
use ikv_core::bucket::load_config;
use ikv_core::{Error, Result, Storage, StoreLayout};

pub use compact::{PartitionOutcome, snapshot_partition};
pub use options::{Layering, Retention, Shard, SnapshotOptions, Triggers};
pub use retention::{RetentionReport, apply_retention};

/// What a pass did to one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionReport {
    pub store: String,
    pub partition: u32,
    pub outcome: PartitionOutcome,
    pub retention: RetentionReport,
}

impl std::fmt::Display for PartitionReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} p{}: {}; deleted {} deltas, {} snapshots, {} orphan files",
            self.store,
            self.partition,
            self.outcome,
            self.retention.deltas_deleted,
            self.retention.snapshots_deleted,
            self.retention.orphan_files_deleted
        )
    }
}

/// The Lambda face. An event `{"plan": {"task_seconds": S}}` (`S` a number or a numeric
/// string; `{"plan": true}` for the default budget) answers `{"tasks": [{"work": [{"store",
/// "partition"}, …], "estimated_seconds"}, …]}` ([`plan`]) and compacts nothing. Any other
/// event runs one pass: over the partitions of its `"work"` (a task of a plan) when it names
/// them, else of its `"shard"` (`"K/N"`), else of the options'; it answers `{"summary": [one
/// line per partition]}`. The event's id and time are logged.
pub async fn handle_scheduled_event(
    storage: &Storage,
    stores: &[String],
    options: &SnapshotOptions,
    event: &serde_json::Value,
) -> Result<serde_json::Value> {
    tracing::info!(
        id = event.get("id").and_then(|v| v.as_str()).unwrap_or("-"),
        time = event.get("time").and_then(|v| v.as_str()).unwrap_or("-"),
        "scheduled snapshot pass"
    );
    if let Some(asked) = event.get("plan") {
        let tasks = plan::plan(storage, stores, &plan_options(asked)?).await?;
        tracing::info!(tasks = tasks.len(), "planned a snapshot pass");
        return Ok(serde_json::json!({ "tasks": tasks }));
    }
    let work: Option<Vec<plan::Work>> = match event.get("work") {
        None => None,
        Some(v) => Some(serde_json::from_value(v.clone()).map_err(|e| {
            Error::InvalidConfig(format!(
                "the event's work is not a list of {{\"store\": name, \"partition\": number}}: {e}"
            ))
        })?),
    };
    if work.is_some() && event.get("shard").is_some() {
        return Err(Error::InvalidConfig(
            "the event names both work and a shard; a task names its partitions with one".into(),
        ));
    }
    // One function may serve several schedules, each naming its shard in its input.
    let options = &match event.get("shard") {
        None => options.clone(),
        Some(v) => {
            let shard = v
                .as_str()
                .ok_or_else(|| {
                    Error::InvalidConfig(format!(
                        "the event's shard {v} is not a string like \"0/4\""
                    ))
                })?
                .parse::<options::Shard>()
                .map_err(Error::InvalidConfig)?;
            SnapshotOptions {
                shard: Some(shard),
                ..options.clone()
            }
        }
    };
    let started = ikv_core::clock::Stopwatch::start();
    let pass = match &work {
        Some(work) => run_work_reporting(storage, work, options).await?,
        None => run_pass_reporting(storage, stores, &[], options).await?,
    };
    // One embedded-metric line per invocation: CloudWatch graphs the pass from its log.
    let set = pass_metrics::pass_metrics(storage, &pass, started.elapsed());
    let ms = ikv_core::clock::wall_time()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    if let Some(line) = ikv_core::metrics::emf::line(&set, &[], ms) {
        println!("{line}");
    }
    if let Some(failure) = pass.failures.into_iter().next() {
        return Err(failure.error);
    }
    let summary: Vec<String> = pass.reports.iter().map(ToString::to_string).collect();
    Ok(serde_json::json!({ "summary": summary }))
}

/// The budget a plan event asks for: `true` (the defaults) or `{"task_seconds": S}`.
fn plan_options(asked: &serde_json::Value) -> Result<plan::PlanOptions> {
    let bad = || {
        Error::InvalidConfig(format!(
            "the event's plan {asked} is not true or {{\"task_seconds\": seconds}}"
        ))
    };
    let mut options = plan::PlanOptions::default();
    match asked {
        serde_json::Value::Bool(true) => {}
        serde_json::Value::Object(fields) => {
            for (name, value) in fields {
                let number = match value {
                    serde_json::Value::Number(n) => n.as_f64(),
                    // Step Functions substitutes a template parameter as a string.
                    serde_json::Value::String(s) => s.trim().parse().ok(),
                    _ => None,
                }
                .ok_or_else(bad)?;
                match name.as_str() {
                    "task_seconds" => options.task_seconds = number,
                    _ => return Err(bad()),
                }
            }
        }
        _ => return Err(bad()),
    }
    Ok(options)
}

/// One compaction pass: for each chosen store (all when `stores` is empty) and partition (all
/// when `partitions` is empty), snapshot if due, then apply retention, up to
/// `options.parallel_partitions` partitions at once. A failing partition does not stop the
/// others; the first error (in store and partition order) is returned after all were tried.
pub async fn run_pass(
    storage: &Storage,
    stores: &[String],
    partitions: &[u32],
    options: &SnapshotOptions,
) -> Result<Vec<PartitionReport>> {
    let pass = run_pass_reporting(storage, stores, partitions, options).await?;
    match pass.failures.into_iter().next() {
        Some(failure) => Err(failure.error),
        None => Ok(pass.reports),
    }
}

/// A partition a pass could not snapshot or clean.
#[derive(Debug)]
pub struct PartitionFailure {
    pub store: String,
    pub partition: u32,
    pub error: Error,
}

/// What a pass did: a report per partition done, a failure per partition not.
#[derive(Debug, Default)]
pub struct PassOutcome {
    pub reports: Vec<PartitionReport>,
    pub failures: Vec<PartitionFailure>,
}

/// [`run_pass`], keeping every partition's report and failure (for metrics); `Err` only
/// for what stops the whole pass (listing stores, a bad partition number, a configuration).
pub async fn run_pass_reporting(
    storage: &Storage,
    stores: &[String],
    partitions: &[u32],
    options: &SnapshotOptions,
) -> Result<PassOutcome> {
    options.retention.check()?;
    let stores = if stores.is_empty() {
        ikv_core::bucket::list_stores(storage).await?
    } else {
        stores.to_vec()
    };
    // Every partition to do, checked before any is touched.
    let mut jobs = Vec::new();
    for store in &stores {
        let config = std::sync::Arc::new(load_config(storage, store).await?);
        let layout = StoreLayout::new(&storage.prefix, store)?;
        let chosen: Vec<u32> = if partitions.is_empty() {
            (0..config.num_partitions).collect()
        } else {
            partitions.to_vec()
        };
        for partition in chosen {
            if options.shard.is_some_and(|s| !s.holds(partition)) {
                continue;
            }
            if partition >= config.num_partitions {
                return Err(Error::InvalidConfig(format!(
                    "store {store:?} has {} partitions; there is no partition {partition}",
                    config.num_partitions
                )));
            }
            jobs.push((store.clone(), config.clone(), layout.clone(), partition));
        }
    }
    Ok(run_jobs(storage, jobs, options).await)
}

/// One pass over exactly the partitions of `work` (a task of a plan, [`plan`]), as
/// [`run_pass_reporting`] does it; `Err` only for an unknown store, a partition a store does
/// not have, or a configuration.
pub async fn run_work_reporting(
    storage: &Storage,
    work: &[plan::Work],
    options: &SnapshotOptions,
) -> Result<PassOutcome> {
    options.retention.check()?;
    let mut configs = std::collections::BTreeMap::new();
    let mut jobs = Vec::with_capacity(work.len());
    for w in work {
        let (config, layout) = match configs.get(&w.store) {
            Some(found) => Clone::clone(found),
            None => {
                let config = std::sync::Arc::new(load_config(storage, &w.store).await?);
                let layout = StoreLayout::new(&storage.prefix, &w.store)?;
                configs.insert(w.store.clone(), (config.clone(), layout.clone()));
                (config, layout)
            }
        };
        if w.partition >= config.num_partitions {
            return Err(Error::InvalidConfig(format!(
                "store {:?} has {} partitions; there is no partition {}",
                w.store, config.num_partitions, w.partition
            )));
        }
        jobs.push((w.store.clone(), config, layout, w.partition));
    }
    Ok(run_jobs(storage, jobs, options).await)
}

type Job = (
    String,
    std::sync::Arc<ikv_core::StoreConfig>,
    StoreLayout,
    u32,
);

/// Snapshots and cleans each job's partition.
async fn run_jobs(storage: &Storage, jobs: Vec<Job>, options: &SnapshotOptions) -> PassOutcome {
    // Partitions are independent (their own log, snapshots and retention): up to
    // `parallel_partitions` at once, each failing alone.
    let done: Vec<(String, u32, Result<PartitionReport>)> = futures::stream::iter(jobs)
        .map(|(store, config, layout, partition)| async move {
            // A pass judges ages by the wall clock, read here and passed down.
            let now = ikv_core::clock::wall_time();
            let result = async {
                let outcome = snapshot_partition(storage, &config, partition, options, now).await?;
                let retention =
                    apply_retention(storage, &layout, partition, &options.retention, now).await?;
                Ok::<_, Error>(PartitionReport {
                    store: store.clone(),
                    partition,
                    outcome,
                    retention,
                })
            }
            .await;
            (store, partition, result)
        })
        .buffer_unordered(options.parallel_partitions.max(1))
        .collect()
        .await;
    let mut pass = PassOutcome::default();
    for (store, partition, result) in done {
        match result {
            Ok(report) => pass.reports.push(report),
            Err(e) => {
                tracing::error!(store, partition, error = %e, "snapshot pass failed for partition");
                pass.failures.push(PartitionFailure {
                    store,
                    partition,
                    error: e,
                });
            }
        }
    }
    // In store and partition order, whatever order they finished in.
    pass.reports
        .sort_by(|a, b| (&a.store, a.partition).cmp(&(&b.store, b.partition)));
    pass.failures
        .sort_by(|a, b| (&a.store, a.partition).cmp(&(&b.store, b.partition)));
    pass
}
