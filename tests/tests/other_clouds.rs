//! Azure Blob Storage on its emulator, Azurite (`emulators/azurite.sh` starts it, no Docker): a
//! conditional create's atomicity measured under a race (docs/CLOUDS.md states what was
//! found), and racing writers leaving a dense log holding every acknowledged batch once. The
//! model test (writer, compactor, readers) runs on it in `reader_model.rs`.

use std::collections::HashMap;

use bytes::Bytes;
use ikv_core::bucket::{Created, create_if_absent, create_store, list_delta_seqs, read_delta};
use ikv_core::delta::decode_delta;
use ikv_core::{DeltaOp, Document, FieldValue, Operation, StoreConfig, StoreLayout};
use ikv_tests::azurite_storage;
use ikv_writer::{Writer, WriterOptions};
use object_store::path::Path;

const WRITERS: usize = 4;
const BATCHES: usize = 40;

/// `rounds` rounds of `racers` concurrent conditional creates of one fresh key each; returns
/// how many rounds had exactly one winner (the others must have been told it exists).
async fn race_creates(rounds: usize, racers: usize) -> usize {
    let (_, storage) = azurite_storage().await;
    let mut single_winner = 0;
    for round in 0..rounds {
        let path = storage
            .prefix
            .clone()
            .join(format!("race-{round}").as_str());
        let attempts = (0..racers).map(|r| {
            let storage = storage.clone();
            let path: Path = path.clone();
            tokio::spawn(async move {
                create_if_absent(&storage, &path, Bytes::from(format!("racer {r}"))).await
            })
        });
        let answers = futures::future::join_all(attempts).await;
        let created = answers
            .into_iter()
            .map(|a| a.expect("task").expect("an answer"))
            .filter(|a| *a == Created::Created)
            .count();
        if created == 1 {
            single_winner += 1;
        }
    }
    single_winner
}

async fn racing_writers_leave_a_dense_log() {
    let (_, storage) = azurite_storage().await;
    create_store(&storage, &StoreConfig::new("race", "id", None, 1).unwrap())
        .await
        .unwrap();
    let layout = StoreLayout::new(&storage.prefix, "race").unwrap();
    let tasks = (0..WRITERS).map(|w| {
        let storage = storage.clone();
        tokio::spawn(async move {
            let writer = Writer::open(storage, "race", WriterOptions::default())
                .await
                .unwrap();
            for n in 0..BATCHES {
                let doc = Document::new()
                    .with("id", FieldValue::String(format!("w{w}-b{n:04}")))
                    .with("n", FieldValue::Int64(n as i64));
                writer
                    .write(&[Operation::UpsertFields(doc)])
                    .await
                    .expect("an acknowledged write");
            }
        })
    });
    for t in futures::future::join_all(tasks).await {
        t.unwrap();
    }
    let seqs = list_delta_seqs(&storage, &layout, 0).await.unwrap();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "dense");
    let mut seen: HashMap<String, u64> = HashMap::new();
    for seq in seqs {
        let bytes = read_delta(&storage, &layout, 0, seq)
            .await
            .unwrap()
            .unwrap();
        for op in decode_delta(&bytes, "delta").unwrap().ops {
            if let DeltaOp::SetField { key, field, .. } = op
                && field == "id"
            {
                let key = String::from_utf8(key).unwrap();
                assert!(seen.insert(key.clone(), seq).is_none(), "{key} twice");
            }
        }
    }
    assert_eq!(
        seen.len(),
        WRITERS * BATCHES,
        "every acknowledged batch landed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azurite_conditional_creates_and_racing_writers() {
    let winners = race_creates(20, 6).await;
    println!("Azurite: {winners} of 20 rounds of 6 racers had exactly one winner");
    assert_eq!(winners, 20, "Azurite made a conditional create win twice");
    racing_writers_leave_a_dense_log().await;
}
