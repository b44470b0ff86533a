//! The v2 control channel's refusals over a real [`ControlServer`] and [`ControlClient`]: a
//! handler's error or panic fails its request alone ([`RefusalCode::HandlerFailed`]) and the
//! connection serves the next; a body above the producer's largest payload is refused
//! `TooLarge`, before the handler makes any of it when it says its length first; a request above
//! [`MAX_REQUEST_LEN`] is refused by the client, and an oversized frame sent anyway is refused by
//! the producer without closing the connection; a frame of another version is refused and its
//! connection closed; a deadline that passes while the handler works or waits for room ends in a
//! refusal or a timeout, never a hang. After each test no slot is held and no sealed byte
//! counted.
//!
//! [`ControlServer`]: shmbridge::ControlServer
//! [`ControlClient`]: shmbridge::ControlClient
#![cfg(not(loom))]

mod channel_support;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shmbridge::control::frame::{
    Answer, CONTROL_VERSION, MAX_REQUEST_FRAME_LEN, MAX_REQUEST_LEN, Placement, Request,
};
use shmbridge::control::{
    ChannelOptions, Handler, HandlerError, PublicationLimits, Refusal, RefusalCode, RequestError,
    ResponseWriter, Tier,
};
use shmbridge::{ProducerOptions, monotonic_now_ns};

use channel_support::{
    Ask, INLINE_THRESHOLD, RawPeer, SLOT_LEN, SLOT_SIZE, Served, TIMEOUT, Writing, assert_answers,
    channel_options, producer, producer_with, publication, send_ask, tier_for, wait_until,
};

const MIB: usize = 1 << 20;

