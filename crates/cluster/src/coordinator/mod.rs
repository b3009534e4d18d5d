//! The coordinator's SQL front door: every protocol (pgwire, REST, later Flight SQL)
//! calls [`Coordinator`] to parse, describe and execute statements.
//!
//! Batch statements (`SELECT`, `INSERT`) run in a DataFusion [`SessionContext`] in which
//! every table, source and view is registered as a table provider. Streaming statements
//! (`CREATE MATERIALIZED VIEW`) are planned into a stream graph and deployed as a job.
//! `FLUSH` injects a barrier into every job's sources and waits until it has reached
//! every sink.
//!
//! Locking: `ddl` serializes catalog changes; `epochs` serializes barrier injection and
//! job registration, so that barriers reach every source in epoch order and a FLUSH
//! waits exactly for the jobs that received its barrier; `inner` is a short-held lock
//! over the maps and is never held across an await.
//!
//! Failed jobs are restarted by [`recovery`].

mod recovery;
mod rescale;
mod sinks;
mod subscriptions;

pub use sinks::SinkInfo;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{DFSchema, TableReference};
use datafusion::logical_expr::{DdlStatement, ExprSchemable, LogicalPlan};
use datafusion::optimizer::decorrelate_predicate_subquery::DecorrelatePredicateSubquery;
use datafusion::optimizer::eliminate_cross_join::EliminateCrossJoin;
use datafusion::optimizer::extract_equijoin_predicate::ExtractEquijoinPredicate;
use datafusion::optimizer::optimize_projections::OptimizeProjections;
use datafusion::optimizer::{Optimizer, OptimizerRule};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{self, ObjectName};
use parking_lot::Mutex;
use sluice_common::config::{ServeConfig, StateBackendKind, available_cores};
use sluice_common::error::{Result, SluiceError, SqlState};
use sluice_runtime::message::{BarrierKind, CheckpointBarrier};
use sluice_runtime::operators::StateEntry;
use sluice_runtime::operators::materialize::ViewPartition;
use sluice_sql::{
    Catalog, ObjectKind, ParsedStatement, Relation, RelationKind, ShowTarget, Statement,
    StreamOperator, ViewOptions, WatermarkDef, WatermarkSpec, dependencies, into_sink_graph,
    parse_sql, plan_stream_graph,
};
use sluice_state::checkpoint::{
    CheckpointKind, CheckpointMetadata, CheckpointStore, Downloads, RestoredCheckpoint,
};
use sluice_state::snapshot::redistribute;
use sluice_state::wal::LogRecord;
use sluice_state::{
    DEFAULT_KEY_GROUPS, MemoryStateBackend, OperatorStateDirs, RocksDbOptions, RocksDbStateBackend,
    StateBackend,
};
use tokio::sync::watch;

use crate::checkpoints::{Checkpointer, InFlight, RestorePlan, StateFile, ViewRestore, now_ms};
use crate::job::{DeployContext, Job, JobState, deploy};
use crate::membership::{DataPlaneCounters, Membership, WorkerInfo};
use crate::metadata::{
    CatalogState, DataDirMetadata, Definition, MetadataStore, Restored, create_data_dir,
};
use crate::providers::{Durability, SourceProvider, TableProviderImpl, TableStorage, ViewProvider};
use crate::remote::{Cluster, Placed};
use crate::results::{
    checkpoints_result, checkpoints_schema, jobs_result, jobs_schema, pg_type_name, sinks_result,
    sinks_schema, text_result, text_schema,
};
use recovery::{RestartPolicy, Restarts, rebalance_on_registration, restart_failed_jobs};
pub use subscriptions::Cursor;

/// Where tables and view results keep their rows: memory, or RocksDB in
/// `<data-dir>/state`. RocksDB starts empty: its contents are derived (the table log and
/// the last checkpoint rebuild them at every start).
fn state_backend(config: &ServeConfig) -> Result<Arc<dyn StateBackend>> {
    if config.ephemeral || config.state_backend == StateBackendKind::Memory {
        return Ok(Arc::new(MemoryStateBackend::new()));
    }
    let options = RocksDbOptions {
        block_cache_bytes: config.state_cache_mb << 20,
        ..RocksDbOptions::default()
    };
    let dir = config.data_dir.join("state");
    Ok(Arc::new(RocksDbStateBackend::open_empty(&dir, options)?))
}

/// Where operators spill keyed state beyond `--operator-cache-mb`: with the RocksDB
/// backend, a RocksDB per operator subtask under `<data-dir>/operator-state`, emptied at
/// every start like `state/`.
impl Coordinator {
    /// A new directory for one restore to write the RocksDB checkpoints it downloads
    /// in: next to the spill stores they are copied into (on disk, emptied at every
    /// start), or in the system's temporary directory when operators keep their state
    /// in memory. It goes once the restored databases are dropped.
    fn restore_scratch(&self) -> RestoreScratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = match &self.operator_state {
            Some(dirs) => dirs.scratch_dir(),
            None => std::env::temp_dir().join(format!(
                "sluice-restore-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            )),
        };
        RestoreScratch { dir, keep: false }
    }
}

/// A restore's scratch directory, removed with whatever was downloaded into it unless
/// [`Self::keep`] hands it to the databases a decoded plan opened there (which remove
/// their parts themselves).
struct RestoreScratch {
    dir: PathBuf,
    keep: bool,
}

impl RestoreScratch {
    /// How the checkpoint store reads a checkpoint into this directory.
    fn downloads(&self) -> Downloads<'_> {
        RestorePlan::downloads(&self.dir)
    }

    /// Decodes `latest`, read through [`Self::downloads`]; on success the directory is
    /// the opened databases' to remove.
    fn decode(mut self, latest: RestoredCheckpoint) -> Result<RestorePlan> {
        let plan = RestorePlan::decode(latest, &self.dir)?;
        self.keep = true;
        Ok(plan)
    }
}

impl Drop for RestoreScratch {
    fn drop(&mut self) {
        if !self.keep
            && let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), error = %e,
                "could not remove what an unused restore downloaded; the next start does");
        }
    }
}

fn operator_state(config: &ServeConfig) -> Result<Option<Arc<OperatorStateDirs>>> {
    if config.ephemeral || config.state_backend == StateBackendKind::Memory {
        return Ok(None);
    }
    let dir = config.data_dir.join("operator-state");
    OperatorStateDirs::open(&dir, config.operator_cache_mb << 20).map(Some)
}

/// One client connection's settings (`SET`), owned by the protocol handler.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// `SET IMPLICIT_FLUSH = true`: DML returns only once every view reflects it.
    pub implicit_flush: bool,
    /// `SET streaming_parallelism = N` (0: the server's default).
    pub streaming_parallelism: usize,
    /// `SET state_ttl = '1 day'`: the state TTL of views created afterwards.
    pub state_ttl_ms: Option<i64>,
    /// The parallelism views created afterwards read connector sources at (`None`: the
    /// job's). Not a setting: restoring a rescaled view from the catalog sets it.
    pub source_parallelism: Option<usize>,
    /// Other settings, as set, for `SHOW name`.
    pub settings: BTreeMap<String, String>,
    /// Open subscription cursors (`DECLARE ... SUBSCRIPTION CURSOR`), by name.
    pub cursors: BTreeMap<String, Cursor>,
}

/// The command tag of a statement that returns no rows (`CREATE TABLE`, `INSERT 0 3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTag {
    /// The tag word(s): `CREATE TABLE`, `INSERT`, `FLUSH`, ...
    pub tag: String,
    /// Rows affected, for `INSERT`, `UPDATE`, `DELETE` (pgwire adds the OID 0 for INSERT).
    pub rows: Option<usize>,
}

impl CommandTag {
    fn new(tag: &str) -> Self {
        CommandTag {
            tag: tag.to_string(),
            rows: None,
        }
    }
}

/// What executing one statement returned.
#[derive(Debug, Clone)]
pub enum StatementResult {
    Rows {
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    },
    Command(CommandTag),
}

/// The shape of a statement, for the extended protocol's Describe.
#[derive(Debug, Clone)]
pub struct Described {
    /// Types of `$1`, `$2`, ...; `None` where the statement leaves one undetermined.
    pub param_types: Vec<Option<DataType>>,
    /// The rows' schema, or `None` for statements that return a command tag only.
    pub schema: Option<SchemaRef>,
}

/// A relation of the catalog, for `pg_catalog` emulation.
#[derive(Debug, Clone)]
pub struct RelationInfo {
    pub name: String,
    /// `table`, `source` or `materialized view`.
    pub kind: &'static str,
    pub schema: SchemaRef,
}

/// A streaming job (one per materialized view), for `SHOW JOBS` and REST.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobInfo {
    pub id: u64,
    pub name: String,
    /// `RUNNING`, `FINISHED`, `FAILED`, or `RESTARTING` (failed, with a restart
    /// scheduled).
    pub status: String,
    pub parallelism: usize,
    /// How often the job was restarted after failing.
    pub restarts: u32,
    /// The checkpoint the running deployment resumed from, after a restart or at
    /// startup (`None`: computed from scratch).
    pub restored_epoch: Option<u64>,
    pub error: Option<String>,
    /// Rows dropped because their window had closed before they arrived.
    pub late_rows: u64,
    /// The same per operator that drops late rows: `"<node id>:<operator>"` → count.
    pub late_rows_by_operator: BTreeMap<String, u64>,
}

