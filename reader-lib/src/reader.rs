//! The public reader: open (blocks until caught up), typed reads, status, shutdown.
//!
//! Every process opening a mount directory plays one of two roles (`docs/READER.md`, "One
//! local copy per host"): the owner (the first to take the mount's lock) polls the bucket and
//! writes the shared read image and overlay; the others attach to them and only follow the
//! overlay. An attached process takes the lock over when the owner goes away.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use ikv_core::clock::{Clock, SystemClock};
use ikv_core::partition::partition_of;
use ikv_core::store::load_config;
use ikv_core::{
    Error, FieldType, FieldValue, Result, Storage, StorageOptions, StoreConfig, StoreLayout,
};
use tokio::sync::watch;

use crate::doc::{FieldRef, OwnedDoc, select};
use crate::image::{Image, PREFETCH_MAX};
use crate::local::PartitionState;
use crate::mount::{Current, Identity, LOCAL_LAYOUT, MountDir, check_identity, normalized_url};
use crate::overlay::Overlay;
use crate::owner::Owner;
use crate::status::{PartitionStatus, StatusBoard};
use crate::sync::{rebuild, sync_all};
use crate::view::{PublishedView, ReadView};

/// How to open a reader.
#[derive(Debug, Clone)]
pub struct ReaderOptions {
    /// Storage root URL (`s3://bucket/prefix`, `file:///dir`).
    pub storage_url: String,
    pub storage_options: StorageOptions,
    pub store_name: String,
    /// Directory for the local copy (one subdirectory per store), shared by every reader
    /// process of the host that opens the same store there.
    pub mount_directory: PathBuf,
    /// Partitions to mount; all when empty.
    pub partitions: Vec<u32>,
    /// Time between polls for new deltas (owner), and the longest time an attached process
    /// takes to see what its owner applied.
    pub poll_interval: Duration,
    /// fjall block cache size (the owner's durable copy).
    pub cache_bytes: u64,
    /// How often a running reader checks (with a LIST) that no delta it has not applied was
    /// removed by retention or is missing below a later one. Also checked at open and after
    /// a failed poll.
    pub gap_check_interval: Duration,
    /// An already opened storage root to read from instead of opening `storage_url` (a
    /// custom object store, or one that injects faults in tests); `storage_url` then only
    /// names it in messages and in what the mount serves.
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
            gap_check_interval: Duration::from_secs(600),
            storage: None,
            background_nice: 10,
            clock: SystemClock::shared(),
        }
    }
}

struct Shared {
    options: ReaderOptions,
    config: StoreConfig,
    partitions: Vec<u32>,
    mounted: Vec<bool>,
    mount: Arc<MountDir>,
    view: Arc<PublishedView>,
    status: StatusBoard,
    /// Whether this process owns the mount now.
    owns: AtomicBool,
    damaged: Arc<AtomicBool>,
}

/// What the owner's poller works with.
struct Owned {
    owner: Owner,
    storage: Storage,
    layout: StoreLayout,
    states: BTreeMap<u32, PartitionState>,
    /// Polls in a row that failed in the local copy (not the bucket).
    local_failures: u32,
}

/// Polls in a row failing in the local copy after which the owner reopens it.
const REOPEN_AFTER_LOCAL_FAILURES: u32 = 3;

/// An embedded reader of one store. `Send + Sync`: share it between threads; reads never wait
/// for the network or for another process.
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
            .field("owner", &self.shared.owns.load(Ordering::Relaxed))
            .finish()
    }
}

/// How often an attached process waits for a bootstrap in progress or checks for news.
const ATTACH_TICK: Duration = Duration::from_millis(20);

/// How long an attaching process waits at most for the owner's first catch-up.
const ATTACH_CATCH_UP_WAIT: Duration = Duration::from_secs(120);

