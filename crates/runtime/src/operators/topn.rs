//! Top-N: `ROW_NUMBER() OVER (PARTITION BY p ORDER BY o) <= N`, and deduplication
//! (`= 1`, keep first or keep last by the order).
//!
//! Each partition keeps its rows in a map ordered by the ORDER BY key (Arrow's row
//! format, so byte order is the SQL order with its ASC/DESC and NULLS FIRST/LAST), then
//! by the whole row, so ties rank the same way every time. After a batch, every
//! partition it touched compares its top N before and after, with their row numbers, and
//! emits the difference: a row leaving the top is retracted, a row entering it inserted,
//! and rows whose number changed are retracted and re-inserted with the new one.
//!
//! On append-only input a row below the top N can never come back, so each partition
//! keeps only its top N. On a changelog every row is kept, so that when a leader is
//! deleted the next one takes its place.
//!
//! A window Top-N (`window_end` among the PARTITION BY keys) frees a window's partitions
//! once the watermark passes its end plus the allowed lateness; later changes for a
//! closed window are late (dropped and counted).
//!
//! A partitioned Top-N can keep only its recently used partitions in memory and the
//! rest in a spill store (see `keyed_spill.rs`); a snapshot holds an entry per
//! partition, as that store does. A window Top-N's index of open windows and a state
//! TTL's touch times keep the keys of their partitions in memory; closing a window
//! deletes its spilled partitions unread, and a stale partition is read back to retract
//! its top rows.

use crate::operators::OPERATOR_WIDE;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{ArrayRef, Int8Array, RecordBatch, UInt64Array};
use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;
use sluice_common::error::{Result, SluiceError};
use sluice_state::SpillStore;
use sluice_state::spill::{DbCheckpoint, WRITE_CHUNK};

use super::encoding::key_groups_of_rows;
use super::encoding::{
    push_sized, row_converter, split_sized, take_through, timestamp_millis, wall_clock_ms,
};
use super::keyed_spill::{KeyedSpill, SpillValue, split_entry_key, value_entries};
use super::ttl::Recency;
use super::{Operator, RestoredState, StateEntry};
use crate::message::{CheckpointBarrier, Message, RowKind, Watermark, split_changelog};

/// An ORDER BY key of a Top-N.
pub struct TopNOrder {
    pub expr: Arc<dyn PhysicalExpr>,
    pub data_type: DataType,
    pub options: SortOptions,
}

/// A partition's rows: (order key, row) → multiplicity.
type Ranking = BTreeMap<(Box<[u8]>, Box<[u8]>), i64>;

/// A partition's top rows (row format) with their row numbers.
type Top = Vec<(Box<[u8]>, u64)>;

pub struct TopNOperator {
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    order_by: Vec<Arc<dyn PhysicalExpr>>,
    limit: usize,
    /// The input retracts: keep every row, not only the top N.
    keep_all: bool,
    partition_converter: RowConverter,
    order_converter: RowConverter,
    row_converter: RowConverter,
    partitions: HashMap<Box<[u8]>, Ranking>,
    /// Input columns, the row number, the op column.
    schema: SchemaRef,
    windows: Option<TopNWindows>,
    /// State TTL (not for a window Top-N): a partition untouched for the TTL is forgotten
    /// and its top rows retracted; a later row for it starts it over, and retractions of
    /// rows it no longer holds are ignored.
    ttl: Option<Recency<Box<[u8]>>>,
    /// Partitions beyond the memory budget.
    spill: Option<KeyedSpill>,
}

/// A window Top-N's closing of windows (see the module docs).
struct TopNWindows {
    /// The PARTITION BY key holding the window end.
    partition_index: usize,
    lateness_ms: i64,
    /// Windows ending at or before this (ms) are closed.
    closed_by: Option<i64>,
    /// Open windows: end → their partitions.
    open: BTreeMap<i64, HashSet<Box<[u8]>>>,
    late_rows: Arc<AtomicU64>,
}

/// Snapshot key of a window Top-N's closed-by watermark; no partition entry starts with
/// a length of `u32::MAX`.
const CLOSED_BY_KEY: &[u8] = &[0xff, 0xff, 0xff, 0xff, b'c'];

/// What a partition's snapshot key starts with, ahead of the partition key: no entry of
/// a row (in checkpoints before partition entries) starts with such a length.
const PARTITION: &[u8] = &[0xfe, 0xff, 0xff, 0xff];

