//! A response's head: the status and bounded metadata (content type, header pairs) that travel
//! in a published answer beside the body, and their encoding inside the frame (see "Head" in
//! [`frame`](super::frame)).
//!
//! Every rule is checked when a head is built ([`ResponseHead::set_content_type`],
//! [`ResponseHead::add_header`]) and again when one is decoded, so a head that exists can always
//! be encoded, and what a consumer decodes can always be written as HTTP: names are tokens,
//! values visible ASCII with spaces and tabs, no CR, LF or NUL anywhere.

use thiserror::Error;

/// The most header pairs a head carries.
pub const MAX_HEADERS: usize = 64;
/// The longest header name, in bytes.
pub const MAX_HEADER_NAME_LEN: usize = 256;
/// The longest header value (and content type), in bytes.
pub const MAX_HEADER_VALUE_LEN: usize = 4096;
/// The longest encoded head, in bytes: what a receive buffer leaves room for.
pub const MAX_HEAD_LEN: usize = 16 * 1024;

/// Why a head cannot be built or decoded.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum HeadError {
    #[error("status {0} is not a three-digit HTTP status")]
    Status(u16),
    #[error("header name {0:?} is empty, too long or not an HTTP token")]
    Name(String),
    #[error("a value of {len} bytes is too long or holds a byte HTTP does not allow")]
    Value { len: usize },
    #[error("more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    #[error("the head would take more than {MAX_HEAD_LEN} bytes")]
    TooLong,
    #[error("the encoded head is malformed")]
    Malformed,
}

/// A response's status, content type and headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    status: u16,
    content_type: String,
    headers: Vec<(String, String)>,
}

impl Default for ResponseHead {
    /// `200`, no content type, no headers.
    fn default() -> Self {
        Self {
            status: 200,
            content_type: String::new(),
            headers: Vec::new(),
        }
    }
}

impl ResponseHead {
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The content type; empty when the producer set none.
    pub fn content_type(&self) -> &str {
        &self.content_type
    }

    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    pub fn set_status(&mut self, status: u16) -> Result<(), HeadError> {
        check_status(status)?;
        self.status = status;
        Ok(())
    }

    pub fn set_content_type(&mut self, content_type: &str) -> Result<(), HeadError> {
        check_value(content_type.as_bytes())?;
        self.grow(|head| head.content_type = content_type.to_owned())
    }

    /// Adds a header pair (names are kept as given; HTTP compares them case-insensitively).
    pub fn add_header(&mut self, name: &str, value: &str) -> Result<(), HeadError> {
        check_name(name.as_bytes())?;
        check_value(value.as_bytes())?;
        if self.headers.len() == MAX_HEADERS {
            return Err(HeadError::TooManyHeaders);
        }
        self.grow(|head| head.headers.push((name.to_owned(), value.to_owned())))
    }

    /// Applies `change` unless the head would then pass [`MAX_HEAD_LEN`].
    fn grow(&mut self, change: impl FnOnce(&mut Self)) -> Result<(), HeadError> {
        let mut changed = self.clone();
        change(&mut changed);
        if changed.encoded_len() > MAX_HEAD_LEN {
            return Err(HeadError::TooLong);
        }
        *self = changed;
        Ok(())
    }

    /// Bytes of [`ResponseHead::encode_into`]'s output (the status travels in the frame's fixed part).
    pub(crate) fn encoded_len(&self) -> usize {
        4 + self.content_type.len()
            + self
                .headers
                .iter()
                .map(|(name, value)| 4 + name.len() + value.len())
                .sum::<usize>()
    }

    /// Appends the encoding: `u16` content-type length and bytes, `u16` header count, then each
    /// header as `u16` name length, name, `u16` value length, value (little-endian).
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        let mut put = |bytes: &[u8]| {
            out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
            out.extend_from_slice(bytes);
        };
        put(self.content_type.as_bytes());
        out.extend_from_slice(&(self.headers.len() as u16).to_le_bytes());
        for (name, value) in &self.headers {
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(value.len() as u16).to_le_bytes());
            out.extend_from_slice(value.as_bytes());
        }
    }

    /// Parses a head of `status` from exactly `bytes`, checking every rule a built head obeys.
    pub(crate) fn decode(status: u16, bytes: &[u8]) -> Result<Self, HeadError> {
        check_status(status)?;
        if bytes.len() > MAX_HEAD_LEN {
            return Err(HeadError::TooLong);
        }
        let mut reader = Reader(bytes);
        let content_type = reader.value()?;
        let count = reader.u16()? as usize;
        if count > MAX_HEADERS {
            return Err(HeadError::TooManyHeaders);
        }
        let mut headers = Vec::with_capacity(count);
        for _ in 0..count {
            let name = reader.field()?;
            check_name(name)?;
            let value = reader.value()?;
            headers.push((ascii(name), value));
        }
        if !reader.0.is_empty() {
            return Err(HeadError::Malformed);
        }
        Ok(Self {
            status,
            content_type,
            headers,
        })
    }
}

/// The bytes of a head still to be read.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], HeadError> {
        if self.0.len() < len {
            return Err(HeadError::Malformed);
        }
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(taken)
    }

    fn u16(&mut self) -> Result<u16, HeadError> {
        let bytes = self.take(2)?;
        Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
    }

    /// A length-prefixed field.
    fn field(&mut self) -> Result<&'a [u8], HeadError> {
        let len = self.u16()? as usize;
        self.take(len)
    }

    fn value(&mut self) -> Result<String, HeadError> {
        let value = self.field()?;
        check_value(value)?;
        Ok(ascii(value))
    }
}

