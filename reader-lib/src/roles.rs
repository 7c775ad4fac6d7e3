//! Start-up and roles. Every process opening a mount directory plays one of two roles
//! (`docs/READER.md`, "One local copy per host"): the owner (the first to take the mount's
//! lock) polls the bucket and writes the shared read image and overlay; the others attach to
//! them and only follow the overlay. An attached process takes the lock over when the owner
//! goes away.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use ikv_core::bucket::load_config;
use ikv_core::clock::Clock;
use ikv_core::{Error, Result, Storage, StoreConfig, StoreLayout};

use crate::cadence::Cadence;
use crate::image::Image;
use crate::local::PartitionState;
use crate::mount::{Current, Identity, LOCAL_LAYOUT, MountDir, check_identity, normalized_url};
use crate::options::ReaderOptions;
use crate::overlay::Overlay;
use crate::owner::Owner;
use crate::pin::Pinned;
use crate::poller::{follow, refresh_status};
use crate::status::StatusBoard;
use crate::sync::{rebuild, rebuild_from, sync_all};
use crate::view::{PublishedView, ReadView};

pub(crate) struct Shared {
    pub(crate) options: ReaderOptions,
    pub(crate) config: StoreConfig,
    pub(crate) partitions: Vec<u32>,
    pub(crate) mounted: Vec<bool>,
    pub(crate) mount: Arc<MountDir>,
    pub(crate) view: Arc<PublishedView>,
    pub(crate) status: StatusBoard,
    /// Whether this process owns the mount now.
    pub(crate) owns: AtomicBool,
    pub(crate) damaged: Arc<AtomicBool>,
    /// A point-in-time reader's points, resolved once at open (`crate::pin`).
    pub(crate) pinned: Option<Arc<Pinned>>,
    /// What reads judge expiries by: the clock, or a pinned reader's point in time.
    pub(crate) time: crate::read_time::TimeSource,
}

/// What the owner's poller works with.
pub(crate) struct Owned {
    pub(crate) owner: Owner,
    pub(crate) storage: Storage,
    pub(crate) layout: StoreLayout,
    pub(crate) states: BTreeMap<u32, PartitionState>,
    /// Polls in a row that failed in the local copy (not the bucket).
    pub(crate) local_failures: u32,
    /// Which partitions each poll looks at.
    pub(crate) cadence: Cadence,
}

/// Polls in a row failing in the local copy after which the owner reopens it.
pub(crate) const REOPEN_AFTER_LOCAL_FAILURES: u32 = 3;

/// How often an attached process waits for a bootstrap in progress or checks for news.
pub(crate) const ATTACH_TICK: Duration = Duration::from_millis(20);

/// How long an attaching process waits at most for the owner's first catch-up.
pub(crate) const ATTACH_CATCH_UP_WAIT: Duration = Duration::from_secs(120);

