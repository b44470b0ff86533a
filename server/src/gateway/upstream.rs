//! The gateway's view of users-service over HTTP: a pooled keep-alive client, every exchange
//! bounded by one deadline, and every answer checked (content-length, crc32 header, handle
//! syntax) before it is trusted. [`Upstream::forward`] is the REST transport of the reverse
//! proxy: any method, path, query, headers and body, and any answer passed back; the other
//! exchanges are the gateway's own (health, the segment's socket, the HTTP signal). Every body
//! read is reserved in the gateway's memory budget as it arrives (its declared length up front).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use bytes::BytesMut;
use reqwest::Url;

use crate::api_error::{ApiError, BadAnswer, SEGMENT_UNAVAILABLE};
use crate::payload::{CRC_HEADER, Payload, parse_crc};
use crate::query::UsersQuery;
use crate::segment_info::SegmentInfo;
use shmbridge::Handle;

use super::forward_request::ForwardRequest;
use crate::memory_budget::{MemoryBudget, Reservation};

/// Largest body accepted from users-service: the `MAX_COUNT` body is 91.2 MiB at the default
/// seed (users vary by a few percent between seeds), so anything past this is garbage, not data.
pub const MAX_UPSTREAM_BODY_BYTES: usize = 128 << 20;

/// An upstream's answer over REST: its status and headers as sent, and its body, whose crc32
/// agreed with the upstream's `x-payload-crc32` where it sent one.
#[derive(Debug)]
pub struct RestAnswer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Payload,
}

/// A REST answer and the memory reservation its body holds, to be kept until it is written.
#[derive(Debug)]
pub struct Reserved<T> {
    pub answer: T,
    pub reservation: Reservation,
}

/// A users-service reachable over HTTP.
#[derive(Clone, Debug)]
pub struct Upstream {
    client: reqwest::Client,
    base: Url,
    deadline: Duration,
    budget: MemoryBudget,
    /// Whether the last exchange reached users-service, so a loss and a recovery are each
    /// logged once instead of once per failed request.
    reachable: Arc<AtomicBool>,
}

