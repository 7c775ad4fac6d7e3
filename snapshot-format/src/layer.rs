//! Layers: a snapshot that holds only what changed since the snapshot below it.
//!
//! A full snapshot holds every live document; a layer at sequence `s` stacked on snapshots
//! `b..` holds, for each key the deltas after the one below touched, the change: whether the
//! document below still shows through (`_ikv_replaces` false) or not (after a
//! `delete_document`), the fields it deleted (`_ikv_unset`), and the fields it set (the
//! ordinary columns, null where not set). A pass that writes a layer reads no document of the
//! store: its cost follows what changed (docs/SNAPSHOTS.md, "Layers").
//!
//! Invariants:
//! - A layer never holds a store-wide drop: a round with one writes a full snapshot.
//! - Changes compose: applying `a` then `b` to a document equals applying `a.then(b)`, so the
//!   layers of a stack merge into one change per key before they meet the full snapshot.
//! - A change read from the bucket is checked (key column binary and not null, keys strictly
//!   ascending per layer, columns of the types the manifest names); nothing panics on bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, BooleanBuilder, ListBuilder, StringBuilder};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, ListArray, RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use ikv_core::arrow_column::{ColumnBuilder, TypedColumn};
use ikv_core::{Error, FieldValue, Result, Storage, StoreLayout, ValueRef};

use crate::manifest::{KEY_COLUMN, Manifest, SnapshotColumn};
use crate::read::SnapshotStream;
use crate::rows::SnapshotDoc;

/// Column of a layer: true when the document below does not show through the change.
pub const REPLACES_COLUMN: &str = "_ikv_replaces";
/// Column of a layer: the fields the change deleted (a list of names; null for none).
pub const UNSET_COLUMN: &str = "_ikv_unset";

/// What the deltas of one layer (or of several, composed) did to one key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LayerChange {
    /// The document below does not show through (it was deleted, perhaps written again).
    pub replaces: bool,
    /// Fields deleted (never also in `set`).
    pub unset: BTreeSet<String>,
    /// Fields set, with their new values.
    pub set: BTreeMap<String, FieldValue>,
}

impl LayerChange {
    /// This change followed by `later`.
    pub fn then(mut self, later: LayerChange) -> LayerChange {
        if later.replaces {
            return later;
        }
        for field in later.unset {
            self.set.remove(&field);
            self.unset.insert(field);
        }
        for (field, value) in later.set {
            self.unset.remove(&field);
            self.set.insert(field, value);
        }
        self
    }

    /// The document after the change, from the document below (if any); `None` when no
    /// document remains.
    pub fn apply(
        &self,
        below: Option<BTreeMap<String, FieldValue>>,
    ) -> Option<BTreeMap<String, FieldValue>> {
        let mut doc = if self.replaces {
            BTreeMap::new()
        } else {
            below.unwrap_or_default()
        };
        for field in &self.unset {
            doc.remove(field);
        }
        for (field, value) in &self.set {
            doc.insert(field.clone(), value.clone());
        }
        (!doc.is_empty()).then_some(doc)
    }
}

/// The Arrow schema of a layer with these field columns.
pub fn layer_schema(columns: &[SnapshotColumn]) -> SchemaRef {
    let base = crate::rows::schema(columns);
    let mut fields: Vec<Arc<Field>> = Vec::with_capacity(columns.len() + 3);
    fields.push(base.field(0).clone().into());
    fields.push(Arc::new(Field::new(
        REPLACES_COLUMN,
        DataType::Boolean,
        false,
    )));
    fields.push(Arc::new(Field::new(
        UNSET_COLUMN,
        DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
        true,
    )));
    fields.extend(base.fields().iter().skip(1).cloned());
    Arc::new(Schema::new(fields))
}

/// Builds a layer's record batch a change at a time (keys ascending).
pub struct LayerBatchBuilder {
    keys: BinaryBuilder,
    replaces: BooleanBuilder,
    unset: ListBuilder<StringBuilder>,
    builders: Vec<ColumnBuilder>,
    rows: usize,
}

