//! The bytes of a segment: every structure that lives in shared memory, and the state word.
//!
//! This module is the layout specification a peer in another language implements. All integers
//! are little-endian; the crate refuses to build on a big-endian target.
//!
//! ```text
//! offset 0                   128                 128 + 64*N        payload_offset (4 KiB aligned)
//! +-------------------------+-------------------+----------------+--------------------------------+
//! | Header (128 B)          | SlotDescriptor 0  | ... slot N-1   | pad | slot 0 payload | slot 1 ...|
//! +-------------------------+-------------------+----------------+--------------------------------+
//!                                                                      <- slot_size -> each
//! ```
//!
//! # Header (written once by the creator before the segment is shared; read-only afterwards)
//!
//! | offset | size | field                | meaning                                              |
//! |-------:|-----:|----------------------|------------------------------------------------------|
//! | 0      | 8    | `magic`              | `b"SHMBRDG\0"`                                        |
//! | 8      | 4    | `layout_version`     | [`LAYOUT_VERSION`]; any other value is refused        |
//! | 12     | 4    | `header_size`        | 128                                                  |
//! | 16     | 8    | `epoch`              | random, non-zero; new for every created segment      |
//! | 24     | 8    | `created_unix_ns`    | creation time, CLOCK_REALTIME nanoseconds            |
//! | 32     | 4    | `slot_count`         | 1 ..= [`MAX_SLOT_COUNT`]                             |
//! | 36     | 4    | `slot_size`          | payload bytes per slot, a multiple of 64, ≤ [`MAX_SLOT_SIZE`] |
//! | 40     | 8    | `descriptors_offset` | 128                                                  |
//! | 48     | 8    | `payload_offset`     | `align_up(128 + 64 * slot_count, 4096)`              |
//! | 56     | 8    | `total_size`         | `payload_offset + slot_count * slot_size`            |
//! | 64     | 4    | `creator_pid`        | process that created the segment                     |
//! | 68     | 4    | `creator_uid`        | its effective uid                                    |
//! | 72     | 8    | `creator_start_time` | its start time (`/proc/PID/stat` field 22)           |
//! | 80     | 4    | `header_crc`         | crc32 (IEEE) of bytes 0..80                          |
//! | 84     | 44   | reserved             | zero                                                 |
//!
//! The creator is named by pid and start time only, with no pidfs inode (see "Holder identity"
//! below): the reserved bytes lie outside `header_crc`, and covering more would change what every
//! peer checks. An unchecked inode there could let one scribbled byte make a live creator look
//! dead and its file be replaced under it, while the one thing the start time can get wrong here
//! (a dead creator's pid taken within the same 10 ms tick) makes a new creator refuse the path
//! with an error, which is the safe side.
//!
//! # Slot descriptor (64 bytes, one cache line; all fields are accessed atomically)
//!
//! | offset | size | field              | meaning                                                 |
//! |-------:|-----:|--------------------|---------------------------------------------------------|
//! | 0      | 8    | `state`            | the state word: `generation << 8 \| state`              |
//! | 8      | 8    | `owner_pid`        | tagged: holder's pid                                    |
//! | 16     | 8    | `owner_start_time` | tagged: holder's start time, so a reused pid is not mistaken for it |
//! | 24     | 8    | `owner_pidfs_ino`  | tagged: holder's pidfs inode number, or 0 when unknown  |
//! | 32     | 8    | `deadline_ms`      | tagged: CLOCK_MONOTONIC ms, rounded up: lease end (writing, reading) or TTL end (ready) |
//! | 40     | 8    | `len`              | tagged: published payload length (informational; a ticket's is its sealed payload's, see "Sealed publications") |
//! | 48     | 8    | `crc`              | tagged: published crc32 (informational; readers check the handle's) |
//! | 56     | 8    | reserved           | zero                                                    |
//!
//! # Tagged fields
//!
//! Every field but `state` is a *tagged word*: `tag << 40 | value`, where `tag` is the low 24 bits
//! of the generation the value was written for and `value` has 40 bits (pids, start times in clock
//! ticks, pidfs inode numbers, lengths and crcs fit; milliseconds of CLOCK_MONOTONIC fit for 34
//! years of uptime; a pidfs inode number that does not fit is stored as 0, unknown). A value counts
//! only for the state word whose generation carries its tag.
//!
//! A process can be paused at any instruction, so a holder that lost its slot to the reaper may
//! resume and store into the descriptor after the next holder stamped it. Tags make such a late
//! store harmless: a field is written only by compare-exchange, and only while its current tag is
//! not *ahead* of the writer's (within half the tag space, 2^23 generations), so a value written
//! for a later generation is never replaced by one written for an earlier generation, and a value
//! a late writer leaves behind names its own generation, which no current state word has. Only the
//! holder of the current generation can therefore put a value there that counts.
//!
//! # Holder identity
//!
//! `owner_pid`, `owner_start_time` and `owner_pidfs_ino` name the holder so that a process that
//! later gets the same pid is not taken for it. The start time has 10 ms granularity, so a
//! process that takes a dead holder's pid within the same tick also gets its start time. Where
//! the kernel has pidfs (Linux >= 6.9: `fstatfs` of a `pidfd_open` descriptor reports `f_type`
//! `0x50494446`), `fstat` of that pidfd gives an `st_ino` no other process gets until reboot; a
//! holder stores it in `owner_pidfs_ino`, and stores 0 without pidfs (elsewhere pidfds share one
//! anonymous inode and name nothing). A holder counts as alive when a non-zombie process has its
//! pid and either both `owner_pidfs_ino` and the live process's pidfs inode are known and equal,
//! or (one of them unknown) the start times are equal.
//!
//! The three fields name the holder *as the producer's reaper sees it*, which is not always as
//! the holder sees itself: a consumer in another PID namespace (a sidecar container) stamps the
//! pid, start time and pidfs inode the producer's greeting reported for it. A holder the reaper
//! cannot look up at all (outside the producer's PID namespace, or hidden by `hidepid`) stamps
//! pid 0, start time 0, pidfs inode 0: no process has pid 0, so the reaper judges that holder by
//! its lease alone, and a dead one's slot comes back when the lease ends.
//!
//! # States and transitions
//!
//! The low 8 bits of the state word are the state (FREE 1, WRITING 2, READY 3, READING 4; every
//! other value, zero included, is no state), the high 56 bits the generation. The creator writes
//! FREE at generation 0 into every descriptor before the segment is shared. Every transition is one
//! compare-exchange that sets the new state and adds 1 to the generation, so a word value never
//! repeats (2^56 transitions per slot) and a handle names exactly one publication.
//!
//! | from          | to                | by                         | condition                      |
//! |---------------|-------------------|----------------------------|--------------------------------|
//! | FREE (g)      | WRITING (g+1)     | producer `claim`           | -                              |
//! | WRITING (g)   | READY (g+1)       | producer `publish`         | it still holds WRITING (g)     |
//! | WRITING (g)   | FREE (g+1)        | producer abandons the write | it still holds WRITING (g)    |
//! | READY (g)     | READING (g+1)     | consumer `acquire`         | handle names generation g      |
//! | READING (g)   | FREE (g+1)        | consumer release           | it still holds READING (g)     |
//! | any but FREE  | FREE (g+1)        | reaper                     | dead holder, lease or TTL past |
//! | no state (g)  | FREE (g' + 2^22)  | reaper                     | g' = max(g, highest generation it saw) |
//!
//! # Rules for a peer
//!
//! 1. Change the state word only with compare-exchange, from the value you last read.
//! 2. A holder of WRITING or READING writes all three `owner_*` fields (`owner_pidfs_ino` = 0
//!    if it has none) and `deadline_ms`, tagged with its generation, right after winning the
//!    exchange. A publisher writes `len`, `crc` and `deadline_ms` tagged with the READY generation
//!    *before* its exchange. Every tagged store is a compare-exchange loop that gives up when the
//!    field's tag is ahead of the writer's (see "Tagged fields"), and a writer stops storing as soon
//!    as it sees the state word is no longer the one it holds.
//! 3. Payload bytes may be written only while holding WRITING; readers copy them while holding
//!    READING and then release with an exchange: if that exchange fails, the slot was reclaimed and
//!    the bytes read must be discarded. Readers check the crc32 against the handle, not the descriptor.
//!    A paused holder can still be copying after a reclaim, so every access to payload bytes
//!    must be one that a racing store in another process can only make return other bytes, never
//!    undefined behaviour in the reader's language: relaxed atomic accesses (this crate: whole
//!    words, or `rep movsb`, which moves each byte single-copy-atomically; see `payload.rs`), or,
//!    where a language's memory model gives a racing copy of pointer-free memory some value (Go),
//!    a plain copy into private memory. Either way the crc32 is computed over the private copy,
//!    never over the shared bytes. The bytes of a payload past its length are unspecified.
//! 4. Treat every byte of the segment as untrusted: bounds-check whatever you read from it.
//! 5. An all-zero state word is no state (a page that was never initialized, or was punched out
//!    with `fallocate(FALLOC_FL_PUNCH_HOLE)`): never claim it. The producer's reaper restores it to
//!    FREE at a generation [`GENERATION_JUMP`] beyond the highest it has seen for the slot, so no
//!    handle from before the damage can name a publication made after it.
//!
//! # Sealed publications
//!
//! A body larger than `slot_size` does not go into the segment: it travels as a *sealed
//! payload*, a memfd of its own, and takes one slot of the segment as its *ticket*. So may a
//! smaller body its producer keeps and hands out again (an immutable one), so that a consumer
//! keeping what it verified neither copies nor checks it twice. A peer follows these rules:
//!
//! 1. **A sealed handle says so where it travels.** A ticket's handle names no slot bytes; its
//!    payload area is not read or written. On the control channel the answer's tier says which
//!    a handle is, whatever its `len` (see [`crate::control::frame`]). A handle that travels
//!    alone (as text) is always a slot's, and `len` above `slot_size` is refused there before
//!    any exchange.
//! 2. **The producer** writes the payload into `memfd_create(MFD_CLOEXEC | MFD_ALLOW_SEALING)`
//!    with write(2) (never through a writable mapping), computes the crc32 of the bytes written,
//!    then adds `F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`. It claims a ticket
//!    exactly like a slot (FREE -> WRITING, stamping the holder), stamps `len` (the payload's
//!    length), `crc` and the TTL for the READY generation, and publishes
//!    (WRITING -> READY) without touching the payload area. Every rule above (tags, leases, TTL,
//!    reclamation, withdrawal) applies to tickets unchanged.
//! 3. **The descriptor travels with the answer**: on the control channel, the published frame
//!    for a sealed handle carries the memfd as `SCM_RIGHTS` on the same message, and no other
//!    frame carries a descriptor (see "Descriptors" in [`crate::control::frame`]). A sealed
//!    handle cannot travel as text alone.
//! 4. **The consumer** takes the ticket by handle (READY(g) -> READING(g+1), as for a slot),
//!    then verifies the descriptor before it trusts a byte: `F_GET_SEALS` contains at least
//!    `F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW` (`F_SEAL_SEAL` is not required), `fstat`'s size
//!    equals the handle's `len`, and the crc32 over a read-only mapping equals the handle's `crc`.
//!    The mapping is made through the descriptor reopened read-only (`/proc/self/fd/N`): the one
//!    received was opened for writing, and kernels before 6.7 refuse a read-only shared mapping
//!    of a write-sealed memfd through such a descriptor (EPERM). Whatever the outcome it releases the ticket (READING -> FREE); if that exchange fails the
//!    ticket was reclaimed and the bytes are discarded. A handle is redeemable once: the second
//!    take finds the generation moved on.
//! 5. With those seals the mapping's bytes can never change (write(2), writable mappings and
//!    hole punching fail with EPERM for every process) and never shrink (no SIGBUS), so the crc
//!    checked over the mapping holds for every later read, and the mapping can be served without
//!    a private copy. The kernel frees the memory when the last descriptor and mapping close.
//! 6. A producer bounds the sealed bytes waiting for consumers: a ticket's bytes count while its
//!    state word is READY(g) or READING(g+1), and stop counting once it moves on.
//!
//! [`LAYOUT_VERSION`] stays 2: no byte of the segment changed meaning. A ticket is a slot
//! descriptor used by the existing transitions, and its handle reaches a consumer only on the
//! control channel, tier and descriptor with it, so a peer built before sealed publications
//! never sees one; its reaper reclaims tickets as it reclaims slots.
//!
//! What the protocol promises against a process that writes garbage into the segment: every read
//! is the exact published bytes or an error (the crc32 comes from the handle, not the segment).
//! Exclusive ownership is promised only for descriptors nobody scribbled on: a scribbler can write
//! any state word, including one a live holder already held, and generations cannot prevent that.
//! crc32 catches accidents and random scribbles, not a forger who computes checksums.
//!
//! # Version board
//!
//! A producer may publish, per *object key* (a `u64` its handler chooses and names in the
//! answer), which version of the object's body is current, so that a consumer holding a
//! verified body of that version can serve it again without asking. The board is a memfd of
//! its own, not part of the segment; the producer writes it through a shared mapping, every
//! consumer maps it read-only. All integers little-endian.
//!
//! ```text
//! offset 0              64           64 + 8          64 + 8 * (entry_count - 1)
//! +---------------------+------------+----- ... -----+------------+
//! | BoardHeader (64 B)  | entry 0    |               | entry N-1  |
//! +---------------------+------------+----- ... -----+------------+
//! ```
//!
//! | offset | size | field          | meaning                                                   |
//! |-------:|-----:|----------------|-----------------------------------------------------------|
//! | 0      | 8    | `magic`        | `b"SHMBOARD"`                                             |
//! | 8      | 4    | `board_version`| [`BOARD_VERSION`]; any other value is refused             |
//! | 12     | 4    | `entry_count`  | a power of two, 1 ..= [`MAX_BOARD_ENTRIES`]               |
//! | 16     | 8    | `epoch`        | random, non-zero; new for every board                     |
//! | 24     | 4    | `header_crc`   | crc32 (IEEE) of bytes 0..24                               |
//! | 28     | 36   | reserved       | zero                                                      |
//!
//! The file is exactly `64 + 8 * entry_count` bytes ([`board_size`]), sealed with
//! `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL` before it is handed out (never `F_SEAL_WRITE`: the
//! producer keeps writing it). Entry `i` is one 8-byte *version word*, accessed atomically, the
//! current version of every key whose index ([`board_index`]) is `i`:
//! `index = (key * 0x9E3779B97F4A7C15 mod 2^64) >> (64 - log2(entry_count))`, 0 when
//! `entry_count` is 1. Version 0 is never current.
//!
//! 1. **Versions never repeat on a board.** The producer draws every version it writes from one
//!    counter of its own (not in the file), starting at 1, one value per write, so a version
//!    word that was replaced never comes back: an invalidation is final.
//! 2. **Publishing.** Before it reads the data a body is made from, the producer loads the key's
//!    entry (Acquire): the *observed* word. After making the body it replaces the observed word
//!    with a fresh version by one compare-exchange (AcqRel), and names that version in the
//!    answer. If the exchange fails, something was written in between (an invalidation, or
//!    another key of the same index): the answer goes out naming no version.
//! 3. **Invalidating.** After the data behind a key changed, the producer swaps a fresh version
//!    into the key's entry (Release). A publication that observed the entry before that swap
//!    fails its exchange; one that observed the swap (Acquire) reads the changed data. Either
//!    way no body made from the old data is ever named current after the swap. Keys sharing an
//!    index invalidate each other too, which costs a question, never a stale body.
//! 4. **The consumer** checks, when it attaches, that the file has at least `F_SEAL_SHRINK |
//!    F_SEAL_GROW` (so a mapping can never raise SIGBUS), a size of exactly [`board_size`], the
//!    magic, version, entry count and crc. A body it verified, published as version `v` of key
//!    `k` on a board of epoch `e`, is current while the consumer's board has epoch `e` and `k`'s
//!    entry holds `v` (one Acquire load). Anything else (another epoch, another word, 0, a
//!    board it does not have) means: ask the producer. Once an invalidation's swap is done, a
//!    load that starts after it cannot return the replaced word, so no request that starts
//!    after `invalidate` returned serves the old body.
//! 5. **Untrusted.** The board never vouches for bytes: a body is verified (crc32, seals) when
//!    it is redeemed, whatever the board says. A process that can write the board can make a
//!    replaced version current again, and by writing the word a handler observes (back, or
//!    ahead: a version an invalidation later draws) it lets that handler's exchange succeed
//!    after an invalidation (a stale body either way, never a corrupt one); every other value
//!    it writes reads as "ask". The producer hands consumers a read-only descriptor (a process of
//!    its uid could still reopen the file for writing, as it could scribble on the segment).
//!
//! The board's size for the default 4,096 entries is 32,832 bytes.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::host::Owner;
use crate::sync::AtomicU64;

