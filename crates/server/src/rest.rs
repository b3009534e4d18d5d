//! The REST API (axum): health and jobs, for scripts, load balancers and dashboards.
//!
//! `GET /health` answers `{"status":"ok"}` while the process serves; `GET /jobs` lists
//! the coordinator's streaming jobs as JSON. Any other path is a JSON 404, so clients
//! never have to parse HTML error pages.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use sluice_cluster::{Coordinator, JobInfo};

/// The REST routes over `coordinator`.
pub fn router(coordinator: Arc<Coordinator>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/jobs", get(jobs))
        .fallback(not_found)
        .with_state(coordinator)
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn jobs(State(coordinator): State<Arc<Coordinator>>) -> Json<Vec<JobInfo>> {
    Json(coordinator.jobs())
}

async fn not_found(uri: Uri) -> (StatusCode, Json<Value>) {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("no route for {}", uri.path())})),
    )
}
