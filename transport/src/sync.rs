//! The one place that chooses std or loom synchronization types.
//!
//! Everything that takes part in the shared-memory protocol imports its atomics from here, so
//! `RUSTFLAGS="--cfg loom"` model-checks the real slot code rather than a copy of it. Loom is a
//! `--cfg` flag, never a Cargo feature a user could switch on by accident. The mutex is here for
//! the producer's record of sealed publications, which loom models may drive alongside the slots.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};
