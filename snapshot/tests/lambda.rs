//! The Lambda face: a real EventBridge scheduled event, through lambda_runtime's service
//! adapter, runs one pass and answers with its summary.

use ikv_core::bucket::create_store;
use ikv_core::{Document, FieldValue, Storage, StoreConfig, StoreLayout};
use ikv_snapshot::{SnapshotOptions, handle_scheduled_event};
use ikv_snapshot_format::Manifest;
use ikv_writer::{Writer, WriterOptions};
use lambda_runtime::{Context, LambdaEvent, Service, service_fn};

const SCHEDULED_EVENT: &str = r#"{
  "version": "0",
  "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
  "detail-type": "Scheduled Event",
  "source": "aws.events",
  "account": "123456789012",
  "time": "2026-11-26T17:00:00Z",
  "region": "us-east-1",
  "resources": ["arn:aws:events:us-east-1:123456789012:rule/ikv-snapshot"],
  "detail": {}
}"#;

/// Store `name` created with `partitions` partitions and `documents` one-field documents.
async fn store_with_documents(storage: &Storage, name: &str, partitions: u32, documents: u32) {
    create_store(
        storage,
        &StoreConfig::new(name, "id", None, partitions).unwrap(),
    )
    .await
    .unwrap();
    let writer = Writer::open(storage.clone(), name, WriterOptions::default())
        .await
        .unwrap();
    for i in 0..documents {
        writer
            .upsert_fields(Document::new().with("id", FieldValue::String(format!("k{i}"))))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_scheduled_event_runs_a_pass() {
    let storage = Storage::memory();
    store_with_documents(&storage, "users", 2, 20).await;
    let options = SnapshotOptions {
        force: true,
        ..SnapshotOptions::default()
    };
    let mut handler = service_fn(|event: LambdaEvent<serde_json::Value>| {
        let (storage, options) = (storage.clone(), options.clone());
        async move { handle_scheduled_event(&storage, &[], &options, &event.payload).await }
    });
    let event: serde_json::Value = serde_json::from_str(SCHEDULED_EVENT).unwrap();
    let answer = handler
        .call(LambdaEvent::new(event, Context::default()))
        .await
        .unwrap();
    let summary: Vec<String> = serde_json::from_value(answer["summary"].clone()).unwrap();
    assert_eq!(summary.len(), 2, "{summary:?}");
    assert!(
        summary
            .iter()
            .all(|l| l.starts_with("users p") && l.contains("snapshot at")),
        "{summary:?}"
    );
    let layout = StoreLayout::new(&storage.prefix, "users").unwrap();
    let mut rows = 0;
    for p in 0..2 {
        rows += Manifest::load_newest(&storage, &layout, p)
            .await
            .unwrap()
            .map_or(0, |m| m.row_count);
    }
    assert_eq!(rows, 20);
}

/// Every partition of the two stores of the planned-pass test, in plan order.
const EVERY_PARTITION: [(&str, u32); 5] = [
    ("items", 0),
    ("items", 1),
    ("users", 0),
    ("users", 1),
    ("users", 2),
];

/// A planned pass: the plan event groups every partition of every store into tasks (a tiny
/// budget: one partition a task here), compacting nothing; each task's work event compacts
/// exactly its partitions. Malformed plans and work are refused by name.
#[tokio::test]
async fn a_plan_covers_every_partition_and_each_task_compacts_exactly_its_own() {
    let storage = Storage::memory();
    for (store, partitions) in [("users", 3), ("items", 2)] {
        store_with_documents(&storage, store, partitions, 30).await;
    }
    let options = SnapshotOptions {
        force: true,
        ..SnapshotOptions::default()
    };
    let call = |event: serde_json::Value| {
        let (storage, options) = (storage.clone(), options.clone());
        async move { handle_scheduled_event(&storage, &[], &options, &event).await }
    };
    let snapshots = |store: &'static str, p: u32| {
        let storage = storage.clone();
        async move {
            let layout = StoreLayout::new(&storage.prefix, store).unwrap();
            Manifest::load_newest(&storage, &layout, p).await.unwrap()
        }
    };

    // Budget below any partition's estimate: each partition alone.
    let answer = call(serde_json::json!({"plan": {"task_seconds": "0.000001"}}))
        .await
        .unwrap();
    let tasks = answer["tasks"].as_array().unwrap().clone();
    let mut planned: Vec<(String, u64)> = tasks
        .iter()
        .flat_map(|t| t["work"].as_array().unwrap().clone())
        .map(|w| {
            (
                w["store"].as_str().unwrap().to_owned(),
                w["partition"].as_u64().unwrap(),
            )
        })
        .collect();
    planned.sort();
    let want: Vec<(String, u64)> = EVERY_PARTITION
        .iter()
        .map(|(s, p)| (s.to_string(), u64::from(*p)))
        .collect();
    assert_eq!(planned, want, "every partition of every store, once");
    assert_eq!(tasks.len(), 5);
    assert!(
        snapshots("users", 0).await.is_none(),
        "a plan compacts nothing"
    );

    // A generous budget: one task holds them all.
    let one = call(serde_json::json!({"plan": true})).await.unwrap();
    assert_eq!(one["tasks"].as_array().unwrap().len(), 1, "{one}");

    // Each task compacts its own partitions and no other.
    let first = tasks[0]["work"].clone();
    let summary = call(serde_json::json!({"work": first})).await.unwrap();
    assert_eq!(summary["summary"].as_array().unwrap().len(), 1, "{summary}");
    let (store, p) = (
        first[0]["store"].as_str().unwrap(),
        first[0]["partition"].as_u64().unwrap() as u32,
    );
    let mut done = 0;
    for (s, q) in EVERY_PARTITION {
        let has = snapshots(s, q).await.is_some();
        assert_eq!(
            has,
            s == store && q == p,
            "{s} p{q} after the task of {store} p{p}"
        );
        done += has as u32;
    }
    assert_eq!(done, 1);
    for task in &tasks[1..] {
        call(serde_json::json!({"work": task["work"].clone()}))
            .await
            .unwrap();
    }
    for (s, q) in EVERY_PARTITION {
        assert!(snapshots(s, q).await.is_some(), "{s} p{q} after every task");
    }

    for (event, names) in [
        (serde_json::json!({"plan": "soon"}), "plan"),
        (
            serde_json::json!({"plan": {"task_seconds": -1}}),
            "task_seconds",
        ),
        (serde_json::json!({"plan": {"budget": 5}}), "plan"),
        (serde_json::json!({"work": [{"store": "users"}]}), "work"),
        (
            serde_json::json!({"work": [{"store": "users", "partition": 9}]}),
            "no partition 9",
        ),
        (
            serde_json::json!({"work": [{"store": "users", "partition": 0}], "shard": "0/2"}),
            "both work and a shard",
        ),
    ] {
        let err = call(event.clone()).await.unwrap_err();
        assert!(err.to_string().contains(names), "{event}: {err}");
    }
}
