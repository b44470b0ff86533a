//! Observations, publications, invalidations, scribbles and reads of one real version board
//! (a sealed memfd, read through a consumer's read-only mapping), checked against a reference
//! model: the engine behind the `board_ops` fuzz target and its replay test.
//!
//! Invariants checked at every read: a version is current exactly when the model's word for its
//! entry is that version (so a publication that an invalidation overtook never is, and a
//! replaced version never comes back); and a body that is current was made from the key's
//! current data, unless a scribbler wrote on its entry: that very version back; or, between a
//! handler's observation and its publication, the word it observed; or the word it observed
//! in the first place, which an invalidation may then draw as its fresh version (either lets
//! the publication through from data an invalidation replaced meanwhile). All are what the
//! layout's rule 5 admits a writer of the board can do: a stale body, never a corrupt one.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use arbitrary::Arbitrary;

use crate::board::{BoardView, Observed, VersionBoard};
use crate::layout::{BOARD_HEADER_SIZE, board_index};
use crate::testing::pick::{index, pick};

const ENTRIES: u32 = 4;
/// Keys 0..KEYS, more than entries, so keys share entries.
const KEYS: u64 = 8;

/// One step of a handler, the data's owner, a scribbler or a reader. Indexes pick among what
/// exists at that moment, so every byte string is a meaningful run.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum BoardOp {
    /// A handler observes `key` and reads its data, to make a body from.
    Observe { key: u8 },
    /// A handler that observed publishes the body it made.
    Publish { handler: u8 },
    /// A handler gives up without publishing.
    Drop { handler: u8 },
    /// The data behind `key` changes, and the key is invalidated.
    Change { key: u8 },
    /// Another process writes `word` into entry `entry`.
    Scribble { entry: u8, word: u64 },
    /// A scribbler writes back a version that was published before.
    Replay { entry: u8, version: u8 },
    /// A consumer checks a version it was answered with.
    Read { answer: u8 },
}

struct Handler {
    key: u64,
    observed: Observed,
    /// The model's word for the key's entry when it was observed.
    word_then: u64,
    made_from: u64,
    /// A scribbler wrote on the key's entry since the observation, or wrote the word observed.
    scribbled_since: bool,
}

struct Answer {
    key: u64,
    version: u64,
    made_from: u64,
}

/// Runs `ops` on a new board and checks the invariants above.
///
/// # Panics
/// When an invariant does not hold.
pub fn check_board_ops(ops: &[BoardOp]) {
    let board = VersionBoard::create(ENTRIES).expect("a board");
    let view = BoardView::attach(board.share().expect("share")).expect("attach");
    // A writable reopening of the consumer's read-only descriptor, as a process of the same uid
    // could make: the scribbler the layout's rule 5 speaks of.
    let shared = board.share().expect("share");
    let scribbler = OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/self/fd/{}", shared.as_raw_fd()))
        .expect("the producer's uid can reopen the board for writing");
    let mut data = [0_u64; KEYS as usize];
    let mut words = [0_u64; ENTRIES as usize];
    let mut replayed: Vec<Vec<u64>> = vec![Vec::new(); ENTRIES as usize];
    let mut handlers: Vec<Handler> = Vec::new();
    let mut answers: Vec<Answer> = Vec::new();
    let entry_of = |key: u64| board_index(key, ENTRIES);

    for op in ops {
        match *op {
            BoardOp::Observe { key } => {
                let key = u64::from(key) % KEYS;
                handlers.push(Handler {
                    key,
                    observed: board.observe(key),
                    word_then: words[entry_of(key)],
                    made_from: data[key as usize],
                    // A word a scribbler wrote may come back as a fresh version an
                    // invalidation draws: an exchange from it may then succeed after that
                    // invalidation, as after a replay.
                    scribbled_since: replayed[entry_of(key)].contains(&words[entry_of(key)]),
                });
            }
            BoardOp::Publish { handler } => {
                let Some(at) = index(handlers.len(), handler) else {
                    continue;
                };
                let handler = handlers.swap_remove(at);
                let entry = entry_of(handler.key);
                let unchanged = words[entry] == handler.word_then;
                match board.publish(handler.observed) {
                    Some(version) => {
                        assert!(unchanged, "published over a word written since");
                        assert_ne!(version, 0);
                        words[entry] = version;
                        if handler.scribbled_since {
                            replayed[entry].push(version);
                        }
                        answers.push(Answer {
                            key: handler.key,
                            version,
                            made_from: handler.made_from,
                        });
                    }
                    None => assert!(!unchanged, "refused although nothing was written since"),
                }
            }
            BoardOp::Drop { handler } => {
                if let Some(at) = index(handlers.len(), handler) {
                    handlers.swap_remove(at);
                }
            }
            BoardOp::Change { key } => {
                let key = u64::from(key) % KEYS;
                data[key as usize] += 1;
                board.invalidate(key);
                let entry = entry_of(key);
                let before = words[entry];
                words[entry] = current_word(&scribbler, entry);
                // Unless a scribbler wrote the very version the invalidation drew, before it
                // drew it: no answer names that version either, so nothing stale is current.
                assert!(
                    words[entry] != before || replayed[entry].contains(&before),
                    "an invalidation changed nothing"
                );
                assert!(
                    answers.iter().all(|a| a.version != words[entry]),
                    "an invalidation wrote a version some answer named"
                );
            }
            BoardOp::Scribble { entry, word } => {
                let entry = usize::from(entry) % ENTRIES as usize;
                taint(&mut handlers, entry);
                scribble(&scribbler, entry, word);
                words[entry] = word;
                replayed[entry].push(word);
            }
            BoardOp::Replay { entry, version } => {
                let entry = usize::from(entry) % ENTRIES as usize;
                let Some(answer) = pick(&mut answers, version) else {
                    continue;
                };
                taint(&mut handlers, entry);
                scribble(&scribbler, entry, answer.version);
                words[entry] = answer.version;
                replayed[entry].push(answer.version);
            }
            BoardOp::Read { answer } => {
                let Some(answer) = pick(&mut answers, answer) else {
                    continue;
                };
                let entry = entry_of(answer.key);
                let current = view.is_current(board.epoch(), answer.key, answer.version);
                assert_eq!(current, words[entry] == answer.version);
                if current && !replayed[entry].contains(&answer.version) {
                    assert_eq!(
                        answer.made_from, data[answer.key as usize],
                        "a body made from replaced data is current"
                    );
                }
                assert!(!view.is_current(board.epoch() ^ 1, answer.key, answer.version));
            }
        }
    }
}

/// Marks every pending handler of `entry` as having seen a scribble on it since observing.
fn taint(handlers: &mut [Handler], entry: usize) {
    for handler in handlers
        .iter_mut()
        .filter(|handler| board_index(handler.key, ENTRIES) == entry)
    {
        handler.scribbled_since = true;
    }
}

fn entry_offset(entry: usize) -> u64 {
    BOARD_HEADER_SIZE + 8 * entry as u64
}

fn scribble(scribbler: &File, entry: usize, word: u64) {
    scribbler
        .write_all_at(&word.to_le_bytes(), entry_offset(entry))
        .expect("scribble");
}

/// The word in `entry` now, read through the file.
fn current_word(file: &File, entry: usize) -> u64 {
    let mut bytes = [0; 8];
    file.read_exact_at(&mut bytes, entry_offset(entry))
        .expect("read board entry");
    u64::from_le_bytes(bytes)
}