/// One completed checkpoint as it concerns one job, for `GET /jobs/{id}/checkpoints`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobCheckpoint {
    pub epoch: u64,
    /// `checkpoint` or `savepoint`.
    pub kind: String,
    pub completed_at_ms: u64,
    pub duration_ms: u64,
    pub alignment_ms: u64,
    /// Bytes of this job's state in the checkpoint.
    pub size_bytes: u64,
    /// Bytes per operator, keyed `"<node>:<operator>"` as in EXPLAIN; `"view"` is the
    /// view's rows.
    pub state_bytes: BTreeMap<String, u64>,
}

/// One job in detail, for `GET /jobs/{id}`: its summary and its stream graph.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub info: JobInfo,
    /// `EXPLAIN CREATE MATERIALIZED VIEW` of the job, line by line.
    pub plan: Vec<String>,
    /// Each running subtask: rows in and out, watermark, backpressure.
    pub subtasks: Vec<crate::job::SubtaskInfo>,
}

/// The parts of `CREATE MATERIALIZED VIEW` or `CREATE SINK` that define the job.
struct ViewDefinition<'a> {
    /// The whole `CREATE ...` statement, for the durable catalog.
    sql: &'a str,
    name: &'a ObjectName,
    query: &'a ast::Query,
    query_sql: &'a str,
    options: ViewOptions,
    /// A sink's connector options; `None` for a materialized view.
    sink: Option<&'a BTreeMap<String, String>>,
}

#[derive(Default)]
struct Inner {
    catalog: Catalog,
    tables: BTreeMap<String, Arc<TableStorage>>,
    views: BTreeMap<String, Vec<Arc<ViewPartition>>>,
    jobs: BTreeMap<String, Arc<Job>>,
    /// How each live object was created, by id: the durable catalog's content.
    definitions: BTreeMap<u64, Definition>,
    /// Server-wide settings changed with `SET`, saved with the catalog.
    settings: BTreeMap<String, String>,
    /// The catalog is being restored from the data directory; its file already holds
    /// what is being recreated, so it is not rewritten.
    recovering: bool,
    /// While restoring: the checkpoint views resume from, and the jobs deployed so far
    /// (started together once every view has subscribed to what it reads).
    restore_plan: Option<RestorePlan>,
    restored_views: std::collections::BTreeSet<String>,
    unstarted: Vec<Arc<Job>>,
}

/// What makes a server durable: the catalog and the table log (in the data directory
/// or PostgreSQL), and the checkpoint store.
struct DurableStores {
    metadata: Arc<dyn MetadataStore>,
    /// Checkpoints are taken periodically, so tables retain their changes since the
    /// last one for restarting failed jobs from it.
    periodic_checkpoints: bool,
    checkpointer: Checkpointer,
    /// One checkpoint at a time.
    checkpointing: tokio::sync::Mutex<()>,
}

/// The server-wide setting of the time between checkpoints.
const CHECKPOINT_INTERVAL: &str = "checkpoint_interval";

/// How long a checkpoint may take before it is aborted.
const CHECKPOINT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// The coordinator: catalog, planning, jobs and FLUSH.
pub struct Coordinator {
    ctx: SessionContext,
    default_parallelism: usize,
    backend: Arc<dyn StateBackend>,
    /// Where operators spill keyed state beyond their memory budget (`None`: the memory
    /// backend, where they keep it all in memory).
    operator_state: Option<Arc<OperatorStateDirs>>,
    /// `None` for an ephemeral server.
    durable: Option<DurableStores>,
    inner: Mutex<Inner>,
    ddl: tokio::sync::Mutex<()>,
    epochs: tokio::sync::Mutex<u64>,
    restarts: Arc<Restarts>,
    /// The time between periodic checkpoints, which `SET checkpoint_interval` changes
    /// (`None`: this server takes none).
    checkpoint_interval: Option<watch::Sender<std::time::Duration>>,
    /// The workers (the embedded one, and those registered over the control plane) and
    /// the jobs running on them.
    cluster: Arc<Cluster>,
}

impl Coordinator {
    /// Starts a coordinator with an embedded worker. Unless the configuration is
    /// ephemeral, it restores the catalog and the tables' contents from the data
    /// directory first; fails (naming the file or object) when they cannot be restored.
    pub async fn start(config: ServeConfig) -> Result<Arc<Coordinator>> {
        let metadata = match config.ephemeral {
            true => None,
            false => {
                let (store, restored) = DataDirMetadata::open(&config.data_dir)?;
                Some((Arc::new(store) as Arc<dyn MetadataStore>, restored))
            }
        };
        Self::start_with_metadata(config, metadata).await
    }

    /// [`Self::start`] with the metadata already read from `metadata`'s store (PostgreSQL,
    /// for the active coordinator of a pair); `None` when ephemeral.
    pub async fn start_with_metadata(
        config: ServeConfig,
        metadata: Option<(Arc<dyn MetadataStore>, Restored)>,
    ) -> Result<Arc<Coordinator>> {
        let session_config = SessionConfig::new()
            .with_default_catalog_and_schema("sluice", "public")
            .with_information_schema(true)
            .set_str("datafusion.sql_parser.dialect", "PostgreSQL")
            .set_bool("datafusion.sql_parser.map_string_types_to_utf8view", false);
        let default_parallelism = match config.default_parallelism {
            0 => available_cores(),
            n => n,
        }
        .min(DEFAULT_KEY_GROUPS as usize);
        let (durable, restored) = match metadata {
            None => (None, None),
            Some((metadata, restored)) => {
                let dir = &config.data_dir;
                create_data_dir(dir)?;
                let url = match &config.checkpoint_url {
                    Some(url) => url.clone(),
                    None => std::path::absolute(dir.join("checkpoints"))
                        .map_err(|e| SluiceError::io("cannot resolve the data directory", e))?
                        .display()
                        .to_string(),
                };
                let store = CheckpointStore::open(&url)?.retain(config.retained_checkpoints);
                let stores = DurableStores {
                    checkpointer: Checkpointer::new(store, CHECKPOINT_TIMEOUT, metadata.clone()),
                    metadata,
                    periodic_checkpoints: config.checkpoint_interval > 0.0,
                    checkpointing: tokio::sync::Mutex::new(()),
                };
                (Some(stores), Some(restored))
            }
        };
        let ctx = SessionContext::new_with_config(session_config);
        sluice_sql::register_functions(&ctx);
        let (restarts, restart_requests) = Restarts::new(RestartPolicy {
            attempts: config.restart_attempts,
            backoff: std::time::Duration::from_secs_f64(
                config
                    .restart_backoff
                    .min(sluice_common::config::MAX_RESTART_BACKOFF_SECS),
            ),
        });
        let periodic = durable.as_ref().is_some_and(|d| d.periodic_checkpoints);
        let coordinator = Arc::new(Coordinator {
            ctx,
            default_parallelism,
            backend: state_backend(&config)?,
            operator_state: operator_state(&config)?,
            durable,
            inner: Mutex::new(Inner {
                catalog: Catalog::new(),
                ..Inner::default()
            }),
            ddl: tokio::sync::Mutex::new(()),
            epochs: tokio::sync::Mutex::new(0),
            restarts,
            checkpoint_interval: periodic.then(|| {
                watch::Sender::new(std::time::Duration::from_secs_f64(
                    config.checkpoint_interval,
                ))
            }),
            cluster: Cluster::new(Arc::new(Membership::new(
                heartbeat_duration("heartbeat_interval", config.heartbeat_interval)?,
                heartbeat_duration("heartbeat_timeout", config.heartbeat_timeout)?,
                u32::try_from(default_parallelism).unwrap_or(u32::MAX),
            ))),
        });
        coordinator
            .cluster
            .set_snapshots(coordinator.durable.as_ref().map(|d| d.checkpointer.inbox()));
        tokio::spawn(restart_failed_jobs(
            Arc::downgrade(&coordinator),
            restart_requests,
        ));
        tokio::spawn(rebalance_on_registration(
            Arc::downgrade(&coordinator),
            coordinator.cluster.registrations(),
        ));
        if let Some(Restored { catalog, records }) = restored {
            coordinator.restore(catalog, records).await?;
        }
        if let Some(interval) = &coordinator.checkpoint_interval {
            tokio::spawn(take_checkpoints(
                Arc::downgrade(&coordinator),
                interval.subscribe(),
            ));
        }
        Ok(coordinator)
    }

