//! The v2 control channel's tiers over a real [`ControlServer`] and [`ControlClient`] in one
//! process: bodies at every tier boundary (0 and 1 byte, the inline threshold and one byte more,
//! the slot size and one byte more, a few MiB) come back byte for byte in the tier their length
//! picks, whether the handler says its length first (`expect_len`) or writes in pieces and the
//! body grows inline -> slot -> sealed (through the slot's read-back); the head (status, content
//! type, headers) arrives exactly, set before or after the body; requests travel exactly, up to
//! their bound. After each test no slot is held and no sealed byte counted.
//!
//! [`ControlServer`]: shmbridge::ControlServer
//! [`ControlClient`]: shmbridge::ControlClient
#![cfg(not(loom))]

mod channel_support;

use std::io::Write;
use std::sync::Arc;

use shmbridge::control::frame::{MAX_HEAD_LEN, MAX_INLINE_LEN, MAX_REQUEST_LEN};
use shmbridge::control::{
    ChannelOptions, DEFAULT_INLINE_THRESHOLD, HandlerError, ResponseHead, ResponseWriter, Tier,
};
use shmbridge::http::HttpRequest;
use shmbridge::{ControlClient, ProducerOptions};

use channel_support::{
    Ask, Served, TIMEOUT, Writing, assert_answers, producer_with, publication, tier_for,
};

const MIB: usize = 1 << 20;

/// A channel whose bodies travel inline up to `inline_threshold` bytes, in slots of `slot_size`.
fn served(test: &str, inline_threshold: usize, slot_size: usize) -> Served {
    served_on(test, 4, inline_threshold, slot_size)
}

/// [`served`] on `slots` slots.
fn served_on(test: &str, slots: u32, inline_threshold: usize, slot_size: usize) -> Served {
    let producer = producer_with(slots, slot_size, ProducerOptions::default());
    let options = ChannelOptions {
        inline_threshold,
        ..ChannelOptions::for_segment(producer.segment())
    };
    Served::new(test, producer, options)
}

/// The lengths at every boundary of `inline_threshold` and `slot_size`, and a few MiB.
fn boundary_lengths(inline_threshold: usize, slot_size: usize) -> Vec<usize> {
    let mut lengths = vec![
        0,
        1,
        inline_threshold,
        inline_threshold + 1,
        slot_size,
        slot_size + 1,
        3 * MIB + 7,
    ];
    lengths.sort_unstable();
    lengths.dedup();
    lengths
}

/// Asks for every boundary length written every way, checks each answer's tier, length, head
/// and bytes, before and after redeeming, and that nothing is left held.
fn every_boundary_round_trips(test: &str, inline_threshold: usize, slot_size: usize) {
    let served = served(test, inline_threshold, slot_size);
    let client = served.connect();
    let mut sealed = 0;
    for (n, len) in boundary_lengths(inline_threshold, slot_size)
        .into_iter()
        .enumerate()
    {
        let mut writings = vec![Writing::Expect, Writing::Whole, Writing::Chunks(1000)];
        if len <= 2 * slot_size.max(inline_threshold) {
            // Byte by byte: every write may cross a boundary.
            writings.push(Writing::Chunks(1));
        }
        for (m, writing) in writings.into_iter().enumerate() {
            let mut ask = Ask::new(len, (n * 10 + m) as u64).writing(writing);
            if m % 2 == 0 {
                ask = ask.with_head();
            }
            let tier = tier_for(len, inline_threshold, slot_size);
            let publication = publication(&client, &ask.encode())
                .unwrap_or_else(|error| panic!("{ask:?}: {error}"));
            assert_eq!(publication.tier(), tier, "{ask:?}");
            assert_eq!(publication.len(), len as u64, "{ask:?}");
            assert_eq!(publication.handle().is_some(), tier != Tier::Inline);
            assert_eq!(publication.head(), &ask.expected_head(), "{ask:?}");
            let response = publication
                .redeem()
                .unwrap_or_else(|error| panic!("{ask:?}: {error}"));
            assert_answers(&response, &ask, tier);
            sealed += u64::from(tier == Tier::Sealed);
        }
    }
    assert_eq!(served.producer.stats().sealed_publications, sealed);
    assert_eq!(client.consumer().stats().checksum_failures, 0);
    served.assert_nothing_leaked();
}

#[test]
fn every_tier_boundary_round_trips_with_a_threshold_below_the_slot_size() {
    every_boundary_round_trips("boundaries-1k-4k", 1024, 4096);
}

#[test]
fn every_tier_boundary_round_trips_with_the_default_threshold() {
    every_boundary_round_trips("boundaries-default", DEFAULT_INLINE_THRESHOLD, 64 << 10);
}

/// Threshold 0: only the empty body travels inline.
#[test]
fn every_tier_boundary_round_trips_with_nothing_inline() {
    every_boundary_round_trips("boundaries-none-inline", 0, 4096);
}

