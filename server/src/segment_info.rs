//! What users-service's `GET /shm/segment` tells a gateway so that it can attach: the one
//! document both services (and the chaos harness) agree on about the live segment.

use serde::{Deserialize, Serialize};

/// What `GET /shm/segment` tells a gateway so it can attach.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentInfo {
    /// Abstract socket name (without the leading `@`).
    pub socket: String,
    /// The segment instance, as 16 lowercase hex digits (the handle's first field).
    pub epoch: String,
    pub layout_version: u32,
    pub slot_count: u32,
    pub slot_size: u32,
}
