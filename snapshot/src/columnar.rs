//! The compactor's fast merge: the previous snapshot's rows that the deltas did not touch are
//! copied as Arrow slices, never decoded into documents; only touched rows and new keys go
//! through [`Overlay::resolve`].
//!
//! It applies when a round's only base is one snapshot and the deltas made no store-wide drop
//! (`compact.rs` checks): then an untouched row is exactly the row it was, and the output's
//! columns are a superset of the snapshot's (a column maps by field and type; its name may
//! change when a field gains a second type). Typically most of a store is untouched, so
//! the pass costs about a Parquet decode and encode of the store plus the work on what changed.
//! Rows are checked to be strictly ascending as they stream: a snapshot out of order fails
//! the pass as corrupt, as the document path does.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, BinaryArray, RecordBatch};
use ikv_core::{Error, Result};

use crate::manifest::{KEY_COLUMN, SnapshotColumn};
use crate::overlay::{ColumnTable, KeyChange, Overlay};
use crate::read::SnapshotStream;
use ikv_core::ValueRef;

use crate::rows::{BatchBuilder, SnapshotDoc, from_batch};
use crate::write::SnapshotWriter;
use ikv_core::arrow_column::data_type;

/// Rows gathered before they go to the writer as one batch.
const FLUSH_ROWS: usize = 8192;

fn corrupt(what: &str, reason: impl ToString) -> Error {
    Error::Corrupt {
        what: what.to_owned(),
        reason: reason.to_string(),
    }
}

/// Output rows in order: slices already in the output's columns, and runs of rows built one
/// by one (rows `from..to` of the output's one builder).
enum Piece {
    Rows(RecordBatch),
    Built { from: usize, to: usize },
}

struct Output<'w> {
    writer: &'w mut SnapshotWriter,
    columns: Vec<SnapshotColumn>,
    built: BatchBuilder,
    pieces: Vec<Piece>,
    rows: usize,
}

