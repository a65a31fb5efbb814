//! `kairos run`: Kafka in, Kafka out, state made durable in RocksDB at checkpoints and
//! resumed from the last one at start.
//!
//! [`run`] serves the admin routes and opens the state store once, then runs the engine from
//! its last checkpoint ([`run_from_checkpoint`]) — again, within the process, after a
//! failure that a restart from the last checkpoint repairs: a record the brokers did not
//! take, or brokers that cannot be reached at start ([`RunError::restart_reason`]).
//!
//! [`run_from_checkpoint`] prepares what every worker shares — the rules in force, the restored state, the
//! sink (after reading back what a previous run produced), the input partitions, the
//! checkpoint coordinator and writer — then starts the timely workers, each a [`RunWorker`]:
//! a loop that polls its partitions, looks for rule changes, advances its epoch through the
//! coordinator, and stops at a final checkpoint.

// Errors here happen once, at start (librdkafka's `KafkaError` makes them large); returning
// them by value keeps the call sites plain.
#![allow(clippy::result_large_err)]

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kairos_dataflows::checkpoint::{CheckpointRequests, Durability};
use kairos_dataflows::households::HouseholdConfig;
use kairos_dataflows::{subscriber_worker, DataflowStats};
use kairos_model::{Event, Millis, RuleSet};
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::worker::Worker;

use super::{enter, finish, EventInput, RulesError, RulesInput};
use crate::admin::{AdminError, Health};
use crate::config::RunConfig;
use crate::ingest::kafka::{
    list_partitions, start_positions, FrontierRules, KafkaIngestError, PartitionIngest, SharedFrontier,
};
use crate::ingest::login::{check_login, LoginError};
use crate::ingest::range::Range;
use crate::ingest::Received;
use crate::rules::history::{Folder, NoRules, Pending, RulesAt, RulesHistory, StartRules};
use crate::rules::publish::{PublishError, PublishedRules};
use crate::rules::watch::{Change, RulesWatcher};
use crate::sinks::kafka::{sink_and_checkpoint, KafkaSink, Outputs, SinkError};
use crate::state::coordinator::Coordinator;
use crate::state::inheritance::Inheritance;
use crate::state::writer::{BackgroundWriter, CheckpointWriter, WriterFailure};
use crate::state::{CheckpointMeta, CheckpointWrite, StateError, StateStore};
use crate::telemetry::{self, IngestTally};

/// How long a stopping engine waits for its final checkpoint before it leaves without it.
const FINAL_CHECKPOINT_PATIENCE: Duration = Duration::from_secs(30);

/// Why `kairos run` could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error(transparent)]
    RulesTopic(#[from] PublishError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Ingest(#[from] KafkaIngestError),
    #[error(transparent)]
    Login(#[from] LoginError),
    #[error("cannot start the checkpoint writer: {0}")]
    Writer(std::io::Error),
    #[error("cannot start the workers: {0}")]
    Workers(String),
    #[error("a worker failed: {0}")]
    Worker(String),
    #[error("delivery failed: {0}")]
    Delivery(String),
    #[error("cannot write checkpoints: {0}")]
    Checkpoint(String),
}

impl RunError {
    /// Why a restart from the last checkpoint, within the process, repairs this failure
    /// (the `reason` label of `kairos_engine_restarts_total`); `None` when it cannot (a
    /// wrong configuration, a missing topic, a broken state store: the process exits with
    /// the error, for a person to fix).
    pub fn restart_reason(&self) -> Option<&'static str> {
        match self {
            // The state is ahead of what was delivered: re-decide from the checkpoint.
            RunError::Delivery(_) => Some("delivery"),
            // The brokers are away or slow: try again once they may be back.
            RunError::Sink(SinkError::Missing { .. }) => None,
            RunError::Sink(_) => Some("kafka"),
            RunError::Ingest(KafkaIngestError::Missing { .. }) => None,
            RunError::Ingest(_) => Some("kafka"),
            RunError::RulesTopic(
                PublishError::Client { .. } | PublishError::Read { .. } | PublishError::TimedOut(_),
            ) => Some("kafka"),
            // Unreachable brokers may come back; a refused login will not until someone
            // changes the configuration.
            RunError::Login(LoginError::Unreachable { .. }) => Some("kafka"),
            _ => None,
        }
    }
}

