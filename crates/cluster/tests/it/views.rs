use crate::support::{Engine, flush_until_expired};

#[tokio::test]
async fn grouped_view_backfills_and_follows_inserts() {
    let mut e = Engine::start().await;
    e.ok("CREATE TABLE t (k INT, v BIGINT)").await;
    e.ok("INSERT INTO t VALUES (1, 10), (2, 20), (1, 5)").await;
    e.ok(
        "CREATE MATERIALIZED VIEW s AS SELECT k, sum(v) AS total, count(*) AS n FROM t GROUP BY k",
    )
    .await;
    e.ok("FLUSH").await;
    assert_eq!(e.rows("SELECT * FROM s").await, vec!["1 15 2", "2 20 1"]);
    e.ok("INSERT INTO t VALUES (2, 1), (3, 3)").await;
    e.ok("FLUSH").await;
    assert_eq!(
        e.rows("SELECT * FROM s").await,
        vec!["1 15 2", "2 21 2", "3 3 1"]
    );
}

#[tokio::test]
async fn parallelism_one_and_four_give_the_same_result() {
    let mut e = Engine::start().await;
    e.ok("CREATE TABLE t (k INT, v INT)").await;
    for i in 0..20 {
        e.ok(&format!(
            "INSERT INTO t VALUES ({}, {i}), ({}, {})",
            i % 7,
            (i * 3) % 5,
            i * 2
        ))
        .await;
    }
    e.ok("SET streaming_parallelism = 1").await;
    e.ok("CREATE MATERIALIZED VIEW a AS SELECT k, count(*) AS n, max(v) AS m, avg(v) AS av FROM t WHERE v > 2 GROUP BY k").await;
    e.ok("SET streaming_parallelism = 4").await;
    e.ok("CREATE MATERIALIZED VIEW b AS SELECT k, count(*) AS n, max(v) AS m, avg(v) AS av FROM t WHERE v > 2 GROUP BY k").await;
    e.ok("FLUSH").await;
    let a = e.rows("SELECT * FROM a").await;
    assert!(!a.is_empty());
    assert_eq!(a, e.rows("SELECT * FROM b").await);
    assert_eq!(
        a,
        e.rows("SELECT k, count(*), max(v), avg(v) FROM t WHERE v > 2 GROUP BY k")
            .await
    );
}

#[tokio::test]
async fn view_on_view_and_global_aggregate() {
    let mut e = Engine::start().await;
    e.ok("CREATE TABLE t (k INT, v INT)").await;
    e.ok("CREATE MATERIALIZED VIEW total AS SELECT count(*) AS n, sum(v) AS s FROM t")
        .await;
    e.ok("FLUSH").await;
    assert_eq!(e.rows("SELECT * FROM total").await, vec!["0 NULL"]);
    e.ok("CREATE MATERIALIZED VIEW per_k AS SELECT k, count(*) AS n FROM t GROUP BY k")
        .await;
    e.ok("CREATE MATERIALIZED VIEW big AS SELECT k, n * 10 AS n10 FROM per_k WHERE n > 1")
        .await;
    e.ok("CREATE MATERIALIZED VIEW counts AS SELECT sum(n) AS rows FROM per_k")
        .await;
    e.ok("INSERT INTO t VALUES (1, 1), (1, 2), (2, 3)").await;
    e.ok("FLUSH").await;
    assert_eq!(e.rows("SELECT * FROM total").await, vec!["3 6"]);
    assert_eq!(e.rows("SELECT * FROM big").await, vec!["1 20"]);
    assert_eq!(e.rows("SELECT * FROM counts").await, vec!["3"]);
    e.ok("INSERT INTO t VALUES (2, 3)").await;
    e.ok("FLUSH").await;
    assert_eq!(e.rows("SELECT * FROM big").await, vec!["1 20", "2 20"]);
}

