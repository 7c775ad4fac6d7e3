//! Committing one delta to one partition's log: conditional create at the next sequence
//! number, retry on a lost race, and no double commit when an outcome is ambiguous.
//!
//! Invariants:
//! - An attempt at sequence `s` can only ever land at `s` (the PUT is If-None-Match), so the
//!   log has no holes and a batch lands at most once per sequence number it tried.
//! - the object store's own retries are off for writers (see `StorageOptions::disable_retries`),
//!   so "already exists" means someone else's delta, unless an earlier attempt of ours at the
//!   same `s` failed without a clear answer. Only then is the object read to compare batch ids.
//! - The tip only moves forward; a writer learns it by a bounded search (`crate::tip`),
//!   then from its own commits and lost races. A busy writer that loses a race tries the next
//!   number (it lost by one), searching only after 8 losses in a row; a writer idle for a
//!   second or more (an idle Lambda instance) searches at its first loss, so however far
//!   behind it is, it catches up in a few round trips, not one race per missing number. A tip not confirmed for
//!   `TIP_TTL` is searched again before use: retention may have removed the numbers after it.
//! - Before its first attempt, an idle writer reads the partition's tip hint
//!   (`crate::tip_hint`): a number another writer committed less than `TIP_TTL` ago,
//!   trusted as a writer trusts its own memory. So a writer thousands behind usually commits
//!   with that GET and one PUT, never a search. Every commit publishes the hint in the
//!   background (`hint.rs`).
//! - The commit rule (`crate::committed`): delta `n` is acknowledged only when this writer
//!   knows delta `n − 1` is a committed delta of this store and partition: it committed it
//!   itself, or it read and checked it. A tip learned from a hint, a search or a lost race is
//!   checked with one GET before the number after it is written (a lost race reads what it
//!   lost to anyway); an object that is not a committed delta is refused, naming it, and
//!   nothing is written after it. A writer committing back to back pays nothing for this.
//! - The search refuses a log with a hole: nothing is written past a missing delta.
//! - Sequence arithmetic never wraps: a tip of `u64::MAX` is refused.
//! - Time is the injected [`Clock`]'s, so tests cross `TIP_TTL` and `IDLE_AFTER` without
//!   waiting.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::bucket::committed::{check_predecessor, next_seq, read_committed};
use crate::bucket::tip::{Knowledge, find_tip};
use crate::bucket::tip_hint;
use crate::bucket::wake::{self, WAKE_AFTER, Wake};
use crate::bucket::{CreateAnswer, exists, try_create};
use crate::bucket::{list_snapshot_seqs, read_delta};
use crate::clock::Clock;
use crate::{Error, ErrorKind, Result, Storage, StoreLayout};
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::CommitStats;
use super::hint_publisher::{HintFlush, HintPublisher};

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

/// Full jitter over `base * 2^attempt`, capped, drawn from the committer's seeded source.
fn jitter(rng: &mut StdRng, base: Duration, cap: Duration, attempt: u32) -> Duration {
    let ceiling = base
        .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
        .min(cap);
    let nanos = ceiling.as_nanos().min(u128::from(u64::MAX)) as u64;
    Duration::from_nanos(rng.random_range(0..=nanos))
}

/// A storage error's context, saying how many attempts were made.
fn after_attempts(e: Error, attempts: u32) -> Error {
    match e {
        Error::Storage { context, source } => Error::Storage {
            context: format!("{context} after {attempts} attempts"),
            source,
        },
        other => other,
    }
}

/// A tip this writer knows: the highest sequence number known to be taken.
#[derive(Debug, Clone, Copy)]
struct KnownTip {
    seq: u64,
    /// When it was last confirmed, as the clock's `elapsed()`.
    at: Duration,
    /// Whether delta `seq` is known to be committed (this writer committed it, or read and
    /// checked it), or `seq` is 0: only then may `seq + 1` be written.
    checked: bool,
    /// When delta `seq` was committed, when known (this writer's commit, or the creation time
    /// a checked delta carries): whether the next commit ends a quiet spell
    /// (`crate::bucket::wake`).
    committed_at: Option<SystemTime>,
}

impl KnownTip {
    /// A number learned without reading its delta (a search, a hint).
    fn unchecked(seq: u64, at: Duration) -> KnownTip {
        KnownTip {
            seq,
            at,
            checked: seq == 0,
            committed_at: None,
        }
    }
}