/// Waiting events are counted per bucket of event time: an instant `t` counts in the bucket
/// ending at `t | WAITING_BUCKET_MS` (1,024 ms wide).
const WAITING_BUCKET_MS: Millis = 1023;

/// The first wait before a restart, doubled after each restart that follows soon, up to
/// [`RESTART_MAX_WAIT`]; a run that lasted [`HEALTHY_RUN`] starts the doubling over.
const RESTART_FIRST_WAIT: Duration = Duration::from_secs(1);
const RESTART_MAX_WAIT: Duration = Duration::from_secs(30);
const HEALTHY_RUN: Duration = Duration::from_secs(120);

/// Runs the engine until `shutdown` is set, or, with a bounded `range`, until every input
/// partition has been read to the range's end and everything before it decided; either way
/// it leaves after a final checkpoint. A failure that a restart repairs restarts the engine
/// from its last checkpoint, after a wait (1 s, doubling to 30 s while failures follow each
/// other), for as long as it takes; `/healthz` answers throughout, `/readyz` says why it
/// is not ready.
pub fn run(config: &RunConfig, range: &Range, shutdown: Arc<AtomicBool>) -> Result<(), RunError> {
    // Served first, so that /healthz answers while the state loads.
    let health = telemetry::serve(config.metrics.listen, config.engine.workers)?;
    let store = Arc::new(StateStore::open(&config.state.dir)?);
    let mut wait = RESTART_FIRST_WAIT;
    loop {
        let started = Instant::now();
        let error = match run_from_checkpoint(config, range, &shutdown, &health, &store) {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        let Some(reason) = error.restart_reason() else {
            return Err(error);
        };
        if shutdown.load(Ordering::Relaxed) {
            return Err(error);
        }
        if started.elapsed() >= HEALTHY_RUN {
            wait = RESTART_FIRST_WAIT;
        }
        metrics::counter!(telemetry::ENGINE_RESTARTS, "reason" => reason).increment(1);
        tracing::error!(%error, reason, wait_ms = wait.as_millis() as u64, "kairos run: restarting from the last checkpoint");
        health.set_restarting(&error.to_string());
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if shutdown.load(Ordering::Relaxed) {
                // Nothing to write: the last checkpoint is where the next start resumes.
                tracing::info!("kairos run: stopped while waiting to restart");
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        wait = (wait * 2).min(RESTART_MAX_WAIT);
    }
}

/// One run of the engine from the store's last checkpoint (see [`run`]).
fn run_from_checkpoint(
    config: &RunConfig,
    range: &Range,
    shutdown: &Arc<AtomicBool>,
    health: &Arc<Health>,
    store: &Arc<StateStore>,
) -> Result<(), RunError> {
    // Before any other client: a refused login says so (see `ingest/login.rs`).
    check_login(&config.kafka)?;
    let workers = config.engine.workers;
    let loading = Instant::now();
    let restored = store.load()?;
    let quarantined = restored.as_ref().map_or(0, |r| r.quarantined);
    let load_ms = loading.elapsed().as_millis() as u64;
    let restored_at = restored.as_ref().map_or(0, |r| r.meta.at);
    // The rules the checkpoint recorded, or the folder's (see `rules/history.rs`).
    let mut start = StartRules::resolve(
        Folder::read(&config.engine.rules),
        restored.as_ref().and_then(|r| r.rules.as_ref()),
        restored_at,
    )
    .map_err(|NoRules(errors)| RulesError::new(&config.engine.rules, &errors))?;
    // With a rules topic, the newest published set is in force from the start — or, when
    // it names a later event time than the state resumes from, from then on.
    let published = match &config.engine.rules_topic {
        None => None,
        Some(topic) => {
            let follower = PublishedRules::follow(&config.kafka, topic)?;
            if let Some(latest) = follower.latest()? {
                let (set, at) = latest.rules()?;
                let pending = Pending {
                    at,
                    set,
                    version: latest.version,
                    files: latest.files,
                    recorded: false,
                };
                start.published(pending, restored_at);
            }
            Some(follower)
        }
    };
    for note in &start.notes {
        tracing::warn!("{note}");
    }
    if let Some((version, problems)) = &start.folder_rejected {
        refuse_rules(version, problems);
    }
    health.set_restored();
    let mut sink = KafkaSink::new(&config.kafka, config.topics.clone())?;
    let recalled = sink.recall(restored.as_ref().map(|r| r.meta.scan_from.as_slice()))?;
    health.set_recalled();
    let sink = Arc::new(sink);
    let partitions = list_partitions(&config.kafka)?;
    // A process killed after the restored checkpoint may have decided past it: until this
    // one's checkpoints pass what it could have decided, they recall from the restored
    // `scan_from` (see `crate::state::inheritance`).
    let inheritance = restored.as_ref().map(|restored| {
        let waiting_through = restored.waiting.iter().map(|e| e.ts).max().unwrap_or(0);
        Arc::new(Inheritance::new(
            restored.meta.scan_from.clone(),
            waiting_through,
            &partitions,
        ))
    });

    let first_start = restored.is_none();
    let (resume, waiting, shards, subscribers, erased) = match restored {
        Some(restored) => {
            let mut shards = vec![Vec::new(); workers];
            let subscribers = restored.subscribers.len();
            for (msisdn, state) in restored.subscribers {
                shards[subscriber_worker(msisdn, workers)].push((msisdn, state));
            }
            let resume: HashMap<(String, i32), i64> = restored
                .meta
                .inputs
                .iter()
                .map(|(t, p, o)| ((t.clone(), *p), *o))
                .collect();
            (resume, restored.waiting, shards, subscribers, restored.erased)
        }
        None => (
            HashMap::new(),
            Vec::new(),
            vec![Vec::new(); workers],
            0,
            Default::default(),
        ),
    };
    // What each checkpoint records: the set in force now, then the sets still to come that
    // a checkpoint recorded (until they take force again, a later checkpoint must keep them).
    let history = Arc::new(RulesHistory::new(
        RulesAt {
            at: restored_at,
            version: start.version.clone(),
            files: start.files.clone(),
        },
        start.queue.iter().filter(|p| p.recorded).map(|p| RulesAt {
            at: p.at,
            version: p.version.clone(),
            files: p.files.clone(),
        }),
    ));
    // A first start records where it begins before it produces anything: a process killed
    // before its first checkpoint restarts from this record, so it reads back — and does
    // not produce again — everything that process produced.
    let resume = if first_start {
        let resume = start_positions(&config.kafka, &partitions, range)?;
        let ends = sink.ends();
        store.write(&CheckpointWrite {
            meta: CheckpointMeta {
                at: 0,
                inputs: resume.iter().map(|((t, p), o)| (t.clone(), *p, *o)).collect(),
                outputs: ends.clone(),
                scan_from: ends,
            },
            subscribers: Vec::new(),
            waiting: &[],
            rules: Some(history.record_at(0)),
        })?;
        resume
    } else {
        resume
    };
    let rules = Arc::new(std::mem::take(&mut start.in_force));
    let rules_version = start.version.clone();
    metrics::gauge!(telemetry::RESTORED_SUBSCRIBERS).set(subscribers as f64);
    telemetry::rules_in_force(None, &rules_version, rules.rules.len());
    // A rules topic replaces the folder watch.
    let rules_poll = match config.engine.rules_topic {
        Some(_) => Duration::ZERO,
        None => Duration::from_millis(config.engine.rules_poll_ms),
    };
    tracing::info!(
        partitions = partitions.len(),
        workers,
        rules = rules.rules.len(),
        rules_version,
        brokers = %config.kafka.brokers,
        metrics = %config.metrics.listen,
        state = %config.state.dir.display(),
        restored_subscribers = subscribers,
        quarantined_states = quarantined,
        restored_at = %kairos_model::time::format_rfc3339(restored_at),
        recalled_outputs = recalled,
        load_ms,
        "kairos run: starting"
    );
    let requests = Arc::new(CheckpointRequests::default());
    let coordinator = Arc::new(Coordinator::new(
        workers,
        Arc::clone(&requests),
        Duration::from_millis(config.state.checkpoint_interval_ms),
    ));
    let background = Arc::new(
        BackgroundWriter::start(
            Arc::clone(&sink),
            Arc::clone(store),
            Arc::clone(&coordinator),
            (sink.ends(), inheritance.clone()),
            Arc::clone(&history),
        )
        .map_err(RunError::Writer)?,
    );
    let shared = Arc::new(Shared {
        workers,
        rules,
        rules_version,
        rules_dir: config.engine.rules.clone(),
        rules_poll,
        folder: (start.folder_version.clone(), start.folder_rejected.map(|(v, _)| v)),
        published: Mutex::new((published, std::mem::take(&mut start.queue))),
        history,
        durability: Durability {
            requests,
            restored: Arc::new(Mutex::new(shards)),
            restored_at,
            erased: Arc::new(erased),
        },
        outputs: Outputs {
            sink: Arc::clone(&sink),
            coordinator: Arc::clone(&coordinator),
            writer: Arc::new(Mutex::new(CheckpointWriter::new(workers))),
            background,
        },
        waiting: Mutex::new(Some(waiting)),
        resume,
        inheritance,
        partitions,
        frontier_rules: FrontierRules {
            shared: Arc::new(SharedFrontier::new(workers)),
            lateness: config.engine.allowed_lateness_ms,
            idle_after: Duration::from_millis(config.engine.idle_after_ms),
            max_future: config.engine.max_future_ms,
        },
        stats: Arc::new(DataflowStats::default()),
        kafka: config.kafka.clone(),
        range: range.clone(),
        households: config.households.clone(),
        retention: kairos_dataflows::Retention {
            forget_non_customers_after_ms: config.engine.forget_non_customers_after_ms,
        },
        max_waiting_events: config.engine.max_waiting_events,
        through: AtomicUsize::new(0),
        shutdown: Arc::clone(shutdown),
        health: Arc::clone(health),
    });
    let writer = Arc::clone(&shared.outputs.background);

    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        RunWorker::start(worker, Arc::clone(&shared)).map(|run| run.drive(worker))
    })
    .map_err(RunError::Workers)?;
    let mut failure = None;
    for result in guards.join() {
        match result {
            Err(panicked) => {
                failure.get_or_insert(RunError::Worker(panicked));
            }
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Ok(Ok(())) => {}
        }
    }
    // A failed delivery or checkpoint outranks what the workers said as they left.
    if let Some(reason) = sink.failure() {
        // Nothing still queued may land after the next start has read the outputs back.
        sink.purge();
        return Err(RunError::Delivery(reason));
    }
    match writer.failure() {
        Some(WriterFailure::Delivery(reason)) => {
            sink.purge();
            return Err(RunError::Delivery(reason));
        }
        Some(WriterFailure::Store(reason)) => return Err(RunError::Checkpoint(reason)),
        None => {}
    }
    sink.flush(Duration::from_secs(30))?;
    if let Some(e) = failure {
        return Err(e);
    }
    tracing::info!(
        final_checkpoint = coordinator.finished(),
        bounded = range.bounded(),
        "kairos run: stopped"
    );
    Ok(())
}

