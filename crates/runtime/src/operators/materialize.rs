//! The end of a materialized view's dataflow: applies the view's changelog to keyed state
//! and passes the same changes on to the views that read this one.
//!
//! A view's result is a multiset of rows: state maps each distinct row (in Arrow's row
//! format) to how many times it is present. Insertions add one, retractions take one
//! away, a row whose count reaches zero is deleted. This is correct for every changelog
//! shape (append-only, retracting) without knowing the view's key.
//!
//! Subscribing (a downstream view starting) is atomic with respect to the changes: the
//! state update and the read of the subscriber list happen under one lock, so a new
//! subscriber sees each change either in its snapshot or as a message, never both or
//! neither.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int8Array, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use async_trait::async_trait;
use parking_lot::Mutex;
use sluice_common::error::{Result, SluiceError};
use sluice_state::{StateTable, StateWrite};
use tokio::sync::{mpsc, watch};

use crate::exchange::{Collector, channel};
use crate::keygroup::key_groups_of;
use crate::message::{Message, RowKind, changelog_schema, split_changelog};
use crate::operators::StateEntry;
use crate::operators::change_log::{ChangeLog, LoggedChanges};
use crate::operators::encoding::wall_clock_ms;

/// Rows per batch when reading a view's state.
const SCAN_BATCH_ROWS: usize = 8192;

/// How far a sink subtask has got: the last barrier it applied, and whether its input
/// has ended. FLUSH waits on this.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkProgress {
    pub epoch: u64,
    pub finished: bool,
}

/// A new reader of a view partition: the rows now, then every change after them.
pub struct Subscription {
    /// The partition's rows at subscription time, as insertions in the stream schema.
    pub snapshot: Vec<RecordBatch>,
    /// Barriers up to this epoch were applied before the snapshot; ignore them.
    pub after_epoch: u64,
    pub changes: mpsc::Receiver<Message>,
}

#[derive(Default)]
struct Subscribers {
    senders: Vec<mpsc::Sender<Message>>,
    last_epoch: u64,
    finished: bool,
    /// Set when the job maintaining this view failed: no more changes will come.
    failed: Option<String>,
    /// The log of changes, while a subscription reads the view.
    log: Option<ChangeLog>,
}

/// One partition (one sink subtask's share) of a materialized view's result.
pub struct ViewPartition {
    /// The view's columns (no op column).
    schema: SchemaRef,
    converter: RowConverter,
    /// Whether the stream into the view is a changelog (then subscribers get the op column).
    changelog: bool,
    key_groups: u16,
    /// The columns whose hash gives a row's key group: the key the view's rows are
    /// routed to partitions by.
    key_columns: Vec<usize>,
    state: Arc<dyn StateTable>,
    subscribers: Mutex<Subscribers>,
}

impl ViewPartition {
    /// A partition storing its rows in `state`, each under the key group of its
    /// `key_columns` (every column when `None`).
    pub fn new(
        schema: SchemaRef,
        changelog: bool,
        key_groups: u16,
        key_columns: Option<Vec<usize>>,
        state: Arc<dyn StateTable>,
    ) -> Result<Arc<Self>> {
        let key_columns = key_columns.unwrap_or_else(|| (0..schema.fields().len()).collect());
        let fields = schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(Arc::new(ViewPartition {
            converter: RowConverter::new(fields)?,
            schema,
            changelog,
            key_groups,
            key_columns,
            state,
            subscribers: Mutex::new(Subscribers::default()),
        }))
    }

    /// The schema of the change stream subscribers receive.
    pub fn stream_schema(&self) -> SchemaRef {
        if self.changelog {
            changelog_schema(&self.schema)
        } else {
            self.schema.clone()
        }
    }

    /// The row format of this partition's rows.
    pub fn converter(&self) -> &RowConverter {
        &self.converter
    }

    /// The view's columns.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Applies a batch of changes (append-only or with the op column) and passes it on to
    /// the subscribers, waiting for room in their channels (backpressure). Callers must
    /// not write concurrently: changes must reach subscribers in the order they applied.
    pub async fn write(&self, batch: RecordBatch) -> Result<()> {
        let targets = self.apply(&batch)?;
        self.forward(targets, Message::Batch(batch)).await;
        Ok(())
    }

