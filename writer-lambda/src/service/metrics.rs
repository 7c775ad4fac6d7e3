//! The service's metrics: every open writer's, the storage root's requests, and the requests
//! it refused by status code. `GET /metrics` serves them in Prometheus's text format (no
//! authentication: nothing in them is secret; `ServiceState::without_metrics_route` turns it
//! off); under Lambda, each invocation writes one CloudWatch embedded-metric line instead.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ikv_core::metrics::catalog::WRITER_REFUSALS;
use ikv_core::metrics::{MetricSet, emf};

use super::ServiceState;

/// What the service itself counts.
#[derive(Debug, Default)]
pub(crate) struct ServiceCounters {
    /// Requests answered with an error status, by status and the answer's machine code
    /// (`-` for answers made outside the API, such as a body over the limit).
    refusals: Mutex<BTreeMap<(u16, &'static str), u64>>,
    /// What the last embedded-metric line reported (each line says what changed since).
    emitted: Mutex<MetricSet>,
}

impl ServiceCounters {
    fn refused(&self, status: StatusCode, error: &'static str) {
        let mut refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        *refusals.entry((status.as_u16(), error)).or_default() += 1;
    }

    pub(crate) fn add_to(&self, set: &mut MetricSet) {
        let refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        for ((code, error), n) in refusals.iter() {
            set.number(
                &WRITER_REFUSALS,
                &[("code", &code.to_string()), ("error", error)],
                *n as f64,
            );
        }
    }
}

/// Counts every answer with an error status (4xx, 5xx) by its status.
pub(crate) async fn count_refusals(
    State(state): State<Arc<ServiceState>>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        let error = response
            .extensions()
            .get::<super::error::ErrorCode>()
            .map_or("-", |c| c.0);
        state.counters.refused(status, error);
    }
    response
}

/// `GET /metrics`: Prometheus text format.
pub(crate) async fn prometheus(State(state): State<Arc<ServiceState>>) -> Response {
    let body = state.metrics().await.to_prometheus();
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Under Lambda: after each invocation, one embedded-metric line on standard output (which
/// Lambda sends to CloudWatch Logs) with what the invocation changed, for the store its path
/// names (dimension `store`; `-` for other routes).
pub(crate) async fn emit_emf(
    State(state): State<Arc<ServiceState>>,
    request: Request,
    next: Next,
) -> Response {
    let store = store_of(request.uri().path()).unwrap_or("-").to_owned();
    let response = next.run(request).await;
    if let Some(line) = state.emf_line(&store).await {
        println!("{line}");
    }
    response
}

/// The store a `/v1/stores/{store}…` path names.
fn store_of(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/stores/")?.split('/').next()
}

impl ServiceState {
    /// Every metric of the service now: its writers', its storage root's requests
    /// (`component="writer"`), its refusals.
    pub async fn metrics(&self) -> MetricSet {
        let writers: Vec<crate::Writer> = self.writers.lock().await.values().cloned().collect();
        let mut set = MetricSet::new();
        for w in &writers {
            set.extend(w.metrics());
        }
        set.requests(self.storage.requests(), &[("component", "writer")]);
        self.counters.add_to(&mut set);
        set
    }

    /// The embedded-metric line for what changed since the last one, or `None` when nothing
    /// did.
    pub async fn emf_line(&self, store: &str) -> Option<String> {
        let now = self.metrics().await;
        let delta = {
            let mut emitted = self
                .counters
                .emitted
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let delta = now.since(&emitted);
            *emitted = now;
            delta
        };
        // This store's writer metrics and the service-wide ones (requests, refusals).
        let samples = delta
            .samples
            .into_iter()
            .filter(|s| s.labels.iter().all(|(k, v)| *k != "store" || v == store))
            .map(|mut s| {
                s.labels.retain(|(k, _)| *k != "store");
                s
            })
            .collect();
        let ms = ikv_core::clock::wall_time()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        emf::line(&MetricSet { samples }, &[("store", store)], ms)
    }
}

#[cfg(test)]
mod tests {
    use super::store_of;

    #[test]
    fn the_store_comes_from_the_path() {
        assert_eq!(store_of("/v1/stores/users/operations"), Some("users"));
        assert_eq!(store_of("/v1/stores/users"), Some("users"));
        assert_eq!(store_of("/health"), None);
    }
}
