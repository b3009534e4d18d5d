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
//!
//! **Incremental checkpoints.** At a barrier the operator writes the groups it changed
//! since the last one into its store and takes a [`DbCheckpoint`]: RocksDB's checkpoint
//! (the memtable flushed, every SST file hard-linked into a directory of its own). SST
//! files never change once written, so the checkpointer uploads only those it has not
//! uploaded for this store before and references the others where an earlier checkpoint
//! put them; the small files that describe the database (`MANIFEST-*`, `CURRENT`,
//! `OPTIONS-*`) go every time. A restore opens the downloaded files as a [`RestoredDb`], from
//! which each operator subtask copies the entries of its key groups, so state restores at
//! any parallelism like every operator's.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sluice_common::error::{Result, SluiceError};

use crate::snapshot::SnapshotEntry;
use crate::{
    MemoryStateBackend, RocksDbOptions, RocksDbStateBackend, StateBackend, StateTable, StateWrite,
};

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

    /// A new directory name for one restore to write the RocksDB checkpoints it
    /// downloads in (see [`RestoredDb`]): restores of several jobs at once never share
    /// one.
    pub fn scratch_dir(&self) -> PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.root.join("restore").join(n.to_string())
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
            holds_entries: false,
            db: Some(OwnedDb { backend, dir }),
        })
    }
}

/// Entries an operator encodes and writes to its store in one go when it spills or
/// flushes many keys, so neither their encoding nor RocksDB's write batch holds all of
/// them at once.
pub const WRITE_CHUNK: usize = 4096;

/// The keys to evict from an operator's memory, least recently used first, so that what
/// stays there is at most three quarters of `budget` (evicting down to the budget alone
/// would spill again on the next batch). `cached` lists each key in memory with the
/// tick of the batch that last used it and its estimated bytes, which sum to `total`.
pub fn least_recently_used<K>(
    mut cached: Vec<(K, u64, usize)>,
    total: usize,
    budget: usize,
) -> Vec<(K, usize)> {
    cached.sort_unstable_by_key(|&(_, used, _)| used);
    let target = budget - budget / 4;
    let mut left = total;
    let mut evict = Vec::new();
    for (key, _, bytes) in cached {
        if left <= target {
            break;
        }
        left = left.saturating_sub(bytes);
        evict.push((key, bytes));
    }
    evict
}

/// One operator subtask's spilled entries, keyed like every [`StateTable`] by key group
/// and key.
pub struct SpillStore {
    table: Arc<dyn StateTable>,
    memory_budget: usize,
    /// Whether anything was ever put (else an operator skips looking keys up).
    holds_entries: bool,
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
            holds_entries: false,
            db: None,
        }
    }

    /// For reads, and writes that only delete: [`Self::put`] adds entries.
    pub fn table(&self) -> &Arc<dyn StateTable> {
        &self.table
    }

    /// Puts `entries` into the store, in one write.
    pub fn put(&mut self, entries: Vec<SnapshotEntry>) {
        if entries.is_empty() {
            return;
        }
        self.holds_entries = true;
        let puts = entries
            .into_iter()
            .map(|(key_group, key, value)| StateWrite::Put {
                key_group,
                key,
                value,
            });
        self.table.write(puts.collect());
    }

    /// Whether the store may hold any entry: false until the first [`Self::put`], so an
    /// operator that never spilled does not look keys up.
    pub fn holds_entries(&self) -> bool {
        self.holds_entries
    }

    /// Every entry of the store.
    pub fn entries(&self) -> Vec<SnapshotEntry> {
        self.table.scan(None)
    }

    /// Whether the store is a RocksDB database, whose snapshots are its files rather
    /// than its entries.
    pub fn on_disk(&self) -> bool {
        self.db.is_some()
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

    /// A RocksDB checkpoint of the store as it is now (see the module docs); `None` for
    /// a store in memory, whose entries a snapshot lists instead.
    ///
    /// Fails with an I/O error (58030) naming the directories.
    pub fn checkpoint(&self) -> Result<Option<DbCheckpoint>> {
        let Some(db) = &self.db else {
            return Ok(None);
        };
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let mut name = db.dir.as_os_str().to_owned();
        name.push(format!(".chk-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
        let dir = PathBuf::from(name);
        db.backend.checkpoint_to(&dir)?;
        // Built before listing, so its directory goes if the listing fails.
        let mut guard = DbCheckpoint {
            store: db.dir.display().to_string(),
            dir,
            files: Vec::new(),
        };
        let listing = std::fs::read_dir(&guard.dir)
            .map_err(|e| SluiceError::io(format!("listing {}", guard.dir.display()), e))?;
        for entry in listing {
            let entry = entry
                .map_err(|e| SluiceError::io(format!("listing {}", guard.dir.display()), e))?;
            guard
                .files
                .push(entry.file_name().to_string_lossy().into_owned());
        }
        guard.files.sort();
        Ok(Some(guard))
    }
}

/// A RocksDB checkpoint of one [`SpillStore`], in a local directory deleted on drop
/// (once uploaded).
#[derive(Debug)]
pub struct DbCheckpoint {
    /// Identifies the store within this process: SST files of one store with the same
    /// name hold the same bytes.
    pub store: String,
    pub dir: PathBuf,
    /// The files in `dir`, by name.
    pub files: Vec<String>,
}

impl DbCheckpoint {
    /// Whether file `name` never changes once written (an SST file), so an upload of it
    /// from an earlier checkpoint of the same store can be referenced instead.
    pub fn is_immutable(name: &str) -> bool {
        name.ends_with(".sst")
    }
}

impl Drop for DbCheckpoint {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), error = %e,
                "could not delete an uploaded RocksDB checkpoint; the next start does");
        }
    }
}

