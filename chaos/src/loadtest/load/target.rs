//! What each request of a run asks for: `count` users from the seed's own routes
//! ([`Resource::Users`], `/api/users-via-*`), or any upstream path and query through the
//! gateway's measuring prefixes ([`Resource::Path`]: `/via-api/blobs?size=3` and so on, see
//! [`Endpoint::prefix`]); and the weighted mix a run draws them from ([`RequestMix`]).
//!
//! A path says what its 200 body must be: `/users?count=N&seed=S` is the users dataset's body,
//! `/blobs?size=N&pattern=P&seed=S` the blob generator's, both checked byte for byte; any other
//! path is checked against its `x-payload-crc32` header only, since nothing here knows its bytes
//! ([`Expected`]). A `/users` or `/blobs` query the service would refuse is refused here, before
//! the run, with the service's own reason.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rand::Rng;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use shmbridge_server::blobs::BlobQuery;
use shmbridge_server::query::UsersQuery;

use super::counts::{CountMix, MAX_DISTINCT_COUNTS};
use super::endpoint::Endpoint;
use super::verify::Expected;
use super::weighted::Weighted;

/// The largest `/blobs` body a run may ask for: the checker holds each expected body whole
/// (users-service's own default limit, `--max-payload`, is 64 MiB).
pub const MAX_CHECKED_BLOB_BYTES: u64 = 1 << 30;

/// Distinct paths a mix may hold: the checker keeps one expected body per path for the whole
/// run, so this bounds its memory as [`MAX_DISTINCT_COUNTS`] does for counts.
pub const MAX_DISTINCT_PATHS: usize = MAX_DISTINCT_COUNTS;

/// The gateway's own prefixes, which a path must not start with: the load tool puts them in
/// front of the path itself.
const GATEWAY_PREFIXES: [&str; 4] = ["/via-api", "/via-shm", "/via-cached", "/via-published"];

/// An upstream path with its query, e.g. `/blobs?size=1048576&pattern=random&seed=3`: starts
/// with `/`, visible ASCII, no fragment. Cheap to clone. Compared, ordered and hashed by its
/// text, from which everything else follows.
#[derive(Clone)]
pub struct UpstreamPath {
    target: Arc<str>,
    expected: Expected,
}

impl PartialEq for UpstreamPath {
    fn eq(&self, other: &Self) -> bool {
        self.target == other.target
    }
}

impl Eq for UpstreamPath {}

impl std::hash::Hash for UpstreamPath {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.target.hash(state);
    }
}

impl PartialOrd for UpstreamPath {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for UpstreamPath {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.target.cmp(&other.target)
    }
}

impl UpstreamPath {
    /// The path of the blob `query` asks for.
    pub fn blob(query: BlobQuery) -> UpstreamPath {
        format!("/blobs?{}", query.to_query_string())
            .parse()
            .expect("a blob query reads back")
    }

    /// The whole target, path and query.
    pub fn as_str(&self) -> &str {
        &self.target
    }

    /// The path without its query.
    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(&self.target, |(path, _)| path)
    }

    /// The query without its `?`, if there is one.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, query)| query)
    }

    /// What a 200 body of this path must be.
    pub fn expected(&self) -> Expected {
        self.expected
    }
}

impl fmt::Debug for UpstreamPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.target, f)
    }
}

impl fmt::Display for UpstreamPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.target)
    }
}

