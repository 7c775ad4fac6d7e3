//! The scheduler of a deployed pass: every partition of every store, grouped into tasks that
//! each fit one invocation's time budget, so that a pass fans out as wide as the stores need
//! and no wider (docs/DEPLOY.md, "One pass, many invocations").
//!
//! A partition's work is estimated from what a full pass of it reads: the rows of its newest
//! snapshot stack (full snapshot and layers, from their manifests) and the bytes of the deltas
//! committed after it (from one listing), at rates measured on this project's benchmarks
//! (docs/OPERATIONS.md, "Sizing at scale"). The estimate is the pessimistic one: a pass that
//! writes a layer reads none of the snapshot. Planning costs per partition one LIST of the
//! snapshots, one GET per manifest of the stack and one LIST of the deltas; nothing is written.
//!
//! Packing: partitions by decreasing estimate, each into the first task with room (first fit
//! decreasing); a partition larger than the budget gets a task of its own (partitions are not
//! split: one writer of a partition's snapshots at a time).

use ikv_core::bucket::{list_deltas, list_stores, load_config};
use ikv_core::{Error, Result, Storage, StoreLayout};
use ikv_snapshot_format::Manifest;
use ikv_snapshot_format::layer::Stack;
use serde::{Deserialize, Serialize};

/// The budget and the rates a plan assumes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanOptions {
    /// Seconds of work a task may hold (the deployed function stops at 900 s; the default
    /// leaves a third for start-up, retention and a slower run).
    pub task_seconds: f64,
    /// Snapshot rows a full pass rewrites per second (measured 0.52–0.75M at 20M documents on
    /// 2 vCPUs; the default takes less).
    pub rows_per_second: f64,
    /// Delta bytes a pass folds per second.
    pub delta_bytes_per_second: f64,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            task_seconds: 600.0,
            rows_per_second: 400_000.0,
            delta_bytes_per_second: 40.0 * 1024.0 * 1024.0,
        }
    }
}

impl PlanOptions {
    fn check(&self) -> Result<()> {
        for (name, v) in [
            ("task_seconds", self.task_seconds),
            ("rows_per_second", self.rows_per_second),
            ("delta_bytes_per_second", self.delta_bytes_per_second),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::InvalidConfig(format!(
                    "the plan's {name} must be a positive number, not {v}"
                )));
            }
        }
        Ok(())
    }
}

/// One partition to compact.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Work {
    pub store: String,
    pub partition: u32,
}

/// What a partition's pass would read.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub work: Work,
    /// Rows of the newest snapshot stack.
    pub rows: u64,
    /// Bytes of the deltas committed after it.
    pub delta_bytes: u64,
}

impl Estimate {
    pub fn seconds(&self, options: &PlanOptions) -> f64 {
        self.rows as f64 / options.rows_per_second
            + self.delta_bytes as f64 / options.delta_bytes_per_second
    }
}

/// Partitions one invocation compacts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub work: Vec<Work>,
    pub estimated_seconds: f64,
}

/// Estimates every partition of `stores` (all stores when empty).
pub async fn estimate(storage: &Storage, stores: &[String]) -> Result<Vec<Estimate>> {
    let stores = if stores.is_empty() {
        list_stores(storage).await?
    } else {
        stores.to_vec()
    };
    let mut out = Vec::new();
    for store in stores {
        let config = load_config(storage, &store).await?;
        let layout = StoreLayout::new(&storage.prefix, &store)?;
        for partition in 0..config.num_partitions {
            let (rows, after) = match Manifest::load_newest(storage, &layout, partition).await? {
                None => (0, 0),
                Some(top) => {
                    let after = top.sequence;
                    let stack = Stack::load(storage, &layout, top).await?;
                    let rows = stack.full.row_count
                        + stack.layers.iter().map(|l| l.row_count).sum::<u64>();
                    (rows, after)
                }
            };
            let delta_bytes = list_deltas(storage, &layout, partition)
                .await?
                .into_iter()
                .filter(|(seq, _)| *seq > after)
                .map(|(_, meta)| meta.size)
                .sum();
            out.push(Estimate {
                work: Work {
                    store: store.clone(),
                    partition,
                },
                rows,
                delta_bytes,
            });
        }
    }
    Ok(out)
}

