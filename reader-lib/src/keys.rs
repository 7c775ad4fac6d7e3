//! Local key and value encodings.
//!
//! Key of one field of one document: `escape(primary key) ++ 0x00 0x00 ++ field name`, where
//! `escape` writes every byte as is except 0x00, written 0x00 0xFF. The encoding preserves the
//! byte order of primary keys, so snapshot rows (sorted by key) ingest in ascending order, and
//! one document's fields are one contiguous range (its prefix).
//!
//! Value: `[type code: u8][partition: u16 LE][epoch: u64 LE][encoded value]`. The epoch orders
//! the value against store-wide drops of its partition (see `drops.rs`).

use ikv_core::{Error, FieldType, FieldValue, Result};

pub const VALUE_HEADER: usize = 1 + 2 + 8;

/// The prefix all fields of a document share.
pub fn doc_prefix(primary_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(primary_key.len() + 2);
    escape_into(primary_key, &mut out);
    out
}

fn escape_into(primary_key: &[u8], out: &mut Vec<u8>) {
    for &b in primary_key {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

/// Key of one field of a document.
pub fn field_key(primary_key: &[u8], field: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(primary_key.len() + 2 + field.len());
    escape_into(primary_key, &mut out);
    out.extend_from_slice(field.as_bytes());
    out
}

/// Appends a field name to a document prefix.
pub fn with_field(prefix: &[u8], field: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + field.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(field.as_bytes());
    out
}

/// The field-name part of a key whose document prefix is `prefix_len` bytes long.
pub fn field_of(key: &[u8], prefix_len: usize) -> Option<&str> {
    std::str::from_utf8(key.get(prefix_len..)?).ok()
}

/// Splits a key into (primary key, field name).
pub fn split_key(key: &[u8]) -> Option<(Vec<u8>, &str)> {
    let mut pk = Vec::with_capacity(key.len());
    let mut i = 0;
    while i < key.len() {
        let b = key[i];
        if b == 0 {
            match key.get(i + 1) {
                Some(0xFF) => {
                    pk.push(0);
                    i += 2;
                    continue;
                }
                Some(0) => return Some((pk, std::str::from_utf8(&key[i + 2..]).ok()?)),
                _ => return None,
            }
        }
        pk.push(b);
        i += 1;
    }
    None
}

pub fn encode_value(value: &FieldValue, partition: u32, epoch: u64) -> Vec<u8> {
    let payload = value.encode();
    let mut out = Vec::with_capacity(VALUE_HEADER + payload.len());
    out.push(value.field_type().code());
    out.extend_from_slice(&(partition as u16).to_le_bytes());
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// A stored value, borrowed from the local store's buffer.
#[derive(Debug, Clone, Copy)]
pub struct StoredValue<'a> {
    pub field_type: FieldType,
    pub partition: u32,
    pub epoch: u64,
    pub payload: &'a [u8],
}

pub fn decode_value(bytes: &[u8]) -> Result<StoredValue<'_>> {
    let corrupt = || Error::Corrupt {
        what: "local value".into(),
        reason: "truncated or unknown type".into(),
    };
    if bytes.len() < VALUE_HEADER {
        return Err(corrupt());
    }
    let field_type = FieldType::from_code(bytes[0]).ok_or_else(corrupt)?;
    let partition = u16::from_le_bytes([bytes[1], bytes[2]]) as u32;
    let epoch = u64::from_le_bytes(bytes[3..11].try_into().map_err(|_| corrupt())?);
    Ok(StoredValue {
        field_type,
        partition,
        epoch,
        payload: &bytes[VALUE_HEADER..],
    })
}

/// Epoch of row `row` of delta `seq`: later rows and later deltas get larger epochs.
pub fn epoch(seq: u64, row: usize) -> u64 {
    (seq << 24) | (row as u64 & 0xFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_preserve_primary_key_order() {
        let mut pks: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"a".to_vec(),
            b"a\0".to_vec(),
            b"a\0b".to_vec(),
            b"a\x01".to_vec(),
            b"ab".to_vec(),
            b"b".to_vec(),
            vec![0],
            vec![0, 0],
            vec![0xFF],
            vec![0, 0xFF],
        ];
        pks.sort();
        let keys: Vec<Vec<u8>> = pks.iter().map(|pk| field_key(pk, "zz")).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "escaped keys sort like their primary keys");
        for pk in &pks {
            let key = field_key(pk, "name");
            assert_eq!(split_key(&key), Some((pk.clone(), "name")));
            assert!(key.starts_with(&doc_prefix(pk)));
            assert_eq!(field_of(&key, doc_prefix(pk).len()), Some("name"));
        }
        // One document's prefix never covers another document's keys.
        assert!(!field_key(b"ab", "x").starts_with(&doc_prefix(b"a")));
    }

    #[test]
    fn values_round_trip() {
        let v = FieldValue::Float64(2.5);
        let bytes = encode_value(&v, 513, epoch(7, 3));
        let s = decode_value(&bytes).unwrap();
        assert_eq!(
            (s.field_type, s.partition, s.epoch),
            (FieldType::Float64, 513, epoch(7, 3))
        );
        assert_eq!(FieldValue::decode(s.field_type, s.payload).unwrap(), v);
        assert!(decode_value(&[1, 2]).is_err());
        assert!(epoch(2, 0) > epoch(1, 0xFF_FFFF));
    }
}
