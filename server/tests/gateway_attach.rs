//! Every wait of the gateway's shared-memory path on a producer that does not answer is bounded
//! well inside the request deadline, and ends in a clean 503: a producer that accepts the
//! connection but never greets, a users-service that never says where its socket is, and a
//! producer whose connection closes with a request pending.
//!
//! The gateways here have a 10 s deadline and a 100 ms attach timeout, and each request must be
//! answered within half the deadline: before the attach was bounded, these requests took the
//! whole deadline (and the concurrent ones waited behind the first), so a margin of 50 times
//! the attach timeout leaves the scheduler plenty of room and still tells the two apart.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use shmbridge::control::{ChannelOptions, Handler, HandlerError, ResponseWriter};
use shmbridge::testing::silent_listener;
use shmbridge::{ControlServer, Producer, ProducerOptions, Segment, SegmentConfig};

use common::{error_code, gateway, get};
use shmbridge_server::gateway::shm_consumer::LATE_ANSWER_GRACE;

const DEADLINE: &str = "10s";
const ATTACH_TIMEOUT: &str = "100ms";
/// Half the deadline: a request answered later waited for the deadline, not the attach bound.
const ANSWERED_WITHIN: Duration = Duration::from_secs(5);
/// How long a test waits for something that should happen at once before it fails.
const VERDICT_WITHIN: Duration = Duration::from_secs(20);
/// Requests sent at once: at [`ATTACH_TIMEOUT`] each, one after the other, 12 s, beyond the
/// deadline.
const BURST: usize = 120;
/// A port nothing listens on: these gateways never need the REST path.
const NO_UPSTREAM: &str = "http://127.0.0.1:9";

/// Sends `requests` GETs to `/api/users-via-shm` at once; returns each one's status, error code
/// and how long it took.
async fn concurrent_shm_requests(
    gateway: &axum::Router,
    requests: usize,
) -> Vec<(StatusCode, String, Duration)> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..requests {
        let gateway = gateway.clone();
        set.spawn(async move {
            let started = Instant::now();
            let (status, _, body) = get(&gateway, "/api/users-via-shm").await;
            (status, error_code(&body), started.elapsed())
        });
    }
    let answers = tokio::time::timeout(VERDICT_WITHIN, set.join_all())
        .await
        .expect("the requests were not answered even after their deadline");
    assert_eq!(answers.len(), requests);
    answers
}

/// A gateway told to attach to `socket`, with the test's deadline and attach timeout.
fn gateway_on_socket(socket: &str) -> axum::Router {
    gateway(
        NO_UPSTREAM,
        &[
            "--shm-socket",
            socket,
            "--deadline",
            DEADLINE,
            "--attach-timeout",
            ATTACH_TIMEOUT,
        ],
    )
}

fn assert_quick_503s(answers: &[(StatusCode, String, Duration)]) {
    for (status, code, took) in answers {
        assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE, "{answers:?}");
        assert_eq!(code, "shm_unavailable", "{answers:?}");
        assert!(*took < ANSWERED_WITHIN, "{answers:?}");
    }
}

/// A producer that accepts connections but never greets (stopped, starved or still starting,
/// as the kernel queues connections for a listener that does not accept) holds each request at
/// most for the attach timeout, and the requests that arrive meanwhile do not queue behind it
/// up to their deadlines: [`BURST`] requests attaching one after the other for the attach
/// timeout each would take longer than the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_that_never_greets_costs_the_attach_timeout_not_the_deadline() {
    let (_listener, socket) = silent_listener("gateway-never-greets", 32);
    let gateway = gateway_on_socket(&socket);
    assert_quick_503s(&concurrent_shm_requests(&gateway, BURST).await);
}

/// A users-service that accepts the gateway's `GET /shm/segment` and never answers holds an
/// attach no longer than the attach timeout either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_service_that_never_names_its_socket_costs_the_attach_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    // Accepts and keeps every connection open, unanswered, until the test ends.
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = listener.accept().await {
            held.push(connection);
        }
    });
    let gateway = gateway(
        &upstream,
        &["--deadline", DEADLINE, "--attach-timeout", ATTACH_TIMEOUT],
    );
    assert_quick_503s(&concurrent_shm_requests(&gateway, 4).await);
    silent.abort();
}