    /// Passes a watermark, barrier or end of stream on to the subscribers.
    pub async fn write_control(&self, message: Message) {
        let targets = self.forward_targets(&message);
        self.forward(targets, message).await;
    }

    async fn forward(&self, targets: Vec<mpsc::Sender<Message>>, message: Message) {
        let mut lost = false;
        for target in targets {
            // A closed channel is a downstream view that was dropped; forget it.
            lost |= target.send(message.clone()).await.is_err();
        }
        if lost {
            self.remove_closed_subscribers();
        }
    }

    /// The rows of this partition now (each as many times as it is present).
    pub fn scan(&self) -> Result<Vec<RecordBatch>> {
        let entries = self.state.scan(None);
        self.rows_to_batches(entries, false)
    }

    /// Number of distinct rows in state, for tests and metrics.
    pub fn state_entries(&self) -> usize {
        self.state.len()
    }

    /// The partition's state (row → count), for a checkpoint.
    pub fn snapshot_state(&self) -> Vec<StateEntry> {
        self.state.scan(None)
    }

    /// Replaces nothing, adds `entries` (taken by [`Self::snapshot_state`]) to an empty
    /// partition before its job starts.
    /// Restores checkpointed rows into this (empty) partition. Entries of one row add up:
    /// an append-only view can hold the same row in several partitions, which a restore
    /// at another parallelism may bring together.
    pub fn restore_state(&self, entries: Vec<StateEntry>) -> Result<()> {
        if !self.state.is_empty() {
            return Err(SluiceError::internal(
                "restoring a view partition that already holds rows",
            ));
        }
        let mut counts: HashMap<(u16, Vec<u8>), i64> = HashMap::with_capacity(entries.len());
        for (key_group, key, value) in entries {
            *counts.entry((key_group, key)).or_insert(0) += decode_count(&value)?;
        }
        self.state.write(
            counts
                .into_iter()
                .map(|((key_group, key), count)| StateWrite::Put {
                    key_group,
                    key,
                    value: count.to_le_bytes().to_vec(),
                })
                .collect(),
        );
        Ok(())
    }

    /// Empties the partition and forgets its readers and its failure, for a job that
    /// restarts from the checkpoint of `restored_epoch` (from scratch when `None`): its
    /// new deployment restores the partition and its readers subscribe again. The change
    /// log forgets what the job will apply again. The old job must have stopped.
    pub fn reset(&self, restored_epoch: Option<u64>) {
        let mut subs = self.subscribers.lock();
        subs.senders.clear();
        subs.finished = false;
        subs.failed = None;
        if let Some(log) = &mut subs.log {
            log.truncate_after(restored_epoch);
        }
        let deletes = self
            .state
            .scan(None)
            .into_iter()
            .map(|(key_group, key, _)| StateWrite::Delete { key_group, key })
            .collect();
        self.state.write(deletes);
    }

    /// Starts logging changes for subscriptions, keeping them `retention_ms`; `None`
    /// stops and forgets the log (the view's last subscription was dropped).
    pub fn retain_changes(&self, retention_ms: Option<i64>) {
        let mut subs = self.subscribers.lock();
        match (retention_ms, &mut subs.log) {
            (None, log) => *log = None,
            (Some(ms), Some(log)) => log.set_retention(ms),
            (Some(ms), log) => *log = Some(ChangeLog::new(ms)),
        }
    }

    /// The last epoch whose changes are all applied (every epoch once the input ended).
    pub fn readable_epoch(&self) -> u64 {
        let subs = self.subscribers.lock();
        if subs.finished {
            u64::MAX - 1
        } else {
            subs.last_epoch
        }
    }

    /// The logged changes of the epochs `from..=through`, and the last epoch the log no
    /// longer holds. Fails when the partition logs no changes.
    pub fn read_changes(&self, from: u64, through: u64) -> Result<(Vec<LoggedChanges>, u64)> {
        let mut subs = self.subscribers.lock();
        let log = trimmed_log(&mut subs)?;
        Ok((log.read(from, through), log.dropped_through()))
    }

