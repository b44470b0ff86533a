//! The rogue peer's side of the socket exchanges: a hand-made connection that reads the greeting
//! and sends what it likes ([`RawPeer`]), a consumer that publishes until refused ([`Hog`]), and
//! the watch over a closed hog's publications ([`Withdrawal`]). Blocking: call them off the
//! async workers.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, connect, recv, send, setsockopt, socket,
    sockopt::{ReceiveTimeout, SendTimeout},
};
use nix::sys::time::TimeVal;
use serde::{Deserialize, Serialize};
use shmbridge::control::frame::{MAX_ANSWER_FRAME_LEN, Request};
use shmbridge::control::{
    ClientOptions, ControlClient, Publication, Refusal, RefusalCode, RequestError,
};
use shmbridge::{Segment, SlotState, monotonic_now_ns};
use shmbridge_server::dataset::{DEFAULT_COUNT, DEFAULT_SEED};
use shmbridge_server::query::UsersQuery;

use super::super::channel::{self, ask};
use super::super::class::ATTACH_TIMEOUT;
use super::super::error::InjectError;
use super::CLOSE_TIMEOUT;
use crate::segment::SegmentError;

/// How long one publish request of a hog may wait for its answer.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes in the greeting that precedes the channel (`shmbridge::fdpass`).
const GREETING_LEN: usize = 40;
const GREETING_MAGIC: &[u8] = b"SHMB";

/// The request a gateway sends for the load's payload: `GET /users?count=708&seed=28` in the
/// HTTP convention of the channel's opaque request bytes (`shmbridge::http`). Its answer is a
/// 256,873-byte body, which travels in a slot.
pub(super) fn users_request() -> Vec<u8> {
    let target = format!(
        "/users?{}",
        UsersQuery {
            count: DEFAULT_COUNT,
            seed: DEFAULT_SEED,
        }
        .to_query_string()
    );
    channel::get(&target)
}

/// A version-2 publish frame as the gateway sends one, for the load's payload, due within a
/// second.
pub(super) fn publish_frame() -> Vec<u8> {
    Request::Publish {
        id: 1,
        deadline_ns: monotonic_now_ns() + 1_000_000_000,
        request: &users_request(),
    }
    .encode()
}

/// Bytes in [`publish_frame`]: its 32 fixed bytes and the request.
pub fn publish_len() -> usize {
    publish_frame().len()
}

/// A connection to the producer's socket made by hand, as a process that is no gateway has one.
pub struct RawPeer {
    socket: OwnedFd,
}

impl RawPeer {
    /// Connects to `@socket_name` and reads the greeting, within `timeout` each. The greeting's
    /// descriptor is left to the kernel, which closes it: this peer never maps the segment.
    pub fn greeted(socket_name: &str, timeout: Duration) -> Result<RawPeer, InjectError> {
        let io_error = |what: &'static str| move |errno: Errno| InjectError::io(what, errno);
        let addr = UnixAddr::new_abstract(socket_name.as_bytes())
            .map_err(io_error("name the control socket"))?;
        let socket = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(io_error("create a socket"))?;
        // The send timeout also bounds a connect waiting for room in a full backlog.
        setsockopt(&socket, SendTimeout, &timeval(timeout))
            .map_err(io_error("set the send timeout"))?;
        setsockopt(&socket, ReceiveTimeout, &timeval(timeout))
            .map_err(io_error("set the receive timeout"))?;
        connect(socket.as_raw_fd(), &addr)
            .map_err(io_error("connect to users-service's control socket"))?;
        let peer = RawPeer { socket };
        let mut greeting = [0u8; GREETING_LEN + 1];
        let len = peer
            .receive(&mut greeting)
            .map_err(|error| InjectError::io("read the greeting", error))?;
        if len != GREETING_LEN || !greeting.starts_with(GREETING_MAGIC) {
            return Err(InjectError::io(
                "read the greeting",
                io::Error::other(format!("got {len} bytes that are no greeting")),
            ));
        }
        Ok(peer)
    }

    /// Sends `frame` as one message.
    pub fn send(&self, frame: &[u8]) -> Result<(), InjectError> {
        send(self.socket.as_raw_fd(), frame, MsgFlags::MSG_NOSIGNAL)
            .map(drop)
            .map_err(|errno| InjectError::io("send the frame", errno))
    }

