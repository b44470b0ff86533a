//! HTTP over the control channel: the convention by which a gateway asks a service for an HTTP
//! resource in a publish frame's opaque request, so that any service, in any language, can
//! answer the routes it serves over HTTP through shared memory as well. The response needs no
//! convention: the answer's head already carries a status, a content type and headers.
//!
//! # Encoding
//!
//! An HTTP/1.1 request head without the version, then the body:
//!
//! ```text
//! METHOD SP TARGET CRLF
//! NAME ":" SP VALUE CRLF        (zero or more)
//! CRLF
//! BODY                          (the rest of the request, possibly empty)
//! ```
//!
//! `METHOD` is an HTTP token, `TARGET` the origin form (`/path?query`: starts with `/`, visible
//! ASCII, no spaces), names and values follow the rules of a response head
//! ([`ResponseHead`](crate::control::ResponseHead)), at most
//! [`MAX_HEADERS`] of them; the whole request is bounded by the frame's
//! [`MAX_REQUEST_LEN`](crate::control::frame::MAX_REQUEST_LEN).

use thiserror::Error;

use crate::control::frame::MAX_HEADERS;
use crate::control::head::{is_field_value, is_token};

/// A parsed HTTP request, borrowing from the bytes it came in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest<'a> {
    pub method: &'a str,
    /// `/path` or `/path?query`.
    pub target: &'a str,
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: &'a [u8],
}

/// Why bytes are not an HTTP request in this encoding.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum HttpRequestError {
    #[error("the request line is not `METHOD /target`")]
    RequestLine,
    #[error("a header line is malformed or breaks a bound")]
    Header,
    #[error("more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    #[error("the head does not end with an empty line")]
    Unterminated,
}

impl<'a> HttpRequest<'a> {
    /// A request with no headers and no body.
    pub fn get(target: &'a str) -> Self {
        Self {
            method: "GET",
            target,
            headers: Vec::new(),
            body: &[],
        }
    }

    /// The path, without the query.
    pub fn path(&self) -> &'a str {
        self.target
            .split_once('?')
            .map_or(self.target, |(path, _)| path)
    }

    /// The raw query (without `?`), if the target has one.
    pub fn query(&self) -> Option<&'a str> {
        self.target.split_once('?').map(|(_, query)| query)
    }

    /// The request's bytes.
    ///
    /// # Errors
    /// When a part would not parse back: the method, target, a header name or value breaks
    /// its rule, or there are too many headers.
    pub fn encode(&self) -> Result<Vec<u8>, HttpRequestError> {
        if !is_token(self.method.as_bytes()) {
            return Err(HttpRequestError::RequestLine);
        }
        if !is_target(self.target) {
            return Err(HttpRequestError::RequestLine);
        }
        if self.headers.len() > MAX_HEADERS {
            return Err(HttpRequestError::TooManyHeaders);
        }
        let mut out = Vec::with_capacity(64 + self.target.len() + self.body.len());
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.target.as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.headers {
            if !is_token(name.as_bytes()) || !is_value(value) {
                return Err(HttpRequestError::Header);
            }
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(self.body);
        Ok(out)
    }

    /// Parses a request, checking every rule [`HttpRequest::encode`] does.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, HttpRequestError> {
        let (line, mut rest) = split_line(bytes).ok_or(HttpRequestError::Unterminated)?;
        let (method, target) = line.split_once(' ').ok_or(HttpRequestError::RequestLine)?;
        if !is_token(method.as_bytes()) || !is_target(target) {
            return Err(HttpRequestError::RequestLine);
        }
        let mut headers = Vec::new();
        loop {
            let (line, after) = split_line(rest).ok_or(HttpRequestError::Unterminated)?;
            rest = after;
            if line.is_empty() {
                break;
            }
            if headers.len() == MAX_HEADERS {
                return Err(HttpRequestError::TooManyHeaders);
            }
            let (name, value) = line.split_once(": ").ok_or(HttpRequestError::Header)?;
            if !is_token(name.as_bytes()) || !is_value(value) {
                return Err(HttpRequestError::Header);
            }
            headers.push((name, value));
        }
        Ok(Self {
            method,
            target,
            headers,
            body: rest,
        })
    }
}

/// The line before the first CRLF, as ASCII, and the bytes after it.
fn split_line(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let end = bytes.windows(2).position(|pair| pair == b"\r\n")?;
    let line = std::str::from_utf8(&bytes[..end]).ok()?;
    Some((line, &bytes[end + 2..]))
}

/// A header value that the `": "` separator and the line's end carry back unchanged: no
/// leading or trailing whitespace.
fn is_value(value: &str) -> bool {
    is_field_value(value.as_bytes()) && value.trim_matches([' ', '\t']) == value
}

fn is_target(target: &str) -> bool {
    target.starts_with('/') && target.bytes().all(|byte| (b'!'..=b'~').contains(&byte))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_request_round_trips() {
        let request = HttpRequest {
            method: "POST",
            target: "/blobs?size=3&pattern=zeros",
            headers: vec![("accept", "application/json"), ("x-empty", "")],
            body: b"\r\nbody bytes\r\n",
        };
        let bytes = request.encode().unwrap();
        assert!(bytes.starts_with(b"POST /blobs?size=3&pattern=zeros\r\naccept: "));
        let parsed = HttpRequest::parse(&bytes).unwrap();
        assert_eq!(parsed, request);
        assert_eq!(parsed.path(), "/blobs");
        assert_eq!(parsed.query(), Some("size=3&pattern=zeros"));
        assert_eq!(HttpRequest::get("/users").query(), None);
    }

    #[test]
    fn what_would_not_parse_back_is_refused() {
        let mut request = HttpRequest::get("no-slash");
        assert_eq!(request.encode(), Err(HttpRequestError::RequestLine));
        request.target = "/a b";
        assert_eq!(request.encode(), Err(HttpRequestError::RequestLine));
        request.target = "/";
        request.method = "GE T";
        assert_eq!(request.encode(), Err(HttpRequestError::RequestLine));
        request.method = "GET";
        request.headers = vec![("x", "a\r\nb")];
        assert_eq!(request.encode(), Err(HttpRequestError::Header));
        request.headers = vec![("x", " padded")];
        assert_eq!(request.encode(), Err(HttpRequestError::Header));
        request.headers = vec![("x", "v"); MAX_HEADERS + 1];
        assert_eq!(request.encode(), Err(HttpRequestError::TooManyHeaders));
    }

    #[test]
    fn malformed_bytes_are_named() {
        assert_eq!(
            HttpRequest::parse(b"GET /"),
            Err(HttpRequestError::Unterminated)
        );
        assert_eq!(
            HttpRequest::parse(b"GET /\r\n"),
            Err(HttpRequestError::Unterminated)
        );
        assert_eq!(
            HttpRequest::parse(b"GET\r\n\r\n"),
            Err(HttpRequestError::RequestLine)
        );
        assert_eq!(
            HttpRequest::parse(b"GET /\r\nbad header\r\n\r\n"),
            Err(HttpRequestError::Header)
        );
        assert_eq!(
            HttpRequest::parse(b"GET /\xff\r\n\r\n"),
            Err(HttpRequestError::Unterminated)
        );
    }
}
