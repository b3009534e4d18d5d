//! Helpers shared by this crate's tests.

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
