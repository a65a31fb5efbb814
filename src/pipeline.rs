//! pipeline: the one place where the stages are wired, for both modes.
//!
//! ```text
//!            replay                                run
//!  files ─▶ reader thread ─▶ chunks      Kafka partitions ─▶ PartitionIngest (per worker)
//!                 │ decode                          │ decode
//!                 ├──────── errors ─▶ dead letters ◀┤
//!                 ▼                                 ▼
//!        InputHandle at the chunk's epoch   InputHandle at the partitions' epoch
//!                 └──────────────┬──────────────────┘
//!                                ▼
//!              kairos_dataflows::decisions  (same dataflow, W workers)
//!                                ▼
//!          collected, sorted, written to DIR    KafkaSink: actions / decisions topics
//! ```
//!
//! Only the edges differ between `kairos replay` and `kairos run`; [`build_dataflow`] is
//! shared.

use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::TryRecvError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kairos_dataflows::checkpoint::{CheckpointRequests, Durability, StateRecord};
use kairos_dataflows::households::{HouseholdConfig, HouseholdView, ViewUpdate};
use kairos_dataflows::{subscriber_worker, DataflowStats};
use kairos_model::{Decision, Event, Millis, Msisdn, Origin, RuleSet};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::{Operator, OutputBuilderSession};
use timely::dataflow::operators::Probe;
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::worker::Worker;

use crate::config::RunConfig;
use crate::decode::decode;
use crate::ingest::files::{discover, spawn_reader, ChunkBoard};
use crate::ingest::kafka::{list_partitions, FrontierRules, PartitionIngest, Received, SharedFrontier};
use crate::ingest::range::Range;
use crate::ingest::{DeadLetter, SourcePosition};
use crate::rules::publish::PublishedRules;
use crate::rules::watch::{Change, RulesWatcher};
use crate::sinks::files::{write_replay_outputs, ReplaySummary};
use crate::sinks::kafka::KafkaSink;
use crate::state::coordinator::Coordinator;
use crate::state::writer::{BackgroundWriter, CheckpointWriter};
use crate::state::StateStore;
use crate::telemetry::{self, IngestTally};

/// The dataflow's input: events, sent at the worker's current epoch.
pub type EventInput = InputHandle<Millis, CapacityContainerBuilder<Vec<Event>>>;

/// Where live rule changes enter the dataflow, at the instant they take force.
type RulesInput = InputHandle<Millis, CapacityContainerBuilder<Vec<RuleSet>>>;

/// Builds the replay's dataflow on `worker`: an input of events, the decisions handed to
/// `deliver` and the household updates to `households` as they are made, and a probe that
/// tells when an epoch is fully decided (households included).
pub fn build_dataflow(
    worker: &mut Worker,
    rules: Arc<RuleSet>,
    stats: Arc<DataflowStats>,
    config: &HouseholdConfig,
    mut deliver: impl FnMut(&mut Vec<Decision>) + 'static,
    mut households: impl FnMut(&mut Vec<ViewUpdate>) + 'static,
) -> (EventInput, ProbeHandle<Millis>) {
    let mut input = InputHandle::new();
    let probe = ProbeHandle::new();
    worker.dataflow::<Millis, _, _>(|scope| {
        let outputs = kairos_dataflows::decisions(input.to_stream(scope), rules, None, stats, None, config);
        outputs
            .decisions
            .probe_with(&probe)
            .sink(Pipeline, "DecisionSink", move |(input, _frontier)| {
                input.for_each(|_stamp, decisions| deliver(decisions))
            });
        outputs
            .households
            .probe_with(&probe)
            .sink(Pipeline, "HouseholdSink", move |(input, _frontier)| {
                input.for_each(|_stamp, updates| households(updates))
            });
    });
    (input, probe)
}

/// Loads a rules folder, turning every problem into one line for the command line.
pub fn load_rules(dir: &Path) -> Result<Arc<RuleSet>, String> {
    crate::rules::load_dir(dir).map(Arc::new).map_err(|errors| {
        let first = errors.first().map(ToString::to_string).unwrap_or_default();
        match errors.len() {
            1 => format!("invalid rules: {first}"),
            n => format!(
                "invalid rules: {first} (and {} more; see `kairos rules check {}`)",
                n - 1,
                dir.display()
            ),
        }
    })
}

