//! The interface between a sink connector and the runtime: [`SinkWriter`], and the
//! [`SinkOutput`] collector that ends a sink's dataflow.
//!
//! A sink receives its query's changelog: append-only batches, or batches with the op
//! column when the query updates. Exactly-once sinks follow Flink's two-phase commit:
//! at each checkpoint barrier the writer pre-commits what it wrote since the previous one
//! (flushes, prepares a transaction) and returns the state a restart needs; once the
//! checkpoint is complete, the coordinator calls [`SinkWriter::commit`] with its epoch and
//! the writer makes the pre-committed writes visible. A job that fails before the commit
//! restarts from the previous checkpoint, so the writes of the failed epoch are aborted
//! and written again.
//!
//! [`SinkOutput`] also counts what each sink received, with an order-independent
//! checksum of the rows: additions add their hash, retractions subtract it, so the
//! checksum of a changelog equals [`rows_checksum`] of the multiset it leaves. The counts
//! are part of the sink's checkpointed state, so they are exactly-once too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, ArrayRef, RecordBatch};
use async_trait::async_trait;
use datafusion::common::hash_utils::{RandomState, create_hashes};
use sluice_common::error::{Result, SluiceError};
use tokio::sync::watch;

use crate::exchange::Collector;
use crate::message::{CheckpointBarrier, Message, RowKind, split_changelog};
use crate::operators::StateEntry;
use crate::operators::materialize::SinkProgress;

/// Writes one subtask's share of a sink's changelog to an external system.
#[async_trait]
pub trait SinkWriter: Send {
    /// Writes a batch of changes: the query's columns, followed by the op column when
    /// the query's output is a changelog.
    async fn write(&mut self, batch: RecordBatch) -> Result<()>;

    /// Barrier `barrier` passed: everything written since the previous barrier belongs
    /// to its epoch. A checkpoint barrier pre-commits it (the first phase); a FLUSH
    /// barrier only asks for what was written to reach the external system.
    async fn barrier(&mut self, barrier: CheckpointBarrier) -> Result<()>;

    /// The writer's state at the last barrier (pending transactions, for example), for
    /// the checkpoint.
    fn snapshot_state(&mut self) -> Result<Vec<StateEntry>> {
        Ok(Vec::new())
    }

    /// Restores state taken by [`Self::snapshot_state`], before the first write: a
    /// transactional writer commits or aborts what the checkpoint left pending here.
    fn restore_state(&mut self, entries: Vec<StateEntry>) -> Result<()> {
        if entries.is_empty() {
            Ok(())
        } else {
            Err(SluiceError::internal(
                "this sink keeps no state, but the checkpoint holds some for it",
            ))
        }
    }

    /// Checkpoint `epoch` is complete: make what was pre-committed up to it visible
    /// (the second phase). Called at most once per epoch, after its barrier.
    async fn commit(&mut self, epoch: u64) -> Result<()>;

    /// The input ended: write out anything still buffered.
    async fn finish(&mut self) -> Result<()>;
}

/// A sink subtask's writer, shared between its task and the coordinator's commits.
pub type SharedSinkWriter = Arc<tokio::sync::Mutex<Box<dyn SinkWriter>>>;

/// What one sink subtask received, readable while it runs (`SHOW SINKS`).
#[derive(Debug, Default)]
pub struct SinkMetrics {
    /// Rows added (+I, +U).
    pub inserts: AtomicU64,
    /// Rows retracted (-D, -U).
    pub deletes: AtomicU64,
    /// Wrapping sum of the hashes of added rows minus those of retracted rows.
    pub checksum: AtomicU64,
    /// The last checkpoint whose commit the writer completed.
    pub committed_epoch: AtomicU64,
}

impl SinkMetrics {
    /// Adds the counts of one more batch.
    fn add(&self, counts: SinkCounts) {
        self.inserts.fetch_add(counts.inserts, Ordering::Relaxed);
        self.deletes.fetch_add(counts.deletes, Ordering::Relaxed);
        // Atomic additions wrap, as the checksum's do.
        self.checksum.fetch_add(counts.checksum, Ordering::Relaxed);
    }
}

