//! Glue between the code under test and the reference model: writes that record their
//! receipts in the model, and comparisons of what readers and snapshots show with it.

use ikv_core::Operation;
use ikv_writer::{WriteReceipt, Writer};

use crate::model::{Committed, Model};

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
