//! A partition's tip hint: the last sequence number some writer committed, and when, left in
//! `p<part>/tip.json` so that a writer waking from idleness learns how far the log has moved
//! with one GET instead of losing a race and searching.
//!
//! A hint is knowledge shared between writers, trusted exactly as far as a writer trusts its
//! own memory of the tip: it names a number that was committed (writers publish it only after
//! their conditional create succeeded), and it is used only while it is younger than the
//! caller's `max_age` (the writer's tip TTL), during which retention cannot have removed any
//! number after it. It is never proof that the log is dense: writers that search (at start,
//! after many lost races, when their knowledge expired) still check for holes.
//!
//! The object is overwritten by every publisher (last writer wins, so it may briefly go back
//! a few numbers: a lower bound is all a reader of it relies on). It is sealed with a CRC32C
//! member like every JSON object ikv writes (`docs/FORMAT.md`), and a hint that does not
//! verify, names another store or partition, or is of an unknown format is ignored, not
//! followed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use crate::bucket;
use crate::bucket::Storage;
use crate::checksum::{open_json, seal_json};
use crate::error::{Error, Result};
use crate::layout::StoreLayout;

/// The only hint format so far.
const FORMAT: u32 = 1;

/// One partition's tip hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TipHint {
    /// A committed sequence number of the partition.
    pub seq: u64,
    /// When the publishing writer committed it (its wall clock).
    pub committed_at: SystemTime,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    format: u32,
    store: String,
    partition: u32,
    seq: u64,
    committed_at_ms: u64,
}

impl TipHint {
    /// How long ago the hint's number was committed, by this machine's clock; a time in the
    /// future (clocks disagree) counts as now.
    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.committed_at).unwrap_or_default()
    }

    /// The sealed JSON of this hint for `partition` of the store at `layout`.
    pub fn encode(&self, layout: &StoreLayout, partition: u32) -> Result<Bytes> {
        let committed_at_ms = self
            .committed_at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let wire = Wire {
            format: FORMAT,
            store: layout.store_name().to_owned(),
            partition,
            seq: self.seq,
            committed_at_ms,
        };
        let json = serde_json::to_vec(&wire).map_err(|e| Error::Corrupt {
            what: "tip hint".into(),
            reason: e.to_string(),
        })?;
        Ok(Bytes::from(seal_json(json)))
    }

    /// The hint in `bytes`, checked: its checksum must be present and match, and it must name
    /// `partition` of the store at `layout` and a committed number (at least 1).
    pub fn decode(bytes: &[u8], layout: &StoreLayout, partition: u32) -> Result<TipHint> {
        let what = layout.tip_hint(partition).to_string();
        let corrupt = |reason: String| Error::Corrupt {
            what: what.clone(),
            reason,
        };
        let body = open_json(bytes, &what)?;
        if body.len() == bytes.len() {
            return Err(corrupt("it has no checksum member".into()));
        }
        let wire: Wire =
            serde_json::from_slice(&body).map_err(|e| corrupt(format!("not a tip hint: {e}")))?;
        if wire.format != FORMAT {
            return Err(corrupt(format!(
                "format {} is not one this version reads ({FORMAT})",
                wire.format
            )));
        }
        if wire.store != layout.store_name() || wire.partition != partition {
            return Err(corrupt(format!(
                "it names partition {} of store {:?}",
                wire.partition, wire.store
            )));
        }
        if wire.seq == 0 {
            return Err(corrupt("it names sequence number 0".into()));
        }
        let committed_at = UNIX_EPOCH
            .checked_add(Duration::from_millis(wire.committed_at_ms))
            .ok_or_else(|| corrupt("its commit time is out of range".into()))?;
        Ok(TipHint {
            seq: wire.seq,
            committed_at,
        })
    }
}

/// The partition's hint, if one is there and verifies. A missing hint is `Ok(None)`; one that
/// does not verify is `Err(Corrupt)` (callers log it and go on without it).
pub async fn read(
    storage: &Storage,
    layout: &StoreLayout,
    partition: u32,
) -> Result<Option<TipHint>> {
    match bucket::read(storage, &layout.tip_hint(partition)).await? {
        None => Ok(None),
        Some(bytes) => TipHint::decode(&bytes, layout, partition).map(Some),
    }
}

