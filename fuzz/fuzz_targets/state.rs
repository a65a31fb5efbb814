//! Fuzz target `state`: see `kairos::fuzzing::state`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kairos::fuzzing::state(data));
