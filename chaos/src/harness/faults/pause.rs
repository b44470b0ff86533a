//! Pause faults (`pause`): SIGSTOP a service, keep it stopped for the planned time (up to
//! longer than the 1 s slot lease, so a resumed writer or reader finds its slot reclaimed),
//! then SIGCONT. If the harness is interrupted meanwhile, stopping the service sends SIGCONT
//! after SIGTERM, so a paused child still exits.

use std::time::Duration;

use nix::sys::signal::Signal;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::class::{Fault, FaultClass, FaultContext, Injected};
use super::error::FaultError;
use super::spec::{DurationRange, half, is_share};
use crate::process::role::Role;

/// SIGSTOP, a pause, SIGCONT, of users-service or the gateway.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PauseSpec {
    pub count: u32,
    pub interval: DurationRange,
    /// How long the process stays stopped, e.g. `"50ms..3s"`.
    pub pause: DurationRange,
    /// Share of the pauses that stop users-service (the rest stop the gateway), 0 to 1.
    #[serde(default = "half")]
    pub users_service_share: f64,
}

/// One planned pause.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "action", rename = "pause")]
pub struct Pause {
    pub role: Role,
    #[serde(serialize_with = "crate::loadtest::load::serialize_seconds")]
    pub duration: Duration,
}

impl FaultClass for PauseSpec {
    const NAME: &'static str = "pause";
    type Action = Pause;

    fn count(&self) -> u32 {
        self.count
    }

    fn count_mut(&mut self) -> &mut u32 {
        &mut self.count
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        if !is_share(self.users_service_share) {
            return Err((
                "fault.users_service_share",
                "must be between 0 and 1".into(),
            ));
        }
        Ok(())
    }

    fn draw(&self, rng: &mut ChaCha8Rng) -> (DurationRange, Pause) {
        let role = if rng.random_bool(self.users_service_share) {
            Role::UsersService
        } else {
            Role::Gateway
        };
        let duration = self.pause.sample(rng);
        (self.interval, Pause { role, duration })
    }
}

impl Fault for Pause {
    fn role(&self) -> Role {
        self.role
    }

    fn label(&self) -> String {
        format!("SIGSTOP/SIGCONT {}", self.role)
    }

    async fn inject(&self, context: &mut FaultContext<'_>) -> Result<Injected, FaultError> {
        context.supervisor.signal(self.role, Signal::SIGSTOP)?;
        let watched = context.supervisor.watch(self.duration, None).await;
        // Continue the process whatever happened while it was stopped.
        let resumed = context.supervisor.signal(self.role, Signal::SIGCONT);
        watched?;
        resumed?;
        Ok(Injected::back_now())
    }
}
