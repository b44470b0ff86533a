//! The control channel's frames: what a consumer asks a producer over the descriptor socket once
//! the greeting (see [`crate::fdpass`]) has handed it the segment, and what the producer answers.
//! The channel knows nothing of what it carries: a request is opaque bytes that the producer's
//! handler interprets, an answer a response head and a body.
//!
//! # Transport
//!
//! The socket is `SOCK_SEQPACKET`: every frame is one message, sent and received whole, so a
//! frame is never split or merged with the next one, and a peer dying mid-send leaves no half
//! frame behind. A message whose length is not what its fields say is a protocol error; the
//! producer closes a connection that sends one. An empty message cannot be told from the peer
//! closing (both read as zero bytes), so it closes the connection too. The one exception is a
//! publish frame longer than [`MAX_REQUEST_FRAME_LEN`]: the producer reads its header, answers
//! it with a [`RefusalCode::RequestTooLarge`] refusal and keeps the connection.
//!
//! # Descriptors
//!
//! Exactly one frame carries a descriptor: a **published** answer of tier `sealed` carries the
//! payload's memfd as `SCM_RIGHTS` on the same message. No other frame carries one. A receiver
//! leaves room for one descriptor (`CMSG_SPACE(sizeof(int))`, `MSG_CMSG_CLOEXEC`) and treats as
//! a protocol error, closing the connection and every descriptor received: `MSG_CTRUNC`, more
//! than one descriptor, a descriptor on any other frame (an inline or slot answer, a refusal,
//! any request), and a sealed answer without one. The receiver then redeems it as "Sealed
//! publications" in [`crate::layout`] says.
//!
//! # Tiers
//!
//! The producer chooses where a body travels from its actual size: **inline** in the answer
//! itself (at most [`MAX_INLINE_LEN`] bytes, and at most the producer's own threshold, below),
//! in a **slot** of the segment (at most the slot size), or as a **sealed** memfd (above the slot
//! size). A receiver checks that a body's tier fits its length: a slot answer above the slot
//! size or a sealed answer within it is a protocol error.
//!
//! # Layout (little-endian; its version is [`CONTROL_VERSION`])
//!
//! Every frame starts with the same 16 bytes:
//!
//! | offset | size | field     | meaning                                                          |
//! |-------:|-----:|-----------|------------------------------------------------------------------|
//! | 0      | 4    | `magic`   | `b"SHMC"`                                                        |
//! | 4      | 1    | `version` | [`CONTROL_VERSION`]; a producer answers a frame of any other version with a `Version` refusal (in its own version, which the peer's decoder names as another version) and closes the connection |
//! | 5      | 1    | `kind`    | 1 publish, 2 release, 3 published, 4 refused                     |
//! | 6      | 2    | reserved  | 0                                                                |
//! | 8      | 8    | `id`      | chosen by the consumer, unique among its requests in flight; answers carry the id of their request |
//!
//! **publish** (consumer → producer, 32 + `request_len` bytes): answer this request before
//! `deadline_ns`.
//!
//! | offset | size          | field         | meaning                                      |
//! |-------:|--------------:|---------------|----------------------------------------------|
//! | 16     | 8             | `deadline_ns` | `CLOCK_MONOTONIC` ns (the greeting checked both sides share it) after which the answer is of no use: the producer refuses a request it reads too late, and waits for room at most until then |
//! | 24     | 4             | `request_len` | at most [`MAX_REQUEST_LEN`]                  |
//! | 28     | 4             | reserved      | 0                                            |
//! | 32     | `request_len` | `request`     | opaque to the channel: the handler's input   |
//!
//! **release** (consumer → producer, 32 bytes, never answered): the consumer will not redeem
//! this publication (its request was abandoned); free its slot now rather than at the TTL. `id`
//! is the publish request's. Only publications made for this connection are released; inline
//! answers hold nothing and are never released.
//!
//! | offset | size | field        | meaning                        |
//! |-------:|-----:|--------------|--------------------------------|
//! | 16     | 4    | `slot`       | the handle's slot              |
//! | 20     | 4    | reserved     | 0                              |
//! | 24     | 8    | `generation` | the handle's generation        |
//!
//! **published** (producer → consumer, 56 + `head_len` bytes, + `len` for an inline body): the
//! response head and where its body is.
//!
//! | offset | size       | field        | meaning                                                  |
//! |-------:|-----------:|--------------|----------------------------------------------------------|
//! | 16     | 1          | `tier`       | 1 inline, 2 slot, 3 sealed                               |
//! | 17     | 1          | reserved     | 0                                                        |
//! | 18     | 2          | `status`     | 100 to 999                                               |
//! | 20     | 4          | `head_len`   | at most [`MAX_HEAD_LEN`]                                 |
//! | 24     | 8          | `epoch`      | the [`Handle`]'s; 0 for inline                           |
//! | 32     | 4          | `slot`       | the handle's; 0 for inline                               |
//! | 36     | 4          | `len`        | the body's length; inline: at most [`MAX_INLINE_LEN`]    |
//! | 40     | 8          | `generation` | the handle's; 0 for inline                               |
//! | 48     | 4          | `crc`        | crc32 of the body, every tier                            |
//! | 52     | 4          | reserved     | 0                                                        |
//! | 56     | `head_len` | `head`       | content type and headers, below                          |
//! | 56 + `head_len` | `len` | `body` | inline only: the body itself                              |
//!
//! **Head** (`head_len` bytes exactly): `u16` content-type length and its bytes (empty: none),
//! `u16` header count (at most [`MAX_HEADERS`]), then per header `u16` name length, the name (1
//! to [`MAX_HEADER_NAME_LEN`] bytes of an HTTP token), `u16` value length, the value (at most
//! [`MAX_HEADER_VALUE_LEN`] bytes of visible ASCII, space or tab; the content type obeys the same
//! rule). Nothing follows the last header.
//!
//! **refused** (producer → consumer, 32 bytes): why there is no response.
//!
//! | offset | size | field    | meaning                                        |
//! |-------:|-----:|----------|------------------------------------------------|
//! | 16     | 2    | `code`   | a [`RefusalCode`]                              |
//! | 18     | 6    | reserved | 0                                              |
//! | 24     | 8    | `detail` | a number that explains the refusal, or 0 ([`RefusalCode`] says which) |
//!
//! Reserved bytes must be zero, and every length is checked against its bound and against the
//! message before it is used: a decoder refuses a frame that breaks either, so that a later
//! version can give reserved bytes a meaning without an old peer misreading it.
//!
//! # Version history
//!
//! 1: a publish frame carried the demo dataset's parameters, the answer only a handle. 2 (this):
//! opaque requests, a response head, three tiers.

