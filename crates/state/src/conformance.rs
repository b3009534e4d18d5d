//! What every [`StateBackend`] must do, as checks each backend's tests run against it
//! (`state_backend_conformance_tests!`), so the memory and RocksDB backends cannot drift
//! apart.

use std::sync::Arc;

use crate::{StateBackend, StateTable, StateWrite};

/// Generates one `#[test]` per check, each on a fresh backend from `$make` (an
/// expression whose value derefs to a [`StateBackend`]; it lives until the check ends).
macro_rules! state_backend_conformance_tests {
    ($make:expr) => {
        #[test]
        fn writes_are_visible_through_every_handle_and_drop_frees_the_table() {
            $crate::conformance::writes_are_visible_through_every_handle_and_drop_frees_the_table(
                &*$make,
            );
        }
        #[test]
        fn a_write_applies_its_changes_in_order_as_one_step() {
            $crate::conformance::a_write_applies_its_changes_in_order_as_one_step(&*$make);
        }
        #[test]
        fn scans_order_by_key_group_then_key_and_filter_by_key_group() {
            $crate::conformance::scans_order_by_key_group_then_key_and_filter_by_key_group(
                &*$make,
            );
        }
        #[test]
        fn tables_are_independent_whatever_their_ids() {
            $crate::conformance::tables_are_independent_whatever_their_ids(&*$make);
        }
        #[test]
        fn open_handles_of_a_dropped_table_keep_its_data_and_a_new_table_starts_empty() {
            $crate::conformance::open_handles_of_a_dropped_table_keep_its_data_and_a_new_table_starts_empty(
                &*$make,
            );
        }
        #[test]
        fn concurrent_writers_on_disjoint_key_groups_all_land() {
            $crate::conformance::concurrent_writers_on_disjoint_key_groups_all_land(&*$make);
        }
    };
}
pub(crate) use state_backend_conformance_tests;

fn put(key_group: u16, key: &[u8], value: &[u8]) -> StateWrite {
    StateWrite::Put {
        key_group,
        key: key.to_vec(),
        value: value.to_vec(),
    }
}

fn delete(key_group: u16, key: &[u8]) -> StateWrite {
    StateWrite::Delete {
        key_group,
        key: key.to_vec(),
    }
}

fn entry(key_group: u16, key: &[u8], value: &[u8]) -> (u16, Vec<u8>, Vec<u8>) {
    (key_group, key.to_vec(), value.to_vec())
}

pub(crate) fn writes_are_visible_through_every_handle_and_drop_frees_the_table(
    backend: &dyn StateBackend,
) {
    let a = backend.table("mv_1");
    let b = backend.table("mv_1");
    a.write(vec![
        put(3, b"k", b"v1"),
        put(3, b"k", b"v2"),
        put(7, b"j", b"w"),
    ]);
    assert_eq!(b.get(3, b"k"), Some(b"v2".to_vec()));
    assert_eq!(b.get(4, b"k"), None, "the key group is part of the address");
    assert_eq!(b.scan(Some(&[7])), vec![entry(7, b"j", b"w")]);
    a.write(vec![delete(3, b"k")]);
    assert_eq!(b.len(), 1);
    assert!(!b.is_empty());
    assert_eq!(backend.table_ids(), vec!["mv_1".to_string()]);
    drop((a, b));
    backend.drop_table("mv_1");
    assert!(backend.table_ids().is_empty());
    let again = backend.table("mv_1");
    assert!(again.is_empty());
    assert_eq!(again.get(7, b"j"), None);
}

pub(crate) fn a_write_applies_its_changes_in_order_as_one_step(backend: &dyn StateBackend) {
    let t = backend.table("t");
    t.write(vec![
        put(1, b"k", b"v1"),
        delete(1, b"k"),
        put(1, b"k", b"v2"),
        put(1, b"j", b"w"),
        delete(1, b"j"),
        delete(1, b"never-written"),
    ]);
    assert_eq!(t.scan(None), vec![entry(1, b"k", b"v2")]);
    t.write(vec![]);
    t.write(vec![put(1, b"k", b"v3")]);
    assert_eq!(t.len(), 1, "overwriting a key does not add an entry");
    assert_eq!(t.get(1, b"k"), Some(b"v3".to_vec()));
    t.write(vec![delete(1, b"k")]);
    assert!(t.is_empty());
    assert_eq!(t.scan(None), vec![]);
}

