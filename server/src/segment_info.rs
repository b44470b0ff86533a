//! What users-service's `GET /shm/segment` tells a gateway so that it can attach, and what its
//! `GET /shm/stats` tells about the sealed payloads it has out: the documents both services
//! (and the chaos harness) agree on about the live segment.

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

/// What `GET /shm/stats` tells about the producer's sealed publications, read when asked (the
/// producer prunes finished tickets first), so a harness can check that nothing stays counted
/// once the load has stopped and the TTL has passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShmStatsInfo {
    /// Sealed publications made since this process started.
    pub sealed_publications: u64,
    /// Bytes of sealed publications not yet redeemed, withdrawn or reclaimed (what
    /// `--max-sealed-bytes` bounds).
    pub sealed_bytes_in_flight: u64,
}
