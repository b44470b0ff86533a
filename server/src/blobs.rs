//! Binary test payloads of any size, users-service's second data route
//! (`GET /blobs?size=N&pattern=random|zeros|text&seed=S`): this module owns the blob query
//! ([`BlobQuery`], parsed strictly into it or a typed [`BlobQueryError`]), the three patterns
//! ([`BlobPattern`]) and their generator ([`write_blob`]). The same `(size, pattern, seed)` gives
//! the same bytes on every machine and run, so a checker (the load tool, the tests) knows the
//! exact expected body of any response ([`blob_bytes`], [`blob_crc32`]) without being sent it.
//! Blobs are written in chunks of at most [`WRITE_CHUNK_BYTES`] into any [`Write`], so a 64 MiB
//! blob never needs to be held whole.

// Design notes for maintainers:
// - A blob of `size` bytes is the first `size` bytes of its pattern's endless stream for the
//   seed, so the blob of a smaller size is a prefix of any larger one (as the users dataset's
//   bodies grow with `count`). Chunking must not change the stream: every chunk but the last is
//   exactly WRITE_CHUNK_BYTES, and the text stream carries a word cut by a chunk's end over to
//   the next chunk.
// - `random` is ChaCha8 (`rand_chacha`, documented as portable and reproducible) keyed like the
//   users dataset (`seed.to_le_bytes() ++ [0; 24]`) but on a stream of its own (`set_stream`),
//   so `seed=S` never repeats the dataset's bytes. `fill_bytes` hands out whole 32-bit words and
//   drops the unused bytes of the last one, so a chunk length not a multiple of 4 would shift
//   everything after it: WRITE_CHUNK_BYTES is a multiple of 4 and only the last chunk is short.
// - `text` draws 16 bits a word from another ChaCha8 stream: 8 bits pick one of 256 words (a
//   power of two, so no modulo bias), 8 bits decide the punctuation after it. Lines wrap at
//   LINE_COLUMNS. ASCII letters, space, comma, full stop and newline only: compressible like
//   prose (gzip takes it to about a third), unlike `random`.
// - `zeros` never touches the chunk buffer, which is allocated zeroed.
// - Speed, release build, 2-vCPU VM, best of 5 runs of 64 MiB (`cargo test --release -p
//   shmbridge-server --lib -- --ignored blobs::tests::generation_speed --nocapture`):
//   `write_blob` into `io::sink()` random ~2,100 MB/s, text ~800 MB/s (zeros generate nothing);
//   `blob_crc32` (generation and crc32) random ~2,100, text ~630, zeros ~68,000 MB/s. Text
//   writes its tokens in place with fixed 16-byte copies of padded words: built one by one and
//   copied out, it ran at 150 MB/s.
// - The crc32 of a streamed body is needed for its headers before the body: users-service
//   generates the blob twice (once into a checksumming sink, once to the client) rather than
//   hold it; at these speeds the first pass of a 64 MiB blob takes ~30 ms (random) to ~100 ms
//   (text).

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use crate::dataset::WRITE_CHUNK_BYTES;
use crate::payload::Checksummed;

/// The pattern used when a request names none.
pub const DEFAULT_PATTERN: BlobPattern = BlobPattern::Random;

/// The seed used when a request names none.
pub const DEFAULT_SEED: u64 = 0;

/// What a blob's bytes are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BlobPattern {
    /// Pseudo-random bytes from the seed (ChaCha8): incompressible.
    #[default]
    Random,
    /// All zero bytes (the seed changes nothing).
    Zeros,
    /// Printable ASCII prose from a fixed word list, picked from the seed: compressible.
    Text,
}

impl BlobPattern {
    /// Every pattern, in the order the error messages list them.
    pub const ALL: [BlobPattern; 3] = [BlobPattern::Random, BlobPattern::Zeros, BlobPattern::Text];

    /// The pattern's name in a query string.
    pub fn as_str(self) -> &'static str {
        match self {
            BlobPattern::Random => "random",
            BlobPattern::Zeros => "zeros",
            BlobPattern::Text => "text",
        }
    }
}

impl fmt::Display for BlobPattern {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl FromStr for BlobPattern {
    type Err = UnknownPattern;

