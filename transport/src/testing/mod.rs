//! Test support shared by the crate's tests, the loom models and the fuzz targets (feature
//! `testing`): a manual clock with simulated processes, the checkers the fuzz targets call,
//! so that every fuzz input can also be replayed by plain `cargo test`, and a descriptor socket
//! that never answers.

mod board_ops;
mod control_frame;
mod pick;
mod sealed_tickets;
mod segment_image;
mod silent_socket;
mod slot_ops;

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use crate::handle::Handle;
use crate::host::{Host, Owner, nanos};

pub use board_ops::{BoardOp, check_board_ops};
pub use control_frame::check_control_frame;
pub use segment_image::check_segment_image;
pub use silent_socket::silent_listener;
pub use slot_ops::{Op, check_slot_ops};

/// A [`Host`] whose clock moves only when told to and whose processes die only when killed.
/// Not part of the protocol, so it uses std types directly, also under loom.
#[derive(Debug, Default)]
pub struct ManualHost {
    now_ns: AtomicU64,
    dead: Mutex<HashSet<Owner>>,
}

impl ManualHost {
    /// Starts the clock at one second, so deadlines computed from it are never zero.
    pub fn new() -> Self {
        Self {
            now_ns: AtomicU64::new(1_000_000_000),
            dead: Mutex::default(),
        }
    }

    pub fn advance(&self, by: Duration) {
        self.now_ns.fetch_add(nanos(by), SeqCst);
    }

    /// Marks `owner` dead, as if its process had exited.
    pub fn kill(&self, owner: Owner) {
        self.dead
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(owner);
    }

    /// A simulated process identity; `n` distinguishes processes.
    pub fn process(n: u32) -> Owner {
        Owner {
            pid: 4_000_000 + n,
            start_time: u64::from(n) + 1,
            pidfs_ino: u64::from(n) + 1_000,
        }
    }
}

impl Host for ManualHost {
    fn now_ns(&self) -> u64 {
        self.now_ns.load(SeqCst)
    }

    fn is_alive(&self, owner: Owner) -> bool {
        !self
            .dead
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&owner)
    }

    fn sleep(&self, duration: Duration) {
        self.advance(duration);
    }
}

/// Parses `text` as a handle; a valid handle must format back to exactly `text`.
///
/// # Panics
/// When a parsed handle does not round-trip.
pub fn check_handle_text(text: &str) {
    if let Ok(handle) = text.parse::<Handle>() {
        assert_eq!(handle.to_string(), text, "handle did not round-trip");
    }
}
