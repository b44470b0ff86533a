//! The blob query (`size`, `pattern`, `seed`) of `GET /blobs`, parsed strictly: every
//! parameter at most once, nothing else, a size within the limit; anything else is a typed
//! [`BlobQueryError`] that answers 400 or 413.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{BlobPattern, DEFAULT_PATTERN, DEFAULT_SEED, UnknownPattern, shown};

/// Which blob to produce: `size` bytes of `pattern` from `seed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlobQuery {
    pub size: u64,
    pub pattern: BlobPattern,
    pub seed: u64,
}

impl BlobQuery {
    /// Parses a raw query string (without the `?`): `size` is required, from 0 to `max_size`
    /// (users-service passes its `--max-payload`); `pattern` defaults to [`DEFAULT_PATTERN`],
    /// `seed` to [`DEFAULT_SEED`]. Values are percent-decoded as in HTML forms; numbers are
    /// plain decimal digits. Each parameter may be given once.
    pub fn parse(raw_query: Option<&str>, max_size: u64) -> Result<BlobQuery, BlobQueryError> {
        let mut size = None;
        let mut pattern = None;
        let mut seed = None;
        for (name, value) in form_urlencoded::parse(raw_query.unwrap_or("").as_bytes()) {
            match name.as_ref() {
                "size" => {
                    once(&size, "size")?;
                    size = Some(parse_size(&value, max_size)?);
                }
                "pattern" => {
                    once(&pattern, "pattern")?;
                    pattern = Some(value.parse()?);
                }
                "seed" => {
                    once(&seed, "seed")?;
                    seed =
                        Some(
                            parse_digits(&value).ok_or_else(|| BlobQueryError::NotANumber {
                                name: "seed",
                                value: shown(&value),
                                max: u64::MAX,
                            })?,
                        );
                }
                other => {
                    return Err(BlobQueryError::UnknownParameter { name: shown(other) });
                }
            }
        }
        Ok(BlobQuery {
            size: size.ok_or(BlobQueryError::MissingSize)?,
            pattern: pattern.unwrap_or(DEFAULT_PATTERN),
            seed: seed.unwrap_or(DEFAULT_SEED),
        })
    }

    /// The query string that [`BlobQuery::parse`] reads back as `self`.
    pub fn to_query_string(self) -> String {
        format!(
            "size={}&pattern={}&seed={}",
            self.size, self.pattern, self.seed
        )
    }
}

fn once<T>(seen: &Option<T>, name: &'static str) -> Result<(), BlobQueryError> {
    match seen {
        Some(_) => Err(BlobQueryError::Repeated { name }),
        None => Ok(()),
    }
}

/// A string of decimal digits that fits in a `u64` (no sign, no spaces, not empty).
fn parse_digits(value: &str) -> Option<u64> {
    let all_digits = !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit());
    all_digits.then(|| value.parse().ok()).flatten()
}

fn parse_size(value: &str, max_size: u64) -> Result<u64, BlobQueryError> {
    let all_digits = !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit());
    if !all_digits {
        return Err(BlobQueryError::NotANumber {
            name: "size",
            value: shown(value),
            max: max_size,
        });
    }
    // A digit string too long for u64 is still a number, just far over the limit.
    match value.parse::<u64>() {
        Ok(size) if size <= max_size => Ok(size),
        _ => Err(BlobQueryError::TooLarge {
            value: shown(value),
            limit: max_size,
        }),
    }
}

/// A bad blob query. The `Display` text is the message sent to the client; a size above the
/// limit is a 413, everything else a 400 ([`BlobQueryError::status_code`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlobQueryError {
    #[error("unknown query parameter {name:?}; accepted parameters are size, pattern and seed")]
    UnknownParameter { name: String },
    #[error("query parameter {name} is given more than once")]
    Repeated { name: &'static str },
    #[error("query parameter {name} must be a non-negative integer from 0 to {max}, got {value:?}")]
    NotANumber {
        name: &'static str,
        value: String,
        max: u64,
    },
    #[error(transparent)]
    UnknownPattern(#[from] UnknownPattern),
    #[error("query parameter size is required")]
    MissingSize,
    #[error("size {value:?} is above the payload limit of {limit} bytes")]
    TooLarge { value: String, limit: u64 },
}

impl BlobQueryError {
    /// 413 for a size above the limit, 400 for every other fault of the query.
    pub fn status_code(&self) -> StatusCode {
        match self {
            BlobQueryError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The short, stable code clients may match on: the codes `ApiError` gives the same
    /// faults (`bad_query`, `payload_too_large`).
    pub fn code(&self) -> &'static str {
        match self {
            BlobQueryError::TooLarge { .. } => "payload_too_large",
            _ => "bad_query",
        }
    }
}

/// Rendered as every `ApiError` is: `{"error": MESSAGE, "code": CODE}` with its status. The
/// message describes only the client's own request, so nothing internal can leak.
impl IntoResponse for BlobQueryError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let message = self.to_string();
        let code = self.code();
        tracing::debug!(%status, code, %message, "request refused");
        let body = Json(serde_json::json!({ "error": message, "code": code }));
        (status, body).into_response()
    }
}
