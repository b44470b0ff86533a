//! Kill faults (`producer-kill`, `gateway-kill`): SIGKILL of a service at the planned moment,
//! or a crash the service makes itself at an armed fail point in the middle of a write or a
//! read; then a restart on the same address after the scenario's restart delay.

use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::class::{Fault, FaultClass, FaultContext, Injected};
use super::error::FaultError;
use super::fail_point::FailPoint;
use super::spec::{DurationRange, duration, is_share};
use crate::process::role::Role;

/// The longest an armed process is given to reach its fail point under load before the
/// harness kills it with a signal instead (and says so in the report).
pub const FAIL_POINT_REACH_LIMIT: Duration = Duration::from_secs(10);

/// SIGKILL of one service, or (for `failpoint_share` of the kills) a crash the service makes
/// itself at a fail point in the middle of a transfer.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KillSpec {
    pub count: u32,
    /// Time between the killed service being back and the next kill.
    pub interval: DurationRange,
    /// How long a killed service stays down before it is restarted.
    #[serde(
        deserialize_with = "duration",
        serialize_with = "crate::loadtest::load::serialize_seconds"
    )]
    pub restart_delay: Duration,
    /// Share of the kills made by an armed fail point instead of a signal, 0 to 1.
    #[serde(default)]
    pub failpoint_share: f64,
    /// An armed fail point lets 0..=`failpoint_max_skip` passes go by before it fires.
    #[serde(default = "default_failpoint_max_skip")]
    pub failpoint_max_skip: u32,
}

/// The kills of one service: `[fault.gateway-kill]` when `GATEWAY`, else
/// `[fault.producer-kill]` (users-service).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(transparent)]
pub struct KillsOf<const GATEWAY: bool>(pub KillSpec);

/// `[fault.producer-kill]`: kills of users-service.
pub type ProducerKillSpec = KillsOf<false>;
/// `[fault.gateway-kill]`: kills of the gateway.
pub type GatewayKillSpec = KillsOf<true>;

/// How a kill is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "via", rename_all = "kebab-case")]
pub enum KillVia {
    /// SIGKILL from the harness at the planned moment.
    Signal,
    /// The service is started with this fail point armed and crashes itself there.
    FailPoint { point: FailPoint, skip: u32 },
}

/// One planned kill.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "action", rename = "kill")]
pub struct Kill {
    pub role: Role,
    #[serde(flatten)]
    pub via: KillVia,
}

impl<const GATEWAY: bool> FaultClass for KillsOf<GATEWAY> {
    const NAME: &'static str = if GATEWAY {
        "gateway-kill"
    } else {
        "producer-kill"
    };
    type Action = Kill;

    fn count(&self) -> u32 {
        self.0.count
    }

    fn count_mut(&mut self) -> &mut u32 {
        &mut self.0.count
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        if !is_share(self.0.failpoint_share) {
            return Err(("fault.failpoint_share", "must be between 0 and 1".into()));
        }
        Ok(())
    }

    /// A signal, or (drawn with `failpoint_share`) a fail point of the service and its skip
    /// count.
    fn draw(&self, rng: &mut ChaCha8Rng) -> (DurationRange, Kill) {
        let spec = &self.0;
        let role = if GATEWAY {
            Role::Gateway
        } else {
            Role::UsersService
        };
        let via = if rng.random_bool(spec.failpoint_share) {
            let point = match role {
                Role::UsersService => {
                    FailPoint::PRODUCER[rng.random_range(0..FailPoint::PRODUCER.len())]
                }
                Role::Gateway => FailPoint::MidRead,
            };
            let skip = rng.random_range(0..=spec.failpoint_max_skip);
            KillVia::FailPoint { point, skip }
        } else {
            KillVia::Signal
        };
        (spec.interval, Kill { role, via })
    }

    fn restart_delay(&self) -> Option<Duration> {
        Some(self.0.restart_delay)
    }
}

impl Fault for Kill {
    fn role(&self) -> Role {
        self.role
    }

    fn label(&self) -> String {
        match self.via {
            KillVia::Signal => format!("SIGKILL {}", self.role),
            KillVia::FailPoint { point, .. } => format!("crash at {}", point.name()),
        }
    }

    fn arming_in_advance(&self) -> Option<(Role, String)> {
        match self.via {
            KillVia::FailPoint { point, skip } => Some((self.role, point.crash_after(skip))),
            KillVia::Signal => None,
        }
    }

    async fn inject(&self, context: &mut FaultContext<'_>) -> Result<Injected, FaultError> {
        let role = self.role;
        let note = match self.via {
            KillVia::Signal => {
                context.supervisor.kill(role).await?;
                None
            }
            KillVia::FailPoint { point, .. } => {
                let limit = FAIL_POINT_REACH_LIMIT.min(context.remaining());
                if context.supervisor.watch(limit, Some(role)).await? {
                    None
                } else {
                    context.supervisor.kill(role).await?;
                    Some(format!(
                        "{} not reached within {limit:?}: killed with SIGKILL instead",
                        point.name()
                    ))
                }
            }
        };
        context
            .supervisor
            .watch(context.restart_delay, None)
            .await?;
        let back = context
            .supervisor
            .launch(role, context.next_arming.take())
            .await?;
        Ok(Injected {
            back: Some(back),
            violation: None,
            note,
            pressure: None,
        })
    }
}

fn default_failpoint_max_skip() -> u32 {
    20
}
