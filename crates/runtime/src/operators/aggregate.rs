//! Updating GROUP BY aggregation.
//!
//! Each group keeps one DataFusion [`Accumulator`] per aggregate, so every aggregate
//! DataFusion has works here. Rows of a batch are bucketed by group and each bucket goes
//! to its accumulators in one `update_batch` (insertions) or `retract_batch` (retractions)
//! call. After the batch, every group whose result changed emits a change: `+I` for a new
//! group, `-U`/`+U` for a new value, `-D` when its last row was retracted. A global
//! aggregate (no GROUP BY) has one group that exists from the start, so `count(*)` over an
//! empty input is a row with 0, as in a batch query.
//!
//! Per-group accumulators (rather than DataFusion's `GroupsAccumulator`) are used because
//! results are read after every batch and `GroupsAccumulator::evaluate` consumes its state.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{ArrayRef, BooleanArray, Int8Array, RecordBatch, UInt32Array};
use arrow::compute::{filter, take};
use arrow::datatypes::{DataType, Schema, SchemaRef, TimeUnit};
use arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::scalar::ScalarValue;
use sluice_common::error::{Result, SluiceError};
use sluice_state::spill::DbCheckpoint;

mod snapshot;
mod spill;

use super::Operator;
use super::encoding::{take_through, wall_clock_ms};
use super::retractable::{MultisetAccumulator, MultisetAggregate};
use super::ttl::Recency;
use crate::message::{CheckpointBarrier, Message, OP_COLUMN, RowKind, Watermark, split_changelog};

/// Which accumulator an aggregate uses.
#[derive(Debug, Clone)]
enum AccumulatorKind {
    /// DataFusion's accumulator: append-only input.
    Plain,
    /// DataFusion's retractable ("sliding") accumulator, for aggregates whose retraction
    /// does not depend on the order rows arrived in (sum, count, avg).
    Sliding,
    /// A [`MultisetAccumulator`] of the argument's values (min, max, count distinct),
    /// with the row format every group shares.
    Multiset(MultisetAggregate, DataType, Arc<RowConverter>),
}

/// One aggregate of an [`AggregateOperator`].
pub struct AggregateSpec {
    pub function: Arc<AggregateFunctionExpr>,
    /// `FILTER (WHERE ...)`.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    accumulator: AccumulatorKind,
    /// Under a state TTL: retractions of values a group does not hold are ignored.
    forgetful: bool,
}

impl AggregateSpec {
    /// An aggregate over input of `input_schema`; `retracting` when the input carries
    /// retractions. Fails with `0A000` for an aggregate that cannot take rows back.
    pub fn new(
        function: Arc<AggregateFunctionExpr>,
        filter: Option<Arc<dyn PhysicalExpr>>,
        input_schema: &Schema,
        retracting: bool,
    ) -> Result<Self> {
        let name = function.fun().name().to_string();
        let accumulator = if !retracting {
            AccumulatorKind::Plain
        } else if !function.is_distinct()
            && matches!(name.as_str(), "count" | "sum" | "avg" | "mean")
        {
            // DataFusion's sliding accumulators retract oldest-first (window frames); for
            // these aggregates the order does not matter.
            AccumulatorKind::Sliding
        } else if let (Some(kind), [arg]) = (
            MultisetAggregate::for_function(&name, function.is_distinct()),
            function.expressions().as_slice(),
        ) {
            let data_type = arg.data_type(input_schema)?;
            let converter = Arc::new(MultisetAccumulator::converter(&data_type)?);
            AccumulatorKind::Multiset(kind, data_type, converter)
        } else {
            return Err(SluiceError::unsupported(format!(
                "aggregate {} over an updating input is not supported yet; \
                 count, sum, avg, min, max and count(DISTINCT) are",
                function.name()
            )));
        };
        Ok(AggregateSpec {
            function,
            filter,
            accumulator,
            forgetful: false,
        })
    }

    fn create_accumulator(&self) -> datafusion::error::Result<Box<dyn Accumulator>> {
        match &self.accumulator {
            AccumulatorKind::Plain => self.function.create_accumulator(),
            AccumulatorKind::Sliding => self.function.create_sliding_accumulator(),
            AccumulatorKind::Multiset(kind, data_type, converter) => {
                let accumulator = MultisetAccumulator::new(*kind, data_type, converter.clone());
                Ok(Box::new(if self.forgetful {
                    accumulator.forgetful()
                } else {
                    accumulator
                }))
            }
        }
    }
}

struct Group {
    /// The group key in row format; `None` for the one group of a global aggregate.
    key: Option<OwnedRow>,
    accumulators: Vec<Box<dyn Accumulator>>,
    /// Insertions minus retractions: the group exists while this is positive.
    rows: i64,
    /// The aggregate values last emitted for this group.
    emitted: Option<Vec<ScalarValue>>,
    /// With EMIT ON WINDOW CLOSE: the end of the group's window (ms since the epoch).
    window_end: Option<i64>,
}

/// A window aggregate: a group closes when the watermark, less the allowed lateness,
/// reaches its window's end, and is then forgotten, so state stays bounded however long
/// the stream runs. Rows of windows that already closed are late: dropped and counted.
/// With EMIT ON WINDOW CLOSE a group is emitted only when it closes, once, as an
/// insertion; otherwise it updates as rows arrive and closing emits nothing.
struct WindowClose {
    /// The group expression holding the window's end.
    group_index: usize,
    emit_on_close: bool,
    /// Allowed lateness (ms).
    lateness: i64,
    /// The watermark less the allowed lateness (ms): windows ending by then are closed.
    watermark: Option<i64>,
    /// Open windows: window end → the keys of its groups (in memory or spilled).
    open: BTreeMap<i64, Vec<Box<[u8]>>>,
    late_rows: Arc<AtomicU64>,
}

