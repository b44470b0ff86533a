//! A segment: creating it, attaching to it, and validating everything read from its header.
//!
//! Two backings:
//! - **Sealed memfd** (default, [`Segment::create`]). Anonymous: nothing in `/dev/shm` outlives a
//!   `kill -9`. Sealed against shrink and grow, so no process can truncate the mapping under a
//!   reader (no SIGBUS). Memory is reserved with `fallocate` at creation, so a memory limit fails
//!   there and not later on a page fault. Consumers receive the descriptor over a Unix socket
//!   (`crate::fdpass`). Does not defend against a same-uid process that receives the descriptor
//!   (or ptraces a peer) and writes garbage into the mapping: readers detect that through the
//!   crc32 and the state words.
//! - **Named file** ([`Segment::create_file`]), for inspection tools and peers in other languages.
//!   Created with `O_EXCL` and mode 0600; space reserved with `posix_fallocate`, so a full tmpfs
//!   fails at creation with ENOSPC, never later with SIGBUS. Attach checks owner, mode and size
//!   against the header, also when the file arrives as a descriptor over the socket (a file
//!   cannot be sealed). Does not defend against a same-uid process truncating the file (a reader
//!   would take SIGBUS) or leaving a stale file after `kill -9` (the creator removes it on drop;
//!   a re-created segment gets a new epoch, so consumers notice). The creator holds an exclusive
//!   `flock` on the file for the segment's life, which the kernel drops when the creator dies
//!   however it dies: [`Segment::file_in_use`] tells a live segment's file from a leftover by
//!   that lock, never by the header, which any same-uid process can scribble.
//!
//! Inspectors attach read-only ([`Segment::attach_file_read_only`],
//! [`crate::attach_via_socket_read_only`]): the same validation, a `PROT_READ` mapping, and
//! producers and consumers refuse such a segment, so no store through its pointers is reachable.
//!
//! After attach, the validated header is copied into process memory and all geometry comes from
//! that copy; the shared header is never re-read for bounds.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use memmap2::{MmapOptions, MmapRaw};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, SealFlag, fcntl};

use crate::error::{AttachError, CreateError};
use crate::host::Owner;
use crate::layout::{
    DESCRIPTOR_SIZE, Geometry, GeometryError, HEADER_SIZE, Header, LAYOUT_VERSION, MAGIC,
    MAX_SLOT_COUNT, MAX_SLOT_SIZE, SlotDescriptor, SlotState, Tagged, Word,
};
use crate::payload::WORD;
use crate::sync::{AtomicU64, Ordering};

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

/// A point-in-time copy of one slot descriptor, for operators and leak checks. The fields after
/// `generation` are the tagged values as stored, whichever generation they were written for;
/// `stamped` says whether the ones the reaper relies on were written for this generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotView {
    pub slot: u32,
    /// `None` when the state byte holds no known state.
    pub state: Option<SlotState>,
    pub generation: u64,
    /// Whether the holder's stamp (WRITING, READING) or the TTL (READY) is this generation's.
    pub stamped: bool,
    pub owner: Owner,
    pub deadline_ns: u64,
    pub len: u32,
    pub crc: u32,
}

enum Memory {
    Mapped(MmapRaw),
    /// Loom atomics cannot live in mapped bytes, so loom models run on crate-allocated memory.
    #[cfg(loom)]
    Heap {
        descriptors: Box<[SlotDescriptor]>,
        payload: Box<[AtomicU64]>,
    },
}

enum Backing {
    Memfd(File),
    NamedFile {
        file: File,
        path: PathBuf,
        /// Set when this segment created the file: it then holds the file's lock and removes
        /// the file on drop.
        created: Option<CreatedFile>,
    },
    /// A segment file received as a descriptor: its path is the creator's business.
    ReceivedFile(File),
    #[cfg(loom)]
    Heap,
}

