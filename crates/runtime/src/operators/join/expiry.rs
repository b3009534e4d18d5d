//! How a join forgets rows: the windows of a window join close at the watermark, an
//! interval join forgets rows the watermark has passed, and a state TTL forgets rows
//! after a while of processing time (see [`JoinTtl`] and the parent module's docs).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{ArrayRef, BooleanArray, Int8Array, RecordBatch};
use arrow::compute::filter_record_batch;
use datafusion::physical_expr::PhysicalExpr;
use sluice_common::error::{Result, SluiceError};

use sluice_state::spill::WRITE_CHUNK;

use super::{BUCKET, Bucket, JoinOperator};
use crate::message::{Message, RowKind, changelog_schema, split_changelog};
use crate::operators::encoding::{take_through, timestamp_millis, wall_clock_ms};
use crate::operators::keyed_spill::{SpillValue, split_entry_key};

/// A join's state TTL: a row is forgotten `ttl_ms` (processing time) after it was
/// inserted, and a later retraction of it is ignored. A join whose output is append-only
/// (an inner or semi join of append-only inputs) forgets silently: what the row joined
/// stays, and later rows no longer match it. A join whose output updates (outer and anti
/// joins, and any join of an updating input) retracts what the row produced, as its
/// deletion would, so its output stays the join of the rows it still holds.
pub(super) struct JoinTtl {
    pub(super) ttl_ms: i64,
    /// Per side: when (wall clock, ms) → the (key, row) pairs to forget then.
    pub(super) expiring: [Expiring; 2],
}

/// Expiry (ms) → the (join key, row) pairs of one side to forget then.
type Expiring = BTreeMap<i64, Vec<KeyRow>>;

/// A join key and a row of one side, in row format.
type KeyRow = (Box<[u8]>, Box<[u8]>);

/// A join key of one side and its distinct rows, in row format.
type KeyRows<'a> = (&'a [u8], Vec<Box<[u8]>>);

/// Held rows to forget: (side, join key, row).
type SideRows = Vec<(usize, Box<[u8]>, Box<[u8]>)>;

/// An interval join's forgetting of rows (see the module docs). Its index holds join
/// keys, not rows, so a spilling join's rows stay on disk: each key is filed under the
/// earliest expiry of its rows; when the watermark reaches it, the key's bucket is read
/// (back), the rows that expired leave it, and the key is filed under the next expiry.
pub struct JoinIntervals {
    /// Per side: the time (over the side's columns) after which its rows are forgotten.
    pub expiry: [Option<Arc<dyn PhysicalExpr>>; 2],
    /// Per side: its event time, when its rows must arrive on time.
    pub time: [Option<Arc<dyn PhysicalExpr>>; 2],
    pub late_rows: Arc<AtomicU64>,
    pub(super) watermark: Option<i64>,
    /// Per side: expiry (ms) → the join keys to visit then. A key may also stay filed
    /// under a later expiry it no longer needs (its rows were retracted or forgotten
    /// earlier); visiting it then is skipped.
    pub(super) expiring: [BTreeMap<i64, HashSet<Box<[u8]>>>; 2],
    /// Per side: the expiry each filed key is to be visited at, the earliest it is filed
    /// under.
    pub(super) next_expiry: [HashMap<Box<[u8]>, i64>; 2],
}

impl JoinIntervals {
    pub fn new(
        expiry: [Option<Arc<dyn PhysicalExpr>>; 2],
        time: [Option<Arc<dyn PhysicalExpr>>; 2],
        late_rows: Arc<AtomicU64>,
    ) -> Self {
        JoinIntervals {
            expiry,
            time,
            late_rows,
            watermark: None,
            expiring: [BTreeMap::new(), BTreeMap::new()],
            next_expiry: [HashMap::new(), HashMap::new()],
        }
    }

    /// Files `key` of `side` to be visited when the watermark reaches `expiry`, unless it
    /// is to be visited by then anyway.
    pub(super) fn file(&mut self, side: usize, key: &[u8], expiry: i64) {
        match self.next_expiry[side].get_mut(key) {
            Some(next) if *next <= expiry => return,
            Some(next) => *next = expiry,
            None => {
                self.next_expiry[side].insert(key.into(), expiry);
            }
        }
        self.expiring[side]
            .entry(expiry)
            .or_default()
            .insert(key.into());
    }

    /// Takes the keys of `side` to visit at `watermark` out of the index.
    fn take_due(&mut self, side: usize, watermark: i64) -> Vec<Box<[u8]>> {
        let filed: HashSet<Box<[u8]>> = take_through(&mut self.expiring[side], watermark)
            .into_values()
            .flatten()
            .collect();
        let next = &mut self.next_expiry[side];
        filed
            .into_iter()
            .filter(|key| match next.get(key) {
                Some(&at) if at <= watermark => {
                    next.remove(key);
                    true
                }
                _ => false,
            })
            .collect()
    }
}