/// Groups the estimated partitions into tasks of at most `options.task_seconds` each (a
/// partition above it alone), first fit by decreasing estimate. Every partition is in exactly
/// one task; the same estimates always give the same tasks.
pub fn pack(mut estimates: Vec<Estimate>, options: &PlanOptions) -> Result<Vec<Task>> {
    options.check()?;
    estimates.sort_by(|a, b| {
        b.seconds(options)
            .total_cmp(&a.seconds(options))
            .then_with(|| a.work.cmp(&b.work))
    });
    let mut tasks: Vec<Task> = Vec::new();
    for e in estimates {
        let seconds = e.seconds(options);
        let room = tasks
            .iter_mut()
            .find(|t| t.estimated_seconds + seconds <= options.task_seconds);
        match room {
            Some(task) => {
                task.work.push(e.work);
                task.estimated_seconds += seconds;
            }
            None => {
                if seconds > options.task_seconds {
                    tracing::warn!(
                        store = e.work.store,
                        partition = e.work.partition,
                        seconds,
                        budget = options.task_seconds,
                        "a partition's estimated pass exceeds a task's budget; it runs alone (more partitions would split it)"
                    );
                }
                tasks.push(Task {
                    work: vec![e.work],
                    estimated_seconds: seconds,
                });
            }
        }
    }
    for t in &mut tasks {
        t.work.sort();
    }
    Ok(tasks)
}

/// The plan of a pass over `stores` (all when empty).
pub async fn plan(
    storage: &Storage,
    stores: &[String],
    options: &PlanOptions,
) -> Result<Vec<Task>> {
    options.check()?;
    pack(estimate(storage, stores).await?, options)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est(store: &str, partition: u32, rows: u64) -> Estimate {
        Estimate {
            work: Work {
                store: store.into(),
                partition,
            },
            rows,
            delta_bytes: 0,
        }
    }

    #[test]
    fn tasks_fit_the_budget_hold_every_partition_once_and_are_deterministic() {
        let options = PlanOptions {
            task_seconds: 10.0,
            rows_per_second: 1.0,
            delta_bytes_per_second: 1.0,
        };
        // Pseudo-random sizes, a few above the budget.
        let mut x: u64 = 7;
        let estimates: Vec<Estimate> = (0..200)
            .map(|i| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                est(if i % 3 == 0 { "a" } else { "b" }, i, (x >> 33) % 14)
            })
            .collect();
        let tasks = pack(estimates.clone(), &options).unwrap();
        let mut seen: Vec<Work> = tasks.iter().flat_map(|t| t.work.clone()).collect();
        seen.sort();
        let mut want: Vec<Work> = estimates.iter().map(|e| e.work.clone()).collect();
        want.sort();
        assert_eq!(seen, want, "every partition exactly once");
        for t in &tasks {
            assert!(
                t.estimated_seconds <= options.task_seconds || t.work.len() == 1,
                "{t:?}"
            );
        }
        let total: f64 = estimates.iter().map(|e| e.seconds(&options)).sum();
        // First fit decreasing uses at most 11/9 of the optimum + 1 bins; the optimum is at
        // least total / budget.
        let bound = (total / options.task_seconds * 11.0 / 9.0).ceil() as usize + 1;
        assert!(tasks.len() <= bound, "{} tasks, bound {bound}", tasks.len());
        let mut reversed = estimates;
        reversed.reverse();
        assert_eq!(pack(reversed, &options).unwrap(), tasks, "deterministic");
    }

    #[test]
    fn delta_bytes_count_and_bad_options_are_refused_by_name() {
        let options = PlanOptions {
            task_seconds: 10.0,
            rows_per_second: 2.0,
            delta_bytes_per_second: 4.0,
        };
        let mut e = est("s", 0, 10);
        e.delta_bytes = 8;
        assert_eq!(e.seconds(&options), 7.0);
        let bad = PlanOptions {
            rows_per_second: 0.0,
            ..options
        };
        let err = pack(vec![e], &bad).unwrap_err();
        assert!(err.to_string().contains("rows_per_second"), "{err}");
    }
}
