//! Arbitrary bytes as a control-channel frame: decoding never panics, every frame that decodes
//! re-encodes to exactly its bytes, and nothing that decodes breaks a bound of the spec (request,
//! inline body, head and its fields).
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| shmbridge::testing::check_control_frame(bytes));