/// A timestamp expression evaluated on `data`, in ms (`None` for NULL).
fn millis_of(expr: &Arc<dyn PhysicalExpr>, data: &RecordBatch) -> Result<Vec<Option<i64>>> {
    let values = expr.evaluate(data)?.into_array(data.num_rows())?;
    timestamp_millis(&values)
}

/// A window join's closing of windows (see the module docs).
pub(super) struct JoinWindows {
    /// The join key holding each row's window end.
    pub(super) key_index: usize,
    pub(super) lateness_ms: i64,
    /// Windows ending at or before this (ms) are closed.
    pub(super) closed_by: Option<i64>,
    /// Open windows: end → the join keys holding rows of it.
    pub(super) open: BTreeMap<i64, HashSet<Box<[u8]>>>,
    pub(super) late_rows: Arc<AtomicU64>,
}

impl JoinOperator {
    /// Gives the join a state TTL (see [`JoinTtl`]). Not for a null-aware anti join,
    /// whose NULL counts are facts about every row it has seen.
    pub fn with_state_ttl(mut self, ttl: std::time::Duration) -> Self {
        debug_assert!(self.null_aware.is_none());
        self.ttl = Some(JoinTtl {
            ttl_ms: ttl.as_millis() as i64,
            expiring: [BTreeMap::new(), BTreeMap::new()],
        });
        self
    }

    /// How many times `side` holds `row` under `key`.
    fn held_count(&self, side: usize, key: &[u8], row: &[u8]) -> u64 {
        self.state[side]
            .get(key)
            .and_then(|rows| rows.get(row))
            .copied()
            .unwrap_or(0)
    }

    /// Whether `side` holds `row` under `key`.
    pub(super) fn holds(&self, side: usize, key: &[u8], row: &[u8]) -> bool {
        self.held_count(side, key, row) > 0
    }

    /// Under a TTL, files the insertions of a batch of `side` to be forgotten one TTL
    /// from now, and drops the retractions of rows the TTL already forgot.
    pub(super) fn admit_under_ttl(
        &mut self,
        side: usize,
        batch: RecordBatch,
    ) -> Result<RecordBatch> {
        let Some(ttl) = &self.ttl else {
            return Ok(batch);
        };
        let expire_at = wall_clock_ms().saturating_add(ttl.ttl_ms);
        let (data, ops) = split_changelog(&batch);
        let (key_columns, keys, rows) = self.encode(side, &data)?;
        // Per (key, row) of this batch: how many copies retractions can still take.
        let mut available: HashMap<KeyRow, u64> = HashMap::new();
        let mut filed = Vec::new();
        let mut keep = Vec::with_capacity(data.num_rows());
        // Per-row loop: whether a retraction is held depends on the rows before it.
        for i in 0..data.num_rows() {
            if !self.nulls_equal && key_columns.iter().any(|c| c.is_null(i)) {
                // A row with a NULL key is never held, so never forgotten.
                keep.push(true);
                continue;
            }
            let (key, row) = (keys.row(i), rows.row(i));
            let pair: KeyRow = (key.as_ref().into(), row.as_ref().into());
            let held = match available.get(&pair) {
                Some(&held) => held,
                None => self.held_count(side, key.as_ref(), row.as_ref()),
            };
            let addition = RowKind::is_addition(ops.value(i));
            keep.push(addition || held > 0);
            if addition {
                available.insert(pair.clone(), held + 1);
                filed.push(pair);
            } else {
                available.insert(pair, held.saturating_sub(1));
            }
        }
        if !filed.is_empty() {
            let ttl = self.ttl.as_mut().expect("checked above");
            ttl.expiring[side]
                .entry(expire_at)
                .or_default()
                .extend(filed);
        }
        if keep.iter().all(|k| *k) {
            return Ok(batch);
        }
        Ok(filter_record_batch(&batch, &BooleanArray::from(keep))?)
    }

