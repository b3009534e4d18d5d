//! Session windows: gives every row the bounds of its session, `window_start` and
//! `window_end` appended to its columns.
//!
//! A session of a partition key is a run of rows, in event time, each at most `gap` after
//! the previous one; it spans from its first row's time to its last row's time plus `gap`
//! (Flink's session windows: the row windows `[ts, ts + gap)` merged while they overlap
//! or touch). A row can extend a session or bridge two into one, so bounds change as rows
//! arrive:
//!
//! - Updating (default): a row that fits inside its session is emitted at once; a row that
//!   moves a session's bounds retracts every row of the sessions it touches, with their
//!   old bounds, and re-inserts them with the new ones. A long session re-emits its rows
//!   each time it grows; EMIT ON WINDOW CLOSE avoids that.
//! - EMIT ON WINDOW CLOSE: rows wait in their session until the watermark reaches its
//!   end, and are then emitted once, append-only.
//!
//! In both modes a session closes (and its state is freed) when the watermark, less the
//! allowed lateness, reaches its end. A row whose own window `[ts, ts + gap)` ends at or
//! before that and touches no open session is late: dropped and counted.
//!
//! State is a partition key's open sessions, one value per key. With PARTITION BY those
//! values can spill: the recently used keys stay in memory and the rest go to a spill
//! store (see `keyed_spill.rs`), read back when a row of their key arrives or one of
//! their sessions closes. The index of open sessions by end (a key per session) stays in
//! memory. A snapshot holds an entry per partition key, as that store does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, ArrayRef, AsArray, Int8Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Int64Type, SchemaRef, TimeUnit};
use arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;
use sluice_common::error::{Result, SluiceError};
use sluice_state::SpillStore;
use sluice_state::spill::{DbCheckpoint, WRITE_CHUNK};

use super::encoding::{key_groups_of_rows, push_sized, row_converter, split_sized, take_through};
use super::keyed_spill::{KeyedSpill, SpillValue, split_entry_key, value_entries};
use super::{OPERATOR_WIDE, Operator, RestoredState, StateEntry};
use crate::message::{Message, RowKind, Watermark};

/// Which session bound an output column holds, in the order the planner asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionBound {
    Start,
    End,
}

/// An open session (its start is its key in [`Sessions`]).
#[derive(Debug, Clone, PartialEq)]
struct Session {
    end: i64,
    /// The session's rows (row format, every input column).
    rows: Vec<Box<[u8]>>,
}

/// A partition key's open sessions by start. They are disjoint: each ends before the
/// next starts.
type Sessions = BTreeMap<i64, Session>;

impl SpillValue for Sessions {
    /// Per session its start and end (`i64`, little-endian), then its rows, each behind
    /// its length, all behind their length (so the bounds can be read without them).
    fn encode(&self) -> Vec<u8> {
        let mut value = Vec::new();
        for (start, session) in self {
            value.extend_from_slice(&start.to_le_bytes());
            value.extend_from_slice(&session.end.to_le_bytes());
            let mut rows = Vec::new();
            for row in &session.rows {
                push_sized(&mut rows, row);
            }
            push_sized(&mut value, &rows);
        }
        value
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let mut sessions = Sessions::new();
        let mut bounds = SessionBounds(bytes);
        for (start, end, mut rows_bytes) in bounds.by_ref() {
            let mut rows = Vec::new();
            while !rows_bytes.is_empty() {
                let (row, rest) = split_sized(rows_bytes)?;
                rows.push(row.into());
                rows_bytes = rest;
            }
            sessions.insert(start, Session { end, rows });
        }
        bounds.0.is_empty().then_some(sessions)
    }

    fn rows(&self) -> usize {
        self.values().map(|s| s.rows.len()).sum()
    }
}

/// The sessions of an encoded [`Sessions`] value: start, end and encoded rows. Stops at
/// the first malformed one (as [`SpillValue::decode`] fails on it).
struct SessionBounds<'a>(&'a [u8]);

impl<'a> Iterator for SessionBounds<'a> {
    type Item = (i64, i64, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let start = i64::from_le_bytes(self.0.get(..8)?.try_into().ok()?);
        let end = i64::from_le_bytes(self.0.get(8..16)?.try_into().ok()?);
        let (rows, rest) = split_sized(&self.0[16..])?;
        self.0 = rest;
        Some((start, end, rows))
    }
}

/// Whether `bytes` is a whole [`Sessions`] value, read through [`SessionBounds`].
fn well_formed(bytes: &[u8]) -> bool {
    let mut bounds = SessionBounds(bytes);
    for _ in bounds.by_ref() {}
    bounds.0.is_empty()
}