/// Whether a process of this pid exists (signal 0 checks without sending; EPERM means it
/// exists under another user).
fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// An attaching process returns from open once the owner has caught the shared copy up with
/// the bucket (every mounted partition's caught-up word set in the current generation), as
/// an owner's own open does: a process that attaches while the owner is still applying what
/// its bootstrap left (or an import) would otherwise serve an older state than an owner
/// opened at the same moment. A partition below a hole is never caught up, so the wait ends
/// after [`ATTACH_CATCH_UP_WAIT`] with a warning and the reader serves what it has; it also
/// ends when the owner process is gone (this process's follower then takes the mount over).
async fn wait_for_owner_catch_up(shared: &Shared, clock: &Arc<dyn Clock>) -> Result<()> {
    let started = clock.elapsed();
    loop {
        let caught_up = {
            let view = shared.view.load();
            shared
                .partitions
                .iter()
                .all(|p| view.overlay.caught_up_ms(*p) > 0)
        };
        if caught_up {
            return Ok(());
        }
        let owner_gone = shared
            .mount
            .read_current()?
            .is_some_and(|c| !process_exists(c.owner_pid));
        if owner_gone {
            return Ok(());
        }
        if clock.elapsed().saturating_sub(started) > ATTACH_CATCH_UP_WAIT {
            tracing::warn!(
                waited = ?ATTACH_CATCH_UP_WAIT,
                "the mount's owner has not caught every partition up yet; serving what it has published"
            );
            return Ok(());
        }
        clock.sleep(ATTACH_TICK).await;
        follow(shared, true)?;
    }
}

async fn open_storage(options: &ReaderOptions) -> Result<Storage> {
    match &options.storage {
        Some(storage) => Ok(storage.clone()),
        None => Storage::open(&options.storage_url, &options.storage_options),
    }
}

/// The partitions `options` asks for, checked against the store's configuration.
fn resolve_partitions(options: &ReaderOptions, config: &StoreConfig) -> Result<Vec<u32>> {
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
    Ok(partitions)
}

fn identity_of(options: &ReaderOptions, config: StoreConfig, partitions: Vec<u32>) -> Identity {
    Identity {
        storage_url: normalized_url(&options.storage_url).to_owned(),
        partitions,
        config,
        layout: LOCAL_LAYOUT,
    }
}

/// Becomes the owner: opens the durable copy (resuming it, or bootstrapping from the bucket
/// when there is none) and catches up. `view` is the view this process already serves, if
/// it was attached.
async fn own(
    options: &ReaderOptions,
    mount: &Arc<MountDir>,
    view: Option<Arc<PublishedView>>,
    status: &StatusBoard,
    damaged: &Arc<AtomicBool>,
) -> Result<(Owned, StoreConfig)> {
    let storage = open_storage(options).await?;
    let config = load_config(&storage, &options.store_name).await?;
    let layout = StoreLayout::new(&storage.prefix, &config.store_name)?;
    let partitions = resolve_partitions(options, &config)?;
    status.set_partitions(&partitions);
    let identity = identity_of(options, config.clone(), partitions.clone());
    let (mut owner, resumed) = Owner::open(
        mount.clone(),
        identity,
        options.cache_bytes,
        view,
        damaged.clone(),
    )?;
    let mut states = match resumed {
        Some(states) => {
            tracing::info!(store = %config.store_name, "resuming from the local copy");
            for (p, s) in &states {
                status.bootstrapped(*p, s.snapshot);
                status.applied(*p, s.applied);
            }
            states
        }
        None => rebuild(&storage, &layout, &mut owner, status, &partitions).await?,
    };
    // A resumed copy may have fallen behind retention while no reader ran, and any copy may
    // sit below a hole: check once (a LIST or two per partition).
    sync_all(
        &storage,
        &layout,
        &mut owner,
        status,
        &mut states,
        true,
        options.clock.as_ref(),
    )
    .await
    .map_err(crate::sync::SyncFailure::into_error)?;
    Ok((
        Owned {
            owner,
            storage,
            layout,
            states,
            local_failures: 0,
        },
        config,
    ))
}

/// The view of the generation `current` names, or `None` when its files were replaced
/// meanwhile (read `current` again).
fn attach_view(
    mount: &MountDir,
    current: &Current,
    damaged: &Arc<AtomicBool>,
) -> Result<Option<ReadView>> {
    let g = current.generation;
    let opened = Image::open(&mount.image_path(g)).and_then(|image| {
        let overlay = Overlay::open(&mount.overlay_path(g), false)?;
        Ok((image, overlay))
    });
    let (image, overlay) = match opened {
        Ok(files) => files,
        Err(_) if mount.read_current()?.is_none_or(|now| now.generation != g) => return Ok(None),
        Err(e) => return Err(e),
    };
    ReadView::open(
        g,
        Arc::new(image),
        Arc::new(overlay),
        current.identity.config.num_partitions,
        damaged.clone(),
    )
    .map(Some)
}

enum Role {
    Owner(Box<Owned>),
    Attached,
}

