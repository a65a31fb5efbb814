//! Oracle test for moments on silence: declared moments over fields that event time moves
//! (days since the last data record, usage windows) must happen at the instant they start to
//! hold — with no later event of the subscriber — whatever the number of workers, and across
//! a checkpoint and a restart. A plain model of the two rules, written from their meaning,
//! says when; the dataflow must say the same.

mod world;

use std::collections::BTreeMap;
use std::sync::Arc;

use kairos_dataflows::checkpoint::{CheckpointRequests, Durability};
use kairos_model::event::{Consent, Customer, CustomerRecord, EventBody, Network, NetworkKind, Usage, UsageKind};
use kairos_model::rule::Declared;
use kairos_model::time::DAY;
use kairos_model::{Channel, CountryCode, Event, Millis, MomentKind, Msisdn, Origin, Rule, RuleSet};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use world::{batch_epochs, batches_of, run_rules, Outcome};

const START: Millis = 1_782_864_000_000; // 2026-07-01T00:00:00Z
const HOUR: Millis = 3_600_000;
/// A subscriber without a record whose network events move event time on.
const CLOCK: u64 = 351_990_000_000;

fn declared(id: &str, when: &str) -> Rule {
    Rule {
        id: id.into(),
        version: "test".into(),
        moment: MomentKind::Declared,
        declared: Some(Declared {
            name: id.replace('-', "_"),
            when: when.into(),
            dedupe_key: None,
        }),
        priority: 0,
        class: Default::default(),
        quiet_hours: Default::default(),
        value: 1.0,
        holdout: 0.0,
        offer: "O".into(),
        channel: Channel::Sms,
        fallback_channel: None,
        threshold: None,
        condition: None,
        cooldown: 0,
        messages: BTreeMap::from([("en".into(), "m".into())]),
    }
}

fn rules() -> RuleSet {
    RuleSet {
        rules: vec![
            declared("data-silence", "subscriber.days_since.data >= 10"),
            declared(
                "quiet-week",
                "subscriber.usage_7d.data_bytes == 0 && subscriber.usage_28d.data_bytes > 0",
            ),
        ],
        policy: Default::default(),
        stages: Default::default(),
        stickiness: Default::default(),
        churn: Default::default(),
    }
}

fn event(ts: Millis, msisdn: u64, body: EventBody) -> Event {
    Event {
        ts,
        msisdn: Msisdn::from_u64(msisdn).unwrap(),
        origin: Origin {
            source: 0,
            position: ts,
        },
        body,
    }
}

fn usage(kind: UsageKind, amount: u64) -> EventBody {
    EventBody::Usage(Usage {
        kind,
        amount,
        peer: None,
    })
}

/// Subscribers whose data comes in spells with silences of 1 to 25 days between them (voice
/// calls go on in some silences: they are usage too, but not data), over 70 days; a clock
/// subscriber's network events every 5 hours move event time. Sorted by `ts` (nothing late).
fn silent_world(seed: u64, subscribers: u64) -> Vec<Event> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut events = Vec::new();
    let end = START + 70 * DAY;
    for n in 0..subscribers {
        let msisdn = 351_910_000_000 + n;
        let record = CustomerRecord {
            account_id: format!("A{n}"),
            address_id: None,
            home_country: CountryCode::parse("PT").unwrap(),
            timezone: kairos_model::TimeZone::parse("Europe/Lisbon").unwrap(),
            language: None,
            email: None,
            tenure_start: None,
            prepaid: None,
            plan: None,
            device: None,
            contract_end: None,
            consent: Consent {
                sms: true,
                ..Consent::default()
            },
            status: Default::default(),
            status_reason: None,
            products: Vec::new(),
        };
        events.push(event(
            START + rng.random_range(0..HOUR),
            msisdn,
            EventBody::Customer(Customer::Upsert(Box::new(record))),
        ));
        let mut t = START + HOUR + rng.random_range(0..DAY);
        while t < end {
            // A spell of data on 1 to 6 days, a few records a day.
            for _ in 0..rng.random_range(1..7) {
                for _ in 0..rng.random_range(1..4) {
                    let at = t + rng.random_range(0..DAY);
                    events.push(event(
                        at,
                        msisdn,
                        usage(UsageKind::Data, rng.random_range(1..1_000_000)),
                    ));
                }
                t += DAY;
            }
            // Then a silence; sometimes exactly 10 days to the millisecond after the last record.
            let silence = rng.random_range(1..26) * DAY + rng.random_range(0..DAY);
            if rng.random_bool(0.3) {
                for _ in 0..rng.random_range(1..5) {
                    let at = t + rng.random_range(0..silence);
                    events.push(event(at, msisdn, usage(UsageKind::Voice, 60)));
                }
            }
            t += silence;
        }
    }
    let mut t = START;
    while t < end {
        let network = Network {
            event: NetworkKind::LocationUpdate,
            country: CountryCode::parse("PT").ok(),
            mcc: None,
            mnc: None,
            cell: None,
            imei: None,
            peer: None,
        };
        events.push(event(t, CLOCK, EventBody::Network(network)));
        t += 5 * HOUR;
    }
    events.sort_by_key(|e| (e.ts, e.msisdn));
    events
}