impl FromStr for UpstreamPath {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if !text.starts_with('/') {
            return Err(format!("path {text:?} does not start with /"));
        }
        if let Some(byte) = text.bytes().find(|&byte| !(b'!'..=b'~').contains(&byte)) {
            return Err(format!(
                "path {text:?} has byte 0x{byte:02x}: only visible ASCII, percent-encode the rest"
            ));
        }
        if text.contains('#') {
            return Err(format!(
                "path {text:?} has a fragment (#), which is never sent"
            ));
        }
        let (path, query) = match text.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (text, None),
        };
        if let Some(prefix) = GATEWAY_PREFIXES
            .iter()
            .find(|prefix| path == **prefix || path.starts_with(&format!("{prefix}/")))
        {
            return Err(format!(
                "path {text:?} starts with the gateway's {prefix}: give the upstream path, each endpoint adds its own prefix"
            ));
        }
        let expected = match path {
            "/users" => {
                let users =
                    UsersQuery::parse(query).map_err(|error| format!("path {text:?}: {error}"))?;
                Expected::Users {
                    count: users.count,
                    seed: users.seed,
                }
            }
            "/blobs" => Expected::Blob(
                BlobQuery::parse(query, MAX_CHECKED_BLOB_BYTES)
                    .map_err(|error| format!("path {text:?}: {error}"))?,
            ),
            _ => Expected::ChecksumOnly,
        };
        Ok(UpstreamPath {
            target: text.into(),
            expected,
        })
    }
}

impl Serialize for UpstreamPath {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.target)
    }
}

/// What one request asks the gateway for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// `count` users, with the run's dataset seed, from the seed's routes (`/api/users-via-*`).
    Users(u32),
    /// An upstream path through the gateway's prefix for each endpoint.
    Path(UpstreamPath),
}

impl Resource {
    /// What a 200 body must be; `seed` is the run's dataset seed, which a count asks with.
    pub fn expected(&self, seed: u64) -> Expected {
        match self {
            Resource::Users(count) => Expected::Users {
                count: *count,
                seed,
            },
            Resource::Path(path) => path.expected(),
        }
    }

    /// The gateway route (path and query) that asks for this through `endpoint`; `None` when
    /// the endpoint cannot carry it (shm-http carries only the users routes).
    pub fn route(&self, endpoint: Endpoint, seed: u64) -> Option<String> {
        match self {
            Resource::Users(count) => {
                Some(format!("{}?count={count}&seed={seed}", endpoint.path()))
            }
            Resource::Path(path) => Some(format!("{}{path}", endpoint.prefix()?)),
        }
    }
}

/// `count=708`, or the path itself.
impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Users(count) => write!(f, "count={count}"),
            Resource::Path(path) => write!(f, "{path}"),
        }
    }
}

/// The resources of a run and their weights: counts (`--count`, a scenario's `counts`) and
/// paths (`--path`, a scenario's `paths`) in one pool, each request drawing one by weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestMix(Weighted<Resource>);

impl RequestMix {
    /// The users counts of `counts`, with their weights: the mix of every run before paths.
    pub fn users(counts: &CountMix) -> Self {
        RequestMix::new(Some(counts), &[]).expect("a count mix is a request mix")
    }

    /// Every request asks for `path`.
    pub fn path(path: UpstreamPath) -> Self {
        RequestMix(Weighted::one(Resource::Path(path)))
    }

    /// `counts` (if any) then `paths`, each with its weight, in one pool. Refuses a path listed
    /// twice, more than [`MAX_DISTINCT_PATHS`] paths and a pool whose weights sum to 0.
    pub fn new(counts: Option<&CountMix>, paths: &[(UpstreamPath, u32)]) -> Result<Self, String> {
        if paths.len() > MAX_DISTINCT_PATHS {
            return Err(format!(
                "{} paths listed; at most {MAX_DISTINCT_PATHS} (the checker keeps a body per path)",
                paths.len()
            ));
        }
        let items = counts
            .into_iter()
            .flat_map(|counts| counts.weighted())
            .map(|&(count, weight)| (Resource::Users(count), weight))
            .chain(
                paths
                    .iter()
                    .map(|(path, weight)| (Resource::Path(path.clone()), *weight)),
            )
            .collect();
        Weighted::new(items, "request").map(RequestMix)
    }

    /// The resources that can be drawn, as listed: the bodies a checker must know.
    pub fn resources(&self) -> Vec<Resource> {
        self.0.drawable().collect()
    }

