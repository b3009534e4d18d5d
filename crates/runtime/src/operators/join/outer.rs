//! Outer joins with a condition besides the key equalities (`a LEFT JOIN b ON a.k = b.k
//! AND a.v < b.w`).
//!
//! Without a condition a preserved row is padded while its key's bucket on the other
//! side is empty. With one, it is padded while no row of the other side *satisfies the
//! condition* with it, so each preserved row keeps that number (Flink's "associated
//! records"): a row is emitted padded exactly while its count is 0. A batch from one side
//! evaluates the condition once over all its candidate pairs (the other side's state
//! does not change during the batch), then walks its rows in order: joined rows for the
//! pairs that hold, the row's own padding when none does, and for each matched row of
//! the other side a count change, retracting its padding when the count leaves 0 and
//! emitting it again when it returns to 0.
//!
//! Counts are not checkpointed: a restore recomputes them from both sides' rows.

use std::collections::HashMap;
use std::ops::Range;

use arrow::array::RecordBatch;
use sluice_common::error::{Result, SluiceError};

use super::{JoinOperator, JoinOutput};
use crate::message::{Message, RowKind, split_changelog};

/// Per key and row of a preserved side: how many rows of the other side (with their
/// multiplicity) satisfy the condition with it.
pub(super) type MatchCounts = HashMap<Box<[u8]>, HashMap<Box<[u8]>, u64>>;

impl JoinOperator {
    /// An outer join's step for a batch of `side` when the join has a residual condition.
    pub(super) fn outer_filtered_batch(
        &mut self,
        side: usize,
        batch: RecordBatch,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        let filter = self
            .filter
            .clone()
            .ok_or_else(|| SluiceError::internal("a filtered outer join without a filter"))?;
        let other = 1 - side;
        let (data, ops) = split_changelog(&batch);
        let n = data.num_rows();
        let (key_columns, keys, rows) = self.encode(side, &data)?;
        let (open, ends) = self.open_rows(&key_columns, n)?;
        let null_key = |i: usize| key_columns.iter().any(|c| c.is_null(i));

        // Every pair of a row of this batch with a held row of its key on the other side,
        // each held row once (with its multiplicity), and where the condition holds.
        let mut candidates = JoinOutput::default();
        let mut multiplicity: Vec<u64> = Vec::new();
        let mut pairs_of: Vec<Range<usize>> = vec![0..0; n];
        for i in 0..n {
            if !open[i] || null_key(i) {
                continue;
            }
            let start = candidates.ops.len();
            for (row, &count) in self.state[other]
                .get(keys.row(i).as_ref())
                .into_iter()
                .flatten()
            {
                let o = candidates.other_row(row);
                candidates.push(Some(i as u32), Some(o), ops.value(i));
                multiplicity.push(count);
            }
            pairs_of[i] = start..candidates.ops.len();
        }
        let holds: Vec<bool> = if candidates.ops.is_empty() {
            Vec::new()
        } else {
            let pairs = self.assemble(side, &data, &candidates)?;
            let mask = self.condition_holds(&filter, &pairs)?;
            mask.values().iter().collect()
        };

        let mut output = JoinOutput::default();
        // Per-row loop: each row's effect on the counts depends on the rows before it.
        for i in 0..n {
            let op = ops.value(i);
            if !open[i] {
                continue;
            }
            if null_key(i) {
                if self.outer[side] {
                    output.push(Some(i as u32), None, op);
                }
                continue;
            }
            let key = keys.row(i);
            let addition = RowKind::is_addition(op);
            let mut matches = 0;
            for pair in pairs_of[i].clone() {
                if !holds[pair] {
                    continue;
                }
                let other_index = candidates.other[pair].expect("a candidate pairs two rows");
                let row = &candidates.other_rows[other_index as usize];
                let times = multiplicity[pair];
                matches += times;
                let o = output.other_row(row);
                for _ in 0..times {
                    output.push(Some(i as u32), Some(o), op);
                }
                if self.outer[other] {
                    let count = self.match_counts[other]
                        .entry(key.as_ref().into())
                        .or_default()
                        .entry(row.clone())
                        .or_default();
                    let before = *count;
                    *count = if addition {
                        before + 1
                    } else {
                        before.checked_sub(1).ok_or_else(|| {
                            SluiceError::internal("an outer join's match count went below zero")
                        })?
                    };
                    // The other row gains its first match (loses its padding) or loses
                    // its last one (is padded again).
                    let padding = match (before, *count) {
                        (0, 1) => Some(RowKind::Delete),
                        (1, 0) => Some(RowKind::Insert),
                        _ => None,
                    };
                    if let Some(kind) = padding {
                        for _ in 0..times {
                            output.push(None, Some(o), kind as i8);
                        }
                    }
                }
            }
            if self.outer[side] && matches == 0 {
                output.push(Some(i as u32), None, op);
            }
            let row = rows.row(i);
            self.update_state(side, key.as_ref(), row.as_ref(), addition)?;
            if self.outer[side] {
                if self.holds(side, key.as_ref(), row.as_ref()) {
                    self.match_counts[side]
                        .entry(key.as_ref().into())
                        .or_default()
                        .insert(row.as_ref().into(), matches);
                } else if let Some(counts) = self.match_counts[side].get_mut(key.as_ref()) {
                    counts.remove(row.as_ref());
                    if counts.is_empty() {
                        self.match_counts[side].remove(key.as_ref());
                    }
                }
            }
            self.file_window_key(ends[i], key.as_ref());
        }
        if !output.ops.is_empty() {
            out.push(Message::Batch(self.assemble(side, &data, &output)?));
        }
        Ok(())
    }