mod board;

pub use board::{
    BOARD_HEADER_SIZE, BOARD_MAGIC, BOARD_VERSION, BoardHeader, DEFAULT_BOARD_ENTRIES,
    MAX_BOARD_ENTRIES, board_index, board_size,
};

#[cfg(not(target_endian = "little"))]
compile_error!("the shmbridge layout is little-endian");

/// First eight bytes of every segment.
pub const MAGIC: [u8; 8] = *b"SHMBRDG\0";
/// Version of this layout; a segment with any other version is refused at attach.
/// Version 2: tagged descriptor fields, payload accessed as atomic words, zero is no state.
pub const LAYOUT_VERSION: u32 = 2;
/// Size of [`Header`].
pub const HEADER_SIZE: u64 = 128;
/// Number of header bytes covered by `header_crc`.
pub const HEADER_CRC_COVERS: usize = 80;
/// Size of [`SlotDescriptor`].
pub const DESCRIPTOR_SIZE: u64 = 64;
/// Alignment of the payload area: whole pages, so payload never shares a page with descriptors.
pub const PAYLOAD_ALIGN: u64 = 4096;
/// Slot sizes are multiples of this, so every slot starts on a cache line.
pub const SLOT_ALIGN: u32 = 64;
/// Upper bound on slots per segment.
pub const MAX_SLOT_COUNT: u32 = 1 << 16;
/// Upper bound on one slot's payload (1 GiB), so every length fits a u32 and a `usize`.
pub const MAX_SLOT_SIZE: u32 = 1 << 30;

