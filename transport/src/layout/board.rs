//! The version board's bytes: its header and where a key's entry lies (see "Version board" in
//! [`crate::layout`]).

/// First eight bytes of every board.
pub const BOARD_MAGIC: [u8; 8] = *b"SHMBOARD";
/// Version of the board's layout; a board of any other version is refused at attach.
pub const BOARD_VERSION: u32 = 1;
/// Size of [`BoardHeader`]; entries start here.
pub const BOARD_HEADER_SIZE: u64 = 64;
/// Number of header bytes covered by `header_crc`.
const BOARD_CRC_COVERS: usize = 24;
/// Upper bound on a board's entries (8 MiB of version words).
pub const MAX_BOARD_ENTRIES: u32 = 1 << 20;
/// Entries of a board whose producer does not choose: 32 KiB, room for a few thousand keys
/// before two often share an entry.
pub const DEFAULT_BOARD_ENTRIES: u32 = 4096;
/// Bytes per entry: one version word.
const ENTRY_SIZE: u64 = 8;

/// The board header, exactly as it lies in shared memory.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoardHeader {
    pub magic: [u8; 8],
    pub board_version: u32,
    pub entry_count: u32,
    pub epoch: u64,
    pub header_crc: u32,
    pub reserved: [u8; 36],
}

const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<BoardHeader>() == BOARD_HEADER_SIZE as usize);
    assert!(offset_of!(BoardHeader, board_version) == 8);
    assert!(offset_of!(BoardHeader, entry_count) == 12);
    assert!(offset_of!(BoardHeader, epoch) == 16);
    assert!(offset_of!(BoardHeader, header_crc) == BOARD_CRC_COVERS);
};

impl BoardHeader {
    /// The header of a new board of `entry_count` entries and `epoch`, with its crc.
    pub fn new(entry_count: u32, epoch: u64) -> Self {
        let mut header = Self {
            magic: BOARD_MAGIC,
            board_version: BOARD_VERSION,
            entry_count,
            epoch,
            header_crc: 0,
            reserved: [0; 36],
        };
        header.header_crc = header.compute_crc();
        header
    }

    /// The header's bytes, as they are stored.
    pub fn to_bytes(&self) -> [u8; BOARD_HEADER_SIZE as usize] {
        // SAFETY: BoardHeader is repr(C), made only of integers and byte arrays, with no
        // padding (the offset asserts above pin every field), so all 64 bytes are initialized.
        unsafe { std::mem::transmute_copy(self) }
    }

    /// The header stored in `bytes`; whether it is a valid one is for the caller to check.
    pub fn from_bytes(bytes: &[u8; BOARD_HEADER_SIZE as usize]) -> Self {
        // SAFETY: BoardHeader is repr(C), 64 bytes (asserted above), made only of integers and
        // byte arrays, for which every bit pattern is valid; the read is unaligned-safe.
        unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<BoardHeader>()) }
    }

    /// crc32 of the bytes `header_crc` covers.
    pub fn compute_crc(&self) -> u32 {
        crc32fast::hash(&self.to_bytes()[..BOARD_CRC_COVERS])
    }
}

/// The file size of a board of `entry_count` entries.
pub const fn board_size(entry_count: u32) -> u64 {
    BOARD_HEADER_SIZE + ENTRY_SIZE * entry_count as u64
}

/// The entry `key` is published in, on a board of `entry_count` entries (a power of two):
/// Fibonacci hashing, so keys that differ only in their low bits still spread.
pub const fn board_index(key: u64, entry_count: u32) -> usize {
    let bits = entry_count.trailing_zeros();
    if bits == 0 {
        return 0;
    }
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
}
