//! The mount directory of one store, shared by every reader process of a host.
//!
//! Files under `<mount>/<store>/` (`docs/READER.md`, "One local copy per host"):
//! - The directory itself is the owner lock: the process holding an exclusive `flock` on it
//!   is the owner (it holds `db/`, polls the bucket and writes images and overlays); the
//!   kernel drops the lock when the owner exits or dies, and another process takes it over.
//!   A directory, not a file in it: a temporary-files cleaner (systemd-tmpfiles, tmpreaper)
//!   that removes an old empty file would let a second process lock a new file of the same
//!   name while the first still owns the mount. (Layouts before 3 locked `owner.lock`; a
//!   leftover one is ignored.) The owner checks that the directory at the path is still the
//!   one it locked ([`MountDir::in_place`]).
//! - `db/`: the owner's durable state beside the base image: the tail of changes and the
//!   partitions' states (fjall).
//! - `image-<generation>`, `overlay-<generation>`: the read image and overlay every process
//!   maps; `current` (JSON, sealed with a checksum, replaced by rename) names the generation
//!   in use and what the mount serves (storage root, store, partitions, configuration).
//! - `damaged`: left by a process whose read found damage; the owner rebuilds and removes it.
//!
//! A forked child must not keep its parent's lock alive (the parent's exit would not hand the
//! mount over): an at-fork handler points every owner lock descriptor of the child at
//! `/dev/null` (the lock belongs to the parent's descriptor alone from then on).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::sync::atomic::{AtomicI32, Ordering};

use ikv_core::{Error, Result, StoreConfig};
use serde::{Deserialize, Serialize};

fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Local {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// What a mount serves; a process asking for anything else is refused while it is owned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub storage_url: String,
    pub partitions: Vec<u32>,
    pub config: StoreConfig,
    /// The local layout version that wrote the mount; another is rebuilt by its owner.
    pub layout: u32,
    /// A point-in-time copy's points (`crate::pin`); absent for a live copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<Vec<crate::pin::PinnedPoint>>,
}

/// Version of the local layout: 3 made the image and overlay the copy that reads use; 4
/// made documents and image entries compact (varint lengths, an epoch a section); 5 made
/// the image the only home of values (the durable state keeps the changes since it).
pub const LOCAL_LAYOUT: u32 = 5;

/// A storage root URL as compared between processes (a trailing `/` is not a difference).
pub fn normalized_url(url: &str) -> &str {
    url.trim_end_matches('/')
}

/// The content of `current`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Current {
    pub generation: u64,
    pub identity: Identity,
    pub owner_pid: u32,
}

/// Descriptors of the owner locks this process holds, for the at-fork handler (lock-free:
/// the handler runs in a child where another thread may have held any lock).
static OWNER_FDS: [AtomicI32; 64] = [const { AtomicI32::new(-1) }; 64];
static DEV_NULL: AtomicI32 = AtomicI32::new(-1);

extern "C" fn drop_owner_locks_in_child() {
    let null = DEV_NULL.load(Ordering::SeqCst);
    for slot in &OWNER_FDS {
        let fd = slot.swap(-1, Ordering::SeqCst);
        if fd >= 0 && null >= 0 {
            // SAFETY: dup2 is async-signal-safe; `fd` stays a valid descriptor (now of
            // /dev/null), so whatever later closes it closes nothing else.
            unsafe { libc::dup2(null, fd) };
        }
    }
}

fn install_fork_handler() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        if let Ok(null) = File::open("/dev/null") {
            DEV_NULL.store(std::os::fd::IntoRawFd::into_raw_fd(null), Ordering::SeqCst);
        }
        // SAFETY: the handler only uses atomics and dup2.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(drop_owner_locks_in_child)) };
        if rc != 0 {
            tracing::warn!(rc, "cannot install the reader's fork handler");
        }
    });
}

/// One store's directory under a mount directory.
pub struct MountDir {
    dir: PathBuf,
    lock: File,
}

