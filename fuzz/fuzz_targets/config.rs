#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pillion::fuzzing::config(data));