    /// Takes one checkpoint of every view: injects its barrier everywhere, waits for
    /// every subtask's snapshot, uploads them and commits. Fails when the server is
    /// ephemeral or the checkpoint is aborted (nothing is committed then).
    pub async fn checkpoint(&self, kind: CheckpointKind) -> Result<CheckpointMetadata> {
        let durable = self.durable.as_ref().ok_or_else(|| {
            SluiceError::unsupported("checkpoints need a data directory; this server is ephemeral")
        })?;
        let _one_at_a_time = durable.checkpointing.lock().await;
        if self.restarts.is_pending() {
            // It would leave the failed job out; the restart resumes from the last one.
            return Err(SluiceError::new(
                SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                "a failed job is about to restart; no checkpoint until it has",
            ));
        }
        let mut positions = Vec::new();
        let flight = {
            let mut epoch = self.epochs.lock().await;
            *epoch += 1;
            let barrier = CheckpointBarrier {
                epoch: *epoch,
                kind: match kind {
                    CheckpointKind::Checkpoint => BarrierKind::Checkpoint,
                    CheckpointKind::Savepoint => BarrierKind::Savepoint,
                },
            };
            let (jobs, tables) = {
                let inner = self.inner.lock();
                let tables: Vec<(u64, Arc<TableStorage>)> = inner
                    .tables
                    .iter()
                    .filter_map(|(name, t)| Some((inner.catalog.get(name)?.id, t.clone())))
                    .collect();
                let jobs: Vec<(Arc<Job>, Vec<Arc<ViewPartition>>)> = inner
                    .jobs
                    .iter()
                    .map(|(name, job)| {
                        let partitions = inner.views.get(name).cloned().unwrap_or_default();
                        (job.clone(), partitions)
                    })
                    .collect();
                (jobs, tables)
            };
            let mut flight = InFlight {
                epoch: *epoch,
                kind,
                started_at_ms: now_ms(),
                table_positions: BTreeMap::new(),
                running: Vec::new(),
                finished: Vec::new(),
            };
            for (id, table) in &tables {
                let position = table.inject(barrier).await;
                flight.table_positions.insert(*id, position);
                positions.push((table.clone(), position));
            }
            for (job, partitions) in jobs {
                match job.state() {
                    JobState::Running => {
                        job.inject(barrier).await;
                        flight.running.push(job);
                    }
                    // A cancelled view's rows are final, as a finished one's.
                    JobState::Finished | JobState::Canceled => {
                        flight.finished.push((job, partitions))
                    }
                    // A failed or waiting view is left out: once it runs again, it is
                    // recomputed.
                    JobState::Failed(_) | JobState::Waiting(_) => {}
                }
            }
            flight
        };
        let committing = flight.running.clone();
        let completed = durable.checkpointer.complete(flight).await?;
        self.cluster.checkpoint_completed(completed.epoch);
        for job in committing {
            job.commit_sinks(completed.epoch).await;
        }
        // Restarts resume from this checkpoint now: the changes it saw are not needed.
        for (table, position) in positions {
            table.retain_after(Some(position));
        }
        Ok(completed)
    }

