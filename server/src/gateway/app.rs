//! The gateway, the front: serves the users body to clients, fetched from users-service over
//! pooled HTTP (`/api/users-via-api`), passed through shared memory and asked for over the
//! control socket (`/api/users-via-shm`; no HTTP on the way), or served from a body it
//! serialized once (`/api/users-cached`, the ceiling for benchmarks). With `--http-signal`,
//! `/api/users-via-shm-http` passes the body through shared memory the seed's way, asking over
//! HTTP, which carries the handle back. `run` is callable from other crates.
//!
//! What clients see of failures is a status, a stable code and a fixed message (`ApiError`);
//! `/readyz` says only `ready` and one word per dependency. The detail (users-service's error
//! text, socket names, epochs, errno, error chains) goes to the log and to `GET /status` on the
//! operators' listener, `--admin-listen`, which is off unless given and meant for loopback.
//!
//! Execution policy for CPU-heavy work: generating and serializing a body (the cached route's
//! miss, up to ~3.7 MB, milliseconds) runs on tokio's blocking pool, never on an async worker.
//! What the two transports do per request is verification of bytes already in memory — the
//! crc32 of a REST body, and the copy out of a slot with its crc32 for shared memory,
//! microseconds for the default body and bounded by the slot size and
//! `MAX_UPSTREAM_BODY_BYTES` — and runs inline on both alike, so the comparison measures the
//! transports, not the scheduling. A cache hit is a reference-count increment, served inline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{FromRef, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use reqwest::Url;
use shmbridge::{ConsumerOptions, Handle};

use crate::api_error::ApiError;
use crate::failpoints;
use crate::payload::Payload;
use crate::query::UsersQuery;
use crate::query_cache::QueryCache;
use crate::serve::{
    CommonArgs, ShutdownSignal, announce, announce_admin, bind, serve_until_signal,
};
use crate::slot_deadline::{self, SlotDeadlineError};
use crate::telemetry;
use crate::transport_header::Transport;

use super::shm_consumer::{AttachedTo, ShmClient};
use super::transport_choice::{Route, TransportChoice, TransportPolicy};
use super::upstream::{Upstream, parse_upstream_url};