/// What every worker of the run shares.
struct Shared {
    workers: usize,
    /// The rules in force at the restored instant, and their version.
    rules: Arc<RuleSet>,
    rules_version: String,
    rules_dir: std::path::PathBuf,
    /// How often worker 0 looks at the rules folder; zero with a rules topic.
    rules_poll: Duration,
    /// Worker 0 takes these: the rules topic's follower and a set waiting for its instant.
    published: Mutex<(Option<PublishedRules>, VecDeque<Pending>)>,
    /// The folder's version at start, and that version again when it was refused there.
    folder: (String, Option<String>),
    /// The sets put in force, for the checkpoints.
    history: Arc<RulesHistory>,
    durability: Durability,
    outputs: Outputs,
    /// The events that waited at the restored checkpoint; worker 0 sends them again.
    waiting: Mutex<Option<Vec<Event>>>,
    resume: HashMap<(String, i32), i64>,
    /// After a restart: what the killed process may have decided.
    inheritance: Option<Arc<Inheritance>>,
    partitions: Vec<(String, i32)>,
    frontier_rules: FrontierRules,
    stats: Arc<DataflowStats>,
    kafka: crate::config::KafkaConfig,
    range: Range,
    households: HouseholdConfig,
    retention: kairos_dataflows::Retention,
    max_waiting_events: u64,
    /// Workers whose partitions are all read to the end of a bounded range.
    through: AtomicUsize,
    shutdown: Arc<AtomicBool>,
    health: Arc<Health>,
}

