//! users-service, the producer: serves the deterministic users dataset over HTTP (`GET /users`)
//! and through shared memory, where gateways ask for publications over the control socket
//! ([`ShmProducer`]); with `--http-signal`, also the seed's way, `POST /shm/users` publishing
//! into a slot and answering with the handle. It also serves test payloads of any size up to
//! `--max-payload` (`GET /blobs`, see [`crate::blobs`]), streamed, or under `--cache` kept once
//! as a sealed payload whose pages both paths serve. `run` is callable from
//! other crates, so a harness can re-execute itself as this service.
//!
//! Execution policy for CPU-heavy work, one rule on every path: generating a dataset,
//! serializing a body (up to ~91 MiB at `MAX_COUNT`, a few hundred milliseconds), copying it
//! into a slot with its crc32 and waiting for a free slot run on threads that may block, never
//! on an async worker, so a heavy or stalled request holds one such thread while everything
//! else is answered. An HTTP request arrives on an async worker, so it makes exactly one hop to
//! tokio's blocking pool ([`off_the_workers`], or the task that streams a large body to the
//! client as it is serialized: [`streamed_users`]); a control-channel frame arrives on a thread
//! of its own connection, which does the work itself (see [`ShmProducer`]): no hop is needed
//! there, and the shared-memory path pays nothing the REST path does not.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRef, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::api_error::ApiError;
use crate::blobs::{self, BlobQuery};
use crate::failpoints;
use crate::payload::{BodySummary, CRC_HEADER, format_crc};
use crate::query::UsersQuery;
use crate::segment_info::{SegmentInfo, ShmStatsInfo};
use crate::serve::{CommonArgs, ShutdownSignal, StartupLine, announce, bind, serve_until_signal};
use crate::server_timing::{self, SERVER_TIMING};
use crate::telemetry;
use crate::transport_header::Transport;
use crate::waiting_room::{Admitted, WaitingRoom};

use super::bodies::Bodies;
use super::objects::object_key;
use super::sealed_bodies::{KeptBlob, SealedBodies};
use super::shm_producer::{ShmArgs, ShmProducer, StartError};
use super::streamed_body;

/// users-service: the producer of the users dataset.
#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "users-service",
    version,
    about = "The producer: serves the users dataset over HTTP and through shared memory",
    args_override_self = true
)]
pub struct Args {
    /// Address to listen on; port 0 picks a free port (the bound one is printed on stdout).
    #[arg(long, env = "SHMBRIDGE_USERS_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// Serve bodies serialized once per (count, seed) instead of serializing per request, on
    /// every path alike, and `/blobs` bodies made once per query. (Without it, users are
    /// generated once per (count, seed) and serialized per request, as in the seed system, and
    /// blobs made per request.)
    #[arg(long, env = "SHMBRIDGE_USERS_CACHE")]
    pub cache: bool,
    /// Also publish on `POST /shm/users`, answering with the handle over HTTP: the seed's
    /// design, kept so that it can be measured beside the control channel. Off by default: any
    /// local process that can reach the port could then hold slots until their TTL.
    #[arg(long, env = "SHMBRIDGE_HTTP_SIGNAL")]
    pub http_signal: bool,
    /// Bytes of bodies made at once, on every path (a users body counted at its bound of 512
    /// bytes a user, twice where REST makes it twice for its headers; a blob at its size; a
    /// body kept under `--cache` costs nothing), which is also the CPU they take. A request
    /// past it waits its turn (`--making-wait`) or is refused (503 `users_service_busy`,
    /// `Retry-After`) instead of sharing the cores with every other: a burst of large bodies
    /// made all together finishes none of them within a gateway's deadline. The default makes
    /// three bodies of the largest count at once, or six of 64 MiB.
    #[arg(long, env = "SHMBRIDGE_MAKING_BUDGET", default_value_t = 384 << 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub making_budget: u64,
    /// How long a request whose body does not fit in `--making-budget` now may wait for its
    /// turn (`0s`: never; over the channel, never past the request's deadline). It waits only
    /// if the budget, at the rate it has been making bodies, is expected to have room for it
    /// by then, and is refused at once otherwise: see `waiting_room`.
    #[arg(long, env = "SHMBRIDGE_MAKING_WAIT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub making_wait: Duration,
    #[command(flatten)]
    pub shm: ShmArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// How often slot and reclaim metrics are refreshed.
const SHM_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

pub(super) struct Shared {
    pub(super) bodies: Arc<Bodies>,
    /// Sealed payloads made and, under `--cache`, kept: `/users` bodies for the channel, `/blobs`
    /// bodies for both paths.
    pub(super) sealed: SealedBodies,
    pub(super) http_signal: bool,
    /// `--making-budget`: bytes of bodies being made, and the requests waiting for it.
    pub(super) making: WaitingRoom,
    /// `--making-wait`: how long a request may wait for the making budget.
    pub(super) making_wait: Duration,
    /// The largest `GET /blobs` size: `--max-payload`, the limit of every users-service body.
    pub(super) max_blob_size: u64,
    /// The segment, or why it could not be created (always a [`StartError::Create`]): then
    /// only REST is served.
    pub(super) shm: Result<Arc<ShmProducer>, StartError>,
    pub(super) metrics: PrometheusHandle,
}

impl Shared {
    /// `query`'s blob kept under `--cache` (made now on a miss; blocking). Call only when
    /// caching.
    pub(super) fn kept_blob(&self, query: BlobQuery) -> Result<KeptBlob, ApiError> {
        match self.sealed.kept_blob(query) {
            Ok(Some(kept)) => Ok(kept),
            Ok(None) => Err(ApiError::Internal {
                reason: "a kept blob asked for without --cache".to_owned(),
            }),
            Err(error) => Err(ApiError::Internal {
                reason: format!("the blob could not be kept: {error}"),
            }),
        }
    }

