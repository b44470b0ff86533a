//! The consumer's end of the control channel: one connection to a producer's socket, attached
//! to the segment it handed over, with any number of publish requests in flight, each answer
//! matched to its request by id and delivered to the callback the request gave.
//!
//! Answers are received either by a reader thread of the client's own
//! ([`ControlClient::connect`]) or, for callers with an event loop, by the caller whenever the
//! socket is readable ([`ControlClient::connect_driven`] and [`AnswerReader`]: an async gateway
//! saves a thread wake per answer that way). The callbacks run on whichever receives, so they must
//! be quick: a gateway's sends the answer to a waiting task and returns. A [`Publication`] that is dropped
//! unredeemed (its requester gave up, or never came) sends a release frame, so its slot comes
//! back at once rather than at the TTL; so does an answer that arrives after its requester gave
//! up ([`ControlClient::abandon`]).
//!
//! A sealed publication's answer carries the payload's descriptor (see "Descriptors" in
//! [`frame`](super::frame)); the [`Publication`] holds it until the caller takes it
//! ([`Publication::take_sealed`], [`Publication::redeem_sealed`]). Whatever breaks the rule of
//! one descriptor exactly with a sealed-size answer is a [`ProtocolError`]: the request it
//! answers fails with it, the connection closes, and every descriptor received is closed.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, Shutdown, send, shutdown};
use thiserror::Error;

use crate::consumer::Consumer;
use crate::control::frame::{Answer, FrameError, MAX_FRAME_LEN, PublishRequest, Refusal, Request};
use crate::error::{AttachError, RedeemError};
use crate::fdpass::{ReceiveError, greet, receive_message};
use crate::handle::Handle;
use crate::host::{monotonic_now_ns, nanos};
use crate::sealed::SealedBytes;
use crate::segment::Segment;

/// Why a request got no publication.
#[derive(Debug, Error)]
pub enum RequestError {
    #[error("the producer refused: {0}")]
    Refused(Refusal),
    #[error("the control channel is closed")]
    Closed,
    #[error("the control channel is congested: the producer is not reading its requests")]
    Congested,
    #[error("sending the request failed: {0}")]
    Send(#[source] io::Error),
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    #[error("the producer answered with a handle of segment {found:016x}, not {attached:016x}")]
    ForeignHandle { found: u64, attached: u64 },
    #[error("the producer broke the control protocol: {0}")]
    Protocol(#[from] ProtocolError),
}

/// How a producer's message broke the control protocol. The connection is closed after any of
/// these, and every descriptor that came with the message is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum ProtocolError {
    #[error("malformed frame: {0}")]
    Frame(#[from] FrameError),
    #[error("a message's descriptors did not fit the room for one (MSG_CTRUNC)")]
    DescriptorsTruncated,
    #[error("a message carried {count} descriptors, at most one is allowed")]
    TooManyDescriptors { count: usize },
    #[error(
        "a descriptor came with an answer that carries none (a refusal, or a publication of \
         {len} bytes, which fits the {slot_size}-byte slots)"
    )]
    UnexpectedDescriptor { len: u32, slot_size: u32 },
    #[error(
        "the sealed publication of {len} bytes (above the {slot_size}-byte slot size) came \
         without its descriptor"
    )]
    MissingDescriptor { len: u32, slot_size: u32 },
}

type Completion = Box<dyn FnOnce(Result<Publication, RequestError>) + Send>;

/// A connection to a producer's control channel.
pub struct ControlClient {
    inner: Arc<Inner>,
    reader: Option<JoinHandle<()>>,
}

struct Inner {
    socket: OwnedFd,
    segment: Arc<Segment>,
    pending: Mutex<HashMap<u64, Completion>>,
    next_id: AtomicU64,
    open: AtomicBool,
}

