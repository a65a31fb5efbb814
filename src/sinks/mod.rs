//! sinks: where decisions, actions and dead letters go — files in replay, Kafka topics in
//! run mode.

pub mod files;
pub mod kafka;
