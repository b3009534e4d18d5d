//! A cluster on loopback: `sluice coordinator` and `sluice worker` processes. Workers
//! register their slots and heartbeat; a worker killed with SIGKILL is declared lost
//! within the heartbeat timeout; after a coordinator restart the surviving workers
//! register again. Jobs run their stateful subtasks on the workers, survive losing one
//! with exactly-once results, move back onto a worker that returns, come back after a
//! coordinator restart (and onto the workers once they register again), and wait for
//! slots when the workers have too few.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::durability::rows;
use crate::rest::get;
use crate::server::{TestServer, TestWorker, fresh_data_dir};
use tokio_postgres::Client;

/// Heartbeats every 0.2 s, lost after 1.5 s of silence: quick, yet far from flaky.
pub(crate) const HEARTBEATS: [&str; 4] =
    ["--heartbeat-interval", "0.2", "--heartbeat-timeout", "1.5"];

/// `GET /workers` as (address, slots, state), without the embedded worker.
async fn remote_workers(rest: SocketAddr) -> Vec<(String, u64, String)> {
    let (status, body) = get(rest, "/workers").await;
    assert_eq!(status, 200, "{body}");
    let workers: Value = serde_json::from_str(&body).expect("workers JSON");
    let mut remote: Vec<(String, u64, String)> = workers
        .as_array()
        .expect("an array")
        .iter()
        .filter(|w| w["address"] != "embedded")
        .map(|w| {
            (
                w["address"].as_str().expect("address").to_string(),
                w["slots"].as_u64().expect("slots"),
                w["state"].as_str().expect("state").to_string(),
            )
        })
        .collect();
    remote.sort();
    remote
}

