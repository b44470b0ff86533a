//! Loom models of sealed publications: the producer's byte budget and its list of outstanding
//! tickets (a payload on several of them counted once), raced by publishers, a consumer's
//! release and the reaper. They run the real `Producer::publish_sealed`,
//! `Consumer::redeem_sealed` and reaper code: the ticket is a slot descriptor (loom atomics
//! through `sync.rs`) and the list of tickets sits behind the `sync.rs` mutex, so loom explores
//! every order of the bookkeeping. The payloads are real sealed memfds, made once outside the
//! models; the syscalls on them are not what is modelled.
//!
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
//!     cargo test -p shmbridge --release --test loom_sealed`
#![cfg(loom)]

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use loom::thread;
use shmbridge::testing::ManualHost;
use shmbridge::{
    AcquireError, ClaimError, Consumer, ConsumerOptions, Handle, Producer, ProducerOptions,
    RedeemError, SealedPayload, Segment, SegmentConfig,
};

const TWO_SLOTS: SegmentConfig = SegmentConfig {
    slot_count: 2,
    slot_size: 64,
};
/// A sealed payload's length: above the slot size.
const LEN: u64 = 100;
/// Room for one payload in flight, not two.
const ROOM_FOR_ONE: u64 = 150;
const LONG: Duration = Duration::from_secs(60);

/// Two different payloads of `LEN` bytes, made once: each loom iteration shares them (a
/// `SealedPayload` clone shares its descriptor).
static PAYLOADS: LazyLock<[SealedPayload; 2]> = LazyLock::new(|| {
    [b'a', b'b']
        .map(|byte| SealedPayload::from_bytes(&[byte; LEN as usize]).expect("sealed payload"))
});

fn payload(which: usize) -> SealedPayload {
    PAYLOADS[which].clone()
}

/// The descriptor a consumer receives with the handle (over SCM_RIGHTS in the real path).
fn received(payload: &SealedPayload) -> OwnedFd {
    payload
        .as_fd()
        .try_clone_to_owned()
        .expect("dup payload fd")
}

fn producer(
    host: &Arc<ManualHost>,
    segment: &Arc<Segment>,
    process: u32,
    ttl: Duration,
) -> Arc<Producer> {
    Arc::new(Producer::with_host(
        Arc::clone(segment),
        ProducerOptions {
            lease: LONG,
            ready_ttl: ttl,
            max_payload: 1024,
            max_sealed_bytes: ROOM_FOR_ONE,
            max_sealed_bytes_per_peer: None,
        },
        ManualHost::process(process),
        host.clone(),
    ))
}

fn consumer(host: &Arc<ManualHost>, segment: &Arc<Segment>, process: u32) -> Arc<Consumer> {
    Arc::new(Consumer::with_host(
        Arc::clone(segment),
        ConsumerOptions {
            lease: LONG,
            ..ConsumerOptions::default()
        },
        ManualHost::process(process),
        host.clone(),
    ))
}

fn in_flight(producer: &Producer) -> u64 {
    producer.stats().sealed_bytes_in_flight
}

/// Two threads of one producer publish a sealed payload each, with room for one: exactly one
/// succeeds, the other is refused with the bytes in flight that left it no room, and the count
/// never passes the budget. Both pass the budget check if a publication being made is not
/// counted until its ticket is recorded.
#[test]
fn two_sealed_publishers_race_for_room_for_one() {
    loom::model(|| {
        let host = Arc::new(ManualHost::new());
        let segment = Arc::new(Segment::in_memory(&TWO_SLOTS));
        let producer = producer(&host, &segment, 1, LONG);
        let publish = |producer: &Producer, which| {
            let published = producer.publish_sealed(&payload(which), Duration::ZERO);
            assert!(in_flight(producer) <= ROOM_FOR_ONE, "over the budget");
            published
        };
        let other = Arc::clone(&producer);
        let spawned = thread::spawn(move || publish(&other, 1));
        let results = [publish(&producer, 0), spawned.join().unwrap()];
        let published = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(published, 1, "{results:?}");
        for result in &results {
            match result {
                Ok(handle) => assert_eq!(u64::from(handle.len), LEN),
                Err(ClaimError::BytesExhausted { in_flight, max }) => {
                    assert_eq!((*in_flight, *max), (LEN, ROOM_FOR_ONE));
                }
                Err(error) => panic!("unexpected refusal: {error}"),
            }
        }
        assert_eq!(in_flight(&producer), LEN);
    });
}

