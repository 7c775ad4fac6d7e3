//! The changes of a run of deltas, folded per key, ready to merge with the sorted stream of
//! the previous snapshot.
//!
//! Memory holds only what the deltas touched: one [`KeyChange`] per key written, and the
//! store-wide drops. Documents of the previous snapshot that the deltas did not name are not
//! loaded; the store-wide drops are applied to them as they stream past.
//!
//! Ordering: a store-wide drop removes what came before it, not what came after. A key's
//! change records, when it was first touched, how many store-wide drops its base (the
//! previous snapshot's document) had already suffered; drops after that are folded into the
//! change itself (as deletions of overridden fields and as prefix masks on the base).
//!
//! Layout (a round folds millions of rows, so allocations per row are what would cost): rows
//! are read borrowed from the deltas' Arrow buffers; key and value bytes are copied into an
//! append-only [`Arena`]; field names are interned to ids; a change keeps up to four fields
//! inline; keys are found through a hash table of change indices and sorted once, when the
//! round is merged ([`Overlay::sorted`]). Dropping an overlay frees a few large blocks.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use hashbrown::HashTable;
use ikv_core::delta::DeltaBatches;
use ikv_core::event_time::{event_field, field_of_event, set_wins};
use ikv_core::expiry::{
    COMPANION_PREFIX, expiry_field, field_of_companion, field_of_expiry, has_companions,
    owning_field,
};
use ikv_core::{DeltaOp, DeltaRow, Error, FieldType, FieldValue, Result, ValueRef};
use smallvec::SmallVec;

use crate::manifest::SnapshotColumn;

/// A store-wide drop, in log order.
#[derive(Debug, Clone, PartialEq)]
pub enum GlobalDrop {
    Field(String),
    Prefix(String),
}

/// An interned field name: see [`Overlay::field_name`].
pub type FieldId = u32;

/// Where bytes live in an [`Arena`].
#[derive(Debug, Clone, Copy, PartialEq)]
struct Span {
    chunk: u32,
    at: u32,
    len: u32,
}

/// Appended bytes, in chunks so that growing never copies what is stored. Invariant: every
/// [`Span`] it returned stays valid until it is cleared.
#[derive(Debug, Default)]
struct Arena {
    chunks: Vec<Vec<u8>>,
    bytes: usize,
}

const ARENA_CHUNK: usize = 1 << 20;

impl Arena {
    fn push(&mut self, bytes: &[u8]) -> Span {
        let fits = self
            .chunks
            .last()
            .is_some_and(|c| c.capacity() - c.len() >= bytes.len());
        if !fits {
            self.chunks
                .push(Vec::with_capacity(ARENA_CHUNK.max(bytes.len())));
            self.bytes += ARENA_CHUNK.max(bytes.len());
        }
        let chunk = self.chunks.len() - 1;
        let data = &mut self.chunks[chunk];
        let at = data.len();
        data.extend_from_slice(bytes);
        // Delta values are Arrow binary values (i32 offsets): lengths fit in u32.
        Span {
            chunk: chunk as u32,
            at: at as u32,
            len: bytes.len() as u32,
        }
    }

    fn get(&self, span: Span) -> &[u8] {
        let (at, len) = (span.at as usize, span.len as usize);
        self.chunks
            .get(span.chunk as usize)
            .and_then(|c| c.get(at..at + len))
            .unwrap_or_default()
    }

    fn clear(&mut self) {
        self.chunks.clear();
        self.bytes = 0;
    }
}

/// A field's new value as the overlay stores it (bytes in the arena), or its deletion.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stored {
    Deleted,
    String(Span),
    Bytes(Span),
    Int64(i64),
    Float64(f64),
    Bool(bool),
    /// Sets whose outcome depends on the base's value (its event time): the rows of
    /// [`Overlay::chains`]`[i]`, in commit order, weighed against the base at merge time.
    Chain(u32),
}

/// The two companion fields a field may have in a snapshot (`ikv_core::expiry`,
/// `ikv_core::event_time`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Companion {
    Expiry = 0,
    Event = 1,
}

/// A set of a field kept in a chain (see [`Stored::Chain`]).
#[derive(Debug, Clone, Copy, PartialEq)]
struct ChainRow {
    value: Stored,
    expires_ms: Option<i64>,
    event_us: Option<i64>,
    /// When its delta was written (the writer's clock, ms since the Unix epoch).
    written_at_ms: i64,
}

