//! The reference semantics of a partition log: applying delta rows, in order, to documents
//! held in memory. Small and obviously right on purpose; snapshots and readers are tested
//! against it.

use std::collections::{BTreeMap, HashMap};

use crate::delta::DeltaOp;
use crate::value::FieldValue;

/// Documents by primary-key bytes, each a map of field name to value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreModel {
    primary_key_field: String,
    pub documents: HashMap<Vec<u8>, BTreeMap<String, FieldValue>>,
}

impl StoreModel {
    pub fn new(primary_key_field: &str) -> StoreModel {
        StoreModel {
            primary_key_field: primary_key_field.to_owned(),
            documents: HashMap::new(),
        }
    }

    /// Applies one delta row.
    pub fn apply(&mut self, op: &DeltaOp) {
        match op {
            DeltaOp::SetField { key, field, value } => {
                self.documents
                    .entry(key.clone())
                    .or_default()
                    .insert(field.clone(), value.clone());
            }
            DeltaOp::DeleteField { key, field } => {
                if field != &self.primary_key_field
                    && let Some(doc) = self.documents.get_mut(key)
                {
                    doc.remove(field);
                }
            }
            DeltaOp::DeleteDocument { key } => {
                self.documents.remove(key);
            }
            DeltaOp::DropField { field } => {
                if field != &self.primary_key_field {
                    for doc in self.documents.values_mut() {
                        doc.remove(field);
                    }
                }
            }
            DeltaOp::DropFieldPrefix { prefix } => {
                let pk = &self.primary_key_field;
                for doc in self.documents.values_mut() {
                    doc.retain(|name, _| name == pk || !name.starts_with(prefix.as_str()));
                }
            }
            DeltaOp::DropAll => self.documents.clear(),
        }
    }

    pub fn get(&self, key: &[u8], field: &str) -> Option<&FieldValue> {
        self.documents.get(key)?.get(field)
    }
}
