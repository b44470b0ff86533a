//! Logs, metrics and liveness shared by both services: the `tracing` subscriber (filter from
//! `RUST_LOG`, text or JSON), the process-wide Prometheus recorder, the per-request HTTP metrics
//! middleware, the request span that `TraceLayer` opens, and the `/metrics` and `/healthz`
//! handlers.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{FromRef, MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::Span;
use tracing_subscriber::EnvFilter;

use crate::transport_header::Transport;

/// Log output format, `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber writing to stderr (stdout is reserved for the
/// `listening on` line). `RUST_LOG` overrides the default filter `info`. A second call in the
/// same process (tests, an embedding crate that installed its own) leaves the first in place.
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if installed.is_err() {
        tracing::debug!("a tracing subscriber was already installed; keeping it");
    }
}

/// Latency buckets in seconds: 100 µs to 5 s, dense around the 1 ms the services aim for.
const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The handle of this process's Prometheus recorder, installing it on first use.
///
/// If another recorder was installed first (an embedding crate's), metrics go there and this
/// handle renders an empty exposition; that is logged once.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS_SECONDS)
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            if let Err(error) = metrics::set_global_recorder(recorder) {
                tracing::warn!(%error, "could not install the Prometheus recorder; /metrics will be empty");
            }
            describe_metrics();
            handle
        })
        .clone()
}

/// Gives every metric its `# HELP` text, and makes the label-less failure counters visible at
/// 0 from the start, so a dashboard can tell "none yet" from "not exported".
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "http_requests_total",
        Unit::Count,
        "HTTP requests answered, by route template and status code"
    );
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "Time from receiving a request to its response headers, by route template"
    );
    describe_histogram!(
        "gateway_stage_seconds",
        Unit::Seconds,
        "Time a forwarded request spent in each stage in the gateway (attach, channel, redeem, upstream), as in its Server-Timing header"
    );
    describe_gauge!(
        "http_requests_in_flight",
        Unit::Count,
        "Requests being handled now, by route template"
    );
    describe_counter!(
        "payload_bytes_total",
        Unit::Bytes,
        "Users payload bytes served, by transport (api, shm, api-fallback, cached)"
    );
    describe_counter!(
        "upstream_errors_total",
        Unit::Count,
        "Failed exchanges with users-service, by kind (unreachable, deadline, busy, bad_answer)"
    );
    describe_counter!(
        "checksum_failures_total",
        Unit::Count,
        "Payloads whose bytes did not match the producer's crc32, by transport"
    );
    describe_counter!(
        "shm_stale_handles_total",
        Unit::Count,
        "Handles refused because their slot no longer held that publication"
    );
    describe_counter!(
        "shm_retries_total",
        Unit::Count,
        "Shared-memory requests retried once after a stale, corrupt or exhausted slot"
    );
    describe_counter!(
        "shm_reattaches_total",
        Unit::Count,
        "Re-attaches to a users-service segment, by trigger"
    );
    describe_counter!(
        "shm_fallbacks_total",
        Unit::Count,
        "Shared-memory requests served over REST instead (--shm-fallback-to-api, --transport auto), by the error that caused it"
    );
    describe_counter!(
        "transport_choices_total",
        Unit::Count,
        "GET /api/users requests by the transport --transport chose, and why"
    );
    describe_gauge!("shm_slots", Unit::Count, "Segment slots by state");
    describe_counter!(
        "budget_refusals_total",
        Unit::Count,
        "Requests refused with a 503 because they would go past a budget, by budget (gateway_memory: the gateway's --memory-budget; making: users-service's --making-budget)"
    );
    describe_counter!(
        "budget_waits_total",
        Unit::Count,
        "Requests that waited for room in users-service's --making-budget, by budget"
    );
    describe_histogram!(
        "budget_wait_seconds",
        Unit::Seconds,
        "How long admitted requests waited for room in a budget, by budget (0 for most)"
    );
    describe_gauge!(
        "budget_reserved_bytes",
        Unit::Bytes,
        "Bytes reserved in a budget now, by budget"
    );
    describe_counter!(
        "shm_reclaims_total",
        Unit::Count,
        "Slots the reaper took back, by reason"
    );
    describe_counter!(
        "shm_claims_exhausted_total",
        Unit::Count,
        "Publications that found no free slot within the claim timeout"
    );
    for name in [
        "shm_stale_handles_total",
        "shm_retries_total",
        "shm_fallbacks_total",
    ] {
        metrics::counter!(name).increment(0);
    }
}

/// Runs the recorder's periodic upkeep (drains histogram buffers so memory stays bounded) until
/// the runtime shuts down.
pub fn spawn_metrics_upkeep(handle: PrometheusHandle) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(5));
        loop {
            interval.tick().await;
            handle.run_upkeep();
        }
    });
}

/// `GET /healthz`: the process is alive and serving HTTP (readiness is each service's own).
pub async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// `GET /metrics`: the Prometheus text exposition.
pub async fn metrics_endpoint(State(handle): State<PrometheusHandle>) -> Response {
    let mut response = handle.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Middleware: counts requests by route template and status, records their latency, and keeps
/// `http_requests_in_flight` by route. Labels are route templates (not raw paths) and status
/// codes, so cardinality stays fixed.
pub async fn track_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let started = Instant::now();
    let in_flight = InFlight::enter(&route);
    let response = next.run(request).await;
    drop(in_flight);
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// One request counted in `http_requests_in_flight`; the count drops again when this is dropped,
/// also when the client goes away and the request future is cancelled.
struct InFlight(metrics::Gauge);

impl InFlight {
    fn enter(route: &str) -> InFlight {
        let gauge = metrics::gauge!("http_requests_in_flight", "route" => route.to_owned());
        gauge.increment(1.0);
        InFlight(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// A service's routes with what both services serve alike: `GET /healthz` and `GET /metrics`
/// added, per-request metrics on every route ([`track_requests`]) and the request span
/// ([`trace_layer`]) around all of it.
pub fn observed<S>(routes: Router<S>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    PrometheusHandle: FromRef<S>,
{
    routes
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_endpoint))
        .route_layer(axum::middleware::from_fn(track_requests))
        .layer(trace_layer())
}

/// The request tracing layer both services use: one span per request ([`request_span`]).
/// Failed responses are logged where their cause is known (`ApiError`), so the layer's own
/// failure events stay at debug instead of an ERROR line per 503.
pub fn trace_layer() -> TraceLayer<SharedClassifier<ServerErrorsAsFailures>, fn(&Request) -> Span> {
    TraceLayer::new_for_http()
        .make_span_with(request_span as fn(&Request) -> Span)
        .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG))
}

/// The span `TraceLayer` opens per request. `transport`, `slot` and `generation` start empty and
/// are filled by the handlers that know them (see [`record_transport`]).
pub fn request_span(request: &Request) -> Span {
    tracing::info_span!(
        "request",
        method = %request.method(),
        uri = %request.uri(),
        transport = tracing::field::Empty,
        slot = tracing::field::Empty,
        generation = tracing::field::Empty,
    )
}

/// Notes in the current request span which transport served it.
pub fn record_transport(transport: Transport) {
    Span::current().record("transport", transport.as_str());
}
