//! Which publications one peer holds: the producer's record that lets it free them the moment
//! the peer says it will not redeem them or closes its connection, and the limits that keep one
//! peer, or all of them together, from taking every slot. A publication counts until its slot
//! is given back: while it waits for its consumer and while the consumer reads it, so that a
//! peer redeeming with a long lease and never releasing is held to its limit too. The peer's share of the
//! sealed bytes is the producer's to count (with every other sealed byte, under one lock); the
//! ledger only names the peer its publications are made for ([`PeerLedger::sealed_peer`]).

use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::control::frame::{Refusal, RefusalCode};
use crate::handle::Handle;
use crate::producer::{Producer, SealedPeer};
use crate::stats::SlotCounts;

/// How many publications not yet given back (waiting or being read) the producer lets stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicationLimits {
    /// Per peer (one control connection, or the HTTP-signalled path as a whole).
    pub per_peer: u32,
    /// In the whole segment, counted from its state words, so publications of every peer and
    /// path count.
    pub segment: u32,
}

impl PublicationLimits {
    /// Half the slots per peer, three quarters in all: one greedy peer leaves the others half
    /// the segment, and all of them together leave a quarter for publications being written
    /// and redeemed.
    pub fn for_slots(slot_count: u32) -> Self {
        Self {
            per_peer: (slot_count / 2).max(1),
            segment: (slot_count - slot_count / 4).max(1),
        }
    }
}

/// One peer's unredeemed publications.
#[derive(Debug)]
pub struct PeerLedger {
    limits: PublicationLimits,
    sealed_peer: SealedPeer,
    state: Mutex<LedgerState>,
}

#[derive(Debug, Default)]
struct LedgerState {
    /// (slot, generation) of each publication made for this peer and maybe not yet redeemed.
    held: Vec<(u32, u64)>,
    /// Publications being made for this peer now.
    reserved: u32,
    /// The peer is gone: whatever is still made for it is withdrawn at once.
    closed: bool,
}

impl PeerLedger {
    pub fn new(limits: PublicationLimits) -> Self {
        Self {
            limits,
            sealed_peer: SealedPeer::new(),
            state: Mutex::default(),
        }
    }

    /// Who this peer is to the producer's count of sealed bytes, which holds its publications
    /// to its share ([`ProducerOptions::sealed_share`](crate::ProducerOptions::sealed_share)).
    pub(crate) fn sealed_peer(&self) -> SealedPeer {
        self.sealed_peer
    }

    /// Makes room for one more publication, or refuses with [`RefusalCode::PeerBusy`] or
    /// [`RefusalCode::SegmentBusy`]. Publications whose slot was given back (released, withdrawn
    /// or reclaimed) are forgotten first, by reading their state words. The segment-wide count
    /// (READY and READING slots) is a scan, not a reservation, so peers publishing at the same
    /// moment can pass it together: it holds to within the publications in progress.
    pub fn reserve<'a>(&'a self, producer: &Producer) -> Result<Reservation<'a>, Refusal> {
        let mut state = self.lock();
        state
            .held
            .retain(|&(slot, generation)| producer.is_outstanding(slot, generation));
        if state.held.len() as u32 + state.reserved >= self.limits.per_peer {
            return Err(Refusal {
                code: RefusalCode::PeerBusy,
                detail: self.limits.per_peer.into(),
            });
        }
        let slots = SlotCounts::scan(producer.segment());
        if slots.ready + slots.reading >= self.limits.segment {
            return Err(Refusal {
                code: RefusalCode::SegmentBusy,
                detail: self.limits.segment.into(),
            });
        }
        state.reserved += 1;
        Ok(Reservation { ledger: self })
    }

    /// The peer will not redeem this publication: withdraws it if it is one of this peer's.
    /// Returns whether a waiting publication was withdrawn.
    pub fn release(&self, producer: &Producer, slot: u32, generation: u64) -> bool {
        let mut state = self.lock();
        let Some(index) = state
            .held
            .iter()
            .position(|&held| held == (slot, generation))
        else {
            return false;
        };
        state.held.swap_remove(index);
        producer.withdraw(slot, generation)
    }

    /// The peer is gone: withdraws every publication it has not redeemed, and from now on each
    /// one recorded for it as soon as it is made. Returns how many were withdrawn.
    pub fn close(&self, producer: &Producer) -> usize {
        let mut state = self.lock();
        state.closed = true;
        let held = std::mem::take(&mut state.held);
        held.into_iter()
            .filter(|&(slot, generation)| producer.withdraw(slot, generation))
            .count()
    }

    /// Publications recorded for this peer, redeemed or not (for tests and metrics).
    pub fn recorded(&self) -> usize {
        self.lock().held.len()
    }

    fn lock(&self) -> MutexGuard<'_, LedgerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Room for one publication in a [`PeerLedger`]; dropping it unrecorded gives the room back.
#[must_use]
pub struct Reservation<'a> {
    ledger: &'a PeerLedger,
}

