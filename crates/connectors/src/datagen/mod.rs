//! The `datagen` source: rows generated from the source's schema and its `WITH` options,
//! at a steady rate, in parallel splits, deterministically.
//!
//! Every value is a pure function of the row's *global index* (see `columns.rs`); split
//! `i` of `n` produces the global rows `i, i + n, i + 2n, ...`. The reader's state is the
//! number of rows it has emitted and its rate schedule (`pacing.rs`); the count changes
//! only in the synchronous part of `next_event`, after its one await
//! point (a sleep until the schedule allows the next batch), and the schedule does not
//! depend on how often it is asked. So a cancelled call loses and repeats nothing, and
//! a cancelled sleep does not use up a rate slot. Option parsing lives in `options.rs`.
//!
//! A source is bounded when the user bounds it (a sequence column's `end`,
//! `number-of-rows` / `datagen.rows.total`): each split then knows its row count up
//! front, and that count is its FLUSH target, so `FLUSH` waits for the source to finish.

mod columns;
mod interval;
mod options;
mod pacing;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use async_trait::async_trait;
use sluice_common::error::{Result, SluiceError};
use sluice_runtime::source::{SourceEvent, SourceReader};
use tokio::time::Instant;

use columns::Generator;
use pacing::{Pace, Pacer};

pub use pacing::MAX_BATCH_ROWS;

/// Checks datagen options against the source's schema without creating a reader.
pub fn validate_options(options: &BTreeMap<String, String>, schema: &Schema) -> Result<()> {
    options::parse(options, schema).map(|_| ())
}

/// Reads split `split` of `splits` of a datagen source.
pub struct DatagenReader {
    schema: SchemaRef,
    columns: Vec<Generator>,
    split: u64,
    splits: u64,
    /// Rows this split emits before it ends (`u64::MAX` rounds to "never").
    split_limit: u64,
    /// Whether the user bounded the source, making `split_limit` the FLUSH target.
    bounded: bool,
    pacer: Pacer,
    emitted: u64,
}

impl DatagenReader {
    /// A reader for split `split` (0-based) of `splits`, which [`crate::create_source_reader`]
    /// has checked; fails with `INVALID_PARAMETER_VALUE` naming the option when an option
    /// is bad.
    pub(crate) fn new(
        options: &BTreeMap<String, String>,
        schema: SchemaRef,
        split: usize,
        splits: usize,
    ) -> Result<Self> {
        let config = options::parse(options, &schema)?;
        let (split, splits) = (split as u64, splits as u64);
        Ok(DatagenReader {
            schema,
            columns: config.columns,
            split,
            splits,
            split_limit: crate::items_of_split(config.limit, split, splits),
            bounded: config.bound.is_some(),
            pacer: Pacer::new(config.milli_rows_per_second, splits),
            emitted: 0,
        })
    }

    /// The next `count` rows of this split, as a batch. Synchronous, so it either runs
    /// completely or not at all.
    fn emit(&mut self, count: u64) -> Result<RecordBatch> {
        debug_assert!(count > 0 && count <= self.split_limit - self.emitted);
        let rows: Vec<u64> = (self.emitted..self.emitted + count)
            .map(|k| self.split + k * self.splits)
            .collect();
        let arrays = self
            .columns
            .iter()
            .zip(self.schema.fields())
            .map(|(generator, field)| generator.generate(&rows, field.data_type()))
            .collect::<Result<Vec<_>>>()?;
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)?;
        self.emitted += count;
        Ok(batch)
    }
}

#[async_trait]
impl SourceReader for DatagenReader {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn next_event(&mut self) -> Result<SourceEvent> {
        loop {
            let remaining = self.split_limit - self.emitted;
            if remaining == 0 {
                return Ok(SourceEvent::End);
            }
            match self.pacer.poll(Instant::now(), self.emitted, remaining) {
                Pace::Emit(count) => return self.emit(count).map(SourceEvent::Batch),
                // The only await: cancelling it leaves the reader as it was (the pacer
                // keeps its schedule, which does not depend on how often it is polled).
                Pace::WaitUntil(deadline) => tokio::time::sleep_until(deadline).await,
            }
        }
    }

    fn position(&self) -> u64 {
        self.emitted
    }

    fn flush_target(&self) -> u64 {
        if self.bounded {
            self.split_limit
        } else {
            self.emitted
        }
    }

    /// Rows are a pure function of their index, so resuming is setting the count.
    fn seek(&mut self, position: u64) -> Result<()> {
        if position > self.split_limit {
            return Err(SluiceError::invalid_parameter(format!(
                "cannot resume datagen split {} at row {position}: it has only {} rows (were its options changed?)",
                self.split, self.split_limit
            )));
        }
        self.emitted = position;
        Ok(())
    }
}
