//! The RocksDB backend: the shared conformance checks, plus what only a disk-backed
//! backend has (reopening, pending drops, state larger than its caches).

use std::ops::Deref;
use std::time::{Duration, Instant};

use sluice_common::error::SqlState;

use super::*;
use crate::conformance::state_backend_conformance_tests;
use crate::test_support::TempDir;

/// A backend in its own temporary directory; the database closes before the directory
/// is removed (fields drop in order).
struct TempBackend {
    backend: RocksDbStateBackend,
    _dir: TempDir,
}

impl TempBackend {
    fn new(name: &str) -> Self {
        let dir = TempDir::new(name);
        let backend = RocksDbStateBackend::open(&dir.0, small()).unwrap();
        TempBackend { backend, _dir: dir }
    }
}

impl Deref for TempBackend {
    type Target = RocksDbStateBackend;
    fn deref(&self) -> &RocksDbStateBackend {
        &self.backend
    }
}

fn small() -> RocksDbOptions {
    RocksDbOptions {
        block_cache_bytes: 64 << 10,
        write_buffer_bytes: 1 << 20,
    }
}

state_backend_conformance_tests!(TempBackend::new("conformance"));

fn put(key_group: u16, key: &[u8], value: &[u8]) -> StateWrite {
    StateWrite::Put {
        key_group,
        key: key.to_vec(),
        value: value.to_vec(),
    }
}

#[test]
fn tables_and_entries_survive_reopening_and_dropped_tables_stay_dropped() {
    let dir = TempDir::new("reopen");
    {
        let backend = RocksDbStateBackend::open(&dir.0, small()).unwrap();
        backend.table("mv/3/0").write(vec![put(3, b"k", b"v")]);
        backend.table("100%\0").write(vec![put(4, b"j", b"w")]);
        backend.table("gone").write(vec![put(1, b"x", b"y")]);
        backend.drop_table("gone");
    }
    let backend = RocksDbStateBackend::open(&dir.0, small()).unwrap();
    assert_eq!(backend.table_ids(), vec!["100%\0", "mv/3/0"]);
    assert_eq!(backend.table("mv/3/0").get(3, b"k"), Some(b"v".to_vec()));
    assert_eq!(
        backend.table("100%\0").scan(None),
        vec![(4, b"j".to_vec(), b"w".to_vec())]
    );
    assert!(backend.table("gone").is_empty());
}

#[test]
fn open_empty_starts_without_the_tables_of_the_last_run() {
    let dir = TempDir::new("open-empty");
    {
        let backend = RocksDbStateBackend::open(&dir.0, small()).unwrap();
        backend.table("mv/3/0").write(vec![put(3, b"k", b"v")]);
    }
    let backend = RocksDbStateBackend::open_empty(&dir.0, small()).unwrap();
    assert!(backend.table_ids().is_empty());
    assert!(backend.table("mv/3/0").is_empty());
    // While it is open, another process's server cannot empty it.
    let err = RocksDbStateBackend::open_empty(&dir.0, small()).expect_err("the directory is held");
    assert_eq!(err.state, SqlState::IO_ERROR);
}

#[test]
fn a_drop_left_pending_by_an_open_handle_is_finished_by_the_next_open() {
    let dir = TempDir::new("pending-drop");
    let backend = RocksDbStateBackend::open(&dir.0, small()).unwrap();
    let old = backend.table("mv/1/0");
    old.write(vec![put(1, b"k", b"old")]);
    backend.drop_table("mv/1/0");
    backend.table("mv/1/0").write(vec![put(1, b"k", b"new")]);
    // A copy taken now holds both generations and the pending drop, as a crash would.
    let copy = dir.0.join("copy");
    backend.checkpoint_to(&copy).unwrap();
    let err = backend.checkpoint_to(&copy).unwrap_err();
    assert_eq!(err.state, SqlState::IO_ERROR, "{err}");
    assert!(err.message.contains(&copy.display().to_string()), "{err}");

    let reopened = RocksDbStateBackend::open(&copy, small()).unwrap();
    assert_eq!(reopened.table_ids(), vec!["mv/1/0"]);
    assert_eq!(reopened.table("mv/1/0").get(1, b"k"), Some(b"new".to_vec()));
    let column_families = Db::list_cf(&Options::default(), &copy).unwrap();
    assert_eq!(
        column_families.len(),
        2,
        "default and one table: {column_families:?}"
    );
    assert_eq!(old.get(1, b"k"), Some(b"old".to_vec()));
}

