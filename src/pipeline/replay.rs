//! `kairos replay` (contract §3): JSON Lines files through the dataflow, decisions collected
//! and written to a folder. Deterministic: the same input and rules give byte-identical
//! output whatever the number of workers (see `ingest/files.rs` for why).

use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::TryRecvError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kairos_dataflows::households::{HouseholdConfig, HouseholdView, ViewUpdate};
use kairos_dataflows::standing::{standing, Standing};
use kairos_dataflows::Retention;
use kairos_dataflows::{DailyStandings, DataflowStats, FinalStates, Observe, Standings};
use kairos_model::{Decision, Millis, Msisdn, RuleSet};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Probe;
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::worker::Worker;

use super::{enter, finish, load_rules, EventInput, RulesError};
use crate::decode::Horizon;
use crate::ingest::files::{discover, spawn_reader, ChunkBoard, FilesError};
use crate::ingest::DeadLetter;
use crate::sinks::files::{write_replay_outputs, ReplayOutputs, ReplaySummary};
use crate::telemetry::IngestTally;

/// Builds the replay's dataflow on `worker`: an input of events, the decisions handed to
/// `deliver` and the household updates to `households` as they are made, what `observe` asks
/// for put where it says, and a probe that tells when an epoch is fully decided
/// (households included).
#[allow(clippy::too_many_arguments)]
fn build_dataflow(
    worker: &mut Worker,
    rules: Arc<RuleSet>,
    stats: Arc<DataflowStats>,
    config: &HouseholdConfig,
    (retention, observe): (Retention, Observe),
    mut deliver: impl FnMut(&mut Vec<Decision>) + 'static,
    mut households: impl FnMut(&mut Vec<ViewUpdate>) + 'static,
) -> (EventInput, ProbeHandle<Millis>) {
    let mut input = InputHandle::new();
    let probe = ProbeHandle::new();
    worker.dataflow::<Millis, _, _>(|scope| {
        let outputs = kairos_dataflows::decisions(
            input.to_stream(scope),
            rules,
            None,
            stats,
            None,
            config,
            retention,
            observe,
        );
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

/// What `kairos replay` was asked to do.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub events: Vec<PathBuf>,
    pub out: PathBuf,
    pub rules: PathBuf,
    pub workers: usize,
    pub allowed_lateness_ms: Millis,
    /// How far after the replaying machine's wall clock an event may be stamped (contract
    /// §5.1); later ones are dead letters.
    pub max_future_ms: Millis,
    pub households: HouseholdConfig,
    /// How long states of numbers that are not customers are kept without events.
    pub retention: Retention,
    /// Where the reader counts what it has read, when progress is shown.
    pub progress: Option<crate::progress::Progress>,
}

/// What a replay keeps besides its outputs: where customers stood, and when.
#[derive(Clone, Debug, Default)]
pub struct Watch {
    /// Every customer's standing at this instant (after everything before it).
    pub at: Option<Millis>,
    /// Every customer's churn risk and stage at each of these instants (ascending).
    pub daily: Vec<Millis>,
}

/// A replay's outputs, as written, and where customers stood at the instants asked for.
#[derive(Debug)]
pub struct Replayed {
    pub summary: ReplaySummary,
    /// With [`Watch::at`]: every customer's standing then, in number order.
    pub standings_at: Vec<Standing>,
    /// With [`Watch::daily`]: (instant, number, churn risk, stage), by instant then number.
    pub daily: Vec<(Millis, Msisdn, f32, kairos_model::Stage)>,
}

struct WorkerOutput {
    /// Just past the newest event of the input: where event time ended.
    end: Millis,
    decisions: Vec<Decision>,
    households: Vec<(Msisdn, HouseholdView)>,
    dead_letters: Vec<DeadLetter>,
    tally: IngestTally,
}

/// Why a replay could not run or write its outputs.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("--workers must be at least 1")]
    NoWorkers,
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error(transparent)]
    Input(#[from] FilesError),
    #[error("cannot start the workers: {0}")]
    Workers(String),
    #[error("a worker failed: {0}")]
    Worker(String),
    #[error("the file reader panicked")]
    Reader,
    #[error("cannot write the outputs to {out}: {source}")]
    Write { out: PathBuf, source: std::io::Error },
}

/// Runs a replay (contract §3) and writes its outputs.
pub fn replay(options: &ReplayOptions) -> Result<ReplaySummary, ReplayError> {
    replay_observing(options, &Watch::default()).map(|replayed| replayed.summary)
}

/// [`replay`], also keeping where customers stood at the instants `watch` asks for (each
/// after everything before it).
pub fn replay_observing(options: &ReplayOptions, watch: &Watch) -> Result<Replayed, ReplayError> {
    if options.workers == 0 {
        return Err(ReplayError::NoWorkers);
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
    let max_future = options.max_future_ms;
    let worker_stats = Arc::clone(&stats);
    let household_config = options.households.clone();
    let retention = options.retention;
    let epochs: Arc<Vec<AtomicU64>> = Arc::new((0..options.workers).map(|_| AtomicU64::new(0)).collect());
    let slack = household_config
        .enabled
        .then(|| household_config.granularity_ms.saturating_mul(2));
    let final_states: FinalStates = Arc::default();
    let observed: Standings = Arc::default();
    let daily: DailyStandings = Arc::default();
    let mut daily_at = watch.daily.clone();
    daily_at.sort_unstable();
    daily_at.dedup();
    let observe = Observe {
        final_states: Some(Arc::clone(&final_states)),
        standings_at: watch.at.map(|at| (at, Arc::clone(&observed))),
        daily: (!daily_at.is_empty()).then(|| (daily_at, Arc::clone(&daily))),
    };
    let worker_rules = Arc::clone(&rules);

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
            Arc::clone(&worker_rules),
            Arc::clone(&worker_stats),
            &household_config,
            (retention, observe.clone()),
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
        let mut received_in_chunk = Vec::new();
        while let Some(receiver) = receiver.as_ref() {
            let chunk = match receiver.try_recv() {
                Ok(chunk) => chunk,
                Err(TryRecvError::Empty) => {
                    worker.step_or_park(Some(Duration::from_millis(1)));
                    continue;
                }
                Err(TryRecvError::Disconnected) => break,
            };
            let horizon = Horizon::now(max_future);
            let newest = chunk.decode(&names, &horizon, |received| received_in_chunk.push(received));
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
            for received in received_in_chunk.drain(..) {
                enter(received, &mut input, &mut tally, |letter, _| dead_letters.push(letter));
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
            end,
            decisions,
            households,
            dead_letters,
            tally,
        }
    })
    .map_err(ReplayError::Workers)?;

    let mut decisions = Vec::new();
    let mut dead_letters = Vec::new();
    let mut tally = IngestTally::default();
    let mut households = Vec::new();
    let mut end = 0;
    for result in guards.join() {
        let output = result.map_err(ReplayError::Worker)?;
        end = end.max(output.end);
        decisions.extend(output.decisions);
        households.extend(output.households);
        dead_letters.extend(output.dead_letters);
        tally.merge(&output.tally);
    }
    reader.join().map_err(|_| ReplayError::Reader)??;
    let seconds = started.elapsed().as_secs_f64();
    households.sort();
    // Where each customer stands at the last instant of event time (contract §5.2).
    let states = std::mem::take(&mut *final_states.lock().unwrap_or_else(|p| p.into_inner()));
    let mut standings: Vec<Standing> = states
        .iter()
        .filter_map(|(msisdn, state)| standing(*msisdn, state, &rules, end.saturating_sub(1)))
        .collect();
    standings.sort_by_key(|s| s.msisdn);
    let summary = ReplaySummary::new(
        file_count,
        options.workers,
        &tally,
        &decisions,
        &households,
        &stats,
        seconds,
    );
    let outputs = ReplayOutputs {
        decisions: &mut decisions,
        dead_letters: &mut dead_letters,
        households: &households,
        standings: &standings,
        summary: &summary,
    };
    write_replay_outputs(&options.out, outputs).map_err(|source| ReplayError::Write {
        out: options.out.clone(),
        source,
    })?;
    let mut standings_at = std::mem::take(&mut *observed.lock().unwrap_or_else(|p| p.into_inner()));
    standings_at.sort_by_key(|s| s.msisdn);
    let mut daily = std::mem::take(&mut *daily.lock().unwrap_or_else(|p| p.into_inner()));
    daily.sort_unstable_by_key(|(at, msisdn, _, _)| (*at, *msisdn));
    Ok(Replayed {
        summary,
        standings_at,
        daily,
    })
}
