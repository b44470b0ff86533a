//! Body verification: every 200 body is compared with the exact bytes the producer publishes for
//! its request (the users dataset's body for a `count`/`seed`, the blob generator's for a
//! `/blobs` query) and with the `x-payload-crc32` header. A mismatch is a corruption, reported
//! with the first differing offset; Locust would have counted it as a success. A path whose
//! bytes nothing here can generate is checked against its header alone ([`Expected::ChecksumOnly`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use shmbridge_server::blobs::{BlobQuery, blob_bytes};

/// The response header carrying the producer's CRC-32 of the payload.
pub const CRC_HEADER: &str = "x-payload-crc32";

/// Produces the exact body a correct gateway returns for a `count`/`seed`.
type ExpectedBodyFn = dyn Fn(u32, u64) -> Vec<u8> + Send + Sync;

/// What a 200 body must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Expected {
    /// The users dataset's body for `count` users from `seed`.
    Users { count: u32, seed: u64 },
    /// The blob `/blobs` makes for this query ([`blob_bytes`]).
    Blob(BlobQuery),
    /// Unknown bytes: the body's crc32 must match its `x-payload-crc32`, nothing more.
    ChecksumOnly,
}

/// The expected bytes of one request, computed once per run.
pub struct ExpectedBody {
    pub bytes: Vec<u8>,
    pub crc: u32,
}

/// Checks bodies against deterministic generators, caching one expected body per request.
pub struct BodyChecker {
    generate: Box<ExpectedBodyFn>,
    cache: Mutex<HashMap<Expected, Arc<ExpectedBody>>>,
}

/// Why a 200 response does not carry the published payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Corruption {
    /// The body differs from the expected bytes.
    Bytes {
        /// The first offset where the bytes differ; the shorter length if one is a prefix of the other.
        first_differing_offset: usize,
        expected_byte: Option<u8>,
        actual_byte: Option<u8>,
        expected_len: usize,
        actual_len: usize,
        expected_crc: u32,
        actual_crc: u32,
    },
    /// The bytes are right but the checksum header names another payload.
    Header { header_crc: u32, expected_crc: u32 },
    /// A body of a path with no known bytes whose crc32 is not its checksum header's.
    Checksum {
        header_crc: u32,
        actual_crc: u32,
        actual_len: usize,
    },
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::Bytes {
                first_differing_offset,
                expected_byte,
                actual_byte,
                expected_len,
                actual_len,
                expected_crc,
                actual_crc,
            } => {
                write!(
                    f,
                    "first differing offset {first_differing_offset} (expected "
                )?;
                write_byte(f, *expected_byte)?;
                f.write_str(", got ")?;
                write_byte(f, *actual_byte)?;
                write!(
                    f,
                    "); length {actual_len} (expected {expected_len}); crc32 {actual_crc:08x} (expected {expected_crc:08x})"
                )
            }
            Corruption::Header {
                header_crc,
                expected_crc,
            } => write!(
                f,
                "bytes match but {CRC_HEADER} is {header_crc:08x} (expected {expected_crc:08x})"
            ),
            Corruption::Checksum {
                header_crc,
                actual_crc,
                actual_len,
            } => write!(
                f,
                "crc32 {actual_crc:08x} of the {actual_len} bytes received is not {CRC_HEADER} {header_crc:08x} (no expected bytes for this path: checked by checksum only)"
            ),
        }
    }
}

fn write_byte(f: &mut fmt::Formatter<'_>, byte: Option<u8>) -> fmt::Result {
    match byte {
        Some(byte) => write!(f, "0x{byte:02x}"),
        None => f.write_str("end of body"),
    }
}

/// The verdict on one 200 response.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Verified,
    Corrupt(Corruption),
    /// The checksum header is missing or unreadable: a protocol failure, not a corruption,
    /// because the body itself may be right.
    BadHeader(String),
}

