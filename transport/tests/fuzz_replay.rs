//! Every fuzz seed and every minimised crash, replayed through the checker its fuzz target calls,
//! so that plain `cargo test` on stable re-checks all of them; plus a few thousand random inputs
//! from a fixed seed, so the checkers run even where cargo-fuzz is not installed.
#![cfg(not(loom))]

use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};
use shmbridge::Handle;
use shmbridge::control::frame::{
    Answer, CONTROL_VERSION, FrameError, MAX_ANSWER_FRAME_LEN, MAX_HEAD_LEN, MAX_HEADER_VALUE_LEN,
    MAX_INLINE_LEN, MAX_REQUEST_LEN, ObjectVersion, Placement, Request, other_version_id,
};
use shmbridge::control::{Refusal, RefusalCode, ResponseHead};
use shmbridge::testing::{
    BoardOp, Op, check_board_ops, check_control_frame, check_handle_text, check_segment_image,
    check_slot_ops,
};

/// Calls `check` on every file under `fuzz/seeds/<target>` and `fuzz/regressions/<target>`.
fn replay(target: &str, mut check: impl FnMut(&[u8])) -> usize {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for kind in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(kind).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            eprintln!("replaying {}", path.display());
            check(&std::fs::read(&path).unwrap());
            replayed += 1;
        }
    }
    replayed
}

/// Decodes fuzz bytes the way `libfuzzer_sys::fuzz_target!` does for a typed input.
fn slot_ops_input(bytes: &[u8]) {
    let ops = Vec::<Op>::arbitrary_take_rest(Unstructured::new(bytes)).unwrap_or_default();
    check_slot_ops(&ops);
}

fn random_inputs(count: usize, max_len: usize, check: impl Fn(&[u8])) {
    let mut random = fastrand::Rng::with_seed(0x5eed);
    for _ in 0..count {
        let bytes: Vec<u8> = (0..random.usize(..max_len))
            .map(|_| random.u8(..))
            .collect();
        check(&bytes);
    }
}

#[test]
fn slot_ops_seeds_and_regressions() {
    let replayed = replay("slot_ops", |bytes| {
        let ops = Vec::<Op>::arbitrary_take_rest(Unstructured::new(bytes)).unwrap_or_default();
        eprintln!("{ops:?}");
        check_slot_ops(&ops);
    });
    assert!(replayed > 0, "no committed seeds");
}

/// The named seeds are written as operations by `fuzz/make_slot_ops_seeds.py`, which encodes them
/// the way `Vec<Op>` decodes: each must decode to the run the script meant. This fails when `Op`'s
/// variants are reordered or one is inserted before others, which changes what every kept input
/// means (re-encode them, then regenerate these).
#[test]
fn slot_ops_named_seeds_are_the_documented_runs() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/slot_ops");
    let bytes = std::fs::read(path.join("sealed-room-runs-out")).unwrap();
    let decoded = Vec::<Op>::arbitrary_take_rest(Unstructured::new(&bytes)).unwrap();
    let sealed = |process, len, seed| Op::PublishSealed { process, len, seed };
    let redeem = |process, ticket, fd_of| Op::RedeemSealed {
        process,
        ticket,
        fd_of,
    };
    let meant = vec![
        sealed(0, 1000, 1),
        sealed(0, 700, 2),
        sealed(0, 500, 3),
        sealed(0, 1100, 4),
        sealed(0, 100, 5),
        redeem(1, 1, 0),
        sealed(0, 900, 6),
        Op::WithdrawSealed { ticket: 0 },
        sealed(0, 900, 6),
        redeem(2, 2, 1),
        sealed(1, 600, 7),
        Op::LoseDescriptor { ticket: 3 },
        Op::Crash { process: 1 },
        Op::Advance { millis: 5000 },
        Op::Reap,
        Op::Claim {
            process: 2,
            len: 50,
        },
        Op::Write {
            writer: 0,
            len: 50,
            seed: 9,
        },
        Op::Publish { writer: 0 },
        Op::CheckSealedRead { read: 0 },
    ];
    assert_eq!(format!("{decoded:?}"), format!("{meant:?}"));
}

#[test]
fn slot_ops_random_runs() {
    random_inputs(3000, 600, slot_ops_input);
}

fn board_ops_input(bytes: &[u8]) {
    let ops = Vec::<BoardOp>::arbitrary_take_rest(Unstructured::new(bytes)).unwrap_or_default();
    check_board_ops(&ops);
}

#[test]
fn board_ops_seeds_and_regressions() {
    assert!(
        replay("board_ops", board_ops_input) > 0,
        "no committed seeds"
    );
}

#[test]
fn board_ops_random_runs() {
    random_inputs(2000, 400, board_ops_input);
}

