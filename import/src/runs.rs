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

use crate::columns::{ImportSchema, canonical, key_bytes};
use crate::sort::{batch_of, concat, sort_and_combine};

/// Rows gathered by partition, not yet written.
pub struct RunBuilder {
    config: StoreConfig,
    schema: Option<ImportSchema>,
    /// `_ikv_key` then one column per imported field, canonical types.
    gathered_schema: Option<SchemaRef>,
    partitions: BTreeMap<u32, Vec<RecordBatch>>,
    rows: u64,
}

/// What one partition's run holds, for progress and receipts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunStats {
    pub rows_in: u64,
    /// Rows merged into an earlier row of the same key.
    pub rows_combined: u64,
}

impl RunBuilder {
    pub fn new(config: StoreConfig) -> RunBuilder {
        RunBuilder {
            config,
            schema: None,
            gathered_schema: None,
            partitions: BTreeMap::new(),
            rows: 0,
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
        self.partitions
            .iter()
            .map(|(p, batches)| (*p, batches.iter().map(|b| b.num_rows() as u64).sum()))
            .collect()
    }

    /// Checks and gathers one batch. An error leaves what was gathered before unchanged.
    pub fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        let schema = match &self.schema {
            Some(s) => {
                s.check_batch(batch)?;
                s
            }
            None => {
                let s = ImportSchema::new(&self.config, batch.schema())?;
                let mut fields = vec![Field::new(KEY_COLUMN, DataType::Binary, false)];
                for c in &s.columns {
                    fields.push(Field::new(&c.field, data_type(c.field_type), true));
                }
                self.gathered_schema = Some(Arc::new(Schema::new(fields)));
                self.schema.insert(s)
            }
        };
        let Some(gathered) = self.gathered_schema.clone() else {
            return Ok(());
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
        let whole = batch_of(&gathered, columns)?;
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
            self.partitions.entry(p).or_default().push(part);
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Sorts each partition's rows and writes them as runs named `<import id>.<random>`,
    /// two partitions at a time. Returns each partition's run description.
    pub async fn write(
        self,
        storage: &Storage,
        import_id: &str,
        files: &FileLayout,
    ) -> Result<BTreeMap<u32, (Manifest, RunStats)>> {
        let (Some(gathered), Some(schema)) = (self.gathered_schema, self.schema) else {
            return Ok(BTreeMap::new());
        };
        let pairs: BTreeSet<(String, FieldType)> = schema
            .columns
            .iter()
            .map(|c| (c.field.clone(), c.field_type))
            .collect();
        let layout = StoreLayout::new(&storage.prefix, &self.config.store_name)?;
        let config = Arc::new(self.config);
        let writes = self.partitions.into_iter().map(|(partition, batches)| {
            let (storage, layout, config, gathered, files, pairs) = (
                storage.clone(),
                layout.clone(),
                config.clone(),
                gathered.clone(),
                files.clone(),
                pairs.clone(),
            );
            let run_id = format!("{import_id}.{}", uuid::Uuid::new_v4().simple());
            async move {
                let (sorted, stats) = tokio::task::spawn_blocking(move || {
                    let rows_in = batches.iter().map(|b| b.num_rows() as u64).sum();
                    let all = concat(&gathered, &batches)?;
                    drop(batches);
                    let (sorted, rows_combined) = sort_and_combine(&all)?;
                    Ok::<_, Error>((
                        sorted,
                        RunStats {
                            rows_in,
                            rows_combined,
                        },
                    ))
                })
                .await
                .map_err(|e| Error::InvalidImport(format!("sorting failed: {e}")))??;
                let target = RunTarget {
                    storage: &storage,
                    layout: &layout,
                    config: &config,
                    partition,
                    run_id: &run_id,
                    files: &files,
                };
                let run = write_run(target, &pairs, sorted).await?;
                Ok::<_, Error>((partition, (run, stats)))
            }
        });
        futures::stream::iter(writes)
            .buffer_unordered(2)
            .try_collect()
            .await
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
/// as a run holding the fields `pairs`.
async fn write_run(
    target: RunTarget<'_>,
    pairs: &BTreeSet<(String, FieldType)>,
    sorted: RecordBatch,
) -> Result<Manifest> {
    let RunTarget {
        storage,
        layout,
        config,
        partition,
        run_id,
        files,
    } = target;
    let schema = sorted.schema();
    let columns = plan_columns(pairs);
    let mut writer = SnapshotWriter::new(
        storage.clone(),
        &layout.imports_dir(partition),
        run_id,
        columns,
        files.clone(),
    )?;
    // The writer's columns come in field order: arrange the sorted batch to match.
    let target = writer.schema();
    let mut arranged: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
    for (i, f) in target.fields().iter().enumerate() {
        let source = if i == 0 {
            0
        } else {
            let field = &writer.columns()[i - 1].field;
            schema
                .index_of(field)
                .map_err(|e| Error::InvalidImport(format!("arranging columns: {e}")))?
        };
        arranged.push(sorted.column(source).clone());
        debug_assert_eq!(f.data_type(), sorted.column(source).data_type());
    }
    let batch = batch_of(&target, arranged)?;
    drop(sorted);
    writer.push_batch(&batch).await?;
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
    })
}
