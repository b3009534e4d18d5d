//! Groups beyond an aggregate's memory budget, in its [`SpillStore`].
//!
//! The store holds every group as of the last checkpoint barrier, encoded as its
//! checkpoint entry would be (`snapshot.rs`); memory caches the recently used groups as
//! live DataFusion accumulators, some changed since that barrier (dirty). After each
//! batch, when the cached groups' estimated size (`Accumulator::size`, the key and the
//! last emitted values) passes the budget, the least recently used are dropped from
//! memory, dirty ones written to the store first, until a quarter of the budget is free
//! again (so a full cache does not spill on every batch). A row of a group not in memory
//! reads it back from the store. A group whose last row was retracted is deleted from
//! the store.
//!
//! At a barrier the dirty groups and deletions are written, so the store alone is the
//! operator's state: a RocksDB store is then checkpointed as files
//! ([`SpillStore::checkpoint`], uploaded incrementally), a store in memory (tests) as its
//! entries.
//!
//! Only grouped aggregates without a state TTL spill (its per-slot touch times would
//! dangle). A window aggregate indexes its open windows by group key, so a closing
//! window reads its spilled groups back to emit them, then deletes them.

use std::collections::HashSet;

use arrow::array::ArrayRef;
use arrow::row::{OwnedRow, RowConverter, Rows};
use sluice_common::error::Result;
use sluice_state::spill::{WRITE_CHUNK, least_recently_used};
use sluice_state::{DEFAULT_KEY_GROUPS, SpillStore, StateWrite};

use super::snapshot::group_entry_key;
use super::{AggregateOperator, Group};
use crate::keygroup::key_groups_of_columns;
use crate::operators::encoding::key_groups_of_rows;

/// Fixed bytes per in-memory group besides its key and accumulators: the group itself,
/// its index entry and its slot.
const GROUP_OVERHEAD: usize = std::mem::size_of::<Group>() + 64;

pub(super) struct Spill {
    pub(super) store: SpillStore,
    /// Per slot: estimated bytes of its group (0 for a free slot), and their sum.
    bytes: Vec<usize>,
    total: usize,
    /// Per slot: the batch that last touched it, for least-recently-used eviction.
    used: Vec<u64>,
    tick: u64,
    /// Per slot: changed since the last barrier, so the store's copy is stale.
    dirty: Vec<bool>,
    /// Keys of groups whose last row was retracted since the last barrier.
    deleted: Vec<OwnedRow>,
}

impl Spill {
    pub(super) fn new(store: SpillStore) -> Self {
        Spill {
            store,
            bytes: Vec::new(),
            total: 0,
            used: Vec::new(),
            tick: 0,
            dirty: Vec::new(),
            deleted: Vec::new(),
        }
    }

    /// Deletes the groups whose last row was retracted from the store, before a later
    /// batch could read them back (or a later write of the same key be deleted).
    fn apply_deletions(&mut self, converter: &RowConverter) -> Result<()> {
        if self.deleted.is_empty() {
            return Ok(());
        }
        let deleted = std::mem::take(&mut self.deleted);
        let columns = converter.convert_rows(deleted.iter().map(|k| k.row()))?;
        let key_groups = key_groups_of_columns(&columns, deleted.len(), DEFAULT_KEY_GROUPS)?;
        let deletes = key_groups
            .into_iter()
            .zip(&deleted)
            .map(|(key_group, key)| StateWrite::Delete {
                key_group,
                key: group_entry_key(Some(key.as_ref())),
            })
            .collect();
        self.store.table().write(deletes);
        Ok(())
    }
}

impl AggregateOperator {
    /// Keeps at most `store.memory_budget()` bytes of groups in memory and the rest in
    /// `store` (see the module docs). For grouped aggregates.
    pub fn with_spill(mut self, store: SpillStore) -> Self {
        debug_assert!(!self.is_global());
        self.spill = Some(Spill::new(store));
        self
    }

    /// Groups in the spill store, for tests: O(groups).
    pub fn stored_group_count(&self) -> usize {
        self.spill.as_ref().map_or(0, |s| s.store.table().len())
    }

    /// Reads back from the store the groups of `rows` (keys of one batch, with their
    /// key columns `keys`) that are not in memory, filing each in a slot.
    pub(super) fn unspill(&mut self, keys: &[ArrayRef], rows: &Rows) -> Result<()> {
        if !self.spill.as_ref().is_some_and(|s| s.store.holds_entries()) {
            return Ok(());
        }
        let key_groups = key_groups_of_columns(keys, rows.num_rows(), DEFAULT_KEY_GROUPS)?;
        let keys: Vec<&[u8]> = rows.iter().map(|r| r.data()).collect();
        self.read_back(&keys, &key_groups)
    }

