//! The byte-level helpers every frame is written and read with: the common 16-byte header, and
//! little-endian fields read only after the frame's length and bounds are checked.

use super::{CONTROL_VERSION, FrameError, HEADER_LEN, MAGIC};
use crate::layout::MAX_GENERATION;

/// A length field checked against its bound before it is used.
pub(super) fn bounded(field: &'static str, len: u32, max: usize) -> Result<usize, FrameError> {
    let len = len as usize;
    if len > max {
        return Err(FrameError::Bound { field, len, max });
    }
    Ok(len)
}

pub(super) fn header(kind: u8, id: u64, len: usize) -> Vec<u8> {
    let mut frame = vec![0; len];
    frame[0..4].copy_from_slice(&MAGIC);
    frame[4] = CONTROL_VERSION;
    frame[5] = kind;
    frame[8..16].copy_from_slice(&id.to_le_bytes());
    frame
}

/// The kind and id of a frame whose common header is valid.
pub(super) fn parse_header(bytes: &[u8]) -> Result<(u8, u64), FrameError> {
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
pub(super) struct Fields<'a>(pub(super) &'a [u8]);

impl Fields<'_> {
    pub(super) fn expect_len(&self, kind: u8, expected: usize) -> Result<(), FrameError> {
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
    pub(super) fn at_least(&self, kind: u8, fixed: usize) -> Result<(), FrameError> {
        if self.0.len() < fixed {
            return Err(FrameError::Length {
                kind,
                len: self.0.len(),
                expected: fixed,
            });
        }
        Ok(())
    }

    pub(super) fn zero(&self, range: std::ops::Range<usize>) -> Result<(), FrameError> {
        if self.0[range].iter().any(|&byte| byte != 0) {
            return Err(FrameError::Reserved);
        }
        Ok(())
    }

    pub(super) fn u32_at(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.0[at..at + 4].try_into().expect("4 bytes"))
    }

    pub(super) fn u64_at(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.0[at..at + 8].try_into().expect("8 bytes"))
    }

    pub(super) fn generation_at(&self, at: usize) -> Result<u64, FrameError> {
        let generation = self.u64_at(at);
        if generation > MAX_GENERATION {
            return Err(FrameError::Generation { generation });
        }
        Ok(generation)
    }
}
