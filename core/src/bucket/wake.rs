//! The store's wake signal: one small object, `<store>/wake.json`, that lets a reader whose
//! partitions have all gone quiet watch the whole store with one conditional GET per check,
//! whatever the number of partitions (rfcs/0009).
//!
//! The protocol, which readers rely on to stop polling quiet partitions:
//! - A writer replaces the signal after committing delta `n` of a partition when delta
//!   `n − 1` was committed [`WAKE_AFTER`] or longer before (or is unknown, or `n` is the first):
//!   the commit ends a quiet spell. It does so before acknowledging the commit, so a caller
//!   told "committed" knows the signal is out (or that writing it failed, which is logged and
//!   counted; readers then find the delta at their next slow poll of the partition).
//! - A reader stops polling a partition directly only after a poll found nothing newer while
//!   the partition had not changed for [`QUIET_AFTER`] (> `WAKE_AFTER` + clock skew), and
//!   only when it read the signal before that poll. The first delta committed after that poll
//!   has a predecessor at least `QUIET_AFTER` old, so its writer replaces the signal, and the
//!   reader's next check sees a version it has not seen: it polls its quiet partitions then.
//!
//! The signal's content (which partition woke, at what number) is for diagnostics: several
//! writers may replace it at once, so a reader never relies on it to decide which partitions
//! to poll. Any new version, even one that does not verify, means "poll them all".

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::bucket::{self, Conditional, Storage};
use crate::checksum::{open_json, seal_json};
use crate::error::{Error, Result};
use crate::layout::StoreLayout;

/// A commit whose predecessor is at least this old ends a quiet spell: its writer replaces the
/// signal.
pub const WAKE_AFTER: Duration = Duration::from_secs(20);

/// A partition that has not changed for this long, as a reader saw it, is quiet: the reader
/// leaves it to the signal. The 10 s above [`WAKE_AFTER`] absorb clocks that disagree
/// (a predecessor's commit time is its writer's clock) and a commit's own duration.
pub const QUIET_AFTER: Duration = Duration::from_secs(30);

/// The only signal format so far.
const FORMAT: u32 = 1;

/// What a signal says: which commit ended a quiet spell, and by which writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wake {
    pub partition: u32,
    pub seq: u64,
    pub committed_at: SystemTime,
    pub writer: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    format: u32,
    store: String,
    partition: u32,
    seq: u64,
    committed_at_ms: u64,
    writer: String,
}

impl Wake {
    /// The sealed JSON of this signal for the store at `layout`.
    pub fn encode(&self, layout: &StoreLayout) -> Result<Bytes> {
        let wire = Wire {
            format: FORMAT,
            store: layout.store_name().to_owned(),
            partition: self.partition,
            seq: self.seq,
            committed_at_ms: self
                .committed_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            writer: self.writer.clone(),
        };
        let json = serde_json::to_vec(&wire).map_err(|e| Error::Corrupt {
            what: "wake signal".into(),
            reason: e.to_string(),
        })?;
        Ok(Bytes::from(seal_json(json)))
    }

    /// The signal in `bytes`, checked: sealed, of a known format, naming this store.
    pub fn decode(bytes: &[u8], layout: &StoreLayout) -> Result<Wake> {
        let what = layout.wake().to_string();
        let corrupt = |reason: String| Error::Corrupt {
            what: what.clone(),
            reason,
        };
        let body = open_json(bytes, &what)?;
        if body.len() == bytes.len() {
            return Err(corrupt("it has no checksum member".into()));
        }
        let wire: Wire = serde_json::from_slice(&body)
            .map_err(|e| corrupt(format!("not a wake signal: {e}")))?;
        if wire.format != FORMAT {
            return Err(corrupt(format!(
                "format {} is not one this version reads ({FORMAT})",
                wire.format
            )));
        }
        if wire.store != layout.store_name() {
            return Err(corrupt(format!("it names store {:?}", wire.store)));
        }
        let committed_at = UNIX_EPOCH
            .checked_add(Duration::from_millis(wire.committed_at_ms))
            .ok_or_else(|| corrupt("its commit time is out of range".into()))?;
        Ok(Wake {
            partition: wire.partition,
            seq: wire.seq,
            committed_at,
            writer: wire.writer,
        })
    }
}

/// Replaces the store's signal with `wake` (one PUT).
pub async fn write(storage: &Storage, layout: &StoreLayout, wake: &Wake) -> Result<()> {
    bucket::put(storage, &layout.wake(), wake.encode(layout)?).await
}

/// What a reader's check of the signal found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WakeCheck {
    /// The first check: nothing is known about what came before it.
    First,
    /// The version seen last time (or still none).
    Unchanged,
    /// A version not seen before (what it says, when it verifies), or the signal is gone.
    Woken(Option<Wake>),
}

/// The version of the signal a reader saw last.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Missing,
    Version { tag: Option<String>, bytes: Bytes },
}

/// A reader's watch on the signal: one conditional GET per [`WakeWatch::check`].
#[derive(Debug, Default)]
pub struct WakeWatch {
    seen: Option<Seen>,
}

impl WakeWatch {
    pub fn new() -> WakeWatch {
        WakeWatch::default()
    }

