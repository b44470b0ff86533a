//! Moving bytes between process memory and a slot's payload, which other processes may store into
//! at any moment.
//!
//! Racing stores are not a corner case here but part of the design: a reclaim hands the slot to a
//! new writer while a paused former holder may still be copying, and a same-uid process may
//! scribble whenever it likes. Plain loads and stores (`memcpy`, `ptr::copy`, a `&[u8]` over the
//! mapping) that race with a store are undefined behaviour in Rust's memory model, whichever
//! process makes the store. Relaxed atomic accesses are not: each load returns some value that was
//! stored. So the payload is only ever reached as `AtomicU64`s ([`crate::Segment`] never lends it
//! out as bytes), and every copy is a sequence of relaxed atomic accesses; a racing copy yields
//! some mix of old and new bytes, which the crc32 against the handle rejects.
//!
//! Two implementations of that one contract:
//! - x86_64: `rep movsb` in inline assembly. An asm block counts, for Rust's memory model, as any
//!   sequence of operations Rust code could perform that explains its effect; `rep movsb` moves
//!   each byte with a single-copy-atomic access, so it is explained by relaxed atomic byte loads
//!   and stores (the argument crates such as `atomic-maybe-uninit` rest on). With ERMS/FSRM it
//!   runs at memcpy speed. Word-by-word atomics are never vectorized: with them (commit 2fcaba4)
//!   `cargo bench -p shmbridge --bench handoff` put the hand-off at 1.55× its inherent memcpy +
//!   crc32 work at 256,873 bytes, on a busy machine, over the 1.25 allowed.
//! - elsewhere, and under `--cfg loom`: relaxed loads and stores of whole words through the
//!   `AtomicU64`s themselves, so loom tracks every payload access and explores stale reads.

use crate::sync::AtomicU64;

/// Bytes per payload word.
pub(crate) const WORD: usize = 8;

/// Stores `src` into the payload `words` starting at byte `offset`.
///
/// # Panics
/// If the bytes do not fit in `words`: callers bound them by the slot size first.
pub(crate) fn store(words: &[AtomicU64], offset: usize, src: &[u8]) {
    let end = offset
        .checked_add(src.len())
        .expect("offset + len overflows");
    assert!(end <= words.len() * WORD, "write past the slot");
    imp::store(words, offset, src);
}

/// Replaces the contents of `dst` with the first `len` bytes of the payload `words`.
///
/// # Panics
/// If `len` exceeds the words' bytes: callers bound it by the slot size first.
pub(crate) fn load(words: &[AtomicU64], len: usize, dst: &mut Vec<u8>) {
    assert!(len <= words.len() * WORD, "read past the slot");
    dst.clear();
    dst.reserve(len.div_ceil(WORD) * WORD);
    imp::load(words, len, dst);
}

#[cfg(all(target_arch = "x86_64", not(loom)))]
use asm_bytes as imp;
#[cfg(not(all(target_arch = "x86_64", not(loom))))]
use atomic_words as imp;

#[cfg(all(target_arch = "x86_64", not(loom)))]
mod asm_bytes {
    use super::AtomicU64;

    pub(super) fn store(words: &[AtomicU64], offset: usize, src: &[u8]) {
        // SAFETY: the caller checked `offset + src.len() <= words.len() * 8`, so the destination
        // range lies inside `words`, which are writable shared memory reached only through
        // atomics (see the module doc for why a byte-wise asm copy counts as atomic accesses);
        // `src` is process memory and cannot overlap the mapping.
        unsafe {
            movsb(
                words.as_ptr().cast::<u8>().cast_mut().add(offset),
                src.as_ptr(),
                src.len(),
            );
        }
    }

    pub(super) fn load(words: &[AtomicU64], len: usize, dst: &mut Vec<u8>) {
        // SAFETY: `len <= words.len() * 8` (checked by the caller), so the source lies inside
        // `words`; `dst` was cleared and has capacity for at least `len` bytes, and being process
        // memory it does not overlap the mapping. The copy initializes all `len` bytes before
        // `set_len`.
        unsafe {
            movsb(dst.as_mut_ptr(), words.as_ptr().cast::<u8>(), len);
            dst.set_len(len);
        }
    }