/// A segment file this process created, and the lock that marks it as in use.
struct CreatedFile {
    /// A second open file description of the file, holding an exclusive `flock` for the
    /// segment's life. Not the mapped descriptor: that one is handed to consumers over the
    /// socket, and a flock belongs to the open file description, so a consumer still holding it
    /// would keep the lock after the creator died.
    _lock: File,
    /// Device and inode of the file created: drop removes the path only while it still names
    /// this file.
    dev: u64,
    ino: u64,
}

/// A mapped, validated segment.
pub struct Segment {
    memory: Memory,
    header: Header,
    geometry: Geometry,
    backing: Backing,
    /// False for a read-only (PROT_READ) attach: producers and consumers refuse such a segment,
    /// so nothing ever stores through its pointers.
    writable: bool,
}

impl Segment {
    /// Creates a segment in a sealed memfd.
    pub fn create(config: &SegmentConfig) -> Result<Self, CreateError> {
        let geometry = config.geometry()?;
        let file = File::from(memfd()?);
        reserve(&file, geometry.total_size())?;
        fcntl(
            &file,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
            ),
        )
        .map_err(|errno| create_io("seal memfd", errno))?;
        Self::initialize(geometry, Backing::Memfd(file))
    }

    /// Creates a segment in a new file at `path` (mode 0600, `O_EXCL`) and holds an exclusive
    /// `flock` on it until the segment is dropped, which removes the file again if `path` still
    /// names it.
    pub fn create_file(path: &Path, config: &SegmentConfig) -> Result<Self, CreateError> {
        let geometry = config.geometry()?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| CreateError::Io {
                op: "create segment file",
                source,
            })?;
        let lock_failed = |source: std::io::Error| CreateError::Io {
            op: "lock the new segment file",
            source,
        };
        // The lock goes on a fresh open file description of the very inode just created
        // (through /proc, so no other file can take its place by name in between).
        let lock =
            File::open(format!("/proc/self/fd/{}", file.as_raw_fd())).map_err(lock_failed)?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(|errno| lock_failed(errno.into()))?;
        let created = file.metadata().map_err(lock_failed)?;
        // Someone who probed the lock in the instant between O_EXCL and flock found it free and
        // may have removed or replaced the path: then this file is not reachable by its name
        // and not ours to remove, so creation fails and the file is left alone.
        let named = std::fs::symlink_metadata(path).map_err(lock_failed)?;
        if (named.dev(), named.ino()) != (created.dev(), created.ino()) {
            return Err(lock_failed(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the path was removed or replaced while the segment was being created",
            )));
        }
        let backing = Backing::NamedFile {
            file,
            path: path.to_owned(),
            created: Some(CreatedFile {
                _lock: lock,
                dev: created.dev(),
                ino: created.ino(),
            }),
        };
        // From here on, dropping `backing` (on any error below) removes the file again.
        if let Backing::NamedFile { file, .. } = &backing {
            reserve(file, geometry.total_size())?;
        }
        Self::initialize(geometry, backing)
    }

    /// A segment on crate-allocated memory, for loom models of the slot protocol.
    #[cfg(loom)]
    pub fn in_memory(config: &SegmentConfig) -> Self {
        let geometry = config
            .geometry()
            .expect("loom models use a valid configuration");
        let descriptors = (0..geometry.slot_count())
            .map(|_| SlotDescriptor::new())
            .collect();
        let payload_words = geometry.slot_count() as usize * geometry.slot_size() as usize / WORD;
        let payload = (0..payload_words).map(|_| AtomicU64::new(0)).collect();
        Self {
            memory: Memory::Heap {
                descriptors,
                payload,
            },
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
            geometry,
            backing: Backing::Heap,
            writable: true,
        }
    }

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
        let map = MmapRaw::map_raw(backing_file(&backing))
            .map_err(|source| CreateError::Io { op: "mmap", source })?;
        // SAFETY: the mapping is `total_size` >= 128 bytes long and page-aligned; no other process
        // can have it yet (the memfd is unshared, the file was just created 0600 with O_EXCL, and
        // attach refuses it until the header crc matches).
        unsafe { std::ptr::write_volatile(map.as_mut_ptr().cast::<Header>(), header) };
        let segment = Self {
            memory: Memory::Mapped(map),
            header,
            geometry,
            backing,
            writable: true,
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
        Self::attach_file_with(path, true)
    }

    /// Attaches to a segment file for reading only: the same validation, but opened `O_RDONLY`
    /// and mapped `PROT_READ`, so an inspector can never write. [`Segment::inspect`] works on it;
    /// producers and consumers refuse it.
    pub fn attach_file_read_only(path: &Path) -> Result<Self, AttachError> {
        Self::attach_file_with(path, false)
    }

    fn attach_file_with(path: &Path, writable: bool) -> Result<Self, AttachError> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|source| AttachError::Io {
                op: "open segment file",
                source,
            })?;
        let meta = file.metadata().map_err(|source| AttachError::Io {
            op: "stat segment file",
            source,
        })?;
        check_file_metadata(&meta)?;
        Self::map_and_validate(
            Backing::NamedFile {
                file,
                path: path.to_owned(),
                created: None,
            },
            writable,
        )
    }

    /// Attaches to a descriptor received from the producer: a sealed memfd, or a segment file
    /// (which cannot be sealed) held to the same owner and mode checks as [`Segment::attach_file`].
    pub fn attach_fd(fd: OwnedFd) -> Result<Self, AttachError> {
        Self::attach_fd_with(fd, true)
    }

    /// [`Segment::attach_fd`] mapped `PROT_READ`, for inspectors.
    pub(crate) fn attach_fd_read_only(fd: OwnedFd) -> Result<Self, AttachError> {
        Self::attach_fd_with(fd, false)
    }

    fn attach_fd_with(fd: OwnedFd, writable: bool) -> Result<Self, AttachError> {
        let file = File::from(fd);
        let seals = match fcntl(&file, FcntlArg::F_GET_SEALS) {
            Ok(seals) => seals,
            // Only memfds know seals; anything else answers EINVAL.
            Err(Errno::EINVAL) => {
                let meta = file.metadata().map_err(|source| AttachError::Io {
                    op: "stat segment descriptor",
                    source,
                })?;
                check_file_metadata(&meta)?;
                return Self::map_and_validate(Backing::ReceivedFile(file), writable);
            }
            Err(errno) => {
                return Err(AttachError::Io {
                    op: "read memfd seals",
                    source: errno.into(),
                });
            }
        };
        let required = (SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW).bits();
        if seals & required != required {
            return Err(AttachError::NotSealed {
                found: seals as u32,
            });
        }
        Self::map_and_validate(Backing::Memfd(file), writable)
    }

    /// Reads and validates the header against the file's size before mapping anything, then
    /// maps and checks the mapping is still the size the header promises.
    fn map_and_validate(backing: Backing, writable: bool) -> Result<Self, AttachError> {
        let file = backing_file(&backing);
        let len = file
            .metadata()
            .map_err(|source| AttachError::Io {
                op: "stat segment",
                source,
            })?
            .len();
        let mut bytes = [0u8; HEADER_SIZE as usize];
        if len < HEADER_SIZE {
            return Err(AttachError::SizeMismatch {
                found: len,
                expected: HEADER_SIZE,
            });
        }
        file.read_exact_at(&mut bytes, 0)
            .map_err(|source| AttachError::Io {
                op: "read segment header",
                source,
            })?;
        let header = Header::from_bytes(&bytes);
        let geometry = validate_header(&header, len)?;
        let map = if writable {
            MmapRaw::map_raw(file)
        } else {
            MmapOptions::new().map_raw_read_only(file)
        }
        .map_err(|source| AttachError::Io { op: "mmap", source })?;
        if map.len() as u64 != geometry.total_size() {
            return Err(AttachError::SizeMismatch {
                found: map.len() as u64,
                expected: geometry.total_size(),
            });
        }
        tracing::debug!(
            epoch = format_args!("{:016x}", header.epoch),
            slots = geometry.slot_count(),
            "segment attached"
        );
        Ok(Self {
            memory: Memory::Mapped(map),
            header,
            geometry,
            backing,
            writable,
        })
    }

    /// Whether this segment may be written: false for a read-only attach.
    pub fn is_writable(&self) -> bool {
        self.writable
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
        if !self.writable {
            return false;
        }
        match &self.memory {
            Memory::Mapped(map) => {
                let shared = map.as_mut_ptr().cast::<Header>();
                // SAFETY: the mapping is at least HEADER_SIZE bytes long and page-aligned, so
                // `shared` is in bounds and aligned for Header. Header is plain integers and byte
                // arrays, valid for every bit pattern, so reading what a scribbler left is sound;
                // volatile because other processes write these bytes behind the compiler's back.
                // No honest process writes the header after creation, so writing the validated
                // copy back races only with a scribbler, whose bytes it is meant to replace.
                unsafe {
                    if std::ptr::read_volatile(shared) == self.header {
                        return false;
                    }
                    std::ptr::write_volatile(shared, self.header);
                }
                true
            }
            #[cfg(loom)]
            Memory::Heap { .. } => false,
        }
    }

    /// Random identity of this segment instance; a re-created segment has a new one.
    pub fn epoch(&self) -> u64 {
        self.header.epoch
    }

    pub fn slot_count(&self) -> u32 {
        self.geometry.slot_count()
    }

    pub fn slot_size(&self) -> u32 {
        self.geometry.slot_size()
    }

    /// The file descriptor to hand to consumers (memfd or segment file).
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.backing {
            Backing::Memfd(file)
            | Backing::NamedFile { file, .. }
            | Backing::ReceivedFile(file) => Some(file.as_fd()),
            #[cfg(loom)]
            Backing::Heap => None,
        }
    }

    /// The segment file's path, for the named-file backing.
    pub fn path(&self) -> Option<&Path> {
        match &self.backing {
            Backing::NamedFile { path, .. } => Some(path),
            _ => None,
        }
    }

    /// The descriptor of `slot`.
    ///
    /// # Panics
    /// If `slot` is out of range: callers check indexes that come from outside the process.
    pub(crate) fn descriptor(&self, slot: u32) -> &SlotDescriptor {
        assert!(
            slot < self.geometry.slot_count(),
            "slot index checked by caller"
        );
        match &self.memory {
            Memory::Mapped(map) => {
                let offset = HEADER_SIZE as usize + slot as usize * DESCRIPTOR_SIZE as usize;
                // SAFETY: the geometry was validated against the mapping length, so the 64 bytes
                // at `offset` lie inside the mapping; the mapping is page-aligned and `offset` is
                // a multiple of 64, matching SlotDescriptor's alignment. SlotDescriptor is made of
                // atomics only, so any bit pattern is valid and concurrent writes from other
                // processes are atomic accesses, not data races. The reference lives no longer
                // than `self`, which keeps the mapping alive.
                unsafe { &*map.as_ptr().add(offset).cast::<SlotDescriptor>() }
            }
            #[cfg(loom)]
            Memory::Heap { descriptors, .. } => &descriptors[slot as usize],
        }
    }

    /// `slot`'s payload as `slot_size / 8` words (see [`crate::payload`] for why words).
    ///
    /// Other processes may store into these words at any time, so the payload is never seen as
    /// plain bytes: only as atomics, whose racing accesses are defined.
    pub(crate) fn payload(&self, slot: u32) -> &[AtomicU64] {
        assert!(
            slot < self.geometry.slot_count(),
            "slot index checked by caller"
        );
        debug_assert!(
            self.writable,
            "producers and consumers refuse read-only segments"
        );
        let words = self.geometry.slot_size() as usize / WORD;
        match &self.memory {
            Memory::Mapped(map) => {
                let offset = self.geometry.payload_offset() as usize + slot as usize * words * WORD;
                // SAFETY: payload_offset + slot_count * slot_size == total_size == mapping length
                // (validated), so the slot's `words` words lie inside the mapping. The mapping is
                // page-aligned, payload_offset a multiple of 4096 and slot_size of 64, so every
                // word is 8-aligned as AtomicU64 requires. Any bit pattern is a valid AtomicU64,
                // and stores by other processes are to atomics, not to memory Rust assumes it
                // owns. The slice lives no longer than `self`, which keeps the mapping alive.
                unsafe {
                    std::slice::from_raw_parts(map.as_ptr().add(offset).cast::<AtomicU64>(), words)
                }
            }
            #[cfg(loom)]
            Memory::Heap { payload, .. } => {
                let first = slot as usize * words;
                &payload[first..first + words]
            }
        }
    }

    /// Reads one slot's descriptor without taking part in the protocol, with relaxed loads only,
    /// so it is sound on a read-only mapping.
    pub fn inspect(&self, slot: u32) -> Option<SlotView> {
        if slot >= self.geometry.slot_count() {
            return None;
        }
        let descriptor = self.descriptor(slot);
        let word = descriptor.observed_word();
        let value = |field: &AtomicU64| Tagged(field.load(Ordering::Relaxed)).value();
        let stamped = match word.state() {
            Some(SlotState::Writing | SlotState::Reading) => descriptor.stamp(word).is_some(),
            Some(SlotState::Ready) => descriptor.ttl_end(word).is_some(),
            Some(SlotState::Free) | None => false,
        };
        Some(SlotView {
            slot,
            state: word.state(),
            generation: word.generation(),
            stamped,
            owner: Owner {
                pid: value(&descriptor.owner_pid) as u32,
                start_time: value(&descriptor.owner_start_time),
                pidfs_ino: value(&descriptor.owner_pidfs_ino),
            },
            deadline_ns: value(&descriptor.deadline_ms).saturating_mul(1_000_000),
            len: value(&descriptor.len) as u32,
            crc: value(&descriptor.crc) as u32,
        })
    }
}

