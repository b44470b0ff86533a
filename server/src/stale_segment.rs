//! What users-service does with a segment file it finds at its `--shm-path` at start-up: a
//! leftover of a crashed run (dead creator), of another layout version or with a broken header is
//! replaced; one whose creator still runs is refused, so two producers never share a path.

use std::io;
use std::path::Path;

use anyhow::Context;
use shmbridge::{AttachError, Host, Owner, Segment, SystemHost};

/// Removes a leftover segment file at `path` when it is safe to, so that it can be created anew.
/// Errors when the file belongs to a live process, or cannot be checked or removed.
pub fn clear_leftover(path: &Path) -> anyhow::Result<()> {
    let shown = path.display();
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error).with_context(|| format!("cannot inspect {shown}")),
    };
    if !metadata.file_type().is_file() {
        anyhow::bail!("{shown} exists and is not a regular file; refusing to replace it");
    }
    let reason = match Segment::attach_file_read_only(path) {
        Ok(segment) => {
            let header = segment.header();
            let creator = Owner {
                pid: header.creator_pid,
                start_time: header.creator_start_time,
            };
            if SystemHost.is_alive(creator) {
                anyhow::bail!("segment {shown} is in use by pid {}", creator.pid);
            }
            format!(
                "its creator, pid {} started at tick {}, is gone",
                creator.pid, creator.start_time
            )
        }
        Err(
            error @ (AttachError::BadMagic { .. }
            | AttachError::VersionMismatch { .. }
            | AttachError::HeaderCorrupt { .. }
            | AttachError::LayoutMismatch { .. }
            | AttachError::SizeMismatch { .. }),
        ) => format!("it is not a usable segment: {error}"),
        // Another user's file, loose permissions, unreadable: not ours to delete.
        Err(error) => {
            return Err(error).with_context(|| {
                format!("cannot check the leftover segment {shown}; remove it or choose another --shm-path")
            });
        }
    };
    tracing::warn!(path = %shown, reason, "replacing a leftover shared-memory segment");
    std::fs::remove_file(path)
        .with_context(|| format!("cannot remove the leftover segment {shown}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shmbridge::SegmentConfig;
    use shmbridge::layout::HEADER_SIZE;
    use std::os::unix::fs::{FileExt, OpenOptionsExt};

    const CONFIG: SegmentConfig = SegmentConfig {
        slot_count: 2,
        slot_size: 4096,
    };

    /// A leftover file at `path`: a real segment whose drop does not remove it, because it was
    /// attached (not created) by this handle.
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

    #[test]
    fn a_missing_file_is_nothing_to_clear() {
        let dir = tempfile::tempdir().unwrap();
        clear_leftover(&dir.path().join("segment")).unwrap();
    }

    #[test]
    fn a_leftover_of_a_live_creator_is_refused_naming_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        // Created by this test process, which is alive.
        leave_segment_behind(&path);
        let error = clear_leftover(&path).unwrap_err().to_string();
        let expected = format!(
            "segment {} is in use by pid {}",
            path.display(),
            std::process::id()
        );
        assert_eq!(error, expected);
        assert!(path.exists(), "a live creator's segment must stay");
    }

    #[test]
    fn a_leftover_of_a_dead_creator_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        // A child that creates a segment file and is then killed, so its creator is really gone.
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let child_pid = child.id();
        leave_segment_behind(&path);
        child.kill().unwrap();
        child.wait().unwrap();
        // Rewrite the creator to the dead child, keeping the header valid (crc recomputed).
        let mut header = *Segment::attach_file(&path).unwrap().header();
        header.creator_pid = child_pid;
        header.header_crc = header.compute_crc();
        write_at(&path, 0, &header.to_bytes());
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
}