    /// `rep movsb`: copies `len` bytes from `src` to `dst`, front to back, one byte-atomic access
    /// at a time as far as any other observer can tell.
    ///
    /// # Safety
    /// `src` must be valid for reads and `dst` for writes of `len` bytes, and they must not overlap.
    unsafe fn movsb(dst: *mut u8, src: *const u8, len: usize) {
        // SAFETY: the caller guarantees both ranges; the direction flag is clear on entry to and
        // exit from any Rust code (SysV ABI), so the copy runs forwards; no stack is used.
        unsafe {
            std::arch::asm!(
                "rep movsb",
                inout("rcx") len => _,
                inout("rdi") dst => _,
                inout("rsi") src => _,
                options(nostack, preserves_flags),
            );
        }
    }
}

#[cfg(any(test, loom, not(target_arch = "x86_64")))]
mod atomic_words {
    use super::{AtomicU64, WORD};
    use crate::sync::Ordering;

    pub(super) fn store(words: &[AtomicU64], offset: usize, mut src: &[u8]) {
        if src.is_empty() {
            return;
        }
        let mut index = offset / WORD;
        let skip = offset % WORD;
        if skip != 0 || src.len() < WORD {
            // A word this write only partly covers: merge with what the slot holds there.
            let take = src.len().min(WORD - skip);
            let mut bytes = words[index].load(Ordering::Relaxed).to_le_bytes();
            bytes[skip..skip + take].copy_from_slice(&src[..take]);
            words[index].store(u64::from_le_bytes(bytes), Ordering::Relaxed);
            src = &src[take..];
            index += 1;
        }
        let mut chunks = src.chunks_exact(WORD);
        for (word, bytes) in words[index..].iter().zip(&mut chunks) {
            let bytes = bytes.try_into().expect("chunks_exact gives whole words");
            word.store(u64::from_le_bytes(bytes), Ordering::Relaxed);
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            let last = &words[index + src.len() / WORD];
            let mut bytes = last.load(Ordering::Relaxed).to_le_bytes();
            bytes[..tail.len()].copy_from_slice(tail);
            last.store(u64::from_le_bytes(bytes), Ordering::Relaxed);
        }
    }

    pub(super) fn load(words: &[AtomicU64], len: usize, dst: &mut Vec<u8>) {
        for word in &words[..len.div_ceil(WORD)] {
            dst.extend_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        dst.truncate(len);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn words(n: usize) -> Vec<AtomicU64> {
        (0..n).map(|_| AtomicU64::new(u64::MAX)).collect()
    }

    /// Both implementations, whichever this target uses, at every offset and length around
    /// word boundaries, up to the very end of the slot.
    #[test]
    fn bytes_round_trip_at_every_offset_and_length_around_words() {
        type Store = fn(&[AtomicU64], usize, &[u8]);
        type Load = fn(&[AtomicU64], usize, &mut Vec<u8>);
        let mut implementations: Vec<(&str, Store, Load)> =
            vec![("atomic_words", atomic_words::store, atomic_words::load)];
        #[cfg(target_arch = "x86_64")]
        implementations.push(("asm_bytes", asm_bytes::store, asm_bytes::load));
        for (name, store, load) in implementations {
            for offset in [0usize, 1, 7, 8, 13] {
                for len in [0, 1, 7, 8, 9, 63, 4097] {
                    let src: Vec<u8> = (0..len).map(|i| (i * 131 % 251) as u8).collect();
                    let shared = words((offset + len).div_ceil(WORD));
                    let before: Vec<u8> = (0..offset).map(|i| i as u8 ^ 0x5A).collect();
                    store(&shared, 0, &before);
                    store(&shared, offset, &src);
                    let mut dst = vec![0xAA; 3];
                    dst.clear();
                    dst.reserve((offset + len).div_ceil(WORD) * WORD);
                    load(&shared, offset + len, &mut dst);
                    let context = format!("{name}: offset {offset} len {len}");
                    assert_eq!(dst[..offset], before, "{context}");
                    assert_eq!(dst[offset..], src, "{context}");
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "read past the slot")]
    fn a_length_past_the_slot_is_refused() {
        load(&words(2), 17, &mut Vec::new());
    }

    #[test]
    #[should_panic(expected = "write past the slot")]
    fn a_write_past_the_slot_is_refused() {
        store(&words(2), 9, &[0; 8]);
    }
}
