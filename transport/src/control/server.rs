//! The producer's socket: a `SOCK_SEQPACKET` listener (abstract or a path) that greets every connection of
//! an allowed uid with the segment's descriptor ([`crate::fdpass`]) and then, when it serves a
//! channel, answers that connection's [frames](super::frame) until it closes.
//!
//! # Threads
//!
//! A connection's frames are read by that connection's own threads, each of which does the work
//! of the frame it read (making the payload, copying it into a slot) before reading another: no
//! hand-off to another thread between the socket and the work. The kernel gives each message to
//! one reader. When a thread takes a frame and leaves no other reading, it starts one more (up to
//! [`MAX_THREADS_PER_PEER`]), so a stalled publication never blocks the frames behind it; threads
//! stay for the connection's life, so a steady load starts none. With at most
//! [`ChannelOptions::max_peers`] connections, the threads are bounded too.
//!
//! # Ownership
//!
//! Every publication is recorded in its connection's [`PeerLedger`]. A release frame, or the
//! connection closing (the consumer exited, crashed or restarted), withdraws the ones not yet
//! redeemed at once, instead of leaving them to the TTL.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    Shutdown, SockFlag, accept4, getsockopt, setsockopt, shutdown,
    sockopt::{PeerCredentials, SendTimeout},
};

use crate::board::VersionBoard;
use crate::control::frame::{
    Answer, CONTROL_VERSION, MAX_INLINE_LEN, MAX_REQUEST_FRAME_LEN, MAX_REQUEST_LEN, ObjectVersion,
    Placement, Refusal, RefusalCode, Request, ResponseHead, other_version_id, oversized_publish_id,
};
use crate::control::ledger::{PeerLedger, PublicationLimits};
use crate::control::log_throttle::LogThrottle;
use crate::control::response::{Finished, Handler, ResponseWriter};
use crate::fdpass::{
    Listener, PeerView, ReceiveError, connect_within, receive_message, send_fd, send_message,
    timeval,
};
use crate::host::{ProcView, monotonic_now_ns};
use crate::producer::Producer;
use crate::segment::Segment;

/// How often at most a refused or failed connection is logged: any local process can cause
/// one, so logging each would let it flood the log.
const NOT_SERVED_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Threads one connection may have reading and publishing at once.
pub const MAX_THREADS_PER_PEER: u32 = 64;
/// How long dropping a [`ControlServer`] waits to connect to its own socket to wake its thread.
const WAKE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long an answer may wait for room in a consumer's socket before the connection is
/// dropped as unresponsive.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// Who may connect, and how much they may hold.
#[derive(Clone, Debug)]
pub struct ChannelOptions {
    /// Uids besides this process's own that may connect (`SO_PEERCRED`).
    pub allowed_uids: Vec<u32>,
    pub limits: PublicationLimits,
    /// Connections served at once; more are closed unanswered.
    pub max_peers: u32,
    /// Bodies up to this many bytes travel inline in the answer (at most [`MAX_INLINE_LEN`]);
    /// larger ones in a slot or sealed.
    pub inline_threshold: usize,
    /// The version board handlers name objects on ([`ResponseWriter::observe_object`]) and
    /// consumers may ask for; `None`: none, and a board request is refused.
    pub board: Option<Arc<VersionBoard>>,
}

/// Bodies up to this many bytes travel inline by default. Across processes, through the whole
/// gateway (`bash docs/inline-threshold.sh 5 3s`: wrk, one connection, medians of 5 rounds, the
/// two tiers side by side), inline/slot p50 was 0.82, 0.97 and 0.94 at 256 B, 1 KiB and 4 KiB,
/// then 1.11, 1.01, 1.07 and 1.17 from 8 KiB to 64 KiB: below 4 KiB the slot's claim, state
/// changes and release frame cost more than the two extra copies inline makes; above it the
/// copies cost more. In one process (`cargo bench -p shmbridge --bench tiers`) inline never
/// wins (1.04 up to 4 KiB), so its case there is only that it holds no slot.
pub const DEFAULT_INLINE_THRESHOLD: usize = 4 * 1024;

