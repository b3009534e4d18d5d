//! Groups beyond an aggregate's memory budget, in its [`SpillStore`].
//!
//! The operator keeps its recently used groups in memory as live DataFusion
//! accumulators. After each batch, when their estimated size (`Accumulator::size`, the
//! key and the last emitted values) passes the budget, the least recently used groups
//! are encoded as their checkpoint entries would be (`snapshot.rs`) and written to the
//! store, until a quarter of the budget is free again (so a full cache does not spill
//! on every batch). A row of a group that is not in memory reads it back from the store
//! and deletes it there: a group lives in exactly one of the two places, so a snapshot
//! is the in-memory groups' entries plus the store's.
//!
//! Only grouped aggregates without windows or a state TTL spill: window aggregates
//! forget their groups as the watermark passes, and both keep per-slot bookkeeping
//! (open windows, touch times) that a spilled group would leave dangling.

use arrow::array::ArrayRef;
use arrow::row::Rows;
use sluice_common::error::Result;
use sluice_state::{DEFAULT_KEY_GROUPS, SpillStore, StateWrite};

use super::snapshot::group_entry_key;
use super::{AggregateOperator, Group};
use crate::keygroup::key_groups_of_columns;
use crate::operators::StateEntry;

/// Fixed bytes per in-memory group besides its key and accumulators: the group itself,
/// its index entry and its slot.
const GROUP_OVERHEAD: usize = std::mem::size_of::<Group>() + 64;

pub(super) struct Spill {
    store: SpillStore,
    /// Estimated bytes of the group in each slot (0 for a free slot), and their sum.
    bytes: Vec<usize>,
    total: usize,
    /// The batch that last touched each slot, for least-recently-used eviction.
    used: Vec<u64>,
    tick: u64,
    /// Groups in the store.
    stored: usize,
}

impl Spill {
    pub(super) fn new(store: SpillStore) -> Self {
        Spill {
            store,
            bytes: Vec::new(),
            total: 0,
            used: Vec::new(),
            tick: 0,
            stored: 0,
        }
    }

    pub(super) fn stored(&self) -> usize {
        self.stored
    }

    /// Every group in the store, as state entries.
    pub(super) fn stored_entries(&self) -> Vec<StateEntry> {
        self.store.table().scan(None)
    }

    /// Puts encoded groups into the store.
    pub(super) fn store(&mut self, entries: Vec<StateEntry>) {
        self.stored += entries.len();
        self.store.table().write(
            entries
                .into_iter()
                .map(|(key_group, key, value)| StateWrite::Put {
                    key_group,
                    key,
                    value,
                })
                .collect(),
        );
    }
}

impl AggregateOperator {
    /// Keeps at most `store.memory_budget()` bytes of groups in memory and the rest in
    /// `store` (see the module docs). For grouped aggregates without windows or TTL.
    pub fn with_spill(mut self, store: SpillStore) -> Self {
        debug_assert!(!self.is_global() && self.window_close.is_none() && self.ttl.is_none());
        self.spill = Some(Spill::new(store));
        self
    }

    /// Groups in the spill store, for tests and metrics.
    pub fn spilled_group_count(&self) -> usize {
        self.spill.as_ref().map_or(0, Spill::stored)
    }

    /// Reads back from the store the groups of `rows` (keys of one batch, with their
    /// key columns `keys`) that are neither in memory nor new, filing each in a slot.
    pub(super) fn unspill(&mut self, keys: &[ArrayRef], rows: &Rows) -> Result<()> {
        let Some(spill) = &self.spill else {
            return Ok(());
        };
        if spill.stored == 0 {
            return Ok(());
        }
        let key_groups = key_groups_of_columns(keys, rows.num_rows(), DEFAULT_KEY_GROUPS)?;
        let mut looked_up = std::collections::HashSet::new();
        let mut found = Vec::new();
        let mut deletes = Vec::new();
        for (row, key_group) in rows.iter().zip(key_groups) {
            if self.index.contains_key(row.data()) || !looked_up.insert(row.data()) {
                continue;
            }
            let key = group_entry_key(Some(row.data()));
            if let Some(value) = spill.store.table().get(key_group, &key) {
                deletes.push(StateWrite::Delete {
                    key_group,
                    key: key.clone(),
                });
                found.push((key_group, key, value));
            }
        }
        if found.is_empty() {
            return Ok(());
        }
        let groups = self.decode_groups(&found)?;
        let spill = self.spill.as_mut().expect("checked above");
        spill.stored -= deletes.len();
        spill.store.table().write(deletes);
        for group in groups {
            self.insert_group(group);
        }
        Ok(())
    }

    /// Accounts for the groups in `touched` (updated, created, read back or dropped by
    /// the last batch) and spills the least recently used groups when over budget.
    pub(super) fn spill_over_budget(&mut self, touched: &[usize]) -> Result<()> {
        let Some(spill) = &mut self.spill else {
            return Ok(());
        };
        spill.tick += 1;
        if spill.bytes.len() < self.groups.len() {
            spill.bytes.resize(self.groups.len(), 0);
            spill.used.resize(self.groups.len(), 0);
        }
        for &slot in touched {
            let size = self.groups[slot].as_ref().map_or(0, group_size);
            spill.total = spill.total - spill.bytes[slot] + size;
            spill.bytes[slot] = size;
            spill.used[slot] = spill.tick;
        }
        let budget = spill.store.memory_budget();
        if spill.total <= budget {
            return Ok(());
        }
        let mut live: Vec<usize> = (0..self.groups.len())
            .filter(|&s| self.groups[s].is_some())
            .collect();
        live.sort_unstable_by_key(|&s| spill.used[s]);
        let target = budget - budget / 4;
        let mut freed = 0;
        let evict: Vec<usize> = live
            .into_iter()
            .take_while(|&s| {
                let over = spill.total - freed > target;
                freed += spill.bytes[s];
                over
            })
            .collect();
        let entries = self.encode_groups(&evict)?;
        let spill = self.spill.as_mut().expect("checked above");
        spill.store(entries);
        for slot in evict {
            spill.total -= spill.bytes[slot];
            spill.bytes[slot] = 0;
            let group = self.groups[slot].take().expect("live slot");
            if let Some(key) = &group.key {
                self.index.remove(key.as_ref());
            }
            self.free_slots.push(slot);
        }
        Ok(())
    }
}

/// Estimated bytes a group holds in memory.
pub(super) fn group_size(group: &Group) -> usize {
    let key = group.key.as_ref().map_or(0, |k| 2 * k.as_ref().len());
    let accumulators: usize = group.accumulators.iter().map(|a| a.size()).sum();
    let emitted: usize = group
        .emitted
        .iter()
        .flatten()
        .map(datafusion::scalar::ScalarValue::size)
        .sum();
    GROUP_OVERHEAD + key + accumulators + emitted
}
