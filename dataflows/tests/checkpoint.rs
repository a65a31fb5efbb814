//! Checkpoint and restore, without I/O: run the dataflow, take a checkpoint at a random
//! instant, "crash" some time after it, start a second dataflow from the checkpoint (states,
//! waiting events, input position) and the rest of the input. The decisions before the
//! checkpoint from the first run plus the decisions of the second must equal those of a run
//! without a crash — with any number of workers on either side.

mod world;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kairos_dataflows::checkpoint::{CheckpointRequests, Durability, StateRecord};
use kairos_dataflows::state::SubscriberState;
use kairos_dataflows::{subscriber_worker, DataflowStats};
use kairos_model::{Event, Millis, Msisdn, Verdict};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Probe;
use timely::dataflow::{InputHandle, ProbeHandle};
use world::{batch_epochs, model, random_events, rules, Outcome, BATCH};

struct RunOutput {
    decisions: Vec<(Millis, Outcome)>,
    records: Vec<(Millis, StateRecord)>,
}

/// Runs the dataflow on batches `from..to` (each at its epoch, never below `start`), with
/// `durability`; worker 0 first re-sends `waiting` at `start`. Ends by advancing every input
/// to `end` and waiting for the probe.
#[allow(clippy::too_many_arguments)]
fn run(
    batches: Arc<Vec<(Millis, Vec<Event>)>>,
    from: usize,
    to: usize,
    start: Millis,
    end: Millis,
    waiting: Vec<Event>,
    durability: Durability,
    workers: usize,
) -> RunOutput {
    let decisions = Arc::new(Mutex::new(Vec::new()));
    let records = Arc::new(Mutex::new(Vec::new()));
    let (d_sink, r_sink) = (Arc::clone(&decisions), Arc::clone(&records));
    let waiting = Arc::new(waiting);
    let rules = Arc::new(rules());
    timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        let peers = worker.peers();
        let mut input = InputHandle::new();
        let probe = ProbeHandle::new();
        let (d_sink, r_sink) = (Arc::clone(&d_sink), Arc::clone(&r_sink));
        let durability = durability.clone();
        let rules = Arc::clone(&rules);
        worker.dataflow::<Millis, _, _>(|scope| {
            let stats = Arc::new(DataflowStats::default());
            let (out, state) = kairos_dataflows::decisions(input.to_stream(scope), rules, stats, Some(durability));
            out.probe_with(&probe)
                .sink(Pipeline, "CollectDecisions", move |(input, _)| {
                    input.for_each(|stamp, batch| {
                        let at = *stamp.least().unwrap();
                        let mut out = d_sink.lock().unwrap();
                        for d in batch.drain(..) {
                            let verdict = match d.verdict {
                                Verdict::Sent => "sent",
                                Verdict::Suppressed(reason) => reason.as_str(),
                            };
                            let a = d.action;
                            out.push((at, (a.moment_ts, a.msisdn, a.rule, d.moment_key, a.channel, verdict)));
                        }
                    })
                });
            state
                .probe_with(&probe)
                .sink(Pipeline, "CollectState", move |(input, _)| {
                    input.for_each(|stamp, batch| {
                        let at = *stamp.least().unwrap();
                        r_sink.lock().unwrap().extend(batch.drain(..).map(|r| (at, r)));
                    })
                });
        });
        input.advance_to(start);
        if index == 0 {
            for event in waiting.iter() {
                input.send(event.clone());
            }
        }
        for (b, (epoch, batch)) in batches.iter().enumerate().take(to).skip(from) {
            if b % peers != index {
                continue;
            }
            if *epoch > *input.time() {
                input.advance_to(*epoch);
            }
            for event in batch {
                input.send(event.clone());
            }
            worker.step();
        }
        if end > *input.time() {
            input.advance_to(end);
        }
        while probe.less_than(&end) {
            worker.step();
        }
    })
    .unwrap();
    let decisions = std::mem::take(&mut *decisions.lock().unwrap());
    let records = std::mem::take(&mut *records.lock().unwrap());
    RunOutput { decisions, records }
}

#[test]
fn a_restored_checkpoint_continues_exactly_where_the_first_run_stopped() {
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let mut checked = 0;
    for seed in 0..12u64 {
        let events = random_events(seed, 700);
        let expected = model(&events);
        let epochs = batch_epochs(&events);
        let end = events.iter().map(|e| e.ts).max().unwrap() + 1;
        let batches: Arc<Vec<(Millis, Vec<Event>)>> = Arc::new(
            epochs
                .iter()
                .copied()
                .zip(events.chunks(BATCH).map(<[Event]>::to_vec))
                .collect(),
        );

        // The checkpoint instant: the epoch of a random batch; the input position: the first
        // batch sent at or after it. The crash: a while later.
        let c = rng.random_range(5..batches.len() - 5);
        let at = epochs[c];
        let position = epochs.iter().position(|e| *e >= at).unwrap();
        let crash = rng.random_range(position + 1..batches.len());
        let (first_workers, second_workers) = (rng.random_range(1..4), rng.random_range(1..4));

        let requests = Arc::new(CheckpointRequests::default());
        requests.request(at);
        let first = run(
            Arc::clone(&batches),
            0,
            crash,
            0,
            epochs[crash - 1].max(at),
            Vec::new(),
            Durability {
                requests,
                restored: Arc::default(),
                restored_at: 0,
            },
            first_workers,
        );

        // What a durable store would hold for the checkpoint.
        let markers = first
            .records
            .iter()
            .filter(|(_, r)| matches!(r, StateRecord::Pending { .. }))
            .count();
        assert_eq!(markers, first_workers, "every worker takes part in the checkpoint");
        let mut states: BTreeMap<Msisdn, SubscriberState> = BTreeMap::new();
        let mut waiting = Vec::new();
        for (_, record) in first.records {
            match record {
                StateRecord::Subscriber { msisdn, state } => {
                    states.insert(msisdn, *state);
                }
                StateRecord::Pending { events, .. } => waiting.extend(events),
            }
        }
        let mut restored = vec![Vec::new(); second_workers];
        for (msisdn, state) in states {
            restored[subscriber_worker(msisdn, second_workers)].push((msisdn, state));
        }
        let second = run(
            Arc::clone(&batches),
            position,
            batches.len(),
            at,
            end,
            waiting,
            Durability {
                requests: Arc::new(CheckpointRequests::default()),
                restored: Arc::new(Mutex::new(restored)),
                restored_at: at,
            },
            second_workers,
        );

        let mut got: Vec<Outcome> = first
            .decisions
            .into_iter()
            .filter(|(t, _)| *t < at)
            .map(|(_, o)| o)
            .collect();
        got.extend(second.decisions.into_iter().map(|(_, o)| o));
        got.sort();
        if got != expected {
            let missing: Vec<_> = expected.iter().filter(|o| !got.contains(o)).collect();
            let extra: Vec<_> = got.iter().filter(|o| !expected.contains(o)).collect();
            panic!(
                "seed {seed}: checkpoint at batch {c} ({at}), position {position}, crash {crash}, \
                 workers {first_workers}→{second_workers}\nmissing {missing:#?}\nextra {extra:#?}"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 12);
}
