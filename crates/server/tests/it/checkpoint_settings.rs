//! Checkpoint settings as a user changes them: `SET checkpoint_interval` takes effect at
//! once, is kept across a restart (over `--checkpoint-interval`), and refuses what it
//! cannot do; `--retained-checkpoints N` keeps the newest N.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::durability::rows;
use crate::server::{TestServer, fresh_data_dir};

/// The epochs `SHOW CHECKPOINTS` lists, oldest first.
async fn epochs(client: &Client) -> Vec<u64> {
    rows(client, "SHOW CHECKPOINTS")
        .await
        .into_iter()
        .map(|row| row[0].as_deref().expect("epoch").parse().expect("a number"))
        .collect()
}

/// Waits (with a deadline) until some checkpoint newer than `after` completed.
async fn wait_for_checkpoint_after(client: &Client, after: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(&newest) = epochs(client).await.last().filter(|&&e| e > after) {
            return newest;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint after epoch {after}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn show_interval(client: &Client) -> String {
    rows(client, "SHOW checkpoint_interval").await[0][0]
        .clone()
        .expect("a value")
}

async fn sqlstate(client: &Client, sql: &str) -> String {
    let error = client.simple_query(sql).await.expect_err(sql);
    error.code().expect("a SQLSTATE").code().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_checkpoint_interval_takes_effect_at_once_and_outlives_a_restart() {
    // An hour between checkpoints: none comes by itself during the test.
    let flags = ["--checkpoint-interval", "3600"];
    let server = TestServer::start_with(fresh_data_dir(), &flags);
    let client = server.connect().await;
    assert_eq!(show_interval(&client).await, "3600s");
    client
        .batch_execute(
            "CREATE TABLE t (k INT, v INT);
             CREATE MATERIALIZED VIEW s AS SELECT k, sum(v) AS total FROM t GROUP BY k;
             INSERT INTO t VALUES (1, 2), (2, 3);",
        )
        .await
        .expect("setup");
    assert!(epochs(&client).await.is_empty());

    client
        .simple_query("SET checkpoint_interval = '200 milliseconds'")
        .await
        .expect("SET");
    assert_eq!(show_interval(&client).await, "0.2s");
    let first = wait_for_checkpoint_after(&client, 0).await;
    wait_for_checkpoint_after(&client, first).await;

    // Bad values are refused, naming the setting; the interval stays.
    assert_eq!(
        sqlstate(&client, "SET checkpoint_interval = 'soon'").await,
        "22023"
    );
    assert_eq!(
        sqlstate(&client, "SET checkpoint_interval = 0").await,
        "22023"
    );
    assert_eq!(show_interval(&client).await, "0.2s");

    // Kept in the catalog: after kill -9 and a restart with the hour again, checkpoints
    // still come every 200 ms.
    drop(client);
    let data_dir = server.kill();
    let server = TestServer::start_with(data_dir, &flags);
    let client = server.connect().await;
    assert_eq!(show_interval(&client).await, "0.2s");
    let last = *epochs(&client)
        .await
        .last()
        .expect("the checkpoints before the kill");
    let next = wait_for_checkpoint_after(&client, last).await;
    wait_for_checkpoint_after(&client, next).await;
    assert_eq!(
        rows(&client, "SELECT k, total FROM s ORDER BY k").await,
        rows(&client, "SELECT k, sum(v) FROM t GROUP BY k ORDER BY k").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_checkpoints_keep_the_newest_and_no_interval_refuses_set() {
    let flags = ["--checkpoint-interval", "0", "--retained-checkpoints", "2"];
    let server = TestServer::start_with(fresh_data_dir(), &flags);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE t (k INT);
             CREATE MATERIALIZED VIEW c AS SELECT count(*) AS n FROM t;",
        )
        .await
        .expect("setup");
    let mut taken = Vec::new();
    for round in 0..4 {
        client
            .simple_query(&format!("INSERT INTO t VALUES ({round})"))
            .await
            .expect("insert");
        client.simple_query("CHECKPOINT").await.expect("CHECKPOINT");
        taken.push(*epochs(&client).await.last().expect("a checkpoint"));
    }
    assert_eq!(
        epochs(&client).await,
        taken[2..],
        "the newest two of {taken:?}"
    );
    assert_eq!(show_interval(&client).await, "0");
    assert_eq!(
        sqlstate(&client, "SET checkpoint_interval = '10 seconds'").await,
        "55000"
    );
}
