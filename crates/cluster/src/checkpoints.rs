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
//! Names in the store, per view (job) id `v`:
//! - `mv-v/{chain}-{subtask}/op-{k}`: operator `k` of a subtask's chain (when not empty);
//! - `mv-v/partition-{p}`: the rows of the view's partition `p`.
//!
//! Properties: `table/{id}` = the table's log position at the barrier; `job/{v}` =
//! `running` or `finished`; `position/mv-v/{chain}-{subtask}` = a source's position.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_common::error::{Result, SluiceError};
use sluice_runtime::operators::StateEntry;
use sluice_runtime::operators::materialize::ViewPartition;
use sluice_runtime::task::SubtaskSnapshot;
use sluice_state::checkpoint::{
    CheckpointKind, CheckpointMetadata, CheckpointStore, RestoredCheckpoint,
};
use sluice_state::snapshot::{decode_entries, encode_entries};
use tokio::sync::mpsc;

use crate::job::{Job, JobRestore, JobState};

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
    /// Jobs that had finished: their views' rows are taken as they are.
    pub finished: Vec<(u64, Vec<Arc<ViewPartition>>)>,
}

/// Completes checkpoints: collects subtask snapshots, uploads them, commits metadata.
pub struct Checkpointer {
    store: CheckpointStore,
    sender: mpsc::UnboundedSender<SubtaskSnapshot>,
    /// Snapshots from subtasks; one checkpoint at a time holds this lock.
    receiver: tokio::sync::Mutex<mpsc::UnboundedReceiver<SubtaskSnapshot>>,
    timeout: Duration,
}

impl Checkpointer {
    pub fn new(store: CheckpointStore, timeout: Duration) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Checkpointer {
            store,
            sender,
            receiver: tokio::sync::Mutex::new(receiver),
            timeout,
        }
    }

    pub fn store(&self) -> &CheckpointStore {
        &self.store
    }

    /// Where deployed subtasks send their snapshots.
    pub fn sender(&self) -> mpsc::UnboundedSender<SubtaskSnapshot> {
        self.sender.clone()
    }

    /// Waits for every running job's snapshots of the in-flight checkpoint, uploads
    /// them, and commits the checkpoint. Fails (committing nothing) when a job stops
    /// before reporting, an upload fails, or the timeout passes.
    pub async fn complete(&self, flight: InFlight) -> Result<CheckpointMetadata> {
        let epoch = flight.epoch;
        let mut receiver = self.receiver.lock().await;
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
        for (view, partitions) in &flight.finished {
            metadata
                .properties
                .insert(format!("job/{view}"), "finished".into());
            for (p, partition) in partitions.iter().enumerate() {
                let name = format!("mv-{view}/partition-{p}");
                self.upload(&mut metadata, name, &partition.snapshot_state())
                    .await?;
            }
        }
        let mut waiting: BTreeSet<(u64, String)> = BTreeSet::new();
        for job in &flight.running {
            metadata
                .properties
                .insert(format!("job/{}", job.id), "running".into());
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
            let prefix = format!("mv-{}/{}", snapshot.job, snapshot.subtask);
            for (k, entries) in snapshot.operators.iter().enumerate() {
                if !entries.is_empty() {
                    self.upload(&mut metadata, format!("{prefix}/op-{k}"), entries)
                        .await?;
                }
            }
            if let Some((p, entries)) = &snapshot.sink {
                let name = format!("mv-{}/partition-{p}", snapshot.job);
                self.upload(&mut metadata, name, entries).await?;
            }
            if let Some(position) = snapshot.position {
                metadata
                    .properties
                    .insert(format!("position/{prefix}"), position.to_string());
            }
        }
        metadata.completed_at_ms = now_ms();
        self.store.commit(&metadata).await?;
        Ok(metadata)
    }

    async fn upload(
        &self,
        metadata: &mut CheckpointMetadata,
        name: String,
        entries: &[StateEntry],
    ) -> Result<()> {
        let bytes = encode_entries(
            entries
                .iter()
                .map(|(g, k, v)| (*g, k.as_slice(), v.as_slice())),
        );
        let file = self.store.put_state(metadata.epoch, &name, bytes).await?;
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
    /// Partition index → rows.
    pub partitions: BTreeMap<usize, Vec<StateEntry>>,
    /// The job's operators and sources (table positions are filled in at deploy).
    pub job: JobRestore,
}

impl RestorePlan {
    /// Decodes a verified checkpoint. Fails (naming the file) on entries that do not
    /// decode or names this version does not write.
    pub fn decode(checkpoint: RestoredCheckpoint) -> Result<RestorePlan> {
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
                plan.views.entry(number(key, view)?).or_default().finished = value == "finished";
            } else if let Some(rest) = key.strip_prefix("position/mv-") {
                let (view, subtask) = split_view(rest, key)?;
                plan.views
                    .entry(view)
                    .or_default()
                    .job
                    .positions
                    .insert(subtask.to_string(), number(key, value)?);
            }
        }
        for (name, bytes) in &checkpoint.files {
            let entries = decode_entries(bytes).map_err(|e| {
                SluiceError::corrupted(format!(
                    "state file {name} of checkpoint {}: {}",
                    plan.epoch, e.message
                ))
            })?;
            let rest = name.strip_prefix("mv-").ok_or_else(|| unknown(name))?;
            let (view, rest) = split_view(rest, name)?;
            let restore = plan.views.entry(view).or_default();
            if let Some(p) = rest.strip_prefix("partition-") {
                let p: usize = p.parse().map_err(|_| unknown(name))?;
                restore.partitions.insert(p, entries);
            } else {
                let (subtask, op) = rest.split_once("/op-").ok_or_else(|| unknown(name))?;
                let op: usize = op.parse().map_err(|_| unknown(name))?;
                let ops = restore
                    .job
                    .operators
                    .entry(subtask.to_string())
                    .or_default();
                if ops.len() <= op {
                    ops.resize_with(op + 1, Vec::new);
                }
                ops[op] = entries;
            }
        }
        for restore in plan.views.values_mut() {
            restore.job.epoch = plan.epoch;
        }
        Ok(plan)
    }
}

fn split_view<'a>(rest: &'a str, name: &str) -> Result<(u64, &'a str)> {
    let (view, rest) = rest.split_once('/').ok_or_else(|| unknown(name))?;
    Ok((view.parse().map_err(|_| unknown(name))?, rest))
}

fn unknown(name: &str) -> SluiceError {
    SluiceError::corrupted(format!(
        "the checkpoint holds a state file or property \"{name}\" this version does not write"
    ))
}