#[test]
fn segment_attach_seeds_and_regressions() {
    assert!(
        replay("segment_attach", check_segment_image) > 0,
        "no committed seeds"
    );
}

#[test]
fn segment_attach_random_images() {
    random_inputs(500, 9000, check_segment_image);
}

#[test]
fn handle_decode_seeds_and_regressions() {
    let replayed = replay("handle_decode", |bytes| {
        if let Ok(text) = std::str::from_utf8(bytes) {
            check_handle_text(text);
        }
    });
    assert!(replayed > 0, "no committed seeds");
}

#[test]
fn control_frame_seeds_and_regressions() {
    assert!(
        replay("control_frame", check_control_frame) > 0,
        "no committed seeds"
    );
}

/// The seeds are built from the documented frame layout alone (`fuzz/make_control_seeds.py`):
/// each must decode to the frame the script meant, so the decoder and the spec agree.
#[test]
fn control_frame_seeds_are_the_documented_frames() {
    let handle = |slot, len, generation, crc| Handle {
        epoch: 0x9f86_d081_884c_7d65,
        slot,
        len,
        generation,
        crc,
    };
    let head = |content_type: &str, headers: &[(&str, &str)]| {
        let mut head = ResponseHead::default();
        head.set_content_type(content_type).unwrap();
        for (name, value) in headers {
            head.add_header(name, value).unwrap();
        }
        head
    };
    let with_status = |mut head: ResponseHead, status| {
        head.set_status(status).unwrap();
        head
    };
    let json = head(
        "application/json",
        &[
            ("x-payload-crc32", "5d41402a"),
            ("cache-control", "no-store"),
        ],
    );
    let inline_body = br#"{"users":[{"id":1,"name":"Ada"}]}"#;
    let binary: Vec<u8> = (0..=255).collect();
    let requests = [
        (
            "publish",
            Request::Publish {
                id: 7,
                deadline_ns: 123_456_789_000,
                request: b"GET /users?count=1000&seed=42\r\naccept: application/json\r\n\r\n",
            },
        ),
        (
            "publish_empty",
            Request::Publish {
                id: 8,
                deadline_ns: 1,
                request: b"",
            },
        ),
        (
            "publish_binary",
            Request::Publish {
                id: 9,
                deadline_ns: u64::MAX,
                request: &binary,
            },
        ),
        (
            "release",
            Request::Release {
                id: 7,
                slot: 3,
                generation: 26,
            },
        ),
        ("board_request", Request::Board { id: 17 }),
    ];
    let refused = |id, code, detail| Answer::Refused {
        id,
        refusal: Refusal::new(code, detail),
    };
    let answers = [
        (
            "published_inline",
            Answer::Published {
                id: 9,
                head: json,
                placement: Placement::Inline {
                    body: inline_body,
                    crc: crc32fast::hash(inline_body),
                },
                object: None,
            },
        ),
        (
            "published_inline_empty",
            Answer::Published {
                id: 10,
                head: with_status(ResponseHead::default(), 204),
                placement: Placement::Inline { body: b"", crc: 0 },
                object: None,
            },
        ),
        (
            "published_slot",
            Answer::Published {
                id: 11,
                head: with_status(head("text/plain; charset=utf-8", &[]), 201),
                placement: Placement::Slot(handle(3, 2000, 26, 0x5d41_402a)),
                object: None,
            },
        ),
        (
            "published_sealed",
            Answer::Published {
                id: 12,
                head: ResponseHead::default(),
                placement: Placement::Sealed(handle(5, 256_873, 27, 0x1234_abcd)),
                object: None,
            },
        ),
        (
            "published_sealed_small",
            Answer::Published {
                id: 14,
                head: ResponseHead::default(),
                placement: Placement::Sealed(handle(6, 2000, 28, 0x0bad_f00d)),
                object: None,
            },
        ),
        ("refused_too_large", refused(1, RefusalCode::TooLarge, 4096)),
        ("refused_exhausted", refused(2, RefusalCode::Exhausted, 0)),
        ("refused_peer_busy", refused(3, RefusalCode::PeerBusy, 32)),
        (
            "refused_segment_busy",
            refused(4, RefusalCode::SegmentBusy, 48),
        ),
        (
            "refused_deadline_exceeded",
            refused(5, RefusalCode::DeadlineExceeded, 0),
        ),
        ("refused_internal", refused(6, RefusalCode::Internal, 0)),
        (
            "refused_request_too_large",
            refused(7, RefusalCode::RequestTooLarge, MAX_REQUEST_LEN as u64),
        ),
        (
            "refused_handler_failed",
            refused(8, RefusalCode::HandlerFailed, 0),
        ),
        (
            "refused_version",
            refused(9, RefusalCode::Version, CONTROL_VERSION.into()),
        ),
        ("refused_no_board", refused(10, RefusalCode::NoBoard, 0)),
        (
            "published_object",
            Answer::Published {
                id: 16,
                head: ResponseHead::default(),
                placement: Placement::Slot(handle(2, 900, 30, 0x0c0f_fee0)),
                object: Some(ObjectVersion {
                    key: 0x1122_3344_5566_7788,
                    version: 0x2a,
                }),
            },
        ),
        (
            "board",
            Answer::Board {
                id: 17,
                epoch: 0x5eed_5eed_5eed_5eed,
                entry_count: 4096,
            },
        ),
    ];
    let seed = |name| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/control_frame");
        std::fs::read(path.join(name)).unwrap()
    };
    let mut named = requests.len() + answers.len();
    for (name, request) in requests {
        assert_eq!(Request::decode(&seed(name)), Ok(request), "{name}");
    }
    for (name, answer) in answers {
        assert_eq!(Answer::decode(&seed(name)), Ok(answer), "{name}");
    }
    // The other versions' frames: named by both decoders, and answerable by their ids.
    for (name, found, id) in [
        ("v1_publish", 1, 13),
        ("v2_published_sealed_small", 2, 15),
        ("v3_published_slot", 3, 18),
    ] {
        let other = seed(name);
        assert_eq!(Request::decode(&other), Err(FrameError::Version { found }));
        assert_eq!(Answer::decode(&other), Err(FrameError::Version { found }));
        assert_eq!(other_version_id(&other), Some(id));
        named += 1;
    }
    // Every refusal code has its seed, and nothing in the directory goes unchecked.
    assert_eq!(RefusalCode::ALL.len(), 10);
    let committed = replay("control_frame", |_| {});
    assert_eq!(committed, named, "a seed is not checked here");
}

