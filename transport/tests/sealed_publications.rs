//! Sealed publications, bodies larger than a slot (and smaller ones a producer keeps): through the control channel (the payload's
//! descriptor travels with the answer) and through the producer and consumer directly. Covers
//! exact bytes at 1, 8 and 64 MiB; the consumer's refusals (unsealed, wrong size, wrong crc,
//! redeemed twice); the producer's limits (TooLarge, the byte budget with its bounded
//! wait and recovery, one peer's share of it); mixed slot and sealed publications run to exhaustion and back to empty
//! with nothing leaked; a closed consumer's publications withdrawn with their bytes; and the
//! memory given back to the kernel once every descriptor and mapping is gone.
#![cfg(not(loom))]

mod channel_support;

use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shmbridge::control::{Refusal, RefusalCode, RequestError, Tier};
use shmbridge::{
    ClaimError, Consumer, ConsumerOptions, ControlClient, Handle, Producer, ProducerOptions,
    RedeemError, SealedError, SealedPayload, Segment, SegmentConfig,
};

use channel_support::{
    Ask, SLOT_LEN, Served, TIMEOUT, Writing, assert_answers, channel_options, payload, producer,
    publication, publication_within, send_ask, wait_until,
};

const MIB: usize = 1 << 20;
const SLOT_SIZE: u32 = 4096;

/// A producer over `slots` 4 KiB slots with `options`.
fn producer_with(slots: u32, options: ProducerOptions) -> Arc<Producer> {
    let segment = Segment::create(&SegmentConfig {
        slot_count: slots,
        slot_size: SLOT_SIZE,
    })
    .unwrap();
    Arc::new(Producer::new(Arc::new(segment), options).unwrap())
}

/// Sealed limits as given, and a TTL no test outlives (but within the hour the reaper takes for
/// the longest honest deadline: these producers reap while they wait for room), so only the
/// test frees publications.
fn options(max_payload: usize, max_sealed_bytes: usize) -> ProducerOptions {
    ProducerOptions {
        ready_ttl: Duration::from_secs(600),
        max_payload,
        max_sealed_bytes: max_sealed_bytes as u64,
        ..ProducerOptions::default()
    }
}

fn consumer(producer: &Producer) -> Consumer {
    Consumer::new(Arc::clone(producer.segment()), ConsumerOptions::default()).unwrap()
}

fn dup(payload: &SealedPayload) -> OwnedFd {
    payload.as_fd().try_clone_to_owned().unwrap()
}

/// The inode of a payload's memfd, to look for it among this process's descriptors and
/// mappings (other tests run in the same process, so names alone would not tell ours apart).
fn inode(payload: &SealedPayload) -> u64 {
    nix::sys::stat::fstat(payload.as_fd()).unwrap().st_ino
}

/// Inodes of every memfd this process still holds open or mapped.
fn memfds_held() -> HashSet<u64> {
    let mut held = HashSet::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let is_memfd = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("/memfd:"));
        if is_memfd && let Ok(meta) = std::fs::metadata(entry.path()) {
            held.insert(meta.ino());
        }
    }
    for line in std::fs::read_to_string("/proc/self/maps").unwrap().lines() {
        if line.contains("/memfd:") {
            let inode = line.split_whitespace().nth(4).unwrap();
            held.insert(inode.parse().unwrap());
        }
    }
    held
}

/// `producer` serving a channel with the test handler, and a client connected to it.
fn serve(producer: &Arc<Producer>, test: &str) -> (Served, ControlClient) {
    let served = Served::new(test, Arc::clone(producer), channel_options(producer));
    let client = served.connect();
    (served, client)
}

