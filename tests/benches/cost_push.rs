//! Cost of a quiet reader host with the push path, on the S3 emulator with its SQS and SNS, in
//! real time at the defaults: requests a second to the bucket and to the wake queue over a
//! minute of quiet, and how long the first write after the quiet spell takes to be applied.
//!
//! `cargo bench -p ikv-tests --bench cost_push` (LocalStack running with SQS and SNS, as
//! `localstack/localstack.sh start` runs it). Prints rows of BENCHMARKS.md "Cost".
#![allow(clippy::disallowed_methods)] // benches time real work on the wall clock

use std::time::{Duration, Instant};

use ikv_core::bucket::create_store;
use ikv_core::metrics::catalog::{READER_WAKE_QUEUE_REQUESTS, READER_WAKE_QUEUE_UP};
use ikv_core::{FieldValue, StorageOptions, StoreConfig};
use ikv_reader::{Reader, ReaderOptions};
use ikv_tests::fixture::{doc_v as doc, key_in, wait_until};
use ikv_tests::{localstack_storage_at, s3_endpoint};
use ikv_writer::{Writer, WriterOptions};

const MONTH: f64 = 30.0 * 86_400.0;
const GET_PRICE: f64 = 0.0004 / 1000.0;
/// SQS standard queues: $0.40 per million requests (each 64 KiB chunk).
const SQS_PRICE: f64 = 0.40 / 1_000_000.0;

fn main() {
    let rt = ikv_tests::runtime();
    let options = StorageOptions::default()
        .with("aws_endpoint", s3_endpoint())
        .with("aws_region", "us-east-1")
        .with("aws_access_key_id", "test")
        .with("aws_secret_access_key", "test");
    let bucket = "ikv-push-bench";
    rt.block_on(async {
        reqwest::Client::new()
            .put(format!("{}/{bucket}", s3_endpoint()))
            .send()
            .await
            .expect("the S3 emulator")
    });
    let prefix = format!("b-{}", uuid::Uuid::new_v4().simple());
    let config = rt.block_on(ikv_aws::sdk_config(&options));
    let topic = rt
        .block_on(ikv_aws::prepare::prepare_bucket(
            &config, bucket, &prefix, true,
        ))
        .unwrap()
        .wake_topic
        .unwrap();
    let url = format!("s3://{bucket}/{prefix}");
    let partitions = 16;
    rt.block_on(create_store(
        &localstack_storage_at(&url, false),
        &StoreConfig::new("s", "id", None, partitions).unwrap(),
    ))
    .unwrap();
    let writer = rt
        .block_on(Writer::open(
            localstack_storage_at(&url, true),
            "s",
            WriterOptions::default(),
        ))
        .unwrap();
    for p in 0..partitions {
        rt.block_on(writer.upsert_fields(doc(&key_in(p, partitions), 0)))
            .unwrap();
    }
    let storage = localstack_storage_at(&url, false);
    let mount = tempfile::tempdir().unwrap();
    let mut reader_options = ReaderOptions::new(&url, "s", mount.path());
    reader_options.storage = Some(storage.clone());
    reader_options.storage_options = options;
    reader_options.wake_topic = Some(topic);
    let reader = Reader::open(reader_options).unwrap();
    wait_until("the wake queue", || {
        reader.metrics().value(&READER_WAKE_QUEUE_UP, &[]) == Some(1.0)
    });
    std::thread::sleep(Duration::from_secs(35));
    let sqs = |r: &Reader| r.metrics().sum(&READER_WAKE_QUEUE_REQUESTS, &[]);
    let (s3_before, sqs_before) = (storage.requests().total(), sqs(&reader));
    let counted = Instant::now();
    std::thread::sleep(Duration::from_secs(60));
    let secs = counted.elapsed().as_secs_f64();
    let s3 = (storage.requests().total() - s3_before) as f64 / secs;
    let queue = (sqs(&reader) - sqs_before) / secs;
    println!(
        "| on the emulator, with a wake topic: idle reader host, 16 partitions, 60 s after 35 s of quiet | {s3:.3} req/s to the bucket, {queue:.3} to the queue | {:.2} |",
        (s3 * GET_PRICE + queue * SQS_PRICE) * MONTH
    );
    let key = key_in(5, partitions);
    let started = Instant::now();
    rt.block_on(writer.upsert_fields(doc(&key, 1))).unwrap();
    let acked = started.elapsed();
    while reader.get(key.as_bytes(), "v").unwrap() != Some(FieldValue::Int64(1)) {
        std::thread::sleep(Duration::from_millis(1));
    }
    println!(
        "| on the emulator, with a wake topic: the first write after the quiet spell, call → applied by the host | {:.0} ms ({:.0} ms to acknowledge) | |",
        started.elapsed().as_secs_f64() * 1000.0,
        acked.as_secs_f64() * 1000.0
    );
    reader.shutdown().unwrap();
}
