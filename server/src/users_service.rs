//! users-service, the producer: serves the deterministic users dataset over HTTP (`GET /users`).
//! `run` is callable from other crates, so a harness can re-execute itself as this service.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::trace::TraceLayer;

use crate::api_error::ApiError;
use crate::payload::{Payload, PayloadCache, Transport};
use crate::query::UsersQuery;
use crate::serve::{CommonArgs, ShutdownSignal, announce, bind, serve_until_signal};
use crate::telemetry;

/// users-service: the producer of the users dataset.
#[derive(clap::Parser, Clone, Debug)]
#[command(name = "users-service", version, about)]
pub struct Args {
    /// Address to listen on; port 0 picks a free port (the bound one is printed on stdout).
    #[arg(long, env = "SHMBRIDGE_USERS_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// Serve bodies serialized once per (count, seed) instead of serializing per request, on
    /// every path alike.
    #[arg(long, env = "SHMBRIDGE_USERS_CACHE")]
    pub cache: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    cache: Option<PayloadCache>,
    metrics: PrometheusHandle,
}

impl AppState {
    pub fn new(args: &Args) -> AppState {
        AppState {
            inner: Arc::new(Shared {
                cache: args.cache.then(PayloadCache::default),
                metrics: telemetry::metrics_handle(),
            }),
        }
    }

    /// The body for `query`: serialized now, or taken from the cache under `--cache`.
    fn payload(&self, query: UsersQuery) -> Payload {
        match &self.inner.cache {
            Some(cache) => cache.get_or_generate(query),
            None => Payload::generate(query),
        }
    }
}

impl FromRef<AppState> for PrometheusHandle {
    fn from_ref(state: &AppState) -> PrometheusHandle {
        state.inner.metrics.clone()
    }
}

/// The users-service routes, ready for `oneshot` in tests or for serving.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/users", get(get_users))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(telemetry::metrics_endpoint))
        .route_layer(axum::middleware::from_fn(telemetry::track_requests))
        .layer(TraceLayer::new_for_http().make_span_with(telemetry::request_span))
        .with_state(state)
}

/// Runs users-service until SIGTERM/Ctrl-C.
pub async fn run(args: Args) -> anyhow::Result<()> {
    telemetry::init_tracing(args.common.log_format);
    let state = AppState::new(&args);
    telemetry::spawn_metrics_upkeep(state.inner.metrics.clone());
    let (listener, bound) = bind(args.listen).await?;
    let shutdown = ShutdownSignal::install()?;
    announce(bound)?;
    tracing::info!(%bound, cache = args.cache, "users-service listening");
    serve_until_signal(listener, app(state), shutdown, args.common.shutdown_timeout).await
}

/// `GET /users?count=N&seed=S`: the JSON array, serialized per request.
async fn get_users(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = UsersQuery::parse(raw.as_deref())?;
    let payload = state.payload(query);
    telemetry::record_transport(Transport::Api);
    metrics::counter!("payload_bytes_total", "transport" => Transport::Api.as_str())
        .increment(payload.bytes.len() as u64);
    Ok(payload.into_response(Transport::Api))
}

/// `GET /healthz`: the process is alive.
async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: ready to serve users.
async fn readyz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "ready": true }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{DEFAULT_COUNT, DEFAULT_SEED, MAX_COUNT, users_json};
    use crate::payload::{CRC_HEADER, TRANSPORT_HEADER, format_crc};
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use clap::Parser;
    use tower::ServiceExt;

    fn test_app(extra_args: &[&str]) -> Router {
        let args = Args::try_parse_from(["users-service"].iter().chain(extra_args)).unwrap();
        app(AppState::new(&args))
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

    #[tokio::test]
    async fn every_bad_query_is_a_400_with_a_json_error() {
        let over_cap = format!("/users?count={}", MAX_COUNT + 1);
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
            (over_cap.as_str(), "is above the maximum of 10000"),
            ("/users?count=1&count=2", "count is given more than once"),
        ];
        for (uri, expected) in cases {
            let (status, headers, body) = get(test_app(&[]), uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            assert_eq!(headers[header::CONTENT_TYPE], "application/json", "{uri}");
            let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let message = error["error"].as_str().unwrap();
            assert!(message.contains(expected), "{uri}: {message}");
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
