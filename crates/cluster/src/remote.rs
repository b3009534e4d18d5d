//! Running a job's subtasks on workers (Flink's scheduler and TaskExecutor).
//!
//! The coordinator keeps what is tied to its storage: every chain that reads a table or
//! a view, and every view's storage and sink. Connector sources and the chains after
//! them (joins, aggregates, windows, Top-N: the stateful work) are placed on the
//! workers' slots, spread across workers. Each process then deploys the same stream
//! graph with the same [`Placement`], building only its own subtasks; the edges between
//! processes go over the data plane ([`crate::dataplane`]).
//!
//! Checkpoints work as in one process: barriers flow through the remote subtasks with
//! the rows; each remote subtask's worker writes its state files to the shared checkpoint
//! store and reports them to the coordinator over the control plane, which completes the
//! checkpoint as for its own subtasks. When a remote part fails (a subtask's error, a
//! broken data connection, or the worker lost), the whole job fails, its other parts are
//! cancelled, and it is restarted from the last completed checkpoint on the slots alive
//! then; it waits when they are too few ([`Placed::Waiting`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use sluice_common::error::{Result, SluiceError};
use sluice_runtime::message::{BarrierKind, CheckpointBarrier};
use sluice_runtime::operators::StateEntry;
use sluice_runtime::task::SubtaskSnapshot;
use sluice_sql::StreamGraph;
use sluice_state::OperatorStateDirs;
use sluice_state::checkpoint::{CheckpointStore, StateFileRef};
use tokio::sync::{mpsc, watch};
use tonic::transport::Endpoint;

use crate::checkpoints::{
    DatabaseUploads, SnapshotInbox, now_ms, operator_state_files, put_entries, upload_database,
};
use crate::dataplane::{DataPlane, barrier_code, barrier_kind};
use crate::job::{
    DeployContext, InjectRemote, Job, JobRestore, JobState, KillHandle, Placement, RemoteControl,
    SubtaskInfo, distributed_chains, runs_anywhere,
};
use crate::membership::{Membership, WorkerInfo};
use crate::rpc::proto::coordinator_client::CoordinatorClient;
use crate::rpc::proto::worker_client::WorkerClient;
use crate::rpc::proto::{
    CancelRequest, Chain, DeployRequest, FailureReport, InjectRequest, LateRows, MetricsRequest,
    OperatorState, SnapshotReport, SubtaskMetrics as ProtoMetrics, SubtaskState, WrittenState,
};
use crate::rpc::within;

/// How long a deploy or cancel call to a worker may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A job run with subtasks on workers, as the coordinator tracks it.
struct RemoteRun {
    kill: KillHandle,
    workers: BTreeSet<u64>,
    /// The job's record of its remote late rows (see [`Job::remote_late_rows`]).
    late_rows: Arc<Mutex<BTreeMap<(u64, usize), u64>>>,
}

/// The coordinator's side of running jobs on workers.
pub struct Cluster {
    pub membership: Arc<Membership>,
    pub dataplane: Arc<DataPlane>,
    /// Where workers reach the coordinator's data plane (`None` under `sluice serve`,
    /// which runs everything in its own process).
    address: Mutex<Option<String>>,
    runs: Mutex<HashMap<u64, RemoteRun>>,
    /// Deployment ids; started from the clock so that a restarted coordinator does not
    /// reuse the ids of runs its workers may still hold.
    next_deployment: AtomicU64,
    /// Where remote snapshots go: the checkpointer (`None`: no checkpoints).
    snapshots: Mutex<Option<SnapshotInbox>>,
    /// Per run and remote subtask id: its counters at its worker's last heartbeat.
    metrics: Mutex<HashMap<u64, BTreeMap<String, SubtaskInfo>>>,
    /// Workers registered so far (see [`Self::registrations`]).
    registrations: watch::Sender<u64>,
    /// See [`Self::completed_epoch`].
    completed_epoch: AtomicU64,
}

/// Where a job's subtasks run, as [`Cluster::place`] decides it.
pub(crate) enum Placed {
    /// All in the coordinator's process.
    Here,
    Across(Placement),
    /// Not yet: too few slots (why, in words).
    Waiting(String),
}

