//! The one place that chooses std or loom synchronization types.
//!
//! Everything that takes part in the shared-memory protocol imports its atomics from here, so
//! `RUSTFLAGS="--cfg loom"` model-checks the real slot code rather than a copy of it. Loom is a
//! `--cfg` flag, never a Cargo feature a user could switch on by accident.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