    /// The exact name [`BlobPattern::as_str`] gives (case matters).
    fn from_str(text: &str) -> Result<BlobPattern, UnknownPattern> {
        BlobPattern::ALL
            .into_iter()
            .find(|pattern| pattern.as_str() == text)
            .ok_or_else(|| UnknownPattern { value: shown(text) })
    }
}

/// A pattern name that is none of [`BlobPattern::ALL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown pattern {value:?}; accepted patterns are random, zeros and text")]
pub struct UnknownPattern {
    value: String,
}

/// The `Content-Type` of a blob of `pattern`: `text/plain; charset=utf-8` for text (ASCII is
/// UTF-8), `application/octet-stream` otherwise.
pub fn content_type(pattern: BlobPattern) -> &'static str {
    match pattern {
        BlobPattern::Random | BlobPattern::Zeros => "application/octet-stream",
        BlobPattern::Text => "text/plain; charset=utf-8",
    }
}

/// Which blob to produce: `size` bytes of `pattern` from `seed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlobQuery {
    pub size: u64,
    pub pattern: BlobPattern,
    pub seed: u64,
}

impl BlobQuery {
    /// Parses a raw query string (without the `?`): `size` is required, from 0 to `max_size`
    /// (users-service passes its `--max-payload`); `pattern` defaults to [`DEFAULT_PATTERN`],
    /// `seed` to [`DEFAULT_SEED`]. Values are percent-decoded as in HTML forms; numbers are
    /// plain decimal digits. Each parameter may be given once.
    pub fn parse(raw_query: Option<&str>, max_size: u64) -> Result<BlobQuery, BlobQueryError> {
        let mut size = None;
        let mut pattern = None;
        let mut seed = None;
        for (name, value) in form_urlencoded::parse(raw_query.unwrap_or("").as_bytes()) {
            match name.as_ref() {
                "size" => {
                    once(&size, "size")?;
                    size = Some(parse_size(&value, max_size)?);
                }
                "pattern" => {
                    once(&pattern, "pattern")?;
                    pattern = Some(value.parse()?);
                }
                "seed" => {
                    once(&seed, "seed")?;
                    seed =
                        Some(
                            parse_digits(&value).ok_or_else(|| BlobQueryError::NotANumber {
                                name: "seed",
                                value: shown(&value),
                                max: u64::MAX,
                            })?,
                        );
                }
                other => {
                    return Err(BlobQueryError::UnknownParameter { name: shown(other) });
                }
            }
        }
        Ok(BlobQuery {
            size: size.ok_or(BlobQueryError::MissingSize)?,
            pattern: pattern.unwrap_or(DEFAULT_PATTERN),
            seed: seed.unwrap_or(DEFAULT_SEED),
        })
    }

    /// The query string that [`BlobQuery::parse`] reads back as `self`.
    pub fn to_query_string(self) -> String {
        format!(
            "size={}&pattern={}&seed={}",
            self.size, self.pattern, self.seed
        )
    }
}

fn once<T>(seen: &Option<T>, name: &'static str) -> Result<(), BlobQueryError> {
    match seen {
        Some(_) => Err(BlobQueryError::Repeated { name }),
        None => Ok(()),
    }
}

/// A string of decimal digits that fits in a `u64` (no sign, no spaces, not empty).
fn parse_digits(value: &str) -> Option<u64> {
    let all_digits = !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit());
    all_digits.then(|| value.parse().ok()).flatten()
}

fn parse_size(value: &str, max_size: u64) -> Result<u64, BlobQueryError> {
    let all_digits = !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit());
    if !all_digits {
        return Err(BlobQueryError::NotANumber {
            name: "size",
            value: shown(value),
            max: max_size,
        });
    }
    // A digit string too long for u64 is still a number, just far over the limit.
    match value.parse::<u64>() {
        Ok(size) if size <= max_size => Ok(size),
        _ => Err(BlobQueryError::TooLarge {
            value: shown(value),
            limit: max_size,
        }),
    }
}