/// The slots `graph` needs on workers: the largest parallelism of its chains that may
/// run there (subtask j of every chain shares slot j), 0 when none may.
fn slots_needed(graph: &StreamGraph, chains: &[Vec<usize>]) -> usize {
    chains
        .iter()
        .filter(|chain| runs_anywhere(graph, chain))
        .map(|chain| graph.nodes[chain[0]].parallelism)
        .max()
        .unwrap_or(0)
}

impl Cluster {
    pub fn new(membership: Arc<Membership>) -> Arc<Cluster> {
        Arc::new(Cluster {
            membership,
            dataplane: DataPlane::new(),
            address: Mutex::new(None),
            runs: Mutex::new(HashMap::new()),
            next_deployment: AtomicU64::new(now_ms().saturating_mul(1000)),
            snapshots: Mutex::new(None),
            metrics: Mutex::new(HashMap::new()),
            registrations: watch::channel(0).0,
            completed_epoch: AtomicU64::new(0),
        })
    }

    /// Checkpoint `epoch` completed (workers learn it from heartbeat replies).
    pub fn checkpoint_completed(&self, epoch: u64) {
        self.completed_epoch.fetch_max(epoch, Ordering::Relaxed);
    }

    /// The newest checkpoint completed since this coordinator started (0: none).
    pub fn completed_epoch(&self) -> u64 {
        self.completed_epoch.load(Ordering::Relaxed)
    }

    /// Jobs may now place subtasks on workers, which reach this process at `address`.
    pub fn serve_at(&self, address: String) {
        *self.address.lock() = Some(address);
    }

    pub(crate) fn set_snapshots(&self, inbox: Option<SnapshotInbox>) {
        *self.snapshots.lock() = inbox;
    }

    /// Where `graph`'s subtasks run: here (no workers, or nothing in the graph can run
    /// elsewhere), across the workers' slots, or nowhere yet (too few slots).
    pub(crate) fn place(&self, graph: &StreamGraph) -> Placed {
        let Some(address) = self.address.lock().clone() else {
            return Placed::Here;
        };
        let workers = self.live_workers();
        let chains = distributed_chains(graph);
        let needed = slots_needed(graph, &chains);
        if workers.is_empty() || needed == 0 {
            return Placed::Here;
        }
        let available: u32 = workers.iter().map(|w| w.slots).sum();
        if (available as usize) < needed {
            return Placed::Waiting(format!(
                "waiting for slots: the job needs {needed}, the live workers have {available}"
            ));
        }
        if let Err(e) = check_shippable(graph) {
            tracing::warn!(error = %e.message, "the job runs on the coordinator only: its graph cannot be sent to workers");
            return Placed::Here;
        }
        // Slots in the order subtasks take them: each worker's first slot, then each
        // one's second, ..., so a job's subtasks spread over the workers. Subtask j of
        // every chain shares slot j (Flink's slot sharing).
        let most = workers.iter().map(|w| w.slots).max().unwrap_or(0);
        let slots: Vec<u64> = (0..most)
            .flat_map(|s| workers.iter().filter(move |w| s < w.slots).map(|w| w.id))
            .collect();
        let processes = chains
            .iter()
            .map(|chain| {
                let remote = runs_anywhere(graph, chain);
                (0..graph.nodes[chain[0]].parallelism)
                    .map(|j| if remote { slots[j] } else { 0 })
                    .collect()
            })
            .collect();
        let mut addresses: BTreeMap<u64, String> =
            workers.iter().map(|w| (w.id, w.address.clone())).collect();
        addresses.insert(0, address);
        let membership = self.membership.clone();
        Placed::Across(Placement {
            deployment: self.next_deployment.fetch_add(1, Ordering::Relaxed),
            chains,
            processes,
            here: 0,
            addresses,
            dataplane: self.dataplane.clone(),
            unreachable: Some(Arc::new(move |worker, error| {
                membership.declare_lost(worker, error)
            })),
        })
    }

