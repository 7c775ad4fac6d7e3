//! Against the local S3 emulator: 8 concurrent writers × 500 batches on one partition leave a
//! dense log holding every batch exactly once, in each writer's order; directly and through
//! the HTTP service.

use std::collections::HashMap;
use std::sync::Arc;

use ikv_core::bucket::{create_store, list_delta_seqs, read_delta};
use ikv_core::delta::decode_delta;
use ikv_core::{DeltaOp, Document, FieldValue, Operation, Storage, StoreConfig, StoreLayout};
use ikv_tests::localstack_storage;
use ikv_writer::client::HttpWriterClient;
use ikv_writer::service::auth::{Accounts, hash_passkey};
use ikv_writer::service::{ServiceState, serve};
use ikv_writer::{Writer, WriterOptions};

const WRITERS: usize = 8;
const BATCHES: usize = 500;
const PASSKEY: &str = "race-test-passkey-0123456789";

fn batch(writer: usize, n: usize) -> Vec<Operation> {
    vec![Operation::UpsertFields(
        Document::new()
            .with("id", FieldValue::String(format!("w{writer}-b{n:04}")))
            .with("n", FieldValue::Int64(n as i64)),
    )]
}

/// Reads the whole log; asserts it is dense from 1; returns (sequence, keys) per delta.
async fn read_log(storage: &Storage, layout: &StoreLayout) -> Vec<(u64, Vec<String>)> {
    let seqs = list_delta_seqs(storage, layout, 0).await.unwrap();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "the log is dense"
    );
    let mut log = Vec::new();
    for seq in seqs {
        let bytes = read_delta(storage, layout, 0, seq).await.unwrap().unwrap();
        let keys = decode_delta(&bytes, "delta")
            .unwrap()
            .ops
            .into_iter()
            .filter_map(|op| match op {
                DeltaOp::SetField { key, field, .. } if field == "id" => {
                    Some(String::from_utf8(key).unwrap())
                }
                _ => None,
            })
            .collect();
        log.push((seq, keys));
    }
    log
}

/// Every batch exactly once, and each writer's batches in the order it wrote them.
fn assert_every_batch_once_in_order(log: &[(u64, Vec<String>)]) {
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut last_per_writer: HashMap<String, usize> = HashMap::new();
    for (seq, keys) in log {
        for key in keys {
            assert!(
                seen.insert(key.clone(), *seq).is_none(),
                "{key} committed twice"
            );
            let (writer, n) = key.split_once("-b").unwrap();
            let n: usize = n.parse().unwrap();
            if let Some(prev) = last_per_writer.insert(writer.to_owned(), n) {
                assert!(n > prev, "{writer}: batch {n} landed after batch {prev}");
            }
        }
    }
    assert_eq!(seen.len(), WRITERS * BATCHES, "every batch landed");
}

async fn new_store(storage: &Storage) -> StoreLayout {
    let config = StoreConfig::new("race", "id", None, 1).unwrap();
    create_store(storage, &config).await.unwrap();
    StoreLayout::new(&storage.prefix, "race").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_direct_writers_leave_a_dense_log_of_every_batch_once() {
    let storage = localstack_storage(true).await;
    let layout = new_store(&storage).await;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        // Separate writers: separate tips, separate queues, racing for the same numbers.
        let writer = Writer::open(storage.clone(), "race", WriterOptions::default())
            .await
            .unwrap();
        tasks.spawn(async move {
            for n in 0..BATCHES {
                writer.write(&batch(w, n)).await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let log = read_log(&storage, &layout).await;
    assert_eq!(
        log.len(),
        WRITERS * BATCHES,
        "one delta per batch: 1..=4000"
    );
    assert_every_batch_once_in_order(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_http_clients_through_two_services_leave_a_dense_log_of_every_batch_once() {
    let storage = localstack_storage(true).await;
    let layout = new_store(&storage).await;
    let accounts_json = format!(
        r#"{{"accounts":[{{"account_id":"race","passkey_hash":"{}","stores":["race"]}}]}}"#,
        hash_passkey(PASSKEY).unwrap()
    );
    // Two service instances (two writers racing on the bucket), four clients each.
    let mut urls = Vec::new();
    let mut stops = Vec::new();
    for _ in 0..2 {
        let state = Arc::new(ServiceState::new(
            storage.clone(),
            Accounts::from_json(&accounts_json).unwrap(),
            WriterOptions::default(),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        urls.push(format!("http://{}", listener.local_addr().unwrap()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, state, async {
            let _ = stopped.await;
        }));
        stops.push(stop);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let client = HttpWriterClient::new(&urls[w % 2], "race", PASSKEY);
        tasks.spawn(async move {
            for n in 0..BATCHES {
                let response = client.write("race", &batch(w, n)).await.unwrap();
                assert_eq!(response.operations, 1);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let log = read_log(&storage, &layout).await;
    assert!(log.len() <= WRITERS * BATCHES);
    assert_every_batch_once_in_order(&log);
    for stop in stops {
        let _ = stop.send(());
    }
}
