//! Processing-time temporal joins (`stream [LEFT] JOIN t FOR SYSTEM_TIME AS OF PROCTIME()
//! ON keys [AND condition]`).
//!
//! The operator keeps the right input's current rows by join key (a multiset, updated by
//! its insertions and retractions) and nothing of the left input. Each left row joins the
//! right rows its key has when it arrives, and is then forgotten: later right changes do
//! not revisit it, so the output is append-only. A LEFT join pads a left row with NULLs
//! when no right row of its key satisfies the condition. Rows with a NULL key match
//! nothing.
//!
//! Until the first barrier the left rows (and watermarks) wait: the table's existing rows
//! (a new view's snapshot of it, or its replay after a restore) reach the operator on
//! their own channel, and only a barrier, which follows them, says they are all in. A
//! new view thus joins existing rows with the whole table.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch, UInt32Array, new_null_array};
use arrow::compute::{filter_record_batch, take};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;
use sluice_common::error::{Result, SluiceError};

use super::encoding::{key_groups_of_rows, push_sized, row_converter, split_sized};
use super::{Operator, StateEntry};
use crate::message::{CheckpointBarrier, Message, RowKind, Watermark, split_changelog};

/// The right input's rows by join key: row → multiplicity.
type Table = HashMap<Box<[u8]>, HashMap<Box<[u8]>, u64>>;

pub struct TemporalJoinOperator {
    /// Join key expressions over the left and the right input's columns.
    keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
    key_converter: RowConverter,
    right_rows: RowConverter,
    right_schema: SchemaRef,
    table: Table,
    /// LEFT JOIN: keep unmatched left rows, padded with NULLs.
    outer: bool,
    /// The rest of the ON condition, over the output columns.
    filter: Option<Arc<dyn PhysicalExpr>>,
    /// Left columns, then right columns.
    schema: SchemaRef,
    /// Left batches and the latest left watermark held until the first barrier.
    warming_up: Option<(Vec<RecordBatch>, Option<Watermark>)>,
}