/// A snapshot of [`SinkMetrics`], summed over a sink's subtasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkCounts {
    pub inserts: u64,
    pub deletes: u64,
    pub checksum: u64,
}

impl SinkCounts {
    /// The counts of one subtask's metrics.
    pub fn of(metrics: &SinkMetrics) -> SinkCounts {
        SinkCounts {
            inserts: metrics.inserts.load(Ordering::Relaxed),
            deletes: metrics.deletes.load(Ordering::Relaxed),
            checksum: metrics.checksum.load(Ordering::Relaxed),
        }
    }

    /// These counts and `other`'s together.
    pub fn plus(self, other: SinkCounts) -> SinkCounts {
        SinkCounts {
            inserts: self.inserts + other.inserts,
            deletes: self.deletes + other.deletes,
            checksum: self.checksum.wrapping_add(other.checksum),
        }
    }

    /// Rows the changelog leaves: insertions minus retractions.
    pub fn rows(&self) -> i64 {
        self.inserts as i64 - self.deletes as i64
    }

    fn store(&self, metrics: &SinkMetrics) {
        metrics.inserts.store(self.inserts, Ordering::Relaxed);
        metrics.deletes.store(self.deletes, Ordering::Relaxed);
        metrics.checksum.store(self.checksum, Ordering::Relaxed);
    }

    fn encode(&self) -> Vec<u8> {
        [self.inserts, self.deletes, self.checksum]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    fn decode(bytes: &[u8]) -> Result<SinkCounts> {
        let corrupt = || SluiceError::internal("corrupt sink counts in a checkpoint");
        if bytes.len() != 24 {
            return Err(corrupt());
        }
        let word = |i: usize| -> Result<u64> {
            Ok(u64::from_le_bytes(
                bytes[i * 8..i * 8 + 8].try_into().map_err(|_| corrupt())?,
            ))
        };
        Ok(SinkCounts {
            inserts: word(0)?,
            deletes: word(1)?,
            checksum: word(2)?,
        })
    }
}

/// The hash of every row of `columns`, the same in every process and build of Sluice.
fn row_hashes(columns: &[ArrayRef], num_rows: usize) -> Result<Vec<u64>> {
    let mut hashes = vec![0u64; num_rows];
    if !columns.is_empty() {
        create_hashes(columns, &RandomState::with_seed(0x5_1u64), &mut hashes)?;
    }
    Ok(hashes)
}

/// The counts of one changelog batch (op column last when `changelog`).
pub fn changelog_counts(batch: &RecordBatch) -> Result<SinkCounts> {
    let (data, ops) = split_changelog(batch);
    let hashes = row_hashes(data.columns(), data.num_rows())?;
    let mut counts = SinkCounts::default();
    // Per row: adding or subtracting a hash is the fold itself, no kernel does it.
    for (i, hash) in hashes.into_iter().enumerate() {
        if RowKind::is_addition(ops.value(i)) {
            counts.inserts += 1;
            counts.checksum = counts.checksum.wrapping_add(hash);
        } else {
            counts.deletes += 1;
            counts.checksum = counts.checksum.wrapping_sub(hash);
        }
    }
    debug_assert_eq!(ops.null_count(), 0);
    Ok(counts)
}

/// The checksum [`SinkMetrics::checksum`] has after a sink received exactly `batches`
/// (no op column) as insertions: what a sink's checksum is compared with.
pub fn rows_checksum(batches: &[RecordBatch]) -> Result<u64> {
    let mut sum = 0u64;
    for batch in batches {
        sum = sum.wrapping_add(changelog_counts(batch)?.checksum);
    }
    Ok(sum)
}

/// The key of the counts in a sink's checkpointed state; the writer's keys follow
/// [`WRITER_KEY_PREFIX`].
const COUNTS_KEY: &[u8] = b"c";
const WRITER_KEY_PREFIX: u8 = b'w';

/// The end of a sink's dataflow: counts the changes into its [`SinkMetrics`] (which it
/// alone writes, and which its checkpoint state holds), passes them to the writer, and
/// reports barriers (FLUSH waits on them) and the end of input.
pub struct SinkOutput {
    writer: SharedSinkWriter,
    metrics: Arc<SinkMetrics>,
    /// Which subtask of the sink this is.
    index: usize,
    progress: watch::Sender<SinkProgress>,
}

impl SinkOutput {
    pub fn new(
        writer: SharedSinkWriter,
        metrics: Arc<SinkMetrics>,
        index: usize,
        progress: watch::Sender<SinkProgress>,
    ) -> Self {
        SinkOutput {
            writer,
            metrics,
            index,
            progress,
        }
    }

