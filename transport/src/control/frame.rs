//! The control channel's frames: what a consumer asks a producer over the descriptor socket once
//! the greeting (see [`crate::fdpass`]) has handed it the segment, and what the producer answers.
//!
//! # Transport
//!
//! The socket is `SOCK_SEQPACKET`: every frame is one message, sent and received whole, so a
//! frame is never split or merged with the next one, and a peer dying mid-send leaves no half
//! frame behind. A message whose length is not its kind's is a protocol error; the producer
//! closes a connection that sends one. An empty message cannot be told from the peer closing
//! (both read as zero bytes), so it closes the connection too.
//!
//! # Descriptors
//!
//! Exactly one frame carries a descriptor: a **published** answer whose handle's `len` is above
//! the segment's slot size (a sealed publication) carries the payload's memfd as `SCM_RIGHTS` on
//! the same message. No other frame carries one. A receiver leaves room for one descriptor
//! (`CMSG_SPACE(sizeof(int))`, `MSG_CMSG_CLOEXEC`) and treats as a protocol error, closing the
//! connection and every descriptor received: `MSG_CTRUNC`, more than one descriptor, a
//! descriptor on any other frame (a published answer within the slot size, a refusal, any
//! request), and a sealed-size published answer without one. The receiver then redeems it as
//! "Sealed publications" in [`crate::layout`] says.
//!
//! # Layout (little-endian; its version is [`CONTROL_VERSION`])
//!
//! Every frame starts with the same 16 bytes:
//!
//! | offset | size | field     | meaning                                                          |
//! |-------:|-----:|-----------|------------------------------------------------------------------|
//! | 0      | 4    | `magic`   | `b"SHMC"`                                                        |
//! | 4      | 1    | `version` | [`CONTROL_VERSION`]; a peer refuses any other                    |
//! | 5      | 1    | `kind`    | 1 publish, 2 release, 3 published, 4 refused                     |
//! | 6      | 2    | reserved  | 0                                                                |
//! | 8      | 8    | `id`      | chosen by the consumer, unique among its requests in flight; answers carry the id of their request |
//!
//! **publish** (consumer → producer, 40 bytes): publish the users payload for `count` and `seed`
//! into a slot and answer with its handle.
//!
//! | offset | size | field         | meaning                                                      |
//! |-------:|-----:|---------------|--------------------------------------------------------------|
//! | 16     | 4    | `count`       | users in the payload                                         |
//! | 20     | 4    | reserved      | 0                                                            |
//! | 24     | 8    | `seed`        | dataset seed                                                 |
//! | 32     | 8    | `deadline_ns` | `CLOCK_MONOTONIC` ns (the greeting checked both sides share it) after which the answer is of no use: the producer refuses a request it reads too late, and waits for a slot at most until then |
//!
//! **release** (consumer → producer, 32 bytes, never answered): the consumer will not redeem
//! this publication (its request was abandoned); free its slot now rather than at the TTL. `id`
//! is the publish request's. Only publications made for this connection are released.
//!
//! | offset | size | field        | meaning                        |
//! |-------:|-----:|--------------|--------------------------------|
//! | 16     | 4    | `slot`       | the handle's slot              |
//! | 20     | 4    | reserved     | 0                              |
//! | 24     | 8    | `generation` | the handle's generation        |
//!
//! **published** (producer → consumer, 48 bytes): the [`Handle`] of the publication; with the
//! payload's descriptor attached when `len` is above the slot size (see "Descriptors").
//!
//! | offset | size | field        |
//! |-------:|-----:|--------------|
//! | 16     | 8    | `epoch`      |
//! | 24     | 4    | `slot`       |
//! | 28     | 4    | `len`        |
//! | 32     | 8    | `generation` |
//! | 40     | 4    | `crc`        |
//! | 44     | 4    | reserved, 0  |
//!
//! **refused** (producer → consumer, 32 bytes): why there is no handle.
//!
//! | offset | size | field    | meaning                                        |
//! |-------:|-----:|----------|------------------------------------------------|
//! | 16     | 2    | `code`   | a [`RefusalCode`]                              |
//! | 18     | 6    | reserved | 0                                              |
//! | 24     | 8    | `detail` | a number that explains the refusal, or 0 ([`RefusalCode`] says which) |
//!
//! Reserved bytes must be zero: a decoder refuses a frame that sets them, so that a later
//! version can give them meaning without an old peer misreading it.

use thiserror::Error;

use crate::error::ClaimError;
use crate::handle::Handle;
use crate::layout::MAX_GENERATION;

/// The version of the frames above; changes whenever their layout or meaning does.
pub const CONTROL_VERSION: u8 = 1;

const MAGIC: [u8; 4] = *b"SHMC";
const HEADER_LEN: usize = 16;

/// The longest frame, for receive buffers. A buffer one byte longer tells a frame of this
/// length from a longer one the kernel would otherwise cut to size.
pub const MAX_FRAME_LEN: usize = 48;

const PUBLISH: u8 = 1;
const RELEASE: u8 = 2;
const PUBLISHED: u8 = 3;
const REFUSED: u8 = 4;

