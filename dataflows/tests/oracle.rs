//! Oracle test: the dataflow, with several workers and seeded random input (out-of-order
//! and late events, customer upserts, stale records and deletions), against a plain
//! sequential model of contract §4's `roaming-welcome` written independently here.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use kairos_dataflows::DataflowStats;
use kairos_model::event::{Consent, Customer, CustomerRecord, EventBody, Network, NetworkKind, Usage, UsageKind};
use kairos_model::time::DAY;
use kairos_model::{Channel, CountryCode, Event, Millis, MomentKind, Msisdn, Origin, Rule, RuleSet, Verdict};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::InputHandle;

const COUNTRIES: [&str; 4] = ["PT", "ES", "FR", "US"];
const BATCH: usize = 7;

fn country(code: &str) -> CountryCode {
    CountryCode::parse(code).unwrap()
}

fn rules() -> RuleSet {
    RuleSet {
        rules: vec![Rule {
            id: "roaming-welcome".into(),
            version: "test".into(),
            moment: MomentKind::RoamingArrival,
            offer: "ROAM".into(),
            channel: Channel::Sms,
            cooldown: DAY,
            messages: BTreeMap::from([("en".into(), "Welcome to {country_name}".into())]),
        }],
    }
}

fn record(home: &str, sms: bool) -> CustomerRecord {
    CustomerRecord {
        account_id: "A".into(),
        address_id: None,
        home_country: country(home),
        timezone: "Europe/Lisbon".into(),
        language: None,
        email: None,
        tenure_start: None,
        prepaid: None,
        plan: None,
        device: None,
        contract_end: None,
        consent: Consent {
            sms,
            ..Consent::default()
        },
    }
}

/// Seeded events in arrival order, with their arrival positions as origins.
fn random_events(seed: u64, count: usize) -> Vec<Event> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let subscribers = 12u64;
    let mut events = Vec::with_capacity(count);
    for position in 0..count {
        let msisdn = Msisdn::from_u64(351_910_000_000 + rng.random_range(0..subscribers)).unwrap();
        // Mostly increasing time with jitter, so some events arrive late.
        let base = (position as u64) * 40 * 60 * 1000;
        let ts = base.saturating_sub(rng.random_range(0..6 * 60 * 60 * 1000)) + 1_000_000;
        let roll: f64 = rng.random();
        let body = if roll < 0.12 {
            let home = COUNTRIES[rng.random_range(0..2)];
            EventBody::Customer(Customer::Upsert(Box::new(record(home, rng.random_bool(0.8)))))
        } else if roll < 0.14 {
            EventBody::Customer(Customer::Deleted)
        } else if roll < 0.85 {
            let detach = rng.random_bool(0.05);
            EventBody::Network(Network {
                event: if detach {
                    NetworkKind::Detach
                } else {
                    NetworkKind::LocationUpdate
                },
                country: (!detach).then(|| country(COUNTRIES[rng.random_range(0..COUNTRIES.len())])),
                mcc: None,
                mnc: None,
                cell: None,
                imei: None,
                peer: None,
            })
        } else {
            EventBody::Usage(Usage {
                kind: UsageKind::Data,
                amount: 5,
                peer: None,
            })
        };
        // Some events share an instant, to exercise the tie-breaking order.
        let ts = if rng.random_bool(0.1) { ts - ts % 3_600_000 } else { ts };
        events.push(Event {
            ts,
            msisdn,
            origin: Origin {
                source: 0,
                position: position as u64,
            },
            body,
        });
    }
    events
}

/// The epoch of each batch: the newest `ts` of the batches before it (lateness 0).
fn batch_epochs(events: &[Event]) -> Vec<Millis> {
    let mut epochs = Vec::new();
    let mut newest = 0;
    for batch in events.chunks(BATCH) {
        epochs.push(newest);
        newest = newest.max(batch.iter().map(|e| e.ts).max().unwrap_or(0));
    }
    epochs
}

