//! users-service, the producer: serves the deterministic users dataset over HTTP (`GET /users`)
//! and through shared memory, where gateways ask for publications over the control socket
//! ([`ShmProducer`]); with `--http-signal`, also the seed's way, `POST /shm/users` publishing
//! into a slot and answering with the handle. It also serves test payloads of any size up to
//! `--max-payload` (`GET /blobs`, see [`crate::blobs`]), always streamed. `run` is callable from
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

use axum::extract::{FromRef, RawQuery, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
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
use crate::serve::{CommonArgs, ShutdownSignal, announce, bind, serve_until_signal};
use crate::server_timing::{self, SERVER_TIMING};
use crate::telemetry;
use crate::transport_header::Transport;

use super::bodies::Bodies;
use super::channel_routes::ChannelRoutes;
use super::sealed_bodies::SealedBodies;
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
    /// every path alike. (Without it, users are generated once per (count, seed) and serialized
    /// per request, as in the seed system.)
    #[arg(long, env = "SHMBRIDGE_USERS_CACHE")]
    pub cache: bool,
    /// Also publish on `POST /shm/users`, answering with the handle over HTTP: the seed's
    /// design, kept so that it can be measured beside the control channel. Off by default: any
    /// local process that can reach the port could then hold slots until their TTL.
    #[arg(long, env = "SHMBRIDGE_HTTP_SIGNAL")]
    pub http_signal: bool,
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
    http_signal: bool,
    /// The largest `GET /blobs` size: `--max-payload`, the limit of every users-service body.
    pub(super) max_blob_size: u64,
    /// The segment, or why it could not be created (always a [`StartError::Create`]): then
    /// only REST is served.
    shm: Result<Arc<ShmProducer>, StartError>,
    metrics: PrometheusHandle,
}

