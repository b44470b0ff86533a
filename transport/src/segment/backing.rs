//! What a segment's bytes live in, and the checks each kind of backing needs before its bytes
//! are trusted.
//!
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
//!   however it dies: [`file_in_use`] tells a live segment's file from a leftover by that lock,
//!   never by the header, which any same-uid process can scribble.
//!
//! [`Segment::create`]: super::Segment::create
//! [`Segment::create_file`]: super::Segment::create_file

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, SealFlag, fcntl};

use crate::error::{AttachError, CreateError};
use crate::layout::GeometryError;

pub(super) enum Backing {
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
pub(super) struct CreatedFile {
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

impl Backing {
    /// A new sealed memfd with `size` bytes reserved.
    pub(super) fn create_memfd(size: u64) -> Result<Self, CreateError> {
        let file = File::from(memfd()?);
        reserve(&file, size)?;
        fcntl(
            &file,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
            ),
        )
        .map_err(|errno| create_io("seal memfd", errno))?;
        Ok(Backing::Memfd(file))
    }

    /// A new file at `path` (mode 0600, `O_EXCL`) with `size` bytes reserved, holding an
    /// exclusive `flock` until dropped, which removes the file again if `path` still names it.
    pub(super) fn create_file(path: &Path, size: u64) -> Result<Self, CreateError> {
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
        // From here on, dropping `backing` (on any error, here or in the caller) removes the
        // file again.
        reserve(backing.file(), size)?;
        Ok(backing)
    }

    /// An existing segment file at `path`, opened for reading and, if `writable`, writing, once
    /// its owner and mode pass.
    pub(super) fn open_file(path: &Path, writable: bool) -> Result<Self, AttachError> {
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
        Ok(Backing::NamedFile {
            file,
            path: path.to_owned(),
            created: None,
        })
    }

    /// A descriptor received from the producer: a memfd sealed against shrink and grow, or a
    /// segment file (which cannot be sealed) held to the same owner and mode checks as one
    /// opened by path.
    pub(super) fn received(fd: OwnedFd) -> Result<Self, AttachError> {
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
                return Ok(Backing::ReceivedFile(file));
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
        Ok(Backing::Memfd(file))
    }

    /// The file to map.
    ///
    /// # Panics
    /// On the loom heap backing, which is never mapped.
    pub(super) fn file(&self) -> &File {
        match self {
            Backing::Memfd(file)
            | Backing::NamedFile { file, .. }
            | Backing::ReceivedFile(file) => file,
            #[cfg(loom)]
            Backing::Heap => unreachable!("heap segments are never mapped"),
        }
    }

    /// The file descriptor to hand to consumers (memfd or segment file).
    pub(super) fn fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            Backing::Memfd(file)
            | Backing::NamedFile { file, .. }
            | Backing::ReceivedFile(file) => Some(file.as_fd()),
            #[cfg(loom)]
            Backing::Heap => None,
        }
    }

    /// The segment file's path, for the named-file backing.
    pub(super) fn path(&self) -> Option<&Path> {
        match self {
            Backing::NamedFile { path, .. } => Some(path),
            _ => None,
        }
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

/// Whether the segment file at `path` belongs to a live segment, judged by its creator's lock
/// (see [`super::Segment::file_in_use`]).
pub(super) fn file_in_use(path: &Path) -> std::io::Result<bool> {
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

/// A new sealable memfd (see [`crate::sealed::sealable_memfd`]).
fn memfd() -> Result<OwnedFd, CreateError> {
    crate::sealed::sealable_memfd(c"shmbridge").map_err(|source| CreateError::Io {
        op: "memfd_create",
        source,
    })
}

/// Reserves the segment's bytes up front, so running out of space fails here with ENOSPC
/// instead of later with SIGBUS on a page fault.
fn reserve(file: &File, size: u64) -> Result<(), CreateError> {
    let len =
        i64::try_from(size).map_err(|_| CreateError::InvalidConfig(GeometryError::TooLarge))?;
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
