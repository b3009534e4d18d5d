//! The checkpoint coordinator: completes checkpoints and turns a stored one back into
//! what each job resumes from.
//!
//! Checkpoints are global, as in RisingWave: barrier `n` goes into every table and every
//! running job's sources at once (the coordinator does that under its epoch lock), so one
//! checkpoint is a consistent cut across all views, including views that read views. Each
//! subtask reports its snapshot when barrier `n` has passed it; this module uploads the
//! snapshots to the [`CheckpointStore`] as they arrive, and once every subtask of every
//! job has reported, writes the metadata, which makes the checkpoint exist. A job that
//! fails or finishes before reporting, or a checkpoint that takes longer than its
//! timeout, aborts the checkpoint: nothing is committed and the next one starts afresh.
//!
//! Names in the store, per view (job) id `v` (see [`StateFile`]):
//! - `mv-v/node-{n}/{subtask}`: the state of operator node `n` in one of its subtasks
//!   (when not empty);
//! - `mv-v/partition-{p}`: the rows of the view's partition `p`.
//!
//! Properties: `table/{id}` = the table's log position at the barrier; `job/{v}` =
//! `running`, `finished` or `canceled`; `layout/{v}` = the job's nodes and their parallelism
//! ([`Layout`]); `position/mv-v/node-{n}/{subtask}` = a source's position.
//!
//! Operator state is named by graph node rather than by subtask chain so that a view
//! replanned at another parallelism (whose chains differ) finds it: with the layout, a
//! node whose parallelism changed pools its subtasks' entries and splits them by key
//! group.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use sluice_common::error::{Result, SluiceError};
use sluice_runtime::message::BarrierKind;
use sluice_runtime::operators::StateEntry;
use sluice_runtime::operators::materialize::ViewPartition;
use sluice_runtime::task::SubtaskSnapshot;
use sluice_state::checkpoint::{
    CheckpointKind, CheckpointMetadata, CheckpointStore, Downloads, RestoredCheckpoint,
    StateFileRef, epoch_of_path,
};
use sluice_state::snapshot::{decode_entries, encode_entries};
use sluice_state::spill::{DbCheckpoint, RestoredDb};
use tokio::sync::mpsc;

use crate::job::{Job, JobRestore, JobState, Layout, parse_subtask_id};
use crate::metadata::MetadataStore;

/// How often a waiting checkpoint re-checks the jobs it waits for.
const POLL: Duration = Duration::from_millis(50);

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One checkpoint whose barrier has been injected.
pub struct InFlight {
    pub epoch: u64,
    pub kind: CheckpointKind,
    pub started_at_ms: u64,
    /// Table id → log position at the barrier.
    pub table_positions: BTreeMap<u64, u64>,
    /// Jobs that received the barrier and must report.
    pub running: Vec<Arc<Job>>,
    /// Jobs that had finished or were cancelled: their views' rows are taken as they
    /// are.
    pub finished: Vec<(Arc<Job>, Vec<Arc<ViewPartition>>)>,
}

/// State files a worker wrote to the store itself, by (epoch, job, subtask id).
type Written = HashMap<(u64, u64, String), Vec<(String, StateFileRef)>>;

/// Where subtasks' snapshots reach the checkpointer. The coordinator's own subtasks send
/// them whole; a worker writes its subtasks' state files to the checkpoint store itself
/// and sends their references with a snapshot that carries no state.
#[derive(Clone)]
pub struct SnapshotInbox {
    sender: mpsc::UnboundedSender<SubtaskSnapshot>,
    written: Arc<Mutex<Written>>,
}

impl SnapshotInbox {
    /// Delivers `snapshot`, whose state is in the files `written` (name, reference).
    pub fn deliver(&self, snapshot: SubtaskSnapshot, written: Vec<(String, StateFileRef)>) {
        if !written.is_empty() {
            let key = (
                snapshot.barrier.epoch,
                snapshot.job,
                snapshot.subtask.clone(),
            );
            self.written.lock().insert(key, written);
        }
        let _ = self.sender.send(snapshot);
    }
}

