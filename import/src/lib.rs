//! Bulk import: Arrow record batches (from pyarrow, a Parquet dataset, a Ray task) written
//! into a store as one sorted run of snapshot-format Parquet files per partition, then
//! committed through the log as one small delta per partition that names its runs
//! (`docs/FORMAT.md`, "Imports").
//!
//! Two steps, so that they can run in different processes (Ray tasks write, the driver
//! commits): [`Importer`] checks, sorts and writes runs and returns a [`WrittenImport`]
//! (serializable); [`commit`] commits one or several of them. Nothing is visible before the
//! commit, and each partition's commit is atomic.

mod budget;
mod columns;
mod commit;
pub mod parquet_source;
mod runs;
mod sort;
pub mod times;

use std::collections::BTreeMap;

use arrow_array::RecordBatch;
use ikv_core::bucket::load_config;
use ikv_core::delta::validate_import_id;
use ikv_core::{Error, Result, Storage, StoreConfig};
use ikv_snapshot_format::manifest::Manifest;
use ikv_snapshot_format::write::FileLayout;
use serde::{Deserialize, Serialize};

pub use budget::{DEFAULT_MEMORY_BUDGET, MIN_MEMORY_BUDGET, MemoryBudget};
pub use commit::{ImportCommit, ImportReceipt, commit};
pub use runs::RunStats;

/// How imported documents combine with what a partition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImportMode {
    /// Each imported document's fields are unioned into the stored document, as
    /// `upsert_fields` does; documents the import does not name are untouched.
    Upsert,
    /// Every partition's documents become exactly the imported ones.
    Replace,
}

impl std::str::FromStr for ImportMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<ImportMode> {
        match s {
            "upsert" => Ok(ImportMode::Upsert),
            "replace" => Ok(ImportMode::Replace),
            other => Err(Error::InvalidImport(format!(
                "mode {other:?} is not \"upsert\" or \"replace\""
            ))),
        }
    }
}

/// Longest import id: run ids append a dot and 32 hex digits and must stay within 128 bytes.
pub const MAX_IMPORT_ID_BYTES: usize = 64;

/// Checks an import id (it names directories and markers in the bucket).
pub fn check_import_id(id: &str) -> Result<()> {
    validate_import_id(id).map_err(Error::InvalidImport)?;
    if id.len() > MAX_IMPORT_ID_BYTES {
        return Err(Error::InvalidImport(format!(
            "import id {id:?} is longer than {MAX_IMPORT_ID_BYTES} bytes"
        )));
    }
    Ok(())
}

/// A fresh import id: the time and a random part.
pub fn new_import_id() -> String {
    let ms = ikv_core::clock::wall_time()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{ms}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Runs written for an import and not yet committed (or committed: committing again is a
/// no-op where the import's marker is found). Serializable, to pass from the processes that
/// wrote runs to the one that commits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WrittenImport {
    pub store: String,
    pub import_id: String,
    /// Each partition's runs, in the order they apply (later runs win for a key they share).
    pub runs: BTreeMap<u32, Vec<Manifest>>,
    /// Input rows.
    pub rows: u64,
    /// Input rows combined into another row of the same key within one run (rows of a key
    /// in several runs are combined when the runs are merged, by readers and the compactor).
    pub rows_combined: u64,
    /// Input rows of each partition (what a retry of the same import must match).
    #[serde(default)]
    pub partition_rows: BTreeMap<u32, u64>,
}

impl WrittenImport {
    /// Documents the runs hold (a key in several runs counts once per run).
    pub fn documents(&self) -> u64 {
        self.runs.values().flatten().map(|m| m.row_count).sum()
    }

    /// Joins runs written by several processes for one import, in the order given (for a
    /// key written by several, the later part wins).
    pub fn join(parts: Vec<WrittenImport>) -> Result<WrittenImport> {
        let mut parts = parts.into_iter();
        let Some(mut joined) = parts.next() else {
            return Err(Error::InvalidImport("no written runs to join".into()));
        };
        for part in parts {
            if part.store != joined.store || part.import_id != joined.import_id {
                return Err(Error::InvalidImport(format!(
                    "runs of import {:?} of store {:?} cannot join import {:?} of store {:?}",
                    part.import_id, part.store, joined.import_id, joined.store
                )));
            }
            for (p, runs) in part.runs {
                joined.runs.entry(p).or_default().extend(runs);
            }
            joined.rows += part.rows;
            joined.rows_combined += part.rows_combined;
            for (p, rows) in part.partition_rows {
                *joined.partition_rows.entry(p).or_default() += rows;
            }
        }
        Ok(joined)
    }
}

/// Options of an import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Names the import; a retry with the same id does not commit a partition twice. A
    /// fresh id ([`new_import_id`]) when not set.
    pub import_id: Option<String>,
    pub files: FileLayout,
    /// The memory the importer may use ([`DEFAULT_MEMORY_BUDGET`] when not set): rows are
    /// written as a run per partition each time they fill half of it.
    pub memory_budget: Option<MemoryBudget>,
    /// What imported rows' times to live count from (the system clock when not set).
    pub clock: Option<std::sync::Arc<dyn ikv_core::clock::Clock>>,
}

