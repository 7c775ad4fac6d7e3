//! The writer's HTTP API, one axum router served two ways: by the AWS Lambda runtime
//! (Function URL / API Gateway v2 events, see [`run_lambda`]) and as a local server
//! ([`serve`]). Routes and bodies are specified in `docs/API.md`.

pub mod auth;
mod error;
pub mod guard;
mod metrics;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;

use axum::extract::{DefaultBodyLimit, FromRequest, Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use ikv_core::{ErrorKind, Storage};
use tokio::sync::Mutex;

use crate::writer::{Writer, WriterOptions};
use api::{CommitJson, OperationsRequest, OperationsResponse};
use auth::{Accounts, AuthError};
pub use error::ApiError;
pub use guard::ServeLimits;

// The wire format lives outside the service (the client shares it), under its old path too.
pub use crate::wire as api;
pub use crate::wire::{ACCOUNT_ID_HEADER, PASSKEY_HEADER};
/// Largest request body accepted: an AWS Lambda request is at most 6 MB.
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;

/// Shared state of the service: the storage root, the accounts, and one group-committing
/// [`Writer`] per store, opened on first use and kept (a warm Lambda keeps its log tips).
pub struct ServiceState {
    storage: Storage,
    accounts: Accounts,
    writer_options: WriterOptions,
    writers: Mutex<HashMap<String, Writer>>,
    counters: metrics::ServiceCounters,
    /// Whether `GET /metrics` is served (the local face; on by default).
    metrics_route: bool,
}

impl ServiceState {
    /// Writes every open writer's pending tip hints (at a graceful shutdown).
    pub async fn flush_hints(&self) {
        let writers: Vec<Writer> = self.writers.lock().await.values().cloned().collect();
        for writer in writers {
            writer.flush_hints().await;
        }
    }

    pub fn new(storage: Storage, accounts: Accounts, writer_options: WriterOptions) -> Self {
        ServiceState {
            storage,
            accounts,
            writer_options,
            writers: Mutex::new(HashMap::new()),
            counters: metrics::ServiceCounters::default(),
            metrics_route: true,
        }
    }

    /// This state with `GET /metrics` not served (it answers 404 like any unknown route).
    pub fn without_metrics_route(mut self) -> Self {
        self.metrics_route = false;
        self
    }

    async fn writer(&self, store: &str) -> Result<Writer, ApiError> {
        let mut writers = self.writers.lock().await;
        if let Some(w) = writers.get(store) {
            return Ok(w.clone());
        }
        let writer = Writer::open(self.storage.clone(), store, self.writer_options.clone()).await?;
        writers.insert(store.to_owned(), writer.clone());
        Ok(writer)
    }

    /// Authenticates the request and checks the account may write `store`.
    fn authorize(&self, headers: &HeaderMap, store: &str) -> Result<(), ApiError> {
        // A value that is not ASCII is present, just wrong: it fails authentication rather
        // than reading as a missing header.
        let header = |name: &str| {
            headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let account = self
            .accounts
            .authenticate(
                header(ACCOUNT_ID_HEADER).as_deref(),
                header(PASSKEY_HEADER).as_deref(),
            )
            .map_err(|e| match e {
                AuthError::MissingHeader(_) | AuthError::BadCredentials => {
                    ApiError::unauthorized(e.to_string())
                }
            })?;
        if !account.may_write(store) {
            tracing::info!(account = %account.account_id, store, "refused: store not allowed for account");
            return Err(ApiError::forbidden(format!(
                "account {:?} may not write to store {store:?}",
                account.account_id
            )));
        }
        Ok(())
    }
}

/// The router, shared by both faces.
pub fn router(state: Arc<ServiceState>) -> Router {
    let metrics_route = state.metrics_route;
    routes(state, metrics_route)
}

fn routes(state: Arc<ServiceState>, metrics_route: bool) -> Router {
    let mut routes = Router::new()
        .route("/health", get(health))
        .route("/v1/stores/{store}", get(describe_store))
        .route("/v1/stores/{store}/operations", post(write_operations));
    if metrics_route {
        routes = routes.route("/metrics", get(metrics::prometheus));
    }
    routes
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::count_refusals,
        ))
        .with_state(state)
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn not_found() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "no_such_route",
        "no such route; see docs/API.md",
    )
}

async fn describe_store(
    State(state): State<Arc<ServiceState>>,
    Path(store): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ikv_core::StoreConfig>, ApiError> {
    ikv_core::config::validate_store_name(&store)?;
    state.authorize(&headers, &store)?;
    let writer = state.writer(&store).await?;
    Ok(Json(writer.config().clone()))
}

async fn write_operations(
    State(state): State<Arc<ServiceState>>,
    Path(store): Path<String>,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Result<Json<OperationsResponse>, ApiError> {
    ikv_core::config::validate_store_name(&store)?;
    state.authorize(&headers, &store)?;
    // A declared length over the limit is refused before a byte of the body is read.
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(ApiError::body_too_large());
    }
    // Reading the body has its own deadline: a client that sends part of it and waits is
    // answered, not waited for.
    let body =
        match tokio::time::timeout(BODY_READ_TIMEOUT, Bytes::from_request(request, &())).await {
            Ok(body) => body.map_err(ApiError::from_body_rejection)?,
            Err(_) => {
                return Err(ApiError::new(
                    axum::http::StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    format!(
                        "the request body did not arrive within {} s",
                        BODY_READ_TIMEOUT.as_secs()
                    ),
                ));
            }
        };
    let request: OperationsRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("request body: {e}")))?;
    let ops = request
        .operations
        .iter()
        .enumerate()
        .map(|(i, op)| op.to_operation(i))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| ApiError::bad_request("invalid_document", m))?;
    let writer = state.writer(&store).await?;
    let receipt = writer.write(&ops).await.map_err(|e| {
        if e.kind() != ErrorKind::InvalidInput {
            tracing::error!(store, error = %e, "write failed");
        }
        ApiError::from(e)
    })?;
    Ok(Json(OperationsResponse {
        operations: ops.len(),
        commits: receipt
            .commits
            .iter()
            .map(|c| CommitJson {
                partition: c.partition,
                sequence: c.sequence,
            })
            .collect(),
    }))
}

/// How long a request body may take to arrive.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves the router on `listener` until `shutdown` resolves, within the default
/// [`ServeLimits`] (connections, keep-alive, head and read timeouts).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ServiceState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, state, shutdown, ServeLimits::default()).await
}

/// [`serve`] with its limits given (tests use small ones).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: Arc<ServiceState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    limits: ServeLimits,
) -> std::io::Result<()> {
    let listener = guard::GuardedListener::new(listener, limits);
    let served = axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(shutdown)
        .await;
    // Leave the tip hints for the next writer (an idle one then needs one GET, not a search).
    state.flush_hints().await;
    served
}

/// Runs the router under the AWS Lambda runtime (Function URL or API Gateway v2 events).
/// Each invocation writes one CloudWatch embedded-metric line (what it changed); there is no
/// `/metrics` route (an instance's counters mean nothing to a scraper).
pub async fn run_lambda(state: Arc<ServiceState>) -> Result<(), lambda_http::Error> {
    let app = routes(state.clone(), false).layer(axum::middleware::from_fn_with_state(
        state,
        metrics::emit_emf,
    ));
    lambda_http::run(app).await
}