/// gateway: the front that clients call.
#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "gateway",
    version,
    about = "The front: serves the users JSON over REST, shared memory, or a cached body",
    args_override_self = true
)]
pub struct Args {
    /// Address to listen on; port 0 picks a free port (the bound one is printed on stdout).
    #[arg(
        long,
        env = "SHMBRIDGE_GATEWAY_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
    /// Base URL of users-service.
    #[arg(long, env = "SHMBRIDGE_UPSTREAM", default_value = "http://127.0.0.1:8081", value_parser = parse_upstream_url)]
    pub upstream: Url,
    /// Deadline for everything one request asks of users-service; past it the client gets a 503.
    #[arg(long, env = "SHMBRIDGE_DEADLINE", default_value = "2s", value_parser = humantime::parse_duration)]
    pub deadline: Duration,
    /// Bound on attaching to users-service's segment (looking up its socket, connecting,
    /// receiving the greeting), and on a request's wait for another request's attach; at most
    /// `--deadline`. A producer that does not greet in time costs a 503 (`shm_unavailable`),
    /// and the next request tries a fresh attach.
    #[arg(long, env = "SHMBRIDGE_ATTACH_TIMEOUT", default_value = "250ms", value_parser = humantime::parse_duration)]
    pub attach_timeout: Duration,
    /// Idle keep-alive connections kept open to users-service.
    #[arg(long, env = "SHMBRIDGE_POOL_MAX_IDLE", default_value_t = 64)]
    pub pool_max_idle: usize,
    /// Abstract socket serving users-service's segment and control channel. Default: ask
    /// users-service (`GET /shm/segment`) at every attach.
    #[arg(long, env = "SHMBRIDGE_SHM_SOCKET")]
    pub shm_socket: Option<String>,
    /// A uid, besides the gateway's own, trusted to answer on the control socket (repeat for
    /// several). A process of any other uid answering there is refused, as is one that did not
    /// create the segment it hands over.
    #[arg(
        long = "producer-uid",
        env = "SHMBRIDGE_PRODUCER_UIDS",
        value_delimiter = ','
    )]
    pub producer_uids: Vec<u32>,
    /// Publications the gateway asks for at once (over either signal); more requests wait
    /// for one of these to be redeemed (within their deadline). Keep it at or below
    /// users-service's `--max-unredeemed-per-peer` (by default half its slots, 32), or a burst
    /// is refused there as busy instead of waiting here.
    #[arg(long, env = "SHMBRIDGE_SHM_MAX_IN_FLIGHT", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub shm_max_in_flight: u32,
    /// Also serve `/api/users-via-shm-http`: shared memory asked for over HTTP (`POST
    /// /shm/users`, which users-service serves only with its own `--http-signal`), the seed's
    /// design, kept to be measured beside the control channel.
    #[arg(long, env = "SHMBRIDGE_GATEWAY_HTTP_SIGNAL")]
    pub http_signal: bool,
    /// How long a read may hold its slot before the reaper takes it back (more than 0, at most
    /// 1h).
    #[arg(long, env = "SHMBRIDGE_LEASE", default_value = "1s", value_parser = slot_deadline::parse)]
    pub lease: Duration,
    /// Also serve the operators' `GET /status` (readiness with its detail: error chains,
    /// socket, epoch) on this address, announced as `admin listening on ADDR` on stdout after
    /// the main address. Off unless given; bind it to loopback.
    #[arg(long, env = "SHMBRIDGE_GATEWAY_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Bytes of verified sealed payloads (bodies above a slot) kept mapped: users-service under
    /// `--cache` hands the same immutable memfd for every publication of a body, and one the
    /// gateway already verified is served from its kept mapping instead of being mapped and
    /// checksummed again. 0 checks every payload.
    #[arg(long, env = "SHMBRIDGE_KEEP_VERIFIED_BYTES", default_value_t = 160 << 20)]
    pub keep_verified_bytes: u64,
    /// Serve /api/users-via-shm over the REST path when shared memory fails (marked
    /// `x-transport: api-fallback` and counted). Off by default so shm failures stay visible.
    #[arg(long, env = "SHMBRIDGE_SHM_FALLBACK_TO_API")]
    pub shm_fallback_to_api: bool,
    /// How `GET /api/users` moves the body: `api`, `shm`, or `auto`: shared memory for bodies of
    /// at least `--auto-shm-min-bytes` (estimated from the count), REST below it and whenever
    /// shared memory fails (`x-transport: api-fallback`).
    #[arg(long, env = "SHMBRIDGE_TRANSPORT", value_enum, default_value_t = TransportChoice::Auto)]
    pub transport: TransportChoice,
    /// Under `--transport auto`, the smallest body sent through shared memory. The default is
    /// where `sweep --cache` (docs/sample-sweep-report.md) found shared memory's p50 at or below
    /// REST's at that size and every larger one under both load models (closed loop: from
    /// 1 KiB; open loop: from 64 KiB; below it the two differ by well under a millisecond).
    #[arg(long, env = "SHMBRIDGE_AUTO_SHM_MIN_BYTES", default_value_t = 64 << 10)]
    pub auto_shm_min_bytes: u64,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    upstream: Upstream,
    shm: ShmClient,
    fallback_to_api: bool,
    transport: TransportPolicy,
    http_signal: bool,
    cached: QueryCache<Payload>,
    metrics: PrometheusHandle,
}

/// Why [`AppState::new`] refused the arguments.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `--lease` outside its bounds (the flag's parser refuses these already; this catches
    /// `Args` built in code).
    #[error("--lease: {0}")]
    BadLease(SlotDeadlineError),
    /// The HTTP client for users-service could not be built.
    #[error(transparent)]
    Client(reqwest::Error),
}

