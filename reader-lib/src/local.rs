//! The owner's durable state, with the read image it names: a fjall database under
//! `<mount>/<store>/db` holding the **tail** (the documents changed since the base image) and
//! the partitions' states. The base image (`image-<base>`, the file readers map) holds every
//! other document: each value has one home on disk (rfcs/0010). A restarted or new owner
//! resumes from base image + tail without a bootstrap, and folds new images from them.
//!
//! Layout (documented in `docs/READER.md`):
//! - keyspace `meta`: `identity` (what the mount serves, JSON), `active` (name of the tail
//!   keyspace in use), `generation` (its number), `base` (u64 LE: the generation of the base
//!   image), and per partition `applied/<p>` (u64 LE: last delta applied), `snapshot/<p>` (u64
//!   LE: snapshot bootstrapped from), `drops/<p>` (JSON [`DropState`]).
//! - keyspace `tail-<generation>`: one entry per document changed since the base image (key:
//!   `keys::doc_key`, value: `doc.rs`; an empty value is a deletion, hiding the image's entry).
//!
//! Invariants:
//! - A delta's changes, the partition's new applied sequence and its drop state are written in
//!   one atomic batch.
//! - The base image is complete and synced before any batch names it; a batch names a new base
//!   together with the tail that belongs to it (empty after a bootstrap or an import, the
//!   changes carried past a fold otherwise), and is synced before the old base's file may be
//!   deleted. Any other tail keyspace found at open is a leftover and is deleted.
//! - The state is "complete" only when `identity` matches, a base and a tail are named and
//!   every mounted partition has an applied sequence and a readable drop state; anything else
//!   is wiped and rebuilt (the owner also rebuilds when the base image does not open).
//! - Only the mount's owner opens it (fjall is single-process).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use ikv_core::{Error, Result};

use crate::drops::DropState;
use crate::keys::doc_key;
use crate::mount::Identity;
use crate::view::ImagePartition;

const META: &str = "meta";
const TAIL: &str = "tail-";
/// Keyspaces of local layouts up to 4, which held every document: deleted when found.
const OLD_DOCS: &str = "docs-";
/// A tail entry's value for a deleted document.
const DELETED: &[u8] = &[];

fn local_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Local {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Per partition: where the local state stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionState {
    pub applied: u64,
    pub snapshot: u64,
}

pub struct LocalStore {
    path: PathBuf,
    db: Database,
    meta: Keyspace,
    tail: Keyspace,
    generation: u64,
    /// Generation of the base image (0: none yet).
    base: u64,
}

/// Options of the tail keyspace: reads go to the mapped image and overlay, so fjall is
/// written by deltas and scanned in order by folds.
fn tail_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default()
}

