#![no_main]
//! See `tandem::fuzzing::backend_response`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem::fuzzing::backend_response(data));
