//! The load engine against a local axum server on port 0 that can stall, corrupt, fail or hang
//! on demand: every outcome class must be counted where it belongs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use shmbridge_chaos::loadtest::load::counts::CountMix;
use shmbridge_chaos::loadtest::load::endpoint::{Endpoint, EndpointMix};
use shmbridge_chaos::loadtest::load::open_loop::OpenLoopProfile;
use shmbridge_chaos::loadtest::load::progress::Progress;
use shmbridge_chaos::loadtest::load::recorder::{RequestObserver, RequestRecord};
use shmbridge_chaos::loadtest::load::stats::{FailureClass, Outcome, RunStats};
use shmbridge_chaos::loadtest::load::target::{RequestMix, Resource};
use shmbridge_chaos::loadtest::load::users::{ThinkTime, UsersProfile};
use shmbridge_chaos::loadtest::load::verify::{BodyChecker, Corruption};
use shmbridge_chaos::loadtest::load::{LoadConfig, LoadModel, run, run_observed};
use shmbridge_server::blobs::{BlobQuery, blob_bytes};
use shmbridge_server::transport_header::Transport;
use tokio::time::Instant;

fn test_body(count: u32, seed: u64) -> Vec<u8> {
    format!("[{count}:{seed}]")
        .repeat(count as usize)
        .into_bytes()
}

/// What the shm route does wrong; the api route always answers correctly.
#[derive(Clone, Copy)]
enum ShmFault {
    None,
    /// The request with this sequence number sleeps this long before answering.
    StallOnce {
        request: u64,
        stall: Duration,
    },
    FlipByte {
        offset: usize,
    },
    Status(StatusCode),
    Hang,
}

struct ServerState {
    fault: ShmFault,
    shm_requests: AtomicU64,
}

async fn serve_api(Query(params): Query<HashMap<String, String>>) -> Response {
    respond(&params, None)
}

async fn serve_shm(
    State(state): State<Arc<ServerState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let sequence = state.shm_requests.fetch_add(1, Ordering::SeqCst);
    match state.fault {
        ShmFault::None => respond(&params, None),
        ShmFault::StallOnce { request, stall } => {
            if sequence == request {
                tokio::time::sleep(stall).await;
            }
            respond(&params, None)
        }
        ShmFault::FlipByte { offset } => respond(&params, Some(offset)),
        ShmFault::Status(status) => status.into_response(),
        ShmFault::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            respond(&params, None)
        }
    }
}

fn respond(params: &HashMap<String, String>, flip_at: Option<usize>) -> Response {
    let count = params["count"].parse().unwrap();
    let seed = params["seed"].parse().unwrap();
    let mut body = test_body(count, seed);
    let crc = crc32fast::hash(&body);
    if let Some(offset) = flip_at {
        body[offset] ^= 0x20;
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-payload-crc32",
        HeaderValue::from_str(&format!("{crc:08x}")).unwrap(),
    );
    (headers, body).into_response()
}

/// A `/blobs` body as users-service makes it, carried by `transport`.
async fn serve_blob(transport: &'static str, RawQuery(query): RawQuery) -> Response {
    let query = BlobQuery::parse(query.as_deref(), 1 << 30).unwrap();
    let body = blob_bytes(&query);
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-payload-crc32",
        HeaderValue::from_str(&format!("{:08x}", crc32fast::hash(&body))).unwrap(),
    );
    headers.insert("x-transport", HeaderValue::from_static(transport));
    (headers, body).into_response()
}

/// A path nothing in the load tool can generate: `good` answers with its own crc32, otherwise
/// with the crc32 of other bytes.
fn other(good: bool) -> Response {
    let body = b"bytes only the upstream knows".to_vec();
    let crc = crc32fast::hash(if good { &body[..] } else { &body[1..] });
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-payload-crc32",
        HeaderValue::from_str(&format!("{crc:08x}")).unwrap(),
    );
    headers.insert("x-transport", HeaderValue::from_static("shm-inline"));
    (headers, body).into_response()
}

