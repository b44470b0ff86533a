//! The fault vocabulary: which service a fault hits, what is done to it, and the injectors
//! that carry each action out against the supervised services. A new fault class is a
//! variant of [`FaultAction`] and a small module with its `inject` function.

pub mod kill;
pub mod pause;
pub mod pid_reuse;
pub mod resize;
pub mod scribble;
pub mod slow;
pub mod stale;
pub mod tmpfs;

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use shmbridge_server::failpoints;
use tokio::time::Instant;

use crate::harness::supervisor::{Supervisor, SupervisorError};
use crate::inject::InjectError;
use crate::inject::pid_reuse::HolderRole;
use crate::inject::scribble::ScribbleTarget;
use crate::inject::stale::StaleKind;
use crate::load::endpoint::Endpoint;

/// One of the two supervised services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    UsersService,
    Gateway,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::UsersService, Role::Gateway];

    pub fn name(self) -> &'static str {
        match self {
            Role::UsersService => "users-service",
            Role::Gateway => "gateway",
        }
    }

    /// Whether requests to `endpoint` pass through this service: every route goes through the
    /// gateway; the cached route never reaches users-service.
    pub fn serves(self, endpoint: Endpoint) -> bool {
        match self {
            Role::Gateway => true,
            Role::UsersService => endpoint != Endpoint::Cached,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fail point compiled into the services (feature `failpoints`), named as they register it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailPoint {
    /// users-service: a slot is claimed, nothing written yet.
    AfterClaim,
    /// users-service: halfway through copying the body into the slot.
    MidCopy,
    /// users-service: the body is written, the slot not yet published.
    BeforePublish,
    /// gateway: a slot is acquired for reading and not yet released.
    MidRead,
}

impl FailPoint {
    pub const PRODUCER: [FailPoint; 3] = [
        FailPoint::AfterClaim,
        FailPoint::MidCopy,
        FailPoint::BeforePublish,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FailPoint::AfterClaim => failpoints::AFTER_CLAIM,
            FailPoint::MidCopy => failpoints::MID_COPY,
            FailPoint::BeforePublish => failpoints::BEFORE_PUBLISH,
            FailPoint::MidRead => failpoints::MID_READ,
        }
    }

    /// `FAILPOINTS` that let `skip` passes go by and then crash the process (the services'
    /// `return` action SIGKILLs the process where it stands).
    pub fn crash_after(self, skip: u32) -> String {
        format!("{}={skip}*off->1*return", self.name())
    }
}

/// How a kill is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "via", rename_all = "kebab-case")]
pub enum KillVia {
    /// SIGKILL from the harness at the planned moment.
    Signal,
    /// The service is started with this fail point armed and crashes itself there.
    FailPoint { point: FailPoint, skip: u32 },
}

/// One planned fault.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum FaultAction {
    Kill {
        role: Role,
        #[serde(flatten)]
        via: KillVia,
    },
    Pause {
        role: Role,
        #[serde(serialize_with = "crate::load::serialize_seconds")]
        duration: Duration,
    },
    /// users-service restarted with `percent`% of its publications delayed by `delay`.
    Slow {
        percent: u32,
        #[serde(serialize_with = "crate::load::serialize_seconds")]
        delay: Duration,
    },
    /// `strikes` bit flips or random bytes into `target` of the live segment, placed by an
    /// RNG seeded with `seed`.
    Scribble {
        target: ScribbleTarget,
        strikes: u32,
        seed: u64,
    },
    /// Every known way of shrinking or growing the live segment, each tried once.
    Resize,
    /// A process holding a slot as `holder` is killed and its pid given to a squatter.
    PidReuse { holder: HolderRole },
    /// users-service restarted with its segment on a full tmpfs, left degraded for the next
    /// interval, then restarted normally.
    FullTmpfs,
    /// users-service killed and restarted over a stale segment file of `kind`.
    StaleSegment { kind: StaleKind },
}

impl FaultAction {
    /// The service this fault hits.
    pub fn role(&self) -> Role {
        match self {
            FaultAction::Kill { role, .. } | FaultAction::Pause { role, .. } => *role,
            FaultAction::Slow { .. }
            | FaultAction::Scribble { .. }
            | FaultAction::Resize
            | FaultAction::PidReuse { .. }
            | FaultAction::FullTmpfs
            | FaultAction::StaleSegment { .. } => Role::UsersService,
        }
    }

    /// Whether requests to `endpoint` go through what this fault damages: the faulted
    /// service for kills, pauses and delays; the segment (the shm route only) for the faults
    /// a third process makes.
    pub fn affects(&self, endpoint: Endpoint) -> bool {
        match self {
            FaultAction::Kill { .. }
            | FaultAction::Pause { .. }
            | FaultAction::Slow { .. }
            | FaultAction::FullTmpfs
            | FaultAction::StaleSegment { .. } => self.role().serves(endpoint),
            FaultAction::Scribble { .. } | FaultAction::Resize | FaultAction::PidReuse { .. } => {
                endpoint == Endpoint::Shm
            }
        }
    }

