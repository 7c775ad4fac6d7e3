//! Committing one delta to one partition's log: conditional create at the next sequence
//! number, retry on a lost race, and no double commit when an outcome is ambiguous.
//!
//! Invariants:
//! - An attempt at sequence `s` can only ever land at `s` (the PUT is If-None-Match), so the
//!   log has no holes and a batch lands at most once per sequence number it tried.
//! - object_store's own retries are off for writers (see `StorageOptions::disable_retries`),
//!   so "already exists" means someone else's delta, unless an earlier attempt of ours at the
//!   same `s` failed without a clear answer. Only then is the object read to compare batch ids.
//! - The tip only moves forward; a writer learns it by a bounded search (`ikv_core::tip`),
//!   then from its own commits and lost races. A busy writer that loses a race tries the next
//!   number (it lost by one), searching only after 8 losses in a row; a writer idle for a
//!   second or more (an idle Lambda instance) searches at its first loss, so however far
//!   behind it is, it catches up in a few round trips, not one race per missing number. A tip not confirmed for
//!   `TIP_TTL` is searched again before use: retention may have removed the numbers after it.
//! - Before its first attempt, an idle writer reads the partition's tip hint
//!   (`ikv_core::tip_hint`): a number another writer committed less than `TIP_TTL` ago,
//!   trusted as a writer trusts its own memory. So a writer thousands behind usually commits
//!   with that GET and one PUT, never a search. Every commit publishes the hint in the
//!   background (`hint.rs`).
//! - The search refuses a log with a hole: nothing is written past a missing delta.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use ikv_core::bucket::{is_permanent, is_precondition_failed};
use ikv_core::delta::decode_delta_meta;
use ikv_core::store::read_delta;
use ikv_core::tip::{Knowledge, find_tip};
use ikv_core::tip_hint;
use ikv_core::{Error, Result, Storage, StoreLayout};
use object_store::{PutMode, PutOptions};
use rand::Rng;

use super::hint::HintPublisher;

/// How hard a committer tries before giving up.
#[derive(Debug, Clone)]
pub struct CommitPolicy {
    /// Consecutive failed attempts (errors, not lost races) before the commit fails.
    pub max_transient_failures: u32,
    /// Lost races in a row before the commit fails (a partition hotter than this writer can
    /// keep up with).
    pub max_lost_races: u32,
    /// Backoff after a failure: full jitter over `base * 2^n`, capped.
    pub failure_backoff_base: Duration,
    pub failure_backoff_cap: Duration,
    /// Backoff after a lost race: full jitter over `base * 2^n`, capped; small, because the
    /// next number is usually free.
    pub race_backoff_base: Duration,
    pub race_backoff_cap: Duration,
}

impl Default for CommitPolicy {
    fn default() -> Self {
        CommitPolicy {
            max_transient_failures: 8,
            max_lost_races: 10_000,
            failure_backoff_base: Duration::from_millis(20),
            failure_backoff_cap: Duration::from_secs(2),
            race_backoff_base: Duration::from_micros(500),
            race_backoff_cap: Duration::from_millis(50),
        }
    }
}

fn jitter(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let ceiling = base
        .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
        .min(cap);
    let nanos = ceiling.as_nanos().min(u128::from(u64::MAX)) as u64;
    Duration::from_nanos(rand::rng().random_range(0..=nanos))
}

/// Commits deltas to one partition's log. Not shared: one per partition per writer.
pub(crate) struct PartitionCommitter {
    storage: Storage,
    layout: StoreLayout,
    partition: u32,
    policy: CommitPolicy,
    /// Highest sequence number known to be taken, and when that was last confirmed; `None`
    /// until first learned.
    tip: Option<(u64, Instant)>,
    hint: HintPublisher,
}

/// How long a learned tip is trusted without a search. Below the retention window (an hour
/// by default; a pass refuses less than 10 minutes, `Retention::MIN_WINDOW`), so a writer
/// idle longer than that never writes into numbers retention has removed.
const TIP_TTL: Duration = Duration::from_secs(300);

/// A tip older than this at the start of a commit marks the writer as idle.
const IDLE_AFTER: Duration = Duration::from_secs(1);

/// How far ahead of this machine's clock a tip hint's commit time may be and still count.
const HINT_CLOCK_SKEW: Duration = Duration::from_secs(30);

/// Lost races in a row after which a busy writer searches instead of trying the next number.
const SEARCH_AFTER_LOSSES: u32 = 8;

