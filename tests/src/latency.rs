//! An object store that wraps another and adds a fixed round trip to every request (as a
//! distant region does), counting the GETs in flight at once: for tests and benchmarks of how
//! many round trips a catch-up or a commit costs, measured in requests, not seconds.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// `inner` behind a round trip of `delay` per request.
#[derive(Debug)]
pub struct LatencyStore {
    inner: Arc<dyn ObjectStore>,
    delay: Duration,
    gets_in_flight: AtomicUsize,
    most_gets_in_flight: AtomicUsize,
}

impl LatencyStore {
    pub fn new(inner: Arc<dyn ObjectStore>, delay: Duration) -> LatencyStore {
        LatencyStore {
            inner,
            delay,
            gets_in_flight: AtomicUsize::new(0),
            most_gets_in_flight: AtomicUsize::new(0),
        }
    }

    /// The most GETs (and HEADs) this store has had in flight at once.
    pub fn most_gets_in_flight(&self) -> usize {
        self.most_gets_in_flight.load(Ordering::SeqCst)
    }

    async fn round_trip(&self) {
        tokio::time::sleep(self.delay).await;
    }
}

impl fmt::Display for LatencyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LatencyStore({:?}, {})", self.delay, self.inner)
    }
}

/// Counts one GET in flight while alive.
struct InFlight<'a>(&'a LatencyStore);

impl<'a> InFlight<'a> {
    fn start(store: &'a LatencyStore) -> InFlight<'a> {
        let now = store.gets_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        store.most_gets_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(store)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.gets_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl ObjectStore for LatencyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.round_trip().await;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.round_trip().await;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let _counted = InFlight::start(self);
        self.round_trip().await;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let delay = self.delay;
        let inner = self.inner.clone();
        let prefix = prefix.cloned();
        futures::stream::once(async move {
            tokio::time::sleep(delay).await;
            inner.list(prefix.as_ref())
        })
        .flatten()
        .boxed()
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let delay = self.delay;
        let inner = self.inner.clone();
        let prefix = prefix.cloned();
        let offset = offset.clone();
        futures::stream::once(async move {
            tokio::time::sleep(delay).await;
            inner.list_with_offset(prefix.as_ref(), &offset)
        })
        .flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.round_trip().await;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.round_trip().await;
        self.inner.copy_opts(from, to, options).await
    }
}
