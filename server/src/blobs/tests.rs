use axum::http::StatusCode;

use super::text::{LINE_COLUMNS, WORDS};
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
        format!("query parameter size must be a non-negative integer from 0 to {MAX}, got \"abc\"")
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
