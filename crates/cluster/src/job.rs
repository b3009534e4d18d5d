//! Streaming jobs: turning a [`StreamGraph`] into running subtasks (the execution graph),
//! supervising them, and waiting for barriers to reach their sinks.
//!
//! In `sluice serve` the coordinator and the worker share a process, so deployment builds
//! the subtasks directly; the graph is the unit that a remote deployment will ship.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, ExprSchemable, JoinType};
use datafusion::physical_expr::aggregate::{LoweredAggregate, LoweredAggregateBuilder};
use datafusion::physical_expr::{PhysicalExpr, create_physical_expr};
use parking_lot::Mutex;
use sluice_common::error::{Result, SluiceError};
use sluice_runtime::exchange::{Collector, ExchangeOutput, InputGate, Partitioning, channel};
use sluice_runtime::message::{CheckpointBarrier, Message, changelog_schema};
use sluice_runtime::metrics::SubtaskMetrics;
use sluice_runtime::operators::Operator;
use sluice_runtime::operators::aggregate::{AggregateOperator, AggregateSpec};
use sluice_runtime::operators::calc::{FilterOperator, ProjectOperator};
use sluice_runtime::operators::join::{JoinIntervals, JoinOperator, JoinSide};
use sluice_runtime::operators::materialize::{
    MaterializeSink, SinkProgress, Subscription, ViewPartition,
};
use sluice_runtime::operators::over::{Frame, OverAggregateOperator};
use sluice_runtime::operators::session::{SessionBound, SessionWindowOperator};
use sluice_runtime::operators::temporal::TemporalFilterOperator;
use sluice_runtime::operators::temporal_join::TemporalJoinOperator;
use sluice_runtime::operators::topn::{TopNOperator, TopNOrder};
use sluice_runtime::operators::union::UnionOperator;
use sluice_runtime::operators::unnest::UnnestOperator;
use sluice_runtime::operators::watermark::WatermarkOperator;
use sluice_runtime::operators::{RestoredState, StateEntry};
use sluice_runtime::sink::{SharedSinkWriter, SinkCounts, SinkMetrics, SinkOutput, commit_sink};
use sluice_runtime::task::{
    BARRIER_INJECTION_CAPACITY, SnapshotReporter, Subtask, SubtaskSnapshot, TaskInput,
};
use sluice_sql::{Exchange, OverFrame, StreamGraph, StreamNode, StreamOperator};
use sluice_state::snapshot::redistribute;
use sluice_state::spill::RestoredDb;
use sluice_state::{DEFAULT_KEY_GROUPS, OperatorStateDirs, SpillStore, subtask_of_key_group};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::dataplane::{ChannelKey, DataPlane, OnUnreachable, pump};
use crate::providers::TableStorage;

/// The lifecycle state of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Running,
    /// Every input ended (bounded sources) and every row reached the view.
    Finished,
    Failed(String),
    /// Not deployed: the cluster's live workers have fewer slots than the job needs
    /// (why, in words). The next worker to register brings it up.
    Waiting(String),
    /// Cancelled (`POST /jobs/{id}/cancel`): nothing runs, the view keeps its rows.
    Canceled,
}

impl JobState {
    pub fn name(&self) -> &'static str {
        match self {
            JobState::Running => "RUNNING",
            JobState::Finished => "FINISHED",
            JobState::Failed(_) => "FAILED",
            JobState::Waiting(_) => "WAITING",
            JobState::Canceled => "CANCELED",
        }
    }
}

/// What deployment needs from the coordinator.
pub struct DeployContext<'a> {
    pub tables: &'a BTreeMap<String, Arc<TableStorage>>,
    pub views: &'a BTreeMap<String, Vec<Arc<ViewPartition>>>,
    /// Where subtasks report their checkpoint snapshots (`None`: no checkpoints).
    pub snapshots: Option<mpsc::UnboundedSender<SubtaskSnapshot>>,
    /// The checkpoint the job resumes from (`None`: it starts from scratch).
    pub restore: Option<&'a JobRestore>,
    /// Told the error when the job fails, before the failure is visible in its state.
    pub on_failure: Option<FailureHook>,
    /// Where each subtask runs when the job spans processes (`None`: all here).
    pub placement: Option<&'a Placement>,
    /// Where operators spill state beyond their memory budget (`None`: they keep it
    /// all in memory).
    pub operator_state: Option<&'a OperatorStateDirs>,
}

/// Where one operator subtask may spill its state.
struct SpillContext<'a> {
    dirs: Option<&'a OperatorStateDirs>,
    /// Names the subtask's store: view, node and subtask.
    name: String,
}

impl SpillContext<'_> {
    fn store(&self) -> Result<Option<SpillStore>> {
        self.dirs
            .map(|dirs| dirs.open_store(&self.name))
            .transpose()
    }
}

/// Where each subtask of a job runs when its subtasks are spread over processes (the
/// coordinator and workers). Every process of the job deploys the same graph with the
/// same placement, builds the subtasks placed on it, and connects edges to subtasks
/// elsewhere through the [`DataPlane`]; channels are numbered in the order [`deploy`]
/// creates them, which is the same in every process.
#[derive(Clone)]
pub struct Placement {
    /// This run of the job: names its cross-process channels.
    pub deployment: u64,
    /// The chains the job is deployed as (see [`distributed_chains`]).
    pub chains: Vec<Vec<usize>>,
    /// Per chain and subtask: the process that runs it (a worker id; 0 the coordinator).
    pub processes: Vec<Vec<u64>>,
    /// The process deploying.
    pub here: u64,
    /// Every process's data-plane (Flight) address.
    pub addresses: BTreeMap<u64, String>,
    pub dataplane: Arc<DataPlane>,
    /// Told when a process cannot be connected to (the coordinator declares the worker
    /// lost, so that restarting the job does not wait for its heartbeat timeout).
    pub unreachable: Option<Unreachable>,
}

impl Placement {
    fn is_local(&self, chain: usize, subtask: usize) -> bool {
        self.processes[chain][subtask] == self.here
    }

    fn address(&self, chain: usize, subtask: usize) -> Result<String> {
        let process = self.processes[chain][subtask];
        self.addresses.get(&process).cloned().ok_or_else(|| {
            SluiceError::internal(format!("no data-plane address for process {process}"))
        })
    }
}

/// The chains of `graph` when its subtasks may run in several processes: as
/// [`StreamGraph::chains`], except that a view's storage or a sink (which stay with the
/// coordinator) is split off a chain whose other nodes can run on a worker.
pub fn distributed_chains(graph: &StreamGraph) -> Vec<Vec<usize>> {
    let mut chains = Vec::new();
    for mut chain in graph.chains() {
        let last = *chain.last().expect("chains are not empty");
        if chain.len() > 1
            && is_output(&graph.nodes[last].operator)
            && runs_anywhere(graph, &chain[..chain.len() - 1])
        {
            chain.pop();
            chains.push(chain);
            chains.push(vec![last]);
        } else {
            chains.push(chain);
        }
    }
    chains
}