impl ControlClient {
    /// Connects to `@socket_name`, attaches to the segment it hands over after the checks of
    /// [`attach_via_socket`](crate::attach_via_socket) (`producer_uids` are trusted besides this
    /// process's own uid), and starts the reader thread. Connecting and attaching take at most
    /// `timeout`.
    pub fn connect(
        socket_name: &str,
        timeout: Duration,
        producer_uids: &[u32],
    ) -> Result<Self, AttachError> {
        let (mut client, reader) = Self::connect_driven(socket_name, timeout, producer_uids)?;
        let thread = std::thread::Builder::new()
            .name("shmbridge-answers".into())
            .spawn(move || reader.read_until_closed())
            .map_err(|source| AttachError::Io {
                op: "start the answer reader",
                source,
            })?;
        client.reader = Some(thread);
        Ok(client)
    }

    /// [`ControlClient::connect`] without a reader thread: the caller receives the answers by
    /// calling [`AnswerReader::receive_ready`] whenever the socket ([`AnswerReader::as_fd`]) is
    /// readable, until it reports the connection closed.
    pub fn connect_driven(
        socket_name: &str,
        timeout: Duration,
        producer_uids: &[u32],
    ) -> Result<(Self, AnswerReader), AttachError> {
        let (socket, segment) = greet(socket_name, timeout)?.attach(producer_uids)?;
        Ok(Self::over(socket, segment))
    }

    /// A client on `socket`, already greeted, attached to `segment`, and its reader.
    fn over(socket: OwnedFd, segment: Segment) -> (Self, AnswerReader) {
        let inner = Arc::new(Inner {
            socket,
            segment: Arc::new(segment),
            pending: Mutex::default(),
            next_id: AtomicU64::new(1),
            open: AtomicBool::new(true),
        });
        let reader = AnswerReader {
            inner: Arc::clone(&inner),
        };
        (
            Self {
                inner,
                reader: None,
            },
            reader,
        )
    }

    pub fn segment(&self) -> &Arc<Segment> {
        &self.inner.segment
    }

    /// Whether the connection is still up (the producer has not closed it or died).
    pub fn is_open(&self) -> bool {
        self.inner.open.load(Ordering::Acquire)
    }

    /// Asks for the payload of `count` users from `seed`, to be published before `deadline_ns`
    /// (`CLOCK_MONOTONIC`); `on_answer` gets the publication or why there is none, on the reader
    /// thread. Returns the request's id at once, or an error without calling `on_answer`. Never
    /// blocks: a full socket is [`RequestError::Congested`].
    pub fn publish(
        &self,
        count: u32,
        seed: u64,
        deadline_ns: u64,
        on_answer: impl FnOnce(Result<Publication, RequestError>) + Send + 'static,
    ) -> Result<u64, RequestError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut pending = self.inner.pending();
            if !self.is_open() {
                return Err(RequestError::Closed);
            }
            pending.insert(id, Box::new(on_answer));
        }
        let request = Request::Publish(PublishRequest {
            id,
            count,
            seed,
            deadline_ns,
        });
        self.inner.send(&request).inspect_err(|_| {
            self.inner.pending().remove(&id);
        })?;
        Ok(id)
    }

    /// The requester of `id` no longer waits: its callback is dropped uncalled, and a
    /// publication answered later is released.
    pub fn abandon(&self, id: u64) {
        self.inner.pending().remove(&id);
    }

    /// [`ControlClient::publish`], waiting at most `timeout` for the answer.
    pub fn publish_blocking(
        &self,
        count: u32,
        seed: u64,
        timeout: Duration,
    ) -> Result<Publication, RequestError> {
        let (answered, answer) = mpsc::sync_channel(1);
        let deadline_ns = monotonic_now_ns().saturating_add(nanos(timeout));
        let id = self.publish(count, seed, deadline_ns, move |result| {
            let _ = answered.send(result);
        })?;
        answer.recv_timeout(timeout).unwrap_or_else(|error| {
            self.abandon(id);
            Err(match error {
                mpsc::RecvTimeoutError::Timeout => RequestError::TimedOut(timeout),
                mpsc::RecvTimeoutError::Disconnected => RequestError::Closed,
            })
        })
    }
}