/// The chain and subtask index of `snapshot`'s subtask.
fn subtask_of(snapshot: &SubtaskSnapshot) -> Result<(usize, usize)> {
    parse_subtask_id(&snapshot.subtask)
        .ok_or_else(|| SluiceError::internal(format!("malformed subtask id {}", snapshot.subtask)))
}

fn not_run(job: &Job, snapshot: &SubtaskSnapshot) -> SluiceError {
    SluiceError::internal(format!(
        "subtask {} of view \"{}\" reported state for an operator it does not run",
        snapshot.subtask, job.view
    ))
}

/// The state files of `snapshot`, taken by a subtask of `job`: the name and entries of
/// every operator with state, named as checkpoints name them wherever they are written.
pub fn operator_state_files<'a>(
    job: &Job,
    snapshot: &'a SubtaskSnapshot,
) -> Result<Vec<(String, &'a [StateEntry])>> {
    let (chain, subtask) = subtask_of(snapshot)?;
    let mut files = Vec::new();
    for (k, entries) in snapshot.operators.iter().enumerate() {
        if entries.is_empty() {
            continue;
        }
        let node = job
            .chain_operator(chain, k)
            .ok_or_else(|| not_run(job, snapshot))?;
        let name = StateFile::Operator {
            view: job.id,
            node,
            subtask,
        };
        files.push((name.name(), entries.as_slice()));
    }
    Ok(files)
}

/// The name checkpoints give file `file` of the RocksDB checkpoint of operator `k` of
/// the chain `snapshot` was taken in (see `Operator::snapshot_database`), wherever it is
/// written.
fn database_file_name(
    job: &Job,
    snapshot: &SubtaskSnapshot,
    k: usize,
    file: &str,
) -> Result<String> {
    let (chain, subtask) = subtask_of(snapshot)?;
    let node = job
        .chain_operator(chain, k)
        .ok_or_else(|| not_run(job, snapshot))?;
    Ok(StateFile::OperatorDb {
        view: job.id,
        node,
        subtask,
        file: file.to_string(),
    }
    .name())
}

/// SST files of spill stores uploaded to the checkpoint store: (store, file name) → where
/// the upload went.
pub type DatabaseUploads = HashMap<(String, String), StateFileRef>;

/// Uploads the files of the RocksDB checkpoint `database` of operator `k` of `snapshot`'s
/// chain to `store`, for the snapshot's checkpoint. A checkpoint references instead the
/// SST files `earlier` gives for the same store (uploads a checkpoint still kept holds);
/// a savepoint uploads them all, as it must be self-contained. Adds every SST file's
/// reference to `uploaded`; returns each file's name in checkpoints and its reference.
pub async fn upload_database(
    store: &CheckpointStore,
    job: &Job,
    snapshot: &SubtaskSnapshot,
    k: usize,
    database: &DbCheckpoint,
    earlier: impl Fn(&(String, String)) -> Option<StateFileRef>,
    uploaded: &mut DatabaseUploads,
) -> Result<Vec<(String, StateFileRef)>> {
    let incremental = snapshot.barrier.kind == BarrierKind::Checkpoint;
    let mut written = Vec::with_capacity(database.files.len());
    for file in &database.files {
        let name = database_file_name(job, snapshot, k, file)?;
        let key = (database.store.clone(), file.clone());
        let reference = match incremental.then(|| earlier(&key)).flatten() {
            Some(reference) => reference,
            None => {
                let path = database.dir.join(file);
                let bytes = tokio::fs::read(&path).await.map_err(|e| {
                    SluiceError::io(format!("reading {} to upload it", path.display()), e)
                })?;
                store
                    .put_state(snapshot.barrier.epoch, &name, bytes.into())
                    .await?
            }
        };
        if DbCheckpoint::is_immutable(file) {
            uploaded.insert(key, reference.clone());
        }
        written.push((name, reference));
    }
    Ok(written)
}

