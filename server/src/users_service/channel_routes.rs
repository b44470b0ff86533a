//! users-service's HTTP routes served over the control channel: a gateway's request
//! ([`HttpRequest`], the bytes of a publish frame) is answered by the same router that serves
//! HTTP, and its response — status, content type, headers and body, errors included — is
//! written into the channel's [`ResponseWriter`], which puts the body in the tier its size
//! calls for. So every route answers the same bytes both ways, by construction.
//!
//! One exception keeps zero copies: under `--cache`, a `GET /users` body above a slot is handed
//! over as the sealed payload kept for it ([`SealedBodies`]), the same immutable memfd every
//! time, with the head the router gives the same query.
//!
//! Execution: the handler runs on the channel thread that read the frame (see
//! [`shmbridge::control`]); it drives the router's future there with the runtime's handle, so a
//! route's own hop to the blocking pool is the one hop it takes over HTTP too.

use std::pin::Pin;
use std::sync::{Arc, Weak};

use axum::body::Body;
use axum::http::{HeaderMap, Request, header};
use http_body::Body as _;
use shmbridge::control::{Handler, HandlerError, ResponseWriter};
use shmbridge::http::HttpRequest;
use tower::ServiceExt;

use crate::failpoints;
use crate::query::UsersQuery;

use super::app::{AppState, Shared, routes};
use super::sealed_bodies::{SealError, SealedBodies};

/// Response headers the channel does not carry: its answer says the length, and the gateway
/// names the transport.
const NOT_CARRIED: [&str; 4] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "x-transport",
];

/// The channel's [`Handler`]: the app's routes, reached through a weak reference so that the
/// app state, which owns the channel, can be dropped.
pub struct ChannelRoutes {
    state: Weak<Shared>,
    runtime: tokio::runtime::Handle,
    sealed: SealedBodies,
    slot_size: u64,
}

impl ChannelRoutes {
    pub fn new(
        state: Weak<Shared>,
        runtime: tokio::runtime::Handle,
        sealed: SealedBodies,
        slot_size: u64,
    ) -> Self {
        Self {
            state,
            runtime,
            sealed,
            slot_size,
        }
    }

    /// Routes `request` through the app and returns its response.
    fn route(
        &self,
        state: Arc<Shared>,
        request: &HttpRequest<'_>,
    ) -> Result<axum::response::Response, HandlerError> {
        let mut builder = Request::builder()
            .method(request.method)
            .uri(request.target);
        for (name, value) in &request.headers {
            builder = builder.header(*name, *value);
        }
        let http = builder.body(Body::from(request.body.to_vec()))?;
        let router = routes().with_state(AppState::from_shared(state));
        Ok(self.runtime.block_on(router.oneshot(http))?)
    }

    /// The kept sealed payload of a cached `GET /users` body above a slot, if this request is
    /// one.
    fn kept_sealed(
        &self,
        request: &HttpRequest<'_>,
        state: &Shared,
    ) -> Option<Result<shmbridge::SealedPayload, SealError>> {
        if request.method != "GET" || request.path() != "/users" || !state.bodies.is_caching() {
            return None;
        }
        let query = UsersQuery::parse(request.query()).ok()?;
        if state.bodies.summary(query).len <= self.slot_size {
            return None;
        }
        Some(self.sealed.payload(&state.bodies, query))
    }
}

impl Handler for ChannelRoutes {
    fn handle(
        &self,
        request: &[u8],
        response: &mut ResponseWriter<'_>,
    ) -> Result<(), HandlerError> {
        let request = HttpRequest::parse(request)?;
        let state = self
            .state
            .upgrade()
            .ok_or("users-service is shutting down")?;
        let kept = self.kept_sealed(&request, &state);
        let answer = self.route(state, &request)?;
        let (parts, mut body) = answer.into_parts();
        response.set_status(parts.status.as_u16())?;
        write_head(&parts.headers, response)?;
        if let Some(payload) = kept {
            failpoints::hit(failpoints::BEFORE_PUBLISH);
            response.send_sealed(payload?)?;
            count_publication(response);
            return Ok(());
        }
        let len = body.size_hint().exact();
        if let Some(len) = len {
            response.expect_len(len)?;
        }
        // The fail points the chaos harness crashes the producer at: with a slot held, halfway
        // through the body, and with the body whole but not yet published.
        failpoints::hit(failpoints::AFTER_CLAIM);
        let half = len.unwrap_or(0) / 2;
        let mut body = Pin::new(&mut body);
        while let Some(frame) = self
            .runtime
            .block_on(std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)))
        {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            let before = response.written();
            let (first, second) =
                data.split_at(half.saturating_sub(before).min(data.len() as u64) as usize);
            std::io::Write::write_all(response, first)?;
            if before < half && response.written() >= half {
                failpoints::hit(failpoints::MID_COPY);
            }
            std::io::Write::write_all(response, second)?;
        }
        failpoints::hit(failpoints::BEFORE_PUBLISH);
        count_publication(response);
        Ok(())
    }
}

/// Counts an answered request the way users-service always has (a refusal after this point,
/// when its tier finds no room, is counted by the producer's stats).
fn count_publication(response: &ResponseWriter<'_>) {
    metrics::counter!("shm_publications_total", "signal" => "channel").increment(1);
    metrics::counter!("payload_bytes_total", "transport" => "shm").increment(response.written());
}

/// The content type and every header the channel carries, into `response`'s head.
fn write_head(headers: &HeaderMap, response: &mut ResponseWriter<'_>) -> Result<(), HandlerError> {
    for (name, value) in headers {
        if NOT_CARRIED.contains(&name.as_str()) {
            continue;
        }
        let value = value.to_str()?;
        if name == header::CONTENT_TYPE {
            response.set_content_type(value)?;
        } else {
            response.add_header(name.as_str(), value)?;
        }
    }
    Ok(())
}
