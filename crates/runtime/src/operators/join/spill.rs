//! Join rows beyond the join's memory budget, in its [`SpillStore`]: each side's buckets
//! (its rows of one join key) are the values of a [`KeyedSpill`] with a space per side.
//! Before a batch is joined, the buckets of its keys are read back on both sides (a row
//! probes the other side and updates its own); after it, the side it updated is
//! accounted for.
//!
//! Window and interval joins spill too: their indexes hold join keys only (in memory).
//! Closing a window deletes its buckets from the store unread; an interval join reads a
//! key's buckets back when the watermark reaches its rows' earliest expiry.
//!
//! Only joins whose state is their buckets alone spill: joins under a state TTL (an
//! index of rows by insertion time), outer joins with a residual condition (per-row
//! match counts) and null-aware anti joins (counts over the whole right side) keep
//! everything in memory.

use std::collections::HashMap;

use arrow::array::ArrayRef;
use arrow::row::Rows;
use sluice_common::error::Result;
use sluice_state::SpillStore;

use super::{BUCKET, JoinOperator};
use crate::operators::keyed_spill::KeyedSpill;

impl JoinOperator {
    /// Whether the join's state is its buckets alone, so they can spill (see the module
    /// docs).
    pub fn can_spill(&self) -> bool {
        self.ttl.is_none()
            && self.null_aware.is_none()
            && !(self.filter.is_some() && self.outer.contains(&true))
    }

    /// Keeps at most `store.memory_budget()` bytes of rows in memory and the rest in
    /// `store` (see the module docs). Only for joins that [`Self::can_spill`].
    pub fn with_spill(mut self, store: SpillStore) -> Self {
        debug_assert!(self.can_spill());
        self.spill = Some(KeyedSpill::new(store, BUCKET, 2));
        self
    }

    /// Buckets (keys of either side) in the spill store, for tests: O(buckets).
    pub fn stored_bucket_count(&self) -> usize {
        self.spill.as_ref().map_or(0, |s| s.store.table().len())
    }

    /// Buckets in memory on each side, for tests.
    pub fn cached_bucket_count(&self) -> [usize; 2] {
        self.state.each_ref().map(HashMap::len)
    }

    /// Reads back the buckets of `keys` (one batch of `side`, with their key columns
    /// `key_columns` and rows `rows`) that the store holds and memory does not, on both
    /// sides.
    pub(super) fn unspill(
        &mut self,
        side: usize,
        key_columns: &[ArrayRef],
        keys: &Rows,
        rows: &Rows,
    ) -> Result<()> {
        let Some(spill) = &mut self.spill else {
            return Ok(());
        };
        spill.load(&mut self.state, key_columns, keys, side, rows)
    }

    /// After a batch of `side`: see [`KeyedSpill::account`].
    pub(super) fn spill_over_budget(&mut self, side: usize) {
        if let Some(spill) = &mut self.spill {
            spill.account(&mut self.state, side);
        }
    }

