//! The gateway, the front: a reverse proxy in front of users-service over REST or shared
//! memory. An index: the service is in `app` (routes, serving, readiness), its command line in
//! `args`, what its handlers share in `state`; the routes in `proxy_routes` (any upstream path)
//! and `users_routes` (the seed's); one exchange with the upstream in `exchange` (its result in
//! `answer`), over
//! `upstream` (REST) or `shm_consumer` (the control channel), timed stage by stage in
//! `stage_timing`, the request and answer as they
//! pass in `forward_request`, `proxied_response` and `hop_by_hop`; which paths and which
//! transport in `forward_policy` and `transport_choice`; the ceiling's cache in `body_cache`;
//! answers served again while the producer's version board says so in `published_objects`.

mod answer;
mod app;
mod args;
mod body_cache;
mod exchange;
mod forward_policy;
mod forward_request;
mod hop_by_hop;
mod proxied_response;
mod proxy_routes;
mod published_objects;
pub mod shm_consumer;
mod stage_timing;
mod state;
mod transport_choice;
pub mod upstream;
mod users_routes;

pub use app::{admin_app, app, run};
pub use args::Args;
pub use forward_policy::{PathPrefix, PathPrefixError, parse_path_prefix};
pub use forward_request::MAX_REQUEST_BODY_BYTES;
pub use hop_by_hop::{MAX_RESPONSE_HEADER_BYTES, MAX_RESPONSE_HEADERS};
pub use state::{AppState, StartError};
pub use transport_choice::TransportChoice;
