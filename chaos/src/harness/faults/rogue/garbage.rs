//! The `garbage` misbehaviour's frames: one malformed frame the producer must refuse to read
//! and close the connection for (random bytes, a publish frame at a wrong length or with a
//! reserved byte set, an answer sent the wrong way).

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use shmbridge::control::frame::{Answer, MAX_REQUEST_FRAME_LEN};
use shmbridge::control::{Refusal, RefusalCode};

use super::peer::{publish_frame, publish_len};

/// Reserved bytes of a version-2 publish frame: in the common header and after `request_len`.
pub(super) const PUBLISH_RESERVED: [usize; 6] = [6, 7, 28, 29, 30, 31];
/// The longest random garbage frame: past the producer's receive buffer, so the kernel cuts
/// it (it never starts with the magic, so it is never taken for an oversized request).
pub(super) const MAX_GARBAGE_LEN: usize = MAX_REQUEST_FRAME_LEN + 16;
/// The longest wrong-length frame: a publish frame longer than this is refused and answered,
/// not closed.
pub(super) const MAX_WRONG_LENGTH: usize = MAX_REQUEST_FRAME_LEN;
/// The magic every frame starts with (`shmbridge::control::frame`).
pub(super) const FRAME_MAGIC: &[u8] = b"SHMC";

/// A frame the producer must refuse to read, and close the connection for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "shape", rename_all = "kebab-case")]
pub enum Garbage {
    /// `len` random bytes drawn from `seed` (never a valid frame).
    Random { len: usize, seed: u64 },
    /// A valid publish frame cut or zero-padded to `len` bytes (at most the longest publish
    /// frame).
    WrongLength { len: usize },
    /// A valid publish frame with the reserved byte at `offset` set to `value`.
    Reserved { offset: usize, value: u8 },
    /// A producer's answer, sent to the producer.
    WrongDirection,
}

impl Garbage {
    pub(super) fn draw(rng: &mut ChaCha8Rng) -> Garbage {
        match rng.random_range(0..4) {
            0 => Garbage::Random {
                len: rng.random_range(1..=MAX_GARBAGE_LEN),
                seed: rng.random(),
            },
            1 => {
                let len = rng.random_range(16..MAX_WRONG_LENGTH);
                Garbage::WrongLength {
                    len: if len >= publish_len() { len + 1 } else { len },
                }
            }
            2 => Garbage::Reserved {
                offset: PUBLISH_RESERVED[rng.random_range(0..PUBLISH_RESERVED.len())],
                value: rng.random_range(1..=u8::MAX),
            },
            _ => Garbage::WrongDirection,
        }
    }

    pub(super) fn shape(&self) -> &'static str {
        match self {
            Garbage::Random { .. } => "random",
            Garbage::WrongLength { .. } => "wrong length",
            Garbage::Reserved { .. } => "reserved byte",
            Garbage::WrongDirection => "wrong direction",
        }
    }

    /// The bytes sent.
    pub fn bytes(&self) -> Vec<u8> {
        match *self {
            Garbage::Random { len, seed } => {
                let mut bytes = vec![0; len];
                ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut bytes);
                // Random bytes start with the magic once in 2^32 draws; never let them parse,
                // nor be answered as another version's frame or an oversized request.
                if bytes.starts_with(FRAME_MAGIC) {
                    bytes[0] ^= 0xff;
                }
                bytes
            }
            Garbage::WrongLength { len } => {
                let mut bytes = publish_frame();
                bytes.resize(len, 0);
                bytes
            }
            Garbage::Reserved { offset, value } => {
                let mut bytes = publish_frame();
                bytes[offset] = value;
                bytes
            }
            Garbage::WrongDirection => Answer::Refused {
                id: 1,
                refusal: Refusal {
                    code: RefusalCode::Exhausted,
                    detail: 0,
                },
            }
            .encode(),
        }
    }
}
