//! pipeline: the one place where the stages are wired, for both modes.
//!
//! ```text
//!            replay (replay.rs)                     run (run.rs)
//!  files ─▶ reader thread ─▶ chunks      Kafka partitions ─▶ PartitionIngest (per worker)
//!           ingest/files.rs                         ingest/kafka.rs
//!                 └── decode (src/decode) ──┬── decode ──┘
//!                                           ▼
//!                     Received::Event | Received::Invalid (→ dead letters)
//!                                           ▼  [`enter`]: sent at the worker's epoch
//!              kairos_dataflows::decisions  (the same dataflow, W workers)
//!                                           ▼
//!          collected, sorted, written to DIR     sinks/kafka.rs: actions / decisions topics,
//!          (sinks/files.rs)                      checkpoints handed to state/writer.rs
//! ```
//!
//! Only the edges differ between `kairos replay` and `kairos run`: both sources decode
//! what they read and hand the worker loop a [`Received`], which [`enter`] sends into the
//! dataflow the same way.

pub mod replay;
pub mod run;

use std::path::Path;
use std::sync::Arc;

use kairos_model::{Event, Millis, RuleSet};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::worker::Worker;

pub use replay::{replay, replay_observing, ReplayError, ReplayOptions, Replayed, Watch};
pub use run::{run, RunError};

use crate::ingest::{DeadLetter, Received};
use crate::telemetry::IngestTally;

/// The dataflow's input: events, sent at the worker's current epoch.
pub type EventInput = InputHandle<Millis, CapacityContainerBuilder<Vec<Event>>>;

/// Where live rule changes enter the dataflow, at the instant they take force.
pub type RulesInput = InputHandle<Millis, CapacityContainerBuilder<Vec<RuleSet>>>;

/// A rules folder that does not check: the first problem, and how to see the others.
#[derive(Debug, thiserror::Error)]
#[error("invalid rules: {first}{more}")]
pub struct RulesError {
    first: String,
    /// Empty, or how many more problems there are and the command that lists them.
    more: String,
}

/// Loads a rules folder; every problem becomes one [`RulesError`] for the command line.
pub fn load_rules(dir: &Path) -> Result<Arc<RuleSet>, RulesError> {
    crate::rules::load_dir(dir)
        .map(Arc::new)
        .map_err(|errors| RulesError::new(dir, &errors))
}

impl RulesError {
    /// The first of the folder `dir`'s problems, and how many more there are.
    pub fn new(dir: &Path, errors: &[crate::rules::RuleError]) -> RulesError {
        RulesError {
            first: errors.first().map(ToString::to_string).unwrap_or_default(),
            more: match errors.len() {
                0 | 1 => String::new(),
                n => format!(" (and {} more; see `kairos rules check {}`)", n - 1, dir.display()),
            },
        }
    }
}

/// Sends what a source read into the dataflow at the input's current epoch (counting it,
/// late or not), or hands a dead letter to `dead_letter`.
pub fn enter(
    received: Received,
    input: &mut EventInput,
    tally: &mut IngestTally,
    dead_letter: impl FnOnce(DeadLetter, Option<Vec<u8>>),
) {
    match received {
        Received::Event(event) => {
            let late = event.ts < *input.time();
            if late {
                // For investigations only (it names the subscriber, so never at info): which
                // events were applied late, e.g. to tell a run that differs from a replay
                // because of lateness from one that differs because of a bug
                // (`KAIROS_LOG=info,kairos::late=debug`; the fault campaign reads it).
                tracing::debug!(target: "kairos::late", msisdn = %event.msisdn, ts = event.ts, epoch = *input.time(), "late event");
            }
            tally.event(event.kind(), late);
            input.send(event);
        }
        Received::Invalid(letter, key) => {
            tally.invalid += 1;
            dead_letter(letter, key);
        }
    }
}

/// Closes the input and decides everything read so far.
pub fn finish(worker: &mut Worker, input: EventInput, probe: &ProbeHandle<Millis>) {
    drop(input);
    while !probe.done() {
        worker.step();
    }
}
