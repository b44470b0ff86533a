//! The slot protocol end to end in one process, on a manual clock with simulated processes:
//! hand-off, redeem-once, limits, every reclaim reason, and late holders failing.
#![cfg(not(loom))]

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use shmbridge::Host;
use shmbridge::testing::ManualHost;
use shmbridge::{
    AcquireError, ClaimError, Consumer, ConsumerOptions, Handle, Owner, Producer, ProducerOptions,
    PublishError, ReadError, ReclaimReason, Segment, SegmentConfig, SlotState,
};

const LEASE: Duration = Duration::from_secs(1);
const TTL: Duration = Duration::from_secs(5);

struct World {
    host: Arc<ManualHost>,
    segment: Arc<Segment>,
    producer: Producer,
    consumer: Consumer,
    consumer_owner: Owner,
}

fn world(slot_count: u32) -> World {
    let host = Arc::new(ManualHost::new());
    let segment = Arc::new(
        Segment::create(&SegmentConfig {
            slot_count,
            slot_size: 4096,
        })
        .unwrap(),
    );
    let producer = Producer::with_host(
        Arc::clone(&segment),
        ProducerOptions {
            lease: LEASE,
            ready_ttl: TTL,
            ..ProducerOptions::default()
        },
        ManualHost::process(1),
        host.clone(),
    );
    let consumer_owner = ManualHost::process(2);
    let consumer = Consumer::with_host(
        Arc::clone(&segment),
        ConsumerOptions {
            lease: LEASE,
            ..ConsumerOptions::default()
        },
        consumer_owner,
        host.clone(),
    );
    World {
        host,
        segment,
        producer,
        consumer,
        consumer_owner,
    }
}

fn publish(producer: &Producer, bytes: &[u8]) -> Handle {
    let mut slot = producer.claim(bytes.len(), Duration::ZERO).unwrap();
    slot.write_all(bytes).unwrap();
    slot.publish().unwrap()
}

fn state_of(segment: &Segment, slot: u32) -> Option<SlotState> {
    segment.inspect(slot).unwrap().state
}

#[test]
fn hand_off_returns_the_published_bytes_and_frees_the_slot() {
    let w = world(2);
    let handle = publish(&w.producer, b"payload bytes");
    assert_eq!(handle.len, 13);
    assert_eq!(handle.crc, crc32fast::hash(b"payload bytes"));
    assert_eq!(state_of(&w.segment, handle.slot), Some(SlotState::Ready));
    let bytes = w.consumer.acquire(&handle).unwrap().copy_out().unwrap();
    assert_eq!(bytes, b"payload bytes");
    assert_eq!(state_of(&w.segment, handle.slot), Some(SlotState::Free));
    assert_eq!(w.producer.stats().slots.free, 2);
}

#[test]
fn copy_into_replaces_a_reused_buffer() {
    let w = world(1);
    let handle = publish(&w.producer, b"seventeen bytes!!");
    let mut buffer = b"an older, longer body that must not survive".to_vec();
    w.consumer
        .acquire(&handle)
        .unwrap()
        .copy_into(&mut buffer)
        .unwrap();
    assert_eq!(buffer, b"seventeen bytes!!");
    assert_eq!(state_of(&w.segment, 0), Some(SlotState::Free));
}

#[test]
fn payloads_written_in_odd_pieces_read_back_exactly() {
    let w = world(1);
    let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
    let mut slot = w.producer.claim(bytes.len(), Duration::ZERO).unwrap();
    for piece in bytes.chunks(13).flat_map(|chunk| chunk.chunks(5)) {
        slot.write_all(piece).unwrap();
    }
    let handle = slot.publish().unwrap();
    assert_eq!(handle.crc, crc32fast::hash(&bytes));
    assert_eq!(
        w.consumer.acquire(&handle).unwrap().copy_out().unwrap(),
        bytes
    );
}