/// Checks that file `name`, which a worker wrote for checkpoint `epoch` as `file`, still
/// exists when the checkpoint commits: it lies in this checkpoint's directory, or one of
/// the newest completed checkpoints retention keeps (their paths are `committed`)
/// references it, so no prune has deleted it. A worker learns which checkpoint
/// completed from heartbeat replies, so it may reference the files of one that newer
/// commits have since let retention delete: that aborts this checkpoint (the next one is
/// taken with what the worker knows by then). Savepoints count like checkpoints here,
/// which may refuse a file that is still there, never accept one that is not.
fn check_reference(
    epoch: u64,
    committed: &BTreeMap<u64, HashSet<String>>,
    name: &str,
    file: &StateFileRef,
) -> Result<()> {
    if epoch_of_path(&file.path) == Some(epoch)
        || committed.values().any(|paths| paths.contains(&file.path))
    {
        return Ok(());
    }
    Err(SluiceError::internal(format!(
        "checkpoint {epoch} aborted: a worker gave {} for {name}, a file no kept checkpoint references, which retention may have deleted",
        file.path
    )))
}

/// Writes `entries` to `store` as file `name` of checkpoint `epoch`.
pub async fn put_entries(
    store: &CheckpointStore,
    epoch: u64,
    name: &str,
    entries: &[StateEntry],
) -> Result<StateFileRef> {
    let bytes = encode_entries(
        entries
            .iter()
            .map(|(g, k, v)| (*g, k.as_slice(), v.as_slice())),
    );
    store.put_state(epoch, name, bytes).await
}

/// Completes checkpoints: collects subtask snapshots, uploads them, commits metadata.
pub struct Checkpointer {
    store: CheckpointStore,
    inbox: SnapshotInbox,
    /// Snapshots from subtasks; one checkpoint at a time holds this lock.
    receiver: tokio::sync::Mutex<mpsc::UnboundedReceiver<SubtaskSnapshot>>,
    timeout: Duration,
    /// SST files of spill stores that the last completed checkpoint references, by
    /// (store, file name): the next checkpoint references them instead of uploading
    /// them again (see `sluice_state::spill`).
    uploaded: Mutex<DatabaseUploads>,
    /// The paths of every file the newest completed checkpoints (as many as retention
    /// keeps) reference, by epoch: the files of earlier checkpoints a new one may
    /// reference (see [`check_reference`]).
    committed: Mutex<BTreeMap<u64, HashSet<String>>>,
    /// Confirms, right before a checkpoint is committed, that this coordinator is still
    /// the active one (see `MetadataStore::confirm_active`).
    metadata: Arc<dyn MetadataStore>,
}