    /// Reads the signal unless it is the version seen last (the store answers 304), and says
    /// whether it changed. Stores without entity tags send the body every time; it is then
    /// compared with the last one.
    pub async fn check(&mut self, storage: &Storage, layout: &StoreLayout) -> Result<WakeCheck> {
        let tag = match &self.seen {
            Some(Seen::Version { tag, .. }) => tag.as_deref(),
            _ => None,
        };
        let found = bucket::read_if_changed(storage, &layout.wake(), tag).await?;
        let now = match found {
            Conditional::Unchanged => return Ok(WakeCheck::Unchanged),
            Conditional::Missing => Seen::Missing,
            Conditional::Found { bytes, tag } => Seen::Version { tag, bytes },
        };
        let check = match (&self.seen, &now) {
            (None, _) => WakeCheck::First,
            (Some(Seen::Missing), Seen::Missing) => WakeCheck::Unchanged,
            // Without tags, the bytes tell versions apart (writers never write the same bytes
            // twice: the number grows).
            (
                Some(Seen::Version {
                    tag: None,
                    bytes: old,
                }),
                Seen::Version { tag: None, bytes },
            ) if old == bytes => WakeCheck::Unchanged,
            (_, Seen::Missing) => WakeCheck::Woken(None),
            (_, Seen::Version { bytes, .. }) => {
                WakeCheck::Woken(match Wake::decode(bytes, layout) {
                    Ok(wake) => Some(wake),
                    Err(e) => {
                        tracing::debug!(error = %e, "a wake signal that does not verify: polling anyway");
                        None
                    }
                })
            }
        };
        self.seen = Some(now);
        Ok(check)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::requests::{Outcome, RequestKind};

    fn wake(seq: u64) -> Wake {
        Wake {
            partition: 3,
            seq,
            committed_at: UNIX_EPOCH + Duration::from_millis(1_790_000_000_123),
            writer: "w".into(),
        }
    }

    #[test]
    fn a_signal_reads_back_and_a_damaged_or_foreign_one_is_refused() {
        let layout = StoreLayout::new(&crate::bucket::Path::from("root"), "s").unwrap();
        let bytes = wake(7).encode(&layout).unwrap();
        assert_eq!(Wake::decode(&bytes, &layout).unwrap(), wake(7));
        let other = StoreLayout::new(&crate::bucket::Path::from("root"), "t").unwrap();
        let err = Wake::decode(&bytes, &other).unwrap_err();
        assert!(err.to_string().contains("names store \"s\""), "{err}");
        for cut in 0..bytes.len() {
            assert!(
                Wake::decode(&bytes[..cut], &layout).is_err(),
                "cut at {cut}"
            );
        }
        let mut flipped = bytes.to_vec();
        flipped[20] ^= 1;
        assert!(Wake::decode(&flipped, &layout).is_err());
    }

    /// Each check is one GET; an unchanged signal moves no body; every replacement is seen,
    /// even one with the same content as an older version, and so is a removal.
    #[tokio::test]
    async fn a_watch_sees_every_new_version_with_one_get_per_check() {
        for storage in [
            Storage::memory(),
            Storage::open(
                &format!(
                    "file://{}",
                    tempfile::tempdir().unwrap().keep().to_str().unwrap()
                ),
                &Default::default(),
            )
            .unwrap(),
        ] {
            let layout = StoreLayout::new(&storage.prefix, "s").unwrap();
            let mut watch = WakeWatch::new();
            let gets = |s: &Storage| s.requests().of_kind(RequestKind::Get);
            assert_eq!(
                watch.check(&storage, &layout).await.unwrap(),
                WakeCheck::First
            );
            assert_eq!(
                watch.check(&storage, &layout).await.unwrap(),
                WakeCheck::Unchanged
            );
            write(&storage, &layout, &wake(1)).await.unwrap();
            assert_eq!(
                watch.check(&storage, &layout).await.unwrap(),
                WakeCheck::Woken(Some(wake(1)))
            );
            let before = gets(&storage);
            for _ in 0..5 {
                assert_eq!(
                    watch.check(&storage, &layout).await.unwrap(),
                    WakeCheck::Unchanged
                );
            }
            assert_eq!(gets(&storage) - before, 5);
            assert_eq!(
                storage
                    .requests()
                    .get(RequestKind::Get, Outcome::NotModified),
                5
            );
            write(&storage, &layout, &wake(2)).await.unwrap();
            write(&storage, &layout, &wake(1)).await.unwrap();
            assert!(matches!(
                watch.check(&storage, &layout).await.unwrap(),
                WakeCheck::Woken(_)
            ));
            bucket::put(&storage, &layout.wake(), Bytes::from_static(b"garbage"))
                .await
                .unwrap();
            assert_eq!(
                watch.check(&storage, &layout).await.unwrap(),
                WakeCheck::Woken(None)
            );
            bucket::delete(&storage, &layout.wake()).await.unwrap();
            assert_eq!(
                watch.check(&storage, &layout).await.unwrap(),
                WakeCheck::Woken(None)
            );
            assert_eq!(
                watch.check(&storage, &layout).await.unwrap(),
                WakeCheck::Unchanged
            );
        }
    }
}
