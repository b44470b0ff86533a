//! Faults injected from a third process — the harness itself — rather than through the services'
//! own fault points: scribbles into the live segment, attempts to resize it, a slot holder whose
//! pid is taken over after it dies, a full filesystem, and stale segment files. Each module does
//! one kind of damage and reports exactly what it did, so the scenario runner can count it.

pub mod pid_reuse;
pub mod resize;
pub mod scribble;
pub mod stale;
pub mod tmpfs;

use std::fs::File;
use std::io;
use std::time::Duration;

use shmbridge::{AttachError, Segment, attach_via_socket};
use shmbridge_server::segment_info::SegmentInfo;
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("cannot ask users-service at {url} for its segment: {reason}")]
    SegmentInfo { url: Url, reason: String },
    #[error("cannot attach to the segment on @{socket}: {source}")]
    Attach { socket: String, source: AttachError },
    #[error("the segment on @{socket} has no descriptor (not a memfd or file segment)")]
    NoDescriptor { socket: String },
    #[error("cannot {what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("{0}")]
    Refused(String),
}

impl InjectError {
    pub fn io(what: impl Into<String>, source: impl Into<io::Error>) -> InjectError {
        InjectError::Io {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// Asks users-service (`GET /shm/segment`) which socket serves its segment now: the name
/// changes with every restart.
pub async fn segment_info(
    users_service: &Url,
    timeout: Duration,
) -> Result<SegmentInfo, InjectError> {
    let fail = |reason: String| InjectError::SegmentInfo {
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
pub fn attach_with_file(socket: &str, timeout: Duration) -> Result<(Segment, File), InjectError> {
    let segment = attach_via_socket(socket, timeout).map_err(|source| InjectError::Attach {
        socket: socket.to_owned(),
        source,
    })?;
    let fd = segment.fd().ok_or_else(|| InjectError::NoDescriptor {
        socket: socket.to_owned(),
    })?;
    let file = File::from(
        fd.try_clone_to_owned()
            .map_err(|error| InjectError::io("duplicate the segment descriptor", error))?,
    );
    Ok((segment, file))
}
