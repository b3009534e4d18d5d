//! The `nexmark` source: the Nexmark benchmark's auction events (people, auctions,
//! bids), generated deterministically, in parallel splits, at a steady rate.
//!
//! Events come from the `nexmark` crate, the generator RisingWave's nexmark connector
//! uses, so a Sluice source and a RisingWave source with the same options produce the
//! same events: the 1:3:46 person:auction:bid proportions, hot auctions, bidders and
//! sellers, auctions in flight, padded `extra` fields, and synthetic event times from
//! `nexmark.base.time` and the inter-event delay. Every event is a pure function of its
//! event number. Option parsing lives in `options.rs`, the declared columns and their
//! Arrow builders in `columns.rs`.
//!
//! Splits: without `nexmark.table.type`, split `i` of `n` generates the event numbers
//! `i, i + n, ...`; with it, the `i`-th, `(i + n)`-th, ... event *of that type* (so every
//! split gets its share of a rare type such as persons). Either way the union over the
//! splits is exactly the one-split stream, whatever `n` is. A reader's position counts
//! the events (= rows) it has returned. A bounded source (`nexmark.event.num`) knows
//! each split's count up front and makes it the FLUSH target, so `FLUSH` waits for the
//! source to be exhausted.
//!
//! Pacing (`nexmark.min.event.gap.in.ns`, as in RisingWave): event number `g` is due
//! `g × gap` after the reader started, so the whole source emits one event per gap
//! whatever the split count. A batch holds at most `nexmark.max.chunk.size` events and,
//! when on schedule, spans at most [`MAX_BATCH_SPAN`] of the schedule; it is generated
//! synchronously and kept while the reader sleeps until its last event is due, so a
//! cancelled `next_event` loses and repeats nothing.

mod columns;
mod options;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use ::nexmark::EventGenerator;
use ::nexmark::config::NexmarkConfig;
use ::nexmark::event::EventType;
use arrow::array::{RecordBatch, RecordBatchOptions};
use arrow::datatypes::{Schema, SchemaRef};
use async_trait::async_trait;
use sluice_common::error::{Result, SluiceError};
use sluice_runtime::source::{SourceEvent, SourceReader};
use tokio::time::Instant;

use columns::ColumnBuilder;
use options::NexmarkOptions;

/// The most schedule time one batch covers when the reader is on schedule, so that slow
/// rates give small, timely batches instead of full batches that wait for their last
/// event.
pub const MAX_BATCH_SPAN: Duration = Duration::from_millis(10);

/// Checks nexmark options against the source's schema without creating a reader.
pub fn validate_options(options: &BTreeMap<String, String>, schema: &Schema) -> Result<()> {
    let options = options::parse(options)?;
    columns::plan(schema, options.table).map(|_| ())
}

/// Reads split `split` of `splits` of a nexmark source.
pub struct NexmarkReader {
    schema: SchemaRef,
    columns: Vec<ColumnBuilder>,
    generator: EventGenerator,
    /// Events this split has before it ends (`u64::MAX`: unbounded).
    split_events: u64,
    bounded: bool,
    max_chunk_size: usize,
    pacing: Pacing,
    /// Where the schedule starts: set when the first batch is generated.
    origin: Option<Origin>,
    /// Events taken from the generator (returned or pending).
    generated: u64,
    /// Events returned, the reader's position.
    emitted: u64,
    /// A generated batch not returned yet, because it is not due or the call that
    /// generated it was cancelled while waiting.
    pending: Option<Pending>,
}

#[derive(Debug, Clone, Copy)]
enum Pacing {
    Unpaced,
    /// Wall-clock nanoseconds between consecutive event numbers of the whole source.
    Gap(u64),
    /// As fast as the events' own event times advance.
    RealTime,
}

#[derive(Debug, Clone, Copy)]
struct Origin {
    instant: Instant,
    global_offset: u64,
    event_time_ms: u64,
}

#[derive(Debug)]
struct Pending {
    batch: RecordBatch,
    due: Option<Instant>,
}

impl NexmarkReader {
    /// A reader for split `split` (0-based) of `splits`, which
    /// [`crate::create_source_reader`] has checked; fails with
    /// `INVALID_PARAMETER_VALUE` naming the option when an option is bad, and with
    /// `UNDEFINED_COLUMN` / `DATATYPE_MISMATCH` when a declared column does not fit.
    pub(crate) fn new(
        options: &BTreeMap<String, String>,
        schema: SchemaRef,
        split: usize,
        splits: usize,
    ) -> Result<Self> {
        let NexmarkOptions {
            config,
            table,
            event_num,
            min_event_gap_ns,
            use_real_time,
            max_chunk_size,
        } = options::parse(options)?;
        let columns = columns::plan(&schema, table)?;
        let (split, splits) = (split as u64, splits as u64);
        let split_events = match event_num {
            None => u64::MAX,
            Some(total) => {
                let of_shape = match table {
                    None => total,
                    Some(event_type) => events_of_type_before(&config, event_type, total),
                };
                crate::items_of_split(of_shape, split, splits)
            }
        };
        let mut generator = EventGenerator::new(config)
            .with_offset(split)
            .with_step(splits);
        if let Some(event_type) = table {
            generator = generator.with_type_filter(event_type);
        }
        let pacing = if use_real_time {
            Pacing::RealTime
        } else if min_event_gap_ns == 0 {
            Pacing::Unpaced
        } else {
            Pacing::Gap(min_event_gap_ns)
        };
        Ok(NexmarkReader {
            schema,
            columns,
            generator,
            split_events,
            bounded: event_num.is_some(),
            max_chunk_size,
            pacing,
            origin: None,
            generated: 0,
            emitted: 0,
            pending: None,
        })
    }

