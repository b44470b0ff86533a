//! Attempts to shrink or grow the live segment under its readers — the change that turns every
//! access past the new end into SIGBUS. The segment is a memfd sealed against shrinking and
//! growing, so each attempt must be refused; one that succeeds is a violated invariant.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::fcntl::{FallocateFlags, fallocate};
use nix::unistd::ftruncate;

use super::{InjectError, attach_with_file};

/// One attempt and what the kernel said.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ResizeAttempt {
    pub how: &'static str,
    /// `Err` carries the refusal (e.g. "EPERM: Operation not permitted").
    pub outcome: Result<(), String>,
}

impl ResizeAttempt {
    pub fn refused(&self) -> bool {
        self.outcome.is_err()
    }
}

/// Every way this module knows to change the size of the segment served on `@socket`, each
/// tried once, and the size found afterwards (which must still be the header's `total_size`).
pub fn attempt_all(
    socket: &str,
    timeout: Duration,
) -> Result<(Vec<ResizeAttempt>, u64), InjectError> {
    let (segment, file) = attach_with_file(socket, timeout)?;
    let total = i64::try_from(segment.header().total_size).expect("validated size fits i64");
    let errno =
        |result: nix::Result<()>| result.map_err(|errno| format!("{errno:?}: {}", errno.desc()));
    let attempts = vec![
        ResizeAttempt {
            how: "ftruncate to 0 bytes",
            outcome: errno(ftruncate(&file, 0)),
        },
        ResizeAttempt {
            how: "ftruncate to half its size",
            outcome: errno(ftruncate(&file, total / 2)),
        },
        ResizeAttempt {
            how: "ftruncate to twice its size",
            outcome: errno(ftruncate(&file, total * 2)),
        },
        ResizeAttempt {
            how: "fallocate 1 MiB past its end",
            outcome: errno(fallocate(&file, FallocateFlags::empty(), total, 1 << 20)),
        },
        ResizeAttempt {
            how: "reopen through /proc/self/fd with O_TRUNC",
            outcome: OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
                .map(drop)
                .map_err(|error| error.to_string()),
        },
    ];
    let size = file
        .metadata()
        .map_err(|error| InjectError::io("stat the segment after the attempts", error))?
        .len();
    Ok((attempts, size))
}