/// The segment header, exactly as it lies in shared memory.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub magic: [u8; 8],
    pub layout_version: u32,
    pub header_size: u32,
    pub epoch: u64,
    pub created_unix_ns: u64,
    pub slot_count: u32,
    pub slot_size: u32,
    pub descriptors_offset: u64,
    pub payload_offset: u64,
    pub total_size: u64,
    pub creator_pid: u32,
    pub creator_uid: u32,
    pub creator_start_time: u64,
    pub header_crc: u32,
    pub reserved: [u8; 44],
}

const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<Header>() == HEADER_SIZE as usize);
    assert!(offset_of!(Header, layout_version) == 8);
    assert!(offset_of!(Header, epoch) == 16);
    assert!(offset_of!(Header, slot_count) == 32);
    assert!(offset_of!(Header, descriptors_offset) == 40);
    assert!(offset_of!(Header, total_size) == 56);
    assert!(offset_of!(Header, creator_start_time) == 72);
    assert!(offset_of!(Header, header_crc) == HEADER_CRC_COVERS);
};

impl Header {
    /// The header a creator writes for a segment of `geometry`: every offset and size from the
    /// geometry, the creation time from the real-time clock, and a correct `header_crc`. The one
    /// way to lay out a header, for segments, tests and fault injectors alike.
    pub fn new(geometry: &Geometry, epoch: u64, creator: Owner, creator_uid: u32) -> Self {
        let created_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64);
        let mut header = Header {
            magic: MAGIC,
            layout_version: LAYOUT_VERSION,
            header_size: HEADER_SIZE as u32,
            epoch,
            created_unix_ns,
            slot_count: geometry.slot_count,
            slot_size: geometry.slot_size,
            descriptors_offset: HEADER_SIZE,
            payload_offset: geometry.payload_offset,
            total_size: geometry.total_size,
            creator_pid: creator.pid,
            creator_uid,
            creator_start_time: creator.start_time,
            header_crc: 0,
            reserved: [0; 44],
        };
        header.refresh_crc();
        header
    }

    /// Recomputes `header_crc` after a covered field was changed on purpose (a test or an
    /// injector writing a header of another layout version).
    pub fn refresh_crc(&mut self) {
        self.header_crc = self.compute_crc();
    }

    /// The header's bytes, as they are stored.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE as usize] {
        // SAFETY: Header is repr(C), made only of integers and byte arrays, with no padding
        // (the offset asserts above pin every field), so all 128 bytes are initialized.
        unsafe { std::mem::transmute_copy(self) }
    }

    /// The header stored in `bytes`. Every bit pattern is a `Header`; whether it is a valid one is
    /// for the caller to check.
    pub fn from_bytes(bytes: &[u8; HEADER_SIZE as usize]) -> Self {
        // SAFETY: Header is repr(C), 128 bytes (asserted above), made only of integers and byte
        // arrays, for which every bit pattern is valid; the read is unaligned-safe.
        unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Header>()) }
    }

    /// crc32 of the bytes `header_crc` covers.
    pub fn compute_crc(&self) -> u32 {
        crc32fast::hash(&self.to_bytes()[..HEADER_CRC_COVERS])
    }
}