/// Where rule changes come from, on worker 0: the rules folder, or the rules topic.
struct RuleFeed {
    watcher: Option<RulesWatcher>,
    follower: Option<PublishedRules>,
    /// Checked sets waiting for their instants, in order.
    switch: VecDeque<Pending>,
    history: Arc<RulesHistory>,
    in_force: Arc<RuleSet>,
    /// The version of the set in force.
    version: String,
}

impl RuleFeed {
    fn new(shared: &Shared, index: usize) -> RuleFeed {
        let watch = index == 0 && !shared.rules_poll.is_zero();
        let (follower, switch) = if index == 0 {
            std::mem::take(&mut *shared.published.lock().unwrap_or_else(|p| p.into_inner()))
        } else {
            (None, VecDeque::new())
        };
        let (folder, rejected) = shared.folder.clone();
        RuleFeed {
            watcher: watch.then(|| RulesWatcher::resume(&shared.rules_dir, shared.rules_poll, &folder, rejected)),
            follower,
            switch,
            history: Arc::clone(&shared.history),
            in_force: Arc::clone(&shared.rules),
            version: shared.rules_version.clone(),
        }
    }

    /// Looks for a new set in the folder or on the topic; a valid one waits for its
    /// instant, an invalid one is refused.
    fn look(&mut self, stopping: bool) {
        // A stopping engine takes no new rules from the folder (the next start reads it).
        if let Some(change) = self.watcher.as_mut().filter(|_| !stopping).and_then(RulesWatcher::look) {
            match change {
                Change::Valid { rules, version, files } => self.switch.push_back(Pending {
                    at: 0,
                    set: *rules,
                    version,
                    files,
                    recorded: false,
                }),
                Change::Invalid { version, problems } => refuse_rules(&version, &problems),
            }
        }
        if let Some(record) = self.follower.as_ref().and_then(|f| f.poll(Duration::ZERO)) {
            match record.and_then(|p| p.rules().map(|(set, at)| (at, set, p))) {
                Ok((at, set, published)) => {
                    // The newest record wins over one not yet in force (as the compacted
                    // topic does); the sets a checkpoint recorded stay.
                    self.switch.retain(|p| p.recorded);
                    self.switch.push_back(Pending {
                        at,
                        set,
                        version: published.version,
                        files: published.files,
                        recorded: false,
                    });
                }
                Err(problem) => refuse_rules("published", &[problem.to_string()]),
            }
        }
    }