/// The checker itself enforces every bound: frames exactly at each bound pass it, and one byte
/// over each is refused by the decoders (so the checker's own assertions never see them).
#[test]
fn control_frame_bounds_are_exact() {
    let request = vec![7u8; MAX_REQUEST_LEN];
    let at_bound = Request::Publish {
        id: 1,
        deadline_ns: 1,
        request: &request,
    }
    .encode();
    assert!(Request::decode(&at_bound).is_ok());
    check_control_frame(&at_bound);
    let mut over = at_bound.clone();
    over.push(7);
    over[24..28].copy_from_slice(&(MAX_REQUEST_LEN as u32 + 1).to_le_bytes());
    assert!(matches!(
        Request::decode(&over),
        Err(FrameError::Bound {
            field: "request",
            ..
        })
    ));
    check_control_frame(&over);

    let body = vec![9u8; MAX_INLINE_LEN];
    let mut head = ResponseHead::default();
    let value = "v".repeat(MAX_HEADER_VALUE_LEN);
    while head.add_header("x-filler", &value).is_ok() {}
    let at_bound = Answer::Published {
        id: 2,
        head: head.clone(),
        placement: Placement::Inline {
            body: &body,
            crc: crc32fast::hash(&body),
        },
        object: None,
    }
    .encode();
    assert!(at_bound.len() <= MAX_ANSWER_FRAME_LEN);
    assert!(Answer::decode(&at_bound).is_ok());
    check_control_frame(&at_bound);
    let mut over = at_bound.clone();
    over.push(9);
    over[36..40].copy_from_slice(&(MAX_INLINE_LEN as u32 + 1).to_le_bytes());
    assert!(matches!(
        Answer::decode(&over),
        Err(FrameError::Bound {
            field: "inline body",
            ..
        })
    ));
    check_control_frame(&over);
    let mut over = at_bound;
    over[20..24].copy_from_slice(&(MAX_HEAD_LEN as u32 + 1).to_le_bytes());
    assert!(matches!(
        Answer::decode(&over),
        Err(FrameError::Bound { field: "head", .. })
    ));
    check_control_frame(&over);
}

/// Random bytes almost never pass the magic; mutants of the valid seeds (bytes changed,
/// frames cut or extended) reach every field check.
#[test]
fn control_frame_seed_mutants() {
    let mut random = fastrand::Rng::with_seed(0xf4a3e);
    let seeds = replay("control_frame", |seed| {
        for _ in 0..2000 {
            let mut frame = seed.to_vec();
            for _ in 0..random.usize(1..=3) {
                match random.u8(..4) {
                    0 if !frame.is_empty() => frame.truncate(random.usize(..frame.len())),
                    1 => frame.push(random.u8(..)),
                    _ if !frame.is_empty() => {
                        let at = random.usize(..frame.len());
                        frame[at] = random.u8(..);
                    }
                    _ => {}
                }
            }
            check_control_frame(&frame);
        }
    });
    assert!(seeds > 0, "no committed seeds");
}
