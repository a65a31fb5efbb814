//! Oracle test: the dataflow, with several workers and seeded random worlds (customers with
//! plans, handsets and contracts in several time zones; trips; data usage; plan changes;
//! late and duplicate events; stale records and deletions), against a plain sequential model
//! of contract §4's four default rules written independently (`world/`). Billing cycles and
//! local midnights come from `kairos_dataflows::calendar`, which has its own tests.

mod world;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kairos_dataflows::DataflowStats;
use kairos_model::{Event, Millis, Verdict};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Probe;
use timely::dataflow::{InputHandle, ProbeHandle};
use world::{batch_epochs, model, random_events, rules, Outcome, BATCH};

/// Runs the dataflow on `workers` threads; batch `b` is sent by worker `b % workers`. As in a
/// replay, event time ends at the newest `ts`.
fn dataflow(events: Vec<Event>, workers: usize) -> Vec<Outcome> {
    let epochs = batch_epochs(&events);
    let end = events.iter().map(|e| e.ts).max().unwrap_or(0) + 1;
    let batches: Arc<Vec<(Millis, Vec<Event>)>> = Arc::new(
        epochs
            .into_iter()
            .zip(events.chunks(BATCH).map(<[Event]>::to_vec))
            .collect(),
    );
    let results = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&results);
    let rules = Arc::new(rules());
    timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        let peers = worker.peers();
        let mut input = InputHandle::new();
        let probe = ProbeHandle::new();
        let sink = Arc::clone(&sink);
        let rules = Arc::clone(&rules);
        worker.dataflow::<Millis, _, _>(|scope| {
            let stats = Arc::new(DataflowStats::default());
            let (decisions, _state) = kairos_dataflows::decisions(input.to_stream(scope), rules, stats, None);
            decisions
                .probe_with(&probe)
                .sink(Pipeline, "Collect", move |(input, _)| {
                    input.for_each(|_, decisions| {
                        let mut out = sink.lock().unwrap();
                        for d in decisions.drain(..) {
                            let verdict = match d.verdict {
                                Verdict::Sent => "sent",
                                Verdict::Suppressed(reason) => reason.as_str(),
                            };
                            let a = d.action;
                            out.push((a.moment_ts, a.msisdn, a.rule, d.moment_key, a.channel, verdict));
                        }
                    })
                });
        });
        for (b, (epoch, batch)) in batches.iter().enumerate() {
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
        input.advance_to(end);
        while probe.less_than(&end) {
            worker.step();
        }
    })
    .unwrap();
    let mut out = results.lock().unwrap().clone();
    out.sort();
    out
}

#[test]
fn dataflow_matches_the_sequential_model_for_any_worker_count() {
    let mut by_rule: BTreeMap<String, BTreeMap<&str, usize>> = BTreeMap::new();
    for seed in 0..10 {
        let events = random_events(seed, 700);
        let expected = model(&events);
        for o in &expected {
            *by_rule.entry(o.2.clone()).or_default().entry(o.5).or_default() += 1;
        }
        for workers in [1, 2, 3] {
            let got = dataflow(events.clone(), workers);
            if got != expected {
                let missing: Vec<_> = expected.iter().filter(|o| !got.contains(o)).collect();
                let extra: Vec<_> = got.iter().filter(|o| !expected.contains(o)).collect();
                panic!("seed {seed}, {workers} workers:\nmissing {missing:#?}\nextra {extra:#?}");
            }
        }
    }
    // The worlds exercise every rule and every verdict, or the comparison proves little.
    for rule in ["data-pack-100", "data-pack-80", "handset-upgrade", "roaming-welcome"] {
        let verdicts = &by_rule[rule];
        assert!(verdicts.get("sent").copied().unwrap_or(0) >= 5, "{rule}: {verdicts:?}");
        assert!(
            verdicts.get("no_consent").copied().unwrap_or(0) >= 1,
            "{rule}: {verdicts:?}"
        );
    }
    assert!(by_rule["roaming-welcome"].get("cooldown").copied().unwrap_or(0) >= 1);
}
