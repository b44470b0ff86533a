//! The gateway as a reverse proxy in front of a real in-process users-service: for users and
//! blob bodies of every tier, and for the upstream's own errors, the answer through the gateway
//! (over shared memory, forced, under `auto`, over REST) equals the upstream's REST answer in
//! status, content type and bytes, with an `x-transport` naming the tier that carried it; the
//! upstream's operational routes stay private; shared memory's unavailability falls back to
//! REST only where allowed; `/via-cached` serves a body from memory the second time.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::get as get_route;
use bytes::Bytes;
use clap::Parser;
use common::{
    error_code, expected_shm_transport, gateway, get, serve_in_background, users_service,
};
use shmbridge_server::payload::{CRC_HEADER, format_crc};
use shmbridge_server::transport_header::TRANSPORT_HEADER;

/// Slots of 1 MiB: 2,000 users (~0.7 MB) fit one, 20,000 (~7 MB) do not.
const SLOT_SIZE: usize = 1 << 20;

/// Upstream paths whose bodies land in each tier, and some of the upstream's own errors.
const PATHS: [&str; 8] = [
    "/users?count=3&seed=7",
    "/users?count=2000&seed=1",
    "/users?count=20000&seed=1",
    "/blobs?size=3000000&pattern=random&seed=9",
    "/blobs?size=10&pattern=text&seed=1",
    "/users?count=abc",
    "/blobs?size=-1",
    "/no/such/route",
];

