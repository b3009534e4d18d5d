//! The RocksDB state backend: keyed state larger than memory, on local disk.
//!
//! **One column family per state table.** Dropping a table (`DROP MATERIALIZED VIEW`) is
//! then `drop_cf`, which deletes the table's files at once, where a shared keyspace
//! would leave a range tombstone whose space comes back only after compaction; a scan of
//! one table never steps over another's keys or tombstones; and the list of tables is
//! RocksDB's own list of column families, so nothing extra has to be kept consistent.
//! The cost, a memtable per column family, is bounded by one write-buffer budget for the
//! whole database (`db_write_buffer_size`), and all tables share one block cache.
//!
//! Keys are `key group (u16, big-endian) ++ key`, so RocksDB's bytewise order is the
//! trait's order (key group, then key) and a key group is one contiguous range.
//!
//! A column family is named `table:<generation>:<table id>` (with `%` and NUL in the id
//! escaped as `%25` and `%00`, the only characters RocksDB cannot take). The generation
//! makes a re-created table a new column family while handles of the dropped one are
//! still open: [`StateBackend::drop_table`] forgets the name at once but drops the
//! column family only when its last handle goes, and records the pending drop in the
//! default column family so a restart finishes it.
//!
//! The [`StateTable`] trait cannot report errors, so a RocksDB failure (disk full, I/O
//! error, corruption) panics with what failed and where: the task cannot continue and
//! recovers from its last checkpoint.
//!
//! Writes go through RocksDB's write-ahead log without syncing: the checkpoint, not this
//! directory, is what survives a machine failure.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ::rocksdb::checkpoint::Checkpoint;
use ::rocksdb::{
    BlockBasedOptions, BoundColumnFamily, Cache, ColumnFamilyDescriptor, DBWithThreadMode,
    Direction, IteratorMode, MultiThreaded, Options, ReadOptions, WriteBatch,
};
use parking_lot::Mutex;
use sluice_common::error::{Result, SluiceError};

use crate::snapshot::SnapshotEntry;
use crate::{StateBackend, StateTable, StateTableId, StateWrite};

type Db = DBWithThreadMode<MultiThreaded>;

const CF_PREFIX: &str = "table:";
/// Key prefix, in the default column family, of the column families awaiting a drop.
const PENDING_DROP: &[u8] = b"pending-drop/";

/// Memory limits of a [`RocksDbStateBackend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RocksDbOptions {
    /// Size of the block cache shared by every table (uncompressed blocks read from disk).
    pub block_cache_bytes: usize,
    /// Memtable budget for the whole database; a table's memtable is flushed to disk
    /// when it reaches this size or when all memtables together do.
    pub write_buffer_bytes: usize,
}

impl Default for RocksDbOptions {
    fn default() -> Self {
        RocksDbOptions {
            block_cache_bytes: 256 << 20,
            write_buffer_bytes: 64 << 20,
        }
    }
}

/// Keeps every state table in one RocksDB database in a local directory.
pub struct RocksDbStateBackend {
    shared: Arc<Shared>,
    /// Open tables by id. Holding the handles here keeps each column family alive until
    /// `drop_table` and lets every `table(id)` share one handle.
    tables: Mutex<HashMap<StateTableId, Arc<RocksDbStateTable>>>,
    next_generation: Mutex<u64>,
}

/// What every table handle needs: the database and how to create column families.
struct Shared {
    db: Db,
    dir: PathBuf,
    table_options: Options,
}

impl fmt::Debug for RocksDbStateBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksDbStateBackend")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

