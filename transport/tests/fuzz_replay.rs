//! Every fuzz seed and every minimised crash, replayed through the checker its fuzz target calls,
//! so that plain `cargo test` on stable re-checks all of them; plus a few thousand random inputs
//! from a fixed seed, so the checkers run even where cargo-fuzz is not installed.
#![cfg(not(loom))]

use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};
use shmbridge::testing::{Op, check_handle_text, check_segment_image, check_slot_ops};

/// Calls `check` on every file under `fuzz/seeds/<target>` and `fuzz/regressions/<target>`.
fn replay(target: &str, check: impl Fn(&[u8])) -> usize {
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