/// What `kairos replay` was asked to do.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub events: Vec<PathBuf>,
    pub out: PathBuf,
    pub rules: PathBuf,
    pub workers: usize,
    pub allowed_lateness_ms: Millis,
    pub households: HouseholdConfig,
    /// Where the reader counts what it has read, when progress is shown.
    pub progress: Option<crate::progress::Progress>,
}

struct WorkerOutput {
    decisions: Vec<Decision>,
    households: Vec<(Msisdn, HouseholdView)>,
    dead_letters: Vec<DeadLetter>,
    tally: IngestTally,
}

/// Runs a replay (contract §3) and writes its outputs.
pub fn replay(options: &ReplayOptions) -> Result<ReplaySummary, String> {
    if options.workers == 0 {
        return Err("--workers must be at least 1".into());
    }
    let rules = load_rules(&options.rules)?;
    let files = discover(&options.events)?;
    let names: Arc<Vec<String>> = Arc::new(files.iter().map(|p| p.display().to_string()).collect());
    let file_count = files.len();
    let started = Instant::now();
    let board = Arc::new(ChunkBoard::reporting_to(options.progress.clone()));
    let (receivers, reader) = spawn_reader(files, options.workers, Arc::clone(&board));
    let receivers = Arc::new(Mutex::new(receivers.into_iter().map(Some).collect::<Vec<_>>()));
    let stats = Arc::new(DataflowStats::default());
    let lateness = options.allowed_lateness_ms;
    let worker_stats = Arc::clone(&stats);
    let household_config = options.households.clone();
    let epochs: Arc<Vec<AtomicU64>> = Arc::new((0..options.workers).map(|_| AtomicU64::new(0)).collect());
    let slack = household_config
        .enabled
        .then(|| household_config.granularity_ms.saturating_mul(2));

    let guards = timely::execute(timely::Config::process(options.workers), move |worker| {
        let index = worker.index();
        let receiver = receivers.lock().unwrap_or_else(|p| p.into_inner())[index].take();
        let collected = Rc::new(RefCell::new(Vec::new()));
        let sink = Rc::clone(&collected);
        // Households as they stand, kept consolidated as the graph's updates arrive (the
        // history of every change would not fit in memory for a large world).
        let households: Rc<RefCell<HashMap<(Msisdn, HouseholdView), isize>>> = Rc::default();
        let household_sink = Rc::clone(&households);
        let (mut input, probe) = build_dataflow(
            worker,
            Arc::clone(&rules),
            Arc::clone(&worker_stats),
            &household_config,
            move |decisions| sink.borrow_mut().append(decisions),
            move |updates| {
                let mut current = household_sink.borrow_mut();
                for (msisdn, view, _, diff) in updates.drain(..) {
                    match current.entry((msisdn, view)) {
                        Entry::Occupied(mut count) => {
                            *count.get_mut() += diff;
                            if *count.get() == 0 {
                                count.remove();
                            }
                        }
                        Entry::Vacant(count) => {
                            count.insert(diff);
                        }
                    }
                }
            },
        );
        let mut tally = IngestTally::default();
        let mut dead_letters = Vec::new();
        let mut events = Vec::new();
        while let Some(receiver) = receiver.as_ref() {
            let chunk = match receiver.try_recv() {
                Ok(chunk) => chunk,
                Err(TryRecvError::Empty) => {
                    worker.step_or_park(Some(Duration::from_millis(1)));
                    continue;
                }
                Err(TryRecvError::Disconnected) => break,
            };
            let mut newest = None;
            for (line, bytes) in chunk.lines() {
                match decode(
                    bytes,
                    Origin {
                        source: chunk.file,
                        position: line,
                    },
                ) {
                    Ok(event) => {
                        newest = newest.max(Some(event.ts));
                        events.push(event);
                    }
                    Err(error) => {
                        tally.invalid += 1;
                        let source = SourcePosition::File {
                            file: names[chunk.file as usize].clone(),
                            line,
                        };
                        dead_letters.push(DeadLetter::new(source, error, bytes));
                    }
                }
            }
            board.publish(chunk.index, newest);
            let before = loop {
                match board.newest_before(chunk.index) {
                    Some(before) => break before,
                    None => {
                        worker.step_or_park(Some(Duration::from_millis(1)));
                    }
                }
            };
            let epoch = before.map_or(0, |t| t.saturating_sub(lateness));
            if epoch > *input.time() {
                input.advance_to(epoch);
            }
            let now = *input.time();
            for event in events.drain(..) {
                tally.event(event.kind(), event.ts < now);
                input.send(event);
            }
            worker.step();
            // Back-pressure: the reader outruns the household graph's steps; wait until what
            // every worker has sent is decided up to a little behind (never on a worker that
            // has sent less: it only lowers the floor), so events wait in the file, not in memory.
            epochs[index].store(now, Ordering::Relaxed);
            if let Some(slack) = slack {
                let least = epochs.iter().map(|e| e.load(Ordering::Relaxed)).min().unwrap_or(0);
                let floor = least.saturating_sub(slack);
                while probe.less_than(&floor) {
                    worker.step();
                }
            }
        }
        // Event time ends at the newest `ts` of the input (contract §3): decide everything
        // up to it, timers included; then close, and later timers do not fire.
        let newest = loop {
            match board.newest_overall() {
                Some(newest) => break newest,
                None => {
                    worker.step_or_park(Some(Duration::from_millis(1)));
                }
            }
        };
        let end = newest.map_or(0, |t| t.saturating_add(1));
        if end > *input.time() {
            input.advance_to(end);
        }
        while probe.less_than(&end) {
            worker.step();
        }
        // Everything the graph said before the end is in; what it says while the input
        // closes is about instants after the end of event time.
        let households: Vec<(Msisdn, HouseholdView)> = households
            .take()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, _)| k)
            .collect();
        finish(worker, input, &probe);
        let decisions = collected.take();
        WorkerOutput {
            decisions,
            households,
            dead_letters,
            tally,
        }
    })?;

    let mut decisions = Vec::new();
    let mut dead_letters = Vec::new();
    let mut tally = IngestTally::default();
    let mut households = Vec::new();
    for result in guards.join() {
        let output = result.map_err(|e| format!("a worker failed: {e}"))?;
        decisions.extend(output.decisions);
        households.extend(output.households);
        dead_letters.extend(output.dead_letters);
        tally.merge(&output.tally);
    }
    reader.join().map_err(|_| "the file reader panicked".to_string())??;
    let seconds = started.elapsed().as_secs_f64();
    households.sort();
    let summary = ReplaySummary::new(
        file_count,
        options.workers,
        &tally,
        &decisions,
        &households,
        &stats,
        seconds,
    );
    write_replay_outputs(&options.out, &mut decisions, &mut dead_letters, &households, &summary)
        .map_err(|e| format!("cannot write the outputs to {}: {e}", options.out.display()))?;
    Ok(summary)
}