/// Removing the file belongs to the backing, not the segment, so a creation that fails after the
/// file exists removes it too. Only a file this segment created is removed, only while its path
/// still names that file (device and inode), and while the lock is still held (`created` is
/// dropped after this runs), so no other segment can have claimed the path meanwhile.
impl Drop for Backing {
    fn drop(&mut self) {
        let Backing::NamedFile {
            path,
            created: Some(created),
            ..
        } = self
        else {
            return;
        };
        let shown = path.display();
        match std::fs::symlink_metadata(&*path) {
            Ok(named) if (named.dev(), named.ino()) == (created.dev, created.ino) => {
                if let Err(error) = std::fs::remove_file(&*path) {
                    tracing::warn!(path = %shown, %error, "could not remove segment file");
                }
            }
            Ok(_) => tracing::warn!(
                path = %shown,
                "another file took the segment file's path; leaving it in place"
            ),
            Err(error) => tracing::warn!(path = %shown, %error, "segment file already gone"),
        }
    }
}

impl Segment {
    /// Whether the segment file at `path` belongs to a live segment: its creator holds an
    /// exclusive `flock` on it for the segment's whole life ([`Segment::create_file`]) and the
    /// kernel drops that lock when the creator exits, `kill -9` included. Probes with a shared,
    /// non-blocking lock on a new open file description, released before returning; reads
    /// nothing of the file's contents.
    pub fn file_in_use(path: &Path) -> std::io::Result<bool> {
        // O_NOFOLLOW: a symlink planted at the path is not followed to some other file;
        // O_NONBLOCK: a FIFO planted there does not block the open.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(path)?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockShared) {
            Ok(()) => Ok(false),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(true),
            Err(errno) => Err(errno.into()),
        }
    }
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("epoch", &format_args!("{:016x}", self.header.epoch))
            .field("slot_count", &self.geometry.slot_count())
            .field("slot_size", &self.geometry.slot_size())
            .field("path", &self.path())
            .finish_non_exhaustive()
    }
}

