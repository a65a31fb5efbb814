//! Fuzz target `config`: see `kairos::fuzzing::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kairos::fuzzing::config(data));