async fn start_server(fault: ShmFault) -> SocketAddr {
    let state = Arc::new(ServerState {
        fault,
        shm_requests: AtomicU64::new(0),
    });
    let app = Router::new()
        .route(Endpoint::Api.path(), get(serve_api))
        .route(Endpoint::Shm.path(), get(serve_shm))
        .route("/via-api/blobs", get(|query| serve_blob("api", query)))
        .route("/via-shm/blobs", get(|query| serve_blob("shm-slot", query)))
        .route("/via-shm/other", get(|| async { other(true) }))
        .route("/via-api/other", get(|| async { other(false) }))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

fn config(address: SocketAddr, model: LoadModel, duration: Duration, mix: &str) -> LoadConfig {
    LoadConfig {
        target: format!("http://{address}").parse().unwrap(),
        model,
        duration,
        mix: mix.parse().unwrap(),
        timeout: Duration::from_millis(500),
        requests: RequestMix::users(&CountMix::single(1_000)),
        seed: 9,
        rng_seed: 1,
    }
}

fn capacity_users(users: u32) -> LoadModel {
    LoadModel::Users(UsersProfile {
        users,
        spawn_rate: 100.0,
        think: ThinkTime::NONE,
    })
}

async fn run_against(config: &LoadConfig) -> RunStats {
    let checker = Arc::new(BodyChecker::new(test_body));
    run(config, checker, Progress::quiet()).await.unwrap()
}

#[tokio::test]
async fn healthy_server_gives_only_verified_bodies_on_both_endpoints() {
    let address = start_server(ShmFault::None).await;
    let stats = run_against(&config(
        address,
        capacity_users(4),
        Duration::from_secs(1),
        "api,shm",
    ))
    .await;
    for endpoint in [Endpoint::Api, Endpoint::Shm] {
        let endpoint_stats = &stats.endpoints[&endpoint];
        assert!(
            endpoint_stats.requests > 10,
            "{endpoint}: {endpoint_stats:?}"
        );
        assert_eq!(endpoint_stats.verified, endpoint_stats.requests);
        assert_eq!(endpoint_stats.body_bytes, endpoint_stats.requests * 8_000);
    }
    assert_eq!(stats.corrupt(), 0);
    assert!(stats.elapsed >= Duration::from_secs(1));
}

/// Collects (endpoint, verified?) for every request it is shown.
#[derive(Default)]
struct Collect(std::sync::Mutex<Vec<(Endpoint, bool)>>);

impl RequestObserver for Collect {
    fn observe(&self, request: &RequestRecord<'_>) {
        let verified = matches!(request.outcome, Outcome::Verified);
        self.0.lock().unwrap().push((request.endpoint, verified));
    }
}

#[tokio::test]
async fn observer_sees_every_request() {
    let address = start_server(ShmFault::Status(StatusCode::BAD_GATEWAY)).await;
    let collect = Arc::new(Collect::default());
    let stats = run_observed(
        &config(
            address,
            capacity_users(2),
            Duration::from_millis(300),
            "api,shm",
        ),
        Arc::new(BodyChecker::new(test_body)),
        Progress::quiet(),
        Some(collect.clone()),
    )
    .await
    .unwrap();
    let seen = collect.0.lock().unwrap();
    assert_eq!(seen.len() as u64, stats.total().requests);
    let verified = seen.iter().filter(|(_, verified)| *verified).count() as u64;
    assert_eq!(verified, stats.endpoints[&Endpoint::Api].verified);
    assert!(
        seen.iter()
            .filter(|(_, verified)| !verified)
            .all(|(endpoint, _)| *endpoint == Endpoint::Shm)
    );
}

#[tokio::test]
async fn flipped_byte_is_counted_corrupt_with_its_offset() {
    let address = start_server(ShmFault::FlipByte { offset: 4_321 }).await;
    let stats = run_against(&config(
        address,
        capacity_users(2),
        Duration::from_millis(500),
        "api,shm",
    ))
    .await;
    let shm = &stats.endpoints[&Endpoint::Shm];
    assert!(shm.requests > 0);
    assert_eq!(shm.corrupt, shm.requests);
    assert_eq!(shm.failed(), 0, "corruption is not a failure");
    match &shm.corruption_samples[0] {
        Corruption::Bytes {
            first_differing_offset,
            ..
        } => assert_eq!(*first_differing_offset, 4_321),
        other => panic!("unexpected corruption {other:?}"),
    }
    assert_eq!(stats.endpoints[&Endpoint::Api].corrupt, 0);
}

#[tokio::test]
async fn error_status_is_a_status_failure() {
    let address = start_server(ShmFault::Status(StatusCode::SERVICE_UNAVAILABLE)).await;
    let stats = run_against(&config(
        address,
        capacity_users(2),
        Duration::from_millis(300),
        "shm",
    ))
    .await;
    let shm = &stats.endpoints[&Endpoint::Shm];
    assert!(shm.requests > 0);
    assert_eq!(shm.failed(), shm.requests);
    assert!(
        shm.failures
            .keys()
            .all(|failure| failure.class == FailureClass::Status(503))
    );
}

#[tokio::test]
async fn hanging_server_gives_timeouts_not_a_hang() {
    let address = start_server(ShmFault::Hang).await;
    let run_config = config(
        address,
        capacity_users(3),
        Duration::from_millis(300),
        "shm",
    );
    let started = Instant::now();
    let stats = run_against(&run_config).await;
    // Users stop sending at the end of the duration; a request in flight then ends by its
    // deadline, at most one timeout later.
    assert!(started.elapsed() < run_config.duration + run_config.timeout + Duration::from_secs(1));
    let shm = &stats.endpoints[&Endpoint::Shm];
    assert_eq!(shm.requests, 3, "each user's single request timed out");
    assert!(
        shm.failures
            .keys()
            .all(|failure| failure.class == FailureClass::Timeout)
    );
    assert!(shm.summary(stats.elapsed).min_ms >= 500.0);
}

#[tokio::test]
async fn refused_connection_is_a_connection_failure() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let stats = run_against(&config(
        address,
        capacity_users(1),
        Duration::from_millis(200),
        "api",
    ))
    .await;
    let api = &stats.endpoints[&Endpoint::Api];
    assert!(api.requests > 0);
    assert!(
        api.failures
            .keys()
            .all(|failure| failure.class == FailureClass::Connection),
        "{:?}",
        api.failures
    );
}

