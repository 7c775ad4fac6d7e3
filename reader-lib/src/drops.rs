//! Store-wide drops without touching every document.
//!
//! Every stored value carries the epoch of the delta row that wrote it. A partition keeps the
//! epoch of its last `drop_all_fields`, of the last drop of each field name, and of each prefix
//! drop. A value is live only if it was written after every drop that covers it. So a drop is
//! one small metadata write whatever the store's size; the dead values are skipped by reads
//! and their space comes back when the reader next bootstraps from a snapshot (which has the
//! drops applied). This state is persisted in the same atomic batch as the delta that changed it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropState {
    /// Epoch of the last drop_all_fields (0: none).
    pub all: u64,
    /// Field name → epoch of its last drop.
    pub fields: BTreeMap<String, u64>,
    /// Prefix → epoch of its last drop.
    pub prefixes: BTreeMap<String, u64>,
}

impl DropState {
    pub fn is_empty(&self) -> bool {
        self.all == 0 && self.fields.is_empty() && self.prefixes.is_empty()
    }

    /// The epoch after which a value of `field` (not the primary key) must have been written
    /// to be live; `primary_key` is only covered by drop_all.
    pub fn barrier(&self, field: &str, is_primary_key: bool) -> u64 {
        let mut barrier = self.all;
        if is_primary_key {
            return barrier;
        }
        if let Some(e) = self.fields.get(field) {
            barrier = barrier.max(*e);
        }
        for (prefix, e) in &self.prefixes {
            if *e > barrier && field.starts_with(prefix.as_str()) {
                barrier = *e;
            }
        }
        barrier
    }

    /// A document is live only if some field of it was written after the drop_all.
    pub fn is_live(&self, field: &str, is_primary_key: bool, epoch: u64) -> bool {
        epoch > self.barrier(field, is_primary_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_cover_what_came_before() {
        let mut d = DropState::default();
        assert!(d.is_live("a", false, 1));
        d.fields.insert("a".into(), 10);
        d.prefixes.insert("tmp".into(), 20);
        assert!(!d.is_live("a", false, 9));
        assert!(d.is_live("a", false, 11));
        assert!(!d.is_live("tmp_x", false, 15));
        assert!(d.is_live("tmp_x", false, 21));
        assert!(
            d.is_live("tmp_x", true, 1),
            "the primary key survives field drops"
        );
        d.all = 30;
        assert!(!d.is_live("id", true, 25));
        assert!(d.is_live("b", false, 31));
    }
}