/// Rows to emit: (row, start, end, kind); bounds are `None` for rows without a time.
type Emission = Vec<(Box<[u8]>, Option<(i64, i64)>, RowKind)>;

pub struct SessionWindowOperator {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    time: Arc<dyn PhysicalExpr>,
    /// The time column's type; bounds are kept in its unit.
    time_type: DataType,
    gap: i64,
    bounds: Vec<SessionBound>,
    emit_on_close: bool,
    /// Allowed lateness (ms): sessions close when the watermark passes end + lateness.
    lateness_ms: i64,
    key_converter: RowConverter,
    row_converter: RowConverter,
    /// Per partition key (row format; empty without PARTITION BY): its open sessions.
    /// With a spill store, those of the recently used keys.
    partitions: HashMap<Box<[u8]>, Sessions>,
    /// Every open session's partition key by the session's end, to close them as the
    /// watermark passes (spilled ones too).
    by_end: BTreeMap<i64, HashSet<Box<[u8]>>>,
    /// The watermark in the time column's unit.
    watermark: Option<i64>,
    late_rows: Arc<AtomicU64>,
    /// Input columns, the bounds, and the op column unless emitting on close.
    schema: SchemaRef,
    /// Partition keys beyond the memory budget.
    spill: Option<KeyedSpill>,
}