/// Where each part of a segment lies, derived from slot count and size with checked arithmetic
/// (the `payload_offset` and `total_size` rows of the header table). Only [`Geometry::new`] makes
/// one, so its fields always agree: `payload_offset + slot_count * slot_size == total_size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    slot_count: u32,
    slot_size: u32,
    payload_offset: u64,
    total_size: u64,
}

/// Slot count or size outside what the layout allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GeometryError {
    #[error("slot count must be between 1 and 65536")]
    SlotCount { found: u32 },
    #[error("slot size must be a positive multiple of 64, at most 1 GiB")]
    SlotSize { found: u32 },
    #[error("segment size overflows")]
    TooLarge,
}

impl Geometry {
    /// The geometry of `slot_count` slots of `slot_size` bytes, if the layout allows it.
    pub fn new(slot_count: u32, slot_size: u32) -> Result<Self, GeometryError> {
        if slot_count == 0 || slot_count > MAX_SLOT_COUNT {
            return Err(GeometryError::SlotCount { found: slot_count });
        }
        if slot_size == 0 || slot_size > MAX_SLOT_SIZE || slot_size % SLOT_ALIGN != 0 {
            return Err(GeometryError::SlotSize { found: slot_size });
        }
        // Both factors are bounded above, so none of this can overflow a u64; checked anyway so
        // that a future change to the bounds cannot silently wrap.
        let descriptors_end = u64::from(slot_count)
            .checked_mul(DESCRIPTOR_SIZE)
            .and_then(|bytes| bytes.checked_add(HEADER_SIZE))
            .ok_or(GeometryError::TooLarge)?;
        let payload_offset = descriptors_end.next_multiple_of(PAYLOAD_ALIGN);
        let total_size = u64::from(slot_count)
            .checked_mul(u64::from(slot_size))
            .and_then(|bytes| bytes.checked_add(payload_offset))
            .filter(|&size| usize::try_from(size).is_ok())
            .ok_or(GeometryError::TooLarge)?;
        Ok(Self {
            slot_count,
            slot_size,
            payload_offset,
            total_size,
        })
    }

