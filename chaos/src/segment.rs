//! Reaching a running users-service's live segment from outside: asking it which socket serves
//! the segment now, and attaching as a gateway would, with the segment's descriptor as a file
//! of our own for damage the validated `Segment` does not allow. `inspect` and the chaos
//! harness's leak check and injectors all start here.

use std::fs::File;
use std::io;
use std::time::Duration;

use shmbridge::{AttachError, Segment, attach_via_socket};
use shmbridge_server::segment_info::SegmentInfo;
use url::Url;

/// Why the live segment could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("cannot ask users-service at {url} for its segment: {reason}")]
    SegmentInfo { url: Url, reason: String },
    #[error("cannot attach to the segment on {}: {source}", shmbridge::display_socket(.socket))]
    Attach { socket: String, source: AttachError },
    #[error(
        "the segment on {} has no descriptor (not a memfd or file segment)",
        shmbridge::display_socket(.socket)
    )]
    NoDescriptor { socket: String },
    #[error("cannot duplicate the segment descriptor: {0}")]
    Duplicate(io::Error),
}

/// Asks users-service (`GET /shm/segment`) which socket serves its segment now: the name
/// changes with every restart.
pub async fn segment_info(
    users_service: &Url,
    timeout: Duration,
) -> Result<SegmentInfo, SegmentError> {
    let fail = |reason: String| SegmentError::SegmentInfo {
        url: users_service.clone(),
        reason,
    };
    let url = users_service
        .join("/shm/segment")
        .map_err(|error| fail(error.to_string()))?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .map_err(|error| fail(error.to_string()))?;
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|error| fail(error.to_string()))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|error| fail(error.to_string()))?;
    if !status.is_success() {
        return Err(fail(format!(
            "status {status}: {}",
            String::from_utf8_lossy(&body)
        )));
    }
    serde_json::from_slice(&body).map_err(|error| fail(format!("unreadable answer: {error}")))
}

/// Attaches to the segment served on `@socket` as a gateway would, and also returns its
/// descriptor as a file of our own, for damage the validated `Segment` does not allow.
pub fn attach_with_file(socket: &str, timeout: Duration) -> Result<(Segment, File), SegmentError> {
    let segment = attach_via_socket(socket, timeout).map_err(|source| SegmentError::Attach {
        socket: socket.to_owned(),
        source,
    })?;
    let fd = segment.fd().ok_or_else(|| SegmentError::NoDescriptor {
        socket: socket.to_owned(),
    })?;
    let file = File::from(fd.try_clone_to_owned().map_err(SegmentError::Duplicate)?);
    Ok((segment, file))
}
