//! Resize faults (class 5): the adapter to `inject::resize`: every way of shrinking or
//! growing the live segment, tried once; any attempt the kernel allows, or a size that
//! changed, is a violation (readers past the new end would die of SIGBUS).

use super::{ATTACH_TIMEOUT, FaultContext, FaultError, Injected};
use crate::inject::resize::attempt_all;

pub async fn inject(context: &mut FaultContext<'_>) -> Result<Injected, FaultError> {
    let socket = context.segment_socket().await?;
    let (attempts, size_after) = attempt_all(&socket, ATTACH_TIMEOUT)?;
    let info = crate::inject::segment_info(&context.supervisor.users_url(), ATTACH_TIMEOUT).await;
    let allowed: Vec<&str> = attempts
        .iter()
        .filter(|attempt| !attempt.refused())
        .map(|attempt| attempt.how)
        .collect();
    let violation =
        (!allowed.is_empty()).then(|| format!("the kernel allowed: {}", allowed.join(", ")));
    let mut refusals: Vec<&str> = attempts
        .iter()
        .filter_map(|attempt| attempt.outcome.as_ref().err())
        .map(String::as_str)
        .collect();
    let refused = refusals.len();
    refusals.dedup();
    Ok(Injected {
        note: Some(format!(
            "{refused} of {} refused ({}); size afterwards {size_after} B{}",
            attempts.len(),
            refusals.join("; "),
            info.err()
                .map(|error| format!("; users-service then: {error}"))
                .unwrap_or_default()
        )),
        violation,
        ..Injected::back_now()
    })
}