impl SpillValue for Ranking {
    /// Each row's order key and row, each behind its length, and its multiplicity
    /// (`i64`, little-endian).
    fn encode(&self) -> Vec<u8> {
        let bytes = self.keys().map(|(o, r)| o.len() + r.len() + 16).sum();
        let mut value = Vec::with_capacity(bytes);
        for ((order, row), count) in self {
            push_sized(&mut value, order);
            push_sized(&mut value, row);
            value.extend_from_slice(&count.to_le_bytes());
        }
        value
    }

    fn decode(mut bytes: &[u8]) -> Option<Self> {
        let mut ranking = Ranking::new();
        while !bytes.is_empty() {
            let (order, rest) = split_sized(bytes)?;
            let (row, rest) = split_sized(rest)?;
            let count: [u8; 8] = rest.get(..8)?.try_into().ok()?;
            ranking.insert((order.into(), row.into()), i64::from_le_bytes(count));
            bytes = &rest[8..];
        }
        Some(ranking)
    }

    fn rows(&self) -> usize {
        self.len()
    }
}

impl TopNOperator {
    /// `input` is the input schema (without the op column); `keep_all` is whether the
    /// input is a changelog.
    pub fn new(
        partition_by: Vec<(Arc<dyn PhysicalExpr>, DataType)>,
        order_by: Vec<TopNOrder>,
        limit: usize,
        keep_all: bool,
        input: &SchemaRef,
        schema: SchemaRef,
    ) -> Result<Self> {
        if limit == 0 {
            return Err(SluiceError::invalid_parameter(
                "a Top-N must keep at least one row",
            ));
        }
        let partition_fields = partition_by
            .iter()
            .map(|(_, t)| SortField::new(t.clone()))
            .collect();
        let order_fields = order_by
            .iter()
            .map(|o| SortField::new_with_options(o.data_type.clone(), o.options))
            .collect();
        Ok(TopNOperator {
            partition_by: partition_by.into_iter().map(|(e, _)| e).collect(),
            order_by: order_by.into_iter().map(|o| o.expr).collect(),
            limit,
            keep_all,
            partition_converter: RowConverter::new(partition_fields)?,
            order_converter: RowConverter::new(order_fields)?,
            row_converter: row_converter(input)?,
            partitions: HashMap::new(),
            schema,
            windows: None,
            ttl: None,
            spill: None,
        })
    }

    /// Whether its state can spill: only with PARTITION BY (without, it is one value).
    pub fn can_spill(&self) -> bool {
        !self.partition_by.is_empty()
    }

    /// Keeps at most `store.memory_budget()` bytes of partitions in memory and the rest
    /// in `store`. Only for a Top-N that [`Self::can_spill`].
    pub fn with_spill(mut self, store: SpillStore) -> Self {
        debug_assert!(self.can_spill());
        self.spill = Some(KeyedSpill::new(store, PARTITION, 1));
        self
    }

    /// Partitions in memory and in the spill store, for tests: O(partitions).
    pub fn partition_counts(&self) -> (usize, usize) {
        let stored = self.spill.as_ref().map_or(0, |s| s.store.table().len());
        (self.partitions.len(), stored)
    }

    /// Every partition held in memory, as snapshot entries (a global Top-N's one
    /// partition in key group 0).
    fn partition_entries(&self) -> Result<Vec<StateEntry>> {
        value_entries(PARTITION, std::slice::from_ref(&self.partitions), |keys| {
            if self.partition_by.is_empty() {
                return Ok(vec![0; keys.len()]);
            }
            key_groups_of_rows(&self.partition_converter, keys)
        })
    }

    /// Forgets partitions untouched for `ttl` (see the `ttl` field).
    pub fn with_state_ttl(mut self, ttl: std::time::Duration) -> Self {
        debug_assert!(self.windows.is_none());
        self.ttl = Some(Recency::new(ttl));
        self
    }

    /// Retracts the top rows of the partitions whose TTL has run out, and forgets them.
    fn forget_stale(&mut self, out: &mut Vec<Message>) -> Result<()> {
        let Some(ttl) = &mut self.ttl else {
            return Ok(());
        };
        let stale = ttl.stale(wall_clock_ms());
        let mut changes = Vec::new();
        // Spilled partitions are read back (a chunk at a time) to retract their tops.
        for chunk in stale.chunks(WRITE_CHUNK) {
            if let Some(spill) = &mut self.spill {
                let keys: Vec<&[u8]> = chunk.iter().map(AsRef::as_ref).collect();
                let maps = std::slice::from_mut(&mut self.partitions);
                spill.load_encoded(maps, &self.partition_converter, &keys)?;
            }
            for partition in chunk {
                if let Some(ranking) = self.partitions.remove(partition) {
                    for (row, number) in Self::top(Some(&ranking), self.limit) {
                        changes.push((row, number, RowKind::Delete));
                    }
                }
            }
            if let Some(spill) = &mut self.spill {
                spill.account(std::slice::from_mut(&mut self.partitions), 0);
            }
        }
        self.output(changes, out)
    }