/// Whether chain `chain` (of [`distributed_chains`]) may run on a worker: it reads no
/// table or view and writes no view or sink, all of which live with the coordinator.
/// Connector sources run anywhere.
pub fn runs_anywhere(graph: &StreamGraph, chain: &[usize]) -> bool {
    chain.iter().all(|&n| {
        let op = &graph.nodes[n].operator;
        !matches!(
            op,
            StreamOperator::TableScan { .. } | StreamOperator::ViewScan { .. }
        ) && !is_output(op)
    })
}

/// A subtask of a job that another process runs, with the state it resumes from.
#[derive(Debug)]
pub struct RemoteSubtask {
    pub chain: usize,
    pub subtask: usize,
    /// The process (worker id) running it.
    pub process: u64,
    /// Per node of its chain, in chain order: its state at the restored checkpoint.
    pub operators: Vec<Vec<StateEntry>>,
    /// A source subtask's reader position at the restored checkpoint.
    pub position: Option<u64>,
}

/// How a job reaches the subtasks it placed in other processes.
pub struct RemoteControl {
    /// Deploys them; run when the job starts (its error fails the job).
    pub deploy: Forwarder,
    /// Cancels them; called once when the job finishes, stops, fails or is dropped.
    pub cancel: CancelRemote,
    /// Injects a barrier into the remote sources (`None`: no source runs remotely).
    pub inject: Option<InjectRemote>,
}

/// See [`RemoteControl::inject`].
pub type InjectRemote = Box<
    dyn Fn(CheckpointBarrier) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync,
>;

/// See [`RemoteControl::cancel`].
pub type CancelRemote = Box<dyn FnOnce() + Send>;

/// See [`Placement::unreachable`]: told a process id and the connection error.
pub type Unreachable = Arc<dyn Fn(u64, &str) + Send + Sync>;

/// Called with the error when a job fails (not when it is stopped). The coordinator
/// decides here whether the job will be restarted, so that anyone who then sees the job
/// FAILED also sees that decision.
pub type FailureHook = Arc<dyn Fn(&str) + Send + Sync>;

/// What a job's supervisor can be told from outside.
enum Interrupt {
    /// Fail the job with this error, as if a subtask had returned it (a lost worker).
    Kill(String),
    /// Stop every subtask without failing the job.
    Stop,
}

/// Kills a job from outside (a remote part of it failed, or its worker was lost).
#[derive(Clone)]
pub struct KillHandle(mpsc::UnboundedSender<Interrupt>);

impl KillHandle {
    pub fn kill(&self, error: &str) {
        let _ = self.0.send(Interrupt::Kill(error.to_string()));
    }
}

/// The state a job resumes from: what its subtasks reported for one checkpoint.
#[derive(Debug, Default)]
pub struct JobRestore {
    /// The checkpoint's epoch.
    pub epoch: u64,
    /// The job's graph when the checkpoint was taken (`None` in checkpoints that do not
    /// record it: restored only at the same parallelism).
    pub layout: Option<Layout>,
    /// Per operator (node id) and subtask index: the operator's entries.
    pub operators: BTreeMap<(usize, usize), Vec<StateEntry>>,
    /// Per operator (node id) and subtask index: the RocksDB checkpoint of its spill
    /// store, opened where it was downloaded.
    pub databases: BTreeMap<(usize, usize), RestoredDb>,
    /// Per source (node id) and subtask index: its reader's position.
    pub positions: BTreeMap<(usize, usize), u64>,
    /// Per table the job reads (by name): the table's log position at the checkpoint.
    pub table_positions: BTreeMap<String, u64>,
    /// Per sink subtask of a sink's job: its counts and writer state.
    pub sink_states: BTreeMap<usize, Vec<StateEntry>>,
}

impl JobRestore {
    /// The state operator `node` restores in subtask `subtask` of `parallelism`: what
    /// that subtask held at the checkpoint, or, when the operator ran at another
    /// parallelism then, its share of every old subtask's state by key group.
    pub fn operator_state(
        &self,
        node: usize,
        subtask: usize,
        parallelism: usize,
    ) -> Result<RestoredState<'_>> {
        let old = self.layout.as_ref().and_then(|l| l.parallelism(node));
        if old.is_none_or(|old| old == parallelism) {
            return Ok(RestoredState {
                entries: self
                    .operators
                    .get(&(node, subtask))
                    .cloned()
                    .unwrap_or_default(),
                databases: self.databases.get(&(node, subtask)).into_iter().collect(),
                key_groups: None,
            });
        }
        let snapshots = self
            .operators
            .range((node, 0)..(node + 1, 0))
            .map(|(_, entries)| entries.as_slice());
        Ok(RestoredState {
            entries: redistribute(snapshots, DEFAULT_KEY_GROUPS, subtask, parallelism)?,
            databases: self
                .databases
                .range((node, 0)..(node + 1, 0))
                .map(|(_, db)| db)
                .collect(),
            key_groups: Some(
                (0..DEFAULT_KEY_GROUPS)
                    .filter(|&g| {
                        subtask_of_key_group(g, DEFAULT_KEY_GROUPS, parallelism) == subtask
                    })
                    .collect(),
            ),
        })
    }
}

/// Each node of a job's graph, as a checkpoint records it: its operator and parallelism.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout(pub Vec<(String, usize)>);

impl Layout {
    pub fn of(graph: &StreamGraph) -> Layout {
        Layout(
            graph
                .nodes
                .iter()
                .map(|n| (n.operator.name().to_string(), n.parallelism))
                .collect(),
        )
    }

    pub fn parallelism(&self, node: usize) -> Option<usize> {
        self.0.get(node).map(|(_, p)| *p)
    }

    /// `Operator:parallelism` per node, comma-separated.
    pub fn encode(&self) -> String {
        let nodes: Vec<String> = self.0.iter().map(|(op, p)| format!("{op}:{p}")).collect();
        nodes.join(",")
    }

    pub fn decode(text: &str) -> Option<Layout> {
        text.split(',')
            .map(|node| {
                let (op, p) = node.rsplit_once(':')?;
                Some((op.to_string(), p.parse().ok()?))
            })
            .collect::<Option<Vec<_>>>()
            .map(Layout)
    }

    /// Why state checkpointed at this layout cannot be restored into `graph`, if it
    /// cannot: the graph has other operators, or an operator whose state is not
    /// divided by key group runs at another parallelism.
    pub fn incompatibility(&self, graph: &StreamGraph) -> Option<String> {
        let now = Layout::of(graph);
        if now.0.len() != self.0.len() || now.0.iter().zip(&self.0).any(|(a, b)| a.0 != b.0) {
            return Some("the view's dataflow is not the one checkpointed".into());
        }
        for (node, ((_, was), (_, is))) in self.0.iter().zip(&now.0).enumerate() {
            if was == is {
                continue;
            }
            let what = match &graph.nodes[node].operator {
                StreamOperator::SourceScan { source, .. } => format!(
                    "source \"{source}\" is read by {was} subtasks and its positions cannot be split"
                ),
                StreamOperator::TemporalFilter { .. } => {
                    "its temporal filter (now()) keeps rows by subtask, not by key".into()
                }
                StreamOperator::Sink { .. } => "a sink's progress is kept per subtask".into(),
                StreamOperator::Join {
                    null_aware: true, ..
                } => "NOT IN keeps its state on one subtask".into(),
                StreamOperator::ViewScan { view } => {
                    format!("it reads view \"{view}\" by its partitions")
                }
                _ => continue,
            };
            return Some(what);
        }
        None
    }
}

