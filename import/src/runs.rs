//! Gathering an import's rows by partition and writing each partition's share as one sorted
//! run of Parquet files in the snapshot format, under `p<part>/imports/<run id>/`.
//!
//! Nothing written here is visible: a run becomes part of the store only when a delta that
//! names it is committed ([`crate::commit`]). A crash leaves unreferenced files, which
//! retention removes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow_array::{ArrayRef, BinaryArray, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::{StreamExt, TryStreamExt};
use ikv_core::arrow_column::data_type;
use ikv_core::partition::partition_of;
use ikv_core::{Error, FieldType, Result, Storage, StoreConfig, StoreLayout};
use ikv_snapshot_format::manifest::{KEY_COLUMN, Manifest, plan_columns};
use ikv_snapshot_format::write::{FileLayout, SnapshotWriter};

use crate::budget::MemoryBudget;
use crate::columns::{ImportSchema, canonical, key_bytes};
use crate::sort::{SortedRows, batch_of};

/// Rows gathered by partition, not yet written, and the runs written so far.
pub struct RunBuilder {
    config: StoreConfig,
    schema: Option<ImportSchema>,
    /// `_ikv_key` then one column per imported field, canonical types.
    gathered_schema: Option<SchemaRef>,
    partitions: BTreeMap<u32, Vec<RecordBatch>>,
    /// Arrow memory held by `partitions`.
    gathered_bytes: usize,
    budget: MemoryBudget,
    rows: u64,
    partition_rows: BTreeMap<u32, u64>,
    /// Runs written by earlier flushes, per partition in the order written.
    written: BTreeMap<u32, Vec<(Manifest, RunStats)>>,
    /// What rows' times to live count from.
    clock: Arc<dyn ikv_core::clock::Clock>,
}

/// What one partition's run holds, for progress and receipts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunStats {
    pub rows_in: u64,
    /// Rows merged into an earlier row of the same key.
    pub rows_combined: u64,
}

impl RunBuilder {
    pub fn new(
        config: StoreConfig,
        budget: MemoryBudget,
        clock: Arc<dyn ikv_core::clock::Clock>,
    ) -> RunBuilder {
        RunBuilder {
            clock,
            config,
            schema: None,
            gathered_schema: None,
            partitions: BTreeMap::new(),
            gathered_bytes: 0,
            budget,
            rows: 0,
            partition_rows: BTreeMap::new(),
            written: BTreeMap::new(),
        }
    }

    pub fn store_name(&self) -> &str {
        &self.config.store_name
    }

    /// Rows added so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Rows added so far, by partition.
    pub fn partition_rows(&self) -> BTreeMap<u32, u64> {
        self.partition_rows.clone()
    }

    /// Whether the gathered rows reached their share of the memory budget: time to write
    /// them as runs ([`RunBuilder::flush`]).
    pub fn must_flush(&self) -> bool {
        self.gathered_bytes >= self.budget.gathered_bytes()
    }

