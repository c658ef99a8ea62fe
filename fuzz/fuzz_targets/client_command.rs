#![no_main]
//! See `tandem::fuzzing::client_command`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem::fuzzing::client_command(data));