/// GROUP BY aggregation producing a changelog. Input may be append-only or a changelog
/// (retractions need accumulators that support `retract_batch`; the planner checks).
pub struct AggregateOperator {
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    aggregates: Vec<AggregateSpec>,
    /// Group columns, then aggregate columns, then the op column.
    schema: SchemaRef,
    converter: RowConverter,
    /// Group key (row-format bytes) to slot in `groups`.
    index: HashMap<Box<[u8]>, usize>,
    groups: Vec<Option<Group>>,
    free_slots: Vec<usize>,
    /// The output carries the op column (it does unless windows are emitted on close).
    changelog_output: bool,
    window_close: Option<WindowClose>,
    /// State TTL of a GROUP BY: a group (by key) not touched for the TTL (processing time)
    /// is retracted from the output and forgotten; a later row for its key starts it over.
    /// The touch times of every group, spilled ones too, stay in memory.
    /// Over an updating input, a retraction can then name a row the group counted before it
    /// was forgotten: a group ignores retractions beyond the rows it holds (and min, max and
    /// count(DISTINCT) ignore values they do not hold), but one that started over takes back
    /// rows it never counted, as Flink's aggregates under a TTL do.
    ttl: Option<Recency<Box<[u8]>>>,
    /// Groups beyond the memory budget (see [`spill`]).
    spill: Option<spill::Spill>,
}

impl AggregateOperator {
    pub fn new(
        group_exprs: Vec<Arc<dyn PhysicalExpr>>,
        aggregates: Vec<AggregateSpec>,
        schema: SchemaRef,
    ) -> Result<Self> {
        let fields = schema.fields();
        let changelog_output = fields.last().is_some_and(|f| f.name() == OP_COLUMN);
        debug_assert_eq!(
            fields.len(),
            group_exprs.len() + aggregates.len() + usize::from(changelog_output)
        );
        let sort_fields = fields[..group_exprs.len()]
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(AggregateOperator {
            converter: RowConverter::new(sort_fields)?,
            group_exprs,
            aggregates,
            schema,
            index: HashMap::new(),
            groups: Vec::new(),
            free_slots: Vec::new(),
            changelog_output,
            window_close: None,
            ttl: None,
            spill: None,
        })
    }

    /// Forgets groups not touched for `ttl` (see the `ttl` field). For grouped aggregates
    /// without windows.
    pub fn with_state_ttl(mut self, ttl: std::time::Duration) -> Self {
        debug_assert!(!self.group_exprs.is_empty() && self.window_close.is_none());
        for spec in &mut self.aggregates {
            spec.forgetful = true;
        }
        self.ttl = Some(Recency::new(ttl));
        self
    }

    /// Retracts and forgets the groups whose TTL has run out.
    fn forget_stale(&mut self, out: &mut Vec<Message>) -> Result<()> {
        let Some(ttl) = &mut self.ttl else {
            return Ok(());
        };
        let stale = ttl.stale(wall_clock_ms());
        // Spilled groups are read back (a chunk at a time) to retract their rows.
        for chunk in stale.chunks(sluice_state::spill::WRITE_CHUNK) {
            self.unspill_keys(chunk)?;
            let slots: Vec<usize> = chunk
                .iter()
                .filter_map(|key| self.index.get(key.as_ref()).copied())
                .collect();
            for &slot in &slots {
                if let Some(group) = self.groups[slot].as_mut() {
                    // No rows left: `emit` retracts the group's row and frees it.
                    group.rows = 0;
                }
            }
            self.emit(&slots, out)?;
            self.spill_over_budget(&slots)?;
        }
        Ok(())
    }

    /// Closes windows as the watermark passes their end plus `lateness_ms` (see
    /// [`WindowClose`]). `group_index` is the group expression holding the window end;
    /// rows arriving for a closed window are dropped and counted in `late_rows`. With
    /// `emit_on_close` (EMIT ON WINDOW CLOSE) the output schema must not have the op
    /// column: closed windows are final.
    pub fn with_windows(
        mut self,
        group_index: usize,
        emit_on_close: bool,
        lateness_ms: i64,
        late_rows: Arc<AtomicU64>,
    ) -> Self {
        debug_assert!(self.changelog_output != emit_on_close);
        debug_assert!(group_index < self.group_exprs.len());
        self.window_close = Some(WindowClose {
            group_index,
            emit_on_close,
            lateness: lateness_ms,
            watermark: None,
            open: BTreeMap::new(),
            late_rows,
        });
        self
    }

    /// The group key columns of `data`.
    fn group_keys(&self, data: &RecordBatch) -> Result<Vec<ArrayRef>> {
        let n = data.num_rows();
        Ok(self
            .group_exprs
            .iter()
            .map(|e| e.evaluate(data).and_then(|v| v.into_array(n)))
            .collect::<datafusion::error::Result<_>>()?)
    }

    /// Drops the rows of windows that already closed (counting them), from the rows, their
    /// ops and their group keys alike, and returns the window end of each remaining row.
    fn drop_late_rows(
        &mut self,
        data: RecordBatch,
        ops: Int8Array,
        keys: Vec<ArrayRef>,
    ) -> Result<(RecordBatch, Int8Array, Vec<ArrayRef>, Vec<i64>)> {
        let Some(wc) = &self.window_close else {
            return Ok((data, ops, keys, Vec::new()));
        };
        let ends = arrow::compute::cast(
            &keys[wc.group_index],
            &DataType::Timestamp(TimeUnit::Millisecond, None),
        )?;
        let ends = ends
            .as_any()
            .downcast_ref::<arrow::array::TimestampMillisecondArray>()
            .ok_or_else(|| SluiceError::internal("window end is not a timestamp"))?;
        let Some(watermark) = wc.watermark else {
            let ends = ends.iter().map(|e| e.unwrap_or(i64::MIN)).collect();
            return Ok((data, ops, keys, ends));
        };
        let keep: BooleanArray = ends
            .iter()
            .map(|e| Some(e.is_some_and(|e| e > watermark)))
            .collect();
        let late = data.num_rows() - keep.true_count();
        if late == 0 {
            let ends = ends.iter().map(|e| e.unwrap_or(i64::MIN)).collect();
            return Ok((data, ops, keys, ends));
        }
        wc.late_rows.fetch_add(late as u64, Ordering::Relaxed);
        let kept_ends = ends
            .iter()
            .zip(keep.values().iter())
            .filter(|(_, kept)| *kept)
            .map(|(e, _)| e.unwrap_or(i64::MIN))
            .collect();
        let data = arrow::compute::filter_record_batch(&data, &keep)?;
        let ops = filter(&ops, &keep)?
            .as_any()
            .downcast_ref::<Int8Array>()
            .expect("filtered Int8")
            .clone();
        let keys = keys
            .iter()
            .map(|k| filter(k, &keep))
            .collect::<Result<_, _>>()?;
        Ok((data, ops, keys, kept_ends))
    }

