//! A view partition's log of changes, kept while a subscription reads the view
//! (`CREATE SUBSCRIPTION`, see docs/sql.md).
//!
//! Every batch of changes the partition applies is logged, pending, until the partition
//! applies the next barrier; the barrier's epoch then labels it. An epoch's changes are
//! readable once every partition of the view has applied its barrier, so a reader sees
//! whole epochs: the same consistent cuts FLUSH and checkpoints make. The time the
//! partition applied a barrier is its epoch's time, which `SINCE` and the retention go by.
//! Epochs older than the retention are dropped at each barrier.

use std::collections::{BTreeMap, VecDeque};

use arrow::array::RecordBatch;

/// Changes of one epoch in one partition.
#[derive(Debug, Clone)]
pub struct LoggedChanges {
    pub epoch: u64,
    /// When the partition applied the epoch's barrier (ms since the Unix epoch).
    pub time_ms: i64,
    /// The changes, with the op column.
    pub batch: RecordBatch,
}

/// See the module docs.
#[derive(Debug)]
pub struct ChangeLog {
    retention_ms: i64,
    /// Oldest first. Pending entries (no barrier yet) are at the back, labelled `PENDING`.
    entries: VecDeque<(u64, RecordBatch)>,
    /// Closed epochs still retained → when their barrier was applied (ms).
    epoch_times: BTreeMap<u64, i64>,
    /// Epochs up to this one are no longer retained (0: nothing was dropped).
    dropped_through: u64,
    /// When the last dropped epoch was applied (ms).
    dropped_time: Option<i64>,
}

/// The label of changes whose barrier has not come yet.
const PENDING: u64 = u64::MAX;

impl ChangeLog {
    pub fn new(retention_ms: i64) -> Self {
        ChangeLog {
            retention_ms,
            entries: VecDeque::new(),
            epoch_times: BTreeMap::new(),
            dropped_through: 0,
            dropped_time: None,
        }
    }

    pub fn set_retention(&mut self, retention_ms: i64) {
        self.retention_ms = retention_ms;
    }

    /// Logs a batch of changes (with the op column) until the next barrier labels it.
    pub fn record(&mut self, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.entries.push_back((PENDING, batch));
        }
    }

    /// The partition applied barrier `epoch` at `now_ms`: the pending changes belong to
    /// it. Drops the epochs older than the retention.
    pub fn close_epoch(&mut self, epoch: u64, now_ms: i64) {
        for (label, _) in self.entries.iter_mut().rev() {
            if *label != PENDING {
                break;
            }
            *label = epoch;
        }
        self.epoch_times.insert(epoch, now_ms);
        self.trim(now_ms);
    }

    /// Drops the epochs applied more than the retention before `now_ms`.
    pub fn trim(&mut self, now_ms: i64) {
        let cutoff = now_ms.saturating_sub(self.retention_ms);
        while let Some((&oldest, &time)) = self.epoch_times.first_key_value() {
            if time >= cutoff {
                break;
            }
            self.epoch_times.pop_first();
            self.dropped_through = self.dropped_through.max(oldest);
            self.dropped_time = Some(time);
        }
        while self
            .entries
            .front()
            .is_some_and(|(label, _)| *label <= self.dropped_through)
        {
            self.entries.pop_front();
        }
    }

    /// Forgets the changes after `epoch` (all when `None`): the partition's job restarts
    /// from the checkpoint of that epoch, and will apply those changes again.
    pub fn truncate_after(&mut self, epoch: Option<u64>) {
        let keep = epoch.unwrap_or(0);
        self.entries.retain(|(label, _)| *label <= keep);
        self.epoch_times.retain(|&e, _| e <= keep);
    }

    /// The changes of the epochs `from..=through`, oldest first.
    pub fn read(&self, from: u64, through: u64) -> Vec<LoggedChanges> {
        self.entries
            .iter()
            .filter(|(label, _)| (from..=through).contains(label) && *label != PENDING)
            .map(|(epoch, batch)| LoggedChanges {
                epoch: *epoch,
                time_ms: self.epoch_times.get(epoch).copied().unwrap_or_default(),
                batch: batch.clone(),
            })
            .collect()
    }

    /// The first retained epoch closed at or after `time_ms`.
    pub fn first_epoch_since(&self, time_ms: i64) -> Option<u64> {
        self.epoch_times
            .iter()
            .find(|(_, t)| **t >= time_ms)
            .map(|(e, _)| *e)
    }

    /// Epochs up to this one are no longer retained.
    pub fn dropped_through(&self) -> u64 {
        self.dropped_through
    }

    /// When the last epoch no longer retained was applied (ms), if one was dropped.
    pub fn dropped_time(&self) -> Option<i64> {
        self.dropped_time
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch(values: Vec<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values))]).unwrap()
    }

    fn values(changes: &[LoggedChanges]) -> Vec<(u64, i64)> {
        changes
            .iter()
            .flat_map(|c| {
                let column = c.batch.column(0).as_any().downcast_ref::<Int64Array>();
                column
                    .unwrap()
                    .values()
                    .iter()
                    .map(|v| (c.epoch, *v))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn changes_are_readable_under_the_epoch_of_the_barrier_after_them() {
        let mut log = ChangeLog::new(1_000);
        log.record(batch(vec![1, 2]));
        assert!(log.read(0, u64::MAX - 1).is_empty(), "pending");
        log.close_epoch(5, 100);
        log.record(batch(vec![3]));
        log.close_epoch(6, 200);
        log.close_epoch(9, 300);
        log.record(batch(vec![4]));
        assert_eq!(
            values(&log.read(0, 9)),
            vec![(5, 1), (5, 2), (6, 3)],
            "4 is still pending"
        );
        assert_eq!(values(&log.read(6, 6)), vec![(6, 3)]);
        assert_eq!(log.read(6, 6)[0].time_ms, 200);
        assert_eq!(log.first_epoch_since(150), Some(6));
        assert_eq!(log.first_epoch_since(301), None);
    }

    #[test]
    fn epochs_older_than_the_retention_are_dropped() {
        let mut log = ChangeLog::new(1_000);
        log.record(batch(vec![1]));
        log.close_epoch(1, 100);
        log.record(batch(vec![2]));
        log.close_epoch(2, 900);
        log.close_epoch(3, 1_500);
        assert_eq!(log.dropped_through(), 1);
        assert_eq!(log.dropped_time(), Some(100));
        assert_eq!(values(&log.read(0, 3)), vec![(2, 2)]);
    }

    #[test]
    fn a_restart_forgets_the_changes_after_its_checkpoint() {
        let mut log = ChangeLog::new(1_000);
        log.record(batch(vec![1]));
        log.close_epoch(1, 100);
        log.record(batch(vec![2]));
        log.close_epoch(2, 200);
        log.record(batch(vec![3]));
        log.truncate_after(Some(1));
        assert_eq!(values(&log.read(0, 10)), vec![(1, 1)]);
        log.record(batch(vec![4]));
        log.close_epoch(3, 300);
        assert_eq!(values(&log.read(0, 10)), vec![(1, 1), (3, 4)]);
        log.truncate_after(None);
        assert!(log.read(0, 10).is_empty());
    }
}
