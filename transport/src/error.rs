//! One small error enum per operation: create, attach, claim, publish, acquire, read.
//!
//! Each variant names what was found and what was expected, so a log line is enough to tell a
//! restarted producer from a scribbled segment from a full filesystem.

use std::io;
use std::time::Duration;

use thiserror::Error;

use crate::layout::{GeometryError, SlotState};
use crate::sealed::SealedError;

/// Creating a segment failed; nothing is left behind.
#[derive(Debug, Error)]
pub enum CreateError {
    // Not a `source`: the message already says it, and a chain printer would say it twice.
    #[error("invalid segment configuration: {0}")]
    InvalidConfig(GeometryError),
    #[error("no space for a {requested}-byte segment (ENOSPC)")]
    NoSpace { requested: u64 },
    #[error("{op} failed: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Attaching to a segment failed; the segment was not mapped, or was unmapped again.
#[derive(Debug, Error)]
pub enum AttachError {
    #[error("{op} failed: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("segment descriptor is not sealed against shrinking and growing (seals {found:#x})")]
    NotSealed { found: u32 },
    #[error("segment file is owned by uid {found}, expected {expected}")]
    WrongOwner { found: u32, expected: u32 },
    #[error("segment file mode {found:o} lets other users in, expected 600")]
    InsecureMode { found: u32 },
    #[error("segment file is not a regular file")]
    NotRegularFile,
    #[error("segment is {found} bytes, expected {expected}")]
    SizeMismatch { found: u64, expected: u64 },
    #[error("bad magic {found:02x?}, expected {expected:02x?}")]
    BadMagic { found: [u8; 8], expected: [u8; 8] },
    #[error("layout version {found}, expected {expected}")]
    VersionMismatch { found: u32, expected: u32 },
    #[error("header crc32 {found:08x}, expected {expected:08x}")]
    HeaderCorrupt { found: u32, expected: u32 },
    #[error("header field {field} is {found}, expected {expected}")]
    LayoutMismatch {
        field: &'static str,
        found: u64,
        expected: u64,
    },
    #[error("descriptor server answered with an unexpected message: {0}")]
    Protocol(&'static str),
    #[error(
        "the producer closed the connection without a greeting: this process's uid is not one it \
         allows, or it already serves as many peers as it may"
    )]
    Refused,
    #[error(
        "the process answering on the socket runs as uid {uid}, neither this process's ({own}) \
         nor a trusted producer uid: refusing a segment it hands out"
    )]
    UntrustedProducer { uid: u32, own: u32 },
    #[error(
        "the process answering on the socket (pid, uid) {answering:?} did not create the segment \
         it hands out (creator {creator:?}): a squatter on the socket name?"
    )]
    NotTheCreator {
        answering: (u32, u32),
        creator: (u32, u32),
    },
    #[error("{op} did not finish within {timeout:?}")]
    TimedOut { op: &'static str, timeout: Duration },
    // Whole seconds in the message, so that repeated attempts log one stable line.
    #[error(
        "CLOCK_MONOTONIC here runs {} the producer's: another time namespace, in which leases \
         and TTLs would be misread",
        clock_offset(.producer_ns, .own_ns)
    )]
    ClockMismatch { producer_ns: u64, own_ns: u64 },
}

/// How far the clock that read `own` runs from the one that read `producer`, in whole seconds.
fn clock_offset(producer: &u64, own: &u64) -> String {
    let (direction, nanos) = if own >= producer {
        ("ahead of", own - producer)
    } else {
        ("behind", producer - own)
    };
    match nanos / 1_000_000_000 {
        0 => format!("less than 1 s {direction}"),
        seconds => format!("{seconds} s {direction}"),
    }
}

/// `claim` or `publish_sealed` found no room.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum ClaimError {
    /// `max` is the slot size for `claim`, the largest sealed payload for `publish_sealed`.
    #[error("payload of {len} bytes is larger than the {max} bytes allowed")]
    TooLarge { len: usize, max: usize },
    #[error("all {slots} slots stayed busy until the deadline")]
    Exhausted { slots: u32 },
    /// Sealed payloads not yet redeemed held so many bytes until the deadline that this one
    /// would have passed `max`: the publishing peer's share
    /// (`ProducerOptions::max_sealed_bytes_per_peer`) when its own payloads hold it all, else
    /// the whole budget (`ProducerOptions::max_sealed_bytes`).
    #[error(
        "sealed payloads in flight stayed at {in_flight} of at most {max} bytes until the deadline"
    )]
    BytesExhausted { in_flight: u64, max: u64 },
}

/// `publish` found the slot no longer held by this writer.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum PublishError {
    #[error("slot {slot} was reclaimed while writing generation {generation}")]
    Reclaimed { slot: u32, generation: u64 },
}

/// `acquire` refused a handle.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum AcquireError {
    #[error("handle is for segment epoch {found:016x}, attached segment is {expected:016x}")]
    WrongEpoch { expected: u64, found: u64 },
    #[error("handle names slot {slot}, segment has {slots}")]
    SlotOutOfRange { slot: u32, slots: u32 },
    #[error("handle length {len} exceeds the slot size {max}")]
    TooLarge { len: u32, max: u32 },
    #[error(
        "stale handle for slot {slot}: expected ready generation {expected}, found {found_state:?} generation {found}"
    )]
    Stale {
        slot: u32,
        expected: u64,
        found: u64,
        found_state: Option<SlotState>,
    },
}

/// A publication gave no verified bytes. Its slot or ticket was released (or never acquired)
/// and a sealed payload's descriptor closed, whatever the reason.
#[derive(Debug, Error)]
pub enum RedeemError {
    #[error(transparent)]
    Acquire(#[from] AcquireError),
    /// A slot's copy, or an inline body, did not verify.
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Sealed(#[from] SealedError),
    #[error("the ticket of slot {slot} was reclaimed before its release; the bytes are discarded")]
    Reclaimed { slot: u32 },
}

/// Reading an acquired slot did not give the published bytes.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum ReadError {
    #[error("slot {slot} was reclaimed during the read; the bytes may have been overwritten")]
    Reclaimed { slot: u32 },
    #[error("payload crc32 {found:08x}, handle says {expected:08x}")]
    ChecksumMismatch { expected: u32, found: u32 },
}
