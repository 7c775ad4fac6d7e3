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

#[tokio::test]
async fn a_scheduled_event_runs_a_pass() {
    let storage = Storage::memory();
    create_store(&storage, &StoreConfig::new("users", "id", None, 2).unwrap())
        .await
        .unwrap();
    let writer = Writer::open(storage.clone(), "users", WriterOptions::default())
        .await
        .unwrap();
    for i in 0..20 {
        writer
            .upsert_fields(Document::new().with("id", FieldValue::String(format!("k{i}"))))
            .await
            .unwrap();
    }
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