impl Upstream {
    /// A client for `base` (e.g. `http://127.0.0.1:8081`) keeping up to `max_idle` idle
    /// keep-alive connections, so steady traffic never pays a TCP handshake.
    /// Bodies are reserved in `budget` as they arrive.
    pub fn new(
        base: Url,
        deadline: Duration,
        max_idle: usize,
        budget: MemoryBudget,
    ) -> reqwest::Result<Upstream> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(max_idle)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .connect_timeout(deadline)
            .build()?;
        Ok(Upstream {
            client,
            base,
            deadline,
            budget,
            reachable: Arc::new(AtomicBool::new(true)),
        })
    }

    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// users-service's base URL (for logs and the operators' status).
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// Sends `request` to the upstream's same target and reads the whole answer, whatever its
    /// status: the body bounded by [`MAX_UPSTREAM_BODY_BYTES`], its length checked against a
    /// declared `content-length`, its crc32 against `x-payload-crc32` when the upstream sent one
    /// (a malformed one is refused too), and reserved in the memory budget as it arrives. The
    /// answer to a `HEAD` has no body to check.
    pub async fn forward(
        &self,
        request: &ForwardRequest,
    ) -> Result<Reserved<RestAnswer>, ApiError> {
        let url = self.url(request.path(), request.query());
        self.bounded(async {
            let mut builder = self
                .client
                .request(request.method.clone(), url)
                .headers(request.headers.clone());
            // No body, no `content-length: 0` on a GET.
            if !request.body.is_empty() {
                builder = builder.body(request.body.clone());
            }
            let response = builder.send().await.map_err(unreachable)?;
            let status = response.status();
            let headers = response.headers().clone();
            if request.is_head() {
                return Ok(Reserved {
                    answer: RestAnswer {
                        status,
                        headers,
                        body: Payload::from_bytes(Default::default()),
                    },
                    reservation: self.budget.reserve(0)?,
                });
            }
            let claimed_crc = match response.headers().get(CRC_HEADER) {
                Some(_) => Some(claimed_crc(&response)?),
                None => None,
            };
            let Reserved {
                answer: body,
                reservation,
            } = read_body(response, &self.budget).await?;
            if let Some(claimed) = claimed_crc.filter(|claimed| *claimed != body.crc32) {
                metrics::counter!("checksum_failures_total", "transport" => "api").increment(1);
                return Err(bad_upstream(BadAnswer::BodyCrc {
                    body: body.crc32,
                    header: claimed,
                }));
            }
            Ok(Reserved {
                answer: RestAnswer {
                    status,
                    headers,
                    body,
                },
                reservation,
            })
        })
        .await
    }

    /// `POST /shm/users` for `query`: users-service publishes into a slot and answers with the
    /// handle, which must parse and agree with the `x-payload-crc32` header.
    pub async fn publish_users(&self, query: UsersQuery) -> Result<Handle, ApiError> {
        let url = self.url("/shm/users", Some(&query.to_query_string()));
        self.bounded(async {
            let response = self.client.post(url).send().await.map_err(unreachable)?;
            let response = accept_ok(response, &self.budget).await?;
            let claimed_crc = claimed_crc(&response)?;
            let body = read_body(response, &self.budget).await?.answer.bytes;
            let text =
                std::str::from_utf8(&body).map_err(|_| bad_upstream(BadAnswer::HandleNotUtf8))?;
            let handle: Handle = text.trim().parse().map_err(|error| {
                bad_upstream(BadAnswer::Handle {
                    text: text.to_owned(),
                    error,
                })
            })?;
            if handle.crc != claimed_crc {
                return Err(bad_upstream(BadAnswer::HandleCrc {
                    handle: handle.crc,
                    header: claimed_crc,
                }));
            }
            Ok(handle)
        })
        .await
    }

    /// `GET /shm/segment`: where users-service serves its segment descriptor.
    pub async fn segment_info(&self) -> Result<SegmentInfo, ApiError> {
        let url = self.url("/shm/segment", None);
        self.bounded(async {
            let response = self.client.get(url).send().await.map_err(unreachable)?;
            let body = read_body(accept_ok(response, &self.budget).await?, &self.budget)
                .await?
                .answer
                .bytes;
            serde_json::from_slice(&body)
                .map_err(|error| bad_upstream(BadAnswer::SegmentInfo(error)))
        })
        .await
    }

    /// Whether users-service answers `GET /healthz` with 200 within the deadline.
    pub async fn is_healthy(&self) -> Result<(), ApiError> {
        let url = self.url("/healthz", None);
        self.bounded(async {
            let response = self.client.get(url).send().await.map_err(unreachable)?;
            accept_ok(response, &self.budget).await.map(drop)
        })
        .await
    }

    /// The upstream's URL for `path` (origin form, percent escapes kept as written) and
    /// `query`.
    fn url(&self, path: &str, query: Option<&str>) -> Url {
        let mut url = self.base.clone();
        url.set_path(path);
        url.set_query(query);
        url
    }

    /// Runs one whole exchange (connect, send, read the body) under the deadline.
    async fn bounded<T>(
        &self,
        exchange: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let result = tokio::time::timeout(self.deadline, exchange)
            .await
            .unwrap_or_else(|_| {
                metrics::counter!("upstream_errors_total", "kind" => "deadline").increment(1);
                Err(ApiError::UpstreamDeadline {
                    deadline: self.deadline,
                })
            });
        self.note_reachability(&result);
        result
    }

    fn note_reachability<T>(&self, result: &Result<T, ApiError>) {
        match result {
            Err(
                error @ (ApiError::UpstreamUnavailable { .. } | ApiError::UpstreamDeadline { .. }),
            ) => {
                if self.reachable.swap(false, Ordering::Relaxed) {
                    let reason = error.internal_reason().unwrap_or_default();
                    tracing::warn!(upstream = %self.base, %error, %reason, "users-service became unreachable");
                }
            }
            _ => {
                if !self.reachable.swap(true, Ordering::Relaxed) {
                    tracing::info!(upstream = %self.base, "users-service reachable again");
                }
            }
        }
    }
}

