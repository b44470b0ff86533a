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
//! Exactly two frames carry a descriptor, as `SCM_RIGHTS` on the same message: a **published**
//! answer of tier `sealed` carries the payload's memfd, and a **board** answer the version
//! board's. No other frame carries one. A receiver leaves room for one descriptor
//! (`CMSG_SPACE(sizeof(int))`, `MSG_CMSG_CLOEXEC`) and treats as a protocol error, closing the
//! connection and every descriptor received: `MSG_CTRUNC`, more than one descriptor, a
//! descriptor on any other frame (an inline or slot answer, a refusal, any request), and a
//! sealed or board answer without one. The receiver then redeems a payload as "Sealed
//! publications" in [`crate::layout`] says, and checks a board as "Version board" there says.
//!
//! # Tiers
//!
//! The producer chooses where a body travels: **inline** in the answer itself (at most
//! [`MAX_INLINE_LEN`] bytes, and at most the producer's own threshold, below), in a **slot** of
//! the segment (at most the slot size), or as a **sealed** memfd (any length). A body made for
//! one answer takes the tier its actual size calls for: inline, then slot, then sealed above the
//! slot size. A body the producer keeps and hands out again (immutable: a cache's) may travel
//! sealed whatever its size, so a receiver that keeps what it verified copies and checks it
//! once. A receiver checks that a slot answer's length fits a slot: one above it is a protocol
//! error. The tier, never the length, tells a ticket from a slot.
//!
//! # Layout (little-endian; its version is [`CONTROL_VERSION`])
//!
//! Every frame starts with the same 16 bytes:
//!
//! | offset | size | field     | meaning                                                          |
//! |-------:|-----:|-----------|------------------------------------------------------------------|
//! | 0      | 4    | `magic`   | `b"SHMC"`                                                        |
//! | 4      | 1    | `version` | [`CONTROL_VERSION`]; a producer answers a frame of any other version with a `Version` refusal (in its own version, which the peer's decoder names as another version) and closes the connection |
//! | 5      | 1    | `kind`    | 1 publish, 2 release, 3 published, 4 refused, 5 board request, 6 board |
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
//! **published** (producer → consumer, 72 + `head_len` bytes, + `len` for an inline body): the
//! response head, where its body is, and which version of an object it is, if the producer
//! published one.
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
//! | 56     | 8          | `object_key` | the key this body is a version of; 0 when `object_version` is 0 |
//! | 64     | 8          | `object_version` | its version on the producer's version board (see "Version board" in [`crate::layout`]), current when the body was published; 0: none |
//! | 72     | `head_len` | `head`       | content type and headers, below                          |
//! | 72 + `head_len` | `len` | `body` | inline only: the body itself                              |
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
//! **board request** (consumer → producer, 16 bytes: the header alone): hand me your version
//! board. Answered with a **board** frame, or refused with [`RefusalCode::NoBoard`].
//!
//! **board** (producer → consumer, 32 bytes, with the board's memfd, read-only): the board the
//! `object_version` of every answer on this connection refers to.
//!
//! | offset | size | field         | meaning                                       |
//! |-------:|-----:|---------------|-----------------------------------------------|
//! | 16     | 8    | `epoch`       | the board's header's, non-zero                |
//! | 24     | 4    | `entry_count` | the board's header's                          |
//! | 28     | 4    | reserved      | 0                                             |
//!
//! A receiver trusts neither field: it checks the board file itself and refuses one whose
//! header disagrees with them.
//!
//! Reserved bytes must be zero, and every length is checked against its bound and against the
//! message before it is used: a decoder refuses a frame that breaks either, so that a later
//! version can give reserved bytes a meaning without an old peer misreading it.
//!
//! # Version history
//!
//! 1: a publish frame carried the demo dataset's parameters, the answer only a handle. 2:
//! opaque requests, a response head, three tiers, a sealed body always above the slot size. 3:
//! a sealed body of any length; no byte moved, but a version 2 receiver would refuse such an
//! answer as a protocol error, so it gets a version refusal instead. 4 (this): the version
//! board: board request and board frames, and the published frame's object key and version.

use thiserror::Error;

// The tables above are implemented one part a file: the consumer's frames (request), the
// producer's (answer), the refusal codes (refusal) and the byte-level helpers both directions
// share (fields).
mod answer;
mod fields;
mod refusal;
mod request;
#[cfg(all(test, not(loom)))]
mod tests;

pub use super::head::{
    HeadError, MAX_HEAD_LEN, MAX_HEADER_NAME_LEN, MAX_HEADER_VALUE_LEN, MAX_HEADERS, ResponseHead,
};
pub use answer::{Answer, ObjectVersion, Placement, Tier};
pub use refusal::{Refusal, RefusalCode};
pub use request::{Request, other_version_id, oversized_publish_id};

/// The version of the frames above; changes whenever their layout or meaning does.
pub const CONTROL_VERSION: u8 = 4;

/// The longest request a publish frame carries.
pub const MAX_REQUEST_LEN: usize = 64 * 1024;
/// The longest body a published answer carries inline. A producer's own threshold is at most
/// this (see [`DEFAULT_INLINE_THRESHOLD`](super::DEFAULT_INLINE_THRESHOLD)).
pub const MAX_INLINE_LEN: usize = 64 * 1024;

const MAGIC: [u8; 4] = *b"SHMC";
const HEADER_LEN: usize = 16;
const PUBLISH_FIXED_LEN: usize = 32;
const PUBLISHED_FIXED_LEN: usize = 72;
const RELEASE_LEN: usize = 32;
const REFUSED_LEN: usize = 32;
const BOARD_REQUEST_LEN: usize = HEADER_LEN;
const BOARD_LEN: usize = 32;

/// The longest publish frame, for the producer's receive buffer. A buffer one byte longer tells
/// a frame of this length from a longer one the kernel would otherwise cut to size.
pub const MAX_REQUEST_FRAME_LEN: usize = PUBLISH_FIXED_LEN + MAX_REQUEST_LEN;
/// The longest answer, for the consumer's receive buffer (one byte longer, as above).
pub const MAX_ANSWER_FRAME_LEN: usize = PUBLISHED_FIXED_LEN + MAX_HEAD_LEN + MAX_INLINE_LEN;

const PUBLISH: u8 = 1;
const RELEASE: u8 = 2;
const PUBLISHED: u8 = 3;
const REFUSED: u8 = 4;
const BOARD_REQUEST: u8 = 5;
const BOARD: u8 = 6;

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
    #[error("an object key without a version")]
    KeyWithoutVersion,
    #[error("generation {generation} is beyond the largest a slot can have")]
    Generation { generation: u64 },
    #[error("response head: {0}")]
    Head(#[from] HeadError),
}
