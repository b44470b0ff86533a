//! Reclamation: returning to FREE, with a generation bump, every slot whose holder can no longer
//! be waited for.
//!
//! A non-free slot is reclaimed when
//! - it is WRITING or READING and its stamped owner no longer exists (or its pid was reused: see
//!   "Holder identity" in [`crate::layout`]; a holder stamped [`Owner::LEASE_ONLY`] is never
//!   looked up),
//! - it is WRITING or READING past its stamped lease, or READY past its stamped TTL,
//! - its state byte holds no known state (then it is restored at a generation
//!   [`GENERATION_JUMP`] beyond the highest this reaper saw, so that no handle issued before the
//!   damage names a later publication), or its stamped deadline lies further ahead than any
//!   lease or TTL is ever set ([`MAX_DEADLINE_AHEAD`]), or
//! - it stays unstamped (a holder won the exchange but died before stamping, or a scribbler
//!   changed a stamp) for one whole lease, measured from when this reaper first saw it so.
//!
//! Every reclaim is a compare-exchange from the exact word the decision was made on, so a holder
//! that moved the slot on in the meantime is never disturbed; a late holder finds the generation
//! changed and fails (a writer cannot publish, a reader discards what it read).

use std::collections::HashMap;
use std::time::Duration;

use crate::host::{Host, Owner, nanos};
use crate::layout::{GENERATION_JUMP, SlotState, Word};
use crate::segment::Segment;
use crate::stats::{ReclaimReason, Reclaims};

/// No holder sets a deadline further ahead than this; a stamped deadline beyond it was scribbled
/// and would otherwise keep the slot forever.
pub const MAX_DEADLINE_AHEAD: Duration = Duration::from_secs(3600);

/// A reaper's memory between passes, per slot.
#[derive(Debug)]
pub(crate) struct Reaper {
    /// When this reaper first saw the slot unstamped at that word.
    unstamped_since: Vec<Option<(Word, u64)>>,
    /// The highest generation seen in a word with a state, so that a word with none (zeroed,
    /// scribbled) is restored beyond every handle issued before.
    highest_generation: Vec<u64>,
}

impl Reaper {
    pub(crate) fn new(slot_count: u32) -> Self {
        Self {
            unstamped_since: vec![None; slot_count as usize],
            highest_generation: vec![0; slot_count as usize],
        }
    }

    /// One pass over every slot.
    pub(crate) fn reap(&mut self, segment: &Segment, host: &dyn Host, lease: Duration) -> Reclaims {
        let now = host.now_ns();
        let grace = nanos(lease);
        let mut alive: HashMap<Owner, bool> = HashMap::new();
        let mut is_alive = |owner| *alive.entry(owner).or_insert_with(|| host.is_alive(owner));
        let mut reclaims = Reclaims::default();
        for slot in 0..segment.slot_count() {
            let index = slot as usize;
            let descriptor = segment.descriptor(slot);
            let word = descriptor.word();
            let Some(state) = word.state() else {
                let highest = self.highest_generation[index].max(word.generation());
                let restored = Word::new(highest.wrapping_add(GENERATION_JUMP), SlotState::Free);
                if descriptor.replace(word, restored).is_ok() {
                    self.reclaimed(slot, word, ReclaimReason::Corrupt, &mut reclaims);
                }
                continue;
            };
            let highest = &mut self.highest_generation[index];
            *highest = (*highest).max(word.generation());
            let held = matches!(state, SlotState::Writing | SlotState::Reading);
            let stamp = match state {
                SlotState::Free => continue,
                SlotState::Ready => descriptor.ttl_end(word).map(|end| (None, end)),
                SlotState::Writing | SlotState::Reading => descriptor
                    .stamp(word)
                    .map(|stamp| (Some(stamp.owner), stamp.deadline_ns)),
            };
            let reason = match stamp {
                Some((owner, deadline)) => {
                    if owner.is_some_and(|owner| owner.can_be_looked_up() && !is_alive(owner)) {
                        Some(ReclaimReason::DeadOwner)
                    } else if deadline.saturating_sub(now) > nanos(MAX_DEADLINE_AHEAD) {
                        Some(ReclaimReason::Corrupt)
                    } else if now > deadline {
                        Some(if held {
                            ReclaimReason::LeaseExpired
                        } else {
                            ReclaimReason::TtlExpired
                        })
                    } else {
                        None
                    }
                }
                None => {
                    let since = match self.unstamped_since[index] {
                        Some((seen, since)) if seen == word => since,
                        _ => {
                            self.unstamped_since[index] = Some((word, now));
                            now
                        }
                    };
                    (now.saturating_sub(since) > grace).then_some(ReclaimReason::LeaseExpired)
                }
            };
            let Some(reason) = reason else { continue };
            // A failed exchange means the slot moved on by itself: nothing to reclaim.
            if descriptor.transition(word, SlotState::Free).is_ok() {
                self.reclaimed(slot, word, reason, &mut reclaims);
            }
        }
        reclaims
    }

    fn reclaimed(&mut self, slot: u32, word: Word, reason: ReclaimReason, reclaims: &mut Reclaims) {
        self.unstamped_since[slot as usize] = None;
        reclaims.add(reason);
        tracing::warn!(
            slot,
            generation = word.generation(),
            state = ?word.state(),
            reason = reason.as_str(),
            "slot reclaimed"
        );
    }
}
