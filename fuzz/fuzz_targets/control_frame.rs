//! Arbitrary bytes as a control-channel frame: decoding never panics and every frame that
//! decodes re-encodes to exactly its bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| shmbridge::testing::check_control_frame(bytes));
