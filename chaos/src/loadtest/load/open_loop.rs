//! Open-loop load in the wrk2 model: request k is due at `start + k / rate` whatever happened
//! to earlier ones, and its latency is measured from that scheduled time. A server that stalls
//! therefore delays every request scheduled during the stall, and the percentiles show it
//! (closed-loop tools wait for the stalled reply before sending again and so hide the backlog:
//! coordinated omission).
//!
//! At most `connections` requests are in flight, like wrk2's connection count; the others
//! queue, and their queueing time is part of their latency. A request's deadline is its
//! scheduled time plus the timeout, so a backlog drains as timeouts instead of growing forever.

use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::Generator;
use super::request::Completed;
use super::stats::{Failure, FailureClass, Outcome};

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct OpenLoopProfile {
    /// Requests per second, over all endpoints.
    pub rate: f64,
    /// Requests in flight at most.
    pub connections: u32,
}

pub(super) async fn run_open_loop(profile: OpenLoopProfile, generator: Arc<Generator>) {
    let start = generator.recorder.started();
    let slots = Arc::new(Semaphore::new(profile.connections as usize));
    let mut rng = StdRng::seed_from_u64(generator.rng_seed);
    let mut in_flight = JoinSet::new();
    for index in 0u64.. {
        // Computed from the index, not accumulated, so rounding never drifts the schedule.
        let scheduled = start + Duration::from_secs_f64(index as f64 / profile.rate);
        if scheduled >= generator.end {
            break;
        }
        tokio::time::sleep_until(scheduled).await;
        let endpoint = generator.mix.pick(&mut rng);
        let resource = generator.requests.pick(&mut rng);
        let (generator, slots) = (generator.clone(), slots.clone());
        in_flight.spawn(async move {
            let deadline = scheduled + generator.timeout;
            let completed = match tokio::time::timeout_at(deadline, slots.acquire_owned()).await {
                Ok(Ok(_slot)) => {
                    generator
                        .context
                        .execute(endpoint, &resource, deadline)
                        .await
                }
                Ok(Err(_closed)) => unreachable!("the semaphore is never closed"),
                Err(_elapsed) => Completed {
                    outcome: Outcome::Failed(Failure {
                        class: FailureClass::Timeout,
                        detail: "no free connection before the deadline".into(),
                    }),
                    body_bytes: 0,
                    transport: None,
                },
            };
            generator
                .recorder
                .record(endpoint, &resource, scheduled, &completed);
        });
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
}
