//! Resize faults (`resize`): attempts to change the live segment's size or punch holes in it
//! under its readers.
//!
//! Resizing (ftruncate, fallocate past the end, an O_TRUNC reopen) turns every access past the
//! new end into SIGBUS; the segment is a memfd sealed against shrinking and growing, so each
//! attempt must be refused, and one the kernel allows, or a size that changed, is a violated
//! invariant.
//!
//! Hole punching (`fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`) keeps the size and
//! is *not* stopped by those seals: it zeroes whole pages in place. It is injected, not judged:
//! the last descriptor page, the header page and one page of a live payload are punched, and the
//! scenario's invariants (no corrupt body, no request outliving its timeout, no slot leaked at
//! the end) say whether the transport made it harmless. The one thing judged here is the
//! header: users-service must restore it ([`HEADER_RESTORE_LIMIT`]), else no restarted gateway
//! could attach again.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use nix::fcntl::{FallocateFlags, fallocate};
use nix::unistd::ftruncate;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use shmbridge::layout::{DESCRIPTOR_SIZE, HEADER_SIZE, PAYLOAD_ALIGN};
use shmbridge::{Segment, SlotState};

use super::class::{ATTACH_TIMEOUT, Fault, FaultClass, FaultContext, Injected};
use super::error::{FaultError, InjectError};
use super::scribble::PAYLOAD_HUNT;
use super::spec::{DurationRange, RepeatSpec};
use crate::loadtest::load::endpoint::Endpoint;
use crate::process::role::Role;
use crate::segment::{attach_with_file, segment_info};

/// `[fault.resize]`: every resize and punch, `count` times.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(transparent)]
pub struct ResizeSpec(pub RepeatSpec);

/// Every known way of shrinking or growing the live segment, each tried once, then the punches.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "action", rename = "resize")]
pub struct Resize {}

impl FaultClass for ResizeSpec {
    const NAME: &'static str = "resize";
    type Action = Resize;

    fn count(&self) -> u32 {
        self.0.count
    }

    fn count_mut(&mut self) -> &mut u32 {
        &mut self.0.count
    }

    fn draw(&self, _rng: &mut ChaCha8Rng) -> (DurationRange, Resize) {
        (self.0.interval, Resize {})
    }
}

impl Fault for Resize {
    fn role(&self) -> Role {
        Role::UsersService
    }

    /// A third process damages the segment: only the shm route reads it.
    fn affects(&self, endpoint: Endpoint) -> bool {
        endpoint.uses_shm()
    }

    fn label(&self) -> String {
        "resize attempts".to_owned()
    }

    async fn inject(&self, context: &mut FaultContext<'_>) -> Result<Injected, FaultError> {
        let socket = context.segment_socket().await?;
        let (attempts, size_after) = attempt_all(&socket, ATTACH_TIMEOUT)?;
        // Hunting for a live payload and waiting for the header block: off the async workers.
        let punches = tokio::task::spawn_blocking(move || punch_holes(&socket, ATTACH_TIMEOUT))
            .await
            .map_err(|source| InjectError::Task {
                task: "punching",
                source,
            })??;
        let info = segment_info(&context.supervisor.users_url(), ATTACH_TIMEOUT).await;

        let mut violations = Vec::new();
        let allowed: Vec<&str> = attempts
            .iter()
            .filter(|attempt| !attempt.refused())
            .map(|attempt| attempt.how)
            .collect();
        if !allowed.is_empty() {
            violations.push(format!("the kernel allowed: {}", allowed.join(", ")));
        }
        if punches.size_after != size_after {
            violations.push(format!(
                "punching changed the size from {size_after} to {} B",
                punches.size_after
            ));
        }
        let header_punched = punches
            .punches
            .iter()
            .any(|punch| punch.target == PunchTarget::Header && punch.outcome.is_ok());
        if header_punched && punches.header_restored_after.is_none() {
            violations.push(format!(
                "users-service did not restore the punched header within {HEADER_RESTORE_LIMIT:?}"
            ));
        }

        let mut refusals: Vec<&str> = attempts
            .iter()
            .filter_map(|attempt| attempt.outcome.as_ref().err())
            .map(String::as_str)
            .collect();
        let refused = refusals.len();
        refusals.dedup();
        let punched: Vec<String> = punches.punches.iter().map(describe).collect();
        let restored = punches
            .header_restored_after
            .map(|after| format!("; header restored after {} ms", after.as_millis()))
            .unwrap_or_default();
        Ok(Injected {
            note: Some(format!(
                "{refused} of {} resizes refused ({}); size afterwards {} B; {}{restored}{}",
                attempts.len(),
                refusals.join("; "),
                punches.size_after,
                punched.join(", "),
                info.err()
                    .map(|error| format!("; users-service then: {error}"))
                    .unwrap_or_default()
            )),
            violation: (!violations.is_empty()).then(|| violations.join("; ")),
            ..Injected::back_now()
        })
    }
}

fn describe(punch: &Punch) -> String {
    let target = match punch.target {
        PunchTarget::Payload { slot, live: true } => format!("live payload of slot {slot}"),
        PunchTarget::Payload { slot, live: false } => format!("idle payload of slot {slot}"),
        PunchTarget::Descriptors => "descriptor page".to_owned(),
        PunchTarget::Header => "header page".to_owned(),
    };
    match &punch.outcome {
        Ok(()) => format!("punched {target} @{}", punch.offset),
        Err(refusal) => format!("punch of {target} refused ({refusal})"),
    }
}

