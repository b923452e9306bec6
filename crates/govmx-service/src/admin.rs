//! The admin listener: `/healthz` (process is alive), `/readyz` (shared [`Readiness`] state with a
//! reason string; 503 + JSON when not ready) and `/metrics` (OpenMetrics text).
//!
//! Bind it to a separate, non-public address (loopback or the pod network for the scraper).

use std::sync::{Arc, RwLock};

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::{encoding::text::encode, registry::Registry};
use serde_json::json;

/// Content type of `/metrics`: OpenMetrics text, which Prometheus scrapes natively.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Shared readiness flag with the reason why the service is not ready.
///
/// Clones share state. Starts not ready with the given reason; the service flips it once its
/// dependencies answer (e.g. at least one clamd replied to `PING`).
#[derive(Clone, Debug)]
pub struct Readiness {
    // `None` = ready, `Some(reason)` = not ready.
    state: Arc<RwLock<Option<String>>>,
}

// === impl Readiness ===

impl Readiness {
    /// A readiness flag that is not ready yet, for `reason`.
    pub fn not_ready(reason: impl Into<String>) -> Self {
        Self {
            state: Arc::new(RwLock::new(Some(reason.into()))),
        }
    }

    /// Marks the service ready.
    pub fn set_ready(&self) {
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Marks the service not ready, with a reason shown on `/readyz`.
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = Some(reason.into());
    }

    /// `Ok(())` when ready, else the reason.
    pub fn status(&self) -> Result<(), String> {
        match &*self.state.read().unwrap_or_else(|p| p.into_inner()) {
            None => Ok(()),
            Some(reason) => Err(reason.clone()),
        }
    }
}

#[derive(Clone, Debug)]
struct AdminState {
    readiness: Readiness,
    registry: Arc<Registry>,
}

/// The admin router: `GET /healthz`, `GET /readyz`, `GET /metrics`.
///
/// Register all metrics before calling this; the registry is read-only afterwards.
pub fn admin_router(readiness: Readiness, registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AdminState {
            readiness,
            registry,
        })
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AdminState>) -> Response {
    match state.readiness.status() {
        Ok(()) => Json(json!({"ready": true})).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": reason})),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let mut body = String::new();
    match encode(&mut body, &state.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], body).into_response(),
        Err(error) => {
            tracing::error!(%error, "failed to encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use prometheus_client::metrics::counter::Counter;
    use tower::ServiceExt;

    use super::*;

    async fn get(router: Router, path: &str) -> (StatusCode, String) {
        let res = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readiness_flips_and_metrics_encode() {
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        registry.register("govmx_test_events", "Test events", counter.clone());
        counter.inc();
        let readiness = Readiness::not_ready("clamd not checked yet");
        let router = admin_router(readiness.clone(), Arc::new(registry));

        assert_eq!(get(router.clone(), "/healthz").await.0, StatusCode::OK);
        let (status, body) = get(router.clone(), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, r#"{"ready":false,"reason":"clamd not checked yet"}"#);

        readiness.set_ready();
        assert_eq!(
            get(router.clone(), "/readyz").await,
            (StatusCode::OK, r#"{"ready":true}"#.into())
        );

        let (status, body) = get(router, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("govmx_test_events_total 1"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");
    }
}