#[tokio::test]
async fn open_loop_latency_counts_from_the_scheduled_time() {
    // 50 requests/s over one connection for 2 s; request 25 (due at 0.5 s) stalls for 1 s.
    // Every request due during the stall queues behind it: the one due at 0.5 + x s finishes
    // at about 1.5 s, a latency of about 1 − x s. Measured from the send time, as a
    // closed-loop tool would, only the stalled request itself would be slow.
    let address = start_server(ShmFault::StallOnce {
        request: 25,
        stall: Duration::from_secs(1),
    })
    .await;
    let mut run_config = config(
        address,
        LoadModel::OpenLoop(OpenLoopProfile {
            rate: 50.0,
            connections: 1,
        }),
        Duration::from_secs(2),
        "shm",
    );
    run_config.timeout = Duration::from_secs(5);
    let stats = run_against(&run_config).await;
    let shm = &stats.endpoints[&Endpoint::Shm];
    assert_eq!(shm.requests, 100);
    assert_eq!(shm.verified, 100);
    let slow = shm.latency.count_between(200_000, u64::MAX);
    assert!(slow >= 30, "only {slow} requests of 100 show the stall");
    let summary = shm.summary(stats.elapsed);
    assert!(summary.percentile_ms(75.0) >= 200.0, "{summary:?}");
    assert!(summary.percentile_ms(99.0) >= 800.0, "{summary:?}");
}

