//! Fixed, well-mixed 64-bit hashing.
//!
//! Everything here is deterministic across runs, processes and versions:
//! shard routing and request fingerprints are written to disk by the log,
//! so no per-process random seed (`RandomState`) is allowed.

use std::hash::{BuildHasherDefault, Hasher};

const K0: u64 = 0x9E37_79B9_7F4A_7C15;
const K1: u64 = 0xBF58_476D_1CE4_E5B9;
const K2: u64 = 0x94D0_49BB_1331_11EB;

/// The splitmix64 finalizer: a bijection of u64 with full avalanche.
#[inline]
pub fn fold(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(K1);
    x ^= x >> 27;
    x = x.wrapping_mul(K2);
    x ^ (x >> 31)
}

/// Combines a running hash with one more word.
#[inline]
pub fn mix(state: u64, word: u64) -> u64 {
    fold(state.wrapping_add(K0) ^ word.rotate_left(23)).wrapping_add(word)
}

/// Hashes a byte string under a domain tag.
pub fn bytes(tag: u64, data: &[u8]) -> u64 {
    let mut h = mix(tag, data.len() as u64);
    for chunk in data.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = mix(h, u64::from_le_bytes(word));
    }
    h
}

/// Maps a hash onto `0..n` without division (Lemire's fast range).
#[inline]
pub fn range(hash: u64, n: usize) -> usize {
    ((u128::from(hash) * n as u128) >> 64) as usize
}

/// A `Hasher` for integer keys in std maps off the hot path; deterministic.
#[derive(Default, Clone, Copy)]
pub struct WordHasher(u64);

impl Hasher for WordHasher {
    fn finish(&self) -> u64 {
        fold(self.0)
    }
    fn write(&mut self, data: &[u8]) {
        self.0 = bytes(self.0, data);
    }
    fn write_u64(&mut self, word: u64) {
        self.0 = mix(self.0, word);
    }
    fn write_u32(&mut self, word: u32) {
        self.0 = mix(self.0, u64::from(word));
    }
}

/// A `BuildHasher` of [`WordHasher`]: fixed and seedless, for maps keyed by
/// integers.
pub type WordBuildHasher = BuildHasherDefault<WordHasher>;
/// A `HashMap` hashed by [`WordHasher`] (the shard's hold, refund and
/// capture maps; loadgen's id maps).
pub type WordMap<K, V> = std::collections::HashMap<K, V, WordBuildHasher>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_spreads_sequential_ids() {
        let mut counts = [0u32; 4];
        for id in 0..40_000u64 {
            counts[range(fold(id), 4)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn bytes_depends_on_length_and_tag() {
        assert_ne!(bytes(1, b"a"), bytes(1, b"a\0"));
        assert_ne!(bytes(1, b"a"), bytes(2, b"a"));
        assert_eq!(bytes(1, b"abcdefghij"), bytes(1, b"abcdefghij"));
    }
}
