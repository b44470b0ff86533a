//! Handles: what a producer gives a consumer to name one publication, and their text form.
//!
//! Text form (it travels in HTTP headers and JSON): five lowercase-hex fields joined by `-`,
//! `EPOCH-SLOT-GENERATION-LEN-CRC`, e.g. `9f86d081884c7d65-3-1a-3eb69-5d41402a`. The epoch is
//! always 16 digits and the crc 8; the other fields have no leading zeros. Parsing accepts exactly
//! what formatting produces, so every valid handle has one spelling and round-trips exactly.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::layout::MAX_GENERATION;

/// Names one publication: a slot at one generation of one segment instance, with the length and
/// crc32 the producer computed over the bytes it wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Handle {
    pub epoch: u64,
    pub slot: u32,
    pub generation: u64,
    pub len: u32,
    pub crc: u32,
}

/// Why a string is not a handle.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum HandleParseError {
    #[error("handle is {len} bytes long, at most {MAX_TEXT_LEN} allowed")]
    TooLong { len: usize },
    #[error("handle has {found} fields, expected 5 (epoch-slot-generation-len-crc)")]
    FieldCount { found: usize },
    #[error("handle field {field} is not lowercase hexadecimal in canonical form")]
    NotCanonicalHex { field: &'static str },
    #[error("handle field {field} is out of range")]
    OutOfRange { field: &'static str },
}

/// Longest canonical text: 16 + 8 + 14 + 8 + 8 digits and 4 dashes.
const MAX_TEXT_LEN: usize = 58;

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:016x}-{:x}-{:x}-{:x}-{:08x}",
            self.epoch, self.slot, self.generation, self.len, self.crc
        )
    }
}

impl FromStr for Handle {
    type Err = HandleParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() > MAX_TEXT_LEN {
            return Err(HandleParseError::TooLong { len: text.len() });
        }
        let fields: Vec<&str> = text.split('-').collect();
        let [epoch, slot, generation, len, crc] = fields[..] else {
            return Err(HandleParseError::FieldCount {
                found: fields.len(),
            });
        };
        let handle = Self {
            epoch: parse_field("epoch", epoch, Width::Fixed(16))?,
            slot: narrow("slot", parse_field("slot", slot, Width::Minimal)?)?,
            generation: parse_field("generation", generation, Width::Minimal)?,
            len: narrow("len", parse_field("len", len, Width::Minimal)?)?,
            crc: narrow("crc", parse_field("crc", crc, Width::Fixed(8))?)?,
        };
        if handle.generation > MAX_GENERATION {
            return Err(HandleParseError::OutOfRange {
                field: "generation",
            });
        }
        Ok(handle)
    }
}

enum Width {
    /// Exactly this many digits, leading zeros included.
    Fixed(usize),
    /// No leading zeros (a lone "0" for zero).
    Minimal,
}

fn parse_field(field: &'static str, digits: &str, width: Width) -> Result<u64, HandleParseError> {
    let not_canonical = HandleParseError::NotCanonicalHex { field };
    let well_formed = !digits.is_empty()
        && digits.len() <= 16
        && digits
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && match width {
            Width::Fixed(n) => digits.len() == n,
            Width::Minimal => digits == "0" || !digits.starts_with('0'),
        };
    if !well_formed {
        return Err(not_canonical);
    }
    u64::from_str_radix(digits, 16).map_err(|_| not_canonical)
}

fn narrow(field: &'static str, value: u64) -> Result<u32, HandleParseError> {
    u32::try_from(value).map_err(|_| HandleParseError::OutOfRange { field })
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn sample() -> Handle {
        Handle {
            epoch: 0x9f86_d081_884c_7d65,
            slot: 3,
            generation: 0x1a,
            len: 256_873,
            crc: 0x5d41_402a,
        }
    }

    #[test]
    fn round_trips() {
        let text = sample().to_string();
        assert_eq!(text, "9f86d081884c7d65-3-1a-3eb69-5d41402a");
        assert_eq!(text.parse::<Handle>(), Ok(sample()));
    }

    #[test]
    fn extremes_round_trip_within_the_length_limit() {
        let largest = Handle {
            epoch: u64::MAX,
            slot: u32::MAX,
            generation: MAX_GENERATION,
            len: u32::MAX,
            crc: u32::MAX,
        };
        let text = largest.to_string();
        assert_eq!(text.len(), MAX_TEXT_LEN);
        assert_eq!(text.parse::<Handle>(), Ok(largest));
        let zero = Handle {
            epoch: 0,
            slot: 0,
            generation: 0,
            len: 0,
            crc: 0,
        };
        assert_eq!(zero.to_string().parse::<Handle>(), Ok(zero));
    }

    #[test]
    fn rejects_every_malformed_form() {
        let cases = [
            "",
            "-",
            "9f86d081884c7d65-3-1a-3eb69",
            "9f86d081884c7d65-3-1a-3eb69-5d41402a-0",
            "9F86D081884C7D65-3-1a-3eb69-5d41402a",
            "9f86d081884c7d6-3-1a-3eb69-5d41402a",
            "9f86d081884c7d65-03-1a-3eb69-5d41402a",
            "9f86d081884c7d65--1a-3eb69-5d41402a",
            "9f86d081884c7d65-3-1a-3eb69-5d41402",
            "9f86d081884c7d65-+3-1a-3eb69-5d41402a",
            "9f86d081884c7d65-3-1a-3eb69-5d41402a ",
            "9f86d081884c7d65-100000000-1a-3eb69-5d41402a",
            "9f86d081884c7d65-3-100000000000000-3eb69-5d41402a",
            "9f86d081884c7d65-3-1a-3éb69-5d41402a",
        ];
        for case in cases {
            assert!(case.parse::<Handle>().is_err(), "accepted {case:?}");
        }
    }

    #[test]
    fn rejects_long_input_before_splitting() {
        let long = "0-".repeat(10_000);
        assert_eq!(
            long.parse::<Handle>(),
            Err(HandleParseError::TooLong { len: long.len() })
        );
    }
}
