//! The gateway, the front: its HTTP app, its client of users-service, and its side of shared
//! memory. An index: the service itself is in `app`.

mod app;
pub mod shm_consumer;
pub mod upstream;

pub use app::{AppState, Args, StartError, admin_app, app, run};
