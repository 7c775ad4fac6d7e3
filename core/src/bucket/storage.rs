//! Opening a storage root (any object_store URL) with options.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, RetryConfig};
use url::Url;

use crate::bucket::requests::{CountedStore, RequestCounts};
use crate::clock::{Clock, SystemClock};

use crate::error::{Error, Result};

/// Options for a storage root. Keys are object_store's S3 configuration keys
/// (`aws_endpoint`, `aws_region`, `aws_access_key_id`, `aws_secret_access_key`,
/// `aws_session_token`, `aws_allow_http`, `aws_virtual_hosted_style_request`, ...); anything
/// not given comes from the standard `AWS_*` environment variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageOptions {
    pub options: BTreeMap<String, String>,
    /// Whether object_store may retry requests by itself. Writers turn this off: a retried
    /// conditional PUT whose first attempt landed answers "already exists", which would look
    /// like a lost race. The writer retries on its own and knows which attempts were ambiguous.
    pub disable_retries: bool,
}

impl StorageOptions {
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.insert(key.into(), value.into());
        self
    }
}

/// An opened storage root: the object store and the path prefix stores live under.
#[derive(Debug, Clone)]
pub struct Storage {
    pub(super) store: Arc<dyn ObjectStore>,
    pub prefix: Path,
    /// The URL it was opened from, for messages (`memory://` for in-process stores).
    pub url: String,
    /// The local directory store [`Storage::open`] made for a `file://` root, for reads done
    /// as plain file reads ([`Storage::local_files`]).
    local: Option<Arc<LocalFileSystem>>,
    /// The counted store `open` made for that directory: `local` is used only while `store`
    /// is still this one (a wrapper put in its place is never bypassed).
    made: Option<Arc<dyn ObjectStore>>,
    /// Time for the bucket protocol's waits (retry backoff, hole re-checks).
    clock: Arc<dyn Clock>,
    /// Every request made through this root and its clones, by kind and outcome.
    requests: Arc<RequestCounts>,
    /// Whether listings come back in key order and can start after a key (S3 general purpose
    /// buckets, memory). A local directory lists in directory order; an S3 Express One Zone
    /// directory bucket in no order and from no offset.
    key_ordered_listings: bool,
}