    /// Recomputes the match counts of a filtered outer join from restored state: every
    /// pair of rows of one key, with the condition evaluated per key.
    pub(super) fn count_restored_matches(&mut self) -> Result<()> {
        let Some(filter) = self.filter.clone() else {
            return Ok(());
        };
        if !self.outer.contains(&true) {
            return Ok(());
        }
        let keys: Vec<Box<[u8]>> = self.state[0].keys().cloned().collect();
        for key in keys {
            let left: Vec<(Box<[u8]>, u64)> = self.state[0][&key]
                .iter()
                .map(|(r, &m)| (r.clone(), m))
                .collect();
            let right: Vec<(Box<[u8]>, u64)> = self.state[1]
                .get(&key)
                .into_iter()
                .flatten()
                .map(|(r, &m)| (r.clone(), m))
                .collect();
            let mut counts = [vec![0u64; left.len()], vec![0u64; right.len()]];
            if !right.is_empty() {
                let parser = self.rows[0].parser();
                let columns =
                    self.rows[0].convert_rows(left.iter().map(|(r, _)| parser.parse(r)))?;
                let data = RecordBatch::try_new(self.side_schemas[0].clone(), columns)?;
                let mut pairs = JoinOutput::default();
                let mut index = Vec::new();
                for (l, _) in left.iter().enumerate() {
                    for (r, (row, _)) in right.iter().enumerate() {
                        let o = pairs.other_row(row);
                        pairs.push(Some(l as u32), Some(o), RowKind::Insert as i8);
                        index.push((l, r));
                    }
                }
                let joined = self.assemble(0, &data, &pairs)?;
                let holds = self.condition_holds(&filter, &joined)?;
                for (&(l, r), holds) in index.iter().zip(holds.values().iter()) {
                    if holds {
                        counts[0][l] += right[r].1;
                        counts[1][r] += left[l].1;
                    }
                }
            }
            for (side, held) in [(0, &left), (1, &right)] {
                if !self.outer[side] {
                    continue;
                }
                let entry = self.match_counts[side].entry(key.clone()).or_default();
                for ((row, _), &count) in held.iter().zip(&counts[side]) {
                    entry.insert(row.clone(), count);
                }
            }
        }
        // Right rows of keys the left side does not hold match nothing.
        if self.outer[1] {
            for (key, rows) in &self.state[1] {
                if !self.state[0].contains_key(key) {
                    let entry = self.match_counts[1].entry(key.clone()).or_default();
                    for row in rows.keys() {
                        entry.insert(row.clone(), 0);
                    }
                }
            }
        }
        Ok(())
    }
}
