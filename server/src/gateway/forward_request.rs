//! A client's request as the gateway forwards it, whichever transport carries it: the method,
//! the upstream target (`/path?query`), the end-to-end headers and the whole body, read and
//! bounded before anything is asked of the upstream. Over shared memory it is written in the
//! control channel's HTTP request encoding (`shmbridge::http`), which bounds head and body
//! together by the channel's `MAX_REQUEST_LEN`; over REST the body alone is bounded by
//! [`MAX_REQUEST_BODY_BYTES`].

use std::pin::Pin;

use axum::extract::Request;
use axum::http::{HeaderMap, Method, header};
use bytes::{Bytes, BytesMut};
use http_body::Body as _;
use shmbridge::control::frame::MAX_REQUEST_LEN;
use shmbridge::http::HttpRequest;

use crate::api_error::ApiError;

use super::hop_by_hop;

/// Largest request body the gateway forwards at all (over REST; shared memory carries at most
/// `MAX_REQUEST_LEN` of head and body together). Above it the client gets a 413 and nothing
/// reaches the upstream.
pub const MAX_REQUEST_BODY_BYTES: usize = 1 << 20;

/// A request ready to forward.
#[derive(Clone, Debug)]
pub struct ForwardRequest {
    pub method: Method,
    /// The upstream's origin-form target: `/path` or `/path?query`, as the client wrote it.
    pub target: String,
    /// The end-to-end headers ([`hop_by_hop::request_headers`]).
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl ForwardRequest {
    /// A `GET` of `target` with no headers and no body (the seed's users routes).
    pub fn get(target: String) -> ForwardRequest {
        ForwardRequest {
            method: Method::GET,
            target,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    /// `request`, to be sent to the upstream's `target`: its end-to-end headers, and its body
    /// read whole up to [`MAX_REQUEST_BODY_BYTES`] (a declared or actual length above it is
    /// [`ApiError::RequestTooLarge`]).
    pub async fn read(request: Request, target: String) -> Result<ForwardRequest, ApiError> {
        let (parts, mut body) = request.into_parts();
        let too_large = ApiError::RequestTooLarge {
            limit: MAX_REQUEST_BODY_BYTES,
        };
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > MAX_REQUEST_BODY_BYTES as u64) {
            return Err(too_large);
        }
        let mut bytes = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            let frame = frame.map_err(|error| ApiError::RequestNotForwardable {
                reason: format!("reading the request body failed: {error}"),
            })?;
            // Trailers are hop-by-hop here: not forwarded.
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > MAX_REQUEST_BODY_BYTES {
                    return Err(too_large);
                }
                bytes.extend_from_slice(&data);
            }
        }
        Ok(ForwardRequest {
            method: parts.method,
            target,
            headers: hop_by_hop::request_headers(parts.headers),
            body: bytes.freeze(),
        })
    }

    pub fn is_head(&self) -> bool {
        self.method == Method::HEAD
    }

    /// Whether sending the request twice means the same as once (RFC 9110 §9.2.2: GET, HEAD,
    /// OPTIONS, TRACE, PUT, DELETE), so that a retry or a fallback after the upstream may have
    /// handled it once is allowed.
    pub fn is_idempotent(&self) -> bool {
        matches!(
            self.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        )
    }

    /// The target's path, without the query.
    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(self.target.as_str(), |(path, _)| path)
    }

    /// The target's query, without `?`.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, query)| query)
    }

    /// The request in the control channel's encoding. A request longer than `MAX_REQUEST_LEN`
    /// is [`ApiError::RequestTooLarge`]; one the encoding cannot carry (a header value with
    /// bytes outside visible ASCII, more headers than a head holds) is
    /// [`ApiError::RequestNotForwardable`]. Both mean "not over shared memory": under
    /// `--transport auto` the request goes over REST instead.
    pub fn encode(&self) -> Result<Vec<u8>, ApiError> {
        let too_large = ApiError::RequestTooLarge {
            limit: MAX_REQUEST_LEN,
        };
        if self.body.len() > MAX_REQUEST_LEN {
            return Err(too_large);
        }
        let mut headers = Vec::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            let value = value
                .to_str()
                .map_err(|_| ApiError::RequestNotForwardable {
                    reason: format!("the value of request header {name} is not visible ASCII"),
                })?;
            headers.push((name.as_str(), value));
        }
        let request = HttpRequest {
            method: self.method.as_str(),
            target: &self.target,
            headers,
            body: &self.body,
        };
        let bytes = request
            .encode()
            .map_err(|error| ApiError::RequestNotForwardable {
                reason: format!("{error} (request to {})", self.path()),
            })?;
        if bytes.len() > MAX_REQUEST_LEN {
            return Err(too_large);
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    async fn read(request: axum::http::Request<Body>) -> Result<ForwardRequest, ApiError> {
        let target = request.uri().to_string();
        ForwardRequest::read(request, target).await
    }

    #[tokio::test]
    async fn a_request_keeps_its_method_target_end_to_end_headers_and_body() {
        let request = axum::http::Request::post("/echo?x=1")
            .header("host", "gateway")
            .header("connection", "x-hop")
            .header("x-hop", "1")
            .header("x-kept", "2")
            .body(Body::from("payload"))
            .unwrap();
        let forwarded = read(request).await.unwrap();
        assert_eq!(forwarded.method, Method::POST);
        assert_eq!(forwarded.path(), "/echo");
        assert_eq!(forwarded.query(), Some("x=1"));
        assert_eq!(forwarded.body, "payload");
        assert_eq!(forwarded.headers.len(), 1);
        assert_eq!(forwarded.headers["x-kept"], "2");
        let encoded = forwarded.encode().unwrap();
        let parsed = HttpRequest::parse(&encoded).unwrap();
        assert_eq!(parsed.method, "POST");
        assert_eq!(parsed.target, "/echo?x=1");
        assert_eq!(parsed.headers, [("x-kept", "2")]);
        assert_eq!(parsed.body, b"payload");
    }

    #[tokio::test]
    async fn bodies_above_the_bounds_are_refused() {
        let over = vec![b'x'; MAX_REQUEST_BODY_BYTES + 1];
        let request = axum::http::Request::post("/")
            .body(Body::from(over))
            .unwrap();
        assert!(matches!(
            read(request).await,
            Err(ApiError::RequestTooLarge {
                limit: MAX_REQUEST_BODY_BYTES
            })
        ));
        let mut request = ForwardRequest::get("/".to_owned());
        request.body = vec![b'x'; MAX_REQUEST_LEN - 8].into();
        assert!(matches!(
            request.encode(),
            Err(ApiError::RequestTooLarge {
                limit: MAX_REQUEST_LEN
            })
        ));
        request.body = vec![b'x'; MAX_REQUEST_LEN - 64].into();
        assert!(request.encode().is_ok());
    }

    #[test]
    fn a_header_the_encoding_cannot_carry_is_named() {
        let mut request = ForwardRequest::get("/".to_owned());
        request.headers.insert(
            "x-latin",
            axum::http::HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        );
        assert!(matches!(
            request.encode(),
            Err(ApiError::RequestNotForwardable { .. })
        ));
    }
}
