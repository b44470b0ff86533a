//! What users-service does with a file it finds at its `--shm-path` at start-up. Liveness is
//! decided by the lock the creator of a segment holds on its file for the segment's life
//! ([`Segment::create_file`]), which the kernel drops when the creator dies: a file whose lock
//! is held is refused (two producers never share a path), whatever its header says; a file
//! whose lock is free is a leftover — of a crashed run, of another layout version, or no
//! segment at all — and is replaced. The header is read only to say in the log what the
//! leftover was, never to decide: any same-uid process can scribble on it.

use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use shmbridge::{AttachError, Segment};

/// Why the file at `--shm-path` could not be cleared.
#[derive(Debug, thiserror::Error)]
pub enum StaleSegmentError {
    /// A live process holds the file's lock. `creator_pid` is what the header says, when it
    /// can be read: a hint for the message, not what was decided on.
    #[error("segment {} is in use by {}", path.display(), holder(*creator_pid))]
    InUse {
        path: PathBuf,
        creator_pid: Option<u32>,
    },
    #[error("{} exists and is not a regular file; refusing to replace it", path.display())]
    NotRegularFile { path: PathBuf },
    #[error(
        "cannot check the leftover segment {}; remove it or choose another --shm-path: {reason}",
        path.display()
    )]
    Unchecked {
        path: PathBuf,
        reason: UncheckedReason,
    },
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// Why a leftover could not be checked. Not a `source` of [`StaleSegmentError::Unchecked`]:
/// the message already says it.
#[derive(Debug, thiserror::Error)]
pub enum UncheckedReason {
    /// It cannot be opened: another user's file, or no permission.
    #[error("{0}")]
    Open(io::Error),
    /// It opens but is not this user's to remove (another owner, loose permissions), or cannot
    /// be read.
    #[error("{0}")]
    Attach(AttachError),
    #[error("another file took its place while it was checked")]
    Replaced,
}

/// Removes a leftover segment file at `path` when no live segment holds it, so that it can be
/// created anew. Errors when the file's lock is held, when it is not this user's to remove, or
/// when it cannot be checked or removed.
pub fn clear_leftover(path: &Path) -> Result<(), StaleSegmentError> {
    let io_error = |what, source| StaleSegmentError::Io {
        what,
        path: path.to_owned(),
        source,
    };
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(io_error("inspect", error)),
    };
    if !metadata.file_type().is_file() {
        return Err(StaleSegmentError::NotRegularFile {
            path: path.to_owned(),
        });
    }
    // Another user's file, or one that cannot be opened: not ours to delete.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|error| StaleSegmentError::Unchecked {
            path: path.to_owned(),
            reason: UncheckedReason::Open(error),
        })?;
    // Exclusive, and held until the file is removed: a live creator holds it for the segment's
    // life, and a second users-service clearing the same path at the same moment finds it
    // taken, so two never decide about one file at once.
    let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((_, Errno::EWOULDBLOCK)) => {
            return Err(StaleSegmentError::InUse {
                path: path.to_owned(),
                creator_pid: Segment::attach_file_read_only(path)
                    .ok()
                    .map(|segment| segment.header().creator_pid),
            });
        }
        Err((_, errno)) => return Err(io_error("lock", errno.into())),
    };
    let reason = leftover_reason(path)?;
    // Remove exactly the file whose lock is held here: if the path names another file by now,
    // that file was not checked.
    let locked = lock
        .metadata()
        .map_err(|error| io_error("inspect", error))?;
    let named = std::fs::symlink_metadata(path).map_err(|error| io_error("inspect", error))?;
    if (named.dev(), named.ino()) != (locked.dev(), locked.ino()) {
        return Err(StaleSegmentError::Unchecked {
            path: path.to_owned(),
            reason: UncheckedReason::Replaced,
        });
    }
    tracing::warn!(path = %path.display(), reason, "replacing a leftover shared-memory segment");
    std::fs::remove_file(path).map_err(|error| io_error("remove the leftover segment", error))?;
    // Released only now, after the file is gone.
    drop(lock);
    Ok(())
}

/// What the unlocked file was, for the log; errors only for a file that is not this user's to
/// remove (another owner, loose permissions), which attach refuses too.
fn leftover_reason(path: &Path) -> Result<String, StaleSegmentError> {
    match Segment::attach_file_read_only(path) {
        Ok(segment) => Ok(format!(
            "no live process holds its lock (its header names pid {} as the creator)",
            segment.header().creator_pid
        )),
        Err(
            error @ (AttachError::BadMagic { .. }
            | AttachError::VersionMismatch { .. }
            | AttachError::HeaderCorrupt { .. }
            | AttachError::LayoutMismatch { .. }
            | AttachError::SizeMismatch { .. }),
        ) => Ok(format!(
            "no live process holds its lock and it is not a usable segment: {error}"
        )),
        Err(error) => Err(StaleSegmentError::Unchecked {
            path: path.to_owned(),
            reason: UncheckedReason::Attach(error),
        }),
    }
}