    /// The first logged epoch applied at or after `time_ms`, and when the last epoch the
    /// log no longer holds was applied.
    pub fn first_epoch_since(&self, time_ms: i64) -> Result<(Option<u64>, Option<i64>)> {
        let mut subs = self.subscribers.lock();
        let log = trimmed_log(&mut subs)?;
        Ok((log.first_epoch_since(time_ms), log.dropped_time()))
    }

    /// The last epoch the log no longer holds (0: none).
    pub fn changes_dropped_through(&self) -> Result<u64> {
        let mut subs = self.subscribers.lock();
        Ok(trimmed_log(&mut subs)?.dropped_through())
    }

    /// Marks a restored partition as complete: its job had finished before the
    /// checkpoint, so readers get its rows and then the end of the stream.
    pub fn mark_finished(&self) {
        self.subscribers.lock().finished = true;
    }

    fn rows_to_batches(
        &self,
        entries: Vec<(u16, Vec<u8>, Vec<u8>)>,
        with_ops: bool,
    ) -> Result<Vec<RecordBatch>> {
        let converter = &self.converter;
        let parser = converter.parser();
        let mut keys: Vec<&[u8]> = Vec::new();
        for (_, key, value) in &entries {
            for _ in 0..decode_count(value)? {
                keys.push(key);
            }
        }
        let mut batches = Vec::new();
        for chunk in keys.chunks(SCAN_BATCH_ROWS) {
            let mut columns: Vec<ArrayRef> =
                converter.convert_rows(chunk.iter().map(|k| parser.parse(k)))?;
            let schema = if with_ops {
                columns.push(Arc::new(Int8Array::from(vec![
                    RowKind::Insert as i8;
                    chunk.len()
                ])));
                changelog_schema(&self.schema)
            } else {
                self.schema.clone()
            };
            batches.push(RecordBatch::try_new(schema, columns)?);
        }
        Ok(batches)
    }

    /// Marks the view as no longer maintained (its job failed) and closes every
    /// subscriber's channel, so the views reading it fail too instead of waiting forever.
    pub fn fail(&self, error: &str) {
        let mut subs = self.subscribers.lock();
        subs.failed = Some(error.to_string());
        subs.senders.clear();
    }

    /// Starts reading this partition's changes; see [`Subscription`]. Fails when the
    /// view's job has failed.
    pub fn subscribe(&self) -> Result<Subscription> {
        self.subscribe_with(true)
    }

    /// Starts reading only the changes from now on, without the current rows: for a
    /// reader restored from the same checkpoint as this partition, whose state already
    /// reflects them.
    pub fn subscribe_changes(&self) -> Result<Subscription> {
        self.subscribe_with(false)
    }

    fn subscribe_with(&self, with_snapshot: bool) -> Result<Subscription> {
        let (tx, rx) = channel();
        let mut subs = self.subscribers.lock();
        if let Some(error) = &subs.failed {
            return Err(SluiceError::new(
                sluice_common::SqlState::DATA_EXCEPTION,
                format!(
                    "the materialized view it reads has failed ({error}); drop and recreate that view"
                ),
            ));
        }
        let snapshot = if with_snapshot {
            self.rows_to_batches(self.state.scan(None), self.changelog)?
        } else {
            Vec::new()
        };
        if subs.finished {
            tx.try_send(Message::EndOfStream)
                .expect("a new channel has room");
        } else {
            subs.senders.push(tx);
        }
        Ok(Subscription {
            snapshot,
            after_epoch: subs.last_epoch,
            changes: rx,
        })
    }

