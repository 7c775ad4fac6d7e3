//! An object store that wraps another and injects faults into PUTs of chosen paths: the
//! "ambiguous outcome" a network gives (the write landed, the answer was lost) and a plain
//! failure (the write never happened); and into every Nth read (GET or LIST): 503 SlowDown,
//! a timeout, or a body cut short.

use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
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

/// What to do to a faulted read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFault {
    /// S3's 503 SlowDown, without reading.
    SlowDown,
    /// A request that times out, without an answer.
    Timeout,
    /// A GET whose body ends half-way (a LIST faulted this way fails like a timeout).
    Truncated,
}

/// Faults queued for PUTs whose path contains a substring, consumed in order; and a plan
/// that faults every Nth read.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    faults: Mutex<Vec<(String, PutFault)>>,
    /// Every PUT attempt seen (path, fault applied), for assertions.
    pub attempts: Mutex<Vec<(String, Option<PutFault>)>>,
    /// Every Nth read is faulted, cycling through the kinds; `None` reads cleanly.
    read_plan: Mutex<Option<(u64, Vec<ReadFault>)>>,
    reads: AtomicU64,
    /// Reads faulted so far.
    pub faulted_reads: AtomicU64,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> FaultyStore {
        FaultyStore {
            inner,
            faults: Mutex::new(Vec::new()),
            attempts: Mutex::new(Vec::new()),
            read_plan: Mutex::new(None),
            reads: AtomicU64::new(0),
            faulted_reads: AtomicU64::new(0),
        }
    }

    /// From now on, faults every `n`th read (GET or LIST), cycling through `kinds`.
    pub fn fault_every_nth_read(&self, n: u64, kinds: &[ReadFault]) {
        assert!(n > 0 && !kinds.is_empty());
        *self.read_plan.lock().expect("lock") = Some((n, kinds.to_vec()));
    }

    /// Reads succeed again.
    pub fn stop_read_faults(&self) {
        *self.read_plan.lock().expect("lock") = None;
    }

    /// The fault for this read, if the plan says so.
    fn read_fault(&self) -> Option<ReadFault> {
        let plan = self.read_plan.lock().expect("lock");
        let (n, kinds) = plan.as_ref()?;
        let count = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
        if !count.is_multiple_of(*n) {
            return None;
        }
        let fault = self.faulted_reads.fetch_add(1, Ordering::SeqCst) as usize % kinds.len();
        Some(kinds[fault])
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

fn slow_down() -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultyStore",
        source: "injected: 503 SlowDown: please reduce your request rate".into(),
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
        match self.read_fault() {
            None => self.inner.get_opts(location, options).await,
            Some(ReadFault::SlowDown) => Err(slow_down()),
            Some(ReadFault::Timeout) => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                Err(timeout())
            }
            Some(ReadFault::Truncated) => {
                let result = self.inner.get_opts(location, options).await?;
                let (meta, range, attributes) = (
                    result.meta.clone(),
                    result.range.clone(),
                    result.attributes.clone(),
                );
                let body = result.bytes().await?;
                let cut = body.slice(..body.len() / 2);
                Ok(GetResult {
                    payload: GetResultPayload::Stream(
                        futures::stream::once(async { Ok(cut) }).boxed(),
                    ),
                    meta,
                    range,
                    attributes,
                    extensions: Default::default(),
                })
            }
        }
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        match self.read_fault() {
            None => self.inner.list(prefix),
            Some(ReadFault::SlowDown) => futures::stream::once(async { Err(slow_down()) }).boxed(),
            Some(_) => futures::stream::once(async { Err(timeout()) }).boxed(),
        }
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        match self.read_fault() {
            None => self.inner.list_with_offset(prefix, offset),
            Some(ReadFault::SlowDown) => futures::stream::once(async { Err(slow_down()) }).boxed(),
            Some(_) => futures::stream::once(async { Err(timeout()) }).boxed(),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        match self.read_fault() {
            None => self.inner.list_with_delimiter(prefix).await,
            Some(ReadFault::SlowDown) => Err(slow_down()),
            Some(_) => Err(timeout()),
        }
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
