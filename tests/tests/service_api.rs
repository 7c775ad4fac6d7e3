//! The HTTP API: every bad input gets the expected 4xx with a message naming the problem and
//! leaves the bucket unchanged (checked on the S3 emulator); authentication and authorization.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use ikv_core::bucket::create_store;
use ikv_core::{Storage, StoreConfig};
use ikv_tests::{bucket_contents, localstack_storage};
use ikv_writer::WriterOptions;
use ikv_writer::service::auth::{Accounts, hash_passkey};
use ikv_writer::service::{MAX_BODY_BYTES, ServiceState, router};
use serde_json::{Value, json};
use tower::ServiceExt;

const PASSKEY: &str = "acme-passkey-0123456789abcdef";
const OTHER_PASSKEY: &str = "other-passkey-0123456789abcdef";

async fn app(storage: &Storage) -> axum::Router {
    for (name, partitioning) in [("users", None), ("orders", None), ("geo", Some("country"))] {
        let config = StoreConfig::new(name, "userid", partitioning, 2).unwrap();
        create_store(storage, &config).await.unwrap();
    }
    let accounts = Accounts::from_json(&format!(
        r#"{{"accounts":[
            {{"account_id":"acme","passkey_hash":"{}","stores":["users","geo","missing"]}},
            {{"account_id":"other","passkey_hash":"{}","stores":["orders"]}}]}}"#,
        hash_passkey(PASSKEY).unwrap(),
        hash_passkey(OTHER_PASSKEY).unwrap()
    ))
    .unwrap();
    router(Arc::new(ServiceState::new(
        storage.clone(),
        accounts,
        WriterOptions::default(),
    )))
}

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    auth: Option<(&str, &str)>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some((id, key)) = auth {
        req = req
            .header("x-ikv-account-id", id)
            .header("x-ikv-account-passkey", key);
    }
    let response = app
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)}));
    (status, value)
}

fn ops(operations: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({ "operations": operations })).unwrap()
}

fn alice() -> Value {
    json!({"op": "upsert_fields", "document": {"userid": {"string": "Alice"}, "age": {"int64": 22}}})
}

const ACME: Option<(&str, &str)> = Some(("acme", PASSKEY));

/// (what, uri, credentials, body, expected status, error code, words of the message)
type Case<'a> = (
    &'a str,
    &'a str,
    Option<(&'a str, &'a str)>,
    Vec<u8>,
    StatusCode,
    &'a str,
    &'a str,
);