impl AppState {
    pub fn new(args: &Args) -> Result<AppState, StartError> {
        let lease = slot_deadline::check(args.lease).map_err(StartError::BadLease)?;
        let upstream = Upstream::new(args.upstream.clone(), args.deadline, args.pool_max_idle)
            .map_err(StartError::Client)?;
        Ok(AppState {
            inner: Arc::new(Shared {
                upstream,
                shm: ShmClient::new(
                    args.shm_socket.clone(),
                    args.producer_uids.clone(),
                    ConsumerOptions {
                        lease,
                        keep_verified_bytes: args.keep_verified_bytes,
                    },
                    args.shm_max_in_flight,
                    args.attach_timeout,
                ),
                fallback_to_api: args.shm_fallback_to_api,
                transport: TransportPolicy {
                    choice: args.transport,
                    shm_min_bytes: args.auto_shm_min_bytes,
                },
                http_signal: args.http_signal,
                cached: QueryCache::default(),
                metrics: telemetry::metrics_handle(),
            }),
        })
    }
}

impl FromRef<AppState> for PrometheusHandle {
    fn from_ref(state: &AppState) -> PrometheusHandle {
        state.inner.metrics.clone()
    }
}

/// The gateway routes, ready for `oneshot` in tests or for serving.
pub fn app(state: AppState) -> Router {
    let routes = Router::new()
        .route("/api/users", get(users))
        .route("/api/users-via-api", get(users_via_api))
        .route("/api/users-via-shm", get(users_via_shm))
        .route("/api/users-via-shm-http", get(users_via_shm_http))
        .route("/api/users-cached", get(users_cached))
        .route("/readyz", get(readyz));
    telemetry::observed(routes).with_state(state)
}

/// The operators' routes (`--admin-listen`): `GET /status`, readiness with its detail.
pub fn admin_app(state: AppState) -> Router {
    Router::new()
        .route("/status", get(status))
        .layer(telemetry::trace_layer())
        .with_state(state)
}

/// Runs the gateway until SIGTERM/Ctrl-C.
pub async fn run(args: Args) -> anyhow::Result<()> {
    telemetry::init_tracing(args.common.log_format);
    failpoints::setup()?;
    let state = AppState::new(&args)?;
    telemetry::spawn_metrics_upkeep(state.inner.metrics.clone());
    let (listener, bound) = bind(args.listen).await?;
    let admin = match args.admin_listen {
        Some(listen) => Some(bind(listen).await?),
        None => None,
    };
    let shutdown = ShutdownSignal::install()?;
    announce(bound)?;
    if let Some((admin_listener, admin_bound)) = admin {
        announce_admin(admin_bound)?;
        tracing::info!(%admin_bound, "operators' status listening");
        let admin_router = admin_app(state.clone());
        // Served until the process exits: a status request in flight at shutdown is cut off,
        // which costs an operator a retry and keeps the drain about client requests.
        tokio::spawn(async move {
            if let Err(error) = axum::serve(admin_listener, admin_router).await {
                tracing::warn!(%error, "the operators' status listener failed");
            }
        });
    }
    tracing::info!(%bound, upstream = %args.upstream, deadline = ?args.deadline, "gateway listening");
    serve_until_signal(listener, app(state), shutdown, args.common.shutdown_timeout).await
}

/// `GET /api/users-via-api`: the body fetched from users-service over HTTP, verified.
async fn users_via_api(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = UsersQuery::parse(raw.as_deref())?;
    let payload = state.inner.upstream.fetch_users(query).await?;
    Ok(payload.into_response(Transport::Api))
}

/// `GET /api/users`: the body over the transport `--transport` picks for it.
async fn users(state: State<AppState>, raw: RawQuery) -> Result<Response, ApiError> {
    let query = UsersQuery::parse(raw.0.as_deref())?;
    match state.inner.transport.route(query) {
        Route::Api => users_via_api(state, raw).await,
        Route::Shm { fallback_to_api } => {
            via_shm(state, raw, Signal::Channel, fallback_to_api).await
        }
    }
}

/// How the gateway asks users-service for a publication.
#[derive(Clone, Copy, Debug)]
enum Signal {
    /// A publish frame on the control channel.
    Channel,
    /// `POST /shm/users`, the handle coming back over HTTP.
    Http,
}

