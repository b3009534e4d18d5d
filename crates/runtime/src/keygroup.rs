//! Hashing rows into key groups, the same way on every edge and in every state table.

use arrow::array::{ArrayRef, RecordBatch};
use datafusion::common::hash_utils::{RandomState, create_hashes};
use sluice_common::error::Result;
use sluice_state::key_group_of;

/// The hash state every keyed edge and keyed state uses. Fixed, so that a key lands in
/// the same key group in every process and after every restart.
fn hash_state() -> RandomState {
    RandomState::with_seed(0x5_1u64)
}

/// The key group of each row of `batch`, hashing the columns `key_indices`.
pub fn key_groups_of(
    batch: &RecordBatch,
    key_indices: &[usize],
    key_groups: u16,
) -> Result<Vec<u16>> {
    let columns: Vec<ArrayRef> = key_indices
        .iter()
        .map(|&i| batch.column(i).clone())
        .collect();
    key_groups_of_columns(&columns, batch.num_rows(), key_groups)
}

/// The key group of each row of `columns` (all of length `num_rows`).
pub fn key_groups_of_columns(
    columns: &[ArrayRef],
    num_rows: usize,
    key_groups: u16,
) -> Result<Vec<u16>> {
    let mut hashes = vec![0u64; num_rows];
    if !columns.is_empty() {
        create_hashes(columns, &hash_state(), &mut hashes)?;
    }
    Ok(hashes
        .into_iter()
        .map(|h| key_group_of(h, key_groups))
        .collect())
}
