//! The fail points compiled into the services' fail-point build (feature `failpoints`), which
//! the kill classes crash at and the slow-producer class delays at.

use serde::Serialize;
use shmbridge_server::failpoints;

/// A fail point compiled into the services, named as they register it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailPoint {
    /// users-service: a slot is claimed, nothing written yet.
    AfterClaim,
    /// users-service: halfway through copying the body into the slot.
    MidCopy,
    /// users-service: the body is written, the slot not yet published.
    BeforePublish,
    /// gateway: a slot is acquired for reading and not yet released.
    MidRead,
}

impl FailPoint {
    pub const PRODUCER: [FailPoint; 3] = [
        FailPoint::AfterClaim,
        FailPoint::MidCopy,
        FailPoint::BeforePublish,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FailPoint::AfterClaim => failpoints::AFTER_CLAIM,
            FailPoint::MidCopy => failpoints::MID_COPY,
            FailPoint::BeforePublish => failpoints::BEFORE_PUBLISH,
            FailPoint::MidRead => failpoints::MID_READ,
        }
    }

    /// `FAILPOINTS` that let `skip` passes go by and then crash the process (the services'
    /// `return` action SIGKILLs the process where it stands).
    pub fn crash_after(self, skip: u32) -> String {
        format!("{}={skip}*off->1*return", self.name())
    }
}