#[test]
fn sealed_publications_round_trip_over_the_channel_byte_for_byte() {
    let producer = producer(4);
    let (served, client) = serve(&producer, "sealed-round-trip");
    for (seed, len) in [(1, MIB), (2, 8 * MIB), (3, 64 * MIB)] {
        let ask = Ask::new(len, seed).writing(Writing::Expect);
        let publication = publication(&client, &ask.encode()).unwrap();
        assert_eq!(publication.tier(), Tier::Sealed, "{len} bytes");
        assert_eq!(publication.handle().unwrap().len as usize, len);
        assert_eq!(producer.stats().sealed_bytes_in_flight, len as u64);
        let response = publication.redeem().unwrap();
        assert_answers(&response, &ask, Tier::Sealed);
        assert_eq!(producer.stats().sealed_bytes_in_flight, 0);
    }
    // A slot-sized body on the same connection still travels in a slot, with no descriptor.
    let ask = Ask::new(SLOT_LEN, 4);
    let small = publication(&client, &ask.encode()).unwrap();
    assert_eq!(small.tier(), Tier::Slot);
    assert_answers(&small.redeem().unwrap(), &ask, Tier::Slot);
    let stats = producer.stats();
    assert_eq!(stats.sealed_publications, 3);
    assert_eq!(stats.slots.free, 4);
    assert_eq!(stats.withdrawn, 0);
    served.assert_nothing_leaked();
}

#[test]
fn a_body_above_the_largest_payload_is_refused_too_large_naming_the_limit() {
    let producer = producer_with(4, options(2 * MIB, 8 * MIB));
    let (served, client) = serve(&producer, "sealed-too-large");
    let len = 2 * MIB + 1;
    for writing in [Writing::Expect, Writing::Whole, Writing::Chunks(64 << 10)] {
        match send_ask(&client, &Ask::new(len, 1).writing(writing)) {
            Err(RequestError::Refused(refusal)) => {
                assert_eq!(refusal.code, RefusalCode::TooLarge);
                assert_eq!(refusal.detail, 2 * MIB as u64);
            }
            other => panic!("{writing:?}: expected TooLarge, got {other:?}"),
        }
        assert_eq!(producer.stats().slots.free, 4);
        assert_eq!(producer.stats().sealed_bytes_in_flight, 0);
    }
    // Exactly the largest is published.
    let ask = Ask::new(len - 1, 1);
    let publication = publication(&client, &ask.encode()).unwrap();
    assert_eq!(publication.tier(), Tier::Sealed);
    assert_answers(&publication.redeem().unwrap(), &ask, Tier::Sealed);
    served.assert_nothing_leaked();
}

#[test]
fn publish_sealed_refuses_what_is_too_large_and_takes_any_smaller_size() {
    let producer = producer_with(4, options(MIB, 4 * MIB));
    let consumer = consumer(&producer);
    let over = SealedPayload::from_bytes(&vec![7; MIB + 1]).unwrap();
    assert_eq!(
        producer.publish_sealed(&over, Duration::ZERO),
        Err(ClaimError::TooLarge {
            len: MIB + 1,
            max: MIB
        })
    );
    // A body a slot would hold travels sealed too when its producer hands out the payload it
    // keeps: the handle's tier, not its length, says it is a ticket.
    for len in [0, 1, SLOT_SIZE as usize] {
        let bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let small = SealedPayload::from_bytes(&bytes).unwrap();
        let handle = producer.publish_sealed(&small, Duration::ZERO).unwrap();
        assert_eq!(handle.len as usize, len);
        let redeemed = consumer.redeem_sealed(&handle, dup(&small)).unwrap();
        assert_eq!(&redeemed[..], &bytes[..], "{len}");
    }
    // Ordinary claims above the slot size stay TooLarge against the slot.
    assert!(matches!(
        producer.claim(SLOT_SIZE as usize + 1, Duration::ZERO),
        Err(ClaimError::TooLarge { max, .. }) if max == SLOT_SIZE as usize
    ));
    let stats = producer.stats();
    assert_eq!((stats.slots.free, stats.sealed_bytes_in_flight), (4, 0));
}