    /// Every resource with its weight, as listed.
    pub fn weighted(&self) -> &[(Resource, u32)] {
        self.0.items()
    }

    /// The resource every request asks for, if only one can be drawn.
    pub fn only(&self) -> Option<Resource> {
        self.0.only()
    }

    /// The resource of the next request; draws nothing from `rng` when there is one, so a run
    /// with one count replays exactly as before mixes existed.
    pub fn pick(&self, rng: &mut impl Rng) -> Resource {
        self.0.pick(rng)
    }

    /// The counts and their weights, as `--count` writes them; `None` without counts (or with
    /// counts of weight 0 only).
    pub fn counts(&self) -> Option<CountMix> {
        let counts: Vec<(u32, u32)> = self
            .weighted()
            .iter()
            .filter_map(|(resource, weight)| match resource {
                Resource::Users(count) => Some((*count, *weight)),
                Resource::Path(_) => None,
            })
            .collect();
        CountMix::from_weights(counts)
    }

    /// The paths and their weights, as listed.
    pub fn paths(&self) -> Vec<(&UpstreamPath, u32)> {
        self.weighted()
            .iter()
            .filter_map(|(resource, weight)| match resource {
                Resource::Path(path) => Some((path, *weight)),
                Resource::Users(_) => None,
            })
            .collect()
    }

    /// Whether some path's bodies can only be checked against their `x-payload-crc32`.
    pub fn checksum_only(&self) -> Vec<&UpstreamPath> {
        self.paths()
            .into_iter()
            .filter(|(path, _)| path.expected() == Expected::ChecksumOnly)
            .map(|(path, _)| path)
            .collect()
    }
}

/// `count=708=9,12000=1; /blobs?size=3000&pattern=text&seed=1 weight 1, ...`: for the reports.
impl fmt::Display for RequestMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(counts) = self.counts() {
            parts.push(format!("count {counts}"));
        }
        for (path, weight) in self.paths() {
            parts.push(format!("{path} weight {weight}"));
        }
        f.write_str(&parts.join("; "))
    }
}

