//! The load engine: drives closed-loop users or an open-loop schedule against a gateway, each
//! request asking one endpoint (a transport, [`endpoint`]) for one resource (the users dataset
//! or any upstream path, [`target`]), verifies every body, and returns per-endpoint statistics.
//! `compare`, `sweep` and the chaos scenarios all run their traffic through `run`.

pub mod counts;
pub mod endpoint;
pub mod open_loop;
pub mod progress;
pub mod recorder;
pub mod request;
pub mod stats;
pub mod target;
pub mod users;
pub mod verify;
pub mod weighted;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use url::{Host, Url};

use endpoint::{Endpoint, EndpointMix};
use open_loop::OpenLoopProfile;
use progress::{LiveSnapshot, Progress};
use recorder::{Recorder, RequestObserver};
use request::RequestContext;
use stats::RunStats;
use target::{RequestMix, Resource};
use users::UsersProfile;
use verify::BodyChecker;

/// How requests are generated.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "model", rename_all = "snake_case")]
pub enum LoadModel {
    /// Locust-like users with think time (`ThinkTime::NONE` gives closed-loop capacity).
    Users(UsersProfile),
    /// wrk2-like fixed request rate, latency from the scheduled time.
    OpenLoop(OpenLoopProfile),
}

/// One load run.
#[derive(Clone, Debug, Serialize)]
pub struct LoadConfig {
    /// The gateway's base URL, e.g. `http://127.0.0.1:8080`.
    pub target: Url,
    pub model: LoadModel,
    #[serde(serialize_with = "serialize_seconds")]
    pub duration: Duration,
    pub mix: EndpointMix,
    /// Per request; a request past it is a timeout failure.
    #[serde(serialize_with = "serialize_seconds")]
    pub timeout: Duration,
    /// What each request asks for: users counts (the `count` query parameter of the seed's
    /// routes) and upstream paths, one for every request or a mix drawn per request. In JSON,
    /// `count` (as before paths existed) and `paths`.
    #[serde(flatten)]
    pub requests: RequestMix,
    /// The `seed` query parameter every users count carries.
    pub seed: u64,
    /// Seeds think times, endpoint and resource picks, so a run's request sequence can be
    /// replayed.
    pub rng_seed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "refusing to load {0}: not a loopback address (pass --allow-remote to load another host)"
    )]
    RemoteTarget(Url),
    #[error("target {0} is not a plain http:// URL with a host")]
    UnsupportedTarget(Url),
    #[error("invalid load profile: {0}")]
    InvalidProfile(String),
    #[error(
        "endpoint {endpoint} cannot carry {resource}: only the users routes (--count) have a {endpoint} route; leave it out of --endpoints"
    )]
    Uncarried {
        endpoint: Endpoint,
        resource: Resource,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// What the request generators (users, open loop) share during one run.
struct Generator {
    /// No request starts at or after this instant.
    end: Instant,
    timeout: Duration,
    mix: EndpointMix,
    requests: RequestMix,
    rng_seed: u64,
    context: RequestContext,
    recorder: Arc<Recorder>,
}

/// Durations appear in JSON as seconds, not as serde's `{secs, nanos}` pair.
pub fn serialize_seconds<S: serde::Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

/// Refuses targets outside this machine unless `allow_remote`: a load test aimed at the wrong
/// host is an attack on someone else's service.
pub fn check_target(target: &Url, allow_remote: bool) -> Result<(), LoadError> {
    if target.scheme() != "http" {
        return Err(LoadError::UnsupportedTarget(target.clone()));
    }
    let loopback = match target.host() {
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => return Err(LoadError::UnsupportedTarget(target.clone())),
    };
    if loopback || allow_remote {
        Ok(())
    } else {
        Err(LoadError::RemoteTarget(target.clone()))
    }
}

/// Refuses a pair of an endpoint and a resource the gateway has no route for (shm-http and an
/// upstream path), before anything is started.
pub fn check_routes(endpoints: &[Endpoint], requests: &RequestMix) -> Result<(), LoadError> {
    for &endpoint in endpoints {
        for resource in requests.resources() {
            if resource.route(endpoint, 0).is_none() {
                return Err(LoadError::Uncarried { endpoint, resource });
            }
        }
    }
    Ok(())
}

impl LoadConfig {
    /// The gateway route(s) `endpoint` is asked on in this run, for the reports: the seed's
    /// route for counts (`/api/users-via-shm`), the prefixed path for a path
    /// (`/via-shm/blobs?size=3`), or both kinds listed for a mix (`/via-shm/*` for its paths).
    pub fn route(&self, endpoint: Endpoint) -> String {
        let paths = self.requests.paths();
        let prefix = endpoint.prefix().unwrap_or(endpoint.path());
        let path_route = match paths.as_slice() {
            [] => None,
            [(path, _)] => Some(format!("{prefix}{path}")),
            _ => Some(format!("{prefix}/*")),
        };
        match path_route {
            None => endpoint.path().to_owned(),
            Some(route) if self.requests.counts().is_some() => {
                format!("{}, {route}", endpoint.path())
            }
            Some(route) => route,
        }
    }

    /// Checks the profile before anything runs.
    pub fn validate(&self) -> Result<(), LoadError> {
        let invalid = |reason: &str| Err(LoadError::InvalidProfile(reason.to_owned()));
        if self.duration.is_zero() {
            return invalid("the duration must be above 0");
        }
        if self.timeout.is_zero() {
            return invalid("the timeout must be above 0");
        }
        match self.model {
            LoadModel::Users(users) => {
                if users.users == 0 {
                    return invalid("--users must be at least 1");
                }
                if !(users.spawn_rate.is_finite() && users.spawn_rate > 0.0) {
                    return invalid("--spawn-rate must be a positive number");
                }
            }
            LoadModel::OpenLoop(open) => {
                if !(open.rate.is_finite() && open.rate > 0.0) {
                    return invalid("--rate must be a positive number");
                }
                if open.connections == 0 {
                    return invalid("--connections must be at least 1");
                }
            }
        }
        check_routes(&self.mix.endpoints(), &self.requests)
    }

    fn max_connections(&self) -> usize {
        match self.model {
            LoadModel::Users(users) => users.users as usize,
            LoadModel::OpenLoop(open) => open.connections as usize,
        }
    }
}

/// Runs `config` to completion and returns what it measured. Every request ends by its
/// deadline, so the run ends at most `timeout` after `duration`. Dropping the future stops
/// the run: its user and request tasks are aborted with it.
pub async fn run(
    config: &LoadConfig,
    checker: Arc<BodyChecker>,
    progress: Progress,
) -> Result<RunStats, LoadError> {
    run_observed(config, checker, progress, None).await
}

/// `run`, also passing every completed request to `observer`.
pub async fn run_observed(
    config: &LoadConfig,
    checker: Arc<BodyChecker>,
    progress: Progress,
    observer: Option<Arc<dyn RequestObserver>>,
) -> Result<RunStats, LoadError> {
    config.validate()?;
    let endpoints = config.mix.endpoints();
    let resources = config.requests.resources();
    // Generate the expected bodies before the clock starts, so the first requests are not slower.
    for resource in &resources {
        checker.expected_body(resource.expected(config.seed));
    }
    let context = RequestContext::new(
        &config.target,
        &endpoints,
        &resources,
        config.seed,
        config.max_connections(),
        checker,
    )?;
    let started = Instant::now();
    let recorder = Arc::new(Recorder::new(
        started,
        &endpoints,
        progress.clone(),
        observer,
    ));
    let generator = Arc::new(Generator {
        end: started + config.duration,
        timeout: config.timeout,
        mix: config.mix.clone(),
        requests: config.requests.clone(),
        rng_seed: config.rng_seed,
        context,
        recorder: recorder.clone(),
    });
    let work = async move {
        match config.model {
            LoadModel::Users(profile) => users::run_users(profile, generator).await,
            LoadModel::OpenLoop(profile) => open_loop::run_open_loop(profile, generator).await,
        }
    };
    let mut work = Box::pin(work);
    let mut ticker = tokio::time::interval(progress.interval());
    ticker.tick().await;
    let mut shown = LiveSnapshot::default();
    loop {
        tokio::select! {
            () = &mut work => break,
            _ = ticker.tick() => {
                let now = recorder.snapshot();
                progress.update(&now, &shown);
                shown = now;
            }
        }
    }
    progress.finish();
    // The finished future still owns its recorder handle until dropped.
    drop(work);
    let recorder = Arc::into_inner(recorder)
        .expect("every user and request task has finished and dropped its recorder handle");
    Ok(recorder.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        text.parse().unwrap()
    }

    #[test]
    fn loopback_targets_are_allowed() {
        for target in [
            "http://127.0.0.1:8080",
            "http://127.3.2.1/",
            "http://localhost:1",
            "http://[::1]:80",
        ] {
            check_target(&url(target), false).unwrap();
        }
    }

    #[test]
    fn remote_targets_need_allow_remote() {
        for target in [
            "http://10.0.0.1:80",
            "http://example.com",
            "http://[2001:db8::1]/",
        ] {
            assert!(matches!(
                check_target(&url(target), false),
                Err(LoadError::RemoteTarget(_))
            ));
            check_target(&url(target), true).unwrap();
        }
        assert!(matches!(
            check_target(&url("https://127.0.0.1"), false),
            Err(LoadError::UnsupportedTarget(_))
        ));
    }

    #[test]
    fn a_path_is_not_asked_of_shm_http_and_routes_are_named_per_endpoint() {
        let blob: target::UpstreamPath = "/blobs?size=3".parse().unwrap();
        let counts = counts::CountMix::single(708);
        let paths = RequestMix::path(blob.clone());
        let both = RequestMix::new(Some(&counts), &[(blob, 1)]).unwrap();
        let with_http = [Endpoint::Api, Endpoint::ShmHttp];
        check_routes(&with_http, &RequestMix::users(&counts)).unwrap();
        let error = check_routes(&with_http, &paths).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("shm-http cannot carry /blobs?size=3"),
            "{error}"
        );
        let carrying = [
            Endpoint::Api,
            Endpoint::Shm,
            Endpoint::Cached,
            Endpoint::Auto,
        ];
        check_routes(&carrying, &both).unwrap();

        let mut config = crate::loadtest::report::fixture::config();
        assert_eq!(config.route(Endpoint::Shm), "/api/users-via-shm");
        config.requests = paths;
        assert_eq!(config.route(Endpoint::Shm), "/via-shm/blobs?size=3");
        assert_eq!(config.route(Endpoint::Auto), "/blobs?size=3");
        config.requests = both;
        assert_eq!(
            config.route(Endpoint::Cached),
            "/api/users-cached, /via-cached/blobs?size=3"
        );
    }
}
