//! The seed's users routes, which keep their meaning: each validates the users query itself
//! (a bad one is the gateway's 400, users-service is not asked) and answers the users body or a
//! gateway error, never users-service's own error body.
//!
//! - `/api/users-via-api`: REST to users-service's `/users?<query>`.
//! - `/api/users-via-shm`: the same request over the control channel (the producer picks the
//!   tier); with `--shm-fallback-to-api`, REST when shared memory fails.
//! - `/api/users-via-shm-http` (with `--http-signal`): shared memory asked for over HTTP
//!   (`POST /shm/users`), which carries the handle back: the seed's design, kept to be measured
//!   beside the control channel.
//! - `/api/users-cached`: a body the gateway serialized itself, once per query (the ceiling).
//! - `/api/users-published`: as `/api/users-via-shm`, answered from the body users-service
//!   published as an object version while its version board says it is current (under
//!   users-service `--cache`; see `published_objects`).
//! - `/api/users`: by `--transport`.

use std::time::Instant;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use crate::api_error::ApiError;
use crate::dataset;
use crate::payload::Payload;
use crate::query::UsersQuery;
use crate::transport_header::Transport;

use super::answer::{Answer, Expect};
use super::exchange::{self, Clock};
use super::forward_request::ForwardRequest;
use super::proxied_response::Proxied;
use super::stage_timing::{Stage, Stages};
use super::state::{AppState, Shared};
use super::transport_choice::Route;

/// The request users-service gets for `query`: `GET /users?<query>` in canonical form.
fn users_request(query: UsersQuery) -> ForwardRequest {
    ForwardRequest::get(format!("/users?{}", query.to_query_string()))
}

async fn users_over(
    shared: &Shared,
    raw: Option<&str>,
    route: Route,
) -> Result<Response, ApiError> {
    let query = UsersQuery::parse(raw)?;
    let answer =
        exchange::exchange(shared, &users_request(query), route, Expect::UsersBody).await?;
    Ok(answer.into_response())
}

/// `GET /api/users-via-api`: the body fetched from users-service over HTTP, verified.
pub async fn users_via_api(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    users_over(&state.inner, raw.as_deref(), Route::Api).await
}

/// `GET /api/users-via-shm`: the body asked for over the control channel, in whichever tier
/// users-service chose, redeemed and verified.
pub async fn users_via_shm(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let route = Route::Shm {
        fallback_to_api: state.inner.fallback_to_api,
    };
    users_over(&state.inner, raw.as_deref(), route).await
}

/// `GET /api/users-published`: as `/api/users-via-shm`, but a body users-service published as
/// an object version is kept and served again (`x-transport: shm-published`) while its version
/// board says it is current, with no message to users-service.
pub async fn users_published(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let shared = &state.inner;
    let query = UsersQuery::parse(raw.as_deref())?;
    let route = Route::Shm {
        fallback_to_api: shared.fallback_to_api,
    };
    exchange::published(shared, &users_request(query), route, Expect::UsersBody).await
}

/// `GET /api/users`: the body over the transport `--transport` picks.
pub async fn users(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    UsersQuery::parse(raw.as_deref())?;
    let route = state.inner.transport.route(false);
    users_over(&state.inner, raw.as_deref(), route).await
}

/// `GET /api/users-via-shm-http` (with `--http-signal`): as `/api/users-via-shm`, asking over
/// HTTP; a slot's body only (descriptors cannot travel over HTTP).
pub async fn users_via_shm_http(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let shared = &state.inner;
    if !shared.http_signal {
        return Err(ApiError::HttpSignalDisabled);
    }
    let query = UsersQuery::parse(raw.as_deref())?;
    let clock = Clock::start(shared.upstream.deadline());
    let shm = exchange::retried(|| over_http_signal(shared, query, clock));
    let answer = exchange::with_fallback(
        shared,
        &users_request(query),
        Expect::UsersBody,
        shared.fallback_to_api,
        clock,
        shm,
    )
    .await?;
    Ok(answer.into_response())
}

/// One `POST /shm/users` and the redemption of the handle it answers with.
async fn over_http_signal(
    shared: &Shared,
    query: UsersQuery,
    clock: Clock,
) -> Result<Answer, ApiError> {
    let upstream = &shared.upstream;
    let mut stages = Stages::default();
    let started = Instant::now();
    // Held until the bytes are copied out, so the gateway never holds more unredeemed
    // publications than it has permits, whichever way it asks for them.
    let _in_flight = shared.shm.in_flight_permit(clock.ends()).await?;
    let sent = stages.end(Stage::Attach, started);
    let handle = upstream.publish_users(query).await.inspect_err(|error| {
        // users-service has no segment: logged once per distinct reason, and kept for the
        // operators' status, like a failed attach.
        if let ApiError::ShmUnavailable { .. } = error {
            shared.shm.note_problem(error);
        }
    })?;
    let answered = stages.end(Stage::Upstream, sent);
    let attachment = shared
        .shm
        .attachment(upstream, Some(handle.epoch), "epoch_changed")
        .await?;
    exchange::record_handle(&handle);
    let reservation = shared.budget.reserve(u64::from(handle.len))?;
    let bytes = attachment.redeem_handle(&handle)?;
    stages.end(Stage::Redeem, answered);
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::payload::JSON),
    );
    Ok(Answer {
        proxied: Proxied {
            status: StatusCode::OK,
            headers,
            body: bytes.into(),
            crc32: handle.crc,
        },
        transport: Transport::ShmHttp,
        stages,
        reservation,
        published: None,
    })
}

/// `GET /api/users-cached`: the same body, serialized once per query by the gateway itself; no
/// users-service involved. The upper bound any transport can reach.
///
/// A miss is made once however many ask for it at once (the others wait for it), its buffer
/// reserved in the memory budget while it is made (a refusal is the one maker's, and the next
/// caller tries); the bytes then belong to the cache, which bounds them, as a hit's do.
pub async fn users_cached(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = UsersQuery::parse(raw.as_deref())?;
    let payload = match state.inner.cached_users.get(query) {
        Some(payload) => payload,
        None => tokio::task::spawn_blocking(move || {
            let shared = &state.inner;
            shared.cached_users.try_get_or_insert_with(query, || {
                let capacity = dataset::users_json_capacity(query.count) as u64;
                let _making = shared.budget.reserve(capacity)?;
                Ok::<_, ApiError>(Payload::generate(query))
            })
        })
        .await
        .map_err(|error| ApiError::Internal {
            reason: format!("serializing task failed: {error}"),
        })??,
    };
    Ok(payload.into_response(Transport::Cached))
}