impl ChannelOptions {
    pub fn for_segment(segment: &Segment) -> Self {
        Self {
            allowed_uids: Vec::new(),
            limits: PublicationLimits::for_slots(segment.slot_count()),
            max_peers: 16,
            inline_threshold: DEFAULT_INLINE_THRESHOLD,
            board: None,
        }
    }
}

/// Serves a segment's descriptor, and a channel if it has one, from background threads until
/// dropped.
pub struct ControlServer {
    name: String,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    segment: Arc<Segment>,
    channel: Option<Channel>,
    allowed_uids: Vec<u32>,
    stop: AtomicBool,
    connections: Mutex<Vec<Weak<Connection>>>,
}

struct Channel {
    producer: Arc<Producer>,
    handler: Arc<dyn Handler>,
    limits: PublicationLimits,
    max_peers: u32,
    inline_threshold: usize,
    board: Option<Arc<VersionBoard>>,
}

impl ControlServer {
    /// Binds `socket_name` (abstract, or a path: [`crate::is_socket_path`]) and hands the descriptor to every connection of this uid, closing
    /// each after the greeting: no channel.
    pub fn spawn(segment: Arc<Segment>, socket_name: &str) -> io::Result<Self> {
        Self::start(segment, None, Vec::new(), socket_name)
    }

    /// Binds `socket_name`, greets every connection of an allowed uid with the descriptor of
    /// `producer`'s segment and answers its requests with `handler`.
    pub fn spawn_channel(
        producer: Arc<Producer>,
        handler: Arc<dyn Handler>,
        options: ChannelOptions,
        socket_name: &str,
    ) -> io::Result<Self> {
        let channel = Channel {
            producer: Arc::clone(&producer),
            handler,
            limits: options.limits,
            max_peers: options.max_peers,
            inline_threshold: options.inline_threshold.min(MAX_INLINE_LEN),
            board: options.board,
        };
        Self::start(
            Arc::clone(producer.segment()),
            Some(channel),
            options.allowed_uids,
            socket_name,
        )
    }

    fn start(
        segment: Arc<Segment>,
        channel: Option<Channel>,
        allowed_uids: Vec<u32>,
        socket_name: &str,
    ) -> io::Result<Self> {
        if segment.fd().is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "segment has no descriptor to serve",
            ));
        }
        let listener = Listener::bind(socket_name, !allowed_uids.is_empty())?;
        let shared = Arc::new(Shared {
            segment,
            channel,
            allowed_uids,
            stop: AtomicBool::new(false),
            connections: Mutex::default(),
        });
        let thread = std::thread::Builder::new()
            .name("shmbridge-control".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || accept_loop(&listener, &shared)
            })?;
        Ok(Self {
            name: socket_name.to_owned(),
            shared,
            thread: Some(thread),
        })
    }

    pub fn socket_name(&self) -> &str {
        &self.name
    }

    /// Connections open now.
    pub fn peers(&self) -> usize {
        self.shared.live_connections().len()
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        // Wake the blocking accept; if the connect fails the thread is already gone, or busy
        // accepting a full backlog, after which it sees `stop` anyway.
        let _ = connect_within(&self.name, Instant::now() + WAKE_TIMEOUT, WAKE_TIMEOUT);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Wakes every connection's readers; each finishes the frame it holds (its wait for a
        // slot is bounded by the frame's deadline), then exits.
        for connection in self.shared.live_connections() {
            connection.close();
        }
    }
}

impl Shared {
    fn live_connections(&self) -> Vec<Arc<Connection>> {
        let mut connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        connections.retain(|connection| connection.strong_count() > 0);
        connections.iter().filter_map(Weak::upgrade).collect()
    }