    /// Recreates every object of a saved catalog, in creation order and with its id, and
    /// replays each table's logged changes into it before anything that reads it starts.
    async fn restore(&self, catalog: CatalogState, records: Vec<LogRecord>) -> Result<()> {
        self.restore_settings(catalog.settings);
        let mut changes: BTreeMap<u64, Vec<LogRecord>> = BTreeMap::new();
        for record in records {
            changes.entry(record.table_id).or_default().push(record);
        }
        let plan = match &self.durable {
            Some(durable) => {
                let store = durable.checkpointer.store();
                let scratch = self.restore_scratch();
                let latest = store
                    .latest_restorable_with(Some(scratch.downloads()))
                    .await?;
                if let Some(latest) = &latest {
                    for skipped in &latest.skipped {
                        tracing::warn!(epoch = skipped.epoch, reason = %skipped.reason, "skipped a damaged checkpoint");
                    }
                }
                // Epochs continue past every epoch the store has seen (complete, damaged
                // or abandoned), so a new checkpoint never reuses one.
                *self.epochs.lock().await = store.next_epoch().await?.saturating_sub(1);
                match latest.map(|latest| scratch.decode(latest)).transpose() {
                    Ok(plan) => plan,
                    // Verified but not decodable: written by a version whose names this
                    // one does not read. Tables replay their log either way; the views
                    // are recomputed from them.
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot use the latest checkpoint; views are recomputed from scratch");
                        None
                    }
                }
            }
            None => None,
        };
        if let Some(plan) = &plan {
            tracing::info!(
                epoch = plan.epoch,
                views = plan.views.len(),
                "restoring views from checkpoint"
            );
        }
        let restored_positions = plan.as_ref().map(|p| p.table_positions.clone());
        {
            let mut inner = self.inner.lock();
            inner.recovering = true;
            inner.restore_plan = plan;
        }
        // Views resuming from the checkpoint replay table changes past its positions.
        let restoring_views = self.inner.lock().restore_plan.is_some();
        let objects = catalog.definitions.len();
        for definition in catalog.definitions {
            let failed = |e: SluiceError| {
                SluiceError::new(
                    e.state,
                    format!(
                        "cannot restore \"{}\" from the catalog ({}): {}",
                        definition.name, definition.sql, e.message
                    ),
                )
            };
            let statement = parse_sql(&definition.sql)
                .map_err(failed)?
                .into_iter()
                .next()
                .ok_or_else(|| failed(SluiceError::internal("empty definition")))?;
            let mut session = Session {
                streaming_parallelism: definition.parallelism,
                state_ttl_ms: definition.state_ttl_ms,
                source_parallelism: definition.source_parallelism,
                ..Session::default()
            };
            self.inner.lock().catalog.set_next_id(definition.id);
            self.execute(&mut session, &statement, &[])
                .await
                .map_err(failed)?;
            if let Some(records) = changes.remove(&definition.id) {
                let table = self.inner.lock().tables.get(&definition.name).cloned();
                if let Some(table) = table {
                    table
                        .replay(records, restoring_views)
                        .await
                        .map_err(failed)?;
                }
            }
        }
        let (jobs, tables) = {
            let mut inner = self.inner.lock();
            inner.catalog.set_next_id(catalog.next_id);
            inner.recovering = false;
            inner.restore_plan = None;
            inner.restored_views.clear();
            (
                std::mem::take(&mut inner.unstarted),
                inner
                    .tables
                    .iter()
                    .filter_map(|(name, t)| Some((inner.catalog.get(name)?.id, t.clone())))
                    .collect::<Vec<_>>(),
            )
        };
        for job in jobs {
            job.start();
        }
        // Tables keep the changes since the checkpoint the views resumed from, for
        // restarting failed jobs from it (when checkpoints are periodic).
        let periodic = self
            .durable
            .as_ref()
            .is_some_and(|d| d.periodic_checkpoints);
        for (id, table) in tables {
            let position = restored_positions
                .as_ref()
                .filter(|_| periodic)
                .and_then(|positions| positions.get(&id).copied());
            table.retain_after(position);
        }
        tracing::info!(objects, "catalog restored");
        Ok(())
    }

    /// Records how object `definition.id` was created and saves the catalog.
    fn record_definition(&self, inner: &mut Inner, definition: Definition) -> Result<()> {
        inner.definitions.insert(definition.id, definition);
        self.save_catalog(inner)
    }

    /// Applies the server-wide settings a saved catalog holds.
    fn restore_settings(&self, settings: BTreeMap<String, String>) {
        let Some(value) = settings.get(CHECKPOINT_INTERVAL).cloned() else {
            self.inner.lock().settings = settings;
            return;
        };
        self.inner.lock().settings = settings;
        match (
            &self.checkpoint_interval,
            sluice_sql::parse_checkpoint_interval(&value),
        ) {
            (Some(sender), Ok(interval)) => {
                tracing::info!(interval = %value, "checkpoint interval as last SET (over --checkpoint-interval)");
                sender.send_replace(interval);
            }
            (None, _) => tracing::info!(
                "no periodic checkpoints (--checkpoint-interval 0): the interval last SET is not used"
            ),
            (_, Err(e)) => {
                tracing::warn!(error = %e.message, "the saved checkpoint interval is ignored")
            }
        }
    }

    /// `SET checkpoint_interval`: a server-wide setting, saved with the catalog (so it
    /// outlives a restart, over `--checkpoint-interval`), effective at once.
    async fn set_checkpoint_interval(&self, value: &str) -> Result<()> {
        let interval = sluice_sql::parse_checkpoint_interval(value)?;
        let Some(sender) = &self.checkpoint_interval else {
            return Err(SluiceError::new(
                SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                "this server takes no periodic checkpoints (it was started with --checkpoint-interval 0 or --ephemeral); restart it with an interval to change it",
            ));
        };
        let _ddl = self.ddl.lock().await;
        {
            let mut inner = self.inner.lock();
            let previous = inner
                .settings
                .insert(CHECKPOINT_INTERVAL.to_string(), value.to_string());
            if let Err(e) = self.save_catalog(&inner) {
                match previous {
                    Some(previous) => inner
                        .settings
                        .insert(CHECKPOINT_INTERVAL.to_string(), previous),
                    None => inner.settings.remove(CHECKPOINT_INTERVAL),
                };
                return Err(e);
            }
        }
        sender.send_replace(interval);
        tracing::info!(
            interval_ms = interval.as_millis() as u64,
            "checkpoint interval set"
        );
        Ok(())
    }

    /// Writes the catalog file (a no-op when ephemeral or while restoring).
    fn save_catalog(&self, inner: &Inner) -> Result<()> {
        let Some(durable) = &self.durable else {
            return Ok(());
        };
        if inner.recovering {
            return Ok(());
        }
        durable.metadata.save_catalog(&CatalogState {
            next_id: inner.catalog.next_id(),
            definitions: inner.definitions.values().cloned().collect(),
            settings: inner.settings.clone(),
            ..CatalogState::default()
        })
    }

    /// The cluster's workers, the embedded one first (with the coordinator's own
    /// data-plane counters).
    pub fn workers(&self) -> Vec<WorkerInfo> {
        let mut workers = self.cluster.membership.workers();
        if let Some(embedded) = workers.iter_mut().find(|w| w.id == 0) {
            embedded.dataplane = DataPlaneCounters {
                max_in_flight: self.cluster.dataplane.max_in_flight(),
                messages_sent: self.cluster.dataplane.messages_sent(),
            };
        }
        workers
    }

    /// The workers and the jobs running on them: what the control plane serves.
    pub fn cluster(&self) -> Arc<Cluster> {
        self.cluster.clone()
    }

    /// The DataFusion context batch queries run in. Protocol layers may register extra
    /// schemas (such as `pg_catalog`) and functions on it.
    pub fn session_context(&self) -> &SessionContext {
        &self.ctx
    }

    /// A new session with the server's defaults.
    pub fn new_session(&self) -> Session {
        Session::default()
    }

    /// Parses SQL text into statements (several when separated by `;`).
    pub fn parse(&self, sql: &str) -> Result<Vec<ParsedStatement>> {
        parse_sql(sql)
    }

    /// Describes a statement without running it.
    pub async fn describe(&self, session: &Session, stmt: &ParsedStatement) -> Result<Described> {
        let schema = match &stmt.statement {
            Statement::Query(q) => {
                let plan = self.plan_query(q).await?;
                let mut params: Vec<_> = plan.get_parameter_types()?.into_iter().collect();
                params
                    .sort_by_key(|(k, _)| k.trim_start_matches('$').parse::<usize>().unwrap_or(0));
                let returns_rows = matches!(
                    **q,
                    ast::Statement::Query(_)
                        | ast::Statement::Explain { .. }
                        | ast::Statement::ShowVariable { .. }
                );
                return Ok(Described {
                    param_types: params.into_iter().map(|(_, t)| t).collect(),
                    schema: returns_rows.then(|| Arc::new(plan.schema().as_arrow().clone())),
                });
            }
            Statement::Show(ShowTarget::Jobs) => Some(jobs_schema()),
            Statement::Show(ShowTarget::Checkpoints) => Some(checkpoints_schema()),
            Statement::Show(ShowTarget::Sinks) => Some(sinks_schema()),
            Statement::Show(ShowTarget::Subscriptions) => {
                Some(text_schema(&subscriptions::SUBSCRIPTION_COLUMNS))
            }
            Statement::Fetch { cursor, .. } => {
                session.cursors.get(cursor).map(|c| c.schema().clone())
            }
            Statement::Show(ShowTarget::Variable(name)) => Some(text_schema(&[name.as_str()])),
            Statement::Show(_) => Some(text_schema(&["Name"])),
            Statement::Describe(_) => Some(text_schema(&["Name", "Type", "Nullable"])),
            Statement::ExplainStream(_) => Some(text_schema(&["QUERY PLAN"])),
            _ => None,
        };
        Ok(Described {
            param_types: vec![],
            schema,
        })
    }

    /// Executes one statement with `$n` parameter values.
    pub async fn execute(
        &self,
        session: &mut Session,
        stmt: &ParsedStatement,
        params: &[ScalarValue],
    ) -> Result<StatementResult> {
        match &stmt.statement {
            Statement::Query(q) => self.execute_query(session, q, params).await,
            Statement::CreateTable {
                create,
                append_only,
                with,
                watermark,
            } => {
                if !with.is_empty() {
                    return Err(SluiceError::unsupported(
                        "CREATE TABLE ... WITH (...) is not supported; use CREATE SOURCE to read from a connector",
                    ));
                }
                self.create_table(create, *append_only, watermark.as_ref(), &stmt.sql)
                    .await
            }
            Statement::CreateSource {
                create,
                with,
                watermark,
            } => {
                self.create_source(create, with, watermark.as_ref(), &stmt.sql)
                    .await
            }
            Statement::CreateMaterializedView {
                name,
                if_not_exists,
                query,
                query_sql,
                options,
            } => {
                let view = ViewDefinition {
                    sql: &stmt.sql,
                    name,
                    query,
                    query_sql,
                    options: *options,
                    sink: None,
                };
                self.create_materialized_view(session, &view, *if_not_exists)
                    .await
            }
            Statement::CreateSink {
                name,
                if_not_exists,
                query,
                query_sql,
                options,
                with,
            } => {
                let sink = ViewDefinition {
                    sql: &stmt.sql,
                    name,
                    query,
                    query_sql,
                    options: *options,
                    sink: Some(with),
                };
                self.create_materialized_view(session, &sink, *if_not_exists)
                    .await
            }
            Statement::CreateSubscription {
                name,
                if_not_exists,
                view,
                retention_ms,
            } => {
                self.create_subscription(name, *if_not_exists, view, *retention_ms, &stmt.sql)
                    .await
            }
            Statement::DeclareCursor {
                name,
                subscription,
                since,
            } => self.declare_cursor(session, name, subscription, *since),
            Statement::Fetch { cursor, count } => self.fetch(session, cursor, *count),
            Statement::CloseCursor(name) => self.close_cursor(session, name.as_deref()),
            Statement::ExplainStream(inner) => self.explain_stream(session, inner).await,
            Statement::Flush => {
                self.flush().await;
                Ok(StatementResult::Command(CommandTag::new("FLUSH")))
            }
            Statement::Checkpoint => {
                self.checkpoint(CheckpointKind::Checkpoint).await?;
                Ok(StatementResult::Command(CommandTag::new("CHECKPOINT")))
            }
            Statement::Savepoint { view } => self.savepoint(view).await,
            Statement::AlterParallelism { view, parallelism } => {
                self.alter_parallelism(view, *parallelism).await
            }
            Statement::Show(ShowTarget::Checkpoints) => {
                checkpoints_result(&self.checkpoints().await?)
            }
            Statement::Show(target) => self.show(session, target),
            Statement::Describe(name) => self.describe_relation(name),
            Statement::Drop {
                kind,
                names,
                if_exists,
                cascade,
            } => {
                self.drop_relations(*kind, names, *if_exists, *cascade)
                    .await
            }
            Statement::Set { name, value } if name == CHECKPOINT_INTERVAL => {
                self.set_checkpoint_interval(value).await?;
                Ok(StatementResult::Command(CommandTag::new("SET")))
            }
            Statement::Set { name, value } => {
                apply_setting(session, name, value)?;
                Ok(StatementResult::Command(CommandTag::new("SET")))
            }
            Statement::Transaction(tag) => Ok(StatementResult::Command(CommandTag::new(tag))),
            Statement::Empty => Ok(StatementResult::Command(CommandTag::new(""))),
        }
    }

    /// Every table, source and materialized view.
    pub fn relations(&self) -> Vec<RelationInfo> {
        let inner = self.inner.lock();
        inner
            .catalog
            .relations()
            .filter_map(|r| {
                let kind = match r.kind {
                    RelationKind::Table { .. } => "table",
                    RelationKind::Source { .. } => "source",
                    RelationKind::MaterializedView { .. } => "materialized view",
                    // Sinks and subscriptions cannot be read: they are no relation to
                    // pg_catalog.
                    RelationKind::Sink { .. } | RelationKind::Subscription { .. } => {
                        return None;
                    }
                };
                Some(RelationInfo {
                    name: r.name.clone(),
                    kind,
                    schema: r.schema.clone(),
                })
            })
            .collect()
    }

    /// Every streaming job.
    pub fn jobs(&self) -> Vec<JobInfo> {
        let inner = self.inner.lock();
        inner
            .jobs
            .values()
            .map(|job| {
                let state = job.state();
                let (restarts, restarting) = self.restarts.status(&job.view);
                let status = match state {
                    JobState::Failed(_) if restarting => "RESTARTING",
                    _ => state.name(),
                };
                JobInfo {
                    id: job.id,
                    name: job.view.clone(),
                    status: status.to_string(),
                    parallelism: job.parallelism,
                    restarts,
                    restored_epoch: job.restored_epoch,
                    error: match state {
                        JobState::Failed(why) | JobState::Waiting(why) => Some(why),
                        _ => None,
                    },
                    late_rows: job.late_rows(),
                    late_rows_by_operator: job.late_rows_by_operator(),
                }
            })
            .collect()
    }

    /// One job, or `None` if there is no job with that id.
    pub fn job(&self, id: u64) -> Option<JobDetail> {
        let info = self.jobs().into_iter().find(|j| j.id == id)?;
        let job = self
            .inner
            .lock()
            .jobs
            .values()
            .find(|j| j.id == id)?
            .clone();
        let plan = job.graph.to_string().lines().map(str::to_string).collect();
        let mut subtasks = job.subtasks();
        if let Some(deployment) = job.deployment() {
            subtasks.extend(self.cluster.remote_subtasks(deployment, &job));
        }
        Some(JobDetail {
            info,
            plan,
            subtasks,
        })
    }

    /// The completed checkpoints holding state of job `id`, oldest first; `None` if
    /// there is no job with that id.
    pub async fn job_checkpoints(&self, id: u64) -> Result<Option<Vec<JobCheckpoint>>> {
        let Some(job) = self
            .inner
            .lock()
            .jobs
            .values()
            .find(|j| j.id == id)
            .cloned()
        else {
            return Ok(None);
        };
        let prefix = format!("mv-{id}/");
        let checkpoints = self.checkpoints().await?;
        Ok(Some(
            checkpoints
                .iter()
                .map(|c| {
                    let mut state_bytes = BTreeMap::new();
                    for (name, file) in &c.files {
                        let Some(rest) = name.strip_prefix(&prefix) else {
                            continue;
                        };
                        let operator = match StateFile::parse(name) {
                            Some(
                                StateFile::Operator { node, .. }
                                | StateFile::OperatorDb { node, .. },
                            ) => match job.graph.nodes.get(node) {
                                Some(n) => format!("{node}:{}", n.operator.name()),
                                None => rest.to_string(),
                            },
                            _ => "view".to_string(),
                        };
                        *state_bytes.entry(operator).or_insert(0) += file.size;
                    }
                    JobCheckpoint {
                        epoch: c.epoch,
                        kind: match c.kind {
                            CheckpointKind::Checkpoint => "checkpoint",
                            CheckpointKind::Savepoint => "savepoint",
                        }
                        .to_string(),
                        completed_at_ms: c.completed_at_ms,
                        duration_ms: c.duration_ms(),
                        alignment_ms: c.alignment_ms,
                        size_bytes: state_bytes.values().sum(),
                        state_bytes,
                    }
                })
                .collect(),
        ))
    }

    /// Completed checkpoints and savepoints, oldest first (empty when ephemeral).
    pub async fn checkpoints(&self) -> Result<Vec<CheckpointMetadata>> {
        match &self.durable {
            Some(durable) => durable.checkpointer.store().list().await,
            None => Ok(Vec::new()),
        }
    }

    /// Waits until every view reflects every write acknowledged before this call.
    pub async fn flush(&self) {
        // A job that fails while this waits, and is restarted, is waited for again: so
        // is every job when a recovery replaced the ones this waited on.
        loop {
            self.restarts.settled().await;
            let recoveries = self.restarts.recoveries();
            self.flush_once().await;
            if !self.restarts.is_pending() && self.restarts.recoveries() == recoveries {
                self.cluster.refresh_metrics().await;
                return;
            }
        }
    }

    async fn flush_once(&self) {
        let (epoch, jobs) = {
            let mut epoch = self.epochs.lock().await;
            *epoch += 1;
            let (jobs, tables): (Vec<Arc<Job>>, Vec<Arc<TableStorage>>) = {
                let inner = self.inner.lock();
                (
                    inner.jobs.values().cloned().collect(),
                    inner.tables.values().cloned().collect(),
                )
            };
            let barrier = CheckpointBarrier {
                epoch: *epoch,
                kind: BarrierKind::Flush,
            };
            for table in &tables {
                table.inject(barrier).await;
            }
            for job in &jobs {
                job.inject(barrier).await;
            }
            (*epoch, jobs)
        };
        for job in jobs {
            job.wait_for_epoch(epoch).await;
        }
    }

    /// Plans a statement with DataFusion, after rewriting window table functions
    /// (`TUMBLE(...)` in FROM) into plain SQL.
    async fn plan_query(&self, query: &ast::Statement) -> Result<LogicalPlan> {
        let mut query = query.clone();
        sluice_sql::rewrite_extensions(&mut query)?;
        Ok(self
            .ctx
            .state()
            .statement_to_plan(DfStatement::Statement(Box::new(query)))
            .await?)
    }

    /// Checks `WATERMARK FOR column AS expr` against a relation's schema: the column must
    /// be a timestamp and the expression must have the column's type.
    fn plan_watermark(
        &self,
        schema: &SchemaRef,
        watermark: Option<&WatermarkDef>,
    ) -> Result<Option<WatermarkSpec>> {
        let Some(def) = watermark else {
            return Ok(None);
        };
        let column = schema.field_with_name(&def.column).map_err(|_| {
            SluiceError::new(
                SqlState::UNDEFINED_COLUMN,
                format!(
                    "WATERMARK FOR names column \"{}\", which the relation does not have",
                    def.column
                ),
            )
        })?;
        if !matches!(column.data_type(), DataType::Timestamp(..)) {
            return Err(SluiceError::new(
                SqlState::DATATYPE_MISMATCH,
                format!(
                    "WATERMARK FOR column \"{}\" must be a TIMESTAMP, not {}",
                    def.column,
                    pg_type_name(column.data_type())
                ),
            ));
        }
        let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
        let expr = self.ctx.parse_sql_expr(&def.expr, &df_schema)?;
        let expr_type = expr.to_field(&df_schema)?.1.data_type().clone();
        if expr_type != *column.data_type() {
            return Err(SluiceError::new(
                SqlState::DATATYPE_MISMATCH,
                format!(
                    "the watermark expression {} has type {}, but column \"{}\" is {}",
                    def.expr,
                    pg_type_name(&expr_type),
                    def.column,
                    pg_type_name(column.data_type())
                ),
            ));
        }
        Ok(Some(WatermarkSpec {
            column: def.column.clone(),
            expr,
            sql: def.expr.clone(),
        }))
    }

    async fn execute_query(
        &self,
        session: &Session,
        statement: &ast::Statement,
        params: &[ScalarValue],
    ) -> Result<StatementResult> {
        let dml_tag = match statement {
            ast::Statement::Query(_) | ast::Statement::ShowVariable { .. } => None,
            // Planning DML runs it (see `TableProviderImpl::delete_from`), so only
            // queries may be explained.
            ast::Statement::Explain { statement, .. } => {
                if !matches!(**statement, ast::Statement::Query(_)) {
                    return Err(SluiceError::unsupported(
                        "EXPLAIN is supported for SELECT and CREATE MATERIALIZED VIEW only",
                    ));
                }
                None
            }
            ast::Statement::Insert(_) => Some("INSERT"),
            ast::Statement::Update { .. } => Some("UPDATE"),
            ast::Statement::Delete(_) => Some("DELETE"),
            ast::Statement::CreateView(_) => {
                return Err(SluiceError::unsupported(
                    "CREATE VIEW is not supported; use CREATE MATERIALIZED VIEW",
                ));
            }
            other => {
                let text = other.to_string();
                let words: Vec<&str> = text.split_whitespace().take(2).collect();
                return Err(SluiceError::unsupported(format!(
                    "{} is not supported",
                    words.join(" ")
                )));
            }
        };
        let plan = self.plan_query(statement).await?;
        let plan = if params.is_empty() {
            plan
        } else {
            plan.with_param_values(params.to_vec())?
        };
        let df = self.ctx.execute_logical_plan(plan).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        let Some(tag) = dml_tag else {
            return Ok(StatementResult::Rows { schema, batches });
        };
        let rows = batches
            .first()
            .and_then(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<UInt64Array>()
                    .map(|c| c.value(0))
            })
            .unwrap_or(0);
        if session.implicit_flush {
            self.flush().await;
        }
        Ok(StatementResult::Command(CommandTag {
            tag: tag.into(),
            rows: Some(rows as usize),
        }))
    }

    /// Plans a `CREATE TABLE`-shaped statement with DataFusion to get its schema and
    /// primary key.
    async fn plan_table_definition(
        &self,
        create: &ast::Statement,
    ) -> Result<(String, SchemaRef, Vec<usize>, bool)> {
        let plan = self.plan_query(create).await?;
        let LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(def)) = plan else {
            return Err(SluiceError::unsupported(
                "CREATE TABLE AS is not supported; CREATE TABLE, then INSERT INTO ... SELECT",
            ));
        };
        if !matches!(*def.input, LogicalPlan::EmptyRelation(_)) {
            return Err(SluiceError::unsupported(
                "CREATE TABLE AS is not supported; CREATE TABLE, then INSERT INTO ... SELECT",
            ));
        }
        if def.or_replace {
            return Err(SluiceError::unsupported(
                "CREATE OR REPLACE TABLE is not supported; DROP it first",
            ));
        }
        if !def.column_defaults.is_empty() {
            return Err(SluiceError::unsupported(
                "column DEFAULT values are not supported yet",
            ));
        }
        let name = sluice_sql::relation_name(&def.name)?;
        let mut primary_key = Vec::new();
        for constraint in def.constraints.iter() {
            match constraint {
                datafusion::common::Constraint::PrimaryKey(cols) => primary_key = cols.clone(),
                datafusion::common::Constraint::Unique(_) => {
                    return Err(SluiceError::unsupported(
                        "UNIQUE constraints are not supported; use PRIMARY KEY",
                    ));
                }
            }
        }
        let arrow_schema = def.input.schema().as_arrow();
        let fields: Vec<Field> = arrow_schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let nullable = f.is_nullable() && !primary_key.contains(&i);
                f.as_ref().clone().with_nullable(nullable)
            })
            .collect();
        Ok((
            name,
            Arc::new(Schema::new(fields)),
            primary_key,
            def.if_not_exists,
        ))
    }

    async fn create_table(
        &self,
        create: &ast::Statement,
        append_only: bool,
        watermark: Option<&WatermarkDef>,
        sql: &str,
    ) -> Result<StatementResult> {
        let (name, schema, primary_key, if_not_exists) = self.plan_table_definition(create).await?;
        let watermark = self.plan_watermark(&schema, watermark)?;
        let _ddl = self.ddl.lock().await;
        if if_not_exists && self.inner.lock().catalog.get(&name).is_some() {
            return Ok(StatementResult::Command(CommandTag::new("CREATE TABLE")));
        }
        let mut inner = self.inner.lock();
        inner.catalog.check_free(&name)?;
        let id = inner.catalog.allocate_id();
        let storage = TableStorage::new(
            name.clone(),
            schema.clone(),
            primary_key.clone(),
            append_only,
            self.backend.table(&table_state_table(id)),
            self.durable.as_ref().map(|d| Durability {
                log: d.metadata.clone(),
                table_id: id,
                retain: d.periodic_checkpoints,
            }),
        )?;
        inner.catalog.insert(Relation {
            id,
            name: name.clone(),
            schema,
            kind: RelationKind::Table {
                primary_key,
                append_only,
            },
            watermark,
        })?;
        self.ctx.register_table(
            TableReference::bare(name.clone()),
            Arc::new(TableProviderImpl {
                storage: storage.clone(),
            }),
        )?;
        inner.tables.insert(name.clone(), storage);
        self.record_definition(&mut inner, Definition::without_job(id, name, sql))?;
        Ok(StatementResult::Command(CommandTag::new("CREATE TABLE")))
    }

    async fn create_source(
        &self,
        create: &ast::Statement,
        options: &BTreeMap<String, String>,
        watermark: Option<&WatermarkDef>,
        sql: &str,
    ) -> Result<StatementResult> {
        let (name, schema, primary_key, if_not_exists) = self.plan_table_definition(create).await?;
        let watermark = self.plan_watermark(&schema, watermark)?;
        if !primary_key.is_empty() {
            return Err(SluiceError::unsupported(
                "a source cannot have a PRIMARY KEY",
            ));
        }
        sluice_connectors::validate_source_options(options, schema.clone())?;
        let _ddl = self.ddl.lock().await;
        let mut inner = self.inner.lock();
        if if_not_exists && inner.catalog.get(&name).is_some() {
            return Ok(StatementResult::Command(CommandTag::new("CREATE SOURCE")));
        }
        inner.catalog.check_free(&name)?;
        let id = inner.catalog.allocate_id();
        inner.catalog.insert(Relation {
            id,
            name: name.clone(),
            schema: schema.clone(),
            kind: RelationKind::Source {
                options: options.clone(),
            },
            watermark,
        })?;
        self.ctx.register_table(
            TableReference::bare(name.clone()),
            Arc::new(SourceProvider {
                name: name.clone(),
                schema,
            }),
        )?;
        self.record_definition(&mut inner, Definition::without_job(id, name, sql))?;
        Ok(StatementResult::Command(CommandTag::new("CREATE SOURCE")))
    }

    fn job_parallelism(&self, session: &Session) -> usize {
        match session.streaming_parallelism {
            0 => self.default_parallelism,
            n => n,
        }
    }

    /// Plans the query of a view into a stream graph.
    async fn plan_view(
        &self,
        session: &Session,
        name: &str,
        query: &ast::Query,
        mut options: ViewOptions,
    ) -> Result<sluice_sql::StreamGraph> {
        options.state_ttl_ms = options.state_ttl_ms.or(session.state_ttl_ms);
        options.source_parallelism = session.source_parallelism;
        let plan = self
            .plan_query(&ast::Statement::Query(Box::new(query.clone())))
            .await?;
        let state = self.ctx.state();
        let plan = state
            .analyzer()
            .execute_and_check(plan, state.config_options(), |_, _| {})?;
        // Only the rewrites the streaming planner relies on: IN/EXISTS subqueries into semi
        // and anti joins, equalities of a join's ON into its keys, `FROM a, b WHERE
        // a.k = b.k` into a join, and columns no one reads pruned as early as possible
        // (so window expansion, exchanges and state do not carry them). The rest of
        // DataFusion's optimizer targets batch execution.
        let rules: Vec<Arc<dyn OptimizerRule + Send + Sync>> = vec![
            Arc::new(DecorrelatePredicateSubquery::new()),
            Arc::new(EliminateCrossJoin::new()),
            Arc::new(ExtractEquijoinPredicate::new()),
            Arc::new(OptimizeProjections::new()),
        ];
        let plan = Optimizer::with_rules(rules).optimize(plan, &state, |_, _| {})?;
        let inner = self.inner.lock();
        plan_stream_graph(
            &plan,
            name,
            &inner.catalog,
            self.job_parallelism(session),
            options,
        )
    }

    async fn create_materialized_view(
        &self,
        session: &Session,
        view: &ViewDefinition<'_>,
        if_not_exists: bool,
    ) -> Result<StatementResult> {
        let kind = match view.sink {
            Some(_) => ObjectKind::Sink,
            None => ObjectKind::MaterializedView,
        };
        let tag = StatementResult::Command(CommandTag::new(&format!("CREATE {}", kind.sql_name())));
        let name = object_name(view.name)?;
        let _ddl = self.ddl.lock().await;
        {
            let inner = self.inner.lock();
            let exists_as_kind = inner.catalog.get(&name).map(|r| r.object_kind() == kind);
            if if_not_exists && exists_as_kind == Some(true) {
                return Ok(tag);
            }
            inner.catalog.check_free(&name)?;
        }
        let graph = self
            .plan_view(session, &name, view.query, view.options)
            .await?;
        let end = graph.sink();
        let schema = Arc::new(end.schema.as_arrow().clone());
        let changelog = end.changelog;
        let partitions_count = match view.sink {
            Some(_) => 0,
            None => end.parallelism,
        };
        let graph = match view.sink {
            Some(options) => {
                sluice_connectors::validate_sink_options(options)?;
                into_sink_graph(graph, &name, options.clone())
            }
            None => graph,
        };
        let depends_on = dependencies(&graph);
        let id = self.inner.lock().catalog.allocate_id();
        let partitions = self.view_partitions(id, &graph)?;
        let restored;
        let job = {
            let mut inner = self.inner.lock();
            let restore = take_view_restore(&mut inner, id, &depends_on);
            restored = restore.is_some();
            self.deploy_view(&inner, id, &name, graph, &partitions, restore)
        };
        let job = match job {
            Ok(job) => Arc::new(job),
            Err(e) => {
                for p in 0..partitions_count {
                    self.backend.drop_table(&view_state_table(id, p));
                }
                return Err(e);
            }
        };
        let _epochs = self.epochs.lock().await;
        let mut inner = self.inner.lock();
        let query = view.query_sql.to_string();
        inner.catalog.insert(Relation {
            id,
            name: name.clone(),
            schema: schema.clone(),
            kind: match view.sink {
                Some(options) => RelationKind::Sink {
                    query,
                    depends_on,
                    options: options.clone(),
                    changelog,
                },
                None => RelationKind::MaterializedView {
                    query,
                    depends_on,
                    partitions: partitions_count,
                    changelog,
                },
            },
            watermark: None,
        })?;
        if view.sink.is_none() {
            self.publish_view(&mut inner, &name, schema, partitions)?;
        }
        if restored {
            inner.restored_views.insert(name.clone());
        }
        if inner.recovering {
            inner.unstarted.push(job.clone());
        } else {
            job.start();
        }
        inner.jobs.insert(name.clone(), job);
        self.record_definition(
            &mut inner,
            Definition {
                id,
                name,
                sql: view.sql.to_string(),
                parallelism: self.job_parallelism(session),
                state_ttl_ms: session.state_ttl_ms,
                source_parallelism: session.source_parallelism,
            },
        )?;
        Ok(tag)
    }

    /// Makes `partitions` view `name`'s result: what batch queries read (its table
    /// provider, replacing an earlier one) and what readers subscribe to.
    fn publish_view(
        &self,
        inner: &mut Inner,
        name: &str,
        schema: SchemaRef,
        partitions: Vec<Arc<ViewPartition>>,
    ) -> Result<()> {
        let reference = TableReference::bare(name.to_string());
        self.ctx.deregister_table(reference.clone())?;
        self.ctx.register_table(
            reference,
            Arc::new(ViewProvider {
                schema,
                partitions: partitions.clone(),
            }),
        )?;
        inner.views.insert(name.to_string(), partitions);
        Ok(())
    }

    /// The result partitions of view `id` running `graph`, over the state backend's
    /// tables (none when the graph ends in a sink).
    fn view_partitions(
        &self,
        id: u64,
        graph: &sluice_sql::StreamGraph,
    ) -> Result<Vec<Arc<ViewPartition>>> {
        let end = graph.sink();
        let StreamOperator::Materialize { key_columns, .. } = &end.operator else {
            return Ok(Vec::new());
        };
        let schema = Arc::new(end.schema.as_arrow().clone());
        (0..end.parallelism)
            .map(|p| {
                ViewPartition::new(
                    schema.clone(),
                    end.changelog,
                    DEFAULT_KEY_GROUPS,
                    Some(key_columns.clone()),
                    self.backend.table(&view_state_table(id, p)),
                )
            })
            .collect()
    }

    /// Deploys view `id`'s job (not started), from its checkpointed state when `restore`
    /// is given.
    fn deploy_view(
        &self,
        inner: &Inner,
        id: u64,
        name: &str,
        graph: sluice_sql::StreamGraph,
        partitions: &[Arc<ViewPartition>],
        restore: Option<ViewRestore>,
    ) -> Result<Job> {
        // A sink's writer commits with the coordinator's checkpoints: its chain stays
        // here (as a view's storage does), what comes before it may run on workers.
        let placement = match self.cluster.place(&graph) {
            Placed::Here => None,
            Placed::Across(placement) => Some(placement),
            Placed::Waiting(why) => {
                tracing::warn!(view = name, "{why}");
                return Ok(Job::inert(id, name, graph, JobState::Waiting(why)));
            }
        };
        let ctx = DeployContext {
            tables: &inner.tables,
            views: &inner.views,
            snapshots: self.durable.as_ref().map(|d| d.checkpointer.sender()),
            restore: None,
            on_failure: Some(self.restarts.hook(name)),
            placement: placement.as_ref(),
            operator_state: self.operator_state.as_deref(),
        };
        let job = match restore {
            Some(restore) => restore_view(id, name, graph, partitions, restore, inner, ctx)?,
            None => deploy(id, name, graph, partitions, &ctx)?,
        };
        if let Some(placement) = &placement {
            self.cluster
                .attach(&job, placement, self.checkpoint_url())?;
        }
        Ok(job)
    }

    /// Where checkpoints go (`None`: the server is ephemeral and takes none).
    fn checkpoint_url(&self) -> Option<&str> {
        Some(self.durable.as_ref()?.checkpointer.store().url())
    }

    /// Cancels job `id`, as Flink's cancel does: its subtasks stop, its view keeps the
    /// rows it has (readers see no more changes), and recoveries leave it alone. A
    /// checkpoint taken right away records it as cancelled, so that a restarted
    /// coordinator restores it so. Fails when no job has that id (42704) or the job has
    /// ended: finished, given up after failures, or cancelled (55000).
    pub async fn cancel_job(&self, id: u64) -> Result<JobInfo> {
        {
            let _ddl = self.ddl.lock().await;
            let job = self
                .inner
                .lock()
                .jobs
                .values()
                .find(|j| j.id == id)
                .cloned();
            let job = job.ok_or_else(|| {
                SluiceError::new(SqlState::UNDEFINED_OBJECT, format!("no job has id {id}"))
            })?;
            let state = job.state();
            let restarting = self.restarts.status(&job.view).1;
            let cancellable = match state {
                JobState::Running | JobState::Waiting(_) => true,
                JobState::Failed(_) => restarting,
                JobState::Finished | JobState::Canceled => false,
            };
            if !cancellable {
                return Err(SluiceError::new(
                    SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                    format!(
                        "job {id} (\"{}\") is {}; only a running, waiting or restarting job can be cancelled",
                        job.view,
                        state.name()
                    ),
                ));
            }
            job.stop().await;
            let canceled = Job::inert(id, &job.view, job.graph.clone(), JobState::Canceled);
            let mut inner = self.inner.lock();
            for partition in inner.views.get(&job.view).into_iter().flatten() {
                partition.mark_finished();
            }
            inner.jobs.insert(job.view.clone(), Arc::new(canceled));
            tracing::info!(job = id, view = %job.view, "job cancelled");
        }
        if self.durable.is_some()
            && let Err(e) = self.checkpoint(CheckpointKind::Checkpoint).await
        {
            tracing::warn!(job = id, error = %e.message, "no checkpoint records the cancelled job yet; a coordinator restart before the next one resumes it");
        }
        self.jobs()
            .into_iter()
            .find(|j| j.id == id)
            .ok_or_else(|| SluiceError::internal(format!("job {id} vanished")))
    }

    /// Stops every job and waits until its subtasks have ended, so that nothing they hold
    /// (state tables, and with them RocksDB's lock on `<data-dir>/state`) outlives the
    /// coordinator: another coordinator can then open the same data directory in this
    /// process.
    pub async fn shutdown(&self) {
        let jobs: Vec<Arc<Job>> = self.inner.lock().jobs.values().cloned().collect();
        for job in jobs {
            job.stop().await;
        }
    }

    /// Fails `view`'s job with `error`, as losing the worker running one of its subtasks
    /// does, and returns once the failure is recorded (with the restart it leads to, if
    /// any, pending), so a FLUSH after this waits for that restart.
    pub async fn kill_job(&self, view: &str, error: &str) -> Result<()> {
        let job = self.inner.lock().jobs.get(view).cloned();
        let job = job.ok_or_else(|| SluiceError::undefined_table(view))?;
        job.kill(error);
        job.stopped().await;
        Ok(())
    }

    async fn explain_stream(
        &self,
        session: &Session,
        statement: &Statement,
    ) -> Result<StatementResult> {
        let (name, query, options, sink) = match statement {
            Statement::CreateMaterializedView {
                name,
                query,
                options,
                ..
            } => (name, query, options, None),
            Statement::CreateSink {
                name,
                query,
                options,
                with,
                ..
            } => (name, query, options, Some(with)),
            _ => {
                return Err(SluiceError::unsupported(
                    "EXPLAIN CREATE supports CREATE MATERIALIZED VIEW and CREATE SINK only",
                ));
            }
        };
        let name = object_name(name)?;
        let graph = self.plan_view(session, &name, query, *options).await?;
        let graph = match sink {
            Some(with) => into_sink_graph(graph, &name, with.clone()),
            None => graph,
        };
        let rows = graph
            .to_string()
            .lines()
            .map(|l| vec![Some(l.to_string())])
            .collect();
        text_result(&["QUERY PLAN"], rows)
    }

    async fn drop_relations(
        &self,
        kind: ObjectKind,
        names: &[ObjectName],
        if_exists: bool,
        cascade: bool,
    ) -> Result<StatementResult> {
        let _ddl = self.ddl.lock().await;
        let mut to_drop: Vec<String> = Vec::new();
        {
            let inner = self.inner.lock();
            for name in names {
                let name = object_name(name)?;
                if inner.catalog.get(&name).is_none() && if_exists {
                    continue;
                }
                let relation = inner.catalog.get(&name);
                inner
                    .catalog
                    .get_kind(&name, kind)
                    .map_err(|e| match relation {
                        Some(r) => SluiceError::new(
                            e.state,
                            format!("{}; use DROP {}", e.message, r.object_kind().sql_name()),
                        ),
                        None => e,
                    })?;
                let mut stack = vec![name];
                while let Some(n) = stack.pop() {
                    if to_drop.contains(&n) {
                        continue;
                    }
                    let dependents = inner.catalog.dependents(&n);
                    if !dependents.is_empty() && !cascade {
                        return Err(SluiceError::new(
                            SqlState::DEPENDENT_OBJECTS_STILL_EXIST,
                            format!(
                                "cannot drop {} \"{n}\" because {} {} on it; drop {} first or use CASCADE",
                                inner.catalog.get(&n).map_or("relation".to_string(), |r| {
                                    r.object_kind().sql_name().to_lowercase()
                                }),
                                dependents
                                    .iter()
                                    .map(|d| {
                                        let kind =
                                            inner.catalog.get(d).map_or(String::new(), |r| {
                                                r.object_kind().sql_name().to_lowercase()
                                            });
                                        format!("{kind} \"{d}\"")
                                    })
                                    .collect::<Vec<_>>()
                                    .join(", "),
                                if dependents.len() == 1 {
                                    "depends"
                                } else {
                                    "depend"
                                },
                                if dependents.len() == 1 { "it" } else { "them" },
                            ),
                        ));
                    }
                    to_drop.push(n);
                    stack.extend(dependents);
                }
            }
        }
        // Dependents were pushed after what they depend on: drop in reverse.
        for name in to_drop.iter().rev() {
            self.drop_one(name)?;
        }
        self.save_catalog(&self.inner.lock())?;
        Ok(StatementResult::Command(CommandTag::new(&format!(
            "DROP {}",
            kind.sql_name()
        ))))
    }

    fn drop_one(&self, name: &str) -> Result<()> {
        let mut inner = self.inner.lock();
        let Some(relation) = inner.catalog.remove(name) else {
            return Ok(());
        };
        inner.definitions.remove(&relation.id);
        if let RelationKind::Subscription { view, .. } = &relation.kind {
            for view in view {
                subscriptions::refresh_change_logs(&inner, view);
            }
            return Ok(());
        }
        self.ctx
            .deregister_table(TableReference::bare(name.to_string()))?;
        if inner.tables.remove(name).is_some() {
            self.backend.drop_table(&table_state_table(relation.id));
        }
        inner.jobs.remove(name);
        self.restarts.forget(name);
        if let Some(parts) = inner.views.remove(name) {
            for p in 0..parts.len() {
                self.backend.drop_table(&view_state_table(relation.id, p));
            }
        }
        Ok(())
    }

    fn show(&self, session: &Session, target: &ShowTarget) -> Result<StatementResult> {
        let names_of = |kind: ObjectKind| -> Vec<Vec<Option<String>>> {
            let inner = self.inner.lock();
            inner
                .catalog
                .relations()
                .filter(|r| r.object_kind() == kind)
                .map(|r| vec![Some(r.name.clone())])
                .collect()
        };
        match target {
            ShowTarget::Tables => text_result(&["Name"], names_of(ObjectKind::Table)),
            ShowTarget::Sources => text_result(&["Name"], names_of(ObjectKind::Source)),
            ShowTarget::MaterializedViews => {
                text_result(&["Name"], names_of(ObjectKind::MaterializedView))
            }
            ShowTarget::Sinks => sinks_result(&self.sinks()),
            ShowTarget::Subscriptions => self.show_subscriptions(),
            ShowTarget::Jobs => jobs_result(&self.jobs()),
            ShowTarget::Checkpoints => Err(SluiceError::internal(
                "SHOW CHECKPOINTS is answered by Coordinator::execute",
            )),
            ShowTarget::Variable(name) if name == CHECKPOINT_INTERVAL => {
                let value = match &self.checkpoint_interval {
                    Some(interval) => format!("{}s", interval.borrow().as_secs_f64()),
                    None => "0".to_string(),
                };
                text_result(&[name.as_str()], vec![vec![Some(value)]])
            }
            ShowTarget::Variable(name) => {
                let value =
                    setting_value(session, self.default_parallelism, name).ok_or_else(|| {
                        SluiceError::new(
                            SqlState::UNDEFINED_OBJECT,
                            format!("unrecognized configuration parameter \"{name}\""),
                        )
                    })?;
                text_result(&[name.as_str()], vec![vec![Some(value)]])
            }
        }
    }

    fn describe_relation(&self, name: &ObjectName) -> Result<StatementResult> {
        let name = object_name(name)?;
        let inner = self.inner.lock();
        let relation = inner
            .catalog
            .get(&name)
            .ok_or_else(|| SluiceError::undefined_table(&name))?;
        let rows = relation
            .schema
            .fields()
            .iter()
            .map(|f| {
                vec![
                    Some(f.name().clone()),
                    Some(pg_type_name(f.data_type())),
                    Some(if f.is_nullable() { "YES" } else { "NO" }.to_string()),
                ]
            })
            .collect();
        text_result(&["Name", "Type", "Nullable"], rows)
    }
}