/// A consumer's request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Publish(PublishRequest),
    Release { id: u64, slot: u32, generation: u64 },
}

/// Publish the payload for `count` users from `seed` before `deadline_ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishRequest {
    pub id: u64,
    pub count: u32,
    pub seed: u64,
    /// `CLOCK_MONOTONIC` nanoseconds.
    pub deadline_ns: u64,
}

/// A producer's answer to a [`Request::Publish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Published { id: u64, handle: Handle },
    Refused { id: u64, refusal: Refusal },
}

impl Answer {
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

fn detail_text(code: RefusalCode, detail: u64) -> String {
    match code {
        RefusalCode::TooLarge => format!(" (payload of {detail} bytes)"),
        RefusalCode::PeerBusy | RefusalCode::SegmentBusy => {
            format!(" (limit {detail} unredeemed publications)")
        }
        _ => String::new(),
    }
}

/// The refusal codes; the numbers are the wire values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Error)]
#[repr(u16)]
pub enum RefusalCode {
    /// The request makes no payload (a count or seed out of range). `detail`: 0.
    #[error("bad request")]
    BadRequest = 1,
    /// The payload is larger than the producer publishes: above the slot size where it has no
    /// sealed publications, above its largest sealed payload otherwise. `detail`: the payload's
    /// length.
    #[error("payload too large")]
    TooLarge = 2,
    /// No slot came free before the deadline, or (for a sealed payload) no room under the
    /// producer's limit on sealed bytes in flight. `detail`: 0.
    #[error("every slot is busy")]
    Exhausted = 3,
    /// This connection already holds as many unredeemed publications as it may. `detail`: the limit.
    #[error("this peer holds too many unredeemed publications")]
    PeerBusy = 4,
    /// The segment already holds as many unredeemed publications as the producer allows.
    /// `detail`: the limit.
    #[error("too many unredeemed publications in the segment")]
    SegmentBusy = 5,
    /// The request was read after its deadline, or the deadline passed while it waited. `detail`: 0.
    #[error("deadline passed before the publication")]
    DeadlineExceeded = 6,
    /// The producer failed (its slot was reclaimed mid-write, the payload could not be made).
    /// `detail`: 0.
    #[error("the producer failed to publish")]
    Internal = 7,
}

impl RefusalCode {
    pub const ALL: [Self; 7] = [
        Self::BadRequest,
        Self::TooLarge,
        Self::Exhausted,
        Self::PeerBusy,
        Self::SegmentBusy,
        Self::DeadlineExceeded,
        Self::Internal,
    ];

    fn from_wire(value: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|code| *code as u16 == value)
    }
}

impl From<ClaimError> for Refusal {
    /// The refusal a publisher answers when its producer found no room.
    fn from(error: ClaimError) -> Self {
        let (code, detail) = match error {
            ClaimError::TooLarge { len, .. } => (RefusalCode::TooLarge, len as u64),
            ClaimError::Exhausted { .. } | ClaimError::BytesExhausted { .. } => {
                (RefusalCode::Exhausted, 0)
            }
            // A publisher that routes by size never asks for this.
            ClaimError::FitsInSlot { .. } => (RefusalCode::Internal, 0),
        };
        Self { code, detail }
    }
}

