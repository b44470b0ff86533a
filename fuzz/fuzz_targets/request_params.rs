//! Arbitrary query strings for the users routes: a valid request under the count cap, or a 400
//! with a JSON error; never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|raw: &str| shmbridge_server::testing::check_query_text(raw));
