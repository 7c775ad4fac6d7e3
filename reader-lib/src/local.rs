//! The reader's local store: a fjall database under the mount directory.
//!
//! Layout (documented in `docs/READER.md`):
//! - keyspace `meta`: `identity` (store config + mounted partitions, JSON), `active` (name of
//!   the docs keyspace in use), `generation`, and per partition `applied/<p>` (u64 LE: last
//!   delta applied), `snapshot/<p>` (u64 LE: snapshot bootstrapped from), `drops/<p>` (JSON
//!   [`DropState`]).
//! - keyspace `docs-<generation>`: one entry per document (key: `keys::doc_key`, value:
//!   `doc.rs`), and, when the memory index is on, the same documents in a hash map that reads
//!   use instead of the LSM tree (fjall stays the durable copy that restarts resume from).
//!
//! Invariants:
//! - A delta's changes, the partition's new applied sequence and its drop state are written in
//!   one atomic batch; the in-memory drop state is swapped under the same write lock, so reads
//!   see a delta entirely or not at all.
//! - A bootstrap ingests into a fresh `docs-<generation>` keyspace and only then points
//!   `active` at it (with the applied sequences) in one batch. Any other `docs-*` keyspace found
//!   at open is a leftover of an interrupted bootstrap or a replaced generation, and is deleted.
//! - The state is "complete" only when `identity` matches and every mounted partition has an
//!   applied sequence; anything else is wiped and rebuilt.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use ikv_core::{DeltaOp, Error, Result, StoreConfig};
use serde::{Deserialize, Serialize};

use crate::doc::{OwnedDoc, Sections, decode_entry_live, encode_entry};
use crate::drops::DropState;
use crate::keys::{doc_key, epoch};
use crate::view::{BaseIndex, MemoryIndex, PublishedView, ReadView};

const META: &str = "meta";

fn local_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Local {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Identity {
    config: StoreConfig,
    partitions: Vec<u32>,
    /// [`LOCAL_LAYOUT`] of the process that built the state; any other is rebuilt.
    #[serde(default)]
    layout: u32,
}

/// Version of the local layout: 2 added multi-partition entries (`doc.rs`). Mounts built by
/// an older version are rebuilt from the bucket at open.
const LOCAL_LAYOUT: u32 = 2;

/// Per partition: where the local state stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionState {
    pub applied: u64,
    pub snapshot: u64,
}

pub struct LocalStore {
    path: PathBuf,
    _lock: File,
    db: Database,
    meta: Keyspace,
    view: PublishedView,
    primary_key: String,
    /// Set by a read that found the local copy damaged (shared with every view).
    damaged: Arc<AtomicBool>,
    /// Whether a primary key names its partition (no partitioning key): then an entry only
    /// ever holds one section.
    single_partition_keys: bool,
    generation: RwLock<u64>,
}

/// Options of the documents keyspace, tuned for point reads: no block compression, a hash
/// index inside data blocks, and whole (unpartitioned) index and filter blocks pinned in the
/// cache, so a get is one filter probe, one index probe and one in-block hash lookup.
fn docs_options() -> KeyspaceCreateOptions {
    use fjall::config::{CompressionPolicy, HashRatioPolicy, PartitioningPolicy, PinningPolicy};
    KeyspaceCreateOptions::default()
        .data_block_compression_policy(CompressionPolicy::all(fjall::CompressionType::None))
        .data_block_hash_ratio_policy(HashRatioPolicy::all(0.75))
        .index_block_pinning_policy(PinningPolicy::all(true))
        .filter_block_pinning_policy(PinningPolicy::all(true))
        .index_block_partitioning_policy(PartitioningPolicy::all(false))
        .filter_block_partitioning_policy(PartitioningPolicy::all(false))
}

