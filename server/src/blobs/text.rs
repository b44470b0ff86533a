//! The `text` pattern's stream: words drawn from ChaCha8, punctuated and wrapped into lines,
//! written token by token straight into each chunk, a token cut by a chunk's end carried over to
//! the next.

// Design notes for maintainers:
// - `text` draws 16 bits a word from another ChaCha8 stream: 8 bits pick one of 256 words (a
//   power of two, so no modulo bias), 8 bits decide the punctuation after it. Lines wrap at
//   LINE_COLUMNS. ASCII letters, space, comma, full stop and newline only: compressible like
//   prose (gzip takes it to about a third), unlike `random`.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::RngCore;

use super::chacha;

/// The ChaCha8 stream `text` blobs draw their words from.
const TEXT_STREAM: u64 = 2;

/// Lines of text are at most this long (without their newline).
pub(super) const LINE_COLUMNS: usize = 72;

/// Of the 256 values of a word's punctuation byte, those below this end a sentence (about one
/// word in ten)...
const FULL_STOP_BELOW: u8 = 26;

/// ...and those from [`FULL_STOP_BELOW`] up to below this put a comma after it.
const COMMA_BELOW: u8 = 40;

/// Bytes a word takes in [`PADDED_WORDS`]: more than the longest word, so that each word is
/// copied with one copy of a fixed size.
const PADDED_WORD_BYTES: usize = 16;

const _: () = assert!(longest_word() < PADDED_WORD_BYTES);

/// Room a token is written into: its separator and its padded word, whose padding the
/// punctuation mark overwrites (and the next token the rest).
const TOKEN_ROOM: usize = 1 + PADDED_WORD_BYTES;

/// [`WORDS`], each zero-padded to [`PADDED_WORD_BYTES`], with its length.
static PADDED_WORDS: [([u8; PADDED_WORD_BYTES], u8); 256] = pad_words();

/// The text stream: words from [`WORDS`], a capital after each full stop, wrapped into lines.
/// Tokens (separator, word, punctuation) are written straight into the chunk while a token's
/// room fits in it; the last ones go through `carry`, so a token cut by the end of a chunk goes
/// on at the start of the next.
pub(super) struct TextStream {
    words: TextWords,
    carry: [u8; TOKEN_ROOM],
    carry_len: usize,
    /// How much of `carry` has been handed out.
    carry_sent: usize,
}

/// The text's state between tokens.
struct TextWords {
    rng: ChaCha8Rng,
    /// Random bits not yet used, and how many.
    bits: u64,
    bits_left: u32,
    /// The length of the current line so far.
    column: usize,
    sentence_start: bool,
}

impl TextStream {
    pub(super) fn new(seed: u64) -> TextStream {
        TextStream {
            words: TextWords {
                rng: chacha(seed, TEXT_STREAM),
                bits: 0,
                bits_left: 0,
                column: 0,
                sentence_start: true,
            },
            carry: [0; TOKEN_ROOM],
            carry_len: 0,
            carry_sent: 0,
        }
    }

    pub(super) fn fill(&mut self, chunk: &mut [u8]) {
        // The rest of a token cut by the previous chunk's end.
        let carried = &self.carry[self.carry_sent..self.carry_len];
        let mut filled = carried.len().min(chunk.len());
        chunk[..filled].copy_from_slice(&carried[..filled]);
        self.carry_sent += filled;
        if filled == chunk.len() {
            return;
        }
        // Then tokens in place while a token's room fits...
        while let Some(room) = chunk.get_mut(filled..filled + TOKEN_ROOM) {
            let room = room.try_into().expect("the range is TOKEN_ROOM long");
            filled += self.words.token(room);
        }
        // ...and through the carry up to the chunk's end.
        while filled < chunk.len() {
            self.carry_len = self.words.token(&mut self.carry);
            let len = self.carry_len.min(chunk.len() - filled);
            chunk[filled..filled + len].copy_from_slice(&self.carry[..len]);
            self.carry_sent = len;
            filled += len;
        }
    }
}

impl TextWords {
    /// 16 fresh random bits: a `u64` from the generator serves four words.
    fn draw16(&mut self) -> u16 {
        if self.bits_left == 0 {
            self.bits = self.rng.next_u64();
            self.bits_left = 64;
        }
        let drawn = self.bits as u16;
        self.bits >>= 16;
        self.bits_left -= 16;
        drawn
    }