fn refusal_of<T: std::fmt::Debug>(result: Result<T, RequestError>) -> Refusal {
    match result {
        Err(RequestError::Refused(refusal)) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// [`channel_support::TestHandler`] on `slots` slots of [`SLOT_SIZE`] with `options`.
fn served_with(test: &str, slots: u32, options: ProducerOptions) -> Served {
    let producer = producer_with(slots, SLOT_SIZE, options);
    let options = channel_options(&producer);
    Served::new(test, producer, options)
}

/// An error or a panic, before any byte, midway or after the whole body, in every tier, fails
/// that request with `HandlerFailed`; whatever the writer held is given back, and the same
/// connection answers the next request.
#[test]
fn a_handler_error_or_panic_fails_only_its_request() {
    let served = served_with("handler-failed", 4, ProducerOptions::default());
    let client = served.connect();
    let mut n = 0;
    for len in [0, 500, SLOT_LEN, 100_000] {
        for fail_after in [0, len / 2, len] {
            for panic in [false, true] {
                for writing in [Writing::Expect, Writing::Chunks(700)] {
                    n += 1;
                    let ask = Ask::new(len, n).writing(writing).with_head();
                    let failing = if panic {
                        ask.clone().panic_after(fail_after)
                    } else {
                        ask.clone().fail_after(fail_after)
                    };
                    assert_eq!(
                        refusal_of(send_ask(&client, &failing)),
                        Refusal::new(RefusalCode::HandlerFailed, 0),
                        "{failing:?}"
                    );
                    assert!(client.is_open());
                    let response = send_ask(&client, &ask).unwrap();
                    assert_answers(&response, &ask, tier_for(len, INLINE_THRESHOLD, SLOT_SIZE));
                }
            }
        }
    }
    assert_eq!(served.server.peers(), 1);
    served.assert_nothing_leaked();
}

/// Counts the body bytes a handler made, to show a refused body was never made.
struct Counting {
    made: AtomicU64,
    refused_at: AtomicU64,
}

/// A body above the producer's largest payload is refused `TooLarge`, naming the limit: with
/// `expect_len`, before the handler makes a byte of it; written in pieces, at the first write
/// past the limit, so the handler stops there. Exactly the limit is published.
#[test]
fn a_body_above_the_largest_payload_is_refused_too_large_before_it_is_made() {
    let max = MIB;
    let producer = producer_publishing_at_most(max);
    let counting = Arc::new(Counting {
        made: AtomicU64::new(0),
        refused_at: AtomicU64::new(u64::MAX),
    });
    let handler = {
        let counting = Arc::clone(&counting);
        move |request: &[u8], response: &mut ResponseWriter<'_>| -> Result<(), HandlerError> {
            let ask = Ask::decode(request).ok_or("not an ask")?;
            if ask.writing == Writing::Expect {
                response.expect_len(ask.len as u64)?;
            }
            // Made piece by piece, as a generator would: nothing exists before it is written.
            let chunk = 64 << 10;
            let body = ask.body();
            for piece in body.chunks(chunk) {
                counting
                    .made
                    .fetch_add(piece.len() as u64, Ordering::Relaxed);
                if let Err(error) = response.write_all(piece) {
                    counting
                        .refused_at
                        .store(response.written(), Ordering::Relaxed);
                    return Err(error.into());
                }
            }
            Ok(())
        }
    };
    let options = channel_options(&producer);
    let served = Served::with_handler("too-large", producer, Arc::new(handler), options);
    let client = served.connect();
    let too_large = Refusal::new(RefusalCode::TooLarge, max as u64);

    let ask = Ask::new(max + 1, 1).writing(Writing::Expect);
    assert_eq!(refusal_of(send_ask(&client, &ask)), too_large);
    assert_eq!(counting.made.load(Ordering::Relaxed), 0, "a byte was made");

    for len in [max + 1, 3 * max] {
        counting.made.store(0, Ordering::Relaxed);
        let ask = Ask::new(len, 2).writing(Writing::Chunks(64 << 10));
        assert_eq!(refusal_of(send_ask(&client, &ask)), too_large);
        let refused_at = counting.refused_at.load(Ordering::Relaxed);
        assert!(refused_at <= max as u64, "{refused_at} bytes taken");
        assert!(
            counting.made.load(Ordering::Relaxed) <= max as u64 + (64 << 10),
            "the handler went on making the body"
        );
        assert!(client.is_open());
    }

    for writing in [Writing::Expect, Writing::Chunks(64 << 10)] {
        let ask = Ask::new(max, 3).writing(writing);
        assert_answers(&send_ask(&client, &ask).unwrap(), &ask, Tier::Sealed);
    }
    served.assert_nothing_leaked();
}

/// A handler that knows only a lower bound on its body's length (`expect_min_len`) is refused
/// at once when even the bound is past the largest payload, before it makes a byte; under the
/// limit the bound changes nothing, and the body is published in its tier.
#[test]
fn a_lower_bound_past_the_largest_payload_is_refused_before_the_body_is_made() {
    let max = MIB;
    let producer = producer_publishing_at_most(max);
    let made = Arc::new(AtomicU64::new(0));
    let handler = {
        let made = Arc::clone(&made);
        move |request: &[u8], response: &mut ResponseWriter<'_>| -> Result<(), HandlerError> {
            let ask = Ask::decode(request).ok_or("not an ask")?;
            response.expect_min_len(ask.len as u64)?;
            made.fetch_add(ask.len as u64, Ordering::Relaxed);
            response.write_all(&ask.body())?;
            Ok(())
        }
    };
    let options = channel_options(&producer);
    let served = Served::with_handler("min-len", producer, Arc::new(handler), options);
    let client = served.connect();

    let ask = Ask::new(max + 1, 1).writing(Writing::Whole);
    let too_large = Refusal::new(RefusalCode::TooLarge, max as u64);
    assert_eq!(refusal_of(send_ask(&client, &ask)), too_large);
    assert_eq!(made.load(Ordering::Relaxed), 0, "a byte was made");
    for (len, tier) in [
        (max, Tier::Sealed),
        (SLOT_SIZE, Tier::Slot),
        (10, Tier::Inline),
    ] {
        let ask = Ask::new(len, 2).writing(Writing::Whole);
        assert_answers(&send_ask(&client, &ask).unwrap(), &ask, tier);
    }
    served.assert_nothing_leaked();
}

/// A producer of 4 slots that publishes bodies of at most `max` bytes.
fn producer_publishing_at_most(max: usize) -> Arc<shmbridge::Producer> {
    producer_with(
        4,
        SLOT_SIZE,
        ProducerOptions {
            max_payload: max,
            ..ProducerOptions::default()
        },
    )
}