/// Who holds the lock, as far as the header says (a hint for the message: the header may be
/// scribbled, the lock is what was decided on).
fn holder(creator_pid: Option<u32>) -> String {
    match creator_pid {
        Some(pid) => format!("pid {pid} (its creator, which holds the file's lock)"),
        None => "a live process (it holds the file's lock; the header is unreadable)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shmbridge::SegmentConfig;
    use shmbridge::layout::HEADER_SIZE;
    use std::os::unix::fs::FileExt;

    const CONFIG: SegmentConfig = SegmentConfig {
        slot_count: 2,
        slot_size: 4096,
    };

    /// A leftover file at `path`: a copy of a real segment (created by this live process, so
    /// its header names a live creator), without the lock its creator held.
    fn leave_segment_behind(path: &Path) {
        let created = Segment::create_file(path, &CONFIG).unwrap();
        let copy = path.with_extension("copy");
        std::fs::copy(path, &copy).unwrap();
        drop(created);
        std::fs::rename(&copy, path).unwrap();
    }

    /// Overwrites bytes of the file at `offset`; the header crc is not recomputed.
    fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        file.write_all_at(bytes, offset).unwrap();
    }

    fn inode(path: &Path) -> u64 {
        std::fs::symlink_metadata(path).unwrap().ino()
    }

    #[test]
    fn a_missing_file_is_nothing_to_clear() {
        let dir = tempfile::tempdir().unwrap();
        clear_leftover(&dir.path().join("segment")).unwrap();
    }

    #[test]
    fn a_live_segment_is_refused_naming_its_creator() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        let live = Segment::create_file(&path, &CONFIG).unwrap();
        let error = clear_leftover(&path).unwrap_err().to_string();
        let expected = format!(
            "segment {} is in use by pid {} (its creator, which holds the file's lock)",
            path.display(),
            std::process::id()
        );
        assert_eq!(error, expected);
        assert_eq!(
            Segment::attach_file_read_only(&path).unwrap().epoch(),
            live.epoch(),
            "a live creator's segment must stay"
        );
    }

    /// The header decides nothing: a live segment whose header was scribbled on, or whose file
    /// was grown, is still refused and kept.
    #[test]
    fn a_live_segment_with_a_broken_header_or_size_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        for damage in ["header", "size"] {
            let live = Segment::create_file(&path, &CONFIG).unwrap();
            let before = inode(&path);
            match damage {
                "header" => write_at(&path, 0, &[0xA5; 64]),
                _ => std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(1 << 20)
                    .unwrap(),
            }
            let error = clear_leftover(&path).unwrap_err();
            assert!(
                matches!(error, StaleSegmentError::InUse { .. }),
                "{damage}: {error}"
            );
            assert_eq!(inode(&path), before, "{damage}: the live file must stay");
            drop(live);
            assert!(!path.exists(), "{damage}: its creator removes it");
        }
    }

    /// A header naming a live pid proves nothing either (the pid may be reused, the header
    /// copied): without the lock, the file is a leftover.
    #[test]
    fn a_leftover_whose_header_names_a_live_pid_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        leave_segment_behind(&path);
        let header = *Segment::attach_file(&path).unwrap().header();
        assert_eq!(header.creator_pid, std::process::id());
        clear_leftover(&path).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn a_leftover_of_another_layout_version_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        leave_segment_behind(&path);
        let version = Segment::attach_file(&path).unwrap().header().layout_version;
        write_at(&path, 8, &(version + 1).to_le_bytes());
        clear_leftover(&path).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn a_short_or_scribbled_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        for contents in [
            &b""[..],
            &b"garbage"[..],
            &[0xA5; HEADER_SIZE as usize * 2][..],
        ] {
            let path = dir.path().join("segment");
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .unwrap()
                .write_all_at(contents, 0)
                .unwrap();
            clear_leftover(&path).unwrap();
            assert!(!path.exists());
        }
    }

    #[test]
    fn a_directory_is_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let error = clear_leftover(dir.path()).unwrap_err().to_string();
        assert!(error.contains("is not a regular file"), "{error}");
        assert!(dir.path().is_dir());
    }

    #[test]
    fn a_file_with_loose_permissions_is_not_ours_to_remove() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        leave_segment_behind(&path);
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let error = clear_leftover(&path).unwrap_err();
        assert!(
            matches!(error, StaleSegmentError::Unchecked { .. }),
            "{error}"
        );
        assert!(path.exists());
    }
}
