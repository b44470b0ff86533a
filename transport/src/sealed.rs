//! Sealed payloads: one publication's bytes in a memfd that the kernel keeps immutable, for
//! bodies larger than a slot. The producer writes them ([`SealedWriter`]) and seals them
//! ([`SealedPayload`]); the consumer, given the descriptor and the handle's length and crc,
//! checks the seals, size and crc before it trusts a byte ([`SealedBytes`]).
//!
//! See "Sealed publications" in [`crate::layout`] for the rules a peer follows.

// Design notes for maintainers:
// - The producer writes with write(2), never through a writable mapping: F_SEAL_WRITE is refused
//   (EBUSY) while a writable shared mapping of the file exists, and a writer that never maps has
//   nothing to unmap before sealing.
// - The consumer needs F_SEAL_WRITE (the bytes can never change again: write(2), writable
//   mappings and hole punching all fail with EPERM) and F_SEAL_SHRINK (the file can never become
//   shorter than the mapping, so touching it cannot raise SIGBUS). F_SEAL_GROW keeps the size the
//   consumer checked equal to the size for the file's life. F_SEAL_SEAL is the producer's promise
//   to add nothing later; a consumer does not need it, so it does not require it.
// - The crc is computed over the mapping itself: with the seals checked, those are the bytes
//   every later read sees, so no private copy is needed for the check to hold.
// - The mapping is populated when made (MAP_POPULATE): the crc touches every page at once anyway,
//   and one pass that maps them all cost 11.9 ms at 64 MiB against 16.4 ms faulting them one by
//   one (map + crc + unmap, measured for the large_designs bench).

use std::fs::File;
use std::io::{self, Write};
use std::ops::Deref;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use memmap2::{Mmap, MmapOptions};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use thiserror::Error;

/// Seals a consumer requires before it maps a payload.
pub(crate) const REQUIRED_SEALS: SealFlag = SealFlag::F_SEAL_WRITE
    .union(SealFlag::F_SEAL_SHRINK)
    .union(SealFlag::F_SEAL_GROW);

/// Times [`SealedWriter::finish`] asks for the seals while the kernel answers EBUSY.
const SEAL_ATTEMPTS: u32 = 3;

/// Why a payload could not be made, or a received one is not trusted.
#[derive(Debug, Error)]
pub enum SealedError {
    #[error(
        "payload descriptor lacks seals {missing:#x} (it has {found:#x}): its bytes could still \
         change or shrink"
    )]
    NotSealed { missing: u32, found: u32 },
    #[error("payload descriptor holds {actual} bytes, the handle says {expected}")]
    WrongSize { expected: u64, actual: u64 },
    #[error("payload crc32 {found:08x}, handle says {expected:08x}")]
    ChecksumMismatch { expected: u32, found: u32 },
    #[error("{op} failed: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

fn io_error(op: &'static str) -> impl FnOnce(Errno) -> SealedError {
    move |errno| SealedError::Io {
        op,
        source: errno.into(),
    }
}

/// A new memfd that can be sealed, closed on exec. `MFD_NOEXEC_SEAL` (Linux >= 6.3) where the
/// kernel has it, so the file can never be made executable; older kernels refuse the flag with
/// EINVAL and get a plain one. The one way this crate makes a memfd (segments too).
pub(crate) fn sealable_memfd(name: &std::ffi::CStr) -> io::Result<OwnedFd> {
    use rustix::fs::{MemfdFlags, memfd_create};
    let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    match memfd_create(name, flags | MemfdFlags::NOEXEC_SEAL) {
        Err(rustix::io::Errno::INVAL) => memfd_create(name, flags),
        created => created,
    }
    .map_err(io::Error::from)
}

/// The name every sealed payload's memfd carries: `/proc/PID/maps` and `/proc/PID/fd` show it as
/// `/memfd:shmbridge-payload (deleted)`, so a process's leftover payloads can be counted (the
/// segment's own memfd is `shmbridge`).
pub const PAYLOAD_MEMFD_NAME: &std::ffi::CStr = c"shmbridge-payload";

/// Writes a payload into a new memfd with write(2), computing its crc32 as the bytes go by, so
/// a generated body needs no intermediate buffer. [`SealedWriter::finish`] seals it.
#[derive(Debug)]
pub struct SealedWriter {
    file: File,
    len: u64,
    hasher: crc32fast::Hasher,
    /// The [`SealedPayload::id`] the payload will have: given when the writer is made, so the
    /// producer can count the bytes of a payload still being written as that payload's.
    id: u64,
}

