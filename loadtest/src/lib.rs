//! kairos-loadtest: a seeded generator of synthetic operator worlds (and the load harness).

pub mod churn;
pub mod harness;
pub mod households;
/// Progress on stderr while a world is generated: kairos's own module (`src/progress.rs`),
/// compiled here too because this crate cannot depend on `kairos` (kairos's tests depend
/// on this one).
#[path = "../../src/progress.rs"]
pub mod progress;
pub mod report;
pub mod score;
pub mod truth;
pub mod world;