#[test]
fn the_byte_budget_waits_its_timeout_then_recovers_once_bytes_are_redeemed() {
    let producer = producer_with(8, options(2 * MIB, 2 * MIB));
    let consumer = consumer(&producer);
    let first = SealedPayload::from_bytes(&vec![1; 3 * MIB / 2]).unwrap();
    let second = SealedPayload::from_bytes(&vec![2; MIB]).unwrap();
    let held = producer.publish_sealed(&first, Duration::ZERO).unwrap();

    let wait = Duration::from_millis(50);
    let start = Instant::now();
    let refused = producer.publish_sealed(&second, wait).unwrap_err();
    assert!(
        start.elapsed() >= wait,
        "gave up after {:?}",
        start.elapsed()
    );
    assert_eq!(
        refused,
        ClaimError::BytesExhausted {
            in_flight: (3 * MIB / 2) as u64,
            max: 2 * MIB as u64
        }
    );
    assert_eq!(producer.stats().claims_exhausted, 1);
    // The refused publication took no slot.
    assert_eq!(producer.stats().slots.ready, 1);

    consumer.redeem_sealed(&held, dup(&first)).unwrap();
    let handle = producer.publish_sealed(&second, Duration::ZERO).unwrap();
    assert_eq!(producer.stats().sealed_bytes_in_flight, MIB as u64);
    assert!(
        consumer
            .redeem_sealed(&handle, dup(&second))
            .unwrap()
            .iter()
            .all(|&b| b == 2)
    );
}

/// A peer that redeems nothing holds at most its share of the sealed budget (half of it by
/// default): its next body waits until its deadline and is refused `Exhausted`, while another
/// peer's bodies of the same size are published in the other half.
#[test]
fn a_peer_holding_its_share_leaves_the_others_room() {
    let producer = producer_with(8, options(MIB, 4 * MIB));
    let (served, hog) = serve(&producer, "sealed-share");
    let other = served.connect();
    let held: Vec<_> = (1..=2)
        .map(|seed| publication(&hog, &Ask::new(MIB, seed).encode()).unwrap())
        .collect();
    let wait = Duration::from_millis(200);
    let start = Instant::now();
    match publication_within(&hog, &Ask::new(MIB, 3).encode(), wait) {
        Err(RequestError::Refused(refusal)) => {
            assert_eq!(refusal, Refusal::new(RefusalCode::Exhausted, 0));
        }
        other => panic!("the hog's third body: {other:?}"),
    }
    let took = start.elapsed();
    assert!(
        took >= wait / 2,
        "refused after {took:?}, before its deadline"
    );
    let asks = [4, 5].map(|seed| Ask::new(MIB, seed));
    let published = asks
        .each_ref()
        .map(|ask| publication(&other, &ask.encode()).unwrap());
    assert_eq!(producer.stats().sealed_bytes_in_flight, 4 * MIB as u64);
    for (publication, ask) in published.into_iter().zip(&asks) {
        assert_answers(&publication.redeem().unwrap(), ask, Tier::Sealed);
    }
    drop(held);
    served.assert_nothing_leaked();
}

/// The wait is for room, not a fixed sleep: a redemption on another thread lets the waiting
/// publication through well before its timeout.
#[test]
fn a_waiting_publication_goes_through_when_room_comes_free() {
    let producer = producer_with(8, options(2 * MIB, 2 * MIB));
    let first = SealedPayload::from_bytes(&vec![1; 3 * MIB / 2]).unwrap();
    let second = SealedPayload::from_bytes(&vec![2; MIB]).unwrap();
    let held = producer.publish_sealed(&first, Duration::ZERO).unwrap();
    let redeemer = std::thread::spawn({
        let consumer = consumer(&producer);
        let fd = dup(&first);
        move || {
            std::thread::sleep(Duration::from_millis(20));
            consumer.redeem_sealed(&held, fd).unwrap().len()
        }
    });
    producer.publish_sealed(&second, TIMEOUT).unwrap();
    assert_eq!(redeemer.join().unwrap(), 3 * MIB / 2);
}

#[test]
fn the_consumer_refuses_an_unsealed_descriptor_and_spends_the_ticket() {
    let producer = producer_with(2, ProducerOptions::default());
    let consumer = consumer(&producer);
    let bytes = vec![5; 2 * SLOT_SIZE as usize];
    let payload = SealedPayload::from_bytes(&bytes).unwrap();
    let handle = producer.publish_sealed(&payload, Duration::ZERO).unwrap();

    // Same bytes, same size, same crc, but writable: the producer could change them later.
    let unsealed = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut &unsealed, &bytes).unwrap();
    let refused = consumer
        .redeem_sealed(&handle, OwnedFd::from(unsealed))
        .unwrap_err();
    assert!(
        matches!(refused, RedeemError::Sealed(SealedError::NotSealed { .. })),
        "{refused:?}"
    );
    // The ticket was released: nothing waits, nothing counts, and it cannot be redeemed again.
    let stats = producer.stats();
    assert_eq!((stats.slots.free, stats.sealed_bytes_in_flight), (2, 0));
    assert!(matches!(
        consumer.redeem_sealed(&handle, dup(&payload)),
        Err(RedeemError::Acquire(shmbridge::AcquireError::Stale { .. }))
    ));
}

