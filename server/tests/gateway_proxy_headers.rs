//! The reverse proxy's handling of what passes through it, against an echoing upstream that
//! answers the same over REST (an axum fake) and over its control channel (a handler of its
//! own): the method, target, end-to-end headers and body reach the upstream; hop-by-hop headers
//! pass in neither direction; a request the channel cannot carry goes over REST under `auto`
//! and is a 413 when shared memory is forced; a header block above the bound, and a failing
//! handler, are clean 502s; a request that is not idempotent is never sent twice.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use common::{error_code, gateway, serve_in_background};
use shmbridge::control::frame::MAX_REQUEST_LEN;
use shmbridge::control::{ChannelOptions, Handler, HandlerError, ResponseWriter};
use shmbridge::http::HttpRequest;
use shmbridge::{ControlServer, Producer, ProducerOptions, Segment, SegmentConfig};
use shmbridge_server::server_timing::SERVER_TIMING;
use shmbridge_server::transport_header::TRANSPORT_HEADER;

/// Hop-by-hop headers every echo answers with, to be dropped by the gateway; `x-secret` is
/// named by `connection`.
const HOP_BY_HOP: [(&str, &str); 6] = [
    ("connection", "x-secret"),
    ("x-secret", "1"),
    ("keep-alive", "timeout=5"),
    ("proxy-authenticate", "Basic"),
    ("upgrade", "h2c"),
    ("trailer", "x-sum"),
];

/// The echo's answer for a request: 200, `application/octet-stream`, the method, target and
/// two request headers' values (`x-client`; `x-hop`, which the gateway must not forward) in
/// headers, [`HOP_BY_HOP`], `x-end-to-end: kept`, and the request body as the body.
fn echo_head(method: &str, target: &str, client: &str, hop: &str) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = vec![
        ("x-echo-method".into(), method.into()),
        ("x-echo-target".into(), target.into()),
        ("x-echo-client".into(), client.into()),
        ("x-echo-hop".into(), hop.into()),
        ("x-end-to-end".into(), "kept".into()),
    ];
    headers.extend(
        HOP_BY_HOP
            .iter()
            .map(|(name, value)| ((*name).into(), (*value).into())),
    );
    headers
}

/// The echo over REST.
async fn rest_echo(request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let value = |name: &str| {
        parts
            .headers
            .get(name)
            .map_or("absent".to_owned(), |value| {
                value.as_bytes().escape_ascii().to_string()
            })
    };
    let target = parts.uri.path_and_query().unwrap().as_str().to_owned();
    let head = echo_head(
        parts.method.as_str(),
        &target,
        &value("x-client"),
        &value("x-hop"),
    );
    let body = axum::body::to_bytes(body, 4 << 20).await.unwrap();
    let mut headers = HeaderMap::new();
    for (name, value) in head {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(&value).unwrap(),
        );
    }
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    (headers, body).into_response()
}

/// The echo over the control channel.
fn channel_echo(request: &[u8], response: &mut ResponseWriter<'_>) -> Result<(), HandlerError> {
    let request = HttpRequest::parse(request)?;
    let value = |wanted: &str| {
        request
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
            .map_or("absent", |(_, value)| value)
    };
    if request.path() == "/fail" {
        return Err("the handler failed on purpose".into());
    }
    response.set_content_type("application/octet-stream")?;
    for (name, value) in echo_head(
        request.method,
        request.target,
        value("x-client"),
        value("x-hop"),
    ) {
        response.add_header(&name, &value)?;
    }
    response.add_header("transfer-encoding", "chunked")?;
    response.write_all(request.body)?;
    Ok(())
}

/// An echo upstream on both transports, and a gateway in front of it with `extra` flags.
struct Echo {
    gateway: Router,
    _server: ControlServer,
}

async fn echo(extra: &[&str]) -> Echo {
    let segment = Arc::new(
        Segment::create(&SegmentConfig {
            slot_count: 4,
            slot_size: 256 << 10,
        })
        .unwrap(),
    );
    let producer = Arc::new(Producer::new(segment, ProducerOptions::default()).unwrap());
    let socket = format!(
        "shmbridge-test-proxy-echo-{}-{:016x}",
        std::process::id(),
        producer.segment().epoch()
    );
    let handler: Arc<dyn Handler> = Arc::new(channel_echo);
    let server = ControlServer::spawn_channel(
        Arc::clone(&producer),
        handler,
        ChannelOptions::for_segment(producer.segment()),
        &socket,
    )
    .unwrap();
    let upstream = serve_in_background(Router::new().fallback(rest_echo)).await;
    let flags = [&["--shm-socket", socket.as_str()][..], extra].concat();
    Echo {
        gateway: gateway(&upstream, &flags),
        _server: server,
    }
}