    /// Whether `job` would be placed over more workers now than it runs on: it waits
    /// for slots that now exist, or runs its distributable chains on fewer workers than are alive (it
    /// was deployed before they registered). A job that would run here anyway does not.
    pub(crate) fn would_spread_wider(&self, job: &Job) -> bool {
        if self.address.lock().is_none() {
            return false;
        }
        let needed = slots_needed(&job.graph, &distributed_chains(&job.graph));
        let workers = self.live_workers();
        match job.state() {
            JobState::Waiting(_) => {
                return workers.iter().map(|w| w.slots as usize).sum::<usize>() >= needed;
            }
            JobState::Running => {}
            _ => return false,
        }
        let live = workers.len();
        let used = job
            .deployment()
            .and_then(|d| self.runs.lock().get(&d).map(|run| run.workers.len()))
            .unwrap_or(0);
        used < live.min(needed) && check_shippable(&job.graph).is_ok()
    }

    /// The live workers other than the embedded one.
    fn live_workers(&self) -> Vec<WorkerInfo> {
        self.membership
            .workers()
            .into_iter()
            .filter(|w| w.id != 0 && w.state == "alive")
            .collect()
    }

    /// Registers a worker (see [`Membership::register`]) and tells whoever watches
    /// [`Self::registrations`].
    pub fn register(&self, address: &str, slots: u32) -> u64 {
        let id = self.membership.register(address, slots);
        self.registrations.send_modify(|n| *n += 1);
        id
    }

    /// Changes whenever a worker registers.
    pub(crate) fn registrations(&self) -> watch::Receiver<u64> {
        self.registrations.subscribe()
    }

    /// Makes `job` (deployed with `placement`) deploy its remote subtasks when it starts
    /// and cancel them when it ends.
    pub(crate) fn attach(
        self: &Arc<Self>,
        job: &Job,
        placement: &Placement,
        checkpoint_url: Option<&str>,
    ) -> Result<()> {
        let graph = sluice_sql::codec::encode_graph(&job.graph)?;
        let chains: Vec<Chain> = placement
            .chains
            .iter()
            .zip(&placement.processes)
            .map(|(nodes, processes)| Chain {
                nodes: nodes.iter().map(|&n| n as u32).collect(),
                processes: processes.clone(),
            })
            .collect();
        let mut requests: BTreeMap<u64, DeployRequest> = BTreeMap::new();
        for remote in &job.remote_subtasks {
            let request = requests
                .entry(remote.process)
                .or_insert_with(|| DeployRequest {
                    deployment: placement.deployment,
                    job: job.id,
                    view: job.view.clone(),
                    graph: graph.clone(),
                    chains: chains.clone(),
                    worker_id: remote.process,
                    addresses: placement.addresses.clone().into_iter().collect(),
                    checkpoints: checkpoint_url.is_some(),
                    restore: Vec::new(),
                    checkpoint_url: checkpoint_url.unwrap_or_default().to_string(),
                });
            if job.restored_epoch.is_some() {
                request.restore.push(SubtaskState {
                    chain: remote.chain as u32,
                    subtask: remote.subtask as u32,
                    operators: remote.operators.iter().map(|e| to_proto(e)).collect(),
                    position: remote.position,
                });
            }
        }
        let workers: BTreeSet<u64> = requests.keys().copied().collect();
        let addresses: BTreeMap<u64, String> = workers
            .iter()
            .map(|w| (*w, placement.addresses[w].clone()))
            .collect();
        let deployment = placement.deployment;
        self.runs.lock().insert(
            deployment,
            RemoteRun {
                kill: job.kill_handle(),
                workers,
                late_rows: job.remote_late_rows.clone(),
            },
        );
        // Barriers for remote sources wait until the sources are deployed (`Some(true)`),
        // and are dropped if deploying failed (`Some(false)`: the job fails anyway).
        let (deployed, deployed_rx) = tokio::sync::watch::channel(None::<bool>);
        let sources_remote = job.remote_subtasks.iter().any(|r| {
            let head = placement.chains[r.chain][0];
            job.graph.nodes[head].operator.is_source()
        });
        let inject: Option<InjectRemote> = sources_remote.then(|| {
            let addresses = addresses.clone();
            Box::new(move |barrier: CheckpointBarrier| {
                let addresses = addresses.clone();
                let mut deployed = deployed_rx.clone();
                Box::pin(async move {
                    match deployed.wait_for(|d| d.is_some()).await {
                        Ok(done) if *done == Some(true) => {}
                        _ => return,
                    }
                    for (worker, address) in &addresses {
                        let Ok(mut client) = worker_client(address) else {
                            continue;
                        };
                        let request = InjectRequest {
                            deployment,
                            epoch: barrier.epoch,
                            kind: barrier_code(barrier.kind).into(),
                        };
                        if let Err(e) = within(CALL_TIMEOUT, client.inject_barrier(request)).await {
                            // The worker's data connections break too: the job fails.
                            tracing::warn!(worker, epoch = barrier.epoch, error = %e.message(), "barrier not delivered");
                        }
                    }
                }) as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
            }) as InjectRemote
        });
        let deploy = {
            let addresses = addresses.clone();
            let membership = self.membership.clone();
            Box::pin(async move {
                for (worker, request) in requests {
                    let address = &addresses[&worker];
                    let mut client = worker_client(address)?;
                    if let Err(e) = within(CALL_TIMEOUT, client.deploy(request)).await {
                        let error = format!(
                            "deploying to worker {worker} ({address}) failed: {}",
                            e.message()
                        );
                        // Unreachable, rather than refusing: the restart should not wait
                        // for its heartbeat timeout to place subtasks elsewhere.
                        if matches!(
                            e.code(),
                            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                        ) {
                            membership.declare_lost(worker, &error);
                        }
                        deployed.send_replace(Some(false));
                        return Err(SluiceError::internal(error));
                    }
                }
                deployed.send_replace(Some(true));
                Ok(())
            })
        };
        let cluster = self.clone();
        let cancel = Box::new(move || {
            cluster.runs.lock().remove(&deployment);
            cluster.metrics.lock().remove(&deployment);
            tokio::spawn(async move {
                for (worker, address) in addresses {
                    let Ok(mut client) = worker_client(&address) else {
                        continue;
                    };
                    if let Err(e) =
                        within(CALL_TIMEOUT, client.cancel(CancelRequest { deployment })).await
                    {
                        tracing::debug!(worker, error = %e.message(), "cancel not delivered");
                    }
                }
            });
        });
        job.set_remote(RemoteControl {
            deploy,
            cancel,
            inject,
        });
        Ok(())
    }