/// A cache publishes the payload of a ticket again while a consumer redeems that ticket, with
/// room for one: the second publication is never refused (while the first ticket counts, the
/// payload is counted already; once it is over, there is room), and the count ends at the one
/// ticket still outstanding. Refused in some orders if each ticket counts its payload again.
#[test]
fn one_payload_published_again_while_its_first_ticket_is_redeemed() {
    loom::model(|| {
        let host = Arc::new(ManualHost::new());
        let segment = Arc::new(Segment::in_memory(&TWO_SLOTS));
        let producer = producer(&host, &segment, 1, LONG);
        let shared = payload(0);
        let first = producer.publish_sealed(&shared, Duration::ZERO).unwrap();
        let reader = consumer(&host, &segment, 2);
        let fd = received(&shared);
        let redeem =
            thread::spawn(move || reader.redeem_sealed(&first, fd).map(|bytes| bytes.len()));
        let again = producer.publish_sealed(&shared, Duration::ZERO);
        assert!(in_flight(&producer) <= LEN, "one payload counted twice");
        let redeemed = redeem.join().unwrap();
        assert_eq!(redeemed.expect("nothing reclaims the ticket"), LEN as usize);
        again.expect("refused a payload that was already counted");
        assert_eq!(in_flight(&producer), LEN);
    });
}

/// A consumer redeems (and so releases) the only ticket while the producer publishes a second
/// payload, which fits only once the first is no longer in flight. The producer learns of the
/// release lazily, from the ticket's state word: the second publication succeeds only if the
/// release came first, and the bytes in flight end at exactly what is still outstanding (freed
/// once: never counted twice, never left counted).
#[test]
fn consumer_release_races_the_lazy_reclaim_of_its_bytes() {
    loom::model(|| {
        let host = Arc::new(ManualHost::new());
        let segment = Arc::new(Segment::in_memory(&TWO_SLOTS));
        let producer = producer(&host, &segment, 1, LONG);
        let first = payload(0);
        let handle = producer.publish_sealed(&first, Duration::ZERO).unwrap();
        let reader = consumer(&host, &segment, 2);
        let fd = received(&first);
        let redeem = thread::spawn(move || {
            reader
                .redeem_sealed(&handle, fd)
                .map(|bytes| bytes.to_vec())
        });
        let second = producer.publish_sealed(&payload(1), Duration::ZERO);
        let redeemed = redeem.join().unwrap();
        assert_eq!(
            redeemed.expect("nothing reclaims the ticket"),
            [b'a'; LEN as usize]
        );
        match second {
            Ok(_) => assert_eq!(in_flight(&producer), LEN),
            Err(ClaimError::BytesExhausted {
                in_flight: seen, ..
            }) => {
                assert_eq!(seen, LEN, "refused while the first ticket was released");
                assert_eq!(in_flight(&producer), 0);
            }
            Err(error) => panic!("unexpected refusal: {error}"),
        }
    });
}

/// Another producer's reaper takes back a sealed ticket whose TTL ran out, then writes and
/// publishes a slot of its own (in the ticket's slot, now free, or next to it), while the
/// ticket's producer publishes a second sealed payload that fits only once the first is over.
/// The ticket's producer learns of the reclaim lazily, from the ticket's state word: the bytes
/// leave its count exactly once, also when the ticket's slot is READY again at a later
/// generation; the neighbour reads back intact; the ticket can no longer be redeemed.
#[test]
fn ticket_reclaimed_while_a_neighbour_is_written() {
    loom::model(|| {
        let host = Arc::new(ManualHost::new());
        let segment = Arc::new(Segment::in_memory(&TWO_SLOTS));
        let sealed = producer(&host, &segment, 1, Duration::ZERO);
        let neighbour = producer(&host, &segment, 2, LONG);
        let ticket = sealed.publish_sealed(&payload(0), Duration::ZERO).unwrap();
        let clock = host.clone();
        let write = thread::spawn(move || {
            clock.advance(Duration::from_nanos(1));
            neighbour.reap();
            let mut slot = neighbour.claim(9, Duration::ZERO).expect("a slot is free");
            slot.write_all(b"neighbour").unwrap();
            slot.publish().expect("its lease is long")
        });
        let second = sealed.publish_sealed(&payload(1), Duration::ZERO);
        let written: Handle = write.join().unwrap();
        match second {
            Ok(_) => assert_eq!(in_flight(&sealed), LEN),
            Err(ClaimError::BytesExhausted {
                in_flight: seen, ..
            }) => {
                assert_eq!(seen, LEN);
                assert_eq!(in_flight(&sealed), 0, "a reclaimed ticket still counted");
            }
            Err(error) => panic!("unexpected refusal: {error}"),
        }
        let reader = consumer(&host, &segment, 3);
        let read = reader.acquire(&written).expect("published").copy_out();
        assert_eq!(read.as_deref(), Ok(&b"neighbour"[..]));
        assert!(matches!(
            reader.redeem_sealed(&ticket, received(&payload(0))),
            Err(RedeemError::Acquire(AcquireError::Stale { .. }))
        ));
    });
}