/// Takes a checkpoint every `interval` (as it is now) while the coordinator lives.
async fn take_checkpoints(
    coordinator: std::sync::Weak<Coordinator>,
    mut interval: watch::Receiver<std::time::Duration>,
) {
    loop {
        // A new interval starts the wait over (from the time it was set).
        let wait = *interval.borrow_and_update();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            changed = interval.changed() => match changed {
                Ok(()) => continue,
                Err(_) => return,
            },
        }
        let Some(coordinator) = coordinator.upgrade() else {
            return;
        };
        match coordinator.checkpoint(CheckpointKind::Checkpoint).await {
            Ok(done) => tracing::info!(
                epoch = done.epoch,
                bytes = done.size_bytes(),
                duration_ms = done.duration_ms(),
                "checkpoint completed"
            ),
            Err(e) => tracing::warn!(error = %e, "checkpoint failed"),
        }
    }
}

/// The checkpointed state of view `id`, when restoring and the view can resume from it:
/// it is in the checkpoint and every view it reads resumed from the same checkpoint
/// (otherwise those would send it their whole result again).
fn take_view_restore(inner: &mut Inner, id: u64, depends_on: &[String]) -> Option<ViewRestore> {
    let plan = inner.restore_plan.as_mut()?;
    let restore = plan.views.remove(&id)?;
    let upstream_restored = depends_on.iter().all(|d| {
        inner
            .catalog
            .get(d)
            .is_none_or(|r| r.object_kind() != ObjectKind::MaterializedView)
            || inner.restored_views.contains(d)
    });
    upstream_restored.then_some(restore)
}

