//! kairos-loadtest: a seeded generator of synthetic operator worlds (and the load harness).

pub mod harness;
pub mod households;
pub mod report;
pub mod score;
pub mod truth;
pub mod world;
