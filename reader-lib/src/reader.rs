//! The public reader: open (blocks until caught up), typed reads, status, shutdown.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ikv_core::clock::{Clock, SystemClock};
use ikv_core::partition::partition_of;
use ikv_core::store::load_config;
use ikv_core::{
    Error, FieldType, FieldValue, Result, Storage, StorageOptions, StoreConfig, StoreLayout,
};
use tokio::sync::watch;

use crate::doc::{FieldRef, OwnedDoc, select};
use crate::local::{LocalStore, PartitionState};
use crate::status::{PartitionStatus, StatusBoard};
use crate::sync::{rebuild, sync_all};
use crate::view::ReadView;

/// How to open a reader.
#[derive(Debug, Clone)]
pub struct ReaderOptions {
    /// Storage root URL (`s3://bucket/prefix`, `file:///dir`).
    pub storage_url: String,
    pub storage_options: StorageOptions,
    pub store_name: String,
    /// Directory for the local copy (one subdirectory per store).
    pub mount_directory: PathBuf,
    /// Partitions to mount; all when empty.
    pub partitions: Vec<u32>,
    /// Time between polls for new deltas.
    pub poll_interval: Duration,
    /// fjall block cache size.
    pub cache_bytes: u64,
    /// Serve reads from an in-memory copy of the documents (fjall remains the durable copy):
    /// a get becomes a hash lookup instead of an LSM-tree read. Costs memory about the size
    /// of the mounted data; turn it off for mounts larger than memory.
    pub memory_index: bool,
    /// How often a running reader checks (with a LIST) that no delta it has not applied was
    /// removed by retention or is missing below a later one. Also checked at open and after
    /// a failed poll.
    pub gap_check_interval: Duration,
    /// An already opened storage root to read from instead of opening `storage_url` (a
    /// custom object store, or one that injects faults in tests); `storage_url` then only
    /// names it in messages.
    pub storage: Option<Storage>,
    /// How much lower than the application's the CPU priority of the reader's background
    /// threads (polling, applying deltas, bootstrap ingestion) is, as a `nice` increment
    /// (Linux; 0 keeps the same priority). Applying a large delta is CPU work: on a busy host
    /// it should wait for the application's threads rather than preempt them, as database
    /// engines run compaction below foreground work.
    pub background_nice: i32,
    /// The reader's time: poll and backoff sleeps, gap-check intervals, freshness stamps. The
    /// real clock unless a test drives it (`ikv_core::clock::ManualClock`).
    pub clock: Arc<dyn Clock>,
}

impl ReaderOptions {
    pub fn new(storage_url: &str, store_name: &str, mount_directory: impl Into<PathBuf>) -> Self {
        ReaderOptions {
            storage_url: storage_url.to_owned(),
            storage_options: StorageOptions::default(),
            store_name: store_name.to_owned(),
            mount_directory: mount_directory.into(),
            partitions: Vec::new(),
            poll_interval: Duration::from_millis(500),
            cache_bytes: 64 << 20,
            memory_index: true,
            gap_check_interval: Duration::from_secs(600),
            storage: None,
            background_nice: 10,
            clock: SystemClock::shared(),
        }
    }
}

struct Shared {
    storage: Storage,
    layout: StoreLayout,
    config: StoreConfig,
    partitions: Vec<u32>,
    mounted: Vec<bool>,
    local: LocalStore,
    status: StatusBoard,
    clock: Arc<dyn Clock>,
}

/// An embedded reader of one store. `Send + Sync`: share it between threads; reads never wait
/// for the network.
pub struct Reader {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    /// Taken by the first stop; a stop never runs while reads go on, it only ends polling.
    background: Mutex<Option<Background>>,
}

struct Background {
    poller: tokio::task::JoinHandle<()>,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("store", &self.shared.config.store_name)
            .field("partitions", &self.shared.partitions)
            .finish()
    }
}