    /// The row this fault is counted under in the report.
    pub fn label(&self) -> String {
        match self {
            FaultAction::Kill {
                role,
                via: KillVia::Signal,
            } => format!("SIGKILL {role}"),
            FaultAction::Kill {
                via: KillVia::FailPoint { point, .. },
                ..
            } => format!("crash at {}", point.name()),
            FaultAction::Pause { role, .. } => format!("SIGSTOP/SIGCONT {role}"),
            FaultAction::Slow { .. } => "slow publication phase".to_owned(),
            FaultAction::Scribble { target, .. } => format!("scribble {target:?}").to_lowercase(),
            FaultAction::Resize => "resize attempts".to_owned(),
            FaultAction::PidReuse { holder } => {
                format!("pid reuse of a dead {holder:?}").to_lowercase()
            }
            FaultAction::FullTmpfs => "start on a full tmpfs".to_owned(),
            FaultAction::StaleSegment { kind } => format!("stale segment: {kind:?}"),
        }
    }

    /// `FAILPOINTS` for the start of the process this fault hits that precedes it: a
    /// fail-point crash needs the process armed from its start, before the fault's turn.
    pub fn arming_in_advance(&self) -> Option<(Role, String)> {
        match self {
            FaultAction::Kill {
                role,
                via: KillVia::FailPoint { point, skip },
            } => Some((*role, point.crash_after(*skip))),
            _ => None,
        }
    }
}

/// What became of one injected fault, for the recovery check and the report.
#[derive(Clone, Debug, Serialize)]
pub struct Injected {
    /// The faulted service is back: restarted and ready, or continued. `None` when the fault
    /// was not carried out (e.g. the load ended first).
    #[serde(skip)]
    pub back: Option<tokio::time::Instant>,
    /// What was done in detail, or why the fault did not happen as planned (e.g. the fail
    /// point was never reached and the harness killed the process with a signal instead).
    pub note: Option<String>,
    /// The fault itself showed a violated invariant (e.g. a resize the kernel allowed, a
    /// slot the reaper never took back from a dead holder).
    pub violation: Option<String>,
}

impl Injected {
    /// The service is back now, nothing to add.
    pub fn back_now() -> Injected {
        Injected {
            back: Some(Instant::now()),
            note: None,
            violation: None,
        }
    }
}

/// Why an injector could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    #[error(transparent)]
    Inject(#[from] InjectError),
}

/// How long a third-process injector may take to reach and attach to the segment.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(5);

/// What an injector works with.
pub struct FaultContext<'a> {
    pub supervisor: &'a mut Supervisor,
    /// How long a killed service stays down.
    pub restart_delay: Duration,
    /// `FAILPOINTS` for the next start of the faulted service (the next fault's arming).
    pub next_arming: Option<String>,
    /// No fault may still be running at this instant (the fault-free tail of the load).
    pub stop_injecting: Instant,
    /// The quiet time planned after this fault (a degraded phase lasts this long).
    pub hold: Duration,
    /// users-service's `--shm-path`, when the scenario runs it with a segment file.
    pub segment_path: Option<std::path::PathBuf>,
}

impl FaultContext<'_> {
    pub fn remaining(&self) -> Duration {
        self.stop_injecting
            .saturating_duration_since(Instant::now())
    }

    /// Carries out `action`.
    pub async fn inject(&mut self, action: &FaultAction) -> Result<Injected, FaultError> {
        Ok(match *action {
            FaultAction::Kill { role, via } => kill::inject(self, role, via).await?,
            FaultAction::Pause { role, duration } => pause::inject(self, role, duration).await?,
            FaultAction::Slow { percent, delay } => slow::inject(self, percent, delay).await?,
            FaultAction::Scribble {
                target,
                strikes,
                seed,
            } => scribble::inject(self, target, strikes, seed).await?,
            FaultAction::Resize => resize::inject(self).await?,
            FaultAction::PidReuse { holder } => pid_reuse::inject(self, holder).await?,
            FaultAction::FullTmpfs => tmpfs::inject(self).await?,
            FaultAction::StaleSegment { kind } => stale::inject(self, kind).await?,
        })
    }

    /// The abstract socket serving users-service's segment now (it changes at every start).
    pub async fn segment_socket(&self) -> Result<String, InjectError> {
        Ok(
            crate::inject::segment_info(&self.supervisor.users_url(), ATTACH_TIMEOUT)
                .await?
                .socket,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fail_point_kills_arm_in_advance() {
        let crash = FaultAction::Kill {
            role: Role::Gateway,
            via: KillVia::FailPoint {
                point: FailPoint::MidRead,
                skip: 4,
            },
        };
        assert_eq!(
            crash.arming_in_advance(),
            Some((
                Role::Gateway,
                "gateway::mid-read=4*off->1*return".to_owned()
            ))
        );
        let signal = FaultAction::Kill {
            role: Role::Gateway,
            via: KillVia::Signal,
        };
        assert_eq!(signal.arming_in_advance(), None);
        let slow = FaultAction::Slow {
            percent: 10,
            delay: Duration::from_secs(1),
        };
        assert_eq!(
            slow.arming_in_advance(),
            None,
            "a slow phase arms its own start"
        );
    }

    #[test]
    fn recovery_paths_follow_what_the_fault_damages() {
        let users_kill = FaultAction::Kill {
            role: Role::UsersService,
            via: KillVia::Signal,
        };
        assert!(users_kill.affects(Endpoint::Api) && users_kill.affects(Endpoint::Shm));
        assert!(!users_kill.affects(Endpoint::Cached));
        let gateway_pause = FaultAction::Pause {
            role: Role::Gateway,
            duration: Duration::from_millis(50),
        };
        assert!(
            Endpoint::ALL
                .iter()
                .all(|&path| gateway_pause.affects(path))
        );
        assert!(FaultAction::Resize.affects(Endpoint::Shm));
        assert!(!FaultAction::Resize.affects(Endpoint::Api));
    }
}