use thiserror::Error;

use crate::error::ClaimError;
use crate::handle::Handle;
use crate::layout::MAX_GENERATION;

pub use super::head::{
    HeadError, MAX_HEAD_LEN, MAX_HEADER_NAME_LEN, MAX_HEADER_VALUE_LEN, MAX_HEADERS, ResponseHead,
};

/// The version of the frames above; changes whenever their layout or meaning does.
pub const CONTROL_VERSION: u8 = 2;

/// The longest request a publish frame carries.
pub const MAX_REQUEST_LEN: usize = 64 * 1024;
/// The longest body a published answer carries inline. A producer's own threshold is at most
/// this (see [`DEFAULT_INLINE_THRESHOLD`](super::DEFAULT_INLINE_THRESHOLD)).
pub const MAX_INLINE_LEN: usize = 64 * 1024;

const MAGIC: [u8; 4] = *b"SHMC";
const HEADER_LEN: usize = 16;
const PUBLISH_FIXED_LEN: usize = 32;
const PUBLISHED_FIXED_LEN: usize = 56;
const RELEASE_LEN: usize = 32;
const REFUSED_LEN: usize = 32;

/// The longest publish frame, for the producer's receive buffer. A buffer one byte longer tells
/// a frame of this length from a longer one the kernel would otherwise cut to size.
pub const MAX_REQUEST_FRAME_LEN: usize = PUBLISH_FIXED_LEN + MAX_REQUEST_LEN;
/// The longest answer, for the consumer's receive buffer (one byte longer, as above).
pub const MAX_ANSWER_FRAME_LEN: usize = PUBLISHED_FIXED_LEN + MAX_HEAD_LEN + MAX_INLINE_LEN;

