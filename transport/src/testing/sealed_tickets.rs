//! The sealed-publication part of the `slot_ops` model: payloads larger than a slot published on
//! tickets by the simulated processes, their descriptors on the way to a consumer, the verified
//! bytes consumers hold, and the bytes each producer counts in flight.
//!
//! Invariants: a sealed publication is refused exactly when its length is outside (slot size,
//! max payload] or the producer's room is used up by its outstanding tickets (the refusal names
//! them); a redeemed ticket gives exactly its published bytes, also after its ticket is reclaimed
//! and its slot reused, and a ticket that waits is redeemed with its own descriptor; after every
//! operation each producer counts exactly the bytes of its tickets that still wait or are being
//! redeemed (READY at their generation, or READING at the next); at the end that is 0 and no
//! descriptor or mapping of any payload is left in the process.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::ClaimError;
use crate::consumer::Consumer;
use crate::handle::Handle;
use crate::layout::SlotState;
use crate::producer::Producer;
use crate::sealed::{SealedBytes, SealedPayload};
use crate::segment::Segment;

use super::pick::index;

/// The largest sealed payload a simulated producer publishes.
pub(super) const MAX_PAYLOAD: usize = 1024;
/// Sealed bytes a simulated producer lets wait at once: one and a half of the largest, so that
/// the room, not the four slots, runs out first.
pub(super) const SEALED_ROOM: u64 = 1536;
/// Sealed payload lengths drawn run a little past `MAX_PAYLOAD`, and include lengths a slot holds.
const LENGTHS: usize = MAX_PAYLOAD + 128;

struct Ticket {
    /// Which identity published it (index into the model's processes).
    publisher: usize,
    handle: Handle,
    bytes: Vec<u8>,
    /// The descriptor on its way to a consumer; `None` once redeemed with, or lost.
    received: Option<OwnedFd>,
}

#[derive(Default)]
pub(super) struct SealedModel {
    tickets: Vec<Ticket>,
    /// Verified bytes a consumer still holds (its mapping), with the bytes published.
    reads: Vec<(SealedBytes, Vec<u8>)>,
    /// The inode of every payload made, to find leaked descriptors and mappings at the end.
    inodes: Vec<u64>,
}

impl SealedModel {
    /// `producer` (identity `publisher`) makes a sealed payload of a length drawn from `len` and
    /// publishes it, waiting for nothing. Its own descriptor is dropped right after, as a
    /// producer does once it has sent it; the consumer's copy travels in the ticket.
    pub(super) fn publish(
        &mut self,
        segment: &Segment,
        producer: &Producer,
        publisher: usize,
        (len, seed): (u16, u8),
        descriptor_scribbled: &[bool],
    ) {
        let len = usize::from(len) % LENGTHS;
        let bytes: Vec<u8> = (0..len)
            .map(|i| seed.wrapping_add((i as u8).wrapping_mul(7)))
            .collect();
        let payload = SealedPayload::from_bytes(&bytes).expect("make a sealed payload");
        self.inodes.push(inode(payload.as_fd()));
        match producer.publish_sealed(&payload, std::time::Duration::ZERO) {
            Ok(handle) => {
                assert!(len <= MAX_PAYLOAD);
                assert_eq!(
                    (handle.len as usize, handle.crc),
                    (len, crc32fast::hash(&bytes))
                );
                let received = payload.as_fd().try_clone_to_owned().expect("dup payload");
                self.tickets.push(Ticket {
                    publisher,
                    handle,
                    bytes,
                    received: Some(received),
                });
            }
            Err(ClaimError::TooLarge { .. }) => assert!(len > MAX_PAYLOAD),
            Err(ClaimError::BytesExhausted { in_flight, max }) => {
                assert!(in_flight + len as u64 > max, "refused with room left");
                if !self.on_scribbled(publisher, descriptor_scribbled) {
                    assert_eq!(
                        in_flight,
                        self.outstanding(segment, publisher),
                        "refused naming other bytes than its outstanding tickets'"
                    );
                }
            }
            Err(ClaimError::Exhausted { .. }) => assert!(
                (0..segment.slot_count())
                    .all(|slot| segment.inspect(slot).unwrap().state != Some(SlotState::Free)),
                "no ticket although a slot is free"
            ),
        }
    }

    /// `consumer` redeems a ticket: mostly with the descriptor that came with it, when
    /// `fd_of % 4 == 0` with another ticket's (a consumer mixing up its messages), which must be
    /// refused unless it holds the very same bytes.
    pub(super) fn redeem(&mut self, segment: &Segment, consumer: &Consumer, ticket: u8, fd_of: u8) {
        let Some(own) = index(self.tickets.len(), ticket) else {
            return;
        };
        let source = if fd_of % 4 == 0 {
            index(self.tickets.len(), fd_of / 4).expect("tickets exist")
        } else {
            own
        };
        let Some(fd) = self.tickets[source].received.take() else {
            return;
        };
        let same_bytes = self.tickets[source].bytes == self.tickets[own].bytes;
        let Ticket { handle, bytes, .. } = &self.tickets[own];
        let view = segment.inspect(handle.slot).expect("slot in range");
        let waiting = view.state == Some(SlotState::Ready) && view.generation == handle.generation;
        match consumer.redeem_sealed(handle, fd) {
            Ok(read) => {
                assert!(waiting, "redeemed a ticket that was not waiting");
                assert_eq!(&read[..], bytes, "a sealed read returned other bytes");
                self.reads.push((read, bytes.clone()));
            }
            Err(error) => assert!(
                !waiting || !same_bytes,
                "refused a waiting ticket with its own descriptor: {error}"
            ),
        }
        if waiting {
            let after = segment.inspect(handle.slot).expect("slot in range");
            assert!(
                after.state != Some(SlotState::Ready) || after.generation != handle.generation,
                "a redeemed ticket still waits"
            );
        }
    }