    /// Puts a waiting set in force once the worker's `epoch` reaches its instant (at once if
    /// event time is already past it), at that instant of the rules input.
    fn switch_at(&mut self, epoch: Millis, rules_input: &mut RulesInput) {
        while self.switch.front().is_some_and(|p| epoch >= p.at) {
            let Some(Pending {
                at,
                set,
                version,
                files,
                ..
            }) = self.switch.pop_front()
            else {
                break;
            };
            let at = at.max(*rules_input.time());
            if at > *rules_input.time() {
                rules_input.advance_to(at);
            }
            let shown = kairos_model::time::format_rfc3339(*rules_input.time());
            let (added, changed, removed) = crate::rules::watch::changes(&self.in_force, &set);
            tracing::info!(
                version,
                at = shown,
                rules = set.rules.len(),
                ?added,
                ?changed,
                ?removed,
                "rules changed: the new set is in force from this event time on"
            );
            metrics::counter!(telemetry::RULE_CHANGES).increment(1);
            telemetry::rules_in_force(Some(&self.version), &version, set.rules.len());
            self.history.switched(at, &version, &files);
            self.version = version;
            self.in_force = Arc::new(set.clone());
            rules_input.send(set);
        }
    }
}

/// Logs and counts a changed rule set that does not check: the running set stays.
fn refuse_rules(version: &str, problems: &[String]) {
    metrics::counter!(telemetry::RULE_REJECTIONS).increment(1);
    tracing::error!(
        version,
        problems = problems.len(),
        first = problems.first().map(String::as_str).unwrap_or(""),
        "rules changed but do not check: the running set stays in force"
    );
    for problem in problems {
        tracing::error!("invalid rules: {problem}");
    }
}