const PUBLISH: u8 = 1;
const RELEASE: u8 = 2;
const PUBLISHED: u8 = 3;
const REFUSED: u8 = 4;

/// A consumer's request, borrowing its bytes from the message it was decoded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    Publish {
        id: u64,
        /// `CLOCK_MONOTONIC` nanoseconds.
        deadline_ns: u64,
        request: &'a [u8],
    },
    Release {
        id: u64,
        slot: u32,
        generation: u64,
    },
}

/// Where a body travels; the numbers are the wire values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    /// In the answer message itself.
    Inline = 1,
    /// In a slot of the segment.
    Slot = 2,
    /// In a sealed memfd whose descriptor the answer carries.
    Sealed = 3,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Inline, Tier::Slot, Tier::Sealed];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Inline => "inline",
            Tier::Slot => "slot",
            Tier::Sealed => "sealed",
        }
    }

    fn from_wire(value: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|tier| *tier as u8 == value)
    }
}

/// Where a published body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement<'a> {
    /// The body itself and its crc32.
    Inline { body: &'a [u8], crc: u32 },
    /// The handle of a slot publication (`len` at most the slot size).
    Slot(Handle),
    /// The handle of a sealed publication's ticket (`len` above the slot size); the payload's
    /// descriptor comes with the message.
    Sealed(Handle),
}