/// Polls `GET /workers` until it lists exactly `expected` (sorted), with a deadline.
pub(crate) async fn wait_for_workers(rest: SocketAddr, expected: &[(String, u64, String)]) {
    let mut expected = expected.to_vec();
    expected.sort();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = remote_workers(rest).await;
        if now == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "workers are {now:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn alive(worker: &TestWorker, slots: u64) -> (String, u64, String) {
    (worker.address.clone(), slots, "alive".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_register_are_declared_lost_and_register_again_with_a_new_coordinator() {
    let data_dir = fresh_data_dir();
    let coordinator = TestServer::start_coordinator(data_dir.clone(), &HEARTBEATS);
    let rpc = coordinator
        .rpc_addr
        .expect("the coordinator names its rpc address");
    let mut workers = [
        TestWorker::start(rpc, 1),
        TestWorker::start(rpc, 2),
        TestWorker::start(rpc, 3),
    ];
    let ids: Vec<u64> = workers.iter().map(|w| w.id).collect();
    assert_eq!(ids.len(), 3);
    assert!(
        ids.iter().all(|&id| id > 0),
        "id 0 is the embedded worker: {ids:?}"
    );
    let everyone = [
        alive(&workers[0], 1),
        alive(&workers[1], 2),
        alive(&workers[2], 3),
    ];
    wait_for_workers(coordinator.rest_addr, &everyone).await;
    let (_, body) = get(coordinator.rest_addr, "/overview").await;
    let overview: Value = serde_json::from_str(&body).expect("overview JSON");
    assert_eq!(overview["workers"]["alive"], 4, "{body}");
    assert_eq!(overview["workers"]["lost"], 0, "{body}");

    // SIGKILL: no goodbye; the missing heartbeats tell.
    workers[1].kill();
    let mut after_kill = everyone.clone();
    after_kill[1].2 = "lost".into();
    wait_for_workers(coordinator.rest_addr, &after_kill).await;
    let (_, body) = get(coordinator.rest_addr, "/overview").await;
    let overview: Value = serde_json::from_str(&body).expect("overview JSON");
    assert_eq!(overview["workers"]["lost"], 1, "{body}");
    let (_, listed) = get(coordinator.rest_addr, "/workers").await;
    let listed: Value = serde_json::from_str(&listed).expect("workers JSON");
    let alive_slots: u64 = listed
        .as_array()
        .expect("an array")
        .iter()
        .filter(|w| w["state"] == "alive")
        .map(|w| w["slots"].as_u64().expect("slots"))
        .sum();
    assert_eq!(
        overview["slots"], alive_slots,
        "only live workers' slots count: {body}"
    );

    // A new coordinator on the same address: the survivors find it and register again.
    let port = rpc.to_string();
    let data_dir = coordinator.kill();
    let mut flags = vec!["--rpc-listen", port.as_str()];
    flags.extend_from_slice(&HEARTBEATS);
    let coordinator = TestServer::start_coordinator(data_dir, &flags);
    wait_for_workers(
        coordinator.rest_addr,
        &[everyone[0].clone(), everyone[2].clone()],
    )
    .await;
}

/// Each view of the test with the batch query over the table that it must equal.
pub(crate) const VIEWS: [(&str, &str, &str); 2] = [
    (
        "totals",
        "SELECT auction, count(*) AS n, sum(price) AS total FROM bids GROUP BY auction",
        "SELECT auction, n, total FROM totals",
    ),
    (
        "per_window",
        "SELECT auction, window_start, window_end, count(*) AS n, sum(price) AS total \
         FROM TUMBLE(bids, ts, INTERVAL '10' SECOND) GROUP BY auction, window_start, window_end",
        "SELECT auction, window_start, window_end, n, total FROM per_window",
    ),
];

/// Creates the `bids` table and [`VIEWS`] at `parallelism`.
pub(crate) async fn create_bids_and_views(client: &Client, parallelism: usize) {
    client
        .batch_execute(&format!(
            "SET streaming_parallelism = {parallelism};
             CREATE TABLE bids (auction BIGINT, price BIGINT, ts TIMESTAMP,
                                WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) APPEND ONLY"
        ))
        .await
        .expect("create table");
    for (view, query, _) in VIEWS {
        client
            .batch_execute(&format!("CREATE MATERIALIZED VIEW {view} AS {query}"))
            .await
            .expect("create view");
    }
}

/// Appends bids `from..=to`: auction `x % 7`, price `x`, one second apart.
pub(crate) async fn insert_bids(client: &Client, from: u64, to: u64) {
    client
        .simple_query(&format!(
            "INSERT INTO bids SELECT x % 7, x, to_timestamp(1767225600 + x) \
             FROM generate_series({from}, {to}) AS s(x)"
        ))
        .await
        .expect("insert bids");
}

/// After a FLUSH every view equals its batch query over everything inserted.
pub(crate) async fn check_views(client: &Client, inserted: u64, when: &str) {
    client.simple_query("FLUSH").await.expect("FLUSH");
    let count = rows(client, "SELECT count(*) FROM bids").await;
    assert_eq!(count, [[Some(inserted.to_string())]], "{when}");
    for (view, query, read) in VIEWS {
        let expected = rows(client, query).await;
        assert!(!expected.is_empty());
        assert_eq!(rows(client, read).await, expected, "view {view} {when}");
    }
}

/// `GET /jobs/{id}` of view `view`.
async fn job_detail(rest: SocketAddr, view: &str) -> Value {
    let (_, body) = get(rest, "/jobs").await;
    let jobs: Value = serde_json::from_str(&body).expect("jobs JSON");
    let id = jobs
        .as_array()
        .expect("an array")
        .iter()
        .find(|j| j["name"] == view)
        .unwrap_or_else(|| panic!("no job {view}: {body}"))["id"]
        .clone();
    let (status, body) = get(rest, &format!("/jobs/{id}")).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("job JSON")
}

/// The workers running view `view`'s subtasks whose chain has operator `operator`.
async fn workers_running(rest: SocketAddr, view: &str, operator: &str) -> Vec<u64> {
    let detail = job_detail(rest, view).await;
    detail["subtasks"]
        .as_array()
        .expect("subtasks")
        .iter()
        .filter(|s| s["name"].as_str().is_some_and(|n| n.contains(operator)))
        .map(|s| s["worker"].as_u64().expect("worker"))
        .collect()
}

async fn aggregate_workers(rest: SocketAddr, view: &str) -> Vec<u64> {
    workers_running(rest, view, "Aggregate").await
}

/// The rows the one sink of the test has taken.
async fn sink_rows(client: &Client) -> u64 {
    let sinks = rows(client, "SHOW SINKS").await;
    sinks[0][3]
        .as_deref()
        .expect("rows")
        .parse()
        .expect("a count")
}

/// The rows sink `slow`'s source subtask has put out, as of its worker's last heartbeat.
async fn source_rows(rest: SocketAddr) -> u64 {
    let detail = job_detail(rest, "slow").await;
    detail["subtasks"]
        .as_array()
        .expect("subtasks")
        .iter()
        .find(|s| s["name"].as_str().is_some_and(|n| n.contains("SourceScan")))
        .map(|s| s["rows_out"].as_u64().expect("rows_out"))
        .expect("the source's subtask")
}

/// Backpressure across processes: a source on a worker writes into a sink on the
/// coordinator that takes 4000 rows a second. The source is held back: what it has put
/// out exceeds what the sink took by no more than the channels and credits between them
/// hold, although it could generate a million rows a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sink_holds_back_a_source_on_another_process() {
    let coordinator = TestServer::start_coordinator(fresh_data_dir(), &HEARTBEATS);
    let rpc = coordinator.rpc_addr.expect("rpc address");
    let worker = TestWorker::start(rpc, 1);
    wait_for_workers(coordinator.rest_addr, &[alive(&worker, 1)]).await;
    let client = coordinator.connect().await;
    client
        .batch_execute(
            "SET streaming_parallelism = 1;
             CREATE SOURCE fast (n BIGINT) WITH (connector = 'datagen',
                 fields.n.kind = 'sequence', fields.n.start = '1',
                 fields.n.end = '1000000000', rows-per-second = '1000000');
             CREATE SINK slow AS SELECT n FROM fast
                 WITH (connector = 'blackhole', rows-per-second = '4000')",
        )
        .await
        .expect("create the source and the sink");
    assert_eq!(
        workers_running(coordinator.rest_addr, "slow", "SourceScan").await,
        [worker.id],
        "the source runs on the worker"
    );
    // Two seconds of the sink's pace, and the source's counters reported since.
    let deadline = Instant::now() + Duration::from_secs(60);
    while sink_rows(&client).await < 8000 {
        assert!(Instant::now() < deadline, "the sink took too few rows");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while source_rows(coordinator.rest_addr).await == 0 {
        assert!(
            Instant::now() < deadline,
            "no heartbeat reported the source"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Read in this order, the difference can only overstate what is in between.
    let produced = source_rows(coordinator.rest_addr).await;
    let taken = sink_rows(&client).await;
    // Datagen batches hold at most 1024 rows; between the two subtasks are the source's
    // outbox channel, the edge's credits and the sink's input channel (16 messages
    // each), and a few messages being handled.
    const IN_BETWEEN: u64 = 64 * 1024;
    assert!(
        produced <= taken + IN_BETWEEN,
        "the source put out {produced} rows while the sink took {taken}"
    );
    // What bounds the worker's memory: its edge to the sink never had more messages in
    // flight than the receiver's credits, although the source could fill any buffer.
    let (max_in_flight, sent) = loop {
        let (_, body) = get(coordinator.rest_addr, "/workers").await;
        let workers: Value = serde_json::from_str(&body).expect("workers JSON");
        let listed = workers.as_array().expect("an array");
        let this = listed
            .iter()
            .find(|w| w["id"] == worker.id)
            .expect("the worker");
        let counters = (
            this["max_in_flight"].as_u64(),
            this["messages_sent"].as_u64(),
        );
        if counters.1 > Some(CREDITS) {
            break counters;
        }
        assert!(
            Instant::now() < deadline,
            "no heartbeat reported the data plane: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        max_in_flight.is_some_and(|m| m > 0 && m <= CREDITS),
        "{max_in_flight:?} in flight, {sent:?} sent"
    );
}

/// The credits a data-plane receiver grants (`dataplane::CREDITS`).
const CREDITS: u64 = 16;

/// Rows of the rate-limited source the test reads while a worker is killed.
const SOURCE_ROWS: u64 = 9000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_on_workers_and_survive_a_worker_kill_and_a_coordinator_restart() {
    let mut flags = vec!["--checkpoint-interval", "3600"];
    flags.extend_from_slice(&HEARTBEATS);
    let coordinator = TestServer::start_coordinator(fresh_data_dir(), &flags);
    let rpc = coordinator.rpc_addr.expect("rpc address");
    // Two slots each: after one is lost, the others still have the three the jobs need.
    // The workers keep no keyed state in memory: it is in their RocksDB spill stores,
    // which their checkpoints upload and restores fill again.
    let mut workers = [
        TestWorker::start_spilling(rpc, 2),
        TestWorker::start_spilling(rpc, 2),
        TestWorker::start_spilling(rpc, 2),
    ];
    let everyone: Vec<_> = workers.iter().map(|w| alive(w, 2)).collect();
    wait_for_workers(coordinator.rest_addr, &everyone).await;
    let client = coordinator.connect().await;
    create_bids_and_views(&client, 3).await;
    insert_bids(&client, 1, 3000).await;
    check_views(&client, 3000, "on three workers").await;
    // The aggregates run on the workers, one subtask on each.
    let ids: Vec<u64> = workers.iter().map(|w| w.id).collect();
    for (view, _, _) in VIEWS {
        let mut placed = aggregate_workers(coordinator.rest_addr, view).await;
        placed.sort();
        assert_eq!(placed, ids, "{view}'s aggregate subtasks");
    }

    // A connector source runs on the workers too: a sequence read at 3000 rows/s, so
    // that the kill below comes while it is being read.
    client
        .batch_execute(&format!(
            "CREATE SOURCE numbers (n BIGINT) WITH (connector = 'datagen',
                 fields.n.kind = 'sequence', fields.n.start = '1',
                 fields.n.end = '{SOURCE_ROWS}', rows-per-second = '3000');
             CREATE MATERIALIZED VIEW number_totals AS
                 SELECT n % 3 AS k, count(*) AS c, count(DISTINCT n) AS d, sum(n) AS t
                 FROM numbers GROUP BY n % 3"
        ))
        .await
        .expect("create the source and its view");
    let mut placed = workers_running(coordinator.rest_addr, "number_totals", "SourceScan").await;
    placed.sort();
    assert_eq!(placed, ids, "the source's subtasks");

    // Kill a worker mid-stream, after a checkpoint: rows before and after it are
    // counted exactly once once the jobs restart from the checkpoint on the others.
    client.simple_query("CHECKPOINT").await.expect("CHECKPOINT");
    // The workers wrote their aggregates' state to the checkpoint store.
    for (view, _, _) in VIEWS {
        let id = job_detail(coordinator.rest_addr, view).await["id"].clone();
        let (_, body) = get(coordinator.rest_addr, &format!("/jobs/{id}/checkpoints")).await;
        let checkpoints: Value = serde_json::from_str(&body).expect("checkpoints JSON");
        let last = checkpoints.as_array().and_then(|c| c.last());
        let aggregates = last
            .and_then(|c| c["state_bytes"].as_object())
            .map(|bytes| {
                bytes
                    .iter()
                    .filter(|(operator, size)| {
                        operator.ends_with(":Aggregate") && size.as_u64() > Some(0)
                    })
                    .count()
            });
        assert_eq!(aggregates, Some(1), "{view}: {body}");
    }
    insert_bids(&client, 3001, 6000).await;
    workers[1].kill();
    insert_bids(&client, 6001, 9000).await;
    check_views(&client, 9000, "after a worker was killed").await;
    // The FLUSH also waited for the rest of the bounded source.
    assert_eq!(
        rows(&client, "SELECT sum(c), sum(d), sum(t) FROM number_totals").await,
        [[
            Some(SOURCE_ROWS.to_string()),
            Some(SOURCE_ROWS.to_string()),
            Some((SOURCE_ROWS * (SOURCE_ROWS + 1) / 2).to_string())
        ]],
        "every generated row counted exactly once"
    );
    for (view, _, _) in VIEWS {
        let detail = job_detail(coordinator.rest_addr, view).await;
        assert_eq!(detail["status"], "RUNNING", "{detail}");
        assert!(detail["restarts"].as_u64() >= Some(1), "{detail}");
        assert!(detail["restored_epoch"].as_u64().is_some(), "{detail}");
        let placed = aggregate_workers(coordinator.rest_addr, view).await;
        assert_eq!(placed.len(), 3, "{detail}");
        assert!(
            placed.iter().all(|w| *w == ids[0] || *w == ids[2]),
            "{view} runs on the survivors: {placed:?}"
        );
    }
    insert_bids(&client, 9001, 10000).await;
    check_views(&client, 10000, "after the restart on two workers").await;

    // The worker comes back (as a new process, under a new id): the jobs move back
    // onto three workers, from the last checkpoint, still exactly once.
    workers[1] = TestWorker::start_spilling(rpc, 2);
    wait_for_aggregates_spread(coordinator.rest_addr, 3, "once the worker returned").await;
    for (view, _, _) in VIEWS {
        let placed = aggregate_workers(coordinator.rest_addr, view).await;
        assert!(placed.contains(&workers[1].id), "{view}: {placed:?}");
    }
    check_views(&client, 10000, "after moving onto the returned worker").await;

    // A coordinator restart: the jobs come back from the last checkpoint.
    client.simple_query("CHECKPOINT").await.expect("CHECKPOINT");
    insert_bids(&client, 10001, 11000).await;
    drop(client);
    let port = rpc.to_string();
    let data_dir = coordinator.kill();
    let mut flags = vec![
        "--rpc-listen",
        port.as_str(),
        "--checkpoint-interval",
        "3600",
    ];
    flags.extend_from_slice(&HEARTBEATS);
    let coordinator = TestServer::start_coordinator(data_dir, &flags);
    let client = coordinator.connect().await;
    let everyone: Vec<_> = workers.iter().map(|w| alive(w, 2)).collect();
    wait_for_workers(coordinator.rest_addr, &everyone).await;
    // They ran in the coordinator until the workers registered; then they move. (Checked
    // only once they have: moving recovers from the last checkpoint, and until the
    // replay catches up a view reads as of that checkpoint.)
    wait_for_aggregates_spread(coordinator.rest_addr, 3, "after a coordinator restart").await;
    check_views(&client, 11000, "after a coordinator restart").await;
    for (view, _, _) in VIEWS {
        let detail = job_detail(coordinator.rest_addr, view).await;
        assert_eq!(detail["status"], "RUNNING", "{detail}");
        assert!(detail["restored_epoch"].as_u64().is_some(), "{detail}");
    }
    insert_bids(&client, 11001, 12000).await;
    check_views(&client, 12000, "after the workers registered again").await;
}

/// The newest completed checkpoint in the checkpoint store under a coordinator's data
/// directory `dir`: its directory's name, and each of its files' names and paths.
fn newest_checkpoint(dir: &std::path::Path) -> (String, Vec<(String, String)>) {
    let root = dir.join("checkpoints");
    let mut completed: Vec<String> = std::fs::read_dir(&root)
        .expect("the checkpoint store")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            root.join(&name).join("_metadata").exists().then_some(name)
        })
        .collect();
    completed.sort();
    let newest = completed.pop().expect("a completed checkpoint");
    let text = std::fs::read_to_string(root.join(&newest).join("_metadata")).expect("metadata");
    let (_header, body) = text.split_once('\n').expect("a header line");
    let metadata: Value = serde_json::from_str(body).expect("metadata JSON");
    let files = metadata["files"]
        .as_object()
        .expect("files")
        .iter()
        .map(|(name, file)| {
            (
                name.clone(),
                file["path"].as_str().expect("path").to_string(),
            )
        })
        .collect();
    (newest, files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spilling_workers_checkpoints_reference_the_files_it_uploaded_before() {
    let mut flags = vec!["--checkpoint-interval", "3600"];
    flags.extend_from_slice(&HEARTBEATS);
    let coordinator = TestServer::start_coordinator(fresh_data_dir(), &flags);
    let rpc = coordinator.rpc_addr.expect("rpc address");
    let mut worker = TestWorker::start_spilling(rpc, 2);
    wait_for_workers(coordinator.rest_addr, &[alive(&worker, 2)]).await;
    let client = coordinator.connect().await;
    create_bids_and_views(&client, 2).await;
    let mut inserted = 3000;
    insert_bids(&client, 1, inserted).await;
    check_views(&client, inserted, "on a spilling worker").await;

    // The worker learns from heartbeat replies which checkpoint completed; from then on
    // its checkpoints reference the SST files of its stores that one uploaded.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Err(e) = client.simple_query("CHECKPOINT").await {
            // A worker that heard of a completion late may name files retention has
            // since deleted: the coordinator refuses them and aborts that checkpoint.
            let message = e.as_db_error().map(|e| e.message().to_string());
            assert!(
                message.as_ref().is_some_and(|m| m.contains("aborted")),
                "CHECKPOINT: {e:?}"
            );
            assert!(Instant::now() < deadline, "CHECKPOINT: {e:?}");
            continue;
        }
        let (own, files) = newest_checkpoint(coordinator.data_dir());
        let ssts: Vec<&(String, String)> = files
            .iter()
            .filter(|(name, _)| name.contains(".db/") && name.ends_with(".sst"))
            .collect();
        assert!(
            !ssts.is_empty(),
            "the worker's stores are in the checkpoint: {files:?}"
        );
        if ssts.iter().any(|(_, path)| !path.starts_with(&own)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint referenced an SST file an earlier one uploaded: {ssts:?}"
        );
        insert_bids(&client, inserted + 1, inserted + 10).await;
        inserted += 10;
    }

    // Restores read that checkpoint, referenced files included: in the coordinator once
    // the worker is lost, then on a new worker.
    worker.kill();
    insert_bids(&client, inserted + 1, inserted + 100).await;
    inserted += 100;
    check_views(&client, inserted, "after the worker was killed").await;
    let _worker = TestWorker::start_spilling(rpc, 2);
    wait_for_aggregates_spread(coordinator.rest_addr, 1, "on the new worker").await;
    check_views(&client, inserted, "on the new worker").await;
}

/// Waits (with a deadline) until every view's aggregate subtasks run on `spread`
/// different workers, none of them the coordinator.
pub(crate) async fn wait_for_aggregates_spread(rest: SocketAddr, spread: usize, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for (view, _, _) in VIEWS {
        loop {
            let mut placed = aggregate_workers(rest, view).await;
            placed.sort();
            placed.dedup();
            if placed.len() == spread && !placed.contains(&0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{view}'s aggregates run on {placed:?} {when}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Polls `GET /jobs/{id}` of `view` until its status is `status`, with a deadline.
async fn wait_for_status(rest: SocketAddr, view: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let detail = job_detail(rest, view).await;
        if detail["status"] == status {
            return detail;
        }
        assert!(
            Instant::now() < deadline,
            "{view} is not {status}: {detail}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A job needing more slots than the live workers have waits, saying why; a worker
/// registering with the missing slot brings it up, with every row inserted meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_waits_for_slots_until_a_worker_brings_them() {
    let coordinator = TestServer::start_coordinator(fresh_data_dir(), &HEARTBEATS);
    let rpc = coordinator.rpc_addr.expect("rpc address");
    let first = TestWorker::start(rpc, 1);
    wait_for_workers(coordinator.rest_addr, &[alive(&first, 1)]).await;
    let client = coordinator.connect().await;
    client
        .batch_execute(
            "SET streaming_parallelism = 2;
             CREATE TABLE t (k INT, v INT);
             CREATE MATERIALIZED VIEW per_k AS
                 SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k;
             INSERT INTO t SELECT x % 5, x FROM generate_series(1, 1000) AS s(x);
             FLUSH",
        )
        .await
        .expect("statements run");
    let detail = job_detail(coordinator.rest_addr, "per_k").await;
    assert_eq!(detail["status"], "WAITING", "{detail}");
    assert!(
        detail["error"]
            .as_str()
            .is_some_and(|e| e.contains("needs 2") && e.contains("have 1")),
        "{detail}"
    );
    let shown = rows(&client, "SHOW JOBS").await;
    assert!(
        shown.iter().any(|row| {
            let row: Vec<&str> = row.iter().flatten().map(String::as_str).collect();
            row.contains(&"per_k") && row.contains(&"WAITING")
        }),
        "{shown:?}"
    );

    let second = TestWorker::start(rpc, 1);
    wait_for_status(coordinator.rest_addr, "per_k", "RUNNING").await;
    client.simple_query("FLUSH").await.expect("FLUSH");
    const READ: &str = "SELECT k, n, s FROM per_k ORDER BY k";
    let expected = rows(
        &client,
        "SELECT k, count(*), sum(v) FROM t GROUP BY k ORDER BY k",
    )
    .await;
    assert_eq!(expected.len(), 5);
    assert_eq!(rows(&client, READ).await, expected);
    let mut placed = aggregate_workers(coordinator.rest_addr, "per_k").await;
    placed.sort();
    assert_eq!(placed, [first.id, second.id]);
}
