//! The frames a producer sends back: **published** (a response head, where its body travels:
//! inline, slot or sealed, and the object version it is), **refused** and **board**, as the
//! module's tables lay them out.

use super::fields::{Fields, bounded, header, parse_header};
use super::{
    BOARD, BOARD_LEN, BOARD_REQUEST, FrameError, MAX_HEAD_LEN, MAX_INLINE_LEN, PUBLISH, PUBLISHED,
    PUBLISHED_FIXED_LEN, REFUSED, REFUSED_LEN, RELEASE, Refusal, RefusalCode, ResponseHead,
};
use crate::handle::Handle;

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
    /// The handle of a sealed publication's ticket (`len` any); the payload's descriptor comes
    /// with the message.
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

/// The object a published body is a version of, as the producer's version board names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ObjectVersion {
    pub key: u64,
    /// Never 0.
    pub version: u64,
}

/// A producer's answer to a [`Request::Publish`](super::Request::Publish) or a
/// [`Request::Board`](super::Request::Board).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer<'a> {
    Published {
        id: u64,
        head: ResponseHead,
        placement: Placement<'a>,
        object: Option<ObjectVersion>,
    },
    Refused {
        id: u64,
        refusal: Refusal,
    },
    /// The board's descriptor comes with the message.
    Board {
        id: u64,
        epoch: u64,
        entry_count: u32,
    },
}

impl Answer<'_> {
    pub fn id(&self) -> u64 {
        match self {
            Answer::Published { id, .. }
            | Answer::Refused { id, .. }
            | Answer::Board { id, .. } => *id,
        }
    }
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
                object,
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
                if let Some(object) = object {
                    frame[56..64].copy_from_slice(&object.key.to_le_bytes());
                    frame[64..72].copy_from_slice(&object.version.to_le_bytes());
                }
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
            Answer::Board {
                id,
                epoch,
                entry_count,
            } => {
                let mut frame = header(BOARD, *id, BOARD_LEN);
                frame[16..24].copy_from_slice(&epoch.to_le_bytes());
                frame[24..28].copy_from_slice(&entry_count.to_le_bytes());
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
                let object = match (fields.u64_at(56), fields.u64_at(64)) {
                    (0, 0) => None,
                    (_, 0) => return Err(FrameError::KeyWithoutVersion),
                    (key, version) => Some(ObjectVersion { key, version }),
                };
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
                    object,
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
            BOARD => {
                fields.expect_len(kind, BOARD_LEN)?;
                fields.zero(28..32)?;
                Ok(Answer::Board {
                    id,
                    epoch: fields.u64_at(16),
                    entry_count: fields.u32_at(24),
                })
            }
            PUBLISH | RELEASE | BOARD_REQUEST => Err(FrameError::WrongDirection { kind }),
            kind => Err(FrameError::UnknownKind { kind }),
        }
    }
}
