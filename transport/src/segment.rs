//! A segment: the public face over the memory two processes share. [`Segment`] creates one,
//! attaches to one, and hands the protocol code its slots; the work lies in files of their own:
//!
//! - `backing`: what the bytes live in (sealed memfd, named file, received descriptor), with the
//!   seals, the creator's `flock`, the up-front reservation and each backing's attach checks;
//! - `header`: writing the header, validating it against the segment before anything is mapped,
//!   and restoring it after a scribble;
//! - `slots`: where each slot's descriptor and payload lie, handed out only as atomics, and
//!   [`SlotView`], a read-only look at one descriptor.
//!
//! Inspectors attach read-only ([`Segment::attach_file_read_only`],
//! [`crate::attach_via_socket_read_only`]): the same validation, a `PROT_READ` mapping, and
//! producers and consumers refuse such a segment, so no store through its pointers is reachable.

mod backing;
mod header;
mod slots;

use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

use memmap2::{MmapOptions, MmapRaw};

use crate::error::{AttachError, CreateError};
use crate::host::Owner;
use crate::layout::{Geometry, GeometryError, Header, SlotDescriptor, SlotState, Word};
use crate::sync::{AtomicU64, Ordering};
use backing::Backing;
use slots::Memory;

pub use slots::SlotView;

/// How many slots a segment has and how large each one is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentConfig {
    pub slot_count: u32,
    /// Payload capacity of one slot in bytes; a multiple of 64.
    pub slot_size: u32,
}

impl SegmentConfig {
    /// Where each part of a segment of this configuration lies, if the layout allows it.
    pub fn geometry(&self) -> Result<Geometry, GeometryError> {
        Geometry::new(self.slot_count, self.slot_size)
    }
}

impl Default for SegmentConfig {
    /// 64 slots of 512 KiB (32 MiB): the seed's 256,873-byte payload with 2x headroom, and more
    /// slots than the seed's 50 concurrent users can hold at once.
    fn default() -> Self {
        Self {
            slot_count: 64,
            slot_size: 512 * 1024,
        }
    }
}

/// A mapped, validated segment.
pub struct Segment {
    memory: Memory,
    /// The validated header, copied at create or attach time; all geometry comes from it, and
    /// the shared header is never re-read for bounds.
    header: Header,
    backing: Backing,
    /// False for a read-only (PROT_READ) attach: producers and consumers refuse such a segment,
    /// so nothing ever stores through its pointers.
    writable: bool,
    /// How the producer's reaper names this process, when an attach over the producer's socket
    /// learned it from the greeting (another PID namespace, a hidden `/proc` entry); `None`:
    /// as the process names itself.
    holder_name: Option<Owner>,
}

impl Segment {
    /// Creates a segment in a sealed memfd.
    pub fn create(config: &SegmentConfig) -> Result<Self, CreateError> {
        let geometry = config.geometry().map_err(CreateError::InvalidConfig)?;
        let backing = Backing::create_memfd(geometry.total_size())?;
        Self::initialize(geometry, backing)
    }

    /// Creates a segment in a new file at `path` (mode 0600, `O_EXCL`) and holds an exclusive
    /// `flock` on it until the segment is dropped, which removes the file again if `path` still
    /// names it.
    pub fn create_file(path: &Path, config: &SegmentConfig) -> Result<Self, CreateError> {
        let geometry = config.geometry().map_err(CreateError::InvalidConfig)?;
        let backing = Backing::create_file(path, geometry.total_size())?;
        Self::initialize(geometry, backing)
    }

    /// A segment on crate-allocated memory, for loom models of the slot protocol.
    #[cfg(loom)]
    pub fn in_memory(config: &SegmentConfig) -> Self {
        let geometry = config
            .geometry()
            .expect("loom models use a valid configuration");
        Self {
            memory: Memory::heap(geometry),
            header: Header::new(
                &geometry,
                1,
                Owner {
                    pid: 0,
                    start_time: 0,
                    pidfs_ino: 0,
                },
                nix::unistd::geteuid().as_raw(),
            ),
            backing: Backing::Heap,
            writable: true,
            holder_name: None,
        }
    }

