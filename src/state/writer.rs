//! The checkpoint writer: gathers what the subscriber operators emit for a checkpoint and,
//! once the checkpoint is consistent, makes it durable in one write.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kairos_dataflows::checkpoint::StateRecord;
use kairos_dataflows::state::SubscriberState;
use kairos_model::{Event, Millis, Msisdn};

use super::coordinator::Coordinator;
use super::{CheckpointMeta, CheckpointWrite, Position, StateStore};
use crate::sinks::kafka::KafkaSink;
use crate::telemetry;

/// Accumulates checkpoint records until a checkpoint can be written.
pub struct CheckpointWriter {
    workers: usize,
    /// Changed states not yet written (a later record of the same subscriber wins).
    subscribers: BTreeMap<Msisdn, SubscriberState>,
    /// Per worker: the instant of its last checkpoint marker and its waiting events.
    markers: BTreeMap<usize, (Millis, Vec<Event>)>,
    /// Where the outputs ended at the last checkpoint written.
    outputs_at_last: Vec<Position>,
}

impl CheckpointWriter {
    /// A writer for `workers` workers; `outputs_at_last` is where the outputs ended at the
    /// restored checkpoint (or when the engine started).
    pub fn new(workers: usize, outputs_at_last: Vec<Position>) -> CheckpointWriter {
        CheckpointWriter {
            workers,
            subscribers: BTreeMap::new(),
            markers: BTreeMap::new(),
            outputs_at_last,
        }
    }

    /// Takes one record from a subscriber operator.
    pub fn absorb(&mut self, record: StateRecord) {
        match record {
            StateRecord::Subscriber { msisdn, state } => {
                self.subscribers.insert(msisdn, *state);
            }
            StateRecord::Pending { worker, at, events } => {
                self.markers.insert(worker, (at, events));
            }
        }
    }

    /// Whether every worker has sent its records for the checkpoint at `at`.
    pub fn complete_for(&self, at: Millis) -> bool {
        self.markers.len() == self.workers && self.markers.values().all(|(m, _)| *m == at)
    }

    /// Writes the checkpoint at `at`: flushes the outputs (everything decided before `at`
    /// is delivered), then one batch with the states, the waiting events, the input
    /// positions and the output ends. On failure nothing is lost: the records stay and the
    /// next attempt writes them.
    pub fn write(
        &mut self,
        at: Millis,
        inputs: Vec<Position>,
        sink: &KafkaSink,
        store: &StateStore,
        coordinator: &Coordinator,
    ) -> Result<(), String> {
        let started = Instant::now();
        sink.flush(Duration::from_secs(30))?;
        let outputs = sink.ends();
        let waiting: Vec<Event> = self
            .markers
            .values()
            .flat_map(|(_, events)| events.iter().cloned())
            .collect();
        let meta = CheckpointMeta {
            at,
            inputs,
            outputs: outputs.clone(),
            scan_from: self.outputs_at_last.clone(),
        };
        let checkpoint = CheckpointWrite {
            meta,
            subscribers: self.subscribers.iter().map(|(m, s)| (*m, s)).collect(),
            waiting: &waiting,
        };
        store.write(&checkpoint).map_err(|e| e.to_string())?;
        metrics::counter!(telemetry::CHECKPOINTS).increment(1);
        metrics::counter!(telemetry::CHECKPOINT_SUBSCRIBERS).increment(self.subscribers.len() as u64);
        metrics::histogram!(telemetry::CHECKPOINT_SECONDS).record(started.elapsed().as_secs_f64());
        self.subscribers.clear();
        self.markers.clear();
        self.outputs_at_last = outputs;
        coordinator.complete(at);
        Ok(())
    }
}