impl Placement<'_> {
    pub fn tier(&self) -> Tier {
        match self {
            Placement::Inline { .. } => Tier::Inline,
            Placement::Slot(_) => Tier::Slot,
            Placement::Sealed(_) => Tier::Sealed,
        }
    }

    /// The body's length.
    pub fn len(&self) -> u64 {
        match self {
            Placement::Inline { body, .. } => body.len() as u64,
            Placement::Slot(handle) | Placement::Sealed(handle) => handle.len.into(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A producer's answer to a [`Request::Publish`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer<'a> {
    Published {
        id: u64,
        head: ResponseHead,
        placement: Placement<'a>,
    },
    Refused {
        id: u64,
        refusal: Refusal,
    },
}

impl Answer<'_> {
    pub fn id(&self) -> u64 {
        match self {
            Answer::Published { id, .. } | Answer::Refused { id, .. } => *id,
        }
    }
}

/// Why a producer published nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("{code}{}", detail_text(*.code, *.detail))]
pub struct Refusal {
    pub code: RefusalCode,
    pub detail: u64,
}

impl Refusal {
    pub fn new(code: RefusalCode, detail: u64) -> Self {
        Self { code, detail }
    }
}

fn detail_text(code: RefusalCode, detail: u64) -> String {
    match code {
        RefusalCode::TooLarge | RefusalCode::RequestTooLarge => {
            format!(" (the limit is {detail} bytes)")
        }
        RefusalCode::PeerBusy | RefusalCode::SegmentBusy => {
            format!(" (limit {detail} unredeemed publications)")
        }
        RefusalCode::Version => format!(" (the producer speaks version {detail})"),
        _ => String::new(),
    }
}

/// The refusal codes; the numbers are the wire values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Error)]
#[repr(u16)]
pub enum RefusalCode {
    /// The body is larger than the producer publishes: above its largest sealed payload, or
    /// above the slot size where it makes no sealed payloads. `detail`: that limit, in bytes (a
    /// producer stops making a body once it passes the limit, so the body's own length is not
    /// always known).
    #[error("payload too large")]
    TooLarge = 1,
    /// No slot came free before the deadline, or (for a sealed payload) no room under the
    /// producer's limit on sealed bytes in flight. `detail`: 0.
    #[error("every slot is busy")]
    Exhausted = 2,
    /// This connection already holds as many unredeemed publications as it may. `detail`: the limit.
    #[error("this peer holds too many unredeemed publications")]
    PeerBusy = 3,
    /// The segment already holds as many unredeemed publications as the producer allows.
    /// `detail`: the limit.
    #[error("too many unredeemed publications in the segment")]
    SegmentBusy = 4,
    /// The request was read after its deadline, or the deadline passed while it waited. `detail`: 0.
    #[error("deadline passed before the publication")]
    DeadlineExceeded = 5,
    /// The producer failed to publish what its handler made (its slot was reclaimed mid-write,
    /// a memfd could not be made or sealed). `detail`: 0.
    #[error("the producer failed to publish")]
    Internal = 6,
    /// The request is longer than [`MAX_REQUEST_LEN`]. `detail`: that limit. The connection stays
    /// open.
    #[error("request too large")]
    RequestTooLarge = 7,
    /// The producer's handler returned an error or panicked. `detail`: 0.
    #[error("the producer's handler failed")]
    HandlerFailed = 8,
    /// The frame was of another control version. `detail`: the producer's [`CONTROL_VERSION`].
    /// The producer closes the connection after this answer.
    #[error("control channel version mismatch")]
    Version = 9,
}

impl RefusalCode {
    pub const ALL: [Self; 9] = [
        Self::TooLarge,
        Self::Exhausted,
        Self::PeerBusy,
        Self::SegmentBusy,
        Self::DeadlineExceeded,
        Self::Internal,
        Self::RequestTooLarge,
        Self::HandlerFailed,
        Self::Version,
    ];

    fn from_wire(value: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|code| *code as u16 == value)
    }
}

impl From<ClaimError> for Refusal {
    /// The refusal a publisher answers when its producer found no room.
    fn from(error: ClaimError) -> Self {
        match error {
            ClaimError::TooLarge { max, .. } => Self::new(RefusalCode::TooLarge, max as u64),
            ClaimError::Exhausted { .. } | ClaimError::BytesExhausted { .. } => {
                Self::new(RefusalCode::Exhausted, 0)
            }
            // The response writer routes by size and never asks for this.
            ClaimError::FitsInSlot { .. } => Self::new(RefusalCode::Internal, 0),
        }
    }
}

/// Why bytes are not a frame.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is shorter than its {HEADER_LEN}-byte header")]
    Short { len: usize },
    #[error("frame does not start with SHMC")]
    BadMagic,
    #[error("control frame version {found}, expected {CONTROL_VERSION}")]
    Version { found: u8 },
    #[error("unknown frame kind {kind}")]
    UnknownKind { kind: u8 },
    #[error("frame kind {kind} is not expected from this side")]
    WrongDirection { kind: u8 },
    #[error("frame kind {kind} is {len} bytes, its fields make {expected}")]
    Length {
        kind: u8,
        len: usize,
        expected: usize,
    },
    #[error("a {field} of {len} bytes is above its bound of {max}")]
    Bound {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("reserved bytes of a frame are not zero")]
    Reserved,
    #[error("unknown refusal code {code}")]
    UnknownRefusal { code: u16 },
    #[error("unknown tier {tier}")]
    UnknownTier { tier: u8 },
    #[error("an inline answer with a non-zero handle field")]
    InlineHandle,
    #[error("generation {generation} is beyond the largest a slot can have")]
    Generation { generation: u64 },
    #[error("response head: {0}")]
    Head(#[from] HeadError),
}

impl Request<'_> {
    /// The frame's bytes.
    ///
    /// # Panics
    /// When a publish request is longer than [`MAX_REQUEST_LEN`]: the client checks first.
    pub fn encode(&self) -> Vec<u8> {
        match *self {
            Request::Publish {
                id,
                deadline_ns,
                request,
            } => {
                assert!(request.len() <= MAX_REQUEST_LEN, "request above its bound");
                let mut frame = header(PUBLISH, id, PUBLISH_FIXED_LEN + request.len());
                frame[16..24].copy_from_slice(&deadline_ns.to_le_bytes());
                frame[24..28].copy_from_slice(&(request.len() as u32).to_le_bytes());
                frame[PUBLISH_FIXED_LEN..].copy_from_slice(request);
                frame
            }
            Request::Release {
                id,
                slot,
                generation,
            } => {
                let mut frame = header(RELEASE, id, RELEASE_LEN);
                frame[16..20].copy_from_slice(&slot.to_le_bytes());
                frame[24..32].copy_from_slice(&generation.to_le_bytes());
                frame
            }
        }
    }
}

