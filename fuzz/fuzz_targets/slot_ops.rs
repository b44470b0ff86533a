//! Claim, write, publish, acquire, read, crash, pause, reap and scribble, by a few simulated
//! processes on one real segment, checked against a reference model.
#![no_main]

use shmbridge::testing::{Op, check_slot_ops};

libfuzzer_sys::fuzz_target!(|ops: Vec<Op>| check_slot_ops(&ops));
