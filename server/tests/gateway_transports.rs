//! The gateway's seed routes against a real in-process users-service: both transports return
//! the same verified bytes, the tier named by `x-transport` fits the body's size, shm failures
//! surface (or fall back only when asked), metrics move.

mod common;

use axum::http::StatusCode;
use common::{
    DEFAULT_SLOT_SIZE, assert_no_leak, error_code, error_message, expected_shm_transport, gateway,
    gateway_with_admin, get, users_service,
};
use shmbridge_server::blobs::{BlobQuery, blob_bytes};
use shmbridge_server::dataset::{DEFAULT_COUNT, DEFAULT_SEED, users_json};
use shmbridge_server::payload::{CRC_HEADER, format_crc};
use shmbridge_server::transport_header::TRANSPORT_HEADER;

#[tokio::test]
async fn both_transports_return_identical_verified_bodies() {
    let upstream = users_service(&[]).await;
    let gateway = gateway(&upstream, &[]);
    let queries = [
        (DEFAULT_COUNT, DEFAULT_SEED),
        (0, 1),
        (1, 2),
        (250, 99),
        (1200, u64::MAX),
    ];
    for (count, seed) in queries {
        let expected = users_json(count, seed);
        let shm = expected_shm_transport(expected.len(), DEFAULT_SLOT_SIZE);
        for (route, transport) in [("/api/users-via-api", "api"), ("/api/users-via-shm", shm)] {
            let uri = format!("{route}?count={count}&seed={seed}");
            let (status, headers, body) = get(&gateway, &uri).await;
            assert_eq!(status, StatusCode::OK, "{uri}");
            assert!(body == expected, "{uri}: body differs from the dataset");
            assert_eq!(
                headers[CRC_HEADER],
                format_crc(crc32fast::hash(&body)),
                "{uri}"
            );
            assert_eq!(headers[TRANSPORT_HEADER], transport, "{uri}");
            assert_eq!(headers["content-length"], body.len().to_string(), "{uri}");
        }
    }
    let (status, _, body) = get(&gateway, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let readiness: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        readiness,
        serde_json::json!({ "ready": true, "upstream": "reachable", "shm": "attached" })
    );
}

#[tokio::test]
async fn default_body_has_the_seed_report_size_on_both_routes() {
    let upstream = users_service(&[]).await;
    let gateway = gateway(&upstream, &[]);
    for route in [
        "/api/users-via-api",
        "/api/users-via-shm",
        "/api/users-cached",
    ] {
        let (status, _, body) = get(&gateway, route).await;
        assert_eq!(status, StatusCode::OK, "{route}");
        assert_eq!(body.len(), 256_873, "{route}");
    }
}

/// Bodies made per request travel in the tier their size calls for; under `--cache` every kept
/// body above the inline threshold travels as its kept sealed memfd, a slot's size or not.
#[tokio::test]
async fn bodies_above_a_slot_and_kept_bodies_travel_sealed_and_arrive_exact() {
    for cache in [&[][..], &["--cache"][..]] {
        let upstream = users_service(&[&["--slot-size", "65536"][..], cache].concat()).await;
        let gateway = gateway(&upstream, &[]);
        // 1,000 users are made whole and then found too large for a slot; 12,000 are written
        // straight into the payload as they are generated. 3 users travel inline.
        for count in [3, 150, 1_000, 12_000] {
            let uri = format!("/api/users-via-shm?count={count}&seed=8");
            for _ in 0..2 {
                let (status, headers, body) = get(&gateway, &uri).await;
                assert_eq!(status, StatusCode::OK, "{uri} {cache:?}");
                let tier = match expected_shm_transport(body.len(), 65_536) {
                    "shm-slot" if !cache.is_empty() => "shm-sealed",
                    tier => tier,
                };
                assert_eq!(headers[TRANSPORT_HEADER], tier, "{uri} {cache:?}");
                assert!(
                    body == users_json(count, 8),
                    "{uri} {cache:?}: body differs"
                );
                assert_eq!(headers[CRC_HEADER], format_crc(crc32fast::hash(&body)));
            }
        }
    }
}

#[tokio::test]
async fn a_body_above_the_shared_memory_limit_is_a_413_naming_it() {
    let upstream = users_service(&["--slot-size", "65536", "--max-payload", "100000"]).await;
    let gateway = gateway(&upstream, &[]);
    for count in [1_000, 12_000] {
        let (status, _, body) = get(&gateway, &format!("/api/users-via-shm?count={count}")).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{count}");
        assert_eq!(error_code(&body), "payload_too_large");
        assert_eq!(
            error_message(&body),
            "payload is larger than the shared-memory limit of 100000 bytes"
        );
    }
    let (status, _, body) = get(&gateway, "/api/users-via-api?count=1000").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == users_json(1_000, DEFAULT_SEED));
    // auto serves it over REST instead.
    let (status, headers, _) = get(&gateway, "/api/users?count=1000").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[TRANSPORT_HEADER], "api-fallback");
}

