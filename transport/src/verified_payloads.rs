//! Sealed payloads a consumer has verified, kept by the identity of their file, so that a payload
//! handed over again (a producer's cached body: the same immutable memfd for every publication
//! of it) is served from the mapping already checked instead of being mapped and checksummed
//! again. Off unless [`ConsumerOptions::keep_verified_bytes`](crate::ConsumerOptions) asks for it.
//!
//! Why a hit needs no new check. A kept entry holds its file's mapping, so the file stays alive
//! and no other live file on that device has its inode number: a received descriptor with the
//! same `(st_dev, st_ino)` is the same file. That file passed [`SealedBytes::verify`] (seals,
//! size, crc32) once, and its seals (WRITE, SHRINK, GROW) can never be removed, so its bytes and
//! size are what they were then. The handle's length and crc32 must still equal the entry's:
//! a producer naming other bytes for the same file is refused as it would be by a fresh check.
//!
//! Only payloads handed over more than once are kept: a payload is first only *noted* (its
//! identity, length and crc32, no mapping held), and kept when it comes again and passes a full
//! check again. A producer that makes every payload afresh therefore leaves nothing mapped here,
//! and memory still follows what is in flight; one that hands out a cached payload has it served
//! from here from the third time on. A noted identity is only a hint, never trusted: its file
//! may be gone and its inode number reused, which is why the second sight checks in full.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

use crate::sealed::{REQUIRED_SEALS, SealedBytes, SealedError, check_seals};
use crate::sync::{AtomicU64, Mutex, Ordering};

/// A verified payload and the identity of its file.
struct Kept {
    device: u64,
    inode: u64,
    crc: u32,
    bytes: SealedBytes,
}

/// How many payloads seen once are remembered, to be kept if they come again.
const NOTED: usize = 64;

/// A payload verified once and not kept: what it would take to recognise it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Noted {
    device: u64,
    inode: u64,
    len: u64,
    crc: u32,
}

/// Verified payloads, most recently used first, holding at most `max_bytes` of mappings.
pub(crate) struct VerifiedPayloads {
    max_bytes: u64,
    kept: Mutex<VecDeque<Kept>>,
    noted: Mutex<VecDeque<Noted>>,
    /// Payloads served from a kept mapping, without a new check.
    reused: AtomicU64,
}

