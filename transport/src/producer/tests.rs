//! The producer's count of sealed bytes in flight: how long a ticket counts, a payload shared
//! by many tickets, and each peer's share.

use std::os::fd::AsFd;

use super::*;
use crate::consumer::{Consumer, ConsumerOptions};
use crate::segment::SegmentConfig;

/// A producer over `slots` 64-byte slots with `options`, and a consumer of the same segment.
fn producer_with(slots: u32, options: ProducerOptions) -> (Producer, Consumer) {
    let segment = Arc::new(
        Segment::create(&SegmentConfig {
            slot_count: slots,
            slot_size: 64,
        })
        .unwrap(),
    );
    let producer = Producer::new(Arc::clone(&segment), options).unwrap();
    (
        producer,
        Consumer::new(segment, ConsumerOptions::default()).unwrap(),
    )
}

/// A ticket's bytes count while it waits (READY) and while its consumer verifies it
/// (READING), and stop counting when the consumer releases it.
#[test]
fn a_tickets_bytes_count_until_its_release() {
    let (producer, consumer) = producer_with(2, ProducerOptions::default());
    let payload = SealedPayload::from_bytes(&[1; 100]).unwrap();
    let handle = producer.publish_sealed(&payload, Duration::ZERO).unwrap();
    assert_eq!(producer.stats().sealed_bytes_in_flight, 100);
    let reading = consumer.take(&handle).unwrap();
    assert!(reading.is_held());
    assert_eq!(producer.stats().sealed_bytes_in_flight, 100);
    drop(reading);
    assert_eq!(producer.stats().sealed_bytes_in_flight, 0);
    assert_eq!(producer.stats().sealed_publications, 1);
}

/// A cache hands one sealed payload to many requests: its tickets count its bytes once, so
/// room for one payload holds all of them, and the count stays until the last ticket ends,
/// whichever order they end in (redeemed, withdrawn, being redeemed).
#[test]
fn one_payload_on_many_tickets_counts_its_bytes_once() {
    let (producer, consumer) = producer_with(
        4,
        ProducerOptions {
            max_sealed_bytes: 150,
            ..ProducerOptions::default()
        },
    );
    let payload = SealedPayload::from_bytes(&[7; 100]).unwrap();
    let handles = [(); 3].map(|()| producer.publish_sealed(&payload, Duration::ZERO).unwrap());
    assert_eq!(producer.stats().sealed_bytes_in_flight, 100);
    // Another payload needs room of its own, which the shared one leaves too little of.
    let other = SealedPayload::from_bytes(&[8; 100]).unwrap();
    assert_eq!(
        producer.publish_sealed(&other, Duration::ZERO).unwrap_err(),
        ClaimError::BytesExhausted {
            in_flight: 100,
            max: 150
        }
    );
    let fd = |payload: &SealedPayload| payload.as_fd().try_clone_to_owned().unwrap();
    let redeemed = consumer.redeem_sealed(&handles[1], fd(&payload)).unwrap();
    assert_eq!(&redeemed[..], &[7; 100]);
    assert_eq!(producer.stats().sealed_bytes_in_flight, 100);
    assert!(producer.withdraw(handles[0].slot, handles[0].generation));
    assert_eq!(producer.stats().sealed_bytes_in_flight, 100);
    let reading = consumer.take(&handles[2]).unwrap();
    assert_eq!(producer.stats().sealed_bytes_in_flight, 100);
    drop(reading);
    assert_eq!(producer.stats().sealed_bytes_in_flight, 0);
    let handle = producer.publish_sealed(&other, Duration::ZERO).unwrap();
    assert_eq!(producer.stats().sealed_bytes_in_flight, 100);
    assert!(producer.withdraw(handle.slot, handle.generation));
    assert_eq!(producer.stats().sealed_bytes_in_flight, 0);
}

