//! users-service, the producer: its HTTP app, its side of shared memory, and what it does with a
//! segment file left at its path. An index: the service itself is in `app`.

mod app;
mod bodies;
mod channel_routes;
mod objects;
mod sealed_bodies;
pub mod shm_producer;
pub mod stale_segment;
mod start;
mod streamed_body;

pub use app::{AppState, Args, app, run};
pub use bodies::{Bodies, DATASETS_MAX_BYTES, MAX_KEPT_USERS};