    /// Why a peer with these credentials gets no greeting, if it does not.
    fn refusal(&self, uid: u32) -> Option<String> {
        let own = nix::unistd::geteuid().as_raw();
        if uid != own && !self.allowed_uids.contains(&uid) {
            return Some(format!(
                "peer uid {uid} is neither {own} nor an allowed uid"
            ));
        }
        let channel = self.channel.as_ref()?;
        let peers = self.live_connections().len();
        (peers >= channel.max_peers as usize)
            .then(|| format!("already serving {peers} peers, the most allowed"))
    }
}

fn accept_loop(listener: &Listener, shared: &Arc<Shared>) {
    let mut not_served = LogThrottle::new(NOT_SERVED_LOG_INTERVAL);
    loop {
        let accepted = accept4(listener.as_fd().as_raw_fd(), SockFlag::SOCK_CLOEXEC);
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let stream = match accepted {
            // SAFETY: accept4 just returned this descriptor; nothing else owns it.
            Ok(fd) => unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) },
            Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
            Err(errno) => {
                tracing::warn!(%errno, "control socket accept failed");
                // Out of descriptors or memory: give the process a moment rather than spin.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if let Err(error) = greet(stream, shared)
            && let Some(occurrences) = not_served.occurred(Instant::now())
        {
            // `error` is the latest one's; `occurrences` counts it and those not logged before.
            tracing::warn!(%error, occurrences, "peer not served");
        }
    }
}

/// Checks the peer, sends the greeting with the descriptor and, with a channel, starts serving
/// the connection.
fn greet(stream: OwnedFd, shared: &Arc<Shared>) -> io::Result<()> {
    let peer = getsockopt(&stream, PeerCredentials)?;
    if let Some(reason) = shared.refusal(peer.uid()) {
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, reason));
    }
    setsockopt(&stream, SendTimeout, &timeval(ANSWER_TIMEOUT))?;
    let view = PeerView::of_peer(peer.pid());
    if view.proc == ProcView::Absent {
        tracing::debug!(
            pid = view.pid,
            "peer invisible here: told so, it may attach read-only only"
        );
    }
    let fd = shared.segment.fd().expect("checked in start");
    send_fd(stream.as_fd(), fd, &view)?;
    let Some(channel) = &shared.channel else {
        return Ok(());
    };
    let connection = Arc::new(Connection {
        stream,
        peer_pid: peer.pid(),
        ledger: PeerLedger::new(channel.limits),
        shared: Arc::clone(shared),
        idle: AtomicU32::new(0),
        threads: AtomicU32::new(0),
        closed: AtomicBool::new(false),
    });
    shared
        .connections
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Arc::downgrade(&connection));
    tracing::debug!(pid = peer.pid(), "control channel opened");
    connection.add_thread()
}

/// One consumer's connection and what it holds.
struct Connection {
    stream: OwnedFd,
    peer_pid: i32,
    ledger: PeerLedger,
    shared: Arc<Shared>,
    /// Threads waiting for the next frame.
    idle: AtomicU32,
    threads: AtomicU32,
    closed: AtomicBool,
}

impl Connection {
    fn channel(&self) -> &Channel {
        self.shared
            .channel
            .as_ref()
            .expect("connections exist only with a channel")
    }

    /// Starts one more thread reading this connection, unless it has the most allowed.
    fn add_thread(self: &Arc<Self>) -> io::Result<()> {
        if self.threads.fetch_add(1, Ordering::AcqRel) >= MAX_THREADS_PER_PEER {
            self.threads.fetch_sub(1, Ordering::AcqRel);
            return Ok(());
        }
        let connection = Arc::clone(self);
        std::thread::Builder::new()
            .name("shmbridge-channel".into())
            .spawn(move || connection.serve())
            .map(drop)
            .inspect_err(|_| {
                self.threads.fetch_sub(1, Ordering::AcqRel);
            })
    }