/// What the deltas did to one key.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyChange {
    key: Span,
    hash: u64,
    /// Whether the previous snapshot's document still shows through.
    pub base_visible: bool,
    /// How many of the overlay's store-wide drops the base suffered before this key was first
    /// touched (they are applied to it at merge time).
    pub globals_before: usize,
    /// Prefix drops that happened after the key was first touched, to apply to the base.
    pub base_masks: Vec<String>,
    /// Field → new value or deletion, sorted by field id, one entry per id.
    fields: SmallVec<[(FieldId, Stored); 4]>,
}

impl KeyChange {
    fn get(&self, id: FieldId) -> Option<Stored> {
        self.fields
            .binary_search_by_key(&id, |(f, _)| *f)
            .ok()
            .map(|at| self.fields[at].1)
    }

    fn set(&mut self, id: FieldId, value: Stored) {
        match self.fields.binary_search_by_key(&id, |(f, _)| *f) {
            Ok(at) => self.fields[at].1 = value,
            Err(at) => self.fields.insert(at, (id, value)),
        }
    }
}

/// Folded deltas of one partition.
#[derive(Debug, Default)]
pub struct Overlay {
    primary_key_field: String,
    names: Vec<String>,
    ids: HashMap<String, FieldId, ahash::RandomState>,
    hasher: ahash::RandomState,
    /// Indices into `changes`, found by key.
    index: HashTable<u32>,
    changes: Vec<KeyChange>,
    arena: Arena,
    pub globals: Vec<GlobalDrop>,
    /// Per [`Companion`] kind, per field id: the id of the field's companion, once a delta
    /// gave the field one of that kind.
    companions: [Vec<Option<FieldId>>; 2],
    /// Whether the base documents may hold event times: then a set of a field the round has
    /// not touched yet depends on the base's value and is kept in a chain.
    base_has_events: bool,
    chains: Vec<SmallVec<[ChainRow; 2]>>,
    /// Values expiring at or before this (ms since the Unix epoch) are left out of what the
    /// overlay resolves: the pass's clock less its margin ([`Overlay::drop_expired_by`]).
    expired_by: Option<i64>,
    /// A drop_all happened: no document of the previous snapshot survives unless re-written.
    pub base_dropped: bool,
    pub rows_applied: u64,
}

/// Whether a prefix drop removes `field` (a companion goes with its field).
fn matches_prefix(field: &str, prefix: &str, pk: &str) -> bool {
    let field = owning_field(field);
    field != pk && field.starts_with(prefix)
}

/// The expiry a document's primary-key field keeps: the latest of what was set on it (`None`,
/// never, wins), so that a document outlives every field written into it and disappears
/// once every one of them expired.
fn latest_expiry(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    Some(a?.max(b?))
}

/// Removes from `doc` every value expiring at or before `by`, with its companion; a companion
/// without its field goes too.
fn drop_expired(doc: &mut BTreeMap<String, FieldValue>, by: i64) {
    if !has_companions(doc) {
        return;
    }
    let expired: Vec<String> = doc
        .range::<str, _>((Bound::Included(COMPANION_PREFIX), Bound::Unbounded))
        .take_while(|(name, _)| name.starts_with(COMPANION_PREFIX))
        .filter_map(|(name, value)| {
            let field = field_of_expiry(name)?;
            let gone = match value {
                FieldValue::Int64(e) => *e <= by,
                _ => true,
            };
            (gone || !doc.contains_key(field)).then(|| name.clone())
        })
        .collect();
    for companion in expired {
        if let Some(field) = field_of_expiry(&companion) {
            doc.remove(field);
            doc.remove(&event_field(field));
        }
        doc.remove(&companion);
    }
    // An event time whose value is gone goes too.
    let orphans: Vec<String> = doc
        .keys()
        .filter(|name| field_of_event(name).is_some_and(|f| !doc.contains_key(f)))
        .cloned()
        .collect();
    for name in orphans {
        doc.remove(&name);
    }
}

fn stored_corrupt(reason: &str) -> Error {
    Error::Corrupt {
        what: "compactor overlay".into(),
        reason: reason.into(),
    }
}

impl Overlay {
    pub fn new(primary_key_field: &str) -> Overlay {
        Overlay {
            primary_key_field: primary_key_field.to_owned(),
            ..Overlay::default()
        }
    }

    /// Leaves values expiring at or before `by_ms` out of every document it resolves.
    pub fn drop_expired_by(&mut self, by_ms: i64) {
        self.expired_by = Some(by_ms);
    }

    /// Whether a delta gave any value an expiry or an event time.
    pub fn has_expiries(&self) -> bool {
        self.companions.iter().flatten().any(Option::is_some)
    }