#[test]
fn the_consumer_refuses_the_wrong_size_or_crc() {
    let producer = producer_with(2, ProducerOptions::default());
    let consumer = consumer(&producer);
    let payload = SealedPayload::from_bytes(&vec![9; 3 * SLOT_SIZE as usize]).unwrap();

    let handle = producer.publish_sealed(&payload, Duration::ZERO).unwrap();
    let longer = Handle {
        len: handle.len + 1,
        ..handle
    };
    assert!(matches!(
        consumer.redeem_sealed(&longer, dup(&payload)),
        Err(RedeemError::Sealed(SealedError::WrongSize { expected, actual }))
            if expected == u64::from(handle.len) + 1 && actual == u64::from(handle.len)
    ));

    let handle = producer.publish_sealed(&payload, Duration::ZERO).unwrap();
    let other_crc = Handle {
        crc: handle.crc ^ 1,
        ..handle
    };
    assert!(matches!(
        consumer.redeem_sealed(&other_crc, dup(&payload)),
        Err(RedeemError::Sealed(SealedError::ChecksumMismatch { found, .. })) if found == handle.crc
    ));
    assert_eq!(consumer.stats().checksum_failures, 1);
    assert_eq!(producer.stats().slots.free, 2);
    assert_eq!(producer.stats().sealed_bytes_in_flight, 0);
}

#[test]
fn a_sealed_publication_redeems_once() {
    let producer = producer_with(2, ProducerOptions::default());
    let consumer = consumer(&producer);
    let payload = SealedPayload::from_bytes(&vec![3; 2 * SLOT_SIZE as usize]).unwrap();
    let handle = producer.publish_sealed(&payload, Duration::ZERO).unwrap();
    let bytes = consumer.redeem_sealed(&handle, dup(&payload)).unwrap();
    assert_eq!(bytes.len(), 2 * SLOT_SIZE as usize);
    assert!(matches!(
        consumer.redeem_sealed(&handle, dup(&payload)),
        Err(RedeemError::Acquire(shmbridge::AcquireError::Stale { .. }))
    ));
    // A sealed handle is not a slot's: acquire refuses it before touching the slot.
    let again = producer.publish_sealed(&payload, Duration::ZERO).unwrap();
    assert!(matches!(
        consumer.acquire(&again),
        Err(shmbridge::AcquireError::TooLarge { .. })
    ));
    assert!(producer.is_unredeemed(again.slot, again.generation));
}

/// Slot and sealed publications of mixed sizes until the segment or the byte budget runs out,
/// then every one redeemed: all slots free, no sealed byte counted, and no memfd of the run
/// left open or mapped once the results are dropped.
#[test]
fn mixed_sizes_run_to_exhaustion_and_back_to_empty_leaking_nothing() {
    const SLOTS: u32 = 8;
    let producer = producer_with(SLOTS, options(2 * MIB, 5 * MIB));
    let consumer = consumer(&producer);
    let mut random = fastrand::Rng::with_seed(14);
    let mut inodes = HashSet::new();
    for round in 0..3 {
        let mut slot_held = Vec::new();
        let mut sealed_held = Vec::new();
        let exhausted = loop {
            if random.bool() {
                let len = random.usize(1..=SLOT_SIZE as usize);
                let bytes = payload(len, round);
                let mut slot = match producer.claim(len, Duration::ZERO) {
                    Ok(slot) => slot,
                    Err(error) => break error,
                };
                std::io::Write::write_all(&mut slot, &bytes).unwrap();
                slot_held.push((slot.publish().unwrap(), bytes));
            } else {
                let len = random.usize(SLOT_SIZE as usize + 1..=2 * MIB);
                let bytes = payload(len, round);
                let sealed = SealedPayload::from_bytes(&bytes).unwrap();
                inodes.insert(inode(&sealed));
                match producer.publish_sealed(&sealed, Duration::ZERO) {
                    Ok(handle) => sealed_held.push((handle, sealed, bytes)),
                    Err(error) => break error,
                }
            }
        };
        assert!(
            matches!(
                exhausted,
                ClaimError::Exhausted { .. } | ClaimError::BytesExhausted { .. }
            ),
            "{exhausted:?}"
        );
        let in_flight: u64 = sealed_held.iter().map(|(_, p, _)| p.len()).sum();
        assert_eq!(producer.stats().sealed_bytes_in_flight, in_flight);
        assert!(in_flight <= 5 * MIB as u64);
        let mut results = Vec::new();
        for (handle, bytes) in slot_held {
            assert_eq!(
                consumer.acquire(&handle).unwrap().copy_out().unwrap(),
                bytes
            );
        }
        for (handle, sealed, bytes) in sealed_held {
            let redeemed = consumer.redeem_sealed(&handle, dup(&sealed)).unwrap();
            assert!(redeemed[..] == bytes[..]);
            results.push(redeemed);
        }
        let stats = producer.stats();
        assert_eq!(stats.slots.free, SLOTS, "round {round}");
        assert_eq!(stats.sealed_bytes_in_flight, 0, "round {round}");
    }
    let held = memfds_held();
    assert!(
        inodes.iter().all(|inode| !held.contains(inode)),
        "payload memfds still open or mapped"
    );
    assert!(producer.stats().sealed_publications > 0);
}

