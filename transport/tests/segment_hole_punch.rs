//! Hole punching: `fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)` on a live sealed memfd
//! zeroes whole pages in place (the shrink and grow seals do not stop it; any process holding
//! the descriptor, or opening `/proc/PID/fd/N`, can do it). Here the test itself punches, on the
//! three kinds of page, and checks what the transport promises from the outside:
//! - a punched payload is a checksum error, never other bytes;
//! - a punched header page is restored by the producer, so a later attach works again;
//! - after a punched descriptor page, no handle published before the punch redeems anything
//!   published after it, and every slot comes back.
//!
//! `process_faults.rs` punches from another process while hand-offs run.
#![cfg(not(loom))]

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::fcntl::{FallocateFlags, fallocate};
use shmbridge::layout::{DESCRIPTOR_SIZE, PAYLOAD_ALIGN};
use shmbridge::{
    AcquireError, AttachError, ClaimError, Consumer, ConsumerOptions, Handle, Producer,
    ProducerOptions, ReadError, Segment, SegmentConfig, SlotState,
};

/// The unit punched. The kernel zeroes exactly the range it is given; whole 4 KiB pages are
/// what it frees, and what the layout aligns the payload area to.
const PAGE: u64 = PAYLOAD_ALIGN;
/// How long a test waits for the producer to make a slot claimable again after a punch.
const RECOVERY: Duration = Duration::from_secs(5);

fn options() -> ProducerOptions {
    ProducerOptions {
        // Short, so that a producer that waits a lease before taking a damaged slot back does
        // so quickly; the TTL long, so that no publication the test keeps expires under it.
        lease: Duration::from_millis(100),
        ready_ttl: Duration::from_secs(600),
        ..ProducerOptions::default()
    }
}

fn setup(config: SegmentConfig) -> (Arc<Segment>, Producer, Consumer) {
    let segment = Arc::new(Segment::create(&config).unwrap());
    let producer = Producer::new(Arc::clone(&segment), options()).unwrap();
    let consumer = Consumer::new(Arc::clone(&segment), ConsumerOptions::default()).unwrap();
    (segment, producer, consumer)
}

fn body() -> Vec<u8> {
    (0..1000u32).map(|i| (i * 7 + 3) as u8).collect()
}

/// Claims a slot (reaping between tries, for at most [`RECOVERY`]), writes `bytes`, publishes.
fn publish(producer: &Producer, bytes: &[u8]) -> Handle {
    let deadline = Instant::now() + RECOVERY;
    loop {
        producer.reap();
        match producer.claim(bytes.len(), Duration::from_millis(20)) {
            Ok(mut slot) => {
                std::io::Write::write_all(&mut slot, bytes).unwrap();
                return slot.publish().unwrap();
            }
            Err(error @ ClaimError::Exhausted { .. }) => assert!(
                Instant::now() < deadline,
                "no slot claimable {RECOVERY:?} after the punch: {error}"
            ),
            Err(error) => panic!("{error}"),
        }
    }
}

/// Punches `len` bytes at `offset` out of the segment, as any holder of its descriptor can,
/// and checks they now read as zeros.
fn punch(segment: &Segment, offset: u64, len: u64) {
    let fd = segment.fd().unwrap();
    fallocate(
        fd,
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        offset.try_into().unwrap(),
        len.try_into().unwrap(),
    )
    .expect("the kernel refused to punch a hole");
    let file = File::from(fd.try_clone_to_owned().unwrap());
    let mut bytes = vec![0xFF; len as usize];
    file.read_exact_at(&mut bytes, offset).unwrap();
    assert!(
        bytes.iter().all(|&byte| byte == 0),
        "the punch zeroed nothing"
    );
    assert_eq!(
        file.metadata().unwrap().len(),
        segment.header().total_size,
        "the punch changed the size"
    );
}

/// The slots whose whole descriptor lies in page `page`.
fn slots_in_page(segment: &Segment, page: u64) -> Range<u32> {
    let first_descriptor = segment.header().descriptors_offset;
    let page_start = page * PAGE;
    let first = page_start
        .saturating_sub(first_descriptor)
        .div_ceil(DESCRIPTOR_SIZE);
    let end = ((page_start + PAGE).saturating_sub(first_descriptor) / DESCRIPTOR_SIZE)
        .min(u64::from(segment.slot_count()));
    first as u32..end as u32
}

