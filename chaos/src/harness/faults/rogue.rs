//! Rogue-peer faults (`rogue-peer`): a same-uid process that is not the gateway connects to
//! users-service's control socket and misbehaves, while the gateway keeps its own connection
//! busy with the load. Each fault draws one misbehaviour:
//!
//! - `garbage`: read the greeting, send one frame that is not a request (random bytes, a valid
//!   publish header at a wrong length, a reserved byte set, an answer sent the wrong way); the
//!   producer must close the connection within [`CLOSE_TIMEOUT`].
//! - `truncated`: read the greeting, send the first bytes of a valid publish frame and close at
//!   once. A `SOCK_SEQPACKET` message is never split, so a frame cut short is how "dropped
//!   mid-frame" looks on this socket. users-service must go on greeting new connections.
//! - `hog`: connect as a consumer ([`ControlClient`]), publish until refused without redeeming
//!   anything, hold what was taken while the load runs, then close. The refusal must be the
//!   typed busy answer (`PeerBusy` exactly at the per-peer limit, or `SegmentBusy`), and the
//!   producer must withdraw every publication the moment the connection closes, within
//!   [`WITHDRAW_TIMEOUT`], long before the ready TTL.
//! - `hog-kill`: the same hog in a child process (this binary's hidden `rogue-hog`
//!   subcommand), SIGKILLed while it holds: the kernel closes its connection.
//!
//! The rogue is the harness process itself (or its child): same uid as the services, so it
//! passes the `SO_PEERCRED` check, exactly the peer the limits exist for. What each fault saw
//! goes into its note; a check that failed is the fault's violation.
//!
//! A hog's fault counts as "back" from the moment it holds its limit, not from its close: the
//! recovery time then measures how long the gateway went without a verified shm answer while the
//! hog held everything it could take, which the per-peer limit must keep short.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, connect, recv, send, setsockopt, socket,
    sockopt::{ReceiveTimeout, SendTimeout},
};
use nix::sys::time::TimeVal;
use nix::unistd::Pid;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use shmbridge::control::frame::MAX_FRAME_LEN;
use shmbridge::control::{Answer, PublishRequest, Refusal, RefusalCode, Request, RequestError};
use shmbridge::{ControlClient, Segment, SlotState, attach_via_socket_read_only, monotonic_now_ns};
use shmbridge_server::dataset::{DEFAULT_COUNT, DEFAULT_SEED};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::class::{ATTACH_TIMEOUT, Fault, FaultClass, FaultContext, Injected};
use super::error::{FaultError, InjectError};
use super::spec::DurationRange;
use crate::loadtest::load::endpoint::Endpoint;
use crate::process::role::Role;
use crate::segment::SegmentError;

/// How long users-service may take to close a connection that sent a malformed frame.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long users-service may take to withdraw a closed connection's unredeemed publications.
/// The transport's own test holds it to 100 ms on an idle machine; this allows for the load.
pub const WITHDRAW_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one publish request of a hog may wait for its answer.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a `rogue-hog` child may take to connect, hog and report.
const REPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a `rogue-hog` child lives if nobody kills it: far longer than any hold.
const HOG_LIFETIME: Duration = Duration::from_secs(60);
/// Bytes in the greeting that precedes the channel (`shmbridge::fdpass`).
const GREETING_LEN: usize = 40;
const GREETING_MAGIC: &[u8] = b"SHMB";
/// Bytes in a publish frame.
const PUBLISH_LEN: usize = 40;
/// Reserved bytes of a publish frame: in the common header and after `count`.
const PUBLISH_RESERVED: [usize; 6] = [6, 7, 20, 21, 22, 23];
/// The longest garbage frame: past the producer's receive buffer, so the kernel cuts it.
const MAX_GARBAGE_LEN: usize = MAX_FRAME_LEN + 16;

/// `[fault.rogue-peer]`: a same-uid process that is not the gateway misbehaving on the
/// control socket.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoguePeerSpec {
    pub count: u32,
    pub interval: DurationRange,
    /// How long a hog holds what it took before it closes or is killed.
    pub hold: DurationRange,
    /// The misbehaviours drawn from, each equally likely; all of them unless listed.
    #[serde(default = "RogueKind::all")]
    pub kinds: Vec<RogueKind>,
}

/// The misbehaviours a scenario may list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RogueKind {
    Garbage,
    Truncated,
    Hog,
    HogKill,
}

