//! Reclamation: returning to FREE, with a generation bump, every slot whose holder can no longer
//! be waited for.
//!
//! A non-free slot is reclaimed when
//! - it is WRITING or READING and its stamped owner no longer exists (or its pid was reused: see
//!   "Holder identity" in [`crate::layout`]),
//! - it is WRITING or READING past its stamped lease, or READY past its stamped TTL,
//! - its state byte holds no known state, or its stamped deadline lies further ahead than any
//!   lease or TTL is ever set ([`MAX_DEADLINE_AHEAD`]), or
//! - it stays unstamped (a holder won the exchange but died before stamping, or a stale holder
//!   overwrote the stamp) for one whole lease, measured from when this reaper first saw it so.
//!
//! Every reclaim is a compare-exchange from the exact word the decision was made on, so a holder
//! that moved the slot on in the meantime is never disturbed; a late holder finds the generation
//! changed and fails (a writer cannot publish, a reader discards what it read).

use std::collections::HashMap;
use std::time::Duration;

use crate::host::{Host, Owner};
use crate::layout::{SlotState, Word};
use crate::producer::nanos;
use crate::segment::Segment;
use crate::stats::{ReclaimReason, Reclaims};
use crate::sync::Ordering;

/// No holder sets a deadline further ahead than this; a stamped deadline beyond it was scribbled
/// and would otherwise keep the slot forever.
pub const MAX_DEADLINE_AHEAD: Duration = Duration::from_secs(3600);

/// A reaper's memory between passes: when it first saw each slot unstamped.
#[derive(Debug)]
pub(crate) struct Reaper {
    unstamped_since: Vec<Option<(Word, u64)>>,
}

impl Reaper {
    pub(crate) fn new(slot_count: u32) -> Self {
        Self {
            unstamped_since: vec![None; slot_count as usize],
        }
    }

    /// One pass over every slot.
    pub(crate) fn reap(&mut self, segment: &Segment, host: &dyn Host, lease: Duration) -> Reclaims {
        let now = host.now_ns();
        let grace = nanos(lease);
        let mut alive: HashMap<Owner, bool> = HashMap::new();
        let mut reclaims = Reclaims::default();
        for slot in 0..segment.slot_count() {
            let descriptor = segment.descriptor(slot);
            let word = descriptor.word();
            let reason = match word.state() {
                Some(SlotState::Free) => None,
                None => Some(ReclaimReason::Corrupt),
                Some(state) => {
                    if descriptor.stamp.load(Ordering::Acquire) == word.generation() {
                        let owner = descriptor.owner();
                        let deadline = descriptor.deadline_ns.load(Ordering::Relaxed);
                        let held = matches!(state, SlotState::Writing | SlotState::Reading);
                        if held && !*alive.entry(owner).or_insert_with(|| host.is_alive(owner)) {
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
                    } else {
                        let since = match self.unstamped_since[slot as usize] {
                            Some((seen, since)) if seen == word => since,
                            _ => {
                                self.unstamped_since[slot as usize] = Some((word, now));
                                now
                            }
                        };
                        (now.saturating_sub(since) > grace).then_some(ReclaimReason::LeaseExpired)
                    }
                }
            };
            let Some(reason) = reason else { continue };
            // A failed exchange means the slot moved on by itself: nothing to reclaim.
            if descriptor.transition(word, SlotState::Free).is_ok() {
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
        reclaims
    }
}