    /// Writes the next token at the start of `room` and returns its length; what `room` holds
    /// after it is padding.
    fn token(&mut self, room: &mut [u8; TOKEN_ROOM]) -> usize {
        let [pick, punctuation] = self.draw16().to_le_bytes();
        let (padded, word_len) = &PADDED_WORDS[usize::from(pick)];
        let word_len = usize::from(*word_len);
        let mark = match punctuation {
            byte if byte < FULL_STOP_BELOW => Some(b'.'),
            byte if byte < COMMA_BELOW => Some(b','),
            _ => None,
        };
        let visible = word_len + usize::from(mark.is_some());
        let start = if self.column == 0 {
            0
        } else if self.column + 1 + visible > LINE_COLUMNS {
            room[0] = b'\n';
            self.column = 0;
            1
        } else {
            room[0] = b' ';
            self.column += 1;
            1
        };
        room[start..][..PADDED_WORD_BYTES].copy_from_slice(padded);
        if self.sentence_start {
            room[start] = room[start].to_ascii_uppercase();
        }
        let mut len = start + word_len;
        if let Some(mark) = mark {
            room[len] = mark;
            len += 1;
        }
        self.column += visible;
        self.sentence_start = mark == Some(b'.');
        len
    }
}

const fn pad_words() -> [([u8; PADDED_WORD_BYTES], u8); 256] {
    let mut padded = [([0; PADDED_WORD_BYTES], 0); 256];
    let mut index = 0;
    while index < WORDS.len() {
        let word = WORDS[index].as_bytes();
        let mut at = 0;
        while at < word.len() {
            padded[index].0[at] = word[at];
            at += 1;
        }
        padded[index].1 = word.len() as u8;
        index += 1;
    }
    padded
}

const fn longest_word() -> usize {
    let mut longest = 0;
    let mut index = 0;
    while index < WORDS.len() {
        if WORDS[index].len() > longest {
            longest = WORDS[index].len();
        }
        index += 1;
    }
    longest
}

/// The words text blobs are made of: lowercase ASCII letters, 256 of them so that one random
/// byte picks one without bias.
#[rustfmt::skip]
pub(super) const WORDS: [&str; 256] = [
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
    "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an",
    "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there", "been",
    "if", "more", "when", "will", "would", "who", "so", "no", "she", "other", "its", "may", "these",
    "about", "them", "than", "some", "time", "could", "into", "only", "do", "people", "any",
    "first", "like", "then", "now", "over", "such", "our", "man", "me", "even", "most", "made",
    "after", "also", "did", "many", "before", "must", "through", "back", "years", "where", "much",
    "your", "way", "well", "down", "should", "because", "each", "just", "those", "how", "too",
    "little", "good", "very", "make", "world", "still", "own", "see", "men", "work", "long", "get",
    "here", "between", "both", "life", "being", "under", "never", "day", "same", "another", "know",
    "while", "last", "might", "us", "great", "old", "year", "off", "come", "since", "go", "came",
    "right", "used", "take", "three", "small", "house", "place", "without", "again", "water",
    "system", "around", "home", "part", "during", "high", "school", "every", "although", "point",
    "order", "things", "large", "children", "early", "family", "important", "river", "question",
    "morning", "service", "payload", "memory", "segment", "gateway", "request", "answer", "handle",
    "channel", "socket", "bridge", "shared", "engine", "window", "garden", "letter", "market",
    "harvest", "evening", "mountain", "village", "journey", "harbour", "library", "kitchen",
    "lantern", "meadow", "orchard", "pebble", "quarter", "ribbon", "shadow", "thunder", "valley",
    "whisper", "yellow", "silver", "golden", "quiet", "bright", "gentle", "simple", "careful",
    "distant", "sudden", "narrow", "ancient", "hidden", "steady", "wooden", "frozen", "open",
    "close", "read", "write", "carry", "follow", "measure", "listen", "wonder", "travel",
    "remember", "explain", "believe", "consider", "continue", "develop", "understand", "together",
    "already", "perhaps", "almost", "always", "often", "later", "soon", "below", "above", "beyond",
    "inside", "outside", "toward", "across", "behind", "beside", "within", "enough", "candle",
    "second", "third", "hundred", "thousand", "light",
];