/// `GET /api/users-via-shm`: asks users-service over the control channel to publish into shared
/// memory, redeems the handle and verifies the bytes.
async fn users_via_shm(state: State<AppState>, raw: RawQuery) -> Result<Response, ApiError> {
    let fallback_to_api = state.inner.fallback_to_api;
    via_shm(state, raw, Signal::Channel, fallback_to_api).await
}

/// `GET /api/users-via-shm-http` (with `--http-signal`): as `/api/users-via-shm`, asking over HTTP.
async fn users_via_shm_http(state: State<AppState>, raw: RawQuery) -> Result<Response, ApiError> {
    if !state.inner.http_signal {
        return Err(ApiError::HttpSignalDisabled);
    }
    let fallback_to_api = state.inner.fallback_to_api;
    via_shm(state, raw, Signal::Http, fallback_to_api).await
}

/// Stale, corrupt and exhausted slots get one retry; the whole exchange, retry included, is
/// bounded by the deadline. With `fallback_to_api`, a failure of shared memory itself is served
/// over REST instead, within the same deadline.
async fn via_shm(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    signal: Signal,
    fallback_to_api: bool,
) -> Result<Response, ApiError> {
    let query = UsersQuery::parse(raw.as_deref())?;
    let shared = &state.inner;
    let deadline = shared.upstream.deadline();
    let started = Instant::now();
    let ends = tokio::time::Instant::from_std(started + deadline);
    let outcome = tokio::time::timeout_at(ends, fetch_via_shm(shared, query, signal, ends))
        .await
        .unwrap_or(Err(ApiError::UpstreamDeadline { deadline }));
    let transport = match signal {
        Signal::Channel => Transport::Shm,
        Signal::Http => Transport::ShmHttp,
    };
    match outcome {
        Ok(payload) => Ok(payload.into_response(transport)),
        Err(error) if fallback_to_api && error.is_shm_failure() => {
            metrics::counter!("shm_fallbacks_total", "code" => error.code()).increment(1);
            tracing::debug!(%error, "shared memory failed; serving over the REST path");
            // The fallback shares the request's deadline rather than starting a new one.
            let remaining = deadline.saturating_sub(started.elapsed());
            let payload = tokio::time::timeout(remaining, shared.upstream.fetch_users(query))
                .await
                .unwrap_or(Err(ApiError::UpstreamDeadline { deadline }))?;
            Ok(payload.into_response(Transport::ApiFallback))
        }
        Err(error) => Err(error),
    }
}

/// One attempt, and one more if the first failed in a way a fresh publication may cure.
async fn fetch_via_shm(
    shared: &Shared,
    query: UsersQuery,
    signal: Signal,
    ends: tokio::time::Instant,
) -> Result<Payload, ApiError> {
    match attempt_via_shm(shared, query, signal, ends).await {
        Err(error) if error.is_retryable_shm() => {
            metrics::counter!("shm_retries_total").increment(1);
            tracing::debug!(%error, "retrying once through shared memory");
            attempt_via_shm(shared, query, signal, ends).await
        }
        outcome => outcome,
    }
}

async fn attempt_via_shm(
    shared: &Shared,
    query: UsersQuery,
    signal: Signal,
    ends: tokio::time::Instant,
) -> Result<Payload, ApiError> {
    let upstream = &shared.upstream;
    let attachment = shared
        .shm
        .attachment(upstream, None, "not_attached")
        .await?;
    // Held until the bytes are copied out, so the gateway never holds more unredeemed
    // publications than it has permits, whichever way it asks for them.
    let _in_flight = shared.shm.in_flight_permit(ends).await?;
    let (attachment, publication) = match signal {
        Signal::Channel => {
            let publication = attachment.request(query, ends).await?;
            (attachment, publication)
        }
        // A handle over HTTP is always a slot's: descriptors cannot travel over HTTP.
        Signal::Http => {
            let handle = upstream.publish_users(query).await.inspect_err(|error| {
                // users-service has no segment: logged once per distinct reason, and kept for
                // the operators' status, like a failed attach.
                if let ApiError::ShmUnavailable { .. } = error {
                    shared.shm.note_problem(error);
                }
            })?;
            let attachment = shared
                .shm
                .attachment(upstream, Some(handle.epoch), "epoch_changed")
                .await?;
            record_handle(&handle);
            let bytes = attachment.redeem(&handle)?;
            return Ok(Payload {
                bytes: bytes.into(),
                crc32: handle.crc,
            });
        }
    };
    record_handle(publication.handle());
    attachment.redeem_publication(publication).await
}

