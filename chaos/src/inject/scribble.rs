//! A third process scribbling on the live segment: bit flips and random bytes written into slot
//! payloads, slot descriptors and the header while the services use them.
//!
//! The scribbler gets the segment the way a gateway does (its descriptor over the abstract
//! socket) and maps it writable itself. Payload strikes aim at slots that hold data (ready or
//! being read) and at bytes inside the published length, so they hit what a reader copies, not
//! idle memory. A slot holds data for well under a millisecond, so a payload strike watches
//! the descriptors for up to [`PAYLOAD_HUNT`] to catch one; call it off the async workers.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use memmap2::{MmapOptions, MmapRaw};
use rand::Rng;
use shmbridge::layout::{DESCRIPTOR_SIZE, HEADER_CRC_COVERS, HEADER_SIZE};
use shmbridge::{Segment, SlotState};

use super::{InjectError, attach_with_file};

/// How long a payload strike looks for a slot that holds data before striking a random one.
pub const PAYLOAD_HUNT: Duration = Duration::from_millis(100);

/// Bytes of a descriptor that carry fields (the rest is reserved).
const DESCRIPTOR_FIELD_BYTES: u64 = 44;

/// Where a strike lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScribbleTarget {
    Payload,
    Descriptor,
    Header,
}

impl ScribbleTarget {
    pub const ALL: [ScribbleTarget; 3] = [
        ScribbleTarget::Payload,
        ScribbleTarget::Descriptor,
        ScribbleTarget::Header,
    ];
}

/// What one strike changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Strike {
    pub target: ScribbleTarget,
    /// Byte offset from the start of the segment.
    pub offset: u64,
    pub before: u8,
    pub after: u8,
    /// A payload strike that landed inside a published payload (ready or being read) rather
    /// than in idle slot memory.
    pub live: bool,
}

pub struct Scribbler {
    /// The validated view, for geometry and slot states.
    segment: Segment,
    /// A second, writable mapping of the same memory: the scribbler's pen.
    pen: MmapRaw,
}

impl Scribbler {
    /// Attaches to the segment served on `@socket`.
    pub fn attach(socket: &str, timeout: Duration) -> Result<Scribbler, InjectError> {
        let (segment, file) = attach_with_file(socket, timeout)?;
        let len = segment.header().total_size;
        let pen = MmapOptions::new()
            .len(usize::try_from(len).expect("validated segment size fits usize"))
            .map_raw(&file)
            .map_err(|error| InjectError::io("map the segment writable", error))?;
        Ok(Scribbler { segment, pen })
    }

    pub fn epoch(&self) -> u64 {
        self.segment.epoch()
    }

    /// Flips one bit (half the time) or writes one random byte at a random place in `target`.
    pub fn strike(&self, target: ScribbleTarget, rng: &mut impl Rng) -> Strike {
        let (offset, live) = match target {
            ScribbleTarget::Header => (rng.random_range(0..HEADER_CRC_COVERS as u64), false),
            ScribbleTarget::Descriptor => {
                let slot = u64::from(rng.random_range(0..self.segment.slot_count()));
                let field = rng.random_range(0..DESCRIPTOR_FIELD_BYTES);
                (HEADER_SIZE + slot * DESCRIPTOR_SIZE + field, false)
            }
            ScribbleTarget::Payload => self.payload_offset(rng),
        };
        let byte = self.byte(offset);
        let (before, after) = if rng.random_bool(0.5) {
            let mask = 1u8 << rng.random_range(0..8);
            let before = byte.fetch_xor(mask, Ordering::Relaxed);
            (before, before ^ mask)
        } else {
            // Never a no-op: a strike that writes the byte already there proves nothing.
            let before = byte.load(Ordering::Relaxed);
            let after = before ^ rng.random_range(1..=u8::MAX);
            byte.store(after, Ordering::Relaxed);
            (before, after)
        };
        Strike {
            target,
            offset,
            before,
            after,
            live,
        }
    }

    /// A byte a reader would copy: inside the published length of a slot that holds data,
    /// watched for up to [`PAYLOAD_HUNT`]; anywhere in a random slot if none showed up.
    fn payload_offset(&self, rng: &mut impl Rng) -> (u64, bool) {
        let slot_size = self.segment.slot_size();
        let deadline = Instant::now() + PAYLOAD_HUNT;
        let (slot, len, live) = loop {
            let holding: Vec<(u32, u32)> = (0..self.segment.slot_count())
                .filter_map(|slot| self.segment.inspect(slot))
                .filter(|view| matches!(view.state, Some(SlotState::Ready | SlotState::Reading)))
                .map(|view| (view.slot, view.len.clamp(1, slot_size)))
                .collect();
            if !holding.is_empty() {
                let (slot, len) = holding[rng.random_range(0..holding.len())];
                break (slot, len, true);
            }
            if Instant::now() >= deadline {
                break (
                    rng.random_range(0..self.segment.slot_count()),
                    slot_size,
                    false,
                );
            }
            std::thread::yield_now();
        };
        let offset = self.segment.header().payload_offset
            + u64::from(slot) * u64::from(slot_size)
            + u64::from(rng.random_range(0..len));
        (offset, live)
    }

    fn byte(&self, offset: u64) -> &AtomicU8 {
        assert!(
            offset < self.pen.len() as u64,
            "strike offsets stay inside the mapping"
        );
        // SAFETY: `offset` is inside the mapping (asserted), which lives as long as `self`;
        // AtomicU8 has alignment 1 and every bit pattern is a valid u8. Other processes write
        // this memory concurrently, which is why it is only touched through an atomic.
        unsafe { AtomicU8::from_ptr(self.pen.as_mut_ptr().add(offset as usize)) }
    }
}
