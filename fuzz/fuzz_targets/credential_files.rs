#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pillion::fuzzing::credential_files(data));