    /// Room in the making budget for a body of `bytes` (its bound), waiting at most
    /// `--making-wait` for it, and not past `deadline` (a channel request's).
    pub(super) async fn admit_making(
        &self,
        bytes: u64,
        deadline: Option<Instant>,
    ) -> Result<Admitted, ApiError> {
        let wait = match deadline {
            Some(deadline) => self
                .making_wait
                .min(deadline.saturating_duration_since(Instant::now())),
            None => self.making_wait,
        };
        Ok(self.making.admit(bytes, wait).await?)
    }
}

impl AppState {
    pub(super) fn from_shared(inner: Arc<Shared>) -> AppState {
        AppState { inner }
    }

    /// The segment's producer, or the 503 that explains why there is none.
    fn shm(&self) -> Result<&Arc<ShmProducer>, ApiError> {
        self.inner
            .shm
            .as_ref()
            .map_err(|error| ApiError::SegmentUnavailable {
                reason: error.to_string(),
            })
    }
}

impl FromRef<AppState> for PrometheusHandle {
    fn from_ref(state: &AppState) -> PrometheusHandle {
        state.inner.metrics.clone()
    }
}

/// The users-service routes, ready for `oneshot` in tests or for serving.
pub fn app(state: AppState) -> Router {
    telemetry::observed(routes()).with_state(state)
}

/// The routes both transports serve: over HTTP inside [`app`]'s telemetry, over the control
/// channel as they are ([`ChannelRoutes`](super::channel_routes::ChannelRoutes)).
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/users", get(get_users))
        .route("/blobs", get(get_blobs))
        .route("/shm/users", post(publish_users))
        .route("/shm/segment", get(segment_info))
        .route("/shm/stats", get(shm_stats))
        .route("/shm/invalidate", post(invalidate))
        .route("/readyz", get(readyz))
}

/// Runs users-service until SIGTERM/Ctrl-C.
pub async fn run(args: Args) -> anyhow::Result<()> {
    telemetry::init_tracing(args.common.log_format);
    failpoints::setup()?;
    let state = AppState::new(&args)?;
    telemetry::spawn_metrics_upkeep(state.inner.metrics.clone());
    let reporter = state
        .inner
        .shm
        .as_ref()
        .ok()
        .map(|shm| Arc::clone(shm).spawn_reporter(SHM_REPORT_INTERVAL));
    let (listener, bound) = bind(args.listen).await?;
    let shutdown = ShutdownSignal::install()?;
    announce(StartupLine::Public, bound)?;
    tracing::info!(%bound, cache = args.cache, "users-service listening");
    let served = serve_until_signal(listener, app(state), shutdown, &args.common).await;
    // The reporter holds the segment too; stopping it lets the segment (and a segment file)
    // go with the router rather than only when the runtime is torn down.
    if let Some(reporter) = reporter {
        reporter.abort();
    }
    served
}

