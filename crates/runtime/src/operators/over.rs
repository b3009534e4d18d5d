//! OVER aggregates over event time (`agg(x) OVER (PARTITION BY k ORDER BY ts <frame>)`).
//!
//! Rows wait until the watermark passes their time (a watermark W says every row before W
//! has arrived); then they are taken in time order
//! and each is emitted with its aggregates over the frame of its partition. So a row's
//! values never change once emitted and the output is append-only, as in Flink. Rows
//! arriving behind the watermark are late: dropped and counted.
//!
//! Each partition keeps one accumulator per aggregate. A bounded frame (`n PRECEDING`,
//! `INTERVAL ... PRECEDING`) also keeps its rows, and takes the oldest back out of the
//! accumulators (DataFusion's sliding accumulators, built for window frames) as they
//! leave the frame. A `RANGE` frame holds a row's peers (rows of the same time), so all
//! rows of one time join the frame before any of them is emitted.
//!
//! Checkpoints hold the waiting rows, each bounded frame's rows (replayed into fresh
//! accumulators on restore) and each unbounded frame's accumulator states
//! (`Accumulator::state`, merged back with `merge_batch`).

use crate::operators::OPERATOR_WIDE;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::scalar::ScalarValue;
use sluice_common::error::{Result, SluiceError};
use sluice_state::DEFAULT_KEY_GROUPS;

use super::encoding::{
    key_groups_of_rows, push_sized, row_converter, split_sized, take_through, timestamp_millis,
};
use super::{Operator, StateEntry};
use crate::keygroup::key_groups_of_columns;
use crate::message::{Message, Watermark};

/// The frame: from how far back to the current row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// The current row and `n` rows before it (`None`: every row before it).
    Rows(Option<u64>),
    /// Rows from `ms` milliseconds before the current row's time (`None`: every row
    /// before it), and its peers.
    Range(Option<i64>),
}

impl Frame {
    fn bounded(&self) -> bool {
        matches!(self, Frame::Rows(Some(_)) | Frame::Range(Some(_)))
    }
}

/// Rows in Arrow's row format, and partition keys in it.
type Row = Box<[u8]>;

/// A row in a bounded frame: its time, the row, and each aggregate's argument values.
struct FrameRow {
    time: i64,
    row: Box<[u8]>,
    args: Vec<Vec<ScalarValue>>,
}

struct Partition {
    accumulators: Vec<Box<dyn Accumulator>>,
    /// A bounded frame's rows, oldest first.
    frame: VecDeque<FrameRow>,
}

pub struct OverAggregateOperator {
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    time: Arc<dyn PhysicalExpr>,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    frame: Frame,
    key_converter: RowConverter,
    rows: RowConverter,
    input_schema: SchemaRef,
    /// The input's columns, then one per aggregate.
    schema: SchemaRef,
    /// Rows waiting for the watermark, by time (arrival order within a time).
    pending: BTreeMap<i64, Vec<Box<[u8]>>>,
    partitions: HashMap<Box<[u8]>, Partition>,
    watermark: Option<i64>,
    late_rows: Arc<AtomicU64>,
}

impl OverAggregateOperator {
    pub fn new(
        partition_by: Vec<Arc<dyn PhysicalExpr>>,
        time: Arc<dyn PhysicalExpr>,
        aggregates: Vec<Arc<AggregateFunctionExpr>>,
        frame: Frame,
        input_schema: SchemaRef,
        schema: SchemaRef,
        late_rows: Arc<AtomicU64>,
    ) -> Result<Self> {
        let key_types = partition_by
            .iter()
            .map(|k| Ok(SortField::new(k.data_type(&input_schema)?)))
            .collect::<Result<Vec<_>>>()?;
        if frame.bounded() {
            for aggregate in &aggregates {
                aggregate.create_sliding_accumulator().map_err(|_| {
                    SluiceError::unsupported(format!(
                        "{} over a bounded OVER frame: it cannot take rows back out of its frame (use UNBOUNDED PRECEDING)",
                        aggregate.fun().name()
                    ))
                })?;
            }
        }
        Ok(OverAggregateOperator {
            partition_by,
            time,
            aggregates,
            frame,
            key_converter: RowConverter::new(key_types)?,
            rows: row_converter(&input_schema)?,
            input_schema,
            schema,
            pending: BTreeMap::new(),
            partitions: HashMap::new(),
            watermark: None,
            late_rows,
        })
    }

