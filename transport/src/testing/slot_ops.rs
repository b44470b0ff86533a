//! Operations by a few simulated processes on one real segment, checked against a reference
//! model: the engine behind the `slot_ops` fuzz target and its regression tests.
//!
//! Invariants checked after every operation: every successful read returns exactly the bytes
//! published for its handle (for a forged handle: bytes some publication had, unless a scribbler
//! chose them); a holder that still holds its slot can always publish, and a genuine
//! handle whose slot nobody scribbled on reads successfully unless its slot was reclaimed; on
//! descriptors nobody scribbled on, no slot has two holders and generations only move forward.
//! Sealed publications (payloads larger than a slot, on tickets) have their own invariants, in
//! `sealed_tickets`. At the end, once every crashed holder's slot has been reaped, no slot is
//! leaked, no sealed byte is counted in flight and no payload's descriptor or mapping is left.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use arbitrary::Arbitrary;

use crate::consumer::{Consumer, ConsumerOptions, ReadGuard};
use crate::handle::Handle;
use crate::host::Owner;
use crate::layout::{DESCRIPTOR_SIZE, HEADER_SIZE, SlotState};
use crate::producer::{Producer, ProducerOptions, WriteGuard};
use crate::reaper::MAX_DEADLINE_AHEAD;
use crate::segment::{Segment, SegmentConfig};
use crate::testing::ManualHost;
use crate::testing::pick::{index, pick};
use crate::testing::sealed_tickets::{
    MAX_PAYLOAD, SEALED_ROOM, SealedModel, assert_no_payload_left,
};

const PROCESSES: usize = 3;
/// How often each simulated process may restart (as a new identity) in one run.
const INCARNATIONS: usize = 3;
const SLOTS: u32 = 4;
const SLOT_SIZE: u32 = 256;
const LEASE: Duration = Duration::from_secs(1);
const TTL: Duration = Duration::from_secs(3);

/// One step of one simulated process, or of the world around them. Indexes pick among what
/// exists at that moment (modulo its count), so every byte string is a meaningful run.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Op {
    Claim {
        process: u8,
        len: u16,
    },
    Write {
        writer: u8,
        len: u8,
        seed: u8,
    },
    Publish {
        writer: u8,
    },
    Abandon {
        writer: u8,
    },
    Acquire {
        process: u8,
        handle: u8,
    },
    /// Redeems a published handle with one field changed.
    AcquireForged {
        process: u8,
        handle: u8,
        field: u8,
        delta: u8,
    },
    CopyOut {
        reader: u8,
    },
    /// Copies into a reused buffer that still holds an earlier read.
    CopyInto {
        reader: u8,
    },
    DropReader {
        reader: u8,
    },
    /// The process dies holding whatever it holds.
    Crash {
        process: u8,
    },
    /// A crashed process comes back as a new process (new identity).
    Restart {
        process: u8,
    },
    /// Time passes: with guards held, this is a pause past the lease.
    Advance {
        millis: u16,
    },
    Reap,
    FlipPayload {
        slot: u8,
        offset: u16,
        bit: u8,
    },
    FlipDescriptor {
        slot: u8,
        offset: u8,
        bit: u8,
    },
    // Sealed publications. Appended, so that the inputs kept under fuzz/ mean what they meant;
    // those were re-encoded for the longer list once (derive(Arbitrary) picks a variant by
    // scaling a u32 to the number of variants).
    /// Publishes a sealed payload; its length may also fit a slot or pass the largest allowed.
    PublishSealed {
        process: u8,
        len: u16,
        seed: u8,
    },
    /// Redeems a ticket, with its own descriptor or (`fd_of % 4 == 0`) another ticket's.
    RedeemSealed {
        process: u8,
        ticket: u8,
        fd_of: u8,
    },
    /// Reads bytes a consumer held on to, then drops them.
    CheckSealedRead {
        read: u8,
    },
    /// A ticket's descriptor never reaches a consumer.
    LoseDescriptor {
        ticket: u8,
    },
    /// The ticket's publisher withdraws it.
    WithdrawSealed {
        ticket: u8,
    },
}

struct Process {
    producer: Producer,
    consumer: Consumer,
    owner: Owner,
}

struct Writer<'a> {
    process: usize,
    guard: WriteGuard<'a>,
    written: Vec<u8>,
}

struct Reader<'a> {
    process: usize,
    guard: ReadGuard<'a>,
}

