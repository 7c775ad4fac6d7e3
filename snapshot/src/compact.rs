//! Compacting one partition: fold the deltas after the newest snapshot into an overlay, merge
//! it with the snapshot's sorted stream, write the new snapshot, commit its manifest.
//!
//! Invariants:
//! - A snapshot at sequence `s` equals the partition's state after deltas 1..=s (the model in
//!   `ikv_core::model`), one row per live document, sorted by key bytes.
//! - Files go to a directory unique to this run; the manifest, written last with a
//!   conditional create, is the only thing that makes them visible. A crash or a lost race
//!   leaves unreferenced files, never a mixed or partial snapshot.
//! - Memory: the overlay (what the merged deltas touched) plus one read batch and one write
//!   batch; it does not grow with the store.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use ikv_core::bucket::ObjectMeta;
use ikv_core::clock::Stopwatch;
use ikv_core::{Error, Result, Storage, StoreConfig, StoreLayout};

use crate::fetch::{DeltaFetcher, Fetched};
use crate::layer::{LayerChanges, Stack, StackDocs};
use crate::manifest::{FoldedImport, KEY_COLUMN, Manifest, plan_columns};
use crate::merge::{MergedRuns, RunInput};
use crate::options::SnapshotOptions;
use crate::overlay::Overlay;
use crate::read::SnapshotStream;
use crate::rows::SnapshotDoc;
use crate::write::SnapshotWriter;

/// What a pass did to one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionOutcome {
    /// No deltas after the newest snapshot.
    UpToDate { sequence: u64 },
    /// New deltas, but no trigger fired; `oldest` is the age of the oldest of them.
    NotDue {
        deltas: usize,
        bytes: u64,
        oldest: Duration,
    },
    /// One or more snapshots committed; the last covers `sequence`.
    Snapshotted {
        sequence: u64,
        rows: u64,
        deltas_merged: usize,
        delta_rows_merged: u64,
        rounds: usize,
        /// Bytes of the snapshot files the rounds wrote.
        bytes_written: u64,
        /// Rounds that wrote a layer (only what changed) rather than a full snapshot.
        layers: usize,
    },
    /// Another compactor committed the snapshot at `sequence` first.
    LostRace { sequence: u64 },
}

impl std::fmt::Display for PartitionOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PartitionOutcome::UpToDate { sequence } => write!(f, "up to date at {sequence}"),
            PartitionOutcome::NotDue { deltas, bytes, .. } => {
                write!(
                    f,
                    "not due ({deltas} deltas, {bytes} bytes since the last snapshot)"
                )
            }
            PartitionOutcome::Snapshotted {
                sequence,
                rows,
                deltas_merged,
                rounds,
                layers,
                ..
            } if *layers == *rounds => write!(
                f,
                "layer at {sequence}: {rows} changed documents, {deltas_merged} deltas merged in {rounds} round(s)"
            ),
            PartitionOutcome::Snapshotted {
                sequence,
                rows,
                deltas_merged,
                rounds,
                ..
            } => write!(
                f,
                "snapshot at {sequence}: {rows} documents, {deltas_merged} deltas merged in {rounds} round(s)"
            ),
            PartitionOutcome::LostRace { sequence } => {
                write!(f, "another compactor committed {sequence} first")
            }
        }
    }
}

/// The deltas after `after`, ascending, checked to be dense; and the lowest sequence number
/// still in the log (`u64::MAX` when it is empty): imports folded by a delta below it are
/// named by no delta any more. One listing gives both.
pub(crate) async fn deltas_after(
    storage: &Storage,
    layout: &StoreLayout,
    partition: u32,
    after: u64,
) -> Result<(Vec<(u64, ObjectMeta)>, u64)> {
    let listed = ikv_core::bucket::list_deltas(storage, layout, partition).await?;
    let first_in_log = listed.iter().map(|(s, _)| *s).min().unwrap_or(u64::MAX);
    let deltas: Vec<(u64, ObjectMeta)> = listed.into_iter().filter(|(s, _)| *s > after).collect();
    for (expected, (seq, _)) in (after + 1..).zip(&deltas) {
        if *seq != expected {
            return Err(Error::Corrupt {
                what: format!("log of partition {partition}"),
                reason: format!(
                    "delta {expected} is missing but {seq} exists (snapshot covers {after})"
                ),
            });
        }
    }
    Ok((deltas, first_in_log))
}

