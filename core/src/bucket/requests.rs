//! Every request ikv makes to a bucket, counted by kind and outcome: the base of its metrics
//! and of request-cost tests (the S3 bill is these counts). [`Storage`](crate::Storage) wraps
//! the store it opens (or is given) in a [`CountedStore`]; `Storage::requests` reads the
//! counts. Plain-file reads of a local-directory root are counted as GETs too.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// Kinds of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Get,
    Head,
    Put,
    List,
    Delete,
}

impl RequestKind {
    pub const ALL: [RequestKind; 5] = [
        RequestKind::Get,
        RequestKind::Head,
        RequestKind::Put,
        RequestKind::List,
        RequestKind::Delete,
    ];

    /// The name metrics label it with.
    pub fn name(self) -> &'static str {
        match self {
            RequestKind::Get => "get",
            RequestKind::Head => "head",
            RequestKind::Put => "put",
            RequestKind::List => "list",
            RequestKind::Delete => "delete",
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The object was not there (404).
    NotFound,
    /// A condition did not hold (a conditional create found the object: 412, 409).
    Precondition,
    /// A conditional read found the object as the caller last saw it (304): billed as a GET.
    NotModified,
    /// Anything else: a timeout, 5xx, refused credentials.
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::NotFound,
        Outcome::Precondition,
        Outcome::NotModified,
        Outcome::Error,
    ];

    /// The name metrics label it with.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NotFound => "not_found",
            Outcome::Precondition => "precondition",
            Outcome::NotModified => "not_modified",
            Outcome::Error => "error",
        }
    }
}

const KINDS: usize = 5;
const OUTCOMES: usize = 5;

/// Request counts by kind and outcome, shared by every clone of a `Storage`.
#[derive(Debug, Default)]
pub struct RequestCounts {
    counts: [[AtomicU64; OUTCOMES]; KINDS],
    /// Bytes of bodies: read by GETs, written by single PUTs.
    bytes: [AtomicU64; KINDS],
}