    /// Tells the overlay that its base documents may hold event times (their snapshot has
    /// event-time companions): sets of fields the round has not touched then wait for the
    /// base's value, in chains.
    pub fn order_against_base_events(&mut self) {
        self.base_has_events = true;
    }

    /// The id of field `id`'s companion of `kind`, interned on first use.
    fn companion_of(&mut self, kind: Companion, id: FieldId) -> FieldId {
        if let Some(c) = self.existing(kind, id) {
            return c;
        }
        let field = self.field_name(id);
        let name = match kind {
            Companion::Expiry => expiry_field(field),
            Companion::Event => event_field(field),
        };
        let c = self.intern(&name);
        let table = &mut self.companions[kind as usize];
        if table.len() <= id as usize {
            table.resize(id as usize + 1, None);
        }
        table[id as usize] = Some(c);
        c
    }

    /// Field `id`'s companion of `kind`, if one was interned.
    fn existing(&self, kind: Companion, id: FieldId) -> Option<FieldId> {
        self.companions[kind as usize]
            .get(id as usize)
            .copied()
            .flatten()
    }

    /// The name of an interned field.
    pub fn field_name(&self, id: FieldId) -> &str {
        self.names.get(id as usize).map_or("", String::as_str)
    }

    fn intern(&mut self, field: &str) -> FieldId {
        if let Some(id) = self.ids.get(field) {
            return *id;
        }
        let id = self.names.len() as FieldId;
        self.names.push(field.to_owned());
        self.ids.insert(field.to_owned(), id);
        id
    }

    /// How many keys the deltas touched.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Bytes of memory the overlay holds (approximately): what a round's budget counts.
    pub fn memory_bytes(&self) -> usize {
        self.arena.bytes
            + self.chains.capacity() * std::mem::size_of::<SmallVec<[ChainRow; 2]>>()
            + self.changes.capacity() * std::mem::size_of::<KeyChange>()
            + self.index.capacity() * (std::mem::size_of::<u32>() + 1)
    }

    /// The key of a change.
    pub fn key(&self, change: &KeyChange) -> &[u8] {
        self.arena.get(change.key)
    }

    /// The index of `key`'s change, created (as "nothing changed yet") on first touch.
    fn entry(&mut self, key: &[u8]) -> usize {
        let hash = self.hasher.hash_one(key);
        let Overlay {
            index,
            changes,
            arena,
            globals,
            base_dropped,
            ..
        } = self;
        if let Some(i) = index.find(hash, |&i| arena.get(changes[i as usize].key) == key) {
            return *i as usize;
        }
        let i = changes.len();
        changes.push(KeyChange {
            key: arena.push(key),
            hash,
            base_visible: !*base_dropped,
            globals_before: globals.len(),
            base_masks: Vec::new(),
            fields: SmallVec::new(),
        });
        index.insert_unique(hash, i as u32, |&j| changes[j as usize].hash);
        i
    }

    fn store(&mut self, value: ValueRef<'_>) -> Stored {
        match value {
            ValueRef::String(s) => Stored::String(self.arena.push(s.as_bytes())),
            ValueRef::Bytes(b) => Stored::Bytes(self.arena.push(b)),
            ValueRef::Int64(v) => Stored::Int64(v),
            ValueRef::Float64(v) => Stored::Float64(v),
            ValueRef::Bool(v) => Stored::Bool(v),
        }
    }

