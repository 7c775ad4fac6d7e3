//! What counts as a committed delta, for readers and writers alike.
//!
//! A delta at sequence `n` of a partition is *committed* when its bytes verify (checksum
//! trailer), decode, belong to this store and partition, and its trailer places it at `n`.
//! Readers apply exactly such deltas and stop at anything else; so a write placed after an
//! object that is not one is never seen by anybody.
//!
//! Hence the commit rule (`docs/FORMAT.md`, "The commit rule"): a writer acknowledges delta
//! `n` only when it knows delta `n − 1` is committed (or `n` is the log's first number):
//! because it committed `n − 1` itself, or because it read and checked it here. Whatever a
//! tip hint, a cached tip, a search or a lost race suggested, a writer that meets an object
//! at its predecessor's number that is not a committed delta refuses, naming the object.

use bytes::Bytes;

use crate::bucket::Storage;
use crate::delta::{Delta, DeltaMeta, decode_delta};
use crate::error::{Error, Result};
use crate::layout::StoreLayout;

/// Decodes the bytes found at delta `seq` of `partition` and checks they are a committed
/// delta there: the reader's acceptance rule. Errors are `Corrupt` and name the object.
pub fn decode_committed(
    bytes: &Bytes,
    layout: &StoreLayout,
    partition: u32,
    seq: u64,
) -> Result<Delta> {
    let path = layout.delta(partition, seq);
    let delta = decode_delta(bytes, path.as_ref())?;
    delta.check_origin(layout.store_name(), partition, seq, &path)?;
    Ok(delta)
}

/// Reads delta `seq` of `partition` and checks it is committed; `None` when no object is
/// there. An object that is there but is not a committed delta is refused: `Corrupt`,
/// naming the object and saying that nothing is written after it.
pub async fn read_committed(
    storage: &Storage,
    layout: &StoreLayout,
    partition: u32,
    seq: u64,
) -> Result<Option<DeltaMeta>> {
    let Some(bytes) = crate::bucket::read(storage, &layout.delta(partition, seq)).await? else {
        return Ok(None);
    };
    check_predecessor(&bytes, layout, partition, seq).map(Some)
}

/// [`decode_committed`] for a writer about to write after `seq`: the error says the log
/// stops there.
pub fn check_predecessor(
    bytes: &Bytes,
    layout: &StoreLayout,
    partition: u32,
    seq: u64,
) -> Result<DeltaMeta> {
    match decode_committed(bytes, layout, partition, seq) {
        Ok(delta) => Ok(delta.meta),
        Err(Error::Corrupt { what, reason }) => {
            tracing::error!(partition, seq, object = %what, %reason, "refusing to write after an object that is not a committed delta");
            Err(Error::Corrupt {
                what,
                reason: format!(
                    "{reason}; it is not a committed delta of this log, so readers stop before it and nothing is written after it"
                ),
            })
        }
        Err(other) => Err(other),
    }
}

/// The number after `seq`, or an error when the log's numbers are exhausted: sequence
/// arithmetic never wraps.
pub fn next_seq(seq: u64, partition: u32) -> Result<u64> {
    seq.checked_add(1).ok_or_else(|| Error::Corrupt {
        what: format!("log of partition {partition}"),
        reason: format!(
            "its tip is {seq}, the last sequence number there is; nothing is written after it"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::{DeltaMeta, encode_delta, place_delta};
    use crate::{DeltaOp, FieldValue};

    fn encoded(store: &str, partition: u32) -> Bytes {
        encode_delta(
            &DeltaMeta::new("b".into(), "w".into(), store.into(), partition),
            &[DeltaOp::SetField {
                key: b"k".to_vec(),
                field: "f".into(),
                value: FieldValue::Int64(1),
                expires_ms: None,
                event_us: None,
            }],
        )
        .unwrap()
    }

    fn placed(bytes: &Bytes, seq: u64) -> Bytes {
        let payload = place_delta(bytes, seq).unwrap();
        let mut out = Vec::new();
        for chunk in payload.iter() {
            out.extend_from_slice(chunk);
        }
        Bytes::from(out)
    }

    #[test]
    fn only_a_delta_of_this_store_partition_and_number_is_committed_there() {
        let layout = StoreLayout::new(&object_store::path::Path::from("r"), "s").unwrap();
        let good = placed(&encoded("s", 0), 6);
        assert!(check_predecessor(&good, &layout, 0, 6).is_ok());
        for (bytes, partition, seq, says) in [
            (placed(&encoded("s", 0), 1), 0, 6, "not delta 6"),
            (placed(&encoded("other", 0), 6), 0, 6, "store \"other\""),
            (placed(&encoded("s", 1), 6), 0, 6, "partition 1"),
            (
                good.slice(..good.len() - 3),
                0,
                6,
                "nothing is written after it",
            ),
            (
                Bytes::from_static(b"not a delta"),
                0,
                6,
                "nothing is written after it",
            ),
        ] {
            let err = check_predecessor(&bytes, &layout, partition, seq).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Corrupt, "{err}");
            let text = err.to_string();
            assert!(text.contains(says), "{text}");
            assert!(
                text.contains("00000000000000000006.arrow"),
                "names the object: {text}"
            );
        }
    }

    /// Rows a writer would refuse (reserved, empty or control-character field names; empty
    /// or oversized keys) make the delta one no reader or compactor applies.
    #[test]
    fn rows_no_writer_would_write_are_refused() {
        let layout = StoreLayout::new(&object_store::path::Path::from("r"), "s").unwrap();
        let set = |key: Vec<u8>, field: &str| DeltaOp::SetField {
            key,
            field: field.into(),
            value: FieldValue::Int64(1),
            expires_ms: None,
            event_us: None,
        };
        for (op, says) in [
            (set(b"k".to_vec(), "_ikv_key"), "_ikv_key"),
            (set(b"k".to_vec(), ""), "field name"),
            (set(b"k".to_vec(), "a\u{7}b"), "field name"),
            (set(Vec::new(), "f"), "a key of 0 bytes"),
            (set(vec![b'k'; 5000], "f"), "a key of 5000 bytes"),
            (
                DeltaOp::DeleteField {
                    key: b"k".to_vec(),
                    field: "_ikvx".into(),
                },
                "_ikvx",
            ),
        ] {
            let bytes = encode_delta(
                &DeltaMeta::new("b".into(), "w".into(), "s".into(), 0),
                &[op],
            )
            .unwrap();
            let bytes = placed(&bytes, 1);
            let err = decode_committed(&bytes, &layout, 0, 1).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Corrupt, "{err}");
            assert!(err.to_string().contains(says), "{err}");
        }
    }

    #[test]
    fn sequence_numbers_never_wrap() {
        assert_eq!(next_seq(41, 0).unwrap(), 42);
        let err = next_seq(u64::MAX, 3).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corrupt);
        assert!(err.to_string().contains("partition 3"), "{err}");
    }
}