/// Subtask `(chain, index)` from its id (`chain-index`).
pub fn parse_subtask_id(id: &str) -> Option<(usize, usize)> {
    let (chain, index) = id.split_once('-')?;
    Some((chain.parse().ok()?, index.parse().ok()?))
}

/// One deployed subtask's counters.
struct SubtaskStats {
    id: String,
    name: String,
    metrics: Arc<SubtaskMetrics>,
}

/// One subtask of a running job, for `GET /jobs/{id}`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SubtaskInfo {
    /// `chain-index`, stable across restarts.
    pub id: String,
    /// The worker running it (0: the coordinator's embedded worker). A remote
    /// subtask's counters are as of its worker's last heartbeat.
    pub worker: u64,
    /// `view/Operator->Operator#index`.
    pub name: String,
    pub rows_in: u64,
    pub rows_out: u64,
    /// The last watermark it put out (ms since the Unix epoch).
    pub watermark_ms: Option<i64>,
    /// Time it waited for room in a full output channel.
    pub backpressured_ms: u64,
}

/// One subtask of a sink: its writer (which checkpoints commit) and what it received.
struct SinkSubtask {
    writer: SharedSinkWriter,
    metrics: Arc<SinkMetrics>,
}

/// A subtask's id within its job: its chain and its index, stable across restarts.
pub fn subtask_id(chain: usize, subtask: usize) -> String {
    format!("{chain}-{subtask}")
}

/// What a deployed job runs once started.
struct Deployment {
    subtasks: Vec<Subtask>,
    /// Data-plane pumps and the deployment of remote subtasks run with the forwarders.
    forwarders: Vec<Forwarder>,
    state: watch::Sender<JobState>,
    outputs: Vec<Arc<ViewPartition>>,
    on_failure: Option<FailureHook>,
}

/// A running job. Dropping it stops every subtask.
pub struct Job {
    pub id: u64,
    pub view: String,
    pub parallelism: usize,
    pub graph: StreamGraph,
    /// The graph's chains (as [`StreamGraph::chains`] returns them).
    chains: Vec<Vec<usize>>,
    /// Every subtask's counters, in deployment order.
    subtask_metrics: Vec<SubtaskStats>,
    state: watch::Receiver<JobState>,
    injectors: Vec<mpsc::Sender<CheckpointBarrier>>,
    sinks: Vec<watch::Receiver<SinkProgress>>,
    /// Ids of every subtask: the snapshots a checkpoint waits for.
    pub subtask_ids: Vec<String>,
    /// The subtasks until [`Job::start`] runs them.
    deployment: Mutex<Option<Deployment>>,
    supervisor: Mutex<Option<tokio::task::JoinHandle<()>>>,
    interrupts: mpsc::UnboundedSender<Interrupt>,
    /// Taken by [`Job::start`].
    interrupted: Mutex<Option<mpsc::UnboundedReceiver<Interrupt>>>,
    /// Per operator (node id): rows it dropped because their window had already closed.
    late_rows: BTreeMap<usize, Arc<AtomicU64>>,
    /// The checkpoint this deployment resumed from (`None`: it started from scratch).
    pub restored_epoch: Option<u64>,
    /// The subtasks of a sink's job (empty for a view's).
    sink_subtasks: Vec<SinkSubtask>,
    /// Subtasks placed in other processes (left for the coordinator to deploy there).
    pub remote_subtasks: Vec<RemoteSubtask>,
    /// Per worker and operator (node id): late rows its remote subtasks dropped, as the
    /// worker last reported.
    pub remote_late_rows: Arc<Mutex<BTreeMap<(u64, usize), u64>>>,
    /// Cancels the remote subtasks; taken when the job stops.
    remote_cancel: Arc<Mutex<Option<CancelRemote>>>,
    /// Injects barriers into remote sources.
    remote_inject: Mutex<Option<Arc<InjectRemote>>>,
    /// This run's cross-process channels, dropped with the job.
    dataplane: Option<RunOnPlane>,
}

impl Drop for Job {
    fn drop(&mut self) {
        cancel_remote(&self.remote_cancel);
        if let Some(run) = &self.dataplane {
            run.plane.forget(run.deployment);
        }
        // Aborting the supervisor drops its JoinSet, which aborts every subtask.
        if let Some(supervisor) = self.supervisor.lock().take() {
            supervisor.abort();
        }
    }
}

impl Job {
    /// A job restored from a checkpoint taken after it had finished: its views hold
    /// their final rows and nothing runs.
    pub fn finished(id: u64, view: &str, graph: StreamGraph) -> Job {
        Job::inert(id, view, graph, JobState::Finished)
    }

    /// A job that runs nothing and stays in `state`.
    pub fn inert(id: u64, view: &str, graph: StreamGraph, state: JobState) -> Job {
        let (_, state) = watch::channel(state);
        let parallelism = graph.nodes.iter().map(|n| n.parallelism).max().unwrap_or(1);
        let (interrupts, _) = mpsc::unbounded_channel();
        Job {
            id,
            view: view.to_string(),
            parallelism,
            chains: graph.chains(),
            subtask_metrics: Vec::new(),
            graph,
            state,
            injectors: Vec::new(),
            sinks: Vec::new(),
            subtask_ids: Vec::new(),
            deployment: Mutex::new(None),
            supervisor: Mutex::new(None),
            interrupts,
            interrupted: Mutex::new(None),
            late_rows: BTreeMap::new(),
            restored_epoch: None,
            sink_subtasks: Vec::new(),
            remote_subtasks: Vec::new(),
            remote_late_rows: Arc::default(),
            remote_cancel: Arc::new(Mutex::new(None)),
            remote_inject: Mutex::new(None),
            dataplane: None,
        }
    }

    /// Hands the job what deploys and cancels its remote subtasks (before
    /// [`Job::start`]): deploying runs when the job starts, cancelling when it ends.
    pub fn set_remote(&self, remote: RemoteControl) {
        if let Some(deployment) = self.deployment.lock().as_mut() {
            deployment.forwarders.push(remote.deploy);
        }
        *self.remote_cancel.lock() = Some(remote.cancel);
        *self.remote_inject.lock() = remote.inject.map(Arc::new);
    }

