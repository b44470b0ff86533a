//! End to end over real processes on ephemeral ports: identical verified bodies on both
//! transports, 503 within the deadline when users-service dies or hangs and recovery after its
//! restart or resumption without touching the gateway, SIGTERM draining in-flight requests, and `/metrics` as valid
//! Prometheus text whose counters move.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use reqwest::StatusCode;
use shmbridge_server::dataset::{DEFAULT_COUNT, DEFAULT_SEED, users_json};
use shmbridge_server::payload::{CRC_HEADER, format_crc};
use shmbridge_server::serve::{StartupLine, announced};
use shmbridge_system_tests::process::{ServiceProcess, client, gateway, users_service};

async fn start_pair(gateway_args: &[&str]) -> (ServiceProcess, ServiceProcess) {
    let users = users_service(&["--listen", "127.0.0.1:0", "--slot-count", "16"]).await;
    let upstream = users.url();
    let mut args = vec!["--listen", "127.0.0.1:0", "--upstream", upstream.as_str()];
    args.extend_from_slice(gateway_args);
    let gateway = gateway(&args).await;
    (users, gateway)
}

/// GETs `url` and checks a 200 carries exactly `expected`, with a matching crc header.
async fn fetch_verified(http: &reqwest::Client, url: &str, expected: &[u8]) {
    let response = http.get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{url}");
    let crc = response.headers()[CRC_HEADER].to_str().unwrap().to_owned();
    let body = response.bytes().await.unwrap();
    assert!(body == expected, "{url}: body differs from the dataset");
    assert_eq!(crc, format_crc(crc32fast::hash(&body)), "{url}");
}