    /// Makes this a window Top-N: PARTITION BY key `partition_index` is the window end
    /// (see the module docs).
    pub fn with_windows(
        mut self,
        partition_index: usize,
        lateness_ms: i64,
        late_rows: Arc<AtomicU64>,
    ) -> Self {
        debug_assert!(partition_index < self.partition_by.len());
        self.windows = Some(TopNWindows {
            partition_index,
            lateness_ms,
            closed_by: None,
            open: BTreeMap::new(),
            late_rows,
        });
        self
    }

    /// Indexes restored partitions, those in memory and those in the spill store (read
    /// from their keys, a chunk at a time; the partitions stay encoded): a window Top-N
    /// files them under their window ends, and under a TTL they live one more TTL (touch
    /// times are not checkpointed). Indexing a partition again changes nothing.
    fn index_restored(&mut self) -> Result<()> {
        if self.windows.is_none() && self.ttl.is_none() {
            return Ok(());
        }
        let mut partitions: Vec<Box<[u8]>> = self.partitions.keys().cloned().collect();
        if let Some(spill) = &self.spill {
            spill
                .store
                .table()
                .scan_chunks(None, WRITE_CHUNK, &mut |chunk| {
                    partitions.extend(chunk.iter().filter_map(|(_, entry_key, _)| {
                        split_entry_key(PARTITION, 1, entry_key).map(|(_, key)| key.into())
                    }));
                });
        }
        if let Some(ttl) = &mut self.ttl {
            let now = wall_clock_ms();
            for partition in &partitions {
                ttl.touch(partition.clone(), now);
            }
        }
        let Some(w) = &mut self.windows else {
            return Ok(());
        };
        if partitions.is_empty() {
            return Ok(());
        }
        let parser = self.partition_converter.parser();
        let columns = self
            .partition_converter
            .convert_rows(partitions.iter().map(|p| parser.parse(p)))?;
        for (partition, end) in partitions
            .into_iter()
            .zip(timestamp_millis(&columns[w.partition_index])?)
        {
            if let Some(end) = end {
                w.open.entry(end).or_default().insert(partition);
            }
        }
        Ok(())
    }

    /// Frees the partitions of windows the watermark closed: from memory, and from the
    /// spill store unread.
    fn free_windows(&mut self, partitions: Vec<Box<[u8]>>) -> Result<()> {
        let Some(spill) = &mut self.spill else {
            for partition in &partitions {
                self.partitions.remove(partition);
            }
            return Ok(());
        };
        let maps = std::slice::from_mut(&mut self.partitions);
        spill.forget(maps, &self.partition_converter, &partitions)
    }

    /// Rows held, for tests and metrics.
    pub fn row_count(&self) -> usize {
        self.partitions.values().map(|p| p.len()).sum()
    }

    /// The top `limit` rows of a ranking, each with its row number.
    fn top(ranking: Option<&Ranking>, limit: usize) -> Top {
        let mut top = Vec::with_capacity(limit);
        if let Some(ranking) = ranking {
            'rows: for ((_, row), &count) in ranking {
                for _ in 0..count {
                    if top.len() == limit {
                        break 'rows;
                    }
                    top.push((row.clone(), top.len() as u64 + 1));
                }
            }
        }
        top
    }

    fn evaluate(exprs: &[Arc<dyn PhysicalExpr>], batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        let n = batch.num_rows();
        Ok(exprs
            .iter()
            .map(|e| e.evaluate(batch).and_then(|v| v.into_array(n)))
            .collect::<datafusion::error::Result<_>>()?)
    }

    fn output(
        &self,
        changes: Vec<(Box<[u8]>, u64, RowKind)>,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let parser = self.row_converter.parser();
        let mut columns = self
            .row_converter
            .convert_rows(changes.iter().map(|(row, _, _)| parser.parse(row)))?;
        let numbers: UInt64Array = changes.iter().map(|(_, n, _)| Some(*n)).collect();
        columns.push(Arc::new(numbers));
        let ops: Int8Array = changes.iter().map(|(_, _, k)| Some(*k as i8)).collect();
        columns.push(Arc::new(ops));
        out.push(Message::Batch(RecordBatch::try_new(
            self.schema.clone(),
            columns,
        )?));
        Ok(())
    }
}

