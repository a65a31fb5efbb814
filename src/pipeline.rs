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
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::TryRecvError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kairos_dataflows::DataflowStats;
use kairos_model::{Decision, Event, Millis, Origin, RuleSet};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Probe;
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::worker::Worker;

use crate::config::RunConfig;
use crate::decode::decode;
use crate::ingest::files::{discover, spawn_reader, ChunkBoard};
use crate::ingest::kafka::{list_partitions, PartitionIngest, Received, SharedFrontier};
use crate::ingest::{DeadLetter, SourcePosition};
use crate::sinks::files::{write_replay_outputs, ReplaySummary};
use crate::sinks::kafka::KafkaSink;
use crate::telemetry::{self, IngestTally};

/// The dataflow's input: events, sent at the worker's current epoch.
pub type EventInput = InputHandle<Millis, CapacityContainerBuilder<Vec<Event>>>;

/// Builds the dataflow on `worker`: an input of events, the decisions handed to `deliver`
/// as they are made, and a probe that tells when an epoch is fully decided.
pub fn build_dataflow(
    worker: &mut Worker,
    rules: Arc<RuleSet>,
    stats: Arc<DataflowStats>,
    mut deliver: impl FnMut(&mut Vec<Decision>) + 'static,
) -> (EventInput, ProbeHandle<Millis>) {
    let mut input = InputHandle::new();
    let probe = ProbeHandle::new();
    worker.dataflow::<Millis, _, _>(|scope| {
        let (decisions, _state) = kairos_dataflows::decisions(input.to_stream(scope), rules, stats, None);
        decisions
            .probe_with(&probe)
            .sink(Pipeline, "DecisionSink", move |(input, _frontier)| {
                input.for_each(|_stamp, decisions| deliver(decisions))
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
}

struct WorkerOutput {
    decisions: Vec<Decision>,
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
    let board = Arc::new(ChunkBoard::default());
    let (receivers, reader) = spawn_reader(files, options.workers, Arc::clone(&board));
    let receivers = Arc::new(Mutex::new(receivers.into_iter().map(Some).collect::<Vec<_>>()));
    let stats = Arc::new(DataflowStats::default());
    let lateness = options.allowed_lateness_ms;
    let worker_stats = Arc::clone(&stats);

    let guards = timely::execute(timely::Config::process(options.workers), move |worker| {
        let receiver = receivers.lock().unwrap_or_else(|p| p.into_inner())[worker.index()].take();
        let collected = Rc::new(RefCell::new(Vec::new()));
        let sink = Rc::clone(&collected);
        let (mut input, probe) = build_dataflow(
            worker,
            Arc::clone(&rules),
            Arc::clone(&worker_stats),
            move |decisions| sink.borrow_mut().append(decisions),
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
        if let Some(end) = newest.map(|t| t.saturating_add(1)).filter(|end| end > input.time()) {
            input.advance_to(end);
            while probe.less_than(&end) {
                worker.step();
            }
        }
        finish(worker, input, &probe);
        let decisions = collected.take();
        WorkerOutput {
            decisions,
            dead_letters,
            tally,
        }
    })?;

    let mut decisions = Vec::new();
    let mut dead_letters = Vec::new();
    let mut tally = IngestTally::default();
    for result in guards.join() {
        let output = result.map_err(|e| format!("a worker failed: {e}"))?;
        decisions.extend(output.decisions);
        dead_letters.extend(output.dead_letters);
        tally.merge(&output.tally);
    }
    reader.join().map_err(|_| "the file reader panicked".to_string())??;
    let seconds = started.elapsed().as_secs_f64();
    let summary = ReplaySummary::new(
        file_count,
        options.workers,
        &tally,
        &decisions,
        stats.events_without_customer.load(Ordering::Relaxed),
        stats.moments.load(Ordering::Relaxed),
        seconds,
    );
    write_replay_outputs(&options.out, &mut decisions, &mut dead_letters, &summary)
        .map_err(|e| format!("cannot write the outputs to {}: {e}", options.out.display()))?;
    Ok(summary)
}

/// Runs the always-on engine until `shutdown` is set: Kafka in, Kafka out.
pub fn run(config: &RunConfig, shutdown: Arc<AtomicBool>) -> Result<(), String> {
    let rules = load_rules(&config.engine.rules)?;
    telemetry::serve_prometheus(config.metrics.listen)?;
    let sink = Arc::new(KafkaSink::new(&config.kafka, config.topics.clone())?);
    let partitions = Arc::new(list_partitions(&config.kafka)?);
    let workers = config.engine.workers;
    tracing::info!(
        partitions = partitions.len(),
        workers,
        rules = rules.rules.len(),
        brokers = %config.kafka.brokers,
        metrics = %config.metrics.listen,
        "kairos run: starting"
    );
    let shared = Arc::new(SharedFrontier::new(workers));
    let stats = Arc::new(DataflowStats::default());
    let kafka = config.kafka.clone();
    let lateness = config.engine.allowed_lateness_ms;
    let idle_after = Duration::from_millis(config.engine.idle_after_ms);
    let worker_sink = Arc::clone(&sink);

    let guards = timely::execute(timely::Config::process(workers), move |worker| -> Result<(), String> {
        let index = worker.index();
        // Every worker builds the dataflow before anything can fail, so that a worker that
        // fails still takes part in shutting it down.
        let decision_sink = Arc::clone(&worker_sink);
        let (mut input, probe) = build_dataflow(worker, Arc::clone(&rules), Arc::clone(&stats), move |decisions| {
            for decision in decisions.drain(..) {
                decision_sink.decision(&decision);
            }
        });
        let assigned = PartitionIngest::assign(
            &kafka,
            &partitions,
            index,
            workers,
            Arc::clone(&shared),
            lateness,
            idle_after,
        );
        let mut ingest = match assigned {
            Ok(ingest) => {
                tracing::info!(worker = index, partitions = ingest.owned(), "worker assigned");
                Some(ingest)
            }
            Err(error) => {
                shutdown.store(true, Ordering::Relaxed);
                finish(worker, input, &probe);
                return Err(error);
            }
        };
        let mut tally = IngestTally::default();
        let mut received = Vec::new();
        let mut last_report = Instant::now();
        while let Some(ingest) = ingest.as_mut().filter(|_| !shutdown.load(Ordering::Relaxed)) {
            let read = ingest.poll(1024, |message| received.push(message));
            let now = *input.time();
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
            let epoch = ingest.epoch();
            if epoch > *input.time() {
                input.advance_to(epoch);
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
            }
        }
        tally.publish();
        finish(worker, input, &probe);
        Ok(())
    })?;
    let mut failure = None;
    for result in guards.join() {
        if let Err(e) | Ok(Err(e)) = result {
            failure.get_or_insert(e);
        }
    }
    sink.flush(Duration::from_secs(30))?;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
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
    }
}
