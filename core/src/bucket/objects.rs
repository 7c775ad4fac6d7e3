//! The bucket's primitives: conditional creation of objects (store configurations, snapshot
//! manifests; the delta commit loop recognises its own deltas by batch id on top of
//! [`try_create`]), reads (whole, ranged, many local files), plain puts and deletes, and
//! listings of a log's or a snapshot directory's sequence numbers.
//!
//! S3 answers a conditional create (`If-None-Match: *`) of an existing key with 412, and with
//! 409 ConditionalRequestConflict when another conditional write of the key is still in
//! flight, which may yet fail: a 409 is not "exists" until a look shows the object. A request
//! that fails without an answer (timeout, reset, 5xx) may have landed: the retry compares the
//! object found with the bytes it meant to write.

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::bucket::SNAPSHOT_MANIFEST;
use crate::bucket::Storage;
use crate::bucket::requests::{Outcome, RequestKind};
use crate::error::{Error, Result};
use crate::layout::{StoreLayout, parse_delta_seq, parse_seq};

/// What a conditional create did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// Our bytes are there now (written by this call, possibly by an attempt whose answer
    /// was lost).
    Created,
    /// Another writer's object was there.
    Exists,
}

/// Attempts before giving up on answers that settle nothing (409s, timeouts).
const ATTEMPTS: u32 = 6;

/// Whether a failed conditional create was a plain "precondition failed" (412: the object
/// exists), as opposed to a conflict (409) whose winner is not known yet.
fn is_precondition_failed(e: &object_store::Error) -> bool {
    match e {
        object_store::Error::Precondition { .. } => true,
        object_store::Error::AlreadyExists { source, .. } => source
            .downcast_ref::<object_store::Error>()
            .is_some_and(|inner| {
                matches!(
                    inner,
                    object_store::Error::Precondition { .. }
                        | object_store::Error::NotModified { .. }
                )
            }),
        _ => false,
    }
}

/// Whether an error is final: retrying cannot help and the request did not land.
fn is_permanent(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
            | object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented { .. }
            | object_store::Error::InvalidPath { .. }
            | object_store::Error::UnknownConfigurationKey { .. }
            | object_store::Error::NotFound { .. }
    )
}

/// Whether an object is at `path` (one HEAD).
pub async fn exists(storage: &Storage, path: &Path) -> Result<bool> {
    match storage.store.head(path).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(Error::storage(format!("checking {path}"), e)),
    }
}

/// The object at `path`, or `None`.
pub async fn read(storage: &Storage, path: &Path) -> Result<Option<Bytes>> {
    match storage.store.get(path).await {
        Ok(got) => {
            Ok(Some(got.bytes().await.map_err(|e| {
                Error::storage(format!("reading {path}"), e)
            })?))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(Error::storage(format!("reading {path}"), e)),
    }
}

/// What a conditional read ([`read_if_changed`]) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conditional {
    /// The object is as the caller last saw it (a 304: no body moved).
    Unchanged,
    /// No object is there.
    Missing,
    /// The object's bytes and the tag that names this version of it (when the store has one).
    Found { bytes: Bytes, tag: Option<String> },
}

/// The object at `path` unless its version is still `seen` (an entity tag a previous read
/// returned): one GET either way, with no body when nothing changed.
pub async fn read_if_changed(
    storage: &Storage,
    path: &Path,
    seen: Option<&str>,
) -> Result<Conditional> {
    let options = object_store::GetOptions {
        if_none_match: seen.map(str::to_owned),
        ..Default::default()
    };
    match storage.store.get_opts(path, options).await {
        Ok(got) => {
            let tag = got.meta.e_tag.clone();
            let bytes = got
                .bytes()
                .await
                .map_err(|e| Error::storage(format!("reading {path}"), e))?;
            Ok(Conditional::Found { bytes, tag })
        }
        Err(object_store::Error::NotModified { .. }) => Ok(Conditional::Unchanged),
        Err(object_store::Error::NotFound { .. }) => Ok(Conditional::Missing),
        Err(e) => Err(Error::storage(format!("reading {path}"), e)),
    }
}

/// Reads an immutable object whose size a listing gave: one ranged GET (on a local directory,
/// one blocking-pool hop rather than two). A different size shows as an error or as bytes
/// that fail their checksum, never as a silent short read of an intact object.
pub async fn read_listed(storage: &Storage, path: &Path, size: u64) -> Result<Option<Bytes>> {
    if size == 0 {
        return read(storage, path).await;
    }
    match storage.store.get_range(path, 0..size).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(Error::storage(format!("reading {path}"), e)),
    }
}

