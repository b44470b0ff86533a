//! Arbitrary bytes as a segment image: attach must return a typed error or a valid segment whose
//! every slot can be read through the public API without panicking.
#![no_main]

libfuzzer_sys::fuzz_target!(|image: &[u8]| shmbridge::testing::check_segment_image(image));