async fn start(options: &ReaderOptions) -> Result<(Shared, Role)> {
    let mount = Arc::new(MountDir::open(
        &options.mount_directory,
        &options.store_name,
    )?);
    let damaged = Arc::new(AtomicBool::new(false));
    let clock = options.clock.clone();
    let mut waited_for_bootstrap = false;
    loop {
        if mount.try_own()? {
            let status = StatusBoard::new(&[]);
            let owned = own(options, &mount, None, &status, &damaged).await;
            let (owned, config) = match owned {
                Ok(o) => o,
                Err(e) => {
                    mount.disown();
                    return Err(e);
                }
            };
            let view = owned.owner.published().ok_or_else(|| Error::Local {
                path: mount.path().display().to_string(),
                message: "the owner published no read image".into(),
            })?;
            let partitions = owned.owner.identity().partitions.clone();
            let shared = shared(
                options, config, partitions, mount, view, status, true, damaged,
            );
            return Ok((shared, Role::Owner(Box::new(owned))));
        }
        if let Some(current) = mount.read_current()? {
            check_identity(
                mount.path(),
                &current.identity,
                &options.storage_url,
                &options.partitions,
            )?;
            if let Some(view) = attach_view(&mount, &current, &damaged)? {
                let partitions = current.identity.partitions.clone();
                let status = StatusBoard::new(&partitions);
                let view = Arc::new(PublishedView::new(view));
                let shared = shared(
                    options,
                    current.identity.config.clone(),
                    partitions,
                    mount,
                    view,
                    status,
                    false,
                    damaged,
                );
                refresh_status(&shared);
                wait_for_owner_catch_up(&shared, &clock).await?;
                tracing::info!(
                    owner = current.owner_pid,
                    generation = current.generation,
                    "attached to the mount's shared copy"
                );
                return Ok((shared, Role::Attached));
            }
        } else if !waited_for_bootstrap {
            waited_for_bootstrap = true;
            tracing::info!(mount = %mount.path().display(), "waiting for another process's bootstrap of this mount");
        }
        clock.sleep(ATTACH_TICK).await;
    }
}

#[allow(clippy::too_many_arguments)]
fn shared(
    options: &ReaderOptions,
    config: StoreConfig,
    partitions: Vec<u32>,
    mount: Arc<MountDir>,
    view: Arc<PublishedView>,
    status: StatusBoard,
    owns: bool,
    damaged: Arc<AtomicBool>,
) -> Shared {
    let mut mounted = vec![false; config.num_partitions as usize];
    for p in &partitions {
        mounted[*p as usize] = true;
    }
    Shared {
        options: options.clone(),
        config,
        partitions,
        mounted,
        mount,
        view,
        status,
        owns: AtomicBool::new(owns),
        damaged,
    }
}

/// An attached process's status: the shared copy's state and its owner's freshness.
fn refresh_status(shared: &Shared) {
    let view = shared.view.load();
    for &p in &shared.partitions {
        let ms = view.overlay.caught_up_ms(p);
        let at = (ms > 0).then(|| UNIX_EPOCH + Duration::from_millis(ms));
        shared
            .status
            .attached(p, view.applied[p as usize], view.snapshot[p as usize], at);
    }
}

/// One step of an attached process: index what the owner committed since, or switch to the
/// generation that replaced ours.
fn follow(shared: &Shared, check_current: bool) -> Result<()> {
    if shared.damaged.swap(false, Ordering::SeqCst) {
        shared.mount.report_damage();
    }
    let view = shared.view.load_full();
    if (check_current || view.overlay.superseded_by().is_some())
        && let Some(current) = shared.mount.read_current()?
        && current.generation != view.generation
    {
        // Generations only grow while one owner after another holds the mount: one that goes
        // back was written by a process that should not own it. Never follow it back.
        if current.generation < view.generation {
            return Err(Error::Local {
                path: shared.mount.path().display().to_string(),
                message: format!(
                    "the mount's published generation went back from {} to {} (owner pid {}): a process that does not hold the mount's lock wrote it; serving the data as it was",
                    view.generation, current.generation, current.owner_pid
                ),
            });
        }
        if current.identity.config != shared.config
            || current.identity.partitions != shared.partitions
        {
            return Err(Error::Local {
                path: shared.mount.path().display().to_string(),
                message: "the mount's owner now serves another store configuration or other partitions; serving the data as it was".into(),
            });
        }
        if let Some(next) = attach_view(&shared.mount, &current, &shared.damaged)? {
            drop(view);
            shared.view.publish(next);
            refresh_status(shared);
        }
        return Ok(());
    }
    if let Some(next) = view.advanced()? {
        drop(view);
        shared.view.publish(next);
    }
    refresh_status(shared);
    Ok(())
}

