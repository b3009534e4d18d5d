//! The REST API's OpenAPI 3 description, served at `GET /openapi.json`.
//!
//! Written by hand: the API is small, and axum has no description of its own to derive
//! one from. `crates/server/tests/it/rest.rs` calls every path listed here against a
//! live server, so the document cannot name a route that does not exist.

use serde_json::{Value, json};

/// A JSON object schema with these properties (all required).
fn object(properties: Value) -> Value {
    let required: Vec<&String> = properties
        .as_object()
        .map(|p| p.keys().collect())
        .unwrap_or_default();
    json!({"type": "object", "properties": properties, "required": required})
}

fn integer(description: &str) -> Value {
    json!({"type": "integer", "format": "int64", "description": description})
}

fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

fn ok(description: &str, schema: Value) -> Value {
    json!({"200": {"description": description, "content": {"application/json": {"schema": schema}}}})
}

/// Adds the JSON 404 a path answers for an unknown job.
fn with_conflict(mut responses: Value) -> Value {
    responses["409"] = json!({
        "description": "The job has ended (finished, failed or cancelled)",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    });
    responses
}

fn with_not_found(mut responses: Value) -> Value {
    responses["404"] = json!({
        "description": "There is no job with this id",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    });
    responses
}

fn job_id() -> Value {
    json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "integer", "format": "int64"}}])
}

/// The document.
pub fn spec() -> Value {
    let reference = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    let array_of = |name: &str| json!({"type": "array", "items": reference(name)});
    let job = object(json!({
        "id": integer("The job's id (the view's or sink's catalog id)"),
        "name": string("The view or sink"),
        "status": string("RUNNING, FINISHED, FAILED, RESTARTING, WAITING (for slots) or CANCELED"),
        "parallelism": integer("Subtasks of its widest operator"),
        "restarts": integer("Restarts after failures"),
        "restored_epoch": {"type": "integer", "nullable": true, "description": "The checkpoint the running deployment resumed from"},
        "error": {"type": "string", "nullable": true, "description": "Why a FAILED or WAITING job does not run"},
        "late_rows": integer("Rows dropped because their window had closed"),
        "late_rows_by_operator": {"type": "object", "additionalProperties": {"type": "integer"}},
    }));
    let subtask = object(json!({
        "id": string("chain-index, stable across restarts"),
        "name": string("view/Operator->Operator#index"),
        "worker": integer("The worker running it (0: the coordinator); a remote subtask's counters are as of its worker's last heartbeat"),
        "rows_in": integer("Rows that entered its chain"),
        "rows_out": integer("Rows its chain put out"),
        "watermark_ms": {"type": "integer", "nullable": true, "description": "The last watermark it put out"},
        "backpressured_ms": integer("Time spent waiting for room in a full output channel"),
    }));
    let mut job_detail = job.clone();
    job_detail["properties"]["plan"] = json!({"type": "array", "items": {"type": "string"}, "description": "EXPLAIN of the job, line by line"});
    job_detail["properties"]["subtasks"] = json!({"type": "array", "items": subtask});
    job_detail["required"]
        .as_array_mut()
        .expect("required list")
        .extend([json!("plan"), json!("subtasks")]);
    let checkpoint = object(json!({
        "epoch": integer("Checkpoint epoch"),
        "kind": string("checkpoint or savepoint"),
        "completed_at_ms": integer("Completion time, ms since the Unix epoch"),
        "duration_ms": integer("From barrier injection to metadata written"),
        "alignment_ms": integer("Longest barrier alignment of any subtask"),
        "size_bytes": integer("Bytes of this job's state"),
        "state_bytes": {"type": "object", "additionalProperties": {"type": "integer"}, "description": "Bytes per operator (\"<node>:<operator>\") and \"view\""},
    }));
    let worker = object(json!({
        "id": integer("Worker id (0: the coordinator's embedded worker)"),
        "address": string("host:port, or \"embedded\""),
        "slots": integer("Subtask slots"),
        "state": string("alive or lost"),
        "registered_at_ms": integer("Registration time, ms since the Unix epoch"),
        "heartbeat_age_ms": integer("Milliseconds since the last heartbeat"),
        "max_in_flight": integer("Data plane: the most messages any edge it serves had sent without a credit back (at most the 16 credits a receiver grants; what bounds memory between processes), as of its last heartbeat"),
        "messages_sent": integer("Data plane: messages it sent to other processes, as of its last heartbeat"),
    }));
    let sink = object(json!({
        "name": string("The sink"),
        "connector": string("Its connector"),
        "query": string("Its query"),
        "inserts": integer("Insertions received"),
        "deletes": integer("Retractions received"),
        "checksum": integer("Order-independent checksum of the rows held"),
        "committed_epoch": integer("Last checkpoint every subtask committed"),
    }));
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Sluice REST API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Health, jobs, checkpoints, savepoints, sinks and workers of a Sluice coordinator."
        },
        "paths": {
            "/health": {"get": {"summary": "Liveness", "responses": ok("The process serves", object(json!({"status": string("ok")})))}},
            "/overview": {"get": {"summary": "Workers, slots and jobs at a glance", "responses": ok("The overview", object(json!({
                "version": string("Sluice version"),
                "workers": object(json!({"alive": integer("Live workers"), "lost": integer("Lost workers")})),
                "slots": integer("Slots of live workers"),
                "jobs": {"type": "object", "additionalProperties": {"type": "integer"}, "description": "Jobs per status"},
            })))}},
            "/workers": {"get": {"summary": "The cluster's workers", "responses": ok("Every worker, the embedded one first", array_of("Worker"))}},
            "/jobs": {"get": {"summary": "Streaming jobs", "responses": ok("Every job", array_of("Job"))}},
            "/jobs/{id}": {"get": {"summary": "One job with its plan", "parameters": job_id(), "responses": with_not_found(ok("The job", reference("JobDetail")))}},
            "/jobs/{id}/checkpoints": {"get": {"summary": "Completed checkpoints holding the job's state", "parameters": job_id(), "responses": with_not_found(ok("Oldest first", array_of("Checkpoint")))}},
            "/jobs/{id}/savepoints": {"post": {"summary": "Take a savepoint (of every job: checkpoints are global)", "parameters": job_id(), "responses": with_not_found(ok("The savepoint, as it concerns the job", reference("Checkpoint")))}},
            "/jobs/{id}/cancel": {"post": {"summary": "Cancel the job: it stops, its view keeps its rows", "parameters": job_id(), "responses": with_conflict(with_not_found(ok("The job, cancelled", reference("Job"))))}},
            "/sinks": {"get": {"summary": "Sinks and what each received", "responses": ok("Every sink", array_of("Sink"))}},
            "/openapi.json": {"get": {"summary": "This document", "responses": ok("OpenAPI 3", json!({"type": "object"}))}},
        },
        "components": {"schemas": {
            "Job": job,
            "JobDetail": job_detail,
            "Checkpoint": checkpoint,
            "Worker": worker,
            "Sink": sink,
            "Error": object(json!({"error": string("What went wrong")})),
        }}
    })
}
