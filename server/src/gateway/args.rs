//! The gateway's command line: where it listens, its upstream and how it reaches it, which
//! upstream paths it forwards, and its bounds.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::Url;

use crate::serve::CommonArgs;
use crate::slot_deadline;

use super::forward_policy::{PathPrefix, parse_path_prefix};
use super::transport_choice::TransportChoice;
use super::upstream::parse_upstream_url;

/// gateway: the front that clients call.
#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "gateway",
    version,
    about = "The front: a reverse proxy to users-service over REST or shared memory, with the \
             seed's users routes and a cached ceiling",
    args_override_self = true
)]
pub struct Args {
    /// Address to listen on; port 0 picks a free port (the bound one is printed on stdout).
    #[arg(
        long,
        env = "SHMBRIDGE_GATEWAY_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
    /// Base URL of users-service.
    #[arg(long, env = "SHMBRIDGE_UPSTREAM", default_value = "http://127.0.0.1:8081", value_parser = parse_upstream_url)]
    pub upstream: Url,
    /// Deadline for everything one request asks of users-service; past it the client gets a 503.
    #[arg(long, env = "SHMBRIDGE_DEADLINE", default_value = "2s", value_parser = humantime::parse_duration)]
    pub deadline: Duration,
    /// Bound on attaching to users-service's segment (looking up its socket, connecting,
    /// receiving the greeting), and on a request's wait for another request's attach; at most
    /// `--deadline`. A producer that does not greet in time costs a 503 (`shm_unavailable`),
    /// and the next request tries a fresh attach.
    #[arg(long, env = "SHMBRIDGE_ATTACH_TIMEOUT", default_value = "250ms", value_parser = humantime::parse_duration)]
    pub attach_timeout: Duration,
    /// Idle keep-alive connections kept open to users-service.
    #[arg(long, env = "SHMBRIDGE_POOL_MAX_IDLE", default_value_t = 64)]
    pub pool_max_idle: usize,
    /// Socket serving users-service's segment and control channel: an abstract name, or a path
    /// when it holds a `/`. Default: ask users-service (`GET /shm/segment`) at every attach.
    #[arg(long, env = "SHMBRIDGE_SHM_SOCKET")]
    pub shm_socket: Option<String>,
    /// A uid, besides the gateway's own, trusted to answer on the control socket (repeat for
    /// several). A process of any other uid answering there is refused, as is one that did not
    /// create the segment it hands over.
    #[arg(
        long = "producer-uid",
        env = "SHMBRIDGE_PRODUCER_UIDS",
        value_delimiter = ','
    )]
    pub producer_uids: Vec<u32>,
    /// Publications the gateway asks for at once (over either signal); more requests wait
    /// for one of these to be redeemed (within their deadline). A request unanswered at its
    /// deadline holds its permit until the answer comes, one second past the deadline at
    /// most. Keep it at or below
    /// users-service's `--max-unredeemed-per-peer` (by default half its slots, 32), or a burst
    /// is refused there as busy instead of waiting here.
    #[arg(long, env = "SHMBRIDGE_SHM_MAX_IN_FLIGHT", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub shm_max_in_flight: u32,
    /// Also serve `/api/users-via-shm-http`: shared memory asked for over HTTP (`POST
    /// /shm/users`, which users-service serves only with its own `--http-signal`), the seed's
    /// design, kept to be measured beside the control channel.
    #[arg(long, env = "SHMBRIDGE_GATEWAY_HTTP_SIGNAL")]
    pub http_signal: bool,
    /// How long a read may hold its slot before the reaper takes it back (more than 0, at most
    /// 1h).
    #[arg(long, env = "SHMBRIDGE_LEASE", default_value = "1s", value_parser = slot_deadline::parse)]
    pub lease: Duration,
    /// Also serve the operators' `GET /status` (readiness with its detail: error chains,
    /// socket, epoch) on this address, announced as `admin listening on ADDR` on stdout after
    /// the main address. Off unless given; bind it to loopback.
    #[arg(long, env = "SHMBRIDGE_GATEWAY_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Bytes of verified sealed payloads kept mapped: users-service under `--cache` hands the
    /// same immutable memfd for every publication of a body (any size above the inline
    /// threshold), and one the gateway already verified is served from its kept mapping instead of being mapped and
    /// checksummed again. 0 checks every payload.
    #[arg(long, env = "SHMBRIDGE_KEEP_VERIFIED_BYTES", default_value_t = 160 << 20)]
    pub keep_verified_bytes: u64,
    /// Bytes of answers the gateway holds for requests in flight, whichever way they came (REST
    /// bodies as they arrive, copies out of slots, inline bodies, sealed mappings a response
    /// still pins), until each response is written, and the users bodies it serializes itself
    /// while it makes them (then its cache holds them). A
    /// request whose answer would go past it is refused at once: 503 `gateway_busy` with
    /// `Retry-After`; but a body users-service has already made over shared memory waits for
    /// room until the deadline, since refusing it would waste the work. The default serves one body of the largest size users-service makes
    /// (128 MiB) beside others; a body larger than the budget is always refused. The caches
    /// (`--keep-verified-bytes`, the cached routes' 160 MiB each) are bounded apart from it.
    #[arg(long, env = "SHMBRIDGE_MEMORY_BUDGET", default_value_t = 256 << 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub memory_budget: u64,
    /// Serve `/api/users-via-shm` (and `/api/users-via-shm-http`) over the REST path when shared
    /// memory fails (marked `x-transport: api-fallback` and counted). Off by default so shm
    /// failures stay visible. `--transport auto` falls back so for the routes it governs.
    #[arg(long, env = "SHMBRIDGE_SHM_FALLBACK_TO_API")]
    pub shm_fallback_to_api: bool,
    /// How long after the producer becomes unreachable a kept published answer (one the
    /// producer named an object version, still current on its board as it left it) is served
    /// anyway, marked `x-transport: shm-stale`. 0 (the default): never.
    #[arg(long, env = "SHMBRIDGE_STALE_IF_ERROR", default_value = "0s", value_parser = humantime::parse_duration)]
    pub stale_if_error: Duration,
    /// How forwarded requests and `GET /api/users` reach the upstream: `api` (REST), `shm`
    /// (shared memory, failures are the client's), or `auto`: shared memory, the producer
    /// choosing the tier from the body's size, and REST whenever shared memory is unavailable or
    /// busy or cannot carry the request (`x-transport: api-fallback`).
    #[arg(long, env = "SHMBRIDGE_TRANSPORT", value_enum, default_value_t = TransportChoice::Auto)]
    pub transport: TransportChoice,
    /// An upstream path prefix the gateway forwards (repeat for several; `/`: every path). A
    /// path outside all of them is the gateway's own 404.
    #[arg(
        long = "forward-prefix",
        env = "SHMBRIDGE_FORWARD_PREFIXES",
        value_delimiter = ',',
        value_parser = parse_path_prefix,
        default_values = ["/"]
    )]
    pub forward_prefixes: Vec<PathPrefix>,
    /// An upstream path prefix the gateway never forwards, even inside a `--forward-prefix`
    /// (repeat for several): by default the upstream's operational routes. Giving the flag
    /// replaces the whole default list.
    #[arg(
        long = "private-prefix",
        env = "SHMBRIDGE_PRIVATE_PREFIXES",
        value_delimiter = ',',
        value_parser = parse_path_prefix,
        default_values = ["/shm/", "/readyz", "/healthz", "/metrics"]
    )]
    pub private_prefixes: Vec<PathPrefix>,
    #[command(flatten)]
    pub common: CommonArgs,
}
