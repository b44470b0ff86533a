use super::*;
use crate::dataset::{DEFAULT_COUNT, DEFAULT_SEED, MAX_COUNT, users_json};
use crate::payload::{CRC_HEADER, format_crc};
use crate::testing::respond;
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
    respond(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn post(app: Router, uri: &str) -> (StatusCode, axum::http::HeaderMap, bytes::Bytes) {
    respond(app, Request::post(uri).body(Body::empty()).unwrap()).await
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
        shmbridge::Consumer::new(Arc::new(segment), shmbridge::ConsumerOptions::default()).unwrap();
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
            let mut users = std::pin::pin!(respond(
                app(state.clone()),
                request.body(Body::empty()).unwrap()
            ));
            let first_poll =
                std::future::poll_fn(|cx| std::task::Poll::Ready(users.as_mut().poll(cx))).await;
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
