//! shmbridge-chaos: the load generator that reproduces the seed's load test against the
//! shmbridge gateway, verifies every body it receives, and writes the seed's report beside ours.

pub mod cli;
pub mod compare;
pub mod inject;
pub mod inspect;
pub mod load;
pub mod output;
pub mod report;