/// A peer that redeems nothing holds at most its share: other peers' payloads are still
/// published while it holds it, its next one waits until its deadline and is then refused
/// naming the share, and one of its own already counted takes no more room. The whole budget
/// still bounds all peers together.
#[test]
fn a_peer_holding_its_share_cannot_starve_the_others() {
    let (producer, consumer) = producer_with(
        8,
        ProducerOptions {
            max_payload: 100,
            max_sealed_bytes: 400,
            ..ProducerOptions::default()
        },
    );
    assert_eq!(producer.options.sealed_share(), 200);
    let (hog, other, third) = (SealedPeer::new(), SealedPeer::new(), SealedPeer::new());
    let payloads: Vec<_> = (0..6)
        .map(|byte| SealedPayload::from_bytes(&[byte; 100]).unwrap())
        .collect();
    let publish = |payload: &SealedPayload, peer, wait| {
        producer.publish_sealed_for(payload, Some(peer), wait)
    };
    let held =
        [&payloads[0], &payloads[1]].map(|payload| publish(payload, hog, Duration::ZERO).unwrap());
    let wait = Duration::from_millis(50);
    let start = std::time::Instant::now();
    assert_eq!(
        publish(&payloads[2], hog, wait).unwrap_err(),
        ClaimError::BytesExhausted {
            in_flight: 200,
            max: 200
        }
    );
    assert!(start.elapsed() >= wait, "refused before its deadline");
    for payload in &payloads[3..5] {
        publish(payload, other, Duration::ZERO).unwrap();
    }
    publish(&payloads[0], hog, Duration::ZERO).unwrap();
    assert_eq!(producer.stats().sealed_bytes_in_flight, 400);
    assert_eq!(
        publish(&payloads[5], third, Duration::ZERO).unwrap_err(),
        ClaimError::BytesExhausted {
            in_flight: 400,
            max: 400
        }
    );
    // Once one of the hog's is redeemed, it has room again.
    let fd = payloads[1].as_fd().try_clone_to_owned().unwrap();
    consumer.redeem_sealed(&held[1], fd).unwrap();
    publish(&payloads[2], hog, Duration::ZERO).unwrap();
}

/// Reservations for one peer take room in the order they came: one that comes while an earlier
/// one waits does not take the room freed for it, whichever polls first; another peer's
/// reservation is not held up by them.
#[test]
fn a_late_reservation_does_not_pass_an_early_one() {
    let (producer, consumer) = producer_with(
        8,
        ProducerOptions {
            max_payload: 100,
            max_sealed_bytes: 400,
            ..ProducerOptions::default()
        },
    );
    let (peer, other) = (SealedPeer::new(), SealedPeer::new());
    let payloads: Vec<_> = (0..5)
        .map(|byte| SealedPayload::from_bytes(&[byte; 100]).unwrap())
        .collect();
    let publish = |payload: &SealedPayload, peer, wait| {
        producer.publish_sealed_for(payload, Some(peer), wait)
    };
    let held = publish(&payloads[0], peer, Duration::ZERO).unwrap();
    publish(&payloads[1], peer, Duration::ZERO).unwrap();
    std::thread::scope(|scope| {
        let early = scope.spawn(|| publish(&payloads[2], peer, Duration::from_secs(10)));
        let give_up = std::time::Instant::now() + Duration::from_secs(10);
        while producer.lock_sealed().waiting.is_empty() {
            assert!(
                std::time::Instant::now() < give_up,
                "the early one never waited"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        publish(&payloads[4], other, Duration::ZERO).unwrap();
        let fd = payloads[0].as_fd().try_clone_to_owned().unwrap();
        consumer.redeem_sealed(&held, fd).unwrap();
        assert!(matches!(
            publish(&payloads[3], peer, Duration::ZERO),
            Err(ClaimError::BytesExhausted { .. })
        ));
        early.join().unwrap().unwrap();
    });
    assert!(producer.lock_sealed().waiting.is_empty());
}
