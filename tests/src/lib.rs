//! Shared helpers of the end-to-end tests: the LocalStack storage root, a fault-injecting
//! object store, and bucket snapshots for "nothing was written" checks.
#![allow(clippy::disallowed_methods)] // tests and benches run real processes, sockets and timings on the wall clock

pub mod counting;
pub mod faulty;
pub mod fixture;
pub mod latency;
pub mod model;
pub mod model_check;
pub mod random_ops;
pub mod stepping_clock;
pub mod unordered;

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::TryStreamExt;
use ikv_core::{Storage, StorageOptions};
use object_store::ObjectStoreExt;

/// A two-worker tokio runtime, as the tests' blocking code drives async calls with.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Options of a forced pass that writes a layer whenever the round allows one and the stack
/// has fewer than `max_layers` (0: always a full snapshot); layer rows are not limited.
pub fn layered_pass(max_layers: usize) -> ikv_snapshot::SnapshotOptions {
    ikv_snapshot::SnapshotOptions {
        force: true,
        layering: ikv_snapshot::Layering {
            max_layers,
            max_rows_percent: 1000,
        },
        ..ikv_snapshot::SnapshotOptions::default()
    }
}

/// One forced compaction pass over `partition`, now: how the tests make a snapshot.
pub async fn force_snapshot(
    storage: &Storage,
    config: &ikv_core::StoreConfig,
    partition: u32,
) -> ikv_core::Result<ikv_snapshot::PartitionOutcome> {
    forced_pass(
        storage,
        config,
        partition,
        ikv_snapshot::Layering::default(),
    )
    .await
}

/// One forced pass over `partition` that writes a full snapshot (never a layer): what a test
/// of reading the previous snapshot needs (a layer pass reads none of it).
pub async fn force_full_snapshot(
    storage: &Storage,
    config: &ikv_core::StoreConfig,
    partition: u32,
) -> ikv_core::Result<ikv_snapshot::PartitionOutcome> {
    let full = ikv_snapshot::Layering {
        max_layers: 0,
        ..ikv_snapshot::Layering::default()
    };
    forced_pass(storage, config, partition, full).await
}

async fn forced_pass(
    storage: &Storage,
    config: &ikv_core::StoreConfig,
    partition: u32,
    layering: ikv_snapshot::Layering,
) -> ikv_core::Result<ikv_snapshot::PartitionOutcome> {
    let options = ikv_snapshot::SnapshotOptions {
        force: true,
        layering,
        ..ikv_snapshot::SnapshotOptions::default()
    };
    ikv_snapshot::snapshot_partition(
        storage,
        config,
        partition,
        &options,
        std::time::SystemTime::now(),
    )
    .await
}

/// Bucket the tests use on the emulator (created by the test script).
pub const TEST_BUCKET: &str = "ikv-test";

/// The emulator's endpoint: `IKV_TEST_S3_ENDPOINT`, default LocalStack on 127.0.0.1:4566.
pub fn s3_endpoint() -> String {
    std::env::var("IKV_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4566".into())
}

/// A fresh, empty prefix in the test bucket on the local S3 emulator. Panics with what to
/// do when the emulator is not running: these tests must not silently pass without it.
pub async fn localstack_storage(disable_retries: bool) -> Storage {
    let endpoint = s3_endpoint();
    let health = format!("{endpoint}/_localstack/health");
    if reqwest::get(&health).await.is_err() {
        panic!(
            "the S3 emulator is not reachable at {endpoint}; start it with `localstack/localstack.sh start && localstack/localstack.sh bucket {TEST_BUCKET}` (scripts/test.sh does both)"
        );
    }
    let url = format!("s3://{TEST_BUCKET}/t-{}", uuid::Uuid::new_v4());
    localstack_storage_at(&url, disable_retries)
}

/// The emulator's bucket at `url` (an `s3://` URL a [`localstack_storage`] root came from), as
/// another process opens it.
pub fn localstack_storage_at(url: &str, disable_retries: bool) -> Storage {
    let options = StorageOptions {
        disable_retries,
        ..StorageOptions::default()
    }
    .with("aws_endpoint", s3_endpoint())
    .with("aws_region", "us-east-1")
    .with("aws_access_key_id", "test")
    .with("aws_secret_access_key", "test");
    Storage::open(url, &options).expect("open the emulator bucket")
}

/// Azurite's blob endpoint (`emulators/azurite.sh` starts it; scripts/test.sh does).
pub fn azurite_endpoint() -> String {
    std::env::var("AZURITE_BLOB_STORAGE_URL").unwrap_or_else(|_| "http://127.0.0.1:10000".into())
}

/// The storage options that reach Azurite (its well-known account and key, at
/// `AZURITE_BLOB_STORAGE_URL` or http://127.0.0.1:10000): what a reader or the CLI is given too.
pub fn azurite_options() -> StorageOptions {
    StorageOptions::default().with("azure_storage_use_emulator", "true")
}

/// A fresh, empty prefix in the test container on Azurite, with its URL. Panics with what to
/// do when Azurite is not running: these tests must not silently pass without it.
pub async fn azurite_storage() -> (String, Storage) {
    let endpoint = azurite_endpoint();
    if reqwest::Client::new().get(&endpoint).send().await.is_err() {
        panic!(
            "Azurite is not reachable at {endpoint}; start it with `emulators/azurite.sh start && emulators/azurite.sh container {TEST_BUCKET}` (scripts/test.sh does both)"
        );
    }
    let url = format!("az://{TEST_BUCKET}/t-{}", uuid::Uuid::new_v4());
    let storage = Storage::open(&url, &azurite_options()).expect("open the Azurite container");
    (url, storage)
}

/// Every object under the storage root with its bytes.
pub async fn bucket_contents(storage: &Storage) -> BTreeMap<String, Bytes> {
    let metas: Vec<_> = storage
        .object_store()
        .list(Some(&storage.prefix))
        .try_collect()
        .await
        .expect("list");
    let mut out = BTreeMap::new();
    for m in metas {
        let bytes = storage
            .object_store()
            .get(&m.location)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        out.insert(m.location.to_string(), bytes);
    }
    out
}
