//! A GROUP BY whose groups do not fit in its memory budget: they live in the aggregate's
//! RocksDB spill store, checkpoints upload only the SST files that changed, and a
//! restart restores every group exactly.

use sluice_common::config::ServeConfig;
use sluice_state::checkpoint::{CheckpointKind, CheckpointMetadata, StateFileRef};

use crate::support::{Engine, durable};

const KEYS: usize = 2000;

/// The SST files of the aggregate's spill stores that `checkpoint` references.
fn sst_files(checkpoint: &CheckpointMetadata) -> Vec<&StateFileRef> {
    checkpoint
        .files
        .iter()
        .filter(|(name, _)| name.contains(".db/") && name.ends_with(".sst"))
        .map(|(_, file)| file)
        .collect()
}

/// Those of `files` that `checkpoint` uploaded itself (in its own directory).
fn uploaded_by<'a>(
    checkpoint: &CheckpointMetadata,
    files: &[&'a StateFileRef],
) -> Vec<&'a StateFileRef> {
    let own = format!("chk-{:020}/", checkpoint.epoch);
    files
        .iter()
        .copied()
        .filter(|f| f.path.starts_with(&own))
        .collect()
}

async fn insert_keys(engine: &mut Engine, keys: impl Iterator<Item = usize>) {
    let values: Vec<String> = keys.map(|k| format!("({k}, {})", k % 7)).collect();
    for chunk in values.chunks(500) {
        engine
            .ok(&format!("INSERT INTO t VALUES {}", chunk.join(", ")))
            .await;
    }
}

async fn assert_exact(engine: &mut Engine) {
    assert_eq!(
        engine.rows("SELECT * FROM sums").await,
        engine
            .rows("SELECT k, sum(v), count(*) FROM t GROUP BY k")
            .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_beyond_memory_checkpoint_incrementally_and_restore_exactly() {
    let (config, dir) = durable("spill");
    // No memory for groups: every group goes to RocksDB after each batch.
    let config = ServeConfig {
        operator_cache_mb: 0,
        ..config
    };
    let mut engine = Engine::start_with(config.clone()).await;
    engine
        .ok("CREATE TABLE t (k INT, v INT);
             CREATE MATERIALIZED VIEW sums AS
                 SELECT k, sum(v) AS s, count(*) AS n FROM t GROUP BY k;")
        .await;
    insert_keys(&mut engine, 0..KEYS).await;
    engine.ok("FLUSH").await;
    assert_exact(&mut engine).await;
    let first = engine.checkpoint(CheckpointKind::Checkpoint).await;
    let first_ssts = sst_files(&first);
    assert!(
        !first_ssts.is_empty(),
        "the groups are in SST files: {:?}",
        first.files.keys()
    );
    let full: u64 = first_ssts.iter().map(|f| f.size).sum();

    // A few groups change: the next checkpoint uploads their new SST file and
    // references the earlier ones.
    insert_keys(&mut engine, (0..KEYS).step_by(100)).await;
    engine.ok("FLUSH").await;
    assert_exact(&mut engine).await;
    let second = engine.checkpoint(CheckpointKind::Checkpoint).await;
    let second_ssts = sst_files(&second);
    let new = uploaded_by(&second, &second_ssts);
    let reused = second_ssts.len() - new.len();
    assert!(
        reused > 0,
        "unchanged SST files are referenced: {second_ssts:?}"
    );
    assert!(
        !new.is_empty(),
        "the changed groups are uploaded: {second_ssts:?}"
    );
    let new_bytes: u64 = new.iter().map(|f| f.size).sum();
    assert!(
        new_bytes < full,
        "the second checkpoint uploaded {new_bytes} bytes of SST files, the first {full}"
    );

    // A savepoint borrows nothing.
    let savepoint = engine.checkpoint(CheckpointKind::Savepoint).await;
    let savepoint_ssts = sst_files(&savepoint);
    assert_eq!(
        uploaded_by(&savepoint, &savepoint_ssts).len(),
        savepoint_ssts.len()
    );

    // More changes after the savepoint are replayed from the table at the restart.
    insert_keys(&mut engine, (0..KEYS).step_by(3)).await;
    engine.ok("FLUSH").await;
    engine.shutdown().await;

    let mut engine = Engine::start_with(config).await;
    engine.ok("FLUSH").await;
    assert_exact(&mut engine).await;
    assert_eq!(engine.job("sums").restored_epoch, Some(savepoint.epoch));
    engine.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
