//! Temporal filter: `WHERE ts > now() - offset`, kept true as the clock moves.
//!
//! A row passes while the clock is before `ts + offset` (its expiry); it is then
//! retracted. Passing rows are kept, ordered by expiry, until they expire or are
//! retracted upstream. The clock is read whenever a message arrives: a batch, a watermark
//! or a barrier. Barriers come with every checkpoint and every FLUSH, so a view is
//! current as of its last checkpoint, and exactly current right after a FLUSH.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Int8Array, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::row::RowConverter;
use datafusion::physical_expr::PhysicalExpr;
use sluice_common::error::{Result, SluiceError};

use super::encoding::{row_converter, timestamp_millis, wall_clock_ms};
use super::{Operator, StateEntry};
use crate::message::{CheckpointBarrier, Message, RowKind, Watermark, split_changelog};

pub struct TemporalFilterOperator {
    time: Arc<dyn PhysicalExpr>,
    offset_ms: i64,
    inclusive: bool,
    row_converter: RowConverter,
    /// Passing rows: (expiry in ms, row) → multiplicity.
    rows: BTreeMap<(i64, Box<[u8]>), i64>,
    /// Input columns and the op column.
    schema: SchemaRef,
    /// The clock, in ms since the epoch; replaceable in tests.
    clock: fn() -> i64,
}

/// Whether a row expiring at `expiry` passes at `now` (`ts >= now() - offset` when
/// `inclusive`, `ts > now() - offset` otherwise).
fn passes(inclusive: bool, expiry: i64, now: i64) -> bool {
    if inclusive {
        now <= expiry
    } else {
        now < expiry
    }
}

impl TemporalFilterOperator {
    /// `input` is the input schema without the op column; `schema` the output's, with it.
    pub fn new(
        time: Arc<dyn PhysicalExpr>,
        offset_ms: i64,
        inclusive: bool,
        input: &SchemaRef,
        schema: SchemaRef,
    ) -> Result<Self> {
        Ok(TemporalFilterOperator {
            time,
            offset_ms,
            inclusive,
            row_converter: row_converter(input)?,
            rows: BTreeMap::new(),
            schema,
            clock: wall_clock_ms,
        })
    }

    /// Uses `clock` instead of the wall clock (tests).
    pub fn with_clock(mut self, clock: fn() -> i64) -> Self {
        self.clock = clock;
        self
    }

    /// Rows passing now, for tests and metrics.
    pub fn row_count(&self) -> usize {
        self.rows.len()
    }

    /// Retracts every row that no longer passes at `now`.
    fn expire(&mut self, now: i64, changes: &mut Vec<(Box<[u8]>, RowKind)>) {
        let inclusive = self.inclusive;
        while let Some(entry) = self.rows.first_entry() {
            if passes(inclusive, entry.key().0, now) {
                break;
            }
            let ((_, row), count) = entry.remove_entry();
            for _ in 0..count {
                changes.push((row.clone(), RowKind::Delete));
            }
        }
    }

    fn output(&self, changes: Vec<(Box<[u8]>, RowKind)>, out: &mut Vec<Message>) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let parser = self.row_converter.parser();
        let mut columns = self
            .row_converter
            .convert_rows(changes.iter().map(|(row, _)| parser.parse(row)))?;
        let ops: Int8Array = changes.iter().map(|(_, k)| Some(*k as i8)).collect();
        columns.push(Arc::new(ops));
        out.push(Message::Batch(RecordBatch::try_new(
            self.schema.clone(),
            columns,
        )?));
        Ok(())
    }

    fn tick(&mut self, out: &mut Vec<Message>) -> Result<()> {
        let mut changes = Vec::new();
        self.expire((self.clock)(), &mut changes);
        self.output(changes, out)
    }
}

