//! The consumer's end of the control channel: one connection to a producer's socket, attached
//! to the segment it handed over, with any number of requests in flight, each answer matched to
//! its request by id.
//!
//! [`ControlClient::request`] asks and waits for the verified [`Response`].
//! [`ControlClient::request_with`] asks without waiting: the callback gets the unredeemed
//! [`Publication`], which [`Publication::redeem`] turns into the response — the one place that
//! reads a body from whichever tier the producer chose. Answers are received either by a reader
//! thread of the client's own ([`ControlClient::connect`]) or, for callers with an event loop, by
//! the caller whenever the socket is readable ([`ControlClient::connect_driven`] and
//! [`AnswerReader`]: an async gateway saves a thread wake per answer that way). The callbacks run
//! on whichever receives, so they must be quick. A [`Publication`] dropped unredeemed (its
//! requester gave up, or never came) sends a release frame, so its slot comes back at once
//! rather than at the TTL; so does an answer that arrives after its requester gave up
//! ([`ControlClient::abandon`]).
//!
//! Whatever breaks the rules of "Tiers" and "Descriptors" in [`frame`](super::frame) is a
//! [`ProtocolError`]: the request it answers fails with it, the connection closes, and every
//! descriptor received is closed.

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

use crate::board::{BoardError, BoardView};
use crate::consumer::{Consumer, ConsumerOptions};
use crate::control::body::{Body, Response};
use crate::control::frame::{
    Answer, FrameError, MAX_ANSWER_FRAME_LEN, MAX_REQUEST_LEN, ObjectVersion, Placement, Refusal,
    Request, ResponseHead, Tier,
};
use crate::error::{AttachError, ReadError, RedeemError};
use crate::fdpass::{ReceiveError, greet, receive_message};
use crate::handle::Handle;
use crate::host::{monotonic_now_ns, nanos};
use crate::segment::Segment;

/// Why a request got no response.
#[derive(Debug, Error)]
pub enum RequestError {
    #[error("the producer refused: {0}")]
    Refused(Refusal),
    #[error("a request of {len} bytes is above the channel's bound of {MAX_REQUEST_LEN}")]
    RequestTooLarge { len: usize },
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
    #[error("the body did not verify: {0}")]
    Redeem(#[from] RedeemError),
    #[error("the producer's version board is not trusted: {0}")]
    Board(#[from] BoardError),
}

/// How a producer's message broke the control protocol. The connection is closed after any of
/// these, and every descriptor that came with the message is closed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ProtocolError {
    #[error("malformed frame: {0}")]
    Frame(#[from] FrameError),
    #[error("a message's descriptors did not fit the room for one (MSG_CTRUNC)")]
    DescriptorsTruncated,
    #[error("a message carried {count} descriptors, at most one is allowed")]
    TooManyDescriptors { count: usize },
    #[error(
        "a descriptor came with an answer that carries none (a refusal, an inline or slot body)"
    )]
    UnexpectedDescriptor,
    #[error("the sealed publication of {len} bytes came without its descriptor")]
    MissingDescriptor { len: u32 },
    #[error("a slot body of {len} bytes, but slots hold {slot_size}")]
    SlotTooLarge { len: u32, slot_size: u32 },
    #[error("the board answer came without its descriptor")]
    BoardWithoutDescriptor,
    #[error("an answer of another kind than its request (a board for a publish, or the reverse)")]
    AnswerMismatch,
}

type Completion = Box<dyn FnOnce(Result<Publication, RequestError>) + Send>;
type BoardCompletion = Box<dyn FnOnce(Result<BoardView, RequestError>) + Send>;

/// Who waits for the answer to a request id.
enum Waiter {
    Publication(Completion),
    Board(BoardCompletion),
}

impl Waiter {
    fn fail(self, error: RequestError) {
        match self {
            Waiter::Publication(completion) => completion(Err(error)),
            Waiter::Board(completion) => completion(Err(error)),
        }
    }
}

/// How a [`ControlClient`] connects.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The bound on connecting and attaching.
    pub timeout: Duration,
    /// Uids trusted to answer on the socket besides this process's own.
    pub producer_uids: Vec<u32>,
    /// How the client's consumer reads the segment.
    pub consumer: ConsumerOptions,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(1),
            producer_uids: Vec::new(),
            consumer: ConsumerOptions::default(),
        }
    }
}

/// A connection to a producer's control channel.
pub struct ControlClient {
    inner: Arc<Inner>,
    reader: Option<JoinHandle<()>>,
}

struct Inner {
    socket: OwnedFd,
    consumer: Consumer,
    pending: Mutex<HashMap<u64, Waiter>>,
    next_id: AtomicU64,
    open: AtomicBool,
}