fn age(now: SystemTime, meta: &ObjectMeta) -> Duration {
    let modified: SystemTime = meta.last_modified.into();
    now.duration_since(modified).unwrap_or_default()
}

/// The expiry (ms since the Unix epoch) at or before which a pass at `now` drops values.
pub fn expired_by(now: SystemTime, options: &SnapshotOptions) -> i64 {
    let by = now
        .checked_sub(options.retention.window)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    by.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Whether a manifest's columns hold expiries (companion fields).
fn has_expiry_columns(manifest: &Manifest) -> bool {
    manifest
        .columns
        .iter()
        .any(|c| ikv_core::expiry::field_of_companion(&c.field).is_some())
}

/// Whether any snapshot of a stack holds event times (then a round over it weighs sets of
/// fields it has not touched against the base's values: [`Overlay::order_against_base_events`]).
pub fn has_event_columns(stack: &Stack) -> bool {
    std::iter::once(&stack.full)
        .chain(&stack.layers)
        .flat_map(|m| &m.columns)
        .any(|c| ikv_core::event_time::field_of_event(&c.field).is_some())
}

/// Runs the compactor on one partition.
pub async fn snapshot_partition(
    storage: &Storage,
    config: &StoreConfig,
    partition: u32,
    options: &SnapshotOptions,
    now: SystemTime,
) -> Result<PartitionOutcome> {
    let layout = StoreLayout::new(&storage.prefix, &config.store_name)?;
    let mut base = match Manifest::load_newest(storage, &layout, partition).await? {
        Some(top) => Some(Stack::load(storage, &layout, top).await?),
        None => None,
    };
    let base_seq = base.as_ref().map_or(0, |s| s.top().sequence);
    let (deltas, first_in_log) = deltas_after(storage, &layout, partition, base_seq).await?;
    if deltas.is_empty() {
        return Ok(PartitionOutcome::UpToDate { sequence: base_seq });
    }
    let bytes: u64 = deltas.iter().map(|(_, m)| m.size).sum();
    let due = options.force
        || deltas.len() >= options.triggers.min_deltas
        || bytes >= options.triggers.min_bytes
        || age(now, &deltas[0].1) >= options.triggers.max_age;
    if !due {
        return Ok(PartitionOutcome::NotDue {
            deltas: deltas.len(),
            bytes,
            oldest: age(now, &deltas[0].1),
        });
    }
    let (mut rounds, mut rows, mut delta_rows, mut bytes_written) = (0, 0, 0, 0);
    let mut layers = 0;
    let mut fetcher = DeltaFetcher::new(storage, &layout, partition, &deltas);
    // A round ends before the delta that would take the fold's memory past the budget, and
    // before an import (an import opens its round: its documents are merged with the
    // previous snapshot before later deltas fold onto them).
    // Expired values are dropped once the pass's clock is a retention window past their
    // expiry: a reader whose clock lags the pass's by less still judged them expired.
    let expired_by = expired_by(now, options);
    let mut round = Round::new(&config.primary_key_field, expired_by, base.as_ref());
    // When the current round began folding: the log reports the fold and the write apart.
    let mut round_started = Stopwatch::start();
    loop {
        let next = fetcher.next().await?;
        let opens_round = match &next {
            Some((_, size, delta)) => {
                matches!(delta, Fetched::Import(_))
                    || (round.deltas > 0
                        && round.overlay.memory_bytes() as u64 + size > options.round_budget())
            }
            None => true,
        };
        if opens_round && round.deltas > 0 {
            let finished = std::mem::replace(
                &mut round,
                Round::new(&config.primary_key_field, expired_by, None),
            );
            let round_rows = finished.overlay.rows_applied;
            delta_rows += round_rows;
            let (fold, write_started) = (round_started.elapsed(), Stopwatch::start());
            let (manifest, stack) = write_snapshot(
                storage,
                config,
                &layout,
                partition,
                base.take(),
                finished,
                first_in_log,
                options,
                now,
            )
            .await?;
            rounds += 1;
            layers += usize::from(manifest.is_layer());
            rows = manifest.row_count;
            bytes_written += manifest.files.iter().map(|f| f.bytes).sum::<u64>();
            let sequence = manifest.sequence;
            ikv_core::failpoint!("snapshot.before_manifest");
            if !manifest.commit(storage, &layout).await? {
                tracing::info!(store = %config.store_name, partition, sequence, "another compactor committed this snapshot first");
                return Ok(PartitionOutcome::LostRace { sequence });
            }
            tracing::info!(
                store = %config.store_name,
                partition,
                sequence,
                rows,
                files = manifest.files.len(),
                delta_rows = round_rows,
                fold_ms = fold.as_millis() as u64,
                write_ms = write_started.elapsed().as_millis() as u64,
                "snapshot committed"
            );
            ikv_core::failpoint!("snapshot.round_committed");
            // The next round (made before this one's snapshot existed) weighs against it.
            if has_event_columns(&stack) {
                round.overlay.order_against_base_events();
            }
            base = Some(stack);
            round_started = Stopwatch::start();
        }
        let Some((seq, _, delta)) = next else {
            break;
        };
        // A stack due for folding is folded by this round: its layers' changes go into the
        // overlay first, so the round merges with the full snapshot alone (the fast path).
        // Not under an import, whose documents lie below the overlay, nor when the layers
        // would take the overlay past the round's budget (their files, decompressed, are
        // counted at four times their size): then the round merges documents with the
        // stack as it streams, in bounded memory.
        if round.deltas == 0
            && !matches!(delta, Fetched::Import(_))
            && let Some(stack) = base.as_ref()
            && !stack.layers.is_empty()
            && !options.layering.allows(
                stack.layers.len() + 1,
                stack.layer_rows(),
                stack.full.row_count,
            )
            && stack.layer_bytes().saturating_mul(4) <= options.round_budget()
        {
            round.preload(storage, &layout, stack).await?;
        }
        round.deltas += 1;
        round.sequence = seq;
        match delta {
            Fetched::Import(delta) => {
                // `Fetched::decode` made it an import only if it has import rows.
                let import = delta.import()?.ok_or_else(|| Error::Corrupt {
                    what: layout.delta(partition, seq).to_string(),
                    reason: "an import delta without import rows".into(),
                })?;
                let mut runs = Vec::with_capacity(import.runs.len());
                for run in &import.runs {
                    runs.push(Manifest::decode_import_spec(
                        run.spec,
                        &layout,
                        partition,
                        run.id,
                        layout.delta(partition, seq).as_ref(),
                    )?);
                }
                // Imported documents with event times weigh later sets of the round.
                if runs.iter().any(|m| {
                    m.columns
                        .iter()
                        .any(|c| ikv_core::event_time::field_of_event(&c.field).is_some())
                }) {
                    round.overlay.order_against_base_events();
                }
                round.import = Some((import.replace, runs, seq));
            }
            Fetched::Rows(delta) => round.overlay.apply_delta(&delta)?,
        }
    }
    Ok(PartitionOutcome::Snapshotted {
        sequence: deltas.last().map_or(base_seq, |(s, _)| *s),
        rows,
        deltas_merged: deltas.len(),
        delta_rows_merged: delta_rows,
        rounds,
        bytes_written,
        layers,
    })
}

/// The deltas of one round: an import that opens it (replacing or not, its runs' descriptions,
/// its sequence number) and the others folded into an overlay; whether the base stack's
/// layers were folded in first (then the round's base is the stack's full snapshot).
struct Round {
    deltas: usize,
    sequence: u64,
    import: Option<(bool, Vec<Manifest>, u64)>,
    overlay: Overlay,
    preloaded: bool,
}

impl Round {
    /// A round over `base` that leaves out values expired by `expired_by` (ms since the Unix
    /// epoch).
    fn new(primary_key_field: &str, expired_by: i64, base: Option<&Stack>) -> Round {
        let mut overlay = Overlay::new(primary_key_field);
        overlay.drop_expired_by(expired_by);
        if base.is_some_and(has_event_columns) {
            overlay.order_against_base_events();
        }
        Round {
            deltas: 0,
            sequence: 0,
            import: None,
            overlay,
            preloaded: false,
        }
    }

    /// Folds the stack's layers into the overlay, as the deltas they came from would have
    /// been (a layer never holds a store-wide drop, so its changes are field sets, field
    /// deletes and document deletes).
    async fn preload(
        &mut self,
        storage: &Storage,
        layout: &StoreLayout,
        stack: &Stack,
    ) -> Result<()> {
        let mut changes = LayerChanges::open(storage, layout, stack.layers.clone()).await?;
        while let Some((key, change)) = changes.next_change().await? {
            if change.replaces {
                self.overlay
                    .apply(&ikv_core::DeltaOp::DeleteDocument { key: key.clone() });
            }
            for field in change.unset {
                self.overlay.apply(&ikv_core::DeltaOp::DeleteField {
                    key: key.clone(),
                    field,
                });
            }
            for (field, value) in change.set {
                self.overlay.apply(&ikv_core::DeltaOp::SetField {
                    key: key.clone(),
                    field,
                    value,
                    expires_ms: None,
                    event_us: None,
                });
            }
        }
        // Rows counted are the deltas' (for the pass's report), not the layers'.
        self.overlay.rows_applied = 0;
        self.preloaded = true;
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
async fn write_snapshot(
    storage: &Storage,
    config: &StoreConfig,
    layout: &StoreLayout,
    partition: u32,
    base: Option<Stack>,
    round: Round,
    first_in_log: u64,
    options: &SnapshotOptions,
    now: SystemTime,
) -> Result<(Manifest, Stack)> {
    let Round {
        sequence,
        import,
        overlay,
        preloaded,
        ..
    } = round;
    let overlay = &overlay;
    let base_sequence = base.as_ref().map_or(0, |s| s.top().sequence);
    // Imports whose delta is still in the log stay listed, for retention.
    let mut imports: Vec<FoldedImport> = base
        .as_ref()
        .map(|s| s.top().imports.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|i| i.sequence >= first_in_log)
        .collect();
    let run = uuid::Uuid::new_v4().to_string();
    let dir = layout.snapshot_dir(partition, sequence);
    let manifest = |files: Vec<crate::manifest::SnapshotFile>, columns, imports, stacked_on| {
        let row_count = files
            .iter()
            .map(|f: &crate::manifest::SnapshotFile| f.rows)
            .sum();
        Manifest {
            format_version: Manifest::new_version(),
            store_name: config.store_name.clone(),
            partition,
            sequence,
            base_sequence,
            primary_key_field: config.primary_key_field.clone(),
            // The pass's own time (a parameter, like every time the compactor judges by).
            created_at_ms: now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            writer_id: run.clone(),
            row_count,
            files,
            key_column: KEY_COLUMN.to_owned(),
            columns,
            import_id: None,
            imports,
            stacked_on,
        }
    };
    // Values with expiries are dropped when they expire, which only a merge of every row
    // does: a store holding any compacts by full snapshots (docs/OPERATIONS.md).
    let expiries = overlay.has_expiries()
        || base.as_ref().is_some_and(|s| {
            std::iter::once(&s.full)
                .chain(&s.layers)
                .any(has_expiry_columns)
        });
    // Only what changed, over the stack below, when the round allows it: no import, no
    // store-wide drop, and the stack stays within its limits with one more layer.
    if let Some(stack) = base.as_ref().filter(|_| !preloaded && !expiries)
        && import.is_none()
        && overlay.globals.is_empty()
        && !overlay.base_dropped
        && options.layering.allows(
            stack.layers.len() + 1,
            stack.layer_rows() + overlay.len() as u64,
            stack.full.row_count,
        )
    {
        let columns = plan_columns(&overlay.written_columns());
        let mut writer =
            SnapshotWriter::new_layer(storage.clone(), &dir, &run, columns, options.files.clone())?;
        crate::columnar::write_layer(overlay, &mut writer).await?;
        let (files, columns) = writer.finish().await?;
        let mut stacked_on = vec![stack.full.sequence];
        stacked_on.extend(stack.layers.iter().map(|m| m.sequence));
        let layer = manifest(files, columns, imports, stacked_on);
        let mut stack = stack.clone();
        stack.layers.push(layer.clone());
        return Ok((layer, stack));
    }
    let replace = import.as_ref().is_some_and(|(replace, _, _)| *replace);
    // A preloaded round's layers are in the overlay: its base is the stack's full snapshot.
    let base: Option<Stack> = base.filter(|_| !replace).map(|s| {
        if preloaded {
            Stack {
                full: s.full,
                layers: Vec::new(),
            }
        } else {
            s
        }
    });
    let from_import = import.is_some();
    let runs: Vec<Manifest> = import
        .map(|(_, runs, seq)| {
            for m in &runs {
                imports.push(FoldedImport {
                    id: m.import_id.clone().unwrap_or_default(),
                    sequence: seq,
                });
            }
            runs
        })
        .unwrap_or_default();
    let mut pairs: BTreeSet<_> = overlay.written_columns();
    let (base, runs) = if overlay.base_dropped {
        (None, Vec::new())
    } else {
        (base, runs)
    };
    let column_sources = base
        .iter()
        .flat_map(|s| std::iter::once(&s.full).chain(&s.layers))
        .chain(&runs);
    for m in column_sources {
        for c in &m.columns {
            if overlay.base_field_survives(&c.field) {
                pairs.insert((c.field.clone(), c.field_type));
            }
        }
    }
    let columns = plan_columns(&pairs);
    let mut writer =
        SnapshotWriter::new(storage.clone(), &dir, &run, columns, options.files.clone())?;
    // One full snapshot as the only base and no store-wide drop: untouched rows are copied as
    // Arrow slices.
    let stacked = base.as_ref().is_some_and(|s| !s.layers.is_empty());
    let columnar = base.is_some()
        && runs.is_empty()
        && !from_import
        && !stacked
        && overlay.globals.is_empty()
        && !expiries;
    if columnar && let Some(base) = base {
        let stream = SnapshotStream::new(storage.clone(), layout.clone(), base.full);
        crate::columnar::merge(stream, overlay, &mut writer).await?;
    } else {
        let mut inputs: Vec<RunInput> = Vec::new();
        if let Some(base) = base {
            inputs.push(if base.layers.is_empty() {
                RunInput::Files(SnapshotStream::new(
                    storage.clone(),
                    layout.clone(),
                    base.full,
                ))
            } else {
                RunInput::Stack(StackDocs::from_stack(storage, layout, base).await?)
            });
        }
        for m in runs {
            inputs.push(SnapshotStream::new(storage.clone(), layout.clone(), m).into());
        }
        merge_documents(inputs, overlay, &mut writer).await?;
    }
    let (files, columns) = writer.finish().await?;
    let full = manifest(files, columns, imports, Vec::new());
    Ok((
        full.clone(),
        Stack {
            full,
            layers: Vec::new(),
        },
    ))
}

/// The document path: the round's base documents (the previous snapshot, unless an import
/// replaces it, and the import's runs, merged by key) resolved one by one with the overlay.
async fn merge_documents(
    streams: Vec<RunInput>,
    overlay: &Overlay,
    writer: &mut SnapshotWriter,
) -> Result<()> {
    let mut base_docs = MergedRuns::open(streams).await?;
    let mut next_base: Option<SnapshotDoc> = base_docs.next_doc().await?;
    let sorted = overlay.sorted();
    let mut changes = sorted.iter().copied().peekable();
    let table = overlay.column_table(writer.columns());
    let mut row = Vec::new();
    loop {
        let take_base = match (&next_base, changes.peek()) {
            (None, None) => break,
            (Some(_), None) => Some(false),
            (None, Some(_)) => None,
            (Some((bk, _)), Some((ck, _))) => match bk.as_slice().cmp(ck) {
                std::cmp::Ordering::Less => Some(false),
                std::cmp::Ordering::Equal => Some(true),
                std::cmp::Ordering::Greater => None,
            },
        };
        let Some(touched) = take_base else {
            // A key only the deltas know: its row straight from the change.
            let Some((key, change)) = changes.next() else {
                break;
            };
            if overlay.fill_row(change, &table, &mut row)? {
                writer.push_values(key, &row).await?;
            }
            continue;
        };
        let Some((key, doc)) = next_base.take() else {
            break;
        };
        // A base document, touched by the deltas or not.
        let change = if touched {
            changes.next().map(|(_, c)| c)
        } else {
            None
        };
        next_base = base_docs.next_doc().await?;
        if let Some(doc) = overlay.resolve(Some(doc), change)? {
            writer.push((key, doc)).await?;
        }
    }
    Ok(())
}