impl<'a> Request<'a> {
    /// Parses one message a consumer sent.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, FrameError> {
        let (kind, id) = parse_header(bytes)?;
        let fields = Fields(bytes);
        match kind {
            PUBLISH => {
                fields.at_least(kind, PUBLISH_FIXED_LEN)?;
                fields.zero(28..32)?;
                let request_len = bounded("request", fields.u32_at(24), MAX_REQUEST_LEN)?;
                fields.expect_len(kind, PUBLISH_FIXED_LEN + request_len)?;
                Ok(Request::Publish {
                    id,
                    deadline_ns: fields.u64_at(16),
                    request: &bytes[PUBLISH_FIXED_LEN..],
                })
            }
            RELEASE => {
                fields.expect_len(kind, RELEASE_LEN)?;
                fields.zero(20..24)?;
                Ok(Request::Release {
                    id,
                    slot: fields.u32_at(16),
                    generation: fields.generation_at(24)?,
                })
            }
            PUBLISHED | REFUSED => Err(FrameError::WrongDirection { kind }),
            kind => Err(FrameError::UnknownKind { kind }),
        }
    }
}

/// The id of a publish frame too long to decode, from its header alone, so that the producer can
/// refuse it and keep the connection. `None` when the header is not a valid publish header.
pub fn oversized_publish_id(bytes: &[u8]) -> Option<u64> {
    match parse_header(bytes) {
        Ok((PUBLISH, id)) => Some(id),
        _ => None,
    }
}

/// The id of a frame whose header is well formed apart from its version, so that the producer
/// can answer it with a [`RefusalCode::Version`] refusal.
pub fn other_version_id(bytes: &[u8]) -> Option<u64> {
    (bytes.len() >= HEADER_LEN && bytes[0..4] == MAGIC && bytes[4] != CONTROL_VERSION)
        .then(|| Fields(bytes).u64_at(8))
}

impl Answer<'_> {
    /// The frame's bytes.
    ///
    /// # Panics
    /// When an inline body is longer than [`MAX_INLINE_LEN`]: the response writer never makes
    /// one.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Answer::Published {
                id,
                head,
                placement,
            } => {
                let head_len = head.encoded_len();
                let inline = match placement {
                    Placement::Inline { body, .. } => body,
                    _ => &[][..],
                };
                assert!(
                    inline.len() <= MAX_INLINE_LEN,
                    "inline body above its bound"
                );
                let mut frame = header(PUBLISHED, *id, PUBLISHED_FIXED_LEN);
                frame.reserve(head_len + inline.len());
                frame[16] = placement.tier() as u8;
                frame[18..20].copy_from_slice(&head.status().to_le_bytes());
                frame[20..24].copy_from_slice(&(head_len as u32).to_le_bytes());
                let (handle, crc) = match *placement {
                    Placement::Inline { body, crc } => (
                        Handle {
                            epoch: 0,
                            slot: 0,
                            generation: 0,
                            len: body.len() as u32,
                            crc,
                        },
                        crc,
                    ),
                    Placement::Slot(handle) | Placement::Sealed(handle) => (handle, handle.crc),
                };
                frame[24..32].copy_from_slice(&handle.epoch.to_le_bytes());
                frame[32..36].copy_from_slice(&handle.slot.to_le_bytes());
                frame[36..40].copy_from_slice(&handle.len.to_le_bytes());
                frame[40..48].copy_from_slice(&handle.generation.to_le_bytes());
                frame[48..52].copy_from_slice(&crc.to_le_bytes());
                head.encode_into(&mut frame);
                frame.extend_from_slice(inline);
                frame
            }
            Answer::Refused { id, refusal } => {
                let mut frame = header(REFUSED, *id, REFUSED_LEN);
                frame[16..18].copy_from_slice(&(refusal.code as u16).to_le_bytes());
                frame[24..32].copy_from_slice(&refusal.detail.to_le_bytes());
                frame
            }
        }
    }
}