    /// Writes the dirty buckets to the store (at a barrier).
    pub(super) fn spill_flush(&mut self) {
        if let Some(spill) = &mut self.spill {
            spill.flush(&self.state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{changes, outer_join, rows, semi_or_anti_join};
    use super::*;
    use crate::message::RowKind;
    use crate::operators::join::Bucket;
    use crate::operators::keyed_spill::{SpillValue, split_entry_key};
    use crate::operators::{Operator, RestoredState, StateEntry};
    use arrow::array::RecordBatch;
    use sluice_state::{DEFAULT_KEY_GROUPS, OperatorStateDirs};

    /// Batches of inserts and retractions (of rows inserted before) on either side over
    /// 12 keys (some NULL), from a fixed seed: the same input for every join compared.
    fn churn(batches: usize) -> Vec<(usize, RecordBatch)> {
        let mut next = crate::test_support::xorshift(0x2545_f491_4f6c_dd1du64);
        let mut held: [Vec<(Option<i64>, String)>; 2] = [Vec::new(), Vec::new()];
        (0..batches)
            .map(|_| {
                let side = next(2) as usize;
                let (mut keys, mut values, mut ops) = (vec![], vec![], vec![]);
                for _ in 0..1 + next(8) {
                    if !held[side].is_empty() && next(3) == 0 {
                        let at = next(held[side].len() as u64) as usize;
                        let (k, v) = held[side].swap_remove(at);
                        keys.push(k);
                        values.push(v);
                        ops.push(RowKind::Delete);
                    } else {
                        let k = next(13) as i64;
                        let k = (k != 12).then_some(k);
                        let v = format!("v{}", next(4));
                        held[side].push((k, v.clone()));
                        keys.push(k);
                        values.push(v);
                        ops.push(RowKind::Insert);
                    }
                }
                let values: Vec<&str> = values.iter().map(String::as_str).collect();
                (side, rows(["a", "b"][side], keys, values, ops))
            })
            .collect()
    }

    type SortedBucket = Vec<(Box<[u8]>, u64)>;

    /// A snapshot with each bucket's rows in order (buckets encode a hash map's order).
    fn normalized(entries: Vec<StateEntry>) -> Vec<(u16, Vec<u8>, SortedBucket)> {
        let mut entries: Vec<_> = entries
            .into_iter()
            .map(|(group, key, value)| {
                let mut rows: Vec<_> = Bucket::decode(&value).unwrap().into_iter().collect();
                rows.sort();
                (group, key, rows)
            })
            .collect();
        entries.sort();
        entries
    }

    type Make = fn() -> JoinOperator;

    /// Inner, left, full, semi and anti joins, each built fresh.
    fn kinds() -> Vec<(&'static str, Make)> {
        vec![
            ("inner", || outer_join(false, false)),
            ("left", || outer_join(true, false)),
            ("full", || outer_join(true, true)),
            ("semi", || semi_or_anti_join(false)),
            ("anti", || semi_or_anti_join(true)),
        ]
    }

    #[test]
    fn spilled_buckets_come_back_with_their_rows_and_change_no_result() {
        for (kind, make) in kinds() {
            let mut reference = make();
            let mut everything_spilled = make().with_spill(SpillStore::in_memory(0));
            // Room for a few buckets: some stay, the least recently used go.
            let mut some_spilled = make().with_spill(SpillStore::in_memory(1200));
            let mut spilled_some = false;
            for (i, (side, batch)) in churn(80).into_iter().enumerate() {
                let mut expected = vec![];
                reference
                    .process_batch_from(side, batch.clone(), &mut expected)
                    .unwrap();
                for join in [&mut everything_spilled, &mut some_spilled] {
                    let mut out = vec![];
                    join.process_batch_from(side, batch.clone(), &mut out)
                        .unwrap();
                    assert_eq!(changes(&out), changes(&expected), "{kind}, batch {i}");
                }
                let held: usize = reference.cached_bucket_count().iter().sum();
                assert_eq!(everything_spilled.cached_bucket_count(), [0, 0], "{kind}");
                assert_eq!(
                    everything_spilled.stored_bucket_count(),
                    held,
                    "{kind}: every bucket is in the store, and no emptied one"
                );
                let cached: usize = some_spilled.cached_bucket_count().iter().sum();
                assert!(cached < held.max(8), "{kind}: {cached} of {held} in memory");
                spilled_some |= some_spilled.stored_bucket_count() > 0 && cached > 0;
                if i % 9 == 8 {
                    // A barrier writes the changed buckets: the store is then the state.
                    let snapshot = normalized(some_spilled.snapshot_state().unwrap());
                    let expected = normalized(reference.snapshot_state().unwrap());
                    assert_eq!(snapshot, expected, "{kind}, batch {i}");
                    assert_eq!(some_spilled.stored_bucket_count(), held, "{kind}");
                }
            }
            assert!(
                spilled_some,
                "{kind}: the small budget kept some buckets and spilled others"
            );
        }
    }

    #[test]
    fn a_spilling_join_restores_its_buckets_into_the_store_and_from_rows_of_old_checkpoints() {
        for (kind, make) in kinds() {
            let input = churn(60);
            let (before, after) = input.split_at(35);
            let mut spilling = make().with_spill(SpillStore::in_memory(0));
            let mut reference = make();
            for (side, batch) in before {
                spilling
                    .process_batch_from(*side, batch.clone(), &mut vec![])
                    .unwrap();
                reference
                    .process_batch_from(*side, batch.clone(), &mut vec![])
                    .unwrap();
            }
            let snapshot = spilling.snapshot_state().unwrap();
            let held: usize = reference.cached_bucket_count().iter().sum();
            assert_eq!(
                normalized(snapshot.clone()),
                normalized(reference.snapshot_state().unwrap()),
                "{kind}: a snapshot does not depend on where buckets were"
            );

            let mut restored = make().with_spill(SpillStore::in_memory(0));
            restored.restore_state(snapshot.clone()).unwrap();
            assert_eq!(restored.cached_bucket_count(), [0, 0], "{kind}");
            assert_eq!(restored.stored_bucket_count(), held, "{kind}");
            let mut in_memory = make();
            in_memory.restore_state(snapshot).unwrap();
            // Checkpoints taken before buckets: an entry per row.
            let mut from_rows = make().with_spill(SpillStore::in_memory(0));
            from_rows.restore_state(row_entries(&reference)).unwrap();
            assert_eq!(from_rows.stored_bucket_count(), held, "{kind}");
            for (side, batch) in after {
                let mut expected = vec![];
                reference
                    .process_batch_from(*side, batch.clone(), &mut expected)
                    .unwrap();
                for join in [&mut restored, &mut in_memory, &mut from_rows] {
                    let mut got = vec![];
                    join.process_batch_from(*side, batch.clone(), &mut got)
                        .unwrap();
                    assert_eq!(changes(&got), changes(&expected), "{kind}");
                }
            }
        }
    }

    #[test]
    fn a_spilling_window_join_deletes_closed_windows_from_its_store() {
        use crate::message::Watermark;
        use std::sync::Arc;
        use std::sync::atomic::AtomicU64;
        // Keys stand for window ends (ms); each round's rows fall in six windows, the
        // oldest already closed by the last round's watermark (late).
        let make = || outer_join(true, false).with_windows(0, 0, Arc::new(AtomicU64::new(0)));
        let buckets = |join: &JoinOperator| join.state.iter().map(HashMap::len).sum::<usize>();
        let round = |joins: [&mut JoinOperator; 2], r: i64| {
            let [reference, spilling] = joins;
            for (side, name) in [(0, "a"), (1, "b")] {
                let keys: Vec<Option<i64>> = (r * 3 - 4..r * 3 + 2).map(Some).collect();
                let values = vec![name; keys.len()];
                let batch = rows(name, keys, values, vec![RowKind::Insert; 6]);
                let (mut want, mut got) = (vec![], vec![]);
                reference
                    .process_batch_from(side, batch.clone(), &mut want)
                    .unwrap();
                spilling.process_batch_from(side, batch, &mut got).unwrap();
                assert_eq!(changes(&got), changes(&want), "round {r}");
            }
            for join in [&mut *reference, &mut *spilling] {
                join.process_watermark(Watermark(r * 3), &mut vec![])
                    .unwrap();
            }
            assert_eq!(spilling.cached_bucket_count(), [0, 0]);
            assert_eq!(
                spilling.stored_bucket_count(),
                buckets(reference),
                "round {r}: closed windows leave the store"
            );
        };
        let mut reference = make();
        let mut spilling = make().with_spill(SpillStore::in_memory(0));
        for r in 1..8 {
            round([&mut reference, &mut spilling], r);
        }
        assert!(buckets(&reference) > 0);

        // Restored, the stored buckets' windows are open again and close as before,
        // by the watermark alone too.
        let mut restored = make().with_spill(SpillStore::in_memory(0));
        restored
            .restore(RestoredState::of_entries(
                spilling.snapshot_state().unwrap(),
            ))
            .unwrap();
        assert_eq!(restored.stored_bucket_count(), buckets(&reference));
        for join in [&mut reference, &mut restored] {
            join.process_watermark(Watermark(22), &mut vec![]).unwrap();
        }
        assert_eq!(restored.stored_bucket_count(), buckets(&reference));
        for r in 8..12 {
            round([&mut reference, &mut restored], r);
        }
        restored
            .process_watermark(Watermark(i64::MAX), &mut vec![])
            .unwrap();
        assert_eq!(restored.stored_bucket_count(), 0);
    }

    /// `a JOIN b ON a.k = b.k` where each row expires at its own `ts` and must arrive
    /// before the watermark passes it.
    fn interval_join() -> JoinOperator {
        use crate::operators::join::{JoinIntervals, JoinSide};
        use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
        use datafusion::physical_expr::expressions::Column;
        use std::sync::Arc;
        use std::sync::atomic::AtomicU64;
        let ts = || -> Arc<dyn datafusion::physical_expr::PhysicalExpr> {
            Arc::new(Column::new("ts", 1))
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]));
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.extend(fields.clone());
        let side = || JoinSide {
            keys: vec![Arc::new(Column::new("k", 0))],
            schema: schema.clone(),
            outer: false,
        };
        JoinOperator::new(side(), side(), None, Arc::new(Schema::new(fields)))
            .unwrap()
            .with_intervals(JoinIntervals::new(
                [Some(ts()), Some(ts())],
                [Some(ts()), Some(ts())],
                Arc::new(AtomicU64::new(0)),
            ))
    }

    #[test]
    fn a_spilling_interval_join_forgets_expired_rows_from_its_store() {
        use crate::message::{Message, Watermark};
        use arrow::array::{Int64Array, TimestampMillisecondArray};
        use std::sync::Arc;
        let mut next = crate::test_support::xorshift(0x9e37_79b9_7f4a_7c15u64);
        // Rounds of rows on both sides: 8 keys, times wandering ahead of a watermark
        // that trails them (some rows late), so rows join, expire and arrive late.
        let mut rounds = Vec::new();
        for r in 0..40i64 {
            let mut batches = Vec::new();
            for side in 0..2 {
                let n = 1 + next(5);
                let keys: Vec<i64> = (0..n).map(|_| next(8) as i64).collect();
                let times: Vec<i64> = (0..n).map(|_| r * 5 + next(30) as i64).collect();
                let batch = RecordBatch::try_new(
                    interval_join().side_schemas[side].clone(),
                    vec![
                        Arc::new(Int64Array::from(keys)),
                        Arc::new(TimestampMillisecondArray::from(times)),
                    ],
                )
                .unwrap();
                batches.push((side, batch));
            }
            rounds.push((batches, Watermark(r * 5 + 5)));
        }
        let run = |join: &mut JoinOperator, rounds: &[(Vec<(usize, RecordBatch)>, Watermark)]| {
            let mut lines = Vec::new();
            for (batches, watermark) in rounds {
                let mut out: Vec<Message> = vec![];
                for (side, batch) in batches {
                    join.process_batch_from(*side, batch.clone(), &mut out)
                        .unwrap();
                }
                join.process_watermark(*watermark, &mut out).unwrap();
                // The join of append-only inputs emits rows without an op column.
                let mut joined = Vec::new();
                for message in &out {
                    let Message::Batch(b) = message else { continue };
                    let formatted =
                        arrow::util::pretty::pretty_format_batches(std::slice::from_ref(b))
                            .unwrap()
                            .to_string();
                    joined.extend(formatted.lines().skip(3).map(str::to_string));
                }
                joined.retain(|line| !line.starts_with('+'));
                joined.sort();
                lines.push(joined);
            }
            lines
        };
        let (first, rest) = rounds.split_at(25);
        let mut reference = interval_join();
        let mut everything_spilled = interval_join().with_spill(SpillStore::in_memory(0));
        let mut some_spilled = interval_join().with_spill(SpillStore::in_memory(600));
        let want = run(&mut reference, first);
        assert!(want.iter().any(|lines| !lines.is_empty()), "rows join");
        assert_eq!(run(&mut everything_spilled, first), want);
        assert_eq!(run(&mut some_spilled, first), want);
        assert_eq!(everything_spilled.cached_bucket_count(), [0, 0]);
        let buckets = |join: &mut JoinOperator| {
            let entries = join.snapshot_state().unwrap().into_iter();
            normalized(
                entries
                    .filter(|(_, key, _)| split_entry_key(BUCKET, 2, key).is_some())
                    .collect(),
            )
        };
        let held = buckets(&mut reference);
        assert!(!held.is_empty(), "rows are held");
        for join in [&mut everything_spilled, &mut some_spilled] {
            assert_eq!(
                buckets(join),
                held,
                "at a barrier the store holds the rows that have not expired"
            );
        }

        // Restored, every stored key is filed under its rows' earliest expiry again.
        let snapshot = everything_spilled.snapshot_state().unwrap();
        let mut restored = interval_join().with_spill(SpillStore::in_memory(0));
        restored
            .restore(RestoredState::of_entries(snapshot.clone()))
            .unwrap();
        let mut in_memory = interval_join();
        in_memory
            .restore(RestoredState::of_entries(snapshot))
            .unwrap();
        let want = run(&mut reference, rest);
        assert_eq!(run(&mut restored, rest), want);
        assert_eq!(run(&mut in_memory, rest), want);
        restored
            .process_watermark(Watermark(i64::MAX), &mut vec![])
            .unwrap();
        assert_eq!(restored.stored_bucket_count(), 0, "every row expired");
    }

    #[test]
    fn subtasks_copy_their_key_groups_of_a_restored_database_into_their_stores() {
        let root = std::env::temp_dir().join(format!("sluice-join-restore-{}", std::process::id()));
        let dirs = OperatorStateDirs::open(&root, 0).unwrap();
        let mut reference = outer_join(true, false);
        let mut spilling = outer_join(true, false).with_spill(dirs.open_store("before").unwrap());
        for (side, batch) in churn(40) {
            reference
                .process_batch_from(side, batch.clone(), &mut vec![])
                .unwrap();
            spilling
                .process_batch_from(side, batch, &mut vec![])
                .unwrap();
        }
        assert!(
            spilling.snapshot_state().unwrap().is_empty(),
            "on disk, the buckets are the database's files"
        );
        let checkpoint = spilling.snapshot_database().unwrap().unwrap();
        let db = crate::test_support::restored_db(&dirs, &checkpoint);

        // At parallelism 2, each subtask takes the buckets of its key groups.
        let mut restored = Vec::new();
        for subtask in 0..2 {
            let key_groups: Vec<u16> = (0..DEFAULT_KEY_GROUPS)
                .filter(|&g| {
                    sluice_state::subtask_of_key_group(g, DEFAULT_KEY_GROUPS, 2) == subtask
                })
                .collect();
            let store = dirs.open_store(&format!("after-{subtask}")).unwrap();
            let mut join = outer_join(true, false).with_spill(store);
            join.restore(RestoredState {
                entries: Vec::new(),
                databases: vec![&db],
                key_groups: Some(key_groups.clone()),
            })
            .unwrap();
            assert_eq!(
                join.cached_bucket_count(),
                [0, 0],
                "nothing read into memory"
            );
            let stored = join.spill.as_ref().unwrap().store.entries();
            assert!(stored.iter().all(|(g, _, _)| key_groups.contains(g)));
            restored.extend(stored);
        }
        assert_eq!(
            normalized(restored),
            normalized(reference.snapshot_state().unwrap())
        );
        drop((db, checkpoint, spilling));
        let _ = std::fs::remove_dir_all(root);
    }

    /// `join`'s state as checkpoints before buckets held it: key
    /// `[side][key length: u32][key][row]`, value the row's multiplicity.
    fn row_entries(join: &JoinOperator) -> Vec<StateEntry> {
        let mut entries = Vec::new();
        for (group, key, value) in join.bucket_entries().unwrap() {
            let side = key[0] - BUCKET[0];
            for (row, count) in Bucket::decode(&value).unwrap() {
                let mut entry_key = vec![side];
                crate::operators::encoding::push_sized(&mut entry_key, &key[1..]);
                entry_key.extend_from_slice(&row);
                entries.push((group, entry_key, count.to_le_bytes().to_vec()));
            }
        }
        entries
    }
}
