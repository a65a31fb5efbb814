//! Fuzz target `policy`: see `kairos::fuzzing::policy`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kairos::fuzzing::policy(data));