    /// When the generator's next event is due, counted from the origin; `None` when
    /// unpaced.
    fn next_due(&self, origin: Origin) -> Option<Duration> {
        match self.pacing {
            Pacing::Unpaced => None,
            Pacing::Gap(gap) => {
                let events = self.generator.global_offset() - origin.global_offset;
                let nanos = (events as u128 * gap as u128).min(u64::MAX as u128);
                Some(Duration::from_nanos(nanos as u64))
            }
            Pacing::RealTime => Some(Duration::from_millis(
                self.generator
                    .timestamp()
                    .saturating_sub(origin.event_time_ms),
            )),
        }
    }

    /// Takes the next batch of this split from the generator at `now`: up to
    /// `max_chunk_size` events, everything already due, and (when on schedule) what is
    /// due within [`MAX_BATCH_SPAN`] of the first. Synchronous, so it either runs
    /// completely or not at all. Returns `None` when the split is exhausted.
    fn generate(&mut self, now: Instant) -> Result<Option<Pending>> {
        let remaining = self.split_events - self.generated;
        if remaining == 0 {
            return Ok(None);
        }
        let origin = *self.origin.get_or_insert(Origin {
            instant: now,
            global_offset: self.generator.global_offset(),
            event_time_ms: self.generator.timestamp(),
        });
        let elapsed = now.saturating_duration_since(origin.instant);
        let limit = remaining.min(self.max_chunk_size as u64);
        let mut first_due = None;
        let mut last_due = None;
        let mut rows = 0;
        // Events are generated one at a time by the model and appended straight into the
        // column builders: there is no batch kernel for a pseudo-random event model.
        while rows < limit {
            if let Some(due) = self.next_due(origin) {
                let first = *first_due.get_or_insert(due);
                // (Saturating: with out-of-order events, event times may go back.)
                if rows > 0 && due > elapsed && due.saturating_sub(first) > MAX_BATCH_SPAN {
                    break;
                }
                last_due = Some(due);
            }
            let Some(event) = self.generator.next() else {
                return Err(SluiceError::internal(
                    "the nexmark generator ended, but it generates without end",
                ));
            };
            for column in &mut self.columns {
                column.append(&event);
            }
            rows += 1;
        }
        let arrays = self
            .columns
            .iter_mut()
            .map(ColumnBuilder::finish)
            .collect::<Result<Vec<_>>>()?;
        let batch = RecordBatch::try_new_with_options(
            self.schema.clone(),
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(rows as usize)),
        )?;
        self.generated += rows;
        Ok(Some(Pending {
            batch,
            due: last_due.map(|due| origin.instant + due),
        }))
    }
}

/// How many events of `event_type` have event numbers (offsets from the first) below
/// `total`, given the model's proportions.
fn events_of_type_before(config: &NexmarkConfig, event_type: EventType, total: u64) -> u64 {
    let (person, auction, bid) = (
        config.person_proportion as u64,
        config.auction_proportion as u64,
        config.bid_proportion as u64,
    );
    let (start, share) = match event_type {
        EventType::Person => (0, person),
        EventType::Auction => (person, auction),
        EventType::Bid => (person + auction, bid),
    };
    let denominator = person + auction + bid;
    let rest = total % denominator;
    total / denominator * share + rest.saturating_sub(start).min(share)
}

#[async_trait]
impl SourceReader for NexmarkReader {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn next_event(&mut self) -> Result<SourceEvent> {
        if self.pending.is_none() {
            match self.generate(Instant::now())? {
                Some(pending) => self.pending = Some(pending),
                None => return Ok(SourceEvent::End),
            }
        }
        if let Some(due) = self.pending.as_ref().and_then(|p| p.due) {
            // The only await: cancelling it leaves the batch pending, to be returned
            // (at the same deadline) by the next call.
            tokio::time::sleep_until(due).await;
        }
        let Some(Pending { batch, .. }) = self.pending.take() else {
            return Err(SluiceError::internal(
                "nexmark reader lost its pending batch",
            ));
        };
        self.emitted += batch.num_rows() as u64;
        debug_assert!(self.emitted <= self.generated);
        Ok(SourceEvent::Batch(batch))
    }

    fn position(&self) -> u64 {
        self.emitted
    }

    fn flush_target(&self) -> u64 {
        if self.bounded {
            self.split_events
        } else {
            self.emitted
        }
    }

    /// The generator is sequential: resuming regenerates and skips the events before
    /// `position` (about a million per second).
    fn seek(&mut self, position: u64) -> Result<()> {
        if self.generated != 0 || position > self.split_events {
            return Err(SluiceError::invalid_parameter(format!(
                "cannot resume a nexmark split at event {position} (it has {} events and has generated {})",
                self.split_events, self.generated
            )));
        }
        for _ in 0..position {
            if self.generator.next().is_none() {
                return Err(SluiceError::internal("the nexmark generator ended early"));
            }
        }
        self.generated = position;
        self.emitted = position;
        Ok(())
    }
}
