//! Resize faults (class 5): the adapter to `inject::resize`. Every way of shrinking or growing
//! the live segment is tried once; any attempt the kernel allows, or a size that changed, is a
//! violation (readers past the new end would die of SIGBUS). Then holes are punched in a
//! descriptor page, the header page and a live payload page, which the seals do not stop: the load's
//! invariants judge whether that did harm, and a header users-service does not restore within
//! `HEADER_RESTORE_LIMIT` is a violation.

use super::{ATTACH_TIMEOUT, FaultContext, FaultError, Injected};
use crate::inject::InjectError;
use crate::inject::resize::{HEADER_RESTORE_LIMIT, Punch, PunchTarget, attempt_all, punch_holes};

pub async fn inject(context: &mut FaultContext<'_>) -> Result<Injected, FaultError> {
    let socket = context.segment_socket().await?;
    let (attempts, size_after) = attempt_all(&socket, ATTACH_TIMEOUT)?;
    // Hunting for a live payload and waiting for the header block: off the async workers.
    let punches = tokio::task::spawn_blocking(move || punch_holes(&socket, ATTACH_TIMEOUT))
        .await
        .map_err(|error| InjectError::Refused(format!("the punching task failed: {error}")))??;
    let info = crate::inject::segment_info(&context.supervisor.users_url(), ATTACH_TIMEOUT).await;

    let mut violations = Vec::new();
    let allowed: Vec<&str> = attempts
        .iter()
        .filter(|attempt| !attempt.refused())
        .map(|attempt| attempt.how)
        .collect();
    if !allowed.is_empty() {
        violations.push(format!("the kernel allowed: {}", allowed.join(", ")));
    }
    if punches.size_after != size_after {
        violations.push(format!(
            "punching changed the size from {size_after} to {} B",
            punches.size_after
        ));
    }
    let header_punched = punches
        .punches
        .iter()
        .any(|punch| punch.target == PunchTarget::Header && punch.outcome.is_ok());
    if header_punched && punches.header_restored_after.is_none() {
        violations.push(format!(
            "users-service did not restore the punched header within {HEADER_RESTORE_LIMIT:?}"
        ));
    }

    let mut refusals: Vec<&str> = attempts
        .iter()
        .filter_map(|attempt| attempt.outcome.as_ref().err())
        .map(String::as_str)
        .collect();
    let refused = refusals.len();
    refusals.dedup();
    let punched: Vec<String> = punches.punches.iter().map(describe).collect();
    let restored = punches
        .header_restored_after
        .map(|after| format!("; header restored after {} ms", after.as_millis()))
        .unwrap_or_default();
    Ok(Injected {
        note: Some(format!(
            "{refused} of {} resizes refused ({}); size afterwards {} B; {}{restored}{}",
            attempts.len(),
            refusals.join("; "),
            punches.size_after,
            punched.join(", "),
            info.err()
                .map(|error| format!("; users-service then: {error}"))
                .unwrap_or_default()
        )),
        violation: (!violations.is_empty()).then(|| violations.join("; ")),
        ..Injected::back_now()
    })
}

fn describe(punch: &Punch) -> String {
    let target = match punch.target {
        PunchTarget::Payload { slot, live: true } => format!("live payload of slot {slot}"),
        PunchTarget::Payload { slot, live: false } => format!("idle payload of slot {slot}"),
        PunchTarget::Descriptors => "descriptor page".to_owned(),
        PunchTarget::Header => "header page".to_owned(),
    };
    match &punch.outcome {
        Ok(()) => format!("punched {target} @{}", punch.offset),
        Err(refusal) => format!("punch of {target} refused ({refusal})"),
    }
}
