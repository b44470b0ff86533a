use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;

use nix::fcntl::{FcntlArg, SealFlag, fcntl};

use super::*;
use crate::layout::{BOARD_HEADER_SIZE, BoardHeader, board_size};
use crate::sealed::sealable_memfd;

/// A memfd holding `bytes`, sealed with `seals`, as a received board descriptor.
fn received(bytes: &[u8], seals: SealFlag) -> OwnedFd {
    let file = File::from(sealable_memfd(c"test-board").unwrap());
    file.write_all_at(bytes, 0).unwrap();
    fcntl(&file, FcntlArg::F_ADD_SEALS(seals)).unwrap();
    file.into()
}

fn resize_sealed() -> SealFlag {
    SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW
}

/// The bytes of a valid board of `entry_count` entries whose header `edit` may then spoil.
fn board_bytes(entry_count: u32, edit: impl FnOnce(&mut BoardHeader)) -> Vec<u8> {
    let mut header = BoardHeader::new(entry_count, 7);
    edit(&mut header);
    let mut bytes = header.to_bytes().to_vec();
    bytes.resize(board_size(entry_count) as usize, 0);
    bytes
}

#[test]
fn a_published_version_is_current_until_its_key_is_invalidated() {
    let board = VersionBoard::create(64).unwrap();
    let view = BoardView::attach(board.share().unwrap()).unwrap();
    assert_eq!(view.epoch(), board.epoch());
    let first = board
        .publish(board.observe(42))
        .expect("nothing came in between");
    assert!(view.is_current(board.epoch(), 42, first));
    board.invalidate(42);
    assert!(!view.is_current(board.epoch(), 42, first));
    let second = board.publish(board.observe(42)).unwrap();
    assert_ne!(first, second);
    assert!(view.is_current(board.epoch(), 42, second));
    assert!(
        !view.is_current(board.epoch(), 42, first),
        "a replaced version never comes back"
    );
}

#[test]
fn a_publication_that_an_invalidation_overtook_names_no_version() {
    let board = VersionBoard::create(64).unwrap();
    let observed = board.observe(5);
    board.invalidate(5);
    assert_eq!(board.publish(observed), None);
    let after = board.publish(board.observe(5)).unwrap();
    assert!(board.view().is_current(board.epoch(), 5, after));
}

#[test]
fn only_the_boards_own_epoch_and_a_nonzero_version_count() {
    let board = VersionBoard::create(1).unwrap();
    let view = board.view();
    let version = board.publish(board.observe(1)).unwrap();
    assert!(view.is_current(board.epoch(), 1, version));
    assert!(!view.is_current(board.epoch() ^ 1, 1, version));
    assert!(!view.is_current(board.epoch(), 1, 0));
    let other = VersionBoard::create(1).unwrap();
    assert_ne!(
        other.epoch(),
        board.epoch(),
        "every board has an epoch of its own"
    );
}

#[test]
fn keys_sharing_an_entry_invalidate_each_other() {
    let board = VersionBoard::create(1).unwrap();
    let view = board.view();
    let first = board.publish(board.observe(1)).unwrap();
    board.invalidate(2);
    assert!(
        !view.is_current(board.epoch(), 1, first),
        "sharing an entry costs a question, never a stale body"
    );
}

#[test]
fn keys_spread_over_the_entries() {
    let entries = 4096;
    let used: std::collections::HashSet<_> = (0..1024_u64)
        .map(|key| crate::layout::board_index(key, entries))
        .collect();
    assert!(used.iter().all(|&index| index < entries as usize));
    assert!(
        used.len() > 900,
        "sequential keys hit {} entries",
        used.len()
    );
}

#[test]
fn a_shared_descriptor_cannot_write_the_board() {
    let board = VersionBoard::create(8).unwrap();
    let shared = File::from(board.share().unwrap());
    assert!(shared.write_all_at(&[0xff; 8], BOARD_HEADER_SIZE).is_err());
}

#[test]
fn entry_counts_other_than_powers_of_two_up_to_the_bound_are_refused() {
    for count in [0, 3, 100, MAX_BOARD_ENTRIES * 2] {
        assert!(
            matches!(VersionBoard::create(count), Err(BoardError::EntryCount(c)) if c == count),
            "{count}"
        );
    }
    assert!(VersionBoard::create(MAX_BOARD_ENTRIES).is_ok());
}

#[test]
fn a_received_board_is_checked_before_it_is_mapped() {
    let valid = board_bytes(16, |_| {});
    assert!(BoardView::attach(received(&valid, resize_sealed())).is_ok());

    let unsealed = received(&valid, SealFlag::F_SEAL_GROW);
    assert!(matches!(
        BoardView::attach(unsealed),
        Err(BoardError::NotSealed { .. })
    ));

    let mut longer = valid.clone();
    longer.extend_from_slice(&[0; 8]);
    assert!(matches!(
        BoardView::attach(received(&longer, resize_sealed())),
        Err(BoardError::WrongSize { .. })
    ));

    let spoiled: [(&str, Vec<u8>); 4] = [
        ("magic", board_bytes(16, |h| h.magic[0] ^= 1)),
        ("crc", board_bytes(16, |h| h.header_crc ^= 1)),
        (
            "version",
            board_bytes(16, |h| {
                h.board_version += 1;
                h.header_crc = h.compute_crc();
            }),
        ),
        (
            "epoch",
            board_bytes(16, |h| {
                h.epoch = 0;
                h.header_crc = h.compute_crc();
            }),
        ),
    ];
    for (what, bytes) in spoiled {
        assert!(
            matches!(
                BoardView::attach(received(&bytes, resize_sealed())),
                Err(BoardError::Header(_))
            ),
            "{what}"
        );
    }

    let mut odd = BoardHeader::new(16, 7);
    odd.entry_count = 12;
    odd.header_crc = odd.compute_crc();
    let mut bytes = odd.to_bytes().to_vec();
    bytes.resize(board_size(12) as usize, 0);
    assert!(matches!(
        BoardView::attach(received(&bytes, resize_sealed())),
        Err(BoardError::EntryCount(12))
    ));

    assert!(matches!(
        BoardView::attach(received(&valid[..10], resize_sealed())),
        Err(BoardError::Header(_))
    ));
}