/// One poll of the owner; returns how long to wait before the next.
async fn poll_once(
    shared: &Shared,
    owned: &mut Owned,
    failures: &mut u32,
    last_gap_check: &mut Duration,
    stop: &watch::Receiver<bool>,
) -> Duration {
    let options = &shared.options;
    let clock = options.clock.clone();
    let Owned {
        owner,
        storage,
        layout,
        states,
        ..
    } = owned;
    if owner.take_damage() {
        tracing::warn!("a read found the shared copy damaged; rebuilding it");
        // The durable copy has its own checksums: a new image from it first, the bucket if
        // that fails too.
        let repaired = match owner.fold() {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "the durable copy cannot rebuild the image; bootstrapping from the bucket");
                rebuild(storage, layout, owner, &shared.status, &shared.partitions)
                    .await
                    .map(|rebuilt| *states = rebuilt)
            }
        };
        if let Err(e) = repaired {
            tracing::warn!(error = %e, "rebuilding the damaged local copy failed; retrying");
            for p in &shared.partitions {
                shared.status.failed(
                    *p,
                    &format!("the local copy is damaged and rebuilding it failed: {e}"),
                );
            }
            shared.damaged.store(true, Ordering::SeqCst);
        }
    }
    let check_gaps = *failures > 0
        || clock.elapsed().saturating_sub(*last_gap_check) >= options.gap_check_interval;
    match sync_all(
        storage,
        layout,
        owner,
        &shared.status,
        states,
        check_gaps,
        clock.as_ref(),
    )
    .await
    {
        Ok(()) => {
            if check_gaps {
                *last_gap_check = clock.elapsed();
            }
            *failures = 0;
            owned.local_failures = 0;
            options.poll_interval
        }
        // Cut short by shutdown: not a failure.
        Err(_) if *stop.borrow() => Duration::ZERO,
        Err(failure) => {
            *failures += 1;
            owned.local_failures = match &failure {
                crate::sync::SyncFailure::All(e) if e.kind() == ikv_core::ErrorKind::Local => {
                    owned.local_failures + 1
                }
                _ => 0,
            };
            for (p, e) in failure.per_partition(&shared.partitions) {
                tracing::warn!(partition = p, error = %e, failures, "poll failed; serving local data and retrying");
                shared.status.failed(p, &e);
            }
            options
                .poll_interval
                .max(Duration::from_millis(100))
                .saturating_mul(1 << (*failures).min(6))
                .min(Duration::from_secs(30))
        }
    }
}

async fn run(shared: Arc<Shared>, mut role: Role, mut stop: watch::Receiver<bool>) {
    let clock = shared.options.clock.clone();
    let mut failures: u32 = 0;
    let mut last_gap_check = clock.elapsed();
    let mut ticks: u64 = 0;
    let follow_tick = shared
        .options
        .poll_interval
        .clamp(Duration::from_millis(1), ATTACH_TICK);
    loop {
        if *stop.borrow() {
            break;
        }
        let wait = match &mut role {
            Role::Owner(owned) => {
                ticks += 1;
                if ticks.is_multiple_of(50) && !shared.mount.in_place() {
                    let e = format!(
                        "the mount directory {} was removed or replaced while this process owned it: it serves what it has and cannot publish more; restart this host's readers",
                        shared.mount.path().display()
                    );
                    tracing::error!("{e}");
                    for p in &shared.partitions {
                        shared.status.failed(*p, &e);
                    }
                }
                let wait =
                    poll_once(&shared, owned, &mut failures, &mut last_gap_check, &stop).await;
                if owned.local_failures >= REOPEN_AFTER_LOCAL_FAILURES {
                    // The durable copy keeps failing (a full disk poisons it: every later
                    // write fails too). Give the mount up and take it again: the copy is
                    // reopened from disk, and once there is room, polling goes on.
                    tracing::warn!(
                        failures = owned.local_failures,
                        "the local copy keeps failing; reopening it"
                    );
                    if let Role::Owner(owned) = std::mem::replace(&mut role, Role::Attached) {
                        shared.owns.store(false, Ordering::SeqCst);
                        if let Err(e) = owned.owner.release() {
                            tracing::warn!(error = %e, "persisting the failing local copy failed");
                        }
                    }
                }
                wait
            }
            Role::Attached => {
                ticks += 1;
                // `current` is read about once a second; an overlay's superseded mark tells
                // of a new generation at once.
                if let Err(e) = follow(&shared, ticks.is_multiple_of(50)) {
                    for p in &shared.partitions {
                        shared.status.failed(*p, &e.to_string());
                    }
                }
                match shared.mount.try_own() {
                    Ok(true) => match take_over(&shared).await {
                        Ok(owned) => {
                            tracing::info!("the mount's owner went away; this process owns it now");
                            shared.owns.store(true, Ordering::SeqCst);
                            last_gap_check = clock.elapsed();
                            role = Role::Owner(Box::new(owned));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "taking the mount over failed; serving the shared copy as it is");
                            for p in &shared.partitions {
                                shared.status.failed(*p, &e.to_string());
                            }
                            shared.mount.disown();
                        }
                    },
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot check the mount's owner lock"),
                }
                follow_tick
            }
        };
        tokio::select! {
            _ = clock.sleep(wait) => {}
            _ = stop.changed() => break,
        }
    }
    if let Role::Owner(owned) = role {
        shared.owns.store(false, Ordering::SeqCst);
        if let Err(e) = owned.owner.release() {
            tracing::warn!(error = %e, "persisting the local copy at shutdown failed");
        }
    }
}