/// A request above [`MAX_REQUEST_LEN`] never leaves the client; the connection stays usable.
#[test]
fn a_request_above_the_bound_is_refused_by_the_client() {
    let served = served_with("request-too-large-client", 4, ProducerOptions::default());
    let client = served.connect();
    let request = vec![b'a'; MAX_REQUEST_LEN + 1];
    assert!(matches!(
        client.request(&request, TIMEOUT),
        Err(RequestError::RequestTooLarge { len }) if len == MAX_REQUEST_LEN + 1
    ));
    let (answered, answers) = mpsc::channel::<()>();
    assert!(matches!(
        client.request_with(&request, u64::MAX, move |_| drop(answered)),
        Err(RequestError::RequestTooLarge { .. })
    ));
    // The callback was dropped uncalled.
    assert_eq!(
        answers.recv_timeout(TIMEOUT),
        Err(mpsc::RecvTimeoutError::Disconnected)
    );
    assert!(client.is_open());
    let ask = Ask::new(SLOT_LEN, 1);
    assert_answers(&send_ask(&client, &ask).unwrap(), &ask, Tier::Slot);
    served.assert_nothing_leaked();
}

/// A publish frame for `ask`, as a raw peer sends it.
fn publish_frame(id: u64, ask: &Ask) -> Vec<u8> {
    Request::Publish {
        id,
        deadline_ns: monotonic_now_ns() + TIMEOUT.as_nanos() as u64,
        request: &ask.encode(),
    }
    .encode()
}

/// A publish frame whose request is `extra` bytes longer than the bound: a valid header, its
/// length field saying what follows.
fn oversized_publish_frame(id: u64, extra: usize) -> Vec<u8> {
    let len = MAX_REQUEST_LEN + extra;
    let mut frame = Request::Publish {
        id,
        deadline_ns: u64::MAX,
        request: &[],
    }
    .encode();
    frame[24..28].copy_from_slice(&(len as u32).to_le_bytes());
    frame.resize(frame.len() + len, b'x');
    assert_eq!(frame.len(), MAX_REQUEST_FRAME_LEN + extra);
    frame
}

/// A peer that sends an oversized frame anyway is refused `RequestTooLarge` for that request
/// and keeps its connection: the next request on it is answered.
#[test]
fn an_oversized_publish_frame_is_refused_and_the_connection_stays_open() {
    let served = served_with("request-too-large-raw", 4, ProducerOptions::default());
    let rogue = RawPeer::connect(served.server.socket_name());
    for (id, extra) in [(1, 1), (2, 1000), (3, MAX_REQUEST_LEN)] {
        rogue.send(&oversized_publish_frame(id, extra));
        let frame = rogue.receive().expect("an answer, not a close");
        assert_eq!(
            Answer::decode(&frame),
            Ok(Answer::Refused {
                id,
                refusal: Refusal::new(RefusalCode::RequestTooLarge, MAX_REQUEST_LEN as u64)
            })
        );
    }
    let ask = Ask::new(SLOT_LEN, 4);
    rogue.send(&publish_frame(4, &ask));
    let frame = rogue.receive().expect("an answer");
    let Ok(Answer::Published {
        id: 4,
        placement: Placement::Slot(handle),
        ..
    }) = Answer::decode(&frame)
    else {
        panic!("{:?}", Answer::decode(&frame));
    };
    assert_eq!(handle.len as usize, SLOT_LEN);
    assert_eq!(served.server.peers(), 1);
    // Closing the raw connection gives back what it was answered.
    drop(rogue);
    served.assert_nothing_leaked();
}

