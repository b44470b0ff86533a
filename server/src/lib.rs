//! shmbridge-server: the users-service (producer) and the gateway (front), as library modules so
//! that other crates (the chaos harness) can run them in-process or as re-executed children.

pub mod dataset;
pub mod query;