type Outcome = (Millis, Msisdn, String, Option<&'static str>);

/// The sequential model of contract §4, independent of the dataflow's code.
fn model(events: &[Event]) -> Vec<Outcome> {
    let epochs = batch_epochs(events);
    let mut ordered: Vec<(Millis, &Event)> = Vec::new();
    for (batch, epoch) in events.chunks(BATCH).zip(&epochs) {
        ordered.extend(batch.iter().map(|e| (e.ts.max(*epoch), e)));
    }
    ordered.sort_by_key(|(at, e)| (*at, e.ts, e.kind(), e.origin));

    #[derive(Default)]
    struct Sub {
        since: Option<Millis>,
        customer: Option<CustomerRecord>,
        last_country: Option<CountryCode>,
        last_sent: HashMap<CountryCode, Millis>,
    }
    let mut subs: HashMap<Msisdn, Sub> = HashMap::new();
    let mut out = Vec::new();
    for (_, event) in ordered {
        let sub = subs.entry(event.msisdn).or_default();
        match &event.body {
            EventBody::Customer(update) => {
                if sub.since.is_some_and(|s| event.ts < s) {
                    continue;
                }
                match update {
                    Customer::Upsert(r) => {
                        sub.customer = Some((**r).clone());
                        sub.since = Some(event.ts);
                    }
                    Customer::Deleted => {
                        *sub = Sub {
                            since: Some(event.ts),
                            ..Sub::default()
                        }
                    }
                }
            }
            EventBody::Network(n) => {
                let previous = sub.last_country;
                let Some(now) = n.country else { continue };
                sub.last_country = Some(now);
                let Some(customer) = &sub.customer else { continue };
                if now == customer.home_country || previous == Some(now) {
                    continue;
                }
                let verdict = if !customer.consent.sms {
                    Some("no_consent")
                } else if sub.last_sent.get(&now).is_some_and(|last| event.ts < last + DAY) {
                    Some("cooldown")
                } else {
                    sub.last_sent.insert(now, event.ts);
                    None
                };
                out.push((event.ts, event.msisdn, now.to_string(), verdict));
            }
            _ => {}
        }
    }
    out.sort();
    out
}

/// Runs the dataflow on `workers` threads; batch `b` is sent by worker `b % workers`.
fn dataflow(events: Vec<Event>, workers: usize) -> Vec<Outcome> {
    let epochs = batch_epochs(&events);
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
        let sink = Arc::clone(&sink);
        let rules = Arc::clone(&rules);
        worker.dataflow::<Millis, _, _>(|scope| {
            kairos_dataflows::decisions(input.to_stream(scope), rules, Arc::new(DataflowStats::default())).sink(
                Pipeline,
                "Collect",
                move |(input, _)| {
                    input.for_each(|_, decisions| {
                        let mut out = sink.lock().unwrap();
                        for d in decisions.drain(..) {
                            let verdict = match d.verdict {
                                Verdict::Sent => None,
                                Verdict::Suppressed(reason) => Some(reason.as_str()),
                            };
                            out.push((d.action.moment_ts, d.action.msisdn, d.moment_key.clone(), verdict));
                        }
                    })
                },
            );
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
    })
    .unwrap();
    let mut out = results.lock().unwrap().clone();
    out.sort();
    out
}

#[test]
fn dataflow_matches_the_sequential_model_for_any_worker_count() {
    for seed in 0..12 {
        let events = random_events(seed, 600);
        let expected = model(&events);
        assert!(expected.len() > 10, "seed {seed}: the input should produce moments");
        assert!(expected.iter().any(|o| o.3.is_none()) && expected.iter().any(|o| o.3.is_some()));
        for workers in [1, 2, 3] {
            assert_eq!(
                dataflow(events.clone(), workers),
                expected,
                "seed {seed}, {workers} workers"
            );
        }
    }
}