    /// Applies a changelog batch to state; returns the subscribers to forward it to.
    fn apply(&self, batch: &RecordBatch) -> Result<Vec<mpsc::Sender<Message>>> {
        let (data, ops) = split_changelog(batch);
        let rows = self.converter.convert_columns(data.columns())?;
        let groups = key_groups_of(&data, &self.key_columns, self.key_groups)?;
        // Net change per distinct row, so a -U/+U pair of the same row costs nothing.
        let mut deltas: HashMap<(u16, &[u8]), i64> = HashMap::new();
        for (i, row) in rows.iter().enumerate() {
            let d = if RowKind::is_addition(ops.value(i)) {
                1
            } else {
                -1
            };
            *deltas.entry((groups[i], row.data())).or_default() += d;
        }
        let mut subs = self.subscribers.lock();
        let mut writes = Vec::with_capacity(deltas.len());
        for ((key_group, key), delta) in deltas {
            if delta == 0 {
                continue;
            }
            let current = match self.state.get(key_group, key) {
                Some(v) => decode_count(&v)?,
                None => 0,
            };
            let count = current + delta;
            if count < 0 {
                return Err(SluiceError::internal(
                    "a materialized view received a retraction of a row it does not hold",
                ));
            }
            writes.push(if count == 0 {
                StateWrite::Delete {
                    key_group,
                    key: key.to_vec(),
                }
            } else {
                StateWrite::Put {
                    key_group,
                    key: key.to_vec(),
                    value: count.to_le_bytes().to_vec(),
                }
            });
        }
        self.state.write(writes);
        if let Some(log) = &mut subs.log {
            log.record(self.with_ops(batch)?);
        }
        Ok(subs.senders.clone())
    }

    /// `batch` with the op column (all insertions when the view is append-only).
    fn with_ops(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        if self.changelog {
            return Ok(batch.clone());
        }
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(Int8Array::from(vec![
            RowKind::Insert as i8;
            batch.num_rows()
        ])));
        Ok(RecordBatch::try_new(
            changelog_schema(&self.schema),
            columns,
        )?)
    }

    fn forward_targets(&self, message: &Message) -> Vec<mpsc::Sender<Message>> {
        let mut subs = self.subscribers.lock();
        match message {
            Message::Barrier(b) => {
                subs.last_epoch = b.epoch;
                if let Some(log) = &mut subs.log {
                    log.close_epoch(b.epoch, wall_clock_ms());
                }
            }
            Message::EndOfStream => {
                subs.finished = true;
                let last = subs.last_epoch + 1;
                if let Some(log) = &mut subs.log {
                    log.close_epoch(last, wall_clock_ms());
                }
            }
            _ => {}
        }
        subs.senders.clone()
    }

    fn remove_closed_subscribers(&self) {
        self.subscribers.lock().senders.retain(|s| !s.is_closed());
    }
}

/// The partition's change log, without the epochs older than its retention.
fn trimmed_log(subs: &mut Subscribers) -> Result<&ChangeLog> {
    let log = subs.log.as_mut().ok_or_else(|| {
        SluiceError::internal("the view keeps no change log (it has no subscription)")
    })?;
    log.trim(wall_clock_ms());
    Ok(log)
}

fn decode_count(value: &[u8]) -> Result<i64> {
    let bytes: [u8; 8] = value
        .try_into()
        .map_err(|_| SluiceError::internal("corrupt row count in view state"))?;
    Ok(i64::from_le_bytes(bytes))
}

/// The sink subtask of a materialized view.
pub struct MaterializeSink {
    partition: Arc<ViewPartition>,
    /// Which partition of the view this is.
    index: usize,
    progress: watch::Sender<SinkProgress>,
}

impl MaterializeSink {
    pub fn new(
        partition: Arc<ViewPartition>,
        index: usize,
        progress: watch::Sender<SinkProgress>,
    ) -> Self {
        MaterializeSink {
            partition,
            index,
            progress,
        }
    }
}

#[async_trait]
impl Collector for MaterializeSink {
    async fn collect(&mut self, message: Message) -> Result<()> {
        match message {
            Message::Batch(batch) => self.partition.write(batch).await?,
            Message::Barrier(barrier) => {
                self.partition
                    .write_control(Message::Barrier(barrier))
                    .await;
                self.progress
                    .send_modify(|p| p.epoch = p.epoch.max(barrier.epoch));
            }
            Message::EndOfStream => {
                self.partition.write_control(Message::EndOfStream).await;
                self.progress.send_modify(|p| p.finished = true);
            }
            Message::Watermark(w) => self.partition.write_control(Message::Watermark(w)).await,
        }
        Ok(())
    }

