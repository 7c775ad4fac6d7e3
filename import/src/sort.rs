//! One partition's imported rows in key order, one row per key.
//!
//! Rows of one key are combined as consecutive `upsert_fields` calls would combine them: for
//! each column the value of the last row (in input order) that has one wins, and a column no
//! row of the key has stays null. Whole columns are reordered with Arrow's `take`, never
//! row by row.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow_schema::SchemaRef;
use ikv_core::{Error, Result};

fn arrow(context: &str, e: impl std::fmt::Display) -> Error {
    Error::InvalidImport(format!("{context}: {e}"))
}

/// `batch` (key column first, as Binary) sorted by key, with duplicate keys combined.
/// Returns the sorted batch and how many input rows were combined into others.
pub fn sort_and_combine(batch: &RecordBatch) -> Result<(RecordBatch, u64)> {
    let rows = batch.num_rows();
    if u32::try_from(rows).is_err() {
        return Err(Error::InvalidImport(format!(
            "one partition's share of an import holds {rows} rows; split the import (at most {} rows per partition)",
            u32::MAX
        )));
    }
    let keys = batch.column(0).as_binary::<i32>();
    let mut order: Vec<u32> = (0..rows as u32).collect();
    // Stable: rows of one key stay in input order, so "last wins" means last in the input.
    order.sort_by(|a, b| keys.value(*a as usize).cmp(keys.value(*b as usize)));
    // Runs of one key: [start, end) in `order`.
    let mut runs: Vec<(usize, usize)> = Vec::with_capacity(rows);
    let mut start = 0;
    for i in 1..=order.len() {
        if i == order.len() || keys.value(order[i] as usize) != keys.value(order[start] as usize) {
            runs.push((start, i));
            start = i;
        }
    }
    let combined = (rows - runs.len()) as u64;
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|column| {
            let indices: UInt32Array = if combined == 0 {
                UInt32Array::from(order.clone())
            } else {
                runs.iter()
                    .map(|&(s, e)| {
                        // The last row of the run with a value in this column, else its last row.
                        let chosen = order[s..e]
                            .iter()
                            .rev()
                            .find(|r| column.is_valid(**r as usize))
                            .unwrap_or(&order[e - 1]);
                        Some(*chosen)
                    })
                    .collect()
            };
            arrow_select::take::take(column.as_ref(), &indices, None)
                .map_err(|e| arrow("sorting", e))
        })
        .collect::<Result<_>>()?;
    let sorted = RecordBatch::try_new(batch.schema(), columns).map_err(|e| arrow("sorting", e))?;
    Ok((sorted, combined))
}

/// Concatenates a partition's batches (all of `schema`).
pub fn concat(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<RecordBatch> {
    arrow_select::concat::concat_batches(schema, batches).map_err(|e| arrow("gathering rows", e))
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

    #[test]
    fn sorts_by_key_bytes_and_the_last_value_of_a_key_wins_per_column() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("_ikv_key", DataType::Binary, false),
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(BinaryArray::from_iter_values([
                    b"k2".as_ref(),
                    b"k1",
                    b"k2",
                    b"k0",
                    b"k2",
                ])),
                Arc::new(Int64Array::from(vec![
                    Some(1),
                    Some(2),
                    Some(3),
                    None,
                    None,
                ])),
                Arc::new(StringArray::from(vec![
                    Some("x"),
                    None,
                    None,
                    Some("z"),
                    Some("y"),
                ])),
            ],
        )
        .unwrap();
        let (sorted, combined) = sort_and_combine(&batch).unwrap();
        assert_eq!(combined, 2);
        let keys: Vec<&[u8]> = sorted
            .column(0)
            .as_binary::<i32>()
            .iter()
            .flatten()
            .collect();
        assert_eq!(keys, [b"k0".as_ref(), b"k1", b"k2"]);
        let a = sorted
            .column(1)
            .as_primitive::<arrow_array::types::Int64Type>();
        assert_eq!(a.iter().collect::<Vec<_>>(), [None, Some(2), Some(3)]);
        let b = sorted.column(2).as_string::<i32>();
        assert_eq!(b.iter().collect::<Vec<_>>(), [Some("z"), None, Some("y")]);
    }
}
