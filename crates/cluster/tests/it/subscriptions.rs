//! Subscription cursors read a view's changelog: folding what a cursor declared `SINCE
//! begin()` returns, from the subscription's creation on, gives exactly the view's rows,
//! also after a job restarts from a checkpoint (the log forgets what the job redoes).

use std::collections::BTreeMap;

use sluice_state::checkpoint::CheckpointKind;

use crate::support::{Engine, Rng, durable, kill_between_changes, write_random_changes};

const VIEWS: &str = "
    CREATE TABLE t (k INT, v INT);
    CREATE MATERIALIZED VIEW sums AS SELECT k, sum(v) AS s, count(*) AS n FROM t GROUP BY k;
    CREATE MATERIALIZED VIEW joined AS
        SELECT a.k, a.v, b.v AS w FROM t a LEFT JOIN t b ON a.k = b.k AND a.v < b.v;
    CREATE MATERIALIZED VIEW filtered AS SELECT k, v FROM t WHERE v > 50;
    CREATE SUBSCRIPTION sums_sub FROM sums;
    CREATE SUBSCRIPTION joined_sub FROM joined WITH (retention = '1 hour');
    CREATE SUBSCRIPTION filtered_sub FROM filtered;
";

const VIEW_NAMES: [&str; 3] = ["sums", "joined", "filtered"];

/// Reads a cursor to its end in FETCHes of random sizes and folds the changes into
/// `rows` (row → multiplicity).
async fn fold_cursor(
    engine: &mut Engine,
    rng: &mut Rng,
    cursor: &str,
    rows: &mut BTreeMap<String, i64>,
) {
    loop {
        let count = 1 + rng.below(40);
        let fetched = engine.rows(&format!("FETCH {count} FROM {cursor}")).await;
        for row in &fetched {
            // The view's columns, then op, then changed_at_ms.
            let mut parts = row.rsplitn(3, ' ');
            let (_time, op, values) = (parts.next(), parts.next(), parts.next());
            let delta = match op {
                Some("Insert" | "UpdateInsert") => 1,
                Some("Delete" | "UpdateDelete") => -1,
                other => panic!("{cursor}: unknown change kind {other:?} in {row}"),
            };
            *rows
                .entry(values.unwrap_or_default().to_string())
                .or_default() += delta;
        }
        if fetched.len() < count as usize {
            return;
        }
    }
}

/// Every view equals the fold of its subscription's changes.
async fn assert_cursors_fold_to_views(
    engine: &mut Engine,
    rng: &mut Rng,
    folded: &mut BTreeMap<&'static str, BTreeMap<String, i64>>,
) {
    for view in VIEW_NAMES {
        let rows = folded.entry(view).or_default();
        fold_cursor(engine, rng, &format!("{view}_cur"), rows).await;
        let mut expected: Vec<String> = Vec::new();
        for (row, &count) in rows.iter() {
            assert!(
                count >= 0,
                "{view}: row {row} was retracted more than inserted"
            );
            for _ in 0..count {
                expected.push(row.clone());
            }
        }
        let actual = engine.rows(&format!("SELECT * FROM {view}")).await;
        assert_eq!(expected, actual, "the fold of {view}'s changes");
    }
}

async fn declare_cursors(engine: &mut Engine) {
    for view in VIEW_NAMES {
        engine
            .ok(&format!(
                "DECLARE {view}_cur SUBSCRIPTION CURSOR FOR {view}_sub SINCE begin()"
            ))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_read_each_change_of_their_view_once() {
    let mut engine = Engine::start().await;
    let mut rng = Rng(21);
    engine.ok("SET streaming_parallelism = 2").await;
    engine.ok(VIEWS).await;
    declare_cursors(&mut engine).await;
    let mut folded = BTreeMap::new();
    for _ in 0..5 {
        write_random_changes(&mut engine, &mut rng, 25).await;
        engine.ok("FLUSH").await;
        assert_cursors_fold_to_views(&mut engine, &mut rng, &mut folded).await;
    }
    // A cursor declared later from the beginning reads the same changes.
    engine.ok("CLOSE ALL").await;
    declare_cursors(&mut engine).await;
    assert_cursors_fold_to_views(&mut engine, &mut rng, &mut BTreeMap::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_restarted_from_a_checkpoint_logs_its_replayed_changes_once() {
    let (config, dir) = durable("subscriptions");
    let mut engine = Engine::start_with(config).await;
    let mut rng = Rng(22);
    engine.ok("SET streaming_parallelism = 2").await;
    engine.ok(VIEWS).await;
    write_random_changes(&mut engine, &mut rng, 30).await;
    engine.ok("FLUSH").await;
    engine.checkpoint(CheckpointKind::Checkpoint).await;
    // Changes after the checkpoint are logged, then forgotten when the jobs restart
    // from it, and logged again as the jobs replay them.
    kill_between_changes(&mut engine, &mut rng, "joined", 30).await;
    declare_cursors(&mut engine).await;
    assert_cursors_fold_to_views(&mut engine, &mut rng, &mut BTreeMap::new()).await;
    engine.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