#[test]
fn a_handle_is_redeemable_once() {
    let w = world(1);
    let handle = publish(&w.producer, b"once");
    w.consumer.acquire(&handle).unwrap().copy_out().unwrap();
    let again = w.consumer.acquire(&handle).err().unwrap();
    assert!(
        matches!(again, AcquireError::Stale { expected, found, found_state: Some(SlotState::Free), .. }
        if expected == handle.generation && found == handle.generation + 2)
    );
    assert_eq!(w.consumer.stats().stale_handles, 1);
}

#[test]
fn handles_from_elsewhere_are_refused_precisely() {
    let w = world(1);
    let handle = publish(&w.producer, b"x");
    let other_epoch = Handle {
        epoch: handle.epoch ^ 1,
        ..handle
    };
    assert!(matches!(
        w.consumer.acquire(&other_epoch).err().unwrap(),
        AcquireError::WrongEpoch { .. }
    ));
    let out_of_range = Handle { slot: 1, ..handle };
    assert_eq!(
        w.consumer.acquire(&out_of_range).err().unwrap(),
        AcquireError::SlotOutOfRange { slot: 1, slots: 1 }
    );
    let too_long = Handle {
        len: 4097,
        ..handle
    };
    assert_eq!(
        w.consumer.acquire(&too_long).err().unwrap(),
        AcquireError::TooLarge {
            len: 4097,
            max: 4096
        }
    );
    // None of the refusals consumed the real handle.
    assert_eq!(
        w.consumer.acquire(&handle).unwrap().copy_out().unwrap(),
        b"x"
    );
}

#[test]
fn oversized_payloads_and_overlong_writes_are_refused() {
    let w = world(1);
    assert_eq!(
        w.producer.claim(4097, Duration::ZERO).err().unwrap(),
        ClaimError::TooLarge {
            len: 4097,
            max: 4096
        }
    );
    let mut slot = w.producer.claim(4, Duration::ZERO).unwrap();
    let error = slot.write_all(b"12345").unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::WriteZero);
}

#[test]
fn claim_waits_until_its_deadline_then_reports_exhausted() {
    let w = world(1);
    let _held = w.producer.claim(1, Duration::ZERO).unwrap();
    let before = w.host.now_ns();
    let error = w
        .producer
        .claim(1, Duration::from_millis(50))
        .err()
        .unwrap();
    assert_eq!(error, ClaimError::Exhausted { slots: 1 });
    let waited = w.host.now_ns() - before;
    assert!(
        (50_000_000..=51_000_000).contains(&waited),
        "waited {waited} ns"
    );
    assert_eq!(w.producer.stats().claims_exhausted, 1);
}

#[test]
fn an_abandoned_write_frees_its_slot() {
    let w = world(1);
    let slot = w.producer.claim(1, Duration::ZERO).unwrap();
    drop(slot);
    assert_eq!(state_of(&w.segment, 0), Some(SlotState::Free));
    publish(&w.producer, b"next");
}

#[test]
fn a_flipped_payload_byte_gives_checksum_mismatch() {
    let path = std::env::temp_dir().join(format!("shmbridge-flip-{}", std::process::id()));
    let segment = Arc::new(
        Segment::create_file(
            &path,
            &SegmentConfig {
                slot_count: 1,
                slot_size: 4096,
            },
        )
        .unwrap(),
    );
    let producer = Producer::new(Arc::clone(&segment), ProducerOptions::default()).unwrap();
    let consumer = Consumer::new(Arc::clone(&segment), ConsumerOptions::default()).unwrap();
    let handle = publish(&producer, b"exact bytes");
    // A third party flips one payload bit through the file.
    let payload_offset = segment.header().payload_offset;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    use std::io::{Read, Seek, SeekFrom};
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(payload_offset + 3)).unwrap();
    file.read_exact(&mut byte).unwrap();
    file.seek(SeekFrom::Start(payload_offset + 3)).unwrap();
    file.write_all(&[byte[0] ^ 0x10]).unwrap();
    let error = consumer.acquire(&handle).unwrap().copy_out().unwrap_err();
    assert_eq!(
        error,
        ReadError::ChecksumMismatch {
            expected: handle.crc,
            found: crc32fast::hash(b"exast bytes"),
        }
    );
    assert_eq!(consumer.stats().checksum_failures, 1);
    assert_eq!(state_of(&segment, 0), Some(SlotState::Free));
    drop((producer, consumer, segment));
    assert!(!path.exists(), "creator removes its segment file");
}

