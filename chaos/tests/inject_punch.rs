//! The hole-punching injector of the `resize` scenario against a real sealed segment: it
//! punches the pages it reports (the last descriptor page, the header page, a live payload), the
//! size stays, each punch shows in what a reader gets, and it measures the producer's reaper
//! restoring the header; with no reaper running it reports the header unrestored, which the
//! scenario counts as a violation.

use std::sync::Arc;
use std::time::Duration;

use shmbridge::layout::{DESCRIPTOR_SIZE, HEADER_SIZE};
use shmbridge::{
    AcquireError, Consumer, ConsumerOptions, ControlServer, Handle, Producer, ProducerOptions,
    ReadError, Segment, SegmentConfig,
};
use shmbridge_chaos::harness::faults::resize::{self, HEADER_RESTORE_LIMIT, PAGE, PunchTarget};

const TIMEOUT: Duration = Duration::from_secs(5);
/// Enough slots for three pages of descriptors: page 0 (with the header) and page 2 are
/// punched, page 1 is not, so a slot described there keeps its descriptor.
const SLOTS: SegmentConfig = SegmentConfig {
    slot_count: 128,
    slot_size: PAGE as u32,
};

fn served_segment(test: &str) -> (Arc<Segment>, ControlServer, String) {
    let segment = Arc::new(Segment::create(&SLOTS).unwrap());
    let socket = format!(
        "shmbridge-chaos-test-punch-{test}-{}-{:016x}",
        std::process::id(),
        segment.epoch()
    );
    let server = ControlServer::spawn(Arc::clone(&segment), &socket).unwrap();
    (segment, server, socket)
}

/// Publishes `bytes` in exactly `slot`, by holding every other slot meanwhile.
fn publish_in(producer: &Producer, slot: u32, bytes: &[u8]) -> Handle {
    let mut held = Vec::new();
    loop {
        let mut guard = producer.claim(bytes.len(), TIMEOUT).unwrap();
        if guard.slot() == slot {
            std::io::Write::write_all(&mut guard, bytes).unwrap();
            return guard.publish().unwrap();
        }
        held.push(guard);
    }
}

fn page_of_descriptor(slot: u32) -> u64 {
    (HEADER_SIZE + u64::from(slot) * DESCRIPTOR_SIZE) / PAGE
}

#[test]
fn punches_land_where_reported_and_the_reaper_restores_the_header() {
    let (segment, _server, socket) = served_segment("restored");
    let producer =
        Arc::new(Producer::new(Arc::clone(&segment), ProducerOptions::default()).unwrap());
    let consumer = Consumer::new(Arc::clone(&segment), ConsumerOptions::default()).unwrap();
    // One publication described on each page: 0 (with the header), 1 (never punched), 2.
    let on_page: Vec<Handle> = [0, 100, SLOTS.slot_count - 1]
        .into_iter()
        .map(|slot| publish_in(&producer, slot, &[42; 1000]))
        .collect();
    let pages: Vec<u64> = on_page
        .iter()
        .map(|handle| page_of_descriptor(handle.slot))
        .collect();
    assert_eq!(pages, [0, 1, 2]);
    let _reaper = producer.spawn_reaper(Duration::from_millis(20)).unwrap();

    let punches = resize::punch_holes(&socket, TIMEOUT).unwrap();
    let targets: Vec<(PunchTarget, u64)> = punches
        .punches
        .iter()
        .map(|punch| (punch.target, punch.offset))
        .collect();
    // The hunt finds the one publication whose descriptor survived the first two punches.
    let survivor = on_page[1].slot;
    assert_eq!(
        targets,
        [
            (PunchTarget::Descriptors, 2 * PAGE),
            (PunchTarget::Header, 0),
            (
                PunchTarget::Payload {
                    slot: survivor,
                    live: true
                },
                segment.header().payload_offset + u64::from(survivor) * PAGE
            ),
        ]
    );
    for punch in &punches.punches {
        assert_eq!(punch.outcome, Ok(()), "{punch:?}");
    }
    assert_eq!(punches.size_after, segment.header().total_size);
    let restored = punches.header_restored_after.expect("header not restored");
    assert!(restored <= HEADER_RESTORE_LIMIT);
    assert!(producer.stats().header_repairs >= 1);

    // Punched descriptors: their publications are gone, not served.
    for handle in [&on_page[0], &on_page[2]] {
        assert!(matches!(
            consumer.acquire(handle),
            Err(AcquireError::Stale { .. })
        ));
    }
    // A punched payload under a whole descriptor: the reader's checksum catches the zeros.
    let read = consumer.acquire(&on_page[1]).unwrap().copy_out();
    assert!(
        matches!(read, Err(ReadError::ChecksumMismatch { .. })),
        "a punched payload was read: {:?}",
        read.map(|bytes| bytes.len())
    );
}

#[test]
fn a_header_nobody_restores_is_reported_unrestored() {
    let (_segment, _server, socket) = served_segment("unrestored");
    let punches = resize::punch_holes(&socket, TIMEOUT).unwrap();
    assert!(
        punches
            .punches
            .iter()
            .any(|punch| punch.target == PunchTarget::Header && punch.outcome.is_ok())
    );
    assert_eq!(punches.header_restored_after, None);
    // Nothing to hunt: the payload punch fell back to an idle slot.
    assert!(matches!(
        punches.punches.last().unwrap().target,
        PunchTarget::Payload { live: false, .. }
    ));
}
