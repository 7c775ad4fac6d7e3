//! The Lambda face: real Function URL and API Gateway v2 (HTTP API) event JSON goes through
//! lambda_http's adapter into the same router; the Lambda response carries status and body.

use std::sync::Arc;

use base64::Engine;
use ikv_core::bucket::{create_store, list_delta_seqs};
use ikv_core::{Storage, StoreConfig, StoreLayout};
use ikv_writer::WriterOptions;
use ikv_writer::service::auth::{Accounts, hash_passkey};
use ikv_writer::service::{ServiceState, router};
use lambda_http::lambda_runtime::{Context, LambdaEvent};
use lambda_http::request::LambdaRequest;
use lambda_http::{Adapter, Service};
use serde_json::{Value, json};

const PASSKEY: &str = "lambda-passkey-0123456789abcdef";

async fn setup() -> (Storage, axum::Router) {
    let storage = Storage::memory();
    create_store(
        &storage,
        &StoreConfig::new("users", "userid", None, 1).unwrap(),
    )
    .await
    .unwrap();
    let accounts = Accounts::from_json(&format!(
        r#"{{"accounts":[{{"account_id":"acme","passkey_hash":"{}","stores":["users"]}}]}}"#,
        hash_passkey(PASSKEY).unwrap()
    ))
    .unwrap();
    let app = router(Arc::new(ServiceState::new(
        storage.clone(),
        accounts,
        WriterOptions::default(),
    )));
    (storage, app)
}

/// A payload-2.0 event as a Function URL (`route_key` "$default", lambda-url domain) or an
/// HTTP API (`route_key` "POST /v1/...", execute-api domain) delivers it.
fn event(
    route_key: &str,
    domain: &str,
    method: &str,
    path: &str,
    passkey: &str,
    body: Option<(&str, bool)>,
) -> Value {
    let mut e = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": "",
        "headers": {
            "content-type": "application/json",
            "host": domain,
            "user-agent": "ikv-test",
            "x-amzn-trace-id": "Root=1-5e6b4a2e-1d8b4b6c3d3c3a2a1a0a9a8a",
            "x-forwarded-proto": "https",
            "x-ikv-account-id": "acme",
            "x-ikv-account-passkey": passkey
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": domain.split('.').next().unwrap(),
            "domainName": domain,
            "domainPrefix": domain.split('.').next().unwrap(),
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "ikv-test"
            },
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "routeKey": route_key,
            "stage": "$default",
            "time": "26/Nov/2026:17:00:00 +0000",
            "timeEpoch": 1795712400000u64
        },
        "isBase64Encoded": false
    });
    if let Some((body, base64)) = body {
        e["isBase64Encoded"] = json!(base64);
        e["body"] = json!(if base64 {
            base64::engine::general_purpose::STANDARD.encode(body)
        } else {
            body.to_owned()
        });
    }
    e
}

async fn invoke(app: &axum::Router, event: Value) -> (u16, Value) {
    let request: LambdaRequest = serde_json::from_value(event).unwrap();
    let mut adapter = Adapter::from(app.clone());
    let response = adapter
        .call(LambdaEvent::new(request, Context::default()))
        .await
        .unwrap();
    let out = serde_json::to_value(&response).unwrap();
    let status = out["statusCode"].as_u64().unwrap() as u16;
    let body = out["body"].as_str().unwrap_or("null");
    (status, serde_json::from_str(body).unwrap())
}

const WRITE: &str =
    r#"{"operations":[{"op":"upsert_fields","document":{"userid":{"string":"Alice"}}}]}"#;
const FUNCTION_URL: &str = "abcdefghij.lambda-url.us-east-1.on.aws";
const HTTP_API: &str = "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com";

#[tokio::test]
async fn function_url_events_write_and_answer() {
    let (storage, app) = setup().await;
    let path = "/v1/stores/users/operations";
    let (status, body) = invoke(
        &app,
        event(
            "$default",
            FUNCTION_URL,
            "POST",
            path,
            PASSKEY,
            Some((WRITE, false)),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["commits"][0]["sequence"], 1);
    // Function URLs may deliver the body base64-encoded.
    let (status, body) = invoke(
        &app,
        event(
            "$default",
            FUNCTION_URL,
            "POST",
            path,
            PASSKEY,
            Some((WRITE, true)),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["commits"][0]["sequence"], 2);
    let layout = StoreLayout::new(&storage.prefix, "users").unwrap();
    assert_eq!(
        list_delta_seqs(&storage, &layout, 0).await.unwrap(),
        vec![1, 2]
    );
}

#[tokio::test]
async fn http_api_events_write_and_refuse() {
    let (storage, app) = setup().await;
    let path = "/v1/stores/users/operations";
    let route = "POST /v1/stores/{store}/operations";
    let (status, body) = invoke(
        &app,
        event(route, HTTP_API, "POST", path, PASSKEY, Some((WRITE, false))),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = invoke(
        &app,
        event(
            route,
            HTTP_API,
            "POST",
            path,
            "wrong-passkey-000000000000",
            Some((WRITE, false)),
        ),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, body) = invoke(
        &app,
        event(route, HTTP_API, "POST", path, PASSKEY, Some(("{", false))),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_json");
    let (status, body) = invoke(
        &app,
        event("GET /health", HTTP_API, "GET", "/health", PASSKEY, None),
    )
    .await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    let layout = StoreLayout::new(&storage.prefix, "users").unwrap();
    assert_eq!(
        list_delta_seqs(&storage, &layout, 0).await.unwrap(),
        vec![1],
        "refused events wrote nothing"
    );
}
