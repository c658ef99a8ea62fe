#![no_main]
//! See `tandem::fuzzing::config_text`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem::fuzzing::config_text(data));
