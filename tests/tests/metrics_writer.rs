//! The writer's metrics mean what they say: commits and operations equal what was
//! acknowledged, a lost race and a tip search are counted when they happen, refusals by
//! status, storage requests equal an independent counter's; `GET /metrics` serves them in
//! Prometheus's format (or not, when turned off); a Lambda invocation's embedded-metric line
//! is valid and says what that invocation did.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use ikv_core::bucket::{Path, create_store};
use ikv_core::clock::Clock;
use ikv_core::metrics::catalog::*;
use ikv_core::metrics::emf;
use ikv_core::{FieldValue, Operation, Storage, StoreConfig};
use ikv_tests::counting::{CountingStore, CountsOf};
use ikv_tests::faulty::{FaultyStore, PutFault};
use ikv_tests::stepping_clock::SteppingClock;
use ikv_writer::service::auth::{Accounts, hash_passkey};
use ikv_writer::service::{ServiceState, router};
use ikv_writer::{CommitPolicy, Writer, WriterOptions};
use object_store::memory::InMemory;
use serde_json::json;
use tower::ServiceExt;

const PASSKEY: &str = "metrics-passkey-0123456789abcdef";

fn upsert(id: &str) -> Operation {
    Operation::UpsertFields(
        ikv_core::Document::new()
            .with("id", FieldValue::String(id.into()))
            .with("n", FieldValue::Int64(1)),
    )
}

#[tokio::test]
async fn a_lost_race_and_a_tip_search_are_counted_where_they_happen() {
    let storage = Storage::memory();
    create_store(&storage, &StoreConfig::new("s", "id", None, 1).unwrap())
        .await
        .unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SteppingClock::new());
    let open = || {
        Writer::open(
            storage.clone(),
            "s",
            WriterOptions {
                clock: Some(clock.clone()),
                ..WriterOptions::default()
            },
        )
    };
    let (a, b) = (open().await.unwrap(), open().await.unwrap());
    // B learns the tip (a search: it knows nothing) and commits 1.
    b.write(&[upsert("x")]).await.unwrap();
    // A searches too, finds 1, commits 2.
    a.write(&[upsert("y"), upsert("z")]).await.unwrap();
    // B, busy (its tip is fresh on the clock), tries 2, loses to A, commits 3.
    let receipt = b.write(&[upsert("w")]).await.unwrap();
    assert_eq!(receipt.commits[0].sequence, 3);
    let (ma, mb) = (a.metrics(), b.metrics());
    let at = [("store", "s")];
    assert_eq!(mb.value(&WRITER_LOST_RACES, &at), Some(1.0));
    assert_eq!(ma.value(&WRITER_LOST_RACES, &at), Some(0.0));
    assert_eq!(mb.value(&WRITER_TIP_SEARCHES, &at), Some(1.0));
    assert_eq!(ma.value(&WRITER_TIP_SEARCHES, &at), Some(1.0));
    assert_eq!(mb.value(&WRITER_COMMITS, &at), Some(2.0));
    assert_eq!(ma.value(&WRITER_COMMITS, &at), Some(1.0));
    assert_eq!(ma.value(&WRITER_OPERATIONS, &at), Some(2.0));
    assert_eq!(
        mb.value(&WRITER_COMMIT_SECONDS, &at),
        Some(2.0),
        "two timed commits"
    );
    assert!(ma.value(&WRITER_COMMIT_BYTES, &at).unwrap() > 0.0);
    assert_eq!(mb.value(&WRITER_COMMIT_FAILURES, &at), Some(0.0));
    // Flushing writes the pending hint: one publish (or more, if the background task was
    // first), counted.
    b.flush_hints().await;
    assert!(b.metrics().value(&WRITER_TIP_HINT_PUBLISHES, &at).unwrap() >= 1.0);
}