    /// A remote subtask's snapshot; false when its run is not (any longer) running.
    pub(crate) fn report_snapshot(&self, report: SnapshotReport) -> bool {
        if !self.runs.lock().contains_key(&report.deployment) {
            return false;
        }
        let snapshot = SubtaskSnapshot {
            barrier: CheckpointBarrier {
                epoch: report.epoch,
                kind: kind_of(report.kind),
            },
            subtask: report.subtask,
            job: report.job,
            operators: report.operators.into_iter().map(from_proto).collect(),
            // Workers keep operator state in memory (no spill stores) so far.
            databases: Vec::new(),
            sink: None,
            position: report.position,
            alignment_ms: report.alignment_ms,
        };
        let written = report
            .files
            .into_iter()
            .map(|f| {
                let file = StateFileRef {
                    path: f.path,
                    size: f.size,
                    crc32: f.crc32,
                };
                (f.name, file)
            })
            .collect();
        if let Some(inbox) = self.snapshots.lock().as_ref() {
            inbox.deliver(snapshot, written);
        }
        true
    }

    /// A remote part of a run failed: fails its job. False when the run is unknown.
    pub(crate) fn report_failure(&self, report: FailureReport) -> bool {
        match self.runs.lock().get(&report.deployment) {
            Some(run) => {
                run.kill.kill(&report.error);
                true
            }
            None => false,
        }
    }

    /// Worker `worker`'s counters (from a heartbeat or a [`Cluster::refresh_metrics`]).
    pub(crate) fn record_metrics(
        &self,
        worker: u64,
        subtasks: Vec<ProtoMetrics>,
        late_rows: Vec<LateRows>,
    ) {
        let runs = self.runs.lock();
        for late in late_rows {
            if let Some(run) = runs.get(&late.deployment) {
                run.late_rows
                    .lock()
                    .insert((worker, late.node as usize), late.rows);
            }
        }
        let mut metrics = self.metrics.lock();
        for s in subtasks {
            if !runs.contains_key(&s.deployment) {
                continue;
            }
            let info = SubtaskInfo {
                id: s.id.clone(),
                worker,
                name: s.name,
                rows_in: s.rows_in,
                rows_out: s.rows_out,
                watermark_ms: s.watermark_ms,
                backpressured_ms: s.backpressured_ms,
            };
            metrics.entry(s.deployment).or_default().insert(s.id, info);
        }
    }

