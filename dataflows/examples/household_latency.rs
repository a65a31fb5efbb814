//! How long the household graph takes to absorb one new link, against computing every
//! household from scratch.
//!
//! ```text
//! cargo run --release -p kairos-dataflows --example household_latency -- [SUBSCRIBERS] [TRIALS]
//! ```
//!
//! Builds a graph of SUBSCRIBERS (default 100 000) with shared accounts (families of 1–5)
//! and strong call links, times the first computation (from scratch), then adds TRIALS
//! (default 30) single links one step apart — each merging two households — and removes
//! them again, timing each step until the graph's output is complete. Prints the medians and
//! the process's peak memory.

use std::time::Instant;

use differential_dataflow::input::{Input, InputSession};
use kairos_dataflows::households::{graph, Evidence, Facts, HouseholdConfig, Slot};
use kairos_model::{Millis, Msisdn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use timely::dataflow::ProbeHandle;

fn msisdn(i: u64) -> Msisdn {
    Msisdn::from_u64(351_910_000_000 + i).expect("a valid number")
}

/// Moves the input to `time` and steps until the graph is complete before it: milliseconds.
fn settle(
    worker: &mut timely::worker::Worker,
    input: &mut InputSession<Millis, Evidence, isize>,
    probe: &ProbeHandle<Millis>,
    time: Millis,
) -> f64 {
    let started = Instant::now();
    input.advance_to(time);
    input.flush();
    while probe.less_than(input.time()) {
        worker.step();
    }
    started.elapsed().as_secs_f64() * 1_000.0
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let subscribers: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let trials: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(30);
    let config = HouseholdConfig::default();
    let step = config.granularity_ms;

    timely::execute_directly(move |worker| {
        let probe = ProbeHandle::new();
        let mut input = worker.dataflow::<Millis, _, _>(|scope| {
            let (input, evidence) = scope.new_collection::<Evidence, isize>();
            graph(evidence, &config).probe_with(&probe);
            input
        });
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        // Families of 1–5 on one account; one strong call link in a quarter of them to a
        // member of another family (a soft link).
        let mut i = 0;
        let mut family = 0;
        while i < subscribers {
            let size = rng.random_range(1..=5).min(subscribers - i);
            for k in 0..size {
                let facts = Facts {
                    first_seen: 0,
                    account: format!("A-{family}"),
                    address: None,
                    fee_cents: 1_000 + 500 * k,
                    postpaid: k == 0,
                };
                input.update_at(Evidence::Facts(msisdn(i + k), facts), 0, 1);
            }
            if rng.random_bool(0.25) {
                let other = rng.random_range(0..subscribers);
                for (from, to, day) in family_days(msisdn(i), msisdn(other), config.contact_alone_days) {
                    input.update_at(Evidence::Contact(from, to, day, Slot::Evening), 0, 1);
                }
            }
            i += size;
            family += 1;
        }
        let scratch = settle(worker, &mut input, &probe, step) / 1_000.0;
        println!(
            "from scratch: {subscribers} subscribers, {family} accounts: {:.3} s",
            scratch
        );

        let mut added = Vec::new();
        let mut removed = Vec::new();
        let mut time = step;
        let mut links = Vec::new();
        for _ in 0..trials {
            let (a, b) = (rng.random_range(0..subscribers), rng.random_range(0..subscribers));
            links.push((a, b));
            for (from, to, day) in family_days(msisdn(a), msisdn(b), config.contact_alone_days) {
                input.update_at(Evidence::Contact(from, to, day, Slot::Evening), time, 1);
            }
            time += step;
            added.push(settle(worker, &mut input, &probe, time));
        }
        for (a, b) in links {
            for (from, to, day) in family_days(msisdn(a), msisdn(b), config.contact_alone_days) {
                input.update_at(Evidence::Contact(from, to, day, Slot::Evening), time, -1);
            }
            time += step;
            removed.push(settle(worker, &mut input, &probe, time));
        }
        println!(
            "one new link (merge): median {:.2} ms, max {:.2} ms over {trials}",
            median(added.clone()),
            added.iter().cloned().fold(0.0, f64::max)
        );
        println!(
            "one link expiring (split): median {:.2} ms, max {:.2} ms over {trials}",
            median(removed.clone()),
            removed.iter().cloned().fold(0.0, f64::max)
        );
        println!(
            "incremental vs from scratch: {:.0}× faster (median merge)",
            scratch * 1_000.0 / median(added)
        );
        println!("peak RSS: {:.0} MB", peak_rss_mb());
    });
}

/// The contacts that link `a` and `b` on calls alone: both ways on `days` days.
fn family_days(a: Msisdn, b: Msisdn, days: u32) -> Vec<(Msisdn, Msisdn, u32)> {
    (0..days).flat_map(|d| [(a, b, d), (b, a, d)]).collect()
}