#[tokio::test]
async fn a_hint_read_and_a_failed_commit_are_counted() {
    let faulty = Arc::new(FaultyStore::new(Arc::new(InMemory::new())));
    let storage = Storage::new(faulty.clone(), Path::from("root"), "memory://faults");
    create_store(&storage, &StoreConfig::new("s", "id", None, 1).unwrap())
        .await
        .unwrap();
    let clock = Arc::new(SteppingClock::new());
    let shared: Arc<dyn Clock> = clock.clone();
    let writer = Writer::open(
        storage.clone(),
        "s",
        WriterOptions {
            clock: Some(shared),
            commit_policy: CommitPolicy {
                max_transient_failures: 1,
                ..CommitPolicy::default()
            },
            ..WriterOptions::default()
        },
    )
    .await
    .unwrap();
    let at = [("store", "s")];
    writer.write(&[upsert("a")]).await.unwrap();
    assert_eq!(
        writer.metrics().value(&WRITER_TIP_HINT_READS, &at),
        Some(0.0)
    );
    // Idle past a second: the next commit reads the partition's tip hint first.
    clock.advance(Duration::from_secs(2));
    writer.write(&[upsert("b")]).await.unwrap();
    assert_eq!(
        writer.metrics().value(&WRITER_TIP_HINT_READS, &at),
        Some(1.0)
    );
    // Two PUTs that fail without landing exhaust a policy of one retry: the call fails,
    // and so does the count.
    faulty.inject("deltas/", PutFault::FailBeforeLanding);
    faulty.inject("deltas/", PutFault::FailBeforeLanding);
    assert!(writer.write(&[upsert("c")]).await.is_err());
    let m = writer.metrics();
    assert_eq!(m.value(&WRITER_COMMIT_FAILURES, &at), Some(1.0));
    assert_eq!(m.value(&WRITER_COMMITS, &at), Some(2.0));
    assert_eq!(
        m.value(&WRITER_OPERATIONS, &at),
        Some(2.0),
        "the failed call's is not counted"
    );
    writer.write(&[upsert("d")]).await.unwrap();
    assert_eq!(writer.metrics().value(&WRITER_COMMITS, &at), Some(3.0));
}

struct Service {
    app: axum::Router,
    state: Arc<ServiceState>,
    counts: Arc<CountingStore>,
}

async fn service(metrics_route: bool) -> Service {
    // An independent counter under the storage root's own.
    let counts = Arc::new(CountingStore::new(Arc::new(InMemory::new())));
    let storage = Storage::new(counts.clone(), Path::from("root"), "memory://metrics");
    create_store(&storage, &StoreConfig::new("users", "id", None, 2).unwrap())
        .await
        .unwrap();
    let accounts = Accounts::from_json(&format!(
        r#"{{"accounts":[{{"account_id":"acme","passkey_hash":"{}","stores":["users"]}}]}}"#,
        hash_passkey(PASSKEY).unwrap()
    ))
    .unwrap();
    let mut state = ServiceState::new(storage, accounts, WriterOptions::default());
    if !metrics_route {
        state = state.without_metrics_route();
    }
    let state = Arc::new(state);
    Service {
        app: router(state.clone()),
        state,
        counts,
    }
}

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    passkey: &str,
    body: String,
) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .header("x-ikv-account-id", "acme")
        .header("x-ikv-account-passkey", passkey)
        .body(Body::from(body))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// The value of one Prometheus text line `name{labels} value`.
