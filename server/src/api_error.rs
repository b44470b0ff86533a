//! The one error type every handler returns: each variant knows its HTTP status and a short
//! stable code, renders as `{"error": MESSAGE, "code": CODE}`, and logs its internal detail
//! instead of sending it.
//!
//! What a client gets is fixed per code: the message is a fixed sentence, except where it
//! describes the client's own request (a bad query, a payload too large for a slot). Internal
//! detail — users-service's error text, segment paths, socket names, errno, epochs, the
//! deadline — goes to the log (and, on the gateway, to the operators' `/status` on
//! `--admin-listen`), never into a response body.

use std::borrow::Cow;
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use shmbridge::control::{Refusal, RequestError};
use shmbridge::{AcquireError, HandleParseError, PublishError, ReadError, RedeemError};

use crate::memory_budget::{BudgetKind, OverBudget};
use crate::payload::CRC_HEADER;
use crate::query::QueryError;

/// Seconds a client is told to wait before retrying a 503.
pub const RETRY_AFTER_SECONDS: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    BadQuery(#[from] QueryError),
    /// users-service could not be reached (refused, reset, DNS...).
    #[error("users-service is unavailable")]
    UpstreamUnavailable { reason: String },
    /// users-service did not answer in full within the deadline.
    #[error("users-service did not answer in time")]
    UpstreamDeadline { deadline: Duration },
    /// The producer refused a request over the control channel because its deadline passed
    /// there (waiting for a slot, or read late): the client sees [`ApiError::UpstreamDeadline`]'s
    /// status, code and message, and the gateway's `--transport auto` may still try REST.
    #[error("users-service did not answer in time")]
    ShmDeadline { deadline: Duration },
    /// users-service answered something the gateway cannot trust.
    #[error("users-service sent an invalid answer")]
    BadUpstream { reason: BadAnswer },
    /// users-service refused the request with a client error of its own; its status is
    /// forwarded, its text is not.
    #[error("{}", rejected_message(*status))]
    UpstreamRejected { status: StatusCode, reason: String },
    /// users-service is up but shedding load or shutting down: it answered 503 itself.
    #[error("users-service is temporarily unable to serve")]
    UpstreamBusy { reason: String },
    /// The payload does not fit in one shared-memory slot.
    #[error("payload of {len} bytes is larger than a shared-memory slot ({max} bytes)")]
    TooLargeForSlot { len: usize, max: usize },
    /// The payload is larger than users-service publishes through shared memory at all
    /// (its `--max-payload`). Never truncated: the REST route serves it.
    #[error("payload is larger than the shared-memory limit of {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    /// Every slot stayed busy for the claim timeout.
    #[error("no free shared-memory slot")]
    SlotsExhausted,
    /// The producer holds as many unredeemed publications as it allows, for this peer or in
    /// all.
    #[error("too many shared-memory publications waiting to be redeemed")]
    ShmBusy { refusal: Refusal },
    /// `POST /shm/users` without `--http-signal`.
    #[error(
        "POST /shm/users is off: gateways ask over the control socket (start users-service with --http-signal to enable it)"
    )]
    HttpSignalDisabled,
    /// The gateway has no usable segment (not attachable, wrong layout version, or
    /// users-service has none).
    #[error("shared memory is unavailable")]
    ShmUnavailable { reason: String },
    /// users-service could not create its segment at start-up and serves REST only; the
    /// creation error is in its log and its `/readyz`.
    #[error("shared memory is unavailable")]
    SegmentUnavailable { reason: String },
    /// The handle no longer names a ready publication (redeemed, reclaimed, other epoch).
    #[error("shared-memory handle is stale")]
    ShmStale { reason: ShmFault },
    /// The bytes read did not match the producer's checksum.
    #[error("shared-memory payload failed verification")]
    ShmCorrupt { reason: ShmFault },
    /// The client's request (its body, or over shared memory its head and body) is larger than
    /// the gateway forwards; `limit` is that bound in bytes.
    #[error("request is larger than the limit of {limit} bytes")]
    RequestTooLarge { limit: usize },
    /// The client's request cannot be written in the control channel's request encoding (a
    /// header value HTTP allows but the encoding does not, too many headers), and REST was not
    /// allowed to carry it instead.
    #[error("the request cannot be carried over shared memory")]
    RequestNotForwardable { reason: String },
    /// A path the gateway neither serves nor forwards (private, or outside `--forward-prefix`).
    #[error("no such route")]
    NotForwarded,
    /// Answering would take the service past its budget ([`crate::memory_budget`]): the
    /// gateway's bytes of answers in flight, or users-service's bytes of bodies being made.
    /// Refused at once, not queued.
    #[error("{}", over_budget_message(.0.kind))]
    OverBudget(#[from] OverBudget),
    /// A failure inside this service that the client cannot act on.
    #[error("internal error")]
    Internal { reason: String },
}