/// Deploys view `id` from its checkpointed state, with `ctx` for everything but the
/// restored state.
fn restore_view(
    id: u64,
    name: &str,
    graph: sluice_sql::StreamGraph,
    partitions: &[Arc<ViewPartition>],
    mut restore: ViewRestore,
    inner: &Inner,
    ctx: DeployContext<'_>,
) -> Result<Job> {
    if matches!(graph.sink().operator, StreamOperator::Sink { .. }) {
        restore.job.sink_states = std::mem::take(&mut restore.partitions);
        if restore
            .job
            .sink_states
            .keys()
            .any(|&p| p >= graph.sink().parallelism)
        {
            return Err(SluiceError::unsupported(format!(
                "the checkpoint of sink \"{name}\" has more subtasks than the sink; restoring at another parallelism is not supported yet"
            )));
        }
    }
    if let Some(why) = restore
        .job
        .layout
        .as_ref()
        .and_then(|l| l.incompatibility(&graph))
    {
        return Err(SluiceError::unsupported(format!(
            "the checkpoint of view \"{name}\" cannot be restored at its parallelism: {why}"
        )));
    }
    let checkpointed = restore.job.layout.as_ref().map(|layout| {
        let materialize = graph.nodes.len() - 1;
        layout.parallelism(materialize).unwrap_or(partitions.len())
    });
    let saved = std::mem::take(&mut restore.partitions);
    if checkpointed.is_some_and(|p| p != partitions.len()) {
        // Replanned at another parallelism: rows move to the partition owning their key
        // group, which is where the view's exchange routes them now.
        let all: Vec<&[StateEntry]> = saved.values().map(|e| e.as_slice()).collect();
        for (p, partition) in partitions.iter().enumerate() {
            let entries =
                redistribute(all.iter().copied(), DEFAULT_KEY_GROUPS, p, partitions.len())?;
            partition.restore_state(entries)?;
        }
    } else {
        if saved.keys().any(|&p| p >= partitions.len()) {
            return Err(SluiceError::unsupported(format!(
                "the checkpoint of view \"{name}\" has more partitions than the view, and no record of its parallelism"
            )));
        }
        for (p, entries) in saved {
            partitions[p].restore_state(entries)?;
        }
    }
    if restore.finished {
        for partition in partitions {
            partition.mark_finished();
        }
        if restore.canceled {
            return Ok(Job::inert(id, name, graph, JobState::Canceled));
        }
        return Ok(Job::finished(id, name, graph));
    }
    let plan = inner.restore_plan.as_ref();
    for table in dependencies(&graph) {
        let position = inner
            .catalog
            .get(&table)
            .and_then(|r| plan?.table_positions.get(&r.id))
            .copied();
        if let Some(position) = position {
            restore.job.table_positions.insert(table, position);
        }
    }
    let ctx = DeployContext {
        restore: Some(&restore.job),
        ..ctx
    };
    deploy(id, name, graph, partitions, &ctx)
}