impl<'a> Answer<'a> {
    /// Parses one message a producer sent.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, FrameError> {
        let (kind, id) = parse_header(bytes)?;
        let fields = Fields(bytes);
        match kind {
            PUBLISHED => {
                fields.at_least(kind, PUBLISHED_FIXED_LEN)?;
                fields.zero(17..18)?;
                fields.zero(52..56)?;
                let tier = Tier::from_wire(bytes[16])
                    .ok_or(FrameError::UnknownTier { tier: bytes[16] })?;
                let head_len = bounded("head", fields.u32_at(20), MAX_HEAD_LEN)?;
                let len = fields.u32_at(36);
                let body_len = match tier {
                    Tier::Inline => bounded("inline body", len, MAX_INLINE_LEN)?,
                    Tier::Slot | Tier::Sealed => 0,
                };
                let head_end = PUBLISHED_FIXED_LEN + head_len;
                fields.expect_len(kind, head_end + body_len)?;
                let status = u16::from_le_bytes([bytes[18], bytes[19]]);
                let head = ResponseHead::decode(status, &bytes[PUBLISHED_FIXED_LEN..head_end])?;
                let crc = fields.u32_at(48);
                let placement = if tier == Tier::Inline {
                    // Inline answers name no slot: the handle fields are zero, so that one
                    // meaning has one encoding.
                    if bytes[24..36].iter().chain(&bytes[40..48]).any(|&b| b != 0) {
                        return Err(FrameError::InlineHandle);
                    }
                    Placement::Inline {
                        body: &bytes[head_end..],
                        crc,
                    }
                } else {
                    let handle = Handle {
                        epoch: fields.u64_at(24),
                        slot: fields.u32_at(32),
                        len,
                        generation: fields.generation_at(40)?,
                        crc,
                    };
                    if tier == Tier::Slot {
                        Placement::Slot(handle)
                    } else {
                        Placement::Sealed(handle)
                    }
                };
                Ok(Answer::Published {
                    id,
                    head,
                    placement,
                })
            }
            REFUSED => {
                fields.expect_len(kind, REFUSED_LEN)?;
                fields.zero(18..24)?;
                let code = u16::from_le_bytes([bytes[16], bytes[17]]);
                let code =
                    RefusalCode::from_wire(code).ok_or(FrameError::UnknownRefusal { code })?;
                Ok(Answer::Refused {
                    id,
                    refusal: Refusal::new(code, fields.u64_at(24)),
                })
            }
            PUBLISH | RELEASE => Err(FrameError::WrongDirection { kind }),
            kind => Err(FrameError::UnknownKind { kind }),
        }
    }
}

/// A length field checked against its bound before it is used.
fn bounded(field: &'static str, len: u32, max: usize) -> Result<usize, FrameError> {
    let len = len as usize;
    if len > max {
        return Err(FrameError::Bound { field, len, max });
    }
    Ok(len)
}

fn header(kind: u8, id: u64, len: usize) -> Vec<u8> {
    let mut frame = vec![0; len];
    frame[0..4].copy_from_slice(&MAGIC);
    frame[4] = CONTROL_VERSION;
    frame[5] = kind;
    frame[8..16].copy_from_slice(&id.to_le_bytes());
    frame
}

/// The kind and id of a frame whose common header is valid.
fn parse_header(bytes: &[u8]) -> Result<(u8, u64), FrameError> {
    if bytes.len() < HEADER_LEN {
        return Err(FrameError::Short { len: bytes.len() });
    }
    if bytes[0..4] != MAGIC {
        return Err(FrameError::BadMagic);
    }
    if bytes[4] != CONTROL_VERSION {
        return Err(FrameError::Version { found: bytes[4] });
    }
    let fields = Fields(bytes);
    fields.zero(6..8)?;
    Ok((bytes[5], fields.u64_at(8)))
}

