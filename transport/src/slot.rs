//! The slot state machine's primitives: a transition (one compare-exchange on the state word), the
//! tagged stores a holder stamps its descriptor with, and reading those stamps back. Producer,
//! consumer and reaper are built from these alone.

use crate::host::Owner;
use crate::layout::{SlotDescriptor, SlotState, TAGGED_VALUE_MAX, Tagged, Word};
use crate::sync::{AtomicU64, Ordering};

/// Success ordering of a transition. The `shmbridge_mutant` cfg weakens it on purpose, only to
/// show that the loom models fail without it (`.ci/run`, "loom mutants"); never set it otherwise.
#[cfg(not(any(shmbridge_mutant = "no_release", shmbridge_mutant = "no_acquire")))]
const HANDOVER: Ordering = Ordering::AcqRel;
#[cfg(shmbridge_mutant = "no_release")]
const HANDOVER: Ordering = Ordering::Acquire;
#[cfg(shmbridge_mutant = "no_acquire")]
const HANDOVER: Ordering = Ordering::Release;

/// A holder's stamp as read back for one state word: who holds it (WRITING, READING) and until when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) owner: Owner,
    pub(crate) deadline_ns: u64,
}

impl SlotDescriptor {
    /// The state word now. Acquire: pairs with the release of whichever transition wrote it, so
    /// the payload written before that transition is visible.
    pub(crate) fn word(&self) -> Word {
        Word(self.state.load(Ordering::Acquire))
    }

    /// The state word for an observer that takes no part in the protocol. Relaxed, because that is
    /// the only atomic load std allows on a read-only (`PROT_READ`) mapping.
    pub(crate) fn observed_word(&self) -> Word {
        Word(self.state.load(Ordering::Relaxed))
    }

    /// Moves the slot from exactly `from` to `to` at the next generation.
    ///
    /// SYNC POINT "slot hand-over": AcqRel on success. Release publishes everything this process
    /// wrote while holding the slot (payload) to the next holder; Acquire makes the previous
    /// holder's writes (or reads, for a writer following a reader) happen-before ours. A failed
    /// exchange changes nothing, so it needs only Acquire to report an up-to-date word.
    pub(crate) fn transition(&self, from: Word, to: SlotState) -> Result<Word, Word> {
        self.replace(from, from.next(to))
    }

    /// Moves the slot from exactly `from` to `to`, for the reaper restoring a word with no state
    /// at a generation of its choosing. Same orderings as [`SlotDescriptor::transition`].
    pub(crate) fn replace(&self, from: Word, to: Word) -> Result<Word, Word> {
        #[cfg(shmbridge_mutant = "no_acquire")]
        let failure = Ordering::Relaxed;
        #[cfg(not(shmbridge_mutant = "no_acquire"))]
        let failure = Ordering::Acquire;
        self.state
            .compare_exchange(from.0, to.0, HANDOVER, failure)
            .map(|_| to)
            .map_err(Word)
    }

    /// Records who holds the slot at `held` and until when, right after winning the exchange
    /// into `held`. Stores nothing once the slot has moved on (see [`store_tagged`]).
    pub(crate) fn stamp_holder(&self, held: Word, owner: Owner, deadline_ns: u64) {
        let generation = held.generation();
        let pidfs_ino = if owner.pidfs_ino > TAGGED_VALUE_MAX {
            0
        } else {
            owner.pidfs_ino
        };
        for (field, value) in [
            (&self.owner_pid, u64::from(owner.pid)),
            (
                &self.owner_start_time,
                owner.start_time.min(TAGGED_VALUE_MAX),
            ),
            (&self.owner_pidfs_ino, pidfs_ino),
            (&self.deadline_ms, deadline_ms(deadline_ns)),
        ] {
            if !self.store_tagged(field, held, generation, value) {
                return;
            }
        }
    }

    /// Records a publication's length, crc and TTL end for the READY generation that follows
    /// `held`, before the exchange into it, so that a READY slot is never seen unstamped.
    pub(crate) fn stamp_publication(&self, held: Word, len: u32, crc: u32, ttl_end_ns: u64) {
        let ready = held.generation().wrapping_add(1);
        for (field, value) in [
            (&self.len, u64::from(len)),
            (&self.crc, u64::from(crc)),
            (&self.deadline_ms, deadline_ms(ttl_end_ns)),
        ] {
            if !self.store_tagged(field, held, ready, value) {
                return;
            }
        }
    }

    /// Stores `value` tagged with `generation` while this process still holds `held`, unless the
    /// field already carries a value for a later generation. Returns false once `held` is gone.
    ///
    /// A holder paused between the check and the exchange can still store after the slot moved
    /// on, but only a value tagged with its own, older generation, which no later state word
    /// accepts, and never over a value a later holder stored (see "Tagged fields" in `layout`).
    /// Relaxed throughout: each tagged word is read and judged on its own, so no other memory
    /// has to be ordered with it.
    fn store_tagged(&self, field: &AtomicU64, held: Word, generation: u64, value: u64) -> bool {
        let tagged = Tagged::new(generation, value).0;
        let mut current = field.load(Ordering::Relaxed);
        loop {
            if self.state.load(Ordering::Relaxed) != held.0 {
                return false;
            }
            if Tagged(current).is_ahead_of(generation) {
                return true;
            }
            match field.compare_exchange_weak(current, tagged, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(found) => current = found,
            }
        }
    }

    /// The holder stamped for `word` (WRITING or READING), if every field of the stamp was
    /// written for its generation.
    pub(crate) fn stamp(&self, word: Word) -> Option<Stamp> {
        let generation = word.generation();
        let field = |field: &AtomicU64| Tagged(field.load(Ordering::Relaxed)).value_for(generation);
        Some(Stamp {
            owner: Owner {
                pid: u32::try_from(field(&self.owner_pid)?).ok()?,
                start_time: field(&self.owner_start_time)?,
                pidfs_ino: field(&self.owner_pidfs_ino)?,
            },
            deadline_ns: field(&self.deadline_ms)?.saturating_mul(1_000_000),
        })
    }

    /// The TTL end stamped for a READY `word`, if it was written for its generation.
    pub(crate) fn ttl_end(&self, word: Word) -> Option<u64> {
        Tagged(self.deadline_ms.load(Ordering::Relaxed))
            .value_for(word.generation())
            .map(|ms| ms.saturating_mul(1_000_000))
    }
}

/// Nanoseconds as the whole milliseconds a tagged deadline holds, rounded up so that nobody's
/// lease ends early.
fn deadline_ms(ns: u64) -> u64 {
    ns.div_ceil(1_000_000).min(TAGGED_VALUE_MAX)
}