    /// Starts the subtasks (once; later calls do nothing). A job deployed while the
    /// coordinator restores a checkpoint starts only when every job is deployed, so no
    /// change is produced before its readers have subscribed.
    pub fn start(&self) {
        let Some(Deployment {
            subtasks,
            forwarders,
            state: state_tx,
            outputs,
            on_failure,
        }) = self.deployment.lock().take()
        else {
            return;
        };
        let mut interrupts = self
            .interrupted
            .lock()
            .take()
            .expect("a deployed job has its interrupt receiver");
        let mut set = JoinSet::new();
        for subtask in subtasks {
            set.spawn(subtask.run());
        }
        for forwarder in forwarders {
            set.spawn(forwarder);
        }
        let view_name = self.view.clone();
        let remote_cancel = self.remote_cancel.clone();
        let supervisor = tokio::spawn(async move {
            let failure = loop {
                tokio::select! {
                    joined = set.join_next() => match joined {
                        None => {
                            state_tx.send_replace(JobState::Finished);
                            // Remote parts have finished too (the end of their streams
                            // reached this process); this forgets them.
                            cancel_remote(&remote_cancel);
                            return;
                        }
                        Some(Ok(Ok(()))) => {}
                        Some(Ok(Err(e))) => break e.message,
                        Some(Err(e)) if e.is_panic() => break format!("a subtask panicked: {e}"),
                        Some(Err(_)) => {}
                    },
                    Some(interrupt) = interrupts.recv() => match interrupt {
                        Interrupt::Kill(error) => break error,
                        Interrupt::Stop => {
                            cancel_remote(&remote_cancel);
                            set.shutdown().await;
                            return;
                        }
                    },
                }
            };
            cancel_remote(&remote_cancel);
            tracing::warn!(view = %view_name, error = %failure, "streaming job failed");
            if let Some(hook) = &on_failure {
                hook(&failure);
            }
            for partition in &outputs {
                partition.fail(&failure);
            }
            state_tx.send_replace(JobState::Failed(failure));
            set.shutdown().await;
        });
        *self.supervisor.lock() = Some(supervisor);
    }

    /// Fails the job with `error` as if one of its subtasks had returned it: what losing
    /// the worker that runs a subtask does.
    pub fn kill(&self, error: &str) {
        let _ = self.interrupts.send(Interrupt::Kill(error.to_string()));
    }

    /// The name of subtask `subtask` of chain `chain`.
    pub fn subtask_name(&self, chain: usize, subtask: usize) -> String {
        subtask_name(&self.view, &self.graph, &self.chains[chain], subtask)
    }

    /// This run's deployment id, when its subtasks are spread over processes.
    pub fn deployment(&self) -> Option<u64> {
        self.dataplane.as_ref().map(|d| d.deployment)
    }

    /// A handle that kills this job (see [`Job::kill`]) without keeping it alive.
    pub fn kill_handle(&self) -> KillHandle {
        KillHandle(self.interrupts.clone())
    }

    /// Waits until the job no longer runs: it failed (its failure hook has run by then),
    /// finished, or its supervisor is gone (stopped).
    pub async fn stopped(&self) {
        let mut state = self.state.clone();
        let _ = state.wait_for(|s| *s != JobState::Running).await;
    }

    /// Stops every subtask without failing the job, and returns once all have exited
    /// (none writes to the job's views after this).
    pub async fn stop(&self) {
        self.deployment.lock().take();
        let _ = self.interrupts.send(Interrupt::Stop);
        let supervisor = self.supervisor.lock().take();
        if let Some(supervisor) = supervisor {
            let _ = supervisor.await;
        }
    }

    /// What the sink of this job received, over all its subtasks (zero for a view's job).
    pub fn sink_counts(&self) -> SinkCounts {
        self.sink_subtasks
            .iter()
            .fold(SinkCounts::default(), |sum, s| {
                sum.plus(SinkCounts::of(&s.metrics))
            })
    }