#[test]
fn a_punched_payload_page_is_a_checksum_error_and_the_slot_comes_back() {
    let (segment, producer, consumer) = setup(SegmentConfig {
        slot_count: 4,
        slot_size: PAGE as u32,
    });
    let handle = publish(&producer, &body());
    let payload = segment.header().payload_offset + u64::from(handle.slot) * PAGE;
    punch(&segment, payload, PAGE);

    let read = consumer.acquire(&handle).unwrap().copy_out();
    assert!(
        matches!(read, Err(ReadError::ChecksumMismatch { .. })),
        "a punched payload was read: {:?} bytes",
        read.map(|bytes| bytes.len())
    );
    assert_eq!(
        segment.inspect(handle.slot).unwrap().state,
        Some(SlotState::Free)
    );
    // The punched page is writable memory again: the next publication there reads back exactly.
    let mut slots = Vec::new();
    let again = loop {
        let next = publish(&producer, &body());
        if next.slot == handle.slot {
            break next;
        }
        slots.push(next);
        assert!(slots.len() < 4, "slot {} never came back", handle.slot);
    };
    assert_eq!(
        consumer.acquire(&again).unwrap().copy_out().unwrap(),
        body()
    );
}

#[test]
fn a_punched_header_page_is_restored_by_the_producer() {
    let (segment, producer, consumer) = setup(SegmentConfig {
        slot_count: 4,
        slot_size: PAGE as u32,
    });
    let published = publish(&producer, &body());
    // Page 0: the header, and here every descriptor too.
    assert_eq!(slots_in_page(&segment, 0), 0..4);
    punch(&segment, 0, PAGE);

    let reattach = || Segment::attach_fd(segment.fd().unwrap().try_clone_to_owned().unwrap());
    assert!(
        matches!(reattach(), Err(AttachError::BadMagic { .. })),
        "a zeroed header must not validate"
    );
    // The publication's descriptor is gone with the page: its handle is refused, not served.
    assert!(
        matches!(
            consumer.acquire(&published),
            Err(AcquireError::Stale { .. })
        ),
        "a handle whose descriptor was zeroed was redeemed"
    );

    producer.reap();
    assert_eq!(producer.stats().header_repairs, 1);
    assert_eq!(reattach().unwrap().header(), segment.header());
    // Every slot comes back and hands off exactly.
    let handles: Vec<Handle> = (0..4).map(|_| publish(&producer, &body())).collect();
    let mut slots: Vec<u32> = handles.iter().map(|handle| handle.slot).collect();
    slots.sort_unstable();
    assert_eq!(slots, [0, 1, 2, 3]);
    for handle in handles {
        assert_eq!(
            consumer.acquire(&handle).unwrap().copy_out().unwrap(),
            body()
        );
    }
}

/// Zeroed descriptors are back at generation 0. If the producer simply reused them from there,
/// the first publication after the punch would get the very generation of the last one before
/// it, and a handle to the old publication would redeem the new one (with the same bytes, the
/// crc cannot tell). Layout version 2 makes an all-zero descriptor unclaimable and has the
/// reaper restore it with a generation jump (version 1 had no defence: every old handle
/// redeemed).
#[test]
fn after_a_punched_descriptor_page_no_earlier_handle_redeems_a_later_publication() {
    // Enough slots that page 1 holds descriptors only (page 0 holds the header).
    let slot_count = (2 * PAGE / DESCRIPTOR_SIZE) as u32;
    let (segment, producer, consumer) = setup(SegmentConfig {
        slot_count,
        slot_size: 1024,
    });
    let punched = slots_in_page(&segment, 1);
    assert!(!punched.is_empty() && punched.start > 0, "{punched:?}");

    // Every slot holds a publication nobody redeemed.
    let before: Vec<Handle> = (0..slot_count)
        .map(|_| publish(&producer, &body()))
        .collect();
    punch(&segment, PAGE, PAGE);

    // So only the punched slots can take the same bytes again.
    let after: Vec<Handle> = punched
        .clone()
        .map(|_| publish(&producer, &body()))
        .collect();
    for handle in &after {
        assert!(
            punched.contains(&handle.slot),
            "a publication nobody redeemed lost slot {}",
            handle.slot
        );
    }
    for old in before
        .iter()
        .filter(|handle| punched.contains(&handle.slot))
    {
        let redeemed = consumer.acquire(old).map(|guard| guard.copy_out());
        assert!(
            redeemed.is_err(),
            "handle {old}, published before the punch, redeemed the publication made in its \
             slot after it (read: {:?} bytes)",
            redeemed.map(|read| read.map(|bytes| bytes.len()))
        );
    }
    // The publications made after the punch, and those it did not touch, redeem exactly, and
    // every slot ends free.
    let untouched = before
        .iter()
        .filter(|handle| !punched.contains(&handle.slot));
    for handle in after.iter().chain(untouched) {
        assert_eq!(
            consumer.acquire(handle).unwrap().copy_out().unwrap(),
            body()
        );
    }
    for slot in 0..slot_count {
        assert_eq!(
            segment.inspect(slot).unwrap().state,
            Some(SlotState::Free),
            "slot {slot}"
        );
    }
}
