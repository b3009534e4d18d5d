//! Streaming equi-joins (inner, left, right, full) over append-only or retracting inputs.
//!
//! Each side keeps its rows (Arrow row format) by join key, as a multiset. A row from one
//! side is joined with the other side's rows of the same key, and the joined rows carry
//! the incoming row's kind: an insertion joins as insertions, a retraction retracts exactly
//! the joined rows its insertion produced. Then the row is added to (or taken from) its own
//! side's state. Rows with a NULL key never match (SQL equality) and are not stored.
//!
//! Outer joins: a preserved side's row is emitted padded with NULLs while the other side
//! has no row with its key. When the other side's bucket for a key becomes non-empty, the
//! padded rows of that key are retracted (and re-emitted when it empties again), so the
//! view always holds exactly the outer join of the current inputs.
//!
//! Window joins (a key pair `window_end = window_end` over append-only inputs) free a
//! window's rows once the watermark passes its end plus the allowed lateness; rows for a
//! closed window are late (dropped and counted). Interval joins (an inner join whose
//! condition bounds one side's event time by the other's columns, see
//! `sluice_sql::interval`) forget a row once the watermark passes the time after which
//! no on-time row of the other side can match it; rows arriving behind the watermark are
//! late. Otherwise state grows with both inputs unless the view has a state TTL, which
//! forgets rows a while after they arrive (`expiry.rs`).

use crate::operators::OPERATOR_WIDE;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Int8Array, RecordBatch, UInt32Array};
use arrow::compute::{filter_record_batch, take};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::physical_expr::PhysicalExpr;
use sluice_common::error::{Result, SluiceError};

use super::encoding::{key_groups_of_rows, push_sized, row_converter, split_sized, take_through};
mod expiry;
mod null_aware;
mod outer;
mod spill;

use super::keyed_spill::{KeyedSpill, SpillValue, split_entry_key, value_entries};
use super::{Operator, RestoredState, StateEntry};
use crate::message::{Message, OP_COLUMN, RowKind, Watermark, split_changelog};
pub use expiry::JoinIntervals;
use expiry::{JoinTtl, JoinWindows};
use null_aware::NullAware;
use outer::MatchCounts;
use sluice_state::spill::DbCheckpoint;

/// The rows of one side with one join key: row → multiplicity.
type Bucket = HashMap<Box<[u8]>, u64>;

/// Rows of one side, by join key.
type SideState = HashMap<Box<[u8]>, Bucket>;

/// Every row held under `key`, as many times as it is held.
fn held_rows<'a>(state: &'a SideState, key: &[u8]) -> impl Iterator<Item = &'a [u8]> {
    state
        .get(key)
        .into_iter()
        .flatten()
        .flat_map(|(row, &count)| std::iter::repeat_n(row.as_ref(), count as usize))
}

/// One input of a join.
pub struct JoinSide {
    /// The join key expressions over this side's columns.
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// This side's columns (without the op column).
    pub schema: SchemaRef,
    /// Unmatched rows of this side are kept, padded with NULLs (an outer join's side).
    pub outer: bool,
}

/// `left JOIN right ON left.k = right.k [AND filter]`.
pub struct JoinOperator {
    keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
    key_converter: RowConverter,
    rows: [RowConverter; 2],
    /// Each side's columns (without the op column).
    side_schemas: [SchemaRef; 2],
    state: [SideState; 2],
    /// Whether each side is preserved: its unmatched rows are emitted padded with NULLs
    /// (LEFT: left, RIGHT: right, FULL: both).
    outer: [bool; 2],
    /// A semi (`Some(false)`) or anti (`Some(true)`) join: the output is the left rows
    /// whose key has (semi) or has not (anti) a right row.
    semi_anti: Option<bool>,
    /// NULL keys are equal to each other (INTERSECT, EXCEPT) instead of matching nothing.
    nulls_equal: bool,
    /// The residual (non-equi) condition, over the output columns.
    filter: Option<Arc<dyn PhysicalExpr>>,
    /// Left columns, right columns, and the op column when an input retracts.
    schema: SchemaRef,
    changelog_output: bool,
    windows: Option<JoinWindows>,
    intervals: Option<JoinIntervals>,
    ttl: Option<JoinTtl>,
    /// An outer join with a residual condition: per preserved side, how many rows of the
    /// other side match each row (see `outer.rs`).
    match_counts: [MatchCounts; 2],
    /// `NOT IN`: a null-aware anti join (see `null_aware.rs`).
    null_aware: Option<NullAware>,
    /// Buckets beyond the memory budget (see `spill.rs`).
    spill: Option<KeyedSpill>,
}

impl JoinOperator {
    pub fn new(
        left: JoinSide,
        right: JoinSide,
        filter: Option<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    ) -> Result<Self> {
        if left.keys.len() != right.keys.len() || left.keys.is_empty() {
            return Err(SluiceError::internal(
                "a join needs the same number of keys on both sides",
            ));
        }
        let key_types = left
            .keys
            .iter()
            .map(|k| Ok(SortField::new(k.data_type(&left.schema)?)))
            .collect::<Result<Vec<_>>>()?;
        let changelog_output = schema
            .fields()
            .last()
            .is_some_and(|f| f.name() == OP_COLUMN);
        Ok(JoinOperator {
            key_converter: RowConverter::new(key_types)?,
            rows: [row_converter(&left.schema)?, row_converter(&right.schema)?],
            side_schemas: [left.schema.clone(), right.schema.clone()],
            outer: [left.outer, right.outer],
            semi_anti: None,
            nulls_equal: false,
            keys: [left.keys, right.keys],
            state: [SideState::new(), SideState::new()],
            filter,
            schema,
            changelog_output,
            windows: None,
            intervals: None,
            ttl: None,
            match_counts: [MatchCounts::new(), MatchCounts::new()],
            null_aware: None,
            spill: None,
        })
    }

