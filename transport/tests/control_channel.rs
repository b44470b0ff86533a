//! The control channel in one process, through the public API: a producer serving its segment
//! with [`ControlServer::spawn_channel`], consumers connecting with [`ControlClient::connect`]
//! and redeeming what they are answered. Covers answers matched to their requests, the slots
//! that come back when a publication is dropped, a connection closes or sends garbage, and the
//! typed refusals (busy limits, deadline passed).
#![cfg(not(loom))]

mod channel_support;

use std::collections::HashSet;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, connect, recv, send, setsockopt, socket,
    sockopt::ReceiveTimeout,
};
use nix::sys::time::TimeVal;
use shmbridge::control::{
    Answer, ChannelOptions, PublicationLimits, PublishRequest, Published, Publisher, Refusal,
    RefusalCode, Request, RequestError,
};
use shmbridge::{
    Consumer, ConsumerOptions, ControlClient, ControlServer, Handle, Producer, SlotCounts,
    monotonic_now_ns,
};

use channel_support::{TIMEOUT, TestPublisher, payload, producer, unique_socket, wait_until};

/// A producer serving a channel on a socket of its own.
struct Served {
    producer: Arc<Producer>,
    server: ControlServer,
}

impl Served {
    fn new(test: &str, slots: u32, limits: PublicationLimits) -> Self {
        Self::with_publisher(test, slots, limits, Arc::new(TestPublisher))
    }

    fn with_publisher(
        test: &str,
        slots: u32,
        limits: PublicationLimits,
        publisher: Arc<dyn Publisher>,
    ) -> Self {
        let producer = producer(slots);
        let options = ChannelOptions {
            limits,
            ..ChannelOptions::for_segment(producer.segment())
        };
        let server = ControlServer::spawn_channel(
            Arc::clone(&producer),
            publisher,
            options,
            &unique_socket(test),
        )
        .unwrap();
        Self { producer, server }
    }

    fn connect(&self) -> ControlClient {
        ControlClient::connect(self.server.socket_name(), TIMEOUT, &[]).unwrap()
    }

    fn slots(&self) -> SlotCounts {
        SlotCounts::scan(self.producer.segment())
    }
}

fn limits(per_peer: u32, segment: u32) -> PublicationLimits {
    PublicationLimits { per_peer, segment }
}

/// Redeems `handle` through a consumer of the client's segment.
fn redeem(client: &ControlClient, handle: &Handle) -> Vec<u8> {
    let consumer = Consumer::new(Arc::clone(client.segment()), ConsumerOptions::default()).unwrap();
    consumer.acquire(handle).unwrap().copy_out().unwrap()
}

