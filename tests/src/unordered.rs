//! An object store whose listings come back in no particular order and that refuses a listing
//! from an offset, as S3 Express One Zone directory buckets behave (their LIST takes no
//! `start-after` and returns keys unsorted): every listing of the wrapped store is shuffled,
//! differently each time (seeded, so a failing run repeats).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

pub struct UnorderedListings {
    inner: Arc<dyn ObjectStore>,
    seed: u64,
    listings: AtomicU64,
    /// Listings from an offset refused so far (a caller that asks for one is a bug to find).
    pub offsets_refused: AtomicU64,
}

impl UnorderedListings {
    pub fn new(inner: Arc<dyn ObjectStore>, seed: u64) -> UnorderedListings {
        UnorderedListings {
            inner,
            seed,
            listings: AtomicU64::new(0),
            offsets_refused: AtomicU64::new(0),
        }
    }

    fn rng(&self) -> StdRng {
        let n = self.listings.fetch_add(1, Ordering::Relaxed);
        StdRng::seed_from_u64(self.seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    /// How many listings were shuffled.
    pub fn listings(&self) -> u64 {
        self.listings.load(Ordering::Relaxed)
    }

    /// Asserts that more than `at_least` listings went through the wrapper (so the test
    /// exercised it) and that nobody asked for a listing from an offset.
    pub fn assert_listed_without_offsets(&self, at_least: u64) {
        assert!(
            self.listings() > at_least,
            "{} listings, expected more than {at_least}",
            self.listings()
        );
        assert_eq!(
            self.offsets_refused.load(Ordering::Relaxed),
            0,
            "a listing from an offset was asked for"
        );
    }
}

impl fmt::Debug for UnorderedListings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UnorderedListings({})", self.inner)
    }
}

impl fmt::Display for UnorderedListings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[async_trait]
impl ObjectStore for UnorderedListings {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
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
        let listing = self.inner.list(prefix);
        let mut rng = self.rng();
        futures::stream::once(async move {
            let mut all: Vec<ObjectMeta> = listing.try_collect().await?;
            all.shuffle(&mut rng);
            Ok::<_, object_store::Error>(futures::stream::iter(all.into_iter().map(Ok)))
        })
        .try_flatten()
        .boxed()
    }

    fn list_with_offset(
        &self,
        _prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.offsets_refused.fetch_add(1, Ordering::Relaxed);
        let offset = offset.to_string();
        futures::stream::once(async move {
            Err(object_store::Error::NotSupported {
                source: format!("a directory bucket lists from no offset (start-after {offset})")
                    .into(),
            })
        })
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let mut result = self.inner.list_with_delimiter(prefix).await?;
        let mut rng = self.rng();
        result.common_prefixes.shuffle(&mut rng);
        result.objects.shuffle(&mut rng);
        Ok(result)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// The environment variable that makes the crash tests' child processes list through
/// [`UnorderedListings`] (its value seeds the shuffles).
pub const SHUFFLE_ENV: &str = "IKV_TEST_SHUFFLED_LISTINGS";

/// `storage` itself, or, when [`SHUFFLE_ENV`] is set, the same root with every listing
/// shuffled and listings from an offset refused (and declared so).
pub fn shuffled_if_asked(storage: ikv_core::Storage) -> ikv_core::Storage {
    let Some(seed) = std::env::var(SHUFFLE_ENV).ok().and_then(|v| v.parse().ok()) else {
        return storage;
    };
    let wrapped = Arc::new(UnorderedListings::new(storage.object_store().clone(), seed));
    ikv_core::Storage::new(wrapped, storage.prefix.clone(), storage.url.clone())
        .with_unordered_listings()
}
