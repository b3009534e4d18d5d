//! Helpers shared by this crate's tests.

use sluice_state::OperatorStateDirs;
use sluice_state::spill::{DbCheckpoint, RestoredDb};

/// The RocksDB checkpoint `checkpoint` of a spill store, opened as a restore opens the
/// files it downloaded (in a scratch directory of `dirs`).
pub(crate) fn restored_db(dirs: &OperatorStateDirs, checkpoint: &DbCheckpoint) -> RestoredDb {
    let files: Vec<(String, Vec<u8>)> = checkpoint
        .files
        .iter()
        .map(|f| (f.clone(), std::fs::read(checkpoint.dir.join(f)).unwrap()))
        .collect();
    RestoredDb::open(
        &dirs.scratch_dir(),
        files.iter().map(|(n, b)| (n.as_str(), b.as_slice())),
    )
    .unwrap()
}

/// A xorshift generator from a fixed seed: `next(n)` is a number below `n`, the same
/// sequence every run, so operators compared on random input all see the same input.
pub(crate) fn xorshift(mut seed: u64) -> impl FnMut(u64) -> u64 {
    move |n| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    }
}
