//! Fuzz target `event`: see `kairos::fuzzing::event`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kairos::fuzzing::event(data));