fn claimed_crc(response: &reqwest::Response) -> Result<u32, ApiError> {
    response
        .headers()
        .get(CRC_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_crc)
        .ok_or_else(|| bad_upstream(BadAnswer::CrcHeader))
}

/// Passes a 200 through; turns any other status into the matching gateway error
/// ([`status_error`]).
async fn accept_ok(
    response: reqwest::Response,
    budget: &MemoryBudget,
) -> Result<reqwest::Response, ApiError> {
    let status = response.status();
    if status == StatusCode::OK {
        return Ok(response);
    }
    let body = read_body(response, budget)
        .await
        .map(|read| read.answer.bytes)
        .unwrap_or_default();
    Err(status_error(status, &body))
}

/// The gateway error for a non-200 answer from users-service where the gateway itself needs a
/// 200 (its own exchanges, and the seed's `/api/users-via-*` routes, which keep their meaning:
/// the users body or a gateway error). What users-service said goes into the error's internal
/// reason (logs, operators), never to the client; its stable `code` may choose the error.
pub fn status_error(status: StatusCode, body: &[u8]) -> ApiError {
    let answer = serde_json::from_slice::<serde_json::Value>(body).ok();
    let field = |name: &str| {
        answer
            .as_ref()
            .and_then(|value| value[name].as_str())
            .map(str::to_owned)
    };
    let (message, code) = (field("error"), field("code"));
    let said = format!(
        "users-service answered {status} ({}): {}",
        code.as_deref().unwrap_or("no code"),
        message.as_deref().unwrap_or("no JSON error body")
    );
    match status {
        StatusCode::SERVICE_UNAVAILABLE if code.as_deref() == Some(SEGMENT_UNAVAILABLE) => {
            metrics::counter!("upstream_errors_total", "kind" => "busy").increment(1);
            ApiError::ShmUnavailable {
                reason: format!(
                    "users-service has no shared-memory segment (its /readyz says why); {said}"
                ),
            }
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            metrics::counter!("upstream_errors_total", "kind" => "busy").increment(1);
            ApiError::UpstreamBusy { reason: said }
        }
        // The gateway validates queries itself, so a 400 here means the two disagree: only
        // client errors users-service explains (e.g. a payload too large for a slot) go back,
        // as their status and a stable message of the gateway's own.
        status
            if message.is_some()
                && ((status.is_client_error() && status != StatusCode::BAD_REQUEST)
                    || status == StatusCode::INSUFFICIENT_STORAGE) =>
        {
            ApiError::UpstreamRejected {
                status,
                reason: said,
            }
        }
        _ => bad_upstream(BadAnswer::Unexpected { said }),
    }
}