impl ControlClient {
    /// Connects to `socket_name` (abstract, or a path: [`crate::is_socket_path`]), attaches to the segment it hands over after the checks of
    /// [`attach_via_socket`](crate::attach_via_socket), and starts the reader thread.
    pub fn connect(socket_name: &str, options: &ClientOptions) -> Result<Self, AttachError> {
        let (mut client, reader) = Self::connect_driven(socket_name, options)?;
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
        options: &ClientOptions,
    ) -> Result<(Self, AnswerReader), AttachError> {
        let (socket, segment) =
            greet(socket_name, options.timeout)?.attach(&options.producer_uids)?;
        let consumer = Consumer::new(Arc::new(segment), options.consumer).map_err(|source| {
            AttachError::Io {
                op: "start the consumer",
                source,
            }
        })?;
        Ok(Self::over(socket, consumer))
    }

    /// A client on `socket`, already greeted, reading with `consumer`, and its reader.
    fn over(socket: OwnedFd, consumer: Consumer) -> (Self, AnswerReader) {
        let inner = Arc::new(Inner {
            socket,
            consumer,
            pending: Mutex::default(),
            next_id: AtomicU64::new(1),
            open: AtomicBool::new(true),
        });
        let reader = AnswerReader {
            inner: Arc::clone(&inner),
            buf: Mutex::new(vec![0; MAX_ANSWER_FRAME_LEN + 1]),
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
        self.inner.consumer.segment()
    }

    /// The consumer that redeems this client's publications (its stats, its options).
    pub fn consumer(&self) -> &Consumer {
        &self.inner.consumer
    }

    /// Whether the connection is still up (the producer has not closed it or died).
    pub fn is_open(&self) -> bool {
        self.inner.open.load(Ordering::Acquire)
    }

    /// Sends `request` and waits at most `timeout` for its verified response.
    pub fn request(&self, request: &[u8], timeout: Duration) -> Result<Response, RequestError> {
        let (answered, answer) = mpsc::sync_channel(1);
        let deadline_ns = monotonic_now_ns().saturating_add(nanos(timeout));
        let id = self.request_with(request, deadline_ns, move |result| {
            let _ = answered.send(result);
        })?;
        let publication = answer.recv_timeout(timeout).unwrap_or_else(|error| {
            self.abandon(id);
            Err(match error {
                mpsc::RecvTimeoutError::Timeout => RequestError::TimedOut(timeout),
                mpsc::RecvTimeoutError::Disconnected => RequestError::Closed,
            })
        })?;
        Ok(publication.redeem()?)
    }

    /// Sends `request`, to be answered before `deadline_ns` (`CLOCK_MONOTONIC`); `on_answer`
    /// gets the publication or why there is none, on whichever thread receives. Returns the
    /// request's id at once, or an error without calling `on_answer`. Never blocks: a full
    /// socket is [`RequestError::Congested`].
    pub fn request_with(
        &self,
        request: &[u8],
        deadline_ns: u64,
        on_answer: impl FnOnce(Result<Publication, RequestError>) + Send + 'static,
    ) -> Result<u64, RequestError> {
        if request.len() > MAX_REQUEST_LEN {
            return Err(RequestError::RequestTooLarge { len: request.len() });
        }
        let waiter = Waiter::Publication(Box::new(on_answer));
        self.inner.ask(waiter, |id| Request::Publish {
            id,
            deadline_ns,
            request,
        })
    }

    /// Asks the producer for its version board and waits at most `timeout` for it, checked and
    /// mapped read-only. [`RefusalCode::NoBoard`](super::RefusalCode::NoBoard) when it has none.
    pub fn board(&self, timeout: Duration) -> Result<BoardView, RequestError> {
        let (answered, answer) = mpsc::sync_channel(1);
        let id = self.board_with(move |result| {
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

    /// Asks the producer for its version board without waiting: `on_answer` gets it, or why
    /// not, on whichever thread receives. Returns the request's id, as
    /// [`ControlClient::request_with`] does.
    pub fn board_with(
        &self,
        on_answer: impl FnOnce(Result<BoardView, RequestError>) + Send + 'static,
    ) -> Result<u64, RequestError> {
        self.inner
            .ask(Waiter::Board(Box::new(on_answer)), |id| Request::Board {
                id,
            })
    }

    /// The requester of `id` no longer waits: its callback is dropped uncalled, and a
    /// publication answered later is released.
    pub fn abandon(&self, id: u64) {
        self.inner.pending().remove(&id);
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
    fn pending(&self) -> MutexGuard<'_, HashMap<u64, Waiter>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `waiter` under a new id and sends the request `frame` makes for that id.
    fn ask<'r>(
        &self,
        waiter: Waiter,
        frame: impl FnOnce(u64) -> Request<'r>,
    ) -> Result<u64, RequestError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut pending = self.pending();
            if !self.open.load(Ordering::Acquire) {
                return Err(RequestError::Closed);
            }
            pending.insert(id, waiter);
        }
        self.send(&frame(id)).inspect_err(|_| {
            self.pending().remove(&id);
        })?;
        Ok(id)
    }

    fn send(&self, request: &Request<'_>) -> Result<(), RequestError> {
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
        let waiter = self.pending().remove(&answer.id());
        let broken = match (answer, waiter) {
            (
                Answer::Board {
                    epoch, entry_count, ..
                },
                waiter,
            ) => {
                let result = match fd {
                    None => Err(ProtocolError::BoardWithoutDescriptor.into()),
                    Some(fd) => BoardView::attach_announced(fd, epoch, entry_count)
                        .map_err(RequestError::Board),
                };
                let broken = protocol_error(&result);
                match waiter {
                    Some(Waiter::Board(completion)) => completion(result),
                    Some(publication @ Waiter::Publication(_)) => {
                        publication.fail(ProtocolError::AnswerMismatch.into());
                        return Err(ProtocolError::AnswerMismatch);
                    }
                    None => {}
                }
                broken
            }
            (Answer::Refused { refusal, .. }, Some(Waiter::Board(completion))) => {
                if fd.is_some() {
                    completion(Err(ProtocolError::UnexpectedDescriptor.into()));
                    return Err(ProtocolError::UnexpectedDescriptor);
                }
                completion(Err(RequestError::Refused(refusal)));
                None
            }
            (_, Some(board @ Waiter::Board(_))) => {
                board.fail(ProtocolError::AnswerMismatch.into());
                return Err(ProtocolError::AnswerMismatch);
            }
            (answer, waiter) => {
                let result = self.publication(answer, fd);
                let broken = protocol_error(&result);
                match waiter {
                    Some(Waiter::Publication(completion)) => completion(result),
                    // Abandoned: dropping the publication releases it.
                    _ => drop(result),
                }
                broken
            }
        };
        broken.map_or(Ok(()), Err)
    }

    /// The connection is over: no more requests, and every one still waiting is told.
    fn close(&self) {
        let _ = shutdown(self.socket.as_raw_fd(), Shutdown::Both);
        let orphans: Vec<Waiter> = {
            let mut pending = self.pending();
            self.open.store(false, Ordering::Release);
            pending.drain().map(|(_, waiter)| waiter).collect()
        };
        for waiter in orphans {
            waiter.fail(RequestError::Closed);
        }
    }

    /// The publication `answer` and `fd` make, checking that the body fits its tier and that
    /// `fd` comes exactly with a sealed one.
    fn publication(
        self: &Arc<Self>,
        answer: Answer<'_>,
        fd: Option<OwnedFd>,
    ) -> Result<Publication, RequestError> {
        let (id, head, placement, object) = match answer {
            Answer::Refused { .. } if fd.is_some() => {
                return Err(ProtocolError::UnexpectedDescriptor.into());
            }
            Answer::Refused { refusal, .. } => return Err(RequestError::Refused(refusal)),
            Answer::Board { .. } => return Err(ProtocolError::AnswerMismatch.into()),
            Answer::Published {
                id,
                head,
                placement,
                object,
            } => (id, head, placement, object),
        };
        let slot_size = self.consumer.segment().slot_size();
        let body = match (placement, fd) {
            (Placement::Sealed(handle), None) => {
                return Err(ProtocolError::MissingDescriptor { len: handle.len }.into());
            }
            (Placement::Inline { .. } | Placement::Slot(_), Some(_)) => {
                return Err(ProtocolError::UnexpectedDescriptor.into());
            }
            (Placement::Inline { body, crc }, None) => Pending::Inline {
                body: body.to_vec(),
                crc,
            },
            (Placement::Slot(handle), None) if handle.len > slot_size => {
                let len = handle.len;
                return Err(ProtocolError::SlotTooLarge { len, slot_size }.into());
            }
            (Placement::Slot(handle), None) => Pending::Slot(self.ours(handle)?),
            (Placement::Sealed(handle), Some(fd)) => Pending::Sealed(self.ours(handle)?, fd),
        };
        Ok(Publication {
            id,
            head,
            object,
            body: Some(body),
            channel: Arc::clone(self),
        })
    }

    /// `handle`, if it names the attached segment.
    fn ours(&self, handle: Handle) -> Result<Handle, RequestError> {
        let attached = self.consumer.segment().epoch();
        if handle.epoch != attached {
            return Err(RequestError::ForeignHandle {
                found: handle.epoch,
                attached,
            });
        }
        Ok(handle)
    }
}

/// The receiving half of a [`ControlClient`] from [`ControlClient::connect_driven`].
pub struct AnswerReader {
    inner: Arc<Inner>,
    /// Room for the longest answer and one byte more.
    buf: Mutex<Vec<u8>>,
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
        let mut buf = self.buf.lock().unwrap_or_else(PoisonError::into_inner);
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

/// The protocol error in `result`, if that is what it holds.
fn protocol_error<T>(result: &Result<T, RequestError>) -> Option<ProtocolError> {
    match result {
        Err(RequestError::Protocol(error)) => Some(error.clone()),
        _ => None,
    }
}

/// A body not yet read from its tier.
enum Pending {
    Inline { body: Vec<u8>, crc: u32 },
    Slot(Handle),
    Sealed(Handle, OwnedFd),
}

/// A response made for this client and not yet redeemed. Dropping it without
/// [`Publication::redeem`] tells the producer to take back its slot or ticket.
pub struct Publication {
    id: u64,
    head: ResponseHead,
    object: Option<ObjectVersion>,
    /// `None` once redeemed.
    body: Option<Pending>,
    channel: Arc<Inner>,
}

impl Publication {
    pub fn head(&self) -> &ResponseHead {
        &self.head
    }

    /// The object version the producer published this body as, if any (see
    /// [`ResponseWriter::observe_object`](super::ResponseWriter::observe_object)).
    pub fn object(&self) -> Option<ObjectVersion> {
        self.object
    }

    /// The tier the producer chose for the body.
    pub fn tier(&self) -> Tier {
        match self.body.as_ref().expect("not yet redeemed") {
            Pending::Inline { .. } => Tier::Inline,
            Pending::Slot(_) => Tier::Slot,
            Pending::Sealed(..) => Tier::Sealed,
        }
    }

    /// The body's length in bytes.
    pub fn len(&self) -> u64 {
        match self.body.as_ref().expect("not yet redeemed") {
            Pending::Inline { body, .. } => body.len() as u64,
            Pending::Slot(handle) | Pending::Sealed(handle, _) => handle.len.into(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The handle of a slot or sealed publication; `None` for an inline body.
    pub fn handle(&self) -> Option<&Handle> {
        match self.body.as_ref().expect("not yet redeemed") {
            Pending::Inline { .. } => None,
            Pending::Slot(handle) | Pending::Sealed(handle, _) => Some(handle),
        }
    }

    /// Reads and verifies the body from its tier: an inline body against its crc32, a slot's
    /// copied out and checked ([`Consumer::acquire`]), a sealed payload's seals, size and crc32
    /// checked and the mapping kept ([`Consumer::redeem_sealed`]; above a slot's size, so call
    /// it where megabytes of crc32 may run). Whatever the outcome, the slot or ticket is spent:
    /// nothing is sent on drop.
    pub fn redeem(mut self) -> Result<Response, RedeemError> {
        let consumer = &self.channel.consumer;
        let body = match self.body.take().expect("redeemed once") {
            Pending::Inline { body, crc } => {
                let found = crc32fast::hash(&body);
                if found != crc {
                    return Err(ReadError::ChecksumMismatch {
                        expected: crc,
                        found,
                    }
                    .into());
                }
                Body::new(Tier::Inline, body.into())
            }
            Pending::Slot(handle) => {
                let bytes = consumer.acquire(&handle)?.copy_out()?;
                Body::new(Tier::Slot, bytes.into())
            }
            Pending::Sealed(handle, fd) => {
                let sealed = consumer.redeem_sealed(&handle, fd)?;
                Body::new(Tier::Sealed, bytes::Bytes::from_owner(sealed))
            }
        };
        Ok(Response {
            head: std::mem::take(&mut self.head),
            object: self.object,
            body,
        })
    }
}

impl std::fmt::Debug for Publication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publication")
            .field("id", &self.id)
            .field("head", &self.head)
            .field("tier", &self.body.as_ref().map(|_| self.tier()))
            .field("handle", &self.body.as_ref().and_then(|_| self.handle()))
            .finish_non_exhaustive()
    }
}

impl Drop for Publication {
    fn drop(&mut self) {
        if let Some(Pending::Slot(handle) | Pending::Sealed(handle, _)) = self.body.take() {
            // Best effort: if it cannot be sent, the TTL takes the slot back.
            let _ = self.channel.send(&Request::Release {
                id: self.id,
                slot: handle.slot,
                generation: handle.generation,
            });
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
