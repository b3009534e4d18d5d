//! The `sluice` command line: subcommands and their flags.
//!
//! Every `serve` flag can also come from an environment variable (`SLUICE_` + the flag in
//! upper snake case) or from the TOML file given by `--config`; flags win over the
//! environment, which wins over the file, which wins over the built-in defaults. The
//! merging itself lives in [`crate::config`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Sluice: a streaming SQL engine served over the PostgreSQL wire protocol.
#[derive(Debug, Parser)]
#[command(name = "sluice", version)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `sluice`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run coordinator and one worker in this process, serving pgwire and REST.
    Serve(ServeArgs),
    /// Run a cluster coordinator: `serve`, plus the control plane workers register with.
    Coordinator(CoordinatorArgs),
    /// Run a cluster worker that registers its slots with a coordinator.
    Worker(WorkerArgs),
    /// An interactive SQL shell (and script runner) over pgwire.
    Sql(SqlArgs),
}

/// Flags of `sluice serve`. Unset flags fall back to the environment, then to the TOML
/// file, then to the defaults of `ServeConfig`.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Directory for data and metadata (created if missing) [default: sluice-data]
    #[arg(long, env = "SLUICE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address the PostgreSQL wire protocol listens on; port 0 picks a free port
    /// [default: 127.0.0.1:6875]
    #[arg(long, env = "SLUICE_PG_LISTEN", value_name = "ADDR")]
    pub pg_listen: Option<String>,
    /// Address the REST API listens on [default: 127.0.0.1:8081]
    #[arg(long, env = "SLUICE_REST_LISTEN", value_name = "ADDR")]
    pub rest_listen: Option<String>,
    /// Address Arrow Flight SQL listens on [default: 127.0.0.1:50051]
    #[arg(long, env = "SLUICE_FLIGHT_LISTEN", value_name = "ADDR")]
    pub flight_listen: Option<String>,
    /// Where checkpoints are stored, an object_store URL (file://, s3://)
    /// [default: file://<data-dir>/checkpoints]
    #[arg(long, env = "SLUICE_CHECKPOINT_URL", value_name = "URL")]
    pub checkpoint_url: Option<String>,
    /// Parallelism of new streaming jobs when the session sets none (0 = number of cores)
    /// [default: 0]
    #[arg(long, env = "SLUICE_DEFAULT_PARALLELISM", value_name = "N")]
    pub default_parallelism: Option<usize>,
    /// Keep nothing on disk: tables, catalog and view state live in memory and are gone
    /// when the server exits
    #[arg(long, env = "SLUICE_EPHEMERAL")]
    pub ephemeral: bool,
    /// Seconds between checkpoints of every view's state (0 = no periodic checkpoints)
    /// [default: 10]
    #[arg(long, env = "SLUICE_CHECKPOINT_INTERVAL", value_name = "SECONDS")]
    pub checkpoint_interval: Option<f64>,
    /// Completed checkpoints kept in the checkpoint store; older ones are deleted
    /// (savepoints are kept) [default: 3]
    #[arg(long, env = "SLUICE_RETAINED_CHECKPOINTS", value_name = "N")]
    pub retained_checkpoints: Option<usize>,
    /// Restarts of a failed job (from its last checkpoint) before it is left FAILED
    /// [default: 3]
    #[arg(long, env = "SLUICE_RESTART_ATTEMPTS", value_name = "N")]
    pub restart_attempts: Option<u32>,
    /// Seconds before the first restart of a failed job, doubling with each further
    /// attempt up to 60 [default: 1]
    #[arg(long, env = "SLUICE_RESTART_BACKOFF", value_name = "SECONDS")]
    pub restart_backoff: Option<f64>,
    /// Where tables and view results keep their rows: rocksdb (under
    /// <data-dir>/state, larger than memory) or memory [default: rocksdb; memory when
    /// --ephemeral]
    #[arg(long, env = "SLUICE_STATE_BACKEND", value_name = "BACKEND")]
    pub state_backend: Option<String>,
    /// RocksDB's block cache in MiB [default: 256]
    #[arg(long, env = "SLUICE_STATE_CACHE_MB", value_name = "MIB")]
    pub state_cache_mb: Option<usize>,
    /// Memory in MiB each stateful operator subtask keeps its most recently used keys
    /// in; beyond it, aggregates, joins, Top-N and session windows spill state to RocksDB
    /// under <data-dir>/operator-state (rocksdb backend only) [default: 64]
    #[arg(long, env = "SLUICE_OPERATOR_CACHE_MB", value_name = "MIB")]
    pub operator_cache_mb: Option<usize>,
    /// TOML file with defaults for the options above (keys: data_dir, pg_listen,
    /// rest_listen, flight_listen, checkpoint_url, default_parallelism, ephemeral,
    /// checkpoint_interval, retained_checkpoints, restart_attempts, restart_backoff, state_backend,
    /// state_cache_mb, operator_cache_mb)
    #[arg(long, env = "SLUICE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Flags of `sluice coordinator`: those of `serve`, and the control plane's.