impl Drop for ControlClient {
    fn drop(&mut self) {
        let _ = shutdown(self.inner.socket.as_raw_fd(), Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Inner {
    fn pending(&self) -> MutexGuard<'_, HashMap<u64, Completion>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn send(&self, request: &Request) -> Result<(), RequestError> {
        let frame = request.encode();
        match send(
            self.socket.as_raw_fd(),
            &frame,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(_) => Ok(()),
            Err(Errno::EAGAIN) => Err(RequestError::Congested),
            Err(Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN) => Err(RequestError::Closed),
            Err(errno) => Err(RequestError::Send(errno.into())),
        }
    }

    /// Delivers one received message, and the descriptor that came with it, to its requester.
    /// `Err` when the message breaks the protocol, after which the connection is not to be
    /// trusted; the requester it answers, if it names one, gets the error too.
    fn deliver(self: &Arc<Self>, message: &[u8], fd: Option<OwnedFd>) -> Result<(), ProtocolError> {
        let answer = Answer::decode(message)?;
        let completion = self.pending().remove(&answer.id());
        let result = self.publication(answer, fd);
        let broken = match &result {
            Err(RequestError::Protocol(error)) => Some(*error),
            _ => None,
        };
        match completion {
            Some(completion) => completion(result),
            // Abandoned: dropping the publication releases it.
            None => drop(result),
        }
        broken.map_or(Ok(()), Err)
    }

    /// The connection is over: no more requests, and every one still waiting is told.
    fn close(&self) {
        let _ = shutdown(self.socket.as_raw_fd(), Shutdown::Both);
        let orphans: Vec<Completion> = {
            let mut pending = self.pending();
            self.open.store(false, Ordering::Release);
            pending.drain().map(|(_, completion)| completion).collect()
        };
        for completion in orphans {
            completion(Err(RequestError::Closed));
        }
    }

    /// The publication `answer` and `fd` make, checking that `fd` comes exactly with a
    /// sealed-size answer.
    fn publication(
        self: &Arc<Self>,
        answer: Answer,
        fd: Option<OwnedFd>,
    ) -> Result<Publication, RequestError> {
        let slot_size = self.segment.slot_size();
        match (answer, fd) {
            (Answer::Published { id, handle }, sealed) => {
                let len = handle.len;
                match (len > slot_size, &sealed) {
                    (true, None) => {
                        return Err(ProtocolError::MissingDescriptor { len, slot_size }.into());
                    }
                    (false, Some(_)) => {
                        return Err(ProtocolError::UnexpectedDescriptor { len, slot_size }.into());
                    }
                    _ => {}
                }
                let attached = self.segment.epoch();
                if handle.epoch != attached {
                    return Err(RequestError::ForeignHandle {
                        found: handle.epoch,
                        attached,
                    });
                }
                Ok(Publication {
                    id,
                    handle,
                    sealed,
                    channel: Some(Arc::clone(self)),
                })
            }
            (Answer::Refused { .. }, Some(_)) => {
                Err(ProtocolError::UnexpectedDescriptor { len: 0, slot_size }.into())
            }
            (Answer::Refused { refusal, .. }, None) => Err(RequestError::Refused(refusal)),
        }
    }
}

/// The receiving half of a [`ControlClient`] from [`ControlClient::connect_driven`].
pub struct AnswerReader {
    inner: Arc<Inner>,
}

impl AsFd for AnswerReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.socket.as_fd()
    }
}

/// The socket's descriptor, the same for the reader's whole life: the reader shares ownership of
/// the socket, which closes only when the client and the reader are both gone.
impl AsRawFd for AnswerReader {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.inner.socket.as_raw_fd()
    }
}

impl AnswerReader {
    /// Receives and delivers every answer waiting on the socket, without blocking. Returns
    /// `true` while the connection is open (nothing more to read now), `false` once it has
    /// closed or sent a malformed frame; every request still waiting has then been failed with
    /// [`RequestError::Closed`].
    pub fn receive_ready(&self) -> bool {
        self.receive(true)
    }

