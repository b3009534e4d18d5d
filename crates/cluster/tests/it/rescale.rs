//! `ALTER MATERIALIZED VIEW ... SET PARALLELISM`: a view restarts from a savepoint at
//! another parallelism with its state redistributed by key group, and goes on exactly as
//! if it had always run there (1 → 3 → 2, then a server restart).

use sluice_common::config::ServeConfig;

use crate::support::{Engine, Rng, durable, write_random_changes};

/// Views over the updating table `t (k, v)` and the append-only, event-time table
/// `e (k, v, ts)`, each with the batch query it must equal: keyed aggregates (with
/// multiset min/max, keyed by an expression, by a string), inner, outer and semi joins,
/// Top-N, a filter, a window aggregate.
const VIEWS: [(&str, &str, &str); 10] = [
    (
        "sums",
        "SELECT k, sum(v) AS s, count(*) AS n, max(v) AS top FROM t GROUP BY k",
        "SELECT k, sum(v), count(*), max(v) FROM t GROUP BY k",
    ),
    (
        "pairs",
        "SELECT a.k, a.v, b.v AS w FROM t a JOIN t b ON a.k = b.k AND a.v < b.v",
        "SELECT a.k, a.v, b.v FROM t a JOIN t b ON a.k = b.k AND a.v < b.v",
    ),
    (
        "padded",
        "SELECT a.k, a.v, b.v AS w FROM t a LEFT JOIN t b ON a.k = b.k AND a.v + 30 < b.v",
        "SELECT a.k, a.v, b.v FROM t a LEFT JOIN t b ON a.k = b.k AND a.v + 30 < b.v",
    ),
    (
        "right_padded",
        "SELECT a.k AS ak, a.v, b.k, b.v AS w FROM t a RIGHT JOIN t b ON a.k = b.k AND a.v > b.v + 30",
        "SELECT a.k, a.v, b.k, b.v FROM t a RIGHT JOIN t b ON a.k = b.k AND a.v > b.v + 30",
    ),
    (
        "members",
        "SELECT k, v FROM t WHERE k IN (SELECT k FROM t WHERE v > 90)",
        "SELECT k, v FROM t WHERE k IN (SELECT k FROM t WHERE v > 90)",
    ),
    (
        "top2",
        "SELECT k, v FROM (SELECT k, v, row_number() OVER (PARTITION BY k ORDER BY v DESC) AS r FROM t) WHERE r <= 2",
        "SELECT k, v FROM (SELECT k, v, row_number() OVER (PARTITION BY k ORDER BY v DESC) AS r FROM t) WHERE r <= 2",
    ),
    (
        "big",
        "SELECT k, v FROM t WHERE v > 50",
        "SELECT k, v FROM t WHERE v > 50",
    ),
    (
        "counts",
        "SELECT v % 5 AS bucket, count(*) AS n FROM t GROUP BY v % 5",
        "SELECT v % 5, count(*) FROM t GROUP BY v % 5",
    ),
    (
        "named",
        "SELECT 'k' || CAST(k AS VARCHAR) AS name, min(v) AS low FROM t GROUP BY 'k' || CAST(k AS VARCHAR)",
        "SELECT 'k' || CAST(k AS VARCHAR), min(v) FROM t GROUP BY 'k' || CAST(k AS VARCHAR)",
    ),
    (
        "per_window",
        "SELECT k, window_start, count(*) AS n, sum(v) AS total FROM TUMBLE(e, ts, INTERVAL '10' SECOND) GROUP BY k, window_start, window_end",
        "SELECT k, window_start, count(*), sum(v) FROM TUMBLE(e, ts, INTERVAL '10' SECOND) GROUP BY k, window_start, window_end",
    ),
];