impl RogueKind {
    pub const ALL: [RogueKind; 4] = [
        RogueKind::Garbage,
        RogueKind::Truncated,
        RogueKind::Hog,
        RogueKind::HogKill,
    ];

    fn all() -> Vec<RogueKind> {
        RogueKind::ALL.to_vec()
    }
}

/// One planned misbehaviour.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "action", rename = "rogue-peer")]
pub struct RoguePeer {
    #[serde(flatten)]
    pub attack: Attack,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Attack {
    /// One malformed frame after the greeting.
    Garbage { frame: Garbage },
    /// The first `len` bytes of a publish frame, then the connection closed.
    Truncated { len: usize },
    /// Publish until refused, hold for `hold`, close.
    Hog {
        #[serde(serialize_with = "crate::loadtest::load::serialize_seconds")]
        hold: Duration,
    },
    /// Publish until refused in a child process, SIGKILLed after `hold`.
    HogKill {
        #[serde(serialize_with = "crate::loadtest::load::serialize_seconds")]
        hold: Duration,
    },
}

/// A frame the producer must refuse to read, and close the connection for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "shape", rename_all = "kebab-case")]
pub enum Garbage {
    /// `len` random bytes drawn from `seed` (never a valid frame).
    Random { len: usize, seed: u64 },
    /// A valid publish frame cut or zero-padded to `len` bytes.
    WrongLength { len: usize },
    /// A valid publish frame with the reserved byte at `offset` set to `value`.
    Reserved { offset: usize, value: u8 },
    /// A producer's answer, sent to the producer.
    WrongDirection,
}

impl Garbage {
    fn draw(rng: &mut ChaCha8Rng) -> Garbage {
        match rng.random_range(0..4) {
            0 => Garbage::Random {
                len: rng.random_range(1..=MAX_GARBAGE_LEN),
                seed: rng.random(),
            },
            1 => {
                let len = rng.random_range(16..MAX_GARBAGE_LEN);
                Garbage::WrongLength {
                    len: if len >= PUBLISH_LEN { len + 1 } else { len },
                }
            }
            2 => Garbage::Reserved {
                offset: PUBLISH_RESERVED[rng.random_range(0..PUBLISH_RESERVED.len())],
                value: rng.random_range(1..=u8::MAX),
            },
            _ => Garbage::WrongDirection,
        }
    }

    fn shape(&self) -> &'static str {
        match self {
            Garbage::Random { .. } => "random",
            Garbage::WrongLength { .. } => "wrong length",
            Garbage::Reserved { .. } => "reserved byte",
            Garbage::WrongDirection => "wrong direction",
        }
    }

    /// The bytes sent.
    pub fn bytes(&self) -> Vec<u8> {
        match *self {
            Garbage::Random { len, seed } => {
                let mut bytes = vec![0; len];
                ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut bytes);
                // Random bytes start with the magic once in 2^32 draws; never let them parse.
                if Request::decode(&bytes).is_ok() {
                    bytes[0] ^= 0xff;
                }
                bytes
            }
            Garbage::WrongLength { len } => {
                let mut bytes = publish_frame();
                bytes.resize(len, 0);
                bytes
            }
            Garbage::Reserved { offset, value } => {
                let mut bytes = publish_frame();
                bytes[offset] = value;
                bytes
            }
            Garbage::WrongDirection => Answer::Refused {
                id: 1,
                refusal: Refusal {
                    code: RefusalCode::Exhausted,
                    detail: 0,
                },
            }
            .encode(),
        }
    }
}

/// A publish frame as the gateway sends one, for the load's payload, due within a second.
fn publish_frame() -> Vec<u8> {
    Request::Publish(PublishRequest {
        id: 1,
        count: DEFAULT_COUNT,
        seed: DEFAULT_SEED,
        deadline_ns: monotonic_now_ns() + 1_000_000_000,
    })
    .encode()
}

impl FaultClass for RoguePeerSpec {
    const NAME: &'static str = "rogue-peer";
    type Action = RoguePeer;

    fn count(&self) -> u32 {
        self.count
    }

    fn count_mut(&mut self) -> &mut u32 {
        &mut self.count
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.kinds.is_empty() {
            return Err(("fault.kinds", "must list at least one kind".into()));
        }
        Ok(())
    }