    /// The value of a stored field (`None` for a deletion).
    fn value(&self, stored: Stored) -> Result<Option<ValueRef<'_>>> {
        Ok(Some(match stored {
            Stored::Deleted => return Ok(None),
            // Checked to be UTF-8 when it was folded in; checked again rather than trusted.
            Stored::String(span) => ValueRef::String(
                std::str::from_utf8(self.arena.get(span))
                    .map_err(|_| stored_corrupt("a stored string is not UTF-8"))?,
            ),
            Stored::Bytes(span) => ValueRef::Bytes(self.arena.get(span)),
            Stored::Int64(v) => ValueRef::Int64(v),
            Stored::Float64(v) => ValueRef::Float64(v),
            Stored::Bool(v) => ValueRef::Bool(v),
            Stored::Chain(_) => return Err(stored_corrupt("a chain read as a value")),
        }))
    }

    /// Folds a delta's rows in order, read borrowed. Consecutive field sets of one key (how
    /// an upsert of a document is written) find the key's change once.
    pub fn apply_delta(&mut self, delta: &DeltaBatches) -> Result<()> {
        let mut last: Option<usize> = None;
        let written_at_ms = i64::try_from(delta.meta.created_at_ms).unwrap_or(i64::MAX);
        delta.for_each_row(|row| {
            self.apply_row(row, written_at_ms, &mut last);
            Ok(())
        })
    }

    /// Applies one delta row (of a delta written at no particular time: stored values never
    /// count as expired when event times are weighed).
    pub fn apply(&mut self, op: &DeltaOp) {
        self.apply_at(op, i64::MIN);
    }

    /// Applies one row of a delta written at `written_at_ms`.
    pub fn apply_at(&mut self, op: &DeltaOp, written_at_ms: i64) {
        self.apply_row(op.as_row(), written_at_ms, &mut None);
    }

    /// Applies one row; `last` is the change the previous row set a field of, if any.
    fn apply_row(&mut self, row: DeltaRow<'_>, written_at_ms: i64, last: &mut Option<usize>) {
        self.rows_applied += 1;
        let DeltaRow::SetField {
            key,
            field,
            value,
            expires_ms,
            event_us,
        } = row
        else {
            *last = None;
            self.apply_other(row);
            return;
        };
        let i = match *last {
            Some(i) if self.arena.get(self.changes[i].key) == key => i,
            _ => self.entry(key),
        };
        *last = Some(i);
        let id = self.intern(field);
        let is_key = field == self.primary_key_field;
        if !is_key {
            let row = ChainRow {
                value: self.store(value),
                expires_ms,
                event_us,
                written_at_ms,
            };
            self.set_ordered(i, id, row);
            return;
        }
        let stored = self.store(value);
        let change = &mut self.changes[i];
        let before = change.get(id);
        change.set(id, stored);
        match expires_ms {
            Some(e) => {
                let c = self.companion_of(Companion::Expiry, id);
                let change = &mut self.changes[i];
                // The key field keeps the latest expiry of what was set on it in this round
                // (a set of it without one, kept as a deletion of the companion, is "never");
                // the base's is weighed at resolve time.
                let e = match (is_key && before.is_some(), change.get(c)) {
                    (true, Some(Stored::Int64(prior))) => e.max(prior),
                    (true, _) => return,
                    (false, _) => e,
                };
                change.set(c, Stored::Int64(e));
            }
            None => {
                if let Some(c) = self.existing(Companion::Expiry, id) {
                    self.changes[i].set(c, Stored::Deleted);
                }
            }
        }
    }

    /// A set of a field other than the key in change `i`: made now when the change knows what
    /// it weighs against (its own value of the field, a deletion, or a base without event
    /// times), kept in the field's chain otherwise.
    fn set_ordered(&mut self, i: usize, id: FieldId, row: ChainRow) {
        // Companion ids exist before the merge: it finds their columns by id.
        let expiry = match row.expires_ms {
            Some(_) => Some(self.companion_of(Companion::Expiry, id)),
            None => self.existing(Companion::Expiry, id),
        };
        let event = match row.event_us {
            Some(_) => Some(self.companion_of(Companion::Event, id)),
            None => self.existing(Companion::Event, id),
        };
        let change = &mut self.changes[i];
        let current = change.get(id);
        match current {
            Some(Stored::Chain(c)) => {
                if let Some(chain) = self.chains.get_mut(c as usize) {
                    chain.push(row);
                }
                return;
            }
            None if self.base_has_events && change.base_visible => {
                change.set(id, Stored::Chain(self.chains.len() as u32));
                self.chains.push(smallvec::smallvec![row]);
                return;
            }
            _ => {}
        }
        let time = |c: Option<FieldId>| match c.and_then(|c| change.get(c)) {
            Some(Stored::Int64(t)) => Some(t),
            _ => None,
        };
        let stored = match current {
            None | Some(Stored::Deleted) => None,
            Some(_) => Some(ikv_core::event_time::Stored {
                event_us: time(event),
                expires_ms: time(expiry),
            }),
        };
        if !set_wins(stored, row.event_us, row.written_at_ms) {
            return;
        }
        change.set(id, row.value);
        if let Some(c) = expiry {
            change.set(c, row.expires_ms.map_or(Stored::Deleted, Stored::Int64));
        }
        if let Some(c) = event {
            change.set(c, row.event_us.map_or(Stored::Deleted, Stored::Int64));
        }
    }

    /// Which of a chain's rows is the field's value over `base` (its event time and expiry,
    /// or `None` when the base has no value of the field): `None` when the base's value stays.
    fn chain_winner(
        &self,
        chain: u32,
        base: Option<ikv_core::event_time::Stored>,
    ) -> Option<&ChainRow> {
        let mut winner: Option<&ChainRow> = None;
        let mut current = base;
        for row in self.chains.get(chain as usize).into_iter().flatten() {
            if set_wins(current, row.event_us, row.written_at_ms) {
                winner = Some(row);
                current = Some(ikv_core::event_time::Stored {
                    event_us: row.event_us,
                    expires_ms: row.expires_ms,
                });
            }
        }
        winner
    }

    /// Every row but a field set.
    fn apply_other(&mut self, row: DeltaRow<'_>) {
        match row {
            DeltaRow::SetField { .. } => {}
            DeltaRow::DeleteField { key, field } => {
                if field != self.primary_key_field {
                    let id = self.intern(field);
                    let i = self.entry(key);
                    self.changes[i].set(id, Stored::Deleted);
                    for c in [
                        self.existing(Companion::Expiry, id),
                        self.existing(Companion::Event, id),
                    ]
                    .into_iter()
                    .flatten()
                    {
                        self.changes[i].set(c, Stored::Deleted);
                    }
                }
            }
            DeltaRow::DeleteDocument { key } => {
                let i = self.entry(key);
                let e = &mut self.changes[i];
                e.base_visible = false;
                e.base_masks.clear();
                e.fields.clear();
            }
            DeltaRow::DropField { field } => {
                if field == self.primary_key_field {
                    return;
                }
                let id = self.intern(field);
                let companions = [
                    self.existing(Companion::Expiry, id),
                    self.existing(Companion::Event, id),
                ];
                for change in &mut self.changes {
                    // Deleting covers both an overridden value and the base's value.
                    change.set(id, Stored::Deleted);
                    for c in companions.into_iter().flatten() {
                        change.set(c, Stored::Deleted);
                    }
                }
                self.globals.push(GlobalDrop::Field(field.to_owned()));
            }
            DeltaRow::DropFieldPrefix { prefix } => {
                let pk = &self.primary_key_field;
                let dropped: Vec<bool> = self
                    .names
                    .iter()
                    .map(|name| matches_prefix(name, prefix, pk))
                    .collect();
                for change in &mut self.changes {
                    for (id, value) in change.fields.iter_mut() {
                        if dropped[*id as usize] {
                            *value = Stored::Deleted;
                        }
                    }
                    if change.base_visible {
                        change.base_masks.push(prefix.to_owned());
                    }
                }
                self.globals.push(GlobalDrop::Prefix(prefix.to_owned()));
            }
            DeltaRow::DropAll => {
                self.index.clear();
                self.changes.clear();
                self.arena.clear();
                self.globals.clear();
                self.base_dropped = true;
            }
            // An import opens its own round and is merged as that round's base documents
            // (`merge.rs`); the compactor never hands one to an overlay.
            DeltaRow::Import { .. } => {}
        }
    }

    /// The changes in key order: what a merge with a sorted snapshot walks.
    pub fn sorted(&self) -> Vec<(&[u8], &KeyChange)> {
        let mut sorted: Vec<(&[u8], &KeyChange)> =
            self.changes.iter().map(|c| (self.key(c), c)).collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        sorted
    }

    /// The (field, type) pairs the overlay can put into the new snapshot.
    pub fn written_columns(&self) -> BTreeSet<(String, FieldType)> {
        let mut seen: BTreeSet<(FieldId, FieldType)> = BTreeSet::new();
        let mut last: Option<(FieldId, FieldType)> = None;
        let type_of = |stored: &Stored| match stored {
            Stored::Deleted | Stored::Chain(_) => None,
            Stored::String(_) => Some(FieldType::String),
            Stored::Bytes(_) => Some(FieldType::Bytes),
            Stored::Int64(_) => Some(FieldType::Int64),
            Stored::Float64(_) => Some(FieldType::Float64),
            Stored::Bool(_) => Some(FieldType::Bool),
        };
        for change in &self.changes {
            for (id, stored) in &change.fields {
                if let Stored::Chain(c) = stored {
                    // Any of a chain's rows may be the value: each one's columns.
                    for row in self.chains.get(*c as usize).into_iter().flatten() {
                        seen.extend(type_of(&row.value).map(|t| (*id, t)));
                        let expiry = row.expires_ms.and(self.existing(Companion::Expiry, *id));
                        let event = row.event_us.and(self.existing(Companion::Event, *id));
                        seen.extend(
                            expiry
                                .into_iter()
                                .chain(event)
                                .map(|c| (c, FieldType::Int64)),
                        );
                    }
                    continue;
                }
                let Some(t) = type_of(stored) else {
                    continue;
                };
                // Documents mostly repeat one shape: a repeat skips the set.
                if last != Some((*id, t)) {
                    seen.insert((*id, t));
                    last = Some((*id, t));
                }
            }
        }
        seen.into_iter()
            .map(|(id, t)| (self.field_name(id).to_owned(), t))
            .collect()
    }

    /// Whether a field of the previous snapshot can survive the store-wide drops.
    pub fn base_field_survives(&self, field: &str) -> bool {
        if self.base_dropped {
            return false;
        }
        let field = owning_field(field);
        field == self.primary_key_field
            || !self.globals.iter().any(|g| match g {
                GlobalDrop::Field(f) => f == field,
                GlobalDrop::Prefix(p) => field.starts_with(p.as_str()),
            })
    }

    /// Applies the first `count` store-wide drops to a base document.
    pub fn apply_globals(&self, doc: &mut BTreeMap<String, FieldValue>, count: usize) {
        let pk = &self.primary_key_field;
        for g in &self.globals[..count] {
            match g {
                GlobalDrop::Field(f) => {
                    doc.remove(f);
                    if has_companions(doc) {
                        doc.remove(&expiry_field(f));
                        doc.remove(&event_field(f));
                    }
                }
                GlobalDrop::Prefix(p) => doc.retain(|name, _| !matches_prefix(name, p, pk)),
            }
        }
    }

    /// The document after the overlay, from the previous snapshot's document (if any).
    /// `None` when the document does not exist afterwards.
    pub fn resolve(
        &self,
        base: Option<BTreeMap<String, FieldValue>>,
        change: Option<&KeyChange>,
    ) -> Result<Option<BTreeMap<String, FieldValue>>> {
        let doc = match change {
            None => {
                if self.base_dropped {
                    return Ok(None);
                }
                let Some(mut doc) = base else {
                    return Ok(None);
                };
                self.apply_globals(&mut doc, self.globals.len());
                doc
            }
            Some(change) => {
                let mut doc = if change.base_visible {
                    let mut doc = base.unwrap_or_default();
                    self.apply_globals(&mut doc, change.globals_before);
                    for p in &change.base_masks {
                        doc.retain(|name, _| !matches_prefix(name, p, &self.primary_key_field));
                    }
                    doc
                } else {
                    BTreeMap::new()
                };
                let base_key_expiry = key_expiry(&doc, &self.primary_key_field);
                let base_companions = has_companions(&doc);
                for (id, stored) in &change.fields {
                    let field = self.field_name(*id);
                    if let Stored::Chain(c) = stored {
                        self.resolve_chain(&mut doc, field, *c)?;
                        continue;
                    }
                    // A field set or deleted without an expiry or an event time loses the
                    // base's: the change's own companions, if it has them, are written too.
                    if base_companions && field_of_companion(field).is_none() {
                        let lacks = |c: Option<FieldId>| c.is_none_or(|c| change.get(c).is_none());
                        if lacks(self.existing(Companion::Expiry, *id)) {
                            doc.remove(&expiry_field(field));
                        }
                        if lacks(self.existing(Companion::Event, *id)) {
                            doc.remove(&event_field(field));
                        }
                    }
                    match self.value(*stored)? {
                        Some(v) => {
                            doc.insert(field.to_owned(), v.to_owned_value());
                        }
                        None => {
                            doc.remove(field);
                        }
                    }
                }
                // The key field's expiry is the latest of the base's and this round's.
                if let Some(base) = base_key_expiry {
                    let companion = expiry_field(&self.primary_key_field);
                    let round = key_expiry(&doc, &self.primary_key_field);
                    match latest_expiry(base, round.flatten()) {
                        Some(e) => doc.insert(companion, FieldValue::Int64(e)),
                        None => doc.remove(&companion),
                    };
                }
                doc
            }
        };
        let mut doc = doc;
        if let Some(by) = self.expired_by {
            drop_expired(&mut doc, by);
        }
        Ok((!doc.is_empty()).then_some(doc))
    }
}