    /// Makes this a semi join (`anti = false`: left rows that have a match) or an anti join
    /// (`anti = true`: left rows that have none). The output schema is the left side's.
    /// `nulls_equal` makes NULL keys match each other, as INTERSECT and EXCEPT need.
    pub fn semi_or_anti(mut self, anti: bool, nulls_equal: bool) -> Self {
        debug_assert!(self.filter.is_none() && self.outer == [false, false]);
        self.semi_anti = Some(anti);
        self.nulls_equal = nulls_equal;
        self
    }

    /// Makes an anti join null-aware, as `NOT IN (subquery)` is: see `null_aware.rs`.
    /// The join must run as one subtask.
    pub fn null_aware(mut self) -> Self {
        debug_assert_eq!(self.semi_anti, Some(true));
        self.null_aware = Some(NullAware::default());
        self
    }

    /// A semi or anti join's step for a batch of `side`.
    fn semi_anti_batch(
        &mut self,
        anti: bool,
        side: usize,
        batch: RecordBatch,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        let (data, ops) = split_changelog(&batch);
        let n = data.num_rows();
        let (key_columns, keys, rows) = self.encode(side, &data)?;
        self.unspill(side, &key_columns, &keys, &rows)?;
        // Left rows to emit: from this batch (side 0) or from left state (side 1).
        let mut from_batch: Vec<u32> = Vec::new();
        let mut from_state: Vec<Box<[u8]>> = Vec::new();
        let mut out_ops: Vec<i8> = Vec::new();
        // Per-row loop: probing and updating a hash table is inherently per row.
        for i in 0..n {
            let op = ops.value(i);
            let null_key = !self.nulls_equal && key_columns.iter().any(|c| c.is_null(i));
            if null_key {
                // Matches nothing: an anti join keeps such a left row; nothing else does.
                if side == 0 && anti {
                    from_batch.push(i as u32);
                    out_ops.push(op);
                }
                continue;
            }
            let key = keys.row(i);
            if side == 0 {
                let matched = self.state[1]
                    .get(key.as_ref())
                    .is_some_and(|b| !b.is_empty());
                if matched != anti {
                    from_batch.push(i as u32);
                    out_ops.push(op);
                }
            }
            let (was_empty, now_empty) = self.update_state(
                side,
                key.as_ref(),
                rows.row(i).as_ref(),
                RowKind::is_addition(op),
            )?;
            if side == 1 && was_empty != now_empty {
                // The key's left rows enter (or leave) the result.
                let enters = was_empty != anti;
                let kind = if enters {
                    RowKind::Insert
                } else {
                    RowKind::Delete
                };
                for row in held_rows(&self.state[0], key.as_ref()) {
                    from_state.push(row.into());
                    out_ops.push(kind as i8);
                }
            }
        }
        if out_ops.is_empty() {
            return Ok(());
        }
        let mut columns: Vec<ArrayRef> = if side == 0 {
            let indices = UInt32Array::from(from_batch);
            data.columns()
                .iter()
                .map(|c| take(c, &indices, None))
                .collect::<std::result::Result<_, _>>()?
        } else {
            let parser = self.rows[0].parser();
            self.rows[0].convert_rows(from_state.iter().map(|r| parser.parse(r)))?
        };
        if self.changelog_output {
            columns.push(Arc::new(Int8Array::from(out_ops)));
        }
        out.push(Message::Batch(RecordBatch::try_new(
            self.schema.clone(),
            columns,
        )?));
        Ok(())
    }

    /// `side`'s join key columns evaluated on `data` (for NULL checks), and its keys and
    /// rows in row format.
    fn encode(&self, side: usize, data: &RecordBatch) -> Result<(Vec<ArrayRef>, Rows, Rows)> {
        let n = data.num_rows();
        let key_columns: Vec<ArrayRef> = self.keys[side]
            .iter()
            .map(|k| k.evaluate(data).and_then(|v| v.into_array(n)))
            .collect::<datafusion::error::Result<_>>()?;
        let keys = self.key_converter.convert_columns(&key_columns)?;
        let rows = self.rows[side].convert_columns(data.columns())?;
        Ok((key_columns, keys, rows))
    }

    /// Adds `row` under `key` to `side`'s state, or takes it away. Returns whether the
    /// key's bucket was empty before and whether it is empty after: outer, semi and anti
    /// joins change their output exactly when a bucket empties or fills.
    fn update_state(
        &mut self,
        side: usize,
        key: &[u8],
        row: &[u8],
        addition: bool,
    ) -> Result<(bool, bool)> {
        let bucket = self.state[side].entry(key.into()).or_default();
        let was_empty = bucket.is_empty();
        if addition {
            *bucket.entry(row.into()).or_default() += 1;
        } else {
            let Some(count) = bucket.get_mut(row) else {
                return Err(SluiceError::internal(
                    "a join input retracted a row it never inserted",
                ));
            };
            *count -= 1;
            if *count == 0 {
                bucket.remove(row);
            }
        }
        let now_empty = bucket.is_empty();
        if now_empty {
            self.state[side].remove(key);
        }
        Ok((was_empty, now_empty))
    }

