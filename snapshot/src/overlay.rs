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

use std::collections::{BTreeMap, BTreeSet};

use ikv_core::{DeltaOp, FieldType, FieldValue};

/// A store-wide drop, in log order.
#[derive(Debug, Clone, PartialEq)]
pub enum GlobalDrop {
    Field(String),
    Prefix(String),
}

/// What the deltas did to one key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyChange {
    /// Whether the previous snapshot's document still shows through.
    pub base_visible: bool,
    /// How many of the overlay's store-wide drops the base suffered before this key was first
    /// touched (they are applied to it at merge time).
    pub globals_before: usize,
    /// Prefix drops that happened after the key was first touched, to apply to the base.
    pub base_masks: Vec<String>,
    /// Field → new value (`Some`) or deleted (`None`).
    pub fields: BTreeMap<String, Option<FieldValue>>,
}

/// Folded deltas of one partition.
#[derive(Debug, Default)]
pub struct Overlay {
    primary_key_field: String,
    pub keys: BTreeMap<Vec<u8>, KeyChange>,
    pub globals: Vec<GlobalDrop>,
    /// A drop_all happened: no document of the previous snapshot survives unless re-written.
    pub base_dropped: bool,
    pub rows_applied: u64,
}

fn matches_prefix(field: &str, prefix: &str, pk: &str) -> bool {
    field != pk && field.starts_with(prefix)
}

impl Overlay {
    pub fn new(primary_key_field: &str) -> Overlay {
        Overlay {
            primary_key_field: primary_key_field.to_owned(),
            ..Overlay::default()
        }
    }

    fn entry(&mut self, key: Vec<u8>) -> &mut KeyChange {
        let globals = self.globals.len();
        let base_visible = !self.base_dropped;
        self.keys.entry(key).or_insert_with(|| KeyChange {
            base_visible,
            globals_before: globals,
            base_masks: Vec::new(),
            fields: BTreeMap::new(),
        })
    }

    /// Applies one delta row, borrowing it (clones what it keeps).
    pub fn apply(&mut self, op: &DeltaOp) {
        self.apply_owned(op.clone());
    }

    /// Applies a delta's rows in order, taking them. Consecutive field sets of one key (how
    /// an upsert of a document is written) touch the key's change once: one map lookup per
    /// document rather than one per field.
    pub fn apply_all(&mut self, ops: Vec<DeltaOp>) {
        let mut ops = ops.into_iter().peekable();
        while let Some(op) = ops.next() {
            let DeltaOp::SetField { key, field, value } = op else {
                self.apply_owned(op);
                continue;
            };
            let mut fields = vec![(field, value)];
            while let Some(DeltaOp::SetField { key: next, .. }) = ops.peek() {
                if *next != key {
                    break;
                }
                if let Some(DeltaOp::SetField { field, value, .. }) = ops.next() {
                    fields.push((field, value));
                }
            }
            self.rows_applied += fields.len() as u64;
            let change = self.entry(key);
            for (field, value) in fields {
                change.fields.insert(field, Some(value));
            }
        }
    }

    /// Applies one delta row, taking it (the compactor's path: no copies).
    pub fn apply_owned(&mut self, op: DeltaOp) {
        self.rows_applied += 1;
        match op {
            DeltaOp::SetField { key, field, value } => {
                self.entry(key).fields.insert(field, Some(value));
            }
            DeltaOp::DeleteField { key, field } => {
                if field != self.primary_key_field {
                    self.entry(key).fields.insert(field, None);
                }
            }
            DeltaOp::DeleteDocument { key } => {
                let e = self.entry(key);
                e.base_visible = false;
                e.base_masks.clear();
                e.fields.clear();
            }
            DeltaOp::DropField { field } => {
                if field == self.primary_key_field {
                    return;
                }
                for change in self.keys.values_mut() {
                    // Deleting covers both an overridden value and the base's value.
                    change.fields.insert(field.clone(), None);
                }
                self.globals.push(GlobalDrop::Field(field));
            }
            DeltaOp::DropFieldPrefix { prefix } => {
                let pk = &self.primary_key_field;
                for change in self.keys.values_mut() {
                    for (name, value) in change.fields.iter_mut() {
                        if matches_prefix(name, &prefix, pk) {
                            *value = None;
                        }
                    }
                    if change.base_visible {
                        change.base_masks.push(prefix.clone());
                    }
                }
                self.globals.push(GlobalDrop::Prefix(prefix));
            }
            DeltaOp::DropAll => {
                self.keys.clear();
                self.globals.clear();
                self.base_dropped = true;
            }
            // An import opens its own round and is merged as that round's base documents
            // (`merge.rs`); the compactor never hands one to an overlay.
            DeltaOp::Import { .. } => {}
        }
    }

    /// The (field, type) pairs the overlay can put into the new snapshot. Names are
    /// collected borrowed and copied once each (a store of millions of keys has few fields).
    pub fn written_columns(&self) -> BTreeSet<(String, FieldType)> {
        let mut seen: std::collections::HashSet<(&str, FieldType)> = Default::default();
        for change in self.keys.values() {
            for (f, v) in &change.fields {
                if let Some(v) = v {
                    seen.insert((f.as_str(), v.field_type()));
                }
            }
        }
        seen.into_iter().map(|(f, t)| (f.to_owned(), t)).collect()
    }

    /// Whether a field of the previous snapshot can survive the store-wide drops.
    pub fn base_field_survives(&self, field: &str) -> bool {
        if self.base_dropped {
            return false;
        }
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
    ) -> Option<BTreeMap<String, FieldValue>> {
        let doc = match change {
            None => {
                if self.base_dropped {
                    return None;
                }
                let mut doc = base?;
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
                for (field, value) in &change.fields {
                    match value {
                        Some(v) => {
                            doc.insert(field.clone(), v.clone());
                        }
                        None => {
                            doc.remove(field);
                        }
                    }
                }
                doc
            }
        };
        (!doc.is_empty()).then_some(doc)
    }
}
