//! A client that stops reading, against the gateway's process: while it stalls, the response's
//! bytes stay reserved in the memory budget and other clients are served; after
//! `--write-timeout` without progress the gateway closes the connection and the bytes are given
//! back (`budget_reserved_bytes{budget="gateway_memory"}` returns to 0).

mod process;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// ~22 MB of users over REST, held whole by the gateway: more than loopback's socket buffers
/// can absorb for a client that reads nothing.
const STALLED_URI: &str = "/api/users-via-api?count=60000&seed=3";

async fn reserved_bytes(client: &reqwest::Client, gateway: &str) -> f64 {
    let text = client
        .get(format!("{gateway}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("budget_reserved_bytes{budget=\"gateway_memory\"} "))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_and_its_bytes_are_given_back() {
    let users = process::users_service(&["--listen", "127.0.0.1:0"]).await;
    let upstream = users.url();
    let gateway = process::gateway(&[
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream,
        "--write-timeout",
        "2s",
        // A debug build makes the body in a few seconds: past the default deadline of 2 s.
        "--deadline",
        "60s",
    ])
    .await;
    let base = gateway.url();
    let client = process::client();

    let mut stalled = tokio::net::TcpStream::connect(gateway.address())
        .await
        .unwrap();
    let request = format!("GET {STALLED_URI} HTTP/1.1\r\nhost: gateway\r\n\r\n");
    stalled.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(60), stalled.read(&mut head))
        .await
        .expect("the answer starts within 60 s")
        .unwrap();
    let head = String::from_utf8_lossy(&head[..read]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let body_len: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .expect("the head declares the body's length")
        .trim()
        .parse()
        .unwrap();

    // The client reads nothing more: the body cannot all be written, so its bytes stay held.
    let held = reserved_bytes(&client, &base).await;
    assert!(
        held >= 20e6,
        "{held} bytes reserved while the client stalls"
    );
    let small = client
        .get(format!("{base}/api/users-via-api?count=10"))
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200, "another client is served meanwhile");

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reserved = reserved_bytes(&client, &base).await;
        if reserved == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{reserved} bytes still reserved 30 s after the client stalled"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The connection was closed: what is left to read ends short of the body.
    let mut rest = Vec::new();
    let outcome = tokio::time::timeout(Duration::from_secs(30), stalled.read_to_end(&mut rest))
        .await
        .expect("the closed connection reads to its end within 30 s");
    assert!(
        outcome.is_err() || read + rest.len() < body_len,
        "{} of {body_len} bytes read after the stall: the body was not cut off",
        rest.len()
    );
}