/// Bytes already checked to be ASCII.
fn ascii(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("checked ASCII")
}

fn check_status(status: u16) -> Result<(), HeadError> {
    if (100..=999).contains(&status) {
        Ok(())
    } else {
        Err(HeadError::Status(status))
    }
}

/// An RFC 9110 token (`tchar`s), 1 to [`MAX_HEADER_NAME_LEN`] bytes: a header name, a method.
pub(crate) fn is_token(text: &[u8]) -> bool {
    let tchar = |byte: u8| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte);
    !text.is_empty() && text.len() <= MAX_HEADER_NAME_LEN && text.iter().all(|&b| tchar(b))
}

/// Visible ASCII, spaces and tabs, at most [`MAX_HEADER_VALUE_LEN`] bytes: a header value.
pub(crate) fn is_field_value(value: &[u8]) -> bool {
    let allowed = |byte: u8| byte == b'\t' || (b' '..=b'~').contains(&byte);
    value.len() <= MAX_HEADER_VALUE_LEN && value.iter().all(|&b| allowed(b))
}

fn check_name(name: &[u8]) -> Result<(), HeadError> {
    if !is_token(name) {
        return Err(HeadError::Name(String::from_utf8_lossy(name).into_owned()));
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<(), HeadError> {
    if !is_field_value(value) {
        return Err(HeadError::Value { len: value.len() });
    }
    Ok(())
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn head() -> ResponseHead {
        let mut head = ResponseHead::default();
        head.set_status(404).unwrap();
        head.set_content_type("application/json").unwrap();
        head.add_header("x-request-id", "abc 123").unwrap();
        head.add_header("cache-control", "no-store").unwrap();
        head
    }

    #[test]
    fn a_head_round_trips_and_its_length_is_known() {
        let head = head();
        let mut bytes = Vec::new();
        head.encode_into(&mut bytes);
        assert_eq!(bytes.len(), head.encoded_len());
        assert_eq!(ResponseHead::decode(404, &bytes), Ok(head));
    }

    #[test]
    fn what_http_cannot_carry_is_refused_when_built() {
        let mut head = ResponseHead::default();
        assert_eq!(head.set_status(99), Err(HeadError::Status(99)));
        assert_eq!(head.set_status(1000), Err(HeadError::Status(1000)));
        assert!(matches!(
            head.add_header("bad name", "v"),
            Err(HeadError::Name(_))
        ));
        assert!(matches!(head.add_header("", "v"), Err(HeadError::Name(_))));
        assert!(matches!(
            head.add_header("x", "a\r\nset-cookie: evil"),
            Err(HeadError::Value { .. })
        ));
        assert!(matches!(
            head.set_content_type("text/plain\0"),
            Err(HeadError::Value { .. })
        ));
        let long = "v".repeat(MAX_HEADER_VALUE_LEN + 1);
        assert!(matches!(
            head.add_header("x", &long),
            Err(HeadError::Value { .. })
        ));
        assert_eq!(
            head,
            ResponseHead::default(),
            "a refused change changes nothing"
        );
    }

    #[test]
    fn a_head_stays_within_its_bounds() {
        let mut head = ResponseHead::default();
        let value = "v".repeat(MAX_HEADER_VALUE_LEN);
        let mut added = 0;
        let refused = loop {
            match head.add_header("x-filler", &value) {
                Ok(()) => added += 1,
                Err(error) => break error,
            }
        };
        assert_eq!(refused, HeadError::TooLong);
        assert_eq!(added, 3);
        assert!(head.encoded_len() <= MAX_HEAD_LEN);
        let mut head = ResponseHead::default();
        for _ in 0..MAX_HEADERS {
            head.add_header("a", "b").unwrap();
        }
        assert_eq!(head.add_header("a", "b"), Err(HeadError::TooManyHeaders));
    }

    #[test]
    fn malformed_encodings_are_refused() {
        let mut bytes = Vec::new();
        head().encode_into(&mut bytes);
        for cut in 0..bytes.len() {
            assert!(
                ResponseHead::decode(200, &bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            ResponseHead::decode(200, &longer),
            Err(HeadError::Malformed)
        );
        assert_eq!(ResponseHead::decode(42, &bytes), Err(HeadError::Status(42)));
        let mut bad_name = Vec::new();
        bad_name.extend_from_slice(&0u16.to_le_bytes());
        bad_name.extend_from_slice(&1u16.to_le_bytes());
        bad_name.extend_from_slice(&1u16.to_le_bytes());
        bad_name.push(b':');
        bad_name.extend_from_slice(&0u16.to_le_bytes());
        assert!(matches!(
            ResponseHead::decode(200, &bad_name),
            Err(HeadError::Name(_))
        ));
        let mut too_many = Vec::new();
        too_many.extend_from_slice(&0u16.to_le_bytes());
        too_many.extend_from_slice(&(MAX_HEADERS as u16 + 1).to_le_bytes());
        assert_eq!(
            ResponseHead::decode(200, &too_many),
            Err(HeadError::TooManyHeaders)
        );
    }
}