impl Overlay {
    /// Weighs chain `chain` of `field` against the value `doc` holds (the base's, after the
    /// drops before it) and leaves the winner in `doc`, with its companions.
    fn resolve_chain(
        &self,
        doc: &mut BTreeMap<String, FieldValue>,
        field: &str,
        chain: u32,
    ) -> Result<()> {
        let time = |doc: &BTreeMap<String, FieldValue>, name: String| match doc.get(&name) {
            Some(FieldValue::Int64(t)) => Some(*t),
            _ => None,
        };
        let base = doc
            .contains_key(field)
            .then(|| ikv_core::event_time::Stored {
                event_us: time(doc, event_field(field)),
                expires_ms: time(doc, expiry_field(field)),
            });
        let Some(row) = self.chain_winner(chain, base) else {
            return Ok(());
        };
        let value = self
            .value(row.value)?
            .ok_or_else(|| stored_corrupt("a chain holds a deletion"))?;
        doc.insert(field.to_owned(), value.to_owned_value());
        for (name, time) in [
            (expiry_field(field), row.expires_ms),
            (event_field(field), row.event_us),
        ] {
            match time {
                Some(t) => doc.insert(name, FieldValue::Int64(t)),
                None => doc.remove(&name),
            };
        }
        Ok(())
    }
}

