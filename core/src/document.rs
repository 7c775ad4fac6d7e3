//! A document: named, typed fields.

use std::collections::BTreeMap;

use crate::value::FieldValue;

/// A set of named field values. Putting a field twice keeps the last value, as the builder
/// of the original SDK does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Document {
    fields: BTreeMap<String, FieldValue>,
}

impl Document {
    pub fn new() -> Document {
        Document::default()
    }

    /// Builder-style [`Document::put`].
    pub fn with(mut self, name: impl Into<String>, value: FieldValue) -> Document {
        self.put(name, value);
        self
    }

    pub fn put(&mut self, name: impl Into<String>, value: FieldValue) {
        self.fields.insert(name.into(), value);
    }

    pub fn get(&self, name: &str) -> Option<&FieldValue> {
        self.fields.get(name)
    }

    /// Fields in name order.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &FieldValue)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Sum of field-name and encoded-value bytes: what the document limit counts.
    pub fn size_bytes(&self) -> usize {
        self.fields
            .iter()
            .map(|(k, v)| k.len() + v.encoded_len())
            .sum()
    }
}

impl<S: Into<String>> FromIterator<(S, FieldValue)> for Document {
    fn from_iter<I: IntoIterator<Item = (S, FieldValue)>>(iter: I) -> Self {
        let mut doc = Document::new();
        for (k, v) in iter {
            doc.put(k, v);
        }
        doc
    }
}