impl RequestCounts {
    pub fn record(&self, kind: RequestKind, outcome: Outcome) {
        self.counts[kind as usize][outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn move_outcome(&self, kind: RequestKind, from: Outcome, to: Outcome) {
        self.counts[kind as usize][from as usize].fetch_sub(1, Ordering::Relaxed);
        self.record(kind, to);
    }

    fn record_result<T>(&self, kind: RequestKind, result: &Result<T>) {
        self.record(kind, outcome_of(result));
    }

    pub fn add_bytes(&self, kind: RequestKind, n: u64) {
        self.bytes[kind as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes of bodies moved by requests of `kind` so far (GET: read; PUT: written).
    pub fn bytes(&self, kind: RequestKind) -> u64 {
        self.bytes[kind as usize].load(Ordering::Relaxed)
    }

    /// Requests of `kind` that ended as `outcome` so far.
    pub fn get(&self, kind: RequestKind, outcome: Outcome) -> u64 {
        self.counts[kind as usize][outcome as usize].load(Ordering::Relaxed)
    }

    /// Requests of `kind` so far, whatever their outcome.
    pub fn of_kind(&self, kind: RequestKind) -> u64 {
        self.counts[kind as usize]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Every request so far.
    pub fn total(&self) -> u64 {
        RequestKind::ALL.into_iter().map(|k| self.of_kind(k)).sum()
    }
}

fn outcome_of<T>(result: &Result<T>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(object_store::Error::NotFound { .. }) => Outcome::NotFound,
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => Outcome::Precondition,
        Err(object_store::Error::NotModified { .. }) => Outcome::NotModified,
        Err(_) => Outcome::Error,
    }
}

/// An object store that counts the requests made through it.
#[derive(Debug)]
pub struct CountedStore {
    inner: Arc<dyn ObjectStore>,
    counts: Arc<RequestCounts>,
}

impl CountedStore {
    /// `inner`, its requests counted from zero.
    pub fn new(inner: Arc<dyn ObjectStore>) -> CountedStore {
        CountedStore {
            inner,
            counts: Arc::new(RequestCounts::default()),
        }
    }

    /// The counts of the requests made through this store.
    pub fn requests(&self) -> &Arc<RequestCounts> {
        &self.counts
    }

    /// A listing, counted once when it is made (as it is sent, even if nothing is read from
    /// it), and moved to the errors if a page fails.
    fn counted_listing(
        &self,
        listing: BoxStream<'static, Result<ObjectMeta>>,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.counts.record(RequestKind::List, Outcome::Ok);
        let counts = self.counts.clone();
        let mut failed = false;
        listing
            .map(move |item| {
                if item.is_err() && !failed {
                    failed = true;
                    counts.move_outcome(RequestKind::List, Outcome::Ok, Outcome::Error);
                }
                item
            })
            .boxed()
    }
}

impl fmt::Display for CountedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountedStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CountedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let size = payload.content_length() as u64;
        let result = self.inner.put_opts(location, payload, opts).await;
        self.counts.record_result(RequestKind::Put, &result);
        if result.is_ok() {
            self.counts.add_bytes(RequestKind::Put, size);
        }
        result
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let result = self.inner.put_multipart_opts(location, opts).await;
        self.counts.record_result(RequestKind::Put, &result);
        result
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let kind = if options.head {
            RequestKind::Head
        } else {
            RequestKind::Get
        };
        let result = self.inner.get_opts(location, options).await;
        self.counts.record_result(kind, &result);
        if let (RequestKind::Get, Ok(got)) = (kind, &result) {
            self.counts
                .add_bytes(kind, got.range.end.saturating_sub(got.range.start));
        }
        result
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let counts = self.counts.clone();
        self.inner
            .delete_stream(locations)
            .map(move |deleted| {
                counts.record_result(RequestKind::Delete, &deleted);
                deleted
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.counted_listing(self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.counted_listing(self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let result = self.inner.list_with_delimiter(prefix).await;
        self.counts.record_result(RequestKind::List, &result);
        result
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Storage;
    use futures::TryStreamExt;
    use object_store::{ObjectStoreExt, PutMode};

    #[tokio::test]
    async fn every_request_is_counted_by_kind_and_outcome() {
        let storage = Storage::memory();
        let path = Path::from("a/b");
        storage.store.put(&path, "x".into()).await.unwrap();
        let create = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        assert!(
            storage
                .store
                .put_opts(&path, "y".into(), create)
                .await
                .is_err()
        );
        storage.store.get(&path).await.unwrap();
        assert!(storage.store.get(&Path::from("nope")).await.is_err());
        storage.store.head(&path).await.unwrap();
        let listed: Vec<_> = storage
            .store
            .list(Some(&Path::from("empty")))
            .try_collect()
            .await
            .unwrap();
        assert!(listed.is_empty());
        storage.store.delete(&path).await.unwrap();
        // A clone shares the counts.
        let clone = storage.clone();
        clone.store.get(&path).await.unwrap_err();

        let r = storage.requests();
        assert_eq!(r.get(RequestKind::Put, Outcome::Ok), 1);
        assert_eq!(r.get(RequestKind::Put, Outcome::Precondition), 1);
        assert_eq!(r.get(RequestKind::Get, Outcome::Ok), 1);
        assert_eq!(r.get(RequestKind::Get, Outcome::NotFound), 2);
        assert_eq!(r.get(RequestKind::Head, Outcome::Ok), 1);
        assert_eq!(
            r.get(RequestKind::List, Outcome::Ok),
            1,
            "an empty listing is a request too"
        );
        assert_eq!(r.get(RequestKind::Delete, Outcome::Ok), 1);
        assert_eq!(r.total(), 8);
    }

    #[tokio::test]
    async fn bytes_are_counted_for_bodies_read_and_written() {
        let storage = Storage::memory();
        let path = Path::from("a/b");
        storage
            .store
            .put(&path, vec![7u8; 1000].into())
            .await
            .unwrap();
        // A failed conditional PUT moves nothing.
        let create = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let _ = storage.store.put_opts(&path, "y".into(), create).await;
        storage
            .store
            .get(&path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        storage.store.get_range(&path, 10..110).await.unwrap();
        storage.store.head(&path).await.unwrap();
        let r = storage.requests();
        assert_eq!(r.bytes(RequestKind::Put), 1000);
        assert_eq!(r.bytes(RequestKind::Get), 1100);
        assert_eq!(r.bytes(RequestKind::Head), 0);
        let mut set = crate::metrics::MetricSet::new();
        set.requests(r, &[]);
        assert_eq!(
            set.value(&crate::metrics::catalog::STORAGE_BYTES, &[("kind", "get")]),
            Some(1100.0)
        );
    }

    #[test]
    fn local_plain_file_reads_count_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let storage = Storage::open(&url, &Default::default()).unwrap();
        std::fs::write(dir.path().join("f"), [1u8; 64]).unwrap();
        let read = crate::bucket::read_local(&storage, &[Path::from("f")]).unwrap();
        assert_eq!(read[0].as_ref().unwrap().as_ref().unwrap().len(), 64);
        assert_eq!(storage.requests().bytes(RequestKind::Get), 64);
    }
}