    /// Waits up to `timeout` for the other end to close the connection.
    pub fn wait_closed(&self, timeout: Duration) -> Result<Closure, InjectError> {
        setsockopt(&self.socket, ReceiveTimeout, &timeval(timeout))
            .map_err(|errno| InjectError::io("set the receive timeout", errno))?;
        let started = Instant::now();
        let mut buf = vec![0u8; MAX_ANSWER_FRAME_LEN + 1];
        Ok(match self.receive(&mut buf) {
            Ok(0) => Closure::Closed {
                after: started.elapsed(),
            },
            Ok(len) => Closure::Answered { len },
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Closure::StillOpen,
            Err(error) if error.kind() == io::ErrorKind::ConnectionReset => Closure::Closed {
                after: started.elapsed(),
            },
            Err(error) => return Err(InjectError::io("wait for the connection to close", error)),
        })
    }

    fn receive(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match recv(self.socket.as_raw_fd(), buf, MsgFlags::empty()) {
                Err(Errno::EINTR) => continue,
                received => return received.map_err(io::Error::from),
            }
        }
    }
}

/// `SO_RCVTIMEO`/`SO_SNDTIMEO` value; at least 1 ms, since zero would mean "forever".
fn timeval(timeout: Duration) -> TimeVal {
    let timeout = timeout.max(Duration::from_millis(1));
    TimeVal::new(
        timeout.as_secs().try_into().unwrap_or(i64::MAX),
        timeout.subsec_micros().into(),
    )
}

/// What became of a connection that sent a malformed frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closure {
    /// The producer closed it, `after` the frame was sent.
    Closed { after: Duration },
    /// The producer answered with a message of `len` bytes instead.
    Answered { len: usize },
    /// Still open at the timeout.
    StillOpen,
}

impl Closure {
    pub(super) fn judge(self) -> (String, Option<String>) {
        match self {
            Closure::Closed { after } => (
                format!(
                    "connection closed by users-service: yes, after {:.1} ms",
                    after.as_secs_f64() * 1e3
                ),
                None,
            ),
            Closure::Answered { len } => (
                format!("connection closed by users-service: no, it answered {len} bytes"),
                Some(format!(
                    "users-service answered a malformed control frame ({len} bytes) instead of closing the connection"
                )),
            ),
            Closure::StillOpen => (
                "connection closed by users-service: no".to_owned(),
                Some(format!(
                    "users-service kept a connection open {CLOSE_TIMEOUT:?} after it sent a malformed control frame"
                )),
            ),
        }
    }
}

/// Connects, reads the greeting, sends `frame` and waits up to `timeout` for the producer to
/// close the connection.
pub fn send_garbage(
    socket_name: &str,
    frame: &[u8],
    timeout: Duration,
) -> Result<Closure, InjectError> {
    let peer = RawPeer::greeted(socket_name, ATTACH_TIMEOUT)?;
    peer.send(frame)?;
    peer.wait_closed(timeout)
}

/// Connects, reads the greeting, sends the first `len` bytes of a publish frame and closes at
/// once; then checks that a new connection is still greeted within `timeout`, and returns how
/// long that took, or why it was not.
pub fn send_truncated(
    socket_name: &str,
    len: usize,
    timeout: Duration,
) -> Result<Result<Duration, String>, InjectError> {
    let peer = RawPeer::greeted(socket_name, ATTACH_TIMEOUT)?;
    peer.send(&publish_frame()[..len])?;
    drop(peer);
    let started = Instant::now();
    Ok(RawPeer::greeted(socket_name, timeout)
        .map(|_| started.elapsed())
        .map_err(|error| error.to_string()))
}
/// How a hog's publishing ended.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "end", rename_all = "kebab-case")]
pub enum HogEnd {
    /// Refused as a peer at its limit (the refusal's `detail`).
    PeerBusy { limit: u64 },
    /// Refused because the segment holds its limit of unredeemed publications.
    SegmentBusy { limit: u64 },
    /// Refused because no room came free before the deadline: no slot, or (for a sealed
    /// payload) no room under the sealed bytes in flight or the hog's share of them.
    Exhausted,
    /// Refused for another reason.
    OtherRefusal { refusal: String },
    /// Answered with a status other than 200 (e.g. a 503 while users-service is busy) instead
    /// of a body: published, but nothing a hog holds on to.
    Answered { status: u16 },
    /// The request failed without a refusal (channel closed, no answer in time...).
    Failed { error: String },
    /// Took more publications than the segment has slots and was never refused.
    NeverRefused,
}

