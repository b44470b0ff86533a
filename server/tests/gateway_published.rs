//! Published objects through the gateway against a real in-process users-service: under
//! `--cache` a kept body's answer names an object version, and the gateway then serves it with
//! no message to users-service (`x-transport: shm-published`) until users-service invalidates
//! its target; `/via-shm/` always asks, and nothing is published without `--cache`.

mod common;

use axum::http::StatusCode;
use common::{gateway, get, users_service};
use shmbridge_server::blobs::{BlobQuery, blob_bytes};
use shmbridge_server::transport_header::TRANSPORT_HEADER;

/// `/blobs` target of `size` random bytes, and the bytes it names.
fn blob(size: u64) -> (String, Vec<u8>) {
    let target = format!("/blobs?size={size}&pattern=random&seed=3");
    let query = BlobQuery::parse(target.split_once('?').map(|(_, q)| q), u64::MAX).unwrap();
    (target, blob_bytes(&query))
}

/// Asks users-service at `upstream` to invalidate `target`.
async fn invalidate(upstream: &str, target: &str) {
    let encoded: String = form_urlencoded::byte_serialize(target.as_bytes()).collect();
    let response = reqwest::Client::new()
        .post(format!("{upstream}/shm/invalidate?target={encoded}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_kept_body_is_served_without_asking_until_its_target_is_invalidated() {
    let upstream = users_service(&["--slot-size", "65536", "--cache"]).await;
    let gateway = gateway(&upstream, &[]);
    for (size, asked) in [(100, "shm-inline"), (70_000, "shm-sealed")] {
        let (target, expected) = blob(size);
        let uri = format!("/via-published{target}");
        let mut seen = Vec::new();
        for step in 0..5 {
            if step == 2 {
                invalidate(&upstream, &target).await;
            }
            let (status, headers, body) = get(&gateway, &uri).await;
            assert_eq!(status, StatusCode::OK, "{uri}");
            assert!(body == expected, "{uri}: body differs");
            seen.push(headers[TRANSPORT_HEADER].to_str().unwrap().to_owned());
        }
        // Asked, then kept; asked again after the invalidation, then kept again.
        let published = "shm-published".to_owned();
        assert_eq!(
            seen,
            [
                asked.to_owned(),
                published.clone(),
                asked.to_owned(),
                published.clone(),
                published
            ],
            "{uri}"
        );
    }
}

#[tokio::test]
async fn via_shm_always_asks_and_nothing_is_published_without_cache() {
    let cached = users_service(&["--slot-size", "65536", "--cache"]).await;
    let uncached = users_service(&["--slot-size", "65536"]).await;
    let (target, expected) = blob(5_000);
    for (upstream, prefix) in [(&cached, "/via-shm"), (&uncached, "/via-published")] {
        let gateway = gateway(upstream, &[]);
        let uri = format!("{prefix}{target}");
        for _ in 0..3 {
            let (status, headers, body) = get(&gateway, &uri).await;
            assert_eq!(status, StatusCode::OK, "{uri}");
            assert!(body == expected, "{uri}: body differs");
            assert_ne!(headers[TRANSPORT_HEADER], "shm-published", "{uri}");
        }
    }
}

#[tokio::test]
async fn a_forwarded_get_over_shared_memory_is_served_from_its_published_object() {
    let upstream = users_service(&["--slot-size", "65536", "--cache"]).await;
    let (target, expected) = blob(5_000);
    for (transport, second) in [
        ("shm", "shm-published"),
        ("auto", "shm-published"),
        ("api", "api"),
    ] {
        let gateway = gateway(&upstream, &["--transport", transport]);
        get(&gateway, &target).await;
        let (status, headers, body) = get(&gateway, &target).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body == expected);
        assert_eq!(headers[TRANSPORT_HEADER], second, "--transport {transport}");
    }
}

#[tokio::test]
async fn the_seed_style_users_route_serves_published_bodies_and_refuses_a_bad_query() {
    let upstream = users_service(&["--cache"]).await;
    let gateway = gateway(&upstream, &[]);
    let expected = shmbridge_server::dataset::users_json(708, 28);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (status, headers, body) = get(&gateway, "/api/users-published?count=708&seed=28").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body == expected, "body differs from the dataset");
        seen.push(headers[TRANSPORT_HEADER].to_str().unwrap().to_owned());
    }
    assert_eq!(seen, ["shm-sealed", "shm-published", "shm-published"]);
    let (status, _, _) = get(&gateway, "/api/users-published?count=nope").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
