//! Loom models of the version board: publications and invalidations racing each other and a
//! reader, run on the real `VersionBoard` and `BoardView` code (their entries are `sync.rs`
//! atomics, loom's under `--cfg loom`). The data a body is made from is a loom atomic of the
//! model's own, accessed Relaxed, so whatever ordering the models need comes from the board.
//!
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 CARGO_TARGET_DIR=target/loom \
//!     cargo test -p shmbridge --release --test loom_board`
#![cfg(loom)]

use std::sync::Arc;

use loom::sync::atomic::AtomicU64;
use loom::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use loom::thread;
use shmbridge::VersionBoard;

const KEY: u64 = 9;

/// A handler observes the key, reads the data, makes its body and publishes, while the data
/// changes and the key is invalidated: a version that ends up current was made from the
/// changed data. Fails without the invalidation's Release or the observation's Acquire.
#[test]
fn a_body_made_from_replaced_data_is_never_current() {
    loom::model(|| {
        let board = Arc::new(VersionBoard::in_memory(1));
        let data = Arc::new(AtomicU64::new(1));
        let change = {
            let (board, data) = (Arc::clone(&board), Arc::clone(&data));
            thread::spawn(move || {
                data.store(2, Relaxed);
                board.invalidate(KEY);
            })
        };
        let observed = board.observe(KEY);
        let made_from = data.load(Relaxed);
        let published = board.publish(observed);
        change.join().unwrap();
        if let Some(version) = published
            && board.view().is_current(board.epoch(), KEY, version)
        {
            assert_eq!(made_from, 2, "a body made from replaced data is current");
        }
    });
}

/// Once `invalidate` has returned, a reader that starts afterwards (here: learns of it through
/// a message) never finds the old version current; one that starts earlier may.
#[test]
fn a_reader_after_an_invalidation_never_finds_the_old_version_current() {
    loom::model(|| {
        let board = Arc::new(VersionBoard::in_memory(2));
        let old = board
            .publish(board.observe(KEY))
            .expect("nothing in between");
        let invalidated = Arc::new(AtomicU64::new(0));
        let invalidate = {
            let (board, invalidated) = (Arc::clone(&board), Arc::clone(&invalidated));
            thread::spawn(move || {
                board.invalidate(KEY);
                invalidated.store(1, Release);
            })
        };
        let view = board.view();
        let after = invalidated.load(Acquire) == 1;
        if after {
            assert!(!view.is_current(board.epoch(), KEY, old));
        }
        invalidate.join().unwrap();
        assert!(!view.is_current(board.epoch(), KEY, old));
    });
}

/// Two handlers publish the same key while a reader checks the version it was answered with:
/// a version is current for its reader unless a later publication replaced it, and at most one
/// of two publications from the same observation wins.
#[test]
fn publications_from_one_observation_name_one_version() {
    loom::model(|| {
        let board = Arc::new(VersionBoard::in_memory(1));
        let observed = board.observe(KEY);
        let answered = Arc::new(AtomicU64::new(0));
        let other = {
            let (board, answered) = (Arc::clone(&board), Arc::clone(&answered));
            thread::spawn(move || {
                let version = board.publish(observed);
                if let Some(version) = version {
                    answered.store(version, Release);
                }
                version
            })
        };
        let mine = board.publish(observed);
        let reader = board.view();
        let heard = answered.load(Acquire);
        if heard != 0 {
            assert!(reader.is_current(board.epoch(), KEY, heard));
        }
        let theirs = other.join().unwrap();
        assert!(
            mine.is_some() != theirs.is_some(),
            "exactly one publication from one observation wins: {mine:?} {theirs:?}"
        );
    });
}
