//! An object store that wraps another and injects faults into PUTs of chosen paths: the
//! "ambiguous outcome" a network gives (the write landed, the answer was lost) and a plain
//! failure (the write never happened).

use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// What to do to a matching PUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutFault {
    /// Perform the PUT, then report a timeout: the caller cannot tell it landed.
    LandThenTimeout,
    /// Report a failure without performing the PUT.
    FailBeforeLanding,
    /// Answer as S3 does when another conditional write to the key is in flight (409
    /// ConditionalRequestConflict), without writing; the other write then never lands.
    ConflictWithoutWinner,
}

/// Faults queued for PUTs whose path contains a substring, consumed in order.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    faults: Mutex<Vec<(String, PutFault)>>,
    /// Every PUT attempt seen (path, fault applied), for assertions.
    pub attempts: Mutex<Vec<(String, Option<PutFault>)>>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> FaultyStore {
        FaultyStore {
            inner,
            faults: Mutex::new(Vec::new()),
            attempts: Mutex::new(Vec::new()),
        }
    }

    /// Queues `fault` for the next PUT whose path contains `path_part`.
    pub fn inject(&self, path_part: &str, fault: PutFault) {
        self.faults
            .lock()
            .expect("lock")
            .push((path_part.to_owned(), fault));
    }

    fn take_fault(&self, path: &Path) -> Option<PutFault> {
        let mut faults = self.faults.lock().expect("lock");
        let i = faults
            .iter()
            .position(|(part, _)| path.as_ref().contains(part.as_str()))?;
        Some(faults.remove(i).1)
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

fn timeout() -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultyStore",
        source: "injected: request timed out".into(),
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let fault = self.take_fault(location);
        self.attempts
            .lock()
            .expect("lock")
            .push((location.to_string(), fault));
        match fault {
            None => self.inner.put_opts(location, payload, opts).await,
            Some(PutFault::LandThenTimeout) => {
                self.inner.put_opts(location, payload, opts).await?;
                Err(timeout())
            }
            Some(PutFault::FailBeforeLanding) => Err(timeout()),
            Some(PutFault::ConflictWithoutWinner) => Err(object_store::Error::AlreadyExists {
                path: location.to_string(),
                source: "injected: 409 ConditionalRequestConflict".into(),
            }),
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