    /// The last checkpoint every subtask of this job's sink has committed.
    pub fn sink_committed_epoch(&self) -> u64 {
        self.sink_subtasks
            .iter()
            .map(|s| s.metrics.committed_epoch.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }

    /// Checkpoint `epoch` is complete: commits it on every subtask of this job's sink
    /// (the second phase of the two-phase commit). A failed commit fails the job, which
    /// restarts from that checkpoint.
    pub async fn commit_sinks(&self, epoch: u64) {
        for subtask in &self.sink_subtasks {
            if let Err(e) = commit_sink(&subtask.writer, &subtask.metrics, epoch).await {
                self.kill(&format!(
                    "the sink could not commit checkpoint {epoch}: {}",
                    e.message
                ));
                return;
            }
        }
    }

    /// Every subtask's counters.
    pub fn subtasks(&self) -> Vec<SubtaskInfo> {
        self.subtask_metrics
            .iter()
            .map(|s| SubtaskInfo {
                id: s.id.clone(),
                worker: self.dataplane.as_ref().map_or(0, |d| d.here),
                name: s.name.clone(),
                rows_in: s.metrics.rows_in.load(Ordering::Relaxed),
                rows_out: s.metrics.rows_out.load(Ordering::Relaxed),
                watermark_ms: s.metrics.watermark(),
                backpressured_ms: s.metrics.backpressured_ns.load(Ordering::Relaxed) / 1_000_000,
            })
            .collect()
    }

    /// Rows dropped as late by this job's window operators.
    pub fn late_rows(&self) -> u64 {
        self.late_rows_by_node().values().sum()
    }

    /// Late rows per operator (node id) that drops them, here and on workers.
    pub fn late_rows_by_node(&self) -> BTreeMap<usize, u64> {
        let mut rows: BTreeMap<usize, u64> = self
            .late_rows
            .iter()
            .map(|(&node, count)| (node, count.load(Ordering::Relaxed)))
            .collect();
        for (&(_, node), &count) in self.remote_late_rows.lock().iter() {
            *rows.entry(node).or_default() += count;
        }
        rows
    }

    /// The graph node of operator `k` of chain `chain`'s subtasks (the operators a
    /// subtask snapshots, in order): the chain's nodes without its source and its sink.
    pub fn chain_operator(&self, chain: usize, k: usize) -> Option<usize> {
        self.chains
            .get(chain)?
            .iter()
            .copied()
            .filter(|&n| {
                let op = &self.graph.nodes[n].operator;
                !op.is_source() && !is_output(op)
            })
            .nth(k)
    }

    /// The first node of chain `chain` (a source, when the chain reads one).
    pub fn chain_head(&self, chain: usize) -> Option<usize> {
        self.chains.get(chain)?.first().copied()
    }

    /// Late rows per operator that drops them, as `"<node id>:<operator>"` → count.
    pub fn late_rows_by_operator(&self) -> BTreeMap<String, u64> {
        self.late_rows_by_node()
            .into_iter()
            .filter(|&(node, _)| node < self.graph.nodes.len())
            .map(|(node, count)| {
                let name = self.graph.nodes[node].operator.name();
                (format!("{node}:{name}"), count)
            })
            .collect()
    }

    /// The job's state. A job whose sinks have all seen the end of their input is
    /// finished as soon as that is visible, even before its subtasks have exited.
    pub fn state(&self) -> JobState {
        let state = self.state.borrow().clone();
        if state == JobState::Running && self.sinks.iter().all(|s| s.borrow().finished) {
            return JobState::Finished;
        }
        state
    }

    /// Sends barrier `barrier` into every source of this job. Sources that already ended
    /// are skipped: their end of stream carries everything a barrier would.
    pub async fn inject(&self, barrier: CheckpointBarrier) {
        for injector in &self.injectors {
            let _ = injector.send(barrier).await;
        }
        let remote = self.remote_inject.lock().clone();
        if let Some(inject) = remote {
            inject(barrier).await;
        }
    }

    /// Waits until every sink has applied barrier `epoch` (or finished), or the job failed.
    pub async fn wait_for_epoch(&self, epoch: u64) {
        let mut state = self.state.clone();
        for sink in &self.sinks {
            let mut sink = sink.clone();
            let sink_ended = tokio::select! {
                reached = sink.wait_for(|p| p.epoch >= epoch || p.finished) => reached.is_err(),
                _ = state.wait_for(|s| matches!(s, JobState::Failed(_))) => return,
            };
            if sink_ended {
                // The sink's subtask ended without reaching the epoch: it failed or was
                // stopped. Wait until the supervisor has recorded which, so that SHOW
                // JOBS after this FLUSH tells.
                let _ = state.wait_for(|s| *s != JobState::Running).await;
                return;
            }
        }
    }
}

/// Builds the subtasks of `graph` for view `view_id`/`view` whose result goes to
/// `partitions`, starts them, and returns the job.
pub fn deploy(
    id: u64,
    view: &str,
    graph: StreamGraph,
    partitions: &[Arc<ViewPartition>],
    ctx: &DeployContext<'_>,
) -> Result<Job> {
    let chains = match ctx.placement {
        Some(placement) => placement.chains.clone(),
        None => graph.chains(),
    };
    let local = |chain: usize, subtask: usize| is_local(ctx.placement, chain, subtask);
    let mut chain_of = vec![0usize; graph.nodes.len()];
    for (c, chain) in chains.iter().enumerate() {
        for &n in chain {
            chain_of[n] = c;
        }
    }
    let mut wiring = Wiring {
        receivers: per_subtask(&graph, &chains),
        sides: per_subtask(&graph, &chains),
        senders: per_subtask(&graph, &chains),
        forwarders: Vec::new(),
        placement: ctx.placement,
        next_channel: 0,
    };
    let mut out_partitioning: Vec<Option<(Exchange, usize)>> = vec![None; chains.len()];
    for (c, chain) in chains.iter().enumerate() {
        let head = &graph.nodes[chain[0]];
        for (side, edge) in head.inputs.iter().enumerate() {
            let up = chain_of[edge.from];
            let up_p = graph.nodes[edge.from].parallelism;
            out_partitioning[up] = Some((edge.exchange.clone(), edge.from));
            // (upstream subtask, downstream subtask) of every channel of the edge.
            let pairs: Vec<(usize, usize)> = match edge.exchange {
                Exchange::Forward => {
                    if up_p != head.parallelism {
                        return Err(SluiceError::internal(
                            "forward edge between different parallelisms",
                        ));
                    }
                    (0..up_p).map(|i| (i, i)).collect()
                }
                // Every upstream subtask reaches every downstream subtask.
                Exchange::Hash(_) => (0..up_p)
                    .flat_map(|i| (0..head.parallelism).map(move |j| (i, j)))
                    .collect(),
            };
            for (i, j) in pairs {
                wiring.connect((up, i), (c, j), side)?;
            }
        }
    }

    let props = ExecutionProps::new();
    // One late-row counter per operator that can drop late rows, shared by its subtasks.
    let late_rows: BTreeMap<usize, Arc<AtomicU64>> = graph
        .nodes
        .iter()
        .filter(|n| drops_late_rows(&n.operator))
        .map(|n| (n.id, Arc::new(AtomicU64::new(0))))
        .collect();
    let unused_counter = Arc::new(AtomicU64::new(0));
    let mut subtasks: Vec<Subtask> = Vec::new();
    let mut remote_subtasks = Vec::new();
    let mut injectors = Vec::new();
    let mut sinks = Vec::new();
    let mut sink_subtasks = Vec::new();
    let mut subtask_ids = Vec::new();
    let mut subtask_metrics = Vec::new();
    for (c, chain) in chains.iter().enumerate() {
        let head = &graph.nodes[chain[0]];
        for j in 0..head.parallelism {
            let sid = subtask_id(c, j);
            if let Some(placement) = ctx.placement.filter(|_| !local(c, j)) {
                subtask_ids.push(sid);
                if placement.here == 0 {
                    remote_subtasks.push(RemoteSubtask {
                        chain: c,
                        subtask: j,
                        process: placement.processes[c][j],
                        operators: match ctx.restore {
                            Some(restore) => chain
                                .iter()
                                .map(|&n| {
                                    restore
                                        .operator_state(n, j, head.parallelism)
                                        .map(RestoredState::into_entries)
                                })
                                .collect::<Result<_>>()?,
                            None => Vec::new(),
                        },
                        position: ctx
                            .restore
                            .and_then(|r| r.positions.get(&(head.id, j)).copied()),
                    });
                }
                continue;
            }
            let metrics = Arc::new(SubtaskMetrics::default());
            let inputs = std::mem::take(&mut wiring.receivers[c][j]);
            let input = match &head.operator {
                StreamOperator::TableScan { table } => {
                    let storage = ctx
                        .tables
                        .get(table)
                        .ok_or_else(|| SluiceError::undefined_table(table))?;
                    let subscription = match ctx.restore {
                        Some(restore) => {
                            let position = restore.table_positions.get(table).copied().unwrap_or(0);
                            storage.subscribe_from(position)?
                        }
                        None => storage.partition.subscribe()?,
                    };
                    forward(subscription, &mut wiring.forwarders)
                }
                StreamOperator::SourceScan { options, .. } => {
                    let schema = Arc::new(head.schema.as_arrow().clone());
                    let mut reader = sluice_connectors::create_source_reader(
                        options,
                        schema,
                        j,
                        head.parallelism,
                    )?;
                    let restored = ctx.restore.and_then(|r| r.positions.get(&(head.id, j)));
                    if let Some(position) = restored {
                        reader.seek(*position)?;
                    }
                    let (tx, rx) = mpsc::channel(BARRIER_INJECTION_CAPACITY);
                    injectors.push(tx);
                    TaskInput::Source {
                        reader,
                        barriers: rx,
                    }
                }
                StreamOperator::ViewScan { view: upstream } => {
                    let parts = ctx
                        .views
                        .get(upstream)
                        .ok_or_else(|| SluiceError::undefined_table(upstream))?;
                    let part = parts
                        .get(j)
                        .ok_or_else(|| SluiceError::internal("view scan parallelism mismatch"))?;
                    let subscription = if ctx.restore.is_some() {
                        part.subscribe_changes()?
                    } else {
                        part.subscribe()?
                    };
                    forward(subscription, &mut wiring.forwarders)
                }
                _ => {
                    let gate =
                        InputGate::new(inputs).with_sides(std::mem::take(&mut wiring.sides[c][j]));
                    let gate = match head.operator {
                        StreamOperator::TemporalJoin { .. } => gate.ignoring_watermarks_of(1),
                        _ => gate,
                    };
                    // Idleness is a property of sources: only gates reading source chains
                    // apply the timeout. Further down, a slow but active upstream subtask
                    // must not be taken for idle, or its rows would turn late.
                    let reads_sources = head.inputs.iter().all(|e| {
                        graph.nodes[chains[chain_of[e.from]][0]]
                            .operator
                            .is_source()
                    });
                    TaskInput::Gate(match graph.idle_timeout {
                        Some(timeout) if reads_sources => gate.with_idle_timeout(timeout),
                        _ => gate,
                    })
                }
            };
            // A source node is the task's input, not an operator of its chain.
            let op_nodes = if head.operator.is_source() {
                &chain[1..]
            } else {
                &chain[..]
            };
            let mut ops: Vec<Box<dyn Operator>> = Vec::new();
            let mut output: Option<Box<dyn Collector>> = None;
            for &n in op_nodes {
                let node = &graph.nodes[n];
                if let StreamOperator::Materialize { .. } = node.operator {
                    let (tx, rx) = watch::channel(SinkProgress::default());
                    sinks.push(rx);
                    let part = partitions
                        .get(j)
                        .ok_or_else(|| SluiceError::internal("sink parallelism mismatch"))?;
                    output = Some(Box::new(MaterializeSink::new(part.clone(), j, tx)));
                } else if let StreamOperator::Sink { options, .. } = &node.operator {
                    let (tx, rx) = watch::channel(SinkProgress::default());
                    sinks.push(rx);
                    let writer = sluice_connectors::create_sink_writer(options)?;
                    let subtask = SinkSubtask {
                        writer: Arc::new(tokio::sync::Mutex::new(writer)),
                        metrics: Arc::new(SinkMetrics::default()),
                    };
                    let mut sink =
                        SinkOutput::new(subtask.writer.clone(), subtask.metrics.clone(), j, tx);
                    if let Some(state) = ctx.restore.and_then(|r| r.sink_states.get(&j)) {
                        sink.restore_state(state.clone())?;
                    }
                    sink_subtasks.push(subtask);
                    output = Some(Box::new(sink));
                } else {
                    let late = late_rows.get(&node.id).unwrap_or(&unused_counter);
                    let spill = SpillContext {
                        dirs: ctx.operator_state,
                        name: format!("{view}-n{}-s{j}", node.id),
                    };
                    ops.push(compile_operator(&graph, node, &props, late, spill)?);
                }
            }
            let output = match output {
                Some(sink) => sink,
                None => {
                    let (exchange, tail) = out_partitioning[c]
                        .clone()
                        .ok_or_else(|| SluiceError::internal("chain without consumer"))?;
                    let partitioning = match exchange {
                        Exchange::Forward => Partitioning::Forward,
                        Exchange::Hash(keys) => Partitioning::Hash {
                            keys: compile_exprs(&keys, &graph.nodes[tail].schema, &props)?,
                            key_groups: DEFAULT_KEY_GROUPS,
                        },
                    };
                    Box::new(ExchangeOutput::new(
                        std::mem::take(&mut wiring.senders[c][j]),
                        partitioning,
                        metrics.clone(),
                    ))
                }
            };
            if let Some(restore) = ctx.restore {
                let op_nodes = op_nodes
                    .iter()
                    .filter(|&&n| !is_output(&graph.nodes[n].operator));
                for (op, &n) in ops.iter_mut().zip(op_nodes) {
                    op.restore(restore.operator_state(n, j, head.parallelism)?)?;
                }
            }
            let name = subtask_name(view, &graph, chain, j);
            subtask_metrics.push(SubtaskStats {
                id: sid.clone(),
                name: name.clone(),
                metrics: metrics.clone(),
            });
            subtasks.push(Subtask {
                name,
                metrics,
                input,
                chain: ops,
                output,
                reporter: ctx.snapshots.clone().map(|sender| SnapshotReporter {
                    job: id,
                    subtask: sid.clone(),
                    sender,
                }),
            });
            subtask_ids.push(sid);
        }
    }

    let (state_tx, state_rx) = watch::channel(JobState::Running);
    let deployment = Deployment {
        subtasks,
        forwarders: wiring.forwarders,
        state: state_tx,
        outputs: partitions.to_vec(),
        on_failure: ctx.on_failure.clone(),
    };
    let parallelism = graph.nodes.iter().map(|n| n.parallelism).max().unwrap_or(1);
    let (interrupts, interrupted) = mpsc::unbounded_channel();
    Ok(Job {
        id,
        view: view.to_string(),
        parallelism,
        graph,
        state: state_rx,
        injectors,
        sinks,
        subtask_ids,
        deployment: Mutex::new(Some(deployment)),
        supervisor: Mutex::new(None),
        interrupts,
        interrupted: Mutex::new(Some(interrupted)),
        late_rows,
        restored_epoch: ctx.restore.map(|r| r.epoch),
        chains,
        subtask_metrics,
        sink_subtasks,
        remote_subtasks,
        remote_late_rows: Arc::default(),
        remote_cancel: Arc::new(Mutex::new(None)),
        remote_inject: Mutex::new(None),
        dataplane: ctx.placement.map(|p| RunOnPlane {
            plane: p.dataplane.clone(),
            deployment: p.deployment,
            here: p.here,
        }),
    })
}

/// A job run spread over processes: its channels on this process's data plane.
struct RunOnPlane {
    plane: Arc<DataPlane>,
    deployment: u64,
    /// This process (a worker id; 0 the coordinator).
    here: u64,
}

/// Cancels a job's remote subtasks, once.
fn cancel_remote(cancel: &Mutex<Option<CancelRemote>>) {
    if let Some(cancel) = cancel.lock().take() {
        cancel();
    }
}

/// `view/Operator->Operator#subtask`: how logs and `GET /jobs/{id}` name a subtask.
fn subtask_name(view: &str, graph: &StreamGraph, chain: &[usize], subtask: usize) -> String {
    let names: Vec<&str> = chain
        .iter()
        .map(|&n| graph.nodes[n].operator.name())
        .collect();
    format!("{view}/{}#{subtask}", names.join("->"))
}

/// Whether subtask `subtask` of chain `chain` runs in this process.
fn is_local(placement: Option<&Placement>, chain: usize, subtask: usize) -> bool {
    placement.is_none_or(|p| p.is_local(chain, subtask))
}

/// The channels of a job's edges as [`deploy`] creates them: per chain and subtask, its
/// inputs (`receivers`, with the logical input, or join side, of each in `sides`) and its
/// outputs (`senders`); and the tasks that carry edges between processes.
struct Wiring<'a> {
    receivers: Vec<Vec<Vec<mpsc::Receiver<Message>>>>,
    sides: Vec<Vec<Vec<usize>>>,
    senders: Vec<Vec<Vec<mpsc::Sender<Message>>>>,
    /// Tasks that feed channels: data-plane pumps and subscriptions' forwarders.
    forwarders: Vec<Forwarder>,
    placement: Option<&'a Placement>,
    /// Cross-process channels are numbered in creation order, the same in every process.
    next_channel: u32,
}

