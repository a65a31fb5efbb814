//! Fuzz target `rule_file`: see `kairos::fuzzing::rule_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kairos::fuzzing::rule_file(data));
