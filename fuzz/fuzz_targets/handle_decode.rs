//! Arbitrary text as a handle: parsing never panics and every valid handle round-trips exactly.
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| shmbridge::testing::check_handle_text(text));