impl Wiring<'_> {
    /// Creates the channel from subtask `up` to subtask `down` (each `(chain, subtask)`),
    /// which feeds logical input `side` of `down`. Only the ends in this process are
    /// kept: an end whose peer runs elsewhere is joined to it over the data plane.
    fn connect(&mut self, up: (usize, usize), down: (usize, usize), side: usize) -> Result<()> {
        let key = ChannelKey {
            deployment: self.placement.map_or(0, |p| p.deployment),
            channel: self.next_channel,
        };
        self.next_channel += 1;
        let (tx, rx) = channel();
        let local = |(chain, subtask): (usize, usize)| is_local(self.placement, chain, subtask);
        match (local(up), local(down)) {
            (true, true) => {
                self.senders[up.0][up.1].push(tx);
                self.receivers[down.0][down.1].push(rx);
                self.sides[down.0][down.1].push(side);
            }
            (true, false) => {
                self.senders[up.0][up.1].push(tx);
                let placement = self.placement.expect("a remote subtask has a placement");
                placement.dataplane.add_outbox(key, rx);
            }
            (false, true) => {
                let placement = self.placement.expect("a remote subtask has a placement");
                self.receivers[down.0][down.1].push(rx);
                self.sides[down.0][down.1].push(side);
                let address = placement.address(up.0, up.1)?;
                let process = placement.processes[up.0][up.1];
                let unreachable = placement
                    .unreachable
                    .clone()
                    .map(|tell| Box::new(move |error: &str| tell(process, error)) as OnUnreachable);
                self.forwarders
                    .push(Box::pin(pump(address, key, tx, unreachable)));
            }
            (false, false) => {}
        }
        Ok(())
    }
}

