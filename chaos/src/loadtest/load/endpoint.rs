//! The gateway endpoints a load run can hit, and the weighted mix that picks one per request.
//! Each endpoint is a transport: for the users dataset, one of the seed's routes
//! ([`Endpoint::path`]); for any upstream path, the gateway's measuring prefix in front of that
//! path ([`Endpoint::prefix`]).

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::Serialize;

use super::weighted::Weighted;

/// One gateway route. The order of the variants is the order of rows in every report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `/api/users-via-api`: the gateway fetches the payload from users-service over HTTP.
    Api,
    /// `/api/users-via-shm`: the payload travels through shared memory, asked for over the
    /// control channel.
    Shm,
    /// `/api/users-via-shm-http`: through shared memory, asked for over HTTP, which carries the
    /// handle back (the seed's design; both services need `--http-signal`).
    ShmHttp,
    /// `/api/users-cached`: the gateway serves a pre-serialized body; the ceiling for the others.
    Cached,
    /// `/api/users`: the transport the gateway's `--transport` picks per request (`auto`: by
    /// size, REST when shared memory fails); `x-transport` says which one it took.
    Auto,
    /// `/api/users-published`: shared memory, answered from the gateway's kept copy with no
    /// message to users-service while its version board says the body is current (kept bodies
    /// are named objects only under users-service `--cache`).
    Published,
}

impl Endpoint {
    pub const ALL: [Endpoint; 6] = [
        Endpoint::Api,
        Endpoint::Shm,
        Endpoint::ShmHttp,
        Endpoint::Cached,
        Endpoint::Auto,
        Endpoint::Published,
    ];

    /// Whether the payload may pass through the shared-memory segment.
    pub fn uses_shm(self) -> bool {
        matches!(
            self,
            Endpoint::Shm | Endpoint::ShmHttp | Endpoint::Auto | Endpoint::Published
        )
    }

    /// The seed's route of this transport for the users dataset (`count` and `seed` in its query).
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Api => "/api/users-via-api",
            Endpoint::Shm => "/api/users-via-shm",
            Endpoint::ShmHttp => "/api/users-via-shm-http",
            Endpoint::Cached => "/api/users-cached",
            Endpoint::Auto => "/api/users",
            Endpoint::Published => "/api/users-published",
        }
    }

    /// What the gateway puts in front of an upstream path to carry it by this transport:
    /// `/via-api/blobs?size=3` over REST, `/via-shm/blobs?size=3` through shared memory,
    /// `/via-cached/blobs?size=3` from the gateway's in-memory copy (the ceiling),
    /// `/via-published/blobs?size=3` from a published object, and the path itself under the
    /// gateway's `--transport`. `None` for `shm-http`, which only the users
    /// routes have.
    pub fn prefix(self) -> Option<&'static str> {
        match self {
            Endpoint::Api => Some("/via-api"),
            Endpoint::Shm => Some("/via-shm"),
            Endpoint::ShmHttp => None,
            Endpoint::Cached => Some("/via-cached"),
            Endpoint::Auto => Some(""),
            Endpoint::Published => Some("/via-published"),
        }
    }

    /// The name the seed report uses for this endpoint.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Api => "REST API",
            Endpoint::Shm => "Shared Memory",
            Endpoint::ShmHttp => "Shared Memory (HTTP-signalled)",
            Endpoint::Cached => "Cached (ceiling)",
            Endpoint::Auto => "Hybrid (--transport)",
            Endpoint::Published => "Published (version board)",
        }
    }

    fn short_name(self) -> &'static str {
        match self {
            Endpoint::Api => "api",
            Endpoint::Shm => "shm",
            Endpoint::ShmHttp => "shm-http",
            Endpoint::Cached => "cached",
            Endpoint::Auto => "auto",
            Endpoint::Published => "published",
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Endpoint::ALL
            .into_iter()
            .find(|endpoint| endpoint.short_name() == text)
            .ok_or_else(|| {
                format!(
                    "unknown endpoint {text:?} (expected api, shm, shm-http, cached, auto or \
                     published)"
                )
            })
    }
}

/// Which endpoints a run hits and how often, e.g. `api,shm` (50/50) or `api=3,shm=1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointMix(Weighted<Endpoint>);

impl EndpointMix {
    pub fn new(weights: Vec<(Endpoint, u32)>) -> Result<Self, String> {
        Weighted::new(weights, "endpoint").map(EndpointMix)
    }

    /// `endpoint` alone.
    pub fn only(endpoint: Endpoint) -> Self {
        EndpointMix(Weighted::one(endpoint))
    }

    /// The endpoints with a non-zero weight, in report order.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        let mut endpoints: Vec<Endpoint> = self.0.drawable().collect();
        endpoints.sort();
        endpoints
    }

    pub fn pick(&self, rng: &mut impl Rng) -> Endpoint {
        self.0.pick(rng)
    }
}

impl Default for EndpointMix {
    /// The seed's mix: every request picks REST or shared memory with equal odds.
    fn default() -> Self {
        EndpointMix::new(vec![(Endpoint::Api, 1), (Endpoint::Shm, 1)])
            .expect("two distinct endpoints of weight 1")
    }
}

impl FromStr for EndpointMix {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Weighted::parse(text, "endpoint", str::parse).map(EndpointMix)
    }
}

/// Serialized in its command-line form, e.g. `"api=1,shm=1"`.
impl Serialize for EndpointMix {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Display for EndpointMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn parses_names_and_weights() {
        let mix: EndpointMix = "api=3, shm".parse().unwrap();
        assert_eq!(mix.0.items(), &[(Endpoint::Api, 3), (Endpoint::Shm, 1)]);
        assert_eq!(mix.to_string(), "api=3,shm=1");
    }

    #[test]
    fn every_endpoint_but_shm_http_carries_any_path() {
        let carried: Vec<Option<&str>> = Endpoint::ALL.iter().map(|e| e.prefix()).collect();
        assert_eq!(
            carried,
            [
                Some("/via-api"),
                Some("/via-shm"),
                None,
                Some("/via-cached"),
                Some(""),
                Some("/via-published")
            ]
        );
    }

    #[test]
    fn rejects_bad_mixes() {
        assert!("ftp".parse::<EndpointMix>().is_err());
        assert!("api,api".parse::<EndpointMix>().is_err());
        assert!("api=0".parse::<EndpointMix>().is_err());
        assert!("api=x".parse::<EndpointMix>().is_err());
    }

    #[test]
    fn default_mix_is_even() {
        let mix = EndpointMix::default();
        let mut rng = StdRng::seed_from_u64(7);
        let api = (0..10_000)
            .filter(|_| mix.pick(&mut rng) == Endpoint::Api)
            .count();
        assert!((4_700..5_300).contains(&api), "api picked {api} of 10000");
    }

    #[test]
    fn zero_weight_endpoint_is_never_picked() {
        let mix: EndpointMix = "api=0,shm=1".parse().unwrap();
        assert_eq!(mix.endpoints(), vec![Endpoint::Shm]);
        let mut rng = StdRng::seed_from_u64(1);
        assert!((0..1_000).all(|_| mix.pick(&mut rng) == Endpoint::Shm));
    }
}