impl HogEnd {
    fn of(error: RequestError) -> HogEnd {
        match error {
            RequestError::Refused(Refusal {
                code: RefusalCode::PeerBusy,
                detail,
            }) => HogEnd::PeerBusy { limit: detail },
            RequestError::Refused(Refusal {
                code: RefusalCode::SegmentBusy,
                detail,
            }) => HogEnd::SegmentBusy { limit: detail },
            RequestError::Refused(Refusal {
                code: RefusalCode::Exhausted,
                ..
            }) => HogEnd::Exhausted,
            RequestError::Refused(refusal) => HogEnd::OtherRefusal {
                refusal: refusal.to_string(),
            },
            error => HogEnd::Failed {
                error: error.to_string(),
            },
        }
    }
}

/// What a hog took, as the `rogue-hog` child reports it on one JSON line.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct HogReport {
    /// (slot, generation) of every publication taken and never redeemed.
    pub held: Vec<(u32, u64)>,
    pub end: HogEnd,
}

/// A consumer that publishes until refused and redeems nothing.
pub struct Hog {
    /// Declared before the publications so that it closes first: dropping an unredeemed
    /// [`Publication`] sends a release frame, which must fail on the closed connection, so that
    /// the producer learns of the hog's publications only from the connection closing.
    client: ControlClient,
    /// Held, not redeemed and not dropped, until the hog is.
    publications: Vec<Publication>,
    held: Vec<(u32, u64)>,
    end: HogEnd,
}

impl Hog {
    /// Connects to `@socket_name` as a gateway does and publishes the load's payload (a slot's
    /// worth) until refused, or until it took one more publication than the segment has slots.
    pub fn take(socket_name: &str) -> Result<Hog, InjectError> {
        Hog::take_with(socket_name, &users_request())
    }

    /// [`Hog::take`], asking for `request` every time: a body above a slot makes the hog hold
    /// sealed payloads, until the producer refuses it [`HogEnd::Exhausted`] at its share of the
    /// sealed bytes. An answer other than 200 ends the taking too ([`HogEnd::Answered`]).
    pub fn take_with(socket_name: &str, request: &[u8]) -> Result<Hog, InjectError> {
        let options = ClientOptions {
            timeout: ATTACH_TIMEOUT,
            ..ClientOptions::default()
        };
        let client = ControlClient::connect(socket_name, &options).map_err(|source| {
            SegmentError::Attach {
                socket: socket_name.to_owned(),
                source,
            }
        })?;
        let most = client.segment().slot_count() as usize + 1;
        let mut publications = Vec::new();
        let mut held = Vec::new();
        let mut end = HogEnd::NeverRefused;
        while publications.len() < most {
            match ask(&client, request, PUBLISH_TIMEOUT) {
                Ok(publication) if publication.head().status() != 200 => {
                    end = HogEnd::Answered {
                        status: publication.head().status(),
                    };
                    break;
                }
                Ok(publication) => {
                    // An inline answer holds nothing: only handles are held.
                    if let Some(handle) = publication.handle() {
                        held.push((handle.slot, handle.generation));
                    }
                    publications.push(publication);
                }
                Err(error) => {
                    end = HogEnd::of(error);
                    break;
                }
            }
        }
        Ok(Hog {
            client,
            publications,
            held,
            end,
        })
    }

    /// The segment the hog attached to, which outlives its connection.
    pub fn segment(&self) -> &Arc<Segment> {
        self.client.segment()
    }

    /// Publications taken and held (inline ones included, which hold no slot).
    pub fn taken(&self) -> usize {
        self.publications.len()
    }

    /// Bytes of the bodies held, unredeemed.
    pub fn held_bytes(&self) -> u64 {
        self.publications.iter().map(Publication::len).sum()
    }

    pub fn report(&self) -> HogReport {
        HogReport {
            held: self.held.clone(),
            end: self.end.clone(),
        }
    }
}