/// Whether a node ends its job (a view's storage or a sink) rather than being an operator.
fn is_output(operator: &StreamOperator) -> bool {
    matches!(
        operator,
        StreamOperator::Materialize { .. } | StreamOperator::Sink { .. }
    )
}

/// Whether an operator drops rows that arrive for a closed window.
fn drops_late_rows(operator: &StreamOperator) -> bool {
    match operator {
        StreamOperator::Aggregate { window, .. } => window.is_some(),
        StreamOperator::Join {
            windows, intervals, ..
        } => windows.is_some() || intervals.is_some(),
        StreamOperator::TopN { windows, .. } => windows.is_some(),
        StreamOperator::SessionWindow { .. } | StreamOperator::OverAggregate { .. } => true,
        _ => false,
    }
}

/// An empty list for every subtask of every chain.
fn per_subtask<T>(graph: &StreamGraph, chains: &[Vec<usize>]) -> Vec<Vec<Vec<T>>> {
    chains
        .iter()
        .map(|chain| {
            (0..graph.nodes[chain[0]].parallelism)
                .map(|_| Vec::new())
                .collect()
        })
        .collect()
}

pub type Forwarder = std::pin::Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// The input of a subtask reading a table or view partition: a gate over a channel that
/// a forwarder feeds with the subscription's rows, then its changes.
fn forward(subscription: Subscription, forwarders: &mut Vec<Forwarder>) -> TaskInput {
    let (tx, rx) = channel();
    let after_epoch = subscription.after_epoch;
    forwarders.push(Box::pin(forward_subscription(subscription, tx)));
    TaskInput::Gate(InputGate::starting_after_epoch(vec![rx], after_epoch))
}

/// Feeds a downstream view from an upstream view partition: its snapshot, then its changes.
/// If the upstream stops without `EndOfStream` (its job failed, or it was dropped), this
/// just ends: the downstream input gate then fails the job with one clear error.
async fn forward_subscription(subscription: Subscription, tx: mpsc::Sender<Message>) -> Result<()> {
    for batch in subscription.snapshot {
        if tx.send(Message::Batch(batch)).await.is_err() {
            return Ok(());
        }
    }
    let mut changes = subscription.changes;
    while let Some(message) = changes.recv().await {
        let end = matches!(message, Message::EndOfStream);
        if tx.send(message).await.is_err() || end {
            return Ok(());
        }
    }
    Ok(())
}

/// Aggregate expressions over `schema`, lowered to DataFusion's physical aggregates.
fn lower_aggregates(
    aggr_exprs: &[Expr],
    schema: &DFSchema,
    props: &ExecutionProps,
) -> Result<Vec<LoweredAggregate>> {
    let planning = PhysicalPlanningContext::default();
    aggr_exprs
        .iter()
        .map(|e| {
            Ok(
                LoweredAggregateBuilder::new(e, schema, schema.as_arrow(), props, &planning)
                    .build()?,
            )
        })
        .collect()
}

fn compile_exprs(
    exprs: &[Expr],
    schema: &DFSchema,
    props: &ExecutionProps,
) -> Result<Vec<Arc<dyn PhysicalExpr>>> {
    exprs
        .iter()
        .map(|e| {
            create_physical_expr(e, schema, props, &PhysicalPlanningContext::default())
                .map_err(SluiceError::from)
        })
        .collect()
}

/// The physical schema of a node's output: its columns, plus the op column on changelogs.
fn output_schema(node: &StreamNode) -> SchemaRef {
    let schema: Schema = node.schema.as_arrow().clone();
    if node.changelog {
        changelog_schema(&schema)
    } else {
        Arc::new(schema)
    }
}

