//! The checkpoint writer: gathers what the subscriber operators emit for a checkpoint and,
//! once the checkpoint is consistent, makes it durable in one write, on a thread of its own.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kairos_dataflows::checkpoint::StateRecord;
use kairos_dataflows::state::SubscriberState;
use kairos_model::{Event, Millis, Msisdn};

use super::coordinator::Coordinator;
use super::inheritance::Inheritance;
use super::{CheckpointMeta, CheckpointWrite, Position, StateStore};
use crate::rules::history::RulesHistory;
use crate::sinks::kafka::KafkaSink;
use crate::telemetry;

/// Accumulates checkpoint records until a checkpoint can be written.
pub struct CheckpointWriter {
    workers: usize,
    /// Changed states not yet written (a later record of the same subscriber wins); `None`
    /// for a state forgotten since.
    subscribers: BTreeMap<Msisdn, Option<SubscriberState>>,
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
                self.subscribers.insert(msisdn, state.map(|s| *s));
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
    subscribers: BTreeMap<Msisdn, Option<SubscriberState>>,
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
    /// Why no checkpoint can be written any more, once that is so.
    failure: Arc<Mutex<Option<WriterFailure>>>,
}

/// Why the checkpoint writer stopped: the engine must not go on without checkpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriterFailure {
    /// A record was not delivered (or the producer failed): the state is ahead of what was
    /// delivered. A restart from the last checkpoint re-decides and re-produces it.
    Delivery(String),
    /// The state store refused the write [`STORE_ATTEMPTS`] times (a full disk, a broken
    /// volume): retrying forever while the engine keeps producing would only grow what a
    /// restart must redo; the engine stops with the error instead.
    Store(String),
}

/// How many times one checkpoint's write to the state store is tried before the engine
/// stops (with [`STORE_RETRY`] between tries: about 30 s, time for a log rotation or a
/// compaction to free the disk).
pub const STORE_ATTEMPTS: u32 = 15;
const STORE_RETRY: Duration = Duration::from_secs(2);
/// How long to wait between flushes that time out (the brokers are away; nothing failed).
const FLUSH_RETRY: Duration = Duration::from_millis(500);

impl BackgroundWriter {
    /// Starts the writer thread; `outputs_at_last` is where the outputs ended when the engine
    /// started, `inheritance` what a restart inherits from the process before it (its
    /// checkpoints recall from the restored `scan_from` until they pass it); each checkpoint
    /// records the rules of `rules` from its instant on.
    pub fn start(
        sink: Arc<KafkaSink>,
        store: Arc<StateStore>,
        coordinator: Arc<Coordinator>,
        (outputs_at_last, inheritance): (Vec<Position>, Option<Arc<Inheritance>>),
        rules: Arc<RulesHistory>,
    ) -> std::io::Result<BackgroundWriter> {
        let (jobs, queue) = std::sync::mpsc::channel::<Ready>();
        let busy = Arc::new(AtomicU64::new(0));
        let failure = Arc::new(Mutex::new(None));
        let done = Arc::clone(&busy);
        let failed = Arc::clone(&failure);
        std::thread::Builder::new()
            .name("kairos-checkpoint".into())
            .spawn(move || {
                let mut outputs = Recall {
                    at_last: outputs_at_last,
                    inheritance,
                };
                for ready in queue {
                    match write_until_done(&ready, &mut outputs, &sink, &store, &rules) {
                        Ok(()) => {
                            done.store(0, Ordering::SeqCst);
                            coordinator.complete(ready.at);
                        }
                        Err(failure) => {
                            tracing::error!(?failure, "no more checkpoints: the engine stops");
                            *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(failure);
                            coordinator.abandon();
                            return;
                        }
                    }
                }
            })?;
        Ok(BackgroundWriter { jobs, busy, failure })
    }

    /// Whether a checkpoint is being written.
    pub fn busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst) != 0
    }

    /// Why no checkpoint can be written any more, once that is so.
    pub fn failure(&self) -> Option<WriterFailure> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Writes `ready` in the background; the coordinator hears when it is durable.
    pub fn submit(&self, ready: Ready) {
        self.busy.store(ready.at.max(1), Ordering::SeqCst);
        if self.jobs.send(ready).is_err() {
            self.busy.store(0, Ordering::SeqCst);
            tracing::debug!("the checkpoint writer has stopped");
        }
    }
}

