//! Glue between the code under test and the reference model: writes that record their
//! receipts in the model, and comparisons of what readers and snapshots show with it.

use ikv_core::{FieldValue, Operation};
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
    // A scan yields every live document once, with the same values as the lookups.
    // Every key of the mounted partitions, not only the `keys` looked up.
    let every_key: std::collections::BTreeSet<&Vec<u8>> = mounted
        .iter()
        .flat_map(|p| model[*p as usize].keys())
        .collect();
    let mut expected_scan: Vec<(Vec<u8>, Vec<Option<FieldValue>>)> = every_key
        .into_iter()
        .filter_map(|key| {
            let doc = Model::answer(model, &mounted, key)?;
            Some((
                key.clone(),
                fields.iter().map(|f| doc.get(*f).cloned()).collect(),
            ))
        })
        .collect();
    let mut scanned: Vec<_> = reader.scan(&fields).collect::<Result<_, _>>().unwrap();
    expected_scan.sort_by(|a, b| a.0.cmp(&b.0));
    scanned.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some((got, want)) = scanned
        .iter()
        .map(Some)
        .chain(std::iter::repeat(None))
        .zip(
            expected_scan
                .iter()
                .map(Some)
                .chain(std::iter::repeat(None)),
        )
        .take(scanned.len().max(expected_scan.len()))
        .find(|(g, w)| g != w)
    {
        panic!(
            "scan: {} documents, the model {}; first difference: scanned {got:?}, model {want:?}",
            scanned.len(),
            expected_scan.len()
        );
    }
    let two: Vec<&str> = vec!["a", PRIMARY_KEY];
    let got = reader.multiget(keys, &two).unwrap();
    for (i, key) in keys.iter().enumerate() {
        let doc = Model::answer(model, &mounted, key);
        for (j, f) in two.iter().enumerate() {
            assert_eq!(got[i * 2 + j], doc.and_then(|d| d.get(*f)).cloned());
        }
    }
}
