//! Fuzz target `cel`: see `kairos::fuzzing::cel`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kairos::fuzzing::cel(data));
