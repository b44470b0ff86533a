//! One request: send, verify the body as it streams in, and classify the outcome, all bounded
//! by a deadline so a stalled server produces a timeout and never a hang.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use reqwest::{Client, StatusCode, Url};
use tokio::time::Instant;

use super::endpoint::Endpoint;
use super::stats::{Failure, FailureClass, Outcome};
use super::target::Resource;
use super::verify::{BodyChecker, CRC_HEADER, Expected, Verdict};
use shmbridge_server::transport_header::{TRANSPORT_HEADER, Transport};

/// What every request of a run shares: the client with its keep-alive pool, the URL of each
/// endpoint and resource, and the checker that knows the expected bytes.
pub struct RequestContext {
    client: Client,
    routes: HashMap<(Endpoint, Resource), Route>,
    checker: Arc<BodyChecker>,
}

/// Where one endpoint asks for one resource, and what the body must be.
struct Route {
    url: Url,
    expected: Expected,
}

/// The result of one request, ready for the recorder.
pub struct Completed {
    pub outcome: Outcome,
    pub body_bytes: u64,
    /// The gateway's `x-transport` on a 200: which path (and shm tier) the body took (`None`
    /// when absent or not one the gateway sends).
    pub transport: Option<Transport>,
}

impl RequestContext {
    /// `seed` is the dataset seed every count asks with. An endpoint that cannot carry a
    /// resource (shm-http and a path) gets no route: such a request fails without being sent
    /// (a run's profile refuses the pair before it starts).
    pub fn new(
        target: &Url,
        endpoints: &[Endpoint],
        resources: &[Resource],
        seed: u64,
        max_connections: usize,
        checker: Arc<BodyChecker>,
    ) -> Result<Self, reqwest::Error> {
        let client = Client::builder()
            // Loopback load must never be sent through a proxy taken from the environment.
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(max_connections)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        let mut routes = HashMap::new();
        for &endpoint in endpoints {
            for resource in resources {
                let Some(route) = resource.route(endpoint, seed) else {
                    continue;
                };
                let (path, query) = match route.split_once('?') {
                    Some((path, query)) => (path, Some(query)),
                    None => (route.as_str(), None),
                };
                let mut url = target.clone();
                url.set_path(path);
                url.set_query(query);
                let expected = resource.expected(seed);
                routes.insert((endpoint, resource.clone()), Route { url, expected });
            }
        }
        Ok(RequestContext {
            client,
            routes,
            checker,
        })
    }

    /// Sends one GET for `resource` to `endpoint` and gives up at `deadline`.
    pub async fn execute(
        &self,
        endpoint: Endpoint,
        resource: &Resource,
        deadline: Instant,
    ) -> Completed {
        let Some(route) = self.routes.get(&(endpoint, resource.clone())) else {
            return failed(
                FailureClass::Body,
                format!("endpoint {endpoint} with {resource} is not in this run"),
                0,
            );
        };
        match tokio::time::timeout_at(deadline, self.fetch(route)).await {
            Err(_elapsed) => failed(FailureClass::Timeout, String::new(), 0),
            Ok(Ok(completed) | Err(completed)) => completed,
        }
    }

    /// Sends the request and verifies the body as it streams in. `Err` carries a failure
    /// so that `?` ends the request at the first problem.
    async fn fetch(&self, route: &Route) -> Result<Completed, Completed> {
        let mut response = self
            .client
            .get(route.url.clone())
            .send()
            .await
            .map_err(|error| {
                let class = if error.is_timeout() {
                    FailureClass::Timeout
                } else {
                    FailureClass::Connection
                };
                failed(class, root_cause(&error), 0)
            })?;
        let status = response.status();
        if status != StatusCode::OK {
            let retry_after = response.headers().contains_key(RETRY_AFTER);
            let body = response.bytes().await.unwrap_or_default();
            return Err(Completed {
                outcome: Outcome::Failed(status_failure(status, retry_after, &body)),
                body_bytes: body.len() as u64,
                transport: None,
            });
        }
        let crc_header = match response.headers().get(CRC_HEADER) {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|_| {
                        failed(FailureClass::Body, format!("{CRC_HEADER} is not ASCII"), 0)
                    })?
                    .to_owned(),
            ),
        };
        let transport = response
            .headers()
            .get(TRANSPORT_HEADER)
            .and_then(|value| Transport::parse(value.to_str().ok()?));
        let mut verification = self.checker.start_expecting(route.expected);
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| failed(FailureClass::Body, root_cause(&error), 0))?
        {
            verification.update(&chunk);
        }
        let body_bytes = verification.received() as u64;
        let outcome = match verification.finish(crc_header.as_deref()) {
            Verdict::Verified => Outcome::Verified,
            Verdict::Corrupt(corruption) => Outcome::Corrupt(Box::new(corruption)),
            Verdict::BadHeader(reason) => Outcome::Failed(Failure {
                class: FailureClass::Body,
                detail: reason,
            }),
        };
        Ok(Completed {
            outcome,
            body_bytes,
            transport,
        })
    }
}