fn refusal_of(result: Result<impl std::fmt::Debug, RequestError>) -> Refusal {
    match result {
        Err(RequestError::Refused(refusal)) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_publication_redeems_to_the_bytes_the_publisher_wrote() {
    let served = Served::new("round-trip", 4, limits(2, 3));
    let client = served.connect();
    assert_eq!(client.segment().epoch(), served.producer.segment().epoch());

    let publication = client.publish_blocking(1000, 42, TIMEOUT).unwrap();
    assert_eq!(publication.handle().len, 1000);
    assert_eq!(served.slots().ready, 1);
    assert_eq!(redeem(&client, publication.handle()), payload(1000, 42));
    publication.redeemed();
    assert_eq!(served.slots().free, 4);
    assert_eq!(served.producer.stats().withdrawn, 0);
}

/// Holds every publish until `expected` of them are in the publisher at once (or a timeout
/// passes), so the test can tell the connection's requests were served side by side.
struct Gate {
    expected: usize,
    inside: Mutex<(usize, usize)>,
    changed: Condvar,
}

impl Gate {
    /// The most publishes that were in the publisher at the same time.
    fn peak(&self) -> usize {
        self.inside.lock().unwrap_or_else(PoisonError::into_inner).1
    }
}

impl Publisher for Gate {
    fn publish(
        &self,
        producer: &Producer,
        request: &PublishRequest,
        wait: Duration,
    ) -> Result<Published, Refusal> {
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
        TestPublisher.publish(producer, request, wait)
    }
}

#[test]
fn many_requests_in_flight_on_one_connection_are_each_answered_with_their_own() {
    const REQUESTS: u32 = 32;
    let gate = Arc::new(Gate {
        expected: REQUESTS as usize,
        inside: Mutex::default(),
        changed: Condvar::new(),
    });
    let served = Served::with_publisher(
        "in-flight",
        64,
        limits(64, 64),
        Arc::clone(&gate) as Arc<dyn Publisher>,
    );
    let client = served.connect();
    let (answered, answers) = mpsc::channel();
    let deadline_ns = monotonic_now_ns() + TIMEOUT.as_nanos() as u64;
    let mut ids = HashSet::new();
    for n in 0..REQUESTS {
        let (count, seed) = (100 + n, 1000 + u64::from(n));
        let answered = answered.clone();
        let id = client
            .publish(count, seed, deadline_ns, move |result| {
                answered.send((count, seed, result)).unwrap();
            })
            .unwrap();
        assert!(ids.insert(id), "id {id} given twice");
    }
    for _ in 0..REQUESTS {
        let (count, seed, result) = answers.recv_timeout(2 * TIMEOUT).unwrap();
        let publication = result.unwrap();
        assert_eq!(publication.handle().len, count);
        assert_eq!(
            redeem(&client, publication.handle()),
            payload(count, seed),
            "request ({count}, {seed}) got another request's publication"
        );
        publication.redeemed();
    }
    assert_eq!(
        gate.peak(),
        REQUESTS as usize,
        "the connection's requests were not served side by side"
    );
    assert_eq!(served.slots().free, 64);
}

#[test]
fn a_publication_dropped_unredeemed_is_withdrawn() {
    let served = Served::new("dropped", 4, limits(2, 3));
    let client = served.connect();
    let publication = client.publish_blocking(100, 1, TIMEOUT).unwrap();
    assert_eq!(served.slots().ready, 1);
    drop(publication);
    wait_until("the dropped publication withdrawn", TIMEOUT, || {
        served.producer.stats().withdrawn == 1 && served.slots().free == 4
    });
    // The connection stays up, and the slot serves the next request.
    assert!(client.is_open());
    let next = client.publish_blocking(100, 2, TIMEOUT).unwrap();
    assert_eq!(redeem(&client, next.handle()), payload(100, 2));
    next.redeemed();
}

#[test]
fn busy_limits_answer_typed_refusals_until_a_publication_comes_back() {
    let served = Served::new("busy", 8, limits(2, 3));
    let (one, other) = (served.connect(), served.connect());
    let mut held = vec![
        one.publish_blocking(10, 1, TIMEOUT).unwrap(),
        one.publish_blocking(10, 2, TIMEOUT).unwrap(),
    ];
    let busy = refusal_of(one.publish_blocking(10, 3, TIMEOUT));
    assert_eq!(
        busy,
        Refusal {
            code: RefusalCode::PeerBusy,
            detail: 2
        }
    );

    // The other peer is under its own limit, but the segment's counts every peer.
    held.push(other.publish_blocking(10, 4, TIMEOUT).unwrap());
    let busy = refusal_of(other.publish_blocking(10, 5, TIMEOUT));
    assert_eq!(
        busy,
        Refusal {
            code: RefusalCode::SegmentBusy,
            detail: 3
        }
    );
    // Refusals take no slot.
    assert_eq!(served.slots().ready, 3);
    assert_eq!(served.slots().free, 5);

    // One publication back, and the other peer is served again.
    drop(held.remove(0));
    wait_until("a publication withdrawn", TIMEOUT, || {
        served.slots().ready == 2
    });
    let served_again = other.publish_blocking(10, 6, TIMEOUT).unwrap();
    assert_eq!(redeem(&other, served_again.handle()), payload(10, 6));
    served_again.redeemed();
}

#[test]
fn a_deadline_already_passed_is_refused_without_taking_a_slot() {
    let served = Served::new("deadline", 4, limits(2, 3));
    let client = served.connect();
    let (answered, answer) = mpsc::sync_channel(1);
    client
        .publish(100, 1, monotonic_now_ns(), move |result| {
            answered.send(result).unwrap();
        })
        .unwrap();
    let refusal = refusal_of(answer.recv_timeout(TIMEOUT).unwrap());
    assert_eq!(
        refusal,
        Refusal {
            code: RefusalCode::DeadlineExceeded,
            detail: 0
        }
    );
    assert_eq!(served.slots().free, 4);
    assert!(client.is_open());
}

/// A same-uid process speaking the frames by hand: the greeting, then whatever it sends.
struct RawPeer(std::os::fd::OwnedFd);

impl RawPeer {
    /// Connects and reads the greeting. No buffer is offered for the descriptor it carries, so
    /// the kernel closes that instead of installing it here.
    fn connect(socket_name: &str) -> Self {
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        let timeout = TimeVal::new(TIMEOUT.as_secs() as _, 0);
        setsockopt(&fd, ReceiveTimeout, &timeout).unwrap();
        let addr = UnixAddr::new_abstract(socket_name.as_bytes()).unwrap();
        connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr).unwrap();
        let peer = Self(fd);
        let greeting = peer.receive().expect("a greeting");
        assert!(greeting.starts_with(b"SHMB"), "{greeting:02x?}");
        peer
    }

    fn send(&self, frame: &[u8]) {
        send(self.raw(), frame, MsgFlags::MSG_NOSIGNAL).unwrap();
    }

    /// Sends `frame` with `fd` attached, which no request may carry.
    fn send_with_fd(&self, frame: &[u8], fd: std::os::fd::RawFd) {
        nix::sys::socket::sendmsg::<()>(
            self.raw(),
            &[std::io::IoSlice::new(frame)],
            &[nix::sys::socket::ControlMessage::ScmRights(&[fd])],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .unwrap();
    }

    /// The next message, or `None` once the producer closed the connection.
    fn receive(&self) -> Option<Vec<u8>> {
        let mut buf = [0u8; 128];
        match recv(self.raw(), &mut buf, MsgFlags::empty()) {
            Ok(0) | Err(nix::errno::Errno::ECONNRESET) => None,
            Ok(len) => Some(buf[..len].to_vec()),
            Err(errno) => panic!("receiving from the producer: {errno}"),
        }
    }

    fn raw(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.0)
    }
}

#[test]
fn a_garbage_frame_closes_only_its_connection_and_withdraws_what_it_held() {
    let served = Served::new("garbage", 8, limits(4, 6));
    let honest = served.connect();
    let before = honest.publish_blocking(100, 1, TIMEOUT).unwrap();
    assert_eq!(redeem(&honest, before.handle()), payload(100, 1));
    before.redeemed();

    let rogue = RawPeer::connect(served.server.socket_name());
    let deadline_ns = monotonic_now_ns() + TIMEOUT.as_nanos() as u64;
    for id in 1..=3 {
        rogue.send(
            &Request::Publish(PublishRequest {
                id,
                count: 50,
                seed: id,
                deadline_ns,
            })
            .encode(),
        );
        let answer = Answer::decode(&rogue.receive().expect("an answer")).unwrap();
        assert!(
            matches!(answer, Answer::Published { id: answered, .. } if answered == id),
            "{answer:?}"
        );
    }
    assert_eq!(served.slots().ready, 3);
    assert_eq!(served.server.peers(), 2);

    rogue.send(b"SHMC\x01\x01\0\0not a publish frame");
    assert_eq!(rogue.receive(), None, "the garbage connection stayed open");
    wait_until(
        "the garbage connection's publications withdrawn",
        TIMEOUT,
        || served.slots().ready == 0 && served.server.peers() == 1,
    );
    assert_eq!(served.producer.stats().withdrawn, 3);

    assert!(honest.is_open());
    let after = honest.publish_blocking(100, 2, TIMEOUT).unwrap();
    assert_eq!(redeem(&honest, after.handle()), payload(100, 2));
    after.redeemed();
}

/// Only a producer's published answer may carry a descriptor: a request with one is a protocol
/// error, and its connection is closed unanswered.
#[test]
fn a_request_carrying_a_descriptor_closes_its_connection() {
    let served = Served::new("request-fd", 4, limits(2, 3));
    let rogue = RawPeer::connect(served.server.socket_name());
    let request = Request::Publish(PublishRequest {
        id: 1,
        count: 50,
        seed: 1,
        deadline_ns: monotonic_now_ns() + TIMEOUT.as_nanos() as u64,
    });
    let (_read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    rogue.send_with_fd(
        &request.encode(),
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
    let served = Served::new("client-dropped", 8, limits(4, 6));
    let client = served.connect();
    let held: Vec<_> = (0..3)
        .map(|seed| client.publish_blocking(100, seed, TIMEOUT).unwrap())
        .collect();
    assert_eq!(served.slots().ready, 3);
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
    assert_eq!(served.slots().free, 8);
}

/// A client without a reader thread, driven the way an event loop would: answers arrive only
/// when the caller receives them, and the end of the connection fails what is still waiting.
#[test]
fn a_driven_client_receives_answers_when_asked_and_learns_of_the_close() {
    let served = Served::new("driven", 4, limits(2, 3));
    let (client, answers) =
        ControlClient::connect_driven(served.server.socket_name(), TIMEOUT, &[]).unwrap();
    let (answered, answer) = std::sync::mpsc::channel();
    let send_to = |answered: std::sync::mpsc::Sender<_>| {
        move |result: Result<shmbridge::control::Publication, RequestError>| {
            let _ = answered.send(result.map(|publication| publication.redeemed()));
        }
    };
    let deadline = monotonic_now_ns() + TIMEOUT.as_nanos() as u64;
    client
        .publish(700, 3, deadline, send_to(answered.clone()))
        .unwrap();
    let mut handle = None;
    wait_until("the answer", TIMEOUT, || {
        assert!(answers.receive_ready(), "the connection closed");
        handle = answer.try_recv().ok();
        handle.is_some()
    });
    let handle = handle.unwrap().unwrap();
    assert_eq!(redeem(&client, &handle), payload(700, 3));

    // Nothing is received unless asked: the answer to a second request waits on the socket.
    client
        .publish(10, 4, deadline, send_to(answered.clone()))
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
        client.publish(1, 1, deadline, send_to(answered)),
        Err(RequestError::Closed)
    ));
}
