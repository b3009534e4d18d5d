//! Running SQL against a coordinator and reading results as sorted text rows.

use std::sync::Arc;

use arrow::util::display::array_value_to_string;
use sluice_cluster::{Coordinator, JobInfo, Session, StatementResult};
use sluice_state::checkpoint::{CheckpointKind, CheckpointMetadata};
use std::path::PathBuf;

use sluice_common::config::ServeConfig;
use sluice_common::error::SluiceError;

pub struct Engine {
    pub coordinator: Arc<Coordinator>,
    pub session: Session,
}

impl Engine {
    pub async fn start() -> Engine {
        Engine::start_with(ServeConfig::ephemeral()).await
    }

    pub async fn start_with(config: ServeConfig) -> Engine {
        let coordinator = Coordinator::start(config)
            .await
            .expect("coordinator starts");
        let session = coordinator.new_session();
        Engine {
            coordinator,
            session,
        }
    }

    /// Runs every statement of `sql`; returns the last result.
    pub async fn run(&mut self, sql: &str) -> Result<StatementResult, SluiceError> {
        let mut last = None;
        for stmt in self.coordinator.parse(sql)? {
            last = Some(
                self.coordinator
                    .execute(&mut self.session, &stmt, &[])
                    .await?,
            );
        }
        Ok(last.expect("at least one statement"))
    }

    /// Stops the engine's jobs and drops it, so another engine can open its data
    /// directory.
    pub async fn shutdown(self) {
        self.coordinator.shutdown().await;
    }

    /// Takes a checkpoint (or savepoint) of every job, and returns its metadata.
    pub async fn checkpoint(&self, kind: CheckpointKind) -> CheckpointMetadata {
        self.coordinator
            .checkpoint(kind)
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: {} ({})", e.message, e.state))
    }

    /// The job of view (or sink) `name`.
    pub fn job(&self, name: &str) -> JobInfo {
        self.coordinator
            .jobs()
            .into_iter()
            .find(|j| j.name == name)
            .unwrap_or_else(|| panic!("no job {name}"))
    }

    pub async fn ok(&mut self, sql: &str) {
        if let Err(e) = self.run(sql).await {
            panic!("{sql}: {} ({})", e.message, e.state);
        }
    }

    /// The rows of a query, each as its values joined by spaces, sorted.
    pub async fn rows(&mut self, sql: &str) -> Vec<String> {
        match self.run(sql).await {
            Ok(StatementResult::Rows { batches, .. }) => {
                let mut rows = Vec::new();
                for b in batches {
                    for r in 0..b.num_rows() {
                        let values: Vec<String> = b
                            .columns()
                            .iter()
                            .map(|c| {
                                if c.is_null(r) {
                                    "NULL".to_string()
                                } else {
                                    array_value_to_string(c, r).unwrap()
                                }
                            })
                            .collect();
                        rows.push(values.join(" "));
                    }
                }
                rows.sort();
                rows
            }
            Ok(other) => panic!("{sql}: expected rows, got {other:?}"),
            Err(e) => panic!("{sql}: {} ({})", e.message, e.state),
        }
    }
}

/// A small deterministic generator (SplitMix64), so a seed means the same run forever.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> i64 {
        (self.next() % n) as i64
    }

    /// A small value, or NULL one time in `null_one_in`.
    pub fn value(&mut self, range: u64, null_one_in: u64) -> String {
        if self.below(null_one_in) == 0 {
            "NULL".into()
        } else {
            self.below(range).to_string()
        }
    }
}

/// Inserts `rows` random rows `(k, v)` (k < 7, v < 100) into `t (k INT, v INT)`, then
/// updates and deletes some of a random key's rows.
pub async fn write_random_changes(engine: &mut Engine, rng: &mut Rng, rows: usize) {
    let values: Vec<String> = (0..rows)
        .map(|_| format!("({}, {})", rng.below(7), rng.below(100)))
        .collect();
    engine
        .ok(&format!("INSERT INTO t VALUES {}", values.join(", ")))
        .await;
    let k = rng.below(7);
    engine
        .ok(&format!("UPDATE t SET v = v + 1 WHERE k = {k}"))
        .await;
    let k = rng.below(7);
    engine
        .ok(&format!("DELETE FROM t WHERE k = {k} AND v < 10"))
        .await;
}

/// Restarts come quickly in tests; the backoff's growth is unit-tested.
pub fn fast_restarts(config: ServeConfig) -> ServeConfig {
    ServeConfig {
        restart_backoff: 0.01,
        ..config
    }
}

/// A durable server in a fresh directory named after `name`, whose periodic checkpoints
/// are never due (tests take them), with fast restarts.
pub fn durable(name: &str) -> (ServeConfig, PathBuf) {
    let dir = std::env::temp_dir().join(format!("sluice-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = ServeConfig {
        data_dir: dir.clone(),
        checkpoint_interval: 3600.0,
        ..fast_restarts(ServeConfig::default())
    };
    (config, dir)
}

/// Writes random changes, kills `view`'s job as a lost subtask would, and writes more,
/// flushing after each write: the failure the restart, sink and subscription tests
/// recover from.
pub async fn kill_between_changes(engine: &mut Engine, rng: &mut Rng, view: &str, rows: usize) {
    write_random_changes(engine, rng, rows).await;
    engine.ok("FLUSH").await;
    engine
        .coordinator
        .kill_job(view, "worker lost")
        .await
        .expect("job exists");
    write_random_changes(engine, rng, rows).await;
    engine.ok("FLUSH").await;
}

/// FLUSHes (each FLUSH reads the clock) until `ttl` has passed since `since` and every
/// one of `views` is empty, with a deadline.
pub async fn flush_until_expired(
    engine: &mut Engine,
    since: std::time::Instant,
    ttl: std::time::Duration,
    views: &[&str],
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        engine.ok("FLUSH").await;
        let mut empty = since.elapsed() > ttl;
        for view in views {
            empty = empty
                && engine
                    .rows(&format!("SELECT * FROM {view}"))
                    .await
                    .is_empty();
        }
        if empty {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{views:?} never expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