/// How long a stopping engine waits for its final checkpoint before it leaves without it.
const FINAL_CHECKPOINT_PATIENCE: Duration = Duration::from_secs(30);

/// Runs the engine: Kafka in, Kafka out, state made durable in RocksDB at checkpoints,
/// resumed from the last one at start. It runs until `shutdown` is set, or, with a bounded
/// `range`, until every input partition has been read to the range's end and everything
/// before it decided; either way it leaves after a final checkpoint.
pub fn run(config: &RunConfig, range: &Range, shutdown: Arc<AtomicBool>) -> Result<(), String> {
    let mut rules = load_rules(&config.engine.rules)?;
    let mut rules_version = crate::rules::watch::fingerprint(&config.engine.rules);
    // With a rules topic, the newest published set is in force from the start — or, when
    // it names a later event time than the state resumes from, from then on (the folder's
    // set until then).
    let mut scheduled: Option<(Millis, RuleSet, String)> = None;
    let published = match &config.engine.rules_topic {
        None => None,
        Some(topic) => {
            let follower = PublishedRules::follow(&config.kafka, topic)?;
            if let Some(latest) = follower.latest()? {
                let (set, at) = latest.rules().map_err(|e| format!("{topic}: {e}"))?;
                scheduled = Some((at, set, latest.version));
            }
            Some(follower)
        }
    };
    telemetry::serve_prometheus(config.metrics.listen)?;
    let workers = config.engine.workers;
    let loading = Instant::now();
    let store = Arc::new(StateStore::open(&config.state.dir).map_err(|e| e.to_string())?);
    let restored = store.load().map_err(|e| e.to_string())?;
    let load_ms = loading.elapsed().as_millis() as u64;
    let mut sink = KafkaSink::new(&config.kafka, config.topics.clone())?;
    let recalled = sink.recall(restored.as_ref().map(|r| r.meta.scan_from.as_slice()))?;
    let sink = Arc::new(sink);
    let partitions = Arc::new(list_partitions(&config.kafka)?);

    let (restored_at, resume, waiting, shards, subscribers) = match restored {
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
            (restored.meta.at, resume, restored.waiting, shards, subscribers)
        }
        None => (0, HashMap::new(), Vec::new(), vec![Vec::new(); workers], 0),
    };
    if let Some((_, set, version)) = scheduled.take_if(|(at, _, _)| *at <= restored_at) {
        rules = Arc::new(set);
        rules_version = version;
    }
    let published = Arc::new(Mutex::new((published, scheduled)));
    metrics::gauge!(telemetry::RESTORED_SUBSCRIBERS).set(subscribers as f64);
    metrics::gauge!(telemetry::RULES_IN_FORCE).set(rules.rules.len() as f64);
    let rules_dir = config.engine.rules.clone();
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
        restored_at = %kairos_model::time::format_rfc3339(restored_at),
        recalled_outputs = recalled,
        load_ms,
        "kairos run: starting"
    );
    let requests = Arc::new(CheckpointRequests::default());
    let durability = Durability {
        requests: Arc::clone(&requests),
        restored: Arc::new(Mutex::new(shards)),
        restored_at,
    };
    let coordinator = Arc::new(Coordinator::new(
        workers,
        requests,
        Duration::from_millis(config.state.checkpoint_interval_ms),
    ));
    let writer = Arc::new(Mutex::new(CheckpointWriter::new(workers)));
    let background = Arc::new(
        BackgroundWriter::start(
            Arc::clone(&sink),
            Arc::clone(&store),
            Arc::clone(&coordinator),
            sink.ends(),
        )
        .map_err(|e| format!("cannot start the checkpoint writer: {e}"))?,
    );
    let waiting = Arc::new(Mutex::new(Some(waiting)));
    let resume = Arc::new(resume);
    let frontier_rules = FrontierRules {
        shared: Arc::new(SharedFrontier::new(workers)),
        lateness: config.engine.allowed_lateness_ms,
        idle_after: Duration::from_millis(config.engine.idle_after_ms),
    };
    let stats = Arc::new(DataflowStats::default());
    let kafka = config.kafka.clone();
    let worker_sink = Arc::clone(&sink);
    let (range, bounded) = (range.clone(), range.bounded());
    let household_config = config.households.clone();
    let stopped = Arc::clone(&coordinator);
    // Workers whose partitions are all read to the end of a bounded range.
    let through = Arc::new(AtomicUsize::new(0));

    let guards = timely::execute(timely::Config::process(workers), move |worker| -> Result<(), String> {
        let index = worker.index();
        // Every worker builds the dataflow before anything can fail, so that a worker that
        // fails still takes part in shutting it down.
        let mut input: EventInput = InputHandle::new();
        let mut rules_input: RulesInput = InputHandle::new();
        let probe = ProbeHandle::new();
        let dataflow = worker.next_dataflow_index();
        worker.dataflow::<Millis, _, _>(|scope| {
            let events = input.to_stream(scope);
            let outputs = kairos_dataflows::decisions(
                events,
                Arc::clone(&rules),
                Some(rules_input.to_stream(scope)),
                Arc::clone(&stats),
                Some(durability.clone()),
                &household_config,
            );
            let (decisions, state) = (outputs.decisions, outputs.state);
            let (sink, coordinator, writer, background) = (
                Arc::clone(&worker_sink),
                Arc::clone(&coordinator),
                Arc::clone(&writer),
                Arc::clone(&background),
            );
            decisions.probe_with(&probe).binary_frontier(
                state,
                Pipeline,
                Exchange::new(|_: &StateRecord| 0),
                "KafkaSinkAndCheckpoint",
                move |_, _| {
                    move |(decisions, decided), (records, _), _output: &mut OutputBuilderSession<'_, Millis, CapacityContainerBuilder<Vec<()>>>| {
                        decisions.for_each(|_, batch| {
                            for decision in batch.drain(..) {
                                sink.decision(&decision);
                            }
                        });
                        // Checkpoint records all go to worker 0, which hands a complete
                        // checkpoint to the background writer (no worker waits while it
                        // flushes and writes).
                        if index != 0 {
                            return;
                        }
                        let mut writer = writer.lock().unwrap_or_else(|p| p.into_inner());
                        records.for_each(|_, batch| batch.drain(..).for_each(|r| writer.absorb(r)));
                        // Write a checkpoint once every decision before it is out.
                        let Some(at) = coordinator.confirmed() else { return };
                        if background.busy() || !writer.complete_for(at) || decided.less_than(&at) {
                            return;
                        }
                        let Some(inputs) = coordinator.positions_for(at) else { return };
                        background.submit(writer.take(at, inputs));
                    }
                },
            );
        });
        input.advance_to(restored_at);
        rules_input.advance_to(restored_at);
        // Worker 0 watches the rules folder; a new set goes in at its current instant and
        // takes force there on every worker (no worker has applied that instant yet: the
        // rules input holds them all back).
        let mut watcher = (index == 0 && !rules_poll.is_zero()).then(|| RulesWatcher::new(&rules_dir, rules_poll));
        // A checked set waiting for its instant: (in force from, set, version).
        let (follower, mut switch) = if index == 0 {
            std::mem::take(&mut *published.lock().unwrap_or_else(|p| p.into_inner()))
        } else {
            (None, None)
        };
        let mut in_force = Arc::clone(&rules);
        if index == 0 {
            for event in waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or_default()
            {
                input.send(event);
            }
        }
        let assigned = PartitionIngest::assign(
            &kafka,
            &partitions,
            (index, workers),
            frontier_rules.clone(),
            &resume,
            &range,
        );
        let mut ingest = match assigned {
            Ok(ingest) => {
                tracing::info!(worker = index, partitions = ingest.owned(), "worker assigned");
                ingest
            }
            Err(error) => {
                shutdown.store(true, Ordering::Relaxed);
                coordinator.abandon();
                drop(rules_input);
                finish(worker, input, &probe);
                return Err(error);
            }
        };
        let mut tally = IngestTally::default();
        let mut received = Vec::new();
        let mut last_report = Instant::now();
        // Set once this worker reads no more input; it then waits for the final checkpoint.
        let mut stopping: Option<Instant> = None;
        let mut through_range = false;
        while !coordinator.finished() && !coordinator.abandoned() {
            if stopping.is_none() && shutdown.load(Ordering::Relaxed) {
                stopping = Some(Instant::now());
                coordinator.stop(index);
            }
            let mut read = 0;
            let now = *input.time();
            if stopping.is_none() {
                read = ingest.poll(1024, |message| received.push(message));
                for message in received.drain(..) {
                    match message {
                        Received::Event(event) => {
                            tally.event(event.kind(), event.ts < now);
                            input.send(event);
                        }
                        Received::Invalid(letter, key) => {
                            tally.invalid += 1;
                            worker_sink.dead_letter(&letter, key.as_deref());
                        }
                    }
                }
            }
            if let Some(change) = watcher
                .as_mut()
                .filter(|_| stopping.is_none())
                .and_then(RulesWatcher::look)
            {
                match change {
                    Change::Valid { rules, version } => switch = Some((0, rules, version)),
                    Change::Invalid { version, problems } => refuse_rules(&version, &problems),
                }
            }
            if let Some(record) = follower.as_ref().and_then(|f| f.poll(Duration::ZERO)) {
                match record.and_then(|p| p.rules().map(|(set, at)| (at, set, p.version))) {
                    Ok(published) => switch = Some(published),
                    Err(problem) => refuse_rules("published", &[problem]),
                }
            }
            if index == 0 {
                coordinator.drive();
                if stopping.is_some_and(|since| since.elapsed() >= FINAL_CHECKPOINT_PATIENCE) {
                    tracing::error!("no final checkpoint within {FINAL_CHECKPOINT_PATIENCE:?}; leaving without it");
                    coordinator.abandon();
                }
            }
            // A stopping worker stays where it is, except to reach the final checkpoint.
            let wanted = if stopping.is_some() { now } else { ingest.epoch() };
            let idle = stopping.is_some() || ingest.all_idle();
            let epoch = coordinator.gate(index, now, wanted, idle, || ingest.positions());
            // A new set takes force at its instant, or at once if event time is past it.
            if let Some((at, set, version)) = switch.take_if(|(at, _, _)| epoch >= *at) {
                let at = at.max(*rules_input.time());
                if at > *rules_input.time() {
                    rules_input.advance_to(at);
                }
                put_in_force(set, &version, &mut in_force, &mut rules_input);
            }
            if epoch > now {
                input.advance_to(epoch);
                rules_input.advance_to(epoch);
            }
            if range.bounded() && stopping.is_none() {
                // `epoch()` above published this worker's end before it counts as through.
                if !through_range && ingest.done() {
                    through_range = true;
                    through.fetch_add(1, Ordering::SeqCst);
                }
                // Event time ends just past the newest event read (as in a replay): once
                // everything before it is decided, stop.
                let end = frontier_rules.shared.end();
                if through.load(Ordering::SeqCst) == workers && *input.time() >= end && !probe.less_than(&end) {
                    stopping = Some(Instant::now());
                    coordinator.stop(index);
                }
            }
            worker.step_or_park(Some(if read == 0 {
                Duration::from_millis(1)
            } else {
                Duration::ZERO
            }));
            if last_report.elapsed() >= Duration::from_secs(1) {
                last_report = Instant::now();
                tally.publish();
                report_progress(index, *input.time(), &stats);
                if index == 0 {
                    metrics::gauge!(telemetry::SINK_QUEUE).set(f64::from(worker_sink.queue_depth()));
                }
            }
        }
        tally.publish();
        if coordinator.finished() {
            // Everything read is in the final checkpoint: what still waits for event time
            // to pass it waits there, to be decided after a restart — not now, as if the
            // input had ended.
            worker.drop_dataflow(dataflow);
            drop((input, rules_input));
        } else {
            drop(rules_input);
            finish(worker, input, &probe);
        }
        Ok(())
    })?;
    let mut failure = None;
    for result in guards.join() {
        if let Err(e) | Ok(Err(e)) = result {
            failure.get_or_insert(e);
        }
    }
    sink.flush(Duration::from_secs(30))?;
    if let Some(e) = failure {
        return Err(e);
    }
    tracing::info!(final_checkpoint = stopped.finished(), bounded, "kairos run: stopped");
    Ok(())
}