    pub fn slot_count(&self) -> u32 {
        self.slot_count
    }

    /// Payload bytes per slot.
    pub fn slot_size(&self) -> u32 {
        self.slot_size
    }

    /// Where slot 0's payload starts: the descriptor table's end rounded up to a page.
    pub fn payload_offset(&self) -> u64 {
        self.payload_offset
    }

    /// The whole segment's size in bytes.
    pub fn total_size(&self) -> u64 {
        self.total_size
    }
}

/// One slot's control block in shared memory. The creator initializes `state` to FREE at
/// generation 0; all-zero bytes are no state (see the rules for a peer).
#[repr(C, align(64))]
#[derive(Debug)]
pub struct SlotDescriptor {
    pub state: AtomicU64,
    pub owner_pid: AtomicU64,
    pub owner_start_time: AtomicU64,
    pub owner_pidfs_ino: AtomicU64,
    pub deadline_ms: AtomicU64,
    pub len: AtomicU64,
    pub crc: AtomicU64,
    reserved_56: AtomicU64,
}

#[cfg(not(loom))]
const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    assert!(size_of::<SlotDescriptor>() == DESCRIPTOR_SIZE as usize);
    assert!(align_of::<SlotDescriptor>() == 64);
    assert!(offset_of!(SlotDescriptor, owner_pid) == 8);
    assert!(offset_of!(SlotDescriptor, owner_start_time) == 16);
    assert!(offset_of!(SlotDescriptor, owner_pidfs_ino) == 24);
    assert!(offset_of!(SlotDescriptor, deadline_ms) == 32);
    assert!(offset_of!(SlotDescriptor, len) == 40);
    assert!(offset_of!(SlotDescriptor, crc) == 48);
};