/// Tells the test each publish frame arrived, then holds it (never answering) until the test
/// lets go or [`VERDICT_WITHIN`] passes.
struct Holding {
    arrived: mpsc::Sender<()>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl Handler for Holding {
    fn handle(&self, _: &[u8], _: &mut ResponseWriter<'_>) -> Result<(), HandlerError> {
        let _ = self.arrived.send(());
        let _ = self
            .release
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv_timeout(VERDICT_WITHIN);
        Err("held, then let go".into())
    }
}

/// A producer serving [`Holding`] on a socket of its own, with the ends the test keeps: each
/// publish frame's arrival, and the handlers' release (dropping it lets them all go).
struct HeldProducer {
    server: ControlServer,
    socket: String,
    arrival: mpsc::Receiver<()>,
    release: mpsc::Sender<()>,
}

impl HeldProducer {
    fn start(test: &str, slot_count: u32) -> Self {
        let segment = Segment::create(&SegmentConfig {
            slot_count,
            slot_size: 4096,
        })
        .unwrap();
        let producer =
            Arc::new(Producer::new(Arc::new(segment), ProducerOptions::default()).unwrap());
        let (arrived, arrival) = mpsc::channel();
        let (release, held) = mpsc::channel();
        let publisher = Arc::new(Holding {
            arrived,
            release: Mutex::new(held),
        });
        let socket = format!(
            "shmbridge-test-gateway-{test}-{}-{:016x}",
            std::process::id(),
            producer.segment().epoch()
        );
        let server = ControlServer::spawn_channel(
            Arc::clone(&producer),
            publisher,
            ChannelOptions::for_segment(producer.segment()),
            &socket,
        )
        .unwrap();
        Self {
            server,
            socket,
            arrival,
            release,
        }
    }
}

/// A producer whose connection closes while a publish request waits for its answer (it
/// crashed, or dropped the connection): the request is woken by the close and answered at
/// once, with the retry's attach finding no producer, rather than at its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_pending_when_the_connection_closes_is_answered_at_once() {
    let HeldProducer {
        server,
        socket,
        arrival,
        release,
    } = HeldProducer::start("closes", 2);
    let gateway = gateway_on_socket(&socket);
    let request = tokio::spawn(async move {
        let started = Instant::now();
        let (status, _, body) = get(&gateway, "/api/users-via-shm").await;
        (status, error_code(&body), started.elapsed())
    });
    tokio::task::spawn_blocking(move || arrival.recv_timeout(VERDICT_WITHIN))
        .await
        .unwrap()
        .expect("the publish frame never reached the producer");
    // Closes the connection (and the socket) with the frame still unanswered.
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .unwrap();
    let answer = tokio::time::timeout(VERDICT_WITHIN, request)
        .await
        .expect("the request was not answered even after its deadline")
        .unwrap();
    drop(release);
    assert_quick_503s(&[answer]);
}

/// A request that has no answer by its deadline keeps its in-flight permit while the producer
/// may still be working on it: with one permit, the next request is not sent to a producer
/// still holding the first (before, the permit came back at the deadline and the producer got
/// one request more for each one it was too slow for). A producer that never answers gets the
/// permit back [`LATE_ANSWER_GRACE`] after the deadline, when the request is abandoned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_request_keeps_its_permit_until_answered_or_abandoned() {
    // Room for more than one request of one peer: the producer would not refuse the second.
    let HeldProducer {
        server: _server,
        socket,
        arrival,
        release,
    } = HeldProducer::start("permits", 8);
    let gateway = gateway(
        NO_UPSTREAM,
        &[
            "--shm-socket",
            &socket,
            "--deadline",
            "300ms",
            "--shm-max-in-flight",
            "1",
        ],
    );
    let arrival = Arc::new(Mutex::new(arrival));
    let next_arrival = |within: Duration| {
        let arrival = Arc::clone(&arrival);
        tokio::task::spawn_blocking(move || {
            arrival
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .recv_timeout(within)
        })
    };

    let (status, _, body) = get(&gateway, "/api/users-via-shm").await;
    let first_deadline = Instant::now();
    assert_eq!(error_code(&body), "upstream_timeout", "{status}");
    next_arrival(VERDICT_WITHIN)
        .await
        .unwrap()
        .expect("the first request never reached the producer");

    let (status, _, body) = get(&gateway, "/api/users-via-shm").await;
    assert_eq!(error_code(&body), "upstream_timeout", "{status}");
    assert!(
        first_deadline.elapsed() < LATE_ANSWER_GRACE,
        "the second request ended after the first was abandoned: the test says nothing"
    );
    assert_eq!(
        next_arrival(Duration::ZERO).await.unwrap(),
        Err(mpsc::RecvTimeoutError::Timeout),
        "a second request reached the producer while it still held the first"
    );

    tokio::time::sleep_until((first_deadline + LATE_ANSWER_GRACE).into()).await;
    let third = tokio::spawn({
        let gateway = gateway.clone();
        async move { get(&gateway, "/api/users-via-shm").await }
    });
    next_arrival(VERDICT_WITHIN)
        .await
        .unwrap()
        .expect("the permit never came back from the abandoned request");
    drop(release);
    let (status, _, _) = third.await.unwrap();
    assert!(status.is_server_error(), "{status}");
}