/// Reads the whole body with its crc32, refusing one that disagrees with its content-length or
/// exceeds [`MAX_UPSTREAM_BODY_BYTES`], reserving it in `budget` (the declared length before
/// the first byte, or chunk by chunk as it arrives). The crc32 is computed chunk by chunk as
/// the body arrives, while each chunk is still in cache, and never as one long pass over a large
/// body on the async worker.
async fn read_body(
    mut response: reqwest::Response,
    budget: &MemoryBudget,
) -> Result<Reserved<Payload>, ApiError> {
    let declared = response.content_length();
    if declared.is_some_and(|len| len > MAX_UPSTREAM_BODY_BYTES as u64) {
        return Err(bad_upstream(BadAnswer::DeclaredTooLarge {
            declared: declared.unwrap_or_default(),
            limit: MAX_UPSTREAM_BODY_BYTES,
        }));
    }
    let mut reservation = budget.reserve(declared.unwrap_or(0))?;
    let mut body = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
    let mut crc = crc32fast::Hasher::new();
    while let Some(chunk) = response.chunk().await.map_err(|error| {
        bad_upstream(BadAnswer::BodyRead {
            read: body.len(),
            error,
        })
    })? {
        if body.len() + chunk.len() > MAX_UPSTREAM_BODY_BYTES {
            return Err(bad_upstream(BadAnswer::TooLarge {
                limit: MAX_UPSTREAM_BODY_BYTES,
            }));
        }
        let needed = (body.len() + chunk.len()) as u64;
        if needed > reservation.bytes() {
            reservation.grow(needed - reservation.bytes())?;
        }
        crc.update(&chunk);
        body.extend_from_slice(&chunk);
    }
    if declared.is_some_and(|len| len != body.len() as u64) {
        return Err(bad_upstream(BadAnswer::Length {
            read: body.len(),
            declared: declared.unwrap_or_default(),
        }));
    }
    Ok(Reserved {
        answer: Payload {
            bytes: body.freeze(),
            crc32: crc.finalize(),
        },
        reservation,
    })
}

fn unreachable(error: reqwest::Error) -> ApiError {
    metrics::counter!("upstream_errors_total", "kind" => "unreachable").increment(1);
    // anyhow's alternate form prints the whole source chain (e.g. "... : Connection refused").
    ApiError::UpstreamUnavailable {
        reason: format!("{:#}", anyhow::Error::new(error)),
    }
}

fn bad_upstream(reason: BadAnswer) -> ApiError {
    metrics::counter!("upstream_errors_total", "kind" => "bad_answer").increment(1);
    ApiError::BadUpstream { reason }
}

/// Why `--upstream` was refused.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamUrlError {
    #[error("not a URL: {0}")]
    NotUrl(<Url as std::str::FromStr>::Err),
    #[error("scheme must be http, got {scheme}")]
    NotHttp { scheme: String },
    #[error("URL has no host")]
    NoHost,
}

/// Parses `--upstream`: an `http://` URL with a host (no TLS in this build; loopback only).
pub fn parse_upstream_url(text: &str) -> Result<Url, UpstreamUrlError> {
    let url = Url::parse(text).map_err(UpstreamUrlError::NotUrl)?;
    if url.scheme() != "http" {
        return Err(UpstreamUrlError::NotHttp {
            scheme: url.scheme().to_owned(),
        });
    }
    if url.host().is_none() {
        return Err(UpstreamUrlError::NoHost);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_url_must_be_plain_http_with_a_host() {
        assert!(parse_upstream_url("http://127.0.0.1:8081").is_ok());
        assert_eq!(
            parse_upstream_url("https://127.0.0.1:8081")
                .unwrap_err()
                .to_string(),
            "scheme must be http, got https"
        );
        assert!(matches!(
            parse_upstream_url("127.0.0.1:8081"),
            Err(UpstreamUrlError::NotUrl(_) | UpstreamUrlError::NotHttp { .. })
        ));
        assert!(matches!(
            parse_upstream_url("not a url"),
            Err(UpstreamUrlError::NotUrl(_))
        ));
    }

    #[test]
    fn request_urls_carry_the_path_and_query_as_written() {
        let upstream = Upstream::new(
            parse_upstream_url("http://127.0.0.1:9").unwrap(),
            Duration::from_secs(1),
            4,
            MemoryBudget::new(crate::memory_budget::BudgetKind::GatewayMemory, 1 << 20),
        )
        .unwrap();
        let url = upstream.url("/users", Some("count=3&seed=4"));
        assert_eq!(url.as_str(), "http://127.0.0.1:9/users?count=3&seed=4");
        let url = upstream.url("/a%20b/c", Some("q=%2F"));
        assert_eq!(url.as_str(), "http://127.0.0.1:9/a%20b/c?q=%2F");
        assert_eq!(
            upstream.url("/healthz", None).as_str(),
            "http://127.0.0.1:9/healthz"
        );
    }
}
