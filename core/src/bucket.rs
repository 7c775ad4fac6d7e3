//! The one module through which every crate reaches the bucket's primitives: conditional
//! creation of objects (store configurations, snapshot manifests; deltas add batch ids on top,
//! in the writer), reads, and listings of a log's or a snapshot directory's sequence numbers.
//!
//! S3 answers a conditional create (`If-None-Match: *`) of an existing key with 412, and with
//! 409 ConditionalRequestConflict when another conditional write of the key is still in
//! flight, which may yet fail: a 409 is not "exists" until a look shows the object. A request
//! that fails without an answer (timeout, reset, 5xx) may have landed: the retry compares the
//! object found with the bytes it meant to write.

use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::{Error, Result};
use crate::layout::{StoreLayout, parse_delta_seq, parse_seq};
use crate::requests::{Outcome, RequestKind};
use crate::storage::Storage;
use crate::store::SNAPSHOT_MANIFEST;

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
pub fn is_precondition_failed(e: &object_store::Error) -> bool {
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
pub fn is_permanent(e: &object_store::Error) -> bool {
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

/// Creates `path` holding `body` unless an object is there.
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
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match storage
            .store
            .put_opts(path, PutPayload::from_bytes(body.clone()), opts)
            .await
        {
            Ok(_) => return Ok(Created::Created),
            Err(
                e @ (object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. }),
            ) => {
                // A plain 412 after a clean first attempt needs no look.
                if is_precondition_failed(&e) && !ambiguous {
                    return Ok(Created::Exists);
                }
                match read(storage, path).await? {
                    Some(found) if ambiguous && found == body => return Ok(Created::Created),
                    Some(_) => return Ok(Created::Exists),
                    // 409 with the other write not (yet) landed: try again.
                    None => last_error = Some(Error::storage(format!("creating {path}"), e)),
                }
            }
            Err(e) if is_permanent(&e) => {
                return Err(Error::storage(format!("creating {path}"), e));
            }
            Err(e) => {
                ambiguous = true;
                tracing::warn!(%path, error = %e, "conditional create failed; retrying");
                last_error = Some(Error::storage(format!("creating {path}"), e));
            }
        }
    }
    Err(last_error.unwrap_or_else(|| Error::StorageMessage {
        context: format!("creating {path}"),
        message: "no attempt settled".into(),
    }))
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