impl Output<'_> {
    fn rows(&mut self, batch: RecordBatch) {
        self.rows += batch.num_rows();
        self.pieces.push(Piece::Rows(batch));
    }

    /// Records that the builder's next row comes next in the output.
    fn built_row(&mut self) {
        self.rows += 1;
        let at = self.built.len();
        match self.pieces.last_mut() {
            Some(Piece::Built { to, .. }) if *to == at => *to += 1,
            _ => self.pieces.push(Piece::Built {
                from: at,
                to: at + 1,
            }),
        }
    }

    fn doc(&mut self, doc: SnapshotDoc) {
        self.built_row();
        self.built.push_doc(&self.columns, &doc.0, &doc.1);
    }

    fn values(&mut self, key: &[u8], values: &[Option<ValueRef<'_>>]) {
        self.built_row();
        self.built.push_values(key, values);
    }

    async fn flush_if_full(&mut self) -> Result<()> {
        if self.rows >= FLUSH_ROWS {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if self.pieces.is_empty() {
            return Ok(());
        }
        let schema = self.writer.schema();
        let built = self.built.finish(&schema)?;
        let batches: Vec<RecordBatch> = self
            .pieces
            .drain(..)
            .map(|piece| match piece {
                Piece::Rows(b) => b,
                Piece::Built { from, to } => built.slice(from, to - from),
            })
            .collect();
        self.rows = 0;
        let batch = arrow_select::concat::concat_batches(&schema, &batches)
            .map_err(|e| corrupt("snapshot batch being built", e))?;
        self.writer.push_batch(&batch).await
    }
}

/// How each output column is filled from a base batch: the base column of the same field and
/// type, or nulls.
fn mapping(base: &[SnapshotColumn], out: &[SnapshotColumn]) -> Vec<Option<String>> {
    out.iter()
        .map(|o| {
            base.iter()
                .find(|b| b.field == o.field && b.field_type == o.field_type)
                .map(|b| b.name.clone())
        })
        .collect()
}

/// Rows `[from, to)` of a base batch in the output's columns.
fn convert(
    batch: &RecordBatch,
    from: usize,
    to: usize,
    map: &[Option<String>],
    out: &[SnapshotColumn],
    schema: &arrow_schema::SchemaRef,
) -> Result<RecordBatch> {
    let slice = batch.slice(from, to - from);
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(out.len() + 1);
    arrays.push(
        slice
            .column_by_name(KEY_COLUMN)
            .cloned()
            .ok_or_else(|| corrupt("snapshot", format!("no {KEY_COLUMN} column")))?,
    );
    for (column, source) in out.iter().zip(map) {
        let expected = data_type(column.field_type);
        let array = match source {
            Some(name) => {
                let a = slice.column_by_name(name).cloned().ok_or_else(|| {
                    corrupt(
                        "snapshot",
                        format!("column {name:?} of the manifest is missing"),
                    )
                })?;
                if a.data_type() != &expected {
                    return Err(corrupt(
                        "snapshot",
                        format!("column {name:?} has type {}, not {expected}", a.data_type()),
                    ));
                }
                a
            }
            None => arrow_array::new_null_array(&expected, to - from),
        };
        arrays.push(array);
    }
    RecordBatch::try_new(Arc::clone(schema), arrays).map_err(|e| corrupt("snapshot batch", e))
}

/// Merges `overlay` into the snapshot `base` streams, writing every resulting row.
pub async fn merge(
    mut base: SnapshotStream,
    overlay: &Overlay,
    writer: &mut SnapshotWriter,
) -> Result<()> {
    let base_columns = base.manifest().columns.clone();
    let out_columns = writer.columns().to_vec();
    let schema = writer.schema();
    let map = mapping(&base_columns, &out_columns);
    let mut out = Output {
        built: BatchBuilder::new(&out_columns),
        columns: out_columns.clone(),
        writer,
        pieces: Vec::new(),
        rows: 0,
    };
    let sorted = overlay.sorted();
    let mut changes = sorted.iter().copied().peekable();
    let table = overlay.column_table(&out_columns);
    let mut cells = Vec::new();
    let mut last: Option<Vec<u8>> = None;
    while let Some(batch) = base.next_record_batch().await? {
        let keys = batch
            .column_by_name(KEY_COLUMN)
            .and_then(|c| c.as_any().downcast_ref::<BinaryArray>())
            .ok_or_else(|| corrupt("snapshot", format!("no binary {KEY_COLUMN} column")))?
            .clone();
        let n = keys.len();
        if keys.null_count() > 0 {
            return Err(corrupt("snapshot", "a key is null"));
        }
        let ascending = (1..n).all(|i| keys.value(i - 1) < keys.value(i));
        let after_last = n == 0 || last.as_deref().is_none_or(|l| l < keys.value(0));
        if !ascending || !after_last {
            return Err(corrupt(
                "snapshot",
                "rows are not strictly ascending by primary key",
            ));
        }
        if n > 0 {
            last = Some(keys.value(n - 1).to_vec());
        }
        let mut row = 0;
        while row < n {
            // Keys only the deltas know, before this row.
            while let Some((ck, change)) = changes.peek().copied() {
                if ck >= keys.value(row) {
                    break;
                }
                new_row(overlay, &table, &mut cells, &mut out, ck, change)?;
                changes.next();
            }
            // Untouched rows up to the next key the deltas touched.
            let end = match changes.peek() {
                None => n,
                Some((ck, _)) => {
                    let (mut lo, mut hi) = (row, n);
                    while lo < hi {
                        let mid = (lo + hi) / 2;
                        if keys.value(mid) < *ck {
                            lo = mid + 1;
                        } else {
                            hi = mid;
                        }
                    }
                    lo
                }
            };
            if end > row {
                out.rows(convert(&batch, row, end, &map, &out_columns, &schema)?);
                row = end;
                out.flush_if_full().await?;
                continue;
            }
            // The row the deltas touched.
            if let Some((ck, change)) = changes.peek().copied()
                && ck == keys.value(row)
            {
                let mut docs = Vec::with_capacity(1);
                from_batch(&batch.slice(row, 1), &base_columns, &mut docs)?;
                if let Some(resolved) = overlay.resolve(docs.pop().map(|(_, d)| d), Some(change))? {
                    out.doc((ck.to_vec(), resolved));
                }
                changes.next();
                row += 1;
                out.flush_if_full().await?;
            }
        }
    }
    for (ck, change) in changes {
        new_row(overlay, &table, &mut cells, &mut out, ck, change)?;
        out.flush_if_full().await?;
    }
    out.flush().await
}

/// The row of a key only the deltas know, if it has any field.
fn new_row<'a>(
    overlay: &'a Overlay,
    table: &ColumnTable,
    cells: &mut Vec<Option<ValueRef<'a>>>,
    out: &mut Output<'_>,
    key: &[u8],
    change: &KeyChange,
) -> Result<()> {
    if overlay.fill_row(change, table, cells)? {
        out.values(key, cells);
    }
    Ok(())
}

/// Writes the overlay's changes as a layer (`layer.rs`): a row per key touched, in key order,
/// with whether the document below shows through, the fields deleted and the fields set. The
/// store's documents are not read: the cost follows what changed.
pub async fn write_layer(overlay: &Overlay, writer: &mut SnapshotWriter) -> Result<()> {
    let columns = writer.columns().to_vec();
    let schema = writer.schema();
    let table = overlay.column_table(&columns);
    let mut builder = crate::layer::LayerBatchBuilder::new(&columns);
    let mut cells = Vec::new();
    for (key, change) in overlay.sorted() {
        overlay.fill_row(change, &table, &mut cells)?;
        builder.push(
            key,
            !change.base_visible,
            overlay.deleted_fields(change),
            &cells,
        );
        if builder.len() >= FLUSH_ROWS {
            writer.push_batch(&builder.finish(&schema)?).await?;
        }
    }
    if !builder.is_empty() {
        writer.push_batch(&builder.finish(&schema)?).await?;
    }
    Ok(())
}