#[tokio::test]
async fn the_http_signal_carries_no_descriptor_so_above_a_slot_it_is_a_507() {
    let upstream = users_service(&["--slot-size", "65536", "--http-signal"]).await;
    let gateway = gateway(&upstream, &["--http-signal"]);
    let (status, _, body) = get(&gateway, "/api/users-via-shm-http?count=1000").await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(error_code(&body), "too_large_for_slot");
    assert_eq!(
        error_message(&body),
        "payload is larger than a shared-memory slot"
    );
    let (status, _, _) = get(&gateway, "/api/users-via-shm-http?count=100").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn unattachable_segment_is_a_503_unless_fallback_is_on() {
    let upstream = users_service(&[]).await;
    let socket = format!("shmbridge-test-nobody-{}", std::process::id());

    let (strict, admin) = gateway_with_admin(&upstream, &["--shm-socket", &socket]);
    let (status, headers, body) = get(&strict, "/api/users-via-shm").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(error_message(&body), "shared memory is unavailable");
    assert_eq!(error_code(&body), "shm_unavailable");
    assert_no_leak(&body, &[&socket, "os error", "Connection refused"]);
    let (status, _, body) = get(&strict, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let readiness: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(readiness["shm"], "unavailable", "{readiness}");
    assert_no_leak(&body, &[&socket]);
    // The socket and the error are for operators.
    let (status, _, body) = get(&admin, "/status").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let detail: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let problem = detail["shm"]["problem"].as_str().unwrap();
    assert!(problem.contains(&socket), "{detail}");

    let lenient = gateway(
        &upstream,
        &["--shm-socket", &socket, "--shm-fallback-to-api"],
    );
    let (status, headers, body) = get(&lenient, "/api/users-via-shm?count=5&seed=6").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[TRANSPORT_HEADER], "api-fallback");
    assert_eq!(body, users_json(5, 6));
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let upstream = users_service(&[]).await;
    let gateway = gateway(&upstream, &[]);
    get(&gateway, "/api/users-via-shm?count=3").await;
    get(&gateway, "/api/users-via-api?count=oops").await;
    let (status, headers, body) = get(&gateway, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        text.contains(r#"http_requests_total{route="/api/users-via-shm",status="200"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"http_requests_total{route="/api/users-via-api",status="400"}"#),
        "{text}"
    );
    assert!(
        text.contains("http_request_duration_seconds_bucket"),
        "{text}"
    );
}

/// Under `auto` every body is asked for over shared memory, whatever its size: the producer
/// picks the tier (inline, slot) from the body it makes.
#[tokio::test]
async fn auto_asks_shared_memory_falls_back_to_rest_and_counts_its_choices() {
    let upstream = users_service(&[]).await;
    let auto = gateway(&upstream, &[]);
    for count in [1, 100, DEFAULT_COUNT] {
        let uri = format!("/api/users?count={count}&seed=4");
        let (status, headers, body) = get(&auto, &uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        let expected = users_json(count, 4);
        let tier = expected_shm_transport(expected.len(), DEFAULT_SLOT_SIZE);
        assert_eq!(headers[TRANSPORT_HEADER], tier, "{uri}");
        assert!(body == expected, "{uri}: body differs");
    }

    // The recorder is shared by every gateway in this test binary, and tests run at once, so
    // counts are compared before and after, and may have grown by more than this request.
    let socket = format!("shmbridge-test-auto-nobody-{}", std::process::id());
    let cut_off = gateway_with_admin(&upstream, &["--shm-socket", &socket]).0;
    let chosen = r#"transport_choices_total{choice="shm",reason="auto"}"#;
    let fell_back = r#"shm_fallbacks_total{code="shm_unavailable"}"#;
    let before = get(&cut_off, "/metrics").await.2;
    let (status, headers, body) = get(&cut_off, "/api/users?count=300&seed=5").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[TRANSPORT_HEADER], "api-fallback");
    assert!(body == users_json(300, 5));
    let after = get(&cut_off, "/metrics").await.2;
    for series in [chosen, fell_back] {
        assert!(
            counter(&after, series) > counter(&before, series),
            "{series} did not grow"
        );
    }

    let forced = gateway_with_admin(&upstream, &["--shm-socket", &socket, "--transport", "shm"]).0;
    let (status, _, body) = get(&forced, "/api/users?count=300").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&body), "shm_unavailable");
    let rest = gateway(&upstream, &["--transport", "api"]);
    let (status, headers, _) = get(&rest, "/api/users?count=5000").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[TRANSPORT_HEADER], "api");
}

/// The value of one counter series in a Prometheus text exposition; 0 when absent.
fn counter(exposition: &[u8], series: &str) -> u64 {
    let text = std::str::from_utf8(exposition).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Under `--cache` a blob is kept: REST serves it from a mapping of its sealed payload, the
/// channel hands that payload over (inline when small), and both give the bytes the blob's
/// query names, again and again.
#[tokio::test]
async fn kept_blobs_arrive_exact_over_both_paths_and_travel_sealed_above_inline() {
    let upstream = users_service(&["--slot-size", "65536", "--cache"]).await;
    let gateway = gateway(&upstream, &[]);
    for size in [0, 100, 5_000, 70_000] {
        let target = format!("/blobs?size={size}&pattern=random&seed=5");
        let query = BlobQuery::parse(target.split_once('?').map(|(_, q)| q), u64::MAX).unwrap();
        let expected = blob_bytes(&query);
        let shm_tier = if size <= shmbridge::control::DEFAULT_INLINE_THRESHOLD {
            "shm-inline"
        } else {
            "shm-sealed"
        };
        for (prefix, tier) in [("/via-api", "api"), ("/via-shm", shm_tier)] {
            for _ in 0..2 {
                let uri = format!("{prefix}{target}");
                let (status, headers, body) = get(&gateway, &uri).await;
                assert_eq!(status, StatusCode::OK, "{uri}");
                assert_eq!(headers[TRANSPORT_HEADER], tier, "{uri}");
                assert!(body == expected, "{uri}: body differs");
                assert_eq!(headers[CRC_HEADER], format_crc(crc32fast::hash(&expected)));
                assert_eq!(headers["content-type"], "application/octet-stream", "{uri}");
            }
        }
    }
}