impl BodyChecker {
    /// `generate(count, seed)` must return the exact bytes the gateway serves for those
    /// parameters; blobs are [`blob_bytes`]'s.
    pub fn new(generate: impl Fn(u32, u64) -> Vec<u8> + Send + Sync + 'static) -> Self {
        BodyChecker {
            generate: Box::new(generate),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The expected body for `count`/`seed`, generated on first use.
    pub fn expected(&self, count: u32, seed: u64) -> Arc<ExpectedBody> {
        self.expected_body(Expected::Users { count, seed })
            .expect("a count has expected bytes")
    }

    /// The expected body of `expected`, generated on first use; `None` for
    /// [`Expected::ChecksumOnly`].
    pub fn expected_body(&self, expected: Expected) -> Option<Arc<ExpectedBody>> {
        if expected == Expected::ChecksumOnly {
            return None;
        }
        // Generating under the lock makes concurrent first requests wait for one generation
        // instead of each building the same 250 KB body.
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let body = cache.entry(expected).or_insert_with(|| {
            let bytes = match expected {
                Expected::Users { count, seed } => (self.generate)(count, seed),
                Expected::Blob(query) => blob_bytes(&query),
                Expected::ChecksumOnly => unreachable!("returned above"),
            };
            let crc = crc32fast::hash(&bytes);
            Arc::new(ExpectedBody { bytes, crc })
        });
        Some(Arc::clone(body))
    }

    /// Starts verifying a body for `count`/`seed` that will arrive in chunks.
    pub fn start(&self, count: u32, seed: u64) -> BodyVerification {
        self.start_expecting(Expected::Users { count, seed })
    }

    /// Starts verifying a body that must be `expected` and will arrive in chunks.
    pub fn start_expecting(&self, expected: Expected) -> BodyVerification {
        BodyVerification {
            expected: self.expected_body(expected),
            received: 0,
            first_difference: None,
            crc: crc32fast::Hasher::new(),
        }
    }

    /// Checks a whole 200 body for `count`/`seed` and the raw value of its checksum header.
    pub fn check(&self, count: u32, seed: u64, body: &[u8], crc_header: Option<&str>) -> Verdict {
        self.check_expecting(Expected::Users { count, seed }, body, crc_header)
    }

    /// Checks a whole 200 body that must be `expected` and the raw value of its checksum header.
    pub fn check_expecting(
        &self,
        expected: Expected,
        body: &[u8],
        crc_header: Option<&str>,
    ) -> Verdict {
        let mut verification = self.start_expecting(expected);
        verification.update(body);
        verification.finish(crc_header)
    }
}

/// One body being verified as it streams in: each chunk is compared with the expected bytes at
/// its offset and then dropped, so a 250 KB body is never buffered or copied.
pub struct BodyVerification {
    /// `None`: checked against the checksum header only.
    expected: Option<Arc<ExpectedBody>>,
    received: usize,
    /// (offset, expected byte, actual byte) of the first difference seen.
    first_difference: Option<(usize, Option<u8>, Option<u8>)>,
    /// Of the received bytes, for the corruption report (cheaper than one copy of the body).
    crc: crc32fast::Hasher,
}

impl BodyVerification {
    pub fn update(&mut self, chunk: &[u8]) {
        self.crc.update(chunk);
        if let Some(expected) = &self.expected
            && self.first_difference.is_none()
        {
            let expected_rest = expected.bytes.get(self.received..).unwrap_or_default();
            let overlap = chunk.len().min(expected_rest.len());
            let differing = first_differing_offset(&expected_rest[..overlap], &chunk[..overlap])
                .or((chunk.len() > overlap).then_some(overlap));
            if let Some(index) = differing {
                self.first_difference = Some((
                    self.received + index,
                    expected_rest.get(index).copied(),
                    chunk.get(index).copied(),
                ));
            }
        }
        self.received += chunk.len();
    }

    /// Bytes received so far.
    pub fn received(&self) -> usize {
        self.received
    }

    /// The verdict once the body has ended, given the raw value of its checksum header.
    pub fn finish(self, crc_header: Option<&str>) -> Verdict {
        let Some(expected) = &self.expected else {
            return self.finish_by_checksum(crc_header);
        };
        let first_difference = self.first_difference.or_else(|| {
            (self.received < expected.bytes.len()).then(|| {
                (
                    self.received,
                    expected.bytes.get(self.received).copied(),
                    None,
                )
            })
        });
        if let Some((offset, expected_byte, actual_byte)) = first_difference {
            return Verdict::Corrupt(Corruption::Bytes {
                first_differing_offset: offset,
                expected_byte,
                actual_byte,
                expected_len: expected.bytes.len(),
                actual_len: self.received,
                expected_crc: expected.crc,
                actual_crc: self.crc.finalize(),
            });
        }
        let Some(header) = crc_header else {
            return Verdict::BadHeader(format!("missing {CRC_HEADER} header"));
        };
        match parse_crc_header(header) {
            Ok(header_crc) if header_crc == expected.crc => Verdict::Verified,
            Ok(header_crc) => Verdict::Corrupt(Corruption::Header {
                header_crc,
                expected_crc: expected.crc,
            }),
            Err(reason) => Verdict::BadHeader(reason),
        }
    }

    /// The verdict on a body with no expected bytes: its crc32 against its header.
    fn finish_by_checksum(self, crc_header: Option<&str>) -> Verdict {
        let Some(header) = crc_header else {
            return Verdict::BadHeader(format!("missing {CRC_HEADER} header"));
        };
        let actual_crc = self.crc.finalize();
        match parse_crc_header(header) {
            Ok(header_crc) if header_crc == actual_crc => Verdict::Verified,
            Ok(header_crc) => Verdict::Corrupt(Corruption::Checksum {
                header_crc,
                actual_crc,
                actual_len: self.received,
            }),
            Err(reason) => Verdict::BadHeader(reason),
        }
    }
}

/// The first offset where `expected` and `actual` differ, or `None` when they are identical.
pub fn first_differing_offset(expected: &[u8], actual: &[u8]) -> Option<usize> {
    if expected == actual {
        return None;
    }
    Some(
        expected
            .iter()
            .zip(actual)
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| expected.len().min(actual.len())),
    )
}

/// Parses the header as the gateway writes it: exactly 8 hexadecimal digits.
pub fn parse_crc_header(value: &str) -> Result<u32, String> {
    if value.len() == 8 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        u32::from_str_radix(value, 16).map_err(|error| error.to_string())
    } else {
        Err(format!(
            "{CRC_HEADER} {value:?} is not 8 hexadecimal digits"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn payload(count: u32, seed: u64) -> Vec<u8> {
        (0..count as usize * 1000)
            .map(|i| (i as u64).wrapping_mul(seed) as u8)
            .collect()
    }

    fn header_for(bytes: &[u8]) -> String {
        format!("{:08x}", crc32fast::hash(bytes))
    }

    #[test]
    fn exact_body_with_matching_header_verifies() {
        let checker = BodyChecker::new(payload);
        let body = payload(250, 7);
        let verdict = checker.check(250, 7, &body, Some(&header_for(&body)));
        assert_eq!(verdict, Verdict::Verified);
    }

    #[test]
    fn single_flipped_byte_is_corrupt_at_its_offset() {
        let checker = BodyChecker::new(payload);
        let mut body = payload(250, 7);
        let original = body[123_456];
        body[123_456] ^= 0x01;
        // The header is the producer's checksum of the intended bytes: it cannot save the body.
        let header = header_for(&payload(250, 7));
        match checker.check(250, 7, &body, Some(&header)) {
            Verdict::Corrupt(Corruption::Bytes {
                first_differing_offset,
                expected_byte,
                actual_byte,
                ..
            }) => {
                assert_eq!(first_differing_offset, 123_456);
                assert_eq!(expected_byte, Some(original));
                assert_eq!(actual_byte, Some(original ^ 0x01));
            }
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn truncated_body_is_corrupt_at_its_end() {
        let checker = BodyChecker::new(payload);
        let body = payload(2, 3);
        let verdict = checker.check(2, 3, &body[..1500], Some(&header_for(&body)));
        let Verdict::Corrupt(corruption) = verdict else {
            panic!("expected corruption, got {verdict:?}");
        };
        assert!(
            corruption
                .to_string()
                .starts_with("first differing offset 1500 (expected 0x"),
            "{corruption}"
        );
        assert!(corruption.to_string().contains("got end of body"));
    }

    #[test]
    fn wrong_header_on_right_bytes_is_corrupt() {
        let checker = BodyChecker::new(payload);
        let body = payload(3, 3);
        let verdict = checker.check(3, 3, &body, Some("00000000"));
        assert!(matches!(
            verdict,
            Verdict::Corrupt(Corruption::Header { .. })
        ));
    }

    #[test]
    fn missing_or_malformed_header_is_a_failure_not_corruption() {
        let checker = BodyChecker::new(payload);
        let body = payload(3, 3);
        assert!(matches!(
            checker.check(3, 3, &body, None),
            Verdict::BadHeader(_)
        ));
        for bad in ["", "1234567", "123456789", "0x123456", "zzzzzzzz"] {
            assert!(
                matches!(checker.check(3, 3, &body, Some(bad)), Verdict::BadHeader(_)),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn expected_bodies_are_generated_once_per_parameter_pair() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let checker = BodyChecker::new(move |count, seed| {
            counter.fetch_add(1, Ordering::Relaxed);
            payload(count, seed)
        });
        for _ in 0..3 {
            checker.expected(2, 1);
            checker.expected(2, 2);
        }
        assert_eq!(calls.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn chunked_verification_finds_differences_across_chunk_boundaries() {
        let checker = BodyChecker::new(payload);
        let expected = payload(10, 5);
        let header = header_for(&expected);
        let verdict_in_chunks = |body: &[u8], chunk: usize| {
            let mut verification = checker.start(10, 5);
            for piece in body.chunks(chunk) {
                verification.update(piece);
            }
            assert_eq!(verification.received(), body.len());
            verification.finish(Some(&header))
        };
        for chunk in [1, 7, 4096, 20_000] {
            assert_eq!(verdict_in_chunks(&expected, chunk), Verdict::Verified);
            let mut flipped = expected.clone();
            flipped[4_097] ^= 0x80;
            assert_eq!(
                verdict_in_chunks(&flipped, chunk),
                checker.check(10, 5, &flipped, Some(&header)),
            );
            let Verdict::Corrupt(Corruption::Bytes {
                first_differing_offset,
                actual_crc,
                ..
            }) = verdict_in_chunks(&flipped, chunk)
            else {
                panic!("flipped byte not found with {chunk}-byte chunks");
            };
            assert_eq!(first_differing_offset, 4_097);
            assert_eq!(actual_crc, crc32fast::hash(&flipped));
            let mut longer = expected.clone();
            longer.extend_from_slice(b"tail");
            let Verdict::Corrupt(Corruption::Bytes {
                first_differing_offset,
                expected_byte,
                actual_byte,
                ..
            }) = verdict_in_chunks(&longer, chunk)
            else {
                panic!("trailing bytes not found with {chunk}-byte chunks");
            };
            assert_eq!(
                (first_differing_offset, expected_byte, actual_byte),
                (10_000, None, Some(b't'))
            );
        }
    }

    #[test]
    fn blobs_are_checked_against_the_generator_byte_for_byte() {
        use shmbridge_server::blobs::BlobPattern;

        let checker = BodyChecker::new(payload);
        let query = BlobQuery {
            size: 70_000,
            pattern: BlobPattern::Text,
            seed: 4,
        };
        let expected = Expected::Blob(query);
        let body = blob_bytes(&query);
        let header = header_for(&body);
        assert_eq!(
            checker.check_expecting(expected, &body, Some(&header)),
            Verdict::Verified
        );
        let mut flipped = body.clone();
        flipped[65_537] ^= 1;
        assert!(matches!(
            checker.check_expecting(expected, &flipped, Some(&header)),
            Verdict::Corrupt(Corruption::Bytes {
                first_differing_offset: 65_537,
                ..
            })
        ));
        // Generated once, for every request of that query.
        let first = checker.expected_body(expected).unwrap();
        assert!(Arc::ptr_eq(
            &first,
            &checker.expected_body(expected).unwrap()
        ));
    }

    #[test]
    fn a_path_with_no_expected_bytes_is_checked_by_its_checksum_header() {
        let checker = BodyChecker::new(payload);
        let body = b"whatever the upstream says".to_vec();
        assert!(checker.expected_body(Expected::ChecksumOnly).is_none());
        assert_eq!(
            checker.check_expecting(Expected::ChecksumOnly, &body, Some(&header_for(&body))),
            Verdict::Verified
        );
        let verdict =
            checker.check_expecting(Expected::ChecksumOnly, &body[1..], Some(&header_for(&body)));
        let Verdict::Corrupt(corruption @ Corruption::Checksum { actual_len: 25, .. }) = verdict
        else {
            panic!("expected a checksum corruption, got {verdict:?}");
        };
        assert!(
            corruption.to_string().contains("checked by checksum only"),
            "{corruption}"
        );
        assert!(matches!(
            checker.check_expecting(Expected::ChecksumOnly, &body, None),
            Verdict::BadHeader(_)
        ));
        assert!(matches!(
            checker.check_expecting(Expected::ChecksumOnly, &body, Some("xyz")),
            Verdict::BadHeader(_)
        ));
    }

    #[test]
    fn first_difference_of_prefixes_and_equal_slices() {
        assert_eq!(first_differing_offset(b"abc", b"abc"), None);
        assert_eq!(first_differing_offset(b"abc", b"abd"), Some(2));
        assert_eq!(first_differing_offset(b"abc", b"ab"), Some(2));
        assert_eq!(first_differing_offset(b"", b"a"), Some(0));
    }
}