    /// Forgets the rows whose TTL has run out (see [`JoinTtl`]).
    pub(super) fn forget_stale(&mut self, out: &mut Vec<Message>) -> Result<()> {
        let Some(ttl) = &mut self.ttl else {
            return Ok(());
        };
        let stale = take_due(&mut ttl.expiring, wall_clock_ms());
        if stale.is_empty() {
            return Ok(());
        }
        if !self.changelog_output {
            return self.forget(stale);
        }
        // Retract each stale row through the join itself, as many times as it is due
        // but no more than it is held.
        let mut due: [Vec<Box<[u8]>>; 2] = [Vec::new(), Vec::new()];
        let mut taken: HashMap<(usize, KeyRow), u64> = HashMap::new();
        for (side, key, row) in stale {
            let held = self.held_count(side, &key, &row);
            let count = taken.entry((side, (key, row.clone()))).or_default();
            if *count < held {
                *count += 1;
                due[side].push(row);
            }
        }
        for (side, rows) in due.into_iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            let parser = self.rows[side].parser();
            let mut columns = self.rows[side].convert_rows(rows.iter().map(|r| parser.parse(r)))?;
            columns.push(Arc::new(Int8Array::from(vec![
                RowKind::Delete as i8;
                rows.len()
            ])));
            let deletions =
                RecordBatch::try_new(changelog_schema(&self.side_schemas[side]), columns)?;
            self.step(side, deletions, out)?;
        }
        Ok(())
    }

    /// Takes `rows` out of state. A row may already be gone: a join can have both a
    /// TTL and interval bounds, and either may forget a row first.
    fn forget(&mut self, rows: SideRows) -> Result<()> {
        for (side, key, row) in rows {
            if self.holds(side, &key, &row) {
                self.update_state(side, &key, &row, false)?;
            }
        }
        Ok(())
    }

    /// Files every held row under a fresh TTL (after a restore: insertion times are not
    /// checkpointed, so restored rows live one more TTL).
    pub(super) fn index_restored_ttl(&mut self) {
        let Some(ttl) = &mut self.ttl else {
            return;
        };
        let expire_at = wall_clock_ms().saturating_add(ttl.ttl_ms);
        for side in 0..2 {
            let rows = ttl.expiring[side].entry(expire_at).or_default();
            for (key, held) in &self.state[side] {
                for (row, &count) in held {
                    for _ in 0..count {
                        rows.push((key.clone(), row.clone()));
                    }
                }
            }
        }
    }

    /// Makes this an interval join (see the module docs).
    pub fn with_intervals(mut self, intervals: JoinIntervals) -> Self {
        debug_assert!(self.semi_anti.is_none() && self.outer == [false, false]);
        self.intervals = Some(intervals);
        self
    }

    /// Which rows of a batch of `side` arrive on time for an interval join (all, when it
    /// is not one); counts the others as late. Also returns each row's expiry.
    pub(super) fn on_time_rows(
        &self,
        side: usize,
        data: &RecordBatch,
    ) -> Result<(Vec<bool>, Vec<Option<i64>>)> {
        let n = data.num_rows();
        let Some(iv) = &self.intervals else {
            return Ok((vec![true; n], vec![None; n]));
        };
        let on_time = match (&iv.time[side], iv.watermark) {
            (Some(time), Some(watermark)) => millis_of(time, data)?
                .into_iter()
                .map(|t| t.is_none_or(|t| t > watermark))
                .collect(),
            _ => vec![true; n],
        };
        let late = on_time.iter().filter(|o| !**o).count();
        iv.late_rows.fetch_add(late as u64, Ordering::Relaxed);
        let expiry = match &iv.expiry[side] {
            Some(expiry) => millis_of(expiry, data)?,
            None => vec![None; n],
        };
        Ok((on_time, expiry))
    }

    /// Forgets every row whose expiry the watermark has reached, visiting the keys filed
    /// up to it a chunk at a time (see [`JoinIntervals`]).
    pub(super) fn forget_expired(&mut self) -> Result<()> {
        let Some(iv) = &mut self.intervals else {
            return Ok(());
        };
        let Some(watermark) = iv.watermark else {
            return Ok(());
        };
        let due = [iv.take_due(0, watermark), iv.take_due(1, watermark)];
        for (side, keys) in due.into_iter().enumerate() {
            for chunk in keys.chunks(WRITE_CHUNK) {
                self.forget_expired_rows(side, chunk, watermark)?;
            }
        }
        Ok(())
    }

    /// Drops the rows of `keys` of `side` that expired by `watermark` and files each key
    /// under its next row's expiry. A spilling join reads their buckets back first and
    /// accounts for them after.
    fn forget_expired_rows(
        &mut self,
        side: usize,
        keys: &[Box<[u8]>],
        watermark: i64,
    ) -> Result<()> {
        let keys: Vec<&[u8]> = keys.iter().map(AsRef::as_ref).collect();
        if let Some(spill) = &mut self.spill {
            spill.load_encoded(&mut self.state, &self.key_converter, &keys)?;
        }
        let buckets: Vec<KeyRows<'_>> = keys
            .iter()
            .filter_map(|key| {
                let rows = self.state[side].get(*key)?;
                Some((*key, rows.keys().cloned().collect()))
            })
            .collect();
        let expiries = self.row_expiries(side, &buckets)?;
        let iv = self.intervals.as_mut().expect("an interval join");
        for ((key, rows), expiries) in buckets.iter().zip(expiries) {
            let bucket = self.state[side].get_mut(*key).expect("held above");
            let mut next = None::<i64>;
            for (row, expiry) in rows.iter().zip(expiries) {
                match expiry {
                    Some(at) if at <= watermark => {
                        bucket.remove(row);
                    }
                    Some(at) => next = Some(next.map_or(at, |n| n.min(at))),
                    None => {}
                }
            }
            if bucket.is_empty() {
                self.state[side].remove(*key);
            }
            if let Some(next) = next {
                iv.file(side, key, next);
            }
        }
        if let Some(spill) = &mut self.spill {
            spill.account(&mut self.state, side);
        }
        Ok(())
    }

    /// The expiry of every row of each of `buckets` (a key of `side` and its rows).
    fn row_expiries(&self, side: usize, buckets: &[KeyRows<'_>]) -> Result<Vec<Vec<Option<i64>>>> {
        let expiry = self
            .intervals
            .as_ref()
            .and_then(|iv| iv.expiry[side].as_ref());
        let rows = buckets.iter().flat_map(|(_, rows)| rows);
        let mut expiries = match expiry {
            Some(expiry) if rows.clone().next().is_some() => {
                let parser = self.rows[side].parser();
                let columns = self.rows[side].convert_rows(rows.map(|r| parser.parse(r)))?;
                let data = RecordBatch::try_new(self.side_schemas[side].clone(), columns)?;
                millis_of(expiry, &data)?.into_iter()
            }
            _ => Vec::new().into_iter(),
        };
        Ok(buckets
            .iter()
            .map(|(_, rows)| rows.iter().map(|_| expiries.next().flatten()).collect())
            .collect())
    }

    /// Files the keys of restored buckets of an interval join under their rows'
    /// earliest expiry: those in memory, and those in the spill store (read a chunk at a
    /// time). Filing a key again changes nothing.
    pub(super) fn index_restored_intervals(&mut self) -> Result<()> {
        if self.intervals.is_none() {
            return Ok(());
        }
        let mut earliest = Vec::new();
        for side in 0..2 {
            let buckets: Vec<KeyRows<'_>> = self.state[side]
                .iter()
                .map(|(key, rows)| (key.as_ref(), rows.keys().cloned().collect()))
                .collect();
            let filed = self.earliest_expiries(side, &buckets)?;
            earliest.extend(filed.into_iter().map(|(k, e)| (side, k, e)));
        }
        if let Some(spill) = &self.spill {
            let mut failed = None;
            spill
                .store
                .table()
                .scan_chunks(None, WRITE_CHUNK, &mut |chunk| {
                    let mut buckets: [Vec<KeyRows<'_>>; 2] = [Vec::new(), Vec::new()];
                    for (_, entry_key, value) in &chunk {
                        let Some((side, key)) = split_entry_key(BUCKET, 2, entry_key) else {
                            continue;
                        };
                        match Bucket::decode(value) {
                            Some(rows) => buckets[side].push((key, rows.into_keys().collect())),
                            None => {
                                failed = Some(SluiceError::corrupted(
                                    "a join's spilled bucket is malformed",
                                ))
                            }
                        }
                    }
                    for (side, buckets) in buckets.iter().enumerate() {
                        match self.earliest_expiries(side, buckets) {
                            Ok(filed) => {
                                earliest.extend(filed.into_iter().map(|(k, e)| (side, k, e)))
                            }
                            Err(e) => failed = Some(e),
                        }
                    }
                });
            if let Some(e) = failed {
                return Err(e);
            }
        }
        let iv = self.intervals.as_mut().expect("checked above");
        for (side, key, expiry) in earliest {
            iv.file(side, &key, expiry);
        }
        Ok(())
    }

    /// Each of `buckets` of `side` that holds a row with an expiry: its key and the
    /// earliest expiry.
    fn earliest_expiries(
        &self,
        side: usize,
        buckets: &[KeyRows<'_>],
    ) -> Result<Vec<(Box<[u8]>, i64)>> {
        let expiries = self.row_expiries(side, buckets)?;
        Ok(buckets
            .iter()
            .zip(expiries)
            .filter_map(|((key, _), expiries)| {
                let earliest = expiries.into_iter().flatten().min()?;
                Some((Box::from(*key), earliest))
            })
            .collect())
    }

    /// Makes this a window join: join key `key_index` is both sides' window end; windows
    /// close when the watermark passes their end plus `lateness_ms` (see the module docs).
    pub fn with_windows(
        mut self,
        key_index: usize,
        lateness_ms: i64,
        late_rows: Arc<AtomicU64>,
    ) -> Self {
        debug_assert!(key_index < self.keys[0].len() && self.semi_anti.is_none());
        self.windows = Some(JoinWindows {
            key_index,
            lateness_ms,
            closed_by: None,
            open: BTreeMap::new(),
            late_rows,
        });
        self
    }

    /// Which rows of a batch belong to windows that are still open (all, for a join that
    /// is not a window join); counts the others as late. Also returns each row's window
    /// end, to file its key under.
    pub(super) fn open_rows(
        &self,
        key_columns: &[ArrayRef],
        n: usize,
    ) -> Result<(Vec<bool>, Vec<Option<i64>>)> {
        let Some(w) = &self.windows else {
            return Ok((vec![true; n], vec![None; n]));
        };
        let ends = timestamp_millis(&key_columns[w.key_index])?;
        let open: Vec<bool> = ends
            .iter()
            .map(|e| match (e, w.closed_by) {
                (Some(end), Some(closed)) => *end > closed,
                _ => true,
            })
            .collect();
        let late = open.iter().filter(|o| !**o).count();
        w.late_rows.fetch_add(late as u64, Ordering::Relaxed);
        Ok((open, ends))
    }

    /// Files `key` under its window's end, so the window's rows can be freed on close.
    pub(super) fn file_window_key(&mut self, end: Option<i64>, key: &[u8]) {
        if let (Some(w), Some(end)) = (&mut self.windows, end) {
            let keys = w.open.entry(end).or_default();
            if !keys.contains(key) {
                keys.insert(key.into());
            }
        }
    }

    /// Frees the buckets of `keys`, whose windows the watermark closed: from memory, and
    /// from the spill store unread.
    pub(super) fn free_windows(&mut self, keys: Vec<Box<[u8]>>) -> Result<()> {
        for key in &keys {
            self.match_counts[0].remove(key);
            self.match_counts[1].remove(key);
        }
        let Some(spill) = &mut self.spill else {
            for key in &keys {
                self.state[0].remove(key);
                self.state[1].remove(key);
            }
            return Ok(());
        };
        spill.forget(&mut self.state, &self.key_converter, &keys)
    }

    /// Rebuilds the window index from restored state in memory.
    pub(super) fn index_restored_windows(&mut self) -> Result<()> {
        let keys: Vec<Box<[u8]>> = self.state[0]
            .keys()
            .chain(self.state[1].keys())
            .cloned()
            .collect();
        self.index_window_keys(keys)
    }

    /// Files the keys of the buckets a spilling window join restored into its store under
    /// their windows' ends (read from the keys, a chunk at a time; the buckets stay
    /// encoded). Filing a key again changes nothing.
    pub(super) fn index_stored_windows(&mut self) -> Result<()> {
        let (Some(spill), Some(_)) = (&self.spill, &self.windows) else {
            return Ok(());
        };
        let mut keys = Vec::new();
        spill
            .store
            .table()
            .scan_chunks(None, WRITE_CHUNK, &mut |chunk| {
                keys.extend(chunk.iter().filter_map(|(_, entry_key, _)| {
                    split_entry_key(BUCKET, 2, entry_key).map(|(_, key)| Box::<[u8]>::from(key))
                }));
            });
        self.index_window_keys(keys)
    }

    /// Files each of `keys` under the end of the window it holds.
    fn index_window_keys(&mut self, keys: Vec<Box<[u8]>>) -> Result<()> {
        let Some(w) = &self.windows else {
            return Ok(());
        };
        if keys.is_empty() {
            return Ok(());
        }
        let parser = self.key_converter.parser();
        let columns = self
            .key_converter
            .convert_rows(keys.iter().map(|k| parser.parse(k)))?;
        let ends = timestamp_millis(&columns[w.key_index])?;
        for (key, end) in keys.iter().zip(ends) {
            self.file_window_key(end, key);
        }
        Ok(())
    }
}

/// Takes every (side, key, row) filed at or before `upto` out of both sides' indexes.
fn take_due(expiring: &mut [Expiring; 2], upto: i64) -> SideRows {
    let mut due = Vec::new();
    for (side, index) in expiring.iter_mut().enumerate() {
        for rows in take_through(index, upto).into_values() {
            due.extend(rows.into_iter().map(|(key, row)| (side, key, row)));
        }
    }
    due
}