impl RocksDbStateBackend {
    /// Opens the database in `dir`, creating the directory and the database if needed,
    /// with the tables it held. Finishes drops a previous process left pending.
    ///
    /// Fails with an I/O error (58030) naming `dir` when the directory cannot be created
    /// or RocksDB cannot open it (including when another process has it open).
    pub fn open(dir: &Path, options: RocksDbOptions) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            SluiceError::io(
                format!("creating RocksDB state directory {}", dir.display()),
                e,
            )
        })?;
        let cache = Cache::new_lru_cache(options.block_cache_bytes).map_err(|e| {
            SluiceError::io(format!("creating the block cache for {}", dir.display()), e)
        })?;
        let mut table_options = Options::default();
        let mut block_options = BlockBasedOptions::default();
        block_options.set_block_cache(&cache);
        // Operators look up keys that are mostly not there (a new join key, a group
        // never spilled): bloom filters, in the SST files and the memtable, answer
        // those without searching.
        block_options.set_bloom_filter(10.0, false);
        table_options.set_block_based_table_factory(&block_options);
        table_options.set_memtable_prefix_bloom_ratio(0.1);
        table_options.set_memtable_whole_key_filtering(true);
        table_options.set_write_buffer_size(options.write_buffer_bytes);

        let mut db_options = table_options.clone();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.set_db_write_buffer_size(options.write_buffer_bytes);
        // Every flush and compaction scans the directory for files nothing references
        // (a directory listing, cheap next to the job), instead of every 6 hours: files a
        // dropped table's last compaction leaves behind go at the next flush.
        db_options.set_delete_obsolete_files_period_micros(0);

        let existing = if dir.join("CURRENT").exists() {
            Db::list_cf(&db_options, dir).map_err(|e| {
                SluiceError::io(
                    format!("listing the tables of RocksDB state in {}", dir.display()),
                    e,
                )
            })?
        } else {
            Vec::new()
        };
        let descriptors = existing
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(name, table_options.clone()));
        let db = Db::open_cf_descriptors(&db_options, dir, descriptors).map_err(|e| {
            SluiceError::io(format!("opening RocksDB state in {}", dir.display()), e)
        })?;
        let shared = Arc::new(Shared {
            db,
            dir: dir.to_path_buf(),
            table_options,
        });

        // The newest generation of each table id is the live one; older ones and those
        // with a pending drop are dropped now.
        let mut live: BTreeMap<String, (u64, String)> = BTreeMap::new();
        let mut doomed = Vec::new();
        let mut next_generation = 0;
        for name in existing.iter().filter(|n| n.starts_with(CF_PREFIX)) {
            let Some((generation, id)) = parse_cf_name(name) else {
                tracing::warn!(column_family = %name, dir = %dir.display(),
                    "ignoring a column family this build did not create");
                continue;
            };
            next_generation = next_generation.max(generation + 1);
            if shared.pending_drop(name)? {
                doomed.push(name.clone());
                continue;
            }
            match live.get(&id) {
                Some((newer, _)) if *newer > generation => doomed.push(name.clone()),
                _ => {
                    if let Some((_, older)) = live.insert(id, (generation, name.clone())) {
                        doomed.push(older);
                    }
                }
            }
        }
        for name in doomed {
            shared.drop_column_family(&name)?;
        }
        let tables = live
            .into_iter()
            .map(|(id, (_, cf))| {
                let table = RocksDbStateTable {
                    shared: shared.clone(),
                    id: id.clone(),
                    cf,
                    dropped: AtomicBool::new(false),
                };
                (id, Arc::new(table))
            })
            .collect();
        Ok(RocksDbStateBackend {
            shared,
            tables: Mutex::new(tables),
            next_generation: Mutex::new(next_generation),
        })
    }

    /// Opens the database in `dir` like [`open`](Self::open) and drops every table it
    /// holds: for state rebuilt from elsewhere at every start. Fails, touching nothing,
    /// while another process has the database open (RocksDB's lock).
    pub fn open_empty(dir: &Path, options: RocksDbOptions) -> Result<Self> {
        let backend = Self::open(dir, options)?;
        let ids: Vec<StateTableId> = backend.tables.lock().keys().cloned().collect();
        for id in &ids {
            backend.drop_table(id);
        }
        Ok(backend)
    }

    /// The directory the database lives in.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Writes a consistent copy of the whole database to `dir` (which must not exist)
    /// with RocksDB's checkpoint: SST files are hard-linked, so this is cheap and is
    /// the basis for uploading only new SST files (incremental checkpoints). The copy
    /// opens with [`open`](Self::open).
    ///
    /// Fails with an I/O error (58030) naming both directories.
    pub fn checkpoint_to(&self, dir: &Path) -> Result<()> {
        let what = || {
            format!(
                "writing a RocksDB checkpoint of {} to {}",
                self.shared.dir.display(),
                dir.display()
            )
        };
        Checkpoint::new(&self.shared.db)
            .and_then(|c| c.create_checkpoint(dir))
            .map_err(|e| SluiceError::io(what(), e))
    }
}