/// Leaves `hint` as the partition's hint (an overwrite: no condition).
pub async fn write(
    storage: &Storage,
    layout: &StoreLayout,
    partition: u32,
    hint: &TipHint,
) -> Result<()> {
    let path = layout.tip_hint(partition);
    let body = hint.encode(layout, partition)?;
    storage
        .store
        .put(&path, body.into())
        .await
        .map(|_| ())
        .map_err(|e| Error::storage(format!("writing {path}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::path::Path;

    fn layout() -> StoreLayout {
        StoreLayout::new(&Path::from("root"), "s").unwrap()
    }

    fn hint(seq: u64) -> TipHint {
        TipHint {
            seq,
            committed_at: UNIX_EPOCH + Duration::from_millis(1_790_000_000_123),
        }
    }

    #[test]
    fn a_hint_reads_back_as_written() {
        let bytes = hint(42).encode(&layout(), 3).unwrap();
        assert_eq!(TipHint::decode(&bytes, &layout(), 3).unwrap(), hint(42));
    }

    #[test]
    fn a_hint_for_another_partition_or_store_is_refused() {
        let bytes = hint(42).encode(&layout(), 3).unwrap();
        let err = TipHint::decode(&bytes, &layout(), 4).unwrap_err();
        assert!(err.to_string().contains("names partition 3"), "{err}");
        let other = StoreLayout::new(&Path::from("root"), "t").unwrap();
        let err = TipHint::decode(&bytes, &other, 3).unwrap_err();
        assert!(err.to_string().contains("store \"s\""), "{err}");
    }

    #[test]
    fn a_hint_without_checksum_or_of_another_format_is_refused() {
        let plain = br#"{"format":1,"store":"s","partition":0,"seq":5,"committed_at_ms":1}"#;
        let err = TipHint::decode(plain, &layout(), 0).unwrap_err();
        assert!(err.to_string().contains("no checksum member"), "{err}");
        let future = seal_json(
            br#"{"format":2,"store":"s","partition":0,"seq":5,"committed_at_ms":1}"#.to_vec(),
        );
        let err = TipHint::decode(&future, &layout(), 0).unwrap_err();
        assert!(err.to_string().contains("format 2"), "{err}");
        let zero = seal_json(
            br#"{"format":1,"store":"s","partition":0,"seq":0,"committed_at_ms":1}"#.to_vec(),
        );
        let err = TipHint::decode(&zero, &layout(), 0).unwrap_err();
        assert!(err.to_string().contains("number 0"), "{err}");
    }

    #[test]
    fn an_age_in_the_future_counts_as_now() {
        let h = hint(1);
        assert_eq!(h.age(UNIX_EPOCH), Duration::ZERO);
        assert_eq!(
            h.age(h.committed_at + Duration::from_secs(7)),
            Duration::from_secs(7)
        );
    }

    /// Any change of one byte of a sealed hint, and any truncation, is refused: never
    /// followed as another number (random positions and values, seeded).
    #[test]
    fn a_damaged_hint_is_refused() {
        use rand::{Rng, SeedableRng};
        let bytes = hint(987_654).encode(&layout(), 0).unwrap().to_vec();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..5_000 {
            let mut flipped = bytes.clone();
            let i = rng.random_range(0..flipped.len());
            let byte: u8 = rng.random();
            if flipped[i] == byte {
                continue;
            }
            flipped[i] = byte;
            assert!(
                TipHint::decode(&flipped, &layout(), 0).is_err(),
                "byte {i} set to {byte} was accepted"
            );
        }
        for cut in 0..bytes.len() {
            assert!(
                TipHint::decode(&bytes[..cut], &layout(), 0).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[tokio::test]
    async fn a_written_hint_is_read_and_a_missing_one_is_none() {
        let storage = Storage::memory();
        let layout = StoreLayout::new(&storage.prefix, "s").unwrap();
        assert_eq!(read(&storage, &layout, 0).await.unwrap(), None);
        write(&storage, &layout, 0, &hint(9)).await.unwrap();
        assert_eq!(read(&storage, &layout, 0).await.unwrap(), Some(hint(9)));
    }
}
