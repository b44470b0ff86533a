//! The one error type every handler returns: each variant knows its HTTP status, renders as
//! `{"error": "..."}` with a client-safe message, and logs its internal reason instead of
//! sending it.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

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
    #[error("users-service did not answer within {}", humantime::format_duration(*deadline))]
    UpstreamDeadline { deadline: Duration },
    /// users-service answered something the gateway cannot trust.
    #[error("users-service sent an invalid answer")]
    BadUpstream { reason: String },
    /// users-service refused the request with a client error of its own, forwarded as is.
    #[error("{message}")]
    UpstreamRejected { status: StatusCode, message: String },
    /// users-service is up but shedding load or shutting down: it answered 503 itself.
    #[error("users-service is temporarily unable to serve: {message}")]
    UpstreamBusy { message: String },
    /// The payload does not fit in one shared-memory slot.
    #[error("payload of {len} bytes is larger than a shared-memory slot ({max} bytes)")]
    TooLargeForSlot { len: usize, max: usize },
    /// Every slot stayed busy for the claim timeout.
    #[error("no free shared-memory slot")]
    SlotsExhausted,
    /// The gateway has no usable segment (not attachable, wrong layout version...).
    #[error("shared memory is unavailable")]
    ShmUnavailable { reason: String },
    /// users-service could not create its segment at start-up and serves REST only; the reason
    /// (the creation error) is shown, since it is what the operator must fix.
    #[error("shared memory is unavailable: {reason}")]
    SegmentUnavailable { reason: String },
    /// The handle no longer names a ready publication (redeemed, reclaimed, other epoch).
    #[error("shared-memory handle is stale")]
    ShmStale { reason: String },
    /// The bytes read did not match the producer's checksum.
    #[error("shared-memory payload failed verification")]
    ShmCorrupt { reason: String },
    /// A failure inside this service that the client cannot act on.
    #[error("internal error")]
    Internal { reason: String },
}

impl ApiError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadQuery(_) => StatusCode::BAD_REQUEST,
            ApiError::UpstreamUnavailable { .. }
            | ApiError::UpstreamDeadline { .. }
            | ApiError::UpstreamBusy { .. }
            | ApiError::SlotsExhausted
            | ApiError::ShmUnavailable { .. }
            | ApiError::SegmentUnavailable { .. }
            | ApiError::ShmStale { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadUpstream { .. } | ApiError::ShmCorrupt { .. } => StatusCode::BAD_GATEWAY,
            ApiError::TooLargeForSlot { .. } => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::UpstreamRejected { status, .. } => *status,
        }
    }

    /// The detail behind the client-facing message, for logs only.
    pub fn internal_reason(&self) -> Option<&str> {
        match self {
            ApiError::UpstreamUnavailable { reason }
            | ApiError::BadUpstream { reason }
            | ApiError::ShmUnavailable { reason }
            | ApiError::SegmentUnavailable { reason }
            | ApiError::ShmStale { reason }
            | ApiError::ShmCorrupt { reason }
            | ApiError::Internal { reason } => Some(reason),
            _ => None,
        }
    }

    /// Transient shared-memory failures that one fresh publication may cure.
    pub fn is_retryable_shm(&self) -> bool {
        matches!(
            self,
            ApiError::ShmStale { .. } | ApiError::ShmCorrupt { .. } | ApiError::UpstreamBusy { .. }
        )
    }

    /// Failures of the shared-memory path itself, which `--shm-fallback-to-api` may route around
    /// (users-service being down is not one: the REST path would fail the same way).
    pub fn is_shm_failure(&self) -> bool {
        matches!(
            self,
            ApiError::ShmUnavailable { .. }
                | ApiError::SegmentUnavailable { .. }
                | ApiError::ShmStale { .. }
                | ApiError::ShmCorrupt { .. }
                | ApiError::SlotsExhausted
                | ApiError::TooLargeForSlot { .. }
                | ApiError::UpstreamBusy { .. }
        ) || self.status_code() == StatusCode::INSUFFICIENT_STORAGE
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let message = self.to_string();
        // Losing and regaining users-service is logged once by `Upstream`, attach problems once
        // by `ShmClient`, and a segment that could not be created once at start-up, not per
        // request; a payload too large for a slot is the client's choice of count, not a fault.
        let logged_elsewhere = matches!(
            self,
            ApiError::UpstreamUnavailable { .. }
                | ApiError::UpstreamDeadline { .. }
                | ApiError::ShmUnavailable { .. }
                | ApiError::SegmentUnavailable { .. }
                | ApiError::TooLargeForSlot { .. }
                | ApiError::UpstreamRejected { .. }
        );
        let reason = self.internal_reason().unwrap_or("");
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(%status, %message, reason, "request failed");
        } else if status.is_server_error() && !logged_elsewhere {
            tracing::warn!(%status, %message, reason, "request failed");
        } else {
            tracing::debug!(%status, %message, reason, "request refused or failed");
        }
        let mut response = (status, Json(serde_json::json!({ "error": message }))).into_response();
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
    }

    #[tokio::test]
    async fn bad_upstream_is_502_without_retry_after() {
        let response = ApiError::BadUpstream {
            reason: "crc mismatch".into(),
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
    }

    #[tokio::test]
    async fn deadline_message_names_the_deadline() {
        let error = ApiError::UpstreamDeadline {
            deadline: Duration::from_millis(2500),
        };
        let body = body_of(error.into_response()).await;
        assert_eq!(
            body["error"],
            "users-service did not answer within 2s 500ms"
        );
    }
}