/// A heartbeat setting as a duration: positive and finite.
fn heartbeat_duration(name: &str, seconds: f64) -> Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            SluiceError::invalid_parameter(format!(
                "{name} must be a positive number of seconds, not {seconds}"
            ))
        })
}

fn table_state_table(table_id: u64) -> String {
    format!("table/{table_id}")
}

fn view_state_table(view_id: u64, partition: usize) -> String {
    format!("mv/{view_id}/{partition}")
}

/// The catalog name of an object name (lower-cased unless quoted).
fn object_name(name: &ObjectName) -> Result<String> {
    let idents: Vec<String> = name
        .0
        .iter()
        .map(|part| {
            let ident = part
                .as_ident()
                .ok_or_else(|| SluiceError::syntax(format!("invalid name {name}")))?;
            Ok(if ident.quote_style.is_some() {
                ident.value.clone()
            } else {
                ident.value.to_lowercase()
            })
        })
        .collect::<Result<_>>()?;
    let reference = match idents.as_slice() {
        [t] => TableReference::bare(t.clone()),
        [s, t] => TableReference::partial(s.clone(), t.clone()),
        [c, s, t] => TableReference::full(c.clone(), s.clone(), t.clone()),
        _ => return Err(SluiceError::syntax(format!("invalid name {name}"))),
    };
    sluice_sql::relation_name(&reference)
}