/// Puts a checked rule set in force at the rules input's current instant.
fn put_in_force(rules: RuleSet, version: &str, in_force: &mut Arc<RuleSet>, rules_input: &mut RulesInput) {
    let at = kairos_model::time::format_rfc3339(*rules_input.time());
    let (added, changed, removed) = crate::rules::watch::changes(in_force, &rules);
    tracing::info!(
        version,
        at,
        rules = rules.rules.len(),
        ?added,
        ?changed,
        ?removed,
        "rules changed: the new set is in force from this event time on"
    );
    metrics::counter!(telemetry::RULE_CHANGES).increment(1);
    metrics::gauge!(telemetry::RULES_IN_FORCE).set(rules.rules.len() as f64);
    *in_force = Arc::new(rules.clone());
    rules_input.send(rules);
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

/// Closes the input and decides everything read so far.
fn finish(worker: &mut Worker, input: EventInput, probe: &ProbeHandle<Millis>) {
    drop(input);
    while !probe.done() {
        worker.step();
    }
}

fn report_progress(worker: usize, frontier: Millis, stats: &DataflowStats) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    metrics::gauge!(telemetry::EVENT_TIME_LAG, "worker" => worker.to_string())
        .set(now.saturating_sub(frontier) as f64 / 1000.0);
    if worker == 0 {
        metrics::counter!(telemetry::MOMENTS).absolute(stats.moments.load(Ordering::Relaxed));
        metrics::counter!(telemetry::WITHOUT_CUSTOMER).absolute(stats.events_without_customer.load(Ordering::Relaxed));
        metrics::counter!(telemetry::STALE_CUSTOMER_RECORDS)
            .absolute(stats.stale_customer_records.load(Ordering::Relaxed));
        metrics::counter!(telemetry::CONDITION_ERRORS).absolute(stats.condition_errors.load(Ordering::Relaxed));
        metrics::counter!(telemetry::DATAFLOW_UPDATES).absolute(stats.updates.load(Ordering::Relaxed));
        metrics::gauge!(telemetry::HELD_ACTIONS).set(stats.held.load(Ordering::Relaxed) as f64);
    }
}
