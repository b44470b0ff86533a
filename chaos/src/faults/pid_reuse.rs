//! PID-reuse faults (class 8): the adapter to `inject::pid_reuse`: one round in which a slot
//! holder dies and a squatter takes its pid; the slot must still come back within the
//! round's timeout (the reaper checks the holder's start time, not just its pid).

use super::{FaultContext, FaultError, Injected, Role};
use crate::inject::pid_reuse::{HolderRole, RECLAIM_TIMEOUT, round};

pub async fn inject(
    context: &mut FaultContext<'_>,
    holder: HolderRole,
) -> Result<Injected, FaultError> {
    let socket = context.segment_socket().await?;
    let users_pid = context.supervisor.pid(Role::UsersService)?;
    let program = context.supervisor.program().to_owned();
    let round = round(
        &program,
        users_pid.as_raw().unsigned_abs(),
        &context.supervisor.users_url(),
        &socket,
        holder,
    )
    .await?;
    let violation = round.reclaimed_after.is_none().then(|| {
        format!(
            "slot {} of dead pid {} (now a squatter's) still held {RECLAIM_TIMEOUT:?} after users-service resumed",
            round.slot, round.dead_pid
        )
    });
    Ok(Injected {
        note: Some(format!(
            "slot {} held by pid {} (start {}) then squatter (start {}); freed after {}",
            round.slot,
            round.dead_pid,
            round.holder_start_time,
            round.squatter_start_time,
            round
                .reclaimed_after
                .map_or_else(|| "never".to_owned(), |after| format!("{after:?}"))
        )),
        violation,
        ..Injected::back_now()
    })
}