impl TemporalJoinOperator {
    pub fn new(
        left_keys: Vec<Arc<dyn PhysicalExpr>>,
        left_schema: &SchemaRef,
        right_keys: Vec<Arc<dyn PhysicalExpr>>,
        right_schema: SchemaRef,
        outer: bool,
        filter: Option<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    ) -> Result<Self> {
        if left_keys.len() != right_keys.len() || left_keys.is_empty() {
            return Err(SluiceError::internal(
                "a temporal join needs the same number of keys on both sides",
            ));
        }
        let key_types = left_keys
            .iter()
            .map(|k| Ok(SortField::new(k.data_type(left_schema)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(TemporalJoinOperator {
            keys: [left_keys, right_keys],
            key_converter: RowConverter::new(key_types)?,
            right_rows: row_converter(&right_schema)?,
            right_schema,
            table: Table::new(),
            outer,
            filter,
            schema,
            warming_up: Some((Vec::new(), None)),
        })
    }

    /// Probes the left rows held until the table was loaded, then passes their watermark.
    fn end_warm_up(&mut self, out: &mut Vec<Message>) -> Result<()> {
        let Some((batches, watermark)) = self.warming_up.take() else {
            return Ok(());
        };
        for batch in batches {
            self.probe(batch, out)?;
        }
        out.extend(watermark.map(Message::Watermark));
        Ok(())
    }

    /// The key columns of input `side` over `data`.
    fn key_columns(&self, side: usize, data: &RecordBatch) -> Result<Vec<ArrayRef>> {
        let n = data.num_rows();
        Ok(self.keys[side]
            .iter()
            .map(|k| k.evaluate(data).and_then(|v| v.into_array(n)))
            .collect::<datafusion::error::Result<_>>()?)
    }

    /// Applies a batch of the right input's changes to the table.
    fn update_table(&mut self, batch: &RecordBatch) -> Result<()> {
        let (data, ops) = split_changelog(batch);
        let key_columns = self.key_columns(1, &data)?;
        let keys = self.key_converter.convert_columns(&key_columns)?;
        let rows = self.right_rows.convert_columns(data.columns())?;
        // Per-row loop: updating a hash table is inherently per row.
        for i in 0..data.num_rows() {
            if key_columns.iter().any(|c| c.is_null(i)) {
                continue;
            }
            let key = keys.row(i);
            let row = rows.row(i);
            if RowKind::is_addition(ops.value(i)) {
                let bucket = self.table.entry(key.as_ref().into()).or_default();
                *bucket.entry(row.as_ref().into()).or_default() += 1;
                continue;
            }
            let missing =
                || SluiceError::internal("a temporal join's table retracted a row it never held");
            let bucket = self.table.get_mut(key.as_ref()).ok_or_else(missing)?;
            let count = bucket.get_mut(row.as_ref()).ok_or_else(missing)?;
            *count -= 1;
            if *count == 0 {
                bucket.remove(row.as_ref());
                if bucket.is_empty() {
                    self.table.remove(key.as_ref());
                }
            }
        }
        Ok(())
    }

    /// Joins a batch of left rows with the table as it is now.
    fn probe(&self, data: RecordBatch, out: &mut Vec<Message>) -> Result<()> {
        let n = data.num_rows();
        let key_columns = self.key_columns(0, &data)?;
        let keys = self.key_converter.convert_columns(&key_columns)?;
        let mut left_indices: Vec<u32> = Vec::new();
        let mut right_rows: Vec<&[u8]> = Vec::new();
        // Per-row loop: probing a hash table is inherently per row.
        for i in 0..n {
            if key_columns.iter().any(|c| c.is_null(i)) {
                continue;
            }
            for (row, &count) in self.table.get(keys.row(i).as_ref()).into_iter().flatten() {
                for _ in 0..count {
                    left_indices.push(i as u32);
                    right_rows.push(row);
                }
            }
        }
        let mut matched = vec![false; n];
        if !left_indices.is_empty() {
            let indices = UInt32Array::from(left_indices);
            let mut columns: Vec<ArrayRef> = data
                .columns()
                .iter()
                .map(|c| take(c, &indices, None))
                .collect::<std::result::Result<_, _>>()?;
            let parser = self.right_rows.parser();
            columns.extend(
                self.right_rows
                    .convert_rows(right_rows.iter().map(|r| parser.parse(r)))?,
            );
            let joined = RecordBatch::try_new(self.schema.clone(), columns)?;
            let joined = match &self.filter {
                Some(filter) => {
                    let mask = filter.evaluate(&joined)?.into_array(joined.num_rows())?;
                    let mask = mask
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .ok_or_else(|| SluiceError::internal("join condition is not boolean"))?;
                    for (i, keep) in indices.values().iter().zip(mask.iter()) {
                        matched[*i as usize] |= keep == Some(true);
                    }
                    filter_record_batch(&joined, mask)?
                }
                None => {
                    for &i in indices.values().iter() {
                        matched[i as usize] = true;
                    }
                    joined
                }
            };
            if joined.num_rows() > 0 {
                out.push(Message::Batch(joined));
            }
        }
        if self.outer {
            let unmatched: UInt32Array = (0..n as u32).filter(|&i| !matched[i as usize]).collect();
            if !unmatched.is_empty() {
                let mut columns: Vec<ArrayRef> = data
                    .columns()
                    .iter()
                    .map(|c| take(c, &unmatched, None))
                    .collect::<std::result::Result<_, _>>()?;
                columns.extend(
                    self.right_schema
                        .fields()
                        .iter()
                        .map(|f| new_null_array(f.data_type(), unmatched.len())),
                );
                out.push(Message::Batch(RecordBatch::try_new(
                    self.schema.clone(),
                    columns,
                )?));
            }
        }
        Ok(())
    }

    /// Rows the table holds, for tests and metrics.
    pub fn table_rows(&self) -> usize {
        self.table
            .values()
            .flat_map(|rows| rows.values())
            .sum::<u64>() as usize
    }
}

impl Operator for TemporalJoinOperator {
    fn name(&self) -> &'static str {
        "TemporalJoin"
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<Message>) -> Result<()> {
        self.process_batch_from(0, batch, out)
    }

    fn process_batch_from(
        &mut self,
        input: usize,
        batch: RecordBatch,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        if input == 0 {
            match &mut self.warming_up {
                Some((held, _)) => {
                    held.push(batch);
                    Ok(())
                }
                None => self.probe(batch, out),
            }
        } else {
            self.update_table(&batch)
        }
    }

    fn process_watermark(&mut self, watermark: Watermark, out: &mut Vec<Message>) -> Result<()> {
        match &mut self.warming_up {
            Some((_, held)) => *held = Some(watermark),
            None => out.push(Message::Watermark(watermark)),
        }
        Ok(())
    }

    fn process_barrier(
        &mut self,
        barrier: CheckpointBarrier,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        self.end_warm_up(out)?;
        out.push(Message::Barrier(barrier));
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Message>) -> Result<()> {
        self.end_warm_up(out)
    }

    /// One entry per distinct held row: key `[key length: u32][key][row]`, value its
    /// multiplicity, in the key group of its join key.
    fn snapshot_state(&mut self) -> Result<Vec<StateEntry>> {
        let keys: Vec<&[u8]> = self.table.keys().map(|k| k.as_ref()).collect();
        let groups = key_groups_of_rows(&self.key_converter, &keys)?;
        let mut entries = Vec::new();
        for (key, group) in keys.into_iter().zip(groups) {
            for (row, count) in &self.table[key] {
                let mut entry_key = Vec::with_capacity(4 + key.len() + row.len());
                push_sized(&mut entry_key, key);
                entry_key.extend_from_slice(row);
                entries.push((group, entry_key, count.to_le_bytes().to_vec()));
            }
        }
        Ok(entries)
    }

    fn restore_state(&mut self, entries: Vec<StateEntry>) -> Result<()> {
        let corrupt =
            || SluiceError::corrupted("a temporal join's checkpointed state entry is malformed");
        for (_, entry_key, value) in entries {
            let (key, row) = split_sized(&entry_key).ok_or_else(corrupt)?;
            let count: [u8; 8] = value.as_slice().try_into().map_err(|_| corrupt())?;
            self.table
                .entry(key.into())
                .or_default()
                .insert(row.into(), u64::from_le_bytes(count));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_expr::expressions::Column;

    use arrow::array::Int8Array;

    use crate::message::changelog_schema;

    fn schema(columns: &[(&str, DataType)]) -> SchemaRef {
        Arc::new(Schema::new(
            columns
                .iter()
                .map(|(n, t)| Field::new(*n, t.clone(), true))
                .collect::<Vec<_>>(),
        ))
    }

    fn join(outer: bool) -> TemporalJoinOperator {
        let left = schema(&[("k", DataType::Int64), ("a", DataType::Utf8)]);
        let right = schema(&[("k", DataType::Int64), ("b", DataType::Utf8)]);
        let out = schema(&[
            ("k", DataType::Int64),
            ("a", DataType::Utf8),
            ("k", DataType::Int64),
            ("b", DataType::Utf8),
        ]);
        TemporalJoinOperator::new(
            vec![Arc::new(Column::new("k", 0))],
            &left,
            vec![Arc::new(Column::new("k", 0))],
            right,
            outer,
            None,
            out,
        )
        .unwrap()
    }

    fn left(rows: &[(Option<i64>, &str)]) -> RecordBatch {
        let schema = schema(&[("k", DataType::Int64), ("a", DataType::Utf8)]);
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(rows.iter().map(|r| r.0).collect::<Int64Array>()),
                Arc::new(rows.iter().map(|r| Some(r.1)).collect::<StringArray>()),
            ],
        )
        .unwrap()
    }

    fn right(rows: &[(i64, &str, RowKind)]) -> RecordBatch {
        let schema = changelog_schema(&schema(&[("k", DataType::Int64), ("b", DataType::Utf8)]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(rows.iter().map(|r| r.0).collect::<Int64Array>()),
                Arc::new(rows.iter().map(|r| Some(r.1)).collect::<StringArray>()),
                Arc::new(rows.iter().map(|r| r.2 as i8).collect::<Int8Array>()),
            ],
        )
        .unwrap()
    }

    /// Passes a first barrier, which ends the warm-up (the table is loaded).
    fn loaded(op: &mut TemporalJoinOperator, out: &mut Vec<Message>) {
        let barrier = CheckpointBarrier {
            epoch: 1,
            kind: crate::message::BarrierKind::Flush,
        };
        op.process_barrier(barrier, out).unwrap();
    }

    /// The output rows as `a:b` (b is `-` when NULL), sorted.
    fn joined(out: &[Message]) -> Vec<String> {
        let mut rows = Vec::new();
        for m in out {
            let Message::Batch(b) = m else { continue };
            let a = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
            let bs = b.column(3).as_any().downcast_ref::<StringArray>().unwrap();
            for i in 0..b.num_rows() {
                let right = if bs.is_null(i) { "-" } else { bs.value(i) };
                rows.push(format!("{}:{right}", a.value(i)));
            }
        }
        rows.sort();
        rows
    }

    #[test]
    fn a_row_joins_the_table_as_it_is_when_the_row_arrives() {
        let mut op = join(false);
        let mut out = Vec::new();
        // Rows that come before the table is loaded (its first barrier) wait for it.
        op.process_batch_from(0, left(&[(Some(1), "x"), (Some(2), "y")]), &mut out)
            .unwrap();
        op.process_batch_from(1, right(&[(1, "old", RowKind::Insert)]), &mut out)
            .unwrap();
        assert!(joined(&out).is_empty());
        loaded(&mut op, &mut out);
        assert_eq!(joined(&out), vec!["x:old"]);
        // Updating the table emits nothing and changes only what later rows join.
        out.clear();
        op.process_batch_from(
            1,
            right(&[
                (1, "old", RowKind::UpdateBefore),
                (1, "new", RowKind::UpdateAfter),
                (2, "two", RowKind::Insert),
            ]),
            &mut out,
        )
        .unwrap();
        assert!(out.is_empty());
        op.process_batch_from(0, left(&[(Some(1), "z"), (Some(2), "w")]), &mut out)
            .unwrap();
        assert_eq!(joined(&out), vec!["w:two", "z:new"]);
        assert_eq!(op.table_rows(), 2);
    }

    #[test]
    fn a_left_join_pads_rows_without_a_match_and_null_keys() {
        let mut op = join(true);
        let mut out = Vec::new();
        op.process_batch_from(1, right(&[(1, "one", RowKind::Insert)]), &mut out)
            .unwrap();
        loaded(&mut op, &mut out);
        op.process_batch_from(
            0,
            left(&[(Some(1), "x"), (Some(3), "y"), (None, "z")]),
            &mut out,
        )
        .unwrap();
        assert_eq!(joined(&out), vec!["x:one", "y:-", "z:-"]);
    }

    #[test]
    fn the_table_survives_a_snapshot() {
        let mut op = join(false);
        let mut out = Vec::new();
        op.process_batch_from(
            1,
            right(&[(1, "one", RowKind::Insert), (1, "one", RowKind::Insert)]),
            &mut out,
        )
        .unwrap();
        let snapshot = op.snapshot_state().unwrap();
        let mut restored = join(false);
        restored.restore_state(snapshot).unwrap();
        loaded(&mut restored, &mut out);
        restored
            .process_batch_from(0, left(&[(Some(1), "x")]), &mut out)
            .unwrap();
        assert_eq!(joined(&out), vec!["x:one", "x:one"]);
    }
}
