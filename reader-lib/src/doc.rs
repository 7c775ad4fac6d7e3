//! A document as stored locally: one entry per document, all its fields in one value.
//!
//! Value: `[version 1: u8][partition: u16 LE][field count: u16 LE]`, then per field, sorted
//! by name: `[name length: u16 LE][name][type: u8][epoch: u64 LE][length: u32 LE][value]`.
//! The epoch of each field orders it against store-wide drops of its partition (`drops.rs`).
//! One entry per document makes a multi-field read one lookup and a document delete one
//! delete.

use std::collections::BTreeMap;

use ikv_core::{Error, FieldType, FieldValue, Result};

use crate::drops::DropState;

const VERSION: u8 = 1;

fn corrupt(reason: &str) -> Error {
    Error::Corrupt {
        what: "local document".into(),
        reason: reason.into(),
    }
}

/// One field as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredField {
    pub field_type: FieldType,
    pub epoch: u64,
    pub payload: Vec<u8>,
}

/// A document being edited by a delta, or built by a bootstrap.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OwnedDoc {
    pub partition: u32,
    pub fields: BTreeMap<String, StoredField>,
}

impl OwnedDoc {
    pub fn new(partition: u32) -> OwnedDoc {
        OwnedDoc {
            partition,
            fields: BTreeMap::new(),
        }
    }

    pub fn set(&mut self, name: &str, value: &FieldValue, epoch: u64) {
        self.fields.insert(
            name.to_owned(),
            StoredField {
                field_type: value.field_type(),
                epoch,
                payload: value.encode(),
            },
        );
    }

    pub fn encode(&self) -> Vec<u8> {
        let size: usize = self
            .fields
            .iter()
            .map(|(n, f)| 2 + n.len() + 1 + 8 + 4 + f.payload.len())
            .sum();
        let mut out = Vec::with_capacity(5 + size);
        out.push(VERSION);
        out.extend_from_slice(&(self.partition as u16).to_le_bytes());
        out.extend_from_slice(&(self.fields.len() as u16).to_le_bytes());
        for (name, f) in &self.fields {
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.push(f.field_type.code());
            out.extend_from_slice(&f.epoch.to_le_bytes());
            out.extend_from_slice(&(f.payload.len() as u32).to_le_bytes());
            out.extend_from_slice(&f.payload);
        }
        out
    }

    /// Decodes a stored document, keeping only the fields still live under `drops`.
    pub fn decode_live(bytes: &[u8], drops: &[DropState], primary_key: &str) -> Result<OwnedDoc> {
        let view = DocView::parse(bytes)?;
        let drop = drops.get(view.partition as usize);
        let mut doc = OwnedDoc::new(view.partition);
        for f in view.fields() {
            let f = f?;
            if drop.is_none_or(|d| d.is_live(f.name, f.name == primary_key, f.epoch)) {
                doc.fields.insert(
                    f.name.to_owned(),
                    StoredField {
                        field_type: f.field_type,
                        epoch: f.epoch,
                        payload: f.payload.to_vec(),
                    },
                );
            }
        }
        Ok(doc)
    }
}

/// A borrowed view of a stored document.
pub struct DocView<'a> {
    pub partition: u32,
    count: u16,
    body: &'a [u8],
}

/// One field of a [`DocView`].
pub struct FieldRef<'a> {
    pub name: &'a str,
    pub field_type: FieldType,
    pub epoch: u64,
    pub payload: &'a [u8],
}

impl<'a> FieldRef<'a> {
    pub fn value(&self) -> Result<FieldValue> {
        FieldValue::decode(self.field_type, self.payload)
    }
}

impl<'a> DocView<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<DocView<'a>> {
        if bytes.len() < 5 || bytes[0] != VERSION {
            return Err(corrupt("bad header"));
        }
        Ok(DocView {
            partition: u16::from_le_bytes([bytes[1], bytes[2]]) as u32,
            count: u16::from_le_bytes([bytes[3], bytes[4]]),
            body: &bytes[5..],
        })
    }

    pub fn field_count(&self) -> u16 {
        self.count
    }

    pub fn fields(&self) -> FieldIter<'a> {
        FieldIter {
            rest: self.body,
            left: self.count,
        }
    }

    /// The field named `name`, if stored (live or not).
    pub fn find(&self, name: &str) -> Result<Option<FieldRef<'a>>> {
        for f in self.fields() {
            let f = f?;
            if f.name == name {
                return Ok(Some(f));
            }
        }
        Ok(None)
    }
}

pub struct FieldIter<'a> {
    rest: &'a [u8],
    left: u16,
}

impl<'a> FieldIter<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.rest.len() < n {
            return Err(corrupt("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn next_field(&mut self) -> Result<FieldRef<'a>> {
        let name_len = u16::from_le_bytes(
            self.take(2)?
                .try_into()
                .map_err(|_| corrupt("name length"))?,
        ) as usize;
        let name = std::str::from_utf8(self.take(name_len)?)
            .map_err(|_| corrupt("field name is not UTF-8"))?;
        let field_type =
            FieldType::from_code(self.take(1)?[0]).ok_or_else(|| corrupt("unknown type"))?;
        let epoch = u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| corrupt("epoch"))?);
        let len =
            u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| corrupt("length"))?) as usize;
        let payload = self.take(len)?;
        Ok(FieldRef {
            name,
            field_type,
            epoch,
            payload,
        })
    }
}

impl<'a> Iterator for FieldIter<'a> {
    type Item = Result<FieldRef<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let f = self.next_field();
        if f.is_err() {
            self.left = 0;
        }
        Some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_round_trip_and_drops_filter() {
        let mut doc = OwnedDoc::new(3);
        doc.set("id", &FieldValue::String("a".into()), 5);
        doc.set("n", &FieldValue::Int64(-7), 6);
        doc.set("tmp_x", &FieldValue::Bytes(vec![0, 1]), 7);
        let bytes = doc.encode();
        let view = DocView::parse(&bytes).unwrap();
        assert_eq!(view.partition, 3);
        assert_eq!(
            view.find("n").unwrap().unwrap().value().unwrap(),
            FieldValue::Int64(-7)
        );
        assert!(view.find("missing").unwrap().is_none());
        assert_eq!(OwnedDoc::decode_live(&bytes, &[], "id").unwrap(), doc);
        let mut drops = vec![DropState::default(); 4];
        drops[3].prefixes.insert("tmp".into(), 10);
        let live = OwnedDoc::decode_live(&bytes, &drops, "id").unwrap();
        assert_eq!(live.fields.keys().collect::<Vec<_>>(), vec!["id", "n"]);
        assert!(DocView::parse(&bytes[..3]).is_err());
        let truncated = &bytes[..bytes.len() - 1];
        assert!(
            DocView::parse(truncated)
                .unwrap()
                .fields()
                .any(|f| f.is_err())
        );
    }
}