/// [`read`] for many objects of a local directory root ([`Storage::local_files`]), in order,
/// in the calling thread, as plain file reads: for a blocking task. `None` when the root is
/// not one.
pub fn read_local(storage: &Storage, paths: &[Path]) -> Option<Vec<Result<Option<Bytes>>>> {
    let local = storage.local_files()?;
    Some(
        paths
            .iter()
            .map(|path| {
                let file = local
                    .path_to_filesystem(path)
                    .map_err(|e| Error::storage(format!("reading {path}"), e))?;
                // Counted as the GET it stands for.
                let read = std::fs::read(&file);
                storage.requests().record(
                    RequestKind::Get,
                    match &read {
                        Ok(_) => Outcome::Ok,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Outcome::NotFound,
                        Err(_) => Outcome::Error,
                    },
                );
                if let Ok(bytes) = &read {
                    storage
                        .requests()
                        .add_bytes(RequestKind::Get, bytes.len() as u64);
                }
                match read {
                    Ok(bytes) => Ok(Some(Bytes::from(bytes))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    // As object_store reports it, so that a permission error is "no access".
                    Err(e) => Err(Error::storage(
                        format!("reading {path}"),
                        object_store::Error::Generic {
                            store: "LocalFileSystem",
                            source: Box::new(e),
                        },
                    )),
                }
            })
            .collect(),
    )
}

/// What one conditional create (`If-None-Match: *`) came to; a final failure (no access, a
/// bad path) is the `Err` beside it.
pub enum CreateAnswer {
    /// The object is ours now.
    Created,
    /// The key is taken (412, `in_flight` false), or another conditional write of it is in
    /// flight (409, `in_flight` true: not "exists" until a look shows the object).
    Taken { in_flight: bool, error: Error },
    /// No answer (timeout, reset, 5xx): the object may or may not have landed.
    NoAnswer(Error),
}

/// One conditional create of `path` (one PUT), without retries: the step both the delta
/// commit loop and [`create_if_absent`] repeat, each with its own way of recognising an
/// object found there as its own.
pub async fn try_create(
    storage: &Storage,
    path: &Path,
    body: impl Into<PutPayload>,
) -> Result<CreateAnswer> {
    let opts = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    match storage.store.put_opts(path, body.into(), opts).await {
        Ok(_) => Ok(CreateAnswer::Created),
        Err(
            e @ (object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. }),
        ) => {
            let in_flight = !is_precondition_failed(&e);
            Ok(CreateAnswer::Taken {
                in_flight,
                error: Error::storage(format!("creating {path}"), e),
            })
        }
        Err(e) if is_permanent(&e) => Err(Error::storage(format!("creating {path}"), e)),
        Err(e) => Ok(CreateAnswer::NoAnswer(Error::storage(
            format!("creating {path}"),
            e,
        ))),
    }
}

/// Creates `path` holding `body` unless an object is there; an object found after an
/// ambiguous attempt is ours when its bytes are `body`.
pub async fn create_if_absent(storage: &Storage, path: &Path, body: Bytes) -> Result<Created> {
    let mut ambiguous = false;
    let mut last_error = None;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            storage
                .clock()
                .sleep(Duration::from_millis(20 << attempt.min(5)))
                .await;
        }
        match try_create(storage, path, body.clone()).await? {
            CreateAnswer::Created => return Ok(Created::Created),
            CreateAnswer::Taken { in_flight, error } => {
                // A plain 412 after a clean first attempt needs no look.
                if !in_flight && !ambiguous {
                    return Ok(Created::Exists);
                }
                match read(storage, path).await? {
                    Some(found) if ambiguous && found == body => return Ok(Created::Created),
                    Some(_) => return Ok(Created::Exists),
                    // 409 with the other write not (yet) landed: try again.
                    None => last_error = Some(error),
                }
            }
            CreateAnswer::NoAnswer(e) => {
                ambiguous = true;
                tracing::warn!(%path, error = %e, "conditional create failed; retrying");
                last_error = Some(e);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| Error::StorageMessage {
        context: format!("creating {path}"),
        message: "no attempt settled".into(),
    }))
}