impl Checkpointer {
    pub fn new(
        store: CheckpointStore,
        timeout: Duration,
        metadata: Arc<dyn MetadataStore>,
    ) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Checkpointer {
            store,
            inbox: SnapshotInbox {
                sender,
                written: Arc::default(),
            },
            receiver: tokio::sync::Mutex::new(receiver),
            timeout,
            uploaded: Mutex::default(),
            committed: Mutex::default(),
            metadata,
        }
    }

    pub fn store(&self) -> &CheckpointStore {
        &self.store
    }

    /// Where deployed subtasks send their snapshots.
    pub fn sender(&self) -> mpsc::UnboundedSender<SubtaskSnapshot> {
        self.inbox.sender.clone()
    }

    /// Where workers' snapshots are delivered.
    pub fn inbox(&self) -> SnapshotInbox {
        self.inbox.clone()
    }

    /// Waits for every running job's snapshots of the in-flight checkpoint, uploads
    /// them, and commits the checkpoint. Fails (committing nothing) when a job stops
    /// before reporting, an upload fails, or the timeout passes.
    pub async fn complete(&self, flight: InFlight) -> Result<CheckpointMetadata> {
        let mut uploaded = HashMap::new();
        match self.take(flight, &mut uploaded).await {
            Ok(metadata) => {
                // Files of stores gone or compacted away are not referenced again.
                *self.uploaded.lock() = uploaded;
                let paths = metadata.files.values().map(|f| f.path.clone()).collect();
                let mut committed = self.committed.lock();
                committed.insert(metadata.epoch, paths);
                while committed.len() > self.store.retained() {
                    committed.pop_first();
                }
                drop(committed);
                Ok(metadata)
            }
            Err(e) => {
                // What an aborted checkpoint uploaded is deleted by a later commit:
                // never reference it.
                self.uploaded.lock().clear();
                Err(e)
            }
        }
    }

    /// [`Self::complete`], collecting in `uploaded` the SST files the checkpoint
    /// references.
    async fn take(
        &self,
        flight: InFlight,
        uploaded: &mut DatabaseUploads,
    ) -> Result<CheckpointMetadata> {
        let epoch = flight.epoch;
        let mut receiver = self.receiver.lock().await;
        // What workers wrote for aborted earlier checkpoints is never committed.
        self.inbox.written.lock().retain(|(e, _, _), _| *e >= epoch);
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut metadata = CheckpointMetadata {
            epoch,
            kind: flight.kind,
            started_at_ms: flight.started_at_ms,
            completed_at_ms: 0,
            alignment_ms: 0,
            files: BTreeMap::new(),
            properties: BTreeMap::new(),
        };
        for (table, position) in &flight.table_positions {
            metadata
                .properties
                .insert(format!("table/{table}"), position.to_string());
        }
        for (job, partitions) in &flight.finished {
            let status = match job.state() {
                JobState::Canceled => "canceled",
                _ => "finished",
            };
            record_job(&mut metadata, job, status);
            for (p, partition) in partitions.iter().enumerate() {
                let name = StateFile::Partition {
                    view: job.id,
                    partition: p,
                }
                .name();
                self.upload(&mut metadata, name, &partition.snapshot_state())
                    .await?;
            }
        }
        let mut waiting: BTreeSet<(u64, String)> = BTreeSet::new();
        for job in &flight.running {
            record_job(&mut metadata, job, "running");
            waiting.extend(job.subtask_ids.iter().map(|s| (job.id, s.clone())));
        }
        while !waiting.is_empty() {
            let snapshot = match tokio::time::timeout(POLL, receiver.recv()).await {
                Ok(Some(snapshot)) => snapshot,
                Ok(None) => return Err(SluiceError::internal("checkpoint channel closed")),
                Err(_) => {
                    self.check_progress(&flight, &waiting, deadline)?;
                    continue;
                }
            };
            // Reports of an aborted earlier checkpoint arrive late: skip them.
            if snapshot.barrier.epoch != epoch
                || !waiting.remove(&(snapshot.job, snapshot.subtask.clone()))
            {
                continue;
            }
            metadata.alignment_ms = metadata.alignment_ms.max(snapshot.alignment_ms);
            let job = flight
                .running
                .iter()
                .find(|j| j.id == snapshot.job)
                .expect("waited-for snapshots come from running jobs");
            for (name, entries) in operator_state_files(job, &snapshot)? {
                self.upload(&mut metadata, name, entries).await?;
            }
            for (k, database) in &snapshot.databases {
                let earlier = |key: &(String, String)| self.uploaded.lock().get(key).cloned();
                let written =
                    upload_database(&self.store, job, &snapshot, *k, database, earlier, uploaded)
                        .await?;
                metadata.files.extend(written);
            }
            if let Some((p, entries)) = &snapshot.sink {
                let name = StateFile::Partition {
                    view: job.id,
                    partition: *p,
                }
                .name();
                self.upload(&mut metadata, name, entries).await?;
            }
            let written =
                self.inbox
                    .written
                    .lock()
                    .remove(&(epoch, snapshot.job, snapshot.subtask.clone()));
            for (name, file) in written.into_iter().flatten() {
                check_reference(epoch, &self.committed.lock(), &name, &file)?;
                match StateFile::parse(&name) {
                    Some(StateFile::Operator { view, .. } | StateFile::OperatorDb { view, .. })
                        if view == job.id =>
                    {
                        metadata.files.insert(name, file);
                    }
                    _ => {
                        return Err(SluiceError::internal(format!(
                            "subtask {} of view \"{}\" wrote state file {name}, which is not its own",
                            snapshot.subtask, job.view
                        )));
                    }
                }
            }
            if let Some(position) = snapshot.position {
                let (chain, subtask) = subtask_of(&snapshot)?;
                let node = job
                    .chain_head(chain)
                    .ok_or_else(|| not_run(job, &snapshot))?;
                let name = StateFile::Operator {
                    view: job.id,
                    node,
                    subtask,
                }
                .name();
                metadata
                    .properties
                    .insert(format!("position/{name}"), position.to_string());
            }
        }
        metadata.completed_at_ms = now_ms();
        let active = self.metadata.clone();
        tokio::task::spawn_blocking(move || active.confirm_active())
            .await
            .map_err(|e| SluiceError::internal(format!("the leadership check stopped: {e}")))??;
        self.store.commit(&metadata).await?;
        Ok(metadata)
    }

    async fn upload(
        &self,
        metadata: &mut CheckpointMetadata,
        name: String,
        entries: &[StateEntry],
    ) -> Result<()> {
        let file = put_entries(&self.store, metadata.epoch, &name, entries).await?;
        metadata.files.insert(name, file);
        Ok(())
    }

    /// Fails when a job the checkpoint waits for can no longer report, or time is up.
    fn check_progress(
        &self,
        flight: &InFlight,
        waiting: &BTreeSet<(u64, String)>,
        deadline: tokio::time::Instant,
    ) -> Result<()> {
        for job in &flight.running {
            if !waiting.iter().any(|(id, _)| *id == job.id) {
                continue;
            }
            let state = job.state();
            if state != JobState::Running {
                return Err(SluiceError::new(
                    sluice_common::SqlState::QUERY_CANCELED,
                    format!(
                        "checkpoint {} aborted: the job of view \"{}\" is {} before reaching the barrier",
                        flight.epoch,
                        job.view,
                        state.name()
                    ),
                ));
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(SluiceError::new(
                sluice_common::SqlState::QUERY_CANCELED,
                format!(
                    "checkpoint {} aborted: {} subtasks had not reported after {:?}",
                    flight.epoch,
                    waiting.len(),
                    self.timeout
                ),
            ));
        }
        Ok(())
    }
}