    /// Emits and forgets every open window ending at or before `upto` (all when `None`).
    fn close_windows(&mut self, upto: Option<i64>, out: &mut Vec<Message>) -> Result<()> {
        let Some(wc) = &mut self.window_close else {
            return Ok(());
        };
        let keys: Vec<Box<[u8]>> = match upto {
            Some(w) => take_through(&mut wc.open, w)
                .into_values()
                .flatten()
                .collect(),
            None => std::mem::take(&mut wc.open)
                .into_values()
                .flatten()
                .collect(),
        };
        if keys.is_empty() {
            return Ok(());
        }
        let emit_on_close = wc.emit_on_close;
        // A chunk at a time, so closing many spilled groups never holds them all.
        for chunk in keys.chunks(sluice_state::spill::WRITE_CHUNK) {
            if emit_on_close {
                // Spilled groups come back to be emitted.
                self.unspill_keys(chunk)?;
            }
            let mut closing = Vec::with_capacity(chunk.len());
            for key in chunk {
                match self.index.get(key.as_ref()) {
                    Some(&slot) => closing.push(slot),
                    // Spilled (or already gone): only its stored copy is left to delete.
                    None if self.spill.is_some() => {
                        let row = self.converter.parser().parse(key).owned();
                        self.spill_forget(Some(row));
                    }
                    None => {}
                }
            }
            if emit_on_close {
                self.emit(&closing, out)?;
            }
            for &slot in &closing {
                if let Some(group) = self.groups[slot].take() {
                    if let Some(key) = &group.key {
                        self.index.remove(key.as_ref());
                    }
                    self.free_slots.push(slot);
                    self.spill_forget(group.key);
                }
            }
            self.spill_over_budget(&closing)?;
        }
        Ok(())
    }

    fn is_global(&self) -> bool {
        self.group_exprs.is_empty()
    }

    /// Number of groups in memory, for tests and metrics.
    pub fn group_count(&self) -> usize {
        self.groups.iter().flatten().count()
    }

    fn new_group(&mut self, key: Option<OwnedRow>) -> Result<usize> {
        let accumulators = self
            .aggregates
            .iter()
            .map(AggregateSpec::create_accumulator)
            .collect::<datafusion::error::Result<_>>()?;
        let group = Group {
            key,
            accumulators,
            rows: 0,
            emitted: None,
            window_end: None,
        };
        Ok(self.place(group))
    }

    /// Puts `group` in a free slot (or a new one) and returns the slot.
    fn place(&mut self, group: Group) -> usize {
        match self.free_slots.pop() {
            Some(slot) => {
                self.groups[slot] = Some(group);
                slot
            }
            None => {
                self.groups.push(Some(group));
                self.groups.len() - 1
            }
        }
    }

    /// The global group exists from the first message on, so its initial value (count 0,
    /// sum NULL) is visible before any row arrives.
    fn ensure_global_group(&mut self, out: &mut Vec<Message>) -> Result<()> {
        if self.is_global() && self.groups.is_empty() {
            let slot = self.new_group(None)?;
            self.emit(&[slot], out)?;
        }
        Ok(())
    }

    /// The group slot of each of `n` rows with group key columns `keys`, creating groups
    /// for new keys.
    fn group_slots(&mut self, keys: &[ArrayRef], n: usize) -> Result<Vec<usize>> {
        if self.is_global() {
            return Ok(vec![0; n]);
        }
        let rows = self.converter.convert_columns(keys)?;
        self.unspill(keys, &rows)?;
        // Per-row loop: looking a key up in the group index is inherently per row.
        let mut slots = Vec::with_capacity(n);
        for row in rows.iter() {
            let slot = match self.index.get(row.data()) {
                Some(&slot) => slot,
                None => {
                    let slot = self.new_group(Some(row.owned()))?;
                    self.index.insert(row.data().into(), slot);
                    slot
                }
            };
            slots.push(slot);
        }
        Ok(slots)
    }

