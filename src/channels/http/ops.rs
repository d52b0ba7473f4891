//! Operations endpoints: health, readiness, metrics, the OpenAPI document.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::error::ApiJson;
use super::{ApiDoc, AppState};

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
    /// The knowledge-base version serving.
    pub version: String,
    pub entries: usize,
    pub uptime_secs: u64,
    /// `off` (no `[embeddings]`), `ready` (the knowledge base serving has its vectors),
    /// or `lexical` (the service could not embed it yet: ranking is lexical, retried in
    /// the background).
    pub embeddings: &'static str,
}

/// Liveness, with the knowledge-base version serving.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health)))]
pub(super) async fn healthz(State(state): State<Arc<AppState>>) -> ApiJson<Health> {
    ApiJson(Health {
        status: "ok",
        version: state.engine.version(),
        entries: state.engine.knowledge_summary().entries,
        uptime_secs: state.started.elapsed().as_secs(),
        embeddings: state.engine.embeddings_state(),
    })
}

/// Readiness: 503 once shutdown has begun, so a load balancer stops sending.
#[utoipa::path(get, path = "/readyz", responses((status = 200), (status = 503)))]
pub(super) async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if state.shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down")
    } else {
        (StatusCode::OK, "ready")
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")))]
pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

pub(super) async fn openapi() -> impl IntoResponse {
    ApiJson(ApiDoc::openapi())
}
