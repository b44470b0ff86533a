//! The `count` / `seed` query string both services accept, parsed strictly into
//! [`UsersQuery`] or a typed [`QueryError`] that says what was wrong.

use std::fmt;

use crate::dataset::{DEFAULT_COUNT, DEFAULT_SEED, MAX_COUNT};

/// Which users to return: the parameters of [`crate::dataset::users_json`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UsersQuery {
    pub count: u32,
    pub seed: u64,
}

impl Default for UsersQuery {
    fn default() -> Self {
        UsersQuery {
            count: DEFAULT_COUNT,
            seed: DEFAULT_SEED,
        }
    }
}

impl UsersQuery {
    /// Parses a raw query string (without the `?`); `None` or an empty string gives the defaults.
    /// Values are percent-decoded as in HTML forms.
    pub fn parse(raw: Option<&str>) -> Result<UsersQuery, QueryError> {
        let mut query = UsersQuery::default();
        let mut seen_count = false;
        let mut seen_seed = false;
        for (name, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            match name.as_ref() {
                "count" => {
                    mark_seen(&mut seen_count, "count")?;
                    query.count = parse_count(&value)?;
                }
                "seed" => {
                    mark_seen(&mut seen_seed, "seed")?;
                    query.seed = value.parse().map_err(|_| QueryError::NotANumber {
                        name: "seed",
                        value: Shown::new(&value),
                    })?;
                }
                other => {
                    return Err(QueryError::UnknownParameter {
                        name: Shown::new(other),
                    });
                }
            }
        }
        Ok(query)
    }

    /// The query for `count` users from `seed`, as a control-channel frame carries them; the
    /// same cap as the query string's.
    pub fn new(count: u32, seed: u64) -> Result<UsersQuery, QueryError> {
        if count > MAX_COUNT {
            return Err(QueryError::CountTooLarge {
                value: Shown::new(&count.to_string()),
            });
        }
        Ok(UsersQuery { count, seed })
    }

    /// The query string that [`UsersQuery::parse`] reads back as `self`.
    pub fn to_query_string(self) -> String {
        format!("count={}&seed={}", self.count, self.seed)
    }
}

fn mark_seen(seen: &mut bool, name: &'static str) -> Result<(), QueryError> {
    if std::mem::replace(seen, true) {
        return Err(QueryError::Repeated { name });
    }
    Ok(())
}

fn parse_count(value: &str) -> Result<u32, QueryError> {
    let all_digits = !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit());
    if !all_digits {
        return Err(QueryError::NotANumber {
            name: "count",
            value: Shown::new(value),
        });
    }
    // A digit string too long for u64 is still a number, just far over the cap.
    match value.parse::<u64>() {
        Ok(count) if count <= u64::from(MAX_COUNT) => {
            Ok(u32::try_from(count).expect("count is at most MAX_COUNT"))
        }
        _ => Err(QueryError::CountTooLarge {
            value: Shown::new(value),
        }),
    }
}

/// A bad query string. The `Display` text is the message sent to the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("unknown query parameter {name}; accepted parameters are count and seed")]
    UnknownParameter { name: Shown },
    #[error("query parameter {name} is given more than once")]
    Repeated { name: &'static str },
    #[error(
        "query parameter {name} must be a non-negative integer{}, got {value}",
        range_of(name)
    )]
    NotANumber { name: &'static str, value: Shown },
    #[error("count {value} is above the maximum of {MAX_COUNT}")]
    CountTooLarge { value: Shown },
}

fn range_of(name: &str) -> String {
    match name {
        "count" => format!(" from 0 to {MAX_COUNT}"),
        _ => format!(" from 0 to {}", u64::MAX),
    }
}

/// Client-supplied text quoted in an error message, cut to a bounded length so an error body
/// never grows with the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shown(String);

impl Shown {
    const MAX_CHARS: usize = 40;

    fn new(text: &str) -> Shown {
        let mut shown: String = text.chars().take(Self::MAX_CHARS).collect();
        if text.chars().count() > Self::MAX_CHARS {
            shown.push('…');
        }
        Shown(shown)
    }
}

impl fmt::Display for Shown {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<UsersQuery, QueryError> {
        UsersQuery::parse(Some(raw))
    }

    #[test]
    fn missing_or_empty_query_gives_defaults() {
        assert_eq!(UsersQuery::parse(None), Ok(UsersQuery::default()));
        assert_eq!(parse(""), Ok(UsersQuery::default()));
    }

    #[test]
    fn both_parameters_in_any_order() {
        let expected = UsersQuery { count: 5, seed: 9 };
        assert_eq!(parse("count=5&seed=9"), Ok(expected));
        assert_eq!(parse("seed=9&count=5"), Ok(expected));
        assert_eq!(
            parse("count=0"),
            Ok(UsersQuery {
                count: 0,
                seed: DEFAULT_SEED
            })
        );
        assert_eq!(
            parse(&format!("seed={}", u64::MAX)),
            Ok(UsersQuery {
                count: DEFAULT_COUNT,
                seed: u64::MAX
            })
        );
    }

    #[test]
    fn to_query_string_round_trips() {
        let query = UsersQuery {
            count: 12,
            seed: 34,
        };
        assert_eq!(parse(&query.to_query_string()), Ok(query));
    }

    #[test]
    fn count_at_the_cap_is_accepted_and_above_it_refused() {
        assert_eq!(
            parse(&format!("count={MAX_COUNT}")).unwrap().count,
            MAX_COUNT
        );
        let over = parse(&format!("count={}", MAX_COUNT + 1)).unwrap_err();
        assert!(matches!(over, QueryError::CountTooLarge { .. }));
        assert_eq!(
            over.to_string(),
            format!(
                "count \"{}\" is above the maximum of {MAX_COUNT}",
                MAX_COUNT + 1
            )
        );
        let huge = parse("count=99999999999999999999999").unwrap_err();
        assert!(matches!(huge, QueryError::CountTooLarge { .. }));
    }

    #[test]
    fn non_numeric_values_are_refused() {
        for raw in [
            "count=abc",
            "count=-1",
            "count=1.5",
            "count=",
            "count",
            "count=+3",
            "count=%201",
        ] {
            let error = parse(raw).unwrap_err();
            assert!(
                matches!(error, QueryError::NotANumber { name: "count", .. }),
                "{raw}"
            );
        }
        for raw in ["seed=x", "seed=-1", "seed=", "seed=18446744073709551616"] {
            let error = parse(raw).unwrap_err();
            assert!(
                matches!(error, QueryError::NotANumber { name: "seed", .. }),
                "{raw}"
            );
        }
        assert_eq!(
            parse("count=abc").unwrap_err().to_string(),
            format!(
                "query parameter count must be a non-negative integer from 0 to {MAX_COUNT}, got \"abc\""
            )
        );
    }

    #[test]
    fn unknown_and_repeated_parameters_are_refused() {
        assert_eq!(
            parse("count=1&limit=2").unwrap_err().to_string(),
            "unknown query parameter \"limit\"; accepted parameters are count and seed"
        );
        assert_eq!(
            parse("count=1&count=2"),
            Err(QueryError::Repeated { name: "count" })
        );
        assert_eq!(
            parse("seed=1&seed=1"),
            Err(QueryError::Repeated { name: "seed" })
        );
    }

    #[test]
    fn quoted_client_text_is_bounded() {
        let long = "x".repeat(10_000);
        let message = parse(&format!("{long}=1")).unwrap_err().to_string();
        assert!(message.len() < 200, "{message}");
    }
}