    /// Receives and delivers answers until the connection closes: the reader thread's loop.
    fn read_until_closed(self) {
        while self.receive(false) {}
    }

    /// Receives answers until one would block (`nonblocking`: `true`) or, blocking, one answer
    /// (`true`), or until the connection is over (`false`, after closing it).
    fn receive(&self, nonblocking: bool) -> bool {
        let mut buf = [0u8; MAX_FRAME_LEN + 1];
        loop {
            let (len, fd) = match receive_message(self.inner.socket.as_fd(), &mut buf, nonblocking)
            {
                Ok((0, _)) => break,
                Ok(message) => message,
                Err(ReceiveError::Sys(Errno::EINTR)) => continue,
                Err(ReceiveError::Sys(Errno::EAGAIN)) => return true,
                Err(ReceiveError::Sys(errno)) => {
                    tracing::debug!(%errno, "control channel read failed");
                    break;
                }
                Err(ReceiveError::Truncated) => {
                    let error = ProtocolError::DescriptorsTruncated;
                    tracing::warn!(%error, "closing the control channel");
                    break;
                }
                Err(ReceiveError::TooMany { count }) => {
                    let error = ProtocolError::TooManyDescriptors { count };
                    tracing::warn!(%error, "closing the control channel");
                    break;
                }
            };
            if let Err(error) = self.inner.deliver(&buf[..len], fd) {
                tracing::warn!(%error, "closing the control channel");
                break;
            }
            if !nonblocking {
                return true;
            }
        }
        self.inner.close();
        false
    }
}

/// A publication made for this client and not yet redeemed. Dropping it without
/// [`Publication::redeemed`] or [`Publication::redeem_sealed`] tells the producer to take it
/// back.
pub struct Publication {
    id: u64,
    handle: Handle,
    /// The payload's descriptor, for a sealed publication, until taken.
    sealed: Option<OwnedFd>,
    channel: Option<Arc<Inner>>,
}