/// Runs `ops` and panics on the first broken invariant.
pub fn check_slot_ops(ops: &[Op]) {
    let host = Arc::new(ManualHost::new());
    let segment = Arc::new(
        Segment::create(&SegmentConfig {
            slot_count: SLOTS,
            slot_size: SLOT_SIZE,
        })
        .expect("create segment"),
    );
    let file = File::from(
        segment
            .fd()
            .expect("memfd segment")
            .try_clone_to_owned()
            .expect("dup segment fd"),
    );
    let options = ProducerOptions {
        lease: LEASE,
        ready_ttl: TTL,
        max_payload: MAX_PAYLOAD,
        max_sealed_bytes: SEALED_ROOM,
        max_sealed_bytes_per_peer: None,
    };
    // Every identity a process can have, made up front so that guards can borrow them.
    let processes: Vec<Process> = (0..PROCESSES * INCARNATIONS)
        .map(|n| {
            let owner = ManualHost::process(n as u32);
            Process {
                producer: Producer::with_host(Arc::clone(&segment), options, owner, host.clone()),
                consumer: Consumer::with_host(
                    Arc::clone(&segment),
                    ConsumerOptions {
                        lease: LEASE,
                        ..ConsumerOptions::default()
                    },
                    owner,
                    host.clone(),
                ),
                owner,
            }
        })
        .collect();
    let reaper = Producer::with_host(
        Arc::clone(&segment),
        options,
        ManualHost::process(99),
        host.clone(),
    );

    let mut incarnation = [0usize; PROCESSES];
    let mut alive = [true; PROCESSES];
    let mut writers: Vec<Writer<'_>> = Vec::new();
    let mut readers: Vec<Reader<'_>> = Vec::new();
    let mut published: Vec<(Handle, Vec<u8>)> = Vec::new();
    let mut payload_scribbled = [false; SLOTS as usize];
    let mut descriptor_scribbled = [false; SLOTS as usize];
    let mut ever_scribbled = [false; SLOTS as usize];
    let mut last_generation = [0u64; SLOTS as usize];
    let mut reused = vec![0xA5; SLOT_SIZE as usize / 2];
    let mut sealed = SealedModel::default();
    let identity =
        |p: usize, incarnation: &[usize; PROCESSES]| &processes[p * INCARNATIONS + incarnation[p]];

    for &op in ops {
        match op {
            Op::Claim { process, len } => {
                let p = usize::from(process) % PROCESSES;
                if !alive[p] {
                    continue;
                }
                let len = usize::from(len) % (SLOT_SIZE as usize + 32);
                match identity(p, &incarnation)
                    .producer
                    .claim(len, Duration::ZERO)
                {
                    Ok(guard) => {
                        // A scribble from before this claim is overwritten or beyond the new
                        // payload; one from after it may corrupt it.
                        payload_scribbled[guard.slot() as usize] = false;
                        writers.push(Writer {
                            process: p,
                            guard,
                            written: Vec::new(),
                        });
                    }
                    Err(crate::ClaimError::TooLarge { .. }) => assert!(len > SLOT_SIZE as usize),
                    Err(crate::ClaimError::Exhausted { .. }) => {}
                    Err(error @ crate::ClaimError::BytesExhausted { .. }) => {
                        unreachable!("claim answered {error}, which only sealed publishing does")
                    }
                }
            }
            Op::Write { writer, len, seed } => {
                let Some(writer) = pick(&mut writers, writer) else {
                    continue;
                };
                let bytes: Vec<u8> = (0..len)
                    .map(|i| seed.wrapping_add(i.wrapping_mul(7)))
                    .collect();
                if let Ok(n) = writer.guard.write(&bytes) {
                    writer.written.extend_from_slice(&bytes[..n]);
                }
            }
            Op::Publish { writer } => {
                let Some(index) = index(writers.len(), writer) else {
                    continue;
                };
                let Writer { guard, written, .. } = writers.swap_remove(index);
                let held = guard.is_held();
                match guard.publish() {
                    Ok(handle) => {
                        assert!(held, "published a slot it no longer held");
                        assert_eq!(handle.len as usize, written.len());
                        assert_eq!(handle.crc, crc32fast::hash(&written));
                        published.push((handle, written));
                    }
                    Err(_) => assert!(!held, "a holder could not publish"),
                }
            }
            Op::Abandon { writer } => {
                if let Some(index) = index(writers.len(), writer) {
                    writers.swap_remove(index);
                }
            }
            Op::Acquire { process, handle }
            | Op::AcquireForged {
                process, handle, ..
            } => {
                let p = usize::from(process) % PROCESSES;
                let Some(index) = index(published.len(), handle) else {
                    continue;
                };
                if !alive[p] {
                    continue;
                }
                let mut handle = published[index].0;
                if let Op::AcquireForged { field, delta, .. } = op {
                    forge(&mut handle, field, delta);
                }
                let view = segment.inspect(handle.slot % SLOTS).expect("slot in range");
                let redeemable = handle.epoch == segment.epoch()
                    && handle.slot < SLOTS
                    && handle.len <= SLOT_SIZE
                    && view.state == Some(SlotState::Ready)
                    && view.generation == handle.generation;
                match identity(p, &incarnation).consumer.acquire(&handle) {
                    Ok(guard) => {
                        assert!(redeemable, "acquired a handle that was not ready");
                        readers.push(Reader { process: p, guard });
                    }
                    Err(_) => assert!(!redeemable, "refused a ready handle"),
                }
            }
            Op::CopyOut { reader } | Op::CopyInto { reader } => {
                let Some(index) = index(readers.len(), reader) else {
                    continue;
                };
                let Reader { guard, .. } = readers.swap_remove(index);
                let handle = *guard.handle();
                let held = guard.is_held();
                let result = if matches!(op, Op::CopyOut { .. }) {
                    guard.copy_out()
                } else {
                    guard.copy_into(&mut reused).map(|()| reused.clone())
                };
                let original = published.iter().find(|(h, _)| *h == handle);
                match result {
                    Ok(bytes) => match original {
                        Some((_, expected)) => {
                            assert_eq!(
                                &bytes, expected,
                                "read returned other bytes than published"
                            );
                        }
                        // A forged handle can name a slot that holds the same bytes again (its
                        // generation scribbled, or republished): reading those is no harm. It must
                        // not read bytes nobody published, unless a scribbler chose the bytes.
                        None => assert!(
                            ever_scribbled[handle.slot as usize]
                                || published.iter().any(|(_, published)| *published == bytes),
                            "a forged handle read bytes nobody published"
                        ),
                    },
                    Err(_) => assert!(
                        !held
                            || original.is_none()
                            || payload_scribbled[handle.slot as usize]
                            || descriptor_scribbled[handle.slot as usize],
                        "a genuine, intact, held read failed"
                    ),
                }
            }
            Op::DropReader { reader } => {
                if let Some(index) = index(readers.len(), reader) {
                    readers.swap_remove(index);
                }
            }
            Op::Crash { process } => {
                let p = usize::from(process) % PROCESSES;
                if !alive[p] {
                    continue;
                }
                alive[p] = false;
                host.kill(identity(p, &incarnation).owner);
                // A dead process releases nothing: its guards vanish without running Drop.
                for writer in extract(&mut writers, |w| w.process == p) {
                    std::mem::forget(writer.guard);
                }
                for reader in extract(&mut readers, |r| r.process == p) {
                    std::mem::forget(reader.guard);
                }
            }
            Op::Restart { process } => {
                let p = usize::from(process) % PROCESSES;
                if !alive[p] && incarnation[p] + 1 < INCARNATIONS {
                    incarnation[p] += 1;
                    alive[p] = true;
                }
            }
            Op::Advance { millis } => host.advance(Duration::from_millis(u64::from(millis))),
            Op::Reap => {
                reaper.reap();
            }
            Op::FlipPayload { slot, offset, bit } => {
                let slot = u32::from(slot) % SLOTS;
                let offset = segment.header().payload_offset
                    + u64::from(slot * SLOT_SIZE)
                    + u64::from(offset) % u64::from(SLOT_SIZE);
                flip(&file, offset, bit);
                payload_scribbled[slot as usize] = true;
                ever_scribbled[slot as usize] = true;
            }
            Op::FlipDescriptor { slot, offset, bit } => {
                let slot = u32::from(slot) % SLOTS;
                let offset = HEADER_SIZE
                    + u64::from(slot) * DESCRIPTOR_SIZE
                    + u64::from(offset) % DESCRIPTOR_SIZE;
                flip(&file, offset, bit);
                descriptor_scribbled[slot as usize] = true;
                ever_scribbled[slot as usize] = true;
            }
            Op::PublishSealed { process, len, seed } => {
                let p = usize::from(process) % PROCESSES;
                if alive[p] {
                    let id = p * INCARNATIONS + incarnation[p];
                    let producer = &processes[id].producer;
                    let drawn = (len, seed);
                    sealed.publish(&segment, producer, id, drawn, &descriptor_scribbled);
                }
            }
            Op::RedeemSealed {
                process,
                ticket,
                fd_of,
            } => {
                let p = usize::from(process) % PROCESSES;
                if alive[p] {
                    let consumer = &identity(p, &incarnation).consumer;
                    sealed.redeem(&segment, consumer, ticket, fd_of);
                }
            }
            Op::CheckSealedRead { read } => sealed.check_read(read),
            Op::LoseDescriptor { ticket } => sealed.lose_descriptor(ticket),
            Op::WithdrawSealed { ticket } => {
                let running = |id: usize| {
                    let p = id / INCARNATIONS;
                    (alive[p] && incarnation[p] == id % INCARNATIONS)
                        .then(|| &processes[id].producer)
                };
                sealed.withdraw(&segment, running, ticket);
            }
        }

        let holders = |slot: u32| {
            writers
                .iter()
                .filter(|w| w.guard.slot() == slot && w.guard.is_held())
                .count()
                + readers
                    .iter()
                    .filter(|r| r.guard.handle().slot == slot && r.guard.is_held())
                    .count()
        };
        // Only the holder of the current generation may stamp a descriptor: a late publisher or a
        // holder that lost its slot must never overwrite the stamp of whoever holds it now.
        let live_holders = writers
            .iter()
            .filter(|w| alive[w.process])
            .map(|w| (w.guard.slot(), w.guard.is_held(), w.process))
            .chain(
                readers
                    .iter()
                    .filter(|r| alive[r.process])
                    .map(|r| (r.guard.handle().slot, r.guard.is_held(), r.process)),
            );
        for (slot, held, process) in live_holders {
            if held && !descriptor_scribbled[slot as usize] {
                let view = segment.inspect(slot).expect("slot in range");
                assert!(
                    view.stamped,
                    "slot {slot}: its holder's stamp was overwritten"
                );
                assert_eq!(
                    view.owner,
                    identity(process, &incarnation).owner,
                    "slot {slot}: stamped for another process than its holder"
                );
            }
        }
        for (handle, _) in &published {
            let view = segment.inspect(handle.slot).expect("slot in range");
            if view.state == Some(SlotState::Ready)
                && view.generation == handle.generation
                && !descriptor_scribbled[handle.slot as usize]
            {
                assert!(
                    view.stamped,
                    "slot {}: its TTL was overwritten",
                    handle.slot
                );
                assert_eq!((view.len, view.crc), (handle.len, handle.crc));
            }
        }
        for slot in 0..SLOTS {
            let generation = segment.inspect(slot).expect("slot in range").generation;
            // A scribbler can write any state word, including one a holder already held (an
            // ABA the generation cannot prevent): exclusivity and monotonic generations are
            // promised only for descriptors nobody scribbled on. Byte-exact reads are promised
            // for all, and checked above.
            if !descriptor_scribbled[slot as usize] {
                assert!(holders(slot) <= 1, "slot {slot} has two holders");
                assert!(
                    generation >= last_generation[slot as usize],
                    "generation of slot {slot} went back"
                );
            }
            last_generation[slot as usize] = generation;
        }
        for (id, process) in processes.iter().enumerate() {
            sealed.check_in_flight(&segment, &process.producer, id, &descriptor_scribbled);
        }
    }

    // Everyone alive finishes. The first pass reclaims what is dead or scribbled and notes what
    // is unstamped; by the second, every lease, TTL and unstamped grace has run out.
    drop(writers);
    drop(readers);
    let payloads = sealed.finish();
    reaper.reap();
    host.advance(MAX_DEADLINE_AHEAD + TTL + LEASE * 2);
    reaper.reap();
    assert_eq!(
        reaper.stats().slots.free,
        SLOTS,
        "slots leaked: {:?}",
        reaper.stats().slots
    );
    for (id, process) in processes.iter().enumerate() {
        let in_flight = process.producer.stats().sealed_bytes_in_flight;
        assert_eq!(in_flight, 0, "identity {id} still counts sealed bytes");
    }
    assert_no_payload_left(&payloads);
}

fn extract<T>(items: &mut Vec<T>, matches: impl Fn(&T) -> bool) -> Vec<T> {
    let (taken, kept) = std::mem::take(items)
        .into_iter()
        .partition(|item| matches(item));
    *items = kept;
    taken
}

fn forge(handle: &mut Handle, field: u8, delta: u8) {
    let delta = u64::from(delta) + 1;
    match field % 5 {
        0 => handle.epoch ^= delta,
        1 => handle.slot = handle.slot.wrapping_add(delta as u32),
        2 => {
            handle.generation =
                handle.generation.wrapping_add(delta) & crate::layout::MAX_GENERATION
        }
        3 => handle.len ^= delta as u32,
        _ => handle.crc ^= delta as u32,
    }
}

/// Flips one bit of the segment through its file descriptor, as another process would.
fn flip(file: &File, offset: u64, bit: u8) {
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset)
        .expect("read segment byte");
    byte[0] ^= 1 << (bit % 8);
    file.write_all_at(&byte, offset)
        .expect("write segment byte");
}