/// Runs the CPU-heavy part of one request on the blocking pool (see the module's execution
/// policy): the one hop each request takes, on either path.
async fn off_the_workers<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ApiError::Internal {
            reason: format!("request task failed: {error}"),
        })
}

/// `GET /users?count=N&seed=S`: the JSON array, serialized per request; a large body without
/// `--cache` is streamed ([`streamed_users`]).
async fn get_users(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = UsersQuery::parse(raw.as_deref())?;
    let bodies = &state.inner.bodies;
    let streams = bodies.streams(query);
    let making = state
        .inner
        .admit_making(bodies.making_bytes(query, streams), None)
        .await?;
    if streams {
        return streamed_users(state, query, making).await;
    }
    let (payload, made) = off_the_workers(move || {
        let started = Instant::now();
        let payload = state.inner.bodies.payload(query);
        drop(making);
        (payload, started.elapsed())
    })
    .await?;
    let mut response = payload.into_response(Transport::Api);
    let timing = HeaderValue::from_str(&server_timing::entry("make", made))
        .expect("a name and decimal digits are a valid header value");
    response.headers_mut().insert(SERVER_TIMING, timing);
    Ok(response)
}

/// A large body, never held whole: one blocking task (the request's one hop off the workers)
/// finds the body's length and crc32 for the headers (kept per query after the first time:
/// see [`Bodies::summary`]), hands the response its body, then serializes into it in bounded
/// chunks while the client reads, holding `making` until the body is written or abandoned.
async fn streamed_users(
    state: AppState,
    query: UsersQuery,
    making: Admitted,
) -> Result<Response, ApiError> {
    let (head_sender, head) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _making = making;
        let bodies = &state.inner.bodies;
        let summary = bodies.summary(query);
        let stall = streamed_body::STALL_TIMEOUT;
        let (body, mut chunks) = streamed_body::channel(summary.len, stall, runtime);
        if head_sender.send((summary, body)).is_err() {
            return;
        }
        match bodies.write_body(query, &mut chunks) {
            Ok(len) if len == summary.len => {}
            Ok(len) => tracing::error!(
                len,
                summary.len,
                "a streamed body's length differs from its summary"
            ),
            Err(error) => tracing::debug!(%error, "a streamed body ended early"),
        }
    });
    let (summary, body) = head.await.map_err(|_| ApiError::Internal {
        reason: "the streamed body's task ended before its headers".to_owned(),
    })?;
    Ok((
        summary.response_headers(Transport::Api),
        axum::body::Body::new(body),
    )
        .into_response())
}

/// `GET /blobs?size=N&pattern=random|zeros|text&seed=S`: `size` bytes of the pattern
/// ([`crate::blobs`]), streamed as a large users body is ([`streamed_users`]), or under
/// `--cache` served from the kept blob's mapping; a size above `--max-payload` is a 413, any
/// other bad query a 400.
async fn get_blobs(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let query = match BlobQuery::parse(raw.as_deref(), state.inner.max_blob_size) {
        Ok(query) => query,
        Err(refused) => return refused.into_response(),
    };
    let caching = state.inner.bodies.is_caching();
    if let Some(kept) = state.inner.sealed.kept_blob_hit(query) {
        // A hit is served from the mapping on this worker: nothing to make, nothing to wait for.
        return kept_blob_response(&query, kept);
    }
    let making = match state.inner.admit_making(query.size, None).await {
        Ok(making) => making,
        Err(busy) => return busy.into_response(),
    };
    if caching {
        let shared = Arc::clone(&state.inner);
        let kept = tokio::task::spawn_blocking(move || {
            let _making = making;
            shared.kept_blob(query)
        });
        return match kept.await {
            Ok(Ok(kept)) => kept_blob_response(&query, kept),
            Ok(Err(error)) => error.into_response(),
            Err(error) => ApiError::Internal {
                reason: format!("the kept blob's task failed: {error}"),
            }
            .into_response(),
        };
    }
    streamed_blob(query, making).await.into_response()
}

/// The REST answer for `query`'s kept blob: the kept mapping's pages themselves.
fn kept_blob_response(query: &BlobQuery, kept: KeptBlob) -> Response {
    let headers = blob_headers(query, kept.payload.crc(), Transport::Api);
    (headers, kept.bytes).into_response()
}

