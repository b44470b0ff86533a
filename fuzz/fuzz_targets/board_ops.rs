//! Observe, publish, invalidate, scribble and read one real version board, checked against a
//! reference model.
#![no_main]

use shmbridge::testing::{BoardOp, check_board_ops};

libfuzzer_sys::fuzz_target!(|ops: Vec<BoardOp>| check_board_ops(&ops));