impl MountDir {
    pub fn open(mount_directory: &Path, store_name: &str) -> Result<MountDir> {
        let dir = mount_directory.join(store_name);
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let lock = File::open(&dir).map_err(|e| io_err(&dir, e))?;
        Ok(MountDir { dir, lock })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Takes ownership if no process holds it. Never blocks.
    pub fn try_own(&self) -> Result<bool> {
        install_fork_handler();
        match self.lock.try_lock() {
            Ok(()) => {
                let fd = self.lock.as_raw_fd();
                let registered = OWNER_FDS.iter().any(|s| {
                    s.compare_exchange(-1, fd, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
                });
                if !registered {
                    tracing::warn!(
                        "more than 64 owned mounts: a forked child keeps this one's lock"
                    );
                }
                Ok(true)
            }
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(e)) => Err(io_err(&self.dir, e)),
        }
    }

    /// Whether the directory at the mount's path is still the one this process opened (and
    /// locks, when it owns the mount): false once it was removed, or replaced by another.
    pub fn in_place(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (self.lock.metadata(), std::fs::metadata(&self.dir)) {
            (Ok(held), Ok(there)) => held.dev() == there.dev() && held.ino() == there.ino(),
            _ => false,
        }
    }

    /// Gives ownership up (another process may take it at once).
    pub fn disown(&self) {
        self.unregister();
        let _ = self.lock.unlock();
    }

    /// Takes the lock's descriptor out of the at-fork list: once closed, its number may be
    /// reused by an unrelated file, which the handler must never touch.
    fn unregister(&self) {
        let fd = self.lock.as_raw_fd();
        for slot in &OWNER_FDS {
            let _ = slot.compare_exchange(fd, -1, Ordering::SeqCst, Ordering::SeqCst);
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.join("db")
    }

    pub fn image_path(&self, generation: u64) -> PathBuf {
        self.dir.join(format!("image-{generation:010}"))
    }

    pub fn overlay_path(&self, generation: u64) -> PathBuf {
        self.dir.join(format!("overlay-{generation:010}"))
    }

    fn current_path(&self) -> PathBuf {
        self.dir.join("current")
    }

    /// The generation in use and what the mount serves, if any is published.
    pub fn read_current(&self) -> Result<Option<Current>> {
        let path = self.current_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path, e)),
        };
        let json = ikv_core::checksum::open_json(&bytes, "mount's current generation")?;
        serde_json::from_slice(&json)
            .map(Some)
            .map_err(|e| Error::Corrupt {
                what: path.display().to_string(),
                reason: e.to_string(),
            })
    }

    /// Publishes `current` (written beside, synced, renamed into place). Owner only.
    pub fn write_current(&self, current: &Current) -> Result<()> {
        let path = self.current_path();
        let temp = self.dir.join("current.tmp");
        let bytes = ikv_core::checksum::seal_json(serde_json::to_vec(current).unwrap_or_default());
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&temp)?;
            std::io::Write::write_all(&mut file, &bytes)?;
            file.sync_all()?;
            std::fs::rename(&temp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| io_err(&path, e))
    }

    /// Withdraws `current`, so that processes wait for the next one. Owner only.
    pub fn clear_current(&self) -> Result<()> {
        match std::fs::remove_file(self.current_path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&self.current_path(), e)),
        }
    }

    /// Generations with an image or overlay file (or a leftover of writing one).
    pub fn generations(&self) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| io_err(&self.dir, e))? {
            let name = entry.map_err(|e| io_err(&self.dir, e))?.file_name();
            let name = name.to_string_lossy();
            let number = name
                .strip_prefix("image-")
                .or_else(|| name.strip_prefix("overlay-"))
                .map(|n| n.trim_end_matches(".tmp"));
            if let Some(g) = number.and_then(|n| n.parse::<u64>().ok()) {
                out.push(g);
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Deletes the files of every generation but `keep`. Processes still mapping them keep
    /// reading (an unlinked file lives while it is mapped). Owner only.
    pub fn remove_generations_except(&self, keep: u64) -> Result<()> {
        for g in self.generations()? {
            if g != keep {
                for path in [self.image_path(g), self.overlay_path(g)] {
                    for p in [path.with_extension("tmp"), path] {
                        match std::fs::remove_file(&p) {
                            Ok(()) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(e) => return Err(io_err(&p, e)),
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn damaged_path(&self) -> PathBuf {
        self.dir.join("damaged")
    }

    /// Asks the owner to rebuild the read image (a read found damage).
    pub fn report_damage(&self) {
        if let Err(e) = File::create(self.damaged_path()) {
            tracing::warn!(error = %e, "cannot report damage of the local copy to its owner");
        }
    }

    /// Whether a process reported damage since the last call (clears the report).
    pub fn take_damage_report(&self) -> bool {
        std::fs::remove_file(self.damaged_path()).is_ok()
    }
}

impl Drop for MountDir {
    fn drop(&mut self) {
        self.unregister();
    }
}

/// What a process asks of a mount, compared with what it serves.
pub fn check_identity(
    mount: &Path,
    serves: &Identity,
    storage_url: &str,
    partitions: &[u32],
) -> Result<()> {
    let all: Vec<u32> = (0..serves.config.num_partitions).collect();
    let asked_partitions = if partitions.is_empty() {
        &all[..]
    } else {
        partitions
    };
    let mut differences = Vec::new();
    if normalized_url(&serves.storage_url) != normalized_url(storage_url) {
        differences.push((
            format!("storage root {:?}", serves.storage_url),
            format!("storage root {storage_url:?}"),
        ));
    }
    if serves.partitions != asked_partitions {
        differences.push((
            format!("partitions {:?}", serves.partitions),
            format!("partitions {asked_partitions:?}"),
        ));
    }
    if differences.is_empty() {
        return Ok(());
    }
    let (serves, asked): (Vec<String>, Vec<String>) = differences.into_iter().unzip();
    Err(Error::MountInUse {
        path: mount.display().to_string(),
        serves: serves.join(", "),
        asked: asked.join(", "),
    })
}