    /// Writes the header and a FREE word into every descriptor of a new backing, before anyone
    /// else can attach to it.
    fn initialize(geometry: Geometry, backing: Backing) -> Result<Self, CreateError> {
        let creator = Owner::current().map_err(|source| CreateError::Io {
            op: "read /proc/self/stat",
            source,
        })?;
        let epoch = getrandom::u64()
            .map_err(|error| CreateError::Io {
                op: "getrandom",
                source: error.into(),
            })?
            .max(1);
        let header = Header::new(&geometry, epoch, creator, nix::unistd::geteuid().as_raw());
        let map = MmapRaw::map_raw(backing.file())
            .map_err(|source| CreateError::Io { op: "mmap", source })?;
        let found = map.len();
        // Only a same-uid process truncating a new segment file could make this fail.
        let memory = Memory::mapped(map, geometry).ok_or_else(|| CreateError::Io {
            op: "mmap",
            source: std::io::Error::other(format!(
                "the new segment is {found} bytes, expected {}",
                geometry.total_size()
            )),
        })?;
        if let Some(map) = memory.mapping() {
            header::write(map, header);
        }
        let segment = Self {
            memory,
            header,
            backing,
            writable: true,
            holder_name: None,
        };
        for slot in 0..geometry.slot_count() {
            segment
                .descriptor(slot)
                .state
                .store(Word::new(0, SlotState::Free).0, Ordering::Relaxed);
        }
        tracing::debug!(
            epoch = format_args!("{epoch:016x}"),
            slots = geometry.slot_count(),
            "segment created"
        );
        Ok(segment)
    }

    /// Attaches to a segment file created by [`Segment::create_file`].
    pub fn attach_file(path: &Path) -> Result<Self, AttachError> {
        Self::map_and_validate(Backing::open_file(path, true)?, true)
    }

    /// Attaches to a segment file for reading only: the same validation, but opened `O_RDONLY`
    /// and mapped `PROT_READ`, so an inspector can never write. [`Segment::inspect`] works on it;
    /// producers and consumers refuse it.
    pub fn attach_file_read_only(path: &Path) -> Result<Self, AttachError> {
        Self::map_and_validate(Backing::open_file(path, false)?, false)
    }

    /// Attaches to a descriptor received from the producer: a sealed memfd, or a segment file
    /// (which cannot be sealed) held to the same owner and mode checks as [`Segment::attach_file`].
    pub fn attach_fd(fd: OwnedFd) -> Result<Self, AttachError> {
        Self::map_and_validate(Backing::received(fd)?, true)
    }

    /// [`Segment::attach_fd`] mapped `PROT_READ`, for inspectors.
    pub(crate) fn attach_fd_read_only(fd: OwnedFd) -> Result<Self, AttachError> {
        Self::map_and_validate(Backing::received(fd)?, false)
    }

    /// Reads and validates the header against the file's size before mapping anything, then
    /// maps and checks the mapping is still the size the header promises.
    fn map_and_validate(backing: Backing, writable: bool) -> Result<Self, AttachError> {
        let file = backing.file();
        let (header, len) = header::read(file)?;
        let geometry = header::validate(&header, len)?;
        let map = if writable {
            MmapRaw::map_raw(file)
        } else {
            MmapOptions::new().map_raw_read_only(file)
        }
        .map_err(|source| AttachError::Io { op: "mmap", source })?;
        let found = map.len() as u64;
        let memory = Memory::mapped(map, geometry)
            .filter(|_| found == geometry.total_size())
            .ok_or(AttachError::SizeMismatch {
                found,
                expected: geometry.total_size(),
            })?;
        tracing::debug!(
            epoch = format_args!("{:016x}", header.epoch),
            slots = geometry.slot_count(),
            "segment attached"
        );
        Ok(Self {
            memory,
            header,
            backing,
            writable,
            holder_name: None,
        })
    }

    /// Whether this segment may be written: false for a read-only attach.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// The name a consumer of this process stamps in the slots it holds: the one the producer's
    /// greeting gave for it ([`crate::attach_via_socket`]), else the process's own.
    pub fn holder_name(&self) -> std::io::Result<Owner> {
        self.holder_name.map_or_else(Owner::current, Ok)
    }

    /// This segment, its holders named `name` (see [`Segment::holder_name`]).
    pub(crate) fn named_by_producer(self, name: Owner) -> Self {
        Self {
            holder_name: Some(name),
            ..self
        }
    }