    fn serve(self: Arc<Self>) {
        // One byte more than the longest frame, so that a longer message shows as one.
        let mut buf = vec![0u8; MAX_REQUEST_FRAME_LEN + 1];
        loop {
            self.idle.fetch_add(1, Ordering::AcqRel);
            let received = receive_message(self.stream.as_fd(), &mut buf, false);
            let idle = self.idle.fetch_sub(1, Ordering::AcqRel) - 1;
            let len = match received {
                Ok((0, _)) => break,
                Ok((len, None)) => len,
                Ok((_, Some(_))) | Err(ReceiveError::Truncated | ReceiveError::TooMany { .. }) => {
                    tracing::warn!(
                        pid = self.peer_pid,
                        "a request carried a descriptor; closing the connection"
                    );
                    break;
                }
                Err(ReceiveError::Sys(Errno::EINTR)) => continue,
                Err(ReceiveError::Sys(errno)) => {
                    tracing::debug!(%errno, "control channel read failed");
                    break;
                }
            };
            if idle == 0
                && !self.closed.load(Ordering::Acquire)
                && let Err(error) = self.add_thread()
            {
                tracing::warn!(%error, "cannot start another channel thread");
            }
            if !self.answer(&buf[..len]) {
                break;
            }
        }
        self.close();
        self.threads.fetch_sub(1, Ordering::AcqRel);
    }

    /// Does what one received message asks; `false` when the connection is to close.
    fn answer(&self, message: &[u8]) -> bool {
        if message.len() > MAX_REQUEST_FRAME_LEN
            && let Some(id) = oversized_publish_id(message)
        {
            let refusal = Refusal::new(RefusalCode::RequestTooLarge, MAX_REQUEST_LEN as u64);
            return self.send(&Answer::Refused { id, refusal }, None);
        }
        if let Some(id) = other_version_id(message) {
            tracing::warn!(
                pid = self.peer_pid,
                found = message[4],
                "a frame of another control version; refusing it and closing the connection"
            );
            let refusal = Refusal::new(RefusalCode::Version, CONTROL_VERSION.into());
            self.send(&Answer::Refused { id, refusal }, None);
            return false;
        }
        let request = match Request::decode(message) {
            Ok(request) => request,
            Err(error) => {
                tracing::warn!(pid = self.peer_pid, %error, "bad control frame; closing the connection");
                return false;
            }
        };
        match request {
            Request::Publish {
                id,
                deadline_ns,
                request,
            } => {
                let (answer, sealed) = match self.publish(request, deadline_ns) {
                    Ok((head, object, Finished::Inline { body, crc })) => {
                        let placement = Placement::Inline { body: &body, crc };
                        let answer = Answer::Published {
                            id,
                            head,
                            placement,
                            object,
                        };
                        return self.send(&answer, None);
                    }
                    Ok((head, object, Finished::Slot(handle))) => {
                        let placement = Placement::Slot(handle);
                        (
                            Answer::Published {
                                id,
                                head,
                                placement,
                                object,
                            },
                            None,
                        )
                    }
                    Ok((head, object, Finished::Sealed(handle, payload))) => {
                        let placement = Placement::Sealed(handle);
                        (
                            Answer::Published {
                                id,
                                head,
                                placement,
                                object,
                            },
                            Some(payload),
                        )
                    }
                    Err(refusal) => (Answer::Refused { id, refusal }, None),
                };
                // This process's reference to a sealed payload goes after the answer (a cache may
                // keep its own); the consumer's descriptor keeps the bytes.
                self.send(&answer, sealed.as_ref().map(AsFd::as_fd))
            }
            Request::Release {
                slot, generation, ..
            } => {
                self.ledger
                    .release(&self.channel().producer, slot, generation);
                true
            }
            Request::Board { id } => self.hand_board(id),
        }
    }

    /// Answers a board request: the board's read-only descriptor, or why there is none.
    fn hand_board(&self, id: u64) -> bool {
        let Some(board) = &self.channel().board else {
            let refusal = Refusal::new(RefusalCode::NoBoard, 0);
            return self.send(&Answer::Refused { id, refusal }, None);
        };
        match board.share() {
            Ok(fd) => {
                let answer = Answer::Board {
                    id,
                    epoch: board.epoch(),
                    entry_count: board.entry_count(),
                };
                self.send(&answer, Some(fd.as_fd()))
            }
            Err(error) => {
                tracing::warn!(%error, "the version board could not be shared");
                let refusal = Refusal::new(RefusalCode::Internal, 0);
                self.send(&Answer::Refused { id, refusal }, None)
            }
        }
    }