    fn draw(&self, rng: &mut ChaCha8Rng) -> (DurationRange, RoguePeer) {
        let attack = match self.kinds[rng.random_range(0..self.kinds.len())] {
            RogueKind::Garbage => Attack::Garbage {
                frame: Garbage::draw(rng),
            },
            RogueKind::Truncated => Attack::Truncated {
                len: rng.random_range(1..PUBLISH_LEN),
            },
            RogueKind::Hog => Attack::Hog {
                hold: self.hold.sample(rng),
            },
            RogueKind::HogKill => Attack::HogKill {
                hold: self.hold.sample(rng),
            },
        };
        (self.interval, RoguePeer { attack })
    }
}

impl Fault for RoguePeer {
    fn role(&self) -> Role {
        Role::UsersService
    }

    /// Only the shm route asks users-service over the control channel.
    fn affects(&self, endpoint: Endpoint) -> bool {
        endpoint.uses_shm()
    }

    fn label(&self) -> String {
        match &self.attack {
            Attack::Garbage { frame } => format!("rogue peer: garbage frame ({})", frame.shape()),
            Attack::Truncated { .. } => "rogue peer: truncated frame".to_owned(),
            Attack::Hog { .. } => "rogue peer: hog, closed".to_owned(),
            Attack::HogKill { .. } => "rogue peer: hog, SIGKILLed".to_owned(),
        }
    }

    async fn inject(&self, context: &mut FaultContext<'_>) -> Result<Injected, FaultError> {
        let socket = context.segment_socket().await?;
        match &self.attack {
            Attack::Garbage { frame } => {
                let bytes = frame.bytes();
                let closure = blocking("garbage", move || {
                    send_garbage(&socket, &bytes, CLOSE_TIMEOUT)
                })
                .await?;
                Ok(judged(closure.judge()))
            }
            &Attack::Truncated { len } => {
                let probe = blocking("truncated", move || {
                    send_truncated(&socket, len, CLOSE_TIMEOUT)
                })
                .await?;
                Ok(judged(judge_truncated(len, probe)))
            }
            &Attack::Hog { hold } => {
                let hog = blocking("hog", move || Hog::take(&socket)).await?;
                let holding = tokio::time::Instant::now();
                context
                    .supervisor
                    .watch(hold.min(context.remaining()), None)
                    .await?;
                let report = hog.report();
                let segment = Arc::clone(hog.client.segment());
                let held = report.held.clone();
                let withdrawal = blocking("hog close", move || {
                    Ok(Withdrawal::close_and_wait(
                        &segment,
                        &held,
                        || drop(hog),
                        WITHDRAW_TIMEOUT,
                    ))
                })
                .await?;
                Ok(hog_injected(&report, withdrawal, holding))
            }
            &Attack::HogKill { hold } => {
                let program = context.supervisor.program().to_owned();
                hog_kill(&program, &socket, hold.min(context.remaining()), context).await
            }
        }
    }
}

/// Runs a blocking socket exchange off the async workers.
async fn blocking<T: Send + 'static>(
    task: &'static str,
    work: impl FnOnce() -> Result<T, InjectError> + Send + 'static,
) -> Result<T, InjectError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|source| InjectError::Task { task, source })?
}

