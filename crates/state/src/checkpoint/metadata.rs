//! What a completed checkpoint records, and the self-checking file that holds it.
//!
//! `_metadata` is two parts: one header line of JSON (`format`, `version`, `length`,
//! `crc32`) and then the body, the [`CheckpointMetadata`] as JSON. The checksum covers
//! the body's exact bytes, so a reader never has to re-serialize to verify, and a newer
//! writer may add fields an older reader skips. Both parts stay readable with `cat`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sluice_common::error::{Result, SluiceError};

/// Whether a checkpoint was taken by the periodic checkpoint timer or on request.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointKind {
    /// Periodic; pruned when more than the retained number of newer ones complete.
    Checkpoint,
    /// Taken on request (`... SAVEPOINT`); self-contained and kept until deleted.
    Savepoint,
}

/// One uploaded state file, as recorded in the metadata that references it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StateFileRef {
    /// Location relative to the store's prefix: `chk-{epoch:020}/<name>`.
    pub path: String,
    /// Length in bytes; a shorter or longer object is corrupt.
    pub size: u64,
    /// CRC-32 (IEEE) of the whole file.
    pub crc32: u32,
}

/// Everything a restore needs to know about one completed checkpoint. Its presence in
/// the store is what makes the checkpoint complete.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CheckpointMetadata {
    /// The barrier epoch this checkpoint snapshots.
    pub epoch: u64,
    pub kind: CheckpointKind,
    /// When the coordinator injected the barrier (ms since the Unix epoch).
    pub started_at_ms: u64,
    /// When the last subtask acknowledged (ms since the Unix epoch).
    pub completed_at_ms: u64,
    /// The longest barrier alignment any subtask reported, in ms.
    pub alignment_ms: u64,
    /// Logical name (e.g. `mv-3/chain-0/subtask-1/op-2`) -> the file holding that state.
    pub files: BTreeMap<String, StateFileRef>,
    /// Free-form facts for operators and tools: job ids, parallelism, source positions.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl CheckpointMetadata {
    /// Total size of the state files, in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.files.values().map(|f| f.size).sum()
    }

    /// Time from barrier injection to the last acknowledgement, in ms.
    pub fn duration_ms(&self) -> u64 {
        self.completed_at_ms.saturating_sub(self.started_at_ms)
    }
}

const FORMAT: &str = "sluice-checkpoint-metadata";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    length: u64,
    crc32: u32,
}

/// Serializes `metadata` into the `_metadata` file format.
pub(crate) fn encode(metadata: &CheckpointMetadata) -> Vec<u8> {
    let body = serde_json::to_vec_pretty(metadata).expect("metadata is plain data");
    let header = Header {
        format: FORMAT.to_string(),
        version: VERSION,
        length: body.len() as u64,
        crc32: crc32fast::hash(&body),
    };
    let mut out = serde_json::to_vec(&header).expect("header is plain data");
    out.push(b'\n');
    out.extend_from_slice(&body);
    out
}

/// Parses and verifies a `_metadata` file. `what` names it in errors (location and
/// epoch). Every failure is a [`SluiceError::corrupted`] (XX001), except a version this
/// build does not know, which is [`SluiceError::unsupported`].
pub(crate) fn decode(bytes: &[u8], what: &str) -> Result<CheckpointMetadata> {
    let newline = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| SluiceError::corrupted(format!("{what} is truncated: no header line")))?;
    let header: Header = serde_json::from_slice(&bytes[..newline])
        .map_err(|e| SluiceError::corrupted(format!("{what} has an unreadable header: {e}")))?;
    if header.format != FORMAT {
        return Err(SluiceError::corrupted(format!(
            "{what} is not a checkpoint metadata file (format {:?})",
            header.format
        )));
    }
    if header.version != VERSION {
        return Err(SluiceError::unsupported(format!(
            "{what} has format version {}, this build reads version {VERSION}",
            header.version
        )));
    }
    let body = &bytes[newline + 1..];
    if body.len() as u64 != header.length {
        return Err(SluiceError::corrupted(format!(
            "{what} is {} bytes long after its header, the header says {}",
            body.len(),
            header.length
        )));
    }
    let crc = crc32fast::hash(body);
    if crc != header.crc32 {
        return Err(SluiceError::corrupted(format!(
            "{what} fails its checksum (crc32 {crc:08x}, expected {:08x})",
            header.crc32
        )));
    }
    serde_json::from_slice(body)
        .map_err(|e| SluiceError::corrupted(format!("{what} has an unreadable body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_common::error::SqlState;

    fn sample() -> CheckpointMetadata {
        CheckpointMetadata {
            epoch: 7,
            kind: CheckpointKind::Savepoint,
            started_at_ms: 1_000,
            completed_at_ms: 1_250,
            alignment_ms: 40,
            files: BTreeMap::from([(
                "mv-1/op-0".to_string(),
                StateFileRef {
                    path: "chk-00000000000000000007/mv-1/op-0".to_string(),
                    size: 10,
                    crc32: 0xdead_beef,
                },
            )]),
            properties: BTreeMap::from([("parallelism".to_string(), "2".to_string())]),
        }
    }

    #[test]
    fn metadata_round_trips_and_every_damage_is_detected() {
        let m = sample();
        assert_eq!(m.size_bytes(), 10);
        assert_eq!(m.duration_ms(), 250);
        let bytes = encode(&m);
        assert_eq!(decode(&bytes, "x").unwrap(), m);

        for cut in 0..bytes.len() {
            let err = decode(&bytes[..cut], "x").unwrap_err();
            assert_eq!(err.state, SqlState::DATA_CORRUPTED, "cut at {cut}: {err}");
        }
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x01;
            match decode(&damaged, "x") {
                Err(e) => assert!(
                    matches!(
                        e.state,
                        SqlState::DATA_CORRUPTED | SqlState::FEATURE_NOT_SUPPORTED
                    ),
                    "flip at {i}: {e}"
                ),
                // A flip inside the header's own JSON whitespace-free text can only
                // be harmless if it leaves the same values; it never yields other data.
                Ok(decoded) => assert_eq!(decoded, m, "flip at {i} changed the data"),
            }
        }
    }
}