impl PartitionCommitter {
    pub(crate) fn new(
        storage: Storage,
        layout: StoreLayout,
        partition: u32,
        policy: CommitPolicy,
    ) -> Self {
        PartitionCommitter {
            hint: HintPublisher::start(storage.clone(), layout.clone(), partition),
            storage,
            layout,
            partition,
            policy,
            tip: None,
        }
    }

    /// Commits `body` (an encoded delta carrying `batch_id`) as the partition's next delta
    /// and returns its sequence number.
    pub(crate) async fn commit(&mut self, body: Bytes, batch_id: &str) -> Result<u64> {
        let mut failures = 0u32;
        let mut lost_races = 0u32;
        // Sequence numbers where an attempt of ours may have landed without us knowing.
        let mut ambiguous: HashSet<u64> = HashSet::new();
        // A writer whose tip is more than a second old was idle: others may have gone far
        // ahead, so a lost race sends it searching at once. A busy writer loses races by one
        // and tries the next number, searching only after many losses in a row.
        let mut idle = self.tip.is_none_or(|(_, at)| at.elapsed() >= IDLE_AFTER);
        if idle && self.tip.is_some_and(|(_, at)| at.elapsed() < TIP_TTL) {
            // Others may have moved the log on while this writer was idle: a fresh hint says
            // how far. (Read before the first attempt, not beside it: on the S3 emulator a
            // lost PUT beside the GET measured slower than the GET alone; rfcs/0004.)
            // Followed, it makes this writer a busy one: lost races from there are by one.
            if let Some(ahead) = self.read_hint().await {
                self.tip = Some(ahead);
                idle = false;
            }
        }
        loop {
            let search = match self.tip {
                None => Some(Knowledge::Old),
                Some((_, at)) if at.elapsed() >= TIP_TTL => Some(Knowledge::Old),
                Some(_) if lost_races == 0 => None,
                // One search brings an idle writer up to date; after it, it is a busy one.
                Some(_) if idle && lost_races == 1 => Some(Knowledge::Recent),
                Some(_) if lost_races < SEARCH_AFTER_LOSSES => None,
                Some(_) => Some(Knowledge::Fresh),
            };
            let tip = match (self.tip, search) {
                (Some((t, _)), None) => t,
                (known, _) => match find_tip(
                    &self.storage,
                    &self.layout,
                    self.partition,
                    known.map_or(0, |(t, _)| t),
                    search.unwrap_or(Knowledge::Old),
                )
                .await
                {
                    Ok(t) => {
                        self.tip = Some((t, Instant::now()));
                        t
                    }
                    Err(e) if e.kind() == ikv_core::ErrorKind::Corrupt => return Err(e),
                    Err(e) => {
                        failures += 1;
                        if failures > self.policy.max_transient_failures {
                            return Err(e);
                        }
                        tracing::warn!(partition = self.partition, error = %e, "finding the log tip failed; retrying");
                        self.sleep_after_failure(failures).await;
                        continue;
                    }
                },
            };
            let seq = tip + 1;
            let path = self.layout.delta(self.partition, seq);
            // The trailer names the number it is committed at (readers check it).
            let placed = ikv_core::delta::place_delta(&body, seq)?;
            let opts = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            match self.storage.store.put_opts(&path, placed, opts).await {
                Ok(_) => {
                    self.committed(seq);
                    tracing::debug!(partition = self.partition, seq, "committed delta");
                    return Ok(seq);
                }
                Err(
                    e @ (object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. }),
                ) => {
                    // S3 answers 409 ConditionalRequestConflict when another conditional write
                    // to the key is in flight, without saying it will succeed. Moving on then
                    // could leave a hole, so unless the answer was a plain 412, look first.
                    if !is_precondition_failed(&e) {
                        let checked = self.exists(seq).await;
                        if !matches!(checked, Ok(true)) {
                            failures += 1;
                            if failures > self.policy.max_transient_failures {
                                return Err(checked.err().unwrap_or(Error::Storage {
                                    context: format!("writing {path}"),
                                    source: e,
                                }));
                            }
                            tracing::debug!(
                                partition = self.partition,
                                seq,
                                "conflicting write in flight; retrying the same number"
                            );
                            self.sleep_after_failure(failures).await;
                            continue;
                        }
                    }
                    if ambiguous.contains(&seq) {
                        match self.landed_as_ours(seq, batch_id).await {
                            Ok(true) => {
                                self.committed(seq);
                                tracing::info!(
                                    partition = self.partition,
                                    seq,
                                    "an earlier ambiguous attempt had committed the batch"
                                );
                                return Ok(seq);
                            }
                            Ok(false) => {}
                            Err(e) => {
                                failures += 1;
                                if failures > self.policy.max_transient_failures {
                                    return Err(e);
                                }
                                self.sleep_after_failure(failures).await;
                                continue;
                            }
                        }
                    }
                    self.tip = Some((seq, Instant::now()));
                    lost_races += 1;
                    if lost_races > self.policy.max_lost_races {
                        return Err(Error::StorageMessage {
                            context: format!("committing to partition {}", self.partition),
                            message: format!(
                                "lost {lost_races} races in a row for the next sequence number"
                            ),
                        });
                    }
                    let wait = jitter(
                        self.policy.race_backoff_base,
                        self.policy.race_backoff_cap,
                        lost_races.min(8),
                    );
                    tokio::time::sleep(wait).await;
                }
                Err(e) if is_permanent(&e) => {
                    return Err(ikv_core::Error::Storage {
                        context: format!("writing {path}"),
                        source: e,
                    });
                }
                Err(e) => {
                    // The PUT may or may not have landed: remember, and retry the same number.
                    ambiguous.insert(seq);
                    failures += 1;
                    tracing::warn!(partition = self.partition, seq, error = %e, "delta PUT failed; retrying the same sequence number");
                    if failures > self.policy.max_transient_failures {
                        // Before giving up, settle whether it landed: a caller told "failed"
                        // must be able to trust that nothing was committed.
                        if let Ok(true) = self.landed_as_ours(seq, batch_id).await {
                            self.committed(seq);
                            return Ok(seq);
                        }
                        return Err(ikv_core::Error::Storage {
                            context: format!("writing {path} after {failures} attempts"),
                            source: e,
                        });
                    }
                    self.sleep_after_failure(failures).await;
                }
            }
        }
    }

    fn committed(&mut self, seq: u64) {
        self.tip = Some((seq, Instant::now()));
        self.hint.publish(seq);
    }

    /// The partition's tip hint as a tip (its number, confirmed when it was committed), when
    /// it is fresh and ahead of what this writer knows; otherwise, and for a missing or
    /// damaged hint, `None`.
    async fn read_hint(&self) -> Option<(u64, Instant)> {
        let (known, _) = self.tip?;
        let hint = match tip_hint::read(&self.storage, &self.layout, self.partition).await {
            Ok(hint) => hint?,
            Err(e) => {
                // A damaged or unreadable hint costs a search, nothing else: say so.
                tracing::warn!(partition = self.partition, error = %e, "ignoring the tip hint");
                return None;
            }
        };
        let now = SystemTime::now();
        if hint.committed_at > now + HINT_CLOCK_SKEW {
            // Its publisher's clock runs ahead: its age cannot be known, so neither can it be
            // known that retention has left the numbers after it.
            tracing::warn!(
                partition = self.partition,
                hint = hint.seq,
                "ignoring a tip hint committed in the future (a writer's clock is off)"
            );
            return None;
        }
        let age = hint.age(now);
        if hint.seq <= known || age >= TIP_TTL {
            return None;
        }
        tracing::debug!(
            partition = self.partition,
            known,
            hint = hint.seq,
            "following the tip hint"
        );
        Some((hint.seq, Instant::now().checked_sub(age)?))
    }

    async fn sleep_after_failure(&self, failures: u32) {
        let wait = jitter(
            self.policy.failure_backoff_base,
            self.policy.failure_backoff_cap,
            failures,
        );
        tokio::time::sleep(wait).await;
    }

    async fn exists(&self, seq: u64) -> Result<bool> {
        ikv_core::bucket::exists(&self.storage, &self.layout.delta(self.partition, seq)).await
    }

    /// Whether delta `seq` exists and carries `batch_id`.
    async fn landed_as_ours(&self, seq: u64, batch_id: &str) -> Result<bool> {
        match read_delta(&self.storage, &self.layout, self.partition, seq).await? {
            None => Ok(false),
            Some(bytes) => Ok(decode_delta_meta(
                &bytes,
                self.layout.delta(self.partition, seq).as_ref(),
            )?
            .batch_id
                == batch_id),
        }
    }
}