/// Records in the checkpoint that `job` is in it (`running`, `finished` or `canceled`),
/// and its layout.
fn record_job(metadata: &mut CheckpointMetadata, job: &Job, state: &str) {
    let properties = &mut metadata.properties;
    properties.insert(format!("job/{}", job.id), state.to_string());
    properties.insert(
        format!("layout/{}", job.id),
        Layout::of(&job.graph).encode(),
    );
}

/// A stored checkpoint, decoded into what each view resumes from.
#[derive(Debug, Default)]
pub struct RestorePlan {
    pub epoch: u64,
    /// Table id → log position.
    pub table_positions: BTreeMap<u64, u64>,
    /// View id → its job's state.
    pub views: BTreeMap<u64, ViewRestore>,
}

/// What one view resumes from.
#[derive(Debug, Default)]
pub struct ViewRestore {
    /// Its job had finished: the partitions hold the final rows and nothing runs.
    pub finished: bool,
    /// Its job had been cancelled (its partitions hold the rows it had; nothing runs).
    pub canceled: bool,
    /// Partition index → rows.
    pub partitions: BTreeMap<usize, Vec<StateEntry>>,
    /// The job's operators and sources (table positions are filled in at deploy).
    pub job: JobRestore,
}

impl RestorePlan {
    /// Decodes a verified checkpoint. RocksDB checkpoints of spill stores are written to
    /// directories under `scratch` and opened there, for their operators to copy from.
    /// Fails (naming the file) on entries that do not decode or names this version does
    /// not write.
    pub fn decode(checkpoint: RestoredCheckpoint, scratch: &Path) -> Result<RestorePlan> {
        let mut plan = RestorePlan {
            epoch: checkpoint.metadata.epoch,
            ..RestorePlan::default()
        };
        let number = |key: &str, value: &str| -> Result<u64> {
            value.parse().map_err(|_| {
                SluiceError::corrupted(format!(
                    "checkpoint {} has a non-numeric property {key} = {value}",
                    plan.epoch
                ))
            })
        };
        for (key, value) in &checkpoint.metadata.properties {
            if let Some(table) = key.strip_prefix("table/") {
                plan.table_positions
                    .insert(number(key, table)?, number(key, value)?);
            } else if let Some(view) = key.strip_prefix("job/") {
                let restore = plan.views.entry(number(key, view)?).or_default();
                restore.finished = value == "finished" || value == "canceled";
                restore.canceled = value == "canceled";
            } else if let Some(view) = key.strip_prefix("layout/") {
                let layout = Layout::decode(value).ok_or_else(|| unknown(key))?;
                plan.views.entry(number(key, view)?).or_default().job.layout = Some(layout);
            } else if let Some(name) = key.strip_prefix("position/") {
                let Some(StateFile::Operator {
                    view,
                    node,
                    subtask,
                }) = StateFile::parse(name)
                else {
                    return Err(unknown(key));
                };
                plan.views
                    .entry(view)
                    .or_default()
                    .job
                    .positions
                    .insert((node, subtask), number(key, value)?);
            }
        }
        // (view, node, subtask) -> the files of that operator's RocksDB checkpoint.
        let mut databases: BTreeMap<(u64, usize, usize), Vec<DbFile<'_>>> = BTreeMap::new();
        for (name, bytes) in &checkpoint.files {
            if let Some(StateFile::OperatorDb {
                view,
                node,
                subtask,
                ..
            }) = StateFile::parse(name)
            {
                let file = name.rsplit('/').next().expect("parsed above");
                databases
                    .entry((view, node, subtask))
                    .or_default()
                    .push((file, bytes));
                continue;
            }
            let entries = decode_entries(bytes).map_err(|e| {
                SluiceError::corrupted(format!(
                    "state file {name} of checkpoint {}: {}",
                    plan.epoch, e.message
                ))
            })?;
            match StateFile::parse(name).ok_or_else(|| unknown(name))? {
                StateFile::Partition { view, partition } => {
                    let restore = plan.views.entry(view).or_default();
                    restore.partitions.insert(partition, entries);
                }
                StateFile::Operator {
                    view,
                    node,
                    subtask,
                } => plan.operator_state(view, node, subtask).extend(entries),
                StateFile::OperatorDb { .. } => unreachable!("handled above"),
            }
        }
        // Databases downloaded to disk (see `Self::downloads`), by their directory.
        let mut on_disk: BTreeMap<(u64, usize, usize), PathBuf> = BTreeMap::new();
        for (name, path) in &checkpoint.downloaded {
            let Some(StateFile::OperatorDb {
                view,
                node,
                subtask,
                ..
            }) = StateFile::parse(name)
            else {
                return Err(unknown(name));
            };
            let dir = path.parent().ok_or_else(|| unknown(name))?;
            on_disk.insert((view, node, subtask), dir.to_path_buf());
        }
        let opened = databases
            .into_iter()
            .map(|(at, files)| (at, RestoredDb::open(scratch, files)))
            .chain(
                on_disk
                    .into_iter()
                    .map(|(at, dir)| (at, RestoredDb::open_in_place(scratch, dir))),
            );
        for ((view, node, subtask), db) in opened {
            let db = db.map_err(|e| {
                SluiceError::corrupted(format!(
                    "the RocksDB state of node {node}, subtask {subtask} of view {view} in \
                     checkpoint {}: {}",
                    plan.epoch, e.message
                ))
            })?;
            let restore = plan.views.entry(view).or_default();
            restore.job.databases.insert((node, subtask), db);
        }
        for restore in plan.views.values_mut() {
            restore.job.epoch = plan.epoch;
        }
        Ok(plan)
    }

