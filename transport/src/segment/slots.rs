//! Slot access: where one slot's descriptor and payload lie in a segment's memory, handed out
//! only as atomics, and a read-only view of a descriptor for operators and leak checks.

use memmap2::MmapRaw;

use crate::host::Owner;
use crate::layout::{DESCRIPTOR_SIZE, Geometry, HEADER_SIZE, SlotDescriptor, SlotState, Tagged};
use crate::payload::WORD;
use crate::sync::{AtomicU64, Ordering};

/// A point-in-time copy of one slot descriptor, for operators and leak checks. The fields after
/// `generation` are the tagged values as stored, whichever generation they were written for;
/// `stamped` says whether the ones the reaper relies on were written for this generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotView {
    pub slot: u32,
    /// `None` when the state byte holds no known state.
    pub state: Option<SlotState>,
    pub generation: u64,
    /// Whether the holder's stamp (WRITING, READING) or the TTL (READY) is this generation's.
    pub stamped: bool,
    pub owner: Owner,
    pub deadline_ns: u64,
    pub len: u32,
    pub crc: u32,
}

impl SlotView {
    /// Reads `descriptor` (slot `slot`) with relaxed loads only, so it is sound on a read-only
    /// mapping and takes no part in the protocol.
    pub(super) fn of(slot: u32, descriptor: &SlotDescriptor) -> Self {
        let word = descriptor.observed_word();
        let value = |field: &AtomicU64| Tagged(field.load(Ordering::Relaxed)).value();
        let stamped = match word.state() {
            Some(SlotState::Writing | SlotState::Reading) => descriptor.stamp(word).is_some(),
            Some(SlotState::Ready) => descriptor.ttl_end(word).is_some(),
            Some(SlotState::Free) | None => false,
        };
        Self {
            slot,
            state: word.state(),
            generation: word.generation(),
            stamped,
            owner: Owner {
                pid: value(&descriptor.owner_pid) as u32,
                start_time: value(&descriptor.owner_start_time),
                pidfs_ino: value(&descriptor.owner_pidfs_ino),
            },
            deadline_ns: value(&descriptor.deadline_ms).saturating_mul(1_000_000),
            len: value(&descriptor.len) as u32,
            crc: value(&descriptor.crc) as u32,
        }
    }
}

/// The memory a segment's descriptors and payloads live in, with the geometry it is laid out
/// as. The geometry is checked against the mapping's length once, here, so every pointer handed
/// out below lies inside the mapping.
pub(super) struct Memory {
    geometry: Geometry,
    place: Place,
}

enum Place {
    Mapped(MmapRaw),
    /// Loom atomics cannot live in mapped bytes, so loom models run on crate-allocated memory.
    #[cfg(loom)]
    Heap {
        descriptors: Box<[SlotDescriptor]>,
        payload: Box<[AtomicU64]>,
    },
}

impl Memory {
    /// `map` laid out as `geometry`, or `None` if the mapping is shorter than the geometry says.
    pub(super) fn mapped(map: MmapRaw, geometry: Geometry) -> Option<Self> {
        (map.len() as u64 >= geometry.total_size()).then_some(Self {
            geometry,
            place: Place::Mapped(map),
        })
    }

    /// Crate-allocated descriptors (FREE at generation 0) and payload for `geometry`.
    #[cfg(loom)]
    pub(super) fn heap(geometry: Geometry) -> Self {
        let descriptors = (0..geometry.slot_count())
            .map(|_| SlotDescriptor::new())
            .collect();
        let payload_words = geometry.slot_count() as usize * geometry.slot_size() as usize / WORD;
        let payload = (0..payload_words).map(|_| AtomicU64::new(0)).collect();
        Self {
            geometry,
            place: Place::Heap {
                descriptors,
                payload,
            },
        }
    }

    pub(super) fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// The mapping, unless the memory is crate-allocated.
    pub(super) fn mapping(&self) -> Option<&MmapRaw> {
        match &self.place {
            Place::Mapped(map) => Some(map),
            #[cfg(loom)]
            Place::Heap { .. } => None,
        }
    }

    /// The descriptor of `slot`.
    ///
    /// # Panics
    /// If `slot` is out of range: callers check indexes that come from outside the process.
    pub(super) fn descriptor(&self, slot: u32) -> &SlotDescriptor {
        assert!(
            slot < self.geometry.slot_count(),
            "slot index checked by caller"
        );
        match &self.place {
            Place::Mapped(map) => {
                let offset = HEADER_SIZE as usize + slot as usize * DESCRIPTOR_SIZE as usize;
                // SAFETY: the mapping is at least total_size bytes long (checked in `mapped`),
                // which lies beyond the descriptor table, so the 64 bytes at `offset` lie inside
                // it; the mapping is page-aligned and `offset` is a multiple of 64, matching
                // SlotDescriptor's alignment. SlotDescriptor is made of atomics only, so any bit
                // pattern is valid and concurrent writes from other processes are atomic
                // accesses, not data races. The reference lives no longer than `self`, which
                // keeps the mapping alive.
                unsafe { &*map.as_ptr().add(offset).cast::<SlotDescriptor>() }
            }
            #[cfg(loom)]
            Place::Heap { descriptors, .. } => &descriptors[slot as usize],
        }
    }

    /// `slot`'s payload as `slot_size / 8` words (see [`crate::payload`] for why words).
    ///
    /// Other processes may store into these words at any time, so the payload is never seen as
    /// plain bytes: only as atomics, whose racing accesses are defined.
    ///
    /// # Panics
    /// If `slot` is out of range.
    pub(super) fn payload(&self, slot: u32) -> &[AtomicU64] {
        assert!(
            slot < self.geometry.slot_count(),
            "slot index checked by caller"
        );
        let words = self.geometry.slot_size() as usize / WORD;
        match &self.place {
            Place::Mapped(map) => {
                let offset = self.geometry.payload_offset() as usize + slot as usize * words * WORD;
                // SAFETY: payload_offset + slot_count * slot_size == total_size (a Geometry is
                // only made by `Geometry::new`) <= mapping length (checked in `mapped`), so the
                // slot's `words` words lie inside the mapping. The
                // mapping is page-aligned, payload_offset a multiple of 4096 and slot_size of 64,
                // so every word is 8-aligned as AtomicU64 requires. Any bit pattern is a valid
                // AtomicU64, and stores by other processes are to atomics, not to memory Rust
                // assumes it owns. The slice lives no longer than `self`, which keeps the mapping
                // alive.
                unsafe {
                    std::slice::from_raw_parts(map.as_ptr().add(offset).cast::<AtomicU64>(), words)
                }
            }
            #[cfg(loom)]
            Place::Heap { payload, .. } => {
                let first = slot as usize * words;
                &payload[first..first + words]
            }
        }
    }
}