/// One timely worker of the run: its inputs into the dataflow, its Kafka partitions, and
/// where it is in stopping.
struct RunWorker {
    index: usize,
    shared: Arc<Shared>,
    input: EventInput,
    rules_input: RulesInput,
    probe: ProbeHandle<Millis>,
    dataflow: usize,
    ingest: PartitionIngest,
    rules: RuleFeed,
    tally: IngestTally,
    /// Events read and not yet decided, by the instant they are decided at (`max(ts, epoch)`).
    waiting: std::collections::BTreeMap<Millis, u64>,
    waiting_total: u64,
    /// This worker's share of `[engine] max_waiting_events`.
    waiting_bound: u64,
    /// When reaching the bound was last logged (at most every 10 s).
    last_bound_log: Option<Instant>,
    /// Set once this worker reads no more input; it then waits for the final checkpoint.
    stopping: Option<Instant>,
    through_range: bool,
    last_report: Instant,
}

impl RunWorker {
    /// Builds the dataflow and assigns the worker its partitions. Every worker builds the
    /// dataflow before anything can fail, so that a worker that fails still takes part in
    /// shutting it down.
    fn start(worker: &mut Worker, shared: Arc<Shared>) -> Result<RunWorker, RunError> {
        let index = worker.index();
        let mut input: EventInput = InputHandle::new();
        let mut rules_input: RulesInput = InputHandle::new();
        let probe = ProbeHandle::new();
        let dataflow = worker.next_dataflow_index();
        worker.dataflow::<Millis, _, _>(|scope| {
            let outputs = kairos_dataflows::decisions(
                input.to_stream(scope),
                Arc::clone(&shared.rules),
                Some(rules_input.to_stream(scope)),
                Arc::clone(&shared.stats),
                Some(shared.durability.clone()),
                &shared.households,
                shared.retention,
                kairos_dataflows::Observe::default(),
            );
            sink_and_checkpoint(outputs.decisions, outputs.state, &probe, shared.outputs.clone(), index);
        });
        let restored_at = shared.durability.restored_at;
        input.advance_to(restored_at);
        rules_input.advance_to(restored_at);
        if index == 0 {
            let waiting = shared.waiting.lock().unwrap_or_else(|p| p.into_inner()).take();
            for event in waiting.unwrap_or_default() {
                input.send(event);
            }
        }
        let assigned = PartitionIngest::assign(
            &shared.kafka,
            &shared.partitions,
            (index, shared.workers),
            shared.frontier_rules.clone(),
            &shared.resume,
            shared.inheritance.clone(),
            &shared.range,
        );
        let ingest = match assigned {
            Ok(ingest) => ingest,
            Err(error) => {
                shared.shutdown.store(true, Ordering::Relaxed);
                shared.outputs.coordinator.abandon();
                drop(rules_input);
                finish(worker, input, &probe);
                return Err(error.into());
            }
        };
        tracing::info!(worker = index, partitions = ingest.owned(), "worker assigned");
        let waiting_bound = (shared.max_waiting_events / shared.workers as u64).max(1);
        shared.health.set_assigned();
        Ok(RunWorker {
            index,
            rules: RuleFeed::new(&shared, index),
            shared,
            input,
            rules_input,
            probe,
            dataflow,
            ingest,
            tally: IngestTally::default(),
            waiting: Default::default(),
            waiting_total: 0,
            waiting_bound,
            last_bound_log: None,
            stopping: None,
            through_range: false,
            last_report: Instant::now(),
        })
    }