    fn new_partition(&self) -> Result<Partition> {
        let accumulators = self
            .aggregates
            .iter()
            .map(|a| {
                if self.frame.bounded() {
                    a.create_sliding_accumulator()
                } else {
                    a.create_accumulator()
                }
            })
            .collect::<datafusion::error::Result<_>>()?;
        Ok(Partition {
            accumulators,
            frame: VecDeque::new(),
        })
    }

    /// `rows` (in row format) as a batch of the input's columns.
    fn batch_of<'a>(&self, rows: impl Iterator<Item = &'a [u8]>) -> Result<RecordBatch> {
        let parser = self.rows.parser();
        let columns = self.rows.convert_rows(rows.map(|r| parser.parse(r)))?;
        Ok(RecordBatch::try_new(self.input_schema.clone(), columns)?)
    }

    /// The partition keys of `batch`'s rows: their columns, and each in row format
    /// (empty without PARTITION BY: one partition).
    fn keys_of(&self, batch: &RecordBatch) -> Result<(Vec<ArrayRef>, Vec<Row>)> {
        let n = batch.num_rows();
        if self.partition_by.is_empty() {
            return Ok((Vec::new(), vec![Box::default(); n]));
        }
        let columns: Vec<ArrayRef> = self
            .partition_by
            .iter()
            .map(|k| k.evaluate(batch).and_then(|v| v.into_array(n)))
            .collect::<datafusion::error::Result<_>>()?;
        let rows = self.key_converter.convert_columns(&columns)?;
        let keys = rows.iter().map(|r| r.as_ref().into()).collect();
        Ok((columns, keys))
    }

    /// Each aggregate's argument columns over `batch`.
    fn arguments(&self, batch: &RecordBatch) -> Result<Vec<Vec<ArrayRef>>> {
        let n = batch.num_rows();
        self.aggregates
            .iter()
            .map(|a| {
                a.expressions()
                    .iter()
                    .map(|e| Ok(e.evaluate(batch)?.into_array(n)?))
                    .collect()
            })
            .collect()
    }

    /// Adds row `i` of a batch (its argument columns `args`) to `partition`.
    fn add(
        &self,
        partition: &mut Partition,
        args: &[Vec<ArrayRef>],
        i: usize,
        time: i64,
        row: &[u8],
    ) -> Result<()> {
        let mut values = Vec::with_capacity(args.len());
        for (acc, columns) in partition.accumulators.iter_mut().zip(args) {
            let slices: Vec<ArrayRef> = columns.iter().map(|c| c.slice(i, 1)).collect();
            acc.update_batch(&slices)?;
            if self.frame.bounded() {
                values.push(
                    columns
                        .iter()
                        .map(|c| ScalarValue::try_from_array(c, i))
                        .collect::<datafusion::error::Result<Vec<_>>>()?,
                );
            }
        }
        if self.frame.bounded() {
            partition.frame.push_back(FrameRow {
                time,
                row: row.into(),
                args: values,
            });
        }
        Ok(())
    }

    /// Takes the rows that left the frame of a row at `time` out of `partition`.
    fn evict(&self, partition: &mut Partition, time: i64) -> Result<()> {
        loop {
            let leaves = match (self.frame, partition.frame.front()) {
                (Frame::Rows(Some(n)), Some(_)) => {
                    partition.frame.len() as u64 > n.saturating_add(1)
                }
                (Frame::Range(Some(ms)), Some(oldest)) => oldest.time < time.saturating_sub(ms),
                _ => false,
            };
            if !leaves {
                return Ok(());
            }
            let oldest = partition.frame.pop_front().expect("checked above");
            for (acc, values) in partition.accumulators.iter_mut().zip(&oldest.args) {
                let columns = values
                    .iter()
                    .map(|v| v.to_array())
                    .collect::<datafusion::error::Result<Vec<_>>>()?;
                acc.retract_batch(&columns)?;
            }
        }
    }

    /// Emits `due` (rows by time) in time order with their aggregates.
    fn emit(&mut self, due: BTreeMap<i64, Vec<Box<[u8]>>>, out: &mut Vec<Message>) -> Result<()> {
        let times: Vec<i64> = due
            .iter()
            .flat_map(|(&t, rows)| std::iter::repeat_n(t, rows.len()))
            .collect();
        let rows: Vec<Box<[u8]>> = due.into_values().flatten().collect();
        if rows.is_empty() {
            return Ok(());
        }
        let batch = self.batch_of(rows.iter().map(|r| r.as_ref()))?;
        let (_, keys) = self.keys_of(&batch)?;
        let args = self.arguments(&batch)?;
        let mut partitions = std::mem::take(&mut self.partitions);
        let mut results: Vec<Vec<ScalarValue>> =
            vec![Vec::with_capacity(rows.len()); self.aggregates.len()];
        // Rows of one time: all of them join their frames first under RANGE (peers).
        let mut start = 0;
        while start < rows.len() {
            let time = times[start];
            let end = match self.frame {
                Frame::Range(_) => {
                    start + times[start..].iter().take_while(|&&t| t == time).count()
                }
                Frame::Rows(_) => start + 1,
            };
            for i in start..end {
                let key = &keys[i];
                if !partitions.contains_key(key) {
                    partitions.insert(key.clone(), self.new_partition()?);
                }
                let partition = partitions.get_mut(key).expect("inserted above");
                self.add(partition, &args, i, time, &rows[i])?;
            }
            // Evaluate per row, in order (peers in a RANGE frame share their value).
            let mut evaluated: HashMap<Box<[u8]>, Vec<ScalarValue>> = HashMap::new();
            for key in &keys[start..end] {
                let partition = partitions.get_mut(key).expect("added above");
                if let Some(values) = evaluated.get(key) {
                    for (column, value) in results.iter_mut().zip(values) {
                        column.push(value.clone());
                    }
                    continue;
                }
                self.evict(partition, time)?;
                let values = partition
                    .accumulators
                    .iter_mut()
                    .map(|acc| acc.evaluate())
                    .collect::<datafusion::error::Result<Vec<_>>>()?;
                for (column, value) in results.iter_mut().zip(&values) {
                    column.push(value.clone());
                }
                if matches!(self.frame, Frame::Range(_)) {
                    evaluated.insert(key.clone(), values);
                }
            }
            start = end;
        }
        self.partitions = partitions;
        let mut columns = batch.columns().to_vec();
        for values in results {
            columns.push(ScalarValue::iter_to_array(values)?);
        }
        out.push(Message::Batch(RecordBatch::try_new(
            self.schema.clone(),
            columns,
        )?));
        Ok(())
    }

    /// The row format of every accumulator's state, one after the other.
    fn state_converter(&self) -> Result<(RowConverter, Vec<usize>)> {
        let mut fields = Vec::new();
        let mut widths = Vec::new();
        for aggregate in &self.aggregates {
            let state = aggregate.state_fields()?;
            widths.push(state.len());
            fields.extend(state.iter().map(|f| SortField::new(f.data_type().clone())));
        }
        Ok((RowConverter::new(fields)?, widths))
    }

    /// A fresh partition with the states [`encode_states`] wrote (in `converter`'s row
    /// format, `widths` values per aggregate) merged into its accumulators.
    fn decode_states(
        &self,
        converter: &RowConverter,
        widths: &[usize],
        value: &[u8],
    ) -> Result<Partition> {
        let parser = converter.parser();
        let columns = converter.convert_rows(std::iter::once(parser.parse(value)))?;
        let mut partition = self.new_partition()?;
        let mut columns = columns.into_iter();
        for (acc, &width) in partition.accumulators.iter_mut().zip(widths) {
            let state: Vec<ArrayRef> = columns.by_ref().take(width).collect();
            acc.merge_batch(&state)?;
        }
        Ok(partition)
    }

    /// Rows waiting for the watermark and rows held in frames, for tests and metrics.
    pub fn held_rows(&self) -> (usize, usize) {
        (
            self.pending.values().map(Vec::len).sum(),
            self.partitions.values().map(|p| p.frame.len()).sum(),
        )
    }
}