impl AppState {
    /// Creates the shared-memory segment and starts serving its descriptor. A segment that
    /// cannot be created (no space, no memory) is logged once and leaves users-service serving
    /// REST only; a setting it must not start with is an error.
    pub fn new(args: &Args) -> Result<AppState, StartError> {
        let bodies = Arc::new(Bodies::new(args.cache));
        let runtime = tokio::runtime::Handle::current();
        // The channel answers with the app's own routes, so it refers back to the state that
        // owns it: weakly, so that dropping the state drops the channel.
        let inner = Arc::new_cyclic(|state| {
            let routes = ChannelRoutes::new(
                state.clone(),
                runtime,
                SealedBodies::new(args.cache, args.shm.max_payload),
                u64::from(args.shm.slot_size),
            );
            Shared {
                bodies,
                http_signal: args.http_signal,
                max_blob_size: args.shm.max_payload,
                shm: ShmProducer::start(&args.shm, Arc::new(routes)).map(Arc::new),
                metrics: telemetry::metrics_handle(),
            }
        });
        match &inner.shm {
            Err(error @ StartError::Create { .. }) => tracing::error!(
                reason = error.to_string(),
                "starting without shared memory: no control socket; POST /shm/users, GET \
                 /shm/segment and /readyz answer 503"
            ),
            Err(_) => {
                let Err(error) = Arc::into_inner(inner).expect("not shared yet").shm else {
                    unreachable!("matched an error")
                };
                return Err(error);
            }
            Ok(_) => {}
        }
        Ok(AppState { inner })
    }

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
/// channel as they are ([`ChannelRoutes`]).
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/users", get(get_users))
        .route("/blobs", get(get_blobs))
        .route("/shm/users", post(publish_users))
        .route("/shm/segment", get(segment_info))
        .route("/shm/stats", get(shm_stats))
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
    announce(bound)?;
    tracing::info!(%bound, cache = args.cache, "users-service listening");
    let served =
        serve_until_signal(listener, app(state), shutdown, args.common.shutdown_timeout).await;
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
    if state.inner.bodies.streams(query) {
        return streamed_users(state, query).await;
    }
    let (payload, made) = off_the_workers(move || {
        let making = Instant::now();
        (state.inner.bodies.payload(query), making.elapsed())
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
/// chunks while the client reads.
async fn streamed_users(state: AppState, query: UsersQuery) -> Result<Response, ApiError> {
    let (head_sender, head) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
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
/// ([`crate::blobs`]), always streamed as a large users body is ([`streamed_users`]); a size
/// above `--max-payload` is a 413, any other bad query a 400.
async fn get_blobs(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    match BlobQuery::parse(raw.as_deref(), state.inner.max_blob_size) {
        Ok(query) => streamed_blob(query).await.into_response(),
        Err(refused) => refused.into_response(),
    }
}

/// A blob, never held whole: one blocking task (the request's one hop off the workers)
/// generates it once into a checksumming sink for the headers' crc32 (cheaper than keeping it:
/// see [`blobs`]), hands the response its body, then generates it again into the body in
/// bounded chunks while the client reads.
async fn streamed_blob(query: BlobQuery) -> Result<Response, ApiError> {
    let (head_sender, head) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
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
    let summary = BodySummary {
        len: query.size,
        crc32,
    };
    let mut headers = summary.response_headers(Transport::Api);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(blobs::content_type(query.pattern)),
    );
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
    // Run inline, a few stalled publications froze the whole service on 2 cores (chaos
    // scenario slow-producer); the hop costs ~0.2 ms, and GET /users takes it too.
    let (handle, len) = off_the_workers(move || {
        let body = state.inner.bodies.body(query);
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
mod tests {
    use super::*;
    use crate::dataset::{DEFAULT_COUNT, DEFAULT_SEED, MAX_COUNT, users_json};
    use crate::payload::{CRC_HEADER, format_crc};
    use crate::transport_header::TRANSPORT_HEADER;
    use crate::users_service::MAX_KEPT_USERS;
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use clap::Parser;
    use tower::ServiceExt;

    /// A state with a small segment (4 slots of 64 KiB) unless `extra_args` say otherwise.
    fn test_state(extra_args: &[&str]) -> AppState {
        let defaults = [
            "users-service",
            "--slot-count",
            "4",
            "--slot-size",
            "65536",
            "--http-signal",
        ];
        let args = Args::try_parse_from(defaults.iter().chain(extra_args)).unwrap();
        AppState::new(&args).unwrap()
    }

    fn test_app(extra_args: &[&str]) -> Router {
        app(test_state(extra_args))
    }

    async fn get(app: Router, uri: &str) -> (StatusCode, axum::http::HeaderMap, bytes::Bytes) {
        send(app, Request::get(uri).body(Body::empty()).unwrap()).await
    }

    async fn post(app: Router, uri: &str) -> (StatusCode, axum::http::HeaderMap, bytes::Bytes) {
        send(app, Request::post(uri).body(Body::empty()).unwrap()).await
    }

    async fn send(
        app: Router,
        request: Request<Body>,
    ) -> (StatusCode, axum::http::HeaderMap, bytes::Bytes) {
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 16 << 20)
            .await
            .unwrap();
        (status, headers, body)
    }

    #[tokio::test]
    async fn default_users_body_is_the_dataset_with_headers() {
        for extra in [&[][..], &["--cache"][..]] {
            let (status, headers, body) = get(test_app(extra), "/users").await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body, users_json(DEFAULT_COUNT, DEFAULT_SEED));
            assert_eq!(headers[header::CONTENT_TYPE], "application/json");
            assert_eq!(headers[header::CONTENT_LENGTH], body.len().to_string());
            assert_eq!(headers[CRC_HEADER], format_crc(crc32fast::hash(&body)));
            assert_eq!(headers[TRANSPORT_HEADER], "api");
        }
    }

    #[tokio::test]
    async fn count_and_seed_select_the_body() {
        let (status, _, body) = get(test_app(&[]), "/users?count=17&seed=5").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, users_json(17, 5));
    }

    /// The data frames of a response body, each as it was sent.
    async fn frames(response: Response) -> Vec<bytes::Bytes> {
        use http_body::Body as _;
        let mut body = response.into_body();
        let mut frames = Vec::new();
        while let Some(frame) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
        {
            frames.push(frame.unwrap().into_data().unwrap());
        }
        frames
    }

    /// Above [`MAX_KEPT_USERS`] without `--cache` the body goes out in bounded chunks while it
    /// is generated, its length and crc32 still in the headers, twice (the second time with
    /// the kept summary). Under `--cache` it is the cached body, whole.
    #[tokio::test]
    async fn a_large_body_is_streamed_in_bounded_chunks_with_exact_headers() {
        let count = MAX_KEPT_USERS + 1;
        let expected = users_json(count, 3);
        let uri = format!("/users?count={count}&seed=3");
        for cache in [false, true] {
            let state = test_state(if cache { &["--cache"][..] } else { &[][..] });
            for _ in 0..2 {
                let request = Request::get(uri.as_str()).body(Body::empty()).unwrap();
                let response = app(state.clone()).oneshot(request).await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                let headers = response.headers().clone();
                assert_eq!(headers[header::CONTENT_LENGTH], expected.len().to_string());
                assert_eq!(headers[CRC_HEADER], format_crc(crc32fast::hash(&expected)));
                assert_eq!(headers[TRANSPORT_HEADER], "api");
                let frames = frames(response).await;
                assert_eq!(frames.concat(), expected, "cache {cache}");
                if cache {
                    assert_eq!(frames.len(), 1, "a cached body is sent whole");
                } else {
                    assert!(frames.len() > 1);
                    let largest = frames.iter().map(bytes::Bytes::len).max().unwrap();
                    assert!(largest <= crate::dataset::WRITE_CHUNK_BYTES, "{largest}");
                }
            }
        }
    }

    /// The cap through the app: served at the cap (91 MiB, streamed), refused one above.
    #[tokio::test]
    #[ignore = "streams the 91 MiB cap body twice over (summary, then body), ~16 s in a debug \
                build; run it with `cargo test --release -p shmbridge-server --lib -- --ignored \
                cap_body` (~3 s); every build checks the cap in query.rs and every_bad_query"]
    async fn the_cap_body_is_served_and_one_user_more_refused() {
        let state = test_state(&[]);
        let at_cap = format!("/users?count={MAX_COUNT}&seed={DEFAULT_SEED}");
        let request = Request::get(at_cap.as_str()).body(Body::empty()).unwrap();
        let response = app(state.clone()).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CRC_HEADER], "a42c7161");
        let mut hasher = crc32fast::Hasher::new();
        let mut len = 0;
        for frame in frames(response).await {
            hasher.update(&frame);
            len += frame.len();
        }
        assert_eq!((len, hasher.finalize()), (95_663_254, 0xa42c_7161));
        let over = format!("/users?count={}", MAX_COUNT + 1);
        let (status, _, _) = get(app(state), &over).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn published_handle_redeems_to_the_dataset_bytes() {
        let state = test_state(&[]);
        let info = state.shm().unwrap().info().clone();
        let (status, headers, body) = post(app(state.clone()), "/shm/users?count=30&seed=8").await;
        assert_eq!(status, StatusCode::OK);
        let handle: shmbridge::Handle = std::str::from_utf8(&body).unwrap().parse().unwrap();
        assert_eq!(headers[CRC_HEADER], format_crc(handle.crc));

        let segment = shmbridge::attach_via_socket(&info.socket, Duration::from_secs(1)).unwrap();
        let consumer =
            shmbridge::Consumer::new(Arc::new(segment), shmbridge::ConsumerOptions::default())
                .unwrap();
        let bytes = consumer.acquire(&handle).unwrap().copy_out().unwrap();
        assert_eq!(bytes, users_json(30, 8));
    }

    #[tokio::test]
    async fn segment_info_names_the_socket_and_epoch() {
        let state = test_state(&[]);
        let expected = state.shm().unwrap().info().clone();
        let (status, _, body) = get(app(state), "/shm/segment").await;
        assert_eq!(status, StatusCode::OK);
        let info: SegmentInfo = serde_json::from_slice(&body).unwrap();
        assert_eq!(info, expected);
        assert_eq!(info.slot_count, 4);
    }

    #[tokio::test]
    async fn shm_stats_answers_the_producers_sealed_figures() {
        let state = test_state(&[]);
        let (status, _, body) = get(app(state), "/shm/stats").await;
        assert_eq!(status, StatusCode::OK);
        let stats: ShmStatsInfo = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            stats,
            ShmStatsInfo {
                sealed_publications: 0,
                sealed_bytes_in_flight: 0
            }
        );
    }

    #[tokio::test]
    async fn payload_larger_than_a_slot_is_a_507_not_a_truncated_body() {
        let (status, _, body) = post(test_app(&[]), "/shm/users?count=1000").await;
        assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE);
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let message = error["error"].as_str().unwrap();
        assert!(
            message.contains("larger than a shared-memory slot (65536 bytes)"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn exhausted_slots_are_a_503_with_retry_after() {
        let state = test_state(&["--slot-count", "1", "--claim-timeout", "10ms"]);
        let (status, _, _) = post(app(state.clone()), "/shm/users?count=1").await;
        assert_eq!(status, StatusCode::OK);
        let (status, headers, _) = post(app(state), "/shm/users?count=1").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::RETRY_AFTER], "1");
    }

    #[tokio::test]
    async fn every_bad_query_is_a_400_with_a_json_error() {
        let over_cap = format!("/users?count={}", MAX_COUNT + 1);
        let cap_stated = format!("is above the maximum of {MAX_COUNT}");
        let cases = [
            ("/users?limit=3", "unknown query parameter \"limit\""),
            ("/users?count=abc", "count must be a non-negative integer"),
            ("/users?count=-1", "count must be a non-negative integer"),
            ("/users?count=", "count must be a non-negative integer"),
            ("/users?seed=x", "seed must be a non-negative integer"),
            (
                "/users?seed=18446744073709551616",
                "seed must be a non-negative integer",
            ),
            (over_cap.as_str(), cap_stated.as_str()),
            ("/users?count=1&count=2", "count is given more than once"),
        ];
        let state = test_state(&[]);
        for (uri, expected) in cases {
            let shm_uri = uri.replacen("/users", "/shm/users", 1);
            for (status, headers, body) in [
                get(app(state.clone()), uri).await,
                post(app(state.clone()), &shm_uri).await,
            ] {
                assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
                assert_eq!(headers[header::CONTENT_TYPE], "application/json", "{uri}");
                let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let message = error["error"].as_str().unwrap();
                assert!(message.contains(expected), "{uri}: {message}");
            }
        }
    }

    /// Asserts every route of a users-service whose segment could not be created: REST and
    /// `/healthz` work, the shm routes answer 503 with the stable code and without the cause,
    /// and `/readyz` (the operator's view) answers 503 naming `expected`.
    async fn assert_degraded(state: AppState, expected: &str) {
        let (status, _, body) = get(app(state.clone()), "/users?count=2").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, users_json(2, DEFAULT_SEED));
        let (status, _, _) = get(app(state.clone()), "/healthz").await;
        assert_eq!(status, StatusCode::OK);
        for (status, headers, body) in [
            post(app(state.clone()), "/shm/users?count=2").await,
            get(app(state.clone()), "/shm/segment").await,
        ] {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(headers[header::RETRY_AFTER], "1");
            let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(error["error"], "shared memory is unavailable");
            assert_eq!(error["code"], "segment_unavailable");
        }
        let (status, _, body) = get(app(state), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let readiness: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(readiness["ready"], false);
        assert!(readiness["reason"].as_str().unwrap().contains(expected));
    }

    #[tokio::test]
    async fn an_uncreatable_segment_leaves_rest_serving_and_shm_answering_503() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("segment");
        let state = test_state(&["--shm-path", path.to_str().unwrap()]);
        let expected = format!(
            "cannot create the shared-memory segment at {}: create segment file failed: No such file or directory",
            path.display()
        );
        assert_degraded(state, &expected).await;
    }

