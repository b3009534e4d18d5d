//! Keyed state beyond an operator's memory budget, in its [`SpillStore`], for operators
//! whose state is a map from a key to a value of rows: a join's buckets (one map per
//! side: its rows of one join key), a Top-N's partitions.
//!
//! The store holds every value as of the last checkpoint barrier, encoded as its
//! checkpoint entry is ([`entry_key`] → [`SpillValue::encode`]); memory caches
//! the recently used values, some changed since that barrier (dirty). Before a batch,
//! [`KeyedSpill::load`] reads back the values of its keys that the store holds and
//! memory does not, in every space, so the operator itself only ever sees memory. After
//! it, [`KeyedSpill::account`] deletes the values that emptied from the store and,
//! when the cached values' estimated size passes the budget, drops the least recently
//! used from memory, dirty ones written first, until a quarter of the budget is free.
//! At a barrier [`KeyedSpill::flush`] writes the dirty values, so the store alone is the
//! operator's state: a RocksDB store is then checkpointed as files
//! ([`SpillStore::checkpoint`], uploaded incrementally), a store in memory (tests) as
//! its entries.
//!
//! A value is one entry, written whole: a key with very many rows (a hot auction in
//! Nexmark) is rewritten in full whenever it changed between two barriers. Flink's
//! RocksDB map state writes a row each; our [`sluice_state::StateTable`] has no prefix
//! scan to read such rows back.

use std::collections::{HashMap, HashSet};

use arrow::array::ArrayRef;
use arrow::row::{RowConverter, Rows};
use sluice_common::error::{Result, SluiceError};
use sluice_state::spill::{WRITE_CHUNK, least_recently_used};
use sluice_state::{DEFAULT_KEY_GROUPS, SpillStore, StateWrite};

use crate::keygroup::key_groups_of_columns;
use crate::operators::StateEntry;
use crate::operators::encoding::key_groups_of_rows;

/// Estimated bytes a value holds besides its rows: the key's two copies (state and
/// cache), the maps' entries.
const VALUE_OVERHEAD: usize = 128;
/// Estimated bytes per held row besides its encoding: its box, count and map slot.
const ROW_OVERHEAD: usize = 40;

/// A value of spilled keyed state.
pub(crate) trait SpillValue: Sized {
    fn encode(&self) -> Vec<u8>;
    /// `None` when `bytes` is malformed.
    fn decode(bytes: &[u8]) -> Option<Self>;
    /// Distinct rows held, for the estimated size.
    fn rows(&self) -> usize;
}

/// One operator's keyed state: per key space, key → value.
pub(crate) type KeyedMaps<V> = [HashMap<Box<[u8]>, V>];

/// A key in one space.
type SpaceKey = (usize, Box<[u8]>);

/// A value in memory.
struct Cached {
    key_group: u16,
    /// Estimated bytes.
    bytes: usize,
    /// The batch that last read or changed it, for least-recently-used eviction.
    used: u64,
    /// Changed since the last barrier (or eviction), so the store's copy is stale.
    dirty: bool,
    /// The store holds a copy (stale when dirty), which must go if the value empties.
    stored: bool,
}

pub(crate) struct KeyedSpill {
    pub(crate) store: SpillStore,
    /// What a stored key starts with (see [`entry_key`]).
    prefix: &'static [u8],
    /// Per space: the keys in memory. Between batches these are exactly the keys of
    /// that space's map.
    cached: Vec<HashMap<Box<[u8]>, Cached>>,
    /// Their estimated bytes.
    total: usize,
    tick: u64,
    /// Per space: estimated bytes of a row in its encoding (a running average).
    row_bytes: Vec<usize>,
    /// The distinct keys of the batch being processed, with their key groups.
    batch_keys: Vec<(u16, Box<[u8]>)>,
}

impl KeyedSpill {
    /// Spills `spaces` maps into `store`, under keys made by [`entry_key`] with
    /// `prefix`.
    pub(crate) fn new(store: SpillStore, prefix: &'static [u8], spaces: usize) -> Self {
        KeyedSpill {
            store,
            prefix,
            cached: (0..spaces).map(|_| HashMap::new()).collect(),
            total: 0,
            tick: 0,
            row_bytes: vec![0; spaces],
            batch_keys: Vec::new(),
        }
    }

    /// The store (and snapshot) key of `space`'s value for `key`.
    fn entry_key(&self, space: usize, key: &[u8]) -> Vec<u8> {
        entry_key(self.prefix, space, key)
    }

