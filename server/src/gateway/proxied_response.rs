//! An upstream's answer as the gateway passes it back, whichever transport carried it: the
//! status, the end-to-end headers ([`hop_by_hop`]) with the content type, and the verified body
//! with its crc32. The gateway sets `content-length` from the body, `x-payload-crc32` from the
//! crc32 the body was verified against (a control channel's, or one computed as a REST body
//! arrived) and `x-transport` from the transport that carried it; an upstream's own values of
//! these are not passed on. An upstream's `x-payload-crc32` that disagrees with the verified body
//! is refused (502), never sent beside it.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use shmbridge::control::ResponseHead;

use crate::api_error::{ApiError, BadAnswer};
use crate::payload::{CRC_HEADER, format_crc, parse_crc};
use crate::query_cache::Weigh;
use crate::telemetry;
use crate::transport_header::{TRANSPORT_HEADER, Transport};

use super::hop_by_hop::{self, MAX_RESPONSE_HEADER_BYTES, MAX_RESPONSE_HEADERS};
use super::upstream::{self, RestAnswer};
use crate::memory_budget::{HeldBody, Reservation};

/// A verified answer, ready to send.
#[derive(Clone, Debug)]
pub struct Proxied {
    pub status: StatusCode,
    /// End-to-end headers, `content-type` among them. Without `content-length` and
    /// `x-payload-crc32` except in the answer to a `HEAD`, which has no body to compute them
    /// from, so the upstream's are passed on.
    pub headers: HeaderMap,
    pub body: Bytes,
    pub crc32: u32,
}

impl Proxied {
    /// An answer from the control channel: `head` and the `body` verified against `crc32`.
    /// `head_request`: the request was a `HEAD`.
    pub fn from_head(
        head: &ResponseHead,
        body: Bytes,
        crc32: u32,
        head_request: bool,
    ) -> Result<Proxied, ApiError> {
        let status = StatusCode::from_u16(head.status())
            .ok()
            .filter(|status| !status.is_informational())
            .ok_or_else(|| bad_head(format!("status {}", head.status())))?;
        let mut headers = HeaderMap::with_capacity(head.headers().len() + 1);
        for (name, value) in head.headers() {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad_head(format!("header name {name:?}")))?;
            let value =
                HeaderValue::from_str(value).map_err(|_| bad_head(format!("value of {name}")))?;
            headers.append(name, value);
        }
        if !head.content_type().is_empty() {
            let value = HeaderValue::from_str(head.content_type())
                .map_err(|_| bad_head("content type".to_owned()))?;
            headers.insert(header::CONTENT_TYPE, value);
        }
        Proxied::verified(status, headers, body, crc32, head_request, "shm")
    }

    /// An answer over REST, its crc32 already checked against the upstream's header if any.
    pub fn from_rest(answer: RestAnswer, head_request: bool) -> Result<Proxied, ApiError> {
        let RestAnswer {
            status,
            headers,
            body,
        } = answer;
        Proxied::verified(status, headers, body.bytes, body.crc32, head_request, "api")
    }

    /// Keeps the end-to-end headers, checks an upstream's `x-payload-crc32` against the body's
    /// verified crc32 (counted in `checksum_failures_total{transport}` when they differ), and
    /// bounds the header block.
    fn verified(
        status: StatusCode,
        mut headers: HeaderMap,
        body: Bytes,
        crc32: u32,
        head_request: bool,
        transport: &'static str,
    ) -> Result<Proxied, ApiError> {
        let transport_header = HeaderName::from_static(TRANSPORT_HEADER);
        if head_request {
            hop_by_hop::retain_end_to_end(&mut headers, &[&transport_header]);
        } else {
            hop_by_hop::retain_end_to_end(
                &mut headers,
                &[&transport_header, &header::CONTENT_LENGTH],
            );
            let claimed = headers.remove(CRC_HEADER);
            if let Some(claimed) = claimed {
                let claimed = claimed
                    .to_str()
                    .ok()
                    .and_then(parse_crc)
                    .ok_or_else(|| bad_upstream(BadAnswer::CrcHeader))?;
                if claimed != crc32 {
                    metrics::counter!("checksum_failures_total", "transport" => transport)
                        .increment(1);
                    return Err(bad_upstream(BadAnswer::BodyCrc {
                        body: crc32,
                        header: claimed,
                    }));
                }
            }
        }
        let (count, bytes) = hop_by_hop::block_size(&headers);
        if count > MAX_RESPONSE_HEADERS || bytes > MAX_RESPONSE_HEADER_BYTES {
            return Err(bad_upstream(BadAnswer::HeaderBlock {
                count,
                bytes,
                max_count: MAX_RESPONSE_HEADERS,
                max_bytes: MAX_RESPONSE_HEADER_BYTES,
            }));
        }
        Ok(Proxied {
            status,
            headers,
            body,
            crc32,
        })
    }

    /// For the seed's users routes, which answer the users body or a gateway error: a non-200
    /// answer becomes the gateway's error for it ([`upstream::status_error`]).
    pub fn ok_or_error(self) -> Result<Proxied, ApiError> {
        if self.status == StatusCode::OK {
            Ok(self)
        } else {
            Err(upstream::status_error(self.status, &self.body))
        }
    }

    /// The response: the status, the headers, `content-length`, `x-payload-crc32` and
    /// `x-transport: transport`. Notes the transport in the request span and counts the bytes in
    /// `payload_bytes_total{transport}`. For an answer a cache holds (and bounds).
    pub fn into_response(self, transport: Transport) -> Response {
        self.respond(transport, Body::from)
    }

    /// As [`Proxied::into_response`], the body keeping `reservation` until it is written.
    pub fn into_held_response(self, transport: Transport, reservation: Reservation) -> Response {
        self.respond(transport, |bytes| HeldBody::body(bytes, reservation))
    }

    fn respond(self, transport: Transport, body: impl FnOnce(Bytes) -> Body) -> Response {
        telemetry::record_transport(transport);
        metrics::counter!("payload_bytes_total", "transport" => transport.as_str())
            .increment(self.body.len() as u64);
        let len = self.body.len();
        let mut response = (self.status, body(self.body)).into_response();
        let headers = response.headers_mut();
        *headers = self.headers;
        if !headers.contains_key(header::CONTENT_LENGTH) {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        if !headers.contains_key(CRC_HEADER) {
            let crc = HeaderValue::from_str(&format_crc(self.crc32))
                .expect("hex digits are a valid header value");
            headers.insert(CRC_HEADER, crc);
        }
        headers.insert(
            TRANSPORT_HEADER,
            HeaderValue::from_static(transport.as_str()),
        );
        response
    }
}