async fn start(options: &ReaderOptions) -> Result<(Shared, BTreeMap<u32, PartitionState>)> {
    let storage = match &options.storage {
        Some(storage) => storage.clone(),
        None => Storage::open(&options.storage_url, &options.storage_options)?,
    };
    let config = load_config(&storage, &options.store_name).await?;
    let layout = StoreLayout::new(&storage.prefix, &config.store_name)?;
    let mut partitions: Vec<u32> = if options.partitions.is_empty() {
        (0..config.num_partitions).collect()
    } else {
        options.partitions.clone()
    };
    partitions.sort_unstable();
    partitions.dedup();
    if let Some(p) = partitions.iter().find(|p| **p >= config.num_partitions) {
        return Err(Error::InvalidConfig(format!(
            "store {:?} has {} partitions; cannot mount partition {p}",
            config.store_name, config.num_partitions
        )));
    }
    let (local, resumed) = LocalStore::open(
        &options.mount_directory,
        &config,
        &partitions,
        options.cache_bytes,
        options.memory_index,
    )?;
    let status = StatusBoard::new(&partitions);
    let mut mounted = vec![false; config.num_partitions as usize];
    for p in &partitions {
        mounted[*p as usize] = true;
    }
    let shared = Shared {
        storage,
        layout,
        config,
        partitions,
        mounted,
        local,
        status,
        clock: options.clock.clone(),
    };
    let mut states = match resumed {
        Some(states) => {
            tracing::info!(store = %shared.config.store_name, "resuming from the local copy");
            for (p, s) in &states {
                shared.status.bootstrapped(*p, s.snapshot);
                shared.status.applied(*p, s.applied);
            }
            states
        }
        None => {
            rebuild(
                &shared.storage,
                &shared.layout,
                &shared.local,
                &shared.status,
                &shared.partitions,
            )
            .await?
        }
    };
    // A resumed copy may have fallen behind retention while the reader was down, and any
    // copy may sit below a hole: check once at open (a LIST or two per partition).
    sync_all(
        &shared.storage,
        &shared.layout,
        &shared.local,
        &shared.status,
        &mut states,
        true,
        shared.clock.as_ref(),
    )
    .await?;
    Ok((shared, states))
}