    /// Before a batch of space `space` whose rows `rows` have the keys `keys` (with
    /// their key columns `key_columns`): reads back into `maps` the values of those keys
    /// that the store holds and memory does not, in every space, and notes the keys for
    /// [`Self::account`].
    pub(crate) fn load<V: SpillValue>(
        &mut self,
        maps: &mut KeyedMaps<V>,
        key_columns: &[ArrayRef],
        keys: &Rows,
        space: usize,
        rows: &Rows,
    ) -> Result<()> {
        let row_bytes = rows.size().checked_div(rows.num_rows()).unwrap_or(0);
        self.row_bytes[space] = match self.row_bytes[space] {
            0 => row_bytes,
            known => (7 * known + row_bytes) / 8,
        };
        let key_groups = key_groups_of_columns(key_columns, keys.num_rows(), DEFAULT_KEY_GROUPS)?;
        self.load_keys(maps, keys.iter().map(|key| key.data()).zip(key_groups))
    }

    /// Before changing the values of `keys` (in `converter`'s row format) other than by
    /// a batch (closing windows, forgetting stale or expired state): reads back into
    /// `maps` those that the store holds and memory does not, in every space, and notes
    /// the keys for [`Self::account`].
    pub(crate) fn load_encoded<V: SpillValue>(
        &mut self,
        maps: &mut KeyedMaps<V>,
        converter: &RowConverter,
        keys: &[&[u8]],
    ) -> Result<()> {
        let key_groups = key_groups_of_rows(converter, keys)?;
        self.load_keys(maps, keys.iter().copied().zip(key_groups))
    }

    /// [`Self::load`] and [`Self::load_encoded`] for `keys`, each with its key group.
    fn load_keys<'k, V: SpillValue>(
        &mut self,
        maps: &mut KeyedMaps<V>,
        keys: impl IntoIterator<Item = (&'k [u8], u16)>,
    ) -> Result<()> {
        let mut seen = HashSet::new();
        self.batch_keys.clear();
        for (key, key_group) in keys {
            if !seen.insert(key) {
                continue;
            }
            self.batch_keys.push((key_group, key.into()));
            if !self.store.holds_entries() {
                continue;
            }
            for (s, map) in maps.iter_mut().enumerate() {
                if self.cached[s].contains_key(key) {
                    continue;
                }
                let stored = self.store.table().get(key_group, &self.entry_key(s, key));
                let Some(value) = stored else { continue };
                let decoded = V::decode(&value).ok_or_else(|| {
                    SluiceError::corrupted("an operator's spilled state entry is malformed")
                })?;
                let bytes =
                    VALUE_OVERHEAD + 2 * key.len() + value.len() + decoded.rows() * ROW_OVERHEAD;
                self.total += bytes;
                self.cached[s].insert(
                    key.into(),
                    Cached {
                        key_group,
                        bytes,
                        used: self.tick,
                        dirty: false,
                        stored: true,
                    },
                );
                map.insert(key.into(), decoded);
            }
        }
        Ok(())
    }

    /// After the batch [`Self::load`] (or the change [`Self::load_encoded`]) saw, which
    /// changed space `changed` of `maps` and only read the others: accounts for the
    /// values its keys read and changed, deletes
    /// those that emptied from the store, and evicts the least recently used values
    /// when over budget.
    pub(crate) fn account<V: SpillValue>(&mut self, maps: &mut KeyedMaps<V>, changed: usize) {
        self.tick += 1;
        let tick = self.tick;
        let mut deletes = Vec::new();
        for (key_group, key) in std::mem::take(&mut self.batch_keys) {
            for (s, cached) in self.cached.iter_mut().enumerate() {
                if s != changed
                    && let Some(read) = cached.get_mut(&key)
                {
                    read.used = tick;
                }
            }
            match maps[changed].get(&key) {
                Some(value) => {
                    let bytes = VALUE_OVERHEAD
                        + 2 * key.len()
                        + value.rows() * (self.row_bytes[changed] + ROW_OVERHEAD);
                    let cached = self.cached[changed].entry(key).or_insert(Cached {
                        key_group,
                        bytes: 0,
                        used: tick,
                        dirty: true,
                        stored: false,
                    });
                    self.total = self.total - cached.bytes + bytes;
                    cached.bytes = bytes;
                    cached.used = tick;
                    cached.dirty = true;
                }
                None => {
                    if let Some(gone) = self.cached[changed].remove(&key) {
                        self.total -= gone.bytes;
                        if gone.stored {
                            deletes.push(StateWrite::Delete {
                                key_group,
                                key: self.entry_key(changed, &key),
                            });
                        }
                    }
                }
            }
        }
        self.store.table().write(deletes);
        let budget = self.store.memory_budget();
        if self.total <= budget {
            return;
        }
        let cached = self.listed(|_| true);
        let evict = least_recently_used(cached, self.total, budget);
        for chunk in evict.chunks(WRITE_CHUNK) {
            let mut puts = Vec::new();
            for ((s, key), bytes) in chunk {
                let cached = self.cached[*s].remove(key).expect("listed above");
                let value = maps[*s].remove(key).expect("cached values are held");
                self.total -= bytes;
                if cached.dirty {
                    puts.push((cached.key_group, self.entry_key(*s, key), value.encode()));
                }
            }
            self.store.put(puts);
        }
    }