/// The creation time a delta's metadata carries.
fn created_at(meta: &crate::delta::DeltaMeta) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_millis(meta.created_at_ms))
}

/// Commits deltas to one partition's log. Not shared: one per partition per writer.
pub struct PartitionCommitter {
    storage: Storage,
    layout: StoreLayout,
    partition: u32,
    policy: CommitPolicy,
    clock: Arc<dyn Clock>,
    /// Backoff jitter: seeded from the writer's id and the partition, so that writers differ
    /// and a test's run repeats.
    rng: StdRng,
    /// `None` until first learned.
    tip: Option<KnownTip>,
    hint: HintPublisher,
    stats: Arc<CommitStats>,
    /// Named in the wake signals this committer writes.
    writer_id: String,
}

/// How long a learned tip is trusted without a search. Below the retention window (an hour
/// by default; a pass refuses less than 10 minutes, `Retention::MIN_WINDOW`), so a writer
/// idle longer than that never writes into numbers retention has removed.
pub(crate) const TIP_TTL: Duration = Duration::from_secs(300);

/// A tip older than this at the start of a commit marks the writer as idle.
pub(crate) const IDLE_AFTER: Duration = Duration::from_secs(1);

/// How far ahead of this machine's clock a tip hint's commit time may be and still count.
const HINT_CLOCK_SKEW: Duration = Duration::from_secs(30);

/// Lost races in a row after which a busy writer searches instead of trying the next number.
const SEARCH_AFTER_LOSSES: u32 = 8;

/// What one conditional PUT came to (a final failure is the `Err` beside it).
enum Attempt {
    /// Our delta is at this number (this PUT, or an earlier ambiguous one of ours).
    Committed,
    /// Lost to another writer's committed delta at this number.
    Lost,
    /// A failure that settles nothing (timeout, 5xx, a 409 whose winner has not landed).
    Failed(Error),
}

impl PartitionCommitter {
    pub fn new(
        storage: Storage,
        layout: StoreLayout,
        partition: u32,
        policy: CommitPolicy,
        clock: Arc<dyn Clock>,
        writer_id: &str,
        stats: Arc<CommitStats>,
    ) -> Self {
        let seed = crate::partition::fnv1a_64(format!("{writer_id}/{partition}").as_bytes());
        PartitionCommitter {
            writer_id: writer_id.to_owned(),
            rng: StdRng::seed_from_u64(seed),
            hint: HintPublisher::start(
                storage.clone(),
                layout.clone(),
                partition,
                clock.clone(),
                stats.clone(),
            ),
            stats,
            storage,
            layout,
            partition,
            policy,
            clock,
            tip: None,
        }
    }

    /// A handle that writes this partition's pending tip hint at once.
    pub fn hint_flusher(&self) -> HintFlush {
        self.hint.flusher()
    }

    fn age(&self, tip: &KnownTip) -> Duration {
        self.clock.elapsed().saturating_sub(tip.at)
    }

    /// The committer's time.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The counters this committer adds to (shared by the writer's partitions).
    pub fn stats(&self) -> &CommitStats {
        &self.stats
    }

    /// Commits `body` (an encoded delta carrying `batch_id`) as the partition's next delta
    /// and returns its sequence number.
    pub async fn commit(&mut self, body: Bytes, batch_id: &str) -> Result<u64> {
        let started = self.clock.elapsed();
        let bytes = body.len() as u64;
        let result = self.commit_once(body, batch_id).await;
        match &result {
            Ok(_) => self
                .stats
                .committed(bytes, self.clock.elapsed().saturating_sub(started)),
            Err(_) => self.stats.failed(),
        }
        result
    }