async fn send(
    gateway: &Router,
    request: axum::http::Request<Body>,
) -> (StatusCode, HeaderMap, Bytes) {
    shmbridge_server::testing::respond(gateway.clone(), request).await
}

fn post(uri: &str, body: Vec<u8>) -> axum::http::Request<Body> {
    axum::http::Request::post(uri)
        .header("x-client", "hello")
        .header("connection", "x-hop")
        .header("x-hop", "must not pass")
        .header("proxy-authorization", "Basic eA==")
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_pass_whole_and_hop_by_hop_headers_pass_in_neither_direction() {
    let echo = echo(&[]).await;
    let body = b"request body \x00\xff bytes".to_vec();
    for (uri, transport) in [
        ("/via-shm/echo/a%20b?x=1&y=%2F", "shm-inline"),
        ("/echo/a%20b?x=1&y=%2F", "shm-inline"),
        ("/via-api/echo/a%20b?x=1&y=%2F", "api"),
    ] {
        let (status, headers, got) = send(&echo.gateway, post(uri, body.clone())).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert_eq!(headers[TRANSPORT_HEADER], transport, "{uri}");
        assert_eq!(got, body, "{uri}");
        assert_eq!(headers["content-type"], "application/octet-stream", "{uri}");
        assert_eq!(headers["x-echo-method"], "POST", "{uri}");
        assert_eq!(headers["x-echo-target"], "/echo/a%20b?x=1&y=%2F", "{uri}");
        assert_eq!(headers["x-echo-client"], "hello", "{uri}");
        assert_eq!(
            headers["x-echo-hop"], "absent",
            "{uri}: x-hop was forwarded"
        );
        assert_eq!(headers["x-end-to-end"], "kept", "{uri}");
        let stages: Vec<&str> = headers[SERVER_TIMING]
            .to_str()
            .unwrap()
            .split(", ")
            .map(|entry| entry.split_once(";dur=").expect("name;dur=ms").0)
            .collect();
        let timed: &[&str] = match transport {
            "api" => &["upstream"],
            _ => &["attach", "channel", "redeem"],
        };
        assert_eq!(stages, timed, "{uri}: the gateway's Server-Timing");
        for (name, _) in HOP_BY_HOP.iter().chain(&[("transfer-encoding", "")]) {
            assert!(
                headers.get(*name).is_none(),
                "{uri}: {name} was passed back"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_channel_cannot_carry_goes_over_rest_under_auto_and_is_413_under_shm() {
    let auto = echo(&[]).await;
    let big = vec![b'b'; MAX_REQUEST_LEN];
    let (status, headers, body) = send(&auto.gateway, post("/upload", big.clone())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[TRANSPORT_HEADER], "api-fallback");
    assert_eq!(body, big);
    for (gateway, uri) in [
        (&auto.gateway, "/via-shm/upload"),
        (&echo(&["--transport", "shm"]).await.gateway, "/upload"),
    ] {
        let (status, _, body) = send(gateway, post(uri, big.clone())).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{uri}");
        assert_eq!(error_code(&body), "request_too_large", "{uri}");
    }
    // A header value the channel's encoding does not carry: REST under auto, 400 forced.
    let latin = || {
        axum::http::Request::get("/echo")
            .header("x-client", HeaderValue::from_bytes(b"caf\xe9").unwrap())
            .body(Body::empty())
            .unwrap()
    };
    let (status, headers, _) = send(&auto.gateway, latin()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[TRANSPORT_HEADER], "api-fallback");
    let (status, _, body) = send(&echo(&["--transport", "shm"]).await.gateway, latin()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "request_not_forwardable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_is_a_502_and_not_a_fallback() {
    let echo = echo(&[]).await;
    for uri in ["/via-shm/fail", "/fail"] {
        let (status, headers, body) = send(
            &echo.gateway,
            axum::http::Request::get(uri).body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{uri}");
        assert_eq!(error_code(&body), "upstream_invalid", "{uri}");
        assert!(headers.get(TRANSPORT_HEADER).is_none(), "{uri}");
    }
}

/// An answer with `count` headers of `len`-byte values.
fn headers(count: usize, len: usize) -> (HeaderMap, &'static str) {
    let mut headers = HeaderMap::new();
    for index in 0..count {
        headers.insert(
            HeaderName::from_bytes(format!("x-h{index}").as_bytes()).unwrap(),
            HeaderValue::from_str(&"v".repeat(len)).unwrap(),
        );
    }
    (headers, "body")
}

#[tokio::test]
async fn a_header_block_above_the_bound_is_a_502() {
    use shmbridge_server::gateway::{MAX_RESPONSE_HEADER_BYTES, MAX_RESPONSE_HEADERS};
    let fake = Router::new()
        .route(
            "/within",
            axum::routing::get(|| async { headers(MAX_RESPONSE_HEADERS - 8, 100) }),
        )
        .route(
            "/too-many",
            axum::routing::get(|| async { headers(MAX_RESPONSE_HEADERS + 1, 1) }),
        )
        .route(
            "/too-long",
            axum::routing::get(|| async { headers(5, MAX_RESPONSE_HEADER_BYTES / 4) }),
        );
    let upstream = serve_in_background(fake).await;
    let gateway = gateway(&upstream, &["--transport", "api"]);
    let (status, headers, _) = common::get(&gateway, "/within").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-h0"].len(), 100);
    for uri in ["/too-many", "/too-long"] {
        let (status, headers, body) = common::get(&gateway, uri).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{uri}");
        assert_eq!(error_code(&body), "upstream_invalid", "{uri}");
        assert!(headers.get("x-h0").is_none(), "{uri}");
    }
}

/// Tells the test a request arrived, then holds it unanswered until the test lets go.
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
            .recv_timeout(Duration::from_secs(20));
        Err("held, then let go".into())
    }
}

/// Sends `method /hold` through a gateway under `auto` whose producer closes its connection
/// while the request is being handled there; returns the gateway's status and `x-transport`
/// or error code, and how many requests reached the upstream over REST.
async fn closed_mid_request(method: Method) -> (StatusCode, String, usize) {
    let segment = Arc::new(
        Segment::create(&SegmentConfig {
            slot_count: 2,
            slot_size: 4096,
        })
        .unwrap(),
    );
    let producer = Arc::new(Producer::new(segment, ProducerOptions::default()).unwrap());
    let socket = format!(
        "shmbridge-test-proxy-closes-{}-{:016x}",
        std::process::id(),
        producer.segment().epoch()
    );
    let (arrived, arrival) = mpsc::channel();
    let (release, held) = mpsc::channel::<()>();
    let handler: Arc<dyn Handler> = Arc::new(Holding {
        arrived,
        release: Mutex::new(held),
    });
    let server = ControlServer::spawn_channel(
        Arc::clone(&producer),
        handler,
        ChannelOptions::for_segment(producer.segment()),
        &socket,
    )
    .unwrap();
    let rest_requests = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&rest_requests);
    let fake = Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        async { "over rest" }
    });
    let upstream = serve_in_background(fake).await;
    let gateway = gateway(&upstream, &["--shm-socket", &socket]);
    let request = axum::http::Request::builder()
        .method(method)
        .uri("/hold")
        .body(Body::empty())
        .unwrap();
    let answer = tokio::spawn(async move { send(&gateway, request).await });
    tokio::task::spawn_blocking(move || arrival.recv_timeout(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("the request never reached the producer");
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .unwrap();
    let (status, headers, body) = tokio::time::timeout(Duration::from_secs(20), answer)
        .await
        .expect("no answer")
        .unwrap();
    drop(release);
    let said = match headers.get(TRANSPORT_HEADER) {
        Some(transport) => transport.to_str().unwrap().to_owned(),
        None => error_code(&body),
    };
    (status, said, rest_requests.load(Ordering::Relaxed))
}

/// A GET whose answer is lost with the connection is retried (re-attaching finds no producer)
/// and served over REST; a POST, which the producer's handler may have acted on, is sent once:
/// the client learns that shared memory failed, and the upstream never sees it twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_idempotent_requests_are_retried_or_sent_again_over_rest() {
    assert_eq!(
        closed_mid_request(Method::GET).await,
        (StatusCode::OK, "api-fallback".to_owned(), 1)
    );
    assert_eq!(
        closed_mid_request(Method::POST).await,
        (StatusCode::SERVICE_UNAVAILABLE, "shm_stale".to_owned(), 0)
    );
}