#[tokio::test]
async fn bad_requests_get_4xx_naming_the_problem_and_write_nothing() {
    let storage = localstack_storage(true).await;
    let app = app(&storage).await;
    let before = bucket_contents(&storage).await;
    let w = "/v1/stores/users/operations";
    let big = vec![b' '; MAX_BODY_BYTES + 1];
    let cases: Vec<Case> = vec![
        (
            "a reserved field name",
            w,
            ACME,
            ops(json!([{"op": "upsert_fields", "document": {"userid": {"string": "A"}, "_ikv_key": {"string": "x"}}}])),
            StatusCode::BAD_REQUEST,
            "invalid_document",
            "reserved for ikv's own columns",
        ),
        (
            "a field named twice in one document",
            w,
            ACME,
            br#"{"operations":[{"op":"upsert_fields","document":{"userid":{"string":"A"},"userid":{"string":"B"}}}]}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "duplicate field \"userid\" in a document",
        ),
        (
            "a reserved prefix dropped",
            w,
            ACME,
            ops(json!([{"op": "drop_fields_by_name_prefix", "field_name_prefixes": ["_ikv"]}])),
            StatusCode::BAD_REQUEST,
            "invalid_operation",
            "reserved",
        ),
        (
            "missing headers",
            w,
            None,
            ops(json!([alice()])),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing header x-ikv-account-id",
        ),
        (
            "a non-ASCII passkey",
            w,
            Some(("acme", "pässkey-0123456789abcdef")),
            ops(json!([alice()])),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown account or wrong passkey",
        ),
        (
            "missing passkey",
            w,
            Some(("acme", "")),
            ops(json!([alice()])),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown account or wrong passkey",
        ),
        (
            "wrong passkey",
            w,
            Some(("acme", OTHER_PASSKEY)),
            ops(json!([alice()])),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown account or wrong passkey",
        ),
        (
            "unknown account",
            w,
            Some(("nobody", PASSKEY)),
            ops(json!([alice()])),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown account",
        ),
        (
            "another account's store",
            "/v1/stores/orders/operations",
            ACME,
            ops(json!([alice()])),
            StatusCode::FORBIDDEN,
            "forbidden",
            "may not write to store \"orders\"",
        ),
        (
            "bad store name",
            "/v1/stores/..%2Fusers/operations",
            ACME,
            ops(json!([alice()])),
            StatusCode::BAD_REQUEST,
            "invalid_store_name",
            "invalid store name",
        ),
        (
            "unknown store",
            "/v1/stores/missing/operations",
            ACME,
            ops(json!([alice()])),
            StatusCode::NOT_FOUND,
            "store_not_found",
            "store \"missing\" does not exist",
        ),
        (
            "not JSON",
            w,
            ACME,
            b"{oops".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "request body",
        ),
        (
            "no operations key",
            w,
            ACME,
            b"{}".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "missing field `operations`",
        ),
        (
            "unknown op",
            w,
            ACME,
            ops(json!([{"op": "upsert_everything"}])),
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "unknown variant `upsert_everything`",
        ),
        (
            "missing primary key, after a valid op",
            w,
            ACME,
            ops(json!([alice(), {"op": "upsert_fields", "document": {"age": {"int64": 1}}}])),
            StatusCode::BAD_REQUEST,
            "invalid_document",
            "operation 1 (upsert_fields): document lacks its primary key field \"userid\"",
        ),
        (
            "primary key of the wrong type",
            w,
            ACME,
            ops(json!([{"op": "upsert_fields", "document": {"userid": {"int64": 1}}}])),
            StatusCode::BAD_REQUEST,
            "invalid_document",
            "must be a string or bytes, not int64",
        ),
        (
            "missing partitioning key",
            "/v1/stores/geo/operations",
            ACME,
            ops(json!([alice()])),
            StatusCode::BAD_REQUEST,
            "invalid_document",
            "lacks its partitioning key field \"country\"",
        ),
        (
            "empty field name",
            w,
            ACME,
            ops(
                json!([{"op": "upsert_fields", "document": {"userid": {"string": "a"}, "": {"bool": true}}}]),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_document",
            "field name must not be empty",
        ),
        (
            "unknown value type",
            w,
            ACME,
            ops(
                json!([{"op": "upsert_fields", "document": {"userid": {"string": "a"}, "x": {"decimal": "1"}}}]),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "unknown variant `decimal`",
        ),
        (
            "bad base64",
            w,
            ACME,
            ops(
                json!([{"op": "upsert_fields", "document": {"userid": {"string": "a"}, "x": {"bytes": "***"}}}]),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_document",
            "not valid base64",
        ),
        (
            "value too large",
            w,
            ACME,
            ops(
                json!([{"op": "upsert_fields", "document": {"userid": {"string": "a"}, "x": {"string": "v".repeat(1_048_577)}}}]),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_document",
            "more than the 1048576 allowed",
        ),
        (
            "empty drop",
            w,
            ACME,
            ops(json!([{"op": "drop_fields_by_name", "field_names": []}])),
            StatusCode::BAD_REQUEST,
            "invalid_operation",
            "at least one field name",
        ),
        (
            "empty delete_fields",
            w,
            ACME,
            ops(
                json!([{"op": "delete_fields", "document": {"userid": {"string": "a"}}, "field_names": []}]),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_operation",
            "at least one field name",
        ),
        (
            "body over 6 MB",
            w,
            ACME,
            big,
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "split the batch",
        ),
    ];
    for (what, uri, auth, body, status, code, message) in cases {
        let (got_status, got) = call(&app, "POST", uri, auth, body).await;
        assert_eq!(got_status, status, "{what}: {got}");
        assert_eq!(got["error"]["code"], code, "{what}: {got}");
        let text = got["error"]["message"].as_str().unwrap_or_default();
        assert!(
            text.contains(message),
            "{what}: wanted {message:?} in {text:?}"
        );
        assert!(
            !text.contains(PASSKEY) && !text.contains(OTHER_PASSKEY),
            "{what}: a secret leaked"
        );
    }
    assert_eq!(
        bucket_contents(&storage).await,
        before,
        "no bad request wrote anything"
    );

    // And a good request does write.
    let (status, got) = call(&app, "POST", w, ACME, ops(json!([alice()]))).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["operations"], 1);
    assert_eq!(got["commits"].as_array().unwrap().len(), 1);
    // One delta, and the store's wake signal (the partition's first commit ends a quiet
    // spell); the tip hint the commit publishes in the background is not counted.
    let after = bucket_contents(&storage).await;
    let written: Vec<&String> = after
        .keys()
        .filter(|k| !before.contains_key(*k) && !k.ends_with("/tip.json"))
        .collect();
    assert_eq!(written.len(), 2, "{written:?}");
    assert!(written[0].ends_with(".arrow"), "{written:?}");
    assert!(written[1].ends_with("/wake.json"), "{written:?}");
}

#[tokio::test]
async fn health_describe_and_unknown_routes() {
    let storage = Storage::memory();
    let app = app(&storage).await;
    let (status, got) = call(&app, "GET", "/health", None, vec![]).await;
    assert_eq!((status, got), (StatusCode::OK, json!({"status": "ok"})));
    let (status, got) = call(&app, "GET", "/v1/stores/geo", ACME, vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["partitioning_key_field"], "country");
    assert_eq!(got["num_partitions"], 2);
    let (status, _) = call(&app, "GET", "/v1/stores/geo", None, vec![]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, got) = call(&app, "GET", "/v1/nothing", None, vec![]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(got["error"]["code"], "no_such_route");
    let (status, _) = call(&app, "GET", "/v1/stores/users/operations", ACME, vec![]).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn every_operation_type_is_accepted() {
    let storage = Storage::memory();
    let app = app(&storage).await;
    let doc = json!({"userid": {"string": "a"}, "b": {"bytes": "AAE="}, "i": {"int64": "-5"},
                     "f": {"float64": "NaN"}, "t": {"bool": false}, "s": {"string": "x"}});
    let body = ops(json!([
        {"op": "upsert_fields", "document": doc},
        {"op": "delete_fields", "document": {"userid": {"string": "a"}}, "field_names": ["b"]},
        {"op": "delete_document", "document": {"userid": {"string": "a"}}},
        {"op": "drop_fields_by_name", "field_names": ["s"]},
        {"op": "drop_fields_by_name_prefix", "field_name_prefixes": ["t"]},
        {"op": "drop_all_fields"},
    ]));
    let (status, got) = call(&app, "POST", "/v1/stores/users/operations", ACME, body).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["operations"], 6);
    assert_eq!(
        got["commits"].as_array().unwrap().len(),
        2,
        "drops reach both partitions"
    );
}

/// An upsert over HTTP with a time to live and an event time commits them on its rows; a bad
/// one is refused naming it and writes nothing.
#[tokio::test]
async fn times_to_live_and_event_times_travel_over_http() {
    let storage = Storage::memory();
    let app = app(&storage).await;
    let body = ops(json!([
        {"op": "upsert_fields", "document": {"userid": {"string": "a"}, "v": {"int64": 2}},
         "ttl_seconds": 60, "event_time_us": 20},
        {"op": "upsert_fields", "document": {"userid": {"string": "a"}, "v": {"int64": 1}},
         "event_time_us": 10},
    ]));
    let (status, got) = call(&app, "POST", "/v1/stores/users/operations", ACME, body).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    let commit = &got["commits"][0];
    let (partition, seq) = (
        commit["partition"].as_u64().unwrap() as u32,
        commit["sequence"].as_u64().unwrap(),
    );
    let layout = ikv_core::StoreLayout::new(&storage.prefix, "users").unwrap();
    let bytes = ikv_core::bucket::read_delta(&storage, &layout, partition, seq)
        .await
        .unwrap()
        .unwrap();
    let delta = ikv_core::delta::decode_delta(&bytes, "delta").unwrap();
    let stamps: Vec<(Option<bool>, Option<i64>)> = delta
        .ops
        .iter()
        .map(|op| (op.expires_ms().map(|e| e > 0), op.event_us()))
        .collect();
    assert_eq!(
        stamps,
        vec![
            (Some(true), Some(20)),
            (Some(true), Some(20)),
            (None, Some(10)),
            (None, Some(10))
        ],
        "each row carries its write's expiry and event time"
    );
    let before = bucket_contents(&storage).await;
    let bad = ops(json!([
        {"op": "upsert_fields", "document": {"userid": {"string": "b"}}, "ttl_seconds": 0},
        {"op": "upsert_fields", "document": {"userid": {"string": "c"}}, "ttl_seconds": 99999999999u64},
    ]));
    let (status, got) = call(&app, "POST", "/v1/stores/users/operations", ACME, bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{got}");
    let message = got["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("operation 1 (upsert_fields): ttl_seconds must be between"),
        "{got}"
    );
    assert_eq!(bucket_contents(&storage).await, before, "nothing written");
}
