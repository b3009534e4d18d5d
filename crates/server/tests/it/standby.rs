//! A highly available coordinator pair: two `sluice coordinator --metadata postgres://`
//! processes share one PostgreSQL database (the catalog and the table log) and one
//! checkpoint store. One is active, the other stands by; when the active one is killed
//! (SIGKILL) or loses its PostgreSQL session, the standby takes over with every
//! acknowledged write, the workers follow it, and the one that lost its session stops.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use tokio_postgres::{Client, NoTls};

use crate::cluster::{
    HEARTBEATS, alive, check_views, create_bids_and_views, insert_bids, wait_for_aggregates_spread,
    wait_for_workers,
};
use crate::server::{TestServer, TestWorker, fresh_data_dir};

/// The PostgreSQL server the tests keep metadata in (the machine's, trust auth), as a
/// URL of its maintenance database; `SLUICE_TEST_POSTGRES` overrides it.
fn postgres_server() -> String {
    std::env::var("SLUICE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of its own for one test's coordinators, dropped at the end.
struct MetadataDatabase {
    name: String,
}

impl MetadataDatabase {
    async fn create() -> MetadataDatabase {
        let name = format!("sluice_it_metadata_{}", std::process::id());
        let admin = admin().await;
        for statement in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            admin
                .batch_execute(&statement)
                .await
                .expect("create the metadata database");
        }
        MetadataDatabase { name }
    }

    fn url(&self) -> String {
        let server = postgres_server();
        let base = server.rsplit_once('/').expect("a URL with a database").0;
        format!("{base}/{}", self.name)
    }

    /// Ends the session holding the coordinators' lock (the active coordinator's), as a
    /// network cut or a database failover would; returns how many sessions were ended.
    async fn end_active_session(&self) -> i64 {
        admin()
            .await
            .query_one(
                "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l
                 JOIN pg_database d ON d.oid = l.database
                 WHERE l.locktype = 'advisory' AND l.granted AND d.datname = $1",
                &[&self.name],
            )
            .await
            .expect("terminate the lock's session")
            .get(0)
    }
}

impl Drop for MetadataDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime: a thread of its own runs the statement.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let _ = admin()
                    .await
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            });
        });
        let _ = dropped.join();
    }
}

async fn admin() -> Client {
    let (client, connection) = tokio_postgres::connect(&postgres_server(), NoTls)
        .await
        .expect("connect to PostgreSQL (SLUICE_TEST_POSTGRES)");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A loopback port free now, for a standby's control plane: workers must know it before
/// the standby binds it.
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
}

/// The flags of every coordinator of the group.
fn group_flags<'a>(metadata: &'a str, checkpoints: &'a str, rpc: &'a str) -> Vec<&'a str> {
    let mut flags = vec![
        "--metadata",
        metadata,
        "--checkpoint-url",
        checkpoints,
        "--checkpoint-interval",
        "3600",
        "--rpc-listen",
        rpc,
    ];
    flags.extend_from_slice(&HEARTBEATS);
    flags
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_coordinator_takes_over_with_every_acknowledged_write() {
    let database = MetadataDatabase::create().await;
    let metadata = database.url();
    let checkpoints = fresh_data_dir();
    let checkpoint_url = format!("file://{}", checkpoints.display());
    let (first_rpc, second_rpc) = (free_port(), free_port());
    let (first_port, second_port) = (first_rpc.to_string(), second_rpc.to_string());
    let first_flags = group_flags(&metadata, &checkpoint_url, &first_port);
    let second_flags = group_flags(&metadata, &checkpoint_url, &second_port);

    let first = TestServer::start_coordinator(fresh_data_dir(), &first_flags);
    let second = TestServer::start_standby(fresh_data_dir(), &second_flags);
    let workers = [
        TestWorker::start_with(&[first_rpc, second_rpc], 1),
        TestWorker::start_with(&[first_rpc, second_rpc], 1),
    ];
    let everyone: Vec<_> = workers.iter().map(|w| alive(w, 1)).collect();
    wait_for_workers(first.rest_addr, &everyone).await;

    let client = first.connect().await;
    create_bids_and_views(&client, 2).await;
    insert_bids(&client, 1, 3000).await;
    check_views(&client, 3000, "on the first coordinator").await;
    client.simple_query("CHECKPOINT").await.expect("CHECKPOINT");
    // Acknowledged after the checkpoint: only the table log in PostgreSQL has these.
    insert_bids(&client, 3001, 6000).await;
    drop(client);

    // The active coordinator dies: the standby takes the lock, restores the catalog and
    // the tables from PostgreSQL and the views from the shared checkpoint store.
    remove_dir(&first.kill());
    let second = second.wait_until_active();
    check_takeover(&second, &everyone, 6000, "after the standby took over").await;

    // The first one comes back, as the standby now. Then the active one loses its
    // PostgreSQL session: it may no longer write, so it stops, and the other takes over.
    let first = TestServer::start_standby(fresh_data_dir(), &first_flags);
    assert_eq!(database.end_active_session().await, 1, "one lock holder");
    assert!(
        !second.wait_for_exit(),
        "a coordinator that lost its session exits with an error"
    );
    let first = first.wait_until_active();
    check_takeover(&first, &everyone, 7000, "after the session was lost").await;
    drop(first);
    remove_dir(&checkpoints);
}

/// After a takeover by `active`: the workers find it and register, the jobs move onto
/// them (checked once they have: a move restores the last checkpoint and replays what
/// followed it), the views hold the `acknowledged` bids, and then 1000 more.
async fn check_takeover(
    active: &TestServer,
    workers: &[(String, u64, String)],
    acknowledged: u64,
    when: &str,
) {
    wait_for_workers(active.rest_addr, workers).await;
    wait_for_aggregates_spread(active.rest_addr, 2, when).await;
    let client = active.connect().await;
    check_views(&client, acknowledged, when).await;
    insert_bids(&client, acknowledged + 1, acknowledged + 1000).await;
    check_views(&client, acknowledged + 1000, when).await;
}

fn remove_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}
