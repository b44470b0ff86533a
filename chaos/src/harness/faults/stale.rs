//! Stale-segment faults (`stale-segment`): users-service runs with a segment file
//! (`--shm-path`); it is killed, a stale segment file is planted at its path, as a previous run
//! leaves them, and it is started again. A dead creator's segment, another layout version's or
//! garbage must be replaced and users-service must come up ready; a segment whose creator still
//! runs must be refused with a clear error (two producers never share a path), after which the
//! harness drops its segment, which removes the file, and starts users-service normally.
//!
//! The live creator is real: this process creates the segment with [`Segment::create_file`] and
//! so holds the file's lock, the only thing users-service may decide liveness by; the leftovers
//! hold no lock, whatever their headers say.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use shmbridge::layout::{Header, LAYOUT_VERSION};
use shmbridge::{Owner, Segment, SegmentConfig};

use super::class::{Fault, FaultClass, FaultContext, Injected};
use super::error::{FaultError, InjectError};
use super::pid_reuse::start_time;
use super::spec::{DurationRange, RepeatSpec};
use crate::process::role::Role;
use crate::process::service::ServiceError;
use crate::process::supervisor::SupervisorError;

/// What users-service's refusal must say.
const REFUSAL: &str = "in use by pid";
/// The epoch of a planted header: any will do, none is live.
const STALE_EPOCH: u64 = 0x5_7a1e;

/// `[fault.stale-segment]`: users-service (run with `--shm-path`) killed and restarted over a
/// stale segment file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(transparent)]
pub struct StaleSegmentSpec(pub RepeatSpec);

/// users-service killed and restarted over a stale segment file of `kind`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "action", rename = "stale-segment")]
pub struct StaleSegment {
    pub kind: StaleKind,
}

impl FaultClass for StaleSegmentSpec {
    const NAME: &'static str = "stale-segment";
    type Action = StaleSegment;

    fn count(&self) -> u32 {
        self.0.count
    }

    fn count_mut(&mut self) -> &mut u32 {
        &mut self.0.count
    }

    fn draw(&self, rng: &mut ChaCha8Rng) -> (DurationRange, StaleSegment) {
        let kind = StaleKind::ALL[rng.random_range(0..StaleKind::ALL.len())];
        (self.0.interval, StaleSegment { kind })
    }

    fn needs_segment_file(&self) -> bool {
        true
    }
}

impl Fault for StaleSegment {
    fn role(&self) -> Role {
        Role::UsersService
    }

    fn label(&self) -> String {
        format!("stale segment: {:?}", self.kind)
    }

