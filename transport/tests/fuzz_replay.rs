//! Every fuzz seed and every minimised crash, replayed through the checker its fuzz target calls,
//! so that plain `cargo test` on stable re-checks all of them; plus a few thousand random inputs
//! from a fixed seed, so the checkers run even where cargo-fuzz is not installed.
#![cfg(not(loom))]

use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};
use shmbridge::Handle;
use shmbridge::control::{Answer, PublishRequest, Refusal, RefusalCode, Request};
use shmbridge::testing::{
    Op, check_control_frame, check_handle_text, check_segment_image, check_slot_ops,
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
    let handle = Handle {
        epoch: 0x9f86_d081_884c_7d65,
        slot: 3,
        len: 256_873,
        generation: 26,
        crc: 0x5d41_402a,
    };
    let refused = |id, code, detail| Answer::Refused {
        id,
        refusal: Refusal { code, detail },
    };
    let requests = [
        (
            "publish",
            Request::Publish(PublishRequest {
                id: 7,
                count: 1000,
                seed: 42,
                deadline_ns: 123_456_789_000,
            }),
        ),
        (
            "release",
            Request::Release {
                id: 7,
                slot: 3,
                generation: 26,
            },
        ),
    ];
    let answers = [
        ("published", Answer::Published { id: 9, handle }),
        ("refused_peer_busy", refused(1, RefusalCode::PeerBusy, 32)),
        ("refused_too_large", refused(2, RefusalCode::TooLarge, 4096)),
    ];
    let seed = |name| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/control_frame");
        std::fs::read(path.join(name)).unwrap()
    };
    for (name, request) in requests {
        assert_eq!(Request::decode(&seed(name)), Ok(request), "{name}");
    }
    for (name, answer) in answers {
        assert_eq!(Answer::decode(&seed(name)), Ok(answer), "{name}");
    }
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
