//! The byte format of a keyed state snapshot: the entries of one state table (or the
//! part of it one subtask owns), each tagged with its key group.
//!
//! Key groups are what make a snapshot portable across parallelism: a snapshot taken by
//! the subtasks of a job at parallelism `p` is restored at `p'` by giving each new subtask
//! the entries whose key group it now owns ([`crate::subtask_of_key_group`]), read with
//! [`decode_entries_where`].
//!
//! Layout, all integers big-endian:
//!
//! ```text
//! "SLSN" | version u8 (1) | entry count u64 | entries...
//! entry: key group u16 | key length u32 | key | value length u32 | value
//! ```
//!
//! The format has no checksum of its own: the checkpoint store checks the file's size
//! and CRC before the bytes reach [`decode_entries`]. The decoder still bounds-checks
//! every length, so damaged input is an error, never a panic or a huge allocation.

use bytes::{BufMut, Bytes, BytesMut};
use sluice_common::error::{Result, SluiceError};

const MAGIC: &[u8; 4] = b"SLSN";
const VERSION: u8 = 1;
const HEADER_LEN: usize = MAGIC.len() + 1 + 8;
/// Bytes an entry takes besides its key and value.
const ENTRY_OVERHEAD: usize = 2 + 4 + 4;

/// One decoded entry: key group, key, value.
pub type SnapshotEntry = (u16, Vec<u8>, Vec<u8>);

/// Encodes `(key group, key, value)` entries into a snapshot. Keys and values must be
/// shorter than 4 GiB (panics otherwise: state entries that large are a bug upstream).
pub fn encode_entries<'a>(entries: impl IntoIterator<Item = (u16, &'a [u8], &'a [u8])>) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_LEN);
    out.put_slice(MAGIC);
    out.put_u8(VERSION);
    out.put_u64(0); // entry count, patched below
    let mut count: u64 = 0;
    for (key_group, key, value) in entries {
        out.reserve(ENTRY_OVERHEAD + key.len() + value.len());
        out.put_u16(key_group);
        out.put_u32(u32::try_from(key.len()).expect("state key shorter than 4 GiB"));
        out.put_slice(key);
        out.put_u32(u32::try_from(value.len()).expect("state value shorter than 4 GiB"));
        out.put_slice(value);
        count += 1;
    }
    out[MAGIC.len() + 1..HEADER_LEN].copy_from_slice(&count.to_be_bytes());
    out.freeze()
}

/// Decodes every entry of a snapshot, in the order they were encoded.
///
/// Fails with [`SluiceError::corrupted`] (XX001) when the magic or version is wrong,
/// the input is truncated, or bytes follow the last entry. The message gives the
/// offset but not the file: callers add where the bytes came from.
pub fn decode_entries(bytes: &[u8]) -> Result<Vec<SnapshotEntry>> {
    decode_entries_where(bytes, |_| true)
}

/// Decodes the entries whose key group satisfies `keep` (restoring at a different
/// parallelism); the whole input is still validated. Fails like [`decode_entries`].
pub fn decode_entries_where(
    bytes: &[u8],
    mut keep: impl FnMut(u16) -> bool,
) -> Result<Vec<SnapshotEntry>> {
    let mut reader = Reader { bytes, offset: 0 };
    let magic = reader.take(MAGIC.len(), "the header")?;
    if magic != MAGIC {
        return Err(SluiceError::corrupted(
            "state snapshot does not start with the SLSN magic bytes",
        ));
    }
    let version = reader.take(1, "the header")?[0];
    if version != VERSION {
        return Err(SluiceError::corrupted(format!(
            "state snapshot has format version {version}, this build reads version {VERSION}"
        )));
    }
    let count = u64::from_be_bytes(reader.array("the header")?);
    // Never trust a count from the input for an allocation.
    let bound = (bytes.len() - HEADER_LEN) / ENTRY_OVERHEAD;
    let mut out = Vec::with_capacity((count as usize).min(bound));
    for i in 0..count {
        let what = || format!("entry {i} of {count}");
        let key_group = u16::from_be_bytes(reader.array(&what())?);
        let key_len = u32::from_be_bytes(reader.array(&what())?) as usize;
        let key = reader.take(key_len, &what())?;
        let value_len = u32::from_be_bytes(reader.array(&what())?) as usize;
        let value = reader.take(value_len, &what())?;
        if keep(key_group) {
            out.push((key_group, key.to_vec(), value.to_vec()));
        }
    }
    if reader.offset != bytes.len() {
        return Err(SluiceError::corrupted(format!(
            "state snapshot has {} unexpected bytes after its {count} entries",
            bytes.len() - reader.offset
        )));
    }
    Ok(out)
}