/// The largest threshold, as large as the slots: the slot tier is never used.
#[test]
fn every_tier_boundary_round_trips_with_the_largest_threshold() {
    every_boundary_round_trips("boundaries-max-inline", MAX_INLINE_LEN, MAX_INLINE_LEN);
}

/// A threshold above the slot size: bodies between the two still travel inline, and one byte
/// over the threshold goes straight to a sealed payload.
#[test]
fn every_tier_boundary_round_trips_with_a_threshold_above_the_slot_size() {
    every_boundary_round_trips("boundaries-inline-over-slot", 16 << 10, 4096);
}

/// Growth through every tier in pieces that do not divide the boundaries, crossing each with a
/// write that lands partly on each side, for several sizes within the sealed tier.
#[test]
fn a_body_written_in_uneven_pieces_grows_through_every_tier() {
    let served = served("growth", 1024, 4096);
    let client = served.connect();
    for (seed, (len, chunk)) in [
        (1023, 7),
        (1025, 1000),
        (4095, 4096),
        (4097, 3000),
        (8191, 1023),
        (MIB, 4097),
        (5 * MIB + 3, 65_537),
    ]
    .into_iter()
    .enumerate()
    {
        let ask = Ask::new(len, seed as u64).writing(Writing::Chunks(chunk));
        let response = client.request(&ask.encode(), TIMEOUT).unwrap();
        assert_answers(&response, &ask, tier_for(len, 1024, 4096));
    }
    served.assert_nothing_leaked();
}