impl Publication {
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Whether this is a sealed publication (its handle's length is above the slot size, and
    /// its payload came as a descriptor).
    pub fn is_sealed(&self) -> bool {
        self.sealed.is_some()
    }

    /// The sealed payload's descriptor, once (for [`Consumer::redeem_sealed`]); `None` for a
    /// publication in a slot, or when already taken. The publication is still released on drop
    /// unless marked [`Publication::redeemed`].
    pub fn take_sealed(&mut self) -> Option<OwnedFd> {
        self.sealed.take()
    }

    /// Redeems a sealed publication with `consumer` ([`Consumer::redeem_sealed`]). Whatever the
    /// outcome the ticket is spent (released, or never held), so nothing is sent on drop.
    /// Without a descriptor (a publication in a slot, or one already taken) this is
    /// [`RedeemError::NotSealed`] and the publication is released instead.
    pub fn redeem_sealed(mut self, consumer: &Consumer) -> Result<SealedBytes, RedeemError> {
        let Some(fd) = self.sealed.take() else {
            return Err(RedeemError::NotSealed {
                len: self.handle.len,
                slot_size: consumer.segment().slot_size(),
            });
        };
        self.channel = None;
        consumer.redeem_sealed(&self.handle, fd)
    }

    /// The handle was redeemed (or its slot acquired): nothing to release.
    pub fn redeemed(mut self) -> Handle {
        self.channel = None;
        self.handle
    }
}

impl std::fmt::Debug for Publication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publication")
            .field("id", &self.id)
            .field("handle", &self.handle)
            .field("sealed", &self.sealed.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for Publication {
    fn drop(&mut self) {
        if let Some(channel) = self.channel.take() {
            // Best effort: if it cannot be sent, the TTL takes the slot back.
            let _ = channel.send(&Request::Release {
                id: self.id,
                slot: self.handle.slot,
                generation: self.handle.generation,
            });
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::os::fd::AsFd;

    use nix::sys::socket::{
        AddressFamily, ControlMessage, SockFlag, SockType, recv, sendmsg, socketpair,
    };

    use super::*;
    use crate::control::frame::RefusalCode;
    use crate::fdpass::send_message;
    use crate::sealed::SealedPayload;
    use crate::segment::SegmentConfig;

    const SLOT_SIZE: u32 = 64;

    /// A client over one end of a socket pair, driven by hand; the other end plays the producer.
    struct Rig {
        producer: OwnedFd,
        client: ControlClient,
        reader: AnswerReader,
    }

    type Answers = mpsc::Receiver<Result<Publication, RequestError>>;

    fn result(answers: &Answers) -> Result<Publication, RequestError> {
        answers.try_recv().expect("the requester was answered")
    }

    impl Rig {
        fn new() -> Self {
            let (producer, consumer) = socketpair(
                AddressFamily::Unix,
                SockType::SeqPacket,
                None,
                SockFlag::SOCK_CLOEXEC,
            )
            .unwrap();
            let segment = Segment::create(&SegmentConfig {
                slot_count: 2,
                slot_size: SLOT_SIZE,
            })
            .unwrap();
            let (client, reader) = ControlClient::over(consumer, segment);
            Self {
                producer,
                client,
                reader,
            }
        }

        /// Sends a publish request; returns its id, as the producer reads it, and where its
        /// answer goes.
        fn request(&self) -> (u64, Answers) {
            let (answered, answers) = mpsc::channel();
            self.client
                .publish(1, 1, u64::MAX, move |result| {
                    let _ = answered.send(result);
                })
                .unwrap();
            let frame = self.next_request().expect("a publish frame");
            let Request::Publish(request) = frame else {
                panic!("{frame:?}")
            };
            (request.id, answers)
        }

        fn next_request(&self) -> Option<Request> {
            let mut buf = [0u8; MAX_FRAME_LEN + 1];
            let len = recv(self.producer.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT).ok()?;
            Some(Request::decode(&buf[..len]).unwrap())
        }

        fn handle(&self, len: u32) -> Handle {
            Handle {
                epoch: self.client.segment().epoch(),
                slot: 1,
                generation: 7,
                len,
                crc: 0,
            }
        }

        fn answer(&self, answer: Answer, fds: &[BorrowedFd<'_>]) {
            let raw: Vec<_> = fds.iter().map(AsRawFd::as_raw_fd).collect();
            let rights = [ControlMessage::ScmRights(&raw)];
            let cmsgs = if raw.is_empty() { &[][..] } else { &rights[..] };
            sendmsg::<()>(
                self.producer.as_raw_fd(),
                &[std::io::IoSlice::new(&answer.encode())],
                cmsgs,
                MsgFlags::empty(),
                None,
            )
            .unwrap();
        }
    }

    /// A pipe whose write end is sent: once every copy of it is closed, the read end reads
    /// end-of-file, which shows the receiver closed the copy it got; while one is open, it
    /// reads EAGAIN (non-blocking), so a leak fails the test instead of hanging it.
    fn pipe() -> (OwnedFd, OwnedFd) {
        use nix::fcntl::OFlag;
        nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).unwrap()
    }

    fn closed_everywhere(read_end: &OwnedFd) -> bool {
        let mut byte = [0u8; 1];
        nix::unistd::read(read_end, &mut byte) == Ok(0)
    }

    fn protocol_error(result: Result<Publication, RequestError>) -> ProtocolError {
        match result {
            Err(RequestError::Protocol(error)) => error,
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    #[test]
    fn a_sealed_answer_hands_out_its_descriptor_and_releases_unless_redeemed() {
        let rig = Rig::new();
        let (id, answers) = rig.request();
        let payload = SealedPayload::from_bytes(&[1; 100]).unwrap();
        let handle = rig.handle(100);
        rig.answer(Answer::Published { id, handle }, &[payload.as_fd()]);
        assert!(rig.reader.receive_ready());
        let mut publication = result(&answers).unwrap();
        assert!(publication.is_sealed());
        let fd = publication.take_sealed().expect("the descriptor");
        assert!(publication.take_sealed().is_none(), "handed out once");
        let seen = nix::sys::stat::fstat(&fd).unwrap().st_ino;
        assert_eq!(seen, nix::sys::stat::fstat(payload.as_fd()).unwrap().st_ino);
        drop(publication);
        assert_eq!(
            rig.next_request(),
            Some(Request::Release {
                id,
                slot: 1,
                generation: 7
            })
        );
        assert!(rig.client.is_open());
    }

    #[test]
    fn a_sealed_size_answer_without_its_descriptor_fails_and_closes() {
        let rig = Rig::new();
        let (id, answers) = rig.request();
        let (_, waiting) = rig.request();
        rig.answer(
            Answer::Published {
                id,
                handle: rig.handle(SLOT_SIZE + 1),
            },
            &[],
        );
        assert!(!rig.reader.receive_ready(), "the connection stayed open");
        assert!(!rig.client.is_open());
        // The requester it answered learns why; the waiting one that the connection closed.
        assert_eq!(
            protocol_error(result(&answers)),
            ProtocolError::MissingDescriptor {
                len: SLOT_SIZE + 1,
                slot_size: SLOT_SIZE
            }
        );
        assert!(matches!(result(&waiting), Err(RequestError::Closed)));
    }

    #[test]
    fn a_descriptor_on_a_slot_sized_answer_or_a_refusal_fails_closed() {
        let candidates = |rig: &Rig, id| {
            [
                Answer::Published {
                    id,
                    handle: rig.handle(SLOT_SIZE),
                },
                Answer::Refused {
                    id,
                    refusal: Refusal {
                        code: RefusalCode::Exhausted,
                        detail: 0,
                    },
                },
            ]
        };
        for index in 0..2 {
            let rig = Rig::new();
            let (id, answers) = rig.request();
            let (read_end, write_end) = pipe();
            let answer = candidates(&rig, id)[index];
            rig.answer(answer, &[write_end.as_fd()]);
            drop(write_end);
            assert!(!rig.reader.receive_ready(), "{answer:?}: still open");
            assert!(matches!(
                protocol_error(result(&answers)),
                ProtocolError::UnexpectedDescriptor { .. }
            ));
            assert!(closed_everywhere(&read_end), "{answer:?}: descriptor kept");
        }
    }

    #[test]
    fn more_descriptors_than_one_close_the_connection_and_every_descriptor() {
        // Two fit the room for one (the control buffer is rounded up), three do not.
        for count in [2, 3] {
            let rig = Rig::new();
            let (id, answers) = rig.request();
            let (read_end, write_end) = pipe();
            let fds = vec![write_end.as_fd(); count];
            let payload = SealedPayload::from_bytes(&[1; 100]).unwrap();
            let mut fds = fds;
            fds[0] = payload.as_fd();
            rig.answer(
                Answer::Published {
                    id,
                    handle: rig.handle(100),
                },
                &fds,
            );
            drop(write_end);
            assert!(
                !rig.reader.receive_ready(),
                "{count} descriptors: still open"
            );
            assert!(matches!(result(&answers), Err(RequestError::Closed)));
            assert!(
                closed_everywhere(&read_end),
                "{count} descriptors: one kept"
            );
        }
    }

    #[test]
    fn a_sealed_answer_for_an_abandoned_request_is_released_and_its_descriptor_closed() {
        let rig = Rig::new();
        let (id, _) = rig.request();
        rig.client.abandon(id);
        let (read_end, write_end) = pipe();
        // Not a sealed payload, but nothing looks at it before the abandoned answer is dropped.
        send_message(
            rig.producer.as_fd(),
            &Answer::Published {
                id,
                handle: rig.handle(SLOT_SIZE * 2),
            }
            .encode(),
            Some(write_end.as_fd()),
        )
        .unwrap();
        drop(write_end);
        assert!(rig.reader.receive_ready());
        assert!(closed_everywhere(&read_end));
        assert!(matches!(rig.next_request(), Some(Request::Release { .. })));
    }
}
