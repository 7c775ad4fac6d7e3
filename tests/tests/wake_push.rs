//! The push path on the S3 emulator (with its SQS and SNS): `prepare_bucket` is idempotent,
//! and a reader host given the bucket's wake topic applies the first write after a quiet spell
//! although its poller's next check is an hour away (simulated time that nobody moves): only
//! the message on its queue can have woken it. At shutdown its queue is removed.

use std::sync::Arc;
use std::time::Duration;

use ikv_core::bucket::create_store;
use ikv_core::clock::{Clock, ManualClock, wall_time};
use ikv_core::metrics::catalog::{READER_QUIET_PARTITIONS, READER_WAKE_QUEUE_UP};
use ikv_core::{StorageOptions, StoreConfig};
use ikv_reader::{Reader, ReaderOptions};
use ikv_tests::fixture::{doc_v as doc, key_in, wait_until};
use ikv_tests::{localstack_storage_at, s3_endpoint};
use ikv_writer::{Writer, WriterOptions};

/// A bucket of its own: the wake notification is one per bucket, and other tests' prefixes
/// must not replace it.
const BUCKET: &str = "ikv-push-test";

fn emulator_options() -> StorageOptions {
    StorageOptions::default()
        .with("aws_endpoint", s3_endpoint())
        .with("aws_region", "us-east-1")
        .with("aws_access_key_id", "test")
        .with("aws_secret_access_key", "test")
}

#[test]
fn a_prepared_bucket_wakes_a_quiet_host_through_its_queue() {
    let rt = ikv_tests::runtime();
    // The emulator creates a bucket on an unsigned PUT (as localstack.sh does).
    rt.block_on(async {
        reqwest::Client::new()
            .put(format!("{}/{BUCKET}", s3_endpoint()))
            .send()
            .await
            .expect("the S3 emulator is running (scripts/test.sh starts it)")
    });
    let prefix = format!("t-{}", uuid::Uuid::new_v4().simple());
    let config = rt.block_on(ikv_aws::sdk_config(&emulator_options()));
    let prepared = rt
        .block_on(ikv_aws::prepare::prepare_bucket(
            &config, BUCKET, &prefix, true,
        ))
        .unwrap();
    assert!(prepared.notification_written, "{prepared:?}");
    let topic = prepared.wake_topic.clone().unwrap();
    let again = rt
        .block_on(ikv_aws::prepare::prepare_bucket(
            &config, BUCKET, &prefix, true,
        ))
        .unwrap();
    assert_eq!(
        (again.lifecycle_written, again.notification_written),
        (false, false),
        "a second run finds everything in place"
    );
    assert_eq!(again.wake_topic.as_deref(), Some(topic.as_str()));

    let url = format!("s3://{BUCKET}/{prefix}");
    let partitions = 2;
    let storage = localstack_storage_at(&url, false);
    rt.block_on(create_store(
        &storage,
        &StoreConfig::new("s", "id", None, partitions).unwrap(),
    ))
    .unwrap();
    let start = wall_time();
    let writer_clock = ManualClock::new(start);
    let writer = rt
        .block_on(Writer::open(
            localstack_storage_at(&url, true),
            "s",
            WriterOptions {
                clock: Some(writer_clock.clone() as Arc<dyn Clock>),
                ..WriterOptions::default()
            },
        ))
        .unwrap();
    let keys: Vec<String> = (0..partitions).map(|p| key_in(p, partitions)).collect();
    for k in &keys {
        rt.block_on(writer.upsert_fields(doc(k, 0))).unwrap();
    }
    let clock = ManualClock::new(start);
    let mount = tempfile::tempdir().unwrap();
    let mut options = ReaderOptions::new(&url, "s", mount.path());
    options.storage_options = emulator_options();
    options.clock = clock.clone();
    options.background_nice = 0;
    options.idle_poll_interval = Duration::from_secs(3600);
    options.wake_topic = Some(topic);
    let queues_before = rt.block_on(ikv_aws::wake_queue::queues(&config)).unwrap();
    let reader = Reader::open(options).unwrap();
    wait_until("the wake queue is subscribed", || {
        reader.metrics().value(&READER_WAKE_QUEUE_UP, &[]) == Some(1.0)
    });
    // 40 simulated seconds of polls: both partitions turn quiet.
    wait_until("the first poll", || !clock.sleeps().is_empty());
    let mut passed = Duration::ZERO;
    while passed < Duration::from_secs(40) {
        let sleeps = clock.sleeps();
        let wait = *sleeps.last().unwrap();
        clock.advance(wait);
        writer_clock.advance(wait);
        passed += wait;
        wait_until("the next poll", || clock.sleeps().len() > sleeps.len());
    }
    assert_eq!(
        reader.metrics().value(&READER_QUIET_PARTITIONS, &[]),
        Some(2.0)
    );
    let next = *clock.sleeps().last().unwrap();
    assert!(next >= Duration::from_secs(3600), "quiet: {next:?}");
    // A write after the quiet spell: the writer replaces the signal, the bucket notifies the
    // topic, the topic the host's queue; the host checks the signal and polls.
    let simulated = clock.elapsed();
    rt.block_on(writer.upsert_fields(doc(&keys[1], 1))).unwrap();
    wait_until("the pushed host applied the write", || {
        reader.status()[1].applied_sequence == 2
    });
    assert_eq!(
        clock.elapsed(),
        simulated,
        "no check or poll came due: the host's clock never moved"
    );
    reader.stop().unwrap();
    assert_eq!(
        reader.metrics().value(&READER_WAKE_QUEUE_UP, &[]),
        Some(0.0)
    );
    let after = rt.block_on(ikv_aws::wake_queue::queues(&config)).unwrap();
    assert_eq!(after, queues_before, "the host removed its queue");
    reader.shutdown().unwrap();
}
