//! One partition's imported rows in key order, one row per key.
//!
//! Rows of one key are combined as consecutive `upsert_fields` calls would combine them: for
//! each column the value of the last row (in input order) that has one wins, and a column no
//! row of the key has stays null.
//!
//! The rows stay in the batches they were gathered in: only an order (8 bytes a row) is
//! built, and sorted rows are produced a chunk at a time with Arrow's `interleave`, so
//! sorting needs memory for the gathered rows plus one chunk, never a second copy of them.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, BinaryArray, RecordBatch};
use arrow_schema::SchemaRef;
use ikv_core::{Error, Result};

fn arrow(context: &str, e: impl std::fmt::Display) -> Error {
    Error::InvalidImport(format!("{context}: {e}"))
}

/// A row: its batch and its index in that batch.
type RowRef = (u32, u32);

/// A partition's gathered batches (key column first, as Binary) and their rows' order by
/// key, duplicates grouped.
pub struct SortedRows {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    /// Every row, sorted by key; rows of one key in input order.
    order: Vec<RowRef>,
    /// Where each key's rows end in `order` (exclusive), one entry per distinct key.
    key_ends: Vec<u32>,
}

impl SortedRows {
    /// Sorts `batches` (all of `schema`, key column first) by key. Stable: rows of one key
    /// stay in input order, so "last wins" means last in the input.
    pub fn sort(schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<SortedRows> {
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        if u32::try_from(rows).is_err() || u32::try_from(batches.len()).is_err() {
            return Err(Error::InvalidImport(format!(
                "one partition's share of an import holds {rows} rows; split the import (at most {} rows per partition)",
                u32::MAX
            )));
        }
        let keys: Vec<&BinaryArray> = batches.iter().map(|b| b.column(0).as_binary()).collect();
        let key = |r: &RowRef| keys[r.0 as usize].value(r.1 as usize);
        let mut order: Vec<RowRef> = Vec::with_capacity(rows);
        for (b, batch) in batches.iter().enumerate() {
            order.extend((0..batch.num_rows() as u32).map(|r| (b as u32, r)));
        }
        order.sort_by(|a, b| key(a).cmp(key(b)));
        let mut key_ends = Vec::new();
        for i in 1..=order.len() {
            if i == order.len() || key(&order[i]) != key(&order[i - 1]) {
                key_ends.push(i as u32);
            }
        }
        Ok(SortedRows {
            schema,
            batches,
            order,
            key_ends,
        })
    }

    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Input rows.
    pub fn rows(&self) -> u64 {
        self.order.len() as u64
    }

    /// Distinct keys: the rows of the sorted output.
    pub fn keys(&self) -> usize {
        self.key_ends.len()
    }

    /// Input rows combined into another row of the same key.
    pub fn combined(&self) -> u64 {
        (self.order.len() - self.key_ends.len()) as u64
    }

    /// Sorted output rows `[from, to)` (indices of distinct keys), one row per key.
    pub fn chunk(&self, from: usize, to: usize) -> Result<RecordBatch> {
        let to = to.min(self.key_ends.len());
        let from = from.min(to);
        if from == to {
            return Ok(RecordBatch::new_empty(Arc::clone(&self.schema)));
        }
        let start = |k: usize| {
            if k == 0 {
                0
            } else {
                self.key_ends[k - 1] as usize
            }
        };
        let columns = (0..self.schema.fields().len())
            .map(|c| {
                let values: Vec<&dyn Array> =
                    self.batches.iter().map(|b| b.column(c).as_ref()).collect();
                let indices: Vec<(usize, usize)> = (from..to)
                    .map(|k| {
                        let rows = &self.order[start(k)..self.key_ends[k] as usize];
                        // The last row of the key with a value in this column, else its last row.
                        let chosen = rows
                            .iter()
                            .rev()
                            .find(|(b, r)| values[*b as usize].is_valid(*r as usize))
                            .or(rows.last())
                            .copied()
                            .unwrap_or((0, 0));
                        (chosen.0 as usize, chosen.1 as usize)
                    })
                    .collect();
                arrow_select::interleave::interleave(&values, &indices)
                    .map_err(|e| arrow("sorting", e))
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        batch_of(&self.schema, columns)
    }
}

/// A batch of `schema` with `columns`, checked.
pub fn batch_of(schema: &SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| arrow("building rows", e))
}

#[cfg(test)]
mod tests {
    use arrow_array::{BinaryArray, Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};

    use super::*;

    fn batch(
        schema: &SchemaRef,
        keys: &[&[u8]],
        a: Vec<Option<i64>>,
        b: Vec<Option<&str>>,
    ) -> RecordBatch {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(BinaryArray::from_iter_values(keys.iter().copied())),
                Arc::new(Int64Array::from(a)),
                Arc::new(StringArray::from(b)),
            ],
        )
        .unwrap()
    }

    #[test]
    fn sorts_across_batches_and_the_last_value_of_a_key_wins_per_column() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("_ikv_key", DataType::Binary, false),
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let first = batch(
            &schema,
            &[b"k2", b"k1", b"k2"],
            vec![Some(1), Some(2), Some(3)],
            vec![Some("x"), None, None],
        );
        let second = batch(
            &schema,
            &[b"k0", b"k2", b"k3"],
            vec![None, None, Some(4)],
            vec![Some("z"), Some("y"), None],
        );
        let sorted = SortedRows::sort(schema, vec![first, second]).unwrap();
        assert_eq!((sorted.rows(), sorted.keys(), sorted.combined()), (6, 4, 2));
        // Two chunks, as a large partition is written.
        let head = sorted.chunk(0, 3).unwrap();
        let tail = sorted.chunk(3, 10).unwrap();
        assert_eq!((head.num_rows(), tail.num_rows()), (3, 1));
        let all = arrow_select::concat::concat_batches(&head.schema(), [&head, &tail]).unwrap();
        let keys: Vec<&[u8]> = all.column(0).as_binary::<i32>().iter().flatten().collect();
        assert_eq!(keys, [b"k0".as_ref(), b"k1", b"k2", b"k3"]);
        let a = all
            .column(1)
            .as_primitive::<arrow_array::types::Int64Type>();
        assert_eq!(
            a.iter().collect::<Vec<_>>(),
            [None, Some(2), Some(3), Some(4)]
        );
        let b = all.column(2).as_string::<i32>();
        assert_eq!(
            b.iter().collect::<Vec<_>>(),
            [Some("z"), None, Some("y"), None]
        );
    }

    #[test]
    fn an_empty_partition_sorts_to_nothing() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new(
            "_ikv_key",
            DataType::Binary,
            false,
        )]));
        let sorted = SortedRows::sort(schema, Vec::new()).unwrap();
        assert_eq!((sorted.rows(), sorted.keys()), (0, 0));
        assert_eq!(sorted.chunk(0, 100).unwrap().num_rows(), 0);
    }
}
