//! The owner's durable copy: a fjall database under `<mount>/<store>/db`, from which a
//! restarted or new owner resumes without a bootstrap and from which read images are folded.
//!
//! Layout (documented in `docs/READER.md`):
//! - keyspace `meta`: `identity` (what the mount serves, JSON), `active` (name of the docs
//!   keyspace in use), `generation`, and per partition `applied/<p>` (u64 LE: last delta
//!   applied), `snapshot/<p>` (u64 LE: snapshot bootstrapped from), `drops/<p>` (JSON
//!   [`DropState`]).
//! - keyspace `docs-<generation>`: one entry per document (key: `keys::doc_key`, value:
//!   `doc.rs`).
//!
//! Invariants:
//! - A delta's changes, the partition's new applied sequence and its drop state are written in
//!   one atomic batch.
//! - A bootstrap ingests into a fresh `docs-<generation>` keyspace and only then points
//!   `active` at it (with the applied sequences) in one batch. Any other `docs-*` keyspace found
//!   at open is a leftover of an interrupted bootstrap or a replaced generation, and is deleted.
//! - The state is "complete" only when `identity` matches and every mounted partition has an
//!   applied sequence and a readable drop state; anything else is wiped and rebuilt.
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
    docs: Keyspace,
    generation: u64,
}

/// Options of the documents keyspace: reads go to the mapped image, so fjall is written in
/// bulk and scanned in order; compressed blocks keep the durable copy small.
fn docs_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default()
}

fn u64_of(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

impl LocalStore {
    /// Opens (creating if needed) the durable copy at `db_path` for `identity`. Returns each
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
        let mut states = BTreeMap::new();
        let mut complete = stored_identity.as_ref() == Some(identity) && active.is_some();
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
        // Delete docs keyspaces that are not the active one (interrupted bootstraps).
        let keep = if complete { active.clone() } else { None };
        for name in db.list_keyspace_names() {
            let name: &str = name.as_ref();
            if name.starts_with("docs-") && Some(name) != keep.as_deref() {
                let ks = db
                    .keyspace(name, KeyspaceCreateOptions::default)
                    .map_err(|e| local_err(db_path, e))?;
                db.delete_keyspace(ks).map_err(|e| local_err(db_path, e))?;
                tracing::info!(keyspace = name, "deleted a stale local keyspace");
            }
        }
        let docs_name = keep.unwrap_or_else(|| format!("docs-{}", generation + 1));
        let docs = db
            .keyspace(&docs_name, docs_options)
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
            docs,
            generation,
        };
        Ok((store, complete.then_some(states)))
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

    /// Starts a bootstrap into a fresh keyspace.
    pub fn new_generation(&mut self) -> Result<(u64, Keyspace)> {
        let generation = self.generation + 1;
        let name = format!("docs-{generation}");
        // A leftover of the same name (an interrupted bootstrap of this process) starts over.
        if self.db.keyspace_exists(&name) && self.docs.name().as_ref() != name.as_str() {
            let ks = self
                .db
                .keyspace(&name, KeyspaceCreateOptions::default)
                .map_err(|e| self.err(e))?;
            self.db.delete_keyspace(ks).map_err(|e| self.err(e))?;
        }
        let ks = self
            .db
            .keyspace(&name, docs_options)
            .map_err(|e| self.err(e))?;
        Ok((generation, ks))
    }

    /// Makes a bootstrapped keyspace the active one, with the partitions' states, atomically;
    /// then deletes the previous keyspace.
    pub fn activate(
        &mut self,
        generation: u64,
        docs: Keyspace,
        states: &BTreeMap<u32, PartitionState>,
    ) -> Result<()> {
        let states = states
            .iter()
            .map(|(p, s)| {
                (
                    *p,
                    ImagePartition {
                        applied: s.applied,
                        snapshot: s.snapshot,
                        drops: DropState::default(),
                    },
                )
            })
            .collect();
        self.activate_with_drops(generation, docs, &states)
    }

    /// As [`LocalStore::activate`], with each partition's drop state.
    pub fn activate_with_drops(
        &mut self,
        generation: u64,
        docs: Keyspace,
        states: &BTreeMap<u32, ImagePartition>,
    ) -> Result<()> {
        let mut batch = self.db.batch();
        batch.insert(
            &self.meta,
            "active",
            docs.name().as_ref().as_bytes().to_vec(),
        );
        batch.insert(&self.meta, "generation", generation.to_le_bytes().to_vec());
        for (p, s) in states {
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
        batch.commit().map_err(|e| self.err(e))?;
        let old = std::mem::replace(&mut self.docs, docs);
        self.generation = generation;
        if old.name() != self.docs.name() {
            self.db.delete_keyspace(old).map_err(|e| self.err(e))?;
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
            match v {
                Some(v) => batch.insert(&self.docs, doc_key(k), v.clone()),
                None => batch.remove(&self.docs, doc_key(k)),
            }
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

    /// The active documents keyspace and the database, for reading every document from
    /// another thread (an import's rebuild).
    pub fn docs_handle(&self) -> (fjall::Database, Keyspace) {
        (self.db.clone(), self.docs.clone())
    }

    /// The documents as they are now, readable from another thread while writes go on.
    pub fn docs_snapshot(&self) -> DocsSnapshot {
        DocsSnapshot {
            snapshot: self.db.snapshot(),
            docs: self.docs.clone(),
            path: self.path.clone(),
        }
    }

    /// Every document in key order, as (primary key, entry), read from one snapshot.
    pub fn for_each_doc(&self, f: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        self.docs_snapshot().for_each_doc(f)
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

/// The documents keyspace at one point (a fjall snapshot): what a background fold reads.
pub struct DocsSnapshot {
    snapshot: fjall::Snapshot,
    docs: Keyspace,
    path: PathBuf,
}

impl DocsSnapshot {
    /// Every document in key order, as (primary key, entry).
    pub fn for_each_doc(&self, mut f: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        let err = |e: &dyn std::fmt::Display| local_err(&self.path, e);
        for kv in fjall::Readable::iter(&self.snapshot, &self.docs) {
            let (k, v) = kv.into_inner().map_err(|e| err(&e))?;
            let key = crate::keys::split_doc_key(&k)
                .ok_or_else(|| err(&"a document key is malformed"))?;
            f(&key, &v)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ikv_core::StoreConfig;

    fn identity() -> Identity {
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
        let (generation, docs) = store.new_generation().unwrap();
        let states = BTreeMap::from([(
            0,
            PartitionState {
                applied: 5,
                snapshot: 5,
            },
        )]);
        store.activate(generation, docs, &states).unwrap();
        let drops = DropState {
            fields: BTreeMap::from([("x".to_owned(), 6)]),
            ..DropState::default()
        };
        store
            .commit(0, 6, &[(b"k".to_vec(), Some(b"v".to_vec()))], Some(&drops))
            .unwrap();
        store.persist().unwrap();
        drop(store);
        let (store, state) = open(dir.path());
        let state = state.unwrap();
        assert_eq!(state[&0].applied, 6, "an intact copy resumes");
        assert_eq!(state[&0].drops, drops);
        let mut docs = Vec::new();
        store
            .for_each_doc(|k, v| {
                docs.push((k.to_vec(), v.to_vec()));
                Ok(())
            })
            .unwrap();
        assert_eq!(docs, vec![(b"k".to_vec(), b"v".to_vec())]);

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