impl Operator for TopNOperator {
    fn name(&self) -> &'static str {
        "TopN"
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<Message>) -> Result<()> {
        self.forget_stale(out)?;
        let now = wall_clock_ms();
        let (data, ops) = split_changelog(&batch);
        let partition_columns = Self::evaluate(&self.partition_by, &data)?;
        let partitions = if self.partition_by.is_empty() {
            None
        } else {
            Some(
                self.partition_converter
                    .convert_columns(&partition_columns)?,
            )
        };
        let ends = match &self.windows {
            Some(w) => timestamp_millis(&partition_columns[w.partition_index])?,
            None => vec![None; data.num_rows()],
        };
        let orders = self
            .order_converter
            .convert_columns(&Self::evaluate(&self.order_by, &data)?)?;
        let rows = self.row_converter.convert_columns(data.columns())?;
        if let (Some(spill), Some(keys)) = (&mut self.spill, &partitions) {
            let maps = std::slice::from_mut(&mut self.partitions);
            spill.load(maps, &partition_columns, keys, 0, &rows)?;
        }
        // Every touched partition's top before the batch.
        let mut before: HashMap<Box<[u8]>, Top> = HashMap::new();
        for (i, end) in ends.into_iter().enumerate() {
            let partition: Box<[u8]> = partitions
                .as_ref()
                .map(|p| p.row(i).as_ref().into())
                .unwrap_or_default();
            if let (Some(w), Some(end)) = (&mut self.windows, end) {
                if w.closed_by.is_some_and(|closed| end <= closed) {
                    w.late_rows.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                w.open.entry(end).or_default().insert(partition.clone());
            }
            if !before.contains_key(&partition) {
                let top = Self::top(self.partitions.get(&partition), self.limit);
                before.insert(partition.clone(), top);
                if let Some(ttl) = &mut self.ttl {
                    ttl.touch(partition.clone(), now);
                }
            }
            let ranking = self.partitions.entry(partition.clone()).or_default();
            let key = (orders.row(i).as_ref().into(), rows.row(i).as_ref().into());
            if RowKind::is_addition(ops.value(i)) {
                *ranking.entry(key).or_insert(0) += 1;
            } else {
                match ranking.get_mut(&key) {
                    Some(count) if *count > 1 => *count -= 1,
                    Some(_) => {
                        ranking.remove(&key);
                    }
                    // The TTL forgot the row.
                    None if self.ttl.is_some() => {}
                    None => {
                        return Err(SluiceError::internal(
                            "Top-N: a retracted row was never inserted",
                        ));
                    }
                }
            }
        }
        let mut changes = Vec::new();
        for (partition, old) in before {
            let ranking = self.partitions.get_mut(&partition);
            let new = Self::top(ranking.as_deref(), self.limit);
            if let Some(ranking) = ranking {
                if !self.keep_all {
                    // Rows below the top N can never rise again: forget them.
                    let mut kept = 0i64;
                    ranking.retain(|_, count| {
                        let keep = kept < self.limit as i64;
                        if keep {
                            *count = (*count).min(self.limit as i64 - kept);
                            kept += *count;
                        }
                        keep
                    });
                }
                if ranking.is_empty() {
                    self.partitions.remove(&partition);
                }
            }
            // Positions whose row changed: retract the old, insert the new.
            for position in 0..old.len().max(new.len()) {
                let (o, n) = (old.get(position), new.get(position));
                if o.map(|r| &r.0) == n.map(|r| &r.0) {
                    continue;
                }
                if let Some((row, number)) = o {
                    changes.push((row.clone(), *number, RowKind::Delete));
                }
                if let Some((row, number)) = n {
                    changes.push((row.clone(), *number, RowKind::Insert));
                }
            }
        }
        if let Some(spill) = &mut self.spill {
            spill.account(std::slice::from_mut(&mut self.partitions), 0);
        }
        self.output(changes, out)
    }

    fn process_barrier(
        &mut self,
        barrier: CheckpointBarrier,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        self.forget_stale(out)?;
        out.push(Message::Barrier(barrier));
        Ok(())
    }

    /// A window Top-N frees the windows the watermark closes.
    fn process_watermark(&mut self, watermark: Watermark, out: &mut Vec<Message>) -> Result<()> {
        self.forget_stale(out)?;
        if let Some(w) = &mut self.windows {
            let closed = watermark.0.saturating_sub(w.lateness_ms);
            w.closed_by = Some(closed);
            let partitions = take_through(&mut w.open, closed).into_values().flatten();
            self.free_windows(partitions.collect())?;
        }
        out.push(Message::Watermark(watermark));
        Ok(())
    }

    fn snapshot_state(&mut self) -> Result<Vec<StateEntry>> {
        let mut entries = Vec::new();
        if let Some(closed) = self.windows.as_ref().and_then(|w| w.closed_by) {
            entries.push((
                OPERATOR_WIDE,
                CLOSED_BY_KEY.to_vec(),
                closed.to_le_bytes().to_vec(),
            ));
        }
        match &mut self.spill {
            Some(spill) => {
                spill.flush(std::slice::from_ref(&self.partitions));
                if !spill.store.on_disk() {
                    entries.extend(spill.store.entries());
                }
            }
            None => entries.extend(self.partition_entries()?),
        }
        Ok(entries)
    }

    fn snapshot_database(&mut self) -> Result<Option<DbCheckpoint>> {
        self.spill
            .as_ref()
            .map_or(Ok(None), |spill| spill.store.checkpoint())
    }

    /// A spilling Top-N copies the partitions of restored spill stores into its own, then
    /// indexes them (window ends, TTL).
    fn restore(&mut self, state: RestoredState<'_>) -> Result<()> {
        if super::restore_spilling(self, state, |t| t.spill.as_mut().map(|s| &mut s.store))? {
            // restore_state indexed the partitions of the entries.
            self.index_restored()?;
        }
        Ok(())
    }

    fn restore_state(&mut self, entries: Vec<StateEntry>) -> Result<()> {
        let corrupt = || SluiceError::corrupted("a Top-N snapshot entry is truncated");
        let mut stored = Vec::new();
        for (key_group, key, value) in entries {
            if let Some((_, partition)) = split_entry_key(PARTITION, 1, &key) {
                if self.spill.is_some() {
                    // Partitions stay encoded until a row needs them.
                    stored.push((key_group, key, value));
                } else {
                    let ranking = Ranking::decode(&value).ok_or_else(corrupt)?;
                    self.partitions.insert(partition.into(), ranking);
                }
                continue;
            }
            if key == CLOSED_BY_KEY {
                let closed: [u8; 8] = value.as_slice().try_into().map_err(|_| corrupt())?;
                if let Some(w) = &mut self.windows {
                    w.closed_by = Some(i64::from_le_bytes(closed));
                }
                continue;
            }
            let (partition, rest) = split_sized(&key).ok_or_else(corrupt)?;
            let (order, row) = split_sized(rest).ok_or_else(corrupt)?;
            let count: [u8; 8] = value.as_slice().try_into().map_err(|_| corrupt())?;
            self.partitions
                .entry(partition.into())
                .or_default()
                .insert((order.into(), row.into()), i64::from_le_bytes(count));
        }
        if self.spill.is_some() {
            // Rows of checkpoints before partition entries went to memory above: into
            // the store.
            stored.extend(self.partition_entries()?);
            self.partitions.clear();
            if let Some(spill) = &mut self.spill {
                spill.store.put(stored);
            }
        }
        self.index_restored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{Field, Int64Type, Schema, UInt64Type};
    use datafusion::physical_expr::expressions::Column;

    use crate::message::changelog_schema;

    fn input_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]))
    }

    /// Top `limit` by v descending per k.
    fn operator(limit: usize, keep_all: bool) -> TopNOperator {
        let output = Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
            Field::new("rn", DataType::UInt64, false),
        ]);
        TopNOperator::new(
            vec![(Arc::new(Column::new("k", 0)), DataType::Int64)],
            vec![TopNOrder {
                expr: Arc::new(Column::new("v", 1)),
                data_type: DataType::Int64,
                options: SortOptions {
                    descending: true,
                    nulls_first: false,
                },
            }],
            limit,
            keep_all,
            &input_schema(),
            changelog_schema(&output),
        )
        .unwrap()
    }

    fn rows(k: Vec<i64>, v: Vec<i64>, kinds: Vec<RowKind>) -> RecordBatch {
        let schema = changelog_schema(&input_schema());
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(k)),
                Arc::new(Int64Array::from(v)),
                Arc::new(Int8Array::from(
                    kinds.into_iter().map(|k| k as i8).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap()
    }

    fn changes(out: &[Message]) -> Vec<String> {
        let mut lines = vec![];
        for m in out {
            let Message::Batch(b) = m else { continue };
            for r in 0..b.num_rows() {
                lines.push(format!(
                    "{} k={} v={} rn={}",
                    RowKind::symbol(
                        b.column(3)
                            .as_primitive::<arrow::datatypes::Int8Type>()
                            .value(r)
                    ),
                    b.column(0).as_primitive::<Int64Type>().value(r),
                    b.column(1).as_primitive::<Int64Type>().value(r),
                    b.column(2).as_primitive::<UInt64Type>().value(r),
                ));
            }
        }
        lines
    }

    #[test]
    fn a_new_leader_shifts_the_others_and_pushes_the_last_out() {
        let mut op = operator(2, false);
        let mut out = vec![];
        let i = RowKind::Insert;
        op.process_batch(rows(vec![1, 1, 2], vec![10, 5, 7], vec![i, i, i]), &mut out)
            .unwrap();
        let mut first = changes(&out);
        first.sort();
        assert_eq!(
            first,
            vec!["+I k=1 v=10 rn=1", "+I k=1 v=5 rn=2", "+I k=2 v=7 rn=1"]
        );
        out.clear();
        op.process_batch(rows(vec![1], vec![20], vec![i]), &mut out)
            .unwrap();
        assert_eq!(
            changes(&out),
            vec![
                "-D k=1 v=10 rn=1",
                "+I k=1 v=20 rn=1",
                "-D k=1 v=5 rn=2",
                "+I k=1 v=10 rn=2"
            ]
        );
        // Append-only input: only the top 2 of each partition are kept.
        assert_eq!(op.row_count(), 3);
    }

    #[test]
    fn a_ttl_retracts_a_stale_partitions_top_and_ignores_its_later_retractions() {
        // A 0 ms TTL: every partition is forgotten at the next batch.
        let mut op = operator(1, true).with_state_ttl(std::time::Duration::ZERO);
        let mut out = vec![];
        let (i, d) = (RowKind::Insert, RowKind::Delete);
        op.process_batch(rows(vec![1, 1], vec![5, 3], vec![i, i]), &mut out)
            .unwrap();
        assert_eq!(changes(&out), vec!["+I k=1 v=5 rn=1"]);
        out.clear();
        op.process_batch(rows(vec![2], vec![7], vec![i]), &mut out)
            .unwrap();
        assert_eq!(changes(&out), vec!["-D k=1 v=5 rn=1", "+I k=2 v=7 rn=1"]);
        out.clear();
        // k=1 is gone: deleting its rows changes nothing; a new row starts it over.
        op.process_batch(rows(vec![1, 1, 1], vec![5, 3, 4], vec![d, d, i]), &mut out)
            .unwrap();
        assert_eq!(changes(&out), vec!["-D k=2 v=7 rn=1", "+I k=1 v=4 rn=1"]);
        assert_eq!(op.row_count(), 1);
    }

    #[test]
    fn a_spilling_ttl_reads_stale_partitions_back_to_retract_their_tops() {
        // A 0 ms TTL: every partition is forgotten at the next batch.
        let make = || {
            operator(1, true)
                .with_state_ttl(std::time::Duration::ZERO)
                .with_spill(SpillStore::in_memory(0))
        };
        let mut op = make();
        let mut out = vec![];
        let (i, d) = (RowKind::Insert, RowKind::Delete);
        op.process_batch(rows(vec![1, 1], vec![5, 3], vec![i, i]), &mut out)
            .unwrap();
        assert_eq!(op.partition_counts(), (0, 1), "spilled after the batch");
        out.clear();
        op.process_batch(rows(vec![2], vec![7], vec![i]), &mut out)
            .unwrap();
        assert_eq!(changes(&out), vec!["-D k=1 v=5 rn=1", "+I k=2 v=7 rn=1"]);
        assert_eq!(op.partition_counts(), (0, 1), "k=1 left the store");
        out.clear();
        op.process_batch(rows(vec![1, 1, 1], vec![5, 3, 4], vec![d, d, i]), &mut out)
            .unwrap();
        assert_eq!(changes(&out), vec!["-D k=2 v=7 rn=1", "+I k=1 v=4 rn=1"]);

        // Restored partitions (all in the store) live one more TTL, then go stale.
        let mut restored = make();
        restored
            .restore(RestoredState::of_entries(op.snapshot_state().unwrap()))
            .unwrap();
        assert_eq!(restored.partition_counts(), (0, 1));
        out.clear();
        restored
            .process_batch(rows(vec![3], vec![1], vec![i]), &mut out)
            .unwrap();
        assert_eq!(changes(&out), vec!["-D k=1 v=4 rn=1", "+I k=3 v=1 rn=1"]);
    }

    #[test]
    fn a_window_top_n_frees_closed_windows_and_drops_their_late_rows() {
        // The partition key k stands for window_end (ms).
        let late = Arc::new(AtomicU64::new(0));
        let mut op = operator(1, false).with_windows(0, 5, late.clone());
        let mut out = vec![];
        let i = RowKind::Insert;
        op.process_batch(rows(vec![10, 20], vec![1, 2], vec![i, i]), &mut out)
            .unwrap();
        op.process_watermark(Watermark(14), &mut out).unwrap();
        assert_eq!(op.row_count(), 2, "10 + 5 of lateness is still open at 14");
        op.process_watermark(Watermark(15), &mut out).unwrap();
        assert_eq!(op.row_count(), 1);
        out.clear();
        op.process_batch(rows(vec![10], vec![9], vec![i]), &mut out)
            .unwrap();
        assert!(changes(&out).is_empty());
        assert_eq!(late.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_spilling_window_top_n_deletes_closed_windows_from_its_store() {
        // The partition key k stands for window_end (ms); each round's rows fall in six
        // windows, which the watermark closes as it advances.
        let make = || operator(2, false).with_windows(0, 0, Arc::new(AtomicU64::new(0)));
        let round = |ops: [&mut TopNOperator; 2], r: i64| {
            let [reference, spilling] = ops;
            let keys: Vec<i64> = (r * 3 - 4..r * 3 + 2).collect();
            let values: Vec<i64> = keys.iter().map(|k| k * 7 % 11 + r).collect();
            let batch = rows(keys, values, vec![RowKind::Insert; 6]);
            let (mut want, mut got) = (vec![], vec![]);
            reference.process_batch(batch.clone(), &mut want).unwrap();
            spilling.process_batch(batch, &mut got).unwrap();
            let (mut want, mut got) = (changes(&want), changes(&got));
            want.sort();
            got.sort();
            assert_eq!(got, want, "round {r}");
            for op in [&mut *reference, &mut *spilling] {
                op.process_watermark(Watermark(r * 3), &mut vec![]).unwrap();
            }
            assert_eq!(
                spilling.partition_counts(),
                (0, reference.partitions.len()),
                "round {r}: closed windows leave the store"
            );
        };
        let mut reference = make();
        let mut spilling = make().with_spill(SpillStore::in_memory(0));
        for r in 1..8 {
            round([&mut reference, &mut spilling], r);
        }
        assert!(!reference.partitions.is_empty());

        // Restored, the stored partitions' windows are open again and close as before,
        // by the watermark alone too.
        let mut restored = make().with_spill(SpillStore::in_memory(0));
        restored
            .restore(RestoredState::of_entries(
                spilling.snapshot_state().unwrap(),
            ))
            .unwrap();
        assert_eq!(restored.partition_counts(), (0, reference.partitions.len()));
        for op in [&mut reference, &mut restored] {
            op.process_watermark(Watermark(22), &mut vec![]).unwrap();
        }
        assert_eq!(restored.partition_counts(), (0, reference.partitions.len()));
        for r in 8..12 {
            round([&mut reference, &mut restored], r);
        }
        restored
            .process_watermark(Watermark(i64::MAX), &mut vec![])
            .unwrap();
        assert_eq!(restored.partition_counts(), (0, 0));
    }

    #[test]
    fn deleting_the_leader_promotes_the_next_row_on_a_changelog() {
        let mut op = operator(1, true);
        let mut out = vec![];
        let (i, d) = (RowKind::Insert, RowKind::Delete);
        op.process_batch(rows(vec![1, 1, 1], vec![3, 9, 6], vec![i, i, i]), &mut out)
            .unwrap();
        assert_eq!(changes(&out), vec!["+I k=1 v=9 rn=1"]);
        out.clear();
        op.process_batch(rows(vec![1], vec![9], vec![d]), &mut out)
            .unwrap();
        assert_eq!(changes(&out), vec!["-D k=1 v=9 rn=1", "+I k=1 v=6 rn=1"]);
        out.clear();
        // Deleting a row outside the top changes nothing visible.
        op.process_batch(rows(vec![1], vec![3], vec![d]), &mut out)
            .unwrap();
        assert!(changes(&out).is_empty());
        let entries = op.snapshot_state().unwrap();
        let mut restored = operator(1, true);
        restored.restore_state(entries).unwrap();
        assert_eq!(restored.row_count(), 1);
        restored
            .process_batch(rows(vec![1], vec![6], vec![d]), &mut out)
            .unwrap();
        assert_eq!(changes(&out), vec!["-D k=1 v=6 rn=1"]);
    }

    /// Batches of inserts and retractions (of rows inserted before) over 15 partitions,
    /// from a fixed seed.
    fn churn(batches: usize) -> Vec<RecordBatch> {
        let mut next = crate::test_support::xorshift(0x9e37_79b9_7f4a_7c15u64);
        let mut held: Vec<(i64, i64)> = Vec::new();
        (0..batches)
            .map(|_| {
                let (mut ks, mut vs, mut kinds) = (vec![], vec![], vec![]);
                for _ in 0..1 + next(10) {
                    let (k, v, kind) = if !held.is_empty() && next(3) == 0 {
                        let (k, v) = held.swap_remove(next(held.len() as u64) as usize);
                        (k, v, RowKind::Delete)
                    } else {
                        let (k, v) = (next(15) as i64, next(50) as i64);
                        held.push((k, v));
                        (k, v, RowKind::Insert)
                    };
                    ks.push(k);
                    vs.push(v);
                    kinds.push(kind);
                }
                rows(ks, vs, kinds)
            })
            .collect()
    }

    /// A snapshot's partitions, decoded and in order.
    fn partitions(entries: Vec<StateEntry>) -> Vec<(u16, Vec<u8>, Ranking)> {
        let mut partitions: Vec<_> = entries
            .into_iter()
            .map(|(g, k, v)| (g, k, Ranking::decode(&v).unwrap()))
            .collect();
        partitions.sort();
        partitions
    }

    #[test]
    fn spilled_partitions_come_back_with_their_rows_and_change_no_result() {
        for (limit, keep_all) in [(2, true), (3, false)] {
            let input = churn(70);
            let batches = if keep_all {
                input
            } else {
                // Append-only input: the inserts alone.
                input
                    .into_iter()
                    .map(|b| {
                        let inserts = arrow::compute::kernels::cmp::eq(
                            b.column(2),
                            &Int8Array::new_scalar(RowKind::Insert as i8),
                        )
                        .unwrap();
                        arrow::compute::filter_record_batch(&b, &inserts).unwrap()
                    })
                    .filter(|b| b.num_rows() > 0)
                    .collect()
            };
            let mut reference = operator(limit, keep_all);
            let mut everything_spilled =
                operator(limit, keep_all).with_spill(SpillStore::in_memory(0));
            let mut some_spilled = operator(limit, keep_all).with_spill(SpillStore::in_memory(900));
            let mut spilled_some = false;
            for (i, batch) in batches.into_iter().enumerate() {
                let mut expected = vec![];
                reference
                    .process_batch(batch.clone(), &mut expected)
                    .unwrap();
                for op in [&mut everything_spilled, &mut some_spilled] {
                    let mut out = vec![];
                    op.process_batch(batch.clone(), &mut out).unwrap();
                    let (mut got, mut want) = (changes(&out), changes(&expected));
                    got.sort();
                    want.sort();
                    assert_eq!(got, want, "limit {limit}, batch {i}");
                }
                let held = reference.partitions.len();
                assert_eq!(everything_spilled.partition_counts(), (0, held));
                let (cached, _) = some_spilled.partition_counts();
                assert!(cached < held.max(8), "{cached} of {held} in memory");
                spilled_some |= some_spilled.partition_counts().1 > 0 && cached > 0;
                if i % 9 == 8 {
                    assert_eq!(
                        partitions(some_spilled.snapshot_state().unwrap()),
                        partitions(reference.snapshot_state().unwrap()),
                        "at a barrier the store is the state"
                    );
                }
            }
            assert!(
                spilled_some,
                "the small budget kept some partitions in memory"
            );

            // Restored, the partitions stay in the store until rows need them.
            let snapshot = everything_spilled.snapshot_state().unwrap();
            let mut restored = operator(limit, keep_all).with_spill(SpillStore::in_memory(0));
            restored
                .restore(RestoredState::of_entries(snapshot))
                .unwrap();
            assert_eq!(restored.partition_counts(), (0, reference.partitions.len()));
            let next = rows(vec![1, 2], vec![100, 0], vec![RowKind::Insert; 2]);
            let (mut got, mut want) = (vec![], vec![]);
            restored.process_batch(next.clone(), &mut got).unwrap();
            reference.process_batch(next, &mut want).unwrap();
            let (mut got, mut want) = (changes(&got), changes(&want));
            got.sort();
            want.sort();
            assert_eq!(got, want);
        }
    }
}