#[test]
fn endpoint_mix_default_is_the_seeds_even_split() {
    assert_eq!(EndpointMix::default(), "api,shm".parse().unwrap());
}

#[tokio::test]
async fn a_count_mix_verifies_each_body_against_its_own_count() {
    let address = start_server(ShmFault::None).await;
    let mut config = config(
        address,
        capacity_users(4),
        Duration::from_millis(400),
        "api,shm",
    );
    config.requests = RequestMix::users(&"10=1,1000=1".parse().unwrap());
    let stats = run_against(&config).await;
    let total = stats.total();
    assert!(total.requests >= 20, "only {} requests", total.requests);
    assert_eq!(total.verified, total.requests, "{stats:?}");
    // Every body verified, and their bytes lie strictly between all-small and all-large: both
    // counts were asked for, each checked against its own expected body.
    let (small, large) = (
        test_body(10, 9).len() as u64,
        test_body(1_000, 9).len() as u64,
    );
    assert!(
        total.requests * small < total.body_bytes && total.body_bytes < total.requests * large,
        "{} bytes in {} requests",
        total.body_bytes,
        total.requests
    );
}

#[tokio::test]
async fn paths_are_asked_through_each_endpoints_prefix_and_checked_by_generator_or_checksum() {
    let address = start_server(ShmFault::None).await;
    let mut config = config(
        address,
        capacity_users(4),
        Duration::from_millis(400),
        "api,shm",
    );
    let blob = "/blobs?size=70000&pattern=text&seed=4";
    config.requests = RequestMix::new(
        None,
        &[(blob.parse().unwrap(), 1), ("/other".parse().unwrap(), 1)],
    )
    .unwrap();
    let collect = Arc::new(Resources::default());
    let stats = run_observed(
        &config,
        Arc::new(BodyChecker::new(test_body)),
        Progress::quiet(),
        Some(collect.clone()),
    )
    .await
    .unwrap();
    // Through /via-shm both verify: the blob against the generator, the other path against
    // its checksum header; both were asked for.
    let shm = &stats.endpoints[&Endpoint::Shm];
    assert!(shm.requests >= 10, "{shm:?}");
    assert_eq!(shm.verified, shm.requests, "{shm:?}");
    let slot = shm.transports[&Transport::ShmSlot];
    let inline = shm.transports[&Transport::ShmInline];
    assert_eq!(slot + inline, shm.requests);
    assert!(slot > 0 && inline > 0, "{:?}", shm.transports);
    assert_eq!(
        shm.body_bytes,
        slot * 70_000 + inline * b"bytes only the upstream knows".len() as u64
    );
    // Through /via-api the other path's header names other bytes: corrupt, by checksum, on
    // every one of its answers; the blob still verifies.
    let api = &stats.endpoints[&Endpoint::Api];
    assert!(api.corrupt > 0, "{api:?}");
    assert_eq!(api.verified, api.transports[&Transport::Api]);
    assert_eq!(api.verified + api.corrupt, api.requests);
    assert!(matches!(
        api.corruption_samples[0],
        Corruption::Checksum { actual_len: 29, .. }
    ));
    let seen = collect.0.lock().unwrap();
    assert_eq!(seen.len() as u64, stats.total().requests);
    assert!(
        seen.iter()
            .all(|resource| matches!(resource, Resource::Path(_)))
    );
}

/// Collects the resource of every request it is shown.
#[derive(Default)]
struct Resources(std::sync::Mutex<Vec<Resource>>);

impl RequestObserver for Resources {
    fn observe(&self, request: &RequestRecord<'_>) {
        self.0.lock().unwrap().push(request.resource.clone());
    }
}