    fn coordinator(&self) -> &Coordinator {
        &self.shared.outputs.coordinator
    }

    /// A record was not delivered, or the checkpoint writer stopped.
    fn failed(&self) -> bool {
        self.shared.outputs.sink.failed() || self.shared.outputs.background.failure().is_some()
    }

    /// The worker's loop, until the final checkpoint is written (or abandoned).
    fn drive(mut self, worker: &mut Worker) {
        while !self.coordinator().finished() && !self.coordinator().abandoned() {
            if self.stopping.is_none() && self.shared.shutdown.load(Ordering::Relaxed) {
                self.stop();
            }
            let read = self.read();
            self.rules.look(self.stopping.is_some());
            if self.index == 0 {
                // No checkpoint can be written: leave, to start again from the last (a
                // failure of the checkpoint writer abandons the coordinator itself).
                if self.shared.outputs.sink.failed() {
                    self.coordinator().abandon();
                }
                self.coordinator().drive();
                if self
                    .stopping
                    .is_some_and(|since| since.elapsed() >= FINAL_CHECKPOINT_PATIENCE)
                {
                    tracing::error!("no final checkpoint within {FINAL_CHECKPOINT_PATIENCE:?}; leaving without it");
                    self.coordinator().abandon();
                }
            }
            self.advance();
            self.stop_at_range_end();
            worker.step_or_park(Some(if read == 0 {
                Duration::from_millis(1)
            } else {
                Duration::ZERO
            }));
            if self.last_report.elapsed() >= Duration::from_secs(1) {
                self.last_report = Instant::now();
                self.report();
            }
        }
        self.tally.publish();
        if self.coordinator().finished() || self.failed() {
            // Everything read is in the final checkpoint: what still waits for event time
            // to pass it waits there, to be decided after a restart — not now, as if the
            // input had ended. After a failure, nothing since the last checkpoint counts:
            // the restart decides it again.
            worker.drop_dataflow(self.dataflow);
            drop((self.input, self.rules_input));
        } else {
            drop(self.rules_input);
            finish(worker, self.input, &self.probe);
        }
    }

    /// Stops reading; worker 0 then proposes the final checkpoint.
    fn stop(&mut self) {
        self.stopping = Some(Instant::now());
        self.coordinator().stop(self.index);
        self.shared.health.set_stopping();
    }