/// Writes one checkpoint: a flush that times out is tried again for as long as it takes
/// (the brokers are away, and nothing is lost while the records wait), a failed delivery
/// ends the writer at once, a store that refuses the write ends it after [`STORE_ATTEMPTS`].
fn write_until_done(
    ready: &Ready,
    outputs: &mut Recall,
    sink: &KafkaSink,
    store: &StateStore,
    rules: &RulesHistory,
) -> Result<(), WriterFailure> {
    let mut store_failures = 0;
    loop {
        match write(ready, outputs, sink, store, rules) {
            Ok(()) => return Ok(()),
            Err(WriteError::Delivery(reason)) => return Err(WriterFailure::Delivery(reason)),
            Err(WriteError::Flush(error)) => {
                metrics::counter!(telemetry::CHECKPOINT_ERRORS).increment(1);
                tracing::warn!(%error, "checkpoint waits for the outputs to be delivered");
                std::thread::sleep(FLUSH_RETRY);
            }
            Err(WriteError::Store(error)) => {
                metrics::counter!(telemetry::CHECKPOINT_ERRORS).increment(1);
                store_failures += 1;
                if store_failures >= STORE_ATTEMPTS {
                    return Err(WriterFailure::Store(format!(
                        "the state store refused the checkpoint {store_failures} times; last: {error}"
                    )));
                }
                tracing::error!(%error, attempt = store_failures, "checkpoint not written; retrying");
                std::thread::sleep(STORE_RETRY);
            }
        }
    }
}

/// Why a checkpoint could not be written.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Flush(#[from] crate::sinks::kafka::SinkError),
    #[error("{0}")]
    Delivery(String),
    #[error(transparent)]
    Store(#[from] super::StateError),
}

/// Writes the checkpoint: flushes the outputs (everything decided before its instant is
/// delivered), then one batch with the states, the waiting events, the input positions and
/// the output ends.
fn write(
    ready: &Ready,
    recall: &mut Recall,
    sink: &KafkaSink,
    store: &StateStore,
    rules: &RulesHistory,
) -> Result<(), WriteError> {
    let started = Instant::now();
    sink.flush(Duration::from_secs(30))?;
    // Every record handed over before the flush has its delivery report now: one that
    // failed means this checkpoint would record as sent what never arrived.
    if let Some(reason) = sink.failure() {
        return Err(WriteError::Delivery(reason));
    }
    let outputs = sink.ends();
    let meta = CheckpointMeta {
        at: ready.at,
        inputs: ready.inputs.clone(),
        outputs: outputs.clone(),
        scan_from: recall.scan_from(ready),
    };
    let checkpoint = CheckpointWrite {
        meta,
        subscribers: ready.subscribers.iter().map(|(m, s)| (*m, s.as_ref())).collect(),
        waiting: &ready.waiting,
        rules: Some(rules.record_at(ready.at)),
    };
    store.write(&checkpoint)?;
    telemetry::checkpoint_written(started.elapsed().as_secs_f64(), ready.subscribers.len());
    let (keys, bytes) = store.size();
    metrics::gauge!(telemetry::STORE_KEYS).set(keys as f64);
    metrics::gauge!(telemetry::STORE_BYTES).set(bytes as f64);
    recall.at_last = outputs;
    Ok(())
}

/// Where a restart from the next checkpoint reads the outputs back from.
struct Recall {
    /// The outputs' end at the last checkpoint written (or when the engine started).
    at_last: Vec<Position>,
    /// What the process before this one may have decided, until a checkpoint passes it.
    inheritance: Option<Arc<Inheritance>>,
}

impl Recall {
    /// The `scan_from` of the checkpoint `ready`: the end at the last checkpoint, or the
    /// restored one while the inheritance is not settled.
    fn scan_from(&mut self, ready: &Ready) -> Vec<Position> {
        if let Some(inheritance) = &self.inheritance {
            if !inheritance.settled_by(ready.at, &ready.inputs) {
                return inheritance.scan_from().to_vec();
            }
            tracing::info!(
                at = %kairos_model::time::format_rfc3339(ready.at),
                "checkpoints have passed what the process before this one could have decided: \
                 they recall from this process's own outputs on"
            );
            self.inheritance = None;
        }
        self.at_last.clone()
    }
}