impl VerifiedPayloads {
    /// Keeps up to `max_bytes` of verified payloads; 0 keeps none (every payload is checked).
    pub(crate) fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes,
            kept: Mutex::new(VecDeque::new()),
            noted: Mutex::new(VecDeque::new()),
            reused: AtomicU64::new(0),
        }
    }

    /// Whether `payload` was noted before (and is no longer, since it is about to be kept);
    /// notes it otherwise.
    fn seen_before(&self, payload: Noted) -> bool {
        let mut noted = self
            .noted
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(position) = noted.iter().position(|entry| *entry == payload) {
            noted.remove(position);
            return true;
        }
        noted.push_front(payload);
        noted.truncate(NOTED);
        false
    }

    /// How many payloads were served from a kept mapping.
    pub(crate) fn reused(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }

    /// `fd` checked against `len` and `crc`: the kept mapping of the same file if there is one,
    /// otherwise [`SealedBytes::verify`], whose result is kept when it fits and was seen before.
    /// `fd` is closed on return either way.
    pub(crate) fn verify(
        &self,
        fd: OwnedFd,
        len: u64,
        crc: u32,
    ) -> Result<SealedBytes, SealedError> {
        if self.max_bytes == 0 {
            return SealedBytes::verify(fd, len, crc);
        }
        check_seals(&fd, REQUIRED_SEALS)?;
        let stat = rustix::fs::fstat(&fd).map_err(|errno| SealedError::Io {
            op: "stat payload",
            source: errno.into(),
        })?;
        let (device, inode) = (stat.st_dev, stat.st_ino);
        let mut kept = self
            .kept
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(position) = kept
            .iter()
            .position(|entry| entry.device == device && entry.inode == inode)
        {
            let entry = kept.remove(position).expect("the position was just found");
            let answer = if entry.bytes.len() as u64 != len {
                Err(SealedError::WrongSize {
                    expected: len,
                    actual: entry.bytes.len() as u64,
                })
            } else if entry.crc != crc {
                Err(SealedError::ChecksumMismatch {
                    expected: crc,
                    found: entry.crc,
                })
            } else {
                self.reused.fetch_add(1, Ordering::Relaxed);
                Ok(entry.bytes.clone())
            };
            kept.push_front(entry);
            return answer;
        }
        // Checked outside the lock: a crc32 over megabytes must not hold up other redemptions.
        drop(kept);
        let bytes = SealedBytes::verify(fd, len, crc)?;
        let payload = Noted {
            device,
            inode,
            len,
            crc,
        };
        if len <= self.max_bytes && self.seen_before(payload) {
            let mut kept = self
                .kept
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            kept.push_front(Kept {
                device,
                inode,
                crc,
                bytes: bytes.clone(),
            });
            let mut total: u64 = kept.iter().map(|entry| entry.bytes.len() as u64).sum();
            while total > self.max_bytes {
                let evicted = kept.pop_back().expect("a total above 0 has an entry");
                total -= evicted.bytes.len() as u64;
            }
        }
        Ok(bytes)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::SealedPayload;
    use std::os::fd::AsFd;

    fn payload(len: usize, seed: u8) -> SealedPayload {
        let bytes: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect();
        SealedPayload::from_bytes(&bytes).unwrap()
    }

    /// `payload` as a consumer receives it: a descriptor of its own for the same file.
    fn check(verified: &VerifiedPayloads, payload: &SealedPayload) -> SealedBytes {
        let fd = payload.as_fd().try_clone_to_owned().unwrap();
        verified.verify(fd, payload.len(), payload.crc()).unwrap()
    }

    #[test]
    fn a_payload_handed_over_again_is_served_from_the_kept_mapping() {
        let verified = VerifiedPayloads::new(1 << 20);
        let cached = payload(100_000, 1);
        check(&verified, &cached);
        let first = check(&verified, &cached);
        assert_eq!(
            verified.reused(),
            0,
            "seen once only: checked again, now kept"
        );
        let again = check(&verified, &cached);
        assert_eq!(first.as_ptr(), again.as_ptr(), "the kept mapping");
        assert_eq!(verified.reused(), 1);
        let other = payload(100_000, 1);
        let fresh = check(&verified, &other);
        assert_eq!(
            verified.reused(),
            1,
            "same bytes, another file: checked anew"
        );
        assert_eq!(&*fresh, &*first);
    }

    #[test]
    fn payloads_made_afresh_each_time_are_never_kept() {
        let verified = VerifiedPayloads::new(1 << 20);
        for seed in 0..3 {
            check(&verified, &payload(10_000, seed));
        }
        assert!(verified.kept.lock().unwrap().is_empty());
        assert_eq!(verified.reused(), 0);
    }

    #[test]
    fn keeping_nothing_checks_every_time() {
        let verified = VerifiedPayloads::new(0);
        let cached = payload(10_000, 2);
        check(&verified, &cached);
        check(&verified, &cached);
        assert_eq!(verified.reused(), 0);
    }

    #[test]
    fn a_kept_file_named_with_other_bytes_is_refused() {
        let verified = VerifiedPayloads::new(1 << 20);
        let cached = payload(10_000, 3);
        check(&verified, &cached);
        check(&verified, &cached);
        let fd = || cached.as_fd().try_clone_to_owned().unwrap();
        assert!(matches!(
            verified.verify(fd(), cached.len(), cached.crc() ^ 1),
            Err(SealedError::ChecksumMismatch { .. })
        ));
        assert!(matches!(
            verified.verify(fd(), cached.len() - 1, cached.crc()),
            Err(SealedError::WrongSize { .. })
        ));
        // Still kept, and still served for the true claim.
        check(&verified, &cached);
        assert_eq!(verified.reused(), 1);
    }

    /// A descriptor that is not sealed is refused, whether or not payloads are kept (when they
    /// are, `check_seals` now runs before the `fstat` that looks it up).
    #[test]
    fn an_unsealed_file_is_refused_whether_or_not_payloads_are_kept() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(10).unwrap();
        for keep in [0, 1 << 20] {
            let verified = VerifiedPayloads::new(keep);
            let fd = std::os::fd::OwnedFd::from(file.try_clone().unwrap());
            assert!(matches!(
                verified.verify(fd, 10, 0),
                Err(SealedError::NotSealed { found: 0, .. })
            ));
        }
    }

    #[test]
    fn the_least_recently_used_go_first_past_the_bound() {
        let verified = VerifiedPayloads::new(25_000);
        let payloads: Vec<SealedPayload> = (0..3).map(|seed| payload(10_000, seed)).collect();
        for payload in payloads.iter().chain(&payloads) {
            check(&verified, payload);
        }
        // 30,000 bytes were verified into 25,000 of room: the oldest went, the newest stayed.
        check(&verified, &payloads[2]);
        assert_eq!(verified.reused(), 1);
        check(&verified, &payloads[0]);
        assert_eq!(verified.reused(), 1, "the oldest was checked anew");
    }
}
