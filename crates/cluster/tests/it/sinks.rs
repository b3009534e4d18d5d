//! Sinks receive exactly their query's changelog: what it leaves (rows and checksum)
//! equals the query run as a batch query, also after a job restarts, from scratch or
//! from a checkpoint; completed checkpoints are committed to every sink.

use sluice_cluster::{SinkInfo, StatementResult};
use sluice_runtime::sink::rows_checksum;
use sluice_state::checkpoint::CheckpointKind;

use crate::support::{Engine, Rng, durable, kill_between_changes, write_random_changes};

const TABLE: &str = "CREATE TABLE t (k INT, v INT)";

const SINKS: &str = "
    CREATE MATERIALIZED VIEW sums AS SELECT k, sum(v) AS s, count(*) AS n FROM t GROUP BY k;
    CREATE SINK from_sums FROM sums WITH (connector = 'blackhole');
    CREATE SINK grouped AS SELECT k, max(v) AS m FROM t GROUP BY k WITH (connector = 'blackhole');
    CREATE SINK joined AS SELECT a.k, a.v, b.v AS w FROM t a LEFT JOIN t b ON a.k = b.k AND a.v < b.v
        WITH (connector = 'blackhole');
    CREATE SINK filtered AS SELECT k, v FROM t WHERE v > 50 WITH (connector = 'blackhole');
";

/// Each sink and the batch query whose result its changelog must leave.
const EXPECTED: [(&str, &str); 4] = [
    ("from_sums", "SELECT * FROM sums"),
    ("grouped", "SELECT k, max(v) FROM t GROUP BY k"),
    (
        "joined",
        "SELECT a.k, a.v, b.v FROM t a LEFT JOIN t b ON a.k = b.k AND a.v < b.v",
    ),
    ("filtered", "SELECT k, v FROM t WHERE v > 50"),
];

fn sink(engine: &Engine, name: &str) -> SinkInfo {
    engine
        .coordinator
        .sinks()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no sink {name}"))
}

/// Every sink's changelog leaves exactly the rows of its query.
async fn assert_sinks_exact(engine: &mut Engine) {
    for (name, query) in EXPECTED {
        let Ok(StatementResult::Rows { batches, .. }) = engine.run(query).await else {
            panic!("{query} returns rows");
        };
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let info = sink(engine, name);
        assert_eq!(info.rows(), rows as i64, "rows of {name}");
        assert_eq!(
            info.checksum,
            rows_checksum(&batches).unwrap(),
            "checksum of {name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_receive_exactly_the_changelog_of_their_query() {
    let mut engine = Engine::start().await;
    let mut rng = Rng(11);
    engine.ok("SET streaming_parallelism = 2").await;
    engine.ok(TABLE).await;
    // Rows written before the sinks exist reach them too.
    write_random_changes(&mut engine, &mut rng, 20).await;
    engine.ok(SINKS).await;
    for round in 0..6 {
        write_random_changes(&mut engine, &mut rng, 20).await;
        engine.ok("FLUSH").await;
        assert_sinks_exact(&mut engine).await;
        if round == 2 {
            // The checksum tells rows apart, not only their number.
            let before = sink(&engine, "filtered");
            engine.ok("UPDATE t SET v = v + 1 WHERE v > 50").await;
            engine.ok("FLUSH").await;
            let after = sink(&engine, "filtered");
            let moved = after.inserts - before.inserts;
            assert!(moved > 0, "some rows are above 50");
            assert_eq!(after.deletes - before.deletes, moved);
            assert_ne!(after.checksum, before.checksum);
        }
    }
    assert_eq!(
        sink(&engine, "grouped").committed_epoch,
        0,
        "an ephemeral server takes no checkpoints"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_sinks_count_each_change_once_and_commit_completed_checkpoints() {
    let (config, dir) = durable("sinks");
    let mut engine = Engine::start_with(config.clone()).await;
    let mut rng = Rng(12);
    engine.ok("SET streaming_parallelism = 2").await;
    engine.ok(TABLE).await;
    engine.ok(SINKS).await;
    write_random_changes(&mut engine, &mut rng, 30).await;
    engine.ok("FLUSH").await;
    let checkpoint = engine.checkpoint(CheckpointKind::Checkpoint).await;
    for (name, _) in EXPECTED {
        assert_eq!(
            sink(&engine, name).committed_epoch,
            checkpoint.epoch,
            "{name} committed the checkpoint"
        );
    }
    // Changes after the checkpoint are replayed into the restored sinks, and counted once.
    kill_between_changes(&mut engine, &mut rng, "joined", 30).await;
    assert_sinks_exact(&mut engine).await;
    let restored = engine.job("grouped");
    assert_eq!(restored.restored_epoch, Some(checkpoint.epoch));

    // So after the whole server restarts from its data directory.
    let newer = engine.checkpoint(CheckpointKind::Checkpoint).await;
    write_random_changes(&mut engine, &mut rng, 30).await;
    engine.ok("FLUSH").await;
    engine.shutdown().await;
    let mut engine = Engine::start_with(config).await;
    engine.ok("FLUSH").await;
    assert_sinks_exact(&mut engine).await;
    assert_eq!(sink(&engine, "filtered").committed_epoch, 0);
    let again = engine.checkpoint(CheckpointKind::Checkpoint).await;
    assert!(again.epoch > newer.epoch);
    assert_eq!(sink(&engine, "filtered").committed_epoch, again.epoch);
    engine.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
