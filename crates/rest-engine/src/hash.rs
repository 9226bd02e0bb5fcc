//! FNV-1a, the hash behind cursors and idempotency fingerprints (ETags use XXH3):
//! small, and its output never changes between releases or Rust versions.

pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

pub fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, b| (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3))
}