/// Notes the handle being redeemed in the request's span.
fn record_handle(handle: &Handle) {
    let span = tracing::Span::current();
    span.record("slot", handle.slot);
    span.record("generation", handle.generation);
}

/// `GET /api/users-cached`: the same body, serialized once per query by the gateway itself; no
/// users-service involved. The upper bound any transport can reach.
async fn users_cached(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = UsersQuery::parse(raw.as_deref())?;
    let payload = match state.inner.cached.get(query) {
        Some(payload) => payload,
        None => tokio::task::spawn_blocking(move || {
            state
                .inner
                .cached
                .get_or_insert_with(query, || Payload::generate(query))
        })
        .await
        .map_err(|error| ApiError::Internal {
            reason: format!("serializing task failed: {error}"),
        })?,
    };
    Ok(payload.into_response(Transport::Cached))
}

/// What readiness depends on: users-service answering its health check, and an attachment to
/// its current segment.
struct Readiness {
    upstream: Result<(), ApiError>,
    shm: Result<AttachedTo, ApiError>,
}

impl Readiness {
    /// Checks both, attaching if needed. Answers within twice the deadline.
    async fn check(shared: &Shared) -> Readiness {
        let upstream = shared.upstream.is_healthy().await;
        // Each exchange inside is bounded already; this bounds the sum (discovery + attach).
        let deadline = shared.upstream.deadline();
        let shm = tokio::time::timeout(deadline, shared.shm.readiness(&shared.upstream))
            .await
            .unwrap_or(Err(ApiError::ShmUnavailable {
                reason: format!(
                    "shared-memory check took longer than {}",
                    humantime::format_duration(deadline)
                ),
            }));
        Readiness { upstream, shm }
    }