/// The two rules from what they mean. `data-silence`: 10 whole days after a data record with
/// no data record up to that instant (a record at that very instant is applied first, so it
/// prevents it). `quiet-week`: at the UTC midnight a data day leaves the 7-day window when no
/// data record came since, if event time reaches it.
fn model(events: &[Event]) -> Vec<Outcome> {
    let end = events.iter().map(|e| e.ts).max().unwrap_or(0) + 1;
    let mut data: BTreeMap<Msisdn, Vec<Millis>> = BTreeMap::new();
    for e in events {
        if let EventBody::Usage(u) = &e.body {
            if u.kind == UsageKind::Data {
                data.entry(e.msisdn).or_default().push(e.ts);
            }
        }
    }
    let mut out = Vec::new();
    for (msisdn, times) in data {
        for (i, last) in times.iter().enumerate() {
            let next = times.get(i + 1).copied().unwrap_or(Millis::MAX);
            let silence = last + 10 * DAY;
            if next > silence && silence < end {
                out.push((
                    silence,
                    msisdn,
                    "data-silence".to_string(),
                    String::new(),
                    Channel::Sms,
                    "sent",
                ));
            }
            let week = (last / DAY + 7) * DAY;
            if next > week && week < end {
                out.push((
                    week,
                    msisdn,
                    "quiet-week".to_string(),
                    String::new(),
                    Channel::Sms,
                    "sent",
                ));
            }
        }
    }
    out.sort();
    out
}

fn dataflow(events: &[Event], workers: usize) -> Vec<Outcome> {
    let end = events.iter().map(|e| e.ts).max().unwrap_or(0) + 1;
    let batches = batches_of(events);
    let count = batches.len();
    let mut out: Vec<Outcome> = run_rules(rules(), batches, 0, count, 0, end, Vec::new(), None, workers)
        .decisions
        .into_iter()
        .map(|(_, o)| o)
        .collect();
    out.sort();
    out
}

fn compare(what: &str, got: &[Outcome], expected: &[Outcome]) {
    if got != expected {
        let missing: Vec<_> = expected.iter().filter(|o| !got.contains(o)).collect();
        let extra: Vec<_> = got.iter().filter(|o| !expected.contains(o)).collect();
        panic!("{what}:\nmissing {missing:#?}\nextra {extra:#?}");
    }
}

#[test]
fn moments_on_silence_happen_at_their_instant_for_any_worker_count() {
    let mut fired = BTreeMap::new();
    for seed in 0..4 {
        let events = silent_world(seed, 30);
        let expected = model(&events);
        for o in &expected {
            *fired.entry(o.2.clone()).or_insert(0) += 1;
        }
        for workers in [1, 2, 3] {
            compare(
                &format!("seed {seed}, {workers} workers"),
                &dataflow(&events, workers),
                &expected,
            );
        }
    }
    // The worlds make both rules happen often, or the comparison proves little.
    assert!(fired["data-silence"] >= 50, "{fired:?}");
    assert!(fired["quiet-week"] >= 50, "{fired:?}");
}

#[test]
fn moments_on_silence_survive_a_checkpoint_and_a_restart() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for seed in 10..16u64 {
        let events = silent_world(seed, 20);
        let expected = model(&events);
        let epochs = batch_epochs(&events);
        let end = events.iter().map(|e| e.ts).max().unwrap() + 1;
        let batches = batches_of(&events);
        let c = rng.random_range(5..batches.len() - 5);
        let at = epochs[c];
        let position = epochs.iter().position(|e| *e >= at).unwrap();
        let crash = rng.random_range(position + 1..batches.len());
        let (first_workers, second_workers) = (rng.random_range(1..4), rng.random_range(1..4));
        let requests = Arc::new(CheckpointRequests::default());
        requests.request(at);
        let first = run_rules(
            rules(),
            Arc::clone(&batches),
            0,
            crash,
            0,
            epochs[crash - 1].max(at),
            Vec::new(),
            Some(Durability {
                requests,
                restored: Arc::default(),
                restored_at: 0,
                erased: Arc::default(),
            }),
            first_workers,
        );
        let (durability, waiting) = world::restore_from(first.records, second_workers, at);
        let second = run_rules(
            rules(),
            Arc::clone(&batches),
            position,
            batches.len(),
            at,
            end,
            waiting,
            Some(durability),
            second_workers,
        );
        let got = world::stitched(first.decisions, second.decisions, at);
        compare(
            &format!("seed {seed}: checkpoint at {at}, workers {first_workers}→{second_workers}"),
            &got,
            &expected,
        );
    }
}
