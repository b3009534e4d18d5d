//! The configuration of a Sluice process.
//!
//! The `server` crate fills this from flags, `SLUICE_*` environment variables and an
//! optional TOML file (in that order of precedence); everything below reads it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Settings of `sluice serve` (coordinator and worker in one process).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// Directory for data and metadata.
    pub data_dir: PathBuf,
    /// pgwire listen address.
    pub pg_listen: String,
    /// REST API listen address.
    pub rest_listen: String,
    /// Arrow Flight SQL listen address.
    pub flight_listen: String,
    /// Where checkpoints go (an object_store URL); default `file://<data-dir>/checkpoints`.
    pub checkpoint_url: Option<String>,
    /// Parallelism of new streaming jobs when a session sets none (0 = number of cores).
    pub default_parallelism: usize,
    /// Keep nothing on disk: tables, the catalog and view state live in memory only and
    /// are gone when the process exits (for tests and throwaway sessions).
    pub ephemeral: bool,
    /// Seconds between checkpoints (0 = none; FLUSH and savepoints still work).
    pub checkpoint_interval: f64,
    /// How many completed checkpoints are kept (savepoints are kept until deleted).
    pub retained_checkpoints: usize,
    /// How many times a failed job is restarted before it is left FAILED. Failures more
    /// than [`RESTART_COUNT_RESET`] apart start the count over.
    pub restart_attempts: u32,
    /// Seconds before the first restart of a failed job; each further attempt waits
    /// twice as long, up to [`MAX_RESTART_BACKOFF_SECS`].
    pub restart_backoff: f64,
    /// Where tables and view results keep their rows. `ephemeral` always uses memory.
    pub state_backend: StateBackendKind,
    /// RocksDB's block cache (MiB), shared by every state table.
    pub state_cache_mb: usize,
    /// Memory (MiB) each stateful operator subtask keeps its most recently used keys in,
    /// with the RocksDB backend; the rest it spills to RocksDB under
    /// `<data-dir>/operator-state`. GROUP BY aggregates, equi-joins and Top-N spill so far.
    pub operator_cache_mb: usize,
    /// `sluice coordinator`: where workers reach the control plane (gRPC).
    pub rpc_listen: String,
    /// Seconds between a worker's heartbeats.
    pub heartbeat_interval: f64,
    /// Seconds without a heartbeat after which a worker is declared lost.
    pub heartbeat_timeout: f64,
    /// `sluice coordinator --metadata`: a PostgreSQL URL where the catalog and the table
    /// log are kept instead of the data directory, and through which coordinators
    /// sharing it elect the active one (the others stand by).
    pub metadata_url: Option<String>,
}

/// Where a server keeps the rows of tables and views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateBackendKind {
    /// RocksDB under `<data-dir>/state`: larger than memory.
    Rocksdb,
    Memory,
}

impl std::str::FromStr for StateBackendKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "rocksdb" => Ok(StateBackendKind::Rocksdb),
            "memory" => Ok(StateBackendKind::Memory),
            other => Err(format!(
                "unknown state backend \"{other}\"; use rocksdb or memory"
            )),
        }
    }
}

/// A job that ran this long since its last failure has its restart count reset.
pub const RESTART_COUNT_RESET: std::time::Duration = std::time::Duration::from_secs(600);

/// The longest wait before restarting a failed job.
pub const MAX_RESTART_BACKOFF_SECS: f64 = 60.0;

impl ServeConfig {
    /// The defaults, with nothing kept on disk.
    pub fn ephemeral() -> Self {
        ServeConfig {
            ephemeral: true,
            ..ServeConfig::default()
        }
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            data_dir: PathBuf::from("sluice-data"),
            pg_listen: "127.0.0.1:6875".into(),
            rest_listen: "127.0.0.1:8081".into(),
            flight_listen: "127.0.0.1:50051".into(),
            checkpoint_url: None,
            default_parallelism: 0,
            ephemeral: false,
            checkpoint_interval: 10.0,
            retained_checkpoints: 3,
            restart_attempts: 3,
            restart_backoff: 1.0,
            state_backend: StateBackendKind::Rocksdb,
            state_cache_mb: 256,
            operator_cache_mb: 64,
            rpc_listen: "127.0.0.1:6123".into(),
            heartbeat_interval: 5.0,
            heartbeat_timeout: 15.0,
            metadata_url: None,
        }
    }
}

/// The number of cores, the default parallelism of streaming jobs.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