    /// How a restore into `scratch` reads checkpoints: the files of operators' RocksDB
    /// checkpoints are downloaded into files there (and opened where they lie), the
    /// rest into memory.
    pub fn downloads(scratch: &Path) -> Downloads<'_> {
        Downloads {
            dir: scratch,
            on_disk: |name| matches!(StateFile::parse(name), Some(StateFile::OperatorDb { .. })),
        }
    }

    /// The restored entries of node `node` in subtask `subtask` of view `view`.
    fn operator_state(&mut self, view: u64, node: usize, subtask: usize) -> &mut Vec<StateEntry> {
        let restore = self.views.entry(view).or_default();
        restore.job.operators.entry((node, subtask)).or_default()
    }
}

/// A file of a RocksDB checkpoint being restored: its name and contents.
type DbFile<'a> = (&'a str, &'a [u8]);

/// A state file of a checkpoint, by what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateFile {
    /// Operator node `node`'s state in subtask `subtask` of view (job) `view`.
    Operator {
        view: u64,
        node: usize,
        subtask: usize,
    },
    /// The rows of partition `partition` of view `view` (a sink's: its subtask's state).
    Partition { view: u64, partition: usize },
    /// File `file` of a RocksDB checkpoint of operator node `node`'s spill store in
    /// subtask `subtask` of view `view`.
    OperatorDb {
        view: u64,
        node: usize,
        subtask: usize,
        file: String,
    },
}