impl SessionWindowOperator {
    /// `gap` is in units of `time_type`; `key_types` are the types of `keys`; `input` is
    /// the input schema.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        keys: Vec<Arc<dyn PhysicalExpr>>,
        key_types: Vec<DataType>,
        time: Arc<dyn PhysicalExpr>,
        time_type: DataType,
        gap: i64,
        bounds: Vec<SessionBound>,
        emit_on_close: bool,
        lateness_ms: i64,
        input: &SchemaRef,
        schema: SchemaRef,
        late_rows: Arc<AtomicU64>,
    ) -> Result<Self> {
        if gap <= 0 {
            return Err(SluiceError::invalid_parameter(
                "a SESSION window's gap must be positive",
            ));
        }
        Ok(SessionWindowOperator {
            key_converter: RowConverter::new(key_types.into_iter().map(SortField::new).collect())?,
            row_converter: row_converter(input)?,
            keys,
            time,
            time_type,
            gap,
            bounds,
            emit_on_close,
            lateness_ms,
            partitions: HashMap::new(),
            by_end: BTreeMap::new(),
            watermark: None,
            late_rows,
            schema,
            spill: None,
        })
    }

    /// Whether its state can spill: only with PARTITION BY (without, it is one value).
    pub fn can_spill(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Keeps the recently used partition keys' sessions in memory (within `store`'s
    /// budget) and the rest in `store`. Only for an operator that [`Self::can_spill`].
    pub fn with_spill(mut self, store: SpillStore) -> Self {
        debug_assert!(self.can_spill());
        self.spill = Some(KeyedSpill::new(store, PARTITION, 1));
        self
    }

    /// Open sessions, spilled ones included, for tests and metrics.
    pub fn session_count(&self) -> usize {
        self.by_end.values().map(HashSet::len).sum()
    }

    /// Partition keys in memory and in the spill store, for tests: O(keys).
    pub fn partition_counts(&self) -> (usize, usize) {
        let stored = self.spill.as_ref().map_or(0, |s| s.store.table().len());
        (self.partitions.len(), stored)
    }

    /// A watermark (ms since the epoch) in the time column's unit.
    fn in_time_unit(&self, millis: i64) -> i64 {
        match self.time_type {
            DataType::Timestamp(TimeUnit::Second, _) => millis.div_euclid(1000),
            DataType::Timestamp(TimeUnit::Microsecond, _) => millis.saturating_mul(1_000),
            DataType::Timestamp(TimeUnit::Nanosecond, _) => millis.saturating_mul(1_000_000),
            _ => millis,
        }
    }

    /// The key group of each partition key.
    fn key_groups(&self, keys: &[&[u8]]) -> Result<Vec<u16>> {
        if self.keys.is_empty() {
            Ok(vec![0; keys.len()])
        } else {
            key_groups_of_rows(&self.key_converter, keys)
        }
    }

    /// Adds a row with time `ts` to its partition's sessions.
    fn add(&mut self, key: &[u8], ts: i64, row: Box<[u8]>, emit: &mut Emission) {
        let row_end = ts.saturating_add(self.gap);
        // Sessions overlapping or touching [ts, row_end]: starting at or before row_end
        // and ending at or after ts. Sessions of a key are disjoint, so walk back from
        // row_end until one ends before ts.
        let touching: Vec<i64> = self
            .partitions
            .get(key)
            .map(|sessions| {
                sessions
                    .range(..=row_end)
                    .rev()
                    .take_while(|(_, session)| session.end >= ts)
                    .map(|(start, _)| *start)
                    .collect()
            })
            .unwrap_or_default();
        if touching.is_empty() && self.watermark.is_some_and(|w| row_end <= w) {
            self.late_rows.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let sessions = match self.partitions.get_mut(key) {
            Some(sessions) => sessions,
            None => self.partitions.entry(key.into()).or_default(),
        };
        if let [start] = touching[..] {
            let session = sessions.get_mut(&start).expect("found above");
            if start <= ts && row_end <= session.end {
                if !self.emit_on_close {
                    emit.push((row.clone(), Some((start, session.end)), RowKind::Insert));
                }
                session.rows.push(row);
                return;
            }
        }
        let (mut start, mut end) = (ts, row_end);
        let mut rows = Vec::new();
        for old_start in touching {
            let old = sessions.remove(&old_start).expect("found above");
            unindex(&mut self.by_end, old.end, key);
            if !self.emit_on_close {
                for r in &old.rows {
                    emit.push((r.clone(), Some((old_start, old.end)), RowKind::Delete));
                }
            }
            start = start.min(old_start);
            end = end.max(old.end);
            rows.extend(old.rows);
        }
        rows.push(row);
        if !self.emit_on_close {
            for r in &rows {
                emit.push((r.clone(), Some((start, end)), RowKind::Insert));
            }
        }
        sessions.insert(start, Session { end, rows });
        self.by_end.entry(end).or_default().insert(key.into());
    }

    /// Closes every session ending at or before `upto` (all when `None`), emitting its
    /// rows when emitting on close. Spilled keys are read back a chunk at a time.
    fn close_sessions(&mut self, upto: Option<i64>, emit: &mut Emission) -> Result<()> {
        let due = match upto {
            Some(w) => take_through(&mut self.by_end, w),
            None => std::mem::take(&mut self.by_end),
        };
        let due: Vec<(i64, Box<[u8]>)> = due
            .into_iter()
            .flat_map(|(end, keys)| keys.into_iter().map(move |key| (end, key)))
            .collect();
        for chunk in due.chunks(WRITE_CHUNK) {
            if let Some(spill) = &mut self.spill {
                // A spilling operator has PARTITION BY keys.
                let keys: Vec<&[u8]> = chunk.iter().map(|(_, key)| key.as_ref()).collect();
                let maps = std::slice::from_mut(&mut self.partitions);
                spill.load_encoded(maps, &self.key_converter, &keys)?;
            }
            for (end, key) in chunk {
                let sessions = self.partitions.get_mut(key).ok_or_else(|| {
                    SluiceError::internal("a session window's open session has no state")
                })?;
                // Sessions close in the order of their ends, which is their order.
                let Some((start, session)) = sessions.pop_first() else {
                    return Err(SluiceError::internal("a session window lost a session"));
                };
                debug_assert_eq!(session.end, *end);
                if sessions.is_empty() {
                    self.partitions.remove(key);
                }
                if self.emit_on_close {
                    for r in session.rows {
                        emit.push((r, Some((start, session.end)), RowKind::Insert));
                    }
                }
            }
            if let Some(spill) = &mut self.spill {
                spill.account(std::slice::from_mut(&mut self.partitions), 0);
            }
        }
        Ok(())
    }

    fn flush(&self, emit: Emission, out: &mut Vec<Message>) -> Result<()> {
        if emit.is_empty() {
            return Ok(());
        }
        let parser = self.row_converter.parser();
        let mut columns = self
            .row_converter
            .convert_rows(emit.iter().map(|(r, _, _)| parser.parse(r)))?;
        for bound in &self.bounds {
            let values: Int64Array = emit
                .iter()
                .map(|(_, b, _)| {
                    b.map(|(start, end)| match bound {
                        SessionBound::Start => start,
                        SessionBound::End => end,
                    })
                })
                .collect();
            columns.push(arrow::compute::cast(&values, &self.time_type)?);
        }
        if !self.emit_on_close {
            let ops: Int8Array = emit.iter().map(|(_, _, kind)| *kind as i8).collect();
            columns.push(Arc::new(ops) as ArrayRef);
        }
        out.push(Message::Batch(RecordBatch::try_new(
            self.schema.clone(),
            columns,
        )?));
        Ok(())
    }

    /// Files the sessions of a restored partition key's encoded value under their ends.
    fn index_value(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        if !well_formed(value) {
            return Err(SluiceError::corrupted(
                "a session window snapshot entry is malformed",
            ));
        }
        for (_, end, _) in SessionBounds(value) {
            self.by_end.entry(end).or_default().insert(key.into());
        }
        Ok(())
    }

    /// Files the sessions a spilling operator restored into its store under their ends
    /// (a chunk at a time; the values stay encoded).
    fn index_stored_sessions(&mut self) -> Result<()> {
        let Some(spill) = &self.spill else {
            return Ok(());
        };
        let mut stored = Vec::new();
        spill
            .store
            .table()
            .scan_chunks(None, WRITE_CHUNK, &mut |chunk| {
                for (_, entry_key, value) in chunk {
                    if let Some((_, key)) = split_entry_key(PARTITION, 1, &entry_key) {
                        let ends: Vec<i64> = SessionBounds(&value).map(|(_, end, _)| end).collect();
                        stored.push((Box::<[u8]>::from(key), ends, well_formed(&value)));
                    }
                }
            });
        for (key, ends, well_formed) in stored {
            if !well_formed {
                return Err(SluiceError::corrupted(
                    "a session window snapshot entry is malformed",
                ));
            }
            for end in ends {
                self.by_end.entry(end).or_default().insert(key.clone());
            }
        }
        Ok(())
    }

    /// Sessions of a checkpoint taken before partition keys had one entry each: start,
    /// then partition key in the entry's key; end, then rows (each behind its length)
    /// in its value.
    fn restore_session_entry(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let corrupt = || SluiceError::corrupted("a session window snapshot entry is truncated");
        let take8 = |bytes: &[u8], at: usize| -> Result<i64> {
            let b: [u8; 8] = bytes
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(corrupt)?;
            Ok(i64::from_le_bytes(b))
        };
        let start = take8(key, 1)?;
        let partition: Box<[u8]> = key.get(9..).ok_or_else(corrupt)?.into();
        let end = take8(value, 0)?;
        let mut rows = Vec::new();
        let mut rest = &value[8..];
        while !rest.is_empty() {
            let (row, after) = split_sized(rest).ok_or_else(corrupt)?;
            rows.push(row.into());
            rest = after;
        }
        self.by_end
            .entry(end)
            .or_default()
            .insert(partition.clone());
        self.partitions
            .entry(partition)
            .or_default()
            .insert(start, Session { end, rows });
        Ok(())
    }
}

/// Takes `key`'s session ending at `end` out of the index of open sessions.
fn unindex(by_end: &mut BTreeMap<i64, HashSet<Box<[u8]>>>, end: i64, key: &[u8]) {
    if let Some(keys) = by_end.get_mut(&end) {
        keys.remove(key);
        if keys.is_empty() {
            by_end.remove(&end);
        }
    }
}

impl Operator for SessionWindowOperator {
    fn name(&self) -> &'static str {
        "SessionWindow"
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<Message>) -> Result<()> {
        let n = batch.num_rows();
        let key_columns = self
            .keys
            .iter()
            .map(|e| e.evaluate(&batch).and_then(|v| v.into_array(n)))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let keys = if self.keys.is_empty() {
            None
        } else {
            Some(self.key_converter.convert_columns(&key_columns)?)
        };
        let times = self.time.evaluate(&batch)?.into_array(n)?;
        let times = arrow::compute::cast(&times, &DataType::Int64)?;
        let times = times.as_primitive::<Int64Type>();
        let rows = self.row_converter.convert_columns(batch.columns())?;
        if let (Some(spill), Some(keys)) = (&mut self.spill, &keys) {
            let maps = std::slice::from_mut(&mut self.partitions);
            spill.load(maps, &key_columns, keys, 0, &rows)?;
        }
        let mut emit = Emission::new();
        for i in 0..n {
            let row: Box<[u8]> = rows.row(i).as_ref().into();
            if times.is_null(i) {
                // A row without a time is in no session (batch queries agree: NULL bounds).
                emit.push((row, None, RowKind::Insert));
                continue;
            }
            let key = keys.as_ref().map_or(&[][..], |k| k.row(i).data());
            self.add(key, times.value(i), row, &mut emit);
        }
        if let Some(spill) = &mut self.spill {
            spill.account(std::slice::from_mut(&mut self.partitions), 0);
        }
        self.flush(emit, out)
    }

    fn process_watermark(&mut self, watermark: Watermark, out: &mut Vec<Message>) -> Result<()> {
        let w = self.in_time_unit(watermark.0.saturating_sub(self.lateness_ms));
        if self.watermark.is_none_or(|current| w > current) {
            self.watermark = Some(w);
            let mut emit = Emission::new();
            self.close_sessions(Some(w), &mut emit)?;
            self.flush(emit, out)?;
        }
        out.push(Message::Watermark(watermark));
        Ok(())
    }

    /// At end of input every session is complete.
    fn finish(&mut self, out: &mut Vec<Message>) -> Result<()> {
        let mut emit = Emission::new();
        self.close_sessions(None, &mut emit)?;
        self.flush(emit, out)
    }

    fn snapshot_state(&mut self) -> Result<Vec<StateEntry>> {
        let mut entries = Vec::new();
        if let Some(w) = self.watermark {
            entries.push((
                OPERATOR_WIDE,
                WATERMARK_KEY.to_vec(),
                w.to_le_bytes().to_vec(),
            ));
        }
        match &mut self.spill {
            Some(spill) => {
                spill.flush(std::slice::from_ref(&self.partitions));
                if !spill.store.on_disk() {
                    entries.extend(spill.store.entries());
                }
            }
            None => entries.extend(value_entries(
                PARTITION,
                std::slice::from_ref(&self.partitions),
                |keys| self.key_groups(keys),
            )?),
        }
        Ok(entries)
    }

    fn snapshot_database(&mut self) -> Result<Option<DbCheckpoint>> {
        self.spill
            .as_ref()
            .map_or(Ok(None), |spill| spill.store.checkpoint())
    }

    /// A spilling operator copies the partition keys of restored spill stores into its
    /// own, then indexes their sessions.
    fn restore(&mut self, state: RestoredState<'_>) -> Result<()> {
        if super::restore_spilling(self, state, |s| s.spill.as_mut().map(|s| &mut s.store))? {
            // What restore_state put in the store is indexed already: the index is a
            // set per end, so indexing it again changes nothing.
            self.index_stored_sessions()?;
        }
        Ok(())
    }

    fn restore_state(&mut self, entries: Vec<StateEntry>) -> Result<()> {
        let mut stored = Vec::new();
        for (key_group, key, value) in entries {
            if key == WATERMARK_KEY {
                let w: [u8; 8] = value.as_slice().try_into().map_err(|_| {
                    SluiceError::corrupted("a session window's watermark entry is truncated")
                })?;
                self.watermark = Some(i64::from_le_bytes(w));
            } else if let Some((_, partition)) = split_entry_key(PARTITION, 1, &key) {
                self.index_value(partition, &value)?;
                if self.spill.is_some() {
                    // Partition keys stay encoded until a row or a closing needs them.
                    stored.push((key_group, key, value));
                } else {
                    let sessions = Sessions::decode(&value).ok_or_else(|| {
                        SluiceError::corrupted("a session window snapshot entry is malformed")
                    })?;
                    self.partitions.insert(partition.into(), sessions);
                }
            } else if key.first() == Some(&SESSION) {
                self.restore_session_entry(&key, &value)?;
            } else {
                return Err(SluiceError::corrupted(
                    "unknown session window snapshot entry",
                ));
            }
        }
        if let Some(spill) = &mut self.spill {
            // Sessions of checkpoints before partition entries went to memory above:
            // into the store.
            let legacy = std::mem::take(&mut self.partitions);
            stored.extend(value_entries(
                PARTITION,
                std::slice::from_ref(&legacy),
                |keys| key_groups_of_rows(&self.key_converter, keys),
            )?);
            spill.store.put(stored);
        }
        Ok(())
    }
}