impl Reservation<'_> {
    /// Records the publication made in this room. If the peer closed meanwhile, the publication
    /// is withdrawn instead and this returns false.
    pub fn record(self, producer: &Producer, handle: &Handle) -> bool {
        let mut state = self.ledger.lock();
        if state.closed {
            drop(state);
            producer.withdraw(handle.slot, handle.generation);
            return false;
        }
        state.held.push((handle.slot, handle.generation));
        true
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.ledger.lock().reserved -= 1;
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::consumer::{Consumer, ConsumerOptions};
    use crate::producer::ProducerOptions;
    use crate::segment::{Segment, SegmentConfig};

    fn producer(slots: u32) -> Producer {
        let segment = Segment::create(&SegmentConfig {
            slot_count: slots,
            slot_size: 64,
        })
        .unwrap();
        Producer::new(Arc::new(segment), ProducerOptions::default()).unwrap()
    }

    fn publish(producer: &Producer, ledger: &PeerLedger) -> Result<Handle, Refusal> {
        let room = ledger.reserve(producer)?;
        let mut slot = producer.claim(3, Duration::ZERO).unwrap();
        std::io::Write::write_all(&mut slot, b"abc").unwrap();
        let handle = slot.publish().unwrap();
        room.record(producer, &handle);
        Ok(handle)
    }

    #[test]
    fn a_peer_at_its_limit_is_busy_until_one_is_redeemed() {
        let producer = producer(8);
        let ledger = PeerLedger::new(PublicationLimits {
            per_peer: 2,
            segment: 8,
        });
        let first = publish(&producer, &ledger).unwrap();
        publish(&producer, &ledger).unwrap();
        let busy = publish(&producer, &ledger).unwrap_err();
        assert_eq!(busy.code, RefusalCode::PeerBusy);
        assert_eq!(busy.detail, 2);
        let consumer =
            Consumer::new(Arc::clone(producer.segment()), ConsumerOptions::default()).unwrap();
        assert_eq!(
            consumer.acquire(&first).unwrap().copy_out().unwrap(),
            b"abc"
        );
        publish(&producer, &ledger).unwrap();
    }

    #[test]
    fn the_segment_limit_counts_every_peer() {
        let producer = producer(8);
        let limits = PublicationLimits {
            per_peer: 8,
            segment: 3,
        };
        let (one, other) = (PeerLedger::new(limits), PeerLedger::new(limits));
        publish(&producer, &one).unwrap();
        publish(&producer, &one).unwrap();
        publish(&producer, &other).unwrap();
        let busy = publish(&producer, &other).unwrap_err();
        assert_eq!(busy.code, RefusalCode::SegmentBusy);
        assert_eq!(busy.detail, 3);
    }

    #[test]
    fn a_publication_being_read_counts_until_its_slot_is_released() {
        let producer = producer(8);
        let consumer = Consumer::new(
            Arc::clone(producer.segment()),
            ConsumerOptions {
                lease: Duration::from_secs(3600),
                ..ConsumerOptions::default()
            },
        )
        .unwrap();
        let greedy = PeerLedger::new(PublicationLimits {
            per_peer: 2,
            segment: 3,
        });
        // Redeemed with an hour's lease and never released: both still hold their slots.
        let reading = [(); 2].map(|()| {
            let handle = publish(&producer, &greedy).unwrap();
            consumer.acquire(&handle).unwrap()
        });
        let busy = publish(&producer, &greedy).unwrap_err();
        assert_eq!(busy.code, RefusalCode::PeerBusy);

        let other = PeerLedger::new(PublicationLimits {
            per_peer: 8,
            segment: 3,
        });
        publish(&producer, &other).unwrap();
        let busy = publish(&producer, &other).unwrap_err();
        assert_eq!(
            busy.code,
            RefusalCode::SegmentBusy,
            "two being read, one waiting"
        );

        let [first, _second] = reading;
        assert_eq!(first.copy_out().unwrap(), b"abc");
        publish(&producer, &greedy).unwrap();
    }

    #[test]
    fn closing_withdraws_what_was_not_redeemed_and_what_comes_after() {
        let producer = producer(8);
        let ledger = PeerLedger::new(PublicationLimits::for_slots(8));
        let handles = [(); 3].map(|()| publish(&producer, &ledger).unwrap());
        let consumer =
            Consumer::new(Arc::clone(producer.segment()), ConsumerOptions::default()).unwrap();
        consumer.acquire(&handles[0]).unwrap().copy_out().unwrap();
        let in_progress = ledger.reserve(&producer).unwrap();
        assert_eq!(ledger.close(&producer), 2);
        assert_eq!(producer.stats().slots.free, 8);
        let mut slot = producer.claim(3, Duration::ZERO).unwrap();
        std::io::Write::write_all(&mut slot, b"abc").unwrap();
        let late = slot.publish().unwrap();
        assert!(!in_progress.record(&producer, &late));
        assert_eq!(producer.stats().slots.free, 8);
        assert_eq!(producer.stats().withdrawn, 3);
    }

    #[test]
    fn release_frees_only_this_peers_waiting_publication() {
        let producer = producer(4);
        let limits = PublicationLimits::for_slots(4);
        let (mine, theirs) = (PeerLedger::new(limits), PeerLedger::new(limits));
        let own = publish(&producer, &mine).unwrap();
        let other = publish(&producer, &theirs).unwrap();
        assert!(!mine.release(&producer, other.slot, other.generation));
        assert!(producer.is_unredeemed(other.slot, other.generation));
        assert!(mine.release(&producer, own.slot, own.generation));
        assert!(!producer.is_unredeemed(own.slot, own.generation));
        assert!(!mine.release(&producer, own.slot, own.generation));
    }
}