#[test]
fn a_directory_another_backend_holds_is_an_io_error_naming_it() {
    let held = TempBackend::new("held");
    let err = RocksDbStateBackend::open(held.dir(), small()).unwrap_err();
    assert_eq!(err.state, SqlState::IO_ERROR, "{err}");
    assert!(
        err.message.contains(&held.dir().display().to_string()),
        "{err}"
    );
}

#[test]
fn column_family_names_round_trip_every_table_id() {
    for id in [
        "",
        "mv/3/0",
        "%",
        "%25",
        "%00",
        "\0",
        "a%\0b%%",
        "table:7:x",
    ] {
        assert_eq!(
            parse_cf_name(&cf_name(42, id)),
            Some((42, id.to_string())),
            "{id:?}"
        );
    }
    assert_eq!(parse_cf_name("table:1:bad%zz"), None);
    assert_eq!(parse_cf_name("default"), None);
}

/// Deterministic, incompressible bytes for entry `i`.
fn value_of(i: u64, len: usize) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Bytes of SST files in `dir`. A compaction may delete a file between listing it and
/// reading its size; such a file no longer counts.
fn sst_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".sst"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[test]
fn state_far_larger_than_the_block_cache_and_write_buffer_round_trips() {
    const ENTRIES: u64 = 12_800;
    const VALUE: usize = 4096; // 12 800 × 4 KiB = 50 MiB against a 64 KiB block cache
    let backend = TempBackend::new("large");
    let table = backend.table("mv/9/0");
    let kg = |i: u64| (i % crate::DEFAULT_KEY_GROUPS as u64) as u16;
    for chunk in (0..ENTRIES).collect::<Vec<_>>().chunks(200) {
        table.write(
            chunk
                .iter()
                .map(|&i| put(kg(i), &i.to_be_bytes(), &value_of(i, VALUE)))
                .collect(),
        );
    }
    assert!(
        sst_bytes(backend.dir()) > 40 << 20,
        "the state should be on disk, not in memtables"
    );

    assert_eq!(table.len(), ENTRIES as usize);
    for i in (0..ENTRIES).step_by(97) {
        assert_eq!(
            table.get(kg(i), &i.to_be_bytes()),
            Some(value_of(i, VALUE)),
            "entry {i}"
        );
    }
    let group_5 = table.scan(Some(&[5]));
    assert_eq!(group_5.len() as u64, ENTRIES / 128);
    assert!(group_5.windows(2).all(|w| w[0].1 < w[1].1), "key order");
    assert!(group_5.iter().all(|(g, k, v)| {
        let i = u64::from_be_bytes(k.as_slice().try_into().unwrap());
        *g == 5 && kg(i) == 5 && *v == value_of(i, VALUE)
    }));

    // Dropping the table gives its disk space back at once, unless a compaction of it
    // is still running (its output then goes at the next flush): wait for those first.
    drop(table);
    let deadline = Instant::now() + Duration::from_secs(60);
    let busy = |property| backend.shared.db.property_int_value(property).unwrap() != Some(0);
    while busy("rocksdb.num-running-compactions") || busy("rocksdb.num-running-flushes") {
        assert!(Instant::now() < deadline, "background work did not finish");
        std::thread::sleep(Duration::from_millis(10));
    }
    backend.drop_table("mv/9/0");
    assert!(
        sst_bytes(backend.dir()) < 1 << 20,
        "a dropped table still holds {} bytes of SST files",
        sst_bytes(backend.dir())
    );
}