/// A RocksDB checkpoint of a [`SpillStore`] being restored: its files written to a
/// scratch directory and opened there, read by the operator subtasks that restore its
/// entries (a chunk at a time, [`StateTable::scan_chunks`]), and deleted on drop.
pub struct RestoredDb {
    // Fields drop in order: the table and database close before their directory goes.
    table: Arc<dyn StateTable>,
    _backend: RocksDbStateBackend,
    dir: ScratchDir,
}

impl std::fmt::Debug for RestoredDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoredDb")
            .field("dir", &self.dir.0)
            .finish()
    }
}

impl RestoredDb {
    /// Writes the checkpoint files (name, contents) `files` to a new directory under
    /// `scratch` and opens them. The directory is deleted when the result is dropped,
    /// and `scratch` too if that leaves it empty.
    ///
    /// Fails with an I/O error (58030) when the files cannot be written or RocksDB cannot
    /// open them (they were verified by checksum, so that means a bug or a full disk).
    pub fn open<'a>(
        scratch: &Path,
        files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<RestoredDb> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = ScratchDir(
            scratch.join(format!(
                "sluice-restore-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            )),
            Some(scratch.to_path_buf()),
        );
        std::fs::create_dir_all(&dir.0)
            .map_err(|e| SluiceError::io(format!("creating {}", dir.0.display()), e))?;
        for (name, bytes) in files {
            let path = dir.0.join(name);
            std::fs::write(&path, bytes)
                .map_err(|e| SluiceError::io(format!("writing {}", path.display()), e))?;
        }
        Self::open_dir(dir)
    }

    /// Opens the checkpoint files already downloaded into directory `dir` under
    /// `scratch`; `dir` is deleted when the result is dropped (or this fails), then its
    /// parents up to `scratch` that that leaves empty.
    ///
    /// Fails with an I/O error (58030) when RocksDB cannot open them.
    pub fn open_in_place(scratch: &Path, dir: PathBuf) -> Result<RestoredDb> {
        Self::open_dir(ScratchDir(dir, Some(scratch.to_path_buf())))
    }

    fn open_dir(dir: ScratchDir) -> Result<RestoredDb> {
        let backend = RocksDbStateBackend::open(&dir.0, OperatorStateDirs::options())?;
        Ok(RestoredDb {
            table: backend.table(TABLE),
            _backend: backend,
            dir,
        })
    }

    /// The store's entries. A spill store holds keyed entries only (none
    /// [`OPERATOR_WIDE`](crate::snapshot::OPERATOR_WIDE)), so a subtask restores its
    /// share by scanning its key groups.
    pub fn table(&self) -> &Arc<dyn StateTable> {
        &self.table
    }
}

/// Removes a directory on drop, whatever happened in between.
/// Then its parent directories that are left empty, up to and including the scratch
/// root (`None`: none).
struct ScratchDir(PathBuf, Option<PathBuf>);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let Some(root) = &self.1 else { return };
        let mut parent = self.0.parent();
        // `remove_dir` removes only empty directories: others' downloads stay.
        while let Some(dir) = parent.filter(|p| p.starts_with(root)) {
            if std::fs::remove_dir(dir).is_err() {
                break;
            }
            parent = dir.parent();
        }
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

