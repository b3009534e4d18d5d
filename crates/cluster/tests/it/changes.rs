//! UPDATE, DELETE and primary-key upserts on tables flow into views as retractions.

use crate::support::Engine;

#[tokio::test]
async fn updates_and_deletes_retract_from_aggregates_and_filters() {
    let mut e = Engine::start().await;
    e.ok("CREATE TABLE t (k INT, v BIGINT)").await;
    e.ok("INSERT INTO t VALUES (1, 10), (1, 3), (2, 7), (2, 7)")
        .await;
    e.ok("CREATE MATERIALIZED VIEW a AS SELECT k, count(*) AS n, sum(v) AS s, min(v) AS lo, max(v) AS hi, \
          count(DISTINCT v) AS d FROM t GROUP BY k").await;
    e.ok("CREATE MATERIALIZED VIEW f AS SELECT k, v FROM t WHERE v > 5")
        .await;
    e.ok("UPDATE t SET v = 1 WHERE v = 10").await;
    e.ok("DELETE FROM t WHERE k = 2 AND v = 7").await;
    e.ok("INSERT INTO t VALUES (3, 9)").await;
    e.ok("FLUSH").await;
    assert_eq!(
        e.rows("SELECT * FROM a").await,
        vec!["1 2 4 1 3 2", "3 1 9 9 9 1"]
    );
    assert_eq!(e.rows("SELECT * FROM f").await, vec!["3 9"]);
    assert_eq!(e.rows("SELECT * FROM t").await, vec!["1 1", "1 3", "3 9"]);
}

#[tokio::test]
async fn insert_on_a_primary_key_upserts_and_the_last_row_of_a_key_wins() {
    let mut e = Engine::start().await;
    e.ok("CREATE TABLE p (id INT PRIMARY KEY, name VARCHAR, score INT)")
        .await;
    e.ok("CREATE MATERIALIZED VIEW total AS SELECT count(*) AS n, sum(score) AS s, max(score) AS best FROM p").await;
    e.ok("INSERT INTO p VALUES (1, 'a', 10), (2, 'b', 20), (1, 'a2', 15)")
        .await;
    e.ok("INSERT INTO p VALUES (2, 'b2', 5)").await;
    e.ok("FLUSH").await;
    assert_eq!(e.rows("SELECT * FROM p").await, vec!["1 a2 15", "2 b2 5"]);
    assert_eq!(e.rows("SELECT * FROM total").await, vec!["2 20 15"]);
    e.ok("UPDATE p SET id = 3 WHERE id = 2").await;
    let err = e.run("UPDATE p SET id = 1 WHERE id = 3").await.unwrap_err();
    assert_eq!(
        err.state,
        sluice_common::SqlState::UNIQUE_VIOLATION,
        "{}",
        err.message
    );
    e.ok("DELETE FROM p WHERE id = 1").await;
    e.ok("FLUSH").await;
    assert_eq!(e.rows("SELECT * FROM p").await, vec!["3 b2 5"]);
    assert_eq!(e.rows("SELECT * FROM total").await, vec!["1 5 5"]);
}

#[tokio::test]
async fn append_only_tables_refuse_updates_and_duplicate_keys() {
    let mut e = Engine::start().await;
    e.ok("CREATE TABLE log (id INT, PRIMARY KEY (id)) APPEND ONLY")
        .await;
    e.ok("INSERT INTO log VALUES (1)").await;
    let dup = e.run("INSERT INTO log VALUES (2), (1)").await.unwrap_err();
    assert_eq!(dup.state, sluice_common::SqlState::UNIQUE_VIOLATION);
    let upd = e.run("UPDATE log SET id = 5").await.unwrap_err();
    assert_eq!(upd.state, sluice_common::SqlState::FEATURE_NOT_SUPPORTED);
    assert!(upd.message.contains("APPEND ONLY"), "{}", upd.message);
    assert_eq!(e.rows("SELECT * FROM log").await, vec!["1"]);
}

/// A processing-time temporal join joins each row with the table as it was when the row
/// arrived: random upserts and deletes on the table between batches of rows, each batch's
/// expected rows computed by a batch join right after it is inserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporal_join_matches_each_row_with_the_table_at_its_arrival() {
    for seed in 0..4u64 {
        let mut rng = crate::support::Rng(seed);
        let mut e = Engine::start().await;
        e.ok(&format!("SET streaming_parallelism = {}", 1 + seed % 4))
            .await;
        e.ok("CREATE TABLE rates (k INT PRIMARY KEY, r INT)").await;
        e.ok("CREATE TABLE orders (id INT, k INT) APPEND ONLY")
            .await;
        e.ok(
            "CREATE MATERIALIZED VIEW tj AS SELECT o.id, r.r FROM orders o \
              LEFT JOIN rates FOR SYSTEM_TIME AS OF PROCTIME() AS r ON o.k = r.k AND r.r > 2",
        )
        .await;
        let mut expected = Vec::new();
        let mut next_id = 0;
        for step in 0..15 {
            for _ in 0..3 {
                let k = rng.below(6);
                if rng.below(3) == 0 {
                    e.ok(&format!("DELETE FROM rates WHERE k = {k}")).await;
                } else {
                    let r = rng.below(10);
                    e.ok(&format!("INSERT INTO rates VALUES ({k}, {r})")).await;
                }
            }
            e.ok("FLUSH").await;
            let first = next_id;
            let values: Vec<String> = (0..5)
                .map(|_| {
                    next_id += 1;
                    format!("({next_id}, {})", rng.value(7, 8))
                })
                .collect();
            e.ok(&format!("INSERT INTO orders VALUES {}", values.join(", ")))
                .await;
            e.ok("FLUSH").await;
            expected.extend(
                e.rows(&format!(
                    "SELECT o.id, r.r FROM orders o LEFT JOIN rates r ON o.k = r.k AND r.r > 2 \
                     WHERE o.id > {first}"
                ))
                .await,
            );
            expected.sort();
            assert_eq!(
                e.rows("SELECT * FROM tj").await,
                expected,
                "seed {seed}, step {step}"
            );
        }
    }
}
