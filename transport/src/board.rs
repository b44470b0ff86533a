//! The version board (see "Version board" in [`crate::layout`]): which version of each object
//! a producer's answers named is still the current one, readable by every consumer with one
//! atomic load. The producer's side is [`VersionBoard`] (observe, publish, invalidate), a
//! consumer's [`BoardView`] (is this version current?). The entries are `sync.rs` atomics, so
//! the loom models run this very code.

mod memory;
#[cfg(all(test, not(loom)))]
mod tests;

use std::os::fd::OwnedFd;
use std::sync::Arc;

use thiserror::Error;

use crate::layout::{MAX_BOARD_ENTRIES, board_index};
use crate::sealed::SealedError;
use crate::sync::{AtomicU64, Ordering};
use memory::BoardMemory;

/// Why a board could not be made, or a received one is not trusted.
#[derive(Debug, Error)]
pub enum BoardError {
    #[error("a board's entry count must be a power of two from 1 to {MAX_BOARD_ENTRIES}, not {0}")]
    EntryCount(u32),
    #[error(
        "board descriptor lacks seals {missing:#x} (it has {found:#x}): its size could still change"
    )]
    NotSealed { missing: u32, found: u32 },
    #[error("board file holds {actual} bytes, its header says {expected}")]
    WrongSize { expected: u64, actual: u64 },
    #[error("not a version board: {0}")]
    Header(&'static str),
    /// A system call on the board's file failed.
    #[error(transparent)]
    File(#[from] SealedError),
}

/// What [`VersionBoard::observe`] saw in a key's entry, to publish from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "publish the body made after observing, or drop the observation"]
pub struct Observed {
    index: usize,
    word: u64,
}

/// Success ordering of the board's writes, Acquire of `observe`. The `shmbridge_mutant` cfg
/// weakens one on purpose, only so CI can show the loom models fail without it.
#[cfg(not(shmbridge_mutant = "board_no_release"))]
const WRITE: Ordering = Ordering::Release;
#[cfg(shmbridge_mutant = "board_no_release")]
const WRITE: Ordering = Ordering::Relaxed;
#[cfg(not(shmbridge_mutant = "board_no_acquire"))]
const OBSERVE: Ordering = Ordering::Acquire;
#[cfg(shmbridge_mutant = "board_no_acquire")]
const OBSERVE: Ordering = Ordering::Relaxed;

/// A producer's version board: it alone writes it.
pub struct VersionBoard {
    memory: Arc<BoardMemory>,
    /// The next version to write. Private to the producer, so nothing written into the file can
    /// make a version repeat (rule 1).
    next_version: AtomicU64,
}

impl VersionBoard {
    /// A new board of `entry_count` entries (a power of two, at most [`MAX_BOARD_ENTRIES`]) in
    /// a sealed memfd, every entry 0 (nothing current).
    pub fn create(entry_count: u32) -> Result<Self, BoardError> {
        Ok(Self::on(BoardMemory::create(entry_count)?))
    }

    /// A board on crate-allocated memory, for loom models.
    #[cfg(loom)]
    pub fn in_memory(entry_count: u32) -> Self {
        Self::on(BoardMemory::heap(entry_count))
    }

    fn on(memory: BoardMemory) -> Self {
        Self {
            memory: Arc::new(memory),
            next_version: AtomicU64::new(1),
        }
    }

    /// The board's epoch: a version means something only on the board of its epoch.
    pub fn epoch(&self) -> u64 {
        self.memory.epoch()
    }

    pub fn entry_count(&self) -> u32 {
        self.memory.entry_count()
    }

    /// A read-only descriptor of the board, to hand to a consumer.
    pub fn share(&self) -> Result<OwnedFd, BoardError> {
        self.memory.share()
    }

    /// A view of this very board, as a consumer in this process would read it.
    pub fn view(&self) -> BoardView {
        BoardView {
            memory: Arc::clone(&self.memory),
        }
    }

    /// Loads `key`'s entry: call before reading the data its body is made from (rule 2).
    pub fn observe(&self, key: u64) -> Observed {
        let index = board_index(key, self.entry_count());
        Observed {
            index,
            word: self.memory.entry(index).load(OBSERVE),
        }
    }

    /// Names a fresh version current for the key observed, unless its entry changed since (an
    /// invalidation came in between: the body may be made from old data), or versions ran out.
    pub fn publish(&self, observed: Observed) -> Option<u64> {
        let version = self.fresh_version()?;
        self.memory
            .entry(observed.index)
            .compare_exchange(observed.word, version, WRITE, Ordering::Relaxed)
            .ok()
            .map(|_| version)
    }

    /// Makes every version of `key` published so far non-current: call after the data behind
    /// it changed. Once this returns, no reader that loads the entry afterwards sees them.
    pub fn invalidate(&self, key: u64) {
        let index = board_index(key, self.entry_count());
        // Out of versions, 0 (never current) still replaces whatever was current.
        let word = self.fresh_version().unwrap_or(0);
        // A swap where a store would do: loom (tokio-rs/loom#254) lets a plain store slip
        // between the read and the write of a racing compare-exchange, which no hardware does,
        // and then reports a stale body that cannot happen. Both cost one locked instruction.
        self.memory.entry(index).swap(word, WRITE);
    }

    fn fresh_version(&self) -> Option<u64> {
        let version = self.next_version.fetch_add(1, Ordering::Relaxed);
        (version != u64::MAX && version != 0).then_some(version)
    }
}

impl std::fmt::Debug for VersionBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionBoard")
            .field("epoch", &self.epoch())
            .field("entry_count", &self.entry_count())
            .finish_non_exhaustive()
    }
}

/// A consumer's read-only view of a producer's board.
#[derive(Clone)]
pub struct BoardView {
    memory: Arc<BoardMemory>,
}

impl BoardView {
    /// Checks a received board descriptor (seals, size, header) and maps it read-only. The
    /// descriptor is closed on return, whatever the outcome.
    pub fn attach(fd: OwnedFd) -> Result<Self, BoardError> {
        Ok(Self {
            memory: Arc::new(BoardMemory::attach(fd)?),
        })
    }

    /// [`BoardView::attach`], refusing a board whose header is not the `epoch` and
    /// `entry_count` its producer announced with it.
    pub fn attach_announced(fd: OwnedFd, epoch: u64, entry_count: u32) -> Result<Self, BoardError> {
        let view = Self::attach(fd)?;
        if view.epoch() != epoch || view.entry_count() != entry_count {
            return Err(BoardError::Header("not the board its producer announced"));
        }
        Ok(view)
    }

    pub fn epoch(&self) -> u64 {
        self.memory.epoch()
    }

    pub fn entry_count(&self) -> u32 {
        self.memory.entry_count()
    }

    /// Whether `version` of `key`, published on the board of `epoch`, is still current: one
    /// load of the key's entry. `false` means ask the producer.
    pub fn is_current(&self, epoch: u64, key: u64, version: u64) -> bool {
        if epoch != self.epoch() || version == 0 {
            return false;
        }
        let index = board_index(key, self.entry_count());
        self.memory.entry(index).load(Ordering::Acquire) == version
    }
}