    /// Reads what the partitions have and sends it into the dataflow; returns how many
    /// messages were read.
    fn read(&mut self) -> usize {
        if self.stopping.is_some() {
            return 0;
        }
        self.drain_waiting();
        let ahead_of = self.at_waiting_bound();
        if ahead_of.is_some()
            && self
                .last_bound_log
                .is_none_or(|at| at.elapsed() >= Duration::from_secs(10))
        {
            self.last_bound_log = Some(Instant::now());
            tracing::info!(
                worker = self.index,
                waiting = self.waiting_total,
                paused = self.ingest.paused(ahead_of),
                "events waiting for the frontier at their bound: reading only the partitions that hold it back"
            );
        }
        let (input, tally, sink) = (&mut self.input, &mut self.tally, &self.shared.outputs.sink);
        let (waiting, total) = (&mut self.waiting, &mut self.waiting_total);
        let read = self.ingest.poll(1024, ahead_of, |received| {
            if let Received::Event(event) = &received {
                // Counted by the end of the bucket it is decided in: one entry per second of
                // event time rather than per instant, drained a little late, never early.
                let decided_at = event.ts.max(*input.time());
                *waiting.entry(decided_at | WAITING_BUCKET_MS).or_default() += 1;
                *total += 1;
            }
            enter(received, input, tally, |letter, key| {
                sink.dead_letter(&letter, key.as_deref())
            })
        });
        // What the killed process may have read too is decided at `max(ts, epoch)`; it may
        // have decided up to just past its newest event.
        if let (Some(newest), Some(inheritance)) = (self.ingest.take_inherited_newest(), &self.shared.inheritance) {
            inheritance.decided_at(newest.saturating_add(1).max(*self.input.time()));
        }
        read
    }

    /// Forgets the waiting events the dataflow has decided (those before its frontier).
    fn drain_waiting(&mut self) {
        let frontier = self.probe.with_frontier(|f| f.first().copied()).unwrap_or(Millis::MAX);
        while let Some(entry) = self.waiting.first_entry() {
            if *entry.key() >= frontier {
                break;
            }
            self.waiting_total -= entry.remove();
        }
    }

    /// The epoch, when this worker's waiting events are at their bound (see
    /// [`PartitionIngest::poll`]).
    fn at_waiting_bound(&self) -> Option<Millis> {
        (self.waiting_total >= self.waiting_bound).then(|| *self.input.time())
    }

    /// Moves the epoch as far as the partitions and the checkpoint coordinator allow, putting
    /// a waiting rule set in force on the way.
    fn advance(&mut self) {
        let now = *self.input.time();
        // A stopping worker stays where it is, except to reach the final checkpoint.
        let wanted = if self.stopping.is_some() {
            now
        } else {
            self.ingest.epoch()
        };
        let idle = self.stopping.is_some() || self.ingest.all_idle();
        let ingest = &self.ingest;
        let epoch = self
            .shared
            .outputs
            .coordinator
            .gate(self.index, now, wanted, idle, || ingest.positions());
        self.rules.switch_at(epoch, &mut self.rules_input);
        if epoch > now {
            self.input.advance_to(epoch);
            self.rules_input.advance_to(epoch);
        }
    }

    /// In a bounded run: once every worker is through the range and everything before the
    /// end of event time (just past the newest event read, as in a replay) is decided, stop.
    fn stop_at_range_end(&mut self) {
        if !self.shared.range.bounded() || self.stopping.is_some() {
            return;
        }
        // `epoch()` in `advance` published this worker's end before it counts as through.
        if !self.through_range && self.ingest.done() {
            self.through_range = true;
            self.shared.through.fetch_add(1, Ordering::SeqCst);
        }
        let end = self.shared.frontier_rules.shared.end();
        if self.shared.through.load(Ordering::SeqCst) == self.shared.workers
            && *self.input.time() >= end
            && !self.probe.less_than(&end)
        {
            self.stop();
        }
    }

    /// Publishes this worker's counters and gauges (once a second).
    fn report(&mut self) {
        self.tally.publish();
        let now = kairos_model::time::now();
        let paused = self.ingest.paused(self.at_waiting_bound());
        telemetry::worker_position(
            self.index,
            *self.input.time(),
            now,
            self.ingest.lag_seconds(now),
            (self.waiting_total, paused),
        );
        if self.index == 0 {
            telemetry::dataflow_stats(&self.shared.stats);
            metrics::gauge!(telemetry::SINK_QUEUE).set(f64::from(self.shared.outputs.sink.queue_depth()));
            let ready = self.shared.health.readiness().ready;
            metrics::gauge!(telemetry::READY).set(if ready { 1.0 } else { 0.0 });
        }
    }
}
