//! shmbridge-chaos: the load generator that reproduces the seed's load test against the
//! shmbridge gateway, verifies every body it receives, and writes the seed's report beside ours;
//! and the fault-injection harness that runs that load while it kills, pauses and slows the
//! services, and counts what was served.

pub mod cli;
pub mod compare;
pub mod faults;
pub mod harness;
pub mod inject;
pub mod inspect;
pub mod load;
pub mod output;
pub mod report;
pub mod scenario;