/// What a punch zeroes: whole pages are what the kernel frees, and what the layout aligns the
/// payload area to.
pub const PAGE: u64 = PAYLOAD_ALIGN;
/// How long users-service may take to restore a punched header: its reaper, which restores it,
/// runs every 250 ms.
pub const HEADER_RESTORE_LIMIT: Duration = Duration::from_secs(2);

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
    Ok((attempts, size_of(&file)?))
}

/// Which page a punch aimed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PunchTarget {
    /// A page of a slot's payload: of a published one (ready or being read) when one showed up
    /// within [`PAYLOAD_HUNT`].
    Payload { slot: u32, live: bool },
    /// The last page of the descriptor table, when it is not also the header's page.
    Descriptors,
    /// Page 0: the header, and the first descriptors.
    Header,
}

/// One punch and what the kernel said.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Punch {
    pub target: PunchTarget,
    /// Byte offset of the punched page.
    pub offset: u64,
    /// `Err` carries the refusal.
    pub outcome: Result<(), String>,
}

/// The punches of one fault, and what became of the header.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Punches {
    pub punches: Vec<Punch>,
    /// How long after the header punch the shared header read as the validated one again;
    /// `None` if it did not within [`HEADER_RESTORE_LIMIT`] (or the punch was refused).
    pub header_restored_after: Option<Duration>,
    /// The segment's size afterwards (which must still be the header's `total_size`).
    pub size_after: u64,
}

/// Punches the last descriptor page and the header page out of the segment served on
/// `@socket`, waits up to [`HEADER_RESTORE_LIMIT`] for the header to be restored, then punches
/// a page of a live payload. The payload comes last so that its descriptor is whole when a
/// reader copies it: the reader then meets the zeroed bytes themselves, not an emptied
/// descriptor. Blocks for up to that limit plus [`PAYLOAD_HUNT`]: call it off the async
/// workers.
pub fn punch_holes(socket: &str, timeout: Duration) -> Result<Punches, InjectError> {
    let (segment, file) = attach_with_file(socket, timeout)?;
    let header = segment.header();
    let mut punches = Vec::new();
    let mut punch = |target, offset| {
        let outcome = punch_page(&file, offset);
        let punched = outcome.is_ok();
        punches.push(Punch {
            target,
            offset,
            outcome,
        });
        punched
    };
    let last_descriptor_byte =
        header.descriptors_offset + u64::from(header.slot_count) * DESCRIPTOR_SIZE - 1;
    let last_descriptor_page = last_descriptor_byte / PAGE;
    if last_descriptor_page > 0 {
        punch(PunchTarget::Descriptors, last_descriptor_page * PAGE);
    }
    let header_restored_after = if punch(PunchTarget::Header, 0) {
        wait_for_header(&file, &header.to_bytes())?
    } else {
        None
    };
    let (slot, live) = slot_holding_data(&segment);
    let payload = header.payload_offset + u64::from(slot) * u64::from(header.slot_size);
    punch(PunchTarget::Payload { slot, live }, payload / PAGE * PAGE);
    Ok(Punches {
        punches,
        header_restored_after,
        size_after: size_of(&file)?,
    })
}

fn punch_page(file: &File, offset: u64) -> Result<(), String> {
    fallocate(
        file,
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        i64::try_from(offset).expect("offsets inside a validated segment fit i64"),
        PAGE as i64,
    )
    .map_err(|errno| format!("{errno:?}: {}", errno.desc()))
}

/// A slot whose payload a reader may be about to copy (ready or being read), watched for up to
/// [`PAYLOAD_HUNT`]; slot 0 if none showed up.
fn slot_holding_data(segment: &Segment) -> (u32, bool) {
    let deadline = Instant::now() + PAYLOAD_HUNT;
    loop {
        let holding = (0..segment.slot_count())
            .filter_map(|slot| segment.inspect(slot))
            .find(|view| matches!(view.state, Some(SlotState::Ready | SlotState::Reading)));
        if let Some(view) = holding {
            return (view.slot, true);
        }
        if Instant::now() >= deadline {
            return (0, false);
        }
        std::thread::yield_now();
    }
}

/// Polls the shared header (through the file, not the mapping) until it reads as `valid` again,
/// for at most [`HEADER_RESTORE_LIMIT`].
fn wait_for_header(
    file: &File,
    valid: &[u8; HEADER_SIZE as usize],
) -> Result<Option<Duration>, InjectError> {
    let start = Instant::now();
    let mut shared = [0u8; HEADER_SIZE as usize];
    loop {
        file.read_exact_at(&mut shared, 0)
            .map_err(|error| InjectError::io("read the segment header", error))?;
        if shared == *valid {
            return Ok(Some(start.elapsed()));
        }
        if start.elapsed() >= HEADER_RESTORE_LIMIT {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn size_of(file: &File) -> Result<u64, InjectError> {
    Ok(file
        .metadata()
        .map_err(|error| InjectError::io("stat the segment", error))?
        .len())
}