impl StateFile {
    pub fn name(&self) -> String {
        match self {
            StateFile::Operator {
                view,
                node,
                subtask,
            } => format!("mv-{view}/node-{node}/{subtask}"),
            StateFile::Partition { view, partition } => format!("mv-{view}/partition-{partition}"),
            StateFile::OperatorDb {
                view,
                node,
                subtask,
                file,
            } => format!("mv-{view}/node-{node}/{subtask}.db/{file}"),
        }
    }

    pub fn parse(name: &str) -> Option<StateFile> {
        let (view, rest) = name.strip_prefix("mv-")?.split_once('/')?;
        let view = view.parse().ok()?;
        if let Some(partition) = rest.strip_prefix("partition-") {
            return Some(StateFile::Partition {
                view,
                partition: partition.parse().ok()?,
            });
        }
        let (node, subtask) = rest.strip_prefix("node-")?.split_once('/')?;
        if let Some((subtask, file)) = subtask.split_once(".db/") {
            return Some(StateFile::OperatorDb {
                view,
                node: node.parse().ok()?,
                subtask: subtask.parse().ok()?,
                file: file.to_string(),
            });
        }
        Some(StateFile::Operator {
            view,
            node: node.parse().ok()?,
            subtask: subtask.parse().ok()?,
        })
    }
}

fn unknown(name: &str) -> SluiceError {
    SluiceError::corrupted(format!(
        "the checkpoint holds a state file or property \"{name}\" this version does not write"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_may_reference_only_files_of_this_checkpoint_or_of_a_kept_one() {
        let file = |path: &str| StateFileRef {
            path: path.to_string(),
            size: 1,
            crc32: 0,
        };
        let committed: BTreeMap<u64, HashSet<String>> = [(
            6,
            ["chk-00000000000000000005/mv-1/node-2/0.db/7.sst".into()].into(),
        )]
        .into();
        let name = "mv-1/node-2/0.db/7.sst";
        for path in [
            "chk-00000000000000000007/mv-1/node-2/0.db/7.sst",
            "chk-00000000000000000005/mv-1/node-2/0.db/7.sst",
        ] {
            assert!(
                check_reference(7, &committed, name, &file(path)).is_ok(),
                "{path}"
            );
        }
        // A file of checkpoint 4 that no kept checkpoint references: retention may have
        // deleted it.
        let stale = file("chk-00000000000000000004/mv-1/node-2/0.db/7.sst");
        let err = check_reference(7, &committed, name, &stale).unwrap_err();
        assert!(err.to_string().contains("checkpoint 7 aborted"), "{err}");
    }
}