/// Process-local and never reused, unlike a descriptor number or the `Arc`'s address, which a
/// later payload may get while a ticket of this one still counts. Std atomics, not the loom
/// shim: no model races on it.
fn next_payload_id() -> u64 {
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    NEXT_ID.fetch_add(1, Relaxed)
}

impl SealedWriter {
    pub fn new() -> Result<Self, SealedError> {
        let fd = sealable_memfd(PAYLOAD_MEMFD_NAME).map_err(|source| SealedError::Io {
            op: "memfd_create",
            source,
        })?;
        Ok(Self {
            file: File::from(fd),
            len: 0,
            hasher: crc32fast::Hasher::new(),
            id: next_payload_id(),
        })
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The id its payload will have ([`SealedPayload::id`]).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Seals the payload against every change (write, shrink, grow, and further seals) and
    /// hands it out.
    ///
    /// The kernel refuses F_SEAL_WRITE with EBUSY while any page of the file has a reference it
    /// cannot account for, after waiting about 150 ms for it to go. Such references are
    /// transient: a memory monitor sampling pages (DAMON's reclaim, on by default on this kind
    /// of VM) takes and drops them. Both benches met it on 64 MiB bodies, so sealing is tried
    /// [`SEAL_ATTEMPTS`] times before the EBUSY is returned.
    pub fn finish(self) -> Result<SealedPayload, SealedError> {
        let seal = || {
            fcntl(
                &self.file,
                FcntlArg::F_ADD_SEALS(REQUIRED_SEALS | SealFlag::F_SEAL_SEAL),
            )
        };
        let mut sealed = seal();
        for _ in 1..SEAL_ATTEMPTS {
            if sealed != Err(Errno::EBUSY) {
                break;
            }
            sealed = seal();
        }
        sealed.map_err(io_error("seal payload"))?;
        Ok(SealedPayload {
            fd: Arc::new(OwnedFd::from(self.file)),
            len: self.len,
            crc: self.hasher.finalize(),
            id: self.id,
        })
    }
}

impl Write for SealedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.file.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.len += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A sealed payload: its descriptor, length and crc32. Cloning shares the descriptor, so a cache
/// can hand the same immutable bytes to every publication of them.
#[derive(Clone, Debug)]
pub struct SealedPayload {
    fd: Arc<OwnedFd>,
    len: u64,
    crc: u32,
    /// Which payload this is, shared by its clones: the producer counts the bytes of one
    /// payload in flight once, however many tickets publish it.
    id: u64,
}

impl SealedPayload {
    /// `bytes` written into a new sealed memfd.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealedError> {
        let mut writer = SealedWriter::new()?;
        writer.write_all(bytes).map_err(|source| SealedError::Io {
            op: "write payload",
            source,
        })?;
        writer.finish()
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn crc(&self) -> u32 {
        self.crc
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

impl AsFd for SealedPayload {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A received payload, verified: sealed against writing, shrinking and growing, of the expected
/// size and crc32. Derefs to its bytes, which are the mapping itself (no copy) and can never
/// change. Holds no descriptor: the mapping alone keeps the memory, which the kernel frees when
/// the last mapping and descriptor of the payload are gone. Clones share the one mapping.
#[derive(Clone)]
pub struct SealedBytes {
    /// `None` for an empty payload, which has nothing to map.
    map: Option<Arc<Mmap>>,
}

/// Refuses `fd` unless it has the `required` seals (a payload's: against writing, shrinking and
/// growing): the first check on a received descriptor, before anything else (a `fstat`) asks its file system about it, so a
/// descriptor of a FUSE file, say, costs its daemon no request before it is refused.
pub(crate) fn check_seals(fd: &impl AsFd, required: SealFlag) -> Result<(), SealedError> {
    let seals = match fcntl(fd, FcntlArg::F_GET_SEALS) {
        Ok(seals) => seals as u32,
        // Only memfds know seals; anything else answers EINVAL and has none.
        Err(Errno::EINVAL) => 0,
        Err(errno) => return Err(io_error("read payload seals")(errno)),
    };
    let required = required.bits() as u32;
    if seals & required != required {
        return Err(SealedError::NotSealed {
            missing: required & !seals,
            found: seals,
        });
    }
    Ok(())
}

/// A descriptor of `file` opened read-only, to map, or `None` where there is no `/proc` to
/// reopen it through. Before Linux 6.7 the kernel refuses a shared read-only mapping of a
/// write-sealed memfd through a descriptor opened for writing (EPERM), and the producer's
/// descriptor, which SCM_RIGHTS hands over, was opened for writing; reopening
/// `/proc/self/fd/N` gives a read-only one that every kernel maps. Without `/proc` (a container
/// that does not mount it) `file` itself is mapped, which works from 6.7 on.
pub(crate) fn read_only(file: &File) -> io::Result<Option<File>> {
    match File::open(format!("/proc/self/fd/{}", file.as_raw_fd())) {
        Ok(reopened) => Ok(Some(reopened)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

impl SealedBytes {
    /// Checks `fd` against the `len` and `crc` a handle carries and maps it read-only. The
    /// descriptor is closed on return, whatever the outcome.
    pub fn verify(fd: OwnedFd, len: u64, crc: u32) -> Result<Self, SealedError> {
        let file = File::from(fd);
        check_seals(&file, REQUIRED_SEALS)?;
        // Sealed against shrinking and growing: this size is the file's for good.
        let actual = file
            .metadata()
            .map_err(|source| SealedError::Io {
                op: "stat payload",
                source,
            })?
            .len();
        if actual != len {
            return Err(SealedError::WrongSize {
                expected: len,
                actual,
            });
        }
        let map = if len == 0 {
            None
        } else {
            let map_len = usize::try_from(len).map_err(|_| SealedError::WrongSize {
                expected: len,
                actual,
            })?;
            let read_only = read_only(&file).map_err(|source| SealedError::Io {
                op: "reopen payload read-only",
                source,
            })?;
            let mappable = read_only.as_ref().unwrap_or(&file);
            // SAFETY: reading this mapping through `&[u8]` (here for the crc, and for as long
            // as the `SealedBytes` lives) is sound only because of the seals checked above, on
            // this very file: F_SEAL_WRITE means no process can change the bytes by any means
            // (write(2), a writable mapping, hole punching all fail with EPERM, and no writable
            // mapping existed when the seal was added, or adding it would have failed), and
            // F_SEAL_SHRINK means the file stays at least `len` bytes long, so no page of the
            // mapping can ever fault with SIGBUS. Seals cannot be removed. The mapping is
            // read-only and shared only by this value's clones. `mappable` is `file` or a
            // reopening of that same descriptor (the same file, so the same seals).
            let map = unsafe { MmapOptions::new().len(map_len).populate().map(mappable) }.map_err(
                |source| SealedError::Io {
                    op: "map payload",
                    source,
                },
            )?;
            Some(Arc::new(map))
        };
        let bytes = Self { map };
        let found = crc32fast::hash(&bytes);
        if found != crc {
            return Err(SealedError::ChecksumMismatch {
                expected: crc,
                found,
            });
        }
        Ok(bytes)
    }
}

impl Deref for SealedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.map.as_deref().map(|map| &map[..]).unwrap_or_default()
    }
}

impl AsRef<[u8]> for SealedBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::fmt::Debug for SealedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedBytes")
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn a_payload_round_trips_through_its_descriptor() {
        let bytes = pattern(100_000);
        let payload = SealedPayload::from_bytes(&bytes).unwrap();
        assert_eq!(payload.len(), bytes.len() as u64);
        assert_eq!(payload.crc(), crc32fast::hash(&bytes));
        let fd = payload.as_fd().try_clone_to_owned().unwrap();
        let verified = SealedBytes::verify(fd, payload.len(), payload.crc()).unwrap();
        assert_eq!(&*verified, &bytes[..]);
    }

    #[test]
    fn the_writer_hashes_exactly_what_it_wrote() {
        let mut writer = SealedWriter::new().unwrap();
        for chunk in pattern(10_000).chunks(777) {
            writer.write_all(chunk).unwrap();
        }
        assert_eq!(writer.len(), 10_000);
        let payload = writer.finish().unwrap();
        assert_eq!(payload.crc(), crc32fast::hash(&pattern(10_000)));
    }

    #[test]
    fn an_empty_payload_verifies_to_no_bytes() {
        let payload = SealedPayload::from_bytes(&[]).unwrap();
        let fd = payload.as_fd().try_clone_to_owned().unwrap();
        let verified = SealedBytes::verify(fd, 0, crc32fast::hash(&[])).unwrap();
        assert!(verified.is_empty());
    }

    #[test]
    fn a_sealed_payload_refuses_every_change() {
        let payload = SealedPayload::from_bytes(&pattern(8192)).unwrap();
        let fd = payload.as_fd();
        assert_eq!(nix::unistd::ftruncate(fd, 0), Err(Errno::EPERM));
        assert_eq!(nix::unistd::ftruncate(fd, 1 << 20), Err(Errno::EPERM));
        assert_eq!(nix::unistd::write(fd, b"x"), Err(Errno::EPERM));
        assert_eq!(
            nix::fcntl::fallocate(
                fd,
                nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                    | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
                0,
                4096
            ),
            Err(Errno::EPERM)
        );
        let file = File::from(fd.try_clone_to_owned().unwrap());
        // SAFETY: the mapping is refused, so no memory is ever touched.
        let writable = unsafe { memmap2::MmapOptions::new().len(8192).map_mut(&file) };
        assert!(writable.is_err(), "a writable mapping of a sealed payload");
        assert!(
            fcntl(fd, FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_FUTURE_WRITE)).is_err(),
            "F_SEAL_SEAL: no more seals"
        );
    }

    /// A memfd written but never sealed: the producer could still change it under the mapping.
    /// The path every kernel maps: the received descriptor is writable (the producer's, as
    /// SCM_RIGHTS hands it over; before Linux 6.7 a read-only shared mapping of a write-sealed
    /// memfd through it fails with EPERM), the one mapped is a read-only reopening of the same
    /// file, and a payload verifies through it.
    #[test]
    fn a_payload_is_mapped_through_a_read_only_reopening() {
        use nix::fcntl::OFlag;
        use std::os::unix::fs::MetadataExt;

        let bytes = pattern(10_000);
        let payload = SealedPayload::from_bytes(&bytes).unwrap();
        let access = |file: &File| {
            OFlag::from_bits_truncate(fcntl(file, FcntlArg::F_GETFL).unwrap()) & OFlag::O_ACCMODE
        };
        let received = File::from(payload.as_fd().try_clone_to_owned().unwrap());
        assert_eq!(access(&received), OFlag::O_RDWR);
        let reopened = read_only(&received)
            .unwrap()
            .expect("/proc is mounted here");
        assert_eq!(access(&reopened), OFlag::O_RDONLY);
        let (received_meta, reopened_meta) =
            (received.metadata().unwrap(), reopened.metadata().unwrap());
        assert_eq!(
            (received_meta.dev(), received_meta.ino()),
            (reopened_meta.dev(), reopened_meta.ino())
        );
        let verified =
            SealedBytes::verify(OwnedFd::from(received), payload.len(), payload.crc()).unwrap();
        assert_eq!(&verified[..], &bytes[..]);
    }

    #[test]
    fn an_unsealed_descriptor_is_refused() {
        let fd = sealable_memfd(c"unsealed").unwrap();
        let bytes = pattern(4096);
        nix::unistd::write(&fd, &bytes).unwrap();
        let refused = SealedBytes::verify(fd, 4096, crc32fast::hash(&bytes)).unwrap_err();
        assert!(
            matches!(refused, SealedError::NotSealed { missing, .. }
                if missing == REQUIRED_SEALS.bits() as u32),
            "{refused:?}"
        );
    }

    /// Sealed against shrinking and growing but still writable: as good as unsealed.
    #[test]
    fn a_descriptor_without_the_write_seal_is_refused() {
        let fd = sealable_memfd(c"writable").unwrap();
        nix::unistd::write(&fd, &pattern(64)).unwrap();
        fcntl(
            &fd,
            FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW),
        )
        .unwrap();
        let refused = SealedBytes::verify(fd, 64, crc32fast::hash(&pattern(64))).unwrap_err();
        assert!(
            matches!(refused, SealedError::NotSealed { missing, .. }
                if missing == SealFlag::F_SEAL_WRITE.bits() as u32),
            "{refused:?}"
        );
    }

    #[test]
    fn a_plain_file_is_refused_as_unsealed() {
        let file = tempfile::tempfile().unwrap();
        let refused = SealedBytes::verify(OwnedFd::from(file), 0, 0).unwrap_err();
        assert!(matches!(refused, SealedError::NotSealed { found: 0, .. }));
    }

    #[test]
    fn the_wrong_size_or_crc_is_refused() {
        let bytes = pattern(5000);
        let payload = SealedPayload::from_bytes(&bytes).unwrap();
        let fd = || payload.as_fd().try_clone_to_owned().unwrap();
        assert!(matches!(
            SealedBytes::verify(fd(), 4999, payload.crc()),
            Err(SealedError::WrongSize {
                expected: 4999,
                actual: 5000
            })
        ));
        assert!(matches!(
            SealedBytes::verify(fd(), 5000, payload.crc() ^ 1),
            Err(SealedError::ChecksumMismatch { found, .. }) if found == payload.crc()
        ));
    }

    #[test]
    fn sealed_bytes_can_cross_threads() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<SealedBytes>();
        send_sync::<SealedPayload>();
    }
}