/// Why bytes are not a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
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
    #[error("frame kind {kind} is {len} bytes, expected {expected}")]
    Length {
        kind: u8,
        len: usize,
        expected: usize,
    },
    #[error("reserved bytes of a frame are not zero")]
    Reserved,
    #[error("unknown refusal code {code}")]
    UnknownRefusal { code: u16 },
    #[error("generation {generation} is beyond the largest a slot can have")]
    Generation { generation: u64 },
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        match *self {
            Request::Publish(PublishRequest {
                id,
                count,
                seed,
                deadline_ns,
            }) => {
                let mut frame = header(PUBLISH, id, 40);
                frame[16..20].copy_from_slice(&count.to_le_bytes());
                frame[24..32].copy_from_slice(&seed.to_le_bytes());
                frame[32..40].copy_from_slice(&deadline_ns.to_le_bytes());
                frame
            }
            Request::Release {
                id,
                slot,
                generation,
            } => {
                let mut frame = header(RELEASE, id, 32);
                frame[16..20].copy_from_slice(&slot.to_le_bytes());
                frame[24..32].copy_from_slice(&generation.to_le_bytes());
                frame
            }
        }
    }

    /// Parses one message a consumer sent.
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        let (kind, id) = parse_header(bytes)?;
        let fields = Fields(bytes);
        match kind {
            PUBLISH => {
                fields.expect_len(kind, 40)?;
                fields.zero(20..24)?;
                Ok(Request::Publish(PublishRequest {
                    id,
                    count: fields.u32_at(16),
                    seed: fields.u64_at(24),
                    deadline_ns: fields.u64_at(32),
                }))
            }
            RELEASE => {
                fields.expect_len(kind, 32)?;
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

impl Answer {
    pub fn encode(&self) -> Vec<u8> {
        match *self {
            Answer::Published { id, handle } => {
                let mut frame = header(PUBLISHED, id, 48);
                frame[16..24].copy_from_slice(&handle.epoch.to_le_bytes());
                frame[24..28].copy_from_slice(&handle.slot.to_le_bytes());
                frame[28..32].copy_from_slice(&handle.len.to_le_bytes());
                frame[32..40].copy_from_slice(&handle.generation.to_le_bytes());
                frame[40..44].copy_from_slice(&handle.crc.to_le_bytes());
                frame
            }
            Answer::Refused { id, refusal } => {
                let mut frame = header(REFUSED, id, 32);
                frame[16..18].copy_from_slice(&(refusal.code as u16).to_le_bytes());
                frame[24..32].copy_from_slice(&refusal.detail.to_le_bytes());
                frame
            }
        }
    }

    /// Parses one message a producer sent.
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        let (kind, id) = parse_header(bytes)?;
        let fields = Fields(bytes);
        match kind {
            PUBLISHED => {
                fields.expect_len(kind, 48)?;
                fields.zero(44..48)?;
                Ok(Answer::Published {
                    id,
                    handle: Handle {
                        epoch: fields.u64_at(16),
                        slot: fields.u32_at(24),
                        len: fields.u32_at(28),
                        generation: fields.generation_at(32)?,
                        crc: fields.u32_at(40),
                    },
                })
            }
            REFUSED => {
                fields.expect_len(kind, 32)?;
                fields.zero(18..24)?;
                let code = u16::from_le_bytes([bytes[16], bytes[17]]);
                let code =
                    RefusalCode::from_wire(code).ok_or(FrameError::UnknownRefusal { code })?;
                Ok(Answer::Refused {
                    id,
                    refusal: Refusal {
                        code,
                        detail: fields.u64_at(24),
                    },
                })
            }
            PUBLISH | RELEASE => Err(FrameError::WrongDirection { kind }),
            kind => Err(FrameError::UnknownKind { kind }),
        }
    }
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

    #[test]
    fn every_frame_round_trips() {
        let requests = [
            Request::Publish(PublishRequest {
                id: 7,
                count: 1000,
                seed: 42,
                deadline_ns: 123_456_789,
            }),
            Request::Release {
                id: u64::MAX,
                slot: 63,
                generation: MAX_GENERATION,
            },
        ];
        for request in requests {
            assert_eq!(Request::decode(&request.encode()), Ok(request));
        }
        let mut answers = vec![Answer::Published {
            id: 9,
            handle: handle(),
        }];
        answers.extend(RefusalCode::ALL.map(|code| Answer::Refused {
            id: 1,
            refusal: Refusal { code, detail: 32 },
        }));
        for answer in answers {
            assert_eq!(Answer::decode(&answer.encode()), Ok(answer));
        }
    }

    #[test]
    fn the_published_frame_matches_the_documented_layout() {
        let frame = Answer::Published {
            id: 0x0102_0304_0506_0708,
            handle: handle(),
        }
        .encode();
        let expected: Vec<u8> = [
            &b"SHMC"[..],
            &[1, 3, 0, 0],
            &0x0102_0304_0506_0708u64.to_le_bytes(),
            &0x9f86_d081_884c_7d65u64.to_le_bytes(),
            &3u32.to_le_bytes(),
            &256_873u32.to_le_bytes(),
            &0x1au64.to_le_bytes(),
            &0x5d41_402au32.to_le_bytes(),
            &[0; 4],
        ]
        .concat();
        assert_eq!(frame, expected);
    }

    #[test]
    fn malformed_frames_are_named() {
        let publish = Request::Publish(PublishRequest {
            id: 1,
            count: 1,
            seed: 1,
            deadline_ns: 1,
        })
        .encode();
        assert_eq!(
            Request::decode(&publish[..10]),
            Err(FrameError::Short { len: 10 })
        );
        assert_eq!(
            Request::decode(&publish[..39]),
            Err(FrameError::Length {
                kind: PUBLISH,
                len: 39,
                expected: 40
            })
        );
        let mut bad = publish.clone();
        bad[0] = b'X';
        assert_eq!(Request::decode(&bad), Err(FrameError::BadMagic));
        let mut bad = publish.clone();
        bad[4] = 2;
        assert_eq!(Request::decode(&bad), Err(FrameError::Version { found: 2 }));
        let mut bad = publish.clone();
        bad[21] = 1;
        assert_eq!(Request::decode(&bad), Err(FrameError::Reserved));
        let mut bad = publish.clone();
        bad[5] = 9;
        assert_eq!(
            Request::decode(&bad),
            Err(FrameError::UnknownKind { kind: 9 })
        );
        assert_eq!(
            Answer::decode(&publish),
            Err(FrameError::WrongDirection { kind: PUBLISH })
        );
        let mut refused = Answer::Refused {
            id: 1,
            refusal: Refusal {
                code: RefusalCode::Exhausted,
                detail: 0,
            },
        }
        .encode();
        refused[16] = 99;
        assert_eq!(
            Answer::decode(&refused),
            Err(FrameError::UnknownRefusal { code: 99 })
        );
    }
}
