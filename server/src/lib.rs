//! shmbridge-server: the users-service (producer) and the gateway (front), as library modules so
//! that other crates (the chaos harness) can run them in-process or as re-executed children:
//! each service has a clap `Args`, `app(state) -> Router` and `run(args)`.
//!
//! Each service is a folder ([`users_service`], [`gateway`]); the files beside them are what
//! both use (errors, the dataset and its queries, the body and its headers, the segment info
//! one serves and the other reads, serving, telemetry and its `Server-Timing`, fault points).

pub mod api_error;
pub mod blobs;
pub mod dataset;
pub mod failpoints;
pub mod gateway;
pub mod memory_budget;
pub mod payload;
pub mod query;
pub mod query_cache;
pub mod segment_info;
pub mod serve;
pub mod server_timing;
pub mod slot_deadline;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod transport_header;
pub mod turns;
pub mod users_service;
pub mod waiting_room;
