//! Scribble faults (class 4): the adapter from the schedule to `inject::scribble`: attach to
//! the live segment and strike it the planned number of times, in the planned region.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{ATTACH_TIMEOUT, FaultContext, FaultError, Injected};
use crate::inject::InjectError;
use crate::inject::scribble::{ScribbleTarget, Scribbler};

pub async fn inject(
    context: &mut FaultContext<'_>,
    target: ScribbleTarget,
    strikes: u32,
    seed: u64,
) -> Result<Injected, FaultError> {
    let socket = context.segment_socket().await?;
    let scribbler = Scribbler::attach(&socket, ATTACH_TIMEOUT)?;
    // Payload strikes watch the segment for a slot holding data: off the async workers.
    let struck = tokio::task::spawn_blocking(move || {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..strikes)
            .map(|_| {
                let strike = scribbler.strike(target, &mut rng);
                format!(
                    "@{} {:#04x}→{:#04x}{}",
                    strike.offset,
                    strike.before,
                    strike.after,
                    if strike.live { " (live payload)" } else { "" }
                )
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|error| InjectError::Refused(format!("the scribbler task failed: {error}")))?;
    Ok(Injected {
        note: Some(format!("{target:?}: {}", struck.join(", ")).to_lowercase()),
        ..Injected::back_now()
    })
}
