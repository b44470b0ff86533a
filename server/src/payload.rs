//! A users body together with its producer-computed crc32, and how it is turned into an HTTP
//! response (the headers every users endpoint sets).

use std::io::{self, Write};

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::dataset::{User, users_json, write_json_array};
use crate::query::UsersQuery;
use crate::telemetry;
use crate::transport_header::{TRANSPORT_HEADER, Transport};

/// Header carrying the producer's crc32 (IEEE, as `crc32fast` computes it) of the body, written
/// as exactly 8 lowercase hex digits, e.g. `x-payload-crc32: 5c2a5546`.
pub const CRC_HEADER: &str = "x-payload-crc32";

/// The JSON body of a users response and the crc32 its producer computed over it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    pub bytes: Bytes,
    pub crc32: u32,
}

impl Payload {
    /// Serializes the users for `query` and checksums the result.
    pub fn generate(query: UsersQuery) -> Payload {
        Payload::from_bytes(users_json(query.count, query.seed).into())
    }

    /// Serializes already generated users (the per-request work users-service does).
    pub fn serialize(users: &[User]) -> Payload {
        Payload::from_bytes(serialize_body(users))
    }

    /// Wraps bytes this process produced, computing their crc32.
    pub fn from_bytes(bytes: Bytes) -> Payload {
        let crc32 = crc32fast::hash(&bytes);
        Payload { bytes, crc32 }
    }

    /// The response every users endpoint sends for a payload: the headers of
    /// [`BodySummary::response_headers`] and the bytes.
    pub fn into_response(self, transport: Transport) -> Response {
        (self.summary().response_headers(transport), self.bytes).into_response()
    }

    /// Its length and crc32.
    pub fn summary(&self) -> BodySummary {
        BodySummary {
            len: self.bytes.len() as u64,
            crc32: self.crc32,
        }
    }
}

/// The content type of a users body.
pub const JSON: &str = "application/json";

/// The length and crc32 of a body: what its response headers say, known without the body
/// being held (a [`Checksummed`] writer computes it while the body goes by).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodySummary {
    pub len: u64,
    pub crc32: u32,
}

impl BodySummary {
    /// The headers every users endpoint sends with a body: content-type, content-length,
    /// [`CRC_HEADER`] and [`TRANSPORT_HEADER`]. Also notes the transport in the request span and
    /// counts the bytes in `payload_bytes_total{transport}`.
    pub fn response_headers(self, transport: Transport) -> HeaderMap {
        telemetry::record_transport(transport);
        metrics::counter!("payload_bytes_total", "transport" => transport.as_str())
            .increment(self.len);
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(self.len));
        headers.insert(
            CRC_HEADER,
            HeaderValue::from_str(&format_crc(self.crc32)).expect("hex digits are a valid header"),
        );
        headers.insert(
            TRANSPORT_HEADER,
            HeaderValue::from_static(transport.as_str()),
        );
        headers
    }
}

/// Passes bytes through to a writer, keeping the length and crc32 of what it accepted.
pub struct Checksummed<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    len: u64,
}

impl<W> Checksummed<W> {
    pub fn new(inner: W) -> Checksummed<W> {
        Checksummed {
            inner,
            hasher: crc32fast::Hasher::new(),
            len: 0,
        }
    }

    /// Length and crc32 of the bytes written so far.
    pub fn summary(&self) -> BodySummary {
        BodySummary {
            len: self.len,
            crc32: self.hasher.clone().finalize(),
        }
    }
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let accepted = self.inner.write(buf)?;
        self.hasher.update(&buf[..accepted]);
        self.len += accepted as u64;
        Ok(accepted)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The wire form of a crc32 in [`CRC_HEADER`].
pub fn format_crc(crc32: u32) -> String {
    format!("{crc32:08x}")
}

/// Reads [`CRC_HEADER`]'s value back; anything but 8 hex digits is `None`.
pub fn parse_crc(text: &str) -> Option<u32> {
    if text.len() != 8 {
        return None;
    }
    u32::from_str_radix(text, 16).ok()
}

/// The JSON body for already generated users, without a checksum: the shared-memory path has
/// the slot's write guard compute the crc32 while it copies the body in, so computing it here
/// too would checksum every body twice.
pub fn serialize_body(users: &[User]) -> Bytes {
    // Records average ~365 bytes; reserving 512 each means one allocation instead of a dozen
    // grow-and-copy steps, and untouched capacity costs no memory pages.
    let mut bytes = Vec::with_capacity(2 + users.len() * 512);
    write_json_array(users, &mut bytes).expect("writing into a Vec cannot fail");
    bytes.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_header_round_trips_and_is_strict() {
        assert_eq!(format_crc(0x5c2a_5546), "5c2a5546");
        assert_eq!(format_crc(7), "00000007");
        assert_eq!(parse_crc("00000007"), Some(7));
        assert_eq!(parse_crc("7"), None);
        assert_eq!(parse_crc("5c2a55460"), None);
        assert_eq!(parse_crc("zzzzzzzz"), None);
    }

    #[test]
    fn serializing_generated_users_gives_the_dataset_body() {
        let query = UsersQuery { count: 12, seed: 4 };
        let users = crate::dataset::users(query.count, query.seed);
        assert_eq!(Payload::serialize(&users), Payload::generate(query));
    }

    #[test]
    fn checksummed_summarizes_what_its_writer_accepted() {
        let body = users_json(40, 2);
        let mut out = Checksummed::new(Vec::new());
        out.write_all(&body[..1_000]).unwrap();
        out.write_all(&body[1_000..]).unwrap();
        let summary = out.summary();
        assert_eq!(out.inner, body);
        let expected = BodySummary {
            len: body.len() as u64,
            crc32: crc32fast::hash(&body),
        };
        assert_eq!(summary, expected);
    }

    /// The cap's body, streamed into a sink: at least 64 MiB, and pinned. Every build checks
    /// the 64 MiB through a bound instead (`dataset::tests::every_seed_reaches_64_mib_at_the_cap`).
    #[test]
    #[ignore = "generates the 91 MiB cap body, ~8 s in a debug build; run it with \
                `cargo test --release -p shmbridge-server --lib -- --ignored cap_body` (~0.4 s)"]
    fn the_cap_body_is_over_64_mib_and_pinned() {
        let mut sink = Checksummed::new(io::sink());
        let len = crate::dataset::write_users_json(
            crate::dataset::MAX_COUNT,
            crate::dataset::DEFAULT_SEED,
            &mut sink,
        )
        .unwrap();
        let summary = sink.summary();
        assert_eq!(summary.len, len);
        assert!(len >= 64 << 20, "{len}");
        assert_eq!(
            (len, format_crc(summary.crc32).as_str()),
            (95_663_254, "a42c7161")
        );
    }

    #[test]
    fn response_carries_every_header() {
        let payload = Payload::generate(UsersQuery { count: 3, seed: 1 });
        let response = payload.clone().into_response(Transport::Shm);
        let headers = response.headers();
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            headers[header::CONTENT_LENGTH],
            payload.bytes.len().to_string()
        );
        assert_eq!(
            headers[CRC_HEADER],
            format_crc(crc32fast::hash(&payload.bytes))
        );
        assert_eq!(headers[TRANSPORT_HEADER], "shm");
    }
}
