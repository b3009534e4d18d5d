//! The coordinator's durable metadata: the catalog (every table, source, view and sink)
//! and the table log (every acknowledged change of every table), so that everything
//! comes back after a restart.
//!
//! Two stores keep them, behind one [`MetadataStore`]:
//! - the data directory (the default): `catalog.json` and `tables.log`;
//! - PostgreSQL (`sluice coordinator --metadata postgres://...`, [`postgres`]), which
//!   also elects the one active coordinator of a highly available pair.
//!
//! The catalog is stored as the statements that created its objects, in creation order,
//! with the ids they were given and the parallelism their jobs ran at. Restoring runs the
//! statements again, which rebuilds the objects with the same planner and validation as
//! when they were first created. The catalog is small (one line of SQL per object) and is
//! replaced whole on every DDL statement, atomically: in the data directory it is written
//! to a temporary file, synced, renamed over the old one and the directory synced, so a
//! crash leaves either the old or the new catalog, never a mix.

pub mod postgres;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};
use sluice_common::error::{Result, SluiceError};
use sluice_state::wal::{LogRecord, TableLog};

/// Where a coordinator keeps what must survive it. Both calls return only once what
/// they were given is durable; when they fail, nothing may be acknowledged.
pub trait MetadataStore: Send + Sync {
    /// Replaces the saved catalog with `state`.
    fn save_catalog(&self, state: &CatalogState) -> Result<()>;
    /// Appends change `seq` of table `table_id` to the table log.
    fn append(&self, table_id: u64, seq: u64, batch: &RecordBatch) -> Result<()>;
    /// Fails when this coordinator may have been replaced by another of its group: then
    /// it must not commit a checkpoint. Always `Ok` for a store no other coordinator
    /// shares.
    fn confirm_active(&self) -> Result<()> {
        Ok(())
    }
}

/// What a metadata store held when it was opened: the catalog, and the table log's
/// records, each table's in its order.
pub struct Restored {
    pub catalog: CatalogState,
    pub records: Vec<LogRecord>,
}

/// Creates the data directory `dir` if it does not exist.
pub(crate) fn create_data_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| SluiceError::io(format!("cannot create data directory {}", dir.display()), e))
}

/// The metadata kept in a data directory: `catalog.json` and `tables.log`.
pub struct DataDirMetadata {
    catalog: CatalogFile,
    log: TableLog,
}

impl DataDirMetadata {
    /// Opens (creating if needed) the metadata in `dir`; fails naming the file that
    /// cannot be read or parsed.
    pub fn open(dir: &Path) -> Result<(DataDirMetadata, Restored)> {
        create_data_dir(dir)?;
        let (catalog_file, catalog) = CatalogFile::open(dir)?;
        let (log, records) = TableLog::open(&dir.join("tables.log"))?;
        Ok((
            DataDirMetadata {
                catalog: catalog_file,
                log,
            },
            Restored { catalog, records },
        ))
    }
}

impl MetadataStore for DataDirMetadata {
    fn save_catalog(&self, state: &CatalogState) -> Result<()> {
        self.catalog.save(state)
    }

    fn append(&self, table_id: u64, seq: u64, batch: &RecordBatch) -> Result<()> {
        self.log.append(table_id, seq, batch)
    }
}

/// The catalog file's name in the data directory.
const CATALOG_FILE: &str = "catalog.json";
/// Version of the catalog file's format; a newer file is refused rather than misread.
const CATALOG_FORMAT: u32 = 1;

/// How one catalog object was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    pub id: u64,
    pub name: String,
    /// The `CREATE ...` statement, as the user wrote it.
    pub sql: String,
    /// The parallelism of the object's job (materialized views); 0 for others.
    pub parallelism: usize,
    /// The session's `state_ttl` when a view was created (a `WITH` option is in `sql`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_ttl_ms: Option<i64>,
    /// The parallelism a rescaled view reads its connector sources at (`None`: the
    /// job's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_parallelism: Option<usize>,
}

impl Definition {
    /// The definition of an object that runs no job (a table or a source).
    pub fn without_job(id: u64, name: String, sql: &str) -> Definition {
        Definition {
            id,
            name,
            sql: sql.to_string(),
            parallelism: 0,
            state_ttl_ms: None,
            source_parallelism: None,
        }
    }
}

