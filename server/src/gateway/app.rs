//! The gateway, the front: a reverse proxy in front of users-service. Every path that is not the
//! gateway's own is forwarded to the upstream's same path and query, over shared memory (the
//! control channel carries the request; the producer answers in the tier it picks: inline,
//! slot, sealed memfd) or REST, by `--transport` ([`proxy_routes`](super::proxy_routes));
//! `/via-api/*`, `/via-shm/*` and `/via-cached/*` force one way, to measure it. The seed's users
//! routes keep their meaning ([`users_routes`](super::users_routes)). `run` is callable from
//! other crates.
//!
//! What clients see of the gateway's own failures is a status, a stable code and a fixed
//! message (`ApiError`); an upstream's answer, errors included, is passed on as it came (status,
//! content type, end-to-end headers, bytes). `/readyz` says only `ready` and one word per
//! dependency. The detail (users-service's error text, socket names, epochs, errno, error
//! chains) goes to the log and to `GET /status` on the operators' listener, `--admin-listen`,
//! which is off unless given and meant for loopback.
//!
//! Execution policy for CPU-heavy work: generating and serializing a body (the cached users
//! route's miss, up to ~3.7 MB, milliseconds) runs on tokio's blocking pool, never on an async
//! worker; so does verifying a sealed payload (above a slot: a crc32 over megabytes). What the
//! transports do per request below that is verification of bytes already in memory — the crc32
//! of a REST body chunk by chunk as it arrives, of an inline body, of a slot's copy — bounded by
//! the slot size and `MAX_UPSTREAM_BODY_BYTES`, and runs inline on both alike, so the comparison
//! measures the transports, not the scheduling. A cache hit is a reference-count increment,
//! served inline.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

use crate::api_error::ApiError;
use crate::failpoints;
use crate::serve::{ShutdownSignal, StartupLine, announce, bind, serve_until_signal};
use crate::telemetry;

use super::args::Args;
use super::proxy_routes::{self, VIA_API, VIA_CACHED, VIA_PUBLISHED, VIA_SHM};
use super::shm_consumer::AttachedTo;
use super::state::{AppState, Shared};
use super::users_routes;