#[derive(Debug, Clone, Default, Args)]
pub struct CoordinatorArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Address the control plane (gRPC) listens on for workers [default: 127.0.0.1:6123]
    #[arg(long, env = "SLUICE_RPC_LISTEN", value_name = "ADDR")]
    pub rpc_listen: Option<String>,
    /// Seconds between a worker's heartbeats [default: 5]
    #[arg(long, env = "SLUICE_HEARTBEAT_INTERVAL", value_name = "SECONDS")]
    pub heartbeat_interval: Option<f64>,
    /// Seconds without a heartbeat before a worker is declared lost [default: 15]
    #[arg(long, env = "SLUICE_HEARTBEAT_TIMEOUT", value_name = "SECONDS")]
    pub heartbeat_timeout: Option<f64>,
    /// Keep the catalog and the tables' changes in this PostgreSQL database
    /// (postgres://user@host:port/database) instead of the data directory. Coordinators
    /// given the same database form a highly available group: one is active, the others
    /// stand by and take over when it dies. Needs --checkpoint-url (a store every
    /// coordinator reaches)
    #[arg(long, env = "SLUICE_METADATA", value_name = "URL")]
    pub metadata: Option<String>,
}

/// Flags of `sluice worker`.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// The coordinator's control plane, e.g. http://coordinator:6123; for a highly
    /// available group, every coordinator's, comma-separated (the worker registers with
    /// the one that answers)
    #[arg(long, env = "SLUICE_COORDINATOR", value_name = "URL[,URL...]")]
    pub coordinator: String,
    /// Subtask slots this worker offers [default: number of cores]
    #[arg(long, env = "SLUICE_SLOTS", value_name = "N")]
    pub slots: Option<u32>,
    /// Address this worker listens on; port 0 picks a free port
    #[arg(
        long,
        env = "SLUICE_RPC_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:6124"
    )]
    pub rpc_listen: String,
    /// Address the coordinator and other workers reach this worker at, when it differs
    /// from the one it listens on (a container listening on 0.0.0.0) [default: the
    /// listening address]
    #[arg(long, env = "SLUICE_ADVERTISE", value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Directory where operators spill keyed state beyond --operator-cache-mb (under
    /// operator-state/, emptied at start); without it a worker keeps all operator state
    /// in memory
    #[arg(long, env = "SLUICE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,
    /// Memory in MiB each stateful operator subtask keeps its most recently used keys in
    /// before spilling to RocksDB under --data-dir [default: 64]
    #[arg(long, env = "SLUICE_OPERATOR_CACHE_MB", value_name = "MIB")]
    pub operator_cache_mb: Option<usize>,
}

/// Flags of `sluice sql`.
#[derive(Debug, Clone, Args)]
pub struct SqlArgs {
    /// Host of the Sluice server
    #[arg(long, env = "SLUICE_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// pgwire port of the Sluice server
    #[arg(long, short = 'p', env = "SLUICE_PORT", default_value_t = 6875)]
    pub port: u16,
    /// User name sent at startup
    #[arg(long, short = 'U', env = "SLUICE_USER", default_value = "sluice")]
    pub user: String,
    /// Run this SQL (several statements allowed) and exit
    #[arg(short = 'c', long = "command", value_name = "SQL")]
    pub command: Option<String>,
    /// Run the SQL in this file and exit
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
}