    /// Reads back from the store the groups of `keys` (row format) that are not in
    /// memory: the groups of windows that are closing.
    pub(super) fn unspill_keys(&mut self, keys: &[Box<[u8]>]) -> Result<()> {
        if !self.spill.as_ref().is_some_and(|s| s.store.holds_entries()) {
            return Ok(());
        }
        let missing: Vec<&[u8]> = keys
            .iter()
            .map(AsRef::as_ref)
            .filter(|k| !self.index.contains_key(*k))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let key_groups = key_groups_of_rows(&self.converter, &missing)?;
        self.read_back(&missing, &key_groups)
    }

    /// Reads the groups of `keys` (in `key_groups`) that the store holds and memory
    /// does not into slots.
    fn read_back(&mut self, keys: &[&[u8]], key_groups: &[u16]) -> Result<()> {
        let Some(spill) = &self.spill else {
            return Ok(());
        };
        let mut looked_up = HashSet::new();
        let mut found = Vec::new();
        for (&key, &key_group) in keys.iter().zip(key_groups) {
            if self.index.contains_key(key) || !looked_up.insert(key) {
                continue;
            }
            let entry_key = group_entry_key(Some(key));
            if let Some(value) = spill.store.table().get(key_group, &entry_key) {
                found.push((key_group, entry_key, value));
            }
        }
        for group in self.decode_groups(&found)? {
            self.insert_group(group);
        }
        Ok(())
    }

    /// Accounts for the groups in `touched` (updated, created, read back or dropped by
    /// the last batch) and evicts the least recently used groups when over budget.
    pub(super) fn spill_over_budget(&mut self, touched: &[usize]) -> Result<()> {
        let Some(spill) = &mut self.spill else {
            return Ok(());
        };
        spill.tick += 1;
        spill.apply_deletions(&self.converter)?;
        if spill.bytes.len() < self.groups.len() {
            spill.bytes.resize(self.groups.len(), 0);
            spill.used.resize(self.groups.len(), 0);
            spill.dirty.resize(self.groups.len(), false);
        }
        for &slot in touched {
            let size = self.groups[slot].as_ref().map_or(0, group_size);
            spill.total = spill.total - spill.bytes[slot] + size;
            spill.bytes[slot] = size;
            spill.used[slot] = spill.tick;
            spill.dirty[slot] = size > 0;
        }
        let budget = spill.store.memory_budget();
        if spill.total <= budget {
            return Ok(());
        }
        let live = (0..self.groups.len())
            .filter(|&s| self.groups[s].is_some())
            .map(|s| (s, spill.used[s], spill.bytes[s]))
            .collect();
        let evict = least_recently_used(live, spill.total, budget);
        let dirty: Vec<usize> = evict
            .iter()
            .map(|&(s, _)| s)
            .filter(|&s| spill.dirty[s])
            .collect();
        self.write_groups(&dirty)?;
        let spill = self.spill.as_mut().expect("checked above");
        for (slot, _) in evict {
            spill.total -= spill.bytes[slot];
            spill.bytes[slot] = 0;
            spill.dirty[slot] = false;
            let group = self.groups[slot].take().expect("live slot");
            if let Some(key) = &group.key {
                self.index.remove(key.as_ref());
            }
            self.free_slots.push(slot);
        }
        Ok(())
    }

    /// Writes the groups in `slots` to the store, a chunk at a time, so neither their
    /// encoding nor RocksDB's write batch holds all of them at once.
    fn write_groups(&mut self, slots: &[usize]) -> Result<()> {
        for chunk in slots.chunks(WRITE_CHUNK) {
            let entries = self.encode_groups(chunk)?;
            self.spill.as_mut().expect("spilling").store.put(entries);
        }
        Ok(())
    }

    /// Notes that the group with `key` is gone: the store's copy must go too.
    pub(super) fn spill_forget(&mut self, key: Option<OwnedRow>) {
        if let (Some(spill), Some(key)) = (&mut self.spill, key)
            && spill.store.holds_entries()
        {
            spill.deleted.push(key);
        }
    }

    /// Writes the dirty groups and deletions to the store, which then holds the whole
    /// state (at a barrier).
    pub(super) fn spill_flush(&mut self) -> Result<()> {
        let Some(spill) = &mut self.spill else {
            return Ok(());
        };
        let dirty: Vec<usize> = (0..spill.dirty.len())
            .filter(|&s| spill.dirty[s] && self.groups[s].is_some())
            .collect();
        spill.apply_deletions(&self.converter)?;
        self.write_groups(&dirty)?;
        let spill = self.spill.as_mut().expect("checked above");
        spill.dirty.iter_mut().for_each(|d| *d = false);
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
