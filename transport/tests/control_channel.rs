//! The control channel in one process, through the public API: a producer serving its segment
//! with [`ControlServer::spawn_channel`] and a handler, consumers connecting with
//! [`ControlClient::connect`] and redeeming what they are answered. Covers answers matched to
//! their requests, the slots that come back when a publication is dropped, a connection closes
//! or sends garbage, and the typed refusals (busy limits, deadline passed).
#![cfg(not(loom))]

mod channel_support;

use std::collections::HashSet;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use shmbridge::control::frame::{Answer, CONTROL_VERSION, Placement, Request};
use shmbridge::control::{
    ChannelOptions, Handler, HandlerError, PublicationLimits, Refusal, RefusalCode, RequestError,
    ResponseWriter, Tier,
};
use shmbridge::{ControlClient, monotonic_now_ns};

use channel_support::{
    Ask, INLINE_THRESHOLD, RawPeer, SLOT_LEN, SLOT_SIZE, Served, TIMEOUT, TestHandler,
    assert_answers, channel_options, client_options, producer, publication, send_ask, tier_for,
    wait_until,
};

fn limits(per_peer: u32, segment: u32) -> PublicationLimits {
    PublicationLimits { per_peer, segment }
}

/// [`TestHandler`] on `slots` slots with `limits`.
fn served(test: &str, slots: u32, limits: PublicationLimits) -> Served {
    let producer = producer(slots);
    let options = ChannelOptions {
        limits,
        ..channel_options(&producer)
    };
    Served::new(test, producer, options)
}