impl LayerBatchBuilder {
    pub fn new(columns: &[SnapshotColumn]) -> LayerBatchBuilder {
        LayerBatchBuilder {
            keys: BinaryBuilder::new(),
            replaces: BooleanBuilder::new(),
            unset: ListBuilder::new(StringBuilder::new()),
            builders: columns
                .iter()
                .map(|c| ColumnBuilder::new(c.field_type))
                .collect(),
            rows: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends one change: `values[i]` for field column `i` (a value of another type than
    /// its column's is written as null).
    pub fn push<'a>(
        &mut self,
        key: &[u8],
        replaces: bool,
        unset: impl IntoIterator<Item = &'a str>,
        values: &[Option<ValueRef<'_>>],
    ) {
        self.keys.append_value(key);
        self.replaces.append_value(replaces);
        let mut any = false;
        for field in unset {
            self.unset.values().append_value(field);
            any = true;
        }
        self.unset.append(any);
        for (i, builder) in self.builders.iter_mut().enumerate() {
            builder.append(values.get(i).copied().flatten());
        }
        self.rows += 1;
    }

    /// The batch of the changes pushed; the builder starts empty again.
    pub fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(self.keys.finish()),
            Arc::new(self.replaces.finish()),
            Arc::new(self.unset.finish()),
        ];
        arrays.extend(self.builders.iter_mut().map(ColumnBuilder::finish));
        self.rows = 0;
        RecordBatch::try_new(schema.clone(), arrays).map_err(|e| Error::Corrupt {
            what: "layer batch being built".into(),
            reason: e.to_string(),
        })
    }
}

fn corrupt(what: &str, reason: impl ToString) -> Error {
    Error::Corrupt {
        what: what.to_owned(),
        reason: reason.to_string(),
    }
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str, what: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| {
            corrupt(
                what,
                format!("column {name:?} is missing or of another type"),
            )
        })
}

/// Reads the changes of one record batch of a layer.
pub fn changes_from_batch(
    batch: &RecordBatch,
    columns: &[SnapshotColumn],
    what: &str,
    out: &mut Vec<(Vec<u8>, LayerChange)>,
) -> Result<()> {
    let keys = column::<BinaryArray>(batch, KEY_COLUMN, what)?;
    let replaces = column::<BooleanArray>(batch, REPLACES_COLUMN, what)?;
    let unset = column::<ListArray>(batch, UNSET_COLUMN, what)?;
    if keys.null_count() > 0 || replaces.null_count() > 0 {
        return Err(corrupt(what, "a key or its replace flag is null"));
    }
    let names = unset
        .values()
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| corrupt(what, format!("{UNSET_COLUMN:?} is not a list of strings")))?;
    let mut typed = Vec::with_capacity(columns.len());
    for c in columns {
        let array = batch
            .column_by_name(&c.name)
            .ok_or_else(|| corrupt(what, format!("column {:?} is missing", c.name)))?;
        let col = TypedColumn::of(array.as_ref(), c.field_type)
            .ok_or_else(|| corrupt(what, format!("column {:?} is of another type", c.name)))?;
        typed.push((c, col));
    }
    let offsets = unset.value_offsets();
    for i in 0..batch.num_rows() {
        let mut change = LayerChange {
            replaces: replaces.value(i),
            ..LayerChange::default()
        };
        if unset.is_valid(i) {
            let (from, to) = (offsets[i], offsets[i + 1]);
            let (from, to) = (usize::try_from(from), usize::try_from(to));
            let (Ok(from), Ok(to)) = (from, to) else {
                return Err(corrupt(what, "a negative list offset"));
            };
            if from > to || to > names.len() {
                return Err(corrupt(what, "a list offset past its values"));
            }
            for j in from..to {
                if names.is_null(j) {
                    return Err(corrupt(what, "a deleted field's name is null"));
                }
                change.unset.insert(names.value(j).to_owned());
            }
        }
        for (c, col) in &typed {
            if let Some(v) = col.value(i) {
                if change.set.contains_key(&c.field) || change.unset.contains(&c.field) {
                    return Err(corrupt(
                        what,
                        format!("field {:?} is both set and deleted, or set twice", c.field),
                    ));
                }
                change.set.insert(c.field.clone(), v.to_owned_value());
            }
        }
        out.push((keys.value(i).to_vec(), change));
    }
    Ok(())
}