async fn create_views(engine: &mut Engine) {
    engine
        .ok("CREATE TABLE t (k INT, v INT);
             CREATE TABLE e (k INT, v INT, ts TIMESTAMP,
                             WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) APPEND ONLY;
             SET streaming_parallelism = 1")
        .await;
    for (name, query, _) in VIEWS {
        engine
            .ok(&format!("CREATE MATERIALIZED VIEW {name} AS {query}"))
            .await;
    }
}

/// Changes to `t`, and events to `e` in event-time order (none late), then FLUSH.
async fn write(engine: &mut Engine, rng: &mut Rng, clock: &mut i64) {
    write_random_changes(engine, rng, 40).await;
    let events: Vec<String> = (0..30)
        .map(|_| {
            *clock += rng.below(3);
            format!(
                "({}, {}, TIMESTAMP '2024-01-01 00:00:00' + INTERVAL '{clock}' SECOND)",
                rng.below(5),
                rng.below(100)
            )
        })
        .collect();
    engine
        .ok(&format!("INSERT INTO e VALUES {}", events.join(", ")))
        .await;
    engine.ok("FLUSH").await;
}

async fn assert_views_exact(engine: &mut Engine, when: &str) {
    for job in engine.coordinator.jobs() {
        assert_eq!(
            (job.status.as_str(), job.restarts, &job.error),
            ("RUNNING", 0, &None),
            "job of {} {when}",
            job.name
        );
    }
    for (name, _, batch) in VIEWS {
        assert_eq!(
            engine.rows(&format!("SELECT * FROM {name}")).await,
            engine.rows(batch).await,
            "{name} {when}"
        );
    }
}

/// Checks every view's job runs at `parallelism`, but `big`: a filter over a table runs
/// where the table is read, on one subtask.
fn assert_parallelism(engine: &Engine, parallelism: usize) {
    for job in engine.coordinator.jobs() {
        let expected = if job.name == "big" { 1 } else { parallelism };
        assert_eq!(job.parallelism, expected, "job of {}", job.name);
    }
}

/// Sets every view's parallelism.
async fn rescale_all(engine: &mut Engine, parallelism: usize) {
    for (name, _, _) in VIEWS {
        engine
            .ok(&format!(
                "ALTER MATERIALIZED VIEW {name} SET PARALLELISM = {parallelism}"
            ))
            .await;
    }
    engine.ok("FLUSH").await;
    assert_parallelism(engine, parallelism);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_restored_at_another_parallelism_equal_their_queries() {
    let (config, dir) = durable("rescale");
    let mut engine = Engine::start_with(config.clone()).await;
    let mut rng = Rng(7);
    let mut clock = 0;
    create_views(&mut engine).await;
    write(&mut engine, &mut rng, &mut clock).await;
    assert_views_exact(&mut engine, "at parallelism 1").await;

    for parallelism in [3, 2] {
        rescale_all(&mut engine, parallelism).await;
        for job in engine.coordinator.jobs() {
            assert!(
                job.restored_epoch.is_some(),
                "{} was restored from the savepoint, not recomputed",
                job.name
            );
        }
        assert_views_exact(&mut engine, &format!("just after moving to {parallelism}")).await;
        write(&mut engine, &mut rng, &mut clock).await;
        assert_views_exact(&mut engine, &format!("after changes at {parallelism}")).await;
    }
    engine.ok("CHECKPOINT").await;
    engine.shutdown().await;

    // The new parallelism is in the catalog: a restarted server runs the views at 2.
    let mut engine = Engine::start_with(config).await;
    write(&mut engine, &mut rng, &mut clock).await;
    assert_views_exact(&mut engine, "after a restart").await;
    assert_parallelism(&engine, 2);
    engine.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_data_directory_a_rescaled_view_is_recomputed() {
    let mut engine = Engine::start_with(ServeConfig::ephemeral()).await;
    let mut rng = Rng(8);
    let mut clock = 0;
    create_views(&mut engine).await;
    write(&mut engine, &mut rng, &mut clock).await;
    rescale_all(&mut engine, 3).await;
    assert_views_exact(&mut engine, "recomputed at 3").await;
    write(&mut engine, &mut rng, &mut clock).await;
    assert_views_exact(&mut engine, "after changes at 3").await;
}

/// A view over a connector source is rescaled mid-stream: the source keeps reading its
/// splits at the old parallelism from the savepoint's positions, the aggregate moves,
/// and every generated row is counted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_over_a_source_rescales_mid_stream_with_each_row_counted_once() {
    let (config, dir) = durable("rescale-source");
    let mut engine = Engine::start_with(config.clone()).await;
    let rows: i64 = 3000;
    engine
        .ok(&format!(
            "CREATE SOURCE seq (id BIGINT) WITH (
                 connector = 'datagen', fields.id.kind = 'sequence',
                 fields.id.start = '1', fields.id.end = '{rows}',
                 datagen.rows.per.second = '1000');
             SET streaming_parallelism = 2;
             CREATE MATERIALIZED VIEW buckets AS
                 SELECT id % 7 AS bucket, count(*) AS n, count(DISTINCT id) AS ids, sum(id) AS total
                 FROM seq GROUP BY id % 7"
        ))
        .await;
    let job = |engine: &Engine| engine.job("buckets");
    assert_eq!(
        job(&engine).status,
        "RUNNING",
        "the source is still being read"
    );
    engine
        .ok("ALTER MATERIALIZED VIEW buckets SET PARALLELISM = 3")
        .await;
    let rescaled = job(&engine);
    assert_eq!(rescaled.parallelism, 3);
    assert!(
        rescaled.restored_epoch.is_some(),
        "restored from the savepoint"
    );
    engine.ok("FLUSH").await;
    let totals = "SELECT sum(n), sum(ids), sum(total) FROM buckets";
    let expected = format!("{rows} {rows} {}", rows * (rows + 1) / 2);
    assert_eq!(engine.rows(totals).await, vec![expected.clone()]);
    engine.shutdown().await;

    // The source's parallelism is in the catalog: a restart restores the same layout.
    let mut engine = Engine::start_with(config).await;
    engine.ok("FLUSH").await;
    assert_eq!(engine.rows(totals).await, vec![expected]);
    assert_eq!(job(&engine).parallelism, 3);
    engine.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