fn parse_bool(name: &str, value: &str) -> Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "on" | "1" | "yes" | "t" => Ok(true),
        "false" | "off" | "0" | "no" | "f" => Ok(false),
        _ => Err(SluiceError::invalid_parameter(format!(
            "parameter \"{name}\" requires a Boolean value, got \"{value}\""
        ))),
    }
}

/// Applies `SET name = value` to a session.
fn apply_setting(session: &mut Session, name: &str, value: &str) -> Result<()> {
    match name {
        "implicit_flush" | "rw_implicit_flush" => session.implicit_flush = parse_bool(name, value)?,
        "streaming_parallelism" => {
            let n: usize = match value.to_ascii_lowercase().as_str() {
                "default" | "adaptive" | "auto" => 0,
                v => v.parse().map_err(|_| {
                    SluiceError::invalid_parameter(format!(
                        "streaming_parallelism must be a number from 0 to {DEFAULT_KEY_GROUPS} (0 = default), got \"{value}\""
                    ))
                })?,
            };
            if n > DEFAULT_KEY_GROUPS as usize {
                return Err(SluiceError::invalid_parameter(format!(
                    "streaming_parallelism {n} is above the maximum {DEFAULT_KEY_GROUPS}"
                )));
            }
            session.streaming_parallelism = n;
        }
        "state_ttl" => {
            session.state_ttl_ms = match value.to_ascii_lowercase().as_str() {
                "off" | "0" | "default" | "none" => None,
                _ => Some(sluice_sql::parse_state_ttl(value)?),
            };
        }
        _ => {}
    }
    session.settings.insert(name.to_string(), value.to_string());
    Ok(())
}

/// The value `SHOW name` reports.
fn setting_value(session: &Session, default_parallelism: usize, name: &str) -> Option<String> {
    if let Some(v) = session.settings.get(name) {
        return Some(v.clone());
    }
    Some(match name {
        "implicit_flush" | "rw_implicit_flush" => session.implicit_flush.to_string(),
        "streaming_parallelism" => default_parallelism.to_string(),
        "server_version" => "15.0".into(),
        "server_encoding" | "client_encoding" => "UTF8".into(),
        "search_path" => "public".into(),
        "datestyle" => "ISO, MDY".into(),
        "timezone" => "UTC".into(),
        "transaction_isolation" | "default_transaction_isolation" => "read committed".into(),
        "standard_conforming_strings" => "on".into(),
        "integer_datetimes" => "on".into(),
        "max_identifier_length" => "63".into(),
        _ => return None,
    })
}

// Every connection's task shares the coordinator: it must stay Send + Sync.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Coordinator>();
};
