//! The slot state machine's two primitives: a transition (one compare-exchange on the state
//! word) and a holder's stamp. Producer, consumer and reaper are built from these alone.

use crate::host::Owner;
use crate::layout::{SlotDescriptor, SlotState, Word};
use crate::sync::Ordering;

impl SlotDescriptor {
    /// The state word now. Acquire: pairs with the release of whichever transition wrote it, so
    /// the stamp and payload written before that transition are visible.
    pub(crate) fn word(&self) -> Word {
        Word(self.state.load(Ordering::Acquire))
    }

    /// Moves the slot from exactly `from` to `to` at the next generation.
    ///
    /// SYNC POINT "slot hand-over": AcqRel on success. Release publishes everything this process
    /// wrote while holding the slot (payload, stamp) to the next holder; Acquire makes the previous
    /// holder's writes (or reads, for a writer following a reader) happen-before ours. A failed
    /// exchange changes nothing, so it needs only Acquire to report an up-to-date word.
    pub(crate) fn transition(&self, from: Word, to: SlotState) -> Result<Word, Word> {
        let next = from.next(to);
        self.state
            .compare_exchange(from.0, next.0, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| next)
            .map_err(Word)
    }

    /// The stamped holder, as last written (meaningful only while `stamp` matches the word).
    pub(crate) fn owner(&self) -> Owner {
        Owner {
            pid: self.owner_pid.load(Ordering::Relaxed),
            start_time: self.owner_start_time.load(Ordering::Relaxed),
            pidfs_ino: self.owner_pidfs_ino.load(Ordering::Relaxed),
        }
    }

    /// Records who holds the slot at `word` and until when. Written right after winning the
    /// exchange into `word`; the reaper trusts these fields only while `stamp` equals the word's
    /// generation (SYNC POINT "stamp": release here, acquire in the reaper).
    pub(crate) fn stamp_holder(&self, word: Word, owner: Owner, deadline_ns: u64) {
        self.owner_pid.store(owner.pid, Ordering::Relaxed);
        self.owner_start_time
            .store(owner.start_time, Ordering::Relaxed);
        self.owner_pidfs_ino
            .store(owner.pidfs_ino, Ordering::Relaxed);
        self.deadline_ns.store(deadline_ns, Ordering::Relaxed);
        self.stamp.store(word.generation(), Ordering::Release);
    }
}
