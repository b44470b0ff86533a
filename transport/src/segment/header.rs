//! The shared header as a segment handles it: written once by the creator, read and validated
//! against what the segment really is before anything is mapped, and written back by the
//! producer when something scribbled on it. The bytes themselves are specified in
//! [`crate::layout`].
//!
//! After attach, the validated header is copied into process memory and all geometry comes from
//! that copy; the shared header is never re-read for bounds.

use std::fs::File;
use std::os::unix::fs::FileExt;

use memmap2::MmapRaw;

use crate::error::AttachError;
use crate::layout::{
    Geometry, GeometryError, HEADER_SIZE, Header, LAYOUT_VERSION, MAGIC, MAX_SLOT_COUNT,
    MAX_SLOT_SIZE,
};

/// Reads the header of the segment in `file`, and the file's size, without trusting either yet.
pub(super) fn read(file: &File) -> Result<(Header, u64), AttachError> {
    let len = file
        .metadata()
        .map_err(|source| AttachError::Io {
            op: "stat segment",
            source,
        })?
        .len();
    let mut bytes = [0u8; HEADER_SIZE as usize];
    if len < HEADER_SIZE {
        return Err(AttachError::SizeMismatch {
            found: len,
            expected: HEADER_SIZE,
        });
    }
    file.read_exact_at(&mut bytes, 0)
        .map_err(|source| AttachError::Io {
            op: "read segment header",
            source,
        })?;
    Ok((Header::from_bytes(&bytes), len))
}

/// Checks every header field and all size arithmetic against what the segment really is.
pub(super) fn validate(header: &Header, mapped_len: u64) -> Result<Geometry, AttachError> {
    if header.magic != MAGIC {
        return Err(AttachError::BadMagic {
            found: header.magic,
            expected: MAGIC,
        });
    }
    if header.layout_version != LAYOUT_VERSION {
        return Err(AttachError::VersionMismatch {
            found: header.layout_version,
            expected: LAYOUT_VERSION,
        });
    }
    let crc = header.compute_crc();
    if header.header_crc != crc {
        return Err(AttachError::HeaderCorrupt {
            found: header.header_crc,
            expected: crc,
        });
    }
    let mismatch = |field, found: u64, expected: u64| AttachError::LayoutMismatch {
        field,
        found,
        expected,
    };
    if u64::from(header.header_size) != HEADER_SIZE {
        return Err(mismatch(
            "header_size",
            header.header_size.into(),
            HEADER_SIZE,
        ));
    }
    if header.epoch == 0 {
        return Err(mismatch("epoch", 0, 1));
    }
    let geometry =
        Geometry::new(header.slot_count, header.slot_size).map_err(|error| match error {
            GeometryError::SlotCount { found } => {
                mismatch("slot_count", found.into(), MAX_SLOT_COUNT.into())
            }
            GeometryError::SlotSize { .. } | GeometryError::TooLarge => {
                mismatch("slot_size", header.slot_size.into(), MAX_SLOT_SIZE.into())
            }
        })?;
    for (field, found, expected) in [
        ("descriptors_offset", header.descriptors_offset, HEADER_SIZE),
        (
            "payload_offset",
            header.payload_offset,
            geometry.payload_offset(),
        ),
        ("total_size", header.total_size, geometry.total_size()),
    ] {
        if found != expected {
            return Err(mismatch(field, found, expected));
        }
    }
    if mapped_len != geometry.total_size() {
        return Err(AttachError::SizeMismatch {
            found: mapped_len,
            expected: geometry.total_size(),
        });
    }
    Ok(geometry)
}

/// Writes the creator's header at the start of a new, not yet shared mapping.
pub(super) fn write(map: &MmapRaw, header: Header) {
    assert!(map.len() >= HEADER_SIZE as usize, "validated geometry");
    // SAFETY: the mapping is at least HEADER_SIZE (128) bytes long (asserted) and page-aligned,
    // so the write is in bounds and aligned for Header. No other process can have it yet (the
    // memfd is unshared, the file was just created 0600 with O_EXCL, and attach refuses it until
    // the header crc matches).
    unsafe { std::ptr::write_volatile(map.as_mut_ptr().cast::<Header>(), header) };
}

/// Writes `validated` back over the shared header if something scribbled on it, so that later
/// attaches (a restarted consumer) validate again. Returns whether it had to.
pub(super) fn restore(map: &MmapRaw, validated: &Header) -> bool {
    assert!(map.len() >= HEADER_SIZE as usize, "validated geometry");
    let shared = map.as_mut_ptr().cast::<Header>();
    // SAFETY: the mapping is at least HEADER_SIZE bytes long (asserted) and page-aligned, so
    // `shared` is in bounds and aligned for Header. Header is plain integers and byte arrays,
    // valid for every bit pattern, so reading what a scribbler left is sound; volatile because
    // other processes write these bytes behind the compiler's back. No honest process writes the
    // header after creation, so writing the validated copy back races only with a scribbler,
    // whose bytes it is meant to replace.
    unsafe {
        if std::ptr::read_volatile(shared) == *validated {
            return false;
        }
        std::ptr::write_volatile(shared, *validated);
    }
    true
}