#[test]
fn reaper_reclaims_a_dead_writer_and_its_late_publish_fails() {
    let w = world(1);
    let mut slot = w.producer.claim(4, Duration::ZERO).unwrap();
    slot.write_all(b"ha").unwrap();
    w.host.kill(ManualHost::process(1));
    let reclaims = w.producer.reap();
    assert_eq!(reclaims.get(ReclaimReason::DeadOwner), 1);
    assert_eq!(state_of(&w.segment, 0), Some(SlotState::Free));
    assert!(
        slot.write_all(b"lf").is_err(),
        "a reclaimed writer cannot write"
    );
    assert!(matches!(
        slot.publish(),
        Err(PublishError::Reclaimed { slot: 0, .. })
    ));
}

#[test]
fn a_writer_paused_past_its_lease_cannot_publish_over_the_next_owner() {
    let w = world(1);
    let mut paused = w.producer.claim(5, Duration::ZERO).unwrap();
    paused.write_all(b"old").unwrap();
    w.host.advance(LEASE + Duration::from_millis(1));
    assert_eq!(w.producer.reap().get(ReclaimReason::LeaseExpired), 1);
    let handle = publish(&w.producer, b"new!!");
    assert!(paused.publish().is_err());
    assert_eq!(
        w.consumer.acquire(&handle).unwrap().copy_out().unwrap(),
        b"new!!"
    );
    assert_eq!(w.producer.stats().writes_reclaimed, 1);
}

/// A publisher whose lease ran out resumes after the slot changed hands: its publish must fail
/// without touching the new holder's stamp (owner, lease end), which the reaper relies on.
#[test]
fn a_late_publisher_leaves_the_next_holders_stamp_alone() {
    let w = world(1);
    let mut late = w.producer.claim(4, Duration::ZERO).unwrap();
    late.write_all(b"late").unwrap();
    w.host.advance(LEASE + Duration::from_millis(1));
    assert_eq!(w.producer.reap().get(ReclaimReason::LeaseExpired), 1);
    let next_owner = ManualHost::process(3);
    let next = Producer::with_host(
        Arc::clone(&w.segment),
        ProducerOptions::default(),
        next_owner,
        w.host.clone(),
    );
    let _holding = next.claim(4, Duration::ZERO).unwrap();
    let before = w.segment.inspect(0).unwrap();
    assert!(before.stamped);
    assert_eq!(before.owner, next_owner);
    w.host.advance(Duration::from_millis(10));
    assert!(matches!(
        late.publish(),
        Err(PublishError::Reclaimed { .. })
    ));
    assert_eq!(w.segment.inspect(0).unwrap(), before);
}

#[test]
fn a_reader_whose_slot_was_reclaimed_and_rewritten_gets_an_error_not_bytes() {
    let w = world(1);
    let handle = publish(&w.producer, b"first");
    let reader = w.consumer.acquire(&handle).unwrap();
    w.host.advance(LEASE + Duration::from_millis(1));
    assert_eq!(w.producer.reap().get(ReclaimReason::LeaseExpired), 1);
    let second = publish(&w.producer, b"other");
    assert_eq!(
        reader.copy_out().unwrap_err(),
        ReadError::Reclaimed { slot: 0 }
    );
    // The reclaimed reader did not disturb the new publication.
    assert_eq!(
        w.consumer.acquire(&second).unwrap().copy_out().unwrap(),
        b"other"
    );
    assert_eq!(w.consumer.stats().reads_reclaimed, 1);
}

