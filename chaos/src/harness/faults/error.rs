//! Why a fault could not be injected, one enum per operation: [`FaultError`] for a fault as the
//! runner sees it (a supervisor failure ends the scenario, an [`InjectError`] is a finding),
//! [`InjectError`] for damage the harness could not do, [`PidReuseError`] for a pid-reuse round
//! and [`PublishError`] for the publication its reader holds.

use std::io;

use crate::process::supervisor::SupervisorError;
use crate::segment::SegmentError;

/// Why an injector could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// The services could not be started, stopped or signalled: the scenario cannot go on.
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    /// The services run but the damage could not be done: what the previous fault left behind,
    /// reported as a finding.
    #[error(transparent)]
    Inject(#[from] InjectError),
}

/// Why the harness could not do its damage.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error(transparent)]
    Segment(#[from] SegmentError),
    #[error("cannot {what}: {source}")]
    Io { what: String, source: io::Error },
    /// A blocking injector (off the async workers) panicked or was cancelled.
    #[error("the {task} task failed: {source}")]
    Task {
        task: &'static str,
        source: tokio::task::JoinError,
    },
    #[error("users-service runs without --shm-path: nothing to plant over")]
    NoSegmentPath,
    #[error("cannot lay out a segment to plant: {0}")]
    Geometry(#[from] shmbridge::layout::GeometryError),
    #[error(transparent)]
    PidReuse(#[from] PidReuseError),
}

impl InjectError {
    pub fn io(what: impl Into<String>, source: impl Into<io::Error>) -> InjectError {
        InjectError::Io {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// Why a pid-reuse round could not be played.
#[derive(Debug, thiserror::Error)]
pub enum PidReuseError {
    #[error("cannot publish a payload to hold: {0}")]
    Publish(#[from] PublishError),
    #[error("the slot holder did not report within 10 s")]
    HolderSilent,
    #[error("the slot holder exited without holding a slot")]
    HolderGone,
    #[error("unreadable holder report {0:?}")]
    HolderReport(String),
    #[error("could not place a process on pid {pid} in {attempts} tries")]
    Squat { pid: u32, attempts: u32 },
}

/// Why users-service would not publish the payload a reader-role holder acquires.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot open the control channel: {0}")]
    Attach(#[from] shmbridge::AttachError),
    #[error("the control channel gave no publication: {0}")]
    Request(#[from] shmbridge::control::RequestError),
    #[error("users-service answered with status {status} in the {tier} tier, not a slot")]
    NotInSlot { tier: &'static str, status: u16 },
    #[error("the publishing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}