    /// Restores the counts and the writer's state from a checkpoint (entries taken by
    /// [`Collector::snapshot_state`]), before the subtask starts.
    pub fn restore_state(&mut self, entries: Vec<StateEntry>) -> Result<()> {
        let mut writer_entries = Vec::new();
        for (key_group, key, value) in entries {
            if key == COUNTS_KEY {
                SinkCounts::decode(&value)?.store(&self.metrics);
            } else if key.first() == Some(&WRITER_KEY_PREFIX) {
                writer_entries.push((key_group, key[1..].to_vec(), value));
            } else {
                return Err(SluiceError::internal("unknown key in a sink's checkpoint"));
            }
        }
        self.writer
            .try_lock()
            .map_err(|_| SluiceError::internal("restoring a sink writer that is in use"))?
            .restore_state(writer_entries)
    }
}

#[async_trait]
impl Collector for SinkOutput {
    async fn collect(&mut self, message: Message) -> Result<()> {
        match message {
            Message::Batch(batch) => {
                let counts = changelog_counts(&batch)?;
                self.writer.lock().await.write(batch).await?;
                self.metrics.add(counts);
            }
            Message::Barrier(barrier) => {
                self.writer.lock().await.barrier(barrier).await?;
                self.progress
                    .send_modify(|p| p.epoch = p.epoch.max(barrier.epoch));
            }
            Message::EndOfStream => {
                self.writer.lock().await.finish().await?;
                self.progress.send_modify(|p| p.finished = true);
            }
            Message::Watermark(_) => {}
        }
        Ok(())
    }

    fn snapshot_state(&mut self) -> Result<Option<(usize, Vec<StateEntry>)>> {
        let counts = SinkCounts::of(&self.metrics);
        let mut entries = vec![(0, COUNTS_KEY.to_vec(), counts.encode())];
        let writer_entries = self
            .writer
            .try_lock()
            .map_err(|_| SluiceError::internal("a sink writer is busy at its barrier"))?
            .snapshot_state()?;
        for (key_group, key, value) in writer_entries {
            let mut prefixed = Vec::with_capacity(key.len() + 1);
            prefixed.push(WRITER_KEY_PREFIX);
            prefixed.extend_from_slice(&key);
            entries.push((key_group, prefixed, value));
        }
        Ok(Some((self.index, entries)))
    }
}

/// Commits checkpoint `epoch` on a sink subtask's writer and records it in its metrics.
pub async fn commit_sink(
    writer: &SharedSinkWriter,
    metrics: &SinkMetrics,
    epoch: u64,
) -> Result<()> {
    writer.lock().await.commit(epoch).await?;
    metrics.committed_epoch.fetch_max(epoch, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{BarrierKind, changelog_schema};
    use arrow::array::{Int8Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    fn rows(ids: Vec<i64>, names: Vec<&str>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(names)),
            ],
        )
        .unwrap()
    }

