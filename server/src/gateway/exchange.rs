//! One exchange with the upstream for one client request, over the route `--transport` (or the
//! measuring route) chose: REST, or shared memory with one retry and, where allowed, REST as the
//! fallback. One deadline, `--deadline`, bounds the whole exchange, retry and fallback
//! included.
//!
//! Over shared memory the request is written in `shmbridge::http`'s encoding and sent on the
//! control channel; the producer answers with a head and the body in the tier it chose, which
//! is redeemed and verified ([`Attachment::redeem`]) and passed back as the same HTTP answer
//! ([`Proxied::from_head`]). A stale, corrupt or exhausted publication gets one retry (a closed
//! connection re-connects on it). Under a fallback, a failure of shared memory itself
//! ([`ApiError::is_shm_failure`]: not attached, busy, exhausted, the deadline passed inside the
//! channel, a request or body it cannot carry) is served over REST in the time left, marked
//! `x-transport: api-fallback` and counted in `shm_fallbacks_total{code}`.
//!
//! A request that is not idempotent (POST, PATCH...) is sent at most once: the producer's
//! handler may have run before a failure was known (a slot that did not come free for the body
//! it made, a connection closed mid-answer), so such a request gets no retry, and falls back to
//! REST only when shared memory failed before the request was sent ([`never_sent`]).

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::Response as HttpResponse;
use shmbridge::Handle;
use shmbridge::control::Response;

use crate::api_error::{ApiError, BadAnswer};
use crate::payload::CRC_HEADER;
use crate::transport_header::Transport;

use super::answer::{Answer, Expect};
use super::forward_request::ForwardRequest;
use super::proxied_response::Proxied;
use super::published_objects::PublishedAs;
use super::stage_timing::{Stage, Stages};
use super::state::Shared;
use super::transport_choice::Route;
use super::upstream::Reserved;

/// The request's deadline, started when the exchange starts.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    started: Instant,
    deadline: Duration,
}

impl Clock {
    pub fn start(deadline: Duration) -> Clock {
        Clock {
            started: Instant::now(),
            deadline,
        }
    }

    pub fn ends(&self) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.started + self.deadline)
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_sub(self.started.elapsed())
    }

    fn expired(&self) -> ApiError {
        ApiError::UpstreamDeadline {
            deadline: self.deadline,
        }
    }
}

/// Forwards `request` over `route` and reads the whole answer.
pub async fn exchange(
    shared: &Shared,
    request: &ForwardRequest,
    route: Route,
    expect: Expect,
) -> Result<Answer, ApiError> {
    match route {
        Route::Api => over_rest(shared, request, expect, Transport::Api)
            .await?
            .expecting(expect),
        Route::Shm { fallback_to_api } => {
            let clock = Clock::start(shared.upstream.deadline());
            let shm = async {
                let encoded = request.encode()?;
                let attempt = || over_channel(shared, &encoded, request.is_head(), clock.ends());
                if request.is_idempotent() {
                    retried(attempt).await
                } else {
                    attempt().await
                }
            };
            with_fallback(shared, request, expect, fallback_to_api, clock, shm).await
        }
    }
}

/// A `GET` over shared memory (`route`) that may be answered from a published object: its kept
/// answer if the producer's board says it is current (nothing is asked of the producer), else
/// the exchange, whose answer is kept if the producer published it as an object version. When
/// the producer cannot answer, a kept answer current on the board as the producer left it is
/// served within `--stale-if-error`.
pub async fn published(
    shared: &Shared,
    request: &ForwardRequest,
    route: Route,
    expect: Expect,
) -> Result<HttpResponse, ApiError> {
    let Ok(encoded) = request.encode() else {
        // A request the channel cannot carry is no object's: the exchange refuses it, or falls
        // back to REST, as for any other.
        let answer = exchange(shared, request, route, expect).await?;
        return Ok(answer.into_response());
    };
    let attachment = shared.shm.current();
    if let Some(attachment) = attachment
        .as_ref()
        .filter(|attachment| attachment.is_open())
        && let Some(board) = attachment.board()
        && let Some(kept) = shared.published.current(&encoded, board)
    {
        return Ok(kept.into_response(Transport::ShmPublished));
    }
    match exchange(shared, request, route, expect).await {
        Ok(answer) => {
            let published = answer.published;
            shared.published.keep(encoded, published, &answer.proxied);
            Ok(answer.into_response())
        }
        // The producer could not answer (shared memory failed, or users-service is down or
        // overloaded: any 5xx of the gateway's own); a client's error is never hidden.
        Err(error) if error.is_shm_failure() || error.status_code().is_server_error() => {
            // The attachment the exchange ended with: the one whose producer just failed, or
            // (that failing) the last one that ever answered.
            let stale = shared
                .shm
                .current()
                .and_then(|attachment| shared.published.stale(&encoded, attachment.board()?));
            stale
                .map(|kept| kept.into_response(Transport::ShmStale))
                .ok_or(error)
        }
        Err(error) => Err(error),
    }
}