/// Serialized as reports wrote a run's `count` before paths existed (`708`, or
/// `"708=9,12000=1"`), and `paths` beside it when there are any: `[{"path": .., "weight": ..}]`.
impl Serialize for RequestMix {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct WeightedPath<'a> {
            path: &'a UpstreamPath,
            weight: u32,
        }
        let counts = self.counts();
        let paths: Vec<WeightedPath<'_>> = self
            .paths()
            .into_iter()
            .map(|(path, weight)| WeightedPath { path, weight })
            .collect();
        let mut map = serializer.serialize_map(None)?;
        if let Some(counts) = &counts {
            map.serialize_entry("count", counts)?;
        }
        if !paths.is_empty() {
            map.serialize_entry("paths", &paths)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use shmbridge_server::blobs::BlobPattern;

    use super::*;

    fn path(text: &str) -> UpstreamPath {
        text.parse().unwrap()
    }

    #[test]
    fn a_path_knows_what_its_body_must_be() {
        assert_eq!(
            path("/users?count=3&seed=7").expected(),
            Expected::Users { count: 3, seed: 7 }
        );
        assert_eq!(
            path("/blobs?size=1048576&pattern=zeros&seed=3").expected(),
            Expected::Blob(BlobQuery {
                size: 1 << 20,
                pattern: BlobPattern::Zeros,
                seed: 3
            })
        );
        assert_eq!(path("/other?x=1").expected(), Expected::ChecksumOnly);
        let blob = BlobQuery {
            size: 3_000_000,
            pattern: BlobPattern::Random,
            seed: 9,
        };
        assert_eq!(
            UpstreamPath::blob(blob).as_str(),
            "/blobs?size=3000000&pattern=random&seed=9"
        );
        let users = path("/users?count=3&seed=7");
        assert_eq!(
            (users.path(), users.query()),
            ("/users", Some("count=3&seed=7"))
        );
    }

    #[test]
    fn bad_paths_and_queries_are_refused_with_the_reason() {
        for (text, reason) in [
            ("blobs?size=1", "does not start with /"),
            ("/a b", "byte 0x20"),
            ("/a#b", "fragment"),
            ("/via-shm/blobs?size=1", "the gateway's /via-shm"),
            ("/via-api", "the gateway's /via-api"),
            ("/blobs?size=x", "size"),
            ("/blobs", "size is required"),
            ("/blobs?size=1&colour=red", "colour"),
            ("/blobs?size=2000000000", "above the payload limit"),
            ("/users?count=x", "count"),
            ("/users?cuont=1", "cuont"),
        ] {
            let error = text.parse::<UpstreamPath>().unwrap_err();
            assert!(error.contains(reason), "{text}: {error}");
        }
        // Not a gateway prefix, only a name that starts like one.
        assert_eq!(path("/via-apis").expected(), Expected::ChecksumOnly);
    }

    #[test]
    fn each_endpoint_routes_a_resource_its_own_way() {
        let blob = Resource::Path(path("/blobs?size=3"));
        let routes: Vec<Option<String>> = Endpoint::ALL
            .iter()
            .map(|&endpoint| blob.route(endpoint, 28))
            .collect();
        assert_eq!(
            routes,
            [
                Some("/via-api/blobs?size=3".to_owned()),
                Some("/via-shm/blobs?size=3".to_owned()),
                None,
                Some("/via-cached/blobs?size=3".to_owned()),
                Some("/blobs?size=3".to_owned()),
                Some("/via-published/blobs?size=3".to_owned()),
            ]
        );
        assert_eq!(
            Resource::Users(708).route(Endpoint::ShmHttp, 28).unwrap(),
            "/api/users-via-shm-http?count=708&seed=28"
        );
    }

    #[test]
    fn counts_and_paths_share_one_pool_by_weight() {
        let counts: CountMix = "708=18,12000=1".parse().unwrap();
        let blob = path("/blobs?size=3000&pattern=text&seed=1");
        let mix = RequestMix::new(Some(&counts), &[(blob.clone(), 1)]).unwrap();
        assert_eq!(mix.resources().len(), 3);
        assert_eq!(mix.counts(), Some(counts.clone()));
        assert_eq!(mix.paths(), vec![(&blob, 1)]);
        assert!(mix.checksum_only().is_empty());
        let mut rng = StdRng::seed_from_u64(5);
        let blobs = (0..20_000)
            .filter(|_| mix.pick(&mut rng) == Resource::Path(blob.clone()))
            .count();
        assert!((800..1_200).contains(&blobs), "{blobs} of 20000");
        assert_eq!(
            serde_json::to_value(&mix).unwrap(),
            serde_json::json!({
                "count": "708=18,12000=1",
                "paths": [{"path": "/blobs?size=3000&pattern=text&seed=1", "weight": 1}],
            })
        );
        assert_eq!(
            mix.to_string(),
            "count 708=18,12000=1; /blobs?size=3000&pattern=text&seed=1 weight 1"
        );
        assert!(RequestMix::new(None, &[(blob.clone(), 1), (blob, 2)]).is_err());
    }

    #[test]
    fn a_users_mix_draws_as_the_count_mix_did() {
        let counts: CountMix = "708=9,12000=1".parse().unwrap();
        let mix = RequestMix::users(&counts);
        let (mut left, mut right) = (StdRng::seed_from_u64(3), StdRng::seed_from_u64(3));
        for _ in 0..1_000 {
            assert_eq!(
                mix.pick(&mut left),
                Resource::Users(counts.pick(&mut right))
            );
        }
        assert_eq!(
            serde_json::to_value(RequestMix::users(&CountMix::single(708))).unwrap(),
            serde_json::json!({"count": 708})
        );
        assert_eq!(mix.paths(), vec![]);
    }
}
