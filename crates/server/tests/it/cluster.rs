//! A cluster on loopback: `sluice coordinator` and `sluice worker` processes. Workers
//! register their slots and heartbeat; a worker killed with SIGKILL is declared lost
//! within the heartbeat timeout; after a coordinator restart the surviving workers
//! register again.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::rest::get;
use crate::server::{TestServer, TestWorker, fresh_data_dir};

/// Heartbeats every 0.2 s, lost after 1.5 s of silence: quick, yet far from flaky.
const HEARTBEATS: [&str; 4] = ["--heartbeat-interval", "0.2", "--heartbeat-timeout", "1.5"];

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
async fn wait_for_workers(rest: SocketAddr, expected: &[(String, u64, String)]) {
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

fn alive(worker: &TestWorker, slots: u64) -> (String, u64, String) {
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
