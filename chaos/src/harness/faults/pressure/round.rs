//! One round of memory pressure, from the slow readers to the verdict: the slow readers start
//! one after another, then all read slowly for the round's drawn time, holding what the
//! gateway's budget let them have; meanwhile the hog takes its share of users-service's sealed
//! bytes (with only the small load and the trickling readers beside it, nothing but its share
//! refuses it), and holds it for the round's drawn time, the prober asking all along; as the
//! slow readers read the rest at full speed, the burst, all at once; the hog lets go; then, if
//! no large body reached the gateway during that hold, quiet holds with the prober alone, until
//! one does or [`QUIET_HOLDS`] are spent. (The drawn times are such that the burst comes within
//! the hold: the slow spell is at most 2 s past the last reader's start, the take about 1 s and
//! the hold at least 1.5 s.)
//! Every answer of the round's clients, and every hold, goes into the round's
//! [`PressureRound`]; a hog refused other than at its share, or not withdrawn when it let go,
//! is the round's violation.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::clients::{self, Answered, Prober, large_bodies_between};
use super::share::{self, Holding, Released, judge_share};
use super::slow_reader::SlowReaders;
use super::{Pressure, sealed_blob_size};
use crate::harness::faults::channel::{self, blocking};
use crate::harness::faults::class::{FaultContext, Injected};
use crate::harness::faults::error::{FaultError, InjectError};
use crate::harness::memory::{Hold, PressureRound, mib};
use crate::loadtest::load::stats::Outcome;
use crate::loadtest::load::verify::{BodyChecker, Expected};

/// The longest quiet hold: the prober alone, asking until one large body is served. Below
/// users-service's 5 s ready TTL with the hog's take (about a second) before it.
const QUIET_HOLD: Duration = Duration::from_millis(2500);
/// Quiet holds a round tries before it concludes that the gateway gets no large body while the
/// hog holds its share.
const QUIET_HOLDS: u32 = 3;

pub async fn run(
    action: &Pressure,
    context: &mut FaultContext<'_>,
) -> Result<Injected, FaultError> {
    let spec = &action.spec;
    let gateway = context.supervisor.gateway_url();
    let address = gateway_address(&gateway)?;
    let checker = Arc::clone(&context.checker);
    expect_bodies(action, &checker).await?;
    let socket = context.segment_socket().await?;
    let hog_request = channel::get(spec.hog.as_str());
    let hog_body = sealed_blob_size(&spec.hog).expect("checked when the scenario was parsed");
    let share = spec.budgets.sealed_share.bytes();
    let prober = Prober::new(&gateway, &spec.probe, &checker)?;
    let mut round = PressureRound::default();
    let mut violations = Vec::new();

    let readers = SlowReaders::start(address, &spec.slow_readers, action.slow, &checker).await;
    let holding = take_share(&socket, &hog_request, hog_body, share, &mut violations).await?;
    let take_note = format!(
        "hog held {} of its {} share",
        mib(holding.held_bytes()),
        mib(share)
    );
    let hold_end = Instant::now() + action.hold;
    let burst_at = readers.slow_until();
    let burst = async {
        tokio::time::sleep_until(burst_at).await;
        clients::burst(&gateway, &spec.burst, &checker).await
    };
    let hold = async {
        let probed = prober.until_served(hold_end).await;
        tokio::time::sleep_until(hold_end).await;
        (probed, holding.release().await)
    };
    let (burst, (probed, released)) = tokio::join!(burst, hold);
    let slow = readers.finish().await;
    let (burst, released) = (burst?, released?);
    let answered: Vec<&Answered> = burst.iter().chain(&slow).chain(&probed).collect();
    record(&mut round, &mut violations, &answered, &released);
    let pressure_note = format!(
        "burst {}: {} verified; slow readers {}: {} verified",
        burst.len(),
        verified(&burst),
        slow.len(),
        verified(&slow)
    );

    let mut quiet = 0;
    while round.served_during_holds() == 0 && quiet < QUIET_HOLDS {
        quiet += 1;
        let holding = take_share(&socket, &hog_request, hog_body, share, &mut violations).await?;
        let probed = prober.until_served(Instant::now() + QUIET_HOLD).await;
        let released = holding.release().await?;
        let answered: Vec<&Answered> = probed.iter().collect();
        record(&mut round, &mut violations, &answered, &released);
    }
    let served: Vec<String> = round
        .holds
        .iter()
        .map(|hold| format!("{} in {:.1} s", hold.served, hold.seconds))
        .collect();
    let note = format!(
        "{take_note}; {pressure_note}; large shm bodies served during the holds: {}",
        served.join(", ")
    );
    violations.dedup();
    Ok(Injected {
        back: Some(Instant::now()),
        note: Some(note),
        violation: (!violations.is_empty()).then(|| violations.join("; ")),
        pressure: Some(round),
    })
}

/// The hog takes its share with `request` (for bodies of `body` bytes), judged against `share`.
async fn take_share(
    socket: &str,
    request: &[u8],
    body: u64,
    share: u64,
    violations: &mut Vec<String>,
) -> Result<Holding, InjectError> {
    let holding = share::take(socket, request).await?;
    if let Err(violation) = judge_share(&holding.end(), holding.held_bytes(), body, share) {
        violations.push(violation);
    }
    Ok(holding)
}

/// Counts a hold's answers and the hold itself into `round`.
fn record(
    round: &mut PressureRound,
    violations: &mut Vec<String>,
    answered: &[&Answered],
    released: &Released,
) {
    for answer in answered {
        round.answers.record(&answer.outcome);
    }
    violations.extend(released.violation());
    let served = if released.held_throughout() {
        large_bodies_between(answered.iter().copied(), released.since, released.at)
    } else {
        0
    };
    round.holds.push(Hold {
        held_bytes: released.held_bytes,
        seconds: released.seconds(),
        served,
    });
}

fn verified(answers: &[Answered]) -> usize {
    answers
        .iter()
        .filter(|answer| matches!(answer.outcome, Outcome::Verified))
        .count()
}

/// Generates every body the round's clients may be answered with, once per run (the checker
/// keeps them), before the round's clock starts: a 62 MB body takes a few hundred milliseconds.
/// Not a blob above users-service's payload limit, whose answer is a 413 (should one be served
/// anyway, the checker makes its body then).
async fn expect_bodies(action: &Pressure, checker: &Arc<BodyChecker>) -> Result<(), InjectError> {
    let spec = &action.spec;
    let max_payload = spec.budgets.max_payload.bytes();
    let mut expected: Vec<_> = spec
        .burst
        .iter()
        .chain(&spec.slow_readers)
        .flat_map(|group| group.requests())
        .map(|(resource, seed)| resource.expected(seed))
        .filter(|body| !matches!(body, Expected::Blob(query) if query.size > max_payload))
        .collect();
    expected.push(spec.probe.expected());
    let checker = Arc::clone(checker);
    blocking("generate the expected bodies", move || {
        for body in expected {
            checker.expected_body(body);
        }
        Ok(())
    })
    .await
}

/// The gateway's socket address, for the slow readers' own connections.
fn gateway_address(gateway: &url::Url) -> Result<SocketAddr, InjectError> {
    gateway
        .socket_addrs(|| None)
        .ok()
        .and_then(|addresses| addresses.into_iter().next())
        .ok_or_else(|| {
            InjectError::io(
                format!("read the gateway's address from {gateway}"),
                std::io::ErrorKind::InvalidInput,
            )
        })
}
