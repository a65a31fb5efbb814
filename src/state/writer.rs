//! The checkpoint writer: gathers what the subscriber operators emit for a checkpoint and,
//! once the checkpoint is consistent, makes it durable in one write, on a thread of its own.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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
}

impl CheckpointWriter {
    /// A writer for `workers` workers.
    pub fn new(workers: usize) -> CheckpointWriter {
        CheckpointWriter {
            workers,
            subscribers: BTreeMap::new(),
            markers: BTreeMap::new(),
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

    /// Hands over everything gathered for the checkpoint at `at` (once
    /// [`CheckpointWriter::complete_for`] it), to be written by the [`BackgroundWriter`].
    pub fn take(&mut self, at: Millis, inputs: Vec<Position>) -> Ready {
        let waiting = std::mem::take(&mut self.markers)
            .into_values()
            .flat_map(|(_, events)| events)
            .collect();
        Ready {
            at,
            inputs,
            subscribers: std::mem::take(&mut self.subscribers),
            waiting,
        }
    }
}

/// A consistent checkpoint, gathered and ready to be made durable.
pub struct Ready {
    at: Millis,
    inputs: Vec<Position>,
    subscribers: BTreeMap<Msisdn, SubscriberState>,
    waiting: Vec<Event>,
}

/// Writes checkpoints on a thread of its own, so no worker stops for the producer's flush,
/// the states' encoding or RocksDB's synced write (at 50 k events/s they took worker 0 long
/// enough to double the p99 of event → action latency). One checkpoint at a time: the
/// coordinator proposes the next only once this one is complete.
pub struct BackgroundWriter {
    jobs: std::sync::mpsc::Sender<Ready>,
    /// The instant being written, 0 when none.
    busy: Arc<AtomicU64>,
}

impl BackgroundWriter {
    /// Starts the writer thread; `outputs_at_last` is where the outputs ended at the restored
    /// checkpoint (or when the engine started).
    pub fn start(
        sink: Arc<KafkaSink>,
        store: Arc<StateStore>,
        coordinator: Arc<Coordinator>,
        outputs_at_last: Vec<Position>,
    ) -> std::io::Result<BackgroundWriter> {
        let (jobs, queue) = std::sync::mpsc::channel::<Ready>();
        let busy = Arc::new(AtomicU64::new(0));
        let done = Arc::clone(&busy);
        std::thread::Builder::new()
            .name("kairos-checkpoint".into())
            .spawn(move || {
                let mut outputs_at_last = outputs_at_last;
                for ready in queue {
                    // On failure nothing is lost: the same checkpoint is tried again.
                    while let Err(error) = write(&ready, &mut outputs_at_last, &sink, &store) {
                        metrics::counter!(telemetry::CHECKPOINT_ERRORS).increment(1);
                        tracing::error!(%error, "checkpoint not written; retrying");
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    done.store(0, Ordering::SeqCst);
                    coordinator.complete(ready.at);
                }
            })?;
        Ok(BackgroundWriter { jobs, busy })
    }

    /// Whether a checkpoint is being written.
    pub fn busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst) != 0
    }

    /// Writes `ready` in the background; the coordinator hears when it is durable.
    pub fn submit(&self, ready: Ready) {
        self.busy.store(ready.at.max(1), Ordering::SeqCst);
        if self.jobs.send(ready).is_err() {
            self.busy.store(0, Ordering::SeqCst);
            tracing::error!("the checkpoint writer has stopped");
        }
    }
}

/// Why a checkpoint could not be written (it is retried).
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Flush(#[from] crate::sinks::kafka::SinkError),
    #[error(transparent)]
    Store(#[from] super::StateError),
}

/// Writes the checkpoint: flushes the outputs (everything decided before its instant is
/// delivered), then one batch with the states, the waiting events, the input positions and
/// the output ends.
fn write(
    ready: &Ready,
    outputs_at_last: &mut Vec<Position>,
    sink: &KafkaSink,
    store: &StateStore,
) -> Result<(), WriteError> {
    let started = Instant::now();
    sink.flush(Duration::from_secs(30))?;
    let outputs = sink.ends();
    let meta = CheckpointMeta {
        at: ready.at,
        inputs: ready.inputs.clone(),
        outputs: outputs.clone(),
        scan_from: outputs_at_last.clone(),
    };
    let checkpoint = CheckpointWrite {
        meta,
        subscribers: ready.subscribers.iter().map(|(m, s)| (*m, s)).collect(),
        waiting: &ready.waiting,
    };
    store.write(&checkpoint)?;
    telemetry::checkpoint_written(started.elapsed().as_secs_f64(), ready.subscribers.len());
    let (keys, bytes) = store.size();
    metrics::gauge!(telemetry::STORE_KEYS).set(keys as f64);
    metrics::gauge!(telemetry::STORE_BYTES).set(bytes as f64);
    *outputs_at_last = outputs;
    Ok(())
}
