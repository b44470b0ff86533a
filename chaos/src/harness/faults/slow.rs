//! Slow-producer faults (`slow-producer`): users-service restarted (gracefully) with a sleep
//! before `percent`% of its publications, some longer than the gateway's 2 s deadline, so the
//! gateway must answer a clean 5xx in time and nothing piles up.

use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::class::{Fault, FaultClass, FaultContext, Injected};
use super::error::FaultError;
use super::fail_point::FailPoint;
use super::spec::DurationRange;
use crate::process::role::Role;

/// users-service started with a sleep before each publication on `percent`% of them; each
/// phase restarts it (gracefully) with a newly drawn percentage and delay.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SlowSpec {
    /// Phases, each one a fault.
    pub count: u32,
    /// How long each phase runs.
    pub interval: DurationRange,
    /// The delay before a publication, e.g. `"500ms..3s"` (the gateway's deadline is 2 s).
    pub delay: DurationRange,
    /// Percent of publications delayed, drawn per phase from this inclusive range.
    pub percent: [u32; 2],
}

/// users-service restarted with `percent`% of its publications delayed by `delay`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "action", rename = "slow")]
pub struct Slow {
    pub percent: u32,
    #[serde(serialize_with = "crate::loadtest::load::serialize_seconds")]
    pub delay: Duration,
}

/// `FAILPOINTS` delaying `percent`% of publications by `delay`.
pub fn slow_publications(percent: u32, delay: Duration) -> String {
    format!(
        "{}={percent}%sleep({})",
        FailPoint::BeforePublish.name(),
        delay.as_millis()
    )
}

impl FaultClass for SlowSpec {
    const NAME: &'static str = "slow-producer";
    type Action = Slow;

    fn count(&self) -> u32 {
        self.count
    }

    fn count_mut(&mut self) -> &mut u32 {
        &mut self.count
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        let [low, high] = self.percent;
        if low > high || high > 100 {
            return Err((
                "fault.percent",
                format!("[{low}, {high}] must be an ascending range within 0..=100"),
            ));
        }
        Ok(())
    }

    fn draw(&self, rng: &mut ChaCha8Rng) -> (DurationRange, Slow) {
        let [low, high] = self.percent;
        let percent = rng.random_range(low..=high);
        let delay = self.delay.sample(rng);
        (self.interval, Slow { percent, delay })
    }
}

impl Fault for Slow {
    fn role(&self) -> Role {
        Role::UsersService
    }

    fn label(&self) -> String {
        "slow publication phase".to_owned()
    }

    async fn inject(&self, context: &mut FaultContext<'_>) -> Result<Injected, FaultError> {
        context.supervisor.stop(Role::UsersService).await?;
        let back = context
            .supervisor
            .launch(
                Role::UsersService,
                Some(slow_publications(self.percent, self.delay)),
            )
            .await?;
        Ok(Injected {
            back: Some(back),
            violation: None,
            note: None,
            pressure: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_point_text_uses_the_fail_crate_syntax() {
        assert_eq!(
            slow_publications(25, Duration::from_millis(2500)),
            "users-service::before-publish=25%sleep(2500)"
        );
        assert_eq!(
            FailPoint::MidCopy.crash_after(37),
            "users-service::mid-copy=37*off->1*return"
        );
    }
}