    async fn inject(&self, context: &mut FaultContext<'_>) -> Result<Injected, FaultError> {
        let kind = self.kind;
        let path = context
            .segment_path
            .clone()
            .ok_or(InjectError::NoSegmentPath)?;
        context.supervisor.kill(Role::UsersService).await?;
        let live = plant(&path, kind, &SegmentConfig::default())?;
        context
            .supervisor
            .watch(context.restart_delay, None)
            .await?;
        let (note, violation) = if kind == StaleKind::LiveCreator {
            let outcome = match context
                .supervisor
                .launch_refused(Role::UsersService, &[])
                .await
            {
                Ok((status, output)) if output.contains(REFUSAL) && !status.success() => {
                    (format!("refused ({status})"), None)
                }
                Ok((status, output)) => (
                    format!("exited ({status})"),
                    Some(format!(
                        "users-service exited ({status}) without saying the segment is {REFUSAL}: {output}"
                    )),
                ),
                Err(SupervisorError::NotRefused { .. }) => {
                    context.supervisor.stop(Role::UsersService).await?;
                    (
                        "started".to_owned(),
                        Some("users-service took over a segment whose creator is alive".to_owned()),
                    )
                }
                Err(error) => return Err(error.into()),
            };
            // The live creator ends: its drop removes the file it created.
            drop(live);
            outcome
        } else {
            match context.supervisor.launch(Role::UsersService, None).await {
                Ok(_) => ("replaced".to_owned(), None),
                Err(SupervisorError::Service(ServiceError::ExitedEarly {
                    status, output, ..
                })) => {
                    std::fs::remove_file(&path).map_err(|error| {
                        InjectError::io(format!("remove {}", path.display()), error)
                    })?;
                    (
                        format!("not replaced ({status})"),
                        Some(format!(
                            "users-service would not start over a stale {kind:?} segment: {output}"
                        )),
                    )
                }
                Err(error) => return Err(error.into()),
            }
        };
        let back = if context.supervisor.is_running(Role::UsersService) {
            tokio::time::Instant::now()
        } else {
            context.supervisor.launch(Role::UsersService, None).await?
        };
        Ok(Injected {
            back: Some(back),
            note: Some(format!("{kind:?}: {note}")),
            violation,
            pressure: None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StaleKind {
    /// A valid segment whose creator is dead (what `kill -9` of users-service leaves).
    DeadCreator,
    /// A segment of another layout version (what an older or newer build leaves).
    OtherLayoutVersion,
    /// Bytes that are no segment at all.
    Garbage,
    /// A live segment created by this harness, which holds its lock: users-service must refuse
    /// it.
    LiveCreator,
}

impl StaleKind {
    pub const ALL: [StaleKind; 4] = [
        StaleKind::DeadCreator,
        StaleKind::OtherLayoutVersion,
        StaleKind::Garbage,
        StaleKind::LiveCreator,
    ];
}

/// Puts a stale segment of `kind` at `path` (replacing whatever is there), sized for `config`.
/// For [`StaleKind::LiveCreator`] it returns the live segment: this process holds its lock
/// until the segment is dropped, which also removes the file.
pub fn plant(
    path: &Path,
    kind: StaleKind,
    config: &SegmentConfig,
) -> Result<Option<Segment>, InjectError> {
    let (bytes, total_size) = match kind {
        StaleKind::Garbage => {
            let mut bytes = vec![0u8; 4096];
            getrandom::fill(&mut bytes).map_err(|error| InjectError::io("draw garbage", error))?;
            (bytes.clone(), bytes.len() as u64)
        }
        StaleKind::DeadCreator => header_bytes(config, LAYOUT_VERSION, dead_owner()?)?,
        StaleKind::OtherLayoutVersion => header_bytes(config, LAYOUT_VERSION + 1, dead_owner()?)?,
        StaleKind::LiveCreator => {
            remove_leftover(path)?;
            let live = Segment::create_file(path, config).map_err(|error| {
                InjectError::io(
                    format!("create a live segment at {}", path.display()),
                    std::io::Error::other(error),
                )
            })?;
            return Ok(Some(live));
        }
    };
    remove_leftover(path)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|error| InjectError::io(format!("create {}", path.display()), error))?;
    file.write_all(&bytes)
        .and_then(|()| file.set_len(total_size))
        .map_err(|error| InjectError::io(format!("write {}", path.display()), error))?;
    Ok(None)
}

/// Removes what the killed users-service left at `path`, if anything.
fn remove_leftover(path: &Path) -> Result<(), InjectError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(InjectError::io(format!("remove {}", path.display()), error)),
    }
}

/// A header from the transport's own builder (`Header::new`), so a layout change cannot leave
/// it stale, set to `layout_version` with its crc recomputed.
fn header_bytes(
    config: &SegmentConfig,
    layout_version: u32,
    creator: Owner,
) -> Result<(Vec<u8>, u64), InjectError> {
    let geometry = config.geometry()?;
    let mut header = Header::new(
        &geometry,
        STALE_EPOCH,
        creator,
        nix::unistd::geteuid().as_raw(),
    );
    header.layout_version = layout_version;
    header.refresh_crc();
    Ok((header.to_bytes().to_vec(), geometry.total_size()))
}

/// A process that existed and is gone: started, named, killed and reaped.
fn dead_owner() -> Result<Owner, InjectError> {
    let mut child = Command::new("sleep")
        .arg("30")
        .stdin(Stdio::null())
        .spawn()
        .map_err(|error| InjectError::io("start a short-lived process (sleep)", error))?;
    let pid = child.id();
    let start_time = start_time(pid);
    let _ = child.kill();
    child
        .wait()
        .map_err(|error| InjectError::io("reap the short-lived process", error))?;
    let start_time =
        start_time.map_err(|error| InjectError::io(format!("read /proc/{pid}/stat"), error))?;
    // The header has no pidfs inode field: creators are named by pid and start time only.
    Ok(Owner {
        pid,
        start_time,
        pidfs_ino: 0,
    })
}
