//! The producer's half of a request: the [`Handler`] an application gives the channel, and the
//! [`ResponseWriter`] it writes its response into. The writer decides the body's tier from the
//! bytes it actually receives, and writes them straight into that tier as they come, computing
//! the crc32 on the way:
//!
//! - up to the inline threshold, into a private buffer that travels in the answer itself;
//! - past it, into a slot of the segment (the buffer copied in once, later bytes directly);
//! - past the slot size, into a memfd that is sealed when the handler returns (the slot's bytes
//!   read back once, checked against the crc of what was written, then the slot given back).
//!
//! A handler that knows its body's length says so first ([`ResponseWriter::expect_len`]) and
//! its bytes go straight to their final tier with no buffer and no read-back. A handler that
//! already holds an immutable sealed payload hands it over as it is
//! ([`ResponseWriter::send_sealed`]).

use std::io::{self, Write};
use std::time::{Duration, Instant};

use crate::board::{Observed, VersionBoard};
use crate::control::frame::{HeadError, ObjectVersion, Refusal, RefusalCode, ResponseHead};
use crate::handle::Handle;
use crate::producer::{Producer, SealedPeer, SealedRoom, WriteGuard};
use crate::sealed::{SealedPayload, SealedWriter};

/// How far ahead of a sealed body's writes its room grows, when that fits.
const ROOM_STEP: u64 = 1 << 20;

/// What a handler's error is: anything, reported to the consumer as
/// [`RefusalCode::HandlerFailed`] and logged here.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// The application's side of a channel: answers one request by writing its response.
///
/// Runs on a thread of the connection that sent the request (see [`ControlServer`]), so it may
/// block; it should finish before the request's deadline ([`ResponseWriter::deadline`]). An
/// error or a panic fails only this request, with [`RefusalCode::HandlerFailed`].
///
/// [`ControlServer`]: crate::ControlServer
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: &[u8], response: &mut ResponseWriter<'_>)
    -> Result<(), HandlerError>;
}

impl<F> Handler for F
where
    F: Fn(&[u8], &mut ResponseWriter<'_>) -> Result<(), HandlerError> + Send + Sync + 'static,
{
    fn handle(
        &self,
        request: &[u8],
        response: &mut ResponseWriter<'_>,
    ) -> Result<(), HandlerError> {
        self(request, response)
    }
}

/// A response being written: its head, and its body in the tier it has reached.
pub struct ResponseWriter<'p> {
    producer: &'p Producer,
    /// Whose share of the sealed bytes a sealed body counts against.
    peer: SealedPeer,
    head: ResponseHead,
    inline_threshold: usize,
    deadline: Instant,
    body: Body<'p>,
    /// The length [`ResponseWriter::expect_len`] promised.
    expected: Option<u64>,
    /// The least length [`ResponseWriter::expect_min_len`] said the body has, when that is more
    /// than a slot holds: the body goes straight to a sealed payload with room for this much.
    sealed_min_len: Option<u64>,
    /// Why the body cannot be published, once a write found out; the request's refusal.
    refusal: Option<Refusal>,
    /// The channel's version board, if it has one.
    board: Option<&'p VersionBoard>,
    /// The object this response is a version of, and its board entry as observed.
    object: Option<(u64, Observed)>,
}