    /// Rows held in state on each side, for tests and metrics.
    pub fn state_rows(&self) -> [usize; 2] {
        self.state
            .each_ref()
            .map(|s| s.values().flat_map(|rows| rows.values()).sum::<u64>() as usize)
    }
}

impl Operator for JoinOperator {
    fn name(&self) -> &'static str {
        "Join"
    }

    /// One entry per bucket (the rows of one side with one join key): key
    /// `[BUCKET + side][key]`, value its rows and their multiplicities ([`SpillValue::encode`]),
    /// in the key group of the join key. A window join also stores how far its windows
    /// are closed, under `[2]`. A spilling join's buckets are its store's: its entries,
    /// or for a RocksDB store its files ([`Operator::snapshot_database`]).
    fn snapshot_state(&mut self) -> Result<Vec<StateEntry>> {
        let mut entries = Vec::new();
        if let Some(closed) = self.windows.as_ref().and_then(|w| w.closed_by) {
            entries.push((
                OPERATOR_WIDE,
                vec![CLOSED_BY],
                closed.to_le_bytes().to_vec(),
            ));
        }
        if let Some(watermark) = self.intervals.as_ref().and_then(|iv| iv.watermark) {
            entries.push((
                OPERATOR_WIDE,
                vec![INTERVAL_WATERMARK],
                watermark.to_le_bytes().to_vec(),
            ));
        }
        if let Some(aware) = &self.null_aware {
            entries.push((
                0,
                vec![null_aware::RIGHT_NULLS],
                aware.right_nulls.to_le_bytes().to_vec(),
            ));
            for (row, count) in &aware.left_null_rows {
                let mut key = vec![null_aware::LEFT_NULL_ROW];
                key.extend_from_slice(row);
                entries.push((0, key, count.to_le_bytes().to_vec()));
            }
        }
        self.spill_flush();
        match &self.spill {
            Some(spill) if spill.store.on_disk() => {}
            Some(spill) => entries.extend(spill.store.entries()),
            None => entries.extend(self.bucket_entries()?),
        }
        Ok(entries)
    }

    fn snapshot_database(&mut self) -> Result<Option<DbCheckpoint>> {
        self.spill
            .as_ref()
            .map_or(Ok(None), |spill| spill.store.checkpoint())
    }

    /// A spilling join copies the buckets of restored spill stores into its own, then
    /// files their keys in its window or interval index (as `restore_state` did those
    /// of the entries).
    fn restore(&mut self, state: RestoredState<'_>) -> Result<()> {
        if super::restore_spilling(self, state, |j| j.spill.as_mut().map(|s| &mut s.store))? {
            self.index_stored_windows()?;
            self.index_restored_intervals()?;
        }
        Ok(())
    }

    fn restore_state(&mut self, entries: Vec<StateEntry>) -> Result<()> {
        let corrupt = || SluiceError::corrupted("a join's checkpointed state entry is malformed");
        let mut stored = Vec::new();
        for (key_group, entry_key, value) in entries {
            let side = *entry_key.first().ok_or_else(corrupt)? as usize;
            if entry_key == [CLOSED_BY] {
                let closed: [u8; 8] = value.as_slice().try_into().map_err(|_| corrupt())?;
                if let Some(w) = &mut self.windows {
                    w.closed_by = Some(i64::from_le_bytes(closed));
                }
                continue;
            }
            if side == null_aware::RIGHT_NULLS as usize
                || side == null_aware::LEFT_NULL_ROW as usize
            {
                let count: [u8; 8] = value.as_slice().try_into().map_err(|_| corrupt())?;
                let count = u64::from_le_bytes(count);
                let aware = self.null_aware.as_mut().ok_or_else(corrupt)?;
                if side == null_aware::RIGHT_NULLS as usize {
                    aware.right_nulls = count;
                } else {
                    aware.left_null_rows.insert(entry_key[1..].into(), count);
                }
                continue;
            }
            if entry_key == [INTERVAL_WATERMARK] {
                let watermark: [u8; 8] = value.as_slice().try_into().map_err(|_| corrupt())?;
                if let Some(iv) = &mut self.intervals {
                    iv.watermark = Some(i64::from_le_bytes(watermark));
                }
                continue;
            }
            if let Some((side, key)) = split_entry_key(BUCKET, 2, &entry_key) {
                if self.spill.is_none() {
                    let bucket = Bucket::decode(&value).ok_or_else(corrupt)?;
                    self.state[side].insert(key.into(), bucket);
                    continue;
                }
                // Buckets stay encoded until a row needs them.
                stored.push((key_group, entry_key, value));
                continue;
            }
            // Checkpoints before buckets held an entry per row.
            let (key, row) = split_sized(&entry_key[1..]).ok_or_else(corrupt)?;
            let count: [u8; 8] = value.as_slice().try_into().map_err(|_| corrupt())?;
            if side > 1 {
                return Err(corrupt());
            }
            self.state[side]
                .entry(key.into())
                .or_default()
                .insert(row.into(), u64::from_le_bytes(count));
        }
        if self.spill.is_some() {
            // Rows of checkpoints before buckets went to memory above: into the store.
            stored.extend(self.bucket_entries()?);
            self.state = [SideState::new(), SideState::new()];
            if let Some(spill) = &mut self.spill {
                spill.store.put(stored);
            }
        }
        self.index_restored_windows()?;
        self.index_stored_windows()?;
        self.count_restored_matches()?;
        if let Some(aware) = &mut self.null_aware {
            aware.right_rows = null_aware::held_count(&self.state[1]) + aware.right_nulls;
        }
        self.index_restored_ttl();
        self.index_restored_intervals()
    }

    fn process_barrier(
        &mut self,
        barrier: crate::message::CheckpointBarrier,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        self.forget_stale(out)?;
        out.push(Message::Barrier(barrier));
        Ok(())
    }

    /// A window join frees the windows the watermark closes; an interval join forgets
    /// the rows the watermark has passed.
    fn process_watermark(&mut self, watermark: Watermark, out: &mut Vec<Message>) -> Result<()> {
        if let Some(iv) = &mut self.intervals {
            iv.watermark = Some(watermark.0);
        }
        self.forget_expired()?;
        self.forget_stale(out)?;
        if let Some(w) = &mut self.windows {
            let closed = watermark.0.saturating_sub(w.lateness_ms);
            w.closed_by = Some(closed);
            let keys = take_through(&mut w.open, closed).into_values().flatten();
            self.free_windows(keys.collect())?;
        }
        out.push(Message::Watermark(watermark));
        Ok(())
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<Message>) -> Result<()> {
        self.process_batch_from(0, batch, out)
    }

    fn process_batch_from(
        &mut self,
        side: usize,
        batch: RecordBatch,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        self.forget_stale(out)?;
        let batch = self.admit_under_ttl(side, batch)?;
        self.step(side, batch, out)
    }
}