    /// Checks `batch` and returns its rows (`_ikv_key`, then a column per imported field,
    /// canonical types) with each row's partition. Changes nothing but the import's schema,
    /// fixed by the first batch.
    fn canonical_rows(&mut self, batch: &RecordBatch) -> Result<Option<(RecordBatch, Vec<u32>)>> {
        let schema = match &self.schema {
            Some(s) => {
                s.check_batch(batch)?;
                s
            }
            None => {
                let s = ImportSchema::new(&self.config, batch.schema())?;
                let mut fields = vec![Field::new(KEY_COLUMN, DataType::Binary, false)];
                for (name, field_type) in s.stored_fields() {
                    fields.push(Field::new(&name, data_type(field_type), true));
                }
                self.gathered_schema = Some(Arc::new(Schema::new(fields)));
                self.schema.insert(s)
            }
        };
        let Some(gathered) = self.gathered_schema.clone() else {
            return Ok(None);
        };
        let input = batch.schema();
        let key_name = input.field(schema.key).name();
        let keys = key_bytes(key_name, batch.column(schema.key), self.rows)?;
        let partition_keys = if schema.partition_key == schema.key {
            None
        } else {
            let name = input.field(schema.partition_key).name();
            Some(key_bytes(
                name,
                batch.column(schema.partition_key),
                self.rows,
            )?)
        };
        let n = self.config.num_partitions;
        let parts: Vec<u32> = match &partition_keys {
            Some(pk) => pk.iter().map(|k| partition_of(k, n)).collect(),
            None => keys.iter().map(|k| partition_of(k, n)).collect(),
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.columns.len() + 1);
        columns.push(Arc::new(BinaryArray::from_iter_values(keys.iter())));
        for c in &schema.columns {
            columns.push(canonical(
                &c.field,
                batch.column(c.index),
                c.field_type,
                self.rows,
            )?);
        }
        if schema.timed {
            // In `stored_fields`' order: each timed column's expiry, then its event time.
            let times = |at: Option<usize>| -> Result<Option<ArrayRef>> {
                at.map(|i| {
                    canonical(
                        input.field(i).name(),
                        batch.column(i),
                        FieldType::Int64,
                        self.rows,
                    )
                })
                .transpose()
            };
            let (ttl, event) = (times(schema.ttl)?, times(schema.event_time)?);
            let as_int = |a: &Option<ArrayRef>| {
                a.as_ref().and_then(|a| {
                    a.as_any()
                        .downcast_ref::<arrow_array::Int64Array>()
                        .cloned()
                })
            };
            let now_ms = ikv_core::clock::epoch_ms(self.clock.as_ref());
            let rows = batch.num_rows();
            let expiries = crate::times::expiries(
                as_int(&ttl).as_ref(),
                rows,
                self.config.ttl_seconds,
                now_ms,
                self.rows,
            )?;
            let events = crate::times::events(as_int(&event).as_ref(), rows);
            let timed: Vec<usize> = schema
                .columns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.field != self.config.primary_key_field)
                .map(|(i, _)| i + 1)
                .collect();
            for i in timed {
                let values = columns[i].clone();
                columns.push(crate::times::companion(&values, &expiries));
                columns.push(crate::times::companion(&values, &events));
            }
        }
        Ok(Some((batch_of(&gathered, columns)?, parts)))
    }

    /// Checks one batch and counts its rows by partition without keeping them (a retry
    /// finds out whether an earlier attempt committed everything this way).
    pub fn count(&mut self, batch: &RecordBatch) -> Result<()> {
        let Some((_, parts)) = self.canonical_rows(batch)? else {
            return Ok(());
        };
        for p in parts {
            *self.partition_rows.entry(p).or_default() += 1;
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Checks and gathers one batch. An error leaves what was gathered before unchanged.
    pub fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        let Some((whole, parts)) = self.canonical_rows(batch)? else {
            return Ok(());
        };
        let mut by_partition: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (row, p) in parts.iter().enumerate() {
            by_partition.entry(*p).or_default().push(row as u32);
        }
        let mut split = Vec::with_capacity(by_partition.len());
        if by_partition.len() == 1 {
            split.extend(by_partition.keys().map(|p| (*p, whole.clone())));
        } else {
            for (p, rows) in by_partition {
                let indices = arrow_array::UInt32Array::from(rows);
                let part = arrow_select::take::take_record_batch(&whole, &indices)
                    .map_err(|e| Error::InvalidImport(format!("splitting by partition: {e}")))?;
                split.push((p, part));
            }
        }
        for (p, part) in split {
            self.gathered_bytes += part.get_array_memory_size();
            *self.partition_rows.entry(p).or_default() += part.num_rows() as u64;
            self.partitions.entry(p).or_default().push(part);
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Sorts each partition's gathered rows and writes them as a run named `<import id>.<random>`,
    /// two partitions at a time, and lets go of them. A later flush's run of a partition
    /// applies after an earlier one's, so the last row of a key in the input still wins.
    pub async fn flush(
        &mut self,
        storage: &Storage,
        import_id: &str,
        files: &FileLayout,
    ) -> Result<()> {
        let (Some(gathered), Some(schema)) = (self.gathered_schema.clone(), self.schema.as_ref())
        else {
            return Ok(());
        };
        let partitions = std::mem::take(&mut self.partitions);
        let gathered_bytes = std::mem::take(&mut self.gathered_bytes);
        if partitions.is_empty() {
            return Ok(());
        }
        let pairs: BTreeSet<(String, FieldType)> = schema.stored_fields().into_iter().collect();
        let layout = StoreLayout::new(&storage.prefix, &self.config.store_name)?;
        let rows: usize = partitions.values().flatten().map(|b| b.num_rows()).sum();
        let chunk_rows = self.budget.chunk_rows(gathered_bytes, rows);
        let files = FileLayout {
            row_group_rows: files.row_group_rows.min(chunk_rows),
            ..files.clone()
        };
        tracing::debug!(
            rows,
            gathered_bytes,
            partitions = partitions.len(),
            "writing gathered import rows as runs"
        );
        let config = &self.config;
        let writes = partitions.into_iter().map(|(partition, batches)| {
            let (layout, gathered, files, pairs) = (&layout, gathered.clone(), &files, &pairs);
            let run_id = format!("{import_id}.{}", uuid::Uuid::new_v4().simple());
            async move {
                let sorted =
                    tokio::task::spawn_blocking(move || SortedRows::sort(gathered, batches))
                        .await
                        .map_err(|e| Error::InvalidImport(format!("sorting failed: {e}")))??;
                let stats = RunStats {
                    rows_in: sorted.rows(),
                    rows_combined: sorted.combined(),
                };
                let target = RunTarget {
                    storage,
                    layout,
                    config,
                    partition,
                    run_id: &run_id,
                    files,
                };
                let run = write_run(target, pairs, Arc::new(sorted), chunk_rows).await?;
                Ok::<_, Error>((partition, (run, stats)))
            }
        });
        let runs: Vec<(u32, (Manifest, RunStats))> = futures::stream::iter(writes)
            .buffer_unordered(2)
            .try_collect()
            .await?;
        for (partition, run) in runs {
            self.written.entry(partition).or_default().push(run);
        }
        Ok(())
    }

    /// Writes what is still gathered and returns every partition's runs, in the order they
    /// apply.
    pub async fn finish(
        mut self,
        storage: &Storage,
        import_id: &str,
        files: &FileLayout,
    ) -> Result<BTreeMap<u32, Vec<(Manifest, RunStats)>>> {
        self.flush(storage, import_id, files).await?;
        Ok(self.written)
    }
}

/// Where one partition's run goes.
struct RunTarget<'a> {
    storage: &'a Storage,
    layout: &'a StoreLayout,
    config: &'a StoreConfig,
    partition: u32,
    run_id: &'a str,
    files: &'a FileLayout,
}

/// Writes one partition's sorted rows (`_ikv_key`, then a column per field named after it)
/// as a run holding the fields `pairs`, `chunk_rows` sorted rows at a time.
async fn write_run(
    target: RunTarget<'_>,
    pairs: &BTreeSet<(String, FieldType)>,
    sorted: Arc<SortedRows>,
    chunk_rows: usize,
) -> Result<Manifest> {
    let RunTarget {
        storage,
        layout,
        config,
        partition,
        run_id,
        files,
    } = target;
    let columns = plan_columns(pairs);
    let mut writer = SnapshotWriter::new(
        storage.clone(),
        &layout.imports_dir(partition),
        run_id,
        columns,
        files.clone(),
    )?;
    // The writer's columns come in field order: where each is in the sorted rows.
    let target = writer.schema();
    let source_schema = sorted.schema();
    let mut sources = Vec::with_capacity(target.fields().len());
    for i in 0..target.fields().len() {
        sources.push(if i == 0 {
            0
        } else {
            let field = &writer.columns()[i - 1].field;
            source_schema
                .index_of(field)
                .map_err(|e| Error::InvalidImport(format!("arranging columns: {e}")))?
        });
    }
    let chunk_rows = chunk_rows.max(1);
    let mut from = 0;
    while from < sorted.keys() {
        let to = from + chunk_rows;
        let rows = Arc::clone(&sorted);
        let chunk = tokio::task::spawn_blocking(move || rows.chunk(from, to))
            .await
            .map_err(|e| Error::InvalidImport(format!("sorting failed: {e}")))??;
        let arranged = sources
            .iter()
            .zip(target.fields())
            .map(|(s, field)| {
                let column = chunk.column(*s);
                // Companions hold placeholders for "never" and "none" while gathered.
                if ikv_core::expiry::field_of_expiry(field.name()).is_some() {
                    crate::times::to_stored(column, false)
                } else if ikv_core::event_time::field_of_event(field.name()).is_some() {
                    crate::times::to_stored(column, true)
                } else {
                    column.clone()
                }
            })
            .collect();
        writer.push_batch(&batch_of(&target, arranged)?).await?;
        from = to;
    }
    drop(sorted);
    let rows = writer.rows();
    let (mut files, columns) = writer.finish().await?;
    // Paths are relative to the run's own directory.
    let prefix = format!("{run_id}/");
    for f in &mut files {
        if let Some(rest) = f.path.strip_prefix(&prefix) {
            f.path = rest.to_owned();
        }
    }
    Ok(Manifest {
        format_version: Manifest::new_version(),
        store_name: config.store_name.clone(),
        partition,
        sequence: 0,
        base_sequence: 0,
        primary_key_field: config.primary_key_field.clone(),
        created_at_ms: ikv_core::clock::wall_time()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        writer_id: run_id.to_owned(),
        row_count: rows,
        files,
        key_column: KEY_COLUMN.to_owned(),
        columns,
        import_id: Some(run_id.to_owned()),
        imports: Vec::new(),
        stacked_on: Vec::new(),
    })
}