/// The headers of `query`'s blob, whose crc32 is `crc32`, as the REST route and the channel
/// both give them.
pub(super) fn blob_headers(query: &BlobQuery, crc32: u32, transport: Transport) -> HeaderMap {
    let summary = BodySummary {
        len: query.size,
        crc32,
    };
    let mut headers = summary.response_headers(transport);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(blobs::content_type(query.pattern)),
    );
    headers
}

/// A blob, never held whole: one blocking task (the request's one hop off the workers)
/// generates it once into a checksumming sink for the headers' crc32 (cheaper than keeping it:
/// see [`blobs`]), hands the response its body, then generates it again into the body in
/// bounded chunks while the client reads, holding `making` until it is written or abandoned.
async fn streamed_blob(query: BlobQuery, making: Admitted) -> Result<Response, ApiError> {
    let (head_sender, head) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _making = making;
        let crc32 = blobs::blob_crc32(&query);
        let stall = streamed_body::STALL_TIMEOUT;
        let (body, mut chunks) = streamed_body::channel(query.size, stall, runtime);
        if head_sender.send((crc32, body)).is_err() {
            return;
        }
        if let Err(error) = blobs::write_blob(&query, &mut chunks) {
            tracing::debug!(%error, "a streamed blob ended early");
        }
    });
    let (crc32, body) = head.await.map_err(|_| ApiError::Internal {
        reason: "the streamed blob's task ended before its headers".to_owned(),
    })?;
    let headers = blob_headers(&query, crc32, Transport::Api);
    Ok((headers, axum::body::Body::new(body)).into_response())
}

/// `POST /shm/users?count=N&seed=S` (only with `--http-signal`): serializes into a claimed slot,
/// publishes it, and answers with the handle in text form (`text/plain`), the producer's crc in
/// `x-payload-crc32`.
async fn publish_users(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    if !state.inner.http_signal {
        return Err(ApiError::HttpSignalDisabled);
    }
    let query = UsersQuery::parse(raw.as_deref())?;
    let shm = Arc::clone(state.shm()?);
    let making = state
        .inner
        .admit_making(state.inner.bodies.making_bytes(query, false), None)
        .await?;
    // Run inline, a few stalled publications froze the whole service on 2 cores (chaos
    // scenario slow-producer); the hop costs ~0.2 ms, and GET /users takes it too.
    let (handle, len) = off_the_workers(move || {
        let body = state.inner.bodies.body(query);
        drop(making);
        shm.publish_for_http(&body)
            .map(|handle| (handle, body.len()))
    })
    .await??;
    let span = tracing::Span::current();
    span.record("slot", handle.slot);
    span.record("generation", handle.generation);
    telemetry::record_transport(Transport::Shm);
    metrics::counter!("payload_bytes_total", "transport" => Transport::Shm.as_str())
        .increment(len as u64);
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
            (HeaderName::from_static(CRC_HEADER), format_crc(handle.crc)),
        ],
        handle.to_string(),
    )
        .into_response())
}

/// `GET /shm/segment`: where and what the segment is, for gateways to attach.
async fn segment_info(State(state): State<AppState>) -> Result<Json<SegmentInfo>, ApiError> {
    Ok(Json(state.shm()?.info().clone()))
}

/// `GET /shm/stats`: the sealed payloads out now.
async fn shm_stats(State(state): State<AppState>) -> Result<Json<ShmStatsInfo>, ApiError> {
    Ok(Json(state.shm()?.stats_info()))
}

/// `POST /shm/invalidate?target=T`: the kept body of request target `T` (as a gateway sends
/// it: `/blobs?size=…`, percent-encoded here) is no longer the current version of its object:
/// once this answers, no gateway serves it again without asking. Operational, like every
/// `/shm/` route (the gateway keeps them private).
async fn invalidate(
    State(state): State<AppState>,
    Query(query): Query<InvalidateQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let key = object_key(&query.target);
    state.shm()?.board().invalidate(key);
    metrics::counter!("objects_invalidated_total").increment(1);
    Ok(Json(
        serde_json::json!({ "target": query.target, "key": format!("{key:016x}") }),
    ))
}

#[derive(serde::Deserialize)]
struct InvalidateQuery {
    target: String,
}

/// `GET /readyz`: ready once the segment exists, which is from start-up on; 503 with the reason
/// when it could not be created.
async fn readyz(State(state): State<AppState>) -> Response {
    match &state.inner.shm {
        Ok(shm) => {
            Json(serde_json::json!({ "ready": true, "segment": shm.info() })).into_response()
        }
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "ready": false, "reason": error.to_string() })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests;
