//! The expected state of a partition at a sequence number, by replaying its log into the
//! reference model.

use std::collections::BTreeMap;

use ikv_core::delta::decode_delta;
use ikv_core::model::StoreModel;
use ikv_core::store::read_delta;
use ikv_core::{FieldValue, Storage, StoreLayout};

/// Documents of `partition` after deltas 1..=upto, sorted by key.
pub async fn expected_state(
    storage: &Storage,
    layout: &StoreLayout,
    primary_key: &str,
    partition: u32,
    upto: u64,
) -> BTreeMap<Vec<u8>, BTreeMap<String, FieldValue>> {
    let mut model = StoreModel::new(primary_key);
    for seq in 1..=upto {
        let bytes = read_delta(storage, layout, partition, seq)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("delta {seq} of partition {partition} is missing"));
        for op in &decode_delta(&bytes).unwrap().ops {
            model.apply(op);
        }
    }
    model.documents.into_iter().collect()
}
