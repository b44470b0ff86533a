//! Where a version board lives: a sealed memfd mapped read-write by its producer and read-only
//! by consumers (or, for loom models, crate-allocated atomics), with the header checked once.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;

use memmap2::{MmapOptions, MmapRaw};
use nix::fcntl::{FcntlArg, SealFlag, fcntl};

use super::BoardError;
use crate::layout::{
    BOARD_HEADER_SIZE, BOARD_MAGIC, BOARD_VERSION, BoardHeader, MAX_BOARD_ENTRIES, board_size,
};
use crate::sealed::{SealedError, check_seals, read_only, sealable_memfd};
use crate::sync::AtomicU64;

/// Seals a consumer requires of a board: its size can never change, so no page of a mapping
/// can fault with SIGBUS. Never F_SEAL_WRITE: the producer keeps writing.
const REQUIRED_SEALS: SealFlag = SealFlag::F_SEAL_SHRINK.union(SealFlag::F_SEAL_GROW);

/// A board's memory and its header, as checked.
pub(super) struct BoardMemory {
    header: BoardHeader,
    place: Place,
}

enum Place {
    /// The mapping and the file it maps (kept to hand out descriptors).
    Mapped { map: MmapRaw, file: File },
    /// Loom atomics cannot live in mapped bytes, so loom models run on crate-allocated memory.
    #[cfg(loom)]
    Heap(Box<[AtomicU64]>),
}

fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> SealedError {
    move |source| SealedError::Io { op, source }
}

fn check_entry_count(entry_count: u32) -> Result<(), BoardError> {
    if entry_count.is_power_of_two() && entry_count <= MAX_BOARD_ENTRIES {
        Ok(())
    } else {
        Err(BoardError::EntryCount(entry_count))
    }
}

impl BoardMemory {
    /// A new board in a memfd: header written, every entry 0, sealed, mapped read-write.
    pub(super) fn create(entry_count: u32) -> Result<Self, BoardError> {
        check_entry_count(entry_count)?;
        let epoch = getrandom::u64()
            .map_err(|error| io("getrandom")(error.into()))?
            .max(1);
        let header = BoardHeader::new(entry_count, epoch);
        let file = File::from(sealable_memfd(c"shmbridge-board").map_err(io("memfd_create"))?);
        file.set_len(board_size(entry_count))
            .map_err(io("size board"))?;
        file.write_all_at(&header.to_bytes(), 0)
            .map_err(io("write board header"))?;
        let seals = REQUIRED_SEALS | SealFlag::F_SEAL_SEAL;
        fcntl(&file, FcntlArg::F_ADD_SEALS(seals))
            .map_err(|errno| io("seal board")(errno.into()))?;
        let map = MmapRaw::map_raw(&file).map_err(io("map board"))?;
        Ok(Self {
            header,
            place: Place::Mapped { map, file },
        })
    }

    /// A board on crate-allocated atomics, every entry 0.
    #[cfg(loom)]
    pub(super) fn heap(entry_count: u32) -> Self {
        check_entry_count(entry_count).expect("loom models use a valid entry count");
        Self {
            header: BoardHeader::new(entry_count, 1),
            place: Place::Heap((0..entry_count).map(|_| AtomicU64::new(0)).collect()),
        }
    }

    /// Checks a received descriptor and maps it read-only; the descriptor is closed on return.
    pub(super) fn attach(fd: OwnedFd) -> Result<Self, BoardError> {
        let file = File::from(fd);
        check_seals(&file, REQUIRED_SEALS).map_err(|error| match error {
            SealedError::NotSealed { missing, found } => BoardError::NotSealed { missing, found },
            other => BoardError::File(other),
        })?;
        // Read with pread, not through the mapping: the header is copied once, and a process
        // writing the file meanwhile changes at most what this copy says, which is checked.
        let mut bytes = [0; BOARD_HEADER_SIZE as usize];
        file.read_exact_at(&mut bytes, 0)
            .map_err(|_| BoardError::Header("shorter than its header"))?;
        let header = BoardHeader::from_bytes(&bytes);
        if header.magic != BOARD_MAGIC {
            return Err(BoardError::Header("bad magic"));
        }
        if header.board_version != BOARD_VERSION {
            return Err(BoardError::Header("another board version"));
        }
        if header.header_crc != header.compute_crc() {
            return Err(BoardError::Header("header crc32 mismatch"));
        }
        if header.epoch == 0 {
            return Err(BoardError::Header("epoch 0"));
        }
        check_entry_count(header.entry_count)?;
        // Sealed against shrinking and growing: this size is the file's for good.
        let expected = board_size(header.entry_count);
        let actual = file.metadata().map_err(io("stat board"))?.len();
        if actual != expected {
            return Err(BoardError::WrongSize { expected, actual });
        }
        let reopened = read_only(&file).map_err(io("reopen board read-only"))?;
        let map = MmapOptions::new()
            .len(expected as usize)
            .map_raw_read_only(reopened.as_ref().unwrap_or(&file))
            .map_err(io("map board"))?;
        Ok(Self {
            header,
            place: Place::Mapped { map, file },
        })
    }

    pub(super) fn epoch(&self) -> u64 {
        self.header.epoch
    }

    pub(super) fn entry_count(&self) -> u32 {
        self.header.entry_count
    }

    /// A read-only descriptor of the board's file, to hand to a consumer.
    pub(super) fn share(&self) -> Result<OwnedFd, BoardError> {
        match &self.place {
            Place::Mapped { file, .. } => match read_only(file).map_err(io("reopen board"))? {
                Some(reopened) => Ok(reopened.into()),
                // Without /proc the writable descriptor is all there is.
                None => Ok(file.as_fd().try_clone_to_owned().map_err(io("dup board"))?),
            },
            #[cfg(loom)]
            Place::Heap(_) => Err(BoardError::Header("a loom board has no file")),
        }
    }

    /// Entry `index`'s version word.
    ///
    /// # Panics
    /// If `index` is not below the entry count: indexes come from `board_index`, which keeps
    /// them there.
    pub(super) fn entry(&self, index: usize) -> &AtomicU64 {
        assert!(
            index < self.header.entry_count as usize,
            "board index from board_index"
        );
        match &self.place {
            Place::Mapped { map, .. } => {
                let offset = BOARD_HEADER_SIZE as usize + index * 8;
                // SAFETY: the mapping is board_size(entry_count) bytes (created so, or checked
                // against fstat of a file sealed against resizing), so the 8 bytes at `offset`
                // lie inside it; the mapping is page-aligned and `offset` a multiple of 8, as
                // AtomicU64 requires. Any bit pattern is a valid AtomicU64, other processes'
                // stores are atomic accesses rather than writes to memory Rust assumes it owns,
                // and a read-only mapping is only ever loaded from (a lock-free atomic load
                // never writes). The reference lives no longer than `self`, which keeps the
                // mapping alive.
                unsafe { &*map.as_ptr().add(offset).cast::<AtomicU64>() }
            }
            #[cfg(loom)]
            Place::Heap(entries) => &entries[index],
        }
    }
}