#[tokio::test]
async fn bounded_datagen_source_is_fully_read_by_flush() {
    let mut e = Engine::start().await;
    e.ok("CREATE SOURCE g (id BIGINT, v INT) WITH (connector = 'datagen', fields.id.kind = 'sequence', \
          fields.id.start = '1', fields.id.end = '1000', fields.v.min = '0', fields.v.max = '9', \
          datagen.rows.per.second = '100000')").await;
    e.ok("CREATE MATERIALIZED VIEW c AS SELECT count(*) AS n, sum(id) AS s, count(DISTINCT id) AS d FROM g").await;
    e.ok("FLUSH").await;
    assert_eq!(e.rows("SELECT * FROM c").await, vec!["1000 500500 1000"]);
}

/// Two tables feed one window aggregate through a UNION ALL; `b` never gets a row. Its
/// watermark holds the union's back, so no window closes, until `b`'s input has been
/// silent for the view's `source_idle_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_input_stops_holding_windows_open_after_the_idle_timeout() {
    let mut e = Engine::start().await;
    for t in ["a", "b"] {
        e.ok(&format!(
            "CREATE TABLE {t} (k INT, ts TIMESTAMP, WATERMARK FOR ts AS ts) APPEND ONLY"
        ))
        .await;
    }
    let query = "AS SELECT window_start, count(*) AS n FROM ( \
        SELECT window_start, window_end FROM TUMBLE(a, ts, INTERVAL '10' SECOND) \
        UNION ALL SELECT window_start, window_end FROM TUMBLE(b, ts, INTERVAL '10' SECOND) \
        ) u GROUP BY window_start, window_end EMIT ON WINDOW CLOSE";
    e.ok(&format!("CREATE MATERIALIZED VIEW strict {query}"))
        .await;
    e.ok(&format!(
        "CREATE MATERIALIZED VIEW lenient WITH (source_idle_timeout = '200 milliseconds') {query}"
    ))
    .await;
    e.ok("INSERT INTO a VALUES (1, '2024-01-01 00:00:01'), (2, '2024-01-01 00:00:25')")
        .await;
    e.ok("FLUSH").await;
    assert!(
        e.rows("SELECT * FROM strict").await.is_empty(),
        "b has no watermark: no window can close"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let rows = e.rows("SELECT * FROM lenient").await;
        if rows == vec!["2024-01-01T00:00:00 1"] {
            break;
        }
        assert!(
            rows.is_empty() && std::time::Instant::now() < deadline,
            "expected the window [00:00, 00:10) to close once b is idle, have {rows:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(e.rows("SELECT * FROM strict").await.is_empty());
}

/// `WHERE ts > now() - INTERVAL ...`: a row leaves the view once the clock passes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporal_filter_retracts_rows_as_the_clock_passes_them() {
    let mut e = Engine::start().await;
    e.ok("CREATE TABLE ev (k INT, ts TIMESTAMP)").await;
    e.ok("CREATE MATERIALIZED VIEW recent AS SELECT k FROM ev WHERE ts > now() - INTERVAL '300' MILLISECOND")
        .await;
    e.ok("INSERT INTO ev VALUES (1, now() + INTERVAL '1' HOUR), (2, now())")
        .await;
    e.ok("FLUSH").await;
    let rows = e.rows("SELECT * FROM recent").await;
    assert!(rows.contains(&"1".to_string()), "{rows:?}");
    // Each FLUSH reads the clock; row 2 leaves within a few hundred milliseconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        e.ok("FLUSH").await;
        let rows = e.rows("SELECT * FROM recent").await;
        if rows == vec!["1"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "row 2 never expired: {rows:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `state_ttl`: a group untouched for the TTL leaves the view and starts over; an inner
/// join forgets rows older than the TTL (what they joined stays).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_ttl_forgets_untouched_groups_and_old_join_rows() {
    let mut e = Engine::start().await;
    e.ok("CREATE TABLE a (k INT, v INT) APPEND ONLY").await;
    e.ok("CREATE TABLE b (k INT, w INT) APPEND ONLY").await;
    e.ok("SET state_ttl = '400 milliseconds'").await;
    e.ok("CREATE MATERIALIZED VIEW per_k AS SELECT k, count(*) AS n FROM a GROUP BY k")
        .await;
    e.ok("SET state_ttl = off").await;
    e.ok(
        "CREATE MATERIALIZED VIEW joined WITH (state_ttl = '400 milliseconds') AS \
         SELECT a.k, a.v, b.w FROM a JOIN b ON a.k = b.k",
    )
    .await;
    e.ok("INSERT INTO a VALUES (1, 10), (1, 11), (2, 20)").await;
    e.ok("INSERT INTO b VALUES (1, 100)").await;
    e.ok("FLUSH").await;
    // Both jobs had taken every row by now: past this plus the TTL, all have expired.
    let processed = std::time::Instant::now();
    assert_eq!(e.rows("SELECT * FROM per_k").await, vec!["1 2", "2 1"]);
    assert_eq!(
        e.rows("SELECT * FROM joined").await,
        vec!["1 10 100", "1 11 100"]
    );
    // Wait (with a deadline) until the groups expire.
    let ttl = std::time::Duration::from_millis(400);
    flush_until_expired(&mut e, processed, ttl, &["per_k"]).await;
    // The join's rows are as old: a new b row matches nothing; the old result stays.
    e.ok("INSERT INTO b VALUES (1, 200)").await;
    e.ok("INSERT INTO a VALUES (1, 12)").await;
    e.ok("FLUSH").await;
    assert_eq!(
        e.rows("SELECT * FROM joined").await,
        vec!["1 10 100", "1 11 100", "1 12 200"]
    );
    // A group starts over.
    assert_eq!(e.rows("SELECT * FROM per_k").await, vec!["1 1"]);
}

/// `state_ttl` over updating inputs: an outer join's forgotten rows take what they
/// produced with them, an aggregate's forgotten groups and a Top-N's forgotten partitions
/// leave the view, and retractions of forgotten rows are ignored instead of failing the
/// job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_ttl_over_updating_input_retracts_what_forgotten_rows_produced() {
    let mut e = Engine::start().await;
    e.ok("CREATE TABLE a (k INT, v INT)").await;
    e.ok("CREATE TABLE b (k INT, w INT)").await;
    e.ok("SET state_ttl = '2 seconds'").await;
    e.ok("CREATE MATERIALIZED VIEW lj AS SELECT a.k, a.v, b.w FROM a LEFT JOIN b ON a.k = b.k")
        .await;
    e.ok("CREATE MATERIALIZED VIEW sums AS SELECT k, sum(v) AS s FROM a GROUP BY k")
        .await;
    e.ok("CREATE MATERIALIZED VIEW lowest AS SELECT k, v FROM \
         (SELECT k, v, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v) AS rn FROM a) t WHERE rn = 1")
        .await;
    e.ok("INSERT INTO a VALUES (1, 10), (2, 20)").await;
    e.ok("INSERT INTO b VALUES (1, 100)").await;
    e.ok("FLUSH").await;
    let processed = std::time::Instant::now();
    assert_eq!(
        e.rows("SELECT * FROM lj").await,
        vec!["1 10 100", "2 20 NULL"]
    );
    assert_eq!(e.rows("SELECT * FROM sums").await, vec!["1 10", "2 20"]);
    assert_eq!(e.rows("SELECT * FROM lowest").await, vec!["1 10", "2 20"]);
    // Every row expires: a's rows take their joined and padded rows with them.
    let ttl = std::time::Duration::from_secs(2);
    flush_until_expired(&mut e, processed, ttl, &["lj", "sums", "lowest"]).await;
    // Deleting a forgotten row changes nothing; new rows join and group afresh (well
    // within the TTL).
    e.ok("DELETE FROM a WHERE k = 1").await;
    e.ok("INSERT INTO b VALUES (2, 200)").await;
    e.ok("INSERT INTO a VALUES (2, 21)").await;
    e.ok("FLUSH").await;
    assert_eq!(e.rows("SELECT * FROM lj").await, vec!["2 21 200"]);
    assert_eq!(e.rows("SELECT * FROM sums").await, vec!["2 21"]);
    assert_eq!(e.rows("SELECT * FROM lowest").await, vec!["2 21"]);
    let jobs = e.coordinator.jobs();
    assert!(
        jobs.iter().all(|j| j.status == "RUNNING"),
        "no job failed: {jobs:?}"
    );
}