impl Weigh for Proxied {
    fn weight(&self) -> usize {
        self.body.len() + hop_by_hop::block_size(&self.headers).1
    }
}

fn bad_head(detail: String) -> ApiError {
    bad_upstream(BadAnswer::Head { detail })
}

fn bad_upstream(reason: BadAnswer) -> ApiError {
    metrics::counter!("upstream_errors_total", "kind" => "bad_answer").increment(1);
    ApiError::BadUpstream { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: u16, headers: &[(&str, &str)]) -> ResponseHead {
        let mut head = ResponseHead::default();
        head.set_status(status).unwrap();
        head.set_content_type("text/plain").unwrap();
        for (name, value) in headers {
            head.add_header(name, value).unwrap();
        }
        head
    }

    async fn sent(proxied: Proxied, transport: Transport) -> (StatusCode, HeaderMap, Bytes) {
        let response = proxied.into_response(transport);
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, headers, body)
    }

    #[tokio::test]
    async fn a_head_becomes_the_response_with_the_gateways_own_headers() {
        let body = Bytes::from_static(b"hello");
        let crc = crc32fast::hash(&body);
        let head = head(
            404,
            &[
                ("x-kept", "1"),
                ("connection", "x-hop"),
                ("x-hop", "2"),
                ("content-length", "999"),
                ("x-transport", "api"),
                (CRC_HEADER, &format_crc(crc)),
            ],
        );
        let proxied = Proxied::from_head(&head, body.clone(), crc, false).unwrap();
        let (status, headers, sent_body) = sent(proxied, Transport::ShmInline).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(sent_body, body);
        assert_eq!(headers["content-type"], "text/plain");
        assert_eq!(headers["x-kept"], "1");
        assert!(headers.get("x-hop").is_none());
        assert!(headers.get("connection").is_none());
        assert_eq!(headers["content-length"], "5");
        assert_eq!(headers[CRC_HEADER], format_crc(crc));
        assert_eq!(headers[TRANSPORT_HEADER], "shm-inline");
    }

    #[test]
    fn a_crc_header_that_disagrees_with_the_verified_body_is_a_502() {
        for claimed in ["00000000", "nonsense"] {
            let head = head(200, &[(CRC_HEADER, claimed)]);
            let error = Proxied::from_head(&head, Bytes::from_static(b"x"), 7, false).unwrap_err();
            assert_eq!(error.status_code(), StatusCode::BAD_GATEWAY, "{claimed}");
        }
    }

    #[test]
    fn an_informational_status_is_not_an_answer() {
        let error = Proxied::from_head(&head(101, &[]), Bytes::new(), 0, false).unwrap_err();
        assert!(matches!(
            error,
            ApiError::BadUpstream {
                reason: BadAnswer::Head { .. }
            }
        ));
    }

    #[test]
    fn a_header_block_above_the_bound_is_a_502() {
        let mut headers = HeaderMap::new();
        for index in 0..=MAX_RESPONSE_HEADERS {
            headers.append(
                HeaderName::from_bytes(format!("x-{index}").as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        let answer = RestAnswer {
            status: StatusCode::OK,
            headers,
            body: crate::payload::Payload::from_bytes(Bytes::new()),
        };
        let error = Proxied::from_rest(answer, false).unwrap_err();
        assert!(matches!(
            error,
            ApiError::BadUpstream {
                reason: BadAnswer::HeaderBlock { .. }
            }
        ));
    }

    #[tokio::test]
    async fn the_answer_to_a_head_request_keeps_the_upstreams_length_and_crc() {
        let mut headers = HeaderMap::new();
        headers.insert("content-length", HeaderValue::from_static("1234"));
        headers.insert(CRC_HEADER, HeaderValue::from_static("0badc0de"));
        let answer = RestAnswer {
            status: StatusCode::OK,
            headers,
            body: crate::payload::Payload::from_bytes(Bytes::new()),
        };
        let proxied = Proxied::from_rest(answer, true).unwrap();
        let (_, headers, body) = sent(proxied, Transport::Api).await;
        assert!(body.is_empty());
        assert_eq!(headers["content-length"], "1234");
        assert_eq!(headers[CRC_HEADER], "0badc0de");
    }
}