    /// The subtasks of run `deployment` of `job` that workers run, with their counters
    /// as of the last heartbeat (zero before the first).
    pub(crate) fn remote_subtasks(&self, deployment: u64, job: &Job) -> Vec<SubtaskInfo> {
        let metrics = self.metrics.lock();
        let reported = metrics.get(&deployment);
        job.remote_subtasks
            .iter()
            .map(|r| {
                let id = crate::job::subtask_id(r.chain, r.subtask);
                reported
                    .and_then(|m| m.get(&id))
                    .cloned()
                    .unwrap_or_else(|| SubtaskInfo {
                        name: job.subtask_name(r.chain, r.subtask),
                        id,
                        worker: r.process,
                        rows_in: 0,
                        rows_out: 0,
                        watermark_ms: None,
                        backpressured_ms: 0,
                    })
            })
            .collect()
    }

    /// Asks every worker running subtasks for its counters now. After a FLUSH this makes
    /// `SHOW JOBS` count every row the flushed input made late: the barrier passed the
    /// remote operators, which count before they forward it, before it reached the views.
    pub async fn refresh_metrics(&self) {
        let workers: BTreeSet<u64> = self
            .runs
            .lock()
            .values()
            .flat_map(|r| r.workers.iter().copied())
            .collect();
        let addresses: BTreeMap<u64, String> = self
            .live_workers()
            .into_iter()
            .filter(|w| workers.contains(&w.id))
            .map(|w| (w.id, w.address))
            .collect();
        for (worker, address) in addresses {
            let Ok(mut client) = worker_client(&address) else {
                continue;
            };
            match within(CALL_TIMEOUT, client.metrics(MetricsRequest {})).await {
                Ok(reply) => {
                    let reply = reply.into_inner();
                    self.record_metrics(worker, reply.subtasks, reply.late_rows);
                }
                Err(e) => tracing::debug!(worker, error = %e.message(), "no metrics"),
            }
        }
    }

    /// Worker `id` was lost: fails every job with subtasks on it.
    pub fn worker_lost(&self, id: u64) {
        for run in self.runs.lock().values() {
            if run.workers.contains(&id) {
                run.kill.kill(&format!(
                    "worker {id} was lost (no heartbeat within the timeout)"
                ));
            }
        }
    }
}

/// What a worker uploaded of its spill stores' RocksDB checkpoints (SST files), so that
/// a checkpoint references what the newest completed one holds instead of uploading it
/// again, as the coordinator's checkpointer does. Workers learn which checkpoint
/// completed from heartbeat replies; until they do, they upload.
#[derive(Default)]
struct WorkerUploads {
    /// Per epoch not yet known to be complete: the SST files its snapshots uploaded or
    /// referenced.
    pending: BTreeMap<u64, DatabaseUploads>,
    /// The newest checkpoint known to be complete, and its SST files: kept in the
    /// checkpoint store while it, or a newer checkpoint referencing them, is kept.
    completed: (u64, DatabaseUploads),
}

impl WorkerUploads {
    /// Checkpoint `epoch` completed: its files may be referenced; those of earlier
    /// epochs (complete or aborted) may not.
    fn completed(&mut self, epoch: u64) {
        if epoch <= self.completed.0 {
            return;
        }
        let files = self.pending.remove(&epoch).unwrap_or_default();
        self.pending = self.pending.split_off(&epoch);
        self.completed = (epoch, files);
    }
}

