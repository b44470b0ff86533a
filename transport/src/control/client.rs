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

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, Shutdown, recv, send, shutdown};
use thiserror::Error;

use crate::control::frame::{Answer, FrameError, MAX_FRAME_LEN, PublishRequest, Refusal, Request};
use crate::error::AttachError;
use crate::fdpass::greet;
use crate::handle::Handle;
use crate::host::{monotonic_now_ns, nanos};
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
    #[error("the producer sent a malformed frame: {0}")]
    BadFrame(#[from] crate::control::frame::FrameError),
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

    /// Delivers one received message to its requester. `Err` for a malformed frame, after
    /// which the connection is not to be trusted.
    fn deliver(self: &Arc<Self>, message: &[u8]) -> Result<(), FrameError> {
        let answer = Answer::decode(message)?;
        let completion = self.pending().remove(&answer.id());
        let result = self.publication(answer);
        match completion {
            Some(completion) => completion(result),
            // Abandoned: dropping the publication releases it.
            None => drop(result),
        }
        Ok(())
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

    fn publication(self: &Arc<Self>, answer: Answer) -> Result<Publication, RequestError> {
        match answer {
            Answer::Published { id, handle } => {
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
                    channel: Some(Arc::clone(self)),
                })
            }
            Answer::Refused { refusal, .. } => Err(RequestError::Refused(refusal)),
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
            let len = match recv(self.inner.socket.as_raw_fd(), &mut buf, flags) {
                Ok(0) => break,
                Ok(len) => len,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return true,
                Err(errno) => {
                    tracing::debug!(%errno, "control channel read failed");
                    break;
                }
            };
            if let Err(error) = self.inner.deliver(&buf[..len]) {
                tracing::warn!(%error, "malformed answer; closing the control channel");
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
/// [`Publication::redeemed`] tells the producer to take it back.
pub struct Publication {
    id: u64,
    handle: Handle,
    channel: Option<Arc<Inner>>,
}

impl Publication {
    pub fn handle(&self) -> &Handle {
        &self.handle
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