fn scraped(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_are_served_with_commits_refusals_and_requests_as_counted() {
    let svc = service(true).await;
    let w = "/v1/stores/users/operations";
    let mut commits = 0usize;
    let mut operations = 0usize;
    for i in 0..6 {
        let ops: Vec<_> = (0..=i % 3)
            .map(|j| json!({"op": "upsert_fields", "document": {"id": {"string": format!("k{i}-{j}")}, "v": {"int64": i}}}))
            .collect();
        operations += ops.len();
        let (status, body) = call(
            &svc.app,
            "POST",
            w,
            PASSKEY,
            json!({"operations": ops}).to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let got: serde_json::Value = serde_json::from_str(&body).unwrap();
        commits += got["commits"].as_array().unwrap().len();
    }
    let (status, _) = call(
        &svc.app,
        "POST",
        w,
        "wrong-passkey-0123456789abcdef",
        "{}".into(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(&svc.app, "POST", w, PASSKEY, "{not json".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(&svc.app, "POST", w, PASSKEY, "{also not".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    svc.state.flush_hints().await;

    // Background hint PUTs may land between the scrape and the independent count: take a
    // scrape that both counts of PUTs enclose.
    let mut text = String::new();
    for _ in 0..50 {
        let before = svc.counts.counts().puts;
        let (status, body) = call(&svc.app, "GET", "/metrics", "", String::new()).await;
        assert_eq!(status, StatusCode::OK);
        if svc.counts.counts().puts == before {
            text = body;
            break;
        }
    }
    assert!(!text.is_empty(), "no quiet moment to compare counts in");
    assert!(
        text.contains("# TYPE ikv_writer_commits_total counter"),
        "{text}"
    );
    assert_eq!(
        scraped(&text, r#"ikv_writer_commits_total{store="users"}"#),
        Some(commits as f64)
    );
    assert_eq!(
        scraped(&text, r#"ikv_writer_operations_total{store="users"}"#),
        Some(operations as f64)
    );
    assert_eq!(
        scraped(&text, r#"ikv_writer_commit_seconds_count{store="users"}"#),
        Some(commits as f64)
    );
    assert_eq!(
        scraped(
            &text,
            r#"ikv_writer_refusals_total{code="401",error="unauthorized"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        scraped(
            &text,
            r#"ikv_writer_refusals_total{code="400",error="invalid_json"}"#
        ),
        Some(2.0)
    );
    let requests = |kind: &str| -> f64 {
        ["ok", "not_found", "precondition", "error"]
            .iter()
            .filter_map(|o| {
                scraped(
                    &text,
                    &format!(r#"ikv_storage_requests_total{{component="writer",kind="{kind}",outcome="{o}"}}"#),
                )
            })
            .sum()
    };
    // The store's creation went through the same root before the service started.
    assert_eq!(requests("put"), svc.counts.counts().puts as f64);
    assert_eq!(requests("get"), svc.counts.counts().gets as f64);
    assert_eq!(requests("list"), svc.counts.counts().lists as f64);
    assert!(!text.contains(PASSKEY), "nothing secret in the metrics");
}

#[tokio::test]
async fn the_metrics_route_can_be_turned_off() {
    let svc = service(false).await;
    let (status, _) = call(&svc.app, "GET", "/metrics", "", String::new()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Refusals are still counted for the other faces.
    assert_eq!(
        svc.state
            .metrics()
            .await
            .value(&WRITER_REFUSALS, &[("code", "404")]),
        Some(1.0)
    );
}

#[tokio::test]
async fn an_invocations_embedded_metric_line_says_what_it_did() {
    let svc = service(true).await;
    let body =
        json!({"operations": [{"op": "upsert_fields", "document": {"id": {"string": "a"}, "v": {"int64": 1}}}]}).to_string();
    let (status, _) = call(
        &svc.app,
        "POST",
        "/v1/stores/users/operations",
        PASSKEY,
        body.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let first = svc
        .state
        .emf_line("users")
        .await
        .expect("a line after a write");
    let v = emf::check(&first).unwrap();
    assert_eq!(v["store"], "users");
    assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Namespace"], "ikv");
    assert_eq!(v["ikv_writer_commits_total"], 1.0);
    assert_eq!(v["ikv_writer_operations_total"], 1.0);
    assert_eq!(v["ikv_writer_commit_seconds.count"], 1);
    assert!(
        v["ikv_storage_requests_total.writer.put.ok"]
            .as_f64()
            .unwrap()
            >= 1.0
    );
    // The next invocation's line holds only what it added.
    call(
        &svc.app,
        "POST",
        "/v1/stores/users/operations",
        PASSKEY,
        body,
    )
    .await;
    let second = emf::check(&svc.state.emf_line("users").await.unwrap()).unwrap();
    assert_eq!(second["ikv_writer_commits_total"], 1.0);
    // Nothing happened since: no line.
    svc.state.flush_hints().await;
    let _ = svc.state.emf_line("users").await;
    assert_eq!(svc.state.emf_line("users").await, None);
}