    /// Emits the changes of the groups in `slots` whose value differs from what was last
    /// emitted; drops groups whose rows were all retracted.
    fn emit(&mut self, slots: &[usize], out: &mut Vec<Message>) -> Result<()> {
        let mut keys: Vec<Option<OwnedRow>> = Vec::new();
        let mut values: Vec<Vec<ScalarValue>> = vec![Vec::new(); self.aggregates.len()];
        let mut ops: Vec<i8> = Vec::new();
        let mut push = |key: &Option<OwnedRow>, row: &[ScalarValue], op: RowKind| {
            keys.push(key.clone());
            for (col, v) in values.iter_mut().zip(row) {
                col.push(v.clone());
            }
            ops.push(op as i8);
        };
        let global = self.is_global();
        for &slot in slots {
            let Some(group) = self.groups[slot].as_mut() else {
                continue;
            };
            if group.rows < 0 {
                return Err(SluiceError::internal(
                    "aggregate received more retractions than insertions for a group",
                ));
            }
            if group.rows == 0 && !global {
                if let Some(old) = group.emitted.take() {
                    push(&group.key, &old, RowKind::Delete);
                }
                let group = self.groups[slot].take().expect("checked above");
                if let Some(key) = &group.key {
                    self.index.remove(key.as_ref());
                }
                self.free_slots.push(slot);
                self.spill_forget(group.key);
                continue;
            }
            let new: Vec<ScalarValue> = group
                .accumulators
                .iter_mut()
                .map(|a| a.evaluate())
                .collect::<datafusion::error::Result<_>>()?;
            match &group.emitted {
                Some(old) if *old == new => continue,
                Some(old) => {
                    push(&group.key, old, RowKind::UpdateBefore);
                    push(&group.key, &new, RowKind::UpdateAfter);
                }
                None => push(&group.key, &new, RowKind::Insert),
            }
            group.emitted = Some(new);
        }
        if ops.is_empty() {
            return Ok(());
        }
        let mut columns: Vec<ArrayRef> = if global {
            Vec::new()
        } else {
            self.converter
                .convert_rows(keys.iter().flatten().map(|k| k.row()))?
        };
        for (col, field) in values
            .into_iter()
            .zip(&self.schema.fields()[self.group_exprs.len()..])
        {
            let array = if col.is_empty() {
                arrow::array::new_empty_array(field.data_type())
            } else {
                ScalarValue::iter_to_array(col)?
            };
            columns.push(arrow::compute::cast(&array, field.data_type())?);
        }
        if self.changelog_output {
            columns.push(Arc::new(Int8Array::from(ops)));
        }
        out.push(Message::Batch(RecordBatch::try_new(
            self.schema.clone(),
            columns,
        )?));
        Ok(())
    }
}

