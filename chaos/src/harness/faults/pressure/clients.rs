//! The clients of a memory-pressure round that read at full speed: the burst, every request of
//! the round's groups sent at once and answered once, and the prober, which asks the gateway
//! for one large body over shared memory again and again while the hog holds its share. Both
//! go through the load engine's request path ([`RequestContext`]), so every 200 body is checked
//! byte for byte and every failure is classified as the load's are.

use std::sync::Arc;
use std::time::Duration;

use shmbridge_server::dataset::DEFAULT_SEED;
use shmbridge_server::transport_header::Transport;
use tokio::task::JoinSet;
use tokio::time::Instant;
use url::Url;

use super::ClientGroup;
use crate::harness::faults::error::InjectError;
use crate::loadtest::load::endpoint::Endpoint;
use crate::loadtest::load::request::{Completed, RequestContext};
use crate::loadtest::load::stats::Outcome;
use crate::loadtest::load::target::{Resource, UpstreamPath};
use crate::loadtest::load::verify::BodyChecker;

/// How long a round's client waits for its whole answer: far past the gateway's 2 s deadline
/// and a large body's transfer, so that a request past it is a hang, not a slow machine.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// The prober's pause after a request that brought no large body: the budgets it was refused
/// by are given back as other requests finish, not at once.
const PROBE_PAUSE: Duration = Duration::from_millis(100);

/// One answer a round's client got, and when it was complete.
pub struct Answered {
    pub outcome: Outcome,
    /// The gateway's `x-transport` on a 200.
    pub transport: Option<Transport>,
    pub at: Instant,
}

impl Answered {
    pub fn now(outcome: Outcome, transport: Option<Transport>) -> Answered {
        Answered {
            outcome,
            transport,
            at: Instant::now(),
        }
    }

    /// A large body the gateway served over shared memory: verified, and carried as a sealed
    /// payload (above a slot).
    pub fn large_shm_body(&self) -> bool {
        matches!(self.outcome, Outcome::Verified) && self.transport == Some(Transport::ShmSealed)
    }
}

impl From<Completed> for Answered {
    fn from(completed: Completed) -> Answered {
        Answered::now(completed.outcome, completed.transport)
    }
}

/// A request context for one kind of request, with a client of its own.
fn context(
    gateway: &Url,
    endpoint: Endpoint,
    resource: &Resource,
    seed: u64,
    checker: &Arc<BodyChecker>,
) -> Result<RequestContext, InjectError> {
    RequestContext::new(
        gateway,
        &[endpoint],
        std::slice::from_ref(resource),
        seed,
        1,
        Arc::clone(checker),
    )
    .map_err(|error| InjectError::io("build an HTTP client", std::io::Error::other(error)))
}

/// Sends every request of `groups` at once, each on a connection of its own, and returns every
/// answer.
pub async fn burst(
    gateway: &Url,
    groups: &[ClientGroup],
    checker: &Arc<BodyChecker>,
) -> Result<Vec<Answered>, InjectError> {
    let mut requests = JoinSet::new();
    for group in groups {
        for (resource, seed) in group.requests() {
            let context = context(gateway, group.endpoint, &resource, seed, checker)?;
            let endpoint = group.endpoint;
            requests.spawn(async move {
                let deadline = Instant::now() + CLIENT_TIMEOUT;
                Answered::from(context.execute(endpoint, &resource, deadline).await)
            });
        }
    }
    let mut answers = Vec::new();
    while let Some(answered) = requests.join_next().await {
        answers.push(answered.map_err(|source| InjectError::Task {
            task: "burst request",
            source,
        })?);
    }
    Ok(answers)
}

/// Asks the gateway for one large body over shared memory.
pub struct Prober {
    context: RequestContext,
    resource: Resource,
}

impl Prober {
    pub fn new(
        gateway: &Url,
        probe: &UpstreamPath,
        checker: &Arc<BodyChecker>,
    ) -> Result<Prober, InjectError> {
        let resource = Resource::Path(probe.clone());
        Ok(Prober {
            context: context(gateway, Endpoint::Shm, &resource, DEFAULT_SEED, checker)?,
            resource,
        })
    }

    /// Asks, one request after another, until a large body is served or `until` has passed
    /// (no request starts after it); returns every answer.
    pub async fn until_served(&self, until: Instant) -> Vec<Answered> {
        let mut answers = Vec::new();
        while Instant::now() < until {
            let deadline = Instant::now() + CLIENT_TIMEOUT;
            let answered = Answered::from(
                self.context
                    .execute(Endpoint::Shm, &self.resource, deadline)
                    .await,
            );
            let served = answered.large_shm_body();
            answers.push(answered);
            if served {
                break;
            }
            tokio::time::sleep(PROBE_PAUSE.min(until.saturating_duration_since(Instant::now())))
                .await;
        }
        answers
    }
}

/// Of `answers`, the large bodies served over shared memory from `since` to `until`.
pub fn large_bodies_between<'a>(
    answers: impl IntoIterator<Item = &'a Answered>,
    since: Instant,
    until: Instant,
) -> u64 {
    answers
        .into_iter()
        .filter(|answered| answered.large_shm_body() && (since..=until).contains(&answered.at))
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadtest::load::stats::{Failure, FailureClass};

    fn answered(outcome: Outcome, transport: Option<Transport>, at: Instant) -> Answered {
        Answered {
            outcome,
            transport,
            at,
        }
    }

    #[test]
    fn only_verified_sealed_bodies_within_the_hold_count() {
        let since = Instant::now();
        let until = since + Duration::from_secs(2);
        let busy = Outcome::Failed(Failure {
            class: FailureClass::Status(503),
            detail: String::new(),
        });
        let answers = [
            answered(Outcome::Verified, Some(Transport::ShmSealed), since),
            answered(Outcome::Verified, Some(Transport::ShmSealed), until),
            answered(
                Outcome::Verified,
                Some(Transport::ShmSealed),
                until + Duration::from_millis(1),
            ),
            answered(Outcome::Verified, Some(Transport::ShmSlot), since),
            answered(Outcome::Verified, Some(Transport::Api), since),
            answered(busy, None, since),
        ];
        assert_eq!(large_bodies_between(&answers, since, until), 2);
        assert_eq!(
            large_bodies_between(&answers, until + Duration::from_secs(1), until),
            0
        );
    }
}