/// An unbounded frame's accumulator states (`Accumulator::state`), as one row in
/// `converter`'s format (see [`OverAggregateOperator::state_converter`]).
fn encode_states(converter: &RowConverter, partition: &mut Partition) -> Result<Vec<u8>> {
    let mut columns = Vec::new();
    for acc in partition.accumulators.iter_mut() {
        for value in acc.state()? {
            columns.push(value.to_array()?);
        }
    }
    let rows = converter.convert_columns(&columns)?;
    Ok(rows.row(0).as_ref().to_vec())
}

/// Snapshot key prefixes.
const PENDING: u8 = 0;
const FRAME_ROW: u8 = 1;
const WATERMARK: u8 = 2;
const ACCUMULATORS: u8 = 3;

impl Operator for OverAggregateOperator {
    fn name(&self) -> &'static str {
        "OverAggregate"
    }

    fn process_batch(&mut self, batch: RecordBatch, _out: &mut Vec<Message>) -> Result<()> {
        let times = timestamp_millis(&self.time.evaluate(&batch)?.into_array(batch.num_rows())?)?;
        let rows = self.rows.convert_columns(batch.columns())?;
        for (i, time) in times.into_iter().enumerate() {
            match time {
                // A watermark W says rows before W have all arrived: one at W is on time.
                Some(t) if self.watermark.is_none_or(|w| t >= w) => {
                    self.pending
                        .entry(t)
                        .or_default()
                        .push(rows.row(i).as_ref().into());
                }
                _ => {
                    self.late_rows.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    fn process_watermark(&mut self, watermark: Watermark, out: &mut Vec<Message>) -> Result<()> {
        self.watermark = Some(self.watermark.map_or(watermark.0, |w| w.max(watermark.0)));
        let due = take_through(&mut self.pending, watermark.0.saturating_sub(1));
        self.emit(due, out)?;
        out.push(Message::Watermark(watermark));
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Message>) -> Result<()> {
        let due = std::mem::take(&mut self.pending);
        self.emit(due, out)
    }

    fn snapshot_state(&mut self) -> Result<Vec<StateEntry>> {
        let mut entries = Vec::new();
        if let Some(w) = self.watermark {
            entries.push((OPERATOR_WIDE, vec![WATERMARK], w.to_le_bytes().to_vec()));
        }
        // Waiting rows, in the key group of their partition.
        let pending: Vec<(i64, &[u8])> = self
            .pending
            .iter()
            .flat_map(|(&t, rows)| rows.iter().map(move |r| (t, r.as_ref())))
            .collect();
        if !pending.is_empty() {
            let batch = self.batch_of(pending.iter().map(|(_, r)| *r))?;
            let (columns, _) = self.keys_of(&batch)?;
            let groups = key_groups_of_columns(&columns, batch.num_rows(), DEFAULT_KEY_GROUPS)?;
            for (seq, ((time, row), group)) in pending.iter().zip(groups).enumerate() {
                let mut key = vec![PENDING];
                key.extend_from_slice(&time.to_be_bytes());
                key.extend_from_slice(&(seq as u64).to_be_bytes());
                key.extend_from_slice(row);
                entries.push((group, key, Vec::new()));
            }
        }
        if self.partitions.is_empty() {
            return Ok(entries);
        }
        // Owned: unbounded frames' accumulators are read through `&mut` below.
        let keys: Vec<Row> = self.partitions.keys().cloned().collect();
        let held: Vec<&[u8]> = keys.iter().map(|k| k.as_ref()).collect();
        let groups = key_groups_of_rows(&self.key_converter, &held)?;
        let (converter, _) = self.state_converter()?;
        for (partition_key, group) in keys.iter().zip(groups) {
            let partition = self
                .partitions
                .get_mut(partition_key)
                .expect("a key of the map");
            let mut prefix = Vec::with_capacity(4 + partition_key.len());
            push_sized(&mut prefix, partition_key);
            if self.frame.bounded() {
                for (seq, frame_row) in partition.frame.iter().enumerate() {
                    let mut key = vec![FRAME_ROW];
                    key.extend_from_slice(&prefix);
                    key.extend_from_slice(&(seq as u64).to_be_bytes());
                    key.extend_from_slice(&frame_row.time.to_le_bytes());
                    key.extend_from_slice(&frame_row.row);
                    entries.push((group, key, Vec::new()));
                }
            } else {
                let mut key = vec![ACCUMULATORS];
                key.extend_from_slice(&prefix);
                entries.push((group, key, encode_states(&converter, partition)?));
            }
        }
        Ok(entries)
    }

    fn restore_state(&mut self, entries: Vec<StateEntry>) -> Result<()> {
        let corrupt =
            || SluiceError::corrupted("an OVER aggregate's checkpointed state entry is malformed");
        let mut pending: BTreeMap<(i64, u64), Box<[u8]>> = BTreeMap::new();
        // By partition and position in its frame: the row's time and the row.
        let mut frame_rows: BTreeMap<(Row, u64), (i64, Row)> = BTreeMap::new();
        // The row format of unbounded frames' accumulator states, built at the first.
        let mut states: Option<(RowConverter, Vec<usize>)> = None;
        for (_, key, value) in entries {
            match key.first() {
                Some(&WATERMARK) => {
                    let w: [u8; 8] = value.as_slice().try_into().map_err(|_| corrupt())?;
                    self.watermark = Some(i64::from_le_bytes(w));
                }
                Some(&PENDING) => {
                    let time: [u8; 8] = key
                        .get(1..9)
                        .ok_or_else(corrupt)?
                        .try_into()
                        .map_err(|_| corrupt())?;
                    let seq: [u8; 8] = key
                        .get(9..17)
                        .ok_or_else(corrupt)?
                        .try_into()
                        .map_err(|_| corrupt())?;
                    let row = key.get(17..).ok_or_else(corrupt)?;
                    pending.insert(
                        (i64::from_be_bytes(time), u64::from_be_bytes(seq)),
                        row.into(),
                    );
                }
                Some(&FRAME_ROW) | Some(&ACCUMULATORS) => {
                    let (partition_key, rest) = split_sized(&key[1..]).ok_or_else(corrupt)?;
                    if key[0] == ACCUMULATORS {
                        if states.is_none() {
                            states = Some(self.state_converter()?);
                        }
                        let (converter, widths) = states.as_ref().expect("set above");
                        let partition = self.decode_states(converter, widths, &value)?;
                        self.partitions.insert(partition_key.into(), partition);
                        continue;
                    }
                    let seq: [u8; 8] = rest
                        .get(..8)
                        .ok_or_else(corrupt)?
                        .try_into()
                        .map_err(|_| corrupt())?;
                    let time: [u8; 8] = rest
                        .get(8..16)
                        .ok_or_else(corrupt)?
                        .try_into()
                        .map_err(|_| corrupt())?;
                    frame_rows.insert(
                        (partition_key.into(), u64::from_be_bytes(seq)),
                        (i64::from_le_bytes(time), rest[16..].into()),
                    );
                }
                _ => return Err(corrupt()),
            }
        }
        // Waiting rows in time, then arrival order.
        for ((time, _), row) in pending {
            self.pending.entry(time).or_default().push(row);
        }
        if frame_rows.is_empty() {
            return Ok(());
        }
        let rows: Vec<(Row, i64, Row)> = frame_rows
            .into_iter()
            .map(|((key, _), (time, row))| (key, time, row))
            .collect();
        let batch = self.batch_of(rows.iter().map(|(_, _, r)| r.as_ref()))?;
        let args = self.arguments(&batch)?;
        for (i, (key, time, row)) in rows.iter().enumerate() {
            if !self.partitions.contains_key(key) {
                let partition = self.new_partition()?;
                self.partitions.insert(key.clone(), partition);
            }
            let mut partition = self.partitions.remove(key).expect("inserted above");
            self.add(&mut partition, &args, i, *time, row)?;
            self.partitions.insert(key.clone(), partition);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Int64Array, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use datafusion::functions_aggregate::sum::sum_udaf;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::Column;

    fn input_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]))
    }

    /// `sum(v) OVER (PARTITION BY k ORDER BY ts <frame>)`.
    fn operator(frame: Frame) -> OverAggregateOperator {
        let schema = input_schema();
        let sum = AggregateExprBuilder::new(sum_udaf(), vec![Arc::new(Column::new("v", 1))])
            .schema(schema.clone())
            .alias("s")
            .build()
            .unwrap();
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("s", DataType::Int64, true));
        OverAggregateOperator::new(
            vec![Arc::new(Column::new("k", 0))],
            Arc::new(Column::new("ts", 2)),
            vec![Arc::new(sum)],
            frame,
            schema,
            Arc::new(Schema::new(fields)),
            Arc::new(AtomicU64::new(0)),
        )
        .unwrap()
    }

    fn rows(rows: &[(i64, i64, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            input_schema(),
            vec![
                Arc::new(rows.iter().map(|r| r.0).collect::<Int64Array>()),
                Arc::new(rows.iter().map(|r| r.1).collect::<Int64Array>()),
                Arc::new(TimestampMillisecondArray::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap()
    }

    /// The emitted rows as `(ts, s)`, in output order.
    fn emitted(out: &[Message]) -> Vec<(i64, Option<i64>)> {
        let mut result = Vec::new();
        for m in out {
            let Message::Batch(b) = m else { continue };
            let ts = b
                .column(2)
                .as_any()
                .downcast_ref::<TimestampMillisecondArray>()
                .unwrap();
            let s = b.column(3).as_any().downcast_ref::<Int64Array>().unwrap();
            for i in 0..b.num_rows() {
                result.push((ts.value(i), (!s.is_null(i)).then(|| s.value(i))));
            }
        }
        result
    }

    #[test]
    fn rows_wait_for_the_watermark_and_come_out_in_time_order() {
        let mut op = operator(Frame::Rows(Some(1)));
        let mut out = Vec::new();
        op.process_batch(rows(&[(1, 5, 30), (1, 1, 10), (1, 2, 20)]), &mut out)
            .unwrap();
        assert!(emitted(&out).is_empty(), "nothing before the watermark");
        // Watermark 20: rows before 20 have all arrived; one at 20 may still come.
        op.process_watermark(Watermark(20), &mut out).unwrap();
        assert_eq!(emitted(&out), vec![(10, Some(1))]);
        out.clear();
        op.process_batch(rows(&[(1, 9, 15), (1, 4, 20)]), &mut out)
            .unwrap();
        assert_eq!(
            op.late_rows.load(Ordering::Relaxed),
            1,
            "behind the watermark"
        );
        op.process_watermark(Watermark(31), &mut out).unwrap();
        assert_eq!(
            emitted(&out),
            vec![(20, Some(3)), (20, Some(6)), (30, Some(9))]
        );
    }

    #[test]
    fn frames_and_waiting_rows_survive_a_snapshot() {
        for frame in [
            Frame::Rows(Some(1)),
            Frame::Range(Some(15)),
            Frame::Range(None),
        ] {
            let mut original = operator(frame);
            let mut out = Vec::new();
            original
                .process_batch(
                    rows(&[(1, 1, 10), (2, 4, 12), (1, 2, 20), (1, 3, 40)]),
                    &mut out,
                )
                .unwrap();
            original.process_watermark(Watermark(25), &mut out).unwrap();
            let mut restored = operator(frame);
            restored
                .restore_state(original.snapshot_state().unwrap())
                .unwrap();
            let mut expected = Vec::new();
            let mut actual = Vec::new();
            for op_out in [(&mut original, &mut expected), (&mut restored, &mut actual)] {
                op_out
                    .0
                    .process_batch(rows(&[(1, 5, 30), (2, 6, 31)]), op_out.1)
                    .unwrap();
                op_out.0.finish(op_out.1).unwrap();
            }
            assert_eq!(emitted(&actual), emitted(&expected), "{frame:?}");
            assert_eq!(emitted(&actual).len(), 3, "{frame:?}");
        }
    }
}