/// The expiry of `doc`'s key field when the document has that field: `Some(None)` for
/// never, `None` when the field is absent.
fn key_expiry(doc: &BTreeMap<String, FieldValue>, pk: &str) -> Option<Option<i64>> {
    doc.get(pk)?;
    if !has_companions(doc) {
        return Some(None);
    }
    Some(match doc.get(&expiry_field(pk)) {
        Some(FieldValue::Int64(e)) => Some(*e),
        _ => None,
    })
}

/// Where each interned field's values go among a snapshot's columns: per field id, the
/// (type, column index) pairs of its columns.
pub struct ColumnTable {
    by_field: Vec<Vec<(FieldType, usize)>>,
    width: usize,
}

impl Overlay {
    /// The table of `columns` (a snapshot writer's) for this overlay's fields.
    pub fn column_table(&self, columns: &[SnapshotColumn]) -> ColumnTable {
        let mut by_field = vec![Vec::new(); self.names.len()];
        for (i, c) in columns.iter().enumerate() {
            if let Some(id) = self.ids.get(&c.field) {
                by_field[*id as usize].push((c.field_type, i));
            }
        }
        ColumnTable {
            by_field,
            width: columns.len(),
        }
    }

    /// The ids of a change's fields (and their companions) that expire by the overlay's
    /// cutoff. Empty unless deltas gave expiries.
    fn expired_fields(&self, change: &KeyChange) -> SmallVec<[FieldId; 4]> {
        let mut out = SmallVec::new();
        let Some(by) = self.expired_by else {
            return out;
        };
        for (id, _) in &change.fields {
            if let Some(c) = &self.existing(Companion::Expiry, *id)
                && let Some(Stored::Int64(e)) = change.get(*c)
                && e <= by
            {
                out.push(*id);
                out.push(*c);
                out.extend(self.existing(Companion::Event, *id));
            }
        }
        out
    }