/// Checks, gathers and writes one import's runs.
pub struct Importer {
    storage: Storage,
    import_id: String,
    files: FileLayout,
    builder: runs::RunBuilder,
    /// Set when writing runs failed: the rows gathered then are gone, so the import cannot
    /// go on.
    failed: bool,
}

impl Importer {
    /// An importer into `store`, whose configuration is read from the bucket.
    pub async fn open(storage: Storage, store: &str, options: ImportOptions) -> Result<Importer> {
        let config = load_config(&storage, store).await?;
        Importer::with_config(storage, config, options)
    }

    /// An importer into the store `config` describes.
    pub fn with_config(
        storage: Storage,
        config: StoreConfig,
        options: ImportOptions,
    ) -> Result<Importer> {
        let import_id = options.import_id.unwrap_or_else(new_import_id);
        check_import_id(&import_id)?;
        Ok(Importer {
            storage,
            import_id,
            files: options.files,
            builder: runs::RunBuilder::new(
                config,
                options.memory_budget.unwrap_or_default(),
                options
                    .clock
                    .unwrap_or_else(ikv_core::clock::SystemClock::shared),
            ),
            failed: false,
        })
    }

    pub fn import_id(&self) -> &str {
        &self.import_id
    }

    /// Rows added so far.
    pub fn rows(&self) -> u64 {
        self.builder.rows()
    }

    /// Rows added so far, by partition.
    pub fn partition_rows(&self) -> BTreeMap<u32, u64> {
        self.builder.partition_rows()
    }

    /// Checks and gathers one batch; once the gathered rows fill half the memory budget they
    /// are sorted and written as runs (invisible until [`commit`]). Every batch has the
    /// columns of the first. A bad batch is refused whole and the import can go on; when
    /// writing runs fails, the import cannot.
    pub async fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        self.usable()?;
        self.builder.add(batch)?;
        if self.builder.must_flush() {
            self.failed = true;
            self.builder
                .flush(&self.storage, &self.import_id, &self.files)
                .await?;
            self.failed = false;
        }
        Ok(())
    }

    /// Checks one batch and counts its rows by partition without keeping or writing them
    /// ([`Importer::partition_rows`] then says what a full import would bring each partition).
    pub fn count(&mut self, batch: &RecordBatch) -> Result<()> {
        self.usable()?;
        self.builder.count(batch)
    }

    fn usable(&self) -> Result<()> {
        if self.failed {
            return Err(Error::InvalidImport(format!(
                "writing the runs of import {:?} failed earlier; start the import again (same id: nothing is committed twice)",
                self.import_id
            )));
        }
        Ok(())
    }

    /// Sorts and writes what is still gathered; returns every partition's runs. Nothing is
    /// visible until [`commit`].
    pub async fn write(self) -> Result<WrittenImport> {
        self.usable()?;
        let store = self.builder.store_name().to_owned();
        let rows = self.builder.rows();
        let partition_rows = self.builder.partition_rows();
        let written = self
            .builder
            .finish(&self.storage, &self.import_id, &self.files)
            .await?;
        let rows_combined = written
            .values()
            .flatten()
            .map(|(_, s)| s.rows_combined)
            .sum();
        Ok(WrittenImport {
            store,
            import_id: self.import_id,
            runs: written
                .into_iter()
                .map(|(p, runs)| (p, runs.into_iter().map(|(run, _)| run).collect()))
                .collect(),
            rows,
            rows_combined,
            partition_rows,
        })
    }
}

/// Imports Parquet data (a local file or directory, or an object-store URL; see
/// [`parquet_source::ParquetSource`]) into `store` under `storage`, and commits it.
pub async fn import_parquet(
    storage: &Storage,
    store: &str,
    location: &str,
    source_options: &ikv_core::StorageOptions,
    mode: ImportMode,
    options: ImportOptions,
) -> Result<ImportReceipt> {
    let source = parquet_source::ParquetSource::resolve(location, source_options).await?;
    let mut importer = Importer::open(storage.clone(), store, options.clone()).await?;
    let import_id = importer.import_id().to_owned();
    // A retry: runs are written while the data is read, so first count what the data brings
    // each partition; a retry of an import every partition committed uploads nothing.
    if commit::has_markers(storage, store, &import_id).await? {
        let counting = ImportOptions {
            import_id: Some(import_id.clone()),
            ..options
        };
        let mut counter = Importer::open(storage.clone(), store, counting).await?;
        source
            .for_each_batch(async |batch| counter.count(&batch))
            .await?;
        let partition_rows = counter.partition_rows();
        if let Some(receipt) =
            commit::committed_earlier(storage, store, &import_id, mode, &partition_rows).await?
        {
            return Ok(receipt);
        }
    }
    source
        .for_each_batch(async |batch| importer.add(&batch).await)
        .await?;
    tracing::info!(
        rows = importer.rows(),
        import = import_id,
        "read the import's rows; writing the last runs"
    );
    let written = importer.write().await?;
    let writer =
        ikv_writer::Writer::open(storage.clone(), store, ikv_writer::WriterOptions::default())
            .await?;
    let receipt = commit(&writer, storage, &written, mode).await;
    writer.flush_hints().await;
    receipt
}