    /// An error for the writing roles (producer, consumer) that a read-only segment cannot take.
    pub(crate) fn require_writable(&self, role: &str) -> std::io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("a {role} needs a writable segment; this one is attached read-only"),
            ))
        }
    }

    /// The validated header, as copied at create or attach time.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Writes the validated header back over the shared one if something scribbled on it, so
    /// that later attaches (a restarted consumer) validate again. Returns whether it had to.
    pub(crate) fn repair_header(&self) -> bool {
        self.writable
            && self
                .memory
                .mapping()
                .is_some_and(|map| header::restore(map, &self.header))
    }

    /// Random identity of this segment instance; a re-created segment has a new one.
    pub fn epoch(&self) -> u64 {
        self.header.epoch
    }

    pub fn slot_count(&self) -> u32 {
        self.memory.geometry().slot_count()
    }

    pub fn slot_size(&self) -> u32 {
        self.memory.geometry().slot_size()
    }

    /// The file descriptor to hand to consumers (memfd or segment file).
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.backing.fd()
    }

    /// The segment file's path, for the named-file backing.
    pub fn path(&self) -> Option<&Path> {
        self.backing.path()
    }

    /// Whether the segment file at `path` belongs to a live segment: its creator holds an
    /// exclusive `flock` on it for the segment's whole life ([`Segment::create_file`]) and the
    /// kernel drops that lock when the creator exits, `kill -9` included. Probes with a shared,
    /// non-blocking lock on a new open file description, released before returning; reads
    /// nothing of the file's contents.
    pub fn file_in_use(path: &Path) -> std::io::Result<bool> {
        backing::file_in_use(path)
    }

    /// The descriptor of `slot`.
    ///
    /// # Panics
    /// If `slot` is out of range: callers check indexes that come from outside the process.
    pub(crate) fn descriptor(&self, slot: u32) -> &SlotDescriptor {
        self.memory.descriptor(slot)
    }

    /// `slot`'s payload as `slot_size / 8` words (see [`crate::payload`] for why words).
    ///
    /// Other processes may store into these words at any time, so the payload is never seen as
    /// plain bytes: only as atomics, whose racing accesses are defined.
    pub(crate) fn payload(&self, slot: u32) -> &[AtomicU64] {
        debug_assert!(
            self.writable,
            "producers and consumers refuse read-only segments"
        );
        self.memory.payload(slot)
    }

    /// Reads one slot's descriptor without taking part in the protocol, with relaxed loads only,
    /// so it is sound on a read-only mapping.
    pub fn inspect(&self, slot: u32) -> Option<SlotView> {
        (slot < self.slot_count()).then(|| SlotView::of(slot, self.descriptor(slot)))
    }
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("epoch", &format_args!("{:016x}", self.header.epoch))
            .field("slot_count", &self.slot_count())
            .field("slot_size", &self.slot_size())
            .field("path", &self.path())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::fs::File;

    use super::*;

    #[test]
    fn default_config_fits_the_seed_payload_twice() {
        let config = SegmentConfig::default();
        assert!(config.slot_size as usize >= 2 * 256_873);
        assert!(config.slot_count >= 50);
    }

    #[test]
    fn memfd_segment_is_sealed_and_attachable() {
        let segment = Segment::create(&SegmentConfig {
            slot_count: 2,
            slot_size: 4096,
        })
        .unwrap();
        let fd = segment.fd().unwrap().try_clone_to_owned().unwrap();
        let file = File::from(fd.try_clone().unwrap());
        assert!(
            file.set_len(1).is_err(),
            "shrinking a sealed memfd must fail"
        );
        let attached = Segment::attach_fd(fd).unwrap();
        assert_eq!(attached.epoch(), segment.epoch());
        assert_eq!(attached.header(), segment.header());
    }

    #[test]
    fn a_segment_file_descriptor_attaches_and_a_loose_mode_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        let segment = Segment::create_file(
            &path,
            &SegmentConfig {
                slot_count: 2,
                slot_size: 4096,
            },
        )
        .unwrap();
        let fd = segment.fd().unwrap().try_clone_to_owned().unwrap();
        let attached = Segment::attach_fd(fd).unwrap();
        assert_eq!(attached.header(), segment.header());
        assert_eq!(attached.path(), None);
        drop(attached);
        assert!(path.exists(), "only the creator removes the file");

        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let fd = segment.fd().unwrap().try_clone_to_owned().unwrap();
        assert!(matches!(
            Segment::attach_fd(fd),
            Err(AttachError::InsecureMode { found: 0o644 })
        ));
    }

    #[test]
    fn two_segments_get_different_epochs() {
        let config = SegmentConfig {
            slot_count: 1,
            slot_size: 64,
        };
        let a = Segment::create(&config).unwrap();
        let b = Segment::create(&config).unwrap();
        assert_ne!(a.epoch(), b.epoch());
    }
}
