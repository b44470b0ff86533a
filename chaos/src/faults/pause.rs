//! Pause faults (class 3): SIGSTOP a service, keep it stopped for the planned time (up to
//! longer than the 1 s slot lease, so a resumed writer or reader finds its slot reclaimed),
//! then SIGCONT. If the harness is interrupted meanwhile, stopping the service sends SIGCONT
//! after SIGTERM, so a paused child still exits.

use std::time::Duration;

use nix::sys::signal::Signal;

use super::{FaultContext, Injected, Role};
use crate::harness::supervisor::SupervisorError;

pub async fn inject(
    context: &mut FaultContext<'_>,
    role: Role,
    duration: Duration,
) -> Result<Injected, SupervisorError> {
    context.supervisor.signal(role, Signal::SIGSTOP)?;
    let watched = context.supervisor.watch(duration, None).await;
    // Continue the process whatever happened while it was stopped.
    let resumed = context.supervisor.signal(role, Signal::SIGCONT);
    watched?;
    resumed?;
    Ok(Injected::back_now())
}