    /// The fields a change deleted.
    pub fn deleted_fields<'a>(&'a self, change: &'a KeyChange) -> impl Iterator<Item = &'a str> {
        change
            .fields
            .iter()
            .filter(|(_, stored)| matches!(stored, Stored::Deleted))
            .map(|(id, _)| self.field_name(*id))
    }

    /// The row of a key no base document lies under: its set fields, placed in the table's
    /// columns (`row[i]` for column `i`). False when no field is set: no document.
    pub fn fill_row<'a>(
        &'a self,
        change: &KeyChange,
        table: &ColumnTable,
        row: &mut Vec<Option<ValueRef<'a>>>,
    ) -> Result<bool> {
        row.clear();
        row.resize(table.width, None);
        let mut any = false;
        let expired = self.expired_fields(change);
        let place = |row: &mut Vec<Option<ValueRef<'a>>>, id: FieldId, v: ValueRef<'a>| {
            let t = v.field_type();
            let columns = table
                .by_field
                .get(id as usize)
                .map_or(&[][..], Vec::as_slice);
            if let Some((_, i)) = columns.iter().find(|(ct, _)| *ct == t) {
                row[*i] = Some(v);
            }
        };
        for (id, stored) in &change.fields {
            if expired.contains(id) {
                continue;
            }
            if let Stored::Chain(c) = stored {
                // No base lies under the key: the chain weighs against nothing.
                let Some(winner) = self.chain_winner(*c, None) else {
                    continue;
                };
                let gone = self
                    .expired_by
                    .is_some_and(|by| winner.expires_ms.is_some_and(|e| e <= by));
                let Some(v) = self.value(winner.value)?.filter(|_| !gone) else {
                    continue;
                };
                any = true;
                place(row, *id, v);
                if let (Some(e), Some(c)) =
                    (winner.expires_ms, self.existing(Companion::Expiry, *id))
                {
                    place(row, c, ValueRef::Int64(e));
                }
                if let (Some(e), Some(c)) = (winner.event_us, self.existing(Companion::Event, *id))
                {
                    place(row, c, ValueRef::Int64(e));
                }
                continue;
            }
            let Some(v) = self.value(*stored)? else {
                continue;
            };
            any = true;
            place(row, *id, v);
        }
        Ok(any)
    }
}

