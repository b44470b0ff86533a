//! A full filesystem for the segment: a small tmpfs mounted in a temporary directory and filled
//! to the last byte, so creating a segment there must fail with ENOSPC before anything is
//! mapped. Mounting needs root; [`FullTmpfs::unavailable`] says why a machine cannot.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use tempfile::TempDir;

use super::InjectError;

/// Size of the tmpfs: room for a few pages, nowhere near a segment.
const SIZE: &str = "256k";

/// Unmounted (lazily, so an open file cannot keep it) and removed on drop.
pub struct FullTmpfs {
    dir: TempDir,
}

impl FullTmpfs {
    pub fn unavailable() -> Option<String> {
        (!nix::unistd::geteuid().is_root()).then(|| "needs root (mounts a tmpfs)".to_owned())
    }

    /// Mounts the tmpfs and fills it.
    pub fn mount() -> Result<FullTmpfs, InjectError> {
        let dir = tempfile::Builder::new()
            .prefix("shmbridge-chaos-tmpfs-")
            .tempdir()
            .map_err(|error| InjectError::io("create the mount point", error))?;
        mount(
            Some("shmbridge-chaos"),
            dir.path(),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(format!("size={SIZE},mode=0700").as_str()),
        )
        .map_err(|errno| {
            InjectError::io(format!("mount a tmpfs on {}", dir.path().display()), errno)
        })?;
        let tmpfs = FullTmpfs { dir };
        tmpfs.fill()?;
        Ok(tmpfs)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn fill(&self) -> Result<(), InjectError> {
        let path = self.dir.path().join("filler");
        let mut filler = File::create(&path)
            .map_err(|error| InjectError::io("create the filler file", error))?;
        let block = [0xA5u8; 4096];
        loop {
            match filler.write_all(&block) {
                Ok(()) => {}
                Err(error) if error.kind() == ErrorKind::StorageFull => break,
                Err(error) => return Err(InjectError::io("fill the tmpfs", error)),
            }
        }
        // Whatever the page cache still holds must hit the same wall now, not later.
        match filler.sync_all() {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == ErrorKind::StorageFull => Ok(()),
            Err(error) => Err(InjectError::io("flush the filler file", error)),
        }
    }
}

impl Drop for FullTmpfs {
    fn drop(&mut self) {
        if let Err(errno) = umount2(self.dir.path(), MntFlags::MNT_DETACH) {
            eprintln!(
                "warning: cannot unmount the test tmpfs at {}: {errno}",
                self.dir.path().display()
            );
        }
    }
}