fn compile_operator(
    graph: &StreamGraph,
    node: &StreamNode,
    props: &ExecutionProps,
    late_rows: &Arc<AtomicU64>,
    spill: SpillContext<'_>,
) -> Result<Box<dyn Operator>> {
    if let StreamOperator::Join {
        join_type,
        left_keys,
        right_keys,
        filter,
        nulls_equal,
        null_aware,
        windows,
        intervals,
    } = &node.operator
    {
        let side = |i: usize, keys: &[Expr], outer: bool| -> Result<JoinSide> {
            let input = &graph.nodes[node.inputs[i].from];
            Ok(JoinSide {
                keys: compile_exprs(keys, &input.schema, props)?,
                schema: Arc::new(input.schema.as_arrow().clone()),
                outer,
            })
        };
        let filter = match filter {
            Some(f) => Some(compile_exprs(std::slice::from_ref(f), &node.schema, props)?.remove(0)),
            None => None,
        };
        let join = JoinOperator::new(
            side(
                0,
                left_keys,
                matches!(join_type, JoinType::Left | JoinType::Full),
            )?,
            side(
                1,
                right_keys,
                matches!(join_type, JoinType::Right | JoinType::Full),
            )?,
            filter,
            output_schema(node),
        )?;
        let join = match (join_type, windows) {
            (JoinType::LeftSemi, _) => join.semi_or_anti(false, *nulls_equal),
            (JoinType::LeftAnti, _) if *null_aware => {
                join.semi_or_anti(true, *nulls_equal).null_aware()
            }
            (JoinType::LeftAnti, _) => join.semi_or_anti(true, *nulls_equal),
            (_, Some(w)) => join.with_windows(w.index, w.allowed_lateness_ms, late_rows.clone()),
            (_, None) => join,
        };
        let join = match intervals {
            Some(bounds) => {
                let compile =
                    |i: usize, e: &Option<Expr>| -> Result<Option<Arc<dyn PhysicalExpr>>> {
                        let input = &graph.nodes[node.inputs[i].from];
                        e.as_ref()
                            .map(|e| {
                                Ok(
                                    compile_exprs(std::slice::from_ref(e), &input.schema, props)?
                                        .remove(0),
                                )
                            })
                            .transpose()
                    };
                join.with_intervals(JoinIntervals::new(
                    [
                        compile(0, &bounds.expiry[0])?,
                        compile(1, &bounds.expiry[1])?,
                    ],
                    [compile(0, &bounds.time[0])?, compile(1, &bounds.time[1])?],
                    late_rows.clone(),
                ))
            }
            None => join,
        };
        let join = match graph.state_ttl {
            Some(ttl) if !*null_aware => join.with_state_ttl(ttl),
            _ => join,
        };
        if join.can_spill()
            && let Some(store) = spill.store()?
        {
            return Ok(Box::new(join.with_spill(store)));
        }
        return Ok(Box::new(join));
    }
    if let StreamOperator::TemporalJoin {
        outer,
        left_keys,
        right_keys,
        filter,
    } = &node.operator
    {
        let left = &graph.nodes[node.inputs[0].from];
        let right = &graph.nodes[node.inputs[1].from];
        let filter = match filter {
            Some(f) => Some(compile_exprs(std::slice::from_ref(f), &node.schema, props)?.remove(0)),
            None => None,
        };
        return Ok(Box::new(TemporalJoinOperator::new(
            compile_exprs(left_keys, &left.schema, props)?,
            &Arc::new(left.schema.as_arrow().clone()),
            compile_exprs(right_keys, &right.schema, props)?,
            Arc::new(right.schema.as_arrow().clone()),
            *outer,
            filter,
            output_schema(node),
        )?));
    }
    if let StreamOperator::Union = node.operator {
        return Ok(Box::new(UnionOperator::new(output_schema(node))));
    }
    let input = &graph.nodes[node.inputs[0].from];
    let input_schema = &input.schema;
    Ok(match &node.operator {
        StreamOperator::Project { exprs } => Box::new(ProjectOperator::new(
            compile_exprs(exprs, input_schema, props)?,
            output_schema(node),
        )),
        StreamOperator::Filter { predicate } => {
            let predicate =
                compile_exprs(std::slice::from_ref(predicate), input_schema, props)?.remove(0);
            Box::new(FilterOperator::new(predicate))
        }
        StreamOperator::TemporalFilter {
            time,
            offset_ms,
            inclusive,
        } => Box::new(TemporalFilterOperator::new(
            compile_exprs(std::slice::from_ref(time), input_schema, props)?.remove(0),
            *offset_ms,
            *inclusive,
            &Arc::new(input_schema.as_arrow().clone()),
            output_schema(node),
        )?),
        StreamOperator::WatermarkAssign { expr } => {
            let expr = compile_exprs(std::slice::from_ref(expr), input_schema, props)?.remove(0);
            Box::new(WatermarkOperator::new(expr))
        }
        StreamOperator::Aggregate {
            group_exprs,
            aggr_exprs,
            window,
        } => {
            let physical_input = input_schema.as_arrow();
            let aggregates = lower_aggregates(aggr_exprs, input_schema, props)?
                .into_iter()
                .map(|lowered| {
                    AggregateSpec::new(
                        lowered.aggregate,
                        lowered.filter,
                        physical_input,
                        input.changelog,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let operator = AggregateOperator::new(
                compile_exprs(group_exprs, input_schema, props)?,
                aggregates,
                output_schema(node),
            )?;
            let operator = match (window, graph.state_ttl) {
                (Some(w), _) => operator.with_windows(
                    w.end_index,
                    w.emit_on_close,
                    w.allowed_lateness_ms,
                    late_rows.clone(),
                ),
                (None, Some(ttl)) if !group_exprs.is_empty() => operator.with_state_ttl(ttl),
                (None, _) => operator,
            };
            if group_exprs.is_empty() {
                return Ok(Box::new(operator));
            }
            Box::new(match spill.store()? {
                Some(store) => operator.with_spill(store),
                None => operator,
            })
        }
        StreamOperator::OverAggregate {
            partition_by,
            time,
            aggr_exprs,
            frame,
        } => {
            let aggregates = lower_aggregates(aggr_exprs, input_schema, props)?
                .into_iter()
                .map(|lowered| lowered.aggregate)
                .collect();
            let frame = match *frame {
                OverFrame::Rows(n) => Frame::Rows(n),
                OverFrame::Range(ms) => Frame::Range(ms),
            };
            Box::new(OverAggregateOperator::new(
                compile_exprs(partition_by, input_schema, props)?,
                compile_exprs(std::slice::from_ref(time), input_schema, props)?.remove(0),
                aggregates,
                frame,
                Arc::new(input_schema.as_arrow().clone()),
                output_schema(node),
                late_rows.clone(),
            )?)
        }
        StreamOperator::Unnest {
            lists,
            sources,
            null_handling,
        } => Box::new(UnnestOperator::new(
            lists.clone(),
            sources.clone(),
            *null_handling,
            output_schema(node),
        )),
        StreamOperator::TopN {
            partition_by,
            order_by,
            limit,
            windows,
        } => {
            let typed = |e: &Expr| -> Result<(Arc<dyn PhysicalExpr>, DataType)> {
                let compiled = compile_exprs(std::slice::from_ref(e), input_schema, props)?;
                Ok((compiled[0].clone(), e.get_type(input_schema)?))
            };
            let order = order_by
                .iter()
                .map(|s| {
                    let (expr, data_type) = typed(&s.expr)?;
                    Ok(TopNOrder {
                        expr,
                        data_type,
                        options: SortOptions {
                            descending: !s.asc,
                            nulls_first: s.nulls_first,
                        },
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let topn = TopNOperator::new(
                partition_by.iter().map(typed).collect::<Result<Vec<_>>>()?,
                order,
                *limit,
                input.changelog,
                &Arc::new(input_schema.as_arrow().clone()),
                output_schema(node),
            )?;
            let topn = match (windows, graph.state_ttl) {
                (Some(w), _) => {
                    topn.with_windows(w.index, w.allowed_lateness_ms, late_rows.clone())
                }
                (None, Some(ttl)) => topn.with_state_ttl(ttl),
                (None, None) => topn,
            };
            if topn.can_spill()
                && let Some(store) = spill.store()?
            {
                return Ok(Box::new(topn.with_spill(store)));
            }
            Box::new(topn)
        }
        StreamOperator::SessionWindow {
            partition_by,
            time,
            gap,
            bounds,
            emit_on_close,
            allowed_lateness_ms,
        } => {
            let time_type = time.get_type(input_schema)?;
            let unit = match &time_type {
                DataType::Timestamp(unit, _) => *unit,
                other => {
                    return Err(SluiceError::unsupported(format!(
                        "the time column of a SESSION window must be a TIMESTAMP, not {other}"
                    )));
                }
            };
            let key_types = partition_by
                .iter()
                .map(|e| e.get_type(input_schema))
                .collect::<datafusion::error::Result<Vec<_>>>()?;
            let operator = SessionWindowOperator::new(
                compile_exprs(partition_by, input_schema, props)?,
                key_types,
                compile_exprs(std::slice::from_ref(time), input_schema, props)?.remove(0),
                time_type,
                sluice_sql::windows::interval_in_units(gap, unit, "gap")?,
                bounds
                    .iter()
                    .map(|&start| {
                        if start {
                            SessionBound::Start
                        } else {
                            SessionBound::End
                        }
                    })
                    .collect(),
                *emit_on_close,
                *allowed_lateness_ms,
                &Arc::new(input_schema.as_arrow().clone()),
                output_schema(node),
                late_rows.clone(),
            )?;
            if operator.can_spill()
                && let Some(store) = spill.store()?
            {
                return Ok(Box::new(operator.with_spill(store)));
            }
            Box::new(operator)
        }
        other => {
            return Err(SluiceError::internal(format!(
                "{} is not a chainable operator",
                other.name()
            )));
        }
    })
}
