//! shmbridge-chaos, in three layers:
//!
//! - [`loadtest`]: the main job. The load generator that reproduces the seed's load test against
//!   the shmbridge gateway and verifies every body it receives, the reports that put the seed's
//!   figures beside ours, and `compare`, which runs both services and the load end to end.
//! - [`harness`]: the fault-injection harness (`run`), on top of the load engine: it runs that
//!   load while it kills, pauses, slows and damages the services, one file per fault class in
//!   [`harness::faults`], and counts what was served.
//! - [`process`]: below both, the services as supervised child processes.
//!
//! Beside them, [`segment`] reaches a running users-service's live segment, which
//! [`inspect`] prints and the harness damages and checks.

pub mod harness;
pub mod inspect;
pub mod loadtest;
pub mod process;
pub mod segment;