impl JoinOperator {
    /// The join's step for a batch of `side`, by the kind of join.
    fn step(&mut self, side: usize, batch: RecordBatch, out: &mut Vec<Message>) -> Result<()> {
        if self.null_aware.is_some() {
            return self.null_aware_anti_batch(side, batch, out);
        }
        if let Some(anti) = self.semi_anti {
            self.semi_anti_batch(anti, side, batch, out)?;
        } else if self.filter.is_some() && self.outer.contains(&true) {
            return self.outer_filtered_batch(side, batch, out);
        } else {
            self.equi_batch(side, batch, out)?;
        }
        self.spill_over_budget(side);
        Ok(())
    }

    /// Every bucket held in memory, as snapshot entries (see `snapshot_state`).
    fn bucket_entries(&self) -> Result<Vec<StateEntry>> {
        value_entries(BUCKET, &self.state, |keys| {
            key_groups_of_rows(&self.key_converter, keys)
        })
    }

    /// An inner or outer join's step for a batch of `side`, when the join has no
    /// residual condition or is inner.
    fn equi_batch(
        &mut self,
        side: usize,
        batch: RecordBatch,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        let other = 1 - side;
        let (data, ops) = split_changelog(&batch);
        let n = data.num_rows();
        let (key_columns, keys, rows) = self.encode(side, &data)?;
        self.unspill(side, &key_columns, &keys, &rows)?;
        let (open, ends) = self.open_rows(&key_columns, n)?;
        let (on_time, expiries) = self.on_time_rows(side, &data)?;

        let mut output = JoinOutput::default();
        // Per-row loop: probing and updating a hash table is inherently per row.
        for i in 0..n {
            let op = ops.value(i);
            if !open[i] || !on_time[i] {
                continue;
            }
            if key_columns.iter().any(|c| c.is_null(i)) {
                // A NULL key matches nothing: only an outer side keeps the row, padded.
                if self.outer[side] {
                    output.push(Some(i as u32), None, op);
                }
                continue;
            }
            let key = keys.row(i);
            let mut matched = false;
            for row in held_rows(&self.state[other], key.as_ref()) {
                matched = true;
                let other_row = output.other_row(row);
                output.push(Some(i as u32), Some(other_row), op);
            }
            if self.outer[side] && !matched {
                output.push(Some(i as u32), None, op);
            }
            let (was_empty, now_empty) = self.update_state(
                side,
                key.as_ref(),
                rows.row(i).as_ref(),
                RowKind::is_addition(op),
            )?;
            self.file_window_key(ends[i], key.as_ref());
            if let (Some(iv), Some(expiry)) = (&mut self.intervals, expiries[i])
                && RowKind::is_addition(op)
            {
                iv.file(side, key.as_ref(), expiry);
            }
            // The other side's rows of this key lose (or regain) their padding when this
            // side's bucket stops (or starts) being empty.
            if self.outer[other] && was_empty != now_empty {
                let padding = if was_empty {
                    RowKind::Delete
                } else {
                    RowKind::Insert
                };
                for row in held_rows(&self.state[other], key.as_ref()) {
                    let other_row = output.other_row(row);
                    output.push(None, Some(other_row), padding as i8);
                }
            }
        }
        if output.ops.is_empty() {
            return Ok(());
        }
        let mut joined = self.assemble(side, &data, &output)?;
        if let Some(filter) = &self.filter {
            let mask = self.condition_holds(filter, &joined)?;
            joined = filter_record_batch(&joined, &mask)?;
        }
        if joined.num_rows() > 0 {
            out.push(Message::Batch(joined));
        }
        Ok(())
    }

