//! What a reverse proxy passes on of a message's headers (RFC 9110 §7.6.1): everything but the
//! hop-by-hop fields — `Connection` and the fields it names, `Keep-Alive`, `Proxy-Connection`,
//! `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`, `Proxy-Authenticate`,
//! `Proxy-Authorization` — and the fields the gateway sets itself for the next hop (the
//! length, which it computes from the body it holds; `Host`; `Expect`). The same rules apply to
//! a request going to the upstream and to a response coming back, whichever transport carried
//! it, and a response's header block is bounded like a control-channel response head, so that
//! both transports answer alike.

use axum::http::header::{self, HeaderMap, HeaderName};
use shmbridge::control::frame::{MAX_HEAD_LEN, MAX_HEADERS};

/// The hop-by-hop fields every message loses (besides those its `Connection` names).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Most response headers passed on: as many as a control-channel response head carries.
pub const MAX_RESPONSE_HEADERS: usize = MAX_HEADERS;
/// Most bytes of response headers passed on (names, values and 4 bytes each, as a head counts
/// them): a control-channel response head's bound.
pub const MAX_RESPONSE_HEADER_BYTES: usize = MAX_HEAD_LEN;

/// Removes the hop-by-hop fields, the fields `Connection` names, and `also` (names in lower
/// case).
pub fn retain_end_to_end(headers: &mut HeaderMap, also: &[&HeaderName]) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(also.iter().copied()) {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// What a request passes on to the upstream: its end-to-end fields, without `Host` (the
/// upstream's is set by the next hop), `Content-Length` (set from the body forwarded) and
/// `Expect` (the gateway has read the whole body already).
pub fn request_headers(mut headers: HeaderMap) -> HeaderMap {
    retain_end_to_end(
        &mut headers,
        &[&header::HOST, &header::CONTENT_LENGTH, &header::EXPECT],
    );
    headers
}

/// The count and bytes of a header block, as a response head counts them.
pub fn block_size(headers: &HeaderMap) -> (usize, usize) {
    let bytes = headers
        .iter()
        .map(|(name, value)| 4 + name.as_str().len() + value.len())
        .sum();
    (headers.len(), bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_go() {
        let mut headers = map(&[
            ("connection", "close, X-Private"),
            ("connection", "x-other"),
            ("x-private", "1"),
            ("x-other", "2"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authenticate", "Basic"),
            ("proxy-authorization", "Basic eA=="),
            ("x-kept", "3"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("content-type", "text/plain"),
        ]);
        retain_end_to_end(&mut headers, &[]);
        // Removing reorders a header map: compare as a sorted list.
        let mut kept: Vec<_> = headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.to_str().unwrap()))
            .collect();
        kept.sort_unstable();
        assert_eq!(
            kept,
            [
                ("content-type", "text/plain"),
                ("set-cookie", "a=1"),
                ("set-cookie", "b=2"),
                ("x-kept", "3"),
            ]
        );
    }

    #[test]
    fn a_request_loses_what_the_next_hop_sets() {
        let headers = request_headers(map(&[
            ("host", "gateway:8080"),
            ("content-length", "3"),
            ("expect", "100-continue"),
            ("accept", "application/json"),
        ]));
        assert_eq!(headers, map(&[("accept", "application/json")]));
    }

    #[test]
    fn block_size_counts_like_a_head() {
        assert_eq!(block_size(&map(&[("ab", "cde"), ("f", "")])), (2, 9 + 5));
    }
}
