//! A sealed body's room in its peer's share: reserved before the first byte is made, grown as
//! the body is written, and never held by bodies that would wait for each other.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::consumer::{Consumer, ConsumerOptions};
use crate::producer::ProducerOptions;
use crate::segment::{Segment, SegmentConfig};

const SLOT_SIZE: u32 = 64;
/// Each peer's share of the sealed bytes (the whole budget is twice it).
const SHARE: u64 = 600;
const LONG: Duration = Duration::from_secs(10);

/// A producer of 8 slots of [`SLOT_SIZE`] whose peers each hold at most [`SHARE`] sealed bytes,
/// and a consumer of the same segment.
fn producer() -> (Producer, Consumer) {
    let segment = Arc::new(
        Segment::create(&SegmentConfig {
            slot_count: 8,
            slot_size: SLOT_SIZE,
        })
        .unwrap(),
    );
    let options = ProducerOptions {
        max_payload: SHARE as usize,
        max_sealed_bytes: 2 * SHARE,
        max_sealed_bytes_per_peer: Some(SHARE),
        ..ProducerOptions::default()
    };
    let producer = Producer::new(Arc::clone(&segment), options).unwrap();
    (
        producer,
        Consumer::new(segment, ConsumerOptions::default()).unwrap(),
    )
}

/// A response for `peer` that says its body has at least `min_len` bytes, with `wait` to its
/// deadline.
fn sealed_response(
    producer: &Producer,
    peer: SealedPeer,
    min_len: u64,
    wait: Duration,
) -> ResponseWriter<'_> {
    let mut response = ResponseWriter::new(producer, peer, 16, Instant::now() + wait, None);
    response.expect_min_len(min_len).unwrap();
    response
}

fn redeem(consumer: &Consumer, handle: &Handle, payload: &SealedPayload) {
    let fd = payload.as_fd().try_clone_to_owned().unwrap();
    consumer.redeem_sealed(handle, fd).unwrap();
}

/// With its peer's share held by a publication nobody redeems, a body that says its length is
/// refused `Exhausted` at its first write, at its deadline: nothing of it was made. Once the
/// share is free the same body takes room for its bound before it is written, grows it as it
/// is written, and is published holding exactly its length.
#[test]
fn a_sealed_body_reserves_its_room_before_a_byte_is_made() {
    let (producer, consumer) = producer();
    let peer = SealedPeer::new();
    let hog = SealedPayload::from_bytes(&[1; 400]).unwrap();
    let held = (producer.publish_sealed_for(&hog, Some(peer), Duration::ZERO)).unwrap();

    let wait = Duration::from_millis(30);
    let started = Instant::now();
    let mut refused = sealed_response(&producer, peer, 300, wait);
    assert!(refused.write_all(&[2; 10]).is_err());
    assert!(started.elapsed() >= wait, "refused before its deadline");
    assert_eq!(
        refused.refusal(),
        Some(Refusal::new(RefusalCode::Exhausted, 0))
    );
    assert_eq!(refused.written(), 0, "a byte was made");
    drop(refused);
    assert_eq!(producer.stats().sealed_bytes_in_flight, 400);

    redeem(&consumer, &held, &hog);
    let mut response = sealed_response(&producer, peer, 300, LONG);
    response.write_all(&[3; 10]).unwrap();
    assert_eq!(
        producer.stats().sealed_bytes_in_flight,
        300,
        "room for the bound"
    );
    for _ in 0..49 {
        response.write_all(&[3; 10]).unwrap();
        let in_flight = producer.stats().sealed_bytes_in_flight;
        assert!(in_flight >= response.written(), "{in_flight} bytes of room");
    }
    let (_, _, Finished::Sealed(handle, payload)) = response.finish().unwrap() else {
        panic!("a body above a slot is sealed")
    };
    assert_eq!(producer.stats().sealed_bytes_in_flight, 500);
    redeem(&consumer, &handle, &payload);
    assert_eq!(producer.stats().sealed_bytes_in_flight, 0);
}

/// Two bodies for one peer hold most of its share between them; one that needs more than the
/// share has left beside the other is refused at once rather than waiting for it (they would
/// wait for each other), and the other then grows into the room it gave back.
#[test]
fn bodies_that_would_wait_for_each_other_are_refused_at_once() {
    let (producer, _consumer) = producer();
    let peer = SealedPeer::new();
    let mut first = sealed_response(&producer, peer, 250, LONG);
    let mut second = sealed_response(&producer, peer, 250, LONG);
    first.write_all(&[1; 100]).unwrap();
    second.write_all(&[2; 100]).unwrap();

    let started = Instant::now();
    assert!(first.write_all(&[1; 300]).is_err());
    assert!(started.elapsed() < LONG / 2, "waited for room only it held");
    assert_eq!(
        first.refusal(),
        Some(Refusal::new(RefusalCode::Exhausted, 0))
    );
    drop(first);

    second.write_all(&[2; 300]).unwrap();
    assert!(matches!(second.finish(), Ok((_, _, Finished::Sealed(..)))));
}

/// A body that needs more room than its peer's published payloads leave waits for them to be
/// redeemed, which frees it.
#[test]
fn a_growing_body_waits_for_published_payloads_to_be_redeemed() {
    let (producer, consumer) = producer();
    let peer = SealedPeer::new();
    let published = SealedPayload::from_bytes(&[1; 300]).unwrap();
    let handle = (producer.publish_sealed_for(&published, Some(peer), Duration::ZERO)).unwrap();
    let mut response = sealed_response(&producer, peer, 250, LONG);
    response.write_all(&[2; 100]).unwrap();

    std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(20));
            redeem(&consumer, &handle, &published);
        });
        response.write_all(&[2; 300]).unwrap();
    });
    let (_, _, Finished::Sealed(_, payload)) = response.finish().unwrap() else {
        panic!("a body above a slot is sealed")
    };
    assert_eq!(payload.len(), 400);
}

/// A bound is a promise: a body that ends short of it fails its request. An exact length said
/// after it replaces it, as when the handler answers with a short error instead of the body.
#[test]
fn a_bound_is_kept_or_replaced_by_an_exact_length() {
    let (producer, _consumer) = producer();
    let peer = SealedPeer::new();
    let mut short = sealed_response(&producer, peer, 300, LONG);
    short.write_all(&[1; 200]).unwrap();
    assert_eq!(
        short.finish().unwrap_err(),
        Refusal::new(RefusalCode::HandlerFailed, 0)
    );

    let mut error = sealed_response(&producer, peer, 300, LONG);
    error.expect_len(10).unwrap();
    error.write_all(&[2; 10]).unwrap();
    assert!(matches!(
        error.finish(),
        Ok((_, _, Finished::Inline { .. }))
    ));
    assert_eq!(producer.stats().sealed_bytes_in_flight, 0);
}