/// Writes the state of `snapshot` (a subtask of `job`) to `store`, one file per operator
/// with state and the files of its spill stores' RocksDB checkpoints, named as the
/// coordinator names the files it writes. A checkpoint (not a savepoint) references the
/// SST files the newest completed checkpoint holds (see [`WorkerUploads`]).
async fn write_state(
    store: &CheckpointStore,
    job: &Job,
    snapshot: &SubtaskSnapshot,
    uploads: &Mutex<WorkerUploads>,
) -> Result<Vec<WrittenState>> {
    let epoch = snapshot.barrier.epoch;
    let mut written = Vec::new();
    for (name, entries) in operator_state_files(job, snapshot)? {
        let file = put_entries(store, epoch, &name, entries).await?;
        written.push((name, file));
    }
    let mut uploaded = DatabaseUploads::new();
    for (k, database) in &snapshot.databases {
        let earlier = |key: &(String, String)| uploads.lock().completed.1.get(key).cloned();
        written.extend(
            upload_database(store, job, snapshot, *k, database, earlier, &mut uploaded).await?,
        );
    }
    if !uploaded.is_empty() {
        uploads
            .lock()
            .pending
            .entry(epoch)
            .or_default()
            .extend(uploaded);
    }
    Ok(written
        .into_iter()
        .map(|(name, file)| WrittenState {
            name,
            path: file.path,
            size: file.size,
            crc32: file.crc32,
        })
        .collect())
}

/// Whether `graph` survives encoding for a worker unchanged: every expression in it has
/// a protobuf form that decodes to the same expression. Schemas lose their functional
/// dependencies on the way (datafusion-proto does not encode them); only planning uses
/// them, so they are left out of the comparison.
fn check_shippable(graph: &StreamGraph) -> Result<()> {
    let decoded = sluice_sql::codec::decode_graph(&sluice_sql::codec::encode_graph(graph)?)?;
    let mut expected = graph.clone();
    for node in &mut expected.nodes {
        let schema = node.schema.as_ref().clone();
        node.schema = Arc::new(
            schema
                .with_functional_dependencies(datafusion::common::FunctionalDependencies::empty())?,
        );
    }
    if format!("{decoded:?}") != format!("{expected:?}") {
        return Err(SluiceError::internal(
            "the stream graph decodes to a different graph",
        ));
    }
    Ok(())
}

fn worker_client(address: &str) -> Result<WorkerClient<tonic::transport::Channel>> {
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| SluiceError::internal(format!("bad worker address {address}: {e}")))?
        .connect_timeout(Duration::from_secs(5));
    Ok(WorkerClient::new(endpoint.connect_lazy())
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX))
}

/// A barrier kind from its wire code; an unknown code is taken for a checkpoint.
fn kind_of(code: u32) -> BarrierKind {
    barrier_kind(code).unwrap_or(BarrierKind::Checkpoint)
}