    async fn commit_once(&mut self, body: Bytes, batch_id: &str) -> Result<u64> {
        let mut failures = 0u32;
        let mut lost_races = 0u32;
        // Sequence numbers where an attempt of ours may have landed without us knowing.
        let mut ambiguous: HashSet<u64> = HashSet::new();
        // A writer whose tip is more than a second old was idle: others may have gone far
        // ahead, so a lost race sends it searching at once. A busy writer loses races by one
        // and tries the next number, searching only after many losses in a row.
        let mut idle = self.tip.is_none_or(|t| self.age(&t) >= IDLE_AFTER);
        // Whether this writer learned of others' commits during this one: then it publishes
        // its commit as the tip hint, so the next idle writer finds the tip exactly.
        let mut overtaken = false;
        if idle && self.tip.is_some_and(|t| self.age(&t) < TIP_TTL) {
            // Others may have moved the log on while this writer was idle: a fresh hint says
            // how far. (Read before the first attempt, not beside it: on the S3 emulator a
            // lost PUT beside the GET measured slower than the GET alone; rfcs/0004.)
            // Followed, it makes this writer a busy one: lost races from there are by one.
            if let Some(ahead) = self.read_hint().await {
                // The hinted delta must be a committed one before anything is written after
                // it: one GET. A hint naming a number that is not there is ignored; one
                // naming an object that is not a committed delta stops the commit. Beside
                // that GET, a HEAD of the number after it: hints are published on every
                // 64th number, after a burst and by overtaken writers, so one may trail the
                // tip; then one LIST from it finds the tip.
                let after = self
                    .layout
                    .delta(self.partition, ahead.seq.saturating_add(1));
                let (hinted, next) = futures::join!(
                    read_committed(&self.storage, &self.layout, self.partition, ahead.seq),
                    exists(&self.storage, &after),
                );
                match hinted {
                    Ok(Some(meta)) => {
                        overtaken = true;
                        idle = false;
                        self.tip = Some(KnownTip {
                            committed_at: created_at(&meta),
                            ..ahead
                        });
                        if !matches!(next, Ok(false)) {
                            self.follow_trailing_hint(ahead).await;
                        }
                    }
                    Ok(None) => tracing::warn!(
                        partition = self.partition,
                        hint = ahead.seq,
                        "ignoring a tip hint that names a delta which is not there"
                    ),
                    Err(e) if e.kind() == ErrorKind::Corrupt => return Err(e),
                    Err(e) => {
                        tracing::warn!(partition = self.partition, error = %e, "ignoring the tip hint: its delta could not be read")
                    }
                }
            }
        }
        loop {
            let known = self.tip.map(|t| t.seq);
            let tip = match self.known_tip(idle, lost_races).await {
                Ok(tip) => tip,
                Err(e) if e.kind() == ErrorKind::Corrupt => return Err(e),
                Err(e) => {
                    self.failed(&mut failures, e).await?;
                    continue;
                }
            };
            // A tip beyond what this writer knew (or any tip, for a writer that knew none) was
            // committed by others.
            overtaken |= known.map_or(tip > 0, |k| k < tip);
            let seq = next_seq(tip, self.partition)?;
            crate::failpoint!("writer.commit.before_put");
            match self.attempt(seq, &body, batch_id, &ambiguous).await? {
                Attempt::Committed => {
                    let predecessor = self.tip.and_then(|t| t.committed_at);
                    self.committed(seq, overtaken);
                    tracing::debug!(partition = self.partition, seq, "committed delta");
                    self.wake_if_quiet(seq, predecessor).await;
                    return Ok(seq);
                }
                Attempt::Lost => {
                    overtaken = true;
                    self.stats.lost_race();
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
                        &mut self.rng,
                        self.policy.race_backoff_base,
                        self.policy.race_backoff_cap,
                        lost_races.min(8),
                    );
                    self.clock.sleep(wait).await;
                }
                Attempt::Failed(e) => {
                    // The PUT may or may not have landed: remember, and retry the same number.
                    ambiguous.insert(seq);
                    crate::failpoint!("writer.commit.after_ambiguous");
                    tracing::warn!(partition = self.partition, seq, error = %e, "delta PUT failed; retrying the same sequence number");
                    if failures + 1 > self.policy.max_transient_failures {
                        // Before giving up, settle whether it landed: a caller told "failed"
                        // must be able to trust that nothing was committed.
                        if let Ok(true) = self.landed_as_ours(seq, batch_id).await {
                            let predecessor = self.tip.and_then(|t| t.committed_at);
                            self.committed(seq, overtaken);
                            self.wake_if_quiet(seq, predecessor).await;
                            return Ok(seq);
                        }
                        return Err(after_attempts(e, failures + 1));
                    }
                    self.failed(&mut failures, e).await?;
                }
            }
        }
    }

    /// The tip to write after, searched for when unknown, expired or after losses (as the
    /// module's invariants say), and checked to be a committed delta before it is used.
    async fn known_tip(&mut self, idle: bool, lost_races: u32) -> Result<u64> {
        let search = match self.tip {
            None => Some(Knowledge::Old),
            Some(t) if self.age(&t) >= TIP_TTL => Some(Knowledge::Old),
            Some(_) if lost_races == 0 => None,
            // One search brings an idle writer up to date; after it, it is a busy one.
            Some(_) if idle && lost_races == 1 => Some(Knowledge::Recent),
            Some(_) if lost_races < SEARCH_AFTER_LOSSES => None,
            Some(_) => Some(Knowledge::Fresh),
        };
        let mut tip = match (self.tip, search) {
            (Some(t), None) => t,
            (known, search) => {
                self.stats.searched();
                let seq = find_tip(
                    &self.storage,
                    &self.layout,
                    self.partition,
                    known.map_or(0, |t| t.seq),
                    search.unwrap_or(Knowledge::Old),
                )
                .await?;
                match known {
                    Some(k) if k.checked && k.seq == seq => KnownTip {
                        at: self.clock.elapsed(),
                        ..k
                    },
                    _ => KnownTip::unchecked(seq, self.clock.elapsed()),
                }
            }
        };
        if !tip.checked {
            tip.committed_at = self.check_tip(tip.seq).await?;
            tip.checked = true;
        }
        self.tip = Some(tip);
        Ok(tip.seq)
    }

    /// Checks that delta `seq`, which a search or a hint named as the tip, is committed: one
    /// GET. A delta retention removed because a committed snapshot covers it counts (a
    /// snapshot at `seq` is proof); any other absence is a failure to retry (the search is
    /// repeated), and an object that is not a committed delta is refused.
    /// Returns when the delta was committed, when it says.
    async fn check_tip(&mut self, seq: u64) -> Result<Option<SystemTime>> {
        if let Some(meta) = read_committed(&self.storage, &self.layout, self.partition, seq).await?
        {
            return Ok(created_at(&meta));
        }
        let snapshots = list_snapshot_seqs(&self.storage, &self.layout, self.partition).await?;
        if snapshots.contains(&seq) {
            return Ok(None);
        }
        self.tip = None;
        Err(Error::StorageMessage {
            context: format!("checking delta {seq} of partition {}", self.partition),
            message: "the search named it as the tip, but it is not there; searching again".into(),
        })
    }

    /// One conditional PUT at `seq`. On "already exists", what is there is read: ours from an
    /// earlier ambiguous attempt (committed), another writer's committed delta (a lost race:
    /// it becomes the tip, checked), or something else (refused: nothing is written past it).
    async fn attempt(
        &mut self,
        seq: u64,
        body: &Bytes,
        batch_id: &str,
        ambiguous: &HashSet<u64>,
    ) -> Result<Attempt> {
        let path = self.layout.delta(self.partition, seq);
        // The trailer names the number it is committed at (readers check it).
        let placed = crate::delta::place_delta(body, seq)?;
        let error = match try_create(&self.storage, &path, placed).await? {
            CreateAnswer::Created => return Ok(Attempt::Committed),
            CreateAnswer::NoAnswer(e) => return Ok(Attempt::Failed(e)),
            CreateAnswer::Taken { error, .. } => error,
        };
        // S3 answers 409 ConditionalRequestConflict when another conditional write to the key
        // is in flight, without saying it will succeed: absence then means "not yet", and the
        // same number is tried again. A 412 means an object is there.
        let found = match read_delta(&self.storage, &self.layout, self.partition, seq).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                tracing::debug!(
                    partition = self.partition,
                    seq,
                    "conflicting write in flight; retrying the same number"
                );
                return Ok(Attempt::Failed(error));
            }
            Err(read) => return Ok(Attempt::Failed(read)),
        };
        let meta = check_predecessor(&found, &self.layout, self.partition, seq)?;
        if ambiguous.contains(&seq) && meta.batch_id == batch_id {
            tracing::info!(
                partition = self.partition,
                seq,
                "an earlier ambiguous attempt had committed the batch"
            );
            return Ok(Attempt::Committed);
        }
        self.tip = Some(KnownTip {
            seq,
            at: self.clock.elapsed(),
            checked: true,
            committed_at: created_at(&meta),
        });
        Ok(Attempt::Lost)
    }

    /// Counts a failure; past the policy's limit, returns it; otherwise waits a backoff.
    async fn failed(&mut self, failures: &mut u32, e: Error) -> Result<()> {
        *failures += 1;
        if *failures > self.policy.max_transient_failures {
            return Err(e);
        }
        tracing::warn!(partition = self.partition, error = %e, attempt = *failures, "commit attempt failed; retrying");
        let wait = jitter(
            &mut self.rng,
            self.policy.failure_backoff_base,
            self.policy.failure_backoff_cap,
            *failures,
        );
        self.clock.sleep(wait).await;
        Ok(())
    }

    fn committed(&mut self, seq: u64, overtaken: bool) {
        self.tip = Some(KnownTip {
            seq,
            at: self.clock.elapsed(),
            checked: true,
            committed_at: Some(self.clock.now()),
        });
        crate::failpoint!("writer.commit.before_hint");
        self.hint.publish(seq, overtaken);
    }

    /// After a hint whose next number is taken (or could not be checked): one LIST from the
    /// hint finds the tip, which the loop then checks before writing after it. A failure
    /// leaves the hinted number as the tip: the first attempt loses and searches.
    async fn follow_trailing_hint(&mut self, hinted: KnownTip) {
        self.stats.searched();
        match find_tip(
            &self.storage,
            &self.layout,
            self.partition,
            hinted.seq,
            Knowledge::Fresh,
        )
        .await
        {
            Ok(seq) if seq > hinted.seq => {
                self.tip = Some(KnownTip::unchecked(seq, self.clock.elapsed()));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(partition = self.partition, error = %e, "no tip after the hint's; trying after the hint")
            }
        }
    }

    /// Replaces the store's wake signal when delta `seq` ends a quiet spell: its predecessor
    /// was committed `WAKE_AFTER` or longer ago, or when is unknown. Before the commit is
    /// acknowledged (so that idle readers learn of it within their check interval), tried
    /// twice; a failure is logged and counted, never the commit's: the delta is durable, and
    /// readers find it at their next slow poll of the partition.
    async fn wake_if_quiet(&self, seq: u64, predecessor: Option<SystemTime>) {
        let now = self.clock.now();
        let quiet = seq == 1
            || predecessor
                .is_none_or(|at| now.duration_since(at).unwrap_or_default() >= WAKE_AFTER);
        if !quiet {
            return;
        }
        let signal = Wake {
            partition: self.partition,
            seq,
            committed_at: now,
            writer: self.writer_id.clone(),
        };
        for attempt in 1..=2 {
            match wake::write(&self.storage, &self.layout, &signal).await {
                Ok(()) => {
                    self.stats.woke(true);
                    return;
                }
                Err(e) => {
                    tracing::warn!(partition = self.partition, seq, attempt, error = %e, "the wake signal was not written")
                }
            }
        }
        self.stats.woke(false);
    }

    /// The partition's tip hint as a tip (its number, confirmed when it was committed), when
    /// it is fresh and ahead of what this writer knows; otherwise, and for a missing or
    /// damaged hint, `None`. The caller checks the hinted delta before writing after it.
    async fn read_hint(&self) -> Option<KnownTip> {
        let known = self.tip?.seq;
        self.stats.read_hint();
        let hint = match tip_hint::read(&self.storage, &self.layout, self.partition).await {
            Ok(hint) => hint?,
            Err(e) => {
                // A damaged or unreadable hint costs a search, nothing else: say so.
                tracing::warn!(partition = self.partition, error = %e, "ignoring the tip hint");
                return None;
            }
        };
        let now = self.clock.now();
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
        Some(KnownTip {
            seq: hint.seq,
            // A hint older than this writer's clock cannot be placed on it: not followed.
            at: self.clock.elapsed().checked_sub(age)?,
            checked: true,
            committed_at: Some(hint.committed_at),
        })
    }

    /// Whether delta `seq` exists and carries `batch_id`.
    async fn landed_as_ours(&self, seq: u64, batch_id: &str) -> Result<bool> {
        match read_delta(&self.storage, &self.layout, self.partition, seq).await? {
            None => Ok(false),
            Some(bytes) => Ok(
                check_predecessor(&bytes, &self.layout, self.partition, seq)?.batch_id == batch_id,
            ),
        }
    }
}