    /// The output rows `output` describes for a batch `data` of `side`: its rows (or
    /// NULLs) next to the other side's rows (or NULLs), left columns first.
    fn assemble(
        &self,
        side: usize,
        data: &RecordBatch,
        output: &JoinOutput,
    ) -> Result<RecordBatch> {
        let other = 1 - side;
        let this_indices: UInt32Array = output.this.iter().copied().collect();
        let this_columns: Vec<ArrayRef> = data
            .columns()
            .iter()
            .map(|c| take(c, &this_indices, None))
            .collect::<std::result::Result<_, _>>()?;
        let parser = self.rows[other].parser();
        let distinct_other =
            self.rows[other].convert_rows(output.other_rows.iter().map(|r| parser.parse(r)))?;
        let other_indices: UInt32Array = output.other.iter().copied().collect();
        let other_columns: Vec<ArrayRef> = distinct_other
            .iter()
            .map(|c| take(c, &other_indices, None))
            .collect::<std::result::Result<_, _>>()?;
        let (mut columns, right) = if side == 0 {
            (this_columns, other_columns)
        } else {
            (other_columns, this_columns)
        };
        columns.extend(right);
        if self.changelog_output {
            columns.push(Arc::new(Int8Array::from(output.ops.clone())));
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    /// Where the residual condition is true on `joined` (NULL counts as false).
    fn condition_holds(
        &self,
        filter: &Arc<dyn PhysicalExpr>,
        joined: &RecordBatch,
    ) -> Result<BooleanArray> {
        let mask = filter.evaluate(joined)?.into_array(joined.num_rows())?;
        let mask = mask
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| SluiceError::internal("join condition is not boolean"))?;
        Ok(match arrow::array::Array::nulls(mask) {
            Some(_) => arrow::compute::prep_null_mask_filter(mask),
            None => mask.clone(),
        })
    }
}

/// The snapshot key of a window join's closed-by watermark (sides are 0 and 1).
const CLOSED_BY: u8 = 2;
/// The snapshot key of an interval join's watermark.
const INTERVAL_WATERMARK: u8 = 3;
/// What a bucket's snapshot key starts with: its first byte is `6 + side` (4 and 5 are
/// `null_aware`'s), see [`entry_key`].
const BUCKET: &[u8] = &[6];

impl SpillValue for Bucket {
    /// The rows, each behind its length, and their multiplicities (`u64`,
    /// little-endian).
    fn encode(&self) -> Vec<u8> {
        let bytes = self.keys().map(|row| row.len() + 12).sum();
        let mut value = Vec::with_capacity(bytes);
        for (row, count) in self {
            push_sized(&mut value, row);
            value.extend_from_slice(&count.to_le_bytes());
        }
        value
    }

    fn decode(mut value: &[u8]) -> Option<Self> {
        let mut bucket = Bucket::new();
        while !value.is_empty() {
            let (row, rest) = split_sized(value)?;
            let count: [u8; 8] = rest.get(..8)?.try_into().ok()?;
            bucket.insert(row.into(), u64::from_le_bytes(count));
            value = &rest[8..];
        }
        Some(bucket)
    }

    fn rows(&self) -> usize {
        self.len()
    }
}

/// The rows a batch makes a join emit: this side's row index and the other side's row
/// (either may be missing: NULL padding), and the kind of each.
#[derive(Default)]
struct JoinOutput {
    this: Vec<Option<u32>>,
    other: Vec<Option<u32>>,
    ops: Vec<i8>,
    /// The other side's rows in row format, each once, indexed by `other`.
    other_rows: Vec<Box<[u8]>>,
}

impl JoinOutput {
    fn other_row(&mut self, row: &[u8]) -> u32 {
        self.other_rows.push(row.into());
        (self.other_rows.len() - 1) as u32
    }