/// Little-endian fields of a frame whose length was checked.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn expect_len(&self, kind: u8, expected: usize) -> Result<(), FrameError> {
        if self.0.len() != expected {
            return Err(FrameError::Length {
                kind,
                len: self.0.len(),
                expected,
            });
        }
        Ok(())
    }

    /// At least the fixed part, so that its fields can be read before the lengths they give.
    fn at_least(&self, kind: u8, fixed: usize) -> Result<(), FrameError> {
        if self.0.len() < fixed {
            return Err(FrameError::Length {
                kind,
                len: self.0.len(),
                expected: fixed,
            });
        }
        Ok(())
    }

    fn zero(&self, range: std::ops::Range<usize>) -> Result<(), FrameError> {
        if self.0[range].iter().any(|&byte| byte != 0) {
            return Err(FrameError::Reserved);
        }
        Ok(())
    }

    fn u32_at(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.0[at..at + 4].try_into().expect("4 bytes"))
    }

    fn u64_at(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.0[at..at + 8].try_into().expect("8 bytes"))
    }

    fn generation_at(&self, at: usize) -> Result<u64, FrameError> {
        let generation = self.u64_at(at);
        if generation > MAX_GENERATION {
            return Err(FrameError::Generation { generation });
        }
        Ok(generation)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn handle() -> Handle {
        Handle {
            epoch: 0x9f86_d081_884c_7d65,
            slot: 3,
            generation: 0x1a,
            len: 256_873,
            crc: 0x5d41_402a,
        }
    }

    fn head() -> ResponseHead {
        let mut head = ResponseHead::default();
        head.set_content_type("application/json").unwrap();
        head.add_header("x-payload-crc32", "5d41402a").unwrap();
        head
    }

    #[test]
    fn every_frame_round_trips() {
        let requests = [
            Request::Publish {
                id: 7,
                deadline_ns: 123_456_789,
                request: b"GET /blobs?size=3\r\n\r\n",
            },
            Request::Publish {
                id: 8,
                deadline_ns: 1,
                request: &[0xff; MAX_REQUEST_LEN],
            },
            Request::Release {
                id: u64::MAX,
                slot: 63,
                generation: MAX_GENERATION,
            },
        ];
        for request in requests {
            assert_eq!(Request::decode(&request.encode()), Ok(request));
        }
        let inline = vec![7u8; MAX_INLINE_LEN];
        let mut answers = vec![
            Answer::Published {
                id: 9,
                head: head(),
                placement: Placement::Slot(handle()),
            },
            Answer::Published {
                id: 9,
                head: ResponseHead::default(),
                placement: Placement::Sealed(handle()),
            },
            Answer::Published {
                id: 10,
                head: head(),
                placement: Placement::Inline {
                    body: &inline,
                    crc: 1,
                },
            },
        ];
        answers.extend(RefusalCode::ALL.map(|code| Answer::Refused {
            id: 1,
            refusal: Refusal::new(code, 32),
        }));
        for answer in answers {
            assert_eq!(Answer::decode(&answer.encode()), Ok(answer));
        }
    }

    #[test]
    fn the_published_frame_matches_the_documented_layout() {
        let frame = Answer::Published {
            id: 0x0102_0304_0506_0708,
            head: head(),
            placement: Placement::Slot(handle()),
        }
        .encode();
        let mut head_bytes = Vec::new();
        head_bytes.extend_from_slice(&16u16.to_le_bytes());
        head_bytes.extend_from_slice(b"application/json");
        head_bytes.extend_from_slice(&1u16.to_le_bytes());
        head_bytes.extend_from_slice(&15u16.to_le_bytes());
        head_bytes.extend_from_slice(b"x-payload-crc32");
        head_bytes.extend_from_slice(&8u16.to_le_bytes());
        head_bytes.extend_from_slice(b"5d41402a");
        let expected: Vec<u8> = [
            &b"SHMC"[..],
            &[2, 3, 0, 0],
            &0x0102_0304_0506_0708u64.to_le_bytes(),
            &[2, 0],
            &200u16.to_le_bytes(),
            &(head_bytes.len() as u32).to_le_bytes(),
            &0x9f86_d081_884c_7d65u64.to_le_bytes(),
            &3u32.to_le_bytes(),
            &256_873u32.to_le_bytes(),
            &0x1au64.to_le_bytes(),
            &0x5d41_402au32.to_le_bytes(),
            &[0; 4],
            &head_bytes,
        ]
        .concat();
        assert_eq!(frame, expected);
    }

    #[test]
    fn malformed_frames_are_named() {
        let publish = Request::Publish {
            id: 1,
            deadline_ns: 1,
            request: b"abc",
        }
        .encode();
        assert_eq!(
            Request::decode(&publish[..10]),
            Err(FrameError::Short { len: 10 })
        );
        assert_eq!(
            Request::decode(&publish[..34]),
            Err(FrameError::Length {
                kind: PUBLISH,
                len: 34,
                expected: 35
            })
        );
        let mut bad = publish.clone();
        bad[0] = b'X';
        assert_eq!(Request::decode(&bad), Err(FrameError::BadMagic));
        let mut bad = publish.clone();
        bad[4] = 1;
        assert_eq!(Request::decode(&bad), Err(FrameError::Version { found: 1 }));
        assert_eq!(other_version_id(&bad), Some(1));
        assert_eq!(other_version_id(&publish), None);
        let mut bad = publish.clone();
        bad[29] = 1;
        assert_eq!(Request::decode(&bad), Err(FrameError::Reserved));
        let mut bad = publish.clone();
        bad[5] = 9;
        assert_eq!(
            Request::decode(&bad),
            Err(FrameError::UnknownKind { kind: 9 })
        );
        let mut bad = publish.clone();
        bad[24..28].copy_from_slice(&(MAX_REQUEST_LEN as u32 + 1).to_le_bytes());
        assert_eq!(
            Request::decode(&bad),
            Err(FrameError::Bound {
                field: "request",
                len: MAX_REQUEST_LEN + 1,
                max: MAX_REQUEST_LEN
            })
        );
        assert_eq!(
            Answer::decode(&publish),
            Err(FrameError::WrongDirection { kind: PUBLISH })
        );
        let mut refused = Answer::Refused {
            id: 1,
            refusal: Refusal::new(RefusalCode::Exhausted, 0),
        }
        .encode();
        refused[16] = 99;
        assert_eq!(
            Answer::decode(&refused),
            Err(FrameError::UnknownRefusal { code: 99 })
        );
    }

    #[test]
    fn malformed_answers_are_named() {
        let inline = Answer::Published {
            id: 1,
            head: head(),
            placement: Placement::Inline {
                body: b"hello",
                crc: 5,
            },
        }
        .encode();
        let mut bad = inline.clone();
        bad[16] = 4;
        assert_eq!(
            Answer::decode(&bad),
            Err(FrameError::UnknownTier { tier: 4 })
        );
        let mut bad = inline.clone();
        bad[32] = 1;
        assert_eq!(Answer::decode(&bad), Err(FrameError::InlineHandle));
        let mut bad = inline.clone();
        bad[36..40].copy_from_slice(&(MAX_INLINE_LEN as u32 + 1).to_le_bytes());
        assert!(matches!(
            Answer::decode(&bad),
            Err(FrameError::Bound {
                field: "inline body",
                ..
            })
        ));
        let mut bad = inline.clone();
        bad[20..24].copy_from_slice(&(MAX_HEAD_LEN as u32 + 1).to_le_bytes());
        assert!(matches!(
            Answer::decode(&bad),
            Err(FrameError::Bound { field: "head", .. })
        ));
        assert!(matches!(
            Answer::decode(&inline[..inline.len() - 1]),
            Err(FrameError::Length { .. })
        ));
        let mut bad = inline.clone();
        bad[18..20].copy_from_slice(&7u16.to_le_bytes());
        assert_eq!(
            Answer::decode(&bad),
            Err(FrameError::Head(HeadError::Status(7)))
        );
        let mut bad = inline.clone();
        bad[17] = 1;
        assert_eq!(Answer::decode(&bad), Err(FrameError::Reserved));
    }
}
