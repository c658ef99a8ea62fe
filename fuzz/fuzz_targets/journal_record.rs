#![no_main]
//! See `tandem::fuzzing::journal_record`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem::fuzzing::journal_record(data));