/// Runs `shm` until `clock` runs out; if it fails in a way REST may not (and `fallback_to_api`),
/// sends `request` over REST in the time left.
pub async fn with_fallback(
    shared: &Shared,
    request: &ForwardRequest,
    expect: Expect,
    fallback_to_api: bool,
    clock: Clock,
    shm: impl Future<Output = Result<Answer, ApiError>>,
) -> Result<Answer, ApiError> {
    let outcome = tokio::time::timeout_at(clock.ends(), shm)
        .await
        .unwrap_or_else(|_| Err(clock.expired()))
        .and_then(|answer| answer.expecting(expect));
    match outcome {
        Err(error)
            if fallback_to_api
                && error.is_shm_failure()
                && (request.is_idempotent() || never_sent(&error)) =>
        {
            metrics::counter!("shm_fallbacks_total", "code" => error.code()).increment(1);
            tracing::debug!(%error, reason = ?error.internal_reason(), "shared memory failed; forwarding over REST");
            let rest = over_rest(shared, request, expect, Transport::ApiFallback);
            tokio::time::timeout(clock.remaining(), rest)
                .await
                .unwrap_or_else(|_| Err(clock.expired()))?
                .expecting(expect)
        }
        outcome => outcome,
    }
}

/// One attempt, and one more if the first failed in a way a fresh publication may cure.
pub async fn retried<F, Fut>(mut attempt: F) -> Result<Answer, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Answer, ApiError>>,
{
    match attempt().await {
        Err(error) if error.is_retryable_shm() => {
            metrics::counter!("shm_retries_total").increment(1);
            tracing::debug!(%error, "retrying once through shared memory");
            attempt().await
        }
        outcome => outcome,
    }
}

/// Shared-memory failures that happen before the request reaches the producer: no attachment,
/// or a request the channel cannot carry.
fn never_sent(error: &ApiError) -> bool {
    matches!(
        error,
        ApiError::ShmUnavailable { .. }
            | ApiError::RequestTooLarge { .. }
            | ApiError::RequestNotForwardable { .. }
    )
}

/// `request` over REST, the answer marked as carried by `transport` (`api`, or `api-fallback`).
async fn over_rest(
    shared: &Shared,
    request: &ForwardRequest,
    expect: Expect,
    transport: Transport,
) -> Result<Answer, ApiError> {
    let mut stages = Stages::default();
    let sent = Instant::now();
    let Reserved {
        answer,
        reservation,
    } = shared.upstream.forward(request).await?;
    stages.end(Stage::Upstream, sent);
    if expect == Expect::UsersBody
        && answer.status == StatusCode::OK
        && !answer.headers.contains_key(CRC_HEADER)
    {
        metrics::counter!("upstream_errors_total", "kind" => "bad_answer").increment(1);
        return Err(ApiError::BadUpstream {
            reason: BadAnswer::CrcHeader,
        });
    }
    Ok(Answer {
        proxied: Proxied::from_rest(answer, request.is_head())?,
        transport,
        stages,
        reservation,
        published: None,
    })
}

/// One request on the control channel: attach if needed, wait for room among the publications
/// in flight, send, redeem.
async fn over_channel(
    shared: &Shared,
    request: &[u8],
    head_request: bool,
    ends: tokio::time::Instant,
) -> Result<Answer, ApiError> {
    let mut stages = Stages::default();
    let started = Instant::now();
    let attachment = shared
        .shm
        .attachment(&shared.upstream, None, "not_attached")
        .await?;
    // Held until the body is redeemed (or, unanswered, by the request: see
    // `Attachment::request`), so the gateway never has more publications asked for and not
    // redeemed than it has permits, whichever way it asks for them.
    let permit = shared.shm.in_flight_permit(ends).await?;
    let sent = stages.end(Stage::Attach, started);
    let (publication, _in_flight) = attachment.request(request, ends, permit).await?;
    let answered = stages.end(Stage::Channel, sent);
    if let Some(handle) = publication.handle() {
        record_handle(handle);
    }
    // Before the copy or the mapping: a refusal here releases the publication unread. The
    // body is made already, so it waits for room (answers being written drain the budget in
    // milliseconds) rather than waste that work, but not past the deadline.
    let reservation = shared.budget.reserve_by(publication.len(), ends).await?;
    let redeemed = attachment.redeem(publication).await?;
    stages.end(Stage::Redeem, answered);
    let Response { head, object, body } = redeemed.response;
    let published = object
        .zip(attachment.board())
        .map(|(object, board)| PublishedAs {
            board_epoch: board.epoch(),
            object,
        });
    let transport = Transport::of_tier(body.tier());
    let proxied = Proxied::from_head(&head, body.into_bytes(), redeemed.crc32, head_request)?;
    Ok(Answer {
        proxied,
        transport,
        stages,
        reservation,
        published,
    })
}

/// Notes the handle being redeemed in the request's span.
pub fn record_handle(handle: &Handle) {
    let span = tracing::Span::current();
    span.record("slot", handle.slot);
    span.record("generation", handle.generation);
}