fn u64_of(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

impl LocalStore {
    /// Opens (creating if needed) the durable state at `db_path` for `identity`. Returns each
    /// mounted partition's state when a complete state for exactly this identity exists.
    pub fn open(
        db_path: &Path,
        identity: &Identity,
        cache_bytes: u64,
    ) -> Result<(LocalStore, Option<BTreeMap<u32, ImagePartition>>)> {
        // The mount is a cache of the bucket: a database that no longer opens, or whose
        // keyspaces no longer open (a deleted or damaged file), is discarded and rebuilt from
        // the bucket, never a dead end, and not only on the second try.
        match LocalStore::open_once(db_path, identity, cache_bytes) {
            Err(e) if e.kind() == ikv_core::ErrorKind::Local && db_path.exists() => {
                tracing::warn!(path = %db_path.display(), error = %e, "the local copy does not open; discarding it and rebuilding");
                std::fs::remove_dir_all(db_path).map_err(|e| local_err(db_path, e))?;
                LocalStore::open_once(db_path, identity, cache_bytes)
            }
            opened => opened,
        }
    }

    fn open_once(
        db_path: &Path,
        identity: &Identity,
        cache_bytes: u64,
    ) -> Result<(LocalStore, Option<BTreeMap<u32, ImagePartition>>)> {
        let db = Database::builder(db_path)
            .cache_size(cache_bytes)
            .open()
            .map_err(|e| local_err(db_path, e))?;
        let meta = db
            .keyspace(META, KeyspaceCreateOptions::default)
            .map_err(|e| local_err(db_path, e))?;
        let get = |k: &str| meta.get(k).map_err(|e| local_err(db_path, e));

        let stored_identity: Option<Identity> =
            get("identity")?.and_then(|v| serde_json::from_slice(&v).ok());
        let active: Option<String> =
            get("active")?.map(|v| String::from_utf8_lossy(&v).into_owned());
        let generation = get("generation")?.and_then(|v| u64_of(&v)).unwrap_or(0);
        let base = get("base")?.and_then(|v| u64_of(&v)).unwrap_or(0);
        let mut states = BTreeMap::new();
        let mut complete =
            stored_identity.as_ref() == Some(identity) && active.is_some() && base > 0;
        if complete {
            for &p in &identity.partitions {
                let applied = get(&format!("applied/{p}"))?.and_then(|v| u64_of(&v));
                let snapshot = get(&format!("snapshot/{p}"))?
                    .and_then(|v| u64_of(&v))
                    .unwrap_or(0);
                // Absent means no drops; present but unreadable is damage, never "no drops"
                // (that would bring dropped fields back): the copy is rebuilt.
                let drops: Option<DropState> = match get(&format!("drops/{p}"))? {
                    None => Some(DropState::default()),
                    Some(v) => serde_json::from_slice(&v).ok(),
                };
                match (applied, drops) {
                    (Some(applied), Some(drops)) => {
                        states.insert(
                            p,
                            ImagePartition {
                                applied,
                                snapshot,
                                drops,
                            },
                        );
                    }
                    (_, None) => {
                        tracing::warn!(
                            partition = p,
                            "the local drop state is unreadable; rebuilding the local copy"
                        );
                        complete = false;
                    }
                    (None, _) => complete = false,
                }
            }
        }
        // Delete tail keyspaces that are not the active one (interrupted bootstraps and
        // folds), and the full copies of older layouts.
        let keep = if complete { active.clone() } else { None };
        for name in db.list_keyspace_names() {
            let name: &str = name.as_ref();
            if (name.starts_with(TAIL) || name.starts_with(OLD_DOCS))
                && Some(name) != keep.as_deref()
            {
                let ks = db
                    .keyspace(name, KeyspaceCreateOptions::default)
                    .map_err(|e| local_err(db_path, e))?;
                db.delete_keyspace(ks).map_err(|e| local_err(db_path, e))?;
                tracing::info!(keyspace = name, "deleted a stale local keyspace");
            }
        }
        let tail_name = keep.unwrap_or_else(|| format!("{TAIL}{}", generation + 1));
        let tail = db
            .keyspace(&tail_name, tail_options)
            .map_err(|e| local_err(db_path, e))?;
        if !complete {
            // Start over: identity first, no active keyspace until a bootstrap completes.
            let mut batch = db.batch();
            batch.insert(
                &meta,
                "identity",
                serde_json::to_vec(identity).unwrap_or_default(),
            );
            batch.remove(&meta, "active");
            batch.remove(&meta, "base");
            for p in 0..identity.config.num_partitions {
                batch.remove(&meta, format!("applied/{p}"));
                batch.remove(&meta, format!("snapshot/{p}"));
                batch.remove(&meta, format!("drops/{p}"));
            }
            batch.commit().map_err(|e| local_err(db_path, e))?;
        }
        let store = LocalStore {
            path: db_path.to_owned(),
            db,
            meta,
            tail,
            generation,
            base: if complete { base } else { 0 },
        };
        Ok((store, complete.then_some(states)))
    }

    /// The generation of the base image (0 before the first bootstrap).
    pub fn base(&self) -> u64 {
        self.base
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        local_err(&self.path, e)
    }

    /// The recorded state of `partitions` (for writing it into a read image).
    pub fn states(&self, partitions: &[u32]) -> Result<BTreeMap<u32, ImagePartition>> {
        let get = |k: &str| self.meta.get(k).map_err(|e| self.err(e));
        let mut out = BTreeMap::new();
        for &p in partitions {
            let applied = get(&format!("applied/{p}"))?.and_then(|v| u64_of(&v));
            let snapshot = get(&format!("snapshot/{p}"))?.and_then(|v| u64_of(&v));
            let drops: Option<DropState> = match get(&format!("drops/{p}"))? {
                None => Some(DropState::default()),
                Some(v) => serde_json::from_slice(&v).ok(),
            };
            let (Some(applied), Some(drops)) = (applied, drops) else {
                return Err(self.err(format!(
                    "the state of partition {p} is missing or unreadable"
                )));
            };
            out.insert(
                p,
                ImagePartition {
                    applied,
                    snapshot: snapshot.unwrap_or(0),
                    drops,
                },
            );
        }
        Ok(out)
    }

    /// A fresh, empty tail keyspace and its number.
    fn new_tail(&mut self) -> Result<(u64, Keyspace)> {
        let generation = self.generation + 1;
        let name = format!("{TAIL}{generation}");
        // A leftover of the same name (an interrupted switch of this process) starts over.
        if self.db.keyspace_exists(&name) && self.tail.name().as_ref() != name.as_str() {
            let ks = self
                .db
                .keyspace(&name, KeyspaceCreateOptions::default)
                .map_err(|e| self.err(e))?;
            self.db.delete_keyspace(ks).map_err(|e| self.err(e))?;
        }
        let ks = self
            .db
            .keyspace(&name, tail_options)
            .map_err(|e| self.err(e))?;
        Ok((generation, ks))
    }

    /// Makes image `base` (complete and synced) the base of the durable state, with an empty
    /// tail and each partition's state, in one batch (a bootstrap or an import's rebuild).
    pub fn activate(&mut self, base: u64, states: &BTreeMap<u32, ImagePartition>) -> Result<()> {
        self.switch(base, &[], Some(states))
    }

    /// Makes image `base` (complete and synced, folded from the old base and tail) the base,
    /// with a tail holding `carried`: the changes applied after the fold read the old tail.
    pub fn rebase(&mut self, base: u64, carried: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<()> {
        self.switch(base, carried, None)
    }

    fn switch(
        &mut self,
        base: u64,
        tail_entries: &[(Vec<u8>, Option<Vec<u8>>)],
        states: Option<&BTreeMap<u32, ImagePartition>>,
    ) -> Result<()> {
        let (generation, tail) = self.new_tail()?;
        let mut batch = self.db.batch();
        for (k, v) in tail_entries {
            batch.insert(&tail, doc_key(k), v.as_deref().unwrap_or(DELETED).to_vec());
        }
        batch.insert(
            &self.meta,
            "active",
            tail.name().as_ref().as_bytes().to_vec(),
        );
        batch.insert(&self.meta, "generation", generation.to_le_bytes().to_vec());
        batch.insert(&self.meta, "base", base.to_le_bytes().to_vec());
        for (p, s) in states.into_iter().flatten() {
            batch.insert(
                &self.meta,
                format!("applied/{p}"),
                s.applied.to_le_bytes().to_vec(),
            );
            batch.insert(
                &self.meta,
                format!("snapshot/{p}"),
                s.snapshot.to_le_bytes().to_vec(),
            );
            if s.drops.is_empty() {
                batch.remove(&self.meta, format!("drops/{p}"));
            } else {
                batch.insert(
                    &self.meta,
                    format!("drops/{p}"),
                    serde_json::to_vec(&s.drops).unwrap_or_default(),
                );
            }
        }
        ikv_core::failpoint!("reader.base.before_switch");
        batch.commit().map_err(|e| self.err(e))?;
        // Committed: this handle follows the batch whatever happens next, so a failure below
        // never leaves it writing to the replaced tail.
        let old = std::mem::replace(&mut self.tail, tail);
        self.generation = generation;
        self.base = base;
        // Synced before the caller deletes the old base's file: the state on disk names a
        // file that exists whatever happens next, a power loss included. On failure the
        // caller keeps the old files (it deletes nothing after an error).
        self.persist()?;
        ikv_core::failpoint!("reader.base.after_switch");
        // The switch is done: a tail that cannot be deleted now (its files damaged, which is
        // why a repair switches) is a leftover the next open deletes.
        if old.name() != self.tail.name()
            && let Err(e) = self.db.delete_keyspace(old)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot delete the replaced tail; the next open will");
        }
        Ok(())
    }

    /// Writes one delta's changed entries (`None` deletes), the partition's new applied
    /// sequence and, when it changed, its drop state, as one atomic batch.
    pub fn commit(
        &self,
        partition: u32,
        seq: u64,
        entries: &[(Vec<u8>, Option<Vec<u8>>)],
        drops: Option<&DropState>,
    ) -> Result<()> {
        let mut batch = self.db.batch();
        for (k, v) in entries {
            // A deletion is written, not removed: the base image may hold the document.
            batch.insert(
                &self.tail,
                doc_key(k),
                v.as_deref().unwrap_or(DELETED).to_vec(),
            );
        }
        batch.insert(
            &self.meta,
            format!("applied/{partition}"),
            seq.to_le_bytes().to_vec(),
        );
        if let Some(drops) = drops {
            batch.insert(
                &self.meta,
                format!("drops/{partition}"),
                serde_json::to_vec(drops).unwrap_or_default(),
            );
        }
        ikv_core::failpoint!("reader.apply.before_commit");
        batch.commit().map_err(|e| self.err(e))?;
        ikv_core::failpoint!("reader.apply.after_commit");
        Ok(())
    }

    /// The tail as it is now, readable from another thread while writes go on.
    pub fn tail_snapshot(&self) -> TailSnapshot {
        TailSnapshot {
            snapshot: self.db.snapshot(),
            tail: self.tail.clone(),
            path: self.path.clone(),
        }
    }

    /// Persists everything written so far to disk (fsync).
    pub fn persist(&self) -> Result<()> {
        self.db
            .persist(fjall::PersistMode::SyncAll)
            .map_err(|e| self.err(e))
    }

    /// Writes an unreadable drop state (tests of damage handling).
    #[cfg(test)]
    pub fn damage_drops(&self, partition: u32) {
        self.meta
            .insert(format!("drops/{partition}"), b"{not json".to_vec())
            .unwrap();
    }
}

/// The tail at one point (a fjall snapshot): what a fold or an import merges with the base
/// image.
pub struct TailSnapshot {
    snapshot: fjall::Snapshot,
    tail: Keyspace,
    path: PathBuf,
}

impl TailSnapshot {
    /// Every changed document in key order, as (primary key, entry; `None`: deleted).
    pub fn iter(&self) -> impl Iterator<Item = Result<(Vec<u8>, Option<Vec<u8>>)>> + '_ {
        let err = |e: &dyn std::fmt::Display| local_err(&self.path, e);
        fjall::Readable::iter(&self.snapshot, &self.tail).map(move |kv| {
            let (k, v) = kv.into_inner().map_err(|e| err(&e))?;
            let key = crate::keys::split_doc_key(&k)
                .ok_or_else(|| err(&"a document key is malformed"))?;
            Ok((key, (!v.is_empty()).then(|| v.to_vec())))
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ikv_core::StoreConfig;

    /// The identity of a one-partition test store (one configuration per test process, as a
    /// store's is: it carries its creation time).
    pub(crate) fn identity() -> Identity {
        // One configuration for the whole test, as a store's is (it carries its creation time).
        static CONFIG: std::sync::OnceLock<StoreConfig> = std::sync::OnceLock::new();
        let config = CONFIG.get_or_init(|| StoreConfig::new("s", "id", None, 1).unwrap());
        Identity {
            storage_url: "memory:///".into(),
            partitions: vec![0],
            config: config.clone(),
            layout: crate::mount::LOCAL_LAYOUT,
            pinned: None,
        }
    }

    fn open(dir: &Path) -> (LocalStore, Option<BTreeMap<u32, ImagePartition>>) {
        LocalStore::open(&dir.join("db"), &identity(), 1 << 20).unwrap()
    }

    #[test]
    fn a_damaged_local_copy_is_rebuilt_not_served_or_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, state) = open(dir.path());
        assert!(state.is_none(), "a new mount needs a bootstrap");
        let states = BTreeMap::from([(
            0,
            ImagePartition {
                applied: 5,
                snapshot: 5,
                drops: DropState::default(),
            },
        )]);
        store.activate(7, &states).unwrap();
        let drops = DropState {
            fields: BTreeMap::from([("x".to_owned(), 6)]),
            ..DropState::default()
        };
        store
            .commit(
                0,
                6,
                &[
                    (b"k".to_vec(), Some(b"v".to_vec())),
                    (b"gone".to_vec(), None),
                ],
                Some(&drops),
            )
            .unwrap();
        store.persist().unwrap();
        drop(store);
        let (mut store, state) = open(dir.path());
        let state = state.unwrap();
        assert_eq!(state[&0].applied, 6, "an intact copy resumes");
        assert_eq!(state[&0].drops, drops);
        assert_eq!(store.base(), 7);
        let tail = |store: &LocalStore| -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
            store.tail_snapshot().iter().map(Result::unwrap).collect()
        };
        assert_eq!(
            tail(&store),
            vec![
                (b"gone".to_vec(), None),
                (b"k".to_vec(), Some(b"v".to_vec()))
            ],
            "a deletion stays in the tail (it hides the base image's entry)"
        );
        // A fold's switch: the new base with the changes carried, nothing else.
        store
            .rebase(9, &[(b"late".to_vec(), Some(b"l".to_vec()))])
            .unwrap();
        drop(store);
        let (store, state) = open(dir.path());
        assert_eq!(state.unwrap()[&0].applied, 6);
        assert_eq!(store.base(), 9);
        assert_eq!(tail(&store), vec![(b"late".to_vec(), Some(b"l".to_vec()))]);

        // Unreadable drop state: damage, rebuilt (never read as "no drops").
        store.damage_drops(0);
        store.persist().unwrap();
        drop(store);
        let (store, state) = open(dir.path());
        assert!(state.is_none(), "rebuilt, not resumed without its drops");
        drop(store);

        // Files of the database deleted under it: discarded and opened afresh.
        let db = dir.path().join("db");
        for entry in std::fs::read_dir(&db).unwrap().flatten() {
            if entry.file_type().unwrap().is_file() {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
        let (_store, state) = open(dir.path());
        assert!(state.is_none());
    }
}