#[test]
fn a_closed_consumers_sealed_publications_are_withdrawn_and_stop_counting() {
    let producer = producer(4);
    let (served, client) = serve(&producer, "sealed-closed");
    let held: Vec<_> = (0..2)
        .map(|seed| publication(&client, &Ask::new(MIB, seed).encode()).unwrap())
        .collect();
    assert_eq!(producer.stats().sealed_bytes_in_flight, 2 * MIB as u64);
    drop(client);
    wait_until("sealed publications withdrawn", TIMEOUT, || {
        let stats = producer.stats();
        stats.withdrawn == 2 && stats.sealed_bytes_in_flight == 0 && stats.slots.free == 4
    });
    drop(held);
    served.assert_nothing_leaked();
}

/// Once the producer, the answer and the consumer's result are gone, so is the memfd: the
/// kernel frees its pages with the last descriptor and mapping.
#[test]
fn a_redeemed_payloads_memory_goes_with_its_last_holder() {
    let producer = producer_with(2, ProducerOptions::default());
    let consumer = consumer(&producer);
    let payload = SealedPayload::from_bytes(&vec![4; MIB]).unwrap();
    let memfd = inode(&payload);
    let handle = producer.publish_sealed(&payload, Duration::ZERO).unwrap();
    let bytes = consumer.redeem_sealed(&handle, dup(&payload)).unwrap();
    drop(payload);
    assert!(memfds_held().contains(&memfd), "the mapping keeps it");
    assert_eq!(bytes.len(), MIB);
    drop(bytes);
    assert!(!memfds_held().contains(&memfd), "memfd left behind");
}

/// The reaper takes back a ticket whose TTL passed like any publication, and its bytes stop
/// counting: the budget is not held by a consumer that never came.
#[test]
fn a_ticket_past_its_ttl_is_reaped_and_its_bytes_stop_counting() {
    let producer = producer_with(
        2,
        ProducerOptions {
            ready_ttl: Duration::from_millis(1),
            ..options(MIB, MIB)
        },
    );
    let payload = SealedPayload::from_bytes(&vec![6; MIB]).unwrap();
    let handle = producer.publish_sealed(&payload, Duration::ZERO).unwrap();
    assert_eq!(producer.stats().sealed_bytes_in_flight, MIB as u64);
    // Past the TTL (stamped in whole milliseconds, rounded up) whatever the scheduler does.
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(producer.reap().get(shmbridge::ReclaimReason::TtlExpired), 1);
    assert_eq!(producer.stats().sealed_bytes_in_flight, 0);
    assert!(matches!(
        consumer(&producer).redeem_sealed(&handle, dup(&payload)),
        Err(RedeemError::Acquire(shmbridge::AcquireError::Stale { .. }))
    ));
    // The whole budget is free again.
    producer.publish_sealed(&payload, Duration::ZERO).unwrap();
}