/// GETs `route` from the gateway, checks it answers 503, and returns the answer and how long
/// it took.
async fn unavailable(
    http: &reqwest::Client,
    gateway: &ServiceProcess,
    route: &str,
) -> (reqwest::Response, Duration) {
    let started = Instant::now();
    let response = http
        .get(format!("{}{route}", gateway.url()))
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(
        response.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "{route}"
    );
    (response, elapsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_endpoints_return_identical_verified_json() {
    let (users, gateway) = start_pair(&[]).await;
    let http = client();
    for (count, seed) in [
        (DEFAULT_COUNT, DEFAULT_SEED),
        (1, 0),
        (64, 7),
        (1200, 123_456),
    ] {
        let expected = users_json(count, seed);
        for route in ["/api/users-via-api", "/api/users-via-shm"] {
            let url = format!("{}{route}?count={count}&seed={seed}", gateway.url());
            fetch_verified(&http, &url, &expected).await;
        }
    }
    let default = http
        .get(format!("{}/api/users-via-shm", gateway.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(default.bytes().await.unwrap().len(), 256_873);
    for service in [&users, &gateway] {
        let extra = service.next_stdout_line(Duration::from_millis(100)).await;
        assert_eq!(
            extra, None,
            "stdout must carry only the `listening on` line"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_users_service_gives_503_within_the_deadline_then_recovers_after_restart() {
    let (mut users, gateway) =
        start_pair(&["--deadline", "1s", "--admin-listen", "127.0.0.1:0"]).await;
    let admin = gateway
        .next_stdout_line(Duration::from_secs(5))
        .await
        .and_then(|line| announced(&line, StartupLine::Admin)?.ok())
        .expect("with --admin-listen the gateway announces the operators' address second");
    let http = client();
    let expected = users_json(DEFAULT_COUNT, DEFAULT_SEED);
    for route in ["/api/users-via-api", "/api/users-via-shm"] {
        fetch_verified(&http, &format!("{}{route}", gateway.url()), &expected).await;
    }

    let port = users.address().port().to_string();
    users.send_signal(Signal::SIGKILL);
    users
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("SIGKILL ends users-service");
    for route in ["/api/users-via-api", "/api/users-via-shm"] {
        let (response, elapsed) = unavailable(&http, &gateway, route).await;
        assert_eq!(response.headers()["retry-after"], "1", "{route}");
        assert!(
            elapsed < Duration::from_millis(1500),
            "{route} took {elapsed:?}"
        );
    }

    let listen = format!("127.0.0.1:{port}");
    let restarted = users_service(&["--listen", &listen, "--slot-count", "16"]).await;
    // The new producer has a new segment epoch: the shm route must re-attach by itself.
    for route in ["/api/users-via-shm", "/api/users-via-api"] {
        let url = format!("{}{route}", gateway.url());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let response = http.get(&url).send().await.unwrap();
            if response.status() == StatusCode::OK {
                fetch_verified(&http, &url, &expected).await;
                break;
            }
            assert_eq!(
                response.status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "{route}"
            );
            assert!(
                Instant::now() < deadline,
                "{route} did not recover within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let metrics = http
        .get(format!("{}/metrics", gateway.url()))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains(r#"shm_reattaches_total{reason="connection_closed"}"#),
        "{metrics}"
    );
    let segment = http
        .get(format!("{}/shm/segment", restarted.url()))
        .send()
        .await
        .unwrap();
    let segment: serde_json::Value =
        serde_json::from_slice(&segment.bytes().await.unwrap()).unwrap();
    let readiness = http
        .get(format!("{}/readyz", gateway.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(readiness.status(), StatusCode::OK);
    let readiness: serde_json::Value =
        serde_json::from_slice(&readiness.bytes().await.unwrap()).unwrap();
    assert_eq!(readiness["shm"], "attached");
    // Which segment it is attached to is for operators.
    let status = http
        .get(format!("http://{admin}/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), StatusCode::OK);
    let status: serde_json::Value = serde_json::from_slice(&status.bytes().await.unwrap()).unwrap();
    assert_eq!(status["shm"]["attached"]["epoch"], segment["epoch"]);
    assert_eq!(status["shm"]["attached"]["socket"], segment["socket"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_users_service_gives_503_within_the_deadline_then_recovers() {
    let (users, gateway) = start_pair(&["--deadline", "500ms"]).await;
    let http = client();
    let expected = users_json(DEFAULT_COUNT, DEFAULT_SEED);
    for route in ["/api/users-via-api", "/api/users-via-shm"] {
        fetch_verified(&http, &format!("{}{route}", gateway.url()), &expected).await;
    }
    users.send_signal(Signal::SIGSTOP);
    for route in ["/api/users-via-api", "/api/users-via-shm"] {
        let (_, elapsed) = unavailable(&http, &gateway, route).await;
        assert!(
            elapsed >= Duration::from_millis(500),
            "{route} took {elapsed:?}"
        );
        assert!(
            elapsed < Duration::from_millis(1500),
            "{route} took {elapsed:?}"
        );
    }
    users.send_signal(Signal::SIGCONT);
    for route in ["/api/users-via-api", "/api/users-via-shm"] {
        fetch_verified(&http, &format!("{}{route}", gateway.url()), &expected).await;
    }
}

/// The layout version no build of this crate speaks: the next one.
const WRONG_VERSION: u32 = shmbridge::layout::LAYOUT_VERSION + 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_of_another_layout_version_is_refused_with_a_clear_log_line() {
    let socket = format!("shmbridge-e2e-wrong-version-{}", std::process::id());
    shmbridge_system_tests::fake_producer::serve_layout_version(&socket, WRONG_VERSION, 2);
    let (_users, gateway) = start_pair(&["--shm-socket", &socket]).await;
    let http = client();
    let response = http
        .get(format!("{}/api/users-via-shm", gateway.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let expected = format!(
        "layout version {WRONG_VERSION}, expected {}",
        shmbridge::layout::LAYOUT_VERSION
    );
    let line = gateway
        .log_line_containing(&expected, Duration::from_secs(5))
        .await;
    let line = line.expect("the gateway logs why it refused the segment");
    assert!(line.contains("WARN") && line.contains(&socket), "{line}");
    let readiness = http
        .get(format!("{}/readyz", gateway.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(readiness.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The same problem again is not logged again.
    let repeated = gateway
        .log_line_containing(&expected, Duration::from_millis(300))
        .await;
    assert_eq!(repeated, None);
}

/// Polls `/metrics` until a request to `route` is being handled (at most 5 s).
async fn wait_until_in_flight(http: &reqwest::Client, base: &str, route: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = http.get(format!("{base}/metrics")).send().await.unwrap();
        let scrape = parse_metrics(&text.text().await.unwrap());
        if gauge(&scrape, "http_requests_in_flight", &[("route", route)]) >= 1.0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no request to {route} in flight after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    let (users, mut gateway) = start_pair(&["--deadline", "5s"]).await;
    let http = client();
    // A paused users-service keeps the gateway's request in flight while SIGTERM arrives.
    users.send_signal(Signal::SIGSTOP);
    let url = format!("{}/api/users-via-api?count=10&seed=2", gateway.url());
    let in_flight = tokio::spawn({
        let http = http.clone();
        async move {
            let response = http.get(url).send().await.unwrap();
            (response.status(), response.bytes().await.unwrap())
        }
    });
    wait_until_in_flight(&http, &gateway.url(), "/api/users-via-api").await;
    gateway.send_signal(Signal::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        gateway.wait_exit(Duration::ZERO).await.is_none(),
        "gateway exited with a request in flight"
    );
    let refused = reqwest::Client::new()
        .get(format!("{}/healthz", gateway.url()))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a draining gateway must not accept new connections"
    );

    users.send_signal(Signal::SIGCONT);
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("the in-flight request finishes")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, users_json(10, 2));
    let exit = gateway
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("gateway exits after draining");
    assert!(exit.success(), "{exit:?}");
}

/// Checks the exposition like a scraper (prometheus-parse) plus promtool-style rules, and
/// returns the value of `name` with exactly `labels`.
fn parse_metrics(text: &str) -> prometheus_parse::Scrape {
    let mut typed = std::collections::HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            if kind == "counter" {
                assert!(
                    name.ends_with("_total"),
                    "counter {name} must end in _total"
                );
            }
            typed.insert(name.to_owned(), kind.to_owned());
        } else if !line.is_empty() && !line.starts_with('#') {
            let (series, value) = line.rsplit_once(' ').expect("sample is `series value`");
            value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("bad value in {line:?}"));
            let name = series.split('{').next().expect("series has a name");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix)
                        .filter(|base| typed.contains_key(*base))
                })
                .unwrap_or(name);
            assert!(
                typed.contains_key(family),
                "sample {name} has no # TYPE line"
            );
        }
    }
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text")
}

fn counter(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    sum_samples(scrape, name, labels, "counter", |value| match value {
        prometheus_parse::Value::Counter(value) | prometheus_parse::Value::Untyped(value) => {
            Some(*value)
        }
        _ => None,
    })
}

fn gauge(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    sum_samples(scrape, name, labels, "gauge", |value| match value {
        prometheus_parse::Value::Gauge(value) | prometheus_parse::Value::Untyped(value) => {
            Some(*value)
        }
        _ => None,
    })
}

/// Sums the samples of `name` carrying all of `labels`; `of_kind` picks the value out of a
/// sample of the expected type and rejects any other.
fn sum_samples(
    scrape: &prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
    kind: &str,
    of_kind: impl Fn(&prometheus_parse::Value) -> Option<f64>,
) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == name)
        .filter(|sample| {
            labels
                .iter()
                .all(|(key, value)| sample.labels.get(key) == Some(*value))
        })
        .map(|sample| {
            of_kind(&sample.value)
                .unwrap_or_else(|| panic!("{name} is not a {kind}: {:?}", sample.value))
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_and_counters_move() {
    let (users, gateway) = start_pair(&[]).await;
    let http = client();
    let scrape = |url: String| {
        let http = http.clone();
        async move { parse_metrics(&http.get(url).send().await.unwrap().text().await.unwrap()) }
    };
    let shm_ok = [("route", "/api/users-via-shm"), ("status", "200")];
    let before = scrape(format!("{}/metrics", gateway.url())).await;
    for _ in 0..3 {
        http.get(format!("{}/api/users-via-shm", gateway.url()))
            .send()
            .await
            .unwrap();
    }
    let after = scrape(format!("{}/metrics", gateway.url())).await;
    assert_eq!(
        counter(&after, "http_requests_total", &shm_ok)
            - counter(&before, "http_requests_total", &shm_ok),
        3.0
    );
    // Labelled by the tier that carried the body, as `x-transport` names it: the seed's
    // 256,873-byte body fits a slot.
    assert_eq!(
        counter(&after, "payload_bytes_total", &[("transport", "shm-slot")]),
        3.0 * 256_873.0
    );
    let producer = scrape(format!("{}/metrics", users.url())).await;
    let published = [("signal", "channel")];
    assert_eq!(
        counter(&producer, "shm_publications_total", &published),
        3.0
    );
}