fn backing_file(backing: &Backing) -> &File {
    match backing {
        Backing::Memfd(file) | Backing::NamedFile { file, .. } | Backing::ReceivedFile(file) => {
            file
        }
        #[cfg(loom)]
        Backing::Heap => unreachable!("heap segments are never mapped"),
    }
}

/// A segment file must be a regular file of this user that no other user can open.
fn check_file_metadata(meta: &std::fs::Metadata) -> Result<(), AttachError> {
    if !meta.file_type().is_file() || meta.file_type().is_fifo() {
        return Err(AttachError::NotRegularFile);
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(AttachError::WrongOwner {
            found: meta.uid(),
            expected: euid,
        });
    }
    if meta.mode() & 0o077 != 0 {
        return Err(AttachError::InsecureMode {
            found: meta.mode() & 0o7777,
        });
    }
    Ok(())
}

/// Checks every header field and all size arithmetic against what the segment really is.
fn validate_header(header: &Header, mapped_len: u64) -> Result<Geometry, AttachError> {
    if header.magic != MAGIC {
        return Err(AttachError::BadMagic {
            found: header.magic,
            expected: MAGIC,
        });
    }
    if header.layout_version != LAYOUT_VERSION {
        return Err(AttachError::VersionMismatch {
            found: header.layout_version,
            expected: LAYOUT_VERSION,
        });
    }
    let crc = header.compute_crc();
    if header.header_crc != crc {
        return Err(AttachError::HeaderCorrupt {
            found: header.header_crc,
            expected: crc,
        });
    }
    let mismatch = |field, found: u64, expected: u64| AttachError::LayoutMismatch {
        field,
        found,
        expected,
    };
    if u64::from(header.header_size) != HEADER_SIZE {
        return Err(mismatch(
            "header_size",
            header.header_size.into(),
            HEADER_SIZE,
        ));
    }
    if header.epoch == 0 {
        return Err(mismatch("epoch", 0, 1));
    }
    let geometry =
        Geometry::new(header.slot_count, header.slot_size).map_err(|error| match error {
            GeometryError::SlotCount { found } => {
                mismatch("slot_count", found.into(), MAX_SLOT_COUNT.into())
            }
            GeometryError::SlotSize { .. } | GeometryError::TooLarge => {
                mismatch("slot_size", header.slot_size.into(), MAX_SLOT_SIZE.into())
            }
        })?;
    for (field, found, expected) in [
        ("descriptors_offset", header.descriptors_offset, HEADER_SIZE),
        (
            "payload_offset",
            header.payload_offset,
            geometry.payload_offset(),
        ),
        ("total_size", header.total_size, geometry.total_size()),
    ] {
        if found != expected {
            return Err(mismatch(field, found, expected));
        }
    }
    if mapped_len != geometry.total_size() {
        return Err(AttachError::SizeMismatch {
            found: mapped_len,
            expected: geometry.total_size(),
        });
    }
    Ok(geometry)
}

