//! Durability and exactly-once across `kill -9`: a server with tables, a generator
//! source and views over both is killed with SIGKILL at random moments and restarted on
//! the same data directory, and after every restart:
//! - every acknowledged write is in its table;
//! - every view over the tables equals the same query run as a batch query;
//! - the window views (EMIT ON WINDOW CLOSE TUMBLE, updating SESSION) equal their batch
//!   queries over the closed windows (clicks arrive in event-time order, so none is late);
//! - the view over the generator holds each generated row exactly once: with one split
//!   the sequence column runs 1..=n, so `count = count(DISTINCT) = max` and
//!   `sum = n(n+1)/2` (a lost row breaks the first, a doubled row the second).
//!
//! `SLUICE_CRASH_ROUNDS` sets the number of kills (default 5); `SLUICE_CRASH_SEED`
//! replays a run (the seed is printed).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::server::{TestServer, fresh_data_dir};

/// Checkpoints every 200 ms, so kills land before, during and after checkpoints.
const FLAGS: &[&str] = &["--checkpoint-interval", "0.2"];

const SETUP: &str = "
    CREATE TABLE orders (id BIGINT PRIMARY KEY, customer INT, amount BIGINT);
    CREATE TABLE events (customer INT, kind VARCHAR);
    CREATE SOURCE ticks (seq BIGINT) WITH (
        connector = 'datagen', fields.seq.kind = 'sequence', fields.seq.start = '1',
        datagen.rows.per.second = '2000');
    CREATE TABLE clicks (seq BIGINT, ts TIMESTAMP,
        WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) APPEND ONLY;
    SET streaming_parallelism = 2;
    CREATE MATERIALIZED VIEW clicks_closed AS
        SELECT window_start, count(*) AS n, sum(seq) AS total
        FROM TUMBLE(clicks, ts, INTERVAL '10' SECOND)
        GROUP BY window_start, window_end EMIT ON WINDOW CLOSE;
    CREATE MATERIALIZED VIEW click_sessions AS
        SELECT window_start, window_end, count(*) AS n, max(seq) AS last
        FROM SESSION(clicks, ts, INTERVAL '3' SECOND) GROUP BY window_start, window_end;
    CREATE MATERIALIZED VIEW per_customer AS
        SELECT customer, count(*) AS orders, sum(amount) AS total, max(amount) AS biggest
        FROM orders GROUP BY customer;
    CREATE MATERIALIZED VIEW joined AS
        SELECT o.customer, e.kind, count(*) AS n
        FROM orders o JOIN events e ON o.customer = e.customer GROUP BY o.customer, e.kind;
    SET streaming_parallelism = 1;
    CREATE MATERIALIZED VIEW tick_totals AS
        SELECT count(*) AS n, count(DISTINCT seq) AS distinct_n, max(seq) AS top, sum(seq) AS total
        FROM ticks;
";

/// A small deterministic generator (xorshift), so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The rows `sql` returns, as text, sorted.
pub async fn rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut out: Vec<Vec<Option<String>>> = messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect();
    out.sort();
    out
}

