//! Local keys and epochs.
//!
//! A document's key is `escape(primary key) ++ 0x00 0x00`, where `escape` writes every byte
//! as is except 0x00, written 0x00 0xFF. The encoding preserves the byte order of primary
//! keys, so snapshot rows (sorted by key) ingest in ascending order.

/// The local key of a document.
pub fn doc_key(primary_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(primary_key.len() + 2);
    for &b in primary_key {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 0]);
    out
}

/// The primary key of a local document key.
pub fn split_doc_key(key: &[u8]) -> Option<Vec<u8>> {
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
                Some(0) if i + 2 == key.len() => return Some(pk),
                _ => return None,
            }
        }
        pk.push(b);
        i += 1;
    }
    None
}

/// Epoch of row `row` of delta `seq`: later rows and later deltas get larger epochs.
pub fn epoch(seq: u64, row: usize) -> u64 {
    (seq << 24) | (row as u64 & 0xFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_preserve_primary_key_order_and_round_trip() {
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
        let keys: Vec<Vec<u8>> = pks.iter().map(|pk| doc_key(pk)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "escaped keys sort like their primary keys");
        for pk in &pks {
            assert_eq!(split_doc_key(&doc_key(pk)).as_ref(), Some(pk));
        }
        assert_eq!(split_doc_key(b"a\0\0x"), None);
        assert!(epoch(2, 0) > epoch(1, 0xFF_FFFF));
    }
}