impl StateBackend for RocksDbStateBackend {
    fn table(&self, id: &str) -> Arc<dyn StateTable> {
        let mut tables = self.tables.lock();
        if let Some(table) = tables.get(id) {
            return table.clone();
        }
        let generation = {
            let mut next = self.next_generation.lock();
            *next += 1;
            *next - 1
        };
        let cf = cf_name(generation, id);
        if let Err(e) = self.shared.db.create_cf(&cf, &self.shared.table_options) {
            panic!(
                "RocksDB state in {}: creating column family {cf:?} for table {id:?} failed: {e}",
                self.shared.dir.display()
            );
        }
        let table = Arc::new(RocksDbStateTable {
            shared: self.shared.clone(),
            id: id.to_string(),
            cf,
            dropped: AtomicBool::new(false),
        });
        tables.insert(id.to_string(), table.clone());
        table
    }

    fn drop_table(&self, id: &str) {
        let Some(table) = self.tables.lock().remove(id) else {
            return;
        };
        let mut marker = PENDING_DROP.to_vec();
        marker.extend_from_slice(table.cf.as_bytes());
        if let Err(e) = self.shared.db.put(&marker, b"") {
            table.fail("recording the drop of", e);
        }
        table.dropped.store(true, Ordering::SeqCst);
        // The column family goes when the last handle does (now, unless others are open).
    }

    fn table_ids(&self) -> Vec<StateTableId> {
        let mut ids: Vec<_> = self.tables.lock().keys().cloned().collect();
        ids.sort();
        ids
    }
}

impl Shared {
    fn pending_drop(&self, cf: &str) -> Result<bool> {
        let mut marker = PENDING_DROP.to_vec();
        marker.extend_from_slice(cf.as_bytes());
        self.db
            .get_pinned(&marker)
            .map(|v| v.is_some())
            .map_err(|e| {
                SluiceError::io(
                    format!(
                        "reading the pending drops of RocksDB state in {}",
                        self.dir.display()
                    ),
                    e,
                )
            })
    }

    /// Drops a column family and then its pending-drop marker.
    fn drop_column_family(&self, cf: &str) -> Result<()> {
        let what = || {
            format!(
                "dropping column family {cf:?} of RocksDB state in {}",
                self.dir.display()
            )
        };
        self.db
            .drop_cf(cf)
            .map_err(|e| SluiceError::io(what(), e))?;
        let mut marker = PENDING_DROP.to_vec();
        marker.extend_from_slice(cf.as_bytes());
        self.db
            .delete(&marker)
            .map_err(|e| SluiceError::io(what(), e))?;
        // A flush makes RocksDB look for obsolete files (with a full scan: see `open`),
        // which deletes the dropped column family's files now rather than later.
        self.db.flush().map_err(|e| SluiceError::io(what(), e))
    }
}

/// One table's column family. Cheap to share; see the module docs for what happens
/// when its table is dropped while it is open.
struct RocksDbStateTable {
    shared: Arc<Shared>,
    id: StateTableId,
    cf: String,
    /// Set by `drop_table`: the column family goes when this handle does.
    dropped: AtomicBool,
}