/// The invariants every restart must satisfy.
async fn check(client: &tokio_postgres::Client, acknowledged: &[(i64, i32, i64)], round: usize) {
    client.simple_query("FLUSH").await.expect("FLUSH");
    let stored = rows(client, "SELECT id, customer, amount FROM orders").await;
    let mut expected: Vec<Vec<Option<String>>> = acknowledged
        .iter()
        .map(|(id, c, a)| {
            vec![
                Some(id.to_string()),
                Some(c.to_string()),
                Some(a.to_string()),
            ]
        })
        .collect();
    expected.sort();
    assert_eq!(stored, expected, "round {round}: acknowledged orders");
    for (view, query) in [
        (
            "SELECT * FROM per_customer",
            "SELECT customer, count(*), sum(amount), max(amount) FROM orders GROUP BY customer",
        ),
        (
            "SELECT * FROM joined",
            "SELECT o.customer, e.kind, count(*) FROM orders o JOIN events e ON o.customer = e.customer GROUP BY o.customer, e.kind",
        ),
        (
            "SELECT * FROM clicks_closed",
            "SELECT window_start, count(*), sum(seq) FROM TUMBLE(clicks, ts, INTERVAL '10' SECOND) \
             WHERE window_end <= (SELECT max(ts) FROM clicks) - INTERVAL '2' SECOND \
             GROUP BY window_start, window_end",
        ),
        (
            "SELECT * FROM click_sessions",
            "SELECT window_start, window_end, count(*), max(seq) \
             FROM SESSION(clicks, ts, INTERVAL '3' SECOND) GROUP BY window_start, window_end",
        ),
    ] {
        assert_eq!(
            rows(client, view).await,
            rows(client, query).await,
            "round {round}: {view}"
        );
    }
    let ticks = rows(client, "SELECT n, distinct_n, top, total FROM tick_totals").await;
    let [row] = ticks.as_slice() else {
        panic!("round {round}: tick_totals has {} rows", ticks.len());
    };
    let value = |i: usize| -> i128 { row[i].as_deref().unwrap_or("0").parse().expect("number") };
    let n = value(0);
    assert_eq!(
        value(1),
        n,
        "round {round}: a generated row was doubled ({row:?})"
    );
    assert_eq!(
        value(2),
        n,
        "round {round}: a generated row was lost ({row:?})"
    );
    assert_eq!(value(3), n * (n + 1) / 2, "round {round}: {row:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_no_acknowledged_write_and_doubles_no_result() {
    let rounds: usize = std::env::var("SLUICE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let seed: u64 = std::env::var("SLUICE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("crash test: SLUICE_CRASH_SEED={seed} SLUICE_CRASH_ROUNDS={rounds}");
    let mut rng = Rng(seed);
    let data_dir = fresh_data_dir();
    let mut server = TestServer::start_with(data_dir.clone(), FLAGS);
    server
        .connect()
        .await
        .batch_execute(SETUP)
        .await
        .expect("setup");
    let mut acknowledged: Vec<(i64, i32, i64)> = Vec::new();
    let mut next_id = 1i64;
    // Clicks go in event-time order, 1 to 5 seconds apart (sessions break at 3).
    let (mut click_seq, mut click_secs) = (0u64, 0u64);
    for round in 0..rounds {
        let client = server.connect().await;
        // Writes: inserts (some upserting an existing id), deletes and events.
        for _ in 0..(5 + rng.below(20)) {
            let customer = rng.below(4) as i32;
            match rng.below(10) {
                0 if !acknowledged.is_empty() => {
                    let victim =
                        acknowledged.swap_remove(rng.below(acknowledged.len() as u64) as usize);
                    client
                        .simple_query(&format!("DELETE FROM orders WHERE id = {}", victim.0))
                        .await
                        .expect("delete");
                }
                1 => {
                    client
                        .simple_query(&format!(
                            "INSERT INTO events VALUES ({customer}, 'k{}')",
                            rng.below(3)
                        ))
                        .await
                        .expect("insert event");
                }
                2 | 3 => {
                    click_seq += 1;
                    click_secs += 1 + rng.below(5);
                    client
                        .simple_query(&format!(
                            "INSERT INTO clicks VALUES ({click_seq}, \
                             TIMESTAMP '2024-01-01 00:00:00' + INTERVAL '{click_secs} seconds')"
                        ))
                        .await
                        .expect("insert click");
                }
                _ => {
                    let amount = rng.below(1000) as i64;
                    client
                        .simple_query(&format!(
                            "INSERT INTO orders VALUES ({next_id}, {customer}, {amount})"
                        ))
                        .await
                        .expect("insert order");
                    acknowledged.push((next_id, customer, amount));
                    next_id += 1;
                }
            }
        }
        // The crash moment is the randomized input of this test, not a wait.
        tokio::time::sleep(Duration::from_millis(rng.below(1200))).await;
        drop(client);
        let dir = server.kill();
        server = TestServer::start_with(dir, FLAGS);
        let client = server.connect().await;
        check(&client, &acknowledged, round).await;
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&data_dir);
}