    fn status_code(&self) -> StatusCode {
        if self.upstream.is_ok() && self.shm.is_ok() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

/// `GET /readyz`: 200 when users-service answers its health check and the gateway is attached
/// to its current segment (attaching if needed); 503 otherwise. The body says only which of the
/// two is missing, in fixed words; why is in the log and in the operators' `/status`.
async fn readyz(State(state): State<AppState>) -> Response {
    let readiness = Readiness::check(&state.inner).await;
    let status = readiness.status_code();
    let body = serde_json::json!({
        "ready": status == StatusCode::OK,
        "upstream": if readiness.upstream.is_ok() { "reachable" } else { "unavailable" },
        "shm": if readiness.shm.is_ok() { "attached" } else { "unavailable" },
    });
    (status, axum::Json(body)).into_response()
}

/// `GET /status` on the operators' listener: the same checks as `/readyz` and the same status
/// code, with the detail: users-service's URL and error chain, the segment's socket and epoch,
/// or why there is none, and the last shared-memory problem noted.
async fn status(State(state): State<AppState>) -> Response {
    let shared = &state.inner;
    let readiness = Readiness::check(shared).await;
    let status = readiness.status_code();
    let body = serde_json::json!({
        "ready": status == StatusCode::OK,
        "upstream": {
            "url": shared.upstream.base().as_str(),
            "reachable": readiness.upstream.is_ok(),
            "problem": readiness.upstream.as_ref().err().map(ApiError::detailed),
        },
        "shm": {
            "attached": readiness.shm.as_ref().ok(),
            "problem": readiness.shm.as_ref().err().map(ApiError::detailed),
            "last_problem": shared.shm.last_problem(),
        },
    });
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{MAX_COUNT, users_json};
    use crate::payload::{CRC_HEADER, format_crc};
    use crate::transport_header::TRANSPORT_HEADER;
    use axum::body::Body;
    use axum::http::{Request, header};
    use clap::Parser;
    use tower::ServiceExt;

    /// A gateway whose upstream is a port nothing listens on (bound, then released).
    async fn gateway_without_upstream() -> Router {
        let vacant = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = format!("http://{}", vacant.local_addr().unwrap());
        drop(vacant);
        let args =
            Args::try_parse_from(["gateway", "--upstream", &upstream, "--deadline", "1s"]).unwrap();
        app(AppState::new(&args).unwrap())
    }

    async fn get(app: Router, uri: &str) -> (StatusCode, axum::http::HeaderMap, bytes::Bytes) {
        let request = Request::get(uri).body(Body::empty()).unwrap();
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 16 << 20)
            .await
            .unwrap();
        (status, headers, body)
    }

    #[tokio::test]
    async fn cached_route_serves_the_dataset_with_headers() {
        let (status, headers, body) = get(
            gateway_without_upstream().await,
            "/api/users-cached?count=9&seed=3",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, users_json(9, 3));
        assert_eq!(headers[CRC_HEADER], format_crc(crc32fast::hash(&body)));
        assert_eq!(headers[TRANSPORT_HEADER], "cached");
        assert_eq!(headers[header::CONTENT_LENGTH], body.len().to_string());
    }

    /// The execution policy, observed on a single-threaded runtime: while the cached route
    /// serializes a body it does not have yet, the one async worker still answers `/healthz`.
    #[tokio::test(flavor = "current_thread")]
    async fn a_cache_miss_serializes_off_the_async_worker() {
        let gateway = gateway_without_upstream().await;
        let finished = std::sync::Mutex::new(Vec::new());
        let cached = async {
            let (status, _, _) = get(gateway.clone(), "/api/users-cached?count=2000").await;
            assert_eq!(status, StatusCode::OK);
            finished.lock().unwrap().push("cached");
        };
        let health = async {
            get(gateway.clone(), "/healthz").await;
            finished.lock().unwrap().push("healthz");
        };
        tokio::join!(cached, health);
        assert_eq!(*finished.lock().unwrap(), ["healthz", "cached"]);
    }

    #[tokio::test]
    async fn every_bad_query_is_a_400_on_every_users_route() {
        let over_cap = format!("count={}", MAX_COUNT + 1);
        let queries = [
            "x=1",
            "count=abc",
            "count=",
            "seed=-4",
            over_cap.as_str(),
            "seed=1&seed=2",
        ];
        for route in [
            "/api/users-via-api",
            "/api/users-via-shm",
            "/api/users-cached",
        ] {
            for query in queries {
                let uri = format!("{route}?{query}");
                let (status, _, body) = get(gateway_without_upstream().await, &uri).await;
                assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
                let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert!(error["error"].is_string(), "{uri}");
            }
        }
    }

    #[test]
    fn a_lease_out_of_bounds_is_refused_naming_flag_and_bound() {
        for (value, expected) in [
            ("2h", "2h is above the maximum of 1h"),
            ("0ms", "must be more than 0 and at most 1h"),
        ] {
            let error = Args::try_parse_from(["gateway", "--lease", value])
                .err()
                .unwrap_or_else(|| panic!("--lease {value} was accepted"))
                .to_string();
            assert!(error.contains("--lease"), "{error}");
            assert!(error.contains(expected), "{error}");
        }
        let mut args = Args::try_parse_from(["gateway", "--lease", "1h"]).unwrap();
        assert_eq!(args.lease, shmbridge::MAX_DEADLINE_AHEAD);
        args.lease = Duration::ZERO;
        let error = AppState::new(&args).err().expect("a zero lease is refused");
        assert!(error.to_string().starts_with("--lease: "), "{error}");
    }

    #[tokio::test]
    async fn unreachable_upstream_is_503_with_retry_after_and_not_ready() {
        let (status, headers, body) =
            get(gateway_without_upstream().await, "/api/users-via-api").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::RETRY_AFTER], "1");
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(error["error"], "users-service is unavailable");

        let (status, _, _) = get(gateway_without_upstream().await, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let (status, _, _) = get(gateway_without_upstream().await, "/healthz").await;
        assert_eq!(status, StatusCode::OK);
    }
}