#[cfg(test)]
mod tests {
    use ikv_core::delta::{DeltaMeta, decode_delta_batches, encode_delta};
    use rand::{Rng, SeedableRng};

    use super::*;

    fn set(key: &str, field: &str, value: FieldValue) -> DeltaOp {
        DeltaOp::SetField {
            key: key.as_bytes().to_vec(),
            field: field.into(),
            value,
            expires_ms: None,
            event_us: None,
        }
    }

    type Resolved = Vec<(Vec<u8>, Option<BTreeMap<String, FieldValue>>)>;

    fn resolved(overlay: &Overlay) -> Resolved {
        overlay
            .sorted()
            .into_iter()
            .map(|(k, c)| (k.to_vec(), overlay.resolve(None, Some(c)).unwrap()))
            .collect()
    }

    /// Random rows of every kind, folded borrowed from an encoded delta and one by one owned:
    /// the same documents, in key order, whatever crosses an arena chunk.
    #[test]
    fn borrowed_and_owned_folds_agree_across_arena_chunks() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut ops = Vec::new();
        for _ in 0..4000 {
            let key = format!("k{}", rng.random_range(0..300));
            let field = format!("f{}", rng.random_range(0..6));
            ops.push(match rng.random_range(0..100) {
                0..70 => {
                    let len = if rng.random_bool(0.01) {
                        ARENA_CHUNK + 3
                    } else {
                        rng.random_range(0..200)
                    };
                    let value = match rng.random_range(0..4) {
                        0 => FieldValue::String("é".repeat(len / 2)),
                        1 => FieldValue::Bytes(vec![rng.random(); len]),
                        2 => FieldValue::Int64(rng.random()),
                        _ => FieldValue::Bool(rng.random()),
                    };
                    set(&key, &field, value)
                }
                70..80 => DeltaOp::DeleteField {
                    key: key.into_bytes(),
                    field,
                },
                80..88 => DeltaOp::DeleteDocument {
                    key: key.into_bytes(),
                },
                88..93 => DeltaOp::DropField { field },
                93..98 => DeltaOp::DropFieldPrefix {
                    prefix: "f1".into(),
                },
                _ => DeltaOp::DropAll,
            });
        }
        let meta = DeltaMeta::new("b".into(), "w".into(), "s".into(), 0);
        let bytes = encode_delta(&meta, &ops).unwrap();
        let batches = decode_delta_batches(&bytes, "delta").unwrap();
        let mut borrowed = Overlay::new("id");
        borrowed.apply_delta(&batches).unwrap();
        let mut owned = Overlay::new("id");
        for op in &ops {
            owned.apply(op);
        }
        assert_eq!(borrowed.rows_applied, ops.len() as u64);
        assert_eq!(resolved(&borrowed), resolved(&owned));
        assert_eq!(borrowed.written_columns(), owned.written_columns());
        assert!(
            borrowed.arena.chunks.len() > 1,
            "values crossed arena chunks"
        );
    }

    #[test]
    fn a_field_set_twice_keeps_the_last_value_and_drop_all_starts_over() {
        let mut overlay = Overlay::new("id");
        for op in [
            set("a", "x", FieldValue::Int64(1)),
            set("a", "x", FieldValue::String("two".into())),
            set("b", "y", FieldValue::Bool(true)),
        ] {
            overlay.apply(&op);
        }
        let docs = resolved(&overlay);
        assert_eq!(
            docs[0].1,
            Some(BTreeMap::from([(
                "x".into(),
                FieldValue::String("two".into())
            )]))
        );
        assert_eq!(
            overlay.written_columns(),
            BTreeSet::from([
                ("x".to_owned(), FieldType::String),
                ("y".to_owned(), FieldType::Bool)
            ])
        );
        overlay.apply(&DeltaOp::DropAll);
        assert!(overlay.is_empty() && overlay.base_dropped);
        assert!(overlay.memory_bytes() < 1 << 20);
        overlay.apply(&set("c", "x", FieldValue::Int64(3)));
        assert_eq!(resolved(&overlay).len(), 1);
    }
}
