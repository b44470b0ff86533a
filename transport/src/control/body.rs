//! What a consumer gets for a request: the response head and the verified body, whichever tier
//! carried it. The body is one type for every tier, readable as `&[u8]` and convertible to a
//! [`bytes::Bytes`] without a copy: an inline body owns the bytes the answer carried, a slot's
//! owns its private verified copy, and a sealed payload's is the read-only mapping itself, which
//! no process can change once its seals were checked.

use std::ops::Deref;

use bytes::Bytes;

use crate::control::frame::{ObjectVersion, ResponseHead, Tier};

/// A verified response.
#[derive(Clone, Debug)]
pub struct Response {
    pub head: ResponseHead,
    /// The object version the producer published the body as, if any: while the producer's
    /// version board says it is current, the body may be served again without asking.
    pub object: Option<ObjectVersion>,
    pub body: Body,
}

/// Verified body bytes and the tier that carried them.
#[derive(Clone, Debug)]
pub struct Body {
    tier: Tier,
    bytes: Bytes,
}

impl Body {
    pub(crate) fn new(tier: Tier, bytes: Bytes) -> Self {
        Self { tier, bytes }
    }

    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// The bytes, sharing the body's memory (for a sealed payload, its mapping).
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

impl Deref for Body {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl AsRef<[u8]> for Body {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl From<Body> for Bytes {
    fn from(body: Body) -> Bytes {
        body.bytes
    }
}