async fn poll_loop(
    shared: Arc<Shared>,
    mut states: BTreeMap<u32, PartitionState>,
    interval: Duration,
    gap_check_interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures: u32 = 0;
    let clock = shared.clock.clone();
    let mut last_gap_check = clock.elapsed();
    loop {
        if shared.local.take_damage() {
            tracing::warn!("a read found the local copy damaged; rebuilding it from the bucket");
            match rebuild(
                &shared.storage,
                &shared.layout,
                &shared.local,
                &shared.status,
                &shared.partitions,
            )
            .await
            {
                Ok(rebuilt) => states = rebuilt,
                Err(e) => {
                    tracing::warn!(error = %e, "rebuilding the damaged local copy failed; retrying");
                    for p in &shared.partitions {
                        shared.status.failed(
                            *p,
                            &format!("the local copy is damaged and rebuilding it failed: {e}"),
                        );
                    }
                    shared.local.mark_damaged();
                }
            }
        }
        let wait = if *stop.borrow() {
            return;
        } else {
            let check_gaps = failures > 0
                || clock.elapsed().saturating_sub(last_gap_check) >= gap_check_interval;
            match sync_all(
                &shared.storage,
                &shared.layout,
                &shared.local,
                &shared.status,
                &mut states,
                check_gaps,
                shared.clock.as_ref(),
            )
            .await
            {
                Ok(()) => {
                    if check_gaps {
                        last_gap_check = clock.elapsed();
                    }
                    failures = 0;
                    interval
                }
                Err(_) if *stop.borrow() => return, // cut short by shutdown: not a failure
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, failures, "poll failed; serving local data and retrying");
                    for p in &shared.partitions {
                        shared.status.failed(*p, &e.to_string());
                    }
                    interval
                        .max(Duration::from_millis(100))
                        .saturating_mul(1 << failures.min(6))
                        .min(Duration::from_secs(30))
                }
            }
        };
        tokio::select! {
            _ = clock.sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

impl Reader {
    /// Opens the reader: builds or resumes the local copy and applies every delta up to the
    /// tip seen now, then returns; a background task keeps polling. Blocking: call it from a
    /// plain thread (or `spawn_blocking`), not from inside an async task.
    pub fn open(options: ReaderOptions) -> Result<Reader> {
        let lower = options.background_nice;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ikv-reader")
            .on_thread_start(move || crate::priority::lower_this_thread(lower))
            .enable_all()
            .build()
            .map_err(|e| Error::Local {
                path: options.mount_directory.display().to_string(),
                message: format!("cannot start the reader runtime: {e}"),
            })?;
        let (shared, states) = runtime.block_on(start(&options))?;
        let shared = Arc::new(shared);
        let (stop, stopped) = watch::channel(false);
        let poller = runtime.spawn(poll_loop(
            shared.clone(),
            states,
            options.poll_interval,
            options.gap_check_interval,
            stopped,
        ));
        Ok(Reader {
            shared,
            stop,
            background: Mutex::new(Some(Background { poller, runtime })),
        })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.shared.config
    }

    /// Whether reads are answered from memory (never waiting on the disk).
    pub fn reads_from_memory(&self) -> bool {
        self.shared.local.has_memory_index()
    }

    /// Mounted partitions.
    pub fn partitions(&self) -> &[u32] {
        &self.shared.partitions
    }

    /// Freshness of every mounted partition.
    pub fn status(&self) -> Vec<PartitionStatus> {
        self.shared.status.snapshot()
    }

    fn check_mounted(&self, key: &[u8]) -> Result<()> {
        // Only without a partitioning key does the primary key alone name the partition.
        if self.shared.config.partitioning_key_field.is_none() {
            let p = partition_of(key, self.shared.config.num_partitions);
            if !self.shared.mounted[p as usize] {
                return Err(Error::NotMounted {
                    partition: p,
                    mounted: self.shared.partitions.clone(),
                });
            }
        }
        Ok(())
    }

    /// The live stored field `field` of document `key`, decoded by `f`.
    fn with_field<T>(
        &self,
        view: &ReadView,
        key: &[u8],
        field: &str,
        f: impl FnOnce(FieldRef<'_>) -> Result<T>,
    ) -> Result<Option<T>> {
        let Some(bytes) = view.doc(key)? else {
            return Ok(None);
        };
        let pk_name = &self.shared.config.primary_key_field;
        let Some(doc) = select(&bytes, &view.drops, pk_name)? else {
            return Ok(None);
        };
        let Some(stored) = doc.find(field)? else {
            return Ok(None);
        };
        let pk = field == pk_name;
        let live = view
            .drops
            .get(doc.partition as usize)
            .is_none_or(|d| d.is_live(field, pk, stored.epoch));
        if !live {
            return Ok(None);
        }
        f(stored).map(Some)
    }

    fn get_in(&self, view: &ReadView, key: &[u8], field: &str) -> Result<Option<FieldValue>> {
        self.with_field(view, key, field, |f| f.value())
    }

    /// The typed value of `field` of the document `key`, or `None`.
    pub fn get(&self, key: &[u8], field: &str) -> Result<Option<FieldValue>> {
        self.check_mounted(key)?;
        let view = self.shared.local.read();
        self.get_in(&view, key, field)
    }

    /// Every live field of the document `key` (one lookup), or `None`.
    pub fn get_document(&self, key: &[u8]) -> Result<Option<BTreeMap<String, FieldValue>>> {
        self.check_mounted(key)?;
        let view = self.shared.local.read();
        let Some(bytes) = view.doc(key)? else {
            return Ok(None);
        };
        let pk = &self.shared.config.primary_key_field;
        let Some(doc) = select(&bytes, &view.drops, pk)? else {
            return Ok(None);
        };
        let live = OwnedDoc::live_of(&doc, &view.drops, pk)?;
        let doc: BTreeMap<String, FieldValue> = live
            .fields
            .into_iter()
            .map(|(name, f)| FieldValue::decode(f.field_type, &f.payload).map(|v| (name, v)))
            .collect::<Result<_>>()?;
        Ok((!doc.is_empty()).then_some(doc))
    }

    /// A string or bytes field as bytes (a string gives its UTF-8 bytes).
    pub fn get_bytes(&self, key: &[u8], field: &str) -> Result<Option<Vec<u8>>> {
        self.check_mounted(key)?;
        let view = self.shared.local.read();
        self.with_field(&view, key, field, |f| match f.field_type {
            FieldType::String | FieldType::Bytes => Ok(f.payload.to_vec()),
            other => Err(Error::TypeMismatch {
                field: field.to_owned(),
                stored: other,
                requested: "bytes",
            }),
        })
    }

    /// A string field, or a bytes field holding UTF-8.
    pub fn get_string(&self, key: &[u8], field: &str) -> Result<Option<String>> {
        match self.get_bytes(key, field)? {
            None => Ok(None),
            Some(b) => String::from_utf8(b).map(Some).map_err(|_| Error::NotUtf8 {
                field: field.to_owned(),
            }),
        }
    }

    pub fn get_int64(&self, key: &[u8], field: &str) -> Result<Option<i64>> {
        match self.get(key, field)? {
            None => Ok(None),
            Some(FieldValue::Int64(v)) => Ok(Some(v)),
            Some(other) => Err(Error::TypeMismatch {
                field: field.to_owned(),
                stored: other.field_type(),
                requested: "int64",
            }),
        }
    }

    pub fn get_float64(&self, key: &[u8], field: &str) -> Result<Option<f64>> {
        match self.get(key, field)? {
            None => Ok(None),
            Some(FieldValue::Float64(v)) => Ok(Some(v)),
            Some(other) => Err(Error::TypeMismatch {
                field: field.to_owned(),
                stored: other.field_type(),
                requested: "float64",
            }),
        }
    }

    pub fn get_bool(&self, key: &[u8], field: &str) -> Result<Option<bool>> {
        match self.get(key, field)? {
            None => Ok(None),
            Some(FieldValue::Bool(v)) => Ok(Some(v)),
            Some(other) => Err(Error::TypeMismatch {
                field: field.to_owned(),
                stored: other.field_type(),
                requested: "bool",
            }),
        }
    }

    /// Values of `fields` for each of `keys`, key-major (`keys[0]`'s fields first), `None`
    /// where missing. One consistent view for the whole batch; one document lookup per key.
    pub fn multiget<K: AsRef<[u8]>, F: AsRef<str>>(
        &self,
        keys: &[K],
        fields: &[F],
    ) -> Result<Vec<Option<FieldValue>>> {
        let nf = fields.len();
        let mut out: Vec<Option<FieldValue>> = vec![None; keys.len() * nf];
        if nf == 0 {
            return Ok(out);
        }
        for k in keys {
            self.check_mounted(k.as_ref())?;
        }
        let view = self.shared.local.read();
        let mut order: Vec<usize> = (0..keys.len()).collect();
        if view.memory.is_none() {
            // On disk, neighbouring keys share cached blocks; a hash index gains nothing.
            order.sort_unstable_by(|a, b| keys[*a].as_ref().cmp(keys[*b].as_ref()));
        }
        // One document lookup per key; all asked-for fields from it.
        for i in order {
            let Some(bytes) = view.doc(keys[i].as_ref())? else {
                continue;
            };
            let pk = &self.shared.config.primary_key_field;
            let Some(doc) = select(&bytes, &view.drops, pk)? else {
                continue;
            };
            let drops = view.drops.get(doc.partition as usize);
            for stored in doc.fields() {
                let stored = stored?;
                if !fields.iter().any(|f| f.as_ref() == stored.name) {
                    continue;
                }
                let is_pk = stored.name == pk.as_str();
                if drops.is_none_or(|d| d.is_live(stored.name, is_pk, stored.epoch)) {
                    let value = stored.value()?;
                    for (j, f) in fields.iter().enumerate() {
                        if f.as_ref() == stored.name {
                            out[i * nf + j] = Some(value.clone());
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Flushes the local copy to disk and stops polling. Also done on drop (without fsync).
    pub fn shutdown(self) -> Result<()> {
        self.stop()
    }

    /// Stops polling (waiting for the delta being applied, if any) and flushes the local copy
    /// to disk. Reads keep answering from the local copy as it stands; later stops do nothing
    /// but flush. Blocking: not from inside an async task.
    pub fn stop(&self) -> Result<()> {
        self.stop_poller();
        self.shared.local.persist()
    }

    fn stop_poller(&self) {
        let _ = self.stop.send(true);
        let background = self
            .background
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(Background { poller, runtime }) = background {
            // Outside an async context: wait for the poller to finish its current delta.
            if tokio::runtime::Handle::try_current().is_err() {
                let _ = runtime.block_on(poller);
            }
            runtime.shutdown_background();
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop_poller();
    }
}
