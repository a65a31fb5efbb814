//! Oracle test: the dataflow, with several workers and seeded random worlds (customers with
//! plans, handsets and contracts in several time zones; trips; data usage; plan changes;
//! late and duplicate events; stale records and deletions), against a plain sequential model
//! of contract §4's four default rules written independently (`world/`). Billing cycles and
//! local midnights come from `kairos_dataflows::calendar`, which has its own tests.

mod world;

use std::collections::BTreeMap;

use kairos_model::Event;
use world::{batches_of, model, random_events, run, Outcome};

/// Runs the dataflow on `workers` threads; batch `b` is sent by worker `b % workers`. As in a
/// replay, event time ends at the newest `ts`.
fn dataflow(events: &[Event], workers: usize) -> Vec<Outcome> {
    let end = events.iter().map(|e| e.ts).max().unwrap_or(0) + 1;
    let batches = batches_of(events);
    let count = batches.len();
    let mut out: Vec<Outcome> = run(batches, 0, count, 0, end, Vec::new(), None, workers)
        .decisions
        .into_iter()
        .map(|(_, o)| o)
        .collect();
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
            let got = dataflow(&events, workers);
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
