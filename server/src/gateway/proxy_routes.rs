//! The reverse proxy's routes: every path that is not the gateway's own is forwarded to the
//! upstream's same path and query, with the method, end-to-end headers and body, by
//! `--transport`; and three measuring prefixes, the gateway's own, so that a load tool or `curl`
//! can compare the transports for any upstream path:
//!
//! - `/via-api/<path>`: always REST (`x-transport: api`);
//! - `/via-shm/<path>`: always shared memory, no fallback (`x-transport: shm-inline`,
//!   `shm-slot` or `shm-sealed`, the tier the producer chose);
//! - `/via-cached/<path>` (GET): the ceiling, the upstream's verified 200 answer for that path
//!   and query kept in memory after the first request ([`BodyCache`](super::body_cache)) and
//!   served from there (`x-transport: cached`; the request that fetched it says how);
//! - `/via-published/<path>` (GET): shared memory, no fallback, answered from a kept published
//!   object while the producer's version board says it is current
//!   ([`published_objects`](super::published_objects): `x-transport: shm-published`, nothing
//!   asked of the producer), otherwise asked as `/via-shm/` asks.
//!
//! A forwarded `GET` that `--transport` sends over shared memory is served as
//! `/via-published/` serves it; `/via-shm/` never is, so that it measures the channel alone.
//!
//! `/via-shm/blobs?size=3000000&pattern=random&seed=9` is the upstream's
//! `/blobs?size=3000000&pattern=random&seed=9` over shared memory. Whatever the prefix, a path
//! that `--forward-prefix` does not allow or `--private-prefix` keeps private is the gateway's
//! own 404, and nothing is asked of the upstream.

use axum::extract::{Request, State};
use axum::http::{Method, Uri};
use axum::response::Response;

use crate::api_error::ApiError;
use crate::transport_header::Transport;

use super::answer::Expect;
use super::body_cache::Cached;
use super::exchange::{self, Clock};
use super::forward_request::ForwardRequest;
use super::state::{AppState, Shared};
use super::transport_choice::Route;

/// The measuring prefixes, as routed.
pub const VIA_API: &str = "/via-api";
pub const VIA_SHM: &str = "/via-shm";
pub const VIA_CACHED: &str = "/via-cached";
pub const VIA_PUBLISHED: &str = "/via-published";

/// Any path that is not the gateway's own: forwarded by `--transport`.
pub async fn forward(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let target = upstream_target(request.uri(), "");
    let request = admit(&state.inner, request, target).await?;
    let route = state.inner.transport.route(request.is_head());
    if request.method == Method::GET && matches!(route, Route::Shm { .. }) {
        return exchange::published(&state.inner, &request, route, Expect::AnyAnswer).await;
    }
    proxy(&state.inner, &request, route).await
}

/// `/via-api/<path>`: the upstream's `/<path>` over REST.
pub async fn via_api(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let target = upstream_target(request.uri(), VIA_API);
    let request = admit(&state.inner, request, target).await?;
    proxy(&state.inner, &request, Route::Api).await
}

/// `/via-shm/<path>`: the upstream's `/<path>` over shared memory, without a fallback.
pub async fn via_shm(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let target = upstream_target(request.uri(), VIA_SHM);
    let request = admit(&state.inner, request, target).await?;
    let route = Route::Shm {
        fallback_to_api: false,
    };
    proxy(&state.inner, &request, route).await
}

/// `GET /via-published/<path>`: the upstream's `/<path>` from a kept published object while it
/// is current, otherwise over shared memory without a fallback.
pub async fn via_published(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let target = upstream_target(request.uri(), VIA_PUBLISHED);
    let request = admit(&state.inner, request, target).await?;
    let route = Route::Shm {
        fallback_to_api: false,
    };
    exchange::published(&state.inner, &request, route, Expect::AnyAnswer).await
}

/// `GET /via-cached/<path>`: the upstream's `/<path>` from the gateway's memory, fetched once
/// by `--transport`. Only a 200 is kept; any other answer is passed on as it came.
pub async fn via_cached(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let shared = &state.inner;
    let target = upstream_target(request.uri(), VIA_CACHED);
    let request = admit(shared, request, target).await?;
    let ends = Clock::start(shared.upstream.deadline()).ends();
    let fetch = || async {
        let route = shared.transport.route(false);
        exchange::exchange(shared, &request, route, Expect::AnyAnswer).await
    };
    Ok(
        match shared
            .cached_bodies
            .get_or_fetch(&request.target, ends, fetch)
            .await?
        {
            Cached::Hit(proxied) => proxied.into_response(Transport::Cached),
            Cached::Fetched(answer) => answer.into_response(),
        },
    )
}

/// Checks the target against the forwarding policy, then reads the request.
async fn admit(
    shared: &Shared,
    request: Request,
    target: String,
) -> Result<ForwardRequest, ApiError> {
    let path = target
        .split_once('?')
        .map_or(target.as_str(), |(path, _)| path);
    if !shared.policy.allows(path) {
        return Err(ApiError::NotForwarded);
    }
    ForwardRequest::read(request, target).await
}

async fn proxy(
    shared: &Shared,
    request: &ForwardRequest,
    route: Route,
) -> Result<Response, ApiError> {
    let answer = exchange::exchange(shared, request, route, Expect::AnyAnswer).await?;
    Ok(answer.into_response())
}

/// The upstream's target for a request to `uri` under `prefix` (`""` for none): the path after
/// the prefix (`/` if nothing is left), and the query, both as the client wrote them.
fn upstream_target(uri: &Uri, prefix: &str) -> String {
    let rest = uri.path().strip_prefix(prefix).unwrap_or(uri.path());
    let path = if rest.is_empty() { "/" } else { rest };
    match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_keep_the_rest_of_the_path_and_the_query_as_written() {
        let target = |uri: &str, prefix| upstream_target(&uri.parse().unwrap(), prefix);
        assert_eq!(
            target("/via-shm/blobs?size=3&seed=9", VIA_SHM),
            "/blobs?size=3&seed=9"
        );
        assert_eq!(target("/via-shm", VIA_SHM), "/");
        assert_eq!(target("/via-shm/", VIA_SHM), "/");
        assert_eq!(target("/via-api/a%20b/", VIA_API), "/a%20b/");
        assert_eq!(target("/users?count=3", ""), "/users?count=3");
        assert_eq!(target("/", ""), "/");
    }
}
