//! `NOT IN (SELECT ...)`: the null-aware anti join.
//!
//! `x NOT IN (subquery)` keeps a row when the subquery is empty; otherwise only when the
//! subquery holds no NULL, `x` is not NULL, and no subquery row equals `x`. Whether a row
//! is kept therefore also depends on two facts about the whole right side (is it empty,
//! does it hold a NULL), so the planner runs this join as a single subtask and the
//! operator counts the right side's rows and NULL keys. When a right change flips one of
//! those facts, every held left row is judged again; otherwise only the rows of the
//! changed key can enter or leave, as in a plain anti join. Left rows with a NULL key are
//! held too: they are kept exactly while the right side is empty.

use std::collections::HashMap;

use arrow::array::{ArrayRef, Int8Array, RecordBatch, UInt32Array};
use arrow::compute::take;
use sluice_common::error::{Result, SluiceError};

use super::{JoinOperator, SideState, held_rows};
use crate::message::{Message, RowKind, split_changelog};

/// What a null-aware anti join knows of the right side as a whole, and the left rows
/// whose key is NULL.
#[derive(Debug, Default)]
pub(super) struct NullAware {
    /// Right rows held (NULL keys included).
    pub(super) right_rows: u64,
    /// Right rows whose key is NULL.
    pub(super) right_nulls: u64,
    /// Left rows with a NULL key: row → multiplicity.
    pub(super) left_null_rows: HashMap<Box<[u8]>, u64>,
}

impl NullAware {
    /// Whether a left row is in the result: `key_matched` is `None` for a NULL key, else
    /// whether the right side holds its key.
    fn keeps(&self, key_matched: Option<bool>) -> bool {
        self.right_rows == 0 || (self.right_nulls == 0 && key_matched == Some(false))
    }
}

/// Snapshot key of the right side's NULL-key count.
pub(super) const RIGHT_NULLS: u8 = 4;
/// Snapshot key prefix of a left row with a NULL key.
pub(super) const LEFT_NULL_ROW: u8 = 5;