#[test]
fn a_dead_reader_is_reclaimed_before_its_lease_ends() {
    let w = world(1);
    let handle = publish(&w.producer, b"data");
    let reader = w.consumer.acquire(&handle).unwrap();
    w.host.kill(w.consumer_owner);
    assert_eq!(w.producer.reap().get(ReclaimReason::DeadOwner), 1);
    std::mem::forget(reader);
    assert_eq!(w.producer.stats().slots.free, 1);
}

/// A reader the producer cannot look up (another PID namespace) stamps `Owner::LEASE_ONLY`: the
/// reaper never asks the process table about it, so only its lease ends its hold, even where
/// the table has no such process.
#[test]
fn a_lease_only_reader_is_reclaimed_at_its_lease_end_only() {
    let w = world(1);
    let sidecar = Consumer::with_host(
        Arc::clone(&w.segment),
        ConsumerOptions {
            lease: LEASE,
            ..ConsumerOptions::default()
        },
        Owner::LEASE_ONLY,
        w.host.clone(),
    );
    let handle = publish(&w.producer, b"data");
    let reader = sidecar.acquire(&handle).unwrap();
    w.host.kill(Owner::LEASE_ONLY);
    assert_eq!(w.producer.reap().total(), 0);
    w.host.advance(LEASE - Duration::from_millis(1));
    assert_eq!(w.producer.reap().total(), 0);
    assert_eq!(reader.copy_out().unwrap(), b"data");

    let handle = publish(&w.producer, b"more");
    let reader = sidecar.acquire(&handle).unwrap();
    w.host.advance(LEASE + Duration::from_millis(1));
    assert_eq!(w.producer.reap().get(ReclaimReason::LeaseExpired), 1);
    std::mem::forget(reader);
}

#[test]
fn unredeemed_publications_expire_after_the_ttl_only() {
    let w = world(1);
    let handle = publish(&w.producer, b"nobody came");
    w.host.advance(TTL - Duration::from_millis(1));
    assert_eq!(w.producer.reap().total(), 0, "not before the TTL");
    w.host.advance(Duration::from_millis(2));
    assert_eq!(w.producer.reap().get(ReclaimReason::TtlExpired), 1);
    assert!(matches!(
        w.consumer.acquire(&handle),
        Err(AcquireError::Stale { .. })
    ));
}

#[test]
fn a_live_holder_within_its_lease_is_never_reclaimed() {
    let w = world(2);
    let _writing = w.producer.claim(1, Duration::ZERO).unwrap();
    let handle = publish(&w.producer, b"r");
    let _reading = w.consumer.acquire(&handle).unwrap();
    w.host.advance(LEASE - Duration::from_millis(1));
    assert_eq!(w.producer.reap().total(), 0);
}

#[test]
fn claim_reaps_when_no_slot_is_free() {
    let w = world(1);
    let _ = publish(&w.producer, b"never redeemed");
    w.host.advance(TTL + Duration::from_millis(1));
    let slot = w.producer.claim(1, Duration::ZERO).unwrap();
    assert_eq!(slot.slot(), 0);
    assert_eq!(
        w.producer.stats().reclaims.get(ReclaimReason::TtlExpired),
        1
    );
}

#[test]
fn the_periodic_reaper_reclaims_without_being_asked() {
    let segment = Arc::new(
        Segment::create(&SegmentConfig {
            slot_count: 1,
            slot_size: 64,
        })
        .unwrap(),
    );
    let producer = Arc::new(
        Producer::new(
            Arc::clone(&segment),
            ProducerOptions {
                lease: Duration::from_millis(1),
                ready_ttl: Duration::from_millis(1),
                ..ProducerOptions::default()
            },
        )
        .unwrap(),
    );
    let reaper = producer.spawn_reaper(Duration::from_millis(5)).unwrap();
    publish(&producer, b"expires");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while state_of(&segment, 0) != Some(SlotState::Free) {
        assert!(
            std::time::Instant::now() < deadline,
            "not reclaimed in 10 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(reaper);
    assert_eq!(producer.stats().reclaims.get(ReclaimReason::TtlExpired), 1);
}