async fn take_over(shared: &Shared) -> Result<Owned> {
    let (owned, config) = own(
        &shared.options,
        &shared.mount,
        Some(shared.view.clone()),
        &shared.status,
        &shared.damaged,
    )
    .await?;
    if config != shared.config {
        tracing::warn!("the store was recreated since this process attached; serving the new one");
    }
    Ok(owned)
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
        let (shared, role) = runtime.block_on(start(&options))?;
        let shared = Arc::new(shared);
        let (stop, stopped) = watch::channel(false);
        let poller = runtime.spawn(run(shared.clone(), role, stopped));
        Ok(Reader {
            shared,
            stop,
            background: Mutex::new(Some(Background { poller, runtime })),
        })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.shared.config
    }

    /// Whether this process owns the mount (polls the bucket for every process of the host)
    /// rather than following its owner.
    pub fn owns_mount(&self) -> bool {
        self.shared.owns.load(Ordering::SeqCst)
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
        let Some(doc) = select(bytes, &view.drops, pk_name)? else {
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
        let view = self.shared.view.load();
        self.get_in(&view, key, field)
    }

    /// Every live field of the document `key` (one lookup), or `None`.
    pub fn get_document(&self, key: &[u8]) -> Result<Option<BTreeMap<String, FieldValue>>> {
        self.check_mounted(key)?;
        let view = self.shared.view.load();
        let Some(bytes) = view.doc(key)? else {
            return Ok(None);
        };
        let pk = &self.shared.config.primary_key_field;
        let Some(doc) = select(bytes, &view.drops, pk)? else {
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
        let view = self.shared.view.load();
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
        self.multiget_visit(keys, fields, |i, j, stored| {
            out[i * nf + j] = Some(stored.value()?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `visit(i, j, field)` for every live stored field `fields[j]` of document
    /// `keys[i]`, all from one consistent view, with the field's bytes borrowed from the
    /// shared copy: a caller can convert them without an intermediate copy (the Python
    /// binding builds its objects straight from them). One document lookup per key.
    pub fn multiget_visit<K: AsRef<[u8]>, F: AsRef<str>>(
        &self,
        keys: &[K],
        fields: &[F],
        mut visit: impl FnMut(usize, usize, FieldRef<'_>) -> Result<()>,
    ) -> Result<()> {
        if fields.is_empty() {
            return Ok(());
        }
        for k in keys {
            self.check_mounted(k.as_ref())?;
        }
        let view = self.shared.view.load();
        let pk = &self.shared.config.primary_key_field;
        for (i, key) in keys.iter().enumerate() {
            // The lookups of a batch wait on memory together, not one after another.
            if i % PREFETCH_MAX == 0 && keys.len() - i > 1 {
                view.image.prefetch(&keys[i..]);
            }
            let Some(bytes) = view.doc(key.as_ref())? else {
                continue;
            };
            let Some(doc) = select(bytes, &view.drops, pk)? else {
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
                    for (j, f) in fields.iter().enumerate() {
                        if f.as_ref() == stored.name {
                            visit(i, j, stored)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Stops polling, flushes the local copy to disk and hands the mount to another process.
    /// Also done on drop.
    pub fn shutdown(self) -> Result<()> {
        self.stop()
    }

    /// Stops polling (waiting for the delta being applied, if any); an owner flushes its
    /// durable copy to disk and gives the mount up to another process. Reads keep answering
    /// from the shared copy as it stands; later stops do nothing. Blocking: not from inside
    /// an async task.
    pub fn stop(&self) -> Result<()> {
        self.stop_poller();
        Ok(())
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
