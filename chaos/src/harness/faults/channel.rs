//! Asking users-service over its control channel as a gateway does, for the faults that need a
//! publication of their own and must hold it unredeemed (the rogue hog, a pid-reuse reader): the
//! request in the channel's HTTP convention, and one request answered by its [`Publication`].

use std::sync::mpsc;
use std::time::Duration;

use shmbridge::control::{ControlClient, Publication, RequestError};
use shmbridge::http::HttpRequest;
use shmbridge::monotonic_now_ns;

/// `GET target` in the HTTP convention of the channel's opaque request bytes
/// (`shmbridge::http`), as the gateway sends it.
///
/// # Panics
/// If `target` is no origin-form target (the callers' are constants).
pub fn get(target: &str) -> Vec<u8> {
    HttpRequest::get(target)
        .encode()
        .expect("a GET of a valid target encodes")
}

/// Sends `request` on `client` and waits at most `timeout` for its publication, handed back
/// unredeemed (dropping it sends a release frame; holding it holds its slot). Past the timeout
/// the request is abandoned, and an answer arriving later is released.
pub fn ask(
    client: &ControlClient,
    request: &[u8],
    timeout: Duration,
) -> Result<Publication, RequestError> {
    let (answered, answer) = mpsc::sync_channel(1);
    let deadline_ns = monotonic_now_ns().saturating_add(timeout.as_nanos() as u64);
    let id = client.request_with(request, deadline_ns, move |result| {
        let _ = answered.send(result);
    })?;
    answer.recv_timeout(timeout).unwrap_or_else(|error| {
        client.abandon(id);
        Err(match error {
            mpsc::RecvTimeoutError::Timeout => RequestError::TimedOut(timeout),
            mpsc::RecvTimeoutError::Disconnected => RequestError::Closed,
        })
    })
}