/// What was wrong with an answer from users-service: the detail behind
/// [`ApiError::BadUpstream`], for logs and operators only.
#[derive(Debug, thiserror::Error)]
pub enum BadAnswer {
    #[error("missing or malformed {} header", CRC_HEADER)]
    CrcHeader,
    #[error(
        "body crc32 {body:08x} differs from the {} header {header:08x}",
        CRC_HEADER
    )]
    BodyCrc { body: u32, header: u32 },
    #[error("declared body of {declared} bytes exceeds {limit}")]
    DeclaredTooLarge { declared: u64, limit: usize },
    #[error("body exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("body of {read} bytes, content-length said {declared}")]
    Length { read: usize, declared: u64 },
    #[error("body read failed after {read} bytes: {error}")]
    BodyRead { read: usize, error: reqwest::Error },
    #[error("handle is not UTF-8")]
    HandleNotUtf8,
    #[error("unparsable handle {text:?}: {error}")]
    Handle {
        text: String,
        error: HandleParseError,
    },
    #[error(
        "handle crc {handle:08x} differs from the {} header {header:08x}",
        CRC_HEADER
    )]
    HandleCrc { handle: u32, header: u32 },
    /// The handle names a slot or length the attached segment does not have.
    #[error("handle does not fit the segment: {0}")]
    HandleDoesNotFit(AcquireError),
    /// A sealed publication's descriptor is missing, not sealed, or not the handle's size.
    #[error("sealed payload: {0}")]
    Sealed(RedeemError),
    #[error("unreadable segment info: {0}")]
    SegmentInfo(serde_json::Error),
    /// The control channel answered something impossible (a handle of another segment, a
    /// malformed frame).
    #[error("control channel: {0}")]
    Channel(RequestError),
    /// A status the gateway has no meaning for; `said` is users-service's own words.
    #[error("unexpected answer: {said}")]
    Unexpected { said: String },
    /// The producer refused for a reason no correct exchange has (its handler failed, another
    /// control version).
    #[error("the producer refused: {0}")]
    Refused(Refusal),
    /// A response head that cannot be written as HTTP (a status, name or value HTTP does not
    /// allow).
    #[error("response head cannot be written as HTTP: {detail}")]
    Head { detail: String },
    /// More response headers, or header bytes, than the gateway passes on.
    #[error(
        "{count} response headers of {bytes} bytes, above the bound of {max_count} headers and {max_bytes} bytes"
    )]
    HeaderBlock {
        count: usize,
        bytes: usize,
        max_count: usize,
        max_bytes: usize,
    },
}

/// What went wrong in a hand-off through shared memory: the detail behind
/// [`ApiError::ShmStale`] and [`ApiError::ShmCorrupt`], for logs and operators only.
#[derive(Debug, thiserror::Error)]
pub enum ShmFault {
    /// The handle was refused (another epoch, not ready at its generation).
    #[error(transparent)]
    Acquire(AcquireError),
    /// The read did not give the published bytes (reclaimed mid-read, checksum mismatch).
    #[error(transparent)]
    Read(ReadError),
    /// The bytes read are not as many as the handle says.
    #[error("read {read} bytes, handle says {expected}")]
    Length { read: usize, expected: u32 },
    /// users-service was restarted: its segment is not the one the handle names.
    #[error("handle names epoch {handle:016x}, users-service now serves {serving:016x}")]
    EpochMoved { handle: u64, serving: u64 },
    /// Writing into the claimed slot failed (the reaper took it back).
    #[error("writing the slot failed: {0}")]
    Write(std::io::Error),
    /// The slot was taken back before it could be published.
    #[error(transparent)]
    Publish(PublishError),
    /// A sealed publication was reclaimed before it was redeemed, or did not verify.
    #[error(transparent)]
    Redeem(RedeemError),
    /// The control channel gave no publication (closed, congested, a failed publication).
    #[error("control channel: {0}")]
    Channel(RequestError),
}

