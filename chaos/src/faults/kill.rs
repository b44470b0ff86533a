//! Kill faults (classes 1 and 2): SIGKILL of a service at the planned moment, or a crash the
//! service makes itself at an armed fail point in the middle of a write or a read; then a
//! restart on the same address after the scenario's restart delay.

use std::time::Duration;

use super::{FaultContext, Injected, KillVia, Role};
use crate::harness::supervisor::SupervisorError;

/// The longest an armed process is given to reach its fail point under load before the
/// harness kills it with a signal instead (and says so in the report).
pub const FAIL_POINT_REACH_LIMIT: Duration = Duration::from_secs(10);

pub async fn inject(
    context: &mut FaultContext<'_>,
    role: Role,
    via: KillVia,
) -> Result<Injected, SupervisorError> {
    let note = match via {
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
    })
}
