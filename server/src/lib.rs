//! shmbridge-server: the users-service (producer) and the gateway (front), as library modules so
//! that other crates (the chaos harness) can run them in-process or as re-executed children:
//! each service has a clap `Args`, `app(state) -> Router` and `run(args)`.

pub mod api_error;
pub mod dataset;
pub mod failpoint_build;
pub mod failpoints;
pub mod gateway;
pub mod payload;
pub mod query;
pub mod query_cache;
pub mod serve;
pub mod shm_consumer;
pub mod shm_producer;
pub mod slot_deadline;
pub mod stale_segment;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod upstream;
pub mod users_service;
