//! The gateway against fake users-services that misbehave: every failure is a bounded, clean
//! HTTP error (502 for a bad answer, 503 + Retry-After for slow or absent) with a stable code
//! and none of users-service's own words, never a 200 with bytes that differ from what was
//! published.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get as get_route, post};
use axum::{Json, Router};
use clap::Parser;
use common::{
    assert_no_leak, error_code, error_message, gateway, gateway_with_admin, get,
    serve_in_background, users_service,
};
use shmbridge::Handle;
use shmbridge::control::{HandlerError, ResponseWriter};
use shmbridge_server::payload::{Payload, format_crc};
use shmbridge_server::query::UsersQuery;
use shmbridge_server::users_service::shm_producer::{ShmArgs, ShmProducer};

fn users_reply(
    headers: &[(&'static str, &'static str)],
    body: &'static str,
) -> (HeaderMap, &'static str) {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(*name, value.parse().unwrap());
    }
    (map, body)
}

#[tokio::test]
async fn body_that_disagrees_with_its_crc_is_a_502() {
    let fake = Router::new().route(
        "/users",
        get_route(|| async { users_reply(&[("x-payload-crc32", "00000000")], "[]") }),
    );
    let gateway = gateway(&serve_in_background(fake).await, &[]);
    let (status, _, body) = get(&gateway, "/api/users-via-api").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(error_message(&body), "users-service sent an invalid answer");
    assert_eq!(error_code(&body), "upstream_invalid");
}

/// users-service's own error text (here a segment path and an errno) is never forwarded: the
/// client gets the gateway's status, code and fixed message, the detail goes to the log.
#[tokio::test]
async fn upstream_error_text_never_reaches_the_client() {
    const DETAIL: &str = "cannot create the shared-memory segment at /dev/shm/secret: \
                          No space left on device (os error 28)";
    let fake = Router::new()
        .route(
            "/users",
            get_route(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(serde_json::json!({ "error": DETAIL, "code": "overloaded" })),
                )
            }),
        )
        .route(
            "/shm/segment",
            get_route(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(serde_json::json!({ "error": DETAIL, "code": "segment_unavailable" })),
                )
            }),
        );
    let gateway = gateway(&serve_in_background(fake).await, &[]);
    for (route, code) in [
        ("/api/users-via-api", "upstream_busy"),
        ("/api/users-via-shm", "shm_unavailable"),
        ("/readyz", ""),
    ] {
        let (status, _, body) = get(&gateway, route).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{route}");
        if !code.is_empty() {
            assert_eq!(error_code(&body), code, "{route}");
        }
        assert_no_leak(&body, &["/dev/shm", "os error", "No space left"]);
    }
}