enum Body<'p> {
    Buffer(Vec<u8>),
    Slot(WriteGuard<'p>),
    /// A sealed payload being written, and its room in the peer's share of the sealed bytes,
    /// reserved before the first byte and grown ahead of the writes.
    Sealed(SealedWriter, SealedRoom<'p>),
    Shared(SealedPayload),
}

/// A response ready to answer with.
#[derive(Debug)]
pub(crate) enum Finished {
    Inline { body: Vec<u8>, crc: u32 },
    Slot(Handle),
    Sealed(Handle, SealedPayload),
}

impl<'p> ResponseWriter<'p> {
    pub(crate) fn new(
        producer: &'p Producer,
        peer: SealedPeer,
        inline_threshold: usize,
        deadline: Instant,
        board: Option<&'p VersionBoard>,
    ) -> Self {
        Self {
            producer,
            peer,
            head: ResponseHead::default(),
            inline_threshold,
            deadline,
            body: Body::Buffer(Vec::new()),
            expected: None,
            sealed_min_len: None,
            refusal: None,
            board,
            object: None,
        }
    }

    /// The status (default 200).
    pub fn set_status(&mut self, status: u16) -> Result<(), HeadError> {
        self.head.set_status(status)
    }

    pub fn set_content_type(&mut self, content_type: &str) -> Result<(), HeadError> {
        self.head.set_content_type(content_type)
    }

    pub fn add_header(&mut self, name: &str, value: &str) -> Result<(), HeadError> {
        self.head.add_header(name, value)
    }

    pub fn head(&self) -> &ResponseHead {
        &self.head
    }

    /// Names this response a version of object `key` (a key the application chooses, for
    /// example a hash of the request), so that a consumer holding the body may serve it again
    /// without asking until [`VersionBoard::invalidate`] of `key`. Call it **before** reading
    /// the data the body is made from: an invalidation after this call and before the answer
    /// leaves the answer naming no version. `false` when the channel has no version board
    /// (the answer then names none).
    pub fn observe_object(&mut self, key: u64) -> bool {
        let Some(board) = self.board else {
            return false;
        };
        self.object = Some((key, board.observe(key)));
        true
    }

    /// Bodies of at most this many bytes travel inline in the answer. Above it, a body the
    /// handler keeps is cheaper handed over as its kept sealed payload
    /// ([`ResponseWriter::send_sealed`]) than written again.
    pub fn inline_threshold(&self) -> usize {
        self.inline_threshold
    }

    /// When the consumer stops waiting: waits for room end then, and work past it is wasted.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Bytes of body written so far.
    pub fn written(&self) -> u64 {
        match &self.body {
            Body::Buffer(buffer) => buffer.len() as u64,
            Body::Slot(slot) => slot.written() as u64,
            Body::Sealed(writer, _) => writer.len(),
            Body::Shared(payload) => payload.len(),
        }
    }

    /// The body will be exactly `len` bytes: its tier is chosen now, so every byte goes straight
    /// there. Call it before writing. A body larger than the producer publishes is refused at
    /// once ([`RefusalCode::TooLarge`]), before the handler makes any of it. It is a promise: a
    /// write past `len`, or a body that ends short of it, fails the request
    /// ([`RefusalCode::HandlerFailed`]).
    pub fn expect_len(&mut self, len: u64) -> io::Result<()> {
        if self.written() > 0 || self.expected.is_some() {
            return Err(io::Error::other("expect_len after the body was begun"));
        }
        self.expected = Some(len);
        // The exact length supersedes a bound said before.
        self.sealed_min_len = None;
        let slot_size = self.slot_size();
        if len <= self.inline_threshold as u64 {
            self.body = Body::Buffer(Vec::with_capacity(len as usize));
        } else if len <= slot_size as u64 {
            let slot = self.producer.claim(len as usize, self.wait());
            self.body = Body::Slot(self.or_refuse(slot.map_err(Refusal::from))?);
        } else {
            self.check_sealed_len(len)?;
            self.body = self.sealed_body(len)?;
        }
        Ok(())
    }

    /// The body will be at least `len` bytes (its exact length not known yet): refused at once
    /// ([`RefusalCode::TooLarge`]) when even that is more than the producer publishes, before
    /// the handler makes any of it. A bound above a slot also sends the first write straight to
    /// a sealed payload, with room for `len` reserved in the peer's share of the sealed bytes
    /// before it (waiting for it as publishing does, [`RefusalCode::Exhausted`] without). Call
    /// it before writing. It is a promise: a body that ends short of `len` fails the request
    /// ([`RefusalCode::HandlerFailed`]). [`ResponseWriter::expect_len`] may follow and replaces
    /// it (an error answer instead of the body, say).
    pub fn expect_min_len(&mut self, len: u64) -> io::Result<()> {
        if len > self.slot_size() as u64 {
            self.check_sealed_len(len)?;
            self.sealed_min_len = Some(len);
        }
        Ok(())
    }

    /// Answers with `payload`, an immutable sealed payload the handler keeps (a cache hands the
    /// same one to every request for it), instead of writing a body. Nothing may have been
    /// written. Whatever its size it travels as that sealed payload, so a consumer that keeps
    /// what it verified reads it again with no copy and no crc32 pass.
    pub fn send_sealed(&mut self, payload: SealedPayload) -> io::Result<()> {
        if self.written() > 0 {
            return Err(io::Error::other("send_sealed after the body was written"));
        }
        self.check_sealed_len(payload.len())?;
        self.body = Body::Shared(payload);
        Ok(())
    }

    /// The refusal this request gets, when the body cannot be published.
    pub(crate) fn refusal(&self) -> Option<Refusal> {
        self.refusal
    }

    /// Publishes the body in its tier, and then, for a response named an object, its version.
    pub(crate) fn finish(self) -> Result<(ResponseHead, Option<ObjectVersion>, Finished), Refusal> {
        if let Some(refusal) = self.refusal {
            return Err(refusal);
        }
        if Instant::now() >= self.deadline {
            return Err(Refusal::new(RefusalCode::DeadlineExceeded, 0));
        }
        let short = match (self.expected, self.sealed_min_len) {
            (Some(expected), _) => expected != self.written(),
            (None, Some(min_len)) => self.written() < min_len,
            (None, None) => false,
        };
        if short {
            tracing::warn!(
                expected = self.expected.or(self.sealed_min_len),
                written = self.written(),
                "the handler's body ended short of the length it promised"
            );
            return Err(Refusal::new(RefusalCode::HandlerFailed, 0));
        }
        let internal = Refusal::new(RefusalCode::Internal, 0);
        let wait = self.wait();
        let finished = match self.body {
            // Every write past the threshold moved the body on (`grow`).
            Body::Buffer(body) => Finished::Inline {
                crc: crc32fast::hash(&body),
                body,
            },
            Body::Slot(slot) => Finished::Slot(slot.publish().map_err(|_| internal)?),
            Body::Sealed(writer, room) => {
                let payload = writer.finish().map_err(|error| {
                    tracing::warn!(%error, "sealed payload not made");
                    internal
                })?;
                let handle = self.producer.publish_sealed_in(room, &payload, wait)?;
                Finished::Sealed(handle, payload)
            }
            Body::Shared(payload) => {
                let handle = (self.producer).publish_sealed_for(&payload, Some(self.peer), wait)?;
                Finished::Sealed(handle, payload)
            }
        };
        let object = self
            .board
            .zip(self.object)
            .and_then(|(board, (key, observed))| {
                let version = board.publish(observed)?;
                Some(ObjectVersion { key, version })
            });
        Ok((self.head, object, finished))
    }

    fn slot_size(&self) -> usize {
        self.producer.segment().slot_size() as usize
    }

    fn wait(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Records `refusal` as the request's, and turns it into the error a write returns.
    fn or_refuse<T>(&mut self, result: Result<T, Refusal>) -> io::Result<T> {
        result.map_err(|refusal| {
            self.refusal = Some(refusal);
            io::Error::other(refusal)
        })
    }

    fn check_sealed_len(&mut self, len: u64) -> io::Result<()> {
        let max = self.producer.max_sealed_len();
        let checked = if len > max {
            // The largest body this producer publishes: a slot's, where it makes no sealed ones.
            let largest = max.max(self.slot_size() as u64);
            Err(Refusal::new(RefusalCode::TooLarge, largest))
        } else {
            Ok(())
        };
        self.or_refuse(checked)
    }

    /// A sealed body with room for `len` bytes reserved before any is written (and for at
    /// least what [`ResponseWriter::expect_min_len`] said).
    fn sealed_body(&mut self, len: u64) -> io::Result<Body<'p>> {
        let writer = SealedWriter::new().map_err(|error| {
            tracing::warn!(%error, "no memfd for a sealed payload");
            Refusal::new(RefusalCode::Internal, 0)
        });
        let writer = self.or_refuse(writer)?;
        let len = len.max(self.sealed_min_len.unwrap_or(0));
        let room = (self.producer).reserve_sealed_body(&writer, len, self.peer, self.wait());
        let room = self.or_refuse(room.map_err(Refusal::from))?;
        Ok(Body::Sealed(writer, room))
    }

    /// Grows the sealed body's room to hold `total` bytes, a step ahead of the writes when that
    /// fits, so a body written in small pieces takes the producer's lock once a step, not once
    /// per piece.
    fn grow_room(&mut self, total: u64) -> io::Result<()> {
        let wait = self.wait();
        let Body::Sealed(_, room) = &mut self.body else {
            unreachable!("only a sealed body has room")
        };
        if total <= room.bytes() {
            return Ok(());
        }
        let ahead = (total + ROOM_STEP).min(self.producer.max_sealed_len());
        let grown = self.producer.grow_sealed(room, total, ahead, wait);
        self.or_refuse(grown.map_err(Refusal::from))
    }

    /// Moves the body to the tier that holds `more` bytes beyond what it has.
    fn grow(&mut self, more: usize) -> io::Result<()> {
        let total = self.written() as usize + more;
        let slot_size = self.slot_size();
        match &self.body {
            Body::Buffer(_) if total > self.inline_threshold || self.sealed_min_len.is_some() => {
                let buffered = match self.take_body() {
                    Body::Buffer(buffered) => buffered,
                    _ => unreachable!("matched a buffer"),
                };
                if total > slot_size || self.sealed_min_len.is_some() {
                    return self.continue_sealed(&buffered, total);
                }
                let slot = self.producer.claim(slot_size, self.wait());
                let mut slot = self.or_refuse(slot.map_err(Refusal::from))?;
                slot.write_all(&buffered)?;
                self.body = Body::Slot(slot);
                Ok(())
            }
            Body::Slot(_) if total > slot_size => {
                let written = match self.take_body() {
                    // Dropped unpublished once read back, which gives the slot back.
                    Body::Slot(slot) => slot.read_back(),
                    _ => unreachable!("matched a slot"),
                };
                let written = written.ok_or(Refusal::new(RefusalCode::Internal, 0));
                let written = self.or_refuse(written)?;
                self.continue_sealed(&written, total)
            }
            Body::Sealed(..) => {
                self.check_sealed_len(total as u64)?;
                self.grow_room(total as u64)
            }
            Body::Shared(_) => Err(io::Error::other("write after send_sealed")),
            Body::Buffer(_) | Body::Slot(_) => Ok(()),
        }
    }

    fn take_body(&mut self) -> Body<'p> {
        std::mem::replace(&mut self.body, Body::Buffer(Vec::new()))
    }

    /// Continues the body in a new sealed payload that starts with `written`.
    fn continue_sealed(&mut self, written: &[u8], total: usize) -> io::Result<()> {
        self.check_sealed_len(total as u64)?;
        self.body = self.sealed_body(total as u64)?;
        let Body::Sealed(writer, _) = &mut self.body else {
            unreachable!("sealed_body makes a sealed body")
        };
        writer.write_all(written)
    }
}