    #[test]
    fn eviction_takes_the_least_recently_used_until_a_quarter_of_the_budget_is_free() {
        // (key, last used, bytes): 100 bytes in all, budget 80, so down to 60.
        let cached = vec![("c", 3, 10), ("a", 1, 25), ("d", 4, 40), ("b", 2, 25)];
        assert_eq!(
            least_recently_used(cached.clone(), 100, 80),
            [("a", 25), ("b", 25)]
        );
        assert_eq!(
            least_recently_used(cached.clone(), 100, 0),
            [("a", 25), ("b", 25), ("c", 10), ("d", 40)],
            "no budget: everything goes"
        );
        assert!(least_recently_used(cached, 100, 200).is_empty());
    }

    fn put(key: &str) -> StateWrite {
        StateWrite::Put {
            key_group: 1,
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
        }
    }

    fn read(checkpoint: &DbCheckpoint, scratch: &Path) -> Vec<String> {
        let contents: Vec<(String, Vec<u8>)> = checkpoint
            .files
            .iter()
            .map(|f| (f.clone(), std::fs::read(checkpoint.dir.join(f)).unwrap()))
            .collect();
        let restored = RestoredDb::open(
            scratch,
            contents.iter().map(|(n, b)| (n.as_str(), b.as_slice())),
        )
        .unwrap();
        let dir = restored.dir.0.clone();
        let mut chunks = Vec::new();
        restored
            .table()
            .scan_chunks(None, 1, &mut |chunk| chunks.push(chunk));
        assert!(chunks.iter().all(|c| c.len() == 1), "one entry per chunk");
        drop(restored);
        assert!(
            !dir.exists(),
            "a restored database's directory goes with it"
        );
        chunks
            .into_iter()
            .flatten()
            .map(|(_, k, _)| String::from_utf8(k).unwrap())
            .collect()
    }

    #[test]
    fn a_later_checkpoint_shares_the_sst_files_of_an_earlier_one_and_adds_new_ones() {
        let root = TempDir::new("spill-chk");
        let dirs = OperatorStateDirs::open(&root.0, 0).unwrap();
        let store = dirs.open_store("v-n1-s0").unwrap();
        store.table().write(vec![put("a"), put("b")]);
        let first = store
            .checkpoint()
            .unwrap()
            .expect("a RocksDB store checkpoints");
        store.table().write(vec![
            put("c"),
            StateWrite::Delete {
                key_group: 1,
                key: b"a".to_vec(),
            },
        ]);
        let second = store.checkpoint().unwrap().unwrap();
        assert_eq!(first.store, second.store);
        let ssts = |c: &DbCheckpoint| -> Vec<String> {
            c.files
                .iter()
                .filter(|f| DbCheckpoint::is_immutable(f))
                .cloned()
                .collect()
        };
        let (old, new) = (ssts(&first), ssts(&second));
        assert_eq!(old.len(), 1, "{:?}", first.files);
        assert!(new.contains(&old[0]), "{new:?} keeps {old:?}");
        assert_eq!(new.len(), 2, "the changes are one new file: {new:?}");
        assert!(first.files.iter().any(|f| f == "CURRENT"));

        assert_eq!(read(&first, &root.0), ["a", "b"]);
        assert_eq!(read(&second, &root.0), ["b", "c"]);
        let dir = first.dir.clone();
        drop(first);
        assert!(!dir.exists(), "an uploaded checkpoint's directory goes");
        assert!(SpillStore::in_memory(0).checkpoint().unwrap().is_none());
    }
}
