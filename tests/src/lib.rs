//! Helpers for the whole-system tests in `tests/tests/`: the services, `compare` and the chaos
//! scenarios run as real processes, from the binaries the workspace builds ([`binary`]), started,
//! awaited and reaped ([`process`]). Each crate's own tests stay beside its code; the tests here
//! are the ones that need the whole system.

pub mod binary;
pub mod fake_producer;
pub mod process;
