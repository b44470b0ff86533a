//! Which upstream paths the gateway forwards: `--forward-prefix` (the allowed ones, default `/`:
//! all) minus `--private-prefix` (default the upstream's operational routes: `/shm/`,
//! `/readyz`, `/healthz`, `/metrics`). A path refused here is the gateway's own 404, never asked
//! of the upstream.
//!
//! A prefix is matched against the path twice: as the client wrote it, and in a canonical form
//! (percent escapes decoded, empty and `.` segments dropped, `..` segments applied), so that
//! `/blobs/../shm/segment`, `//shm/segment` or `/%73hm/segment` cannot reach a private route of an
//! upstream that normalizes paths before routing. A path is forwarded only when both forms are
//! allowed and neither is private.

use std::fmt;

/// `--forward-prefix` and `--private-prefix` checked together.
#[derive(Clone, Debug)]
pub struct ForwardPolicy {
    forward: Vec<PathPrefix>,
    private: Vec<PathPrefix>,
}

impl ForwardPolicy {
    pub fn new(forward: Vec<PathPrefix>, private: Vec<PathPrefix>) -> ForwardPolicy {
        ForwardPolicy { forward, private }
    }

    /// Whether `path` (without its query) may be forwarded.
    pub fn allows(&self, path: &str) -> bool {
        if !path.starts_with('/') {
            return false;
        }
        let canonical = canonical_path(path);
        [path, canonical.as_str()].into_iter().all(|form| {
            self.forward.iter().any(|prefix| prefix.matches(form))
                && !self.private.iter().any(|prefix| prefix.matches(form))
        })
    }
}

/// One `--forward-prefix` or `--private-prefix`: a path prefix starting with `/`. `/shm/` matches
/// `/shm/segment` and `/shm` itself; `/readyz` matches `/readyz` and `/readyz/x` (and, being a
/// prefix, `/readyzz`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPrefix(String);

impl PathPrefix {
    fn matches(&self, path: &str) -> bool {
        path.starts_with(&self.0)
            || self
                .0
                .strip_suffix('/')
                .is_some_and(|directory| path == directory)
    }
}

impl fmt::Display for PathPrefix {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// Why a prefix flag was refused.
#[derive(Debug, thiserror::Error)]
pub enum PathPrefixError {
    #[error("a path prefix starts with `/`, got {0:?}")]
    NotAbsolute(String),
    #[error("a path prefix is visible ASCII without `?` or `#`, got {0:?}")]
    Character(String),
}

/// Parses a `--forward-prefix` / `--private-prefix` value.
pub fn parse_path_prefix(text: &str) -> Result<PathPrefix, PathPrefixError> {
    if !text.starts_with('/') {
        return Err(PathPrefixError::NotAbsolute(text.to_owned()));
    }
    if !text
        .bytes()
        .all(|byte| (b'!'..=b'~').contains(&byte) && byte != b'?' && byte != b'#')
    {
        return Err(PathPrefixError::Character(text.to_owned()));
    }
    Ok(PathPrefix(text.to_owned()))
}

/// `path` with percent escapes decoded (an invalid escape is kept as written), then empty and
/// `.` segments dropped and `..` segments applied (RFC 3986 §5.2.4, never above the root). A
/// trailing `/` is kept, so `/shm/` stays `/shm/`.
fn canonical_path(path: &str) -> String {
    let decoded = percent_decode(path);
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            segment => segments.push(segment),
        }
    }
    let mut canonical = String::with_capacity(decoded.len());
    for segment in &segments {
        canonical.push('/');
        canonical.push_str(segment);
    }
    let ends_in_directory = decoded.ends_with('/')
        || decoded.ends_with("/.")
        || decoded.ends_with("/..")
        || segments.is_empty();
    if ends_in_directory {
        canonical.push('/');
    }
    canonical
}

/// Decodes `%XX` escapes; bytes that do not form UTF-8 afterwards are replaced, which only
/// makes a path less likely to match an allowed prefix.
fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escape = (bytes[index] == b'%')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escape {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixes(texts: &[&str]) -> Vec<PathPrefix> {
        texts
            .iter()
            .map(|text| parse_path_prefix(text).unwrap())
            .collect()
    }

    fn default_policy() -> ForwardPolicy {
        ForwardPolicy::new(
            prefixes(&["/"]),
            prefixes(&["/shm/", "/readyz", "/healthz", "/metrics"]),
        )
    }

    #[test]
    fn the_default_forwards_everything_but_the_operational_routes() {
        let policy = default_policy();
        for path in ["/", "/users", "/blobs", "/api/x", "/a/shm/b"] {
            assert!(policy.allows(path), "{path}");
        }
        for path in [
            "/shm/segment",
            "/shm",
            "/shm/",
            "/readyz",
            "/healthz",
            "/metrics",
        ] {
            assert!(!policy.allows(path), "{path}");
        }
    }

    #[test]
    fn a_private_route_is_not_reached_by_another_spelling() {
        let policy = default_policy();
        for path in [
            "/blobs/../shm/segment",
            "//shm/segment",
            "/./shm/segment",
            "/%73hm/segment",
            "/%2e%2e/shm/segment",
            "/users/%2e%2e/readyz",
            "/shm%2fsegment",
        ] {
            assert!(!policy.allows(path), "{path}");
        }
        assert!(!policy.allows("users"), "not an origin-form path");
    }

    #[test]
    fn forward_prefixes_allow_only_their_paths_in_every_spelling() {
        let policy = ForwardPolicy::new(prefixes(&["/users", "/blobs"]), prefixes(&["/shm/"]));
        assert!(policy.allows("/users"));
        assert!(policy.allows("/blobs"));
        assert!(!policy.allows("/other"));
        assert!(
            !policy.allows("/users/../other"),
            "canonical form is not allowed"
        );
        assert!(!policy.allows("/"));
    }

    #[test]
    fn canonical_paths() {
        assert_eq!(canonical_path("/"), "/");
        assert_eq!(canonical_path("/a/b/"), "/a/b/");
        assert_eq!(canonical_path("/a/./b/../c"), "/a/c");
        assert_eq!(canonical_path("/../../a"), "/a");
        assert_eq!(canonical_path("/a/.."), "/");
        assert_eq!(canonical_path("/a%zz%4"), "/a%zz%4");
    }

    #[test]
    fn prefix_flags_are_checked() {
        assert!(parse_path_prefix("/users").is_ok());
        assert!(matches!(
            parse_path_prefix("users"),
            Err(PathPrefixError::NotAbsolute(_))
        ));
        assert!(matches!(
            parse_path_prefix("/a b"),
            Err(PathPrefixError::Character(_))
        ));
        assert!(matches!(
            parse_path_prefix("/a?b"),
            Err(PathPrefixError::Character(_))
        ));
    }
}
