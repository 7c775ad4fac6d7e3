//! Encoding snapshot record batches straight into local documents, without building a typed
//! document per row: the bootstrap's hot loop.

use arrow_array::{Array, BinaryArray, Int64Array, RecordBatch};
use ikv_core::arrow_column::TypedColumn;
use ikv_core::event_time::field_of_event;
use ikv_core::expiry::field_of_expiry;
use ikv_core::{Error, FieldType, Result};

use crate::doc::SectionEncoder;
use ikv_snapshot_format::manifest::SnapshotColumn;

fn corrupt(reason: String) -> Error {
    Error::Corrupt {
        what: "snapshot file".into(),
        reason,
    }
}

fn downcast<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| corrupt(format!("column {name:?} is missing or of another type")))
}

/// `(primary key, encoded document)` for every row, in row order. Columns come in field-name
/// order (the manifest's order), so fields are encoded sorted by name, as `doc.rs` requires.
pub fn encode_rows<'b>(
    batch: &'b RecordBatch,
    key_column: &str,
    columns: &[SnapshotColumn],
    partition: u32,
    epoch: u64,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let keys = downcast::<BinaryArray>(batch, key_column)?;
    let mut cols = Vec::with_capacity(columns.len());
    // Companion columns (`ikv_core::expiry`, `ikv_core::event_time`) are no fields: each
    // gives its field's values their expiries or event times.
    let mut expiries: Vec<(&str, &Int64Array)> = Vec::new();
    let mut events: Vec<(&str, &Int64Array)> = Vec::new();
    for c in columns {
        let array = batch
            .column_by_name(&c.name)
            .ok_or_else(|| corrupt(format!("column {:?} is missing", c.name)))?;
        let companion = match (field_of_expiry(&c.field), field_of_event(&c.field)) {
            (Some(field), _) => Some((&mut expiries, field)),
            (_, Some(field)) => Some((&mut events, field)),
            _ => None,
        };
        if let Some((list, field)) = companion {
            let times = array
                .as_any()
                .downcast_ref::<Int64Array>()
                .filter(|_| c.field_type == FieldType::Int64)
                .ok_or_else(|| corrupt(format!("column {:?} is of another type", c.name)))?;
            list.push((field, times));
            continue;
        }
        let col = TypedColumn::of(array.as_ref(), c.field_type)
            .ok_or_else(|| corrupt(format!("column {:?} is of another type", c.name)))?;
        cols.push((c, col));
    }
    let cols: Vec<_> = cols
        .into_iter()
        .map(|(c, col)| {
            let of = |list: &[(&str, &'b Int64Array)]| {
                list.iter().find(|(f, _)| *f == c.field).map(|(_, e)| *e)
            };
            (c, col, of(&expiries), of(&events))
        })
        .collect();
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let key = keys.value(i);
        let mut doc = SectionEncoder::new(partition, key, 128);
        let at = |times: &Option<&Int64Array>| times.filter(|e| e.is_valid(i)).map(|e| e.value(i));
        for (c, col, expiry, event) in &cols {
            if let Some(v) = col.value(i) {
                doc.timed_field(
                    &c.field,
                    c.field_type,
                    epoch,
                    at(expiry),
                    at(event),
                    |out| v.encode_into(out),
                );
            }
        }
        let doc = doc.finish();
        out.push((key.to_vec(), doc));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use ikv_core::FieldValue;
    use ikv_snapshot_format::manifest::{KEY_COLUMN, plan_columns};
    use ikv_snapshot_format::rows::{schema, to_batch};

    use super::*;
    use crate::doc::OwnedDoc;

    #[test]
    fn rows_encode_like_documents_across_types() {
        let docs: Vec<(Vec<u8>, BTreeMap<String, FieldValue>)> = vec![
            (
                b"a".to_vec(),
                [
                    ("id".to_owned(), FieldValue::String("a".into())),
                    ("n".to_owned(), FieldValue::Int64(1)),
                ]
                .into(),
            ),
            (
                b"b".to_vec(),
                [
                    ("id".to_owned(), FieldValue::String("b".into())),
                    ("n".to_owned(), FieldValue::String("x".into())),
                    ("raw".to_owned(), FieldValue::Bytes(vec![0, 9])),
                    ("f".to_owned(), FieldValue::Float64(0.5)),
                    ("t".to_owned(), FieldValue::Bool(false)),
                ]
                .into(),
            ),
        ];
        let pairs: BTreeSet<_> = docs
            .iter()
            .flat_map(|(_, d)| d.iter().map(|(k, v)| (k.clone(), v.field_type())))
            .collect();
        let columns = plan_columns(&pairs);
        let batch = to_batch(&schema(&columns), &columns, &docs).unwrap();
        let rows = encode_rows(&batch, KEY_COLUMN, &columns, 2, 77).unwrap();
        for ((key, doc), (got_key, got)) in docs.iter().zip(rows) {
            let mut expected = OwnedDoc::new(2);
            for (name, value) in doc {
                expected.set(name, value, 77);
            }
            assert_eq!(&got_key, key);
            assert_eq!(got, expected.encode(key));
        }
    }
}