/// One layer's changes, in key order, checked ascending.
struct LayerCursor {
    stream: SnapshotStream,
    what: String,
    buffer: std::collections::VecDeque<(Vec<u8>, LayerChange)>,
    last: Option<Vec<u8>>,
    done: bool,
}

impl LayerCursor {
    async fn fill(&mut self) -> Result<()> {
        while self.buffer.is_empty() && !self.done {
            match self.stream.next_record_batch().await? {
                Some(batch) => {
                    let mut out = Vec::with_capacity(batch.num_rows());
                    let columns = self.stream.manifest().columns.clone();
                    changes_from_batch(&batch, &columns, &self.what, &mut out)?;
                    for (key, _) in &out {
                        if self.last.as_ref().is_some_and(|l| l >= key) {
                            return Err(corrupt(
                                &self.what,
                                "rows are not strictly ascending by primary key",
                            ));
                        }
                        self.last = Some(key.clone());
                    }
                    self.buffer.extend(out);
                }
                None => self.done = true,
            }
        }
        Ok(())
    }

    fn head(&self) -> Option<&[u8]> {
        self.buffer.front().map(|(k, _)| k.as_slice())
    }
}

/// The layers of a stack merged into one change per key, in key order.
pub struct LayerChanges {
    /// Bottom layer first: a later layer's change comes after an earlier one's.
    cursors: Vec<LayerCursor>,
}

impl LayerChanges {
    pub async fn open(
        storage: &Storage,
        layout: &StoreLayout,
        layers: Vec<Manifest>,
    ) -> Result<LayerChanges> {
        let mut cursors = Vec::with_capacity(layers.len());
        for m in layers {
            let what = format!("layer {} of partition {}", m.sequence, m.partition);
            let mut cursor = LayerCursor {
                stream: SnapshotStream::new(storage.clone(), layout.clone(), m),
                what,
                buffer: Default::default(),
                last: None,
                done: false,
            };
            cursor.fill().await?;
            cursors.push(cursor);
        }
        Ok(LayerChanges { cursors })
    }

    /// The smallest key any layer still holds.
    pub fn peek_key(&self) -> Option<&[u8]> {
        self.cursors.iter().filter_map(LayerCursor::head).min()
    }

    /// The next key's change, composed over every layer that holds it.
    pub async fn next_change(&mut self) -> Result<Option<(Vec<u8>, LayerChange)>> {
        let Some(min) = self.peek_key().map(<[u8]>::to_vec) else {
            return Ok(None);
        };
        let mut composed: Option<LayerChange> = None;
        for cursor in &mut self.cursors {
            if cursor.head() == Some(min.as_slice()) {
                if let Some((_, change)) = cursor.buffer.pop_front() {
                    composed = Some(match composed {
                        Some(before) => before.then(change),
                        None => change,
                    });
                }
                cursor.fill().await?;
            }
        }
        Ok(composed.map(|c| (min, c)))
    }
}

/// The documents of a snapshot, a layer's stack resolved: what a full snapshot at the same
/// sequence would hold, in key order.
pub struct StackDocs {
    base: Option<SnapshotStream>,
    next_base: Option<SnapshotDoc>,
    layers: LayerChanges,
    last: Option<Vec<u8>>,
    what: String,
}

impl StackDocs {
    /// Opens the stack of `top` (a full snapshot, or a layer whose stack it loads).
    pub async fn open(storage: &Storage, layout: &StoreLayout, top: Manifest) -> Result<StackDocs> {
        let stack = Stack::load(storage, layout, top).await?;
        StackDocs::from_stack(storage, layout, stack).await
    }

