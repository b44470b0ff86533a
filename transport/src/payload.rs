//! Moving bytes between process memory and a slot's payload, which other processes may store into
//! at any moment.
//!
//! Racing stores are not a corner case here but part of the design: a reclaim hands the slot to a
//! new writer while a paused former holder may still be copying, and a same-uid process may
//! scribble whenever it likes. Plain loads and stores (`memcpy`, `ptr::copy`, a `&[u8]` over the
//! mapping) that race with a store are undefined behaviour in Rust's memory model, whichever
//! process makes the store. Relaxed atomic loads and stores of whole aligned words are not: each
//! load returns some word that was stored. So the payload is only ever touched as `AtomicU64`s, a
//! racing copy yields some mix of whole words, and the crc32 against the handle rejects it.
//!
//! Cost: atomics are not vectorized, so a copy is one 8-byte load and one 8-byte store per word
//! instead of wide SIMD moves. The reader's crc32 is taken chunk by chunk from the private copy
//! while the chunk is still in L1 cache, which wins back a pass over the bytes;
//! `cargo bench -p shmbridge --bench handoff` prints the hand-off against memcpy + crc32.

use crate::sync::{AtomicU64, Ordering};

/// Bytes per payload word. Payloads are little-endian words, as the layout is.
pub(crate) const WORD: usize = 8;

/// Bytes copied between two crc32 updates: small enough to still be in L1 when hashed.
const CHUNK_BYTES: usize = 16 * 1024;

/// Stores one word of payload bytes.
pub(crate) fn store_word(word: &AtomicU64, bytes: [u8; WORD]) {
    word.store(u64::from_le_bytes(bytes), Ordering::Relaxed);
}

/// Stores `src` into `words` (exactly `words.len() * 8` bytes of it) and feeds it to `hasher`.
pub(crate) fn store_words(words: &[AtomicU64], src: &[u8], hasher: &mut crc32fast::Hasher) {
    assert_eq!(src.len(), words.len() * WORD, "whole words only");
    for (words, bytes) in words
        .chunks(CHUNK_BYTES / WORD)
        .zip(src.chunks(CHUNK_BYTES))
    {
        for (word, bytes) in words.iter().zip(bytes.chunks_exact(WORD)) {
            store_word(
                word,
                bytes.try_into().expect("chunks_exact gives whole words"),
            );
        }
        hasher.update(bytes);
    }
}

/// Replaces the contents of `dst` with the first `len` bytes of `words` and returns their crc32,
/// computed over `dst` (the private copy), never over shared memory.
///
/// # Panics
/// If `len` exceeds the words' bytes: callers bound it by the slot size first.
pub(crate) fn load(words: &[AtomicU64], len: usize, dst: &mut Vec<u8>) -> u32 {
    assert!(len <= words.len() * WORD, "read past the slot");
    dst.clear();
    dst.reserve(len.div_ceil(WORD) * WORD);
    let mut hasher = crc32fast::Hasher::new();
    for chunk in words[..len.div_ceil(WORD)].chunks(CHUNK_BYTES / WORD) {
        let start = dst.len();
        let spare = &mut dst.spare_capacity_mut()[..chunk.len() * WORD];
        for (word, out) in chunk.iter().zip(spare.chunks_exact_mut(WORD)) {
            let bytes = word.load(Ordering::Relaxed).to_le_bytes();
            for (out, byte) in out.iter_mut().zip(bytes) {
                out.write(byte);
            }
        }
        // The last chunk may end in a partial word: keep only the bytes asked for.
        let end = (start + chunk.len() * WORD).min(len);
        // SAFETY: the loop above initialized the `chunk.len() * WORD` bytes of spare capacity
        // that follow `start` (the reserve above made room for every word up to `len`), and
        // `start <= end <= start + chunk.len() * WORD`.
        unsafe { dst.set_len(end) };
        hasher.update(&dst[start..]);
    }
    hasher.finalize()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn words(n: usize) -> Vec<AtomicU64> {
        (0..n).map(|_| AtomicU64::new(u64::MAX)).collect()
    }

    #[test]
    fn bytes_round_trip_at_every_length_around_words_and_chunks() {
        for len in [
            0,
            1,
            7,
            8,
            9,
            63,
            CHUNK_BYTES - 1,
            CHUNK_BYTES,
            CHUNK_BYTES + 13,
        ] {
            let src: Vec<u8> = (0..len).map(|i| (i * 131 % 251) as u8).collect();
            let shared = words(len.div_ceil(WORD) + 1);
            let whole = len / WORD * WORD;
            let mut hasher = crc32fast::Hasher::new();
            store_words(&shared[..whole / WORD], &src[..whole], &mut hasher);
            if whole < len {
                let mut last = [0; WORD];
                last[..len - whole].copy_from_slice(&src[whole..]);
                store_word(&shared[whole / WORD], last);
                hasher.update(&src[whole..]);
            }
            assert_eq!(hasher.finalize(), crc32fast::hash(&src), "len {len}");
            let mut dst = vec![0xAA; 3];
            let crc = load(&shared, len, &mut dst);
            assert_eq!(dst, src, "len {len}");
            assert_eq!(crc, crc32fast::hash(&src), "len {len}");
        }
    }

    #[test]
    #[should_panic(expected = "read past the slot")]
    fn a_length_past_the_slot_is_refused() {
        load(&words(2), 17, &mut Vec::new());
    }
}
