//! users-service's HTTP routes served over the control channel: a gateway's request
//! ([`HttpRequest`], the bytes of a publish frame) gets the response the HTTP route gives —
//! status, content type, headers and body, errors included — written into the channel's
//! [`ResponseWriter`], which puts the body in the tier its size calls for.
//!
//! Every request but one kind goes through the same router that serves HTTP, so it answers the
//! same bytes both ways by construction. The data routes with a valid query (`GET /users`,
//! `GET /blobs`) are answered on the channel thread itself, from the same bodies, head builder
//! and writers the routes use (`ChannelRoutes::answer_directly` says why); the gateway's
//! system tests compare both ways byte for byte. Under `--cache`, a `GET /users` or `GET /blobs`
//! body too large to travel inline is handed over as the sealed payload kept for it
//! ([`super::sealed_bodies::SealedBodies`]), the same immutable memfd every time, copying
//! nothing; and every kept body's answer names an object version on the version board (its
//! target's [`object_key`]), so a gateway may serve it again without asking until
//! `POST /shm/invalidate` names that target.
//!
//! Execution: the handler runs on the channel thread that read the frame (see
//! [`shmbridge::control`]); for the router it drives the future there with the runtime's handle.

use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, Request, header};
use axum::response::IntoResponse;
use http_body::Body as _;
use shmbridge::control::{Handler, HandlerError, ResponseWriter};
use shmbridge::http::HttpRequest;
use tower::ServiceExt;

use crate::blobs::{self, BlobQuery};
use crate::dataset;
use crate::failpoints;
use crate::payload::JSON;
use crate::query::UsersQuery;
use crate::server_timing::{self, SERVER_TIMING};
use crate::transport_header::Transport;

use super::app::{AppState, Shared, blob_headers, routes};
use super::objects::object_key;

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
}

