//! The gateway, the front: its HTTP app, its client of users-service, and its side of shared
//! memory. An index: the service itself is in `app`.

mod app;
pub mod shm_consumer;
mod transport_choice;
pub mod upstream;

pub use app::{AppState, Args, StartError, admin_app, app, run};
pub use transport_choice::{TransportChoice, estimated_body_bytes};