    /// A consumer looks at bytes it held on to (the ticket may long be reclaimed and its slot
    /// reused), then lets them go.
    pub(super) fn check_read(&mut self, read: u8) {
        if let Some(read) = index(self.reads.len(), read) {
            let (read, published) = self.reads.swap_remove(read);
            assert_eq!(&read[..], published, "held sealed bytes changed");
        }
    }

    /// The message carrying a ticket's descriptor is lost (its consumer went away).
    pub(super) fn lose_descriptor(&mut self, ticket: u8) {
        if let Some(ticket) = index(self.tickets.len(), ticket) {
            self.tickets[ticket].received = None;
        }
    }

    /// The publisher of a ticket withdraws it (its consumer said it will not redeem it); `None`
    /// when that identity no longer runs. Succeeds exactly when the ticket still waits.
    pub(super) fn withdraw<'p>(
        &self,
        segment: &Segment,
        publisher: impl Fn(usize) -> Option<&'p Producer>,
        ticket: u8,
    ) {
        let Some(ticket) = index(self.tickets.len(), ticket) else {
            return;
        };
        let Ticket { handle, .. } = &self.tickets[ticket];
        let Some(producer) = publisher(self.tickets[ticket].publisher) else {
            return;
        };
        let view = segment.inspect(handle.slot).expect("slot in range");
        let waiting = view.state == Some(SlotState::Ready) && view.generation == handle.generation;
        assert_eq!(producer.withdraw(handle.slot, handle.generation), waiting);
    }

    /// Whether one of `publisher`'s tickets is on a descriptor a scribbler wrote. A scribbler can
    /// bring a ticket's exact word back after its producer stopped counting it (a producer learns
    /// that a ticket is over once, and forgets it), so such a producer's count is not checked.
    fn on_scribbled(&self, publisher: usize, descriptor_scribbled: &[bool]) -> bool {
        self.tickets.iter().any(|ticket| {
            ticket.publisher == publisher && descriptor_scribbled[ticket.handle.slot as usize]
        })
    }

    /// Bytes of `publisher`'s tickets that still wait or are being redeemed.
    fn outstanding(&self, segment: &Segment, publisher: usize) -> u64 {
        self.tickets
            .iter()
            .filter(|ticket| ticket.publisher == publisher)
            .filter(|ticket| {
                let view = segment.inspect(ticket.handle.slot).expect("slot in range");
                let g = ticket.handle.generation;
                (view.state, view.generation) == (Some(SlotState::Ready), g)
                    || (view.state, view.generation) == (Some(SlotState::Reading), g + 1)
            })
            .map(|ticket| ticket.bytes.len() as u64)
            .sum()
    }

    /// `producer` (identity `publisher`) counts exactly the bytes of its outstanding tickets,
    /// within its room (unless one of them is on a scribbled descriptor).
    pub(super) fn check_in_flight(
        &self,
        segment: &Segment,
        producer: &Producer,
        publisher: usize,
        descriptor_scribbled: &[bool],
    ) {
        if self.on_scribbled(publisher, descriptor_scribbled) {
            return;
        }
        let counted = producer.stats().sealed_bytes_in_flight;
        assert_eq!(
            counted,
            self.outstanding(segment, publisher),
            "identity {publisher} counts other sealed bytes than its outstanding tickets'"
        );
        assert!(
            counted <= SEALED_ROOM,
            "identity {publisher} is over its room"
        );
    }

    /// Drops every descriptor in transit and every mapping held; returns the inode of every
    /// payload made.
    pub(super) fn finish(self) -> Vec<u64> {
        self.inodes
    }
}

fn inode(fd: BorrowedFd<'_>) -> u64 {
    nix::sys::stat::fstat(fd).expect("fstat payload").st_ino
}

/// Panics if a descriptor or a mapping of any of `inodes` (payloads, all dropped by now) is still
/// open in this process. Other threads may open and close descriptors meanwhile (tests run in
/// parallel), so entries that vanish while being looked at are skipped.
pub(super) fn assert_no_payload_left(inodes: &[u64]) {
    if inodes.is_empty() {
        return;
    }
    let fds = std::fs::read_dir("/proc/self/fd").expect("list /proc/self/fd");
    for entry in fds.flatten() {
        if let Ok(meta) = std::fs::metadata(entry.path()) {
            let ino = std::os::unix::fs::MetadataExt::ino(&meta);
            let name = std::fs::read_link(entry.path()).unwrap_or_default();
            assert!(
                !(inodes.contains(&ino) && name.to_string_lossy().contains("shmbridge-payload")),
                "a payload's descriptor is still open: {}",
                name.display()
            );
        }
    }
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    for line in maps
        .lines()
        .filter(|line| line.contains("shmbridge-payload"))
    {
        let ino: u64 = line
            .split_whitespace()
            .nth(4)
            .and_then(|ino| ino.parse().ok())
            .expect("inode column");
        assert!(!inodes.contains(&ino), "a payload is still mapped: {line}");
    }
}