impl Operator for TemporalFilterOperator {
    fn name(&self) -> &'static str {
        "TemporalFilter"
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<Message>) -> Result<()> {
        let now = (self.clock)();
        let mut changes = Vec::new();
        self.expire(now, &mut changes);
        let (data, ops) = split_changelog(&batch);
        let times = self.time.evaluate(&data)?.into_array(data.num_rows())?;
        let times = timestamp_millis(&times)?;
        let rows = self.row_converter.convert_columns(data.columns())?;
        for (i, time) in times.into_iter().enumerate() {
            let Some(time) = time else {
                continue;
            };
            let expiry = time.saturating_add(self.offset_ms);
            if !passes(self.inclusive, expiry, now) {
                // Never passed, or already retracted when it expired.
                continue;
            }
            let row: Box<[u8]> = rows.row(i).as_ref().into();
            let key = (expiry, row.clone());
            if RowKind::is_addition(ops.value(i)) {
                *self.rows.entry(key).or_insert(0) += 1;
                changes.push((row, RowKind::Insert));
            } else {
                match self.rows.get_mut(&key) {
                    Some(count) if *count > 1 => *count -= 1,
                    Some(_) => {
                        self.rows.remove(&key);
                    }
                    None => {
                        return Err(SluiceError::internal(
                            "temporal filter: a retracted row was never inserted",
                        ));
                    }
                }
                changes.push((row, RowKind::Delete));
            }
        }
        self.output(changes, out)
    }

    fn process_watermark(&mut self, watermark: Watermark, out: &mut Vec<Message>) -> Result<()> {
        self.tick(out)?;
        out.push(Message::Watermark(watermark));
        Ok(())
    }

    fn process_barrier(
        &mut self,
        barrier: CheckpointBarrier,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        self.tick(out)?;
        out.push(Message::Barrier(barrier));
        Ok(())
    }

    fn snapshot_state(&mut self) -> Result<Vec<StateEntry>> {
        Ok(self
            .rows
            .iter()
            .map(|((expiry, row), count)| {
                let mut key = expiry.to_le_bytes().to_vec();
                key.extend_from_slice(row);
                (0, key, count.to_le_bytes().to_vec())
            })
            .collect())
    }

    fn restore_state(&mut self, entries: Vec<StateEntry>) -> Result<()> {
        let corrupt = || SluiceError::corrupted("a temporal filter snapshot entry is truncated");
        for (_, key, value) in entries {
            let expiry: [u8; 8] = key
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(corrupt)?;
            let count: [u8; 8] = value.as_slice().try_into().map_err(|_| corrupt())?;
            self.rows.insert(
                (i64::from_le_bytes(expiry), key[8..].into()),
                i64::from_le_bytes(count),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    use arrow::array::{AsArray, Int64Array, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit};

    use datafusion::physical_expr::expressions::Column;

    use crate::message::{changelog_schema, op_column};

    static NOW: AtomicI64 = AtomicI64::new(0);

    fn clock() -> i64 {
        NOW.load(Ordering::Relaxed)
    }

    fn input() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]))
    }

    fn rows(k: Vec<i64>, ts: Vec<i64>) -> RecordBatch {
        RecordBatch::try_new(
            input(),
            vec![
                Arc::new(Int64Array::from(k)),
                Arc::new(TimestampMillisecondArray::from(ts)),
            ],
        )
        .unwrap()
    }

    fn changes(out: &[Message]) -> Vec<String> {
        let mut lines = vec![];
        for m in out {
            let Message::Batch(b) = m else { continue };
            let ops = op_column(b).unwrap();
            for r in 0..b.num_rows() {
                lines.push(format!(
                    "{} {}",
                    RowKind::symbol(ops.value(r)),
                    b.column(0).as_primitive::<Int64Type>().value(r)
                ));
            }
        }
        lines
    }

    #[test]
    fn rows_pass_until_the_clock_moves_past_their_time_plus_the_offset() {
        // WHERE ts > now() - 100 ms
        let mut op = TemporalFilterOperator::new(
            Arc::new(Column::new("ts", 1)),
            100,
            false,
            &input(),
            changelog_schema(&input()),
        )
        .unwrap()
        .with_clock(clock);
        NOW.store(1_000, Ordering::Relaxed);
        let mut out = vec![];
        op.process_batch(rows(vec![1, 2, 3], vec![950, 899, 1_020]), &mut out)
            .unwrap();
        assert_eq!(changes(&out), vec!["+I 1", "+I 3"], "899 + 100 < 1000");
        out.clear();
        NOW.store(1_050, Ordering::Relaxed);
        op.process_watermark(Watermark(0), &mut out).unwrap();
        assert_eq!(changes(&out), vec!["-D 1"], "950 + 100 = 1050: expired");
        let restored_entries = op.snapshot_state().unwrap();
        out.clear();
        NOW.store(2_000, Ordering::Relaxed);
        op.process_barrier(
            CheckpointBarrier {
                epoch: 1,
                kind: crate::message::BarrierKind::Flush,
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(changes(&out), vec!["-D 3"]);
        assert_eq!(op.row_count(), 0);
        let mut restored = TemporalFilterOperator::new(
            Arc::new(Column::new("ts", 1)),
            100,
            false,
            &input(),
            changelog_schema(&input()),
        )
        .unwrap();
        restored.restore_state(restored_entries).unwrap();
        assert_eq!(restored.row_count(), 1);
    }
}