impl Storage {
    /// Wraps an existing object store (tests, custom backends); its requests are counted
    /// ([`Storage::requests`]).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path, url: impl Into<String>) -> Storage {
        let counted = CountedStore::new(store);
        let requests = counted.requests().clone();
        let url = url.into();
        Storage {
            store: Arc::new(counted),
            prefix,
            // A wrapper around a local directory's store lists as the directory does.
            key_ordered_listings: !url.starts_with("file:"),
            url,
            local: None,
            made: None,
            clock: SystemClock::shared(),
            requests,
        }
    }

    /// This root with listings taken as unordered and never asked for from an offset (every
    /// caller then lists a whole directory and sorts what it needs): for stores that list as
    /// S3 Express One Zone directory buckets do.
    pub fn with_unordered_listings(mut self) -> Storage {
        self.key_ordered_listings = false;
        self
    }

    /// The object store behind this root, for tests that forge, damage or remove objects
    /// behind ikv's back, or wrap the store in a fault injector. Production code reaches the
    /// bucket through [`crate::bucket`] only; this exists with the `testing` feature alone.
    #[cfg(feature = "testing")]
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The requests made through this root (and its clones) so far, by kind and outcome.
    pub fn requests(&self) -> &RequestCounts {
        &self.requests
    }

    /// This root with its waits on `clock` (tests pass a manual or stepping clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Storage {
        self.clock = clock;
        self
    }

    /// The clock the bucket protocol waits on.
    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    /// The local directory behind this root when `store` is still the one
    /// [`Storage::open`] made for a `file://` URL: its objects may then be read as plain
    /// files, many in one blocking call, rather than one blocking-pool hop each. `None` for
    /// any other store, and for a root whose `store` was replaced (a wrapper that counts or
    /// injects faults is never bypassed).
    pub fn local_files(&self) -> Option<&LocalFileSystem> {
        let local = self.local.as_ref()?;
        let made = self.made.as_ref()?;
        let same = std::ptr::addr_eq(Arc::as_ptr(&self.store), Arc::as_ptr(made));
        same.then_some(local.as_ref())
    }

    /// The directory behind a `file://` root (`None` for other stores).
    pub fn local_dir(&self) -> Option<std::path::PathBuf> {
        let url = Url::parse(&self.url).ok()?;
        (url.scheme() == "file")
            .then(|| url.to_file_path().ok())
            .flatten()
    }

    /// Whether listings come back in key order and start after a given key (S3 general
    /// purpose buckets and in-memory stores), so that the first page of a listing from an
    /// offset holds the lowest keys after it. Not for a local directory (directory order) nor
    /// an S3 Express directory bucket (no order, no `start-after`).
    pub fn lists_in_key_order(&self) -> bool {
        self.key_ordered_listings
    }

    /// A fresh in-memory root (each call is a new, empty one).
    pub fn memory() -> Storage {
        Storage::new(Arc::new(InMemory::new()), Path::default(), "memory://")
    }

    /// Opens `s3://bucket/prefix`, `gs://bucket/prefix` (Google Cloud Storage),
    /// `az://container/prefix` (Azure Blob Storage; the account from the options or
    /// `AZURE_STORAGE_ACCOUNT_NAME`), `file:///abs/dir` (created if missing) or `memory://`.
    /// Credentials and endpoints come from each cloud's usual environment variables and from
    /// `options` (object_store's configuration keys of that cloud).
    pub fn open(url: &str, options: &StorageOptions) -> Result<Storage> {
        let bad = |reason: &str| Error::InvalidStorageUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let parsed = Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        match parsed.scheme() {
            "memory" => Ok(Storage::memory()),
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|_| bad("not an absolute local path"))?;
                std::fs::create_dir_all(&dir)
                    .map_err(|e| bad(&format!("cannot create directory: {e}")))?;
                let fs = LocalFileSystem::new_with_prefix(&dir).map_err(|e| bad(&e.to_string()))?;
                let fs = Arc::new(fs);
                let mut storage = Storage::new(fs.clone(), Path::default(), url);
                storage.local = Some(fs);
                storage.made = Some(storage.store.clone());
                Ok(storage)
            }
            "s3" | "s3a" => {
                let bucket = parsed
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| bad("missing bucket name (s3://BUCKET/prefix)"))?;
                let prefix = Path::from(parsed.path().trim_matches('/'));
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                for (key, value) in &options.options {
                    let config_key: AmazonS3ConfigKey =
                        key.to_ascii_lowercase().parse().map_err(|_| {
                            Error::InvalidStorageOption {
                                key: key.clone(),
                                reason: "not an S3 configuration key".into(),
                            }
                        })?;
                    builder = builder.with_config(config_key, value);
                }
                // An http:// endpoint (LocalStack, MinIO) needs plain HTTP allowed.
                let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
                let http_setting_given = options.options.keys().any(|k| {
                    k.eq_ignore_ascii_case("aws_allow_http") || k.eq_ignore_ascii_case("allow_http")
                }) || std::env::var_os("AWS_ALLOW_HTTP").is_some();
                if endpoint
                    .as_deref()
                    .is_some_and(|e| e.starts_with("http://"))
                    && !http_setting_given
                {
                    builder = builder.with_allow_http(true);
                }
                if options.disable_retries {
                    builder = builder.with_retry(no_retries());
                }
                // A directory bucket (S3 Express One Zone: `<name>--<zone id>--x-s3`) takes
                // its session authentication, and lists in no order from no offset.
                let express = bucket.ends_with("--x-s3")
                    || builder
                        .get_config_value(&AmazonS3ConfigKey::S3Express)
                        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
                if express {
                    builder = builder.with_s3_express(true);
                }
                let s3 = builder.build().map_err(|e| bad(&e.to_string()))?;
                let storage = Storage::new(Arc::new(s3), prefix, url);
                Ok(if express {
                    storage.with_unordered_listings()
                } else {
                    storage
                })
            }
            "gs" => {
                let bucket = parsed
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| bad("missing bucket name (gs://BUCKET/prefix)"))?;
                let prefix = Path::from(parsed.path().trim_matches('/'));
                let mut builder = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
                for (key, value) in &options.options {
                    let config_key: GoogleConfigKey = key
                        .to_ascii_lowercase()
                        .parse()
                        .map_err(|_| unknown_option(key, "Google Cloud Storage"))?;
                    builder = builder.with_config(config_key, value);
                }
                if options.disable_retries {
                    builder = builder.with_retry(no_retries());
                }
                let gcs = builder.build().map_err(|e| bad(&e.to_string()))?;
                Ok(Storage::new(Arc::new(gcs), prefix, url))
            }
            "az" | "azure" => {
                let container = parsed
                    .host_str()
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| bad("missing container name (az://CONTAINER/prefix)"))?;
                let prefix = Path::from(parsed.path().trim_matches('/'));
                let mut builder = MicrosoftAzureBuilder::from_env().with_container_name(container);
                for (key, value) in &options.options {
                    let config_key: AzureConfigKey = key
                        .to_ascii_lowercase()
                        .parse()
                        .map_err(|_| unknown_option(key, "Azure Blob Storage"))?;
                    builder = builder.with_config(config_key, value);
                }
                if options.disable_retries {
                    builder = builder.with_retry(no_retries());
                }
                let azure = builder.build().map_err(|e| bad(&e.to_string()))?;
                Ok(Storage::new(Arc::new(azure), prefix, url))
            }
            other => Err(bad(&format!(
                "unsupported scheme {other:?} (use s3://, gs://, az://, file:// or memory://)"
            ))),
        }
    }
}

