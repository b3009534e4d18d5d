//! The storage of a table: an append-only log of record batches.
//!
//! Every acknowledged write to a table is one entry. Streaming jobs read the log from the
//! start (that is their backfill) and then follow it; batch queries read a snapshot.
//! The log is in memory for now; durability comes with checkpoints.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parking_lot::RwLock;
use tokio::sync::watch;

/// An append-only log of batches with a watch on its length, so readers can wait for
/// new entries without polling.
#[derive(Debug)]
pub struct TableLog {
    schema: SchemaRef,
    entries: RwLock<Vec<RecordBatch>>,
    len_tx: watch::Sender<u64>,
}

impl TableLog {
    pub fn new(schema: SchemaRef) -> Arc<Self> {
        let (len_tx, _) = watch::channel(0);
        Arc::new(TableLog {
            schema,
            entries: RwLock::new(Vec::new()),
            len_tx,
        })
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Appends one entry and returns its offset. Empty batches are not logged.
    pub fn append(&self, batch: RecordBatch) -> u64 {
        debug_assert_eq!(batch.schema().fields(), self.schema.fields());
        let mut entries = self.entries.write();
        if batch.num_rows() > 0 {
            entries.push(batch);
        }
        let len = entries.len() as u64;
        self.len_tx.send_replace(len);
        len
    }

    /// Number of entries (the offset the next append gets).
    pub fn len(&self) -> u64 {
        self.entries.read().len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every batch currently in the log, for batch queries.
    pub fn snapshot(&self) -> Vec<RecordBatch> {
        self.entries.read().clone()
    }

    /// A reader of the entries whose offset is `subtask` modulo `parallelism`, starting
    /// at offset 0.
    pub fn reader(self: &Arc<Self>, subtask: usize, parallelism: usize) -> TableLogReader {
        assert!(
            subtask < parallelism,
            "subtask {subtask} out of {parallelism}"
        );
        TableLogReader {
            log: self.clone(),
            len_rx: self.len_tx.subscribe(),
            position: 0,
            subtask: subtask as u64,
            parallelism: parallelism as u64,
        }
    }
}

/// Follows one share of a [`TableLog`]. See [`TableLog::reader`].
#[derive(Debug)]
pub struct TableLogReader {
    log: Arc<TableLog>,
    len_rx: watch::Receiver<u64>,
    position: u64,
    subtask: u64,
    parallelism: u64,
}

impl TableLogReader {
    /// The offset of the next entry this reader looks at.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The log's length now: a FLUSH is satisfied once the reader's position reaches it.
    pub fn log_len(&self) -> u64 {
        self.log.len()
    }

    /// The next entry of this reader's share that is already in the log, without waiting.
    /// Entries of other subtasks are skipped, so after `None` the position is the log's end.
    pub fn poll_next(&mut self) -> Option<RecordBatch> {
        let entries = self.log.entries.read();
        while (self.position as usize) < entries.len() {
            let offset = self.position;
            self.position += 1;
            if offset % self.parallelism == self.subtask {
                return Some(entries[offset as usize].clone());
            }
        }
        None
    }

    /// Waits until the log has entries past this reader's position. Cancel-safe.
    pub async fn wait_for_entries(&mut self) {
        let position = self.position;
        // The sender lives as long as the log, which this reader holds.
        let _ = self.len_rx.wait_for(|len| *len > position).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    fn batch(schema: &SchemaRef, v: i64) -> RecordBatch {
        RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![v]))]).unwrap()
    }

    #[tokio::test]
    async fn readers_split_entries_by_offset_and_see_later_appends() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        let log = TableLog::new(schema.clone());
        for v in 0..5 {
            log.append(batch(&schema, v));
        }
        let mut r0 = log.reader(0, 2);
        let mut r1 = log.reader(1, 2);
        let drain = |r: &mut TableLogReader| std::iter::from_fn(|| r.poll_next()).count();
        assert_eq!(drain(&mut r0), 3);
        assert_eq!(drain(&mut r1), 2);
        assert_eq!(r1.position(), 5);
        let waiter = tokio::spawn(async move {
            r1.wait_for_entries().await;
            r1.poll_next()
        });
        log.append(batch(&schema, 5));
        assert_eq!(waiter.await.unwrap(), Some(batch(&schema, 5)));
    }
}