/// A bad blob query. The `Display` text is the message sent to the client; a size above the
/// limit is a 413, everything else a 400 ([`BlobQueryError::status_code`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlobQueryError {
    #[error("unknown query parameter {name:?}; accepted parameters are size, pattern and seed")]
    UnknownParameter { name: String },
    #[error("query parameter {name} is given more than once")]
    Repeated { name: &'static str },
    #[error("query parameter {name} must be a non-negative integer from 0 to {max}, got {value:?}")]
    NotANumber {
        name: &'static str,
        value: String,
        max: u64,
    },
    #[error(transparent)]
    UnknownPattern(#[from] UnknownPattern),
    #[error("query parameter size is required")]
    MissingSize,
    #[error("size {value:?} is above the payload limit of {limit} bytes")]
    TooLarge { value: String, limit: u64 },
}

impl BlobQueryError {
    /// 413 for a size above the limit, 400 for every other fault of the query.
    pub fn status_code(&self) -> StatusCode {
        match self {
            BlobQueryError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The short, stable code clients may match on: the codes `ApiError` gives the same
    /// faults (`bad_query`, `payload_too_large`).
    pub fn code(&self) -> &'static str {
        match self {
            BlobQueryError::TooLarge { .. } => "payload_too_large",
            _ => "bad_query",
        }
    }
}

/// Rendered as every `ApiError` is: `{"error": MESSAGE, "code": CODE}` with its status. The
/// message describes only the client's own request, so nothing internal can leak.
impl IntoResponse for BlobQueryError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let message = self.to_string();
        let code = self.code();
        tracing::debug!(%status, code, %message, "request refused");
        let body = Json(serde_json::json!({ "error": message, "code": code }));
        (status, body).into_response()
    }
}

/// Client-supplied text quoted in an error message, cut to 40 characters (and `…`) so an error
/// body never grows with the request (as `query::Shown` does for `/users`).
fn shown(text: &str) -> String {
    const MAX_CHARS: usize = 40;
    let mut shown: String = text.chars().take(MAX_CHARS).collect();
    if text.chars().count() > MAX_CHARS {
        shown.push('…');
    }
    shown
}

/// Writes the blob for `query`, exactly `query.size` bytes, into `out` in writes of at most
/// [`WRITE_CHUNK_BYTES`] (each full but the last), then flushes it. Memory stays at one chunk
/// whatever the size. Stops at `out`'s first error and returns it.
pub fn write_blob(query: &BlobQuery, out: &mut impl Write) -> io::Result<()> {
    let chunk_len =
        usize::try_from(query.size).map_or(WRITE_CHUNK_BYTES, |size| size.min(WRITE_CHUNK_BYTES));
    let mut buffer = vec![0_u8; chunk_len];
    let mut source = Source::new(query);
    let mut left = query.size;
    while left > 0 {
        let len = usize::try_from(left).map_or(chunk_len, |left| left.min(chunk_len));
        let chunk = &mut buffer[..len];
        source.fill(chunk);
        out.write_all(chunk)?;
        left -= len as u64;
    }
    out.flush()
}

/// The crc32 (IEEE, as `crc32fast` computes it and `x-payload-crc32` carries it) of the blob
/// for `query`, found by generating it into a sink: memory stays at one chunk.
pub fn blob_crc32(query: &BlobQuery) -> u32 {
    let mut sink = Checksummed::new(io::sink());
    write_blob(query, &mut sink).expect("writing into a sink cannot fail");
    debug_assert_eq!(sink.summary().len, query.size);
    sink.summary().crc32
}

/// The whole blob for `query` in memory, for tests and checkers (never the HTTP path, which
/// streams it).
///
/// # Panics
///
/// If `query.size` does not fit in memory's address space.
pub fn blob_bytes(query: &BlobQuery) -> Vec<u8> {
    let size = usize::try_from(query.size).expect("a blob held in memory fits in usize");
    let mut bytes = Vec::with_capacity(size);
    write_blob(query, &mut bytes).expect("writing into a Vec cannot fail");
    bytes
}

/// The ChaCha8 stream for `random` blobs (the users dataset uses stream 0).
const RANDOM_STREAM: u64 = 1;

/// The ChaCha8 stream `text` blobs draw their words from.
const TEXT_STREAM: u64 = 2;