impl SlotDescriptor {
    /// A FREE descriptor at generation 0, for memory the crate allocates itself (loom models).
    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        Self {
            state: AtomicU64::new(Word::new(0, SlotState::Free).0),
            owner_pid: AtomicU64::new(0),
            owner_start_time: AtomicU64::new(0),
            owner_pidfs_ino: AtomicU64::new(0),
            deadline_ms: AtomicU64::new(0),
            len: AtomicU64::new(0),
            crc: AtomicU64::new(0),
            reserved_56: AtomicU64::new(0),
        }
    }
}

/// How far the reaper moves a generation on when it restores a descriptor that held no state:
/// more transitions than one slot can make between two reaper passes, less than half the tag space.
pub const GENERATION_JUMP: u64 = 1 << 22;

const TAG_BITS: u32 = 24;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;
const VALUE_BITS: u32 = 40;
/// Largest value a tagged field holds.
pub const TAGGED_VALUE_MAX: u64 = (1 << VALUE_BITS) - 1;

/// A decoded tagged field: `tag << 40 | value`, the tag being the low 24 bits of the generation
/// the value was written for (see "Tagged fields").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tagged(pub u64);

impl Tagged {
    /// `value` written for `generation`; a value above [`TAGGED_VALUE_MAX`] is the caller's bug.
    pub fn new(generation: u64, value: u64) -> Self {
        debug_assert!(value <= TAGGED_VALUE_MAX, "tagged value {value} too wide");
        Self(((generation & TAG_MASK) << VALUE_BITS) | (value & TAGGED_VALUE_MAX))
    }

