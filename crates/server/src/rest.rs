//! The REST API (axum): health and jobs, for scripts, load balancers and dashboards.
//!
//! `GET /health` answers `{"status":"ok"}` while the process serves; `GET /jobs` lists
//! the coordinator's streaming jobs as JSON, `GET /jobs/{id}` shows one with its stream
//! graph, and `GET /jobs/{id}/checkpoints` lists the completed checkpoints holding its
//! state (time, duration, alignment, size, bytes per operator). `GET /sinks` lists the
//! sinks with what each received (rows, and the checksum benchmarks compare). `GET
//! /workers` lists the cluster's workers (the embedded one, and those registered with a
//! `sluice coordinator`) with their slots and liveness; `GET /overview` sums workers,
//! slots and jobs. `POST /jobs/{id}/savepoints` takes a savepoint; `POST
//! /jobs/{id}/cancel` cancels a job. `GET /openapi.json` describes all of it ([`crate::openapi`]). Any other path, or an
//! unknown job, is a JSON 404, so clients never have to parse HTML error pages.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use sluice_cluster::membership::WorkerInfo;
use sluice_cluster::{Coordinator, JobCheckpoint, JobDetail, JobInfo, SinkInfo};

/// The REST routes over `coordinator`.
pub fn router(coordinator: Arc<Coordinator>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/jobs", get(jobs))
        .route("/jobs/{id}", get(job))
        .route("/jobs/{id}/checkpoints", get(job_checkpoints))
        .route("/jobs/{id}/savepoints", post(savepoint))
        .route("/jobs/{id}/cancel", post(cancel))
        .route("/sinks", get(sinks))
        .route("/workers", get(workers))
        .route("/overview", get(overview))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .with_state(coordinator)
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn jobs(State(coordinator): State<Arc<Coordinator>>) -> Json<Vec<JobInfo>> {
    Json(coordinator.jobs())
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::spec())
}

async fn workers(State(coordinator): State<Arc<Coordinator>>) -> Json<Vec<WorkerInfo>> {
    Json(coordinator.workers())
}

async fn overview(State(coordinator): State<Arc<Coordinator>>) -> Json<Value> {
    let workers = coordinator.workers();
    let alive: Vec<&WorkerInfo> = workers.iter().filter(|w| w.state == "alive").collect();
    let mut jobs = serde_json::Map::new();
    for job in coordinator.jobs() {
        let count = jobs.entry(job.status.to_lowercase()).or_insert(json!(0));
        *count = json!(count.as_u64().unwrap_or(0) + 1);
    }
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "workers": {"alive": alive.len(), "lost": workers.len() - alive.len()},
        "slots": alive.iter().map(|w| u64::from(w.slots)).sum::<u64>(),
        "jobs": jobs,
    }))
}

async fn sinks(State(coordinator): State<Arc<Coordinator>>) -> Json<Vec<SinkInfo>> {
    Json(coordinator.sinks())
}

type JsonError = (StatusCode, Json<Value>);

fn no_job(id: u64) -> JsonError {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("there is no job {id}")})),
    )
}

async fn job(
    State(coordinator): State<Arc<Coordinator>>,
    Path(id): Path<u64>,
) -> Result<Json<JobDetail>, JsonError> {
    coordinator.job(id).map(Json).ok_or_else(|| no_job(id))
}

async fn job_checkpoints(
    State(coordinator): State<Arc<Coordinator>>,
    Path(id): Path<u64>,
) -> Result<Json<Vec<JobCheckpoint>>, JsonError> {
    match coordinator.job_checkpoints(id).await {
        Ok(Some(checkpoints)) => Ok(Json(checkpoints)),
        Ok(None) => Err(no_job(id)),
        Err(e) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.message, "sqlstate": e.state.to_string()})),
        )),
    }
}

/// Takes a savepoint (of every job: checkpoints are global) and answers it as
/// `GET /jobs/{id}/checkpoints` lists it.
async fn savepoint(
    State(coordinator): State<Arc<Coordinator>>,
    Path(id): Path<u64>,
) -> Result<Json<JobCheckpoint>, JsonError> {
    let failed = |e: sluice_common::error::SluiceError| {
        let status = if e.state == sluice_common::error::SqlState::FEATURE_NOT_SUPPORTED {
            StatusCode::CONFLICT
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        (
            status,
            Json(json!({"error": e.message, "sqlstate": e.state.to_string()})),
        )
    };
    match coordinator.job_savepoint(id).await {
        Ok(Some(savepoint)) => Ok(Json(savepoint)),
        Ok(None) => Err(no_job(id)),
        Err(e) => Err(failed(e)),
    }
}

/// Cancels a job (see [`Coordinator::cancel_job`]) and answers it as `GET /jobs` lists
/// it; a job that has ended is a 409.
async fn cancel(
    State(coordinator): State<Arc<Coordinator>>,
    Path(id): Path<u64>,
) -> Result<Json<JobInfo>, JsonError> {
    use sluice_common::error::SqlState;
    coordinator.cancel_job(id).await.map(Json).map_err(|e| {
        let status = match e.state {
            SqlState::UNDEFINED_OBJECT => return no_job(id),
            SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (
            status,
            Json(json!({"error": e.message, "sqlstate": e.state.to_string()})),
        )
    })
}

async fn not_found(uri: Uri) -> (StatusCode, Json<Value>) {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("no route for {}", uri.path())})),
    )
}