    /// A tmpfs mounted for one test, unmounted (lazily, so a leak cannot block it) on drop.
    struct TinyTmpfs(tempfile::TempDir);

    impl TinyTmpfs {
        fn mount(size: &str) -> TinyTmpfs {
            let dir = tempfile::tempdir().unwrap();
            let status = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "mount -t tmpfs failed: {status}");
            TinyTmpfs(dir)
        }
    }

    impl Drop for TinyTmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.0.path())
                .status();
        }
    }

    #[tokio::test]
    async fn a_full_tmpfs_is_a_clean_enospc_not_a_sigbus() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        }
        let tmpfs = TinyTmpfs::mount("64k");
        let path = tmpfs.0.path().join("segment");
        // 4 slots of 64 KiB do not fit in 64 KiB: posix_fallocate fails before anything is mapped.
        let state = test_state(&["--shm-path", path.to_str().unwrap()]);
        assert_degraded(state, "(ENOSPC)").await;
        assert!(!path.exists(), "the failed creation leaves no file behind");
    }

    /// The execution policy, observed on a single-threaded runtime whose one blocking thread is
    /// held busy: a users request of either path waits for that thread (done on the one async
    /// worker, its CPU work would run to completion on its first poll), the worker answers
    /// `/healthz` meanwhile, and the request completes once the blocking thread is free.
    #[test]
    fn both_paths_do_their_cpu_work_off_the_async_worker() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let streamed = format!("/users?count={}", MAX_KEPT_USERS + 1);
        for request in [
            Request::get("/users?count=2000"),
            Request::get(streamed.as_str()),
            Request::post("/shm/users?count=300"),
        ] {
            let uri = request.uri_ref().unwrap().to_string();
            runtime.block_on(async {
                let (release, held) = std::sync::mpsc::channel::<()>();
                let busy = tokio::task::spawn_blocking(move || held.recv());
                let state = test_state(&["--slot-size", "262144"]);
                let mut users = std::pin::pin!(send(
                    app(state.clone()),
                    request.body(Body::empty()).unwrap()
                ));
                let first_poll =
                    std::future::poll_fn(|cx| std::task::Poll::Ready(users.as_mut().poll(cx)))
                        .await;
                assert!(
                    first_poll.is_pending(),
                    "{uri}: the users work ran on the worker"
                );
                let (health, _, _) = get(app(state.clone()), "/healthz").await;
                assert_eq!(health, StatusCode::OK, "{uri}");
                release.send(()).unwrap();
                busy.await.unwrap().unwrap();
                let (status, _, _) = users.await;
                assert_eq!(status, StatusCode::OK, "{uri}");
            });
        }
    }

    #[tokio::test]
    async fn health_and_readiness_answer_200() {
        for uri in ["/healthz", "/readyz"] {
            let (status, _, _) = get(test_app(&[]), uri).await;
            assert_eq!(status, StatusCode::OK, "{uri}");
        }
    }
}