    pub fn value(self) -> u64 {
        self.0 & TAGGED_VALUE_MAX
    }

    /// The value, if it was written for `generation`.
    pub fn value_for(self, generation: u64) -> Option<u64> {
        (self.0 >> VALUE_BITS == generation & TAG_MASK).then_some(self.value())
    }

    /// Whether this value was written for a generation after `generation` (within half the tag
    /// space), so that a writer for `generation` must leave it alone.
    pub fn is_ahead_of(self, generation: u64) -> bool {
        let distance = (self.0 >> VALUE_BITS).wrapping_sub(generation) & TAG_MASK;
        distance != 0 && distance < 1 << (TAG_BITS - 1)
    }
}

/// The state half of a slot's state word.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlotState {
    /// Nobody holds the slot; a producer may claim it.
    Free = 1,
    /// A producer holds it and is writing the payload.
    Writing = 2,
    /// Published: the payload is complete and waits for the consumer holding its handle.
    Ready = 3,
    /// A consumer holds it and is reading the payload.
    Reading = 4,
}

impl SlotState {
    fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            1 => Some(Self::Free),
            2 => Some(Self::Writing),
            3 => Some(Self::Ready),
            4 => Some(Self::Reading),
            _ => None,
        }
    }
}

const STATE_BITS: u32 = 8;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;
/// Largest generation a state word can hold (56 bits).
pub const MAX_GENERATION: u64 = u64::MAX >> STATE_BITS;

/// A decoded state word: `generation << 8 | state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Word(pub u64);

impl Word {
    /// The word for `state` at `generation` (generations wrap at 2^56).
    pub fn new(generation: u64, state: SlotState) -> Self {
        Self(((generation & MAX_GENERATION) << STATE_BITS) | state as u64)
    }

    /// The state, or `None` when the byte holds no known state (zeroed or scribbled on).
    pub fn state(self) -> Option<SlotState> {
        SlotState::from_bits((self.0 & STATE_MASK) as u8)
    }

    pub fn generation(self) -> u64 {
        self.0 >> STATE_BITS
    }

    /// The word every transition out of `self` writes: the next generation, in `state`.
    pub fn next(self, state: SlotState) -> Self {
        Self::new(self.generation().wrapping_add(1), state)
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
