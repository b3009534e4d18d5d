//! The REST API over plain HTTP/1.1.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::server::TestServer;

/// Sends `GET path` and returns (status code, body).
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, "GET", path).await
}

/// Sends `POST path` without a body and returns (status code, body).
pub async fn post(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, "POST", path).await
}

async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect REST");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn health_jobs_and_unknown_routes_answer_json() {
    let server = TestServer::start();
    let (status, body) = get(server.rest_addr, "/health").await;
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).expect("health JSON");
    assert_eq!(health, serde_json::json!({"status": "ok"}));

    let (status, body) = get(server.rest_addr, "/jobs").await;
    assert_eq!(status, 200);
    let jobs: serde_json::Value = serde_json::from_str(&body).expect("jobs JSON");
    assert!(jobs.is_array(), "{body}");

    let (status, body) = get(server.rest_addr, "/nope").await;
    assert_eq!(status, 404);
    let err: serde_json::Value = serde_json::from_str(&body).expect("404 JSON");
    assert!(
        err["error"].as_str().is_some_and(|e| e.contains("/nope")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_report_late_rows_per_operator() {
    let server = TestServer::start();
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE bids (price BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts) APPEND ONLY;
             CREATE MATERIALIZED VIEW per_window AS
               SELECT window_end, count(*) AS n FROM TUMBLE(bids, ts, INTERVAL '10' SECOND)
               GROUP BY window_end EMIT ON WINDOW CLOSE;
             INSERT INTO bids VALUES (1, '2024-01-01 00:00:30');
             INSERT INTO bids VALUES (2, '2024-01-01 00:00:05');
             FLUSH;",
        )
        .await
        .expect("statements run");
    let (status, body) = get(server.rest_addr, "/jobs").await;
    assert_eq!(status, 200);
    let jobs: serde_json::Value = serde_json::from_str(&body).expect("jobs JSON");
    let job = jobs
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["name"] == "per_window"))
        .unwrap_or_else(|| panic!("no per_window job in {body}"));
    assert_eq!(job["late_rows"], 1, "{body}");
    let by_operator = job["late_rows_by_operator"]
        .as_object()
        .unwrap_or_else(|| panic!("no late_rows_by_operator in {body}"));
    let (operator, count) = by_operator.iter().next().expect("one window operator");
    assert!(operator.ends_with(":Aggregate"), "{body}");
    assert_eq!(count, 1, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_shows_its_plan_and_the_state_each_checkpoint_holds_for_it() {
    let server = TestServer::start_with(
        crate::server::fresh_data_dir(),
        &["--checkpoint-interval", "0.2"],
    );
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE t (k INT, v INT);
             CREATE MATERIALIZED VIEW per_k AS SELECT k, sum(v) AS s FROM t GROUP BY k;
             INSERT INTO t VALUES (1, 2), (2, 3);
             FLUSH;",
        )
        .await
        .expect("statements run");
    let id = first_job_id(server.rest_addr).await;

    let (status, body) = get(server.rest_addr, &format!("/jobs/{id}")).await;
    assert_eq!(status, 200, "{body}");
    let job: serde_json::Value = serde_json::from_str(&body).expect("job JSON");
    assert_eq!(job["name"], "per_k", "{body}");
    let plan = job["plan"].as_array().expect("plan lines");
    assert!(
        plan.iter()
            .any(|l| l.as_str().is_some_and(|l| l.contains("Aggregate"))),
        "{body}"
    );
    // Each subtask counts its rows: the aggregate's subtasks took in the two rows.
    let subtasks = job["subtasks"].as_array().expect("subtasks");
    let aggregated: u64 = subtasks
        .iter()
        .filter(|s| s["name"].as_str().is_some_and(|n| n.contains("Aggregate")))
        .map(|s| s["rows_in"].as_u64().expect("rows_in"))
        .sum();
    assert_eq!(aggregated, 2, "{body}");

    // Checkpoints run every 0.2 s: wait (with a deadline) for one holding the job.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, body) = get(server.rest_addr, &format!("/jobs/{id}/checkpoints")).await;
        assert_eq!(status, 200, "{body}");
        let checkpoints: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let held = checkpoints.as_array().and_then(|c| c.last()).filter(|c| {
            c["state_bytes"].as_object().is_some_and(|s| {
                s.keys().any(|k| k.ends_with(":Aggregate")) && s.contains_key("view")
            })
        });
        if let Some(checkpoint) = held {
            let total: u64 = checkpoint["state_bytes"]
                .as_object()
                .unwrap()
                .values()
                .filter_map(|v| v.as_u64())
                .sum();
            assert_eq!(checkpoint["size_bytes"].as_u64(), Some(total), "{body}");
            assert_eq!(checkpoint["kind"], "checkpoint", "{body}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint with the job's state: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // A savepoint on request is listed as one, and kept.
    let (status, body) = post(server.rest_addr, &format!("/jobs/{id}/savepoints")).await;
    assert_eq!(status, 200, "{body}");
    let savepoint: serde_json::Value = serde_json::from_str(&body).expect("savepoint JSON");
    assert_eq!(savepoint["kind"], "savepoint", "{body}");
    let epoch = savepoint["epoch"].as_u64().expect("epoch");
    let (_, body) = get(server.rest_addr, &format!("/jobs/{id}/checkpoints")).await;
    let listed: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert!(
        listed.as_array().is_some_and(|c| c
            .iter()
            .any(|c| c["epoch"] == epoch && c["kind"] == "savepoint")),
        "{body}"
    );

    let (status, body) = get(server.rest_addr, "/jobs/999/checkpoints").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("there is no job 999"), "{body}");
    let (status, body) = post(server.rest_addr, "/jobs/999/savepoints").await;
    assert_eq!(status, 404, "{body}");

    every_documented_route_answers_as_documented(server.rest_addr, id).await;
}

/// Calls every path of `GET /openapi.json` (with job `id`) and checks the answer is a
/// 200 whose body has the documented shape: the required properties of each object.
async fn every_documented_route_answers_as_documented(rest: SocketAddr, id: u64) {
    let (status, body) = get(rest, "/openapi.json").await;
    assert_eq!(status, 200, "{body}");
    let spec: serde_json::Value = serde_json::from_str(&body).expect("OpenAPI JSON");
    assert_eq!(spec["openapi"], "3.0.3");
    let paths = spec["paths"].as_object().expect("paths");
    assert!(paths.len() >= 9, "{body}");
    for (path, operations) in paths {
        let concrete = path.replace("{id}", &id.to_string());
        for (method, operation) in operations.as_object().expect("operations") {
            let (status, body) = match method.as_str() {
                "get" => get(rest, &concrete).await,
                "post" => post(rest, &concrete).await,
                other => panic!("undocumented method {other}"),
            };
            assert_eq!(status, 200, "{method} {concrete}: {body}");
            let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON answer");
            let schema = &operation["responses"]["200"]["content"]["application/json"]["schema"];
            assert_has_shape(&spec, schema, &answer, &format!("{method} {concrete}"));
        }
    }
}

/// Checks `value` against the parts of `schema` the spec uses: `$ref`, array items and
/// object required properties.
fn assert_has_shape(
    spec: &serde_json::Value,
    schema: &serde_json::Value,
    value: &serde_json::Value,
    what: &str,
) {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().expect("schema name");
        return assert_has_shape(spec, &spec["components"]["schemas"][name], value, what);
    }
    match schema["type"].as_str() {
        Some("array") => {
            let items = value
                .as_array()
                .unwrap_or_else(|| panic!("{what}: not an array: {value}"));
            for item in items {
                assert_has_shape(spec, &schema["items"], item, what);
            }
        }
        Some("object") => {
            let object = value
                .as_object()
                .unwrap_or_else(|| panic!("{what}: not an object: {value}"));
            for key in schema["required"].as_array().into_iter().flatten() {
                let key = key.as_str().expect("property name");
                let property = object
                    .get(key)
                    .unwrap_or_else(|| panic!("{what}: no \"{key}\" in {value}"));
                assert_has_shape(spec, &schema["properties"][key], property, what);
            }
        }
        _ => {}
    }
}