impl RocksDbStateTable {
    /// Every RocksDB operation of a table goes through here.
    fn with_cf<T>(&self, f: impl FnOnce(&Db, &Arc<BoundColumnFamily<'_>>) -> T) -> T {
        let cf = self.shared.db.cf_handle(&self.cf).unwrap_or_else(|| {
            panic!(
                "RocksDB state in {}: column family {:?} of table {:?} is gone while a handle \
                 is open",
                self.shared.dir.display(),
                self.cf,
                self.id
            )
        });
        f(&self.shared.db, &cf)
    }

    fn fail(&self, what: &str, e: impl fmt::Display) -> ! {
        panic!(
            "RocksDB state in {}: {what} table {:?} failed: {e}",
            self.shared.dir.display(),
            self.id
        )
    }

    /// Every entry of key group `only` (all groups when `None`), in key order.
    /// Calls `f` with every entry of `key_groups` (all when `None`), in key order.
    fn for_each_of(&self, key_groups: Option<&[u16]>, mut f: impl FnMut(u16, &[u8], &[u8])) {
        match key_groups {
            None => self.for_each(None, &mut f),
            Some(groups) => {
                let mut groups = groups.to_vec();
                groups.sort_unstable();
                groups.dedup();
                for kg in groups {
                    self.for_each(Some(kg), &mut f);
                }
            }
        }
    }

    fn for_each(&self, only: Option<u16>, mut f: impl FnMut(u16, &[u8], &[u8])) {
        self.with_cf(|db, cf| {
            let mut read = ReadOptions::default();
            let start = only.map(u16::to_be_bytes);
            let mode = match &start {
                Some(start) => {
                    let end = only.and_then(|kg| kg.checked_add(1));
                    if let Some(end) = end {
                        read.set_iterate_upper_bound(end.to_be_bytes().to_vec());
                    }
                    IteratorMode::From(start, Direction::Forward)
                }
                None => IteratorMode::Start,
            };
            for item in db.iterator_cf_opt(cf, read, mode) {
                let (key, value) = item.unwrap_or_else(|e| self.fail("scanning", e));
                let Some((kg, key)) = split_key(&key) else {
                    self.fail("scanning", format!("a stored key is {} bytes", key.len()));
                };
                f(kg, key, &value);
            }
        });
    }
}

impl Drop for RocksDbStateTable {
    fn drop(&mut self) {
        if self.dropped.load(Ordering::SeqCst)
            && let Err(e) = self.shared.drop_column_family(&self.cf)
        {
            tracing::warn!(table = %self.id, error = %e,
                "could not drop a dropped table's column family; the next open retries");
        }
    }
}

impl StateTable for RocksDbStateTable {
    fn get(&self, key_group: u16, key: &[u8]) -> Option<Vec<u8>> {
        self.with_cf(|db, cf| {
            db.get_pinned_cf(cf, encode_key(key_group, key))
                .map(|v| v.map(|v| v.to_vec()))
        })
        .unwrap_or_else(|e| self.fail("reading", e))
    }

    fn write(&self, writes: Vec<StateWrite>) {
        if writes.is_empty() {
            return;
        }
        self.with_cf(|db, cf| {
            let mut batch = WriteBatch::default();
            for w in &writes {
                match w {
                    StateWrite::Put {
                        key_group,
                        key,
                        value,
                    } => batch.put_cf(cf, encode_key(*key_group, key), value),
                    StateWrite::Delete { key_group, key } => {
                        batch.delete_cf(cf, encode_key(*key_group, key))
                    }
                }
            }
            db.write(batch)
        })
        .unwrap_or_else(|e| self.fail("writing", e));
    }

    fn scan(&self, key_groups: Option<&[u16]>) -> Vec<(u16, Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        self.for_each_of(key_groups, |kg, k, v| {
            out.push((kg, k.to_vec(), v.to_vec()))
        });
        out
    }

    fn scan_chunks(
        &self,
        key_groups: Option<&[u16]>,
        chunk: usize,
        f: &mut dyn FnMut(Vec<SnapshotEntry>),
    ) {
        let mut out = Vec::new();
        self.for_each_of(key_groups, |kg, k, v| {
            out.push((kg, k.to_vec(), v.to_vec()));
            if out.len() >= chunk {
                f(std::mem::take(&mut out));
            }
        });
        if !out.is_empty() {
            f(out);
        }
    }

    /// Counts by iterating every key: O(entries). RocksDB keeps only an estimate.
    fn len(&self) -> usize {
        let mut n = 0;
        self.for_each(None, |_, _, _| n += 1);
        n
    }

    fn is_empty(&self) -> bool {
        self.with_cf(|db, cf| db.iterator_cf(cf, IteratorMode::Start).next())
            .map(|item| item.unwrap_or_else(|e| self.fail("reading", e)))
            .is_none()
    }
}

fn encode_key(key_group: u16, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + key.len());
    out.extend_from_slice(&key_group.to_be_bytes());
    out.extend_from_slice(key);
    out
}

fn split_key(stored: &[u8]) -> Option<(u16, &[u8])> {
    let (kg, key) = stored.split_first_chunk::<2>()?;
    Some((u16::from_be_bytes(*kg), key))
}

fn cf_name(generation: u64, id: &str) -> String {
    let escaped = id.replace('%', "%25").replace('\0', "%00");
    format!("{CF_PREFIX}{generation}:{escaped}")
}

fn parse_cf_name(name: &str) -> Option<(u64, String)> {
    let (generation, escaped) = name.strip_prefix(CF_PREFIX)?.split_once(':')?;
    let mut id = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(at) = rest.find('%') {
        id.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3)?;
        id.push(match code {
            "25" => '%',
            "00" => '\0',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    id.push_str(rest);
    Some((generation.parse().ok()?, id))
}

#[cfg(test)]
mod tests;