/// A primary key's sections among the changes of one delta, loaded from the current view
/// (live fields only) on first use; empty means absent or deleted in every partition.
fn staged_entry<'s>(
    view: &ReadView,
    staged: &'s mut BTreeMap<Vec<u8>, Sections>,
    key: &[u8],
    primary_key: &str,
) -> Result<&'s mut Sections> {
    Ok(match staged.entry(key.to_vec()) {
        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::btree_map::Entry::Vacant(e) => {
            let sections = match view.doc(key)? {
                Some(bytes) => decode_entry_live(&bytes, &view.drops, primary_key)?,
                None => Sections::new(),
            };
            e.insert(sections)
        }
    })
}

fn u64_of(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

impl LocalStore {
    /// Opens (creating if needed) the local store of `config` under `mount_dir`. Returns the
    /// per-partition state when a complete state for exactly these partitions exists.
    pub fn open(
        mount_dir: &Path,
        config: &StoreConfig,
        partitions: &[u32],
        cache_bytes: u64,
        memory_index: bool,
    ) -> Result<(LocalStore, Option<BTreeMap<u32, PartitionState>>)> {
        let dir = mount_dir.join(&config.store_name);
        std::fs::create_dir_all(&dir).map_err(|e| local_err(&dir, e))?;
        let lock_path = dir.join("ikv-reader.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| local_err(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::MountInUse {
                    path: dir.display().to_string(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(local_err(&lock_path, e)),
        }
        let db_path = dir.join("db");
        // The mount is a cache of the bucket: a database that no longer opens (a deleted or
        // damaged file) is discarded and rebuilt from the bucket, never a dead end.
        let open = || Database::builder(&db_path).cache_size(cache_bytes).open();
        let db = match open() {
            Ok(db) => db,
            Err(e) => {
                tracing::warn!(path = %db_path.display(), error = %e, "the local copy does not open; discarding it and rebuilding");
                std::fs::remove_dir_all(&db_path).map_err(|e| local_err(&db_path, e))?;
                open().map_err(|e| local_err(&db_path, e))?
            }
        };
        let meta = db
            .keyspace(META, KeyspaceCreateOptions::default)
            .map_err(|e| local_err(&db_path, e))?;
        let identity = Identity {
            config: config.clone(),
            partitions: partitions.to_vec(),
            layout: LOCAL_LAYOUT,
        };
        let get = |k: &str| meta.get(k).map_err(|e| local_err(&db_path, e));

        let stored_identity: Option<Identity> =
            get("identity")?.and_then(|v| serde_json::from_slice(&v).ok());
        let active: Option<String> =
            get("active")?.map(|v| String::from_utf8_lossy(&v).into_owned());
        let generation = get("generation")?.and_then(|v| u64_of(&v)).unwrap_or(0);
        let mut states = BTreeMap::new();
        let mut drops = vec![DropState::default(); config.num_partitions as usize];
        let mut complete = stored_identity.as_ref() == Some(&identity) && active.is_some();
        if complete {
            for &p in partitions {
                let applied = get(&format!("applied/{p}"))?.and_then(|v| u64_of(&v));
                let snapshot = get(&format!("snapshot/{p}"))?
                    .and_then(|v| u64_of(&v))
                    .unwrap_or(0);
                // Absent means no drops; present but unreadable is damage, never "no drops"
                // (that would bring dropped fields back): the copy is rebuilt.
                let drop_state: Option<DropState> = match get(&format!("drops/{p}"))? {
                    None => Some(DropState::default()),
                    Some(v) => serde_json::from_slice(&v).ok(),
                };
                let Some(drop_state) = drop_state else {
                    tracing::warn!(
                        partition = p,
                        "the local drop state is unreadable; rebuilding the local copy"
                    );
                    complete = false;
                    continue;
                };
                match applied {
                    Some(applied) => {
                        states.insert(p, PartitionState { applied, snapshot });
                        drops[p as usize] = drop_state;
                    }
                    None => complete = false,
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
                    .map_err(|e| local_err(&db_path, e))?;
                db.delete_keyspace(ks).map_err(|e| local_err(&db_path, e))?;
                tracing::info!(keyspace = name, "deleted a stale local keyspace");
            }
        }
        let docs_name = keep.unwrap_or_else(|| format!("docs-{}", generation + 1));
        let docs = db
            .keyspace(&docs_name, docs_options)
            .map_err(|e| local_err(&db_path, e))?;
        if !complete {
            // Start over: identity first, no active keyspace until a bootstrap completes.
            let mut batch = db.batch();
            batch.insert(
                &meta,
                "identity",
                serde_json::to_vec(&identity).unwrap_or_default(),
            );
            batch.remove(&meta, "active");
            for p in 0..config.num_partitions {
                batch.remove(&meta, format!("applied/{p}"));
                batch.remove(&meta, format!("snapshot/{p}"));
                batch.remove(&meta, format!("drops/{p}"));
            }
            batch.commit().map_err(|e| local_err(&db_path, e))?;
            drops = vec![DropState::default(); config.num_partitions as usize];
        }
        let memory = if memory_index {
            let mut map = BaseIndex::default();
            if complete {
                for kv in docs.iter() {
                    let (k, v) = kv.into_inner().map_err(|e| local_err(&db_path, e))?;
                    let key = crate::keys::split_doc_key(&k)
                        .ok_or_else(|| local_err(&db_path, "a document key is malformed"))?;
                    map.insert(key.into_boxed_slice(), v.to_vec().into_boxed_slice());
                }
            }
            Some(MemoryIndex::new(map))
        } else {
            None
        };
        let snapshot = db.snapshot();
        let damaged = Arc::new(AtomicBool::new(false));
        let store = LocalStore {
            path: dir,
            _lock: lock,
            db,
            meta,
            view: PublishedView::new(ReadView {
                snapshot,
                docs,
                drops,
                memory,
                damaged: damaged.clone(),
            }),
            damaged,
            primary_key: config.primary_key_field.clone(),
            single_partition_keys: config.partitioning_key_field.is_none(),
            generation: RwLock::new(generation),
        };
        Ok((store, complete.then_some(states)))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn primary_key(&self) -> &str {
        &self.primary_key
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        local_err(&self.path, e)
    }

    /// The data and drop state reads use; hold it for the duration of one read or batch.
    /// Never blocks: the poller replaces the view, it never changes one.
    pub fn read(&self) -> arc_swap::Guard<std::sync::Arc<ReadView>> {
        self.view.load()
    }

    /// Starts a bootstrap into a fresh keyspace.
    pub fn new_generation(&self) -> Result<(u64, Keyspace)> {
        let generation = *self.generation.read().unwrap_or_else(|p| p.into_inner()) + 1;
        let name = format!("docs-{generation}");
        // A leftover of the same name (an interrupted bootstrap of this process) starts over.
        if self.db.keyspace_exists(&name) && self.read().docs.name().as_ref() != name.as_str() {
            let ks = self
                .db
                .keyspace(&name, KeyspaceCreateOptions::default)
                .map_err(|e| self.err(e))?;
            self.db.delete_keyspace(ks).map_err(|e| self.err(e))?;
        }
        let ks = self
            .db
            .keyspace(&name, KeyspaceCreateOptions::default)
            .map_err(|e| self.err(e))?;
        Ok((generation, ks))
    }

    /// Whether reads are served from memory (bootstraps then fill a new index).
    pub fn has_memory_index(&self) -> bool {
        self.read().memory.is_some()
    }

    /// Makes a bootstrapped keyspace (and its memory index) the active one, with the
    /// partitions' states, atomically; then deletes the previous keyspace.
    pub fn activate(
        &self,
        generation: u64,
        docs: Keyspace,
        memory: Option<BaseIndex>,
        states: &BTreeMap<u32, PartitionState>,
    ) -> Result<()> {
        let current = self.view.load_full();
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
            batch.remove(&self.meta, format!("drops/{p}"));
        }
        batch.commit().map_err(|e| self.err(e))?;
        let old = current.docs.clone();
        let drops = vec![DropState::default(); current.drops.len()];
        drop(current);
        self.view.publish(ReadView {
            snapshot: self.db.snapshot(),
            docs,
            drops,
            memory: memory.map(MemoryIndex::new),
            damaged: self.damaged.clone(),
        });
        *self.generation.write().unwrap_or_else(|p| p.into_inner()) = generation;
        if old.name() != self.read().docs.name() {
            self.db.delete_keyspace(old).map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Applies one delta of `partition` as one atomic batch with its new applied sequence.
    pub fn apply_delta(&self, partition: u32, seq: u64, ops: &[DeltaOp]) -> Result<()> {
        // Built beside the published view (the poller is its only writer), then published
        // whole: reads never wait for an apply and see all of a delta or none of it.
        let view = self.view.load_full();
        let mut drops = view.drops[partition as usize].clone();
        let drops_before = drops.clone();
        // Entries this delta changed, loaded once each. Loading keeps only live fields, so
        // rewriting a document also reclaims its dropped fields. Only the section of this
        // partition changes: a store with a partitioning key may hold the same primary key
        // in other partitions too.
        let mut staged: BTreeMap<Vec<u8>, Sections> = BTreeMap::new();
        let pk = self.primary_key.as_str();
        for (row, op) in ops.iter().enumerate() {
            let e = epoch(seq, row);
            match op {
                DeltaOp::SetField { key, field, value } => {
                    staged_entry(&view, &mut staged, key, pk)?
                        .entry(partition)
                        .or_insert_with(|| OwnedDoc::new(partition))
                        .set(field, value, e);
                }
                DeltaOp::DeleteField { key, field } => {
                    if field != pk {
                        let sections = staged_entry(&view, &mut staged, key, pk)?;
                        if let Some(d) = sections.get_mut(&partition) {
                            d.fields.remove(field);
                            if d.fields.is_empty() {
                                sections.remove(&partition);
                            }
                        }
                    }
                }
                DeltaOp::DeleteDocument { key } => {
                    if self.single_partition_keys {
                        // Nothing of another partition to keep: no need to load the entry.
                        staged.insert(key.clone(), Sections::new());
                    } else {
                        staged_entry(&view, &mut staged, key, pk)?.remove(&partition);
                    }
                }
                DeltaOp::DropField { field } => {
                    if *field != self.primary_key {
                        drops.fields.insert(field.clone(), e);
                    }
                }
                DeltaOp::DropFieldPrefix { prefix } => {
                    drops.prefixes.insert(prefix.clone(), e);
                }
                DeltaOp::DropAll => {
                    drops = DropState {
                        all: e,
                        ..DropState::default()
                    };
                }
            }
        }
        let mut batch = self.db.batch();
        let encoded: Vec<(Vec<u8>, Option<Vec<u8>>)> = staged
            .into_iter()
            .map(|(k, sections)| {
                let entry = encode_entry(&sections);
                (k, entry)
            })
            .collect();
        for (k, v) in &encoded {
            match v {
                Some(v) => batch.insert(&view.docs, doc_key(k), v.clone()),
                None => batch.remove(&view.docs, doc_key(k)),
            }
        }
        batch.insert(
            &self.meta,
            format!("applied/{partition}"),
            seq.to_le_bytes().to_vec(),
        );
        if drops != drops_before {
            batch.insert(
                &self.meta,
                format!("drops/{partition}"),
                serde_json::to_vec(&drops).unwrap_or_default(),
            );
        }
        ikv_core::failpoint!("reader.apply.before_commit");
        batch.commit().map_err(|e| self.err(e))?;
        ikv_core::failpoint!("reader.apply.after_commit");
        let snapshot = self.db.snapshot();
        let memory = view.memory.as_ref().map(|index| {
            index.with_changes(encoded.iter().map(|(k, v)| (k.as_slice(), v.as_deref())))
        });
        let mut all_drops = view.drops.clone();
        all_drops[partition as usize] = drops;
        let docs = view.docs.clone();
        drop(view);
        self.view.publish(ReadView {
            docs,
            snapshot,
            drops: all_drops,
            memory,
            damaged: self.damaged.clone(),
        });
        Ok(())
    }

    /// Whether a read found the local copy damaged since the last call (clears the mark).
    pub fn take_damage(&self) -> bool {
        self.damaged.swap(false, Ordering::SeqCst)
    }

    /// Marks the local copy damaged (a failed repair is tried again at the next poll).
    pub fn mark_damaged(&self) {
        self.damaged.store(true, Ordering::SeqCst);
    }

    /// Persists everything written so far to disk (fsync).
    pub fn persist(&self) -> Result<()> {
        self.db
            .persist(fjall::PersistMode::SyncAll)
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> (LocalStore, Option<BTreeMap<u32, PartitionState>>) {
        open_with(dir, false)
    }

    fn open_with(
        dir: &Path,
        memory_index: bool,
    ) -> (LocalStore, Option<BTreeMap<u32, PartitionState>>) {
        // One configuration for the whole test, as a store's is (it carries its creation time).
        static CONFIG: std::sync::OnceLock<StoreConfig> = std::sync::OnceLock::new();
        let config = CONFIG.get_or_init(|| StoreConfig::new("s", "id", None, 1).unwrap());
        LocalStore::open(dir, config, &[0], 1 << 20, memory_index).unwrap()
    }

    #[test]
    fn a_view_held_by_a_read_never_changes_while_deltas_are_applied() {
        for memory_index in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (store, _) = open_with(dir.path(), memory_index);
            let (generation, docs) = store.new_generation().unwrap();
            let states = BTreeMap::from([(
                0,
                PartitionState {
                    applied: 0,
                    snapshot: 0,
                },
            )]);
            let memory = memory_index.then(crate::view::BaseIndex::default);
            store.activate(generation, docs, memory, &states).unwrap();
            let set = |key: &str, seq: u64| {
                store
                    .apply_delta(
                        0,
                        seq,
                        &[DeltaOp::SetField {
                            key: key.as_bytes().to_vec(),
                            field: "f".into(),
                            value: ikv_core::FieldValue::Int64(seq as i64),
                        }],
                    )
                    .unwrap()
            };
            set("a", 1);
            let held = store.read();
            // Two deltas applied while a read holds its view: neither shows through it (on
            // disk that is the fjall snapshot; in memory, the immutable index).
            set("b", 2);
            store
                .apply_delta(0, 3, &[DeltaOp::DropField { field: "f".into() }])
                .unwrap();
            assert!(held.doc(b"a").unwrap().is_some(), "{memory_index}");
            assert!(held.doc(b"b").unwrap().is_none(), "{memory_index}");
            assert!(held.drops[0].fields.is_empty(), "{memory_index}");
            let now = store.read();
            assert!(now.doc(b"b").unwrap().is_some(), "{memory_index}");
            assert!(now.drops[0].fields.contains_key("f"), "{memory_index}");
        }
    }

    #[test]
    fn a_damaged_local_copy_is_rebuilt_not_served_or_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let (store, state) = open(dir.path());
        assert!(state.is_none(), "a new mount needs a bootstrap");
        let (generation, docs) = store.new_generation().unwrap();
        let states = BTreeMap::from([(
            0,
            PartitionState {
                applied: 5,
                snapshot: 5,
            },
        )]);
        store.activate(generation, docs, None, &states).unwrap();
        store
            .apply_delta(0, 6, &[DeltaOp::DropField { field: "x".into() }])
            .unwrap();
        store.persist().unwrap();
        drop(store);
        let (store, state) = open(dir.path());
        assert_eq!(state.unwrap()[&0].applied, 6, "an intact copy resumes");
        assert!(store.read().drops[0].fields.contains_key("x"));

        // Unreadable drop state: damage, rebuilt (never read as "no drops").
        store.meta.insert("drops/0", b"{not json".to_vec()).unwrap();
        store.persist().unwrap();
        drop(store);
        let (store, state) = open(dir.path());
        assert!(state.is_none(), "rebuilt, not resumed without its drops");
        drop(store);

        // Files of the database deleted under it: discarded and opened afresh.
        let db = dir.path().join("s/db");
        for entry in std::fs::read_dir(&db).unwrap().flatten() {
            if entry.file_type().unwrap().is_file() {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
        let (_store, state) = open(dir.path());
        assert!(state.is_none());
    }
}
