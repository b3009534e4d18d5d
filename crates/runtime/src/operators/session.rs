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

use crate::operators::OPERATOR_WIDE;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, ArrayRef, AsArray, Int8Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Int64Type, SchemaRef, TimeUnit};
use arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;
use sluice_common::error::{Result, SluiceError};
use sluice_state::DEFAULT_KEY_GROUPS;

use super::encoding::row_converter;
use super::{Operator, StateEntry};
use crate::keygroup::key_groups_of_columns;
use crate::message::{Message, RowKind, Watermark};

/// Which session bound an output column holds, in the order the planner asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionBound {
    Start,
    End,
}

struct Session {
    /// The partition key (row format; empty without PARTITION BY).
    key: Box<[u8]>,
    start: i64,
    end: i64,
    /// The session's rows (row format, every input column).
    rows: Vec<OwnedRow>,
}

/// Rows to emit: (row, start, end, kind); bounds are `None` for rows without a time.
type Emission = Vec<(OwnedRow, Option<(i64, i64)>, RowKind)>;

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
    sessions: HashMap<u64, Session>,
    next_id: u64,
    /// Per partition key: session start → session id.
    by_key: HashMap<Box<[u8]>, BTreeMap<i64, u64>>,
    /// Open sessions by end, to close them as the watermark passes.
    by_end: BTreeSet<(i64, u64)>,
    /// The watermark in the time column's unit.
    watermark: Option<i64>,
    late_rows: Arc<AtomicU64>,
    /// Input columns, the bounds, and the op column unless emitting on close.
    schema: SchemaRef,
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
            sessions: HashMap::new(),
            next_id: 0,
            by_key: HashMap::new(),
            by_end: BTreeSet::new(),
            watermark: None,
            late_rows,
            schema,
        })
    }

    /// Open sessions, for tests and metrics.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
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

    fn insert_session(&mut self, session: Session) {
        let id = self.next_id;
        self.next_id += 1;
        self.by_key
            .entry(session.key.clone())
            .or_default()
            .insert(session.start, id);
        self.by_end.insert((session.end, id));
        self.sessions.insert(id, session);
    }

    fn remove_session(&mut self, id: u64) -> Session {
        let session = self.sessions.remove(&id).expect("indexed session exists");
        self.by_end.remove(&(session.end, id));
        if let Some(starts) = self.by_key.get_mut(&session.key) {
            starts.remove(&session.start);
            if starts.is_empty() {
                self.by_key.remove(&session.key);
            }
        }
        session
    }

    /// Adds a row with time `ts` to its partition's sessions.
    fn add(&mut self, key: Box<[u8]>, ts: i64, row: OwnedRow, emit: &mut Emission) {
        let row_end = ts.saturating_add(self.gap);
        // Sessions overlapping or touching [ts, row_end]: starting at or before row_end
        // and ending at or after ts. Sessions of a key are disjoint, so walk back from
        // row_end until one ends before ts.
        let touching: Vec<u64> = self
            .by_key
            .get(&key)
            .map(|starts| {
                starts
                    .range(..=row_end)
                    .rev()
                    .map(|(_, id)| *id)
                    .take_while(|id| self.sessions[id].end >= ts)
                    .collect()
            })
            .unwrap_or_default();
        if touching.is_empty() && self.watermark.is_some_and(|w| row_end <= w) {
            self.late_rows.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let [id] = touching.as_slice() {
            let session = self.sessions.get_mut(id).expect("indexed session exists");
            if session.start <= ts && row_end <= session.end {
                if !self.emit_on_close {
                    emit.push((
                        row.clone(),
                        Some((session.start, session.end)),
                        RowKind::Insert,
                    ));
                }
                session.rows.push(row);
                return;
            }
        }
        let mut merged = Session {
            key,
            start: ts,
            end: row_end,
            rows: Vec::new(),
        };
        for id in touching {
            let old = self.remove_session(id);
            if !self.emit_on_close {
                for r in &old.rows {
                    emit.push((r.clone(), Some((old.start, old.end)), RowKind::Delete));
                }
            }
            merged.start = merged.start.min(old.start);
            merged.end = merged.end.max(old.end);
            merged.rows.extend(old.rows);
        }
        merged.rows.push(row);
        if !self.emit_on_close {
            for r in &merged.rows {
                emit.push((r.clone(), Some((merged.start, merged.end)), RowKind::Insert));
            }
        }
        self.insert_session(merged);
    }

    /// Closes every session ending at or before `upto` (all when `None`), emitting its
    /// rows when emitting on close.
    fn close_sessions(&mut self, upto: Option<i64>, emit: &mut Emission) {
        while let Some(&(end, id)) = self.by_end.first() {
            if upto.is_some_and(|w| end > w) {
                break;
            }
            let session = self.remove_session(id);
            if self.emit_on_close {
                for r in session.rows {
                    emit.push((r, Some((session.start, session.end)), RowKind::Insert));
                }
            }
        }
    }

    fn flush(&self, emit: Emission, out: &mut Vec<Message>) -> Result<()> {
        if emit.is_empty() {
            return Ok(());
        }
        let mut columns = self
            .row_converter
            .convert_rows(emit.iter().map(|(r, _, _)| r.row()))?;
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
        let mut emit = Emission::new();
        for i in 0..n {
            let row = rows.row(i).owned();
            if times.is_null(i) {
                // A row without a time is in no session (batch queries agree: NULL bounds).
                emit.push((row, None, RowKind::Insert));
                continue;
            }
            let key = keys
                .as_ref()
                .map(|k| Box::from(k.row(i).as_ref()))
                .unwrap_or_default();
            self.add(key, times.value(i), row, &mut emit);
        }
        self.flush(emit, out)
    }

    fn process_watermark(&mut self, watermark: Watermark, out: &mut Vec<Message>) -> Result<()> {
        let w = self.in_time_unit(watermark.0.saturating_sub(self.lateness_ms));
        if self.watermark.is_none_or(|current| w > current) {
            self.watermark = Some(w);
            let mut emit = Emission::new();
            self.close_sessions(Some(w), &mut emit);
            self.flush(emit, out)?;
        }
        out.push(Message::Watermark(watermark));
        Ok(())
    }

    /// At end of input every session is complete.
    fn finish(&mut self, out: &mut Vec<Message>) -> Result<()> {
        let mut emit = Emission::new();
        self.close_sessions(None, &mut emit);
        self.flush(emit, out)
    }

    fn snapshot_state(&mut self) -> Result<Vec<StateEntry>> {
        let mut entries = Vec::with_capacity(self.sessions.len() + 1);
        if let Some(w) = self.watermark {
            entries.push((
                OPERATOR_WIDE,
                WATERMARK_KEY.to_vec(),
                w.to_le_bytes().to_vec(),
            ));
        }
        let sessions: Vec<&Session> = self.sessions.values().collect();
        let key_groups = if self.keys.is_empty() || sessions.is_empty() {
            vec![0; sessions.len()]
        } else {
            let parser = self.key_converter.parser();
            let keys = self
                .key_converter
                .convert_rows(sessions.iter().map(|s| parser.parse(&s.key)))?;
            key_groups_of_columns(&keys, sessions.len(), DEFAULT_KEY_GROUPS)?
        };
        for (session, key_group) in sessions.into_iter().zip(key_groups) {
            let mut key = vec![SESSION];
            key.extend_from_slice(&session.start.to_le_bytes());
            key.extend_from_slice(&session.key);
            let mut value = session.end.to_le_bytes().to_vec();
            for row in &session.rows {
                value.extend_from_slice(&(row.as_ref().len() as u32).to_le_bytes());
                value.extend_from_slice(row.as_ref());
            }
            entries.push((key_group, key, value));
        }
        Ok(entries)
    }

    fn restore_state(&mut self, entries: Vec<StateEntry>) -> Result<()> {
        let corrupt = || SluiceError::corrupted("a session window snapshot entry is truncated");
        let take8 = |bytes: &[u8], at: usize| -> Result<i64> {
            let b: [u8; 8] = bytes
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(corrupt)?;
            Ok(i64::from_le_bytes(b))
        };
        for (_, key, value) in entries {
            if key == WATERMARK_KEY {
                self.watermark = Some(take8(&value, 0)?);
                continue;
            }
            if key.first() != Some(&SESSION) {
                return Err(SluiceError::corrupted(
                    "unknown session window snapshot entry",
                ));
            }
            let start = take8(&key, 1)?;
            let partition: Box<[u8]> = key.get(9..).ok_or_else(corrupt)?.into();
            let end = take8(&value, 0)?;
            let mut rows = Vec::new();
            let mut at = 8;
            while at < value.len() {
                let len: [u8; 4] = value
                    .get(at..at + 4)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(corrupt)?;
                let len = u32::from_le_bytes(len) as usize;
                let bytes = value.get(at + 4..at + 4 + len).ok_or_else(corrupt)?;
                rows.push(self.row_converter.parser().parse(bytes).owned());
                at += 4 + len;
            }
            self.insert_session(Session {
                key: partition,
                start,
                end,
                rows,
            });
        }
        Ok(())
    }
}

/// Key prefix of a session's entry: then its start and its partition key.
const SESSION: u8 = 0;
const WATERMARK_KEY: &[u8] = &[1, b'w'];

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
}