/// Status, content type and body of the upstream's own REST answer for `path`.
async fn upstream_answer(upstream: &str, path: &str) -> (StatusCode, Option<String>, Bytes) {
    let response = reqwest::get(format!("{upstream}{path}")).await.unwrap();
    let status = response.status();
    let content_type = content_type(response.headers());
    (status, content_type, response.bytes().await.unwrap())
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .map(|value| value.to_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_over_shm_equals_the_upstreams_rest_answer() {
    let slot_size = SLOT_SIZE.to_string();
    let upstream = users_service(&["--slot-size", &slot_size]).await;
    let auto = gateway(&upstream, &[]);
    let forced = gateway(&upstream, &["--transport", "shm"]);
    let rest = gateway(&upstream, &["--transport", "api"]);
    for path in PATHS {
        let (status, expected_type, expected) = upstream_answer(&upstream, path).await;
        assert!(
            path.starts_with("/users?count=abc")
                || path.starts_with("/blobs?size=-1")
                || path.starts_with("/no/")
                || status == StatusCode::OK,
            "{path}: upstream answered {status}"
        );
        let tier = expected_shm_transport(expected.len(), SLOT_SIZE);
        let via_shm = format!("/via-shm{path}");
        let via_api = format!("/via-api{path}");
        for (gateway, uri, transport) in [
            (&auto, via_shm.as_str(), tier),
            (&auto, path, tier),
            (&forced, path, tier),
            (&auto, via_api.as_str(), "api"),
            (&rest, path, "api"),
        ] {
            let (got_status, headers, body) = get(gateway, uri).await;
            assert_eq!(got_status, status, "{uri}");
            assert_eq!(content_type(&headers), expected_type, "{uri}");
            assert!(
                body == expected,
                "{uri}: {} bytes differ from the upstream's {}",
                body.len(),
                expected.len()
            );
            assert_eq!(headers[TRANSPORT_HEADER], transport, "{uri}");
            assert_eq!(
                headers[CRC_HEADER],
                format_crc(crc32fast::hash(&body)),
                "{uri}"
            );
            assert_eq!(
                headers[header::CONTENT_LENGTH],
                body.len().to_string(),
                "{uri}"
            );
        }
    }
    // The tiers this table was written to cover are all met.
    for (path, tier) in [
        (PATHS[0], "shm-inline"),
        (PATHS[1], "shm-slot"),
        (PATHS[2], "shm-sealed"),
        (PATHS[3], "shm-sealed"),
        (PATHS[4], "shm-inline"),
    ] {
        let (_, headers, _) = get(&auto, &format!("/via-shm{path}")).await;
        assert_eq!(headers[TRANSPORT_HEADER], tier, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inline_threshold_is_users_services_to_set() {
    let path = "/blobs?size=4096&pattern=text&seed=2";
    for (threshold, tier) in [
        ("4096", "shm-inline"),
        ("4095", "shm-slot"),
        ("0", "shm-slot"),
    ] {
        let upstream = users_service(&["--inline-threshold", threshold]).await;
        let (_, _, expected) = upstream_answer(&upstream, path).await;
        let (status, headers, body) =
            get(&gateway(&upstream, &[]), &format!("/via-shm{path}")).await;
        assert_eq!(status, StatusCode::OK, "--inline-threshold {threshold}");
        assert_eq!(
            headers[TRANSPORT_HEADER], tier,
            "--inline-threshold {threshold}"
        );
        assert_eq!(body, expected, "--inline-threshold {threshold}");
    }
    let error = shmbridge_server::users_service::Args::try_parse_from([
        "users-service",
        "--inline-threshold",
        "65537",
    ])
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("at most 65536 bytes travel inline"),
        "{error}"
    );
}

#[tokio::test]
async fn the_upstreams_operational_routes_are_the_gateways_own_404() {
    let upstream = users_service(&[]).await;
    let (status, _, _) = upstream_answer(&upstream, "/shm/segment").await;
    assert_eq!(status, StatusCode::OK, "the upstream serves it");
    let auto = gateway(&upstream, &[]);
    for uri in [
        "/shm/segment",
        "/shm/stats",
        "/via-shm/shm/segment",
        "/via-api/shm/segment",
        "/via-cached/shm/segment",
        "/via-shm/readyz",
        "/blobs/../shm/segment",
        "//shm/segment",
    ] {
        let (status, headers, body) = get(&auto, uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(error_code(&body), "not_found", "{uri}");
        assert!(headers.get(TRANSPORT_HEADER).is_none(), "{uri}");
    }
    // The gateway's own operational routes are its own.
    let (status, _, body) = get(&auto, "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    let readiness: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(readiness["shm"], "attached");
    // Forwarding can be narrowed to some paths.
    let narrow = gateway(&upstream, &["--forward-prefix", "/users"]);
    let (status, _, _) = get(&narrow, "/blobs?size=10").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = get(&narrow, "/users?count=1").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn without_shared_memory_auto_falls_back_to_rest_and_the_forced_routes_do_not() {
    let upstream = users_service(&[]).await;
    let socket = format!("shmbridge-test-proxy-nobody-{}", std::process::id());
    let path = "/blobs?size=100000&pattern=zeros&seed=1";
    let (_, _, expected) = upstream_answer(&upstream, path).await;
    let auto = gateway(&upstream, &["--shm-socket", &socket]);
    let (status, headers, body) = get(&auto, path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[TRANSPORT_HEADER], "api-fallback");
    assert!(body == expected);
    for (gateway, uri) in [
        (&auto, format!("/via-shm{path}")),
        (
            &gateway(&upstream, &["--shm-socket", &socket, "--transport", "shm"]),
            path.to_owned(),
        ),
    ] {
        let (status, headers, body) = get(gateway, &uri).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert_eq!(headers["retry-after"], "1", "{uri}");
        assert_eq!(error_code(&body), "shm_unavailable", "{uri}");
    }
}

/// A body larger than users-service publishes through shared memory (`--max-payload`) is
/// refused by the producer before it is made: a 413 naming the limit under `/via-shm`, and a
/// REST answer under `auto`.
#[tokio::test]
async fn a_body_above_the_producers_limit_is_a_413_or_goes_over_rest() {
    let upstream = users_service(&["--slot-size", "65536", "--max-payload", "100000"]).await;
    let auto = gateway(&upstream, &[]);
    let path = "/users?count=1000&seed=2";
    let (status, _, body) = get(&auto, &format!("/via-shm{path}")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&body), "payload_too_large");
    let (_, _, expected) = upstream_answer(&upstream, path).await;
    let (status, headers, body) = get(&auto, path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[TRANSPORT_HEADER], "api-fallback");
    assert!(body == expected);
}

#[tokio::test]
async fn via_cached_serves_the_second_request_from_memory() {
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&asked);
    let fake = Router::new().route(
        "/data",
        get_route(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            async {
                (
                    [(header::CONTENT_TYPE, "application/x-test")],
                    "cached bytes",
                )
            }
        }),
    );
    let upstream = serve_in_background(fake).await;
    let gateway = gateway(&upstream, &["--transport", "api"]);
    let (status, headers, first) = get(&gateway, "/via-cached/data?k=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[TRANSPORT_HEADER], "api",
        "the miss says how it was fetched"
    );
    assert_eq!(asked.load(Ordering::Relaxed), 1);
    for _ in 0..3 {
        let (status, headers, again) = get(&gateway, "/via-cached/data?k=1").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(again, first);
        assert_eq!(headers[TRANSPORT_HEADER], "cached");
        assert_eq!(headers[header::CONTENT_TYPE], "application/x-test");
        assert_eq!(headers[CRC_HEADER], format_crc(crc32fast::hash(&again)));
    }
    assert_eq!(
        asked.load(Ordering::Relaxed),
        1,
        "the upstream was asked once"
    );
    // Another query is another body; an error is passed on and not kept.
    get(&gateway, "/via-cached/data?k=2").await;
    assert_eq!(asked.load(Ordering::Relaxed), 2);
    for _ in 0..2 {
        let (status, headers, _) = get(&gateway, "/via-cached/missing").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(headers[TRANSPORT_HEADER], "api");
    }
}

/// A `HEAD` is forwarded as one: no body, and over REST (which `auto` takes for it) the
/// upstream's length for the body it would have sent.
#[tokio::test]
async fn a_head_request_is_answered_as_the_upstream_answers_it() {
    let upstream = users_service(&[]).await;
    let path = "/users?count=3&seed=7";
    let direct = reqwest::Client::new()
        .head(format!("{upstream}{path}"))
        .send()
        .await
        .unwrap();
    let expected_length = direct.headers()[header::CONTENT_LENGTH].clone();
    let auto = gateway(&upstream, &[]);
    for (uri, transport) in [
        (path.to_owned(), Some("api")),
        (format!("/via-api{path}"), Some("api")),
        (format!("/via-shm{path}"), None),
    ] {
        let request = axum::http::Request::head(&uri)
            .body(axum::body::Body::empty())
            .unwrap();
        let response = tower::ServiceExt::oneshot(auto.clone(), request)
            .await
            .unwrap();
        assert_eq!(response.status(), direct.status(), "{uri}");
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        assert!(body.is_empty(), "{uri}");
        // Over the channel the length is the producer's to say; users-service's head does not.
        if let Some(transport) = transport {
            assert_eq!(headers[TRANSPORT_HEADER], transport, "{uri}");
            assert_eq!(headers[header::CONTENT_LENGTH], expected_length, "{uri}");
        }
    }
}
