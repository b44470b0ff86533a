//! shmbridge moves payloads between co-located processes through a shared-memory segment of
//! fixed-size slots, and hands the reader exactly the bytes that were published, or an error.
//!
//! A producer [`Producer::claim`]s a slot, writes into it and [`WriteGuard::publish`]es it as a
//! [`Handle`] (slot, generation, length, crc32, segment epoch) that travels to the consumer by any
//! channel, e.g. an HTTP header. The consumer [`Consumer::acquire`]s the handle, reads, verifies
//! the crc32 and that the slot's generation did not move during the read, and releases the slot.
//! Each slot's state and generation live in one atomic word; every transition is a compare-exchange,
//! so a handle is redeemable once, and a holder that was paused, killed or outlived its lease
//! finds the generation moved and fails instead of handing out bytes that are not its own. The
//! producer's reaper takes slots back from dead or late holders. See [`layout`] for the bytes.
//!
//! The example is compiled but not run by `cargo test` (the same hand-off runs in
//! `tests/slot_lifecycle.rs`): under `--cfg loom` the crate's atomics work only inside a model,
//! and rustdoc cannot see that cfg, so `RUSTFLAGS="--cfg loom" cargo test` runs exactly the models.
//!
//! ```no_run
//! use std::{io::Write, sync::Arc, time::Duration};
//! use shmbridge::{Consumer, ConsumerOptions, Producer, ProducerOptions, Segment, SegmentConfig};
//!
//! let segment = Arc::new(Segment::create(&SegmentConfig { slot_count: 4, slot_size: 4096 })?);
//! let producer = Producer::new(Arc::clone(&segment), ProducerOptions::default())?;
//! let consumer = Consumer::new(segment, ConsumerOptions::default())?;
//!
//! let mut slot = producer.claim(5, Duration::from_millis(100))?;
//! slot.write_all(b"hello")?;
//! let handle = slot.publish()?;
//!
//! let text = handle.to_string(); // what travels between the processes
//! let bytes = consumer.acquire(&text.parse()?)?.copy_out()?;
//! assert_eq!(bytes, b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// Design notes for maintainers:
// - Readers copy out and checksum the private copy (`ReadGuard::copy_out`); the crc the reader
//   compares with comes from the handle, never from shared memory, so a scribbled descriptor
//   cannot make corrupt bytes look right. The checksum costs less than the copy.
// - Holders stamp owner and deadline after winning the exchange; the reaper trusts a stamp only
//   when it names the current generation, and gives unstamped slots one lease of grace.
// - The reaper runs in the producer only: consumers never reclaim, so the producer's view of its
//   slots is the single authority for reclamation counts.

mod board;
mod consumer;
pub mod control;
mod error;
mod fdpass;
mod handle;
mod host;
pub mod http;
pub mod layout;
mod payload;
mod producer;
mod reaper;
mod sealed;
mod segment;
mod slot;
mod stats;
mod sync;
#[cfg(feature = "testing")]
pub mod testing;
mod verified_payloads;

pub use board::{BoardError, BoardView, Observed, VersionBoard};
pub use consumer::{Consumer, ConsumerOptions, ReadGuard};
pub use control::{ControlClient, ControlServer};
pub use error::{
    AcquireError, AttachError, ClaimError, CreateError, PublishError, ReadError, RedeemError,
};
pub use fdpass::{attach_via_socket, attach_via_socket_read_only, display_socket, is_socket_path};
pub use handle::{Handle, HandleParseError};
pub use host::{Host, Owner, SystemHost, monotonic_now_ns};
pub use layout::SlotState;
pub use producer::{Producer, ProducerOptions, ReaperThread, WriteGuard};
pub use reaper::MAX_DEADLINE_AHEAD;
pub use sealed::{PAYLOAD_MEMFD_NAME, SealedBytes, SealedError, SealedPayload, SealedWriter};
pub use segment::{Segment, SegmentConfig, SlotView};
pub use stats::{ReclaimReason, Reclaims, SlotCounts, Stats};
