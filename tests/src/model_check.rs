//! Glue between the code under test and the reference model: writes that record their
//! receipts in the model, and comparisons of what readers and snapshots show with it.

use ikv_core::Operation;
use ikv_reader::Reader;
use ikv_writer::{WriteReceipt, Writer};

use crate::model::{Committed, Model, PartitionDocs};
use crate::random_ops::{FIELDS, PRIMARY_KEY};

/// The receipt's commits in the model's terms.
pub fn commits(receipt: &WriteReceipt) -> Vec<Committed> {
    receipt
        .commits
        .iter()
        .map(|c| Committed {
            partition: c.partition,
            sequence: c.sequence,
        })
        .collect()
}

/// Writes `ops` through `writer` and records the call in `model` with what it committed.
pub async fn write_and_record(writer: &Writer, model: &mut Model, ops: &[Operation]) {
    let receipt = writer.write(ops).await.expect("write");
    model.record(ops, &commits(&receipt));
}

/// Every key × field of the workload reads as the model says, by get, get_document and
/// multiget: for each key, the document of the lowest-numbered mounted partition holding one.
pub fn assert_equals_model(reader: &Reader, keys: &[Vec<u8>], model: &[PartitionDocs]) {
    let mounted = reader.partitions().to_vec();
    let fields: Vec<&str> = FIELDS.iter().copied().chain([PRIMARY_KEY]).collect();
    let live_docs: usize = model.iter().map(|m| m.len()).sum();
    assert!(live_docs > 0, "a model with no documents checks nothing");
    let mut expected_all = Vec::new();
    for key in keys {
        let doc = Model::answer(model, &mounted, key);
        assert_eq!(
            reader.get_document(key).unwrap().as_ref(),
            doc,
            "get_document({key:?})"
        );
        for f in &fields {
            let expected = doc.and_then(|d| d.get(*f)).cloned();
            assert_eq!(reader.get(key, f).unwrap(), expected, "get({key:?}, {f})");
            expected_all.push(expected);
        }
    }
    assert_eq!(
        reader.multiget(keys, &fields).unwrap(),
        expected_all,
        "multiget, {} fields",
        fields.len()
    );
    let two: Vec<&str> = vec!["a", PRIMARY_KEY];
    let got = reader.multiget(keys, &two).unwrap();
    for (i, key) in keys.iter().enumerate() {
        let doc = Model::answer(model, &mounted, key);
        for (j, f) in two.iter().enumerate() {
            assert_eq!(got[i * 2 + j], doc.and_then(|d| d.get(*f)).cloned());
        }
    }
}
