//! The Python exception hierarchy (`shmbridge.Error` and its subclasses) and the one place that
//! maps each typed Rust error to it. Every message is the Rust error's `Display` text, so a
//! Python log line reads like the Rust services' logs.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use shmbridge::control::{RefusalCode, RequestError};
use shmbridge::{
    AcquireError, ClaimError, CreateError, PublishError, ReadError, RedeemError, SealedError,
};

create_exception!(
    shmbridge,
    Error,
    PyException,
    "Every error shmbridge raises."
);
create_exception!(
    shmbridge,
    AttachError,
    Error,
    "The segment could not be attached (socket, descriptor or header checks failed)."
);
create_exception!(
    shmbridge,
    VersionMismatch,
    AttachError,
    "The segment was written with another layout version."
);
create_exception!(
    shmbridge,
    Exhausted,
    Error,
    "No slot came free before the timeout."
);
create_exception!(
    shmbridge,
    TooLarge,
    Error,
    "The payload is larger than a slot (publish) or than the producer's largest payload (64 MiB, for bodies the channel carries)."
);
create_exception!(
    shmbridge,
    Busy,
    Error,
    "The producer holds as many unredeemed publications as it allows (per peer or in all)."
);
create_exception!(
    shmbridge,
    Stale,
    Error,
    "The handle names a publication that is gone: redeemed already, reclaimed, withdrawn, or \
     of another segment."
);
create_exception!(
    shmbridge,
    ChecksumMismatch,
    Error,
    "The bytes read do not have the crc32 the handle names."
);
create_exception!(shmbridge, TimedOut, Error, "No answer within the timeout.");
create_exception!(
    shmbridge,
    RequestTooLarge,
    Error,
    "The request is longer than the control channel carries (64 KiB); the connection stays open."
);
create_exception!(
    shmbridge,
    HandlerFailed,
    Error,
    "The producer's handler raised (or returned something that is not a response) for this \
     request; the producer goes on serving others."
);
create_exception!(
    shmbridge,
    ControlVersionMismatch,
    Error,
    "The producer speaks another control-channel version: it refused the request and closed the \
     connection."
);
create_exception!(
    shmbridge,
    Closed,
    Error,
    "The producer, consumer or control channel is closed."
);

/// Adds the exception classes to the module.
pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add("Error", py.get_type::<Error>())?;
    module.add("AttachError", py.get_type::<AttachError>())?;
    module.add("VersionMismatch", py.get_type::<VersionMismatch>())?;
    module.add("Exhausted", py.get_type::<Exhausted>())?;
    module.add("TooLarge", py.get_type::<TooLarge>())?;
    module.add("Busy", py.get_type::<Busy>())?;
    module.add("Stale", py.get_type::<Stale>())?;
    module.add("ChecksumMismatch", py.get_type::<ChecksumMismatch>())?;
    module.add("TimedOut", py.get_type::<TimedOut>())?;
    module.add("RequestTooLarge", py.get_type::<RequestTooLarge>())?;
    module.add("HandlerFailed", py.get_type::<HandlerFailed>())?;
    module.add(
        "ControlVersionMismatch",
        py.get_type::<ControlVersionMismatch>(),
    )?;
    module.add("Closed", py.get_type::<Closed>())?;
    Ok(())
}

/// A bad geometry is the caller's argument, so `ValueError`; the rest is the machine's.
pub fn create(error: CreateError) -> PyErr {
    match error {
        CreateError::InvalidConfig(_) => PyValueError::new_err(error.to_string()),
        CreateError::NoSpace { .. } | CreateError::Io { .. } => Error::new_err(error.to_string()),
    }
}

pub fn attach(error: shmbridge::AttachError) -> PyErr {
    match error {
        shmbridge::AttachError::VersionMismatch { .. } => {
            VersionMismatch::new_err(error.to_string())
        }
        _ => AttachError::new_err(error.to_string()),
    }
}

pub fn claim(error: ClaimError) -> PyErr {
    match error {
        ClaimError::TooLarge { .. } => TooLarge::new_err(error.to_string()),
        ClaimError::Exhausted { .. } | ClaimError::BytesExhausted { .. } => {
            Exhausted::new_err(error.to_string())
        }
    }
}

/// The reaper took the slot back mid-write (the writer outlived its lease): the publication the
/// caller was making is gone.
pub fn publish(error: PublishError) -> PyErr {
    Stale::new_err(error.to_string())
}

pub fn acquire(error: AcquireError) -> PyErr {
    match error {
        AcquireError::Stale { .. } | AcquireError::WrongEpoch { .. } => {
            Stale::new_err(error.to_string())
        }
        AcquireError::TooLarge { .. } => TooLarge::new_err(error.to_string()),
        AcquireError::SlotOutOfRange { .. } => Error::new_err(error.to_string()),
    }
}

pub fn read(error: ReadError) -> PyErr {
    match error {
        ReadError::ChecksumMismatch { .. } => ChecksumMismatch::new_err(error.to_string()),
        ReadError::Reclaimed { .. } => Stale::new_err(error.to_string()),
    }
}

pub fn redeem(error: RedeemError) -> PyErr {
    match error {
        RedeemError::Acquire(error) => acquire(error),
        RedeemError::Read(error) => read(error),
        RedeemError::Sealed(SealedError::ChecksumMismatch { .. }) => {
            ChecksumMismatch::new_err(error.to_string())
        }
        RedeemError::Reclaimed { .. } => Stale::new_err(error.to_string()),
        RedeemError::Sealed(_) => Error::new_err(error.to_string()),
    }
}

pub fn request(error: RequestError) -> PyErr {
    let text = error.to_string();
    match error {
        RequestError::Refused(refusal) => match refusal.code {
            RefusalCode::PeerBusy | RefusalCode::SegmentBusy => Busy::new_err(text),
            RefusalCode::Exhausted => Exhausted::new_err(text),
            RefusalCode::TooLarge => TooLarge::new_err(text),
            RefusalCode::DeadlineExceeded => TimedOut::new_err(text),
            RefusalCode::RequestTooLarge => RequestTooLarge::new_err(text),
            RefusalCode::HandlerFailed => HandlerFailed::new_err(text),
            RefusalCode::Version => ControlVersionMismatch::new_err(text),
            RefusalCode::Internal | RefusalCode::NoBoard => Error::new_err(text),
        },
        RequestError::RequestTooLarge { .. } => RequestTooLarge::new_err(text),
        RequestError::TimedOut(_) => TimedOut::new_err(text),
        RequestError::Closed => Closed::new_err(text),
        // The producer does not read its requests: as with a full ledger, try again later.
        RequestError::Congested => Busy::new_err(text),
        RequestError::ForeignHandle { .. } => Stale::new_err(text),
        // The body did not verify: the same exception as a handle redeemed by hand.
        RequestError::Redeem(error) => redeem(error),
        RequestError::Send(_) | RequestError::Protocol(_) | RequestError::Board(_) => {
            Error::new_err(text)
        }
    }
}