/// The code users-service sends when it has no segment; the gateway maps it to
/// [`ApiError::ShmUnavailable`].
pub const SEGMENT_UNAVAILABLE: &str = "segment_unavailable";

fn over_budget_message(kind: BudgetKind) -> &'static str {
    match kind {
        BudgetKind::GatewayMemory => "the gateway is busy",
        BudgetKind::Making => "users-service is busy",
    }
}

fn rejected_message(status: StatusCode) -> &'static str {
    if status == StatusCode::INSUFFICIENT_STORAGE {
        "payload is larger than a shared-memory slot"
    } else {
        "users-service refused the request"
    }
}

impl ApiError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadQuery(_) => StatusCode::BAD_REQUEST,
            ApiError::UpstreamUnavailable { .. }
            | ApiError::UpstreamDeadline { .. }
            | ApiError::ShmDeadline { .. }
            | ApiError::UpstreamBusy { .. }
            | ApiError::SlotsExhausted
            | ApiError::ShmBusy { .. }
            | ApiError::ShmUnavailable { .. }
            | ApiError::SegmentUnavailable { .. }
            | ApiError::ShmStale { .. }
            | ApiError::OverBudget(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::HttpSignalDisabled | ApiError::NotForwarded => StatusCode::NOT_FOUND,
            ApiError::RequestNotForwardable { .. } => StatusCode::BAD_REQUEST,
            ApiError::BadUpstream { .. } | ApiError::ShmCorrupt { .. } => StatusCode::BAD_GATEWAY,
            ApiError::TooLargeForSlot { .. } => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::PayloadTooLarge { .. } | ApiError::RequestTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::UpstreamRejected { status, .. } => *status,
        }
    }

    /// The short, stable code clients may match on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadQuery(_) => "bad_query",
            ApiError::UpstreamUnavailable { .. } => "upstream_unavailable",
            ApiError::UpstreamDeadline { .. } | ApiError::ShmDeadline { .. } => "upstream_timeout",
            ApiError::BadUpstream { .. } => "upstream_invalid",
            ApiError::UpstreamRejected { status, .. }
                if *status == StatusCode::INSUFFICIENT_STORAGE =>
            {
                "too_large_for_slot"
            }
            ApiError::UpstreamRejected { .. } => "upstream_rejected",
            ApiError::UpstreamBusy { .. } => "upstream_busy",
            ApiError::TooLargeForSlot { .. } => "too_large_for_slot",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::SlotsExhausted => "slots_exhausted",
            ApiError::ShmBusy { .. } => "shm_busy",
            ApiError::HttpSignalDisabled => "http_signal_disabled",
            ApiError::ShmUnavailable { .. } => "shm_unavailable",
            ApiError::SegmentUnavailable { .. } => SEGMENT_UNAVAILABLE,
            ApiError::ShmStale { .. } => "shm_stale",
            ApiError::ShmCorrupt { .. } => "shm_corrupt",
            ApiError::RequestTooLarge { .. } => "request_too_large",
            ApiError::RequestNotForwardable { .. } => "request_not_forwardable",
            ApiError::NotForwarded => "not_found",
            ApiError::OverBudget(refused) => match refused.kind {
                BudgetKind::GatewayMemory => "gateway_busy",
                BudgetKind::Making => "users_service_busy",
            },
            ApiError::Internal { .. } => "internal",
        }
    }

    /// The detail behind the client-facing message, for logs and operators only.
    pub fn internal_reason(&self) -> Option<Cow<'_, str>> {
        match self {
            ApiError::UpstreamUnavailable { reason }
            | ApiError::UpstreamRejected { reason, .. }
            | ApiError::UpstreamBusy { reason }
            | ApiError::ShmUnavailable { reason }
            | ApiError::SegmentUnavailable { reason }
            | ApiError::RequestNotForwardable { reason }
            | ApiError::Internal { reason } => Some(Cow::Borrowed(reason)),
            ApiError::BadUpstream { reason } => Some(Cow::Owned(reason.to_string())),
            ApiError::ShmStale { reason } | ApiError::ShmCorrupt { reason } => {
                Some(Cow::Owned(reason.to_string()))
            }
            ApiError::UpstreamDeadline { deadline } => Some(Cow::Owned(format!(
                "no complete answer within the deadline of {}",
                humantime::format_duration(*deadline)
            ))),
            ApiError::ShmDeadline { deadline } => Some(Cow::Owned(format!(
                "the producer let the deadline of {} pass before publishing",
                humantime::format_duration(*deadline)
            ))),
            ApiError::ShmBusy { refusal } => Some(Cow::Owned(refusal.to_string())),
            ApiError::OverBudget(refused) => Some(Cow::Owned(refused.to_string())),
            ApiError::BadQuery(_)
            | ApiError::TooLargeForSlot { .. }
            | ApiError::PayloadTooLarge { .. }
            | ApiError::SlotsExhausted
            | ApiError::RequestTooLarge { .. }
            | ApiError::NotForwarded
            | ApiError::HttpSignalDisabled => None,
        }
    }

    /// The client-facing message with the internal detail after it, for logs and operators.
    pub fn detailed(&self) -> String {
        match self.internal_reason() {
            Some(reason) => format!("{self}: {reason}"),
            None => self.to_string(),
        }
    }

    /// Transient shared-memory failures that one fresh publication may cure: a stale or
    /// corrupt publication, no free slot, users-service busy on the HTTP signal.
    pub fn is_retryable_shm(&self) -> bool {
        matches!(
            self,
            ApiError::ShmStale { .. }
                | ApiError::ShmCorrupt { .. }
                | ApiError::SlotsExhausted
                | ApiError::UpstreamBusy { .. }
        )
    }

    /// Failures of the shared-memory path itself, which `--shm-fallback-to-api` and the
    /// gateway's `--transport auto` may route around over REST: not attached, busy, exhausted,
    /// the deadline passed inside the channel, a body or request shared memory does not carry
    /// (users-service being down is not one: the REST path would fail the same way).
    /// [`ApiError::RequestTooLarge`] is one because the gateway bounds a REST request's body
    /// before it chooses a transport: when it reaches this question, the bound it broke was
    /// the channel's.
    pub fn is_shm_failure(&self) -> bool {
        matches!(
            self,
            ApiError::ShmUnavailable { .. }
                | ApiError::ShmDeadline { .. }
                | ApiError::RequestTooLarge { .. }
                | ApiError::RequestNotForwardable { .. }
                | ApiError::SegmentUnavailable { .. }
                | ApiError::ShmStale { .. }
                | ApiError::ShmCorrupt { .. }
                | ApiError::SlotsExhausted
                | ApiError::ShmBusy { .. }
                | ApiError::TooLargeForSlot { .. }
                | ApiError::PayloadTooLarge { .. }
                | ApiError::UpstreamBusy { .. }
        ) || self.status_code() == StatusCode::INSUFFICIENT_STORAGE
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let message = self.to_string();
        let code = self.code();
        // Losing and regaining users-service is logged once by `Upstream`, attach problems once
        // by `ShmClient`, and a segment that could not be created once at start-up, not per
        // request; a payload too large for a slot is the client's choice of count, not a fault;
        // load shed for a budget is counted in `budget_refusals_total`.
        let logged_elsewhere = matches!(
            self,
            ApiError::UpstreamUnavailable { .. }
                | ApiError::UpstreamDeadline { .. }
                | ApiError::ShmDeadline { .. }
                | ApiError::ShmUnavailable { .. }
                | ApiError::SegmentUnavailable { .. }
                | ApiError::TooLargeForSlot { .. }
                | ApiError::UpstreamRejected { .. }
                | ApiError::OverBudget(_)
        );
        let reason = self.internal_reason().unwrap_or_default();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(%status, code, %message, %reason, "request failed");
        } else if status.is_server_error() && !logged_elsewhere {
            tracing::warn!(%status, code, %message, %reason, "request failed");
        } else {
            tracing::debug!(%status, code, %message, %reason, "request refused or failed");
        }
        let body = Json(serde_json::json!({ "error": message, "code": code }));
        let mut response = (status, body).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn unavailable_is_503_with_retry_after_and_hides_the_reason() {
        let error = ApiError::UpstreamUnavailable {
            reason: "connect ECONNREFUSED 127.0.0.1:4711".into(),
        };
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let body = body_of(response).await;
        assert_eq!(body["error"], "users-service is unavailable");
        assert_eq!(body["code"], "upstream_unavailable");
    }

    #[tokio::test]
    async fn bad_upstream_is_502_without_retry_after() {
        let response = ApiError::BadUpstream {
            reason: BadAnswer::BodyCrc { body: 1, header: 2 },
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
    }

    /// Every variant that carries internal detail: its body is exactly the stable code and
    /// message, and no part of the detail (paths, errno, upstream text, the deadline).
    #[tokio::test]
    async fn no_internal_detail_reaches_a_response_body() {
        const DETAIL: &str = "/dev/shm/segment: No such file or directory (os error 2) @sock-1f2e";
        let cases = [
            (
                ApiError::UpstreamUnavailable {
                    reason: DETAIL.into(),
                },
                "upstream_unavailable",
            ),
            (
                ApiError::UpstreamDeadline {
                    deadline: Duration::from_millis(2500),
                },
                "upstream_timeout",
            ),
            (
                ApiError::BadUpstream {
                    reason: BadAnswer::Unexpected {
                        said: DETAIL.into(),
                    },
                },
                "upstream_invalid",
            ),
            (
                ApiError::UpstreamRejected {
                    status: StatusCode::INSUFFICIENT_STORAGE,
                    reason: DETAIL.into(),
                },
                "too_large_for_slot",
            ),
            (
                ApiError::UpstreamRejected {
                    status: StatusCode::NOT_FOUND,
                    reason: DETAIL.into(),
                },
                "upstream_rejected",
            ),
            (
                ApiError::UpstreamBusy {
                    reason: DETAIL.into(),
                },
                "upstream_busy",
            ),
            (
                ApiError::ShmUnavailable {
                    reason: DETAIL.into(),
                },
                "shm_unavailable",
            ),
            (
                ApiError::SegmentUnavailable {
                    reason: DETAIL.into(),
                },
                SEGMENT_UNAVAILABLE,
            ),
            (
                ApiError::ShmStale {
                    reason: ShmFault::Write(std::io::Error::other(DETAIL)),
                },
                "shm_stale",
            ),
            (
                ApiError::ShmCorrupt {
                    reason: ShmFault::Write(std::io::Error::other(DETAIL)),
                },
                "shm_corrupt",
            ),
            (
                ApiError::Internal {
                    reason: DETAIL.into(),
                },
                "internal",
            ),
            (
                ApiError::ShmDeadline {
                    deadline: Duration::from_millis(2500),
                },
                "upstream_timeout",
            ),
            (
                ApiError::RequestNotForwardable {
                    reason: DETAIL.into(),
                },
                "request_not_forwardable",
            ),
            (
                ApiError::BadUpstream {
                    reason: BadAnswer::Head {
                        detail: DETAIL.into(),
                    },
                },
                "upstream_invalid",
            ),
        ];
        for (error, code) in cases {
            let message = error.to_string();
            let detailed = error.detailed();
            assert!(
                detailed.len() > message.len(),
                "{code}: detail kept for logs"
            );
            let body = body_of(error.into_response()).await;
            assert_eq!(body["code"], code);
            assert_eq!(body["error"], message.as_str(), "{code}");
            let text = body.to_string();
            for leak in ["/dev/shm", "os error", "No such file", "sock-", "2s 500ms"] {
                assert!(!text.contains(leak), "{code}: {text}");
            }
        }
    }
}