fn failed(class: FailureClass, detail: String, body_bytes: u64) -> Completed {
    Completed {
        outcome: Outcome::Failed(Failure { class, detail }),
        body_bytes,
        transport: None,
    }
}

/// The failure of an answer other than 200 (`retry_after`: whether it had a `Retry-After`
/// header). Of the error body only its stable `code` is kept: the message may hold slot numbers
/// or offsets, which would split one failure kind into many rows. A 503 without `Retry-After`
/// ends its detail with [`NO_RETRY_AFTER`]: it does not tell the client when to come back, so
/// it is no clean refusal, and it gets a row of its own.
pub fn status_failure(status: StatusCode, retry_after: bool, body: &[u8]) -> Failure {
    let mut detail = status_detail(status, body);
    if status == StatusCode::SERVICE_UNAVAILABLE && !retry_after {
        detail.push_str(NO_RETRY_AFTER);
    }
    Failure {
        class: FailureClass::Status(status.as_u16()),
        detail,
    }
}

/// How the detail of a 503 without `Retry-After` ends ([`status_failure`]).
pub const NO_RETRY_AFTER: &str = ", no Retry-After";

/// The status's reason phrase, and the `code` of the gateway's JSON error body
/// (`{"error": ..., "code": ...}`) when there is one, e.g. `Service Unavailable (upstream_timeout)`:
/// two 503s of different causes are two rows.
fn status_detail(status: StatusCode, body: &[u8]) -> String {
    let reason = status.canonical_reason().unwrap_or_default();
    match error_code(body) {
        Some(code) => format!("{reason} ({code})"),
        None => reason.to_owned(),
    }
}

/// The error body's `code`, if it is one of the short snake_case words the gateway sends;
/// anything else (another server's text) would be a row per answer.
fn error_code(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        code: String,
    }
    let code = serde_json::from_slice::<ErrorBody>(body).ok()?.code;
    let word = !code.is_empty()
        && code.len() <= MAX_CODE_LEN
        && code
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte == b'_');
    word.then_some(code)
}

/// The longest error code kept; the gateway's are under 25 characters.
const MAX_CODE_LEN: usize = 40;

/// The innermost cause of a client error (e.g. "Connection refused (os error 111)"): the outer
/// messages carry the URL, which would split identical failures into separate rows.
fn root_cause(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_failure_names_the_error_code() {
        let unavailable = StatusCode::SERVICE_UNAVAILABLE;
        let body =
            br#"{"error": "users-service did not answer in time", "code": "upstream_timeout"}"#;
        assert_eq!(
            status_detail(unavailable, body),
            "Service Unavailable (upstream_timeout)"
        );
        assert_eq!(
            status_detail(StatusCode::BAD_GATEWAY, br#"{"code":"shm_corrupt"}"#),
            "Bad Gateway (shm_corrupt)"
        );
        let refused = br#"{"error": "the gateway is busy", "code": "gateway_busy"}"#;
        let clean = status_failure(unavailable, true, refused);
        assert_eq!(clean.class, FailureClass::Status(503));
        assert_eq!(clean.detail, "Service Unavailable (gateway_busy)");
        assert_eq!(
            status_failure(unavailable, false, refused).detail,
            "Service Unavailable (gateway_busy), no Retry-After"
        );
        assert_eq!(
            status_failure(StatusCode::PAYLOAD_TOO_LARGE, false, b"").detail,
            "Payload Too Large",
            "only a 503 is told when to come back"
        );
        for not_a_code in [
            &b"<html>busy</html>"[..],
            br#"{"error": "no code"}"#,
            br#"{"code": "slot 17 at offset 4096"}"#,
            br#"{"code": ""}"#,
            br#"{"code": 503}"#,
        ] {
            assert_eq!(
                status_detail(unavailable, not_a_code),
                "Service Unavailable"
            );
        }
    }
}
