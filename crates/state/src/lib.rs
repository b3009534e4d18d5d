//! State: keyed state behind the [`StateBackend`] trait.
//!
//! Operators never hold durable data themselves: they read and write through a
//! [`StateTable`], which addresses every entry by `(key group, key)`. Key groups are the
//! unit of redistribution: when a job's parallelism changes, whole key groups move
//! between subtasks, so every key must be stored under the key group its hash selects
//! ([`key_group_of`]).
//!
//! Durable state goes through the [`checkpoint::CheckpointStore`]: each operator's
//! snapshot ([`snapshot::encode_entries`]) is uploaded when its barrier aligns, and the
//! coordinator commits the checkpoint's metadata last.
//!
//! This crate depends only on `common`; it knows nothing of operators or SQL.

pub mod checkpoint;
#[cfg(test)]
mod conformance;
mod memory;
pub mod object_url;
mod rocksdb;
pub mod snapshot;
pub mod spill;
#[cfg(test)]
mod test_support;
pub mod wal;

pub use crate::rocksdb::{RocksDbOptions, RocksDbStateBackend};
pub use memory::MemoryStateBackend;
pub use spill::{OperatorStateDirs, SpillStore};

use std::sync::Arc;

/// Number of key groups a keyed edge hashes into (Flink's "max parallelism"). A job's
/// parallelism can never exceed it.
pub const DEFAULT_KEY_GROUPS: u16 = 128;

/// The key group of a key hash, for `key_groups` groups.
pub fn key_group_of(hash: u64, key_groups: u16) -> u16 {
    (hash % key_groups as u64) as u16
}

/// The subtask that owns `key_group` when `key_groups` groups are spread over
/// `parallelism` subtasks in contiguous ranges (Flink's assignment; ranges keep
/// redistribution cheap).
pub fn subtask_of_key_group(key_group: u16, key_groups: u16, parallelism: usize) -> usize {
    debug_assert!(parallelism >= 1 && parallelism <= key_groups as usize);
    key_group as usize * parallelism / key_groups as usize
}

/// Identifies one state table, e.g. one materialized view's result or one operator's
/// keyed state. Namespaces of a dropped object are freed with [`StateBackend::drop_table`].
pub type StateTableId = String;

/// A change to apply atomically to a [`StateTable`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateWrite {
    Put {
        key_group: u16,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key_group: u16,
        key: Vec<u8>,
    },
}

/// Where operators keep keyed state. Implementations: [`MemoryStateBackend`] (tests and
/// small jobs) and [`RocksDbStateBackend`] (state larger than memory).
pub trait StateBackend: Send + Sync + std::fmt::Debug {
    /// Opens (creating if needed) the state table `id`.
    fn table(&self, id: &str) -> Arc<dyn StateTable>;
    /// Drops the state table `id` and frees its memory or disk. Handles that are still
    /// open keep working on the detached data until they are dropped.
    fn drop_table(&self, id: &str);
    /// Ids of every state table, for inspection.
    fn table_ids(&self) -> Vec<StateTableId>;
}

/// One keyed state table. Reads see every write made before them through any handle.
pub trait StateTable: Send + Sync {
    fn get(&self, key_group: u16, key: &[u8]) -> Option<Vec<u8>>;
    /// Applies `writes` in order, as one atomic step.
    fn write(&self, writes: Vec<StateWrite>);
    /// Every entry of the given key groups (all when `None`), in key order within a group.
    fn scan(&self, key_groups: Option<&[u16]>) -> Vec<(u16, Vec<u8>, Vec<u8>)>;
    /// The entries [`Self::scan`] returns, handed to `f` at most `chunk` at a time, for
    /// copying more entries than fit in memory. Stores in memory hand over one scan.
    fn scan_chunks(
        &self,
        key_groups: Option<&[u16]>,
        chunk: usize,
        f: &mut dyn FnMut(Vec<snapshot::SnapshotEntry>),
    ) {
        let mut entries = self.scan(key_groups);
        while !entries.is_empty() {
            let rest = entries.split_off(chunk.min(entries.len()));
            f(std::mem::replace(&mut entries, rest));
        }
    }
    /// Number of entries, for tests and metrics.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