/// Writes `body` at `path`, replacing what is there: only for objects that may be replaced
/// (tip hints, import intents), never for deltas, manifests or configurations.
pub async fn put(storage: &Storage, path: &Path, body: impl Into<PutPayload>) -> Result<()> {
    storage
        .store
        .put(path, body.into())
        .await
        .map(|_| ())
        .map_err(|e| Error::storage(format!("writing {path}"), e))
}

/// Deletes `path`; an object already gone counts as deleted.
pub async fn delete(storage: &Storage, path: &Path) -> Result<()> {
    match storage.store.delete(path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(Error::storage(format!("deleting {path}"), e)),
    }
}

/// The size of the object at `path` (one HEAD).
pub async fn size(storage: &Storage, path: &Path) -> Result<u64> {
    storage
        .store
        .head(path)
        .await
        .map(|meta| meta.size)
        .map_err(|e| Error::storage(format!("checking {path}"), e))
}

/// Bytes `range` of the object at `path` (one ranged GET).
pub async fn read_range(storage: &Storage, path: &Path, range: Range<u64>) -> Result<Bytes> {
    storage
        .store
        .get_range(path, range)
        .await
        .map_err(|e| Error::storage(format!("reading {path}"), e))
}

/// Several ranges of the object at `path`, in order (the store coalesces nearby ones).
pub async fn read_ranges(
    storage: &Storage,
    path: &Path,
    ranges: &[Range<u64>],
) -> Result<Vec<Bytes>> {
    storage
        .store
        .get_ranges(path, ranges)
        .await
        .map_err(|e| Error::storage(format!("reading {path}"), e))
}

/// The last `n` bytes of the object at `path` and its size (one suffix GET).
pub async fn read_suffix(storage: &Storage, path: &Path, n: u64) -> Result<(Bytes, u64)> {
    let got = storage
        .store
        .get_opts(
            path,
            object_store::GetOptions {
                range: Some(object_store::GetRange::Suffix(n)),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| Error::storage(format!("reading {path}"), e))?;
    let size = got.meta.size;
    let bytes = got
        .bytes()
        .await
        .map_err(|e| Error::storage(format!("reading {path}"), e))?;
    Ok((bytes, size))
}

/// A multipart upload to `path` (parts are sent as they fill; nothing is visible until it
/// completes).
pub fn upload(storage: &Storage, path: Path) -> BufWriter {
    BufWriter::new(storage.store.clone(), path)
}

/// Every object under `dir` (one LIST, paged by the store as it needs).
pub async fn list(storage: &Storage, dir: &Path) -> Result<Vec<object_store::ObjectMeta>> {
    futures::TryStreamExt::try_collect(storage.store.list(Some(dir)))
        .await
        .map_err(|e| Error::storage(format!("listing {dir}"), e))
}

/// The deltas present in a partition's log with their metadata, ascending by sequence.
pub async fn list_deltas(
    storage: &Storage,
    layout: &StoreLayout,
    partition: u32,
) -> Result<Vec<(u64, object_store::ObjectMeta)>> {
    let mut deltas: Vec<(u64, object_store::ObjectMeta)> =
        list(storage, &layout.deltas_dir(partition))
            .await?
            .into_iter()
            .filter_map(|m| parse_delta_seq(&m.location).map(|s| (s, m)))
            .collect();
    deltas.sort_by_key(|(s, _)| *s);
    Ok(deltas)
}

/// Sequence numbers of the deltas present in a partition's log, ascending.
pub async fn list_delta_seqs(
    storage: &Storage,
    layout: &StoreLayout,
    partition: u32,
) -> Result<Vec<u64>> {
    Ok(list_deltas(storage, layout, partition)
        .await?
        .into_iter()
        .map(|(seq, _)| seq)
        .collect())
}

/// Sequence numbers covered by committed snapshots (those whose manifest exists), ascending.
pub async fn list_snapshot_seqs(
    storage: &Storage,
    layout: &StoreLayout,
    partition: u32,
) -> Result<Vec<u64>> {
    let metas = list(storage, &layout.snapshots_dir(partition)).await?;
    let mut seqs: Vec<u64> = metas
        .iter()
        .filter(|m| m.location.filename() == Some(SNAPSHOT_MANIFEST))
        .filter_map(|m| {
            let parts: Vec<_> = m.location.parts().collect();
            let seq_dir = parts.get(parts.len().checked_sub(2)?)?;
            parse_seq(seq_dir.as_ref())
        })
        .collect();
    seqs.sort_unstable();
    Ok(seqs)
}