impl Operator for AggregateOperator {
    fn name(&self) -> &'static str {
        "Aggregate"
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<Message>) -> Result<()> {
        self.ensure_global_group(out)?;
        self.forget_stale(out)?;
        let (data, ops) = split_changelog(&batch);
        let keys = self.group_keys(&data)?;
        let (data, ops, keys, window_ends) = self.drop_late_rows(data, ops, keys)?;
        let n = data.num_rows();
        if n == 0 {
            return Ok(());
        }
        let slots = self.group_slots(&keys, n)?;
        if let Some(wc) = &mut self.window_close {
            // Per-row loop: each new group is filed under its window's end.
            for (&slot, &end) in slots.iter().zip(&window_ends) {
                let group = self.groups[slot].as_mut().expect("slot was just assigned");
                if group.window_end.is_none() {
                    group.window_end = Some(end);
                    let key = group.key.as_ref().expect("windows are grouped");
                    wc.open.entry(end).or_default().push(key.as_ref().into());
                }
            }
        }

        // Bucket rows by group, insertions and retractions apart.
        let mut local_of: HashMap<usize, usize> = HashMap::new();
        let mut touched: Vec<usize> = Vec::new();
        let mut additions: Vec<Vec<u32>> = Vec::new();
        let mut retractions: Vec<Vec<u32>> = Vec::new();
        for (row, &slot) in slots.iter().enumerate() {
            let local = *local_of.entry(slot).or_insert_with(|| {
                touched.push(slot);
                additions.push(Vec::new());
                retractions.push(Vec::new());
                touched.len() - 1
            });
            if RowKind::is_addition(ops.value(row)) {
                additions[local].push(row as u32);
            } else {
                retractions[local].push(row as u32);
            }
        }
        if let Some(ttl) = &mut self.ttl {
            let now = wall_clock_ms();
            for (local, &slot) in touched.iter().enumerate() {
                let group = self.groups[slot].as_ref().expect("slot was just looked up");
                if let Some(key) = &group.key {
                    ttl.touch(key.as_ref().into(), now);
                }
                // Rows of a forgotten group are not retracted (see the `ttl` field).
                let held = group.rows + additions[local].len() as i64;
                retractions[local].truncate(held.max(0) as usize);
            }
        }

        let mut arguments: Vec<(Vec<ArrayRef>, Option<BooleanArray>)> = Vec::new();
        for spec in &self.aggregates {
            let args = spec
                .function
                .expressions()
                .iter()
                .map(|e| e.evaluate(&data).and_then(|v| v.into_array(n)))
                .collect::<datafusion::error::Result<Vec<_>>>()?;
            let mask = match &spec.filter {
                Some(f) => {
                    let m = f.evaluate(&data)?.into_array(n)?;
                    let m = m
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .ok_or_else(|| SluiceError::internal("aggregate FILTER is not boolean"))?
                        .clone();
                    Some(m)
                }
                None => None,
            };
            arguments.push((args, mask));
        }

        // One `take` per argument puts each group's rows next to each other (additions,
        // then retractions); every group then reads zero-copy slices of it. Taking per
        // group instead costs an allocation per group and argument, which dominates when
        // a batch touches thousands of small groups (Nexmark q5, q7).
        let mut order: Vec<u32> = Vec::with_capacity(n);
        let mut runs: Vec<(usize, bool, std::ops::Range<usize>)> = Vec::new();
        for (local, &slot) in touched.iter().enumerate() {
            for (retract, rows) in [(false, &additions[local]), (true, &retractions[local])] {
                if !rows.is_empty() {
                    let start = order.len();
                    order.extend_from_slice(rows);
                    runs.push((slot, retract, start..order.len()));
                }
            }
        }
        let order = UInt32Array::from(order);
        let mut grouped: Vec<(Vec<ArrayRef>, Option<BooleanArray>)> =
            Vec::with_capacity(arguments.len());
        for (args, mask) in &arguments {
            let args = args
                .iter()
                .map(|a| take(a, &order, None))
                .collect::<Result<Vec<_>, _>>()?;
            let mask = match mask {
                Some(mask) => Some(
                    take(mask, &order, None)?
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .expect("taken from booleans")
                        .clone(),
                ),
                None => None,
            };
            grouped.push((args, mask));
        }

        for (slot, retract, range) in runs {
            let group = self.groups[slot].as_mut().expect("slot was just looked up");
            for (j, (args, mask)) in grouped.iter().enumerate() {
                let mut values: Vec<ArrayRef> = args
                    .iter()
                    .map(|a| a.slice(range.start, range.len()))
                    .collect();
                if let Some(mask) = mask {
                    let m = mask.slice(range.start, range.len());
                    values = values
                        .iter()
                        .map(|v| filter(v, &m))
                        .collect::<Result<_, _>>()?;
                }
                let acc = &mut group.accumulators[j];
                if retract {
                    if !acc.supports_retract_batch() {
                        return Err(SluiceError::unsupported(format!(
                            "aggregate {} cannot take back rows yet, so it cannot run over an updating input",
                            self.aggregates[j].function.name()
                        )));
                    }
                    acc.retract_batch(&values)?;
                } else {
                    acc.update_batch(&values)?;
                }
            }
            let delta = range.len() as i64;
            group.rows += if retract { -delta } else { delta };
        }
        if self
            .window_close
            .as_ref()
            .is_some_and(|wc| wc.emit_on_close)
        {
            // Windows are emitted when they close, not as rows arrive.
            return self.spill_over_budget(&touched);
        }
        self.emit(&touched, out)?;
        self.spill_over_budget(&touched)
    }

    fn process_watermark(&mut self, watermark: Watermark, out: &mut Vec<Message>) -> Result<()> {
        self.ensure_global_group(out)?;
        self.forget_stale(out)?;
        if let Some(wc) = &mut self.window_close {
            let closed_by = watermark.0.saturating_sub(wc.lateness);
            wc.watermark = Some(closed_by);
            self.close_windows(Some(closed_by), out)?;
        }
        out.push(Message::Watermark(watermark));
        Ok(())
    }

    fn process_barrier(
        &mut self,
        barrier: CheckpointBarrier,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        self.ensure_global_group(out)?;
        self.forget_stale(out)?;
        out.push(Message::Barrier(barrier));
        Ok(())
    }

    /// At the end of a bounded input every window is complete (the watermark is +∞).
    fn finish(&mut self, out: &mut Vec<Message>) -> Result<()> {
        self.ensure_global_group(out)?;
        self.close_windows(None, out)
    }

    fn snapshot_state(&mut self) -> Result<Vec<crate::operators::StateEntry>> {
        self.snapshot_groups()
    }

    fn snapshot_database(&mut self) -> Result<Option<DbCheckpoint>> {
        self.spill
            .as_ref()
            .map_or(Ok(None), |spill| spill.store.checkpoint())
    }

    /// A spilling aggregate copies the groups of restored spill stores into its own.
    fn restore(&mut self, state: crate::operators::RestoredState<'_>) -> Result<()> {
        let copied = crate::operators::restore_spilling(self, state, |a| {
            a.spill.as_mut().map(|s| &mut s.store)
        })?;
        self.index_stored_windows()?;
        if copied {
            // restore_state gave the groups of the entries their TTL.
            self.touch_restored_groups()?;
        }
        Ok(())
    }

    /// Restored groups get a fresh TTL: touch times are not checkpointed.
    fn restore_state(&mut self, entries: Vec<crate::operators::StateEntry>) -> Result<()> {
        self.restore_groups(entries)?;
        self.touch_restored_groups()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Int32Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::functions_aggregate::count::count_udaf;
    use datafusion::functions_aggregate::sum::sum_udaf;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::Column;

    use crate::message::{BarrierKind, changelog_schema, op_column};
    use sluice_state::SpillStore;

    fn input_schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int32, false),
            Field::new("v", DataType::Int64, true),
        ]))
    }

    /// `SELECT k, count(v), sum(v) ... GROUP BY k`, or the global form without `k`.
    fn operator(grouped: bool, retracting: bool) -> AggregateOperator {
        let schema = input_schema();
        let v: Arc<dyn PhysicalExpr> = Arc::new(Column::new("v", 1));
        let spec = |udaf, name: &str| {
            let function = AggregateExprBuilder::new(udaf, vec![v.clone()])
                .schema(schema.clone())
                .alias(name)
                .build()
                .unwrap();
            AggregateSpec::new(Arc::new(function), None, &schema, retracting).unwrap()
        };
        let mut fields = vec![];
        let mut groups: Vec<Arc<dyn PhysicalExpr>> = vec![];
        if grouped {
            fields.push(Field::new("k", DataType::Int32, false));
            groups.push(Arc::new(Column::new("k", 0)));
        }
        fields.push(Field::new("n", DataType::Int64, false));
        fields.push(Field::new("s", DataType::Int64, true));
        let output = changelog_schema(&Schema::new(fields));
        AggregateOperator::new(
            groups,
            vec![spec(count_udaf(), "n"), spec(sum_udaf(), "s")],
            output,
        )
        .unwrap()
    }

    fn rows(keys: Vec<i32>, values: Vec<i64>, ops: Option<Vec<RowKind>>) -> RecordBatch {
        let base = input_schema();
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(keys)),
            Arc::new(Int64Array::from(values)),
        ];
        let schema = match ops {
            Some(ops) => {
                columns.push(Arc::new(Int8Array::from(
                    ops.into_iter().map(|o| o as i8).collect::<Vec<_>>(),
                )));
                changelog_schema(&base)
            }
            None => base,
        };
        RecordBatch::try_new(schema, columns).unwrap()
    }

    /// The emitted changes as `op k n s` strings, in order.
    fn changes(out: &[Message]) -> Vec<String> {
        let mut result = vec![];
        for m in out {
            let Message::Batch(b) = m else { continue };
            let ops = op_column(b).unwrap();
            for r in 0..b.num_rows() {
                let values: Vec<String> = (0..b.num_columns() - 1)
                    .map(|c| match b.column(c).is_null(r) {
                        true => "NULL".to_string(),
                        false => {
                            arrow::util::display::array_value_to_string(b.column(c), r).unwrap()
                        }
                    })
                    .collect();
                result.push(format!(
                    "{} {}",
                    RowKind::symbol(ops.value(r)),
                    values.join(" ")
                ));
            }
        }
        result
    }

    #[test]
    fn new_groups_insert_changed_groups_update_and_unchanged_groups_stay_quiet() {
        let mut agg = operator(true, false);
        let mut out = vec![];
        agg.process_batch(rows(vec![1, 2, 1], vec![10, 20, 5], None), &mut out)
            .unwrap();
        assert_eq!(changes(&out), vec!["+I 1 2 15", "+I 2 1 20"]);
        out.clear();
        agg.process_batch(rows(vec![2], vec![7], None), &mut out)
            .unwrap();
        assert_eq!(changes(&out), vec!["-U 2 1 20", "+U 2 2 27"]);
        assert_eq!(agg.group_count(), 2);
    }

    #[test]
    fn retracting_every_row_of_a_group_deletes_it() {
        let mut agg = operator(true, true);
        let mut out = vec![];
        agg.process_batch(
            rows(vec![1, 1], vec![3, 4], Some(vec![RowKind::Insert; 2])),
            &mut out,
        )
        .unwrap();
        out.clear();
        agg.process_batch(
            rows(vec![1], vec![3], Some(vec![RowKind::Delete])),
            &mut out,
        )
        .unwrap();
        assert_eq!(changes(&out), vec!["-U 1 2 7", "+U 1 1 4"]);
        out.clear();
        agg.process_batch(
            rows(vec![1], vec![4], Some(vec![RowKind::UpdateBefore])),
            &mut out,
        )
        .unwrap();
        assert_eq!(changes(&out), vec!["-D 1 1 4"]);
        assert_eq!(agg.group_count(), 0);
    }

    #[test]
    fn a_spilling_ttl_reads_stale_groups_back_to_retract_them() {
        // A 0 ms TTL: every group is forgotten at the next batch.
        let make = || {
            operator(true, true)
                .with_state_ttl(std::time::Duration::ZERO)
                .with_spill(SpillStore::in_memory(0))
        };
        let mut agg = make();
        let mut out = vec![];
        let insert = |k: i32, v: i64| rows(vec![k], vec![v], Some(vec![RowKind::Insert]));
        agg.process_batch(insert(1, 5), &mut out).unwrap();
        assert_eq!(changes(&out), vec!["+I 1 1 5"]);
        assert_eq!((agg.group_count(), agg.stored_group_count()), (0, 1));
        out.clear();
        agg.process_batch(insert(2, 7), &mut out).unwrap();
        assert_eq!(changes(&out), vec!["-D 1 1 5", "+I 2 1 7"]);
        assert_eq!(agg.stored_group_count(), 1, "group 1 left the store");

        // Restored groups (all in the store) live one more TTL, then go stale.
        let mut restored = make();
        restored
            .restore(crate::operators::RestoredState::of_entries(
                agg.snapshot_state().unwrap(),
            ))
            .unwrap();
        out.clear();
        restored.process_batch(insert(3, 1), &mut out).unwrap();
        assert_eq!(changes(&out), vec!["-D 2 1 7", "+I 3 1 1"]);
    }

    #[test]
    fn a_ttl_over_updating_input_retracts_stale_groups_and_ignores_their_rows() {
        // A 0 ms TTL: every group is forgotten at the next batch.
        let mut agg = operator(true, true).with_state_ttl(std::time::Duration::ZERO);
        let mut out = vec![];
        agg.process_batch(
            rows(vec![1], vec![5], Some(vec![RowKind::Insert])),
            &mut out,
        )
        .unwrap();
        assert_eq!(changes(&out), vec!["+I 1 1 5"]);
        out.clear();
        // The group leaves the view; the retraction of its row is then ignored.
        agg.process_batch(
            rows(vec![1], vec![5], Some(vec![RowKind::Delete])),
            &mut out,
        )
        .unwrap();
        assert_eq!(changes(&out), vec!["-D 1 1 5"]);
        assert_eq!(agg.group_count(), 0);
        out.clear();
        agg.process_batch(
            rows(vec![1], vec![7], Some(vec![RowKind::Insert])),
            &mut out,
        )
        .unwrap();
        assert_eq!(changes(&out), vec!["+I 1 1 7"], "the group starts over");
    }

    #[test]
    fn global_aggregate_exists_before_any_row() {
        let mut agg = operator(false, false);
        let mut out = vec![];
        agg.process_barrier(
            CheckpointBarrier {
                epoch: 1,
                kind: BarrierKind::Flush,
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(changes(&out), vec!["+I 0 NULL"]);
        assert!(matches!(out.last(), Some(Message::Barrier(_))));
        out.clear();
        agg.process_batch(rows(vec![9], vec![4], None), &mut out)
            .unwrap();
        assert_eq!(changes(&out), vec!["-U 0 NULL", "+U 1 4"]);
    }

    /// `SELECT window_end, count(v), sum(v) ... GROUP BY window_end EMIT ON WINDOW CLOSE`,
    /// with the window end given directly as a millisecond timestamp column.
    fn window_operator(late: Arc<AtomicU64>) -> AggregateOperator {
        window_operator_with(true, late)
    }

    /// `SELECT window_end, count(v), sum(v) GROUP BY window_end`, emitting on close or
    /// updating.
    fn window_operator_with(emit_on_close: bool, late: Arc<AtomicU64>) -> AggregateOperator {
        let input = Arc::new(Schema::new(vec![
            Field::new(
                "window_end",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
            Field::new("v", DataType::Int64, true),
        ]));
        let v: Arc<dyn PhysicalExpr> = Arc::new(Column::new("v", 1));
        let spec = |udaf, name: &str| {
            let function = AggregateExprBuilder::new(udaf, vec![v.clone()])
                .schema(input.clone())
                .alias(name)
                .build()
                .unwrap();
            AggregateSpec::new(Arc::new(function), None, &input, false).unwrap()
        };
        let output = Schema::new(vec![
            Field::new(
                "window_end",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Int64, true),
        ]);
        let output = if emit_on_close {
            Arc::new(output)
        } else {
            changelog_schema(&output)
        };
        AggregateOperator::new(
            vec![Arc::new(Column::new("window_end", 0))],
            vec![spec(count_udaf(), "n"), spec(sum_udaf(), "s")],
            output,
        )
        .unwrap()
        .with_windows(0, emit_on_close, 0, late)
    }

    fn window_rows(ends: Vec<i64>, values: Vec<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "window_end",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
            Field::new("v", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(arrow::array::TimestampMillisecondArray::from(ends)),
                Arc::new(Int64Array::from(values)),
            ],
        )
        .unwrap()
    }

    fn emitted_rows(out: &[Message]) -> Vec<String> {
        out.iter()
            .filter_map(|m| match m {
                Message::Batch(b) => Some(b),
                _ => None,
            })
            .flat_map(|b| {
                assert!(op_column(b).is_none(), "closed windows are append-only");
                (0..b.num_rows()).map(|r| {
                    (0..b.num_columns())
                        .map(|c| {
                            arrow::util::display::array_value_to_string(b.column(c), r).unwrap()
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                })
            })
            .collect()
    }

    #[test]
    fn windows_emit_once_when_the_watermark_passes_and_late_rows_are_dropped() {
        let late = Arc::new(AtomicU64::new(0));
        let mut agg = window_operator(late.clone());
        let mut out = vec![];
        agg.process_batch(window_rows(vec![10, 20, 10], vec![1, 2, 3]), &mut out)
            .unwrap();
        assert!(
            emitted_rows(&out).is_empty(),
            "nothing is emitted before its window closes"
        );
        agg.process_watermark(Watermark(10), &mut out).unwrap();
        assert_eq!(emitted_rows(&out), vec!["1970-01-01T00:00:00.010 2 4"]);
        assert_eq!(agg.group_count(), 1, "the closed window's state is freed");
        out.clear();
        agg.process_batch(window_rows(vec![10, 20], vec![100, 4]), &mut out)
            .unwrap();
        assert_eq!(
            late.load(Ordering::Relaxed),
            1,
            "the row of the closed window is late"
        );
        agg.finish(&mut out).unwrap();
        assert_eq!(emitted_rows(&out), vec!["1970-01-01T00:00:00.020 2 6"]);
        assert_eq!(agg.group_count(), 0);
    }

    #[test]
    fn state_stays_bounded_over_many_windows() {
        let mut agg = window_operator(Arc::new(AtomicU64::new(0)));
        let mut out = vec![];
        for window in 1..=1000i64 {
            agg.process_batch(window_rows(vec![window * 10; 3], vec![1, 2, 3]), &mut out)
                .unwrap();
            agg.process_watermark(Watermark(window * 10 - 10), &mut out)
                .unwrap();
            assert!(
                agg.group_count() <= 2,
                "open windows: {}",
                agg.group_count()
            );
        }
        assert_eq!(emitted_rows(&out).len(), 999);
    }

    #[test]
    fn updating_windows_free_their_state_when_the_watermark_passes() {
        let late = Arc::new(AtomicU64::new(0));
        let mut agg = window_operator_with(false, late.clone());
        let mut out = vec![];
        for window in 1..=1000i64 {
            agg.process_batch(window_rows(vec![window * 10; 3], vec![1, 2, 3]), &mut out)
                .unwrap();
            agg.process_watermark(Watermark(window * 10 - 10), &mut out)
                .unwrap();
            assert!(
                agg.group_count() <= 2,
                "open windows: {}",
                agg.group_count()
            );
        }
        // Each window was inserted as its rows came (one batch, one +I), never retracted.
        let inserts = out
            .iter()
            .filter_map(|m| match m {
                Message::Batch(b) => op_column(b).cloned(),
                _ => None,
            })
            .flat_map(|ops| ops.values().to_vec())
            .filter(|&op| op == RowKind::Insert as i8)
            .count();
        assert_eq!(inserts, 1000);
        // A row for a freed window is late.
        agg.process_batch(window_rows(vec![10], vec![5]), &mut out)
            .unwrap();
        assert_eq!(late.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn retracting_from_an_accumulator_that_cannot_is_refused() {
        let mut agg = operator(true, false);
        let mut out = vec![];
        agg.process_batch(
            rows(vec![1], vec![3], Some(vec![RowKind::Insert])),
            &mut out,
        )
        .unwrap();
        let err = agg
            .process_batch(
                rows(vec![1], vec![3], Some(vec![RowKind::Delete])),
                &mut out,
            )
            .unwrap_err();
        assert_eq!(err.state, sluice_common::SqlState::FEATURE_NOT_SUPPORTED);
    }

    /// Batches of inserts and retractions (of rows inserted before) over 40 keys, from a
    /// fixed seed: the same input for every operator compared.
    fn churn(batches: usize) -> Vec<RecordBatch> {
        let mut next = crate::test_support::xorshift(0x9e37_79b9_7f4a_7c15u64);
        let mut held: Vec<(i32, i64)> = Vec::new();
        (0..batches)
            .map(|_| {
                let (mut keys, mut values, mut ops) = (vec![], vec![], vec![]);
                for _ in 0..1 + next(30) {
                    if !held.is_empty() && next(3) == 0 {
                        let (k, v) = held.swap_remove(next(held.len() as u64) as usize);
                        keys.push(k);
                        values.push(v);
                        ops.push(RowKind::Delete);
                    } else {
                        let (k, v) = (next(40) as i32, next(1000) as i64);
                        held.push((k, v));
                        keys.push(k);
                        values.push(v);
                        ops.push(RowKind::Insert);
                    }
                }
                rows(keys, values, Some(ops))
            })
            .collect()
    }

    #[test]
    fn spilled_groups_come_back_with_their_values_and_change_no_result() {
        let input = churn(60);
        let mut reference = operator(true, true);
        let mut everything_spilled = operator(true, true).with_spill(SpillStore::in_memory(0));
        // Room for a handful of groups: some stay, the least recently used go.
        let budget = 6 * (group_size_estimate(&mut operator(true, true)));
        let mut some_spilled = operator(true, true).with_spill(SpillStore::in_memory(budget));
        let mut spilled_some = false;
        for (i, batch) in input.into_iter().enumerate() {
            let mut expected = vec![];
            reference
                .process_batch(batch.clone(), &mut expected)
                .unwrap();
            for agg in [&mut everything_spilled, &mut some_spilled] {
                let mut out = vec![];
                agg.process_batch(batch.clone(), &mut out).unwrap();
                assert_eq!(changes(&out), changes(&expected));
            }
            assert_eq!(everything_spilled.group_count(), 0);
            assert_eq!(
                everything_spilled.stored_group_count(),
                reference.group_count(),
                "every live group is in the store, and no deleted one"
            );
            assert!(
                some_spilled.group_count() <= 6,
                "{}",
                some_spilled.group_count()
            );
            spilled_some |= some_spilled.stored_group_count() > 0 && some_spilled.group_count() > 0;
            if i % 7 == 6 {
                // A barrier writes the changed groups: the store is then the state.
                let mut snapshot = some_spilled.snapshot_state().unwrap();
                snapshot.sort();
                let mut expected = reference.snapshot_state().unwrap();
                expected.sort();
                assert_eq!(snapshot, expected);
                assert_eq!(some_spilled.stored_group_count(), reference.group_count());
            }
        }
        assert!(
            spilled_some,
            "the small budget kept some groups and spilled others"
        );
    }

    /// The estimated size of one group of `agg`'s shape.
    fn group_size_estimate(agg: &mut AggregateOperator) -> usize {
        agg.process_batch(
            rows(vec![1], vec![1], Some(vec![RowKind::Insert])),
            &mut vec![],
        )
        .unwrap();
        spill::group_size(agg.groups[0].as_ref().unwrap())
    }

    #[test]
    fn a_spilling_aggregate_snapshots_its_stored_groups_and_restores_without_reading_them() {
        let input = churn(40);
        let (before, after) = input.split_at(25);
        let mut spilling = operator(true, true).with_spill(SpillStore::in_memory(0));
        let mut reference = operator(true, true);
        for batch in before {
            spilling.process_batch(batch.clone(), &mut vec![]).unwrap();
            reference.process_batch(batch.clone(), &mut vec![]).unwrap();
        }
        let mut snapshot = spilling.snapshot_state().unwrap();
        snapshot.sort();
        let mut expected = reference.snapshot_state().unwrap();
        expected.sort();
        assert_eq!(
            snapshot, expected,
            "a snapshot does not depend on where groups were"
        );

        let mut restored = operator(true, true).with_spill(SpillStore::in_memory(0));
        restored.restore_state(snapshot.clone()).unwrap();
        assert_eq!(
            restored.group_count(),
            0,
            "restored groups stay in the store"
        );
        assert_eq!(restored.stored_group_count(), reference.group_count());
        let mut in_memory = operator(true, true);
        in_memory.restore_state(snapshot).unwrap();
        for batch in after {
            let mut out = vec![];
            reference.process_batch(batch.clone(), &mut out).unwrap();
            for agg in [&mut restored, &mut in_memory] {
                let mut got = vec![];
                agg.process_batch(batch.clone(), &mut got).unwrap();
                assert_eq!(changes(&got), changes(&out));
            }
        }
    }

    #[test]
    fn spilled_window_groups_close_and_restore_like_groups_in_memory() {
        let mut next = crate::test_support::xorshift(0x5851_f42d_4c95_7f2d);
        // 40 batches over 60 windows, the watermark trailing the newest by ~10.
        let mut input = Vec::new();
        for step in 0..40i64 {
            let ends: Vec<i64> = (0..1 + next(6)).map(|_| step + next(12) as i64).collect();
            let values = ends.iter().map(|_| next(100) as i64).collect();
            input.push((window_rows(ends, values), step - 2));
        }
        let render = |out: &[Message]| -> Vec<String> {
            let batches: Vec<Message> = out
                .iter()
                .filter(|m| matches!(m, Message::Batch(_)))
                .cloned()
                .collect();
            let mut rows = match batches.first() {
                Some(Message::Batch(b)) if op_column(b).is_none() => emitted_rows(&batches),
                _ => changes(&batches),
            };
            rows.sort();
            rows
        };
        for emit_on_close in [true, false] {
            let late = || Arc::new(AtomicU64::new(0));
            let mut reference = window_operator_with(emit_on_close, late());
            let mut spilled: Vec<AggregateOperator> = [0, 300]
                .into_iter()
                .map(|budget| {
                    window_operator_with(emit_on_close, late())
                        .with_spill(SpillStore::in_memory(budget))
                })
                .collect();
            for (i, (batch, watermark)) in input.iter().enumerate() {
                let mut expected = vec![];
                reference
                    .process_batch(batch.clone(), &mut expected)
                    .unwrap();
                reference
                    .process_watermark(Watermark(*watermark), &mut expected)
                    .unwrap();
                for agg in spilled.iter_mut() {
                    let mut out = vec![];
                    agg.process_batch(batch.clone(), &mut out).unwrap();
                    agg.process_watermark(Watermark(*watermark), &mut out)
                        .unwrap();
                    assert_eq!(render(&out), render(&expected), "step {i}");
                }
                assert_eq!(spilled[0].group_count(), 0, "no budget: all on disk");
                assert_eq!(spilled[0].stored_group_count(), reference.group_count());
                if i == 20 {
                    // Restored, the stored groups are filed under their windows again.
                    let snapshot = spilled[1].snapshot_state().unwrap();
                    let mut restored = window_operator_with(emit_on_close, late())
                        .with_spill(SpillStore::in_memory(300));
                    restored
                        .restore(crate::operators::RestoredState::of_entries(snapshot))
                        .unwrap();
                    spilled[1] = restored;
                }
            }
            let mut expected = vec![];
            reference.finish(&mut expected).unwrap();
            for agg in spilled.iter_mut() {
                let mut out = vec![];
                agg.finish(&mut out).unwrap();
                assert_eq!(render(&out), render(&expected));
                assert_eq!(
                    agg.stored_group_count(),
                    0,
                    "closed windows leave the store"
                );
            }
        }
    }
}
