//! A GROUP BY and a Top-N (each also under a state TTL), a join, session windows, a
//! window join, an interval join and a window Top-N whose state does not fit in their
//! memory budget: it lives in
//! each operator's RocksDB spill store, checkpoints upload only the SST files that
//! changed, and a restart restores all of it exactly.

use sluice_common::config::ServeConfig;
use sluice_state::checkpoint::{CheckpointKind, CheckpointMetadata, StateFileRef};

use crate::support::{Engine, durable};

const KEYS: usize = 2000;

/// The views whose operators spill: a GROUP BY, a join, a Top-N, session windows, a
/// window join, an interval join, a window Top-N, and a deduplication and a GROUP BY under
/// a state TTL.
const VIEWS: [&str; 9] = [
    "sums",
    "joined",
    "top",
    "sessions",
    "window_joined",
    "interval_joined",
    "window_top",
    "deduped",
    "ttl_sums",
];

/// The Top-N view's query.
const TOP: &str = "SELECT k, v, rn FROM (SELECT k, v, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC) AS rn FROM t) WHERE rn <= 2";

/// The session windows view's query: sessions of clicks per key, 5 s apart.
const SESSIONS: &str = "SELECT k, window_start, window_end, count(*) AS n FROM TABLE(SESSION(TABLE clicks PARTITION BY k, DESCRIPTOR(ts), INTERVAL '5' SECOND)) GROUP BY k, window_start, window_end";

/// The window join view's query: pairs of clicks of a key in one 10 s window.
const WINDOW_JOINED: &str = "SELECT L.k, L.window_start, L.ts AS lts, R.ts AS rts FROM (SELECT * FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(ts), INTERVAL '10' SECOND))) L JOIN (SELECT * FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(ts), INTERVAL '10' SECOND))) R ON L.k = R.k AND L.window_start = R.window_start AND L.window_end = R.window_end";

/// The interval join view's query: pairs of clicks of a key at most 3 s apart.
const INTERVAL_JOINED: &str = "SELECT c.k, c.ts AS first, d.ts AS later FROM clicks c JOIN clicks d ON c.k = d.k AND d.ts BETWEEN c.ts AND c.ts + INTERVAL '3' SECOND";

/// The window Top-N view's query: each key's last click in each 10 s window.
const WINDOW_TOP: &str = "SELECT k, window_start, lts FROM (SELECT k, window_start, ts AS lts, ROW_NUMBER() OVER (PARTITION BY k, window_start, window_end ORDER BY ts DESC) AS rn FROM TUMBLE(clicks, ts, INTERVAL '10' SECOND)) WHERE rn <= 1";

/// The deduplication view's query (under a state TTL of a day: nothing expires here).
const DEDUPED: &str = "SELECT k, v FROM (SELECT k, v, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v) AS rn FROM t) WHERE rn = 1";