    fn send(&self, answer: &Answer<'_>, fd: Option<std::os::fd::BorrowedFd<'_>>) -> bool {
        match send_message(self.stream.as_fd(), &answer.encode(), fd) {
            Ok(()) => true,
            Err(error) => {
                tracing::debug!(%error, "answer not delivered; closing the connection");
                false
            }
        }
    }

    /// Runs the handler for `request` and publishes what it wrote, within the peer's limits.
    fn publish(
        &self,
        request: &[u8],
        deadline_ns: u64,
    ) -> Result<(ResponseHead, Option<ObjectVersion>, Finished), Refusal> {
        let left = deadline_ns.saturating_sub(monotonic_now_ns());
        if left == 0 {
            return Err(Refusal::new(RefusalCode::DeadlineExceeded, 0));
        }
        let deadline = Instant::now() + Duration::from_nanos(left);
        let channel = self.channel();
        let room = self.ledger.reserve(&channel.producer)?;
        let mut response = ResponseWriter::new(
            &channel.producer,
            self.ledger.sealed_peer(),
            channel.inline_threshold,
            deadline,
            channel.board.as_deref(),
        );
        // A panicking handler costs its request, not the connection's thread: the slot its
        // writer held is given back as the panic unwinds.
        let handled = std::panic::catch_unwind(AssertUnwindSafe(|| {
            channel.handler.handle(request, &mut response)
        }));
        let failed = match handled {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some("the handler panicked".to_owned()),
        };
        if let Some(error) = failed {
            // A refusal the writer recorded (too large, no room) says more than the error it
            // made the handler return.
            return Err(response.refusal().unwrap_or_else(|| {
                tracing::warn!(%error, "handler failed");
                Refusal::new(RefusalCode::HandlerFailed, 0)
            }));
        }
        let (head, object, finished) = response.finish()?;
        let handle = match &finished {
            Finished::Inline { .. } => return Ok((head, object, finished)),
            Finished::Slot(handle) | Finished::Sealed(handle, _) => *handle,
        };
        if !room.record(&channel.producer, &handle) {
            return Err(Refusal::new(RefusalCode::Internal, 0));
        }
        Ok((head, object, finished))
    }

    /// The peer is gone or misbehaved: withdraws its unredeemed publications and wakes every
    /// thread reading the connection. Once is enough; later calls do nothing.
    fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = shutdown(self.stream.as_raw_fd(), Shutdown::Both);
        let withdrawn = self.ledger.close(&self.channel().producer);
        tracing::debug!(
            pid = self.peer_pid,
            withdrawn,
            "control channel closed; its unredeemed publications withdrawn"
        );
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::fdpass::attach_via_socket;
    use crate::host::Owner;
    use crate::segment::SegmentConfig;

    /// The real server, and a peer in its own namespace: the view the server computes is the
    /// process itself, so the attach goes through.
    #[test]
    fn the_servers_view_of_a_peer_in_its_namespace_is_the_peer() {
        let own = Owner::current().unwrap();
        let view = PeerView::of_peer(own.pid as i32);
        assert_eq!(view.pid, own.pid);
        let ProcView::Visible(seen) = view.proc else {
            panic!("{view:?}");
        };
        assert!(own.same_process(&seen), "{seen:?} vs {own:?}");
        let segment = Arc::new(
            Segment::create(&SegmentConfig {
                slot_count: 1,
                slot_size: 64,
            })
            .unwrap(),
        );
        let name = format!(
            "shmbridge-unit-greeting-{}-{:016x}",
            own.pid,
            segment.epoch()
        );
        let _server = ControlServer::spawn(Arc::clone(&segment), &name).unwrap();
        let attached = attach_via_socket(&name, Duration::from_secs(5)).unwrap();
        assert_eq!(attached.epoch(), segment.epoch());
    }
}
