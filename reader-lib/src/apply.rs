//! What one delta changes, computed from the view it applies to: the new entries of the keys
//! it touches and the partition's new drop state. Both the durable state (its tail) and the
//! overlay are written from this one result.

use std::collections::BTreeMap;

use ikv_core::{DeltaOp, Result};

use crate::doc::{OwnedDoc, Sections, decode_entry_live, encode_entry};
use crate::drops::DropState;
use crate::keys::epoch;
use crate::view::ReadView;

/// Changed entries by primary key, in key order; `None` deletes.
pub type Entries = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// A delta's effect on one partition.
pub struct Staged {
    pub entries: Entries,
    /// The partition's drop state after the delta.
    pub drops: DropState,
    /// Whether the delta changed the drop state.
    pub drops_changed: bool,
}

/// A primary key's sections among the changes of one delta, loaded from the view (live
/// fields only) on first use; empty means absent or deleted in every partition.
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
                Some(bytes) => decode_entry_live(bytes, key, &view.drops, primary_key)?,
                None => Sections::new(),
            };
            e.insert(sections)
        }
    })
}

/// The effect of delta `seq` (`ops`, written at `written_at_ms` by its writer's clock) of
/// `partition` on `view`. Loading an entry keeps only its live fields, so rewriting a document
/// also reclaims its dropped fields. Only the section of this partition changes: a store with
/// a partitioning key may hold the same primary key in other partitions too.
pub fn stage(
    view: &ReadView,
    partition: u32,
    seq: u64,
    (ops, written_at_ms): (&[DeltaOp], i64),
    primary_key: &str,
    single_partition_keys: bool,
) -> Result<Staged> {
    let before = view
        .drops
        .get(partition as usize)
        .cloned()
        .unwrap_or_default();
    let mut drops = before.clone();
    let mut staged: BTreeMap<Vec<u8>, Sections> = BTreeMap::new();
    for (row, op) in ops.iter().enumerate() {
        let e = epoch(seq, row);
        match op {
            DeltaOp::SetField {
                key,
                field,
                value,
                expires_ms,
                event_us,
            } => {
                let doc = staged_entry(view, &mut staged, key, primary_key)?
                    .entry(partition)
                    .or_insert_with(|| OwnedDoc::new(partition));
                // A stored field a drop of this same delta removed is no prior value: the
                // key's expiry must not outlive the drop, nor an event time outrank a write.
                let is_key = field == primary_key;
                if doc
                    .fields
                    .get(field.as_str())
                    .is_some_and(|f| !drops.is_live(field, is_key, f.epoch))
                {
                    doc.fields.remove(field.as_str());
                }
                if is_key {
                    doc.set_key(field, value, e, *expires_ms);
                } else {
                    doc.set_ordered(field, value, e, (*expires_ms, *event_us), written_at_ms);
                }
            }
            DeltaOp::DeleteField { key, field } => {
                if field != primary_key {
                    let sections = staged_entry(view, &mut staged, key, primary_key)?;
                    if let Some(d) = sections.get_mut(&partition) {
                        d.fields.remove(field);
                        if d.fields.is_empty() {
                            sections.remove(&partition);
                        }
                    }
                }
            }
            DeltaOp::DeleteDocument { key } => {
                if single_partition_keys {
                    // Nothing of another partition to keep: no need to load the entry.
                    staged.insert(key.clone(), Sections::new());
                } else {
                    staged_entry(view, &mut staged, key, primary_key)?.remove(&partition);
                }
            }
            DeltaOp::DropField { field } => {
                if field != primary_key {
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
            // Import deltas are applied from their files (`sync.rs`), never staged here.
            DeltaOp::Import { .. } => {}
        }
    }
    let entries = staged
        .into_iter()
        .map(|(k, sections)| {
            let entry = encode_entry(&sections, &k);
            (k, entry)
        })
        .collect();
    let drops_changed = drops != before;
    Ok(Staged {
        entries,
        drops,
        drops_changed,
    })
}

/// One partition's import, as the rebuild applies it.
#[derive(Debug, Clone, Copy)]
pub struct PartitionImport {
    pub partition: u32,
    pub seq: u64,
    pub replace: bool,
}

/// A document's entry after imports: its sections before (`existing`, live fields only under
/// `drops`); each importing partition's section replaced (replace mode) or kept, then the
/// fields of that import's encoded section (epoch `seq << 24 | 1`, after the delta's
/// drop-all row) set on it. `imported` comes in ascending partition order. `None` when
/// nothing remains.
pub fn imported_entry(
    key: &[u8],
    existing: Option<&[u8]>,
    imported: Vec<(PartitionImport, Vec<u8>)>,
    drops: &[DropState],
    primary_key: &str,
) -> Result<Option<Vec<u8>>> {
    let Some(existing) = existing else {
        // A new document: the imported sections are the entry (the common case of a bulk
        // load, kept free of decoding).
        let sections: Vec<Vec<u8>> = imported.into_iter().map(|(_, s)| s).collect();
        return Ok((!sections.is_empty()).then(|| crate::doc::join_sections(sections)));
    };
    let mut sections = decode_entry_live(existing, key, drops, primary_key)?;
    for (import, section) in imported {
        if import.replace {
            sections.remove(&import.partition);
        }
        let fields = OwnedDoc::decode_live(&section, key, &[], primary_key)?.fields;
        sections
            .entry(import.partition)
            .or_insert_with(|| OwnedDoc::new(import.partition))
            .fields
            .extend(fields);
    }
    Ok(encode_entry(&sections, key))
}