    /// Opens a stack already loaded.
    pub async fn from_stack(
        storage: &Storage,
        layout: &StoreLayout,
        stack: Stack,
    ) -> Result<StackDocs> {
        let top = stack.top();
        let what = format!("snapshot {} of partition {}", top.sequence, top.partition);
        let mut base = SnapshotStream::new(storage.clone(), layout.clone(), stack.full);
        let next_base = base.next_doc().await?;
        let layers = LayerChanges::open(storage, layout, stack.layers).await?;
        Ok(StackDocs {
            base: Some(base),
            next_base,
            layers,
            last: None,
            what,
        })
    }

    /// The next document, or `None` at the end.
    pub async fn next_doc(&mut self) -> Result<Option<SnapshotDoc>> {
        loop {
            let order = match (&self.next_base, self.layers.peek_key()) {
                (None, None) => return Ok(None),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some((bk, _)), Some(lk)) => bk.as_slice().cmp(lk),
            };
            let below = if order == std::cmp::Ordering::Greater {
                None
            } else {
                let taken = self.next_base.take();
                self.next_base = match self.base.as_mut() {
                    Some(base) => base.next_doc().await?,
                    None => None,
                };
                if let (Some((key, _)), Some((next, _))) = (&taken, &self.next_base)
                    && key >= next
                {
                    return Err(corrupt(
                        &self.what,
                        "rows are not strictly ascending by primary key",
                    ));
                }
                taken
            };
            let resolved = if order == std::cmp::Ordering::Less {
                below
            } else {
                let Some((key, change)) = self.layers.next_change().await? else {
                    return Ok(None);
                };
                change.apply(below.map(|(_, d)| d)).map(|d| (key, d))
            };
            if let Some((key, doc)) = resolved {
                if self.last.as_ref().is_some_and(|l| *l >= key) {
                    return Err(corrupt(
                        &self.what,
                        "rows are not strictly ascending by primary key",
                    ));
                }
                self.last = Some(key.clone());
                return Ok(Some((key, doc)));
            }
        }
    }

    /// Reads every document (tests and small stores).
    pub async fn collect_all(mut self) -> Result<Vec<SnapshotDoc>> {
        let mut out = Vec::new();
        while let Some(doc) = self.next_doc().await? {
            out.push(doc);
        }
        Ok(out)
    }
}

/// A snapshot's stack: the full snapshot at its bottom and the layers above it, the top last
/// (no layers when the top is itself a full snapshot).
#[derive(Debug, Clone)]
pub struct Stack {
    pub full: Manifest,
    pub layers: Vec<Manifest>,
}

impl Stack {
    /// Loads the snapshots `top` is stacked on, each checked to be the one `top` names: a
    /// full snapshot first, then layers each stacked on exactly the ones before it.
    pub async fn load(storage: &Storage, layout: &StoreLayout, top: Manifest) -> Result<Stack> {
        if top.stacked_on.is_empty() {
            return Ok(Stack {
                full: top,
                layers: Vec::new(),
            });
        }
        let mut below = Vec::with_capacity(top.stacked_on.len());
        for (i, seq) in top.stacked_on.iter().enumerate() {
            let m = Manifest::load(storage, layout, top.partition, *seq)
                .await?
                .ok_or_else(|| {
                    corrupt(
                        &format!("snapshot {} of partition {}", top.sequence, top.partition),
                        format!("it is stacked on snapshot {seq}, which is gone"),
                    )
                })?;
            if m.stacked_on != top.stacked_on[..i] {
                return Err(corrupt(
                    &format!("snapshot {seq} of partition {}", top.partition),
                    format!(
                        "stacked on {:?}, where snapshot {} says {:?}",
                        m.stacked_on,
                        top.sequence,
                        &top.stacked_on[..i]
                    ),
                ));
            }
            below.push(m);
        }
        let mut layers = below.split_off(1);
        layers.push(top);
        let full = below
            .pop()
            .ok_or_else(|| corrupt("snapshot stack", "empty"))?;
        Ok(Stack { full, layers })
    }

    /// The newest snapshot of the stack.
    pub fn top(&self) -> &Manifest {
        self.layers.last().unwrap_or(&self.full)
    }