/// What a hog's publications did once its connection closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Withdrawal {
    /// Still unredeemed when the connection closed (the rest the TTL took earlier).
    pub at_close: usize,
    /// How long until none was left; `None` if some still were at the timeout.
    pub after: Option<Duration>,
    /// Still unredeemed at the timeout.
    pub left: usize,
}

impl Withdrawal {
    /// How many of `held` still wait for their consumer in `segment`.
    pub fn unredeemed(segment: &Segment, held: &[(u32, u64)]) -> usize {
        held.iter()
            .filter(|&&(slot, generation)| {
                segment.inspect(slot).is_some_and(|view| {
                    view.state == Some(SlotState::Ready) && view.generation == generation
                })
            })
            .count()
    }

    /// Closes the hog's connection with `close` and watches `segment` until none of `held`
    /// waits for its consumer any more, for at most `timeout` from the close.
    pub fn close_and_wait(
        segment: &Segment,
        held: &[(u32, u64)],
        close: impl FnOnce(),
        timeout: Duration,
    ) -> Withdrawal {
        let at_close = Withdrawal::unredeemed(segment, held);
        let closed = Instant::now();
        close();
        loop {
            let left = Withdrawal::unredeemed(segment, held);
            if left == 0 {
                return Withdrawal {
                    at_close,
                    after: Some(closed.elapsed()),
                    left,
                };
            }
            if closed.elapsed() >= timeout {
                return Withdrawal {
                    at_close,
                    after: None,
                    left,
                };
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use nix::sys::socket::socketpair;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use shmbridge::control::frame::MAX_REQUEST_FRAME_LEN;
    use shmbridge::control::{
        ChannelOptions, ControlServer, HandlerError, PublicationLimits, ResponseWriter,
    };
    use shmbridge::{Producer, ProducerOptions, SegmentConfig};

    use super::super::{Garbage, judge_hog, judge_truncated};
    use super::*;

    fn pair() -> (RawPeer, OwnedFd) {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        (RawPeer { socket: ours }, theirs)
    }

    #[test]
    fn a_connection_left_open_or_answered_is_a_violation() {
        let (peer, other) = pair();
        // Nobody closes `other`: the wait ends at its timeout, however short.
        let open = peer.wait_closed(Duration::from_millis(20)).unwrap();
        assert_eq!(open, Closure::StillOpen);
        assert!(open.judge().1.unwrap().contains("kept a connection open"));
        send(other.as_raw_fd(), b"answer", MsgFlags::empty()).unwrap();
        let answered = peer.wait_closed(ATTACH_TIMEOUT).unwrap();
        assert_eq!(answered, Closure::Answered { len: 6 });
        assert!(answered.judge().1.unwrap().contains("answered"));
        drop(other);
        let closed = peer.wait_closed(ATTACH_TIMEOUT).unwrap();
        assert!(matches!(closed, Closure::Closed { .. }), "{closed:?}");
        assert_eq!(closed.judge().1, None);
    }

    /// Answers every request with three bytes, in a slot (no body travels inline: the
    /// threshold is 0), the way users-service publishes a body that fits a slot.
    fn three_bytes(_request: &[u8], response: &mut ResponseWriter<'_>) -> Result<(), HandlerError> {
        io::Write::write_all(response, b"abc")?;
        Ok(())
    }

    /// A producer serving a channel on a socket name of its own, as users-service does.
    fn serve(slots: u32, limits: PublicationLimits) -> (ControlServer, Arc<Producer>) {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let segment = Segment::create(&SegmentConfig {
            slot_count: slots,
            slot_size: 64,
        })
        .unwrap();
        let producer =
            Arc::new(Producer::new(Arc::new(segment), ProducerOptions::default()).unwrap());
        let name = format!(
            "shmbridge-chaos-rogue-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // Room for every connection a test here makes, so that a closed one whose server thread
        // has not noticed yet (a loaded machine) never has a new one refused at the peer limit,
        // which is not what these tests are about.
        let options = ChannelOptions {
            allowed_uids: Vec::new(),
            limits,
            max_peers: 64,
            inline_threshold: 0,
            board: None,
        };
        let server = ControlServer::spawn_channel(
            Arc::clone(&producer),
            Arc::new(three_bytes),
            options,
            &name,
        )
        .unwrap();
        (server, producer)
    }

    #[test]
    fn the_producer_closes_every_garbage_connection() {
        let (server, _producer) = serve(8, PublicationLimits::for_slots(8));
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut frames = vec![
            Garbage::WrongDirection,
            Garbage::WrongLength {
                len: publish_len() + 1,
            },
            Garbage::WrongLength {
                len: publish_len() - 1,
            },
            Garbage::WrongLength { len: 31 },
            Garbage::WrongLength { len: 16 },
            Garbage::WrongLength {
                len: MAX_REQUEST_FRAME_LEN,
            },
        ];
        frames.extend((0..12).map(|_| Garbage::draw(&mut rng)));
        for frame in frames {
            let closure = send_garbage(server.socket_name(), &frame.bytes(), ATTACH_TIMEOUT);
            assert!(
                matches!(closure, Ok(Closure::Closed { .. })),
                "{frame:?}: {closure:?}"
            );
        }
        // The same exchange with a valid frame is answered, which is what tells them apart: a
        // published answer of 72 bytes and a 4-byte head (no content type, no headers).
        let answered = send_garbage(server.socket_name(), &publish_frame(), ATTACH_TIMEOUT);
        assert!(
            matches!(answered, Ok(Closure::Answered { len: 76 })),
            "{answered:?}"
        );
    }

    #[test]
    fn a_truncated_frame_leaves_the_producer_greeting() {
        let (server, producer) = serve(8, PublicationLimits::for_slots(8));
        for len in [1, 15, 16, 31, 32, publish_len() - 1] {
            let probe = send_truncated(server.socket_name(), len, ATTACH_TIMEOUT).unwrap();
            assert!(probe.is_ok(), "{len}: {probe:?}");
            assert_eq!(judge_truncated(len, probe).1, None);
        }
        assert_eq!(
            producer.stats().slots.free,
            8,
            "a cut frame published nothing"
        );
    }

    #[test]
    fn a_hog_is_refused_at_its_peer_limit_and_withdrawn_when_it_closes() {
        let limits = PublicationLimits {
            per_peer: 4,
            segment: 6,
        };
        let (server, producer) = serve(8, limits);
        let hog = Hog::take(server.socket_name()).unwrap();
        let report = hog.report();
        assert_eq!(report.end, HogEnd::PeerBusy { limit: 4 });
        assert_eq!(report.held.len(), 4);
        assert_eq!(producer.stats().slots.free, 4, "held, not released");
        let segment = Arc::clone(hog.segment());
        let withdrawal =
            Withdrawal::close_and_wait(&segment, &report.held, || drop(hog), ATTACH_TIMEOUT);
        assert_eq!(withdrawal.at_close, 4);
        assert!(withdrawal.after.is_some(), "{withdrawal:?}");
        assert_eq!(judge_hog(&report, withdrawal).1, None);
        assert_eq!(producer.stats().slots.free, 8);
    }

    #[test]
    fn a_second_hog_meets_the_segment_limit() {
        let limits = PublicationLimits {
            per_peer: 4,
            segment: 6,
        };
        let (server, _producer) = serve(8, limits);
        let first = Hog::take(server.socket_name()).unwrap();
        let second = Hog::take(server.socket_name()).unwrap();
        assert_eq!(first.report().held.len(), 4);
        let report = second.report();
        assert_eq!(report.end, HogEnd::SegmentBusy { limit: 6 });
        assert_eq!(report.held.len(), 2);
    }

    #[test]
    fn a_producer_without_limits_leaves_the_hog_unrefused_by_busy() {
        let limits = PublicationLimits {
            per_peer: 100,
            segment: 100,
        };
        let (server, _producer) = serve(4, limits);
        let hog = Hog::take(server.socket_name()).unwrap();
        let report = hog.report();
        assert_eq!(report.held.len(), 4);
        // Its fifth request waits for a slot until its deadline and is refused exhausted: no
        // busy answer.
        assert_eq!(report.end, HogEnd::Exhausted);
        let segment = Arc::clone(hog.segment());
        let withdrawal =
            Withdrawal::close_and_wait(&segment, &report.held, || drop(hog), ATTACH_TIMEOUT);
        assert_eq!(withdrawal.left, 0);
        let violation = judge_hog(&report, withdrawal).1.unwrap();
        assert!(violation.contains("busy answer") || violation.contains("unrefused"));
    }
}
