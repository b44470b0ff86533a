//! `GET /blobs` over real HTTP: users-service served on an ephemeral loopback port, asked with
//! an HTTP client. Each pattern arrives as exactly the bytes `blobs::blob_bytes` gives, with
//! its content type, content-length and `x-payload-crc32`; a size above `--max-payload` is a
//! 413 and every other bad query a 400, both with the JSON error body.

mod common;

use axum::http::StatusCode;
use shmbridge_server::blobs::{self, BlobPattern, BlobQuery};
use shmbridge_server::payload::{CRC_HEADER, format_crc};
use shmbridge_server::transport_header::TRANSPORT_HEADER;

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Status, the named headers (empty when absent) and the body of `GET {base}{path}`.
async fn get(base: &str, path: &str) -> (StatusCode, Headers, bytes::Bytes) {
    let response = client().get(format!("{base}{path}")).send().await.unwrap();
    let status = response.status();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let headers = Headers {
        content_type: header("content-type"),
        content_length: header("content-length"),
        crc32: header(CRC_HEADER),
        transport: header(TRANSPORT_HEADER),
    };
    (status, headers, response.bytes().await.unwrap())
}

#[derive(Debug)]
struct Headers {
    content_type: String,
    content_length: String,
    crc32: String,
    transport: String,
}

#[tokio::test]
async fn every_pattern_arrives_as_its_exact_bytes_with_its_headers() {
    let base = common::users_service(&[]).await;
    for pattern in BlobPattern::ALL {
        // Empty, one byte, one chunk and one more, and several chunks with a short last one.
        for size in [0, 1, 65_537, 1_000_003] {
            let query = BlobQuery {
                size,
                pattern,
                seed: 12,
            };
            let path = format!("/blobs?{}", query.to_query_string());
            let (status, headers, body) = get(&base, &path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            let expected = blobs::blob_bytes(&query);
            assert!(body == expected, "{path}: the body differs");
            assert_eq!(headers.content_type, blobs::content_type(pattern), "{path}");
            assert_eq!(headers.content_length, size.to_string(), "{path}");
            assert_eq!(
                headers.crc32,
                format_crc(crc32fast::hash(&expected)),
                "{path}"
            );
            assert_eq!(headers.transport, "api", "{path}");
        }
    }
}

#[tokio::test]
async fn pattern_and_seed_default_to_random_and_0() {
    let base = common::users_service(&[]).await;
    let (status, headers, body) = get(&base, "/blobs?size=1000").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers.content_type, "application/octet-stream");
    let expected = BlobQuery {
        size: 1000,
        pattern: BlobPattern::Random,
        seed: 0,
    };
    assert_eq!(body, blobs::blob_bytes(&expected));
}

/// The limit is `--max-payload`: a blob of exactly that size is served, one byte more is a
/// 413 naming the limit, before anything is generated.
#[tokio::test]
async fn a_size_above_max_payload_is_a_413() {
    let base = common::users_service(&["--max-payload", "100000"]).await;
    let (status, headers, body) = get(&base, "/blobs?size=100000&pattern=text").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers.content_length, "100000");
    assert_eq!(body.len(), 100_000);
    for path in [
        "/blobs?size=100001",
        "/blobs?size=99999999999999999999999&pattern=zeros",
    ] {
        let (status, headers, body) = get(&base, path).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        assert_eq!(headers.content_type, "application/json");
        assert_eq!(common::error_code(&body), "payload_too_large");
        let message = common::error_message(&body);
        assert!(
            message.contains("is above the payload limit of 100000 bytes"),
            "{message}"
        );
    }
    // The default limit is 64 MiB.
    let base = common::users_service(&[]).await;
    let (status, _, _) = get(&base, &format!("/blobs?size={}", (64 << 20) + 1)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn every_bad_query_is_a_400_with_a_json_error() {
    let base = common::users_service(&[]).await;
    let cases = [
        ("/blobs", "query parameter size is required"),
        ("/blobs?pattern=zeros", "query parameter size is required"),
        ("/blobs?size=abc", "size must be a non-negative integer"),
        ("/blobs?size=-1", "size must be a non-negative integer"),
        (
            "/blobs?size=1&seed=x",
            "seed must be a non-negative integer",
        ),
        ("/blobs?size=1&pattern=ones", "unknown pattern \"ones\""),
        ("/blobs?size=1&count=2", "unknown query parameter \"count\""),
        ("/blobs?size=1&size=1", "size is given more than once"),
        (
            "/blobs?size=1&pattern=text&pattern=zeros",
            "pattern is given more than once",
        ),
    ];
    for (path, expected) in cases {
        let (status, headers, body) = get(&base, path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(headers.content_type, "application/json", "{path}");
        assert_eq!(common::error_code(&body), "bad_query", "{path}");
        let message = common::error_message(&body);
        assert!(message.contains(expected), "{path}: {message}");
    }
}
