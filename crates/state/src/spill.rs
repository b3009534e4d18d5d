//! Operator state that does not fit in memory: a [`SpillStore`] per operator subtask.
//!
//! An operator keeps its hot keys in memory, as objects it can update cheaply (DataFusion
//! accumulators, say), and moves the rest, encoded, into its spill store; a key it needs
//! again is read back. The store is derived state like the view results in `state/`: the
//! checkpoint, not this directory, is what survives a crash, so every store starts empty
//! and [`OperatorStateDirs::open`] empties the directory at every start.
//!
//! **One RocksDB per operator subtask** (Flink's layout) rather than a column family in
//! the shared state database: a subtask's store is then one directory with its own SST
//! files, which is what a RocksDB checkpoint of that subtask alone (hard links, for
//! incremental upload) needs. Each database gets a small block cache and write buffer
//! ([`OperatorStateDirs::options`]); the operator's own memory budget is the cache that
//! matters.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sluice_common::error::{Result, SluiceError};

use crate::{MemoryStateBackend, RocksDbOptions, RocksDbStateBackend, StateBackend, StateTable};

/// The table every spill store keeps its entries in.
const TABLE: &str = "spill";

/// Where the operator subtasks of one process keep their spill stores: one directory
/// per store under a root that is emptied when opened.
#[derive(Debug)]
pub struct OperatorStateDirs {
    root: PathBuf,
    options: RocksDbOptions,
    /// Bytes of keyed state an operator subtask keeps in memory before spilling.
    memory_budget: usize,
    /// Numbers stores, so a job redeployed while its previous run's subtasks are still
    /// closing never shares a directory with them.
    next: AtomicU64,
}

impl OperatorStateDirs {
    /// Opens `root`, deleting whatever a previous process left there. `memory_budget` is
    /// what each operator subtask may keep in memory (see [`SpillStore::memory_budget`]).
    ///
    /// Fails with an I/O error (58030) naming `root` when it cannot be emptied or created.
    pub fn open(root: &Path, memory_budget: usize) -> Result<Arc<Self>> {
        if root.exists() {
            std::fs::remove_dir_all(root).map_err(|e| {
                SluiceError::io(
                    format!("emptying the operator state directory {}", root.display()),
                    e,
                )
            })?;
        }
        std::fs::create_dir_all(root).map_err(|e| {
            SluiceError::io(
                format!("creating the operator state directory {}", root.display()),
                e,
            )
        })?;
        Ok(Arc::new(OperatorStateDirs {
            root: root.to_path_buf(),
            options: Self::options(),
            memory_budget,
            next: AtomicU64::new(0),
        }))
    }

    /// RocksDB's own memory per store: the operator caches its hot keys itself, so the
    /// block cache only has to hold index blocks and the keys being read back.
    pub fn options() -> RocksDbOptions {
        RocksDbOptions {
            block_cache_bytes: 8 << 20,
            write_buffer_bytes: 8 << 20,
        }
    }

    /// A new, empty store for the operator subtask `name`, in a directory of its own
    /// (named after it, with characters other than ASCII letters, digits, `-` and `_`
    /// replaced) that is deleted when the store is dropped.
    pub fn open_store(&self, name: &str) -> Result<SpillStore> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name: String = name
            .chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c,
                _ => '_',
            })
            .collect();
        let dir = self.root.join(format!("{n}-{name}"));
        let backend = RocksDbStateBackend::open(&dir, self.options)?;
        let table = backend.table(TABLE);
        Ok(SpillStore {
            table,
            memory_budget: self.memory_budget,
            db: Some(OwnedDb { backend, dir }),
        })
    }
}

/// One operator subtask's spilled entries, keyed like every [`StateTable`] by key group
/// and key.
pub struct SpillStore {
    table: Arc<dyn StateTable>,
    memory_budget: usize,
    /// The RocksDB database and its directory, removed on drop (`None` in memory).
    db: Option<OwnedDb>,
}

struct OwnedDb {
    backend: RocksDbStateBackend,
    dir: PathBuf,
}

impl std::fmt::Debug for SpillStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpillStore")
            .field("memory_budget", &self.memory_budget)
            .field("dir", &self.db.as_ref().map(|db| &db.dir))
            .finish()
    }
}

impl SpillStore {
    /// A store in memory, spilling after `memory_budget` bytes: for tests of operators.
    pub fn in_memory(memory_budget: usize) -> Self {
        SpillStore {
            table: MemoryStateBackend::new().table(TABLE),
            memory_budget,
            db: None,
        }
    }

    pub fn table(&self) -> &Arc<dyn StateTable> {
        &self.table
    }

    /// Bytes of state the operator keeps in memory; beyond them it spills its least
    /// recently used keys here.
    pub fn memory_budget(&self) -> usize {
        self.memory_budget
    }

    /// The directory of the store's database (`None` for a store in memory).
    pub fn dir(&self) -> Option<&Path> {
        self.db.as_ref().map(|db| db.backend.dir())
    }
}

impl Drop for SpillStore {
    fn drop(&mut self) {
        // The table handle and the database close before their directory goes.
        self.table = MemoryStateBackend::new().table(TABLE);
        if let Some(OwnedDb { backend, dir }) = self.db.take() {
            drop(backend);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e,
                    "could not delete a closed operator state directory; the next start does");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StateWrite;
    use crate::test_support::TempDir;

    #[test]
    fn a_store_keeps_entries_on_disk_until_dropped_and_a_restart_empties_the_root() {
        let root = TempDir::new("spill");
        let dirs = OperatorStateDirs::open(&root.0, 1 << 20).unwrap();
        let store = dirs.open_store("7-n2-s0").unwrap();
        store.table().write(vec![StateWrite::Put {
            key_group: 3,
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        }]);
        assert_eq!(store.table().get(3, b"k"), Some(b"v".to_vec()));
        let dir = store.dir().unwrap().to_path_buf();
        assert!(dir.join("CURRENT").exists(), "{dir:?} holds a database");

        let other = dirs.open_store("7-n2-s0").unwrap();
        assert_ne!(
            other.dir(),
            store.dir(),
            "each store has a directory of its own"
        );
        assert!(other.table().is_empty());
        drop(store);
        assert!(!dir.exists(), "a dropped store deletes its directory");

        let leftover = other.dir().unwrap().to_path_buf();
        std::mem::forget(other); // as if the process died holding it
        let dirs = OperatorStateDirs::open(&root.0, 1 << 20).unwrap();
        assert!(
            !leftover.exists(),
            "opening the root deletes what a dead process left"
        );
        assert_eq!(dirs.memory_budget, 1 << 20);
    }
}