/// Everything the catalog file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogState {
    pub format: u32,
    /// The next relation id to hand out (ids are never reused, so state and log records
    /// of a dropped object can never be mistaken for a new one's).
    pub next_id: u64,
    /// In creation order: an object only depends on objects before it.
    pub definitions: Vec<Definition>,
    /// Server-wide settings changed with `SET` (`checkpoint_interval`), as set; they
    /// override the command line's at the next start.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
}

impl Default for CatalogState {
    fn default() -> Self {
        CatalogState {
            format: CATALOG_FORMAT,
            next_id: 1,
            definitions: Vec::new(),
            settings: BTreeMap::new(),
        }
    }
}

impl CatalogState {
    /// The catalog as stored (JSON).
    fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self)
            .map_err(|e| SluiceError::internal(format!("cannot encode the catalog: {e}")))
    }

    /// Reads a stored catalog; `what` names where it was read from, `remedy` what the
    /// user can do when it cannot be read.
    fn decode(bytes: &[u8], what: &str, remedy: &str) -> Result<CatalogState> {
        let state: CatalogState = serde_json::from_slice(bytes).map_err(|e| {
            SluiceError::corrupted(format!("{what} cannot be parsed ({e}); {remedy}"))
        })?;
        if state.format > CATALOG_FORMAT {
            return Err(SluiceError::corrupted(format!(
                "{what} has format {}, newer than this Sluice understands ({CATALOG_FORMAT})",
                state.format
            )));
        }
        Ok(state)
    }
}

/// Reads and writes the catalog file of one data directory.
#[derive(Debug)]
struct CatalogFile {
    dir: PathBuf,
}

impl CatalogFile {
    /// Opens the catalog in `dir` and returns what it holds (empty for a new directory).
    /// Fails with the file's path when it cannot be read or parsed.
    fn open(dir: &Path) -> Result<(CatalogFile, CatalogState)> {
        let path = dir.join(CATALOG_FILE);
        let state = match std::fs::read(&path) {
            Ok(bytes) => CatalogState::decode(
                &bytes,
                &format!("the catalog file {}", path.display()),
                "restore it from a backup or start with an empty data directory",
            )?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CatalogState::default(),
            Err(e) => {
                return Err(SluiceError::io(
                    format!("cannot read the catalog file {}", path.display()),
                    e,
                ));
            }
        };
        Ok((
            CatalogFile {
                dir: dir.to_path_buf(),
            },
            state,
        ))
    }

    /// Replaces the catalog file with `state`, atomically and durably.
    fn save(&self, state: &CatalogState) -> Result<()> {
        let path = self.dir.join(CATALOG_FILE);
        let temporary = self.dir.join(format!("{CATALOG_FILE}.tmp"));
        let bytes = state.encode()?;
        let context = || format!("cannot write the catalog file {}", path.display());
        let mut file = File::create(&temporary).map_err(|e| SluiceError::io(context(), e))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| SluiceError::io(context(), e))?;
        std::fs::rename(&temporary, &path).map_err(|e| SluiceError::io(context(), e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| SluiceError::io(context(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_catalog_reads_back_and_a_missing_one_is_empty() {
        let dir = std::env::temp_dir().join(format!("sluice-catalog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (store, state) = CatalogFile::open(&dir).unwrap();
        assert_eq!(state, CatalogState::default());
        let state = CatalogState {
            format: CATALOG_FORMAT,
            settings: BTreeMap::from([("checkpoint_interval".into(), "30s".into())]),
            next_id: 3,
            definitions: vec![Definition::without_job(
                1,
                "t".into(),
                "CREATE TABLE t (a INT)",
            )],
        };
        store.save(&state).unwrap();
        assert_eq!(CatalogFile::open(&dir).unwrap().1, state);
        std::fs::write(dir.join(CATALOG_FILE), b"{ not json").unwrap();
        let error = CatalogFile::open(&dir).unwrap_err();
        assert_eq!(error.state, sluice_common::SqlState::DATA_CORRUPTED);
        assert!(error.message.contains("catalog.json"), "{}", error.message);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