    fn push(&mut self, this: Option<u32>, other: Option<u32>, op: i8) {
        self.this.push(this);
        self.other.push(other);
        self.ops.push(op);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_expr::expressions::Column;
    use std::sync::atomic::{AtomicU64, Ordering};

    use crate::message::{changelog_schema, op_column};

    fn side_schema(value: &str) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new(value, DataType::Utf8, true),
        ]))
    }

    fn join() -> JoinOperator {
        outer_join(false, false)
    }

    pub(super) fn outer_join(left_outer: bool, right_outer: bool) -> JoinOperator {
        let (l, r) = (side_schema("a"), side_schema("b"));
        let mut fields: Vec<Field> = l.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.extend(r.fields().iter().map(|f| f.as_ref().clone()));
        let schema = changelog_schema(&Schema::new(fields));
        JoinOperator::new(
            JoinSide {
                keys: vec![Arc::new(Column::new("k", 0))],
                schema: l,
                outer: left_outer,
            },
            JoinSide {
                keys: vec![Arc::new(Column::new("k", 0))],
                schema: r,
                outer: right_outer,
            },
            None,
            schema,
        )
        .unwrap()
    }

    pub(super) fn rows(
        value: &str,
        keys: Vec<Option<i64>>,
        values: Vec<&str>,
        ops: Vec<RowKind>,
    ) -> RecordBatch {
        RecordBatch::try_new(
            changelog_schema(&side_schema(value)),
            vec![
                Arc::new(Int64Array::from(keys)),
                Arc::new(StringArray::from(values)),
                Arc::new(Int8Array::from(
                    ops.into_iter().map(|o| o as i8).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap()
    }

    /// Every output row (its columns but the op, after the op), as a sorted multiset.
    pub(super) fn changes(out: &[Message]) -> Vec<String> {
        let mut v = vec![];
        for m in out {
            let Message::Batch(b) = m else { continue };
            let ops = op_column(b).unwrap();
            for r in 0..b.num_rows() {
                let cells: Vec<String> = (0..b.num_columns() - 1)
                    .map(|c| arrow::util::display::array_value_to_string(b.column(c), r).unwrap())
                    .collect();
                v.push(format!(
                    "{} {}",
                    RowKind::symbol(ops.value(r)),
                    cells.join(" ")
                ));
            }
        }
        // Matches come out of a hash map: compare as a multiset.
        v.sort();
        v
    }

    #[test]
    fn an_interval_join_forgets_rows_the_watermark_has_passed() {
        use arrow::array::TimestampMillisecondArray;
        // a JOIN b ON a.k = b.k AND b.ts <= a.ts: a's rows expire at a.ts, b's must be on
        // time.
        let schema = |_: &str| -> SchemaRef {
            Arc::new(Schema::new(vec![
                Field::new("k", DataType::Int64, true),
                Field::new(
                    "ts",
                    DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None),
                    true,
                ),
            ]))
        };
        let mut fields: Vec<Field> = schema("a")
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.extend(schema("b").fields().iter().map(|f| f.as_ref().clone()));
        let late = Arc::new(AtomicU64::new(0));
        let ts: Arc<dyn PhysicalExpr> = Arc::new(Column::new("ts", 1));
        let side = |_| JoinSide {
            keys: vec![Arc::new(Column::new("k", 0))],
            schema: schema(""),
            outer: false,
        };
        let mut join = JoinOperator::new(side(0), side(1), None, Arc::new(Schema::new(fields)))
            .unwrap()
            .with_intervals(JoinIntervals::new(
                [Some(ts.clone()), None],
                [None, Some(ts)],
                late.clone(),
            ));
        let batch = |k: Vec<i64>, ts: Vec<i64>| {
            RecordBatch::try_new(
                schema(""),
                vec![
                    Arc::new(Int64Array::from(k)),
                    Arc::new(TimestampMillisecondArray::from(ts)),
                ],
            )
            .unwrap()
        };
        let mut out = vec![];
        join.process_batch_from(0, batch(vec![1, 1], vec![10, 50]), &mut out)
            .unwrap();
        join.process_watermark(Watermark(20), &mut out).unwrap();
        assert_eq!(
            join.state_rows(),
            [1, 0],
            "a's row at 10 can match no on-time b row"
        );
        out.clear();
        join.process_batch_from(1, batch(vec![1, 1], vec![15, 30]), &mut out)
            .unwrap();
        assert_eq!(
            late.load(Ordering::Relaxed),
            1,
            "b at 15 is behind the watermark"
        );
        let joined: usize = out
            .iter()
            .map(|m| match m {
                Message::Batch(b) => b.num_rows(),
                _ => 0,
            })
            .sum();
        assert_eq!(joined, 1, "b at 30 joins a at 50");
        // Restored, the row at 50 is still filed under its expiry.
        let entries = join.snapshot_state().unwrap();
        let mut restored = JoinOperator::new(side(0), side(1), None, join.schema.clone())
            .unwrap()
            .with_intervals(JoinIntervals::new(
                [Some(Arc::new(Column::new("ts", 1))), None],
                [None, Some(Arc::new(Column::new("ts", 1)))],
                Arc::new(AtomicU64::new(0)),
            ));
        restored.restore_state(entries).unwrap();
        assert_eq!(restored.state_rows(), [1, 1]);
        restored.process_watermark(Watermark(60), &mut out).unwrap();
        assert_eq!(restored.state_rows(), [0, 1]);

        // With a state TTL too, either may forget a row first: the TTL (0 ms) forgets
        // a's row at the next batch, then the watermark passes its interval expiry.
        let mut both = JoinOperator::new(side(0), side(1), None, join.schema.clone())
            .unwrap()
            .with_intervals(JoinIntervals::new(
                [Some(Arc::new(Column::new("ts", 1))), None],
                [None, Some(Arc::new(Column::new("ts", 1)))],
                Arc::new(AtomicU64::new(0)),
            ))
            .with_state_ttl(std::time::Duration::ZERO);
        both.process_batch_from(0, batch(vec![1], vec![100]), &mut out)
            .unwrap();
        both.process_batch_from(1, batch(vec![2], vec![200]), &mut out)
            .unwrap();
        assert_eq!(both.state_rows(), [0, 1], "the TTL forgot a's row");
        both.process_watermark(Watermark(150), &mut out).unwrap();
        assert_eq!(both.state_rows(), [0, 0]);
    }

    #[test]
    fn a_window_join_frees_closed_windows_and_drops_their_late_rows() {
        // The key k stands for window_end (ms).
        let late = Arc::new(AtomicU64::new(0));
        let mut join = join().with_windows(0, 0, late.clone());
        let mut out = vec![];
        let insert = |n| vec![RowKind::Insert; n];
        join.process_batch_from(
            0,
            rows("a", vec![Some(10), Some(20)], vec!["x", "y"], insert(2)),
            &mut out,
        )
        .unwrap();
        join.process_batch_from(
            1,
            rows("b", vec![Some(10), Some(20)], vec!["p", "q"], insert(2)),
            &mut out,
        )
        .unwrap();
        assert_eq!(changes(&out), vec!["+I 10 x 10 p", "+I 20 y 20 q"]);
        assert_eq!(join.state_rows(), [2, 2]);
        join.process_watermark(Watermark(10), &mut out).unwrap();
        assert_eq!(join.state_rows(), [1, 1], "window 10 is closed and freed");
        out.clear();
        join.process_batch_from(
            0,
            rows("a", vec![Some(10), Some(20)], vec!["z", "w"], insert(2)),
            &mut out,
        )
        .unwrap();
        assert_eq!(changes(&out), vec!["+I 20 w 20 q"]);
        assert_eq!(late.load(Ordering::Relaxed), 1);
        // A snapshot keeps how far windows are closed.
        let entries = join.snapshot_state().unwrap();
        let mut restored = self::join().with_windows(0, 0, Arc::new(AtomicU64::new(0)));
        restored.restore_state(entries).unwrap();
        assert_eq!(restored.state_rows(), [2, 1]);
        restored.process_watermark(Watermark(20), &mut out).unwrap();
        assert_eq!(restored.state_rows(), [0, 0]);
    }

    #[test]
    fn rows_join_with_the_other_sides_rows_of_their_key_and_retractions_undo_them() {
        let mut join = join();
        let mut out = vec![];
        join.process_batch_from(
            0,
            rows(
                "a",
                vec![Some(1), Some(2), None],
                vec!["x", "y", "n"],
                vec![RowKind::Insert; 3],
            ),
            &mut out,
        )
        .unwrap();
        assert!(out.is_empty(), "nothing on the right yet");
        join.process_batch_from(
            1,
            rows(
                "b",
                vec![Some(1), Some(1), None],
                vec!["p", "q", "n"],
                vec![RowKind::Insert; 3],
            ),
            &mut out,
        )
        .unwrap();
        assert_eq!(changes(&out), vec!["+I 1 x 1 p", "+I 1 x 1 q"]);
        out.clear();
        join.process_batch_from(
            0,
            rows("a", vec![Some(1)], vec!["x"], vec![RowKind::Delete]),
            &mut out,
        )
        .unwrap();
        assert_eq!(changes(&out), vec!["-D 1 x 1 p", "-D 1 x 1 q"]);
        assert_eq!(
            join.state_rows(),
            [1, 2],
            "NULL keys are not stored; the deleted row is gone"
        );
        let err = join.process_batch_from(
            1,
            rows("b", vec![Some(9)], vec!["z"], vec![RowKind::Delete]),
            &mut out,
        );
        assert!(err.is_err());
    }

    #[test]
    fn outer_join_padding_is_retracted_when_a_match_arrives_and_restored_when_it_leaves() {
        let mut join = outer_join(true, true);
        let mut out = vec![];
        join.process_batch_from(
            0,
            rows(
                "a",
                vec![Some(1), None],
                vec!["x", "n"],
                vec![RowKind::Insert; 2],
            ),
            &mut out,
        )
        .unwrap();
        assert_eq!(changes(&out), vec!["+I  n  ", "+I 1 x  "]);
        out.clear();
        join.process_batch_from(
            1,
            rows(
                "b",
                vec![Some(1), Some(2)],
                vec!["p", "q"],
                vec![RowKind::Insert; 2],
            ),
            &mut out,
        )
        .unwrap();
        assert_eq!(changes(&out), vec!["+I   2 q", "+I 1 x 1 p", "-D 1 x  "]);
        out.clear();
        join.process_batch_from(
            1,
            rows("b", vec![Some(1)], vec!["p"], vec![RowKind::Delete]),
            &mut out,
        )
        .unwrap();
        assert_eq!(changes(&out), vec!["+I 1 x  ", "-D 1 x 1 p"]);
        out.clear();
        join.process_batch_from(
            0,
            rows("a", vec![Some(1)], vec!["x"], vec![RowKind::Delete]),
            &mut out,
        )
        .unwrap();
        assert_eq!(changes(&out), vec!["-D 1 x  "]);
    }

    #[test]
    fn a_ttl_retracts_what_an_outer_join_row_produced_and_ignores_its_later_retraction() {
        // A 0 ms TTL: every row is forgotten at the next batch.
        let mut join = outer_join(true, false).with_state_ttl(std::time::Duration::ZERO);
        let mut out = vec![];
        join.process_batch_from(
            0,
            rows("a", vec![Some(1)], vec!["x"], vec![RowKind::Insert]),
            &mut out,
        )
        .unwrap();
        assert_eq!(changes(&out), vec!["+I 1 x  "]);
        out.clear();
        // x expires first, as its deletion would: its padded row leaves. p then matches
        // nothing.
        join.process_batch_from(
            1,
            rows("b", vec![Some(1)], vec!["p"], vec![RowKind::Insert]),
            &mut out,
        )
        .unwrap();
        assert_eq!(changes(&out), vec!["-D 1 x  "]);
        assert_eq!(join.state_rows(), [0, 1]);
        out.clear();
        // p expires (x is gone: nothing to retract); x's own deletion is ignored.
        join.process_batch_from(
            0,
            rows("a", vec![Some(1)], vec!["x"], vec![RowKind::Delete]),
            &mut out,
        )
        .unwrap();
        assert_eq!(changes(&out), Vec::<String>::new());
        assert_eq!(join.state_rows(), [0, 0]);

        // A right row that expires while matched gives the left row its padding back.
        let mut join = outer_join(true, false).with_state_ttl(std::time::Duration::from_secs(3600));
        join.process_batch_from(
            0,
            rows("a", vec![Some(1)], vec!["x"], vec![RowKind::Insert]),
            &mut out,
        )
        .unwrap();
        join.ttl.as_mut().unwrap().ttl_ms = 0;
        join.process_batch_from(
            1,
            rows("b", vec![Some(1)], vec!["p"], vec![RowKind::Insert]),
            &mut out,
        )
        .unwrap();
        assert_eq!(changes(&out), vec!["+I 1 x  ", "+I 1 x 1 p", "-D 1 x  "]);
        out.clear();
        join.process_barrier(
            crate::message::CheckpointBarrier {
                epoch: 1,
                kind: crate::message::BarrierKind::Flush,
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(changes(&out), vec!["+I 1 x  ", "-D 1 x 1 p"]);
        assert_eq!(join.state_rows(), [1, 0]);
    }

    /// `a` semi (or anti) joined with `b` on `k`.
    pub(super) fn semi_or_anti_join(anti: bool) -> JoinOperator {
        let left = side_schema("a");
        let schema = changelog_schema(&left);
        JoinOperator::new(
            JoinSide {
                keys: vec![Arc::new(Column::new("k", 0))],
                schema: left,
                outer: false,
            },
            JoinSide {
                keys: vec![Arc::new(Column::new("k", 0))],
                schema: side_schema("b"),
                outer: false,
            },
            None,
            schema,
        )
        .unwrap()
        .semi_or_anti(anti, false)
    }

    #[test]
    fn semi_and_anti_joins_follow_the_right_sides_buckets() {
        let make = semi_or_anti_join;
        let left_changes = |out: &[Message]| -> Vec<String> {
            let mut v: Vec<String> = out
                .iter()
                .filter_map(|m| match m {
                    Message::Batch(b) => Some(b),
                    _ => None,
                })
                .flat_map(|b| {
                    let ops = op_column(b).unwrap().clone();
                    (0..b.num_rows()).map(move |r| {
                        format!(
                            "{} {}",
                            RowKind::symbol(ops.value(r)),
                            arrow::util::display::array_value_to_string(b.column(1), r).unwrap()
                        )
                    })
                })
                .collect();
            v.sort();
            v
        };
        for (anti, on_left, on_match, on_unmatch) in [
            (false, vec![], vec!["+I x"], vec!["-D x"]),
            (true, vec!["+I x"], vec!["-D x"], vec!["+I x"]),
        ] {
            let mut join = make(anti);
            let mut out = vec![];
            join.process_batch_from(
                0,
                rows("a", vec![Some(1)], vec!["x"], vec![RowKind::Insert]),
                &mut out,
            )
            .unwrap();
            assert_eq!(left_changes(&out), on_left, "anti={anti}: left row arrives");
            out.clear();
            join.process_batch_from(
                1,
                rows(
                    "b",
                    vec![Some(1), Some(1)],
                    vec!["p", "q"],
                    vec![RowKind::Insert; 2],
                ),
                &mut out,
            )
            .unwrap();
            assert_eq!(
                left_changes(&out),
                on_match,
                "anti={anti}: first matches arrive"
            );
            out.clear();
            join.process_batch_from(
                1,
                rows(
                    "b",
                    vec![Some(1), Some(1)],
                    vec!["p", "q"],
                    vec![RowKind::Delete; 2],
                ),
                &mut out,
            )
            .unwrap();
            assert_eq!(
                left_changes(&out),
                on_unmatch,
                "anti={anti}: last match leaves"
            );
        }
    }

    #[test]
    fn a_residual_condition_filters_joined_rows() {
        let (l, r) = (side_schema("a"), side_schema("b"));
        let mut fields: Vec<Field> = l.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.extend(r.fields().iter().map(|f| f.as_ref().clone()));
        let schema = changelog_schema(&Schema::new(fields));
        let condition = Arc::new(datafusion::physical_expr::expressions::BinaryExpr::new(
            Arc::new(Column::new("a", 1)),
            datafusion::logical_expr::Operator::Lt,
            Arc::new(Column::new("b", 3)),
        ));
        let mut join = JoinOperator::new(
            JoinSide {
                keys: vec![Arc::new(Column::new("k", 0))],
                schema: l,
                outer: false,
            },
            JoinSide {
                keys: vec![Arc::new(Column::new("k", 0))],
                schema: r,
                outer: false,
            },
            Some(condition),
            schema,
        )
        .unwrap();
        let mut out = vec![];
        join.process_batch_from(
            1,
            rows(
                "b",
                vec![Some(1), Some(1)],
                vec!["b", "z"],
                vec![RowKind::Insert; 2],
            ),
            &mut out,
        )
        .unwrap();
        join.process_batch_from(
            0,
            rows("a", vec![Some(1)], vec!["m"], vec![RowKind::Insert]),
            &mut out,
        )
        .unwrap();
        assert_eq!(changes(&out), vec!["+I 1 m 1 z"]);
        assert!(
            out.iter()
                .all(|m| !matches!(m, Message::Batch(b) if b.column(0).null_count() > 0))
        );
    }
}
