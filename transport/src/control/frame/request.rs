//! The frames a consumer sends: **publish** (a request to answer), **release** (a publication
//! it will not redeem) and **board request**, as the module's tables lay them out.

use super::fields::{Fields, bounded, header, parse_header};
use super::{
    BOARD, BOARD_REQUEST, BOARD_REQUEST_LEN, CONTROL_VERSION, FrameError, HEADER_LEN, MAGIC,
    MAX_REQUEST_LEN, PUBLISH, PUBLISH_FIXED_LEN, PUBLISHED, REFUSED, RELEASE, RELEASE_LEN,
};

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
    Board {
        id: u64,
    },
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
            Request::Board { id } => header(BOARD_REQUEST, id, BOARD_REQUEST_LEN),
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
            BOARD_REQUEST => {
                fields.expect_len(kind, BOARD_REQUEST_LEN)?;
                Ok(Request::Board { id })
            }
            PUBLISHED | REFUSED | BOARD => Err(FrameError::WrongDirection { kind }),
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
/// can answer it with a [`RefusalCode::Version`](super::RefusalCode::Version) refusal.
pub fn other_version_id(bytes: &[u8]) -> Option<u64> {
    (bytes.len() >= HEADER_LEN && bytes[0..4] == MAGIC && bytes[4] != CONTROL_VERSION)
        .then(|| Fields(bytes).u64_at(8))
}
