//! Full-filesystem faults (`full-tmpfs`, root only): users-service is restarted with its segment
//! file on a tiny tmpfs mounted in a temporary directory and filled to the last byte. Creating
//! the segment must fail with a clear ENOSPC error before anything is mapped (no SIGBUS), and
//! users-service must stay up degraded (REST served, shm answering 503, `/readyz` 503 naming the
//! cause, `/healthz` 200) for the planned time, after which it is restarted normally and the
//! tmpfs unmounted.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tempfile::TempDir;

use super::class::{Fault, FaultClass, FaultContext, Injected};
use super::error::{FaultError, InjectError};
use super::spec::{DurationRange, RepeatSpec};
use crate::process::role::Role;

/// What `/readyz` must name while the segment cannot be created.
const EXPECTED_CAUSE: &str = "ENOSPC";

/// `[fault.full-tmpfs]`: each fault's `interval` is how long users-service runs degraded before
/// the normal restart.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(transparent)]
pub struct FullTmpfsSpec(pub RepeatSpec);

/// users-service restarted with its segment on a full tmpfs, left degraded for the next
/// interval, then restarted normally.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "action", rename = "full-tmpfs")]
pub struct FullTmpfs {}

impl FaultClass for FullTmpfsSpec {
    const NAME: &'static str = "full-tmpfs";
    type Action = FullTmpfs;

    fn count(&self) -> u32 {
        self.0.count
    }

    fn count_mut(&mut self) -> &mut u32 {
        &mut self.0.count
    }

    fn draw(&self, _rng: &mut ChaCha8Rng) -> (DurationRange, FullTmpfs) {
        (self.0.interval, FullTmpfs {})
    }

    fn unavailable(&self) -> Option<String> {
        FullTmpfsMount::unavailable()
    }
}

impl Fault for FullTmpfs {
    fn role(&self) -> Role {
        Role::UsersService
    }

    fn label(&self) -> String {
        "start on a full tmpfs".to_owned()
    }

    async fn inject(&self, context: &mut FaultContext<'_>) -> Result<Injected, FaultError> {
        let tmpfs = FullTmpfsMount::mount()?;
        let segment = tmpfs.path().join("segment").display().to_string();
        context.supervisor.stop(Role::UsersService).await?;
        context
            .supervisor
            .launch_degraded(Role::UsersService, &["--shm-path".to_owned(), segment])
            .await?;
        let ready = context
            .supervisor
            .get(Role::UsersService, "/readyz")
            .await?;
        let health = context
            .supervisor
            .get(Role::UsersService, "/healthz")
            .await?;
        let mut problems = Vec::new();
        if ready.0 != 503 || !ready.1.contains(EXPECTED_CAUSE) {
            problems.push(format!(
                "/readyz answered {} {:?}, expected 503 naming {EXPECTED_CAUSE}",
                ready.0, ready.1
            ));
        }
        if health.0 != 200 {
            problems.push(format!("/healthz answered {}, expected 200", health.0));
        }
        let degraded_for = context.hold.min(context.remaining());
        context.supervisor.watch(degraded_for, None).await?;
        context.supervisor.stop(Role::UsersService).await?;
        drop(tmpfs);
        let back = context.supervisor.launch(Role::UsersService, None).await?;
        Ok(Injected {
            back: Some(back),
            note: Some(format!(
                "degraded for {degraded_for:?}; /readyz {} {}",
                ready.0,
                ready.1.trim()
            )),
            violation: (!problems.is_empty()).then(|| problems.join("; ")),
            pressure: None,
        })
    }
}

/// Size of the tmpfs: room for a few pages, nowhere near a segment.
const SIZE: &str = "256k";

/// Unmounted (lazily, so an open file cannot keep it) and removed on drop.
pub struct FullTmpfsMount {
    dir: TempDir,
}

impl FullTmpfsMount {
    pub fn unavailable() -> Option<String> {
        (!nix::unistd::geteuid().is_root()).then(|| "needs root (mounts a tmpfs)".to_owned())
    }

    /// Mounts the tmpfs and fills it.
    pub fn mount() -> Result<FullTmpfsMount, InjectError> {
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
        let tmpfs = FullTmpfsMount { dir };
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

impl Drop for FullTmpfsMount {
    fn drop(&mut self) {
        if let Err(errno) = umount2(self.dir.path(), MntFlags::MNT_DETACH) {
            eprintln!(
                "warning: cannot unmount the test tmpfs at {}: {errno}",
                self.dir.path().display()
            );
        }
    }
}