/// A frame of another control version gets a `Version` refusal naming this version, then the
/// connection closes and what it held is withdrawn.
#[test]
fn a_frame_of_another_version_is_refused_and_its_connection_closed() {
    let served = served_with("version", 4, ProducerOptions::default());
    for version in [1u8, 2, 3, 5, 255] {
        let rogue = RawPeer::connect(served.server.socket_name());
        rogue.send(&publish_frame(1, &Ask::new(SLOT_LEN, 1)));
        let answer = rogue.receive().expect("an answer");
        let held = Answer::decode(&answer).unwrap();
        assert!(
            matches!(
                held,
                Answer::Published {
                    placement: Placement::Slot(_),
                    ..
                }
            ),
            "{held:?}"
        );
        assert_eq!(served.slots().ready, 1);

        // Version 1's publish: count, reserved, seed, deadline.
        let mut frame = b"SHMC".to_vec();
        frame.extend_from_slice(&[version, 1, 0, 0]);
        frame.extend_from_slice(&77u64.to_le_bytes());
        frame.extend_from_slice(&1000u32.to_le_bytes());
        frame.extend_from_slice(&0u32.to_le_bytes());
        frame.extend_from_slice(&42u64.to_le_bytes());
        frame.extend_from_slice(&u64::MAX.to_le_bytes());
        rogue.send(&frame);
        let refused = rogue.receive().expect("a refusal before the close");
        assert_eq!(
            Answer::decode(&refused),
            Ok(Answer::Refused {
                id: 77,
                refusal: Refusal::new(RefusalCode::Version, CONTROL_VERSION.into())
            })
        );
        assert_eq!(CONTROL_VERSION, 4);
        assert_eq!(rogue.receive(), None, "version {version}: still open");
        served.assert_nothing_leaked();
    }
    // The producer serves on.
    let client = served.connect();
    let ask = Ask::new(SLOT_LEN, 2);
    assert_answers(&send_ask(&client, &ask).unwrap(), &ask, Tier::Slot);
}

/// A handler that outlives its request's deadline: the blocking request times out within its
/// bound, the late body is refused at its first write (nothing is published late, so nothing
/// is left to withdraw), and the connection serves on.
#[test]
fn a_deadline_passing_while_the_handler_sleeps_times_out_and_the_late_answer_is_released() {
    let producer = producer(4);
    let finished = Arc::new(AtomicU64::new(0));
    let handler = {
        let finished = Arc::clone(&finished);
        move |request: &[u8], response: &mut ResponseWriter<'_>| -> Result<(), HandlerError> {
            let handled = channel_support::TestHandler.handle(request, response);
            finished.fetch_add(1, Ordering::Relaxed);
            handled
        }
    };
    let options = channel_options(&producer);
    let served = Served::with_handler("deadline-handler", producer, Arc::new(handler), options);
    let client = served.connect();
    for (n, len) in [100, SLOT_LEN, 3 * SLOT_SIZE].into_iter().enumerate() {
        let ask = Ask::new(len, 1).sleep(Duration::from_millis(300));
        let timeout = Duration::from_millis(100);
        let start = Instant::now();
        let result = client.request(&ask.encode(), timeout);
        let waited = start.elapsed();
        assert!(
            matches!(result, Err(RequestError::TimedOut(t)) if t == timeout),
            "{len}: {result:?}"
        );
        assert!(waited < TIMEOUT, "waited {waited:?}");
        wait_until("the late handler", TIMEOUT, || {
            finished.load(Ordering::Relaxed) == n as u64 + 1
        });
        assert_eq!(
            served.producer.stats().withdrawn,
            0,
            "{len}: published late"
        );
        served.assert_nothing_leaked();
        assert!(client.is_open());
    }
    let ask = Ask::new(SLOT_LEN, 2);
    assert_answers(&send_ask(&client, &ask).unwrap(), &ask, Tier::Slot);
    served.assert_nothing_leaked();
}

/// The callback form with a deadline that passes while the handler sleeps: an answer (late, or
/// a refusal) comes within a bounded time, never a hang, and nothing is left held.
#[test]
fn a_deadline_passing_while_the_handler_sleeps_never_hangs_the_callback() {
    let served = served_with("deadline-callback", 4, ProducerOptions::default());
    let client = served.connect();
    for len in [100, SLOT_LEN, 3 * SLOT_SIZE] {
        let ask = Ask::new(len, 1).sleep(Duration::from_millis(200));
        let (answered, answer) = mpsc::sync_channel(1);
        let deadline_ns = monotonic_now_ns() + Duration::from_millis(50).as_nanos() as u64;
        client
            .request_with(&ask.encode(), deadline_ns, move |result| {
                let _ = answered.send(result);
            })
            .unwrap();
        match answer.recv_timeout(TIMEOUT).expect("an answer, not a hang") {
            Ok(late) => assert_answers(
                &late.redeem().unwrap(),
                &ask,
                tier_for(len, INLINE_THRESHOLD, SLOT_SIZE),
            ),
            Err(RequestError::Refused(refusal)) => assert!(
                matches!(
                    refusal.code,
                    RefusalCode::DeadlineExceeded | RefusalCode::Exhausted
                ),
                "{refusal:?}"
            ),
            Err(other) => panic!("{len}: {other:?}"),
        }
        served.assert_nothing_leaked();
    }
}

