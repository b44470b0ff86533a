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

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use crate::dataset::WRITE_CHUNK_BYTES;
use crate::payload::Checksummed;

mod query;
#[cfg(test)]
mod tests;
mod text;

pub use query::{BlobQuery, BlobQueryError};
use text::TextStream;

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

/// Client-supplied text quoted in an error message, cut to 40 characters (and `…`) so an error
/// body never grows with the request (as `crate::query::Shown` does for `/users`).
fn shown(text: &str) -> String {
    const MAX_CHARS: usize = 40;
    let mut shown: String = text.chars().take(MAX_CHARS).collect();
    if text.chars().count() > MAX_CHARS {
        shown.push('…');
    }
    shown
}
