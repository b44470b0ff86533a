//! Asking users-service over its control channel as a gateway does, for the faults that need a
//! publication of their own and must hold it unredeemed (the rogue hog, a pid-reuse reader): the
//! request in the channel's HTTP convention, one request answered by its [`Publication`], and
//! running such blocking exchanges off the async workers ([`blocking`]).

use std::sync::mpsc;
use std::time::Duration;

use shmbridge::control::{ControlClient, Publication, RequestError};
use shmbridge::http::HttpRequest;
use shmbridge::monotonic_now_ns;

use super::error::InjectError;

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

/// How much longer than a request's deadline [`ask`] waits for its answer: a producer that
/// could not publish by the deadline refuses at the deadline, and that refusal (say, no room for
/// a sealed payload) is the answer to read, not a race against the asker's own timeout.
const ANSWER_GRACE: Duration = Duration::from_secs(1);

/// Sends `request` on `client`, due within `timeout`, and waits for its publication (up to
/// [`ANSWER_GRACE`] past the deadline, for a refusal sent at it), handed back unredeemed
/// (dropping it sends a release frame; holding it holds its slot). Past that wait the request is
/// abandoned, and an answer arriving later is released.
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
    answer
        .recv_timeout(timeout + ANSWER_GRACE)
        .unwrap_or_else(|error| {
            client.abandon(id);
            Err(match error {
                mpsc::RecvTimeoutError::Timeout => RequestError::TimedOut(timeout),
                mpsc::RecvTimeoutError::Disconnected => RequestError::Closed,
            })
        })
}

/// Runs a blocking exchange (a socket, a watch over the segment) off the async workers.
pub async fn blocking<T: Send + 'static>(
    task: &'static str,
    work: impl FnOnce() -> Result<T, InjectError> + Send + 'static,
) -> Result<T, InjectError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|source| InjectError::Task { task, source })?
}