/// No room before the deadline, in the slots or in the sealed byte budget: the request waits
/// for room until its deadline, then is refused `Exhausted`; once room comes back, it is served.
#[test]
fn a_deadline_passing_while_waiting_for_room_is_refused_exhausted() {
    let producer = producer_with(
        2,
        SLOT_SIZE,
        ProducerOptions {
            max_sealed_bytes: MIB as u64,
            ..ProducerOptions::default()
        },
    );
    // Limits above the room, so that the wait for room is what refuses.
    let options = ChannelOptions {
        limits: PublicationLimits {
            per_peer: 8,
            segment: 8,
        },
        ..channel_options(&producer)
    };
    let served = Served::new("deadline-room", producer, options);
    let client = served.connect();
    let wait = Duration::from_millis(200);
    // The callback form, so the producer's refusal at the deadline is not raced by a client
    // timeout at the same instant.
    let refused_within = |ask: &Ask| {
        let start = Instant::now();
        let (answered, answer) = mpsc::sync_channel(1);
        let deadline_ns = monotonic_now_ns() + wait.as_nanos() as u64;
        client
            .request_with(&ask.encode(), deadline_ns, move |result| {
                let _ = answered.send(result);
            })
            .unwrap();
        let refused = refusal_of(answer.recv_timeout(TIMEOUT).expect("an answer, not a hang"));
        let took = start.elapsed();
        assert!(
            took >= wait / 2,
            "refused after {took:?}, before the deadline"
        );
        assert!(took < TIMEOUT, "took {took:?}");
        refused
    };

    // The sealed budget: one payload of all of it, then another.
    let budget = publication(&client, &Ask::new(MIB, 1).encode()).unwrap();
    assert_eq!(budget.tier(), Tier::Sealed);
    assert_eq!(
        refused_within(&Ask::new(100_000, 2)),
        Refusal::new(RefusalCode::Exhausted, 0)
    );
    drop(budget);
    served.assert_nothing_leaked();

    // The slots: both held, then a third.
    let held = [
        publication(&client, &Ask::new(SLOT_LEN, 3).encode()).unwrap(),
        publication(&client, &Ask::new(SLOT_LEN, 4).encode()).unwrap(),
    ];
    assert_eq!(
        refused_within(&Ask::new(SLOT_LEN, 5)),
        Refusal::new(RefusalCode::Exhausted, 0)
    );
    // Inline bodies need no room.
    let inline = Ask::new(10, 6);
    assert_answers(&send_ask(&client, &inline).unwrap(), &inline, Tier::Inline);
    drop(held);
    served.assert_nothing_leaked();
    let ask = Ask::new(SLOT_LEN, 7);
    assert_answers(&send_ask(&client, &ask).unwrap(), &ask, Tier::Slot);
    served.assert_nothing_leaked();
}

/// A request read after its deadline is refused before the handler runs.
#[test]
fn a_request_read_after_its_deadline_never_reaches_the_handler() {
    let producer = producer(4);
    let ran = Arc::new(AtomicU64::new(0));
    let handler = {
        let ran = Arc::clone(&ran);
        move |_: &[u8], response: &mut ResponseWriter<'_>| -> Result<(), HandlerError> {
            ran.fetch_add(1, Ordering::Relaxed);
            response.write_all(b"ran")?;
            Ok(())
        }
    };
    let options = channel_options(&producer);
    let served = Served::with_handler("deadline-read", producer, Arc::new(handler), options);
    let client = served.connect();
    let (answered, answer) = mpsc::sync_channel(1);
    client
        .request_with(b"late", monotonic_now_ns(), move |result| {
            let _ = answered.send(result);
        })
        .unwrap();
    assert_eq!(
        refusal_of(answer.recv_timeout(TIMEOUT).unwrap()),
        Refusal::new(RefusalCode::DeadlineExceeded, 0)
    );
    assert_eq!(ran.load(Ordering::Relaxed), 0);
    assert_eq!(
        &client.request(b"on time", TIMEOUT).unwrap().body[..],
        b"ran"
    );
    served.assert_nothing_leaked();
}