/// Whether a process of this pid exists (signal 0 checks without sending; EPERM means it
/// exists under another user).
pub(crate) fn process_exists(pid: u32) -> bool {
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
pub(crate) async fn wait_for_owner_catch_up(shared: &Shared, clock: &Arc<dyn Clock>) -> Result<()> {
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

pub(crate) async fn open_storage(options: &ReaderOptions) -> Result<Storage> {
    match &options.storage {
        Some(storage) => Ok(storage.clone()),
        None => Storage::open(&options.storage_url, &options.storage_options),
    }
}

/// The partitions `options` asks for, checked against the store's configuration.
pub(crate) fn resolve_partitions(
    options: &ReaderOptions,
    config: &StoreConfig,
) -> Result<Vec<u32>> {
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

pub(crate) fn identity_of(
    options: &ReaderOptions,
    config: StoreConfig,
    partitions: Vec<u32>,
    pinned: Option<&Pinned>,
) -> Identity {
    Identity {
        storage_url: normalized_url(&options.storage_url).to_owned(),
        partitions,
        config,
        layout: LOCAL_LAYOUT,
        pinned: pinned.map(|p| p.points.clone()),
    }
}

/// A pinned reader's points and the name of its copy's directory (the store's name for a
/// live reader): a LIST or GET or two per partition before the mount is even looked at.
async fn resolve_pin(options: &ReaderOptions) -> Result<(Option<Arc<Pinned>>, String)> {
    let Some(pin) = &options.pin else {
        return Ok((None, options.store_name.clone()));
    };
    let storage = open_storage(options).await?;
    let config = load_config(&storage, &options.store_name).await?;
    let partitions = resolve_partitions(options, &config)?;
    let pinned = Pinned::resolve(&storage, &config, &partitions, pin).await?;
    let name = pinned.mount_name(&options.store_name);
    tracing::info!(%pin, mount = %name, "a point-in-time reader");
    Ok((Some(Arc::new(pinned)), name))
}

/// Becomes the owner: opens the durable copy (resuming it, or bootstrapping from the bucket
/// when there is none) and catches up. `view` is the view this process already serves, if
/// it was attached.
pub(crate) async fn own(
    options: &ReaderOptions,
    mount: &Arc<MountDir>,
    view: Option<Arc<PublishedView>>,
    status: &StatusBoard,
    damaged: &Arc<AtomicBool>,
    pinned: Option<&Pinned>,
) -> Result<(Owned, StoreConfig)> {
    let storage = open_storage(options).await?;
    status.counters.set_storage(&storage);
    let config = load_config(&storage, &options.store_name).await?;
    let layout = StoreLayout::new(&storage.prefix, &config.store_name)?;
    let partitions = resolve_partitions(options, &config)?;
    status.set_partitions(&partitions);
    let identity = identity_of(options, config.clone(), partitions.clone(), pinned);
    let (mut owner, resumed) = Owner::open(
        mount.clone(),
        identity,
        options.cache_bytes,
        view,
        damaged.clone(),
        status.counters.fold_seconds.clone(),
        options.fold_min_bytes,
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
        None => match pinned {
            Some(pinned) => {
                let snapshots = pinned.snapshots(&storage, &layout).await?;
                rebuild_from(&storage, &layout, &mut owner, status, snapshots).await?
            }
            None => rebuild(&storage, &layout, &mut owner, status, &partitions).await?,
        },
    };
    if let Some(pinned) = pinned {
        // Up to the points, once; a pinned copy never polls.
        pinned
            .catch_up(
                &storage,
                &layout,
                &mut owner,
                status,
                &mut states,
                options.clock.as_ref(),
            )
            .await?;
        return Ok((owned(options, owner, storage, layout, states), config));
    }
    // A resumed copy may have fallen behind retention while no reader ran, and any copy may
    // sit below a hole: check once (a LIST or two per partition).
    let all = states.keys().copied().collect();
    sync_all(
        &storage,
        &layout,
        &mut owner,
        status,
        &mut states,
        crate::sync::Scope {
            due: &all,
            check_gaps: &all,
        },
        options.clock.as_ref(),
    )
    .await
    .map_err(crate::sync::SyncFailure::into_error)?;
    Ok((owned(options, owner, storage, layout, states), config))
}

fn owned(
    options: &ReaderOptions,
    owner: Owner,
    storage: Storage,
    layout: StoreLayout,
    states: BTreeMap<u32, PartitionState>,
) -> Owned {
    Owned {
        cadence: Cadence::new(
            states.keys().copied(),
            options.clock.elapsed(),
            options.poll_interval,
            options.idle_poll_interval,
        ),
        owner,
        storage,
        layout,
        states,
        local_failures: 0,
    }
}

/// The view of the generation `current` names, or `None` when its files were replaced
/// meanwhile (read `current` again).
pub(crate) fn attach_view(
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

pub(crate) enum Role {
    Owner(Box<Owned>),
    Attached,
}

pub(crate) async fn start(options: &ReaderOptions) -> Result<(Shared, Role)> {
    let (pinned, mount_name) = resolve_pin(options).await?;
    let mount = Arc::new(MountDir::open(&options.mount_directory, &mount_name)?);
    let damaged = Arc::new(AtomicBool::new(false));
    let clock = options.clock.clone();
    let mut waited_for_bootstrap = false;
    loop {
        if mount.try_own()? {
            let status = StatusBoard::new(&[]);
            let owned = own(options, &mount, None, &status, &damaged, pinned.as_deref()).await;
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
                options, config, partitions, mount, view, status, true, damaged, pinned,
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
                    pinned,
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
pub(crate) fn shared(
    options: &ReaderOptions,
    config: StoreConfig,
    partitions: Vec<u32>,
    mount: Arc<MountDir>,
    view: Arc<PublishedView>,
    status: StatusBoard,
    owns: bool,
    damaged: Arc<AtomicBool>,
    pinned: Option<Arc<Pinned>>,
) -> Shared {
    let mut mounted = vec![false; config.num_partitions as usize];
    for p in &partitions {
        mounted[*p as usize] = true;
    }
    let time = match &pinned {
        Some(p) => crate::read_time::TimeSource::Fixed(p.at_ms),
        None => crate::read_time::TimeSource::Clock(options.clock.clone()),
    };
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
        pinned,
        time,
    }
}

pub(crate) async fn take_over(shared: &Shared) -> Result<Owned> {
    let (owned, config) = own(
        &shared.options,
        &shared.mount,
        Some(shared.view.clone()),
        &shared.status,
        &shared.damaged,
        shared.pinned.as_deref(),
    )
    .await?;
    if config != shared.config {
        tracing::warn!("the store was recreated since this process attached; serving the new one");
    }
    Ok(owned)
}