/// The SST files of the spill stores of view `view` (by id) that `checkpoint`
/// references.
fn sst_files(checkpoint: &CheckpointMetadata, view: u64) -> Vec<&StateFileRef> {
    let prefix = format!("mv-{view}/");
    checkpoint
        .files
        .iter()
        .filter(|(name, _)| {
            name.starts_with(&prefix) && name.contains(".db/") && name.ends_with(".sst")
        })
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

/// Inserts a row per key into `table`.
async fn insert_keys(engine: &mut Engine, table: &str, keys: impl Iterator<Item = usize>) {
    let values: Vec<String> = keys.map(|k| format!("({k}, {})", k % 7)).collect();
    for chunk in values.chunks(500) {
        engine
            .ok(&format!("INSERT INTO {table} VALUES {}", chunk.join(", ")))
            .await;
    }
}

/// Clicks a row per key into `clicks`, 20 s after the last round's, within 4 s of each
/// other and in time order (so none is late): each round's rows of a key are one
/// session and one window, which the next round's watermark closes.
async fn click_keys(engine: &mut Engine, keys: impl Iterator<Item = usize>, round: usize) {
    let mut clicks: Vec<(usize, usize)> = keys.map(|k| (round * 20 + k % 5, k)).collect();
    clicks.sort();
    let values: Vec<String> = clicks
        .into_iter()
        .map(|(second, k)| {
            format!(
                "({k}, '2024-01-01 00:{:02}:{:02}')",
                second / 60,
                second % 60
            )
        })
        .collect();
    for chunk in values.chunks(500) {
        engine
            .ok(&format!("INSERT INTO clicks VALUES {}", chunk.join(", ")))
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
    assert_eq!(
        engine.rows("SELECT * FROM joined").await,
        engine
            .rows("SELECT t.k, t.v, u.v FROM t JOIN u ON t.k = u.k")
            .await
    );
    assert_eq!(
        engine.rows("SELECT * FROM top").await,
        engine.rows(TOP).await
    );
    assert_eq!(
        engine.rows("SELECT * FROM sessions").await,
        engine.rows(SESSIONS).await
    );
    assert_eq!(
        engine.rows("SELECT * FROM window_joined").await,
        engine.rows(WINDOW_JOINED).await
    );
    assert_eq!(
        engine.rows("SELECT * FROM interval_joined").await,
        engine.rows(INTERVAL_JOINED).await
    );
    assert_eq!(
        engine.rows("SELECT * FROM window_top").await,
        engine.rows(WINDOW_TOP).await
    );
    assert_eq!(
        engine.rows("SELECT * FROM deduped").await,
        engine.rows(DEDUPED).await
    );
    assert_eq!(
        engine.rows("SELECT * FROM ttl_sums").await,
        engine
            .rows("SELECT k, sum(v), count(*) FROM t GROUP BY k")
            .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_beyond_memory_checkpoints_incrementally_and_restores_exactly() {
    let (config, dir) = durable("spill");
    // No memory for state: every group and join bucket goes to RocksDB after each batch.
    let config = ServeConfig {
        operator_cache_mb: 0,
        ..config
    };
    let mut engine = Engine::start_with(config.clone()).await;
    engine
        .ok("CREATE TABLE t (k INT, v INT);
             CREATE TABLE u (k INT, v INT);
             CREATE TABLE clicks (k INT, ts TIMESTAMP,
                                  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) APPEND ONLY;
             CREATE MATERIALIZED VIEW sums AS
                 SELECT k, sum(v) AS s, count(*) AS n FROM t GROUP BY k;
             CREATE MATERIALIZED VIEW ttl_sums WITH (state_ttl = '1 day') AS
                 SELECT k, sum(v) AS s, count(*) AS n FROM t GROUP BY k;
             CREATE MATERIALIZED VIEW joined AS
                 SELECT t.k, t.v AS tv, u.v AS uv FROM t JOIN u ON t.k = u.k;")
        .await;
    engine
        .ok(&format!("CREATE MATERIALIZED VIEW top AS {TOP}"))
        .await;
    engine
        .ok(&format!("CREATE MATERIALIZED VIEW sessions AS {SESSIONS}"))
        .await;
    engine
        .ok(&format!(
            "CREATE MATERIALIZED VIEW window_joined AS {WINDOW_JOINED}"
        ))
        .await;
    engine
        .ok(&format!(
            "CREATE MATERIALIZED VIEW interval_joined AS {INTERVAL_JOINED}"
        ))
        .await;
    engine
        .ok(&format!(
            "CREATE MATERIALIZED VIEW window_top AS {WINDOW_TOP}"
        ))
        .await;
    engine
        .ok(&format!(
            "CREATE MATERIALIZED VIEW deduped WITH (state_ttl = '1 day') AS {DEDUPED}"
        ))
        .await;
    insert_keys(&mut engine, "t", 0..KEYS).await;
    insert_keys(&mut engine, "u", (0..KEYS).step_by(2)).await;
    click_keys(&mut engine, 0..KEYS, 0).await;
    engine.ok("FLUSH").await;
    assert_exact(&mut engine).await;
    let ids = VIEWS.map(|view| engine.job(view).id);
    let first = engine.checkpoint(CheckpointKind::Checkpoint).await;

    // A few keys change: the next checkpoint uploads their new SST files and
    // references the earlier ones.
    insert_keys(&mut engine, "t", (0..KEYS).step_by(100)).await;
    insert_keys(&mut engine, "u", (0..KEYS).step_by(100)).await;
    click_keys(&mut engine, (0..KEYS).step_by(100), 1).await;
    engine.ok("FLUSH").await;
    assert_exact(&mut engine).await;
    let second = engine.checkpoint(CheckpointKind::Checkpoint).await;
    for (view, id) in VIEWS.into_iter().zip(ids) {
        let first_ssts = sst_files(&first, id);
        assert!(
            !first_ssts.is_empty(),
            "{view}'s state is in SST files: {:?}",
            first.files.keys()
        );
        let full: u64 = first_ssts.iter().map(|f| f.size).sum();
        let second_ssts = sst_files(&second, id);
        let new = uploaded_by(&second, &second_ssts);
        let reused = second_ssts.len() - new.len();
        assert!(
            reused > 0,
            "{view}: unchanged SST files are referenced: {second_ssts:?}"
        );
        assert!(
            !new.is_empty(),
            "{view}: the changed keys are uploaded: {second_ssts:?}"
        );
        let new_bytes: u64 = new.iter().map(|f| f.size).sum();
        assert!(
            new_bytes < full,
            "{view}: the second checkpoint uploaded {new_bytes} bytes of SST files, the first {full}"
        );
    }

    // A savepoint borrows nothing.
    let savepoint = engine.checkpoint(CheckpointKind::Savepoint).await;
    for id in ids {
        let savepoint_ssts = sst_files(&savepoint, id);
        assert!(!savepoint_ssts.is_empty());
        assert_eq!(
            uploaded_by(&savepoint, &savepoint_ssts).len(),
            savepoint_ssts.len()
        );
    }

    // More changes after the savepoint are replayed from the tables at the restart.
    insert_keys(&mut engine, "t", (0..KEYS).step_by(3)).await;
    insert_keys(&mut engine, "u", (1..KEYS).step_by(3)).await;
    click_keys(&mut engine, (0..KEYS).step_by(3), 2).await;
    engine.ok("FLUSH").await;
    engine.shutdown().await;

    let mut engine = Engine::start_with(config).await;
    engine.ok("FLUSH").await;
    assert_exact(&mut engine).await;
    for view in VIEWS {
        assert_eq!(engine.job(view).restored_epoch, Some(savepoint.epoch));
    }
    let downloads = dir.join("operator-state/restore");
    assert_eq!(
        std::fs::read_dir(&downloads).map_or(0, |d| d.count()),
        0,
        "the downloaded databases go once their state is copied into the new stores"
    );
    engine.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