/// Several clients at once on one producer, every tier in flight together: each gets its own.
/// (16 slots: the busy limits, 8 a peer and 12 in the segment, stay out of the way of four
/// clients with one request each in flight.)
#[test]
fn concurrent_clients_each_get_their_own_bodies_in_every_tier() {
    let served = Arc::new(served_on("concurrent", 16, 1024, 4096));
    let threads: Vec<_> = (0..4u64)
        .map(|client_n| {
            let client: ControlClient = served.connect();
            std::thread::spawn(move || {
                for n in 0..24u64 {
                    let len = [0, 700, 1024, 1025, 3000, 4096, 4097, 300_000][(n % 8) as usize];
                    let writing = [Writing::Expect, Writing::Chunks(512)][(n % 2) as usize];
                    let ask = Ask::new(len, client_n * 100 + n).writing(writing);
                    let response = client.request(&ask.encode(), TIMEOUT).unwrap();
                    assert_answers(&response, &ask, tier_for(len, 1024, 4096));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    served.assert_nothing_leaked();
}

/// A head as large as the frame allows, with an inline body as large as the frame allows: the
/// longest answer there is, delivered whole.
#[test]
fn the_largest_head_and_inline_body_arrive_exactly() {
    let producer = producer_with(2, MAX_INLINE_LEN, ProducerOptions::default());
    let options = ChannelOptions {
        inline_threshold: MAX_INLINE_LEN,
        ..ChannelOptions::for_segment(producer.segment())
    };
    let head = largest_head();
    let handler = {
        let head = head.clone();
        move |request: &[u8], response: &mut ResponseWriter<'_>| -> Result<(), HandlerError> {
            response.set_status(head.status())?;
            response.set_content_type(head.content_type())?;
            for (name, value) in head.headers() {
                response.add_header(name, value)?;
            }
            let len: usize = std::str::from_utf8(request)?.parse()?;
            response.write_all(&channel_support::payload(len, 5))?;
            Ok(())
        }
    };
    let served = Served::with_handler("largest-head", producer, Arc::new(handler), options);
    let client = served.connect();
    for (len, tier) in [
        (0, Tier::Inline),
        (MAX_INLINE_LEN, Tier::Inline),
        (MAX_INLINE_LEN + 1, Tier::Sealed),
    ] {
        let response = client.request(len.to_string().as_bytes(), TIMEOUT).unwrap();
        assert_eq!(response.head, head);
        assert_eq!(response.body.tier(), tier);
        assert!(response.body[..] == channel_support::payload(len, 5)[..]);
    }
    served.assert_nothing_leaked();
}

/// As many headers as fit [`MAX_HEAD_LEN`], the longest content type, a status far from 200.
fn largest_head() -> ResponseHead {
    let mut head = ResponseHead::default();
    head.set_status(599).unwrap();
    head.set_content_type(&"t".repeat(4096)).unwrap();
    let mut n = 0;
    while head
        .add_header(&format!("x-h{n}"), &"v\t ~".repeat(256))
        .is_ok()
    {
        n += 1;
    }
    // Fill what is left with short headers, up to the count or the byte bound.
    while head.add_header("x", "").is_ok() {}
    let mut encoded = 4 + head.content_type().len();
    for (name, value) in head.headers() {
        encoded += 4 + name.len() + value.len();
    }
    assert!(encoded <= MAX_HEAD_LEN && encoded > MAX_HEAD_LEN - 1024);
    head
}

/// The head is sent when the handler returns, so it may be set after the body is written, in
/// any tier; a header refused by the head's rules is the handler's error to handle.
#[test]
fn the_head_may_be_set_after_the_body_and_bad_headers_are_refused_in_the_handler() {
    let producer = producer_with(4, 4096, ProducerOptions::default());
    let options = ChannelOptions {
        inline_threshold: 1024,
        ..ChannelOptions::for_segment(producer.segment())
    };
    let handler = |request: &[u8], response: &mut ResponseWriter<'_>| -> Result<(), HandlerError> {
        let len: usize = std::str::from_utf8(request)?.parse()?;
        response.write_all(&channel_support::payload(len, 9))?;
        assert!(response.add_header("bad name", "v").is_err());
        assert!(response.add_header("x-bad", "a\r\nb").is_err());
        assert!(response.set_status(1000).is_err());
        response.set_status(404)?;
        response.set_content_type("text/plain")?;
        response.add_header("x-written", &response.written().to_string())?;
        Ok(())
    };
    let served = Served::with_handler("late-head", producer, Arc::new(handler), options);
    let client = served.connect();
    for len in [10, 2000, 100_000] {
        let response = client.request(len.to_string().as_bytes(), TIMEOUT).unwrap();
        assert_eq!(response.head.status(), 404);
        assert_eq!(response.head.content_type(), "text/plain");
        assert_eq!(
            response.head.headers(),
            &[("x-written".to_owned(), len.to_string())]
        );
        assert_eq!(response.body.tier(), tier_for(len, 1024, 4096));
        assert!(response.body[..] == channel_support::payload(len, 9)[..]);
    }
    served.assert_nothing_leaked();
}

/// The request's bytes reach the handler exactly, from empty to [`MAX_REQUEST_LEN`], binary
/// included: an echo handler sends each back.
#[test]
fn requests_reach_the_handler_byte_for_byte_up_to_their_bound() {
    let producer = producer_with(4, 4096, ProducerOptions::default());
    let options = ChannelOptions {
        inline_threshold: 1024,
        ..ChannelOptions::for_segment(producer.segment())
    };
    let echo = |request: &[u8], response: &mut ResponseWriter<'_>| -> Result<(), HandlerError> {
        response.add_header("x-request-len", &request.len().to_string())?;
        response.write_all(request)?;
        Ok(())
    };
    let served = Served::with_handler("echo", producer, Arc::new(echo), options);
    let client = served.connect();
    for request in [
        Vec::new(),
        vec![0],
        vec![0xff; 1024],
        vec![b'\n'; 1025],
        channel_support::payload(4097, 1),
        channel_support::payload(MAX_REQUEST_LEN, 2),
    ] {
        let response = client.request(&request, TIMEOUT).unwrap();
        assert_eq!(
            response.head.headers(),
            &[("x-request-len".to_owned(), request.len().to_string())]
        );
        assert_eq!(response.body.tier(), tier_for(request.len(), 1024, 4096));
        assert!(response.body[..] == request[..], "{} bytes", request.len());
    }
    served.assert_nothing_leaked();
}

/// The HTTP convention in the opaque request: the handler parses it and answers from it, with
/// its own 4xx for what it cannot parse (a bad request is an answer, not a refusal).
#[test]
fn an_http_request_in_the_request_bytes_is_answered_by_its_route() {
    let producer = producer_with(4, 4096, ProducerOptions::default());
    let options = ChannelOptions {
        inline_threshold: 1024,
        ..ChannelOptions::for_segment(producer.segment())
    };
    let handler = |request: &[u8], response: &mut ResponseWriter<'_>| -> Result<(), HandlerError> {
        let Ok(http) = HttpRequest::parse(request) else {
            response.set_status(400)?;
            response.write_all(b"bad request")?;
            return Ok(());
        };
        response.set_content_type("application/octet-stream")?;
        response.add_header("x-method", http.method)?;
        response.add_header("x-path", http.path())?;
        let len: usize = http
            .query()
            .and_then(|query| query.strip_prefix("len="))
            .ok_or("no len")?
            .parse()?;
        response.expect_len(len as u64)?;
        response.write_all(&channel_support::payload(len, 3))?;
        Ok(())
    };
    let served = Served::with_handler("http", producer, Arc::new(handler), options);
    let client = served.connect();
    for len in [0, 1024, 4000, 70_000] {
        let target = format!("/bytes?len={len}");
        let request = HttpRequest::get(&target).encode().unwrap();
        let response = client.request(&request, TIMEOUT).unwrap();
        assert_eq!(response.head.status(), 200);
        assert_eq!(
            response.head.headers(),
            &[
                ("x-method".to_owned(), "GET".to_owned()),
                ("x-path".to_owned(), "/bytes".to_owned())
            ]
        );
        assert_eq!(response.body.tier(), tier_for(len, 1024, 4096));
        assert!(response.body[..] == channel_support::payload(len, 3)[..]);
    }
    let response = client.request(b"not http", TIMEOUT).unwrap();
    assert_eq!(response.head.status(), 400);
    assert_eq!(&response.body[..], b"bad request");
    served.assert_nothing_leaked();
}