fn refusal_of<T: std::fmt::Debug>(result: Result<T, RequestError>) -> Refusal {
    match result {
        Err(RequestError::Refused(refusal)) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_response_redeems_to_the_bytes_the_handler_wrote() {
    let served = served("round-trip", 4, limits(2, 3));
    let client = served.connect();
    assert_eq!(client.segment().epoch(), served.producer.segment().epoch());

    let ask = Ask::new(SLOT_LEN, 42);
    let publication = publication(&client, &ask.encode()).unwrap();
    assert_eq!(publication.tier(), Tier::Slot);
    assert_eq!(publication.len(), SLOT_LEN as u64);
    assert_eq!(publication.handle().unwrap().len as usize, SLOT_LEN);
    assert_eq!(served.slots().ready, 1);
    let response = publication.redeem().unwrap();
    assert_answers(&response, &ask, Tier::Slot);
    assert_eq!(served.slots().free, 4);
    assert_eq!(served.producer.stats().withdrawn, 0);
    assert_eq!(client.consumer().stats().checksum_failures, 0);
    served.assert_nothing_leaked();
}

/// Holds every request until `expected` of them are in the handler at once (or a timeout
/// passes), so the test can tell the connection's requests were served side by side.
struct Gate {
    expected: usize,
    inside: Mutex<(usize, usize)>,
    changed: Condvar,
}

impl Gate {
    /// The most requests that were in the handler at the same time.
    fn peak(&self) -> usize {
        self.inside.lock().unwrap_or_else(PoisonError::into_inner).1
    }
}

impl Handler for Gate {
    fn handle(
        &self,
        request: &[u8],
        response: &mut ResponseWriter<'_>,
    ) -> Result<(), HandlerError> {
        let mut inside = self.inside.lock().unwrap_or_else(PoisonError::into_inner);
        inside.0 += 1;
        inside.1 = inside.1.max(inside.0);
        self.changed.notify_all();
        let (mut inside, _) = self
            .changed
            .wait_timeout_while(inside, TIMEOUT, |inside| inside.1 < self.expected)
            .unwrap_or_else(PoisonError::into_inner);
        inside.0 -= 1;
        drop(inside);
        TestHandler.handle(request, response)
    }
}

/// Requests whose bytes differ get each their own response, whichever tier carries it: the
/// bodies run from 100 bytes (inline) through slots to sealed payloads.
#[test]
fn many_requests_in_flight_on_one_connection_are_each_answered_with_their_own() {
    const REQUESTS: usize = 32;
    let gate = Arc::new(Gate {
        expected: REQUESTS,
        inside: Mutex::default(),
        changed: Condvar::new(),
    });
    let producer = producer(64);
    let options = ChannelOptions {
        limits: limits(64, 64),
        ..channel_options(&producer)
    };
    let served = Served::with_handler(
        "in-flight",
        producer,
        Arc::clone(&gate) as Arc<dyn Handler>,
        options,
    );
    let client = served.connect();
    let (answered, answers) = mpsc::channel();
    let deadline_ns = monotonic_now_ns() + TIMEOUT.as_nanos() as u64;
    let mut ids = HashSet::new();
    for n in 0..REQUESTS {
        let ask = Ask::new(100 + n * 150, 1000 + n as u64);
        let answered = answered.clone();
        let request = ask.encode();
        let id = client
            .request_with(&request, deadline_ns, move |result| {
                answered.send((ask, result)).unwrap();
            })
            .unwrap();
        assert!(ids.insert(id), "id {id} given twice");
    }
    let mut tiers = HashSet::new();
    for _ in 0..REQUESTS {
        let (ask, result) = answers.recv_timeout(2 * TIMEOUT).unwrap();
        let publication = result.unwrap();
        let tier = tier_for(ask.len, INLINE_THRESHOLD, SLOT_SIZE);
        assert_eq!(publication.tier(), tier, "{ask:?}");
        assert_eq!(publication.len(), ask.len as u64);
        let response = publication.redeem().unwrap();
        // Bytes drawn from (len, seed): another request's response would not match.
        assert_answers(&response, &ask, tier);
        tiers.insert(tier);
    }
    assert_eq!(tiers.len(), 3, "not every tier was exercised: {tiers:?}");
    assert_eq!(
        gate.peak(),
        REQUESTS,
        "the connection's requests were not served side by side"
    );
    served.assert_nothing_leaked();
}

#[test]
fn a_publication_dropped_unredeemed_is_withdrawn() {
    let served = served("dropped", 4, limits(2, 3));
    let client = served.connect();
    let held = publication(&client, &Ask::new(SLOT_LEN, 1).encode()).unwrap();
    assert_eq!(served.slots().ready, 1);
    drop(held);
    wait_until("the dropped publication withdrawn", TIMEOUT, || {
        served.producer.stats().withdrawn == 1 && served.slots().free == 4
    });
    // A sealed one the same way, and its bytes stop counting.
    let sealed = publication(&client, &Ask::new(3 * SLOT_SIZE, 3).encode()).unwrap();
    assert_eq!(sealed.tier(), Tier::Sealed);
    assert_eq!(
        served.producer.stats().sealed_bytes_in_flight,
        3 * SLOT_SIZE as u64
    );
    drop(sealed);
    wait_until("the dropped sealed publication withdrawn", TIMEOUT, || {
        let stats = served.producer.stats();
        stats.withdrawn == 2 && stats.slots.free == 4 && stats.sealed_bytes_in_flight == 0
    });
    // The connection stays up, and the slot serves the next request.
    assert!(client.is_open());
    let ask = Ask::new(SLOT_LEN, 2);
    let next = client.request(&ask.encode(), TIMEOUT).unwrap();
    assert_answers(&next, &ask, Tier::Slot);
    served.assert_nothing_leaked();
}

#[test]
fn busy_limits_answer_typed_refusals_until_a_publication_comes_back() {
    let served = served("busy", 8, limits(2, 3));
    let (one, other) = (served.connect(), served.connect());
    let hold =
        |client: &ControlClient, seed| publication(client, &Ask::new(SLOT_LEN, seed).encode());
    let mut held = vec![hold(&one, 1).unwrap(), hold(&one, 2).unwrap()];
    assert_eq!(
        refusal_of(hold(&one, 3)),
        Refusal::new(RefusalCode::PeerBusy, 2)
    );

    // The other peer is under its own limit, but the segment's counts every peer.
    held.push(hold(&other, 4).unwrap());
    assert_eq!(
        refusal_of(hold(&other, 5)),
        Refusal::new(RefusalCode::SegmentBusy, 3)
    );
    // Refusals take no slot.
    assert_eq!(served.slots().ready, 3);
    assert_eq!(served.slots().free, 5);

    // One publication back, and the other peer is served again.
    drop(held.remove(0));
    wait_until("a publication withdrawn", TIMEOUT, || {
        served.slots().ready == 2
    });
    let ask = Ask::new(SLOT_LEN, 6);
    assert_answers(&send_ask(&other, &ask).unwrap(), &ask, Tier::Slot);
    drop(held);
    served.assert_nothing_leaked();
}

#[test]
fn a_deadline_already_passed_is_refused_without_taking_a_slot() {
    let served = served("deadline", 4, limits(2, 3));
    let client = served.connect();
    let (answered, answer) = mpsc::sync_channel(1);
    client
        .request_with(
            &Ask::new(SLOT_LEN, 1).encode(),
            monotonic_now_ns(),
            move |result| {
                answered.send(result).unwrap();
            },
        )
        .unwrap();
    let refusal = refusal_of(answer.recv_timeout(TIMEOUT).unwrap());
    assert_eq!(refusal, Refusal::new(RefusalCode::DeadlineExceeded, 0));
    assert_eq!(served.slots().free, 4);
    assert!(client.is_open());
}

/// A publish frame for `ask`, as the raw peer sends it.
fn publish_frame(id: u64, ask: &Ask) -> Vec<u8> {
    Request::Publish {
        id,
        deadline_ns: monotonic_now_ns() + TIMEOUT.as_nanos() as u64,
        request: &ask.encode(),
    }
    .encode()
}

#[test]
fn a_garbage_frame_closes_only_its_connection_and_withdraws_what_it_held() {
    let served = served("garbage", 8, limits(4, 6));
    let honest = served.connect();
    let ask = Ask::new(SLOT_LEN, 1);
    assert_answers(&send_ask(&honest, &ask).unwrap(), &ask, Tier::Slot);

    let rogue = RawPeer::connect(served.server.socket_name());
    for id in 1..=3 {
        rogue.send(&publish_frame(id, &Ask::new(SLOT_LEN, id)));
        let frame = rogue.receive().expect("an answer");
        let answer = Answer::decode(&frame).unwrap();
        assert!(
            matches!(
                answer,
                Answer::Published { id: answered, placement: Placement::Slot(_), .. }
                    if answered == id
            ),
            "{answer:?}"
        );
    }
    assert_eq!(served.slots().ready, 3);
    assert_eq!(served.server.peers(), 2);

    // The right magic and version, and nothing else right.
    rogue.send(
        &[
            &b"SHMC"[..],
            &[CONTROL_VERSION, 1, 0, 0],
            b"not a publish frame",
        ]
        .concat(),
    );
    assert_eq!(rogue.receive(), None, "the garbage connection stayed open");
    wait_until(
        "the garbage connection's publications withdrawn",
        TIMEOUT,
        || served.slots().ready == 0 && served.server.peers() == 1,
    );
    assert_eq!(served.producer.stats().withdrawn, 3);

    assert!(honest.is_open());
    let ask = Ask::new(SLOT_LEN, 2);
    assert_answers(&send_ask(&honest, &ask).unwrap(), &ask, Tier::Slot);
    served.assert_nothing_leaked();
}

/// Only a producer's sealed answer may carry a descriptor: a request with one is a protocol
/// error, and its connection is closed unanswered.
#[test]
fn a_request_carrying_a_descriptor_closes_its_connection() {
    let served = served("request-fd", 4, limits(2, 3));
    let rogue = RawPeer::connect(served.server.socket_name());
    let (_read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    rogue.send_with_fd(
        &publish_frame(1, &Ask::new(SLOT_LEN, 1)),
        std::os::fd::AsRawFd::as_raw_fd(&write_end),
    );
    assert_eq!(
        rogue.receive(),
        None,
        "answered a request carrying a descriptor"
    );
    assert_eq!(served.slots().free, 4);
}

#[test]
fn a_client_dropped_with_unredeemed_publications_gets_them_withdrawn() {
    let served = served("client-dropped", 8, limits(4, 6));
    let client = served.connect();
    let held: Vec<_> = [SLOT_LEN, SLOT_LEN, 2 * SLOT_SIZE]
        .into_iter()
        .enumerate()
        .map(|(seed, len)| publication(&client, &Ask::new(len, seed as u64).encode()).unwrap())
        .collect();
    assert_eq!(served.slots().ready, 3);
    assert_eq!(
        served.producer.stats().sealed_bytes_in_flight,
        2 * SLOT_SIZE as u64
    );
    drop(client);
    // The publications are still alive, so no release frame was sent for them: closing the
    // connection is what gives them back.
    wait_until(
        "the closed connection's publications withdrawn",
        TIMEOUT,
        || served.slots().free == 8 && served.server.peers() == 0,
    );
    assert_eq!(served.producer.stats().withdrawn, 3);
    drop(held);
    assert_eq!(served.producer.stats().withdrawn, 3);
    served.assert_nothing_leaked();
}

/// A client without a reader thread, driven the way an event loop would: answers arrive only
/// when the caller receives them, and the end of the connection fails what is still waiting.
#[test]
fn a_driven_client_receives_answers_when_asked_and_learns_of_the_close() {
    let served = served("driven", 4, limits(2, 3));
    let (client, answers) =
        ControlClient::connect_driven(served.server.socket_name(), &client_options()).unwrap();
    let (answered, answer) = mpsc::channel();
    let send_to = |answered: mpsc::Sender<_>| {
        move |result: Result<shmbridge::control::Publication, RequestError>| {
            let _ = answered.send(result);
        }
    };
    let deadline = monotonic_now_ns() + TIMEOUT.as_nanos() as u64;
    let ask = Ask::new(SLOT_LEN, 3);
    client
        .request_with(&ask.encode(), deadline, send_to(answered.clone()))
        .unwrap();
    let mut publication = None;
    wait_until("the answer", TIMEOUT, || {
        assert!(answers.receive_ready(), "the connection closed");
        publication = answer.try_recv().ok();
        publication.is_some()
    });
    let response = publication.unwrap().unwrap().redeem().unwrap();
    assert_answers(&response, &ask, Tier::Slot);

    // Nothing is received unless asked: the answer to a second request waits on the socket.
    client
        .request_with(
            &Ask::new(SLOT_LEN, 4).encode(),
            deadline,
            send_to(answered.clone()),
        )
        .unwrap();
    wait_until("the producer to publish", TIMEOUT, || {
        served.slots().ready == 1
    });
    assert!(answer.try_recv().is_err());
    drop(served);
    wait_until("the close", TIMEOUT, || !answers.receive_ready());
    // The answer sent before the close was delivered; the connection is then known closed.
    assert!(answer.try_recv().unwrap().is_ok());
    assert!(!client.is_open());
    assert!(matches!(
        client.request_with(b"", deadline, send_to(answered)),
        Err(RequestError::Closed)
    ));
}