/// The gateway routes, ready for `oneshot` in tests or for serving.
pub fn app(state: AppState) -> Router {
    let mut routes = Router::new()
        .route("/api/users", get(users_routes::users))
        .route("/api/users-via-api", get(users_routes::users_via_api))
        .route("/api/users-via-shm", get(users_routes::users_via_shm))
        .route(
            "/api/users-via-shm-http",
            get(users_routes::users_via_shm_http),
        )
        .route("/api/users-cached", get(users_routes::users_cached))
        .route("/api/users-published", get(users_routes::users_published))
        .route("/readyz", get(readyz));
    // Each measuring prefix alone, with a slash, and with the upstream path after it.
    for prefix in [VIA_API, VIA_SHM, VIA_CACHED, VIA_PUBLISHED] {
        let handler = match prefix {
            VIA_API => any(proxy_routes::via_api),
            VIA_SHM => any(proxy_routes::via_shm),
            VIA_PUBLISHED => get(proxy_routes::via_published),
            _ => get(proxy_routes::via_cached),
        };
        routes = routes
            .route(prefix, handler.clone())
            .route(&format!("{prefix}/"), handler.clone())
            .route(&format!("{prefix}/{{*path}}"), handler);
    }
    // Every other path: a route rather than only the router's fallback, so that forwarded
    // requests are counted under a route template of their own in `http_requests_total`.
    let routes = routes
        .route("/", any(proxy_routes::forward))
        .route("/{*path}", any(proxy_routes::forward))
        .fallback(proxy_routes::forward);
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
    announce(StartupLine::Public, bound)?;
    if let Some((admin_listener, admin_bound)) = admin {
        announce(StartupLine::Admin, admin_bound)?;
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
    tracing::info!(%bound, upstream = %args.upstream, deadline = ?args.deadline, transport = ?args.transport, "gateway listening");
    serve_until_signal(listener, app(state), shutdown, &args.common).await
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
    use std::time::Duration;

    use crate::dataset::{MAX_COUNT, users_json};
    use crate::payload::{CRC_HEADER, format_crc};
    use crate::transport_header::TRANSPORT_HEADER;
    use axum::body::Body;
    use axum::http::{Request, header};
    use clap::Parser;
    use tower::ServiceExt;

    use super::super::forward_policy::parse_path_prefix;
    use super::super::forward_request::MAX_REQUEST_BODY_BYTES;

    /// A gateway whose upstream is a port nothing listens on (bound, then released), with
    /// `extra` flags.
    async fn gateway_without_upstream_with(extra: &[&str]) -> Router {
        let vacant = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = format!("http://{}", vacant.local_addr().unwrap());
        drop(vacant);
        let defaults = ["gateway", "--upstream", &upstream, "--deadline", "1s"];
        let args = Args::try_parse_from(defaults.iter().chain(extra)).unwrap();
        app(AppState::new(&args).unwrap())
    }

    async fn gateway_without_upstream() -> Router {
        gateway_without_upstream_with(&[]).await
    }

    fn error_code(body: &[u8]) -> String {
        let error: serde_json::Value = serde_json::from_slice(body).unwrap();
        error["code"].as_str().unwrap().to_owned()
    }

    async fn get(app: Router, uri: &str) -> (StatusCode, axum::http::HeaderMap, bytes::Bytes) {
        crate::testing::respond(app, Request::get(uri).body(Body::empty()).unwrap()).await
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

    /// Private and not-allowed paths are the gateway's own 404 under every prefix: nothing is
    /// asked of the upstream (which does not exist here, so asking would be a 503).
    #[tokio::test]
    async fn private_and_unlisted_paths_are_the_gateways_404() {
        let gateway = gateway_without_upstream().await;
        for uri in [
            "/shm/segment",
            "/shm/users?count=3",
            "/via-shm/shm/segment",
            "/via-api/readyz",
            "/via-cached/metrics",
            "/via-shm/healthz",
            "/users/../shm/segment",
            "/%73hm/segment",
        ] {
            let (status, headers, body) = get(gateway.clone(), uri).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
            assert_eq!(error_code(&body), "not_found", "{uri}");
            assert!(headers.get(TRANSPORT_HEADER).is_none(), "{uri}");
        }
        let only_users = gateway_without_upstream_with(&["--forward-prefix", "/users"]).await;
        let (status, _, _) = get(only_users.clone(), "/blobs?size=1").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // Allowed, so asked: the missing upstream answers for it.
        let (status, _, _) = get(only_users, "/via-api/users").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn request_bodies_above_the_bounds_are_413s_before_the_upstream_is_asked() {
        let gateway = gateway_without_upstream().await;
        let over_rest = vec![b'x'; MAX_REQUEST_BODY_BYTES + 1];
        let over_channel = vec![b'x'; shmbridge::control::frame::MAX_REQUEST_LEN + 1];
        for (uri, body) in [
            ("/echo", over_rest.clone()),
            ("/via-api/echo", over_rest),
            ("/via-shm/echo", over_channel),
        ] {
            let request = Request::post(uri).body(Body::from(body)).unwrap();
            let response = gateway.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "{uri}");
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            assert_eq!(error_code(&body), "request_too_large", "{uri}");
        }
    }

    #[test]
    fn prefix_flags_repeat_and_replace_their_defaults() {
        let args = Args::try_parse_from(["gateway"]).unwrap();
        assert_eq!(args.forward_prefixes, [parse_path_prefix("/").unwrap()]);
        assert_eq!(args.private_prefixes.len(), 4);
        let args = Args::try_parse_from([
            "gateway",
            "--forward-prefix",
            "/users",
            "--forward-prefix",
            "/blobs,/other",
            "--private-prefix",
            "/shm/",
        ])
        .unwrap();
        let texts: Vec<String> = args
            .forward_prefixes
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(texts, ["/users", "/blobs", "/other"]);
        assert_eq!(args.private_prefixes, [parse_path_prefix("/shm/").unwrap()]);
        let error = Args::try_parse_from(["gateway", "--forward-prefix", "users"])
            .expect_err("a relative prefix is refused")
            .to_string();
        assert!(error.contains("--forward-prefix"), "{error}");
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