    /// Drops the values of `keys` (in `converter`'s row format) in every space, from
    /// `maps` and the store, without reading them: state that is over (a closed
    /// window's).
    pub(crate) fn forget<V>(
        &mut self,
        maps: &mut KeyedMaps<V>,
        converter: &RowConverter,
        keys: &[Box<[u8]>],
    ) -> Result<()> {
        for chunk in keys.chunks(WRITE_CHUNK) {
            let chunk: Vec<&[u8]> = chunk.iter().map(AsRef::as_ref).collect();
            let key_groups = key_groups_of_rows(converter, &chunk)?;
            self.forget_keys(maps, chunk.into_iter().zip(key_groups));
        }
        Ok(())
    }

    /// [`Self::forget`] for `keys`, each with its key group.
    fn forget_keys<'k, V>(
        &mut self,
        maps: &mut KeyedMaps<V>,
        keys: impl IntoIterator<Item = (&'k [u8], u16)>,
    ) {
        let mut deletes = Vec::new();
        for (key, key_group) in keys {
            for (s, map) in maps.iter_mut().enumerate() {
                map.remove(key);
                let cached = self.cached[s].remove(key);
                if let Some(gone) = &cached {
                    self.total -= gone.bytes;
                }
                // A value not in memory may be in the store, once it holds entries.
                let stored = match &cached {
                    Some(gone) => gone.stored,
                    None => self.store.holds_entries(),
                };
                if stored {
                    deletes.push(StateWrite::Delete {
                        key_group,
                        key: self.entry_key(s, key),
                    });
                }
            }
            if deletes.len() >= WRITE_CHUNK {
                self.store.table().write(std::mem::take(&mut deletes));
            }
        }
        self.store.table().write(deletes);
    }

    /// The values in memory that `which` selects: (space, key), last use and bytes.
    fn listed(&self, which: impl Fn(&Cached) -> bool) -> Vec<(SpaceKey, u64, usize)> {
        let mut listed = Vec::new();
        for (s, cached) in self.cached.iter().enumerate() {
            for (key, c) in cached.iter().filter(|(_, c)| which(c)) {
                listed.push(((s, key.clone()), c.used, c.bytes));
            }
        }
        listed
    }

    /// Writes the dirty values of `maps` to the store, which then holds the whole state
    /// (at a barrier).
    pub(crate) fn flush<V: SpillValue>(&mut self, maps: &KeyedMaps<V>) {
        let dirty = self.listed(|c| c.dirty);
        for chunk in dirty.chunks(WRITE_CHUNK) {
            let mut puts = Vec::with_capacity(chunk.len());
            for ((s, key), _, _) in chunk {
                let cached = self.cached[*s].get_mut(key).expect("listed above");
                cached.dirty = false;
                cached.stored = true;
                let key_group = cached.key_group;
                puts.push((key_group, self.entry_key(*s, key), maps[*s][key].encode()));
            }
            self.store.put(puts);
        }
    }
}

/// Every value of `maps` as a snapshot entry (the form the store holds it in): under
/// [`entry_key`] with `prefix`, in the key group `key_groups` gives its key.
pub(crate) fn value_entries<V: SpillValue>(
    prefix: &[u8],
    maps: &KeyedMaps<V>,
    key_groups: impl Fn(&[&[u8]]) -> Result<Vec<u16>>,
) -> Result<Vec<StateEntry>> {
    let mut entries = Vec::new();
    for (space, map) in maps.iter().enumerate() {
        let keys: Vec<&[u8]> = map.keys().map(AsRef::as_ref).collect();
        if keys.is_empty() {
            continue;
        }
        for (key, group) in keys.iter().zip(key_groups(&keys)?) {
            entries.push((group, entry_key(prefix, space, key), map[*key].encode()));
        }
    }
    Ok(entries)
}

/// The store (and snapshot) key of `space`'s value for `key`: `prefix` with `space`
/// added to its last byte, then `key`.
pub(crate) fn entry_key(prefix: &[u8], space: usize, key: &[u8]) -> Vec<u8> {
    let mut entry_key = Vec::with_capacity(prefix.len() + key.len());
    entry_key.extend_from_slice(prefix);
    if let Some(last) = entry_key.last_mut() {
        *last = u8::try_from(space)
            .ok()
            .and_then(|space| last.checked_add(space))
            .expect("a key prefix leaves room for its spaces");
    }
    entry_key.extend_from_slice(key);
    entry_key
}

/// The space (of `spaces`) and key of the store (or snapshot) key `entry_key` made by
/// [`entry_key`] with `prefix`, if it is one.
pub(crate) fn split_entry_key<'a>(
    prefix: &[u8],
    spaces: usize,
    entry_key: &'a [u8],
) -> Option<(usize, &'a [u8])> {
    let (&last, head) = prefix.split_last()?;
    let rest = entry_key.strip_prefix(head)?;
    let (&tagged, key) = rest.split_first()?;
    let space = tagged.checked_sub(last)? as usize;
    (space < spaces).then_some((space, key))
}