    /// Bytes of all the layers' files.
    pub fn layer_bytes(&self) -> u64 {
        self.layers
            .iter()
            .flat_map(|m| &m.files)
            .map(|f| f.bytes)
            .sum()
    }

    /// Rows of all the layers (changes; the full snapshot's rows not counted).
    pub fn layer_rows(&self) -> u64 {
        self.layers.iter().map(|m| m.row_count).sum()
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    fn random_change(rng: &mut rand::rngs::StdRng) -> LayerChange {
        let mut c = LayerChange {
            replaces: rng.random_bool(0.2),
            ..LayerChange::default()
        };
        for f in ["a", "b", "c", "d"] {
            match rng.random_range(0..4) {
                0 => {
                    c.unset.insert(f.to_owned());
                }
                1 => {
                    c.set
                        .insert(f.to_owned(), FieldValue::Int64(rng.random_range(0..9)));
                }
                _ => {}
            }
        }
        c
    }

    fn random_doc(rng: &mut rand::rngs::StdRng) -> Option<BTreeMap<String, FieldValue>> {
        if !rng.random_bool(0.7) {
            return None;
        }
        let mut doc = BTreeMap::new();
        for f in ["a", "b", "c", "d"] {
            if rng.random_bool(0.5) {
                doc.insert(f.to_owned(), FieldValue::Int64(rng.random_range(0..9)));
            }
        }
        Some(doc)
    }

    #[test]
    fn composed_changes_apply_as_the_changes_one_after_another() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..5_000 {
            let below = random_doc(&mut rng);
            let changes: Vec<LayerChange> = (0..rng.random_range(1..5))
                .map(|_| random_change(&mut rng))
                .collect();
            let mut one_by_one = below.clone().filter(|d| !d.is_empty());
            for c in &changes {
                one_by_one = c.apply(one_by_one);
            }
            let composed = changes
                .iter()
                .cloned()
                .reduce(LayerChange::then)
                .unwrap_or_default();
            assert_eq!(
                composed.apply(below.filter(|d| !d.is_empty())),
                one_by_one,
                "{changes:?}"
            );
            assert!(composed.set.keys().all(|f| !composed.unset.contains(f)));
        }
    }

    #[test]
    fn changes_round_trip_through_a_batch() {
        let columns = vec![
            SnapshotColumn {
                name: "a".into(),
                field: "a".into(),
                field_type: ikv_core::FieldType::Int64,
            },
            SnapshotColumn {
                name: "b".into(),
                field: "b".into(),
                field_type: ikv_core::FieldType::String,
            },
        ];
        let schema = layer_schema(&columns);
        let mut builder = LayerBatchBuilder::new(&columns);
        builder.push(b"k1", false, ["b"], &[Some(ValueRef::Int64(4)), None]);
        builder.push(b"k2", true, [], &[None, Some(ValueRef::String("x"))]);
        builder.push(b"k3", true, [], &[None, None]);
        let batch = builder.finish(&schema).unwrap();
        let mut out = Vec::new();
        changes_from_batch(&batch, &columns, "test", &mut out).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].1.unset, BTreeSet::from(["b".to_owned()]));
        assert_eq!(out[0].1.set["a"], FieldValue::Int64(4));
        assert!(!out[0].1.replaces && out[1].1.replaces && out[2].1.replaces);
        assert_eq!(out[1].1.set["b"], FieldValue::String("x".into()));
        assert!(out[2].1.set.is_empty() && out[2].1.unset.is_empty());
        // A field both set and deleted is refused.
        let mut builder = LayerBatchBuilder::new(&columns);
        builder.push(b"k1", false, ["a"], &[Some(ValueRef::Int64(4)), None]);
        let batch = builder.finish(&schema).unwrap();
        let err = changes_from_batch(&batch, &columns, "test", &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("both set and deleted"), "{err}");
        // A batch without the layer's columns is refused by name.
        let plain = crate::rows::to_batch(&crate::rows::schema(&columns), &columns, &[]).unwrap();
        let err = changes_from_batch(&plain, &columns, "test", &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains(REPLACES_COLUMN), "{err}");
    }
}