/// The id of the first job `GET /jobs` lists.
async fn first_job_id(rest: SocketAddr) -> u64 {
    let (_, body) = get(rest, "/jobs").await;
    let jobs: serde_json::Value = serde_json::from_str(&body).expect("jobs JSON");
    jobs[0]["id"].as_u64().unwrap_or_else(|| panic!("{body}"))
}

/// The status of job `id` as `GET /jobs/{id}` shows it.
async fn job_status(rest: SocketAddr, id: u64) -> serde_json::Value {
    let (status, body) = get(rest, &format!("/jobs/{id}")).await;
    assert_eq!(status, 200, "{body}");
    let job: serde_json::Value = serde_json::from_str(&body).expect("job JSON");
    job["status"].clone()
}

/// A cancelled job stops: its view keeps the rows it had, later inserts do not reach
/// it, it cannot be cancelled twice, and a restarted server restores it cancelled with
/// those rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_keeps_its_rows_and_stays_cancelled_after_a_restart() {
    use crate::durability::rows;
    let server = TestServer::start_with(crate::server::fresh_data_dir(), &[]);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE t (k INT, v INT);
             CREATE MATERIALIZED VIEW per_k AS SELECT k, sum(v) AS s FROM t GROUP BY k;
             INSERT INTO t VALUES (1, 2), (2, 3), (1, 4);
             FLUSH;",
        )
        .await
        .expect("statements run");
    const READ: &str = "SELECT k, s FROM per_k ORDER BY k";
    let before = rows(&client, READ).await;
    assert_eq!(
        before,
        rows(&client, "SELECT k, sum(v) FROM t GROUP BY k ORDER BY k").await
    );
    let id = first_job_id(server.rest_addr).await;

    let (status, body) = post(server.rest_addr, &format!("/jobs/{id}/cancel")).await;
    assert_eq!(status, 200, "{body}");
    let cancelled: serde_json::Value = serde_json::from_str(&body).expect("job JSON");
    assert_eq!(cancelled["status"], "CANCELED", "{body}");
    assert_eq!(job_status(server.rest_addr, id).await, "CANCELED");

    client
        .batch_execute("INSERT INTO t VALUES (1, 100), (3, 5); FLUSH;")
        .await
        .expect("insert after the cancel");
    assert_eq!(
        rows(&client, READ).await,
        before,
        "the view no longer changes"
    );

    let (status, body) = post(server.rest_addr, &format!("/jobs/{id}/cancel")).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("CANCELED") && body.contains("55000"),
        "{body}"
    );
    let (status, body) = post(server.rest_addr, "/jobs/999/cancel").await;
    assert_eq!(status, 404, "{body}");

    drop(client);
    let server = TestServer::start_with(server.kill(), &[]);
    let client = server.connect().await;
    assert_eq!(job_status(server.rest_addr, id).await, "CANCELED");
    assert_eq!(rows(&client, READ).await, before, "after a restart");
}