/// Key prefix of a session's entry in checkpoints before partition entries: then its
/// start and its partition key.
const SESSION: u8 = 0;
const WATERMARK_KEY: &[u8] = &[1, b'w'];
/// What a partition key's snapshot key starts with, ahead of the key.
const PARTITION: &[u8] = &[2, b'p'];

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::TimestampMillisecondArray;
    use arrow::datatypes::{Field, Schema};
    use datafusion::physical_expr::expressions::Column;

    use crate::message::{changelog_schema, split_changelog};

    const TS: DataType = DataType::Timestamp(TimeUnit::Millisecond, None);

    fn operator(emit_on_close: bool, late: Arc<AtomicU64>) -> SessionWindowOperator {
        let input = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("ts", TS, true),
        ]));
        let output = Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("ts", TS, true),
            Field::new("window_start", TS, true),
            Field::new("window_end", TS, true),
        ]);
        let schema = if emit_on_close {
            Arc::new(output)
        } else {
            changelog_schema(&output)
        };
        SessionWindowOperator::new(
            vec![Arc::new(Column::new("k", 0))],
            vec![DataType::Int64],
            Arc::new(Column::new("ts", 1)),
            TS,
            10,
            vec![SessionBound::Start, SessionBound::End],
            emit_on_close,
            0,
            &input,
            schema,
            late,
        )
        .unwrap()
    }

    fn rows(k: Vec<i64>, ts: Vec<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("ts", TS, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(k)),
                Arc::new(TimestampMillisecondArray::from(ts)),
            ],
        )
        .unwrap()
    }

    /// Each output row as "op k ts [start,end)".
    fn changes(out: &[Message]) -> Vec<String> {
        let mut lines = vec![];
        for m in out {
            let Message::Batch(b) = m else { continue };
            let (data, ops) = if b.schema().fields().len() == 5 {
                let (data, ops) = split_changelog(b);
                (data, Some(ops))
            } else {
                (b.clone(), None)
            };
            let col = |i: usize| {
                arrow::compute::cast(data.column(i), &DataType::Int64)
                    .unwrap()
                    .as_primitive::<Int64Type>()
                    .clone()
            };
            let (k, ts, start, end) = (col(0), col(1), col(2), col(3));
            for r in 0..data.num_rows() {
                let op = ops
                    .as_ref()
                    .map(|o| RowKind::symbol(o.value(r)))
                    .unwrap_or("+I");
                lines.push(format!(
                    "{op} {} {} [{},{})",
                    k.value(r),
                    ts.value(r),
                    start.value(r),
                    end.value(r)
                ));
            }
        }
        lines
    }

    #[test]
    fn rows_join_extend_and_bridge_sessions_with_retractions() {
        let mut op = operator(false, Arc::new(AtomicU64::new(0)));
        let mut out = vec![];
        op.process_batch(rows(vec![1, 1, 2], vec![0, 30, 5]), &mut out)
            .unwrap();
        assert_eq!(
            changes(&out),
            vec!["+I 1 0 [0,10)", "+I 1 30 [30,40)", "+I 2 5 [5,15)"]
        );
        // A second row at 0 fits in [0,10); 10 touches it and extends it to [0,20)
        // (not yet touching [30,40)); then 20 bridges [0,20) and [30,40) into [0,40).
        out.clear();
        op.process_batch(rows(vec![1], vec![0]), &mut out).unwrap();
        assert_eq!(changes(&out), vec!["+I 1 0 [0,10)"]);
        out.clear();
        op.process_batch(rows(vec![1], vec![10]), &mut out).unwrap();
        assert_eq!(
            changes(&out),
            vec![
                "-D 1 0 [0,10)",
                "-D 1 0 [0,10)",
                "+I 1 0 [0,20)",
                "+I 1 0 [0,20)",
                "+I 1 10 [0,20)"
            ]
        );
        out.clear();
        op.process_batch(rows(vec![1], vec![20]), &mut out).unwrap();
        let lines = changes(&out);
        assert_eq!(lines.iter().filter(|l| l.starts_with("-D")).count(), 4);
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.starts_with("+I") && l.ends_with("[0,40)"))
                .count(),
            5
        );
        assert_eq!(op.session_count(), 2);
    }

    #[test]
    fn on_close_sessions_emit_once_when_the_watermark_passes_and_late_rows_are_counted() {
        let late = Arc::new(AtomicU64::new(0));
        let mut op = operator(true, late.clone());
        let mut out = vec![];
        op.process_batch(rows(vec![1, 1, 1], vec![0, 8, 40]), &mut out)
            .unwrap();
        op.process_watermark(Watermark(17), &mut out).unwrap();
        assert!(changes(&out).is_empty(), "[0,18) is still open");
        op.process_watermark(Watermark(18), &mut out).unwrap();
        assert_eq!(changes(&out), vec!["+I 1 0 [0,18)", "+I 1 8 [0,18)"]);
        // 5 + 10 <= 18 and touches no open session: late. 45 joins [40,50).
        out.clear();
        op.process_batch(rows(vec![1, 1], vec![5, 45]), &mut out)
            .unwrap();
        assert_eq!(late.load(Ordering::Relaxed), 1);
        op.finish(&mut out).unwrap();
        assert_eq!(changes(&out), vec!["+I 1 40 [40,55)", "+I 1 45 [40,55)"]);
        assert_eq!(op.session_count(), 0);
    }

    #[test]
    fn a_snapshot_restores_open_sessions_and_the_watermark() {
        let mut op = operator(true, Arc::new(AtomicU64::new(0)));
        let mut out = vec![];
        op.process_batch(rows(vec![1, 2, 1], vec![0, 3, 4]), &mut out)
            .unwrap();
        op.process_watermark(Watermark(1), &mut out).unwrap();
        let entries = op.snapshot_state().unwrap();
        let mut restored = operator(true, Arc::new(AtomicU64::new(0)));
        restored.restore_state(entries).unwrap();
        assert_eq!(restored.session_count(), 2);
        restored.finish(&mut out).unwrap();
        let mut lines = changes(&out);
        lines.sort();
        assert_eq!(
            lines,
            vec!["+I 1 0 [0,14)", "+I 1 4 [0,14)", "+I 2 3 [3,13)"]
        );
    }

    /// Batches of rows of keys 0..12 at times wandering forward (some late), each
    /// followed by a watermark: sessions open, grow, bridge and close throughout.
    fn wandering(batches: usize) -> Vec<(RecordBatch, Watermark)> {
        let mut next = crate::test_support::xorshift(0x2545_f491_4f6c_dd1d);
        (0..batches as i64)
            .map(|b| {
                let (mut keys, mut times) = (vec![], vec![]);
                for _ in 0..1 + next(6) {
                    keys.push(next(12) as i64);
                    times.push(b * 4 + next(30) as i64 - 10);
                }
                (rows(keys, times), Watermark(b * 4 - 5))
            })
            .collect()
    }

    /// The sorted output lines of `op` for one message (`None`: the end of input).
    fn step(
        op: &mut SessionWindowOperator,
        message: Option<&(RecordBatch, Watermark)>,
    ) -> Vec<String> {
        let mut out = vec![];
        match message {
            Some((batch, watermark)) => {
                op.process_batch(batch.clone(), &mut out).unwrap();
                op.process_watermark(*watermark, &mut out).unwrap();
            }
            None => op.finish(&mut out).unwrap(),
        }
        let mut lines = changes(&out);
        lines.sort();
        lines
    }

    #[test]
    fn spilled_sessions_come_back_and_change_no_result() {
        for emit_on_close in [false, true] {
            let make = || operator(emit_on_close, Arc::new(AtomicU64::new(0)));
            let mut reference = make();
            let mut everything_spilled = make().with_spill(SpillStore::in_memory(0));
            let mut some_spilled = make().with_spill(SpillStore::in_memory(1500));
            let mut spilled_some = false;
            for (i, message) in wandering(60).iter().enumerate() {
                let want = step(&mut reference, Some(message));
                for op in [&mut everything_spilled, &mut some_spilled] {
                    assert_eq!(step(op, Some(message)), want, "batch {i}");
                    assert_eq!(op.session_count(), reference.session_count());
                }
                let held = reference.partitions.len();
                assert_eq!(everything_spilled.partition_counts(), (0, held));
                let (cached, stored) = some_spilled.partition_counts();
                spilled_some |= stored > 0 && cached > 0;
                if i % 9 == 8 {
                    let sorted = |mut entries: Vec<StateEntry>| {
                        entries.sort();
                        entries
                    };
                    assert_eq!(
                        sorted(some_spilled.snapshot_state().unwrap()),
                        sorted(reference.snapshot_state().unwrap()),
                        "at a barrier the store is the state"
                    );
                }
            }
            assert!(spilled_some, "the small budget kept some keys in memory");

            // Restored, the keys stay in the store until rows or closings need them; a
            // snapshot restores into an operator that spills or not alike.
            let snapshot = everything_spilled.snapshot_state().unwrap();
            let mut restored = make().with_spill(SpillStore::in_memory(0));
            restored
                .restore(RestoredState::of_entries(snapshot.clone()))
                .unwrap();
            assert_eq!(restored.partition_counts(), (0, reference.partitions.len()));
            assert_eq!(restored.session_count(), reference.session_count());
            let mut in_memory = make();
            in_memory
                .restore(RestoredState::of_entries(snapshot))
                .unwrap();
            let more = wandering(70).split_off(60);
            for message in more.iter().map(Some).chain([None]) {
                let want = step(&mut reference, message);
                assert_eq!(step(&mut restored, message), want);
                assert_eq!(step(&mut in_memory, message), want);
            }
            assert_eq!(restored.partition_counts(), (0, 0));
        }
    }

    #[test]
    fn checkpoints_with_an_entry_per_session_still_restore() {
        let mut op = operator(true, Arc::new(AtomicU64::new(0)));
        let mut out = vec![];
        op.process_batch(rows(vec![1, 2, 1, 1], vec![0, 3, 4, 30]), &mut out)
            .unwrap();
        // The format before an entry per partition key: [0, start, key] → end, rows.
        let mut legacy = vec![];
        for (key, sessions) in &op.partitions {
            for (start, session) in sessions {
                let mut entry_key = vec![SESSION];
                entry_key.extend_from_slice(&start.to_le_bytes());
                entry_key.extend_from_slice(key);
                let mut value = session.end.to_le_bytes().to_vec();
                for row in &session.rows {
                    push_sized(&mut value, row);
                }
                legacy.push((0, entry_key, value));
            }
        }
        for spill in [None, Some(SpillStore::in_memory(0))] {
            let mut restored = operator(true, Arc::new(AtomicU64::new(0)));
            if let Some(store) = spill {
                restored = restored.with_spill(store);
            }
            restored
                .restore(RestoredState::of_entries(legacy.clone()))
                .unwrap();
            assert_eq!(restored.session_count(), 3);
            let mut lines = step(&mut restored, None);
            lines.sort();
            assert_eq!(
                lines,
                vec![
                    "+I 1 0 [0,14)",
                    "+I 1 30 [30,40)",
                    "+I 1 4 [0,14)",
                    "+I 2 3 [3,13)"
                ]
            );
        }
    }

    #[test]
    fn a_malformed_entry_is_reported_not_restored() {
        let mut op = operator(false, Arc::new(AtomicU64::new(0)));
        let mut out = vec![];
        op.process_batch(rows(vec![1], vec![0]), &mut out).unwrap();
        let mut entries = op.snapshot_state().unwrap();
        let (_, _, value) = entries.last_mut().unwrap();
        value.truncate(value.len() - 1);
        for spill in [None, Some(SpillStore::in_memory(0))] {
            let mut restored = operator(false, Arc::new(AtomicU64::new(0)));
            if let Some(store) = spill {
                restored = restored.with_spill(store);
            }
            let err = restored
                .restore(RestoredState::of_entries(entries.clone()))
                .unwrap_err();
            assert!(err.to_string().contains("malformed"), "{err}");
        }
    }

    #[test]
    fn subtasks_restore_their_key_groups_of_a_database_and_close_its_sessions() {
        use sluice_state::{DEFAULT_KEY_GROUPS, OperatorStateDirs};
        let root =
            std::env::temp_dir().join(format!("sluice-session-restore-{}", std::process::id()));
        let dirs = OperatorStateDirs::open(&root, 0).unwrap();
        let make = || operator(true, Arc::new(AtomicU64::new(0)));
        let mut reference = make();
        let mut spilling = make().with_spill(dirs.open_store("before").unwrap());
        for message in &wandering(40) {
            assert_eq!(
                step(&mut spilling, Some(message)),
                step(&mut reference, Some(message))
            );
        }
        let entries = spilling.snapshot_state().unwrap();
        assert_eq!(entries.len(), 1, "on disk, only the watermark is an entry");
        let checkpoint = spilling.snapshot_database().unwrap().unwrap();
        let db = crate::test_support::restored_db(&dirs, &checkpoint);

        // At parallelism 2, each subtask takes the keys of its key groups, indexes their
        // sessions without reading them, and closes them at the end.
        let (mut sessions, mut closed) = (0, vec![]);
        for subtask in 0..2 {
            let key_groups: Vec<u16> = (0..DEFAULT_KEY_GROUPS)
                .filter(|&g| {
                    sluice_state::subtask_of_key_group(g, DEFAULT_KEY_GROUPS, 2) == subtask
                })
                .collect();
            let mut restored =
                make().with_spill(dirs.open_store(&format!("after-{subtask}")).unwrap());
            restored
                .restore(RestoredState {
                    entries: entries.clone(),
                    databases: vec![&db],
                    key_groups: Some(key_groups),
                })
                .unwrap();
            assert_eq!(restored.partition_counts().0, 0, "nothing read into memory");
            assert!(restored.session_count() > 0);
            sessions += restored.session_count();
            closed.extend(step(&mut restored, None));
        }
        assert_eq!(sessions, reference.session_count());
        closed.sort();
        assert_eq!(closed, step(&mut reference, None));
        drop((db, checkpoint, spilling));
        let _ = std::fs::remove_dir_all(root);
    }
}
