//! Counters a producer or consumer keeps about itself, and the snapshot it reports.
//!
//! These live in process memory, not in the segment, and are not part of the protocol, so they
//! use std atomics directly rather than the loom shim.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::layout::SlotState;
use crate::segment::Segment;

/// Why the reaper returned a slot to FREE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReclaimReason {
    /// Held (writing or reading) by a process that no longer exists, or whose pid was reused.
    DeadOwner = 0,
    /// Held past its lease: a paused or hung writer or reader.
    LeaseExpired = 1,
    /// Published but not redeemed within the TTL: the consumer never came.
    TtlExpired = 2,
    /// The descriptor holds what no honest holder writes (an unknown state byte, a deadline more
    /// than an hour ahead): something scribbled on it.
    Corrupt = 3,
}

impl ReclaimReason {
    pub const ALL: [Self; 4] = [
        Self::DeadOwner,
        Self::LeaseExpired,
        Self::TtlExpired,
        Self::Corrupt,
    ];

    /// A stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DeadOwner => "dead_owner",
            Self::LeaseExpired => "lease_expired",
            Self::TtlExpired => "ttl_expired",
            Self::Corrupt => "corrupt",
        }
    }
}

/// Reclaims counted by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reclaims([u64; 4]);

impl Reclaims {
    pub fn get(&self, reason: ReclaimReason) -> u64 {
        self.0[reason as usize]
    }

    pub(crate) fn add(&mut self, reason: ReclaimReason) {
        self.0[reason as usize] += 1;
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// How many slots are in each state, read from the segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotCounts {
    pub free: u32,
    pub writing: u32,
    pub ready: u32,
    pub reading: u32,
    /// Slots whose state byte holds no known state.
    pub unknown: u32,
}

impl SlotCounts {
    /// Scans every descriptor once; each is read atomically, the whole is not a single instant.
    pub fn scan(segment: &Segment) -> Self {
        let mut counts = Self::default();
        for slot in 0..segment.slot_count() {
            let counter = match segment.descriptor(slot).word().state() {
                Some(SlotState::Free) => &mut counts.free,
                Some(SlotState::Writing) => &mut counts.writing,
                Some(SlotState::Ready) => &mut counts.ready,
                Some(SlotState::Reading) => &mut counts.reading,
                None => &mut counts.unknown,
            };
            *counter += 1;
        }
        counts
    }
}

/// A snapshot of one producer's or consumer's view.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub slots: SlotCounts,
    pub reclaims: Reclaims,
    /// Reads whose bytes did not match the handle's crc32.
    pub checksum_failures: u64,
    /// Handles refused because their slot was not ready at their generation.
    pub stale_handles: u64,
    /// Reads that lost their slot to the reaper before releasing it.
    pub reads_reclaimed: u64,
    /// Writes that lost their slot to the reaper before publishing.
    pub writes_reclaimed: u64,
    /// Claims that found no slot before their deadline.
    pub claims_exhausted: u64,
    /// Reaper passes that found the shared header scribbled on and wrote the valid one back.
    pub header_repairs: u64,
    /// Publications taken back unredeemed because their consumer released them or closed its
    /// connection ([`Producer::withdraw`](crate::Producer::withdraw)).
    pub withdrawn: u64,
    /// Publications made as sealed payloads ([`Producer::publish_sealed`](crate::Producer::publish_sealed)).
    pub sealed_publications: u64,
    /// Bytes of sealed publications not yet redeemed, withdrawn or reclaimed: what
    /// [`ProducerOptions::max_sealed_bytes`](crate::ProducerOptions::max_sealed_bytes) bounds.
    /// Always 0 for a consumer.
    pub sealed_bytes_in_flight: u64,
    /// Sealed payloads a consumer served from a mapping it had verified before
    /// ([`ConsumerOptions::keep_verified_bytes`](crate::ConsumerOptions::keep_verified_bytes)).
    /// Always 0 for a producer.
    pub sealed_reused: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    reclaims: [AtomicU64; 4],
    pub(crate) checksum_failures: AtomicU64,
    pub(crate) stale_handles: AtomicU64,
    pub(crate) reads_reclaimed: AtomicU64,
    pub(crate) writes_reclaimed: AtomicU64,
    pub(crate) claims_exhausted: AtomicU64,
    pub(crate) header_repairs: AtomicU64,
    pub(crate) withdrawn: AtomicU64,
    pub(crate) sealed_publications: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn add_reclaims(&self, reclaims: &Reclaims) {
        for reason in ReclaimReason::ALL {
            self.reclaims[reason as usize].fetch_add(reclaims.get(reason), Relaxed);
        }
    }

    pub(crate) fn snapshot(&self, segment: &Segment) -> Stats {
        let reclaims = Reclaims(std::array::from_fn(|index| {
            self.reclaims[index].load(Relaxed)
        }));
        Stats {
            slots: SlotCounts::scan(segment),
            reclaims,
            checksum_failures: self.checksum_failures.load(Relaxed),
            stale_handles: self.stale_handles.load(Relaxed),
            reads_reclaimed: self.reads_reclaimed.load(Relaxed),
            writes_reclaimed: self.writes_reclaimed.load(Relaxed),
            claims_exhausted: self.claims_exhausted.load(Relaxed),
            header_repairs: self.header_repairs.load(Relaxed),
            withdrawn: self.withdrawn.load(Relaxed),
            sealed_publications: self.sealed_publications.load(Relaxed),
            sealed_bytes_in_flight: 0,
            sealed_reused: 0,
        }
    }
}
