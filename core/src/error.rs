//! Errors shared by every ikv crate: one small public [`ErrorKind`] over a richer enum.

use std::sync::Arc;

/// What kind of failure an [`Error`] is, for callers that branch on it (HTTP status codes,
/// Python exception classes). Stable and small on purpose; the message carries the detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller passed something invalid (document, name, option, URL). Nothing was written.
    InvalidInput,
    /// The named store does not exist under the storage root.
    StoreNotFound,
    /// A store with that name already exists; it was not touched.
    StoreExists,
    /// The object store failed or could not be reached. May be transient: retry later.
    Storage,
    /// The object store refused the credentials (S3's 401/403, a local directory's
    /// permissions). Not transient: fix the role, policy or permissions.
    NoAccess,
    /// Data in the bucket does not parse as the format says it should, or fails its
    /// checksum. Never served; retrying reads the same bytes.
    Corrupt,
    /// The component was shut down.
    Closed,
    /// A typed read asked for a type the field was not written with.
    TypeMismatch,
    /// The key belongs to a partition this reader does not mount.
    NotMounted,
    /// The reader's local store (mount directory) failed.
    Local,
    /// The mount directory is in use by a reader that serves another storage root or other
    /// partitions; nothing of it was changed.
    MountInUse,
    /// The reader fell behind the retention window and cannot catch up from deltas.
    FellBehind,
}

/// An ikv error. Match on [`Error::kind`]; the `Display` text names what is wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid store name {name:?}: {reason}")]
    InvalidStoreName { name: String, reason: String },
    #[error("invalid store configuration: {0}")]
    InvalidConfig(String),
    #[error("invalid document: {0}")]
    InvalidDocument(String),
    #[error("invalid operation: {0}")]
    InvalidOperation(String),
    #[error("invalid import: {0}")]
    InvalidImport(String),
    #[error("invalid storage URL {url:?}: {reason}")]
    InvalidStorageUrl { url: String, reason: String },
    #[error("invalid storage option {key:?}: {reason}")]
    InvalidStorageOption { key: String, reason: String },
    #[error("store {0:?} does not exist")]
    StoreNotFound(String),
    #[error("store {0:?} already exists")]
    StoreExists(String),
    #[error("store {store:?} has no checkpoint {name:?}")]
    CheckpointNotFound { store: String, name: String },
    #[error("store {store:?} already has a checkpoint {name:?}")]
    CheckpointExists { store: String, name: String },
    #[error("storage error while {context}: {source}")]
    Storage {
        context: String,
        #[source]
        source: object_store::Error,
    },
    #[error("storage error while {context}: {message}")]
    StorageMessage { context: String, message: String },
    #[error("corrupt {what}: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("{0} is shut down")]
    Closed(&'static str),
    #[error("field {field:?} holds a {stored} value, not {requested}")]
    TypeMismatch {
        field: String,
        stored: crate::FieldType,
        requested: &'static str,
    },
    #[error("field {field:?} holds bytes that are not valid UTF-8; read it as bytes")]
    NotUtf8 { field: String },
    #[error(
        "the key belongs to partition {partition}, which this reader does not mount (it mounts {mounted:?})"
    )]
    NotMounted { partition: u32, mounted: Vec<u32> },
    #[error(
        "mount directory {path} is in use by a reader that serves {serves}, not {asked}; open this store with another mount directory, or ask for what it serves"
    )]
    MountInUse {
        path: String,
        serves: String,
        asked: String,
    },
    #[error("local store at {path}: {message}")]
    Local { path: String, message: String },
    #[error(
        "partition {partition} fell behind retention: delta {missing} is gone and newer data exists"
    )]
    FellBehind { partition: u32, missing: u64 },
    #[error("{0}")]
    Shared(#[source] Arc<Error>),
}

impl Error {
    /// The public kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidStoreName { .. }
            | Error::InvalidConfig(_)
            | Error::InvalidDocument(_)
            | Error::InvalidOperation(_)
            | Error::InvalidImport(_)
            | Error::InvalidStorageUrl { .. }
            | Error::InvalidStorageOption { .. } => ErrorKind::InvalidInput,
            // What was looked for, or is there already, by name: a store's kinds.
            Error::StoreNotFound(_) | Error::CheckpointNotFound { .. } => ErrorKind::StoreNotFound,
            Error::StoreExists(_) | Error::CheckpointExists { .. } => ErrorKind::StoreExists,
            Error::Storage { source, .. } if access_denied(source) => ErrorKind::NoAccess,
            Error::Storage { .. } | Error::StorageMessage { .. } => ErrorKind::Storage,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::Closed(_) => ErrorKind::Closed,
            Error::TypeMismatch { .. } | Error::NotUtf8 { .. } => ErrorKind::TypeMismatch,
            Error::NotMounted { .. } => ErrorKind::NotMounted,
            Error::MountInUse { .. } => ErrorKind::MountInUse,
            Error::Local { .. } => ErrorKind::Local,
            Error::FellBehind { .. } => ErrorKind::FellBehind,
            Error::Shared(inner) => inner.kind(),
        }
    }

    pub(crate) fn storage(context: impl Into<String>, source: object_store::Error) -> Self {
        Error::Storage {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn corrupt(what: impl Into<String>, reason: impl ToString) -> Self {
        Error::Corrupt {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

/// Whether the storage refused access, anywhere in the error's chain: S3's 401/403, or a
/// local directory's permission error (which object_store reports as a generic error).
fn access_denied(e: &object_store::Error) -> bool {
    if matches!(
        e,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
    ) {
        return true;
    }
    let mut current: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = current {
        if let Some(os) = err.downcast_ref::<object_store::Error>()
            && access_denied(os)
        {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::PermissionDenied
        {
            return true;
        }
        current = err.source();
    }
    false
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_credentials_are_no_access_and_other_storage_failures_retry_later() {
        let denied = Error::Storage {
            context: "reading".into(),
            source: object_store::Error::PermissionDenied {
                path: "p".into(),
                source: "403".into(),
            },
        };
        assert_eq!(denied.kind(), ErrorKind::NoAccess);
        let local = Error::Storage {
            context: "reading".into(),
            source: object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(std::io::Error::from(std::io::ErrorKind::PermissionDenied)),
            },
        };
        assert_eq!(local.kind(), ErrorKind::NoAccess);
        let slow = Error::Storage {
            context: "reading".into(),
            source: object_store::Error::Generic {
                store: "S3",
                source: "503 SlowDown".into(),
            },
        };
        assert_eq!(slow.kind(), ErrorKind::Storage);
    }
}