/// A new sealable memfd. `MFD_NOEXEC_SEAL` (Linux >= 6.3) where the kernel has it, so the segment
/// can never be made executable; older kernels refuse the flag with EINVAL and get a plain one.
fn memfd() -> Result<OwnedFd, CreateError> {
    use rustix::fs::{MemfdFlags, memfd_create};
    let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    match memfd_create(c"shmbridge", flags | MemfdFlags::NOEXEC_SEAL) {
        Err(rustix::io::Errno::INVAL) => memfd_create(c"shmbridge", flags),
        created => created,
    }
    .map_err(|errno| CreateError::Io {
        op: "memfd_create",
        source: errno.into(),
    })
}

/// Reserves the segment's bytes up front, so running out of space fails here with ENOSPC
/// instead of later with SIGBUS on a page fault.
fn reserve(file: &File, size: u64) -> Result<(), CreateError> {
    let len = i64::try_from(size).map_err(|_| GeometryError::TooLarge)?;
    match nix::fcntl::posix_fallocate(file, 0, len) {
        Ok(()) => Ok(()),
        Err(Errno::ENOSPC) => Err(CreateError::NoSpace { requested: size }),
        Err(errno) => Err(create_io("posix_fallocate", errno)),
    }
}

fn create_io(op: &'static str, errno: Errno) -> CreateError {
    CreateError::Io {
        op,
        source: errno.into(),
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
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