    fn with_ops(batch: RecordBatch, ops: Vec<RowKind>) -> RecordBatch {
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(Int8Array::from(
            ops.into_iter().map(|o| o as i8).collect::<Vec<_>>(),
        )));
        RecordBatch::try_new(changelog_schema(&batch.schema()), columns).unwrap()
    }

    /// A writer that records what it was asked to do.
    #[derive(Default)]
    struct Recorder {
        log: Arc<parking_lot::Mutex<Vec<String>>>,
    }

    #[async_trait]
    impl SinkWriter for Recorder {
        async fn write(&mut self, batch: RecordBatch) -> Result<()> {
            self.log.lock().push(format!("write {}", batch.num_rows()));
            Ok(())
        }
        async fn barrier(&mut self, barrier: CheckpointBarrier) -> Result<()> {
            self.log.lock().push(format!("barrier {}", barrier.epoch));
            Ok(())
        }
        fn snapshot_state(&mut self) -> Result<Vec<StateEntry>> {
            Ok(vec![(3, b"txn".to_vec(), b"7".to_vec())])
        }
        fn restore_state(&mut self, entries: Vec<StateEntry>) -> Result<()> {
            self.log.lock().push(format!("restore {entries:?}"));
            Ok(())
        }
        async fn commit(&mut self, epoch: u64) -> Result<()> {
            self.log.lock().push(format!("commit {epoch}"));
            Ok(())
        }
        async fn finish(&mut self) -> Result<()> {
            self.log.lock().push("finish".into());
            Ok(())
        }
    }

    #[test]
    fn a_changelog_checksum_equals_the_checksum_of_the_rows_it_leaves() {
        let changes = with_ops(
            rows(vec![1, 2, 2, 3], vec!["a", "b", "b", "c"]),
            vec![
                RowKind::Insert,
                RowKind::Insert,
                RowKind::UpdateBefore,
                RowKind::UpdateAfter,
            ],
        );
        let more = with_ops(
            rows(vec![1, 4], vec!["a", "d"]),
            vec![RowKind::Delete, RowKind::Insert],
        );
        let total = changelog_counts(&changes)
            .unwrap()
            .plus(changelog_counts(&more).unwrap());
        assert_eq!(total.inserts, 4);
        assert_eq!(total.deletes, 2);
        assert_eq!(total.rows(), 2);
        // What remains: (3, c) and (4, d), in either order and batching.
        let left = [rows(vec![4], vec!["d"]), rows(vec![3], vec!["c"])];
        assert_eq!(total.checksum, rows_checksum(&left).unwrap());
        assert_ne!(
            total.checksum,
            rows_checksum(&[rows(vec![3, 4], vec!["c", "e"])]).unwrap()
        );
    }

    #[tokio::test]
    async fn the_sink_output_counts_snapshots_and_restores_its_writer_with_its_counts() {
        let log = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let writer: SharedSinkWriter = Arc::new(tokio::sync::Mutex::new(Box::new(Recorder {
            log: log.clone(),
        })));
        let metrics = Arc::new(SinkMetrics::default());
        let (progress, progress_rx) = watch::channel(SinkProgress::default());
        let mut output = SinkOutput::new(writer.clone(), metrics.clone(), 1, progress);
        output
            .collect(Message::Batch(rows(vec![1, 2], vec!["a", "b"])))
            .await
            .unwrap();
        let barrier = CheckpointBarrier {
            epoch: 5,
            kind: BarrierKind::Checkpoint,
        };
        output.collect(Message::Barrier(barrier)).await.unwrap();
        assert_eq!(progress_rx.borrow().epoch, 5);
        let (index, entries) = output.snapshot_state().unwrap().unwrap();
        assert_eq!(index, 1);
        commit_sink(&writer, &metrics, 5).await.unwrap();
        assert_eq!(metrics.committed_epoch.load(Ordering::Relaxed), 5);
        output.collect(Message::EndOfStream).await.unwrap();
        assert!(progress_rx.borrow().finished);
        assert_eq!(
            *log.lock(),
            vec!["write 2", "barrier 5", "commit 5", "finish"]
        );

        // A restored output resumes with the counts of the snapshot.
        let restored_metrics = Arc::new(SinkMetrics::default());
        let (progress, _) = watch::channel(SinkProgress::default());
        let mut restored = SinkOutput::new(
            Arc::new(tokio::sync::Mutex::new(Box::new(Recorder {
                log: log.clone(),
            }))),
            restored_metrics.clone(),
            1,
            progress,
        );
        restored.restore_state(entries).unwrap();
        assert_eq!(SinkCounts::of(&restored_metrics), SinkCounts::of(&metrics));
        assert_eq!(
            log.lock().last().unwrap(),
            "restore [(3, [116, 120, 110], [55])]"
        );
    }
}