pub(crate) fn to_proto(entries: &[StateEntry]) -> OperatorState {
    OperatorState {
        entries: entries
            .iter()
            .map(|(g, k, v)| crate::rpc::proto::StateEntry {
                key_group: *g as u32,
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
    }
}

pub(crate) fn from_proto(state: OperatorState) -> Vec<StateEntry> {
    state
        .entries
        .into_iter()
        .map(|e| (e.key_group as u16, e.key, e.value))
        .collect()
}

/// `client` without message size limits: deployments carry graphs and restored state.
fn unlimited(
    client: CoordinatorClient<tonic::transport::Channel>,
) -> CoordinatorClient<tonic::transport::Channel> {
    client
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

/// The worker's side: the runs deployed on it.
pub struct WorkerRuntime {
    dataplane: Arc<DataPlane>,
    /// The coordinator this worker is registered with: its data-plane address as this
    /// worker reaches it (process 0), and a client of its control plane.
    coordinator: Mutex<(String, CoordinatorClient<tonic::transport::Channel>)>,
    runs: Arc<Mutex<HashMap<u64, Arc<Job>>>>,
    /// Where operators spill keyed state beyond their memory budget (`None`: they keep
    /// it in memory).
    operator_state: Option<Arc<OperatorStateDirs>>,
    uploads: Arc<Mutex<WorkerUploads>>,
}

impl WorkerRuntime {
    pub fn new(
        dataplane: Arc<DataPlane>,
        coordinator_address: String,
        coordinator: CoordinatorClient<tonic::transport::Channel>,
        operator_state: Option<Arc<OperatorStateDirs>>,
    ) -> WorkerRuntime {
        WorkerRuntime {
            dataplane,
            coordinator: Mutex::new((coordinator_address, unlimited(coordinator))),
            runs: Arc::new(Mutex::new(HashMap::new())),
            operator_state,
            uploads: Arc::default(),
        }
    }

    /// The coordinator completed checkpoint `epoch` (0: none yet), as its heartbeat
    /// reply says.
    pub fn checkpoint_completed(&self, epoch: u64) {
        self.uploads.lock().completed(epoch);
    }

    /// Deploys from now on come from the coordinator at `address` (this worker
    /// registered with it), and snapshots and failures of their runs are reported to it.
    /// When it is another coordinator than before (one of a group took over), the runs
    /// the previous one deployed are cancelled: the new one deploys its own.
    pub async fn follow(
        &self,
        address: String,
        client: CoordinatorClient<tonic::transport::Channel>,
    ) {
        let switched = {
            let mut coordinator = self.coordinator.lock();
            let switched = coordinator.0 != address;
            *coordinator = (address, unlimited(client));
            switched
        };
        if switched {
            // Epochs are the new coordinator's: what the old one completed means nothing.
            *self.uploads.lock() = WorkerUploads::default();
            let left: Vec<u64> = self.runs.lock().keys().copied().collect();
            for deployment in left {
                self.cancel(deployment).await;
            }
        }
    }

    /// The counters of every subtask this worker runs, and the late rows of each of its
    /// operators, for heartbeats and the `Metrics` call.
    /// This worker's data plane (its counters go out with every heartbeat).
    pub fn dataplane(&self) -> &DataPlane {
        &self.dataplane
    }

    pub fn metrics(&self) -> (Vec<ProtoMetrics>, Vec<LateRows>) {
        let runs = self.runs.lock();
        let mut all = Vec::new();
        let mut late = Vec::new();
        for (&deployment, job) in runs.iter() {
            for (node, rows) in job.late_rows_by_node() {
                late.push(LateRows {
                    deployment,
                    node: node as u32,
                    rows,
                });
            }
            for s in job.subtasks() {
                all.push(ProtoMetrics {
                    deployment,
                    id: s.id,
                    name: s.name,
                    rows_in: s.rows_in,
                    rows_out: s.rows_out,
                    watermark_ms: s.watermark_ms,
                    backpressured_ms: s.backpressured_ms,
                });
            }
        }
        (all, late)
    }

    /// Builds and starts the subtasks `request` places on this worker.
    pub fn deploy(&self, request: DeployRequest) -> Result<()> {
        let graph = sluice_sql::codec::decode_graph(&request.graph)?;
        let chains: Vec<Vec<usize>> = request
            .chains
            .iter()
            .map(|c| c.nodes.iter().map(|&n| n as usize).collect())
            .collect();
        let processes: Vec<Vec<u64>> = request.chains.iter().map(|c| c.processes.clone()).collect();
        let malformed = chains.iter().zip(&processes).any(|(nodes, processes)| {
            nodes.is_empty()
                || nodes.iter().any(|&n| n >= graph.nodes.len())
                || processes.len() != graph.nodes[nodes[0]].parallelism
        });
        if malformed || chains.iter().flatten().count() != graph.nodes.len() {
            return Err(SluiceError::invalid_parameter(
                "the deployment's chains do not match its graph",
            ));
        }
        let (coordinator_address, coordinator) = self.coordinator.lock().clone();
        let mut addresses: BTreeMap<u64, String> = request.addresses.into_iter().collect();
        addresses.insert(0, coordinator_address);
        let placement = Placement {
            deployment: request.deployment,
            chains: chains.clone(),
            processes,
            here: request.worker_id,
            addresses,
            dataplane: self.dataplane.clone(),
            unreachable: None,
        };
        let mut restore = JobRestore::default();
        for state in &request.restore {
            let chain = chains.get(state.chain as usize).ok_or_else(|| {
                SluiceError::invalid_parameter("restored state of an unknown chain")
            })?;
            if let Some(position) = state.position {
                restore
                    .positions
                    .insert((chain[0], state.subtask as usize), position);
            }
            for (k, operator) in state.operators.iter().enumerate() {
                let node = *chain.get(k).ok_or_else(|| {
                    SluiceError::invalid_parameter("restored state of an unknown operator")
                })?;
                restore
                    .operators
                    .insert((node, state.subtask as usize), from_proto(operator.clone()));
            }
        }
        let (snapshots, mut reported) = mpsc::unbounded_channel::<SubtaskSnapshot>();
        // Subtasks' state files go to the checkpoint store from here.
        let store = match request.checkpoint_url.as_str() {
            "" => None,
            url => Some(CheckpointStore::open(url)?),
        };
        let ctx = DeployContext {
            tables: &BTreeMap::new(),
            views: &BTreeMap::new(),
            snapshots: request.checkpoints.then_some(snapshots),
            restore: (!request.restore.is_empty()).then_some(&restore),
            on_failure: None,
            placement: Some(&placement),
            // Spilled state is checkpointed as RocksDB files, which need a store.
            operator_state: store.as_ref().and(self.operator_state.as_deref()),
        };
        let job = Arc::new(crate::job::deploy(
            request.job,
            &request.view,
            graph,
            &[],
            &ctx,
        )?);
        job.start();
        let deployment = request.deployment;
        self.runs.lock().insert(deployment, job.clone());
        tracing::info!(deployment, view = %request.view, "deployed subtasks");
        // Snapshots go to the coordinator in the order they were taken.
        let mut reports = coordinator.clone();
        let kill = job.kill_handle();
        let deployed = job.clone();
        let uploads = self.uploads.clone();
        tokio::spawn(async move {
            while let Some(snapshot) = reported.recv().await {
                let mut report = SnapshotReport {
                    deployment,
                    job: snapshot.job,
                    subtask: snapshot.subtask.clone(),
                    epoch: snapshot.barrier.epoch,
                    kind: barrier_code(snapshot.barrier.kind).into(),
                    operators: Vec::new(),
                    alignment_ms: snapshot.alignment_ms,
                    position: snapshot.position,
                    files: Vec::new(),
                };
                match &store {
                    Some(store) => match write_state(store, &deployed, &snapshot, &uploads).await {
                        Ok(files) => report.files = files,
                        Err(e) => {
                            kill.kill(&format!(
                                "cannot write a snapshot to the checkpoint store: {}",
                                e.message
                            ));
                            return;
                        }
                    },
                    None => {
                        report.operators = snapshot.operators.iter().map(|e| to_proto(e)).collect();
                    }
                }
                match within(CALL_TIMEOUT, reports.report_snapshot(report)).await {
                    Ok(reply) if reply.get_ref().known => {}
                    Ok(_) => {
                        kill.kill("the coordinator no longer runs this deployment");
                        return;
                    }
                    Err(e) => {
                        kill.kill(&format!(
                            "cannot report a snapshot to the coordinator: {}",
                            e.message()
                        ));
                        return;
                    }
                }
            }
        });
        // When the run ends: a failure is reported, and the run forgotten.
        let mut coordinator = coordinator;
        let runs = self.runs.clone();
        tokio::spawn(async move {
            job.stopped().await;
            if let JobState::Failed(error) = job.state() {
                tracing::warn!(deployment, error = %error, "deployed subtasks failed");
                let report = FailureReport { deployment, error };
                let _ = within(CALL_TIMEOUT, coordinator.report_failure(report)).await;
            }
            runs.lock().remove(&deployment);
        });
        Ok(())
    }

    /// Injects a barrier into run `deployment`'s sources here. A run no longer here has
    /// finished or been cancelled (the coordinator injects only after deploying): like a
    /// source that ended, it is skipped.
    pub async fn inject(&self, deployment: u64, epoch: u64, kind: u32) {
        let job = self.runs.lock().get(&deployment).cloned();
        if let Some(job) = job {
            let kind = kind_of(kind);
            job.inject(CheckpointBarrier { epoch, kind }).await;
        }
    }

    /// Stops run `deployment`'s subtasks, if it is here.
    pub async fn cancel(&self, deployment: u64) {
        let job = self.runs.lock().remove(&deployment);
        if let Some(job) = job {
            job.stop().await;
            tracing::info!(deployment, "cancelled subtasks");
        }
        self.dataplane.forget(deployment);
    }
}