/// A note and maybe a violation, for a fault whose service never went away.
fn judged((note, violation): (String, Option<String>)) -> Injected {
    Injected {
        note: Some(note),
        violation,
        ..Injected::back_now()
    }
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
        let mut buf = [0u8; MAX_FRAME_LEN + 1];
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
    fn judge(self) -> (String, Option<String>) {
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

fn judge_truncated(len: usize, probe: Result<Duration, String>) -> (String, Option<String>) {
    let sent = format!("sent {len} of {PUBLISH_LEN} bytes of a publish frame, closed");
    match probe {
        Ok(after) => (
            format!(
                "{sent}; a new connection was greeted after {:.1} ms",
                after.as_secs_f64() * 1e3
            ),
            None,
        ),
        Err(error) => (
            format!("{sent}; a new connection was not greeted"),
            Some(format!(
                "users-service stopped greeting new connections after a truncated frame: {error}"
            )),
        ),
    }
}

/// How a hog's publishing ended.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "end", rename_all = "kebab-case")]
pub enum HogEnd {
    /// Refused as a peer at its limit (the refusal's `detail`).
    PeerBusy { limit: u64 },
    /// Refused because the segment holds its limit of unredeemed publications.
    SegmentBusy { limit: u64 },
    /// Refused for another reason.
    OtherRefusal { refusal: String },
    /// The request failed without a refusal (channel closed, no answer in time...).
    Failed { error: String },
    /// Took more publications than the segment has slots and was never refused.
    NeverRefused,
}

impl HogEnd {
    fn of(result: Result<(), RequestError>) -> HogEnd {
        match result {
            Ok(()) => HogEnd::NeverRefused,
            Err(RequestError::Refused(Refusal {
                code: RefusalCode::PeerBusy,
                detail,
            })) => HogEnd::PeerBusy { limit: detail },
            Err(RequestError::Refused(Refusal {
                code: RefusalCode::SegmentBusy,
                detail,
            })) => HogEnd::SegmentBusy { limit: detail },
            Err(RequestError::Refused(refusal)) => HogEnd::OtherRefusal {
                refusal: refusal.to_string(),
            },
            Err(error) => HogEnd::Failed {
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
    client: ControlClient,
    held: Vec<(u32, u64)>,
    end: HogEnd,
}

impl Hog {
    /// Connects to `@socket_name` as a gateway does and publishes the load's payload until
    /// refused, or until it took one more publication than the segment has slots.
    pub fn take(socket_name: &str) -> Result<Hog, InjectError> {
        let client =
            ControlClient::connect(socket_name, ATTACH_TIMEOUT, &[]).map_err(|source| {
                SegmentError::Attach {
                    socket: socket_name.to_owned(),
                    source,
                }
            })?;
        let most = client.segment().slot_count() as usize + 1;
        let mut held = Vec::new();
        let mut result = Ok(());
        while held.len() < most {
            match client.publish_blocking(DEFAULT_COUNT, DEFAULT_SEED, PUBLISH_TIMEOUT) {
                // Marked redeemed so that dropping it sends no release frame: the producer
                // must learn of it only from the connection closing.
                Ok(publication) => {
                    let handle = publication.redeemed();
                    held.push((handle.slot, handle.generation));
                }
                Err(error) => {
                    result = Err(error);
                    break;
                }
            }
        }
        Ok(Hog {
            client,
            held,
            end: HogEnd::of(result),
        })
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

/// The note and violation of a hog fault: the refusal must be the typed busy answer at the
/// limit, and every publication must be withdrawn once the connection closed.
pub fn judge_hog(report: &HogReport, withdrawal: Withdrawal) -> (String, Option<String>) {
    let taken = report.held.len();
    let mut violations = Vec::new();
    let refusal = match &report.end {
        HogEnd::PeerBusy { limit } => {
            if taken as u64 != *limit {
                violations.push(format!(
                    "refused as peer-busy after {taken} publications, but its limit is {limit}"
                ));
            }
            format!("refused peer-busy (limit {limit})")
        }
        HogEnd::SegmentBusy { limit } => format!("refused segment-busy (limit {limit})"),
        HogEnd::OtherRefusal { refusal } => {
            violations.push(format!(
                "the hog was refused with {refusal:?}, not a busy answer"
            ));
            format!("refused: {refusal}")
        }
        HogEnd::Failed { error } => {
            violations.push(format!("the hog's request failed unrefused: {error}"));
            format!("failed: {error}")
        }
        HogEnd::NeverRefused => {
            violations.push(format!(
                "the hog took {taken} publications, more than the segment has slots, and was never refused"
            ));
            "never refused".to_owned()
        }
    };
    let withdrawn = match withdrawal.after {
        Some(after) => format!(
            "{} withdrawn {:.1} ms after the close",
            withdrawal.at_close,
            after.as_secs_f64() * 1e3
        ),
        None => {
            violations.push(format!(
                "{} of the hog's {} publications still waited {WITHDRAW_TIMEOUT:?} after its connection closed",
                withdrawal.left, withdrawal.at_close
            ));
            format!(
                "{} of {} not withdrawn",
                withdrawal.left, withdrawal.at_close
            )
        }
    };
    let expired = taken - withdrawal.at_close.min(taken);
    let expired = if expired > 0 {
        format!(" ({expired} gone before the close)")
    } else {
        String::new()
    };
    (
        format!("took {taken} publications, {refusal}; {withdrawn}{expired}"),
        (!violations.is_empty()).then(|| violations.join("; ")),
    )
}

/// A hog fault's record: back from the moment it held its limit (see the module doc).
fn hog_injected(
    report: &HogReport,
    withdrawal: Withdrawal,
    holding: tokio::time::Instant,
) -> Injected {
    let (note, violation) = judge_hog(report, withdrawal);
    Injected {
        back: Some(holding),
        note: Some(note),
        violation,
    }
}

/// Starts a `rogue-hog` child, lets it hold for `hold`, SIGKILLs it and watches its
/// publications be withdrawn.
async fn hog_kill(
    program: &Path,
    socket: &str,
    hold: Duration,
    context: &mut FaultContext<'_>,
) -> Result<Injected, FaultError> {
    let segment = attach_via_socket_read_only(socket, ATTACH_TIMEOUT)
        .map_err(|source| SegmentError::Attach {
            socket: socket.to_owned(),
            source,
        })
        .map_err(InjectError::from)?;
    let mut child = Command::new(program)
        .args(["rogue-hog", "--socket", socket])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| InjectError::io("start the rogue-hog child", error))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let line = tokio::time::timeout(REPORT_TIMEOUT, BufReader::new(stdout).lines().next_line())
        .await
        .map_err(|_| InjectError::io("read the rogue-hog's report", io::ErrorKind::TimedOut))?
        .map_err(|error| InjectError::io("read the rogue-hog's report", error))?
        .ok_or_else(|| {
            InjectError::io(
                "read the rogue-hog's report",
                io::Error::other("it exited without one"),
            )
        })?;
    let report: HogReport = serde_json::from_str(&line)
        .map_err(|error| InjectError::io(format!("read the rogue-hog's report {line:?}"), error))?;
    let holding = tokio::time::Instant::now();
    context.supervisor.watch(hold, None).await?;
    let held = report.held.clone();
    // SIGKILL, then reap: the kernel closes the child's connection as it dies. The blocking
    // task must not reap it while the harness's runtime does, so it only sends the signal.
    let pid = child.id().map(|pid| Pid::from_raw(pid as i32));
    let withdrawal = blocking("hog-kill withdrawal", move || {
        Ok(Withdrawal::close_and_wait(
            &segment,
            &held,
            || {
                if let Some(pid) = pid {
                    let _ = kill(pid, Signal::SIGKILL);
                }
            },
            WITHDRAW_TIMEOUT,
        ))
    })
    .await?;
    child
        .wait()
        .await
        .map_err(|error| InjectError::io("reap the rogue-hog", error))?;
    Ok(hog_injected(&report, withdrawal, holding))
}

/// The hidden `rogue-hog` subcommand: a hog in a process of its own, to be SIGKILLed.
#[derive(clap::Args, Debug)]
pub struct RogueHogArgs {
    /// Abstract socket serving the segment and its control channel.
    #[arg(long)]
    pub socket: String,
}

/// Takes what it can, prints its [`HogReport`] as one JSON line, and holds it until killed
/// (or [`HOG_LIFETIME`] passed).
pub async fn rogue_hog(args: RogueHogArgs) -> anyhow::Result<()> {
    let hog = tokio::task::spawn_blocking(move || Hog::take(&args.socket)).await??;
    println!("{}", serde_json::to_string(&hog.report())?);
    tokio::time::sleep(HOG_LIFETIME).await;
    drop(hog);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use nix::sys::socket::socketpair;
    use shmbridge::control::{ChannelOptions, ControlServer, PublicationLimits, Publisher};
    use shmbridge::{Handle, Producer, ProducerOptions, SegmentConfig};

    use super::*;
    use crate::harness::faults::{FaultAction, FaultSpec};
    use crate::harness::schedule::plan;

    fn spec(kinds: Vec<RogueKind>) -> RoguePeerSpec {
        RoguePeerSpec {
            count: 200,
            interval: "200ms..1s".parse().unwrap(),
            hold: "200ms..2s".parse().unwrap(),
            kinds,
        }
    }

    fn attacks(spec: RoguePeerSpec, seed: u64) -> Vec<Attack> {
        plan(&FaultSpec::RoguePeer(spec), seed)
            .into_iter()
            .map(|fault| match fault.action {
                FaultAction::RoguePeer(rogue) => rogue.attack,
                other => panic!("unexpected action {other:?}"),
            })
            .collect()
    }

    #[test]
    fn draws_cover_every_kind_and_shape_within_their_ranges() {
        let drawn = attacks(spec(RogueKind::all()), 3);
        assert_eq!(
            drawn,
            attacks(spec(RogueKind::all()), 3),
            "same seed, same plan"
        );
        assert_ne!(drawn, attacks(spec(RogueKind::all()), 4));
        let hold = spec(Vec::new()).hold;
        let mut shapes = Vec::new();
        let mut kinds = Vec::new();
        for attack in &drawn {
            match attack {
                Attack::Garbage { frame } => {
                    shapes.push(frame.shape());
                    kinds.push(RogueKind::Garbage);
                }
                Attack::Truncated { len } => {
                    assert!((1..PUBLISH_LEN).contains(len), "{len}");
                    kinds.push(RogueKind::Truncated);
                }
                Attack::Hog { hold: held } | Attack::HogKill { hold: held } => {
                    assert!((hold.min..=hold.max).contains(held), "{held:?}");
                    kinds.push(if matches!(attack, Attack::Hog { .. }) {
                        RogueKind::Hog
                    } else {
                        RogueKind::HogKill
                    });
                }
            }
        }
        for kind in RogueKind::ALL {
            assert!(kinds.contains(&kind), "{kind:?} never drawn");
        }
        for shape in ["random", "wrong length", "reserved byte", "wrong direction"] {
            assert!(shapes.contains(&shape), "{shape} never drawn");
        }
        let only_hogs = attacks(spec(vec![RogueKind::Hog]), 3);
        assert!(
            only_hogs
                .iter()
                .all(|attack| matches!(attack, Attack::Hog { .. }))
        );
    }

    #[test]
    fn no_kinds_is_refused() {
        assert_eq!(spec(Vec::new()).validate().unwrap_err().0, "fault.kinds");
        assert!(spec(vec![RogueKind::Garbage]).validate().is_ok());
    }

    #[test]
    fn every_garbage_frame_is_malformed() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for _ in 0..2000 {
            let frame = Garbage::draw(&mut rng);
            let bytes = frame.bytes();
            assert!(Request::decode(&bytes).is_err(), "{frame:?} parses");
            if let Garbage::WrongLength { len } = frame {
                assert_ne!(len, PUBLISH_LEN);
                assert!((16..=MAX_GARBAGE_LEN).contains(&len));
            }
        }
        // The bytes a random frame's seed names are the ones sent, every time.
        let random = Garbage::Random { len: 30, seed: 5 };
        assert_eq!(random.bytes(), random.bytes());
        // Even random bytes that happen to form a valid frame are broken before sending.
        let valid = publish_frame();
        assert!(Request::decode(&valid).is_ok());
        assert!(PUBLISH_RESERVED.iter().all(|&offset| valid[offset] == 0));
    }

    #[test]
    fn actions_serialize_with_what_they_send() {
        let json = |attack: Attack| serde_json::to_value(RoguePeer { attack }).unwrap();
        assert_eq!(
            json(Attack::Garbage {
                frame: Garbage::Reserved {
                    offset: 21,
                    value: 7
                }
            }),
            serde_json::json!({
                "action": "rogue-peer",
                "kind": "garbage",
                "frame": {"shape": "reserved", "offset": 21, "value": 7},
            })
        );
        assert_eq!(
            json(Attack::Truncated { len: 12 }),
            serde_json::json!({"action": "rogue-peer", "kind": "truncated", "len": 12})
        );
        assert_eq!(
            json(Attack::HogKill {
                hold: Duration::from_millis(1250)
            }),
            serde_json::json!({"action": "rogue-peer", "kind": "hog-kill", "hold": 1.25})
        );
    }

    #[test]
    fn hog_reports_round_trip_as_one_json_line() {
        let report = HogReport {
            held: vec![(3, 8), (4, 2)],
            end: HogEnd::SegmentBusy { limit: 48 },
        };
        let line = serde_json::to_string(&report).unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<HogReport>(&line).unwrap(), report);
    }

    fn withdrawn(at_close: usize) -> Withdrawal {
        Withdrawal {
            at_close,
            after: Some(Duration::from_millis(3)),
            left: 0,
        }
    }

    fn report(taken: u32, end: HogEnd) -> HogReport {
        HogReport {
            held: (0..taken).map(|slot| (slot, 1)).collect(),
            end,
        }
    }

    #[test]
    fn a_hog_is_judged_by_its_refusal_and_its_withdrawal() {
        let (note, violation) = judge_hog(&report(4, HogEnd::PeerBusy { limit: 4 }), withdrawn(4));
        assert_eq!(violation, None, "{note}");
        assert!(
            note.contains("took 4 publications, refused peer-busy (limit 4)"),
            "{note}"
        );
        let (_, violation) = judge_hog(&report(3, HogEnd::SegmentBusy { limit: 6 }), withdrawn(3));
        assert_eq!(violation, None);
        let cases = [
            (
                report(5, HogEnd::PeerBusy { limit: 4 }),
                withdrawn(5),
                "its limit is 4",
            ),
            (
                report(9, HogEnd::NeverRefused),
                withdrawn(9),
                "never refused",
            ),
            (
                report(
                    2,
                    HogEnd::OtherRefusal {
                        refusal: "every slot is busy".into(),
                    },
                ),
                withdrawn(2),
                "not a busy answer",
            ),
            (
                report(
                    2,
                    HogEnd::Failed {
                        error: "closed".into(),
                    },
                ),
                withdrawn(2),
                "failed unrefused",
            ),
            (
                report(4, HogEnd::PeerBusy { limit: 4 }),
                Withdrawal {
                    at_close: 4,
                    after: None,
                    left: 1,
                },
                "1 of the hog's 4 publications still waited",
            ),
        ];
        for (report, withdrawal, expected) in cases {
            let (note, violation) = judge_hog(&report, withdrawal);
            let violation = violation.unwrap_or_else(|| panic!("no violation: {note}"));
            assert!(violation.contains(expected), "{violation}");
        }
    }

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

    /// Publishes three bytes, the way users-service publishes a body.
    struct ThreeBytes;

    impl Publisher for ThreeBytes {
        fn publish(
            &self,
            producer: &Producer,
            _: &PublishRequest,
            wait: Duration,
        ) -> Result<Handle, Refusal> {
            let refused = |code| Refusal { code, detail: 0 };
            let mut slot = producer
                .claim(3, wait)
                .map_err(|_| refused(RefusalCode::Exhausted))?;
            io::Write::write_all(&mut slot, b"abc").map_err(|_| refused(RefusalCode::Internal))?;
            slot.publish().map_err(|_| refused(RefusalCode::Internal))
        }
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
        let options = ChannelOptions {
            allowed_uids: Vec::new(),
            limits,
            max_peers: 8,
        };
        let server = ControlServer::spawn_channel(
            Arc::clone(&producer),
            Arc::new(ThreeBytes),
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
            Garbage::WrongLength { len: 41 },
            Garbage::WrongLength { len: 16 },
        ];
        frames.extend((0..12).map(|_| Garbage::draw(&mut rng)));
        for frame in frames {
            let closure = send_garbage(server.socket_name(), &frame.bytes(), ATTACH_TIMEOUT);
            assert!(
                matches!(closure, Ok(Closure::Closed { .. })),
                "{frame:?}: {closure:?}"
            );
        }
        // The same exchange with a valid frame is answered, which is what tells them apart.
        let answered = send_garbage(server.socket_name(), &publish_frame(), ATTACH_TIMEOUT);
        assert!(
            matches!(answered, Ok(Closure::Answered { len: 48 })),
            "{answered:?}"
        );
    }

    #[test]
    fn a_truncated_frame_leaves_the_producer_greeting() {
        let (server, producer) = serve(8, PublicationLimits::for_slots(8));
        for len in [1, 15, 16, 39] {
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
        let segment = Arc::clone(hog.client.segment());
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
        // Its fifth request waits for a slot until its deadline, which is also how long the
        // hog waits for the answer: refused or timed out, it is no busy answer.
        assert!(
            matches!(
                report.end,
                HogEnd::OtherRefusal { .. } | HogEnd::Failed { .. }
            ),
            "{report:?}"
        );
        let segment = Arc::clone(hog.client.segment());
        let withdrawal =
            Withdrawal::close_and_wait(&segment, &report.held, || drop(hog), ATTACH_TIMEOUT);
        assert_eq!(withdrawal.left, 0);
        let violation = judge_hog(&report, withdrawal).1.unwrap();
        assert!(violation.contains("busy answer") || violation.contains("unrefused"));
    }
}
