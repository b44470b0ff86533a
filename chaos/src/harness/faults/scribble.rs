//! Scribble faults (`scribble`): a third process scribbling on the live segment, bit flips and
//! random bytes written into slot payloads, slot descriptors and the header while the services
//! use them.
//!
//! The scribbler gets the segment the way a gateway does (its descriptor over the abstract
//! socket) and maps it writable itself. Payload strikes aim at slots that hold data (ready or
//! being read) and at bytes inside the published length, so they hit what a reader copies, not
//! idle memory. A slot holds data for well under a millisecond, so a payload strike watches
//! the descriptors for up to [`PAYLOAD_HUNT`] to catch one; call it off the async workers.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use memmap2::{MmapOptions, MmapRaw};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use shmbridge::layout::{DESCRIPTOR_SIZE, HEADER_CRC_COVERS, HEADER_SIZE};
use shmbridge::{Segment, SlotState};

use super::class::{ATTACH_TIMEOUT, Fault, FaultClass, FaultContext, Injected};
use super::error::{FaultError, InjectError};
use super::spec::DurationRange;
use crate::loadtest::load::endpoint::Endpoint;
use crate::process::role::Role;
use crate::segment::attach_with_file;

/// Bit flips and random bytes written by the harness into the live segment: slot payloads,
/// slot descriptors and the header (each fault picks one at random).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScribbleSpec {
    pub count: u32,
    pub interval: DurationRange,
    /// Bytes struck per fault, drawn from this inclusive range.
    pub strikes: [u32; 2],
}

/// `strikes` bit flips or random bytes into `target` of the live segment, placed by an RNG
/// seeded with `seed`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "action", rename = "scribble")]
pub struct Scribble {
    pub target: ScribbleTarget,
    pub strikes: u32,
    pub seed: u64,
}

impl FaultClass for ScribbleSpec {
    const NAME: &'static str = "scribble";
    type Action = Scribble;

    fn count(&self) -> u32 {
        self.count
    }

    fn count_mut(&mut self) -> &mut u32 {
        &mut self.count
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        let [low, high] = self.strikes;
        if low == 0 || low > high {
            return Err((
                "fault.strikes",
                format!("[{low}, {high}] must be an ascending range starting at 1 or more"),
            ));
        }
        Ok(())
    }

    fn draw(&self, rng: &mut ChaCha8Rng) -> (DurationRange, Scribble) {
        let target = ScribbleTarget::ALL[rng.random_range(0..ScribbleTarget::ALL.len())];
        let [low, high] = self.strikes;
        let strikes = rng.random_range(low..=high);
        // Where each strike lands depends on which slots hold data at that moment; the seed
        // fixes the draws, the load fixes the slots.
        let seed = rng.random();
        (
            self.interval,
            Scribble {
                target,
                strikes,
                seed,
            },
        )
    }
}

impl Fault for Scribble {
    fn role(&self) -> Role {
        Role::UsersService
    }

    /// A third process damages the segment: only the shm route reads it.
    fn affects(&self, endpoint: Endpoint) -> bool {
        endpoint.uses_shm()
    }

    fn label(&self) -> String {
        format!("scribble {:?}", self.target).to_lowercase()
    }

    /// Attaches to the live segment and strikes it the planned number of times, in the planned
    /// region.
    async fn inject(&self, context: &mut FaultContext<'_>) -> Result<Injected, FaultError> {
        let Scribble {
            target,
            strikes,
            seed,
        } = *self;
        let socket = context.segment_socket().await?;
        let scribbler = Scribbler::attach(&socket, ATTACH_TIMEOUT)?;
        // Payload strikes watch the segment for a slot holding data: off the async workers.
        let struck = tokio::task::spawn_blocking(move || {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..strikes)
                .map(|_| {
                    let strike = scribbler.strike(target, &mut rng);
                    format!(
                        "@{} {:#04x}→{:#04x}{}",
                        strike.offset,
                        strike.before,
                        strike.after,
                        if strike.live { " (live payload)" } else { "" }
                    )
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|source| InjectError::Task {
            task: "scribbler",
            source,
        })?;
        Ok(Injected {
            note: Some(format!("{target:?}: {}", struck.join(", ")).to_lowercase()),
            ..Injected::back_now()
        })
    }
}

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
