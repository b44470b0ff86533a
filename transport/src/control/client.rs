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
        Ok((
            Self {
                inner,
                reader: None,
            },
            reader,
        ))
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
        self.receive(MsgFlags::MSG_DONTWAIT)
    }

    /// Receives and delivers answers until the connection closes: the reader thread's loop.
    fn read_until_closed(self) {
        while self.receive(MsgFlags::empty()) {}
    }

    /// Receives answers with `flags` until one would block (`true`) or the connection is over
    /// (`false`, after closing it).
    fn receive(&self, flags: MsgFlags) -> bool {
        let mut buf = [0u8; MAX_FRAME_LEN + 1];
        loop {
            let (len, fd) = match receive_message(self.inner.socket.as_fd(), &mut buf, flags) {
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
            if flags.is_empty() {
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