    fn snapshot_state(&mut self) -> Result<Option<(usize, Vec<StateEntry>)>> {
        Ok(Some((self.index, self.partition.snapshot_state())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{BarrierKind, CheckpointBarrier};
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use sluice_state::{MemoryStateBackend, StateBackend};

    fn changes(values: Vec<i64>, ops: Vec<RowKind>) -> RecordBatch {
        let schema = changelog_schema(&Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(values)),
                Arc::new(Int8Array::from(
                    ops.into_iter().map(|o| o as i8).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap()
    }

    fn sorted_values(batches: &[RecordBatch]) -> Vec<i64> {
        let mut v: Vec<i64> = batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn restored_copies_of_one_row_add_up() {
        // Two old partitions of an append-only view held the row 1 (twice and three
        // times); a restore at another parallelism brings both entries to one partition.
        let backend = MemoryStateBackend::new();
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        let from =
            ViewPartition::new(schema.clone(), false, 128, None, backend.table("a")).unwrap();
        let (progress, _) = watch::channel(SinkProgress::default());
        let mut sink = MaterializeSink::new(from.clone(), 0, progress);
        sink.collect(Message::Batch(changes(
            vec![1, 1],
            vec![RowKind::Insert; 2],
        )))
        .await
        .unwrap();
        let twice = from.snapshot_state();
        let mut thrice = twice.clone();
        thrice[0].2 = 3i64.to_le_bytes().to_vec();
        let to = ViewPartition::new(schema, false, 128, None, backend.table("b")).unwrap();
        to.restore_state(twice.into_iter().chain(thrice).collect())
            .unwrap();
        let rows = to.subscribe().unwrap().snapshot;
        assert_eq!(sorted_values(&rows), vec![1, 1, 1, 1, 1]);
    }

    #[tokio::test]
    async fn view_state_is_the_multiset_of_applied_changes_and_subscribers_see_each_change_once() {
        let backend = MemoryStateBackend::new();
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        let partition = ViewPartition::new(schema, true, 128, None, backend.table("mv")).unwrap();
        let (progress_tx, progress_rx) = watch::channel(SinkProgress::default());
        let mut sink = MaterializeSink::new(partition.clone(), 0, progress_tx);

        sink.collect(Message::Batch(changes(
            vec![1, 1, 2],
            vec![RowKind::Insert; 3],
        )))
        .await
        .unwrap();
        let mut early = partition.subscribe().unwrap();
        assert_eq!(sorted_values(&early.snapshot), vec![1, 1, 2]);

        sink.collect(Message::Batch(changes(
            vec![1, 3, 2, 2],
            vec![
                RowKind::Delete,
                RowKind::Insert,
                RowKind::UpdateBefore,
                RowKind::UpdateAfter,
            ],
        )))
        .await
        .unwrap();
        sink.collect(Message::Barrier(CheckpointBarrier {
            epoch: 4,
            kind: BarrierKind::Flush,
        }))
        .await
        .unwrap();
        assert_eq!(sorted_values(&partition.scan().unwrap()), vec![1, 2, 3]);
        assert_eq!(progress_rx.borrow().epoch, 4);

        let Message::Batch(b) = early.changes.recv().await.unwrap() else {
            panic!()
        };
        assert_eq!(b.num_rows(), 4);
        assert!(matches!(
            early.changes.recv().await.unwrap(),
            Message::Barrier(_)
        ));

        let late = partition.subscribe().unwrap();
        assert_eq!(late.after_epoch, 4);
        assert_eq!(sorted_values(&late.snapshot), vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn retracting_a_row_that_is_not_there_is_an_error() {
        let backend = MemoryStateBackend::new();
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        let partition = ViewPartition::new(schema, true, 128, None, backend.table("mv")).unwrap();
        let (tx, _rx) = watch::channel(SinkProgress::default());
        let mut sink = MaterializeSink::new(partition, 0, tx);
        assert!(
            sink.collect(Message::Batch(changes(vec![7], vec![RowKind::Delete])))
                .await
                .is_err()
        );
    }
}