/// ChaCha8 keyed by `seed` as the users dataset keys it, on `stream`.
fn chacha(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut key = [0_u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(stream);
    rng
}

/// One pattern's endless stream, handed out a chunk at a time.
enum Source {
    Random(Box<ChaCha8Rng>),
    Zeros,
    Text(Box<TextStream>),
}

impl Source {
    fn new(query: &BlobQuery) -> Source {
        match query.pattern {
            BlobPattern::Random => Source::Random(Box::new(chacha(query.seed, RANDOM_STREAM))),
            BlobPattern::Zeros => Source::Zeros,
            BlobPattern::Text => Source::Text(Box::new(TextStream::new(query.seed))),
        }
    }

    /// Fills `chunk` with the stream's next `chunk.len()` bytes. Only the last chunk of a blob
    /// may be shorter than [`WRITE_CHUNK_BYTES`] (see the design notes).
    fn fill(&mut self, chunk: &mut [u8]) {
        match self {
            Source::Random(rng) => rng.fill_bytes(chunk),
            // The chunk was allocated zeroed and no other source writes it.
            Source::Zeros => debug_assert!(chunk.iter().all(|&byte| byte == 0)),
            Source::Text(text) => text.fill(chunk),
        }
    }
}

/// Lines of text are at most this long (without their newline).
const LINE_COLUMNS: usize = 72;

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
struct TextStream {
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
    fn new(seed: u64) -> TextStream {
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

    fn fill(&mut self, chunk: &mut [u8]) {
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
const WORDS: [&str; 256] = [
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

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = 64 << 20;

    fn query(size: u64, pattern: BlobPattern, seed: u64) -> BlobQuery {
        BlobQuery {
            size,
            pattern,
            seed,
        }
    }

    fn parse(raw: &str) -> Result<BlobQuery, BlobQueryError> {
        BlobQuery::parse(Some(raw), MAX)
    }

    /// Counts the writes it is given and their sizes, keeping no bytes.
    #[derive(Default)]
    struct Writes {
        sizes: Vec<usize>,
    }

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.sizes.push(buf.len());
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_pattern_writes_exactly_size_bytes_in_bounded_chunks() {
        for pattern in BlobPattern::ALL {
            for size in [0, 1, 65_535, 65_536, 65_537, 1_000_003] {
                let blob = query(size, pattern, 7);
                let bytes = blob_bytes(&blob);
                assert_eq!(bytes.len() as u64, size, "{pattern} {size}");
                let mut writes = Writes::default();
                write_blob(&blob, &mut writes).unwrap();
                assert_eq!(writes.sizes.iter().sum::<usize>() as u64, size);
                let (last, full) = writes.sizes.split_last().unwrap_or((&0, &[]));
                assert!(
                    full.iter().all(|&len| len == WRITE_CHUNK_BYTES),
                    "{pattern}"
                );
                assert!(*last <= WRITE_CHUNK_BYTES);
            }
        }
    }

    #[test]
    fn the_same_query_gives_the_same_bytes() {
        for pattern in BlobPattern::ALL {
            let blob = query(200_001, pattern, 42);
            assert_eq!(blob_bytes(&blob), blob_bytes(&blob), "{pattern}");
        }
    }

    #[test]
    fn different_seeds_differ_for_random_and_text_not_for_zeros() {
        for pattern in [BlobPattern::Random, BlobPattern::Text] {
            let one = blob_bytes(&query(4_096, pattern, 1));
            let two = blob_bytes(&query(4_096, pattern, 2));
            assert_ne!(one, two, "{pattern}");
            assert_ne!(one[..64], two[..64], "{pattern}: differs from the start");
        }
        assert_eq!(
            blob_bytes(&query(4_096, BlobPattern::Zeros, 1)),
            blob_bytes(&query(4_096, BlobPattern::Zeros, 2)),
        );
        assert!(
            blob_bytes(&query(100_000, BlobPattern::Zeros, 9))
                .iter()
                .all(|&byte| byte == 0)
        );
    }

    /// A smaller blob is a prefix of a larger one: chunking never changes the stream, also when
    /// a word of text or a 32-bit word of ChaCha straddles a chunk's end.
    #[test]
    fn a_smaller_blob_is_a_prefix_of_a_larger_one() {
        for pattern in BlobPattern::ALL {
            let large = blob_bytes(&query(3 * WRITE_CHUNK_BYTES as u64 + 11, pattern, 5));
            for size in [0, 1, 3, 65_535, 65_536, 65_537, 2 * 65_536 + 1] {
                let small = blob_bytes(&query(size, pattern, 5));
                assert_eq!(small, large[..small.len()], "{pattern} {size}");
            }
        }
    }

    #[test]
    fn crc32_is_that_of_the_bytes() {
        for pattern in BlobPattern::ALL {
            for size in [0, 1, 65_537, 1_000_003] {
                let blob = query(size, pattern, 3);
                assert_eq!(
                    blob_crc32(&blob),
                    crc32fast::hash(&blob_bytes(&blob)),
                    "{pattern} {size}"
                );
            }
        }
    }

    /// The streams are pinned: a dependency update that changed them would change every
    /// checker's expected bytes.
    #[test]
    fn streams_are_pinned() {
        let random = blob_bytes(&query(16, BlobPattern::Random, 0));
        let text = blob_bytes(&query(64, BlobPattern::Text, 0));
        assert_eq!(
            (random.as_slice(), String::from_utf8(text).unwrap().as_str()),
            (PINNED_RANDOM.as_slice(), PINNED_TEXT)
        );
        assert_eq!(
            blob_crc32(&query(1_000_003, BlobPattern::Random, 0)),
            PINNED_RANDOM_CRC
        );
    }

    const PINNED_RANDOM: [u8; 16] = [
        43, 143, 75, 179, 121, 131, 6, 202, 81, 48, 212, 124, 79, 141, 78, 209,
    ];
    const PINNED_TEXT: &str = "The of may men great, handle, all understand time, have was cont";
    const PINNED_RANDOM_CRC: u32 = 0x1c27_afa5;

    #[test]
    fn text_is_printable_ascii_in_lines_and_compressible() {
        let text = blob_bytes(&query(1_000_003, BlobPattern::Text, 11));
        assert!(
            text.iter()
                .all(|&byte| byte == b'\n' || (b' '..=b'~').contains(&byte))
        );
        let text = String::from_utf8(text).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() > 10_000);
        assert!(lines.iter().all(|line| line.len() <= LINE_COLUMNS));
        assert!(text.contains(". ") || text.contains(".\n"));
        assert!(text.contains(", ") || text.contains(",\n"));
        assert!(text.starts_with(|first: char| first.is_ascii_uppercase()));
        // Nothing but the list's words (the last one may be cut by the blob's end).
        let mut words: Vec<&str> = text.split_ascii_whitespace().collect();
        words.pop();
        for word in words {
            let word = word.trim_end_matches(['.', ',']).to_ascii_lowercase();
            assert!(WORDS.contains(&word.as_str()), "{word:?}");
        }
    }

    #[test]
    fn words_are_distinct_lowercase_letters() {
        let distinct: std::collections::HashSet<&str> = WORDS.into_iter().collect();
        assert_eq!(distinct.len(), WORDS.len());
        assert!(
            WORDS
                .iter()
                .all(|word| !word.is_empty() && word.bytes().all(|byte| byte.is_ascii_lowercase()))
        );
    }

    #[test]
    fn content_types() {
        assert_eq!(
            content_type(BlobPattern::Random),
            "application/octet-stream"
        );
        assert_eq!(content_type(BlobPattern::Zeros), "application/octet-stream");
        assert_eq!(content_type(BlobPattern::Text), "text/plain; charset=utf-8");
    }

    #[test]
    fn pattern_names_round_trip() {
        for pattern in BlobPattern::ALL {
            assert_eq!(pattern.as_str().parse(), Ok(pattern));
        }
        assert!("Random".parse::<BlobPattern>().is_err());
        assert!("".parse::<BlobPattern>().is_err());
    }

    #[test]
    fn parse_takes_defaults_and_any_order() {
        let expected = query(10, DEFAULT_PATTERN, DEFAULT_SEED);
        assert_eq!(parse("size=10"), Ok(expected));
        assert_eq!(
            parse("seed=9&pattern=text&size=0"),
            Ok(query(0, BlobPattern::Text, 9))
        );
        assert_eq!(
            parse(&format!("size={MAX}&pattern=zeros&seed={}", u64::MAX)),
            Ok(query(MAX, BlobPattern::Zeros, u64::MAX))
        );
        let blob = query(123, BlobPattern::Text, 4);
        assert_eq!(parse(&blob.to_query_string()), Ok(blob));
    }

    #[test]
    fn a_missing_or_bad_size_is_refused_with_400() {
        for raw in [None, Some(""), Some("pattern=zeros")] {
            let error = BlobQuery::parse(raw, MAX).unwrap_err();
            assert_eq!(error, BlobQueryError::MissingSize);
            assert_eq!(error.status_code(), StatusCode::BAD_REQUEST);
        }
        for raw in [
            "size=abc",
            "size=-1",
            "size=1.5",
            "size=",
            "size",
            "size=+3",
            "size=%201",
            "size=1e3",
        ] {
            let error = parse(raw).unwrap_err();
            assert!(
                matches!(error, BlobQueryError::NotANumber { name: "size", .. }),
                "{raw}: {error}"
            );
            assert_eq!(error.status_code(), StatusCode::BAD_REQUEST);
            assert_eq!(error.code(), "bad_query");
        }
        for raw in ["size=1&seed=x", "size=1&seed=-1", "size=1&seed=+1"] {
            let error = parse(raw).unwrap_err();
            assert!(
                matches!(error, BlobQueryError::NotANumber { name: "seed", .. }),
                "{raw}"
            );
        }
        assert_eq!(
            parse("size=1&seed=18446744073709551616")
                .unwrap_err()
                .to_string(),
            format!(
                "query parameter seed must be a non-negative integer from 0 to {}, got \"18446744073709551616\"",
                u64::MAX
            )
        );
        assert_eq!(
            parse("size=abc").unwrap_err().to_string(),
            format!(
                "query parameter size must be a non-negative integer from 0 to {MAX}, got \"abc\""
            )
        );
    }

    #[test]
    fn a_size_above_the_limit_is_refused_with_413() {
        assert_eq!(BlobQuery::parse(Some("size=10"), 10).unwrap().size, 10);
        for raw in [
            format!("size={}", MAX + 1),
            "size=99999999999999999999999".to_owned(),
        ] {
            let error = parse(&raw).unwrap_err();
            assert!(
                matches!(error, BlobQueryError::TooLarge { limit: MAX, .. }),
                "{raw}"
            );
            assert_eq!(error.status_code(), StatusCode::PAYLOAD_TOO_LARGE);
            assert_eq!(error.code(), "payload_too_large");
        }
        assert_eq!(
            BlobQuery::parse(Some("size=11"), 10)
                .unwrap_err()
                .to_string(),
            "size \"11\" is above the payload limit of 10 bytes"
        );
    }

    #[test]
    fn unknown_patterns_and_parameters_and_repeats_are_refused() {
        assert_eq!(
            parse("size=1&pattern=ones").unwrap_err().to_string(),
            "unknown pattern \"ones\"; accepted patterns are random, zeros and text"
        );
        assert_eq!(
            parse("size=1&pattern=").unwrap_err().status_code(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            parse("size=1&count=2").unwrap_err().to_string(),
            "unknown query parameter \"count\"; accepted parameters are size, pattern and seed"
        );
        for (raw, name) in [
            ("size=1&size=1", "size"),
            ("size=1&pattern=text&pattern=text", "pattern"),
            ("seed=1&size=1&seed=2", "seed"),
        ] {
            assert_eq!(parse(raw), Err(BlobQueryError::Repeated { name }), "{raw}");
        }
        // The first fault in the query is the one reported.
        assert!(matches!(
            parse("size=x&size=1"),
            Err(BlobQueryError::NotANumber { .. })
        ));
    }

    #[test]
    fn quoted_client_text_is_bounded() {
        let long = "x".repeat(10_000);
        for raw in [
            format!("{long}=1"),
            format!("size={long}"),
            format!("size=1&pattern={long}"),
            format!("size=1{}", "0".repeat(10_000)),
        ] {
            let message = parse(&raw).unwrap_err().to_string();
            assert!(message.len() < 200, "{message}");
        }
    }

    /// Generation speed of each pattern, 64 MiB into a sink, and of `blob_crc32`; the figures
    /// measured are in the module's design notes.
    #[test]
    #[ignore = "a measurement, not a check: run it with `cargo test --release -p \
                shmbridge-server --lib -- --ignored blobs::tests::generation_speed --nocapture`"]
    fn generation_speed() {
        const SIZE: u64 = 64 << 20;
        for pattern in BlobPattern::ALL {
            let blob = query(SIZE, pattern, 1);
            let best = |run: &dyn Fn()| {
                (0..5)
                    .map(|_| {
                        let started = std::time::Instant::now();
                        run();
                        started.elapsed()
                    })
                    .min()
                    .unwrap()
            };
            let write = best(&|| write_blob(&blob, &mut io::sink()).unwrap());
            let crc = best(&|| {
                std::hint::black_box(blob_crc32(&blob));
            });
            let rate = |elapsed: std::time::Duration| SIZE as f64 / 1e6 / elapsed.as_secs_f64();
            println!(
                "{pattern}: write_blob {:.0} MB/s, blob_crc32 {:.0} MB/s",
                rate(write),
                rate(crc)
            );
        }
    }
}
