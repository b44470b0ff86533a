//! Slow readers: clients that ask the gateway for a large body, one after another, and read it
//! very slowly through a small receive buffer, so that the gateway must hold each body (in its
//! budget) as long as they take; after their slow spell they read the rest at full speed and
//! check every byte against the expected body, as every client does. Raw TCP: the receive buffer is theirs to
//! size (an HTTP client library's would grow), and the answer's head (its `Retry-After`) theirs
//! to read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use shmbridge_server::payload::CRC_HEADER;
use shmbridge_server::transport_header::{TRANSPORT_HEADER, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::ClientGroup;
use super::clients::{Answered, CLIENT_TIMEOUT};
use crate::loadtest::load::request::status_failure;
use crate::loadtest::load::stats::{Failure, FailureClass, Outcome};
use crate::loadtest::load::verify::{BodyChecker, Expected, Verdict};

/// The receive buffer a slow reader asks for (the kernel doubles it): a few pages, so the
/// kernel takes little of the body off the gateway's hands.
const RECEIVE_BUFFER: u32 = 16 << 10;
/// What a slow reader reads per step of its slow spell, and the pause after each: 200 KiB/s.
const TRICKLE_BYTES: usize = 4 << 10;
const TRICKLE_PAUSE: Duration = Duration::from_millis(20);
/// Bytes read at a time at full speed.
const READ_BYTES: usize = 256 << 10;
/// The longest response head read: the gateway's are a few hundred bytes.
const HEAD_LIMIT: usize = 16 << 10;
/// Response headers parsed at most.
const MAX_HEADERS: usize = 32;

/// The slow readers of a round, reading.
pub struct SlowReaders {
    readers: JoinSet<Answered>,
    slow_until: Instant,
}

/// Until when the slow readers read slowly: set once the last of them has begun.
type SlowUntil = watch::Receiver<Option<Instant>>;

impl SlowReaders {
    /// Starts the slow readers of `groups` against the gateway at `gateway`, one after another:
    /// each once the answer of the one before has begun (or failed), so that users-service
    /// makes their bodies one at a time and only the gateway's budget decides which it holds.
    /// All read slowly until `slow` after the last one's answer has begun, when this returns,
    /// so that they hold their bodies together however long their starts took; then each reads
    /// the rest at full speed.
    pub async fn start(
        gateway: SocketAddr,
        groups: &[ClientGroup],
        slow: Duration,
        checker: &Arc<BodyChecker>,
    ) -> SlowReaders {
        let (slow_until, until) = watch::channel(None);
        let mut readers = JoinSet::new();
        for group in groups {
            for (resource, seed) in group.requests() {
                let route = resource
                    .route(group.endpoint, seed)
                    .expect("checked when the scenario was parsed");
                let expected = resource.expected(seed);
                let checker = Arc::clone(checker);
                let (began, beginning) = oneshot::channel();
                let until = until.clone();
                readers.spawn(async move {
                    let exchange = read_slowly(gateway, &route, expected, until, began, &checker);
                    match tokio::time::timeout(slow + CLIENT_TIMEOUT, exchange).await {
                        Ok(Ok(answered) | Err(answered)) => answered,
                        Err(_elapsed) => Answered::now(failed(FailureClass::Timeout, ""), None),
                    }
                });
                // Ok, or the reader ended (its sender dropped) or hung: either way, the next.
                let _ = tokio::time::timeout(CLIENT_TIMEOUT, beginning).await;
            }
        }
        let until = Instant::now() + slow;
        // Every reader still reading holds a receiver; one that ended needs no deadline.
        let _ = slow_until.send(Some(until));
        SlowReaders {
            readers,
            slow_until: until,
        }
    }

    /// When they stop reading slowly.
    pub fn slow_until(&self) -> Instant {
        self.slow_until
    }

    /// Waits for every reader's answer.
    pub async fn finish(mut self) -> Vec<Answered> {
        let mut answers = Vec::new();
        while let Some(answered) = self.readers.join_next().await {
            // A reader task only ends by returning its answer; a panic in it is the harness's
            // bug.
            answers.push(answered.expect("a slow reader does not panic"));
        }
        answers
    }
}

fn failed(class: FailureClass, detail: impl Into<String>) -> Outcome {
    Outcome::Failed(Failure {
        class,
        detail: detail.into(),
    })
}

/// One slow reader's exchange; `Err` carries a failure so that `?` ends it at the first
/// problem.
async fn read_slowly(
    gateway: SocketAddr,
    route: &str,
    expected: Expected,
    until: SlowUntil,
    began: oneshot::Sender<()>,
    checker: &BodyChecker,
) -> Result<Answered, Answered> {
    let connection = |error: std::io::Error| {
        Answered::now(
            failed(FailureClass::Connection, error.kind().to_string()),
            None,
        )
    };
    let socket = TcpSocket::new_v4().map_err(connection)?;
    socket
        .set_recv_buffer_size(RECEIVE_BUFFER)
        .map_err(connection)?;
    let mut stream = socket.connect(gateway).await.map_err(connection)?;
    let request = format!("GET {route} HTTP/1.1\r\nhost: {gateway}\r\nconnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(connection)?;
    let (head, mut body) = read_head(&mut stream).await?;
    let _ = began.send(());
    let answered = |outcome| Answered::now(outcome, head.transport);
    let Some(length) = head.content_length else {
        return Err(answered(failed(
            FailureClass::Body,
            "no content-length in the answer",
        )));
    };
    let Ok(status) = StatusCode::from_u16(head.status) else {
        return Err(answered(failed(
            FailureClass::Body,
            format!("status {} is no HTTP status", head.status),
        )));
    };
    let left = length.saturating_sub(body.len() as u64);
    if status != StatusCode::OK {
        // An error body is a few hundred bytes of JSON; only its start is kept, for its code.
        read_to(&mut stream, left, |bytes| {
            let room = HEAD_LIMIT.saturating_sub(body.len()).min(bytes.len());
            body.extend_from_slice(&bytes[..room]);
        })
        .await
        .map_err(|error| answered(failed(FailureClass::Body, error)))?;
        return Ok(answered(Outcome::Failed(status_failure(
            status,
            head.retry_after,
            &body,
        ))));
    }
    let mut verification = checker.start_expecting(expected);
    verification.update(&body);
    let mut left = left;
    let mut chunk = vec![0; TRICKLE_BYTES];
    while left > 0 && until.borrow().is_none_or(|until| Instant::now() < until) {
        let read = read_some(&mut stream, &mut chunk, left)
            .await
            .map_err(|error| answered(failed(FailureClass::Body, error)))?;
        verification.update(&chunk[..read]);
        left -= read as u64;
        tokio::time::sleep(TRICKLE_PAUSE).await;
    }
    read_to(&mut stream, left, |bytes| verification.update(bytes))
        .await
        .map_err(|error| answered(failed(FailureClass::Body, error)))?;
    Ok(answered(match verification.finish(head.crc.as_deref()) {
        Verdict::Verified => Outcome::Verified,
        Verdict::Corrupt(corruption) => Outcome::Corrupt(Box::new(corruption)),
        Verdict::BadHeader(reason) => failed(FailureClass::Body, reason),
    }))
}

/// Reads once into `buffer`, at most `left` bytes; the stream ending with bytes of the body
/// still to come is an error (its text low in cardinality: no byte counts).
async fn read_some(stream: &mut TcpStream, buffer: &mut [u8], left: u64) -> Result<usize, String> {
    let want = buffer
        .len()
        .min(usize::try_from(left).unwrap_or(usize::MAX));
    match stream.read(&mut buffer[..want]).await {
        Ok(0) => Err("closed before the body ended".to_owned()),
        Ok(read) => Ok(read),
        Err(error) => Err(format!("{} before the body ended", error.kind())),
    }
}

/// Reads the `left` bytes still to come at full speed, handing each read to `each`.
async fn read_to(
    stream: &mut TcpStream,
    mut left: u64,
    mut each: impl FnMut(&[u8]),
) -> Result<(), String> {
    let mut buffer = vec![0; READ_BYTES];
    while left > 0 {
        let read = read_some(stream, &mut buffer, left).await?;
        each(&buffer[..read]);
        left -= read as u64;
    }
    Ok(())
}

/// Reads until the response head is complete; returns it and the body bytes read with it.
async fn read_head(stream: &mut TcpStream) -> Result<(Head, Vec<u8>), Answered> {
    let body_error = |detail: String| Answered::now(failed(FailureClass::Body, detail), None);
    let mut bytes = Vec::new();
    let mut buffer = vec![0; TRICKLE_BYTES];
    loop {
        let read = stream.read(&mut buffer).await.map_err(|error| {
            Answered::now(
                failed(FailureClass::Connection, error.kind().to_string()),
                None,
            )
        })?;
        if read == 0 {
            return Err(Answered::now(
                failed(
                    FailureClass::Connection,
                    "closed before the answer's head ended",
                ),
                None,
            ));
        }
        bytes.extend_from_slice(&buffer[..read]);
        if let Some(head) = parse_head(&bytes).map_err(body_error)? {
            let body = bytes.split_off(head.len);
            return Ok((head, body));
        }
        if bytes.len() > HEAD_LIMIT {
            return Err(body_error(format!(
                "no end of the answer's head in {HEAD_LIMIT} bytes"
            )));
        }
    }
}

/// What a slow reader needs of a response head.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    /// Bytes of the head, its blank line included.
    len: usize,
    status: u16,
    content_length: Option<u64>,
    crc: Option<String>,
    retry_after: bool,
    transport: Option<Transport>,
}

/// The head at the start of `bytes`: `Ok(None)` while it is incomplete.
fn parse_head(bytes: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(format!("unreadable answer head: {error}")),
    };
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case(name))
            .and_then(|header| std::str::from_utf8(header.value).ok())
            .map(str::trim)
    };
    Ok(Some(Head {
        len,
        status: response.code.expect("a complete head has a status"),
        content_length: header("content-length").and_then(|value| value.parse().ok()),
        crc: header(CRC_HEADER).map(str::to_owned),
        retry_after: header("retry-after").is_some(),
        transport: header(TRANSPORT_HEADER).and_then(Transport::parse),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_read_once_complete_with_what_a_reader_needs() {
        let refused = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
Retry-After: 1\r\ncontent-length: 56\r\n\r\n{\"error\"";
        let head_len = refused.len() - b"{\"error\"".len();
        assert_eq!(parse_head(&refused[..40]), Ok(None));
        assert_eq!(
            parse_head(refused),
            Ok(Some(Head {
                len: head_len,
                status: 503,
                content_length: Some(56),
                crc: None,
                retry_after: true,
                transport: None,
            }))
        );
        let served =
            b"HTTP/1.1 200 OK\r\ncontent-length: 62006316\r\nx-payload-crc32: 1a2b3c4d\r\n\
x-transport: shm-sealed\r\n\r\n";
        let head = parse_head(served).unwrap().unwrap();
        assert_eq!(head.len, served.len());
        assert_eq!(head.content_length, Some(62_006_316));
        assert_eq!(head.crc.as_deref(), Some("1a2b3c4d"));
        assert_eq!(head.transport, Some(Transport::ShmSealed));
        assert!(!head.retry_after);
        assert!(parse_head(b"HTTP/1.1 abc\r\n\r\n").is_err());
    }
}