/// Requests tried once (tests that inject faults count every attempt).
fn no_retries() -> RetryConfig {
    RetryConfig {
        max_retries: 0,
        retry_timeout: Duration::from_secs(30),
        ..RetryConfig::default()
    }
}

fn unknown_option(key: &str, cloud: &str) -> Error {
    Error::InvalidStorageOption {
        key: key.to_owned(),
        reason: format!("not a {cloud} configuration key"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_files_only_for_the_store_open_made() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let opened = Storage::open(&url, &StorageOptions::default()).unwrap();
        assert!(opened.local_files().is_some());
        assert!(
            opened.clone().local_files().is_some(),
            "a clone shares the store"
        );
        // A wrapper (counting, fault injection) put in its place is never bypassed.
        let mut replaced = opened.clone();
        replaced.store = Arc::new(InMemory::new());
        assert!(replaced.local_files().is_none());
        let wrapped = Storage::new(opened.store.clone(), Path::default(), url);
        assert!(
            wrapped.local_files().is_none(),
            "Storage::new never reads files itself"
        );
        assert!(Storage::memory().local_files().is_none());
    }

    #[test]
    fn bad_urls_are_named() {
        for (url, want) in [
            ("not a url", "invalid storage URL"),
            ("ftp://x/y", "unsupported scheme"),
            ("s3:///prefix", "missing bucket"),
            ("file://relative/dir", "invalid storage URL"),
        ] {
            let err = Storage::open(url, &StorageOptions::default()).unwrap_err();
            assert!(err.to_string().contains(want), "{url}: {err}");
        }
        let opts = StorageOptions::default().with("no_such_key", "1");
        let err = Storage::open("s3://b/p", &opts).unwrap_err();
        assert!(err.to_string().contains("no_such_key"), "{err}");
        for url in ["gs://b/p", "az://c/p"] {
            let err = Storage::open(url, &opts).unwrap_err();
            assert!(err.to_string().contains("no_such_key"), "{url}: {err}");
        }
        for (url, want) in [
            ("gs:///p", "missing bucket"),
            ("az:///p", "missing container"),
        ] {
            let err = Storage::open(url, &StorageOptions::default()).unwrap_err();
            assert!(err.to_string().contains(want), "{url}: {err}");
        }
    }

    #[test]
    fn file_and_s3_urls_open() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/bucket", dir.path().display());
        Storage::open(&url, &StorageOptions::default()).unwrap();
        assert!(dir.path().join("bucket").is_dir());
        let opts = StorageOptions::default()
            .with("aws_endpoint", "http://127.0.0.1:4566")
            .with("aws_region", "us-east-1");
        let s = Storage::open("s3://bucket/a/b/", &opts).unwrap();
        assert_eq!(s.prefix.as_ref(), "a/b");
        assert!(s.lists_in_key_order());
        // Directory buckets (by name, or declared) list in no order.
        let express = Storage::open("s3://feats--usw2-az1--x-s3/p", &opts).unwrap();
        assert!(!express.lists_in_key_order());
        let declared = opts.clone().with("aws_s3_express", "true");
        let express = Storage::open("s3://b--use1-az4--x-s3/p", &declared).unwrap();
        assert!(!express.lists_in_key_order());
        // Declared on a bucket whose name is not a directory bucket's: refused by name.
        let err = Storage::open("s3://b/p", &declared).unwrap_err();
        assert!(err.to_string().contains("Zone suffix"), "{err}");
        assert!(
            !Storage::open(&url, &StorageOptions::default())
                .unwrap()
                .lists_in_key_order()
        );
        assert!(Storage::memory().lists_in_key_order());
        // Google Cloud Storage and Azure Blob Storage: their URLs, options, emulators.
        let gcs = StorageOptions::default()
            .with("google_base_url", "http://127.0.0.1:4443")
            .with("google_skip_signature", "true");
        let s = Storage::open("gs://feats/a/b", &gcs).unwrap();
        assert_eq!(s.prefix.as_ref(), "a/b");
        assert!(s.lists_in_key_order());
        let azurite = StorageOptions::default().with("azure_storage_use_emulator", "true");
        let s = Storage::open("az://feats/x", &azurite).unwrap();
        assert_eq!(s.prefix.as_ref(), "x");
        assert!(s.lists_in_key_order());
    }
}
