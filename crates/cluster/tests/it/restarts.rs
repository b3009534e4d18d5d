//! A failed job restarts, after a backoff, from the last completed checkpoint (or from
//! scratch without one), and its views end up exactly as if it had never failed. A job
//! that keeps failing is given up.

use sluice_common::config::ServeConfig;
use sluice_state::checkpoint::CheckpointKind;

use crate::support::{
    Engine, Rng, durable, fast_restarts, kill_between_changes, write_random_changes,
};

const VIEWS: &str = "
    CREATE TABLE t (k INT, v INT);
    CREATE MATERIALIZED VIEW sums AS SELECT k, sum(v) AS s, count(*) AS n FROM t GROUP BY k;
    CREATE MATERIALIZED VIEW total AS SELECT sum(s) AS s, sum(n) AS n FROM sums;
    CREATE MATERIALIZED VIEW big AS SELECT k, v FROM t WHERE v > 50;
    CREATE MATERIALIZED VIEW outside AS SELECT k, v FROM t WHERE v NOT IN (SELECT v FROM t WHERE k = 3);
    CREATE MATERIALIZED VIEW above AS
        SELECT a.k, a.v, b.v AS w FROM t a FULL JOIN t b ON a.k = b.k AND a.v + 20 < b.v;
";

/// Every view equals its query over the table's current contents.
async fn assert_views_exact(engine: &mut Engine) {
    let pairs = [
        (
            "SELECT * FROM sums",
            "SELECT k, sum(v), count(*) FROM t GROUP BY k",
        ),
        ("SELECT * FROM total", "SELECT sum(v), count(*) FROM t"),
        ("SELECT * FROM big", "SELECT k, v FROM t WHERE v > 50"),
        (
            "SELECT * FROM outside",
            "SELECT k, v FROM t WHERE v NOT IN (SELECT v FROM t WHERE k = 3)",
        ),
        (
            "SELECT * FROM above",
            "SELECT a.k, a.v, b.v FROM t a FULL JOIN t b ON a.k = b.k AND a.v + 20 < b.v",
        ),
    ];
    for (view, query) in pairs {
        assert_eq!(engine.rows(view).await, engine.rows(query).await, "{view}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_job_restarts_from_scratch_without_checkpoints() {
    let mut engine = Engine::start_with(fast_restarts(ServeConfig::ephemeral())).await;
    let mut rng = Rng(1);
    engine.ok(VIEWS).await;
    kill_between_changes(&mut engine, &mut rng, "sums", 50).await;
    assert_views_exact(&mut engine).await;
    let sums = engine.job("sums");
    assert_eq!((sums.status.as_str(), sums.restarts), ("RUNNING", 1));
    assert_eq!(
        sums.restored_epoch, None,
        "an ephemeral server has no checkpoint"
    );
    assert_eq!(
        engine.job("total").restarts,
        0,
        "only the failed job counts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_job_resumes_from_the_last_checkpoint_with_exact_results() {
    let (config, dir) = durable("resume");
    let mut engine = Engine::start_with(config).await;
    let mut rng = Rng(2);
    engine.ok(VIEWS).await;
    write_random_changes(&mut engine, &mut rng, 50).await;
    engine.ok("FLUSH").await;
    let checkpoint = engine.checkpoint(CheckpointKind::Checkpoint).await;
    // Changes after the checkpoint are replayed from what the tables retain.
    write_random_changes(&mut engine, &mut rng, 50).await;
    engine
        .coordinator
        .kill_job("sums", "worker lost")
        .await
        .expect("job exists");
    write_random_changes(&mut engine, &mut rng, 50).await;
    engine.ok("FLUSH").await;
    assert_views_exact(&mut engine).await;
    for view in ["sums", "total", "big", "above", "outside"] {
        assert_eq!(
            engine.job(view).restored_epoch,
            Some(checkpoint.epoch),
            "{view} resumed from the checkpoint"
        );
    }

    // A second failure after a newer checkpoint resumes from that one.
    let newer = engine.checkpoint(CheckpointKind::Checkpoint).await;
    write_random_changes(&mut engine, &mut rng, 20).await;
    engine
        .coordinator
        .kill_job("big", "worker lost")
        .await
        .expect("job exists");
    engine.ok("FLUSH").await;
    assert_views_exact(&mut engine).await;
    assert_eq!(engine.job("sums").restored_epoch, Some(newer.epoch));
    assert_eq!(engine.job("big").restarts, 1);
    engine.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_keeps_failing_is_given_up_and_its_readers_with_it() {
    let config = ServeConfig {
        restart_attempts: 2,
        ..fast_restarts(ServeConfig::ephemeral())
    };
    let mut engine = Engine::start_with(config).await;
    let mut rng = Rng(3);
    engine.ok(VIEWS).await;
    for _ in 0..3 {
        write_random_changes(&mut engine, &mut rng, 10).await;
        engine
            .coordinator
            .kill_job("sums", "worker lost")
            .await
            .expect("job exists");
        engine.ok("FLUSH").await;
    }
    let sums = engine.job("sums");
    assert_eq!(sums.status, "FAILED");
    assert_eq!(sums.restarts, 2);
    assert_eq!(sums.error.as_deref(), Some("worker lost"));
    assert_eq!(engine.job("total").status, "FAILED");

    // The rest keeps working, and later restarts leave the given-up views alone.
    engine
        .coordinator
        .kill_job("big", "worker lost")
        .await
        .expect("job exists");
    write_random_changes(&mut engine, &mut rng, 10).await;
    engine.ok("FLUSH").await;
    assert_eq!(
        engine.rows("SELECT * FROM big").await,
        engine.rows("SELECT k, v FROM t WHERE v > 50").await
    );
    let big = engine.job("big");
    assert_eq!((big.status.as_str(), big.restarts), ("RUNNING", 1));
    assert_eq!(engine.job("sums").status, "FAILED");
}