impl ChannelRoutes {
    pub fn new(state: Weak<Shared>, runtime: tokio::runtime::Handle) -> Self {
        Self { state, runtime }
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

    /// Answers the data routes (`GET /users`, `GET /blobs` with a valid query) here on the
    /// channel thread, with the head the HTTP route gives and the same body writers, instead of
    /// through the router: the router's own hop to the blocking pool and back costs two thread
    /// wakes (tens of microseconds each on two vCPUs) that the channel thread need not pay.
    /// `Ok(false)` for any other request, which the router answers.
    fn answer_directly(
        &self,
        request: &HttpRequest<'_>,
        state: &Shared,
        response: &mut ResponseWriter<'_>,
    ) -> Result<bool, HandlerError> {
        if request.method != "GET" {
            return Ok(false);
        }
        match request.path() {
            "/users" => {
                let Ok(query) = UsersQuery::parse(request.query()) else {
                    return Ok(false);
                };
                // A count whose every body is past the producer's limit is refused before
                // anything is made.
                response.expect_min_len(dataset::users_json_min_len(query.count))?;
                let bodies = &state.bodies;
                let making = state
                    .admit_making(bodies.making_bytes(query, false), Some(response.deadline()));
                let _making = match self.runtime.block_on(making) {
                    Ok(making) => making,
                    Err(busy) => return self.write_answer(busy.into_response(), response),
                };
                if bodies.streams(query) {
                    // No summary pass (REST needs one for its headers): the answer carries the
                    // crc32 its tier computes as the body is written, and the writer moves the
                    // body up a tier as it grows, so the body is made once.
                    response.set_content_type(JSON)?;
                    let at_least = dataset::users_json_min_len(query.count);
                    write_body(response, BodyLen::AtLeast(at_least), |out| {
                        bodies.write_body(query, out).map(drop)
                    })?;
                    return Ok(true);
                }
                if bodies.is_caching() {
                    // Kept, so never made again from other data: the same object every time.
                    response.observe_object(object_key(request.target));
                }
                let making = Instant::now();
                let body = bodies.body(query);
                let made = making.elapsed();
                if bodies.is_caching() && body.len() > response.inline_threshold() {
                    // The kept sealed payload: the same immutable memfd every time, whatever
                    // its size, so neither side copies it and the gateway checks its crc32 once.
                    let payload = bodies.payload(query);
                    write_head(
                        &payload.summary().response_headers(Transport::Shm),
                        response,
                    )?;
                    let sealed = state.sealed.payload(bodies, query)?;
                    failpoints::hit(failpoints::BEFORE_PUBLISH);
                    response.send_sealed(sealed)?;
                    return Ok(true);
                }
                // No crc32 pass of its own: the channel's answer carries the one its tier
                // computes as the body is written, which the gateway verifies and puts in
                // `x-payload-crc32`.
                response.set_content_type(JSON)?;
                response.add_header(SERVER_TIMING, &server_timing::entry("make", made))?;
                let len = BodyLen::Exact(body.len() as u64);
                write_body(response, len, |out| out.write_all(&body))?;
                Ok(true)
            }
            "/blobs" => {
                let Ok(query) = BlobQuery::parse(request.query(), state.max_blob_size) else {
                    return Ok(false);
                };
                // A blob kept now costs nothing to make; any other is admitted for its size, from
                // the same lookup, so an eviction in between cannot slip past the budget.
                let kept = state.sealed.kept_blob_hit(query);
                let _making = match kept {
                    Some(_) => None,
                    None => {
                        let making = state.admit_making(query.size, Some(response.deadline()));
                        match self.runtime.block_on(making) {
                            Ok(making) => Some(making),
                            Err(busy) => return self.write_answer(busy.into_response(), response),
                        }
                    }
                };
                if state.bodies.is_caching() {
                    // Kept: the sealed payload itself, as a kept `/users` body travels.
                    response.observe_object(object_key(request.target));
                    let kept = match kept.map_or_else(|| state.kept_blob(query), Ok) {
                        Ok(kept) => kept,
                        Err(error) => return self.write_answer(error.into_response(), response),
                    };
                    let headers = blob_headers(&query, kept.payload.crc(), Transport::Shm);
                    write_head(&headers, response)?;
                    if kept.bytes.len() > response.inline_threshold() {
                        response.send_sealed(kept.payload)?;
                    } else {
                        response.expect_len(query.size)?;
                        response.write_all(&kept.bytes)?;
                    }
                    return Ok(true);
                }
                let headers = blob_headers(&query, blobs::blob_crc32(&query), Transport::Shm);
                write_head(&headers, response)?;
                let len = BodyLen::Exact(query.size);
                write_body(response, len, |out| blobs::write_blob(&query, out))?;
                Ok(true)
            }
            _ => Ok(false),
        }
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
        if !self.answer_directly(&request, &state, response)? {
            let answer = self.route(state, &request)?;
            self.write_answer(answer, response)?;
        }
        metrics::counter!("shm_publications_total", "signal" => "channel").increment(1);
        Ok(())
    }
}

impl ChannelRoutes {
    /// Writes an HTTP response as the channel's answer: status, head, body. `Ok(true)`: it is
    /// answered.
    fn write_answer(
        &self,
        answer: axum::response::Response,
        response: &mut ResponseWriter<'_>,
    ) -> Result<bool, HandlerError> {
        let (parts, mut body) = answer.into_parts();
        response.set_status(parts.status.as_u16())?;
        write_head(&parts.headers, response)?;
        let len = body.size_hint().exact();
        let mut body = Pin::new(&mut body);
        let len = len.map_or(BodyLen::AtLeast(0), BodyLen::Exact);
        write_body(response, len, |out| {
            while let Some(frame) = self
                .runtime
                .block_on(std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)))
            {
                if let Ok(data) = frame.map_err(std::io::Error::other)?.into_data() {
                    out.write_all(&data)?;
                }
            }
            Ok(())
        })?;
        Ok(true)
    }
}

/// What is known of a body's length before it is written.
#[derive(Clone, Copy, Debug)]
enum BodyLen {
    /// Exactly this: its tier is chosen before the first byte.
    Exact(u64),
    /// At least this: the writer moves it up a tier as it grows.
    AtLeast(u64),
}

/// Writes a body with `write`, through the fail points the chaos harness crashes the producer
/// at: with its room held, halfway through the body (half its known length, or of its lower
/// bound), and with the body whole but not yet published.
fn write_body(
    response: &mut ResponseWriter<'_>,
    len: BodyLen,
    write: impl FnOnce(&mut Halfway<'_, '_>) -> std::io::Result<()>,
) -> Result<(), HandlerError> {
    let known = match len {
        BodyLen::Exact(len) => {
            response.expect_len(len)?;
            len
        }
        BodyLen::AtLeast(len) => len,
    };
    failpoints::hit(failpoints::AFTER_CLAIM);
    write(&mut Halfway {
        response,
        half: known / 2,
    })?;
    failpoints::hit(failpoints::BEFORE_PUBLISH);
    Ok(())
}

/// A response writer that hits the mid-copy fail point once its body passes `half`.
struct Halfway<'w, 'p> {
    response: &'w mut ResponseWriter<'p>,
    half: u64,
}

impl Write for Halfway<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let before = self.response.written();
        let to_half = self.half.saturating_sub(before);
        if before < self.half && (buf.len() as u64) >= to_half {
            self.response.write_all(&buf[..to_half as usize])?;
            failpoints::hit(failpoints::MID_COPY);
            self.response.write_all(&buf[to_half as usize..])?;
            return Ok(buf.len());
        }
        self.response.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