pub(crate) fn scans_order_by_key_group_then_key_and_filter_by_key_group(
    backend: &dyn StateBackend,
) {
    let t = backend.table("t");
    // Written out of order; 255 and 256 catch a key-group encoding that is not
    // big-endian, empty and prefix keys catch a key encoding that is not order-preserving.
    t.write(vec![
        put(256, b"a", b"1"),
        put(5, b"b", b"2"),
        put(255, b"\xff", b"3"),
        put(5, b"", b"4"),
        put(5, b"ab", b"5"),
        put(5, b"a", b"6"),
        put(0, b"z", b"7"),
        put(u16::MAX, b"m", b"8"),
    ]);
    assert_eq!(
        t.scan(None),
        vec![
            entry(0, b"z", b"7"),
            entry(5, b"", b"4"),
            entry(5, b"a", b"6"),
            entry(5, b"ab", b"5"),
            entry(5, b"b", b"2"),
            entry(255, b"\xff", b"3"),
            entry(256, b"a", b"1"),
            entry(u16::MAX, b"m", b"8"),
        ]
    );
    assert_eq!(
        t.scan(Some(&[u16::MAX, 256, 9, 256, 0])),
        vec![
            entry(0, b"z", b"7"),
            entry(256, b"a", b"1"),
            entry(u16::MAX, b"m", b"8"),
        ],
        "groups come in ascending order, each once, whatever order they are asked in"
    );
    assert_eq!(t.scan(Some(&[])), vec![]);
    assert_eq!(t.get(5, b""), Some(b"4".to_vec()));
    assert_eq!(t.len(), 8);
    for groups in [None, Some(&[5u16, 256][..])] {
        let mut chunks = Vec::new();
        t.scan_chunks(groups, 3, &mut |chunk| chunks.push(chunk));
        assert!(
            chunks.iter().all(|c| !c.is_empty() && c.len() <= 3),
            "{chunks:?}"
        );
        assert_eq!(
            chunks.concat(),
            t.scan(groups),
            "chunks are the scan, in order"
        );
    }
}

pub(crate) fn tables_are_independent_whatever_their_ids(backend: &dyn StateBackend) {
    let ids = [
        "mv/3/0",
        "table/2",
        "default",
        "",
        "100%",
        "with:colon and space",
        "nul\0byte",
    ];
    for (i, id) in ids.iter().enumerate() {
        backend
            .table(id)
            .write(vec![put(1, b"k", id.as_bytes()), put(2, &[i as u8], b"x")]);
    }
    for (i, id) in ids.iter().enumerate() {
        let t = backend.table(id);
        assert_eq!(t.get(1, b"k"), Some(id.as_bytes().to_vec()), "{id:?}");
        assert_eq!(
            t.scan(Some(&[2])),
            vec![entry(2, &[i as u8], b"x")],
            "{id:?}"
        );
    }
    let mut sorted: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    sorted.sort();
    assert_eq!(backend.table_ids(), sorted);
    backend.drop_table("table/2");
    backend.drop_table("no such table");
    assert_eq!(backend.table("mv/3/0").len(), 2);
    assert!(!backend.table_ids().contains(&"table/2".to_string()));
}

pub(crate) fn open_handles_of_a_dropped_table_keep_its_data_and_a_new_table_starts_empty(
    backend: &dyn StateBackend,
) {
    let old = backend.table("mv/1/0");
    old.write(vec![put(1, b"k", b"old")]);
    backend.drop_table("mv/1/0");
    assert!(backend.table_ids().is_empty());
    assert_eq!(old.get(1, b"k"), Some(b"old".to_vec()));
    old.write(vec![put(1, b"j", b"detached")]);
    assert_eq!(old.len(), 2);

    let new = backend.table("mv/1/0");
    assert!(new.is_empty());
    new.write(vec![put(1, b"k", b"new")]);
    assert_eq!(old.get(1, b"k"), Some(b"old".to_vec()));
    assert_eq!(new.get(1, b"k"), Some(b"new".to_vec()));
    drop(old);
    assert_eq!(
        backend.table("mv/1/0").scan(None),
        vec![entry(1, b"k", b"new")]
    );
}

pub(crate) fn concurrent_writers_on_disjoint_key_groups_all_land(backend: &dyn StateBackend) {
    let t: Arc<dyn StateTable> = backend.table("t");
    std::thread::scope(|s| {
        for writer in 0..4u16 {
            let t = t.clone();
            s.spawn(move || {
                for batch in 0..50u32 {
                    let writes = (0..20u32)
                        .map(|i| {
                            let n = batch * 20 + i;
                            put(writer, &n.to_be_bytes(), &[writer as u8; 16])
                        })
                        .collect();
                    t.write(writes);
                }
            });
        }
    });
    assert_eq!(t.len(), 4 * 1000);
    for writer in 0..4u16 {
        let got = t.scan(Some(&[writer]));
        assert_eq!(got.len(), 1000);
        assert!(
            got.iter()
                .all(|(kg, _, v)| *kg == writer && v == &[writer as u8; 16])
        );
    }
}