/// The key group of an operator's entries that belong to no key (its watermark, how far
/// its windows are closed). Restored at another parallelism, every subtask gets them.
pub const OPERATOR_WIDE: u16 = u16::MAX;

/// What subtask `subtask` of `parallelism` restores when one operator's state, taken by
/// its subtasks at another parallelism (`snapshots`, one per old subtask), is
/// redistributed: the keyed entries whose key group the subtask now owns, and every
/// [`OPERATOR_WIDE`] entry once per key. Operator-wide entries are progress marks
/// (8-byte little-endian `i64`s); of several with one key the smallest is kept: the
/// point every old subtask had passed.
pub fn redistribute<'a>(
    snapshots: impl IntoIterator<Item = &'a [SnapshotEntry]>,
    key_groups: u16,
    subtask: usize,
    parallelism: usize,
) -> Result<Vec<SnapshotEntry>> {
    let mut keyed = Vec::new();
    let mut operator_wide: std::collections::BTreeMap<&[u8], &[u8]> = Default::default();
    for (key_group, key, value) in snapshots.into_iter().flatten() {
        if *key_group != OPERATOR_WIDE {
            if crate::subtask_of_key_group(*key_group, key_groups, parallelism) == subtask {
                keyed.push((*key_group, key.clone(), value.clone()));
            }
            continue;
        }
        let kept = operator_wide
            .entry(key.as_slice())
            .or_insert(value.as_slice());
        if *kept != value.as_slice() {
            let mark = |v: &[u8]| -> Result<i64> {
                Ok(i64::from_le_bytes(v.try_into().map_err(|_| {
                    SluiceError::corrupted(format!(
                        "operator-wide state entries of one key differ and are not 8-byte progress marks ({} and {} bytes)",
                        kept.len(),
                        v.len()
                    ))
                })?))
            };
            if mark(value)? < mark(kept)? {
                *kept = value.as_slice();
            }
        }
    }
    let mut entries: Vec<SnapshotEntry> = operator_wide
        .into_iter()
        .map(|(key, value)| (OPERATOR_WIDE, key.to_vec(), value.to_vec()))
        .collect();
    entries.extend(keyed);
    Ok(entries)
}

struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8]> {
        let rest = &self.bytes[self.offset..];
        if rest.len() < len {
            return Err(SluiceError::corrupted(format!(
                "state snapshot is truncated in {what}: {len} bytes needed at offset {}, {} left",
                self.offset,
                rest.len()
            )));
        }
        self.offset += len;
        Ok(&rest[..len])
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self
            .take(N, what)?
            .try_into()
            .expect("take returned N bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DEFAULT_KEY_GROUPS, subtask_of_key_group};
    use sluice_common::error::SqlState;

    fn entries() -> Vec<SnapshotEntry> {
        (0..DEFAULT_KEY_GROUPS)
            .flat_map(|kg| {
                (0..3u8).map(move |i| (kg, vec![i; i as usize], format!("v{kg}-{i}").into_bytes()))
            })
            .collect()
    }

    fn encode(entries: &[SnapshotEntry]) -> Bytes {
        encode_entries(
            entries
                .iter()
                .map(|(kg, k, v)| (*kg, k.as_slice(), v.as_slice())),
        )
    }

    #[test]
    fn redistribution_splits_keyed_entries_and_keeps_the_least_progress_mark() {
        let all = entries();
        // Two old subtasks, each with its half of the key groups and its own watermark.
        let halves: Vec<Vec<SnapshotEntry>> = (0..2)
            .map(|old| {
                let mut half: Vec<SnapshotEntry> = all
                    .iter()
                    .filter(|(kg, _, _)| subtask_of_key_group(*kg, DEFAULT_KEY_GROUPS, 2) == old)
                    .cloned()
                    .collect();
                let watermark = 100 + old as i64;
                half.push((
                    OPERATOR_WIDE,
                    b"w".to_vec(),
                    watermark.to_le_bytes().to_vec(),
                ));
                half
            })
            .collect();
        let mut restored = Vec::new();
        for new in 0..3 {
            let mine = redistribute(
                halves.iter().map(|h| h.as_slice()),
                DEFAULT_KEY_GROUPS,
                new,
                3,
            )
            .unwrap();
            let (wide, keyed): (Vec<_>, Vec<_>) = mine
                .into_iter()
                .partition(|(kg, _, _)| *kg == OPERATOR_WIDE);
            assert_eq!(
                wide,
                vec![(OPERATOR_WIDE, b"w".to_vec(), 100i64.to_le_bytes().to_vec())]
            );
            assert!(keyed.iter().all(|(kg, _, _)| subtask_of_key_group(
                *kg,
                DEFAULT_KEY_GROUPS,
                3
            ) == new));
            restored.extend(keyed);
        }
        restored.sort();
        let mut expected = all;
        expected.sort();
        assert_eq!(restored, expected, "every keyed entry lands exactly once");

        let odd = [
            vec![(OPERATOR_WIDE, b"x".to_vec(), vec![1])],
            vec![(OPERATOR_WIDE, b"x".to_vec(), vec![2])],
        ];
        let err =
            redistribute(odd.iter().map(|s| s.as_slice()), DEFAULT_KEY_GROUPS, 0, 1).unwrap_err();
        assert_eq!(err.state, SqlState::DATA_CORRUPTED, "{err}");
    }

    #[test]
    fn snapshot_round_trips_including_empty_keys_and_no_entries() {
        let all = entries();
        assert_eq!(decode_entries(&encode(&all)).unwrap(), all);
        assert_eq!(decode_entries(&encode(&[])).unwrap(), vec![]);
    }

    #[test]
    fn every_truncation_and_trailing_garbage_is_a_corruption_error() {
        let bytes = encode(&entries()[..5]);
        for cut in 0..bytes.len() {
            let err = decode_entries(&bytes[..cut]).unwrap_err();
            assert_eq!(err.state, SqlState::DATA_CORRUPTED, "cut at {cut}: {err}");
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        let err = decode_entries(&longer).unwrap_err();
        assert!(err.message.contains("1 unexpected bytes"), "{err}");
        let mut bad_magic = bytes.to_vec();
        bad_magic[0] = b'X';
        assert_eq!(
            decode_entries(&bad_magic).unwrap_err().state,
            SqlState::DATA_CORRUPTED
        );
    }

    #[test]
    fn a_huge_declared_count_or_length_is_an_error_not_an_allocation() {
        let mut bytes = encode(&[]).to_vec();
        bytes[5..13].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(
            decode_entries(&bytes).unwrap_err().state,
            SqlState::DATA_CORRUPTED
        );
        let mut one = encode(&[(1, b"k".to_vec(), b"v".to_vec())]).to_vec();
        one[15..19].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            decode_entries(&one).unwrap_err().state,
            SqlState::DATA_CORRUPTED
        );
    }

    #[test]
    fn snapshots_taken_at_parallelism_2_restore_at_parallelism_3_by_key_group() {
        let all = entries();
        let kgs = DEFAULT_KEY_GROUPS;
        // Two old subtasks each snapshot the key groups they own.
        let snapshots: Vec<Bytes> = (0..2)
            .map(|subtask| {
                let owned: Vec<_> = all
                    .iter()
                    .filter(|(kg, _, _)| subtask_of_key_group(*kg, kgs, 2) == subtask)
                    .cloned()
                    .collect();
                encode(&owned)
            })
            .collect();
        // Three new subtasks each read their key groups out of every old snapshot.
        let mut restored = Vec::new();
        for subtask in 0..3 {
            let mut mine = Vec::new();
            for snapshot in &snapshots {
                mine.extend(
                    decode_entries_where(snapshot, |kg| {
                        subtask_of_key_group(kg, kgs, 3) == subtask
                    })
                    .unwrap(),
                );
            }
            assert!(
                mine.iter()
                    .all(|(kg, _, _)| subtask_of_key_group(*kg, kgs, 3) == subtask)
            );
            restored.extend(mine);
        }
        restored.sort();
        let mut expected = all;
        expected.sort();
        assert_eq!(restored, expected);
    }
}
