//! Slow-producer faults (class 9): users-service restarted (gracefully) with a sleep before
//! `percent`% of its publications, some longer than the gateway's 2 s deadline, so the
//! gateway must answer a clean 5xx in time and nothing piles up.

use std::time::Duration;

use super::{FailPoint, FaultContext, Injected, Role};
use crate::harness::supervisor::SupervisorError;

/// `FAILPOINTS` delaying `percent`% of publications by `delay`.
pub fn slow_publications(percent: u32, delay: Duration) -> String {
    format!(
        "{}={percent}%sleep({})",
        FailPoint::BeforePublish.name(),
        delay.as_millis()
    )
}

pub async fn inject(
    context: &mut FaultContext<'_>,
    percent: u32,
    delay: Duration,
) -> Result<Injected, SupervisorError> {
    context.supervisor.stop(Role::UsersService).await?;
    let back = context
        .supervisor
        .launch(Role::UsersService, Some(slow_publications(percent, delay)))
        .await?;
    Ok(Injected {
        back: Some(back),
        violation: None,
        note: None,
    })
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