impl Write for ResponseWriter<'_> {
    /// Past the request's deadline a write is refused ([`RefusalCode::DeadlineExceeded`]): the
    /// consumer has stopped waiting, so the handler stops making a body nobody will redeem,
    /// and nothing is published late.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(refusal) = self.refusal {
            return Err(io::Error::other(refusal));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        if Instant::now() >= self.deadline {
            let late = Err(Refusal::new(RefusalCode::DeadlineExceeded, 0));
            return self.or_refuse(late);
        }
        if let Some(expected) = self.expected
            && self.written() + buf.len() as u64 > expected
        {
            self.refusal = Some(Refusal::new(RefusalCode::HandlerFailed, 0));
            return Err(io::Error::other(format!(
                "a write past the {expected} bytes the handler promised"
            )));
        }
        self.grow(buf.len())?;
        match &mut self.body {
            Body::Buffer(buffer) => {
                buffer.extend_from_slice(buf);
                Ok(buf.len())
            }
            Body::Slot(slot) => {
                let written = slot.write(buf);
                if written.is_err() {
                    // The reaper took the slot (the lease ran out mid-write).
                    self.refusal = Some(Refusal::new(RefusalCode::Internal, 0));
                }
                written
            }
            Body::Sealed(writer, _) => writer.write(buf),
            Body::Shared(_) => unreachable!("grow refuses writes after send_sealed"),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl std::fmt::Debug for ResponseWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tier = match self.body {
            Body::Buffer(_) => "buffer",
            Body::Slot(_) => "slot",
            Body::Sealed(..) => "sealed",
            Body::Shared(_) => "shared",
        };
        f.debug_struct("ResponseWriter")
            .field("head", &self.head)
            .field("tier", &tier)
            .field("written", &self.written())
            .field("refusal", &self.refusal)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
