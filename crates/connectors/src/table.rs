//! Reading a table's log as a stream: the rows written so far (backfill), then every
//! acknowledged write after them.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use sluice_common::error::Result;
use sluice_runtime::{SourceEvent, SourceReader};
use sluice_state::{TableLog, TableLogReader};

/// One subtask's share of a table's log (entries whose offset is the subtask index
/// modulo the parallelism).
pub struct TableSourceReader {
    reader: TableLogReader,
    schema: SchemaRef,
}

impl TableSourceReader {
    pub fn new(log: &Arc<TableLog>, subtask: usize, parallelism: usize) -> Self {
        TableSourceReader {
            reader: log.reader(subtask, parallelism),
            schema: log.schema().clone(),
        }
    }
}

#[async_trait]
impl SourceReader for TableSourceReader {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn next_event(&mut self) -> Result<SourceEvent> {
        loop {
            let before = self.reader.position();
            if let Some(batch) = self.reader.poll_next() {
                return Ok(SourceEvent::Batch(batch));
            }
            if self.reader.position() > before {
                return Ok(SourceEvent::Progress);
            }
            self.reader.wait_for_entries().await;
        }
    }

    fn position(&self) -> u64 {
        self.reader.position()
    }

    fn flush_target(&self) -> u64 {
        self.reader.log_len()
    }
}