impl JoinOperator {
    /// A null-aware anti join's step for a batch of `side`.
    pub(super) fn null_aware_anti_batch(
        &mut self,
        side: usize,
        batch: RecordBatch,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        let (data, ops) = split_changelog(&batch);
        let n = data.num_rows();
        let (key_columns, keys, rows) = self.encode(side, &data)?;
        let mut aware = self
            .null_aware
            .take()
            .ok_or_else(|| SluiceError::internal("a null-aware join without its counts"))?;
        // Left rows to emit: from this batch (side 0) or from held state (side 1).
        let mut from_batch: Vec<u32> = Vec::new();
        let mut batch_ops: Vec<i8> = Vec::new();
        let mut from_state: Vec<Box<[u8]>> = Vec::new();
        let mut state_ops: Vec<i8> = Vec::new();
        // Per-row loop: each change can flip what the next one sees.
        for i in 0..n {
            let op = ops.value(i);
            let addition = RowKind::is_addition(op);
            let null_key = key_columns.iter().any(|c| c.is_null(i));
            let row = rows.row(i);
            if side == 0 {
                let matched = (!null_key).then(|| {
                    self.state[1]
                        .get(keys.row(i).as_ref())
                        .is_some_and(|b| !b.is_empty())
                });
                if aware.keeps(matched) {
                    from_batch.push(i as u32);
                    batch_ops.push(op);
                }
                if null_key {
                    change_count(&mut aware.left_null_rows, row.as_ref(), addition)?;
                } else {
                    self.update_state(0, keys.row(i).as_ref(), row.as_ref(), addition)?;
                }
                continue;
            }
            // A right change: judge the left rows again where it can matter.
            let before = (aware.right_rows == 0, aware.right_nulls > 0);
            aware.right_rows = apply(aware.right_rows, addition)?;
            let changed_key = if null_key {
                aware.right_nulls = apply(aware.right_nulls, addition)?;
                None
            } else {
                let key = keys.row(i);
                let (was_empty, now_empty) =
                    self.update_state(1, key.as_ref(), row.as_ref(), addition)?;
                Some((key.as_ref().to_vec(), was_empty, now_empty))
            };
            let after = (aware.right_rows == 0, aware.right_nulls > 0);
            let mut judge = |rows: Vec<Box<[u8]>>, kept_before: bool, kept_after: bool| {
                if kept_before != kept_after {
                    let kind = if kept_after {
                        RowKind::Insert
                    } else {
                        RowKind::Delete
                    };
                    state_ops.extend(std::iter::repeat_n(kind as i8, rows.len()));
                    from_state.extend(rows);
                }
            };
            let keeps = |(empty, has_null): (bool, bool), matched: Option<bool>| {
                empty || (!has_null && matched == Some(false))
            };
            if before != after {
                // Every held left row, judged with the old and the new facts.
                let nulls = expand(&aware.left_null_rows);
                judge(nulls, keeps(before, None), keeps(after, None));
                for (key, bucket) in &self.state[0] {
                    let now_matched = self.state[1].get(key).is_some_and(|b| !b.is_empty());
                    let was_matched = match &changed_key {
                        Some((k, was_empty, _)) if k.as_slice() == key.as_ref() => !was_empty,
                        _ => now_matched,
                    };
                    let rows = expand(bucket);
                    judge(
                        rows,
                        keeps(before, Some(was_matched)),
                        keeps(after, Some(now_matched)),
                    );
                }
            } else if let Some((key, was_empty, now_empty)) = changed_key
                && was_empty != now_empty
            {
                let rows: Vec<Box<[u8]>> =
                    held_rows(&self.state[0], &key).map(Into::into).collect();
                judge(
                    rows,
                    keeps(before, Some(!was_empty)),
                    keeps(after, Some(!now_empty)),
                );
            }
        }
        self.null_aware = Some(aware);
        let mut batches = Vec::new();
        if !from_batch.is_empty() {
            let indices = UInt32Array::from(from_batch);
            let columns: Vec<ArrayRef> = data
                .columns()
                .iter()
                .map(|c| take(c, &indices, None))
                .collect::<std::result::Result<_, _>>()?;
            batches.push((columns, batch_ops));
        }
        if !from_state.is_empty() {
            let parser = self.rows[0].parser();
            let columns = self.rows[0].convert_rows(from_state.iter().map(|r| parser.parse(r)))?;
            batches.push((columns, state_ops));
        }
        for (mut columns, ops) in batches {
            if self.changelog_output {
                columns.push(std::sync::Arc::new(Int8Array::from(ops)));
            }
            out.push(Message::Batch(RecordBatch::try_new(
                self.schema.clone(),
                columns,
            )?));
        }
        Ok(())
    }
}

/// Every row of a multiset, as many times as it is held.
fn expand(rows: &HashMap<Box<[u8]>, u64>) -> Vec<Box<[u8]>> {
    rows.iter()
        .flat_map(|(row, &count)| std::iter::repeat_n(row.clone(), count as usize))
        .collect()
}

fn apply(count: u64, addition: bool) -> Result<u64> {
    if addition {
        Ok(count + 1)
    } else {
        count
            .checked_sub(1)
            .ok_or_else(|| SluiceError::internal("a join input retracted a row it never inserted"))
    }
}

fn change_count(rows: &mut HashMap<Box<[u8]>, u64>, row: &[u8], addition: bool) -> Result<()> {
    if addition {
        *rows.entry(row.into()).or_default() += 1;
        return Ok(());
    }
    let count = rows
        .get_mut(row)
        .ok_or_else(|| SluiceError::internal("a join input retracted a row it never inserted"))?;
    *count -= 1;
    if *count == 0 {
        rows.remove(row);
    }
    Ok(())
}

/// The right side's row count, recomputed from restored state.
pub(super) fn held_count(state: &SideState) -> u64 {
    state.values().flat_map(|rows| rows.values()).sum()
}