#[tokio::test]
async fn body_without_a_crc_header_is_a_502() {
    let fake = Router::new().route("/users", get_route(|| async { "[]" }));
    let gateway = gateway(&serve_in_background(fake).await, &[]);
    let (status, _, _) = get(&gateway, "/api/users-via-api").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn upstream_server_error_is_a_502() {
    let fake = Router::new().route(
        "/users",
        get_route(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
    );
    let gateway = gateway(&serve_in_background(fake).await, &[]);
    let (status, _, _) = get(&gateway, "/api/users-via-api").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
}

/// A fake users-service with a real segment whose `POST /shm/users` (the HTTP-signalled path)
/// publishes the true
/// payload but answers with `tamper(handle)` instead of the handle itself. Returns its URL and
/// its descriptor socket name.
async fn shm_upstream_answering(
    tamper: fn(Handle, &Mutex<Option<Handle>>) -> Handle,
) -> (String, String) {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        shm: ShmArgs,
    }
    let cli = Cli::try_parse_from(["fake", "--slot-count", "4"]).unwrap();
    let producer = Arc::new(ShmProducer::start(&cli.shm, Arc::new(no_channel_routes)).unwrap());
    let info = producer.info().clone();
    let socket = info.socket.clone();
    let first = Arc::new(Mutex::new(None));
    let publish = move || {
        let producer = Arc::clone(&producer);
        let first = Arc::clone(&first);
        async move {
            let payload = Payload::generate(UsersQuery::default());
            let handle = tamper(producer.publish_for_http(&payload.bytes).unwrap(), &first);
            let mut headers = HeaderMap::new();
            headers.insert("x-payload-crc32", format_crc(handle.crc).parse().unwrap());
            (headers, handle.to_string())
        }
    };
    let fake = Router::new()
        .route("/shm/users", post(publish))
        .route("/shm/segment", get_route(move || async move { Json(info) }))
        .route("/users", get_route(|| async { StatusCode::NOT_FOUND }));
    (serve_in_background(fake).await, socket)
}

/// The fake's control channel serves nothing: these tests ask over HTTP.
fn no_channel_routes(_: &[u8], _: &mut ResponseWriter<'_>) -> Result<(), HandlerError> {
    Err("this fake answers over HTTP only".into())
}

#[tokio::test]
async fn handle_with_a_wrong_crc_is_a_502_after_one_retry() {
    let (upstream, _) = shm_upstream_answering(|handle, _| Handle {
        crc: handle.crc ^ 1,
        ..handle
    })
    .await;
    let gateway = gateway(&upstream, &["--http-signal"]);
    let (status, _, body) = get(&gateway, "/api/users-via-shm-http").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        error_message(&body),
        "shared-memory payload failed verification"
    );
    assert_eq!(error_code(&body), "shm_corrupt");
    let (_, _, metrics) = get(&gateway, "/metrics").await;
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    assert!(
        metrics.contains(r#"checksum_failures_total{transport="shm"}"#),
        "{metrics}"
    );
    assert!(metrics.contains("shm_retries_total"), "{metrics}");
}

#[tokio::test]
async fn handle_redeemed_before_is_stale_and_a_503() {
    // Always answers with the first handle it published: redeemable once, stale after.
    let (upstream, _) =
        shm_upstream_answering(|handle, first| *first.lock().unwrap().get_or_insert(handle)).await;
    let gateway = gateway(&upstream, &["--http-signal"]);
    let (status, _, _) = get(&gateway, "/api/users-via-shm-http").await;
    assert_eq!(status, StatusCode::OK);
    let (status, headers, body) = get(&gateway, "/api/users-via-shm-http").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(error_message(&body), "shared-memory handle is stale");
    assert_eq!(error_code(&body), "shm_stale");
}

#[tokio::test]
async fn unparsable_handle_is_a_502() {
    // Attach through an honest fake's segment, then ask a garbage fake for handles.
    let (_honest, socket) = shm_upstream_answering(|handle, _| handle).await;
    let garbage = Router::new().route(
        "/shm/users",
        post(|| async { users_reply(&[("x-payload-crc32", "00000000")], "not-a-handle") }),
    );
    let gateway = gateway(
        &serve_in_background(garbage).await,
        &["--shm-socket", &socket, "--http-signal"],
    );
    let (status, _, body) = get(&gateway, "/api/users-via-shm-http").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(error_message(&body), "users-service sent an invalid answer");
}

#[tokio::test]
async fn slow_upstream_is_a_503_within_the_deadline() {
    let fake = Router::new().route(
        "/users",
        get_route(|| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            "[]"
        }),
    );
    let gateway = gateway(&serve_in_background(fake).await, &["--deadline", "300ms"]);
    let started = Instant::now();
    let (status, headers, body) = get(&gateway, "/api/users-via-api").await;
    let elapsed = started.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(error_message(&body), "users-service did not answer in time");
    assert_eq!(error_code(&body), "upstream_timeout");
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}

/// The layout version no build of this crate speaks: the next one.
const WRONG_VERSION: u32 = shmbridge::layout::LAYOUT_VERSION + 1;

#[tokio::test]
async fn segment_of_another_layout_version_is_refused_and_reported() {
    let socket = format!("shmbridge-test-wrong-version-{}", std::process::id());
    shmbridge_system_tests::fake_producer::serve_layout_version(&socket, WRONG_VERSION, 3);
    let upstream = users_service(&[]).await;
    let (gateway, admin) = gateway_with_admin(&upstream, &["--shm-socket", &socket]);

    let (status, _, body) = get(&gateway, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let readiness: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(readiness["shm"], "unavailable");
    assert_eq!(readiness["upstream"], "reachable");
    assert_no_leak(&body, &["layout version", &socket]);

    let (status, _, body) = get(&gateway, "/api/users-via-shm").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_message(&body), "shared memory is unavailable");
    assert_eq!(error_code(&body), "shm_unavailable");
    assert_no_leak(&body, &["layout version", &socket]);

    // The reason is the operators' to read.
    let (status, _, body) = get(&admin, "/status").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let detail: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let problem = detail["shm"]["problem"].as_str().unwrap();
    let expected = format!(
        "layout version {WRONG_VERSION}, expected {}",
        shmbridge::layout::LAYOUT_VERSION
    );
    assert!(problem.contains(&expected), "{problem}");
    assert_eq!(detail["upstream"]["reachable"], true);
}
