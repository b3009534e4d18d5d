//! The interface between a connector and the runtime's source task.
//!
//! A connector implements [`SourceReader`]; the runtime's source task drives it, injects
//! barriers between its batches and holds FLUSH barriers back until the reader has
//! caught up with everything acknowledged before the FLUSH.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use sluice_common::error::Result;

/// What a reader produced.
#[derive(Debug)]
pub enum SourceEvent {
    /// Rows, in the reader's schema.
    Batch(RecordBatch),
    /// The reader's position advanced without rows for this subtask (for example it
    /// skipped entries of another subtask); the source task re-checks pending barriers.
    Progress,
    /// A bounded source is exhausted.
    End,
}

/// Reads one split of a source. Positions are opaque, monotonically increasing numbers
/// (offsets, row counts) that the runtime only compares.
#[async_trait]
pub trait SourceReader: Send {
    /// The schema of every batch this reader returns.
    fn schema(&self) -> SchemaRef;

    /// Waits for the next event. Must be cancel-safe: the source task races it against
    /// barrier injection, and a cancelled call must lose no rows.
    async fn next_event(&mut self) -> Result<SourceEvent>;

    /// The position after the last row this reader has returned.
    fn position(&self) -> u64;

    /// The position this reader must reach before a FLUSH injected now can pass: the
    /// end of what was written before the FLUSH (a table's log length, a bounded
    /// source's last row). Unbounded external sources return [`Self::position`].
    fn flush_target(&self) -> u64;

    /// Moves a fresh reader to `position` (a value [`Self::position`] returned before),
    /// so that it resumes after the rows a checkpoint already holds. Fails for sources
    /// that cannot replay.
    fn seek(&mut self, position: u64) -> Result<()> {
        let _ = position;
        Err(sluice_common::error::SluiceError::unsupported(
            "this source cannot resume from a checkpoint position",
        ))
    }
}
