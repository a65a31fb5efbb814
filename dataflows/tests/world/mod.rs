//! Seeded random worlds and an independent sequential model of contract §4's four default
//! rules, shared by the dataflow tests.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{Duration, NaiveDate};
use chrono_tz::Tz;
use kairos_dataflows::calendar::{cycle_containing, local_midnight};
use kairos_dataflows::checkpoint::{Durability, StateRecord};
use kairos_dataflows::DataflowStats;
use kairos_model::event::{
    Consent, Customer, CustomerRecord, Device, EventBody, Network, NetworkKind, Plan, Usage, UsageKind,
};
use kairos_model::time::DAY;
use kairos_model::{Channel, CountryCode, Event, Millis, MomentKind, Msisdn, Origin, Rule, RuleSet, Verdict};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Probe;
use timely::dataflow::{InputHandle, ProbeHandle};

const COUNTRIES: [&str; 4] = ["PT", "ES", "FR", "US"];
const ZONES: [&str; 3] = ["Europe/Lisbon", "America/Sao_Paulo", "Asia/Tokyo"];
pub const BATCH: usize = 7;
const GB: u64 = 1 << 30;

fn country(code: &str) -> CountryCode {
    CountryCode::parse(code).unwrap()
}

fn rule(
    id: &str,
    moment: MomentKind,
    channel: Channel,
    fallback: Option<Channel>,
    threshold: Option<f64>,
    cooldown: Millis,
) -> Rule {
    Rule {
        id: id.into(),
        version: "test".into(),
        moment,
        declared: None,
        priority: 0,
        class: Default::default(),
        quiet_hours: Default::default(),
        value: 1.0,
        holdout: 0.0,
        offer: "OFFER".into(),
        channel,
        fallback_channel: fallback,
        threshold,
        condition: None,
        cooldown,
        messages: BTreeMap::from([("en".into(), "m".into())]),
    }
}

pub fn rules() -> RuleSet {
    RuleSet {
        rules: vec![
            rule(
                "data-pack-100",
                MomentKind::DataPackThreshold,
                Channel::Sms,
                None,
                Some(1.0),
                0,
            ),
            rule(
                "data-pack-80",
                MomentKind::DataPackThreshold,
                Channel::Sms,
                None,
                Some(0.8),
                0,
            ),
            rule(
                "handset-upgrade",
                MomentKind::HandsetAgeing,
                Channel::Email,
                Some(Channel::Sms),
                None,
                0,
            ),
            rule(
                "roaming-welcome",
                MomentKind::RoamingArrival,
                Channel::Sms,
                None,
                None,
                DAY,
            ),
        ],
        policy: Default::default(),
        stages: Default::default(),
        stickiness: Default::default(),
        churn: Default::default(),
    }
}

const START: i64 = 1_782_864_000_000; // 2026-07-01T00:00:00Z

fn date(days_from_start: i64) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 7, 1).unwrap() + Duration::days(days_from_start)
}

fn record(rng: &mut ChaCha8Rng) -> CustomerRecord {
    CustomerRecord {
        account_id: "A".into(),
        address_id: None,
        home_country: country(COUNTRIES[rng.random_range(0..2)]),
        timezone: kairos_model::TimeZone::parse(ZONES[rng.random_range(0..ZONES.len())]).unwrap(),
        language: None,
        email: rng.random_bool(0.6).then(|| "x@example.com".to_string()),
        tenure_start: None,
        prepaid: None,
        plan: Some(Plan {
            id: None,
            data_pack_bytes: Some(rng.random_range(1..4) * GB),
            cycle_anchor_day: Some([1u8, 15, 30, 31][rng.random_range(0..4)]),
            monthly_fee: None,
        }),
        device: Some(Device {
            imei: Some(format!("35{}", rng.random_range(0..3))),
            model: None,
            // Handsets from 740 to 700 days old at the start: some age during the run.
            acquired: Some(date(-rng.random_range(700..740))),
        }),
        contract_end: Some(date(rng.random_range(-5..90))),
        consent: Consent {
            sms: rng.random_bool(0.8),
            email: rng.random_bool(0.5),
            push: false,
        },
        status: Default::default(),
        status_reason: None,
        products: Vec::new(),
    }
}

/// Seeded events in arrival order, with their arrival positions as origins.
pub fn random_events(seed: u64, count: usize) -> Vec<Event> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let subscribers = 10u64;
    let mut events: Vec<Event> = Vec::with_capacity(count);
    for position in 0..count {
        let msisdn = Msisdn::from_u64(351_910_000_000 + rng.random_range(0..subscribers)).unwrap();
        // Mostly increasing time over ~40 days with jitter, so some events arrive late.
        let base = START as u64 + (position as u64) * 90 * 60 * 1000;
        let ts = base.saturating_sub(rng.random_range(0..6 * 60 * 60 * 1000));
        let roll: f64 = rng.random();
        let body = if roll < 0.08 {
            EventBody::Customer(Customer::Upsert(Box::new(record(&mut rng))))
        } else if roll < 0.09 {
            EventBody::Customer(Customer::Deleted)
        } else if roll < 0.55 {
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
        } else if roll < 0.95 {
            EventBody::Usage(Usage {
                kind: UsageKind::Data,
                amount: rng.random_range(0..GB / 3),
                peer: None,
            })
        } else {
            EventBody::Usage(Usage {
                kind: UsageKind::Voice,
                amount: 60,
                peer: None,
            })
        };
        // Some events share an instant, to exercise the tie-breaking order.
        let ts = if rng.random_bool(0.1) { ts - ts % 3_600_000 } else { ts };
        let event = Event {
            ts,
            msisdn,
            origin: Origin {
                source: 0,
                position: position as u64,
            },
            body,
        };
        // A few duplicates, delivered again later.
        if rng.random_bool(0.03) && !events.is_empty() {
            let mut again = events[rng.random_range(0..events.len())].clone();
            again.origin.position = position as u64 + 1_000_000;
            events.push(again);
        }
        events.push(event);
    }
    events
}

/// The epoch of each batch: the newest `ts` of the batches before it (lateness 0).
pub fn batch_epochs(events: &[Event]) -> Vec<Millis> {
    let mut epochs = Vec::new();
    let mut newest = 0;
    for batch in events.chunks(BATCH) {
        epochs.push(newest);
        newest = newest.max(batch.iter().map(|e| e.ts).max().unwrap_or(0));
    }
    epochs
}

/// (moment time, subscriber, rule, dedupe key, channel, verdict)
pub type Outcome = (Millis, Msisdn, String, String, Channel, &'static str);

#[derive(Default)]
struct Sub {
    since: Option<Millis>,
    customer: Option<CustomerRecord>,
    country: Option<CountryCode>,
    cycle: Option<(Millis, u64)>,
    /// Data used before any customer record: counted in once one arrives.
    held: Vec<(Millis, u64)>,
    fired: BTreeSet<(String, String)>,
    last_sent: HashMap<(String, String), Millis>,
    /// (rule, instant, key) of every moment decided: one moment, one decision (contract §2:
    /// they make the `action_id`), however many events find it within a week.
    judged: BTreeSet<(String, Millis, String)>,
}

/// When the handset condition starts to hold (computed here without the engine's code).
fn handset_starts(r: &CustomerRecord) -> Option<(Millis, String)> {
    let tz: Tz = r.timezone.tz();
    let device = r.device.as_ref()?;
    let aged = local_midnight(device.acquired? + Duration::days(730), tz);
    let ending = local_midnight(r.contract_end? - Duration::days(60), tz);
    Some((aged.max(ending), device.imei.clone().unwrap_or_default()))
}

struct Model {
    rules: RuleSet,
    subs: HashMap<Msisdn, Sub>,
    timers: BTreeSet<(Millis, Msisdn, String)>,
    out: Vec<Outcome>,
}

impl Model {
    fn decide(&mut self, msisdn: Msisdn, kind: MomentKind, at: Millis, key: String, only: Option<&str>) {
        let sub = self.subs.get_mut(&msisdn).unwrap();
        let Some(customer) = sub.customer.clone() else { return };
        for rule in self
            .rules
            .rules
            .iter()
            .filter(|r| r.moment == kind && only.is_none_or(|o| o == r.id))
        {
            // Remembered for a week back from the newest moment judged (`JUDGED_WINDOW`).
            let newest = sub.judged.iter().map(|(_, t, _)| *t).max().unwrap_or(0);
            let horizon = newest.saturating_sub(kairos_dataflows::state::JUDGED_WINDOW);
            if at >= horizon && sub.judged.contains(&(rule.id.clone(), at, key.clone())) {
                continue;
            }
            sub.judged.insert((rule.id.clone(), at, key.clone()));
            let reachable = |c: Channel| match c {
                Channel::Sms => customer.consent.sms,
                Channel::Email => customer.consent.email && customer.email.is_some(),
                Channel::Push => customer.consent.push,
            };
            let channel = std::iter::once(rule.channel)
                .chain(rule.fallback_channel)
                .find(|c| reachable(*c));
            let last = sub.last_sent.get(&(rule.id.clone(), key.clone()));
            let verdict = match channel {
                None => "no_consent",
                Some(_) if last.is_some_and(|l| at < l + rule.cooldown) => "cooldown",
                Some(_) => {
                    sub.last_sent.insert((rule.id.clone(), key.clone()), at);
                    "sent"
                }
            };
            self.out.push((
                at,
                msisdn,
                rule.id.clone(),
                key.clone(),
                channel.unwrap_or(rule.channel),
                verdict,
            ));
        }
    }

    fn handset(&mut self, msisdn: Msisdn, record_ts: Millis, now: Millis) {
        let sub = self.subs.get_mut(&msisdn).unwrap();
        let Some((starts, imei)) = sub.customer.as_ref().and_then(handset_starts) else {
            return;
        };
        if sub.fired.contains(&("handset".to_string(), imei.clone())) {
            return;
        }
        if starts > now {
            self.timers.insert((starts, msisdn, imei));
            return;
        }
        sub.fired.insert(("handset".to_string(), imei.clone()));
        self.decide(msisdn, MomentKind::HandsetAgeing, starts.max(record_ts), imei, None);
    }

    fn apply(&mut self, event: &Event, now: Millis) {
        let msisdn = event.msisdn;
        let sub = self.subs.entry(msisdn).or_default();
        // Erased (a deletion and no newer record): the number's events build no state.
        let erased = sub.since.is_some() && sub.customer.is_none();
        if erased && !matches!(event.body, EventBody::Customer(_)) {
            return;
        }
        match &event.body {
            EventBody::Customer(update) => {
                if sub.since.is_some_and(|s| event.ts < s) {
                    return;
                }
                match update {
                    Customer::Upsert(r) => {
                        sub.customer = Some((**r).clone());
                        sub.since = Some(event.ts);
                        let tz: Tz = r.timezone.tz();
                        let anchor = r.plan.as_ref().and_then(|p| p.cycle_anchor_day).unwrap_or(1);
                        let mut held = std::mem::take(&mut sub.held);
                        held.sort();
                        for (ts, bytes) in held {
                            let start = cycle_containing(ts, tz, anchor).start;
                            sub.cycle = match sub.cycle {
                                Some((s, used)) if s == start => Some((s, used + bytes)),
                                Some((s, used)) if start < s => Some((s, used)),
                                _ => Some((start, bytes)),
                            };
                        }
                        self.handset(msisdn, event.ts, now);
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
                let previous = sub.country;
                let Some(now_in) = n.country else { return };
                sub.country = Some(now_in);
                let Some(customer) = &sub.customer else { return };
                if now_in != customer.home_country && previous != Some(now_in) {
                    self.decide(msisdn, MomentKind::RoamingArrival, event.ts, now_in.to_string(), None);
                }
            }
            EventBody::Usage(u) if u.kind == UsageKind::Data => {
                let Some(customer) = &sub.customer else {
                    sub.held.push((event.ts, u.amount));
                    return;
                };
                let plan = customer.plan.clone().unwrap();
                let tz: Tz = customer.timezone.tz();
                let cycle = cycle_containing(event.ts, tz, plan.cycle_anchor_day.unwrap());
                let used = match sub.cycle {
                    Some((start, used)) if start == cycle.start => used + u.amount,
                    Some((start, _)) if cycle.start < start => return,
                    _ => u.amount,
                };
                sub.cycle = Some((cycle.start, used));
                let key = kairos_model::time::format_rfc3339(cycle.start);
                let pack = plan.data_pack_bytes.unwrap();
                let mut crossed = Vec::new();
                for rule in self
                    .rules
                    .rules
                    .iter()
                    .filter(|r| r.moment == MomentKind::DataPackThreshold)
                {
                    let fired = sub.fired.contains(&(rule.id.clone(), key.clone()));
                    if used as f64 / pack as f64 >= rule.threshold.unwrap() && !fired {
                        sub.fired.retain(|(r, _)| *r != rule.id);
                        sub.fired.insert((rule.id.clone(), key.clone()));
                        crossed.push(rule.id.clone());
                    }
                }
                for id in crossed {
                    self.decide(msisdn, MomentKind::DataPackThreshold, event.ts, key.clone(), Some(&id));
                }
            }
            _ => {}
        }
    }

    fn fire(&mut self, due: Millis, msisdn: Msisdn, imei: String) {
        let Some(sub) = self.subs.get(&msisdn) else { return };
        if sub.customer.as_ref().and_then(handset_starts) == Some((due, imei)) {
            self.handset(msisdn, due, due);
        }
    }
}

/// The sequential model of contract §4, independent of the dataflow's code.
pub fn model(events: &[Event]) -> Vec<Outcome> {
    let epochs = batch_epochs(events);
    let mut ordered: Vec<(Millis, &Event)> = Vec::new();
    for (batch, epoch) in events.chunks(BATCH).zip(&epochs) {
        ordered.extend(batch.iter().map(|e| (e.ts.max(*epoch), e)));
    }
    ordered.sort_by_key(|(at, e)| (*at, e.ts, e.kind(), e.origin));
    let end = events.iter().map(|e| e.ts).max().unwrap_or(0);

    let mut m = Model {
        rules: rules(),
        subs: HashMap::new(),
        timers: BTreeSet::new(),
        out: Vec::new(),
    };
    let fire_before = |m: &mut Model, limit: Millis| {
        // Timers at instants before `limit`, in order; a timer fires after the events of its instant.
        while let Some(first) = m.timers.first().cloned().filter(|t| t.0 < limit) {
            m.timers.remove(&first);
            let due = first.0;
            let mut same: Vec<_> = m.timers.iter().filter(|t| t.0 == due).cloned().collect();
            for t in &same {
                m.timers.remove(t);
            }
            same.insert(0, first);
            same.sort();
            for (due, msisdn, imei) in same {
                m.fire(due, msisdn, imei);
            }
        }
    };
    let mut index = 0;
    while index < ordered.len() {
        let instant = ordered[index].0;
        fire_before(&mut m, instant);
        while index < ordered.len() && ordered[index].0 == instant {
            m.apply(ordered[index].1, instant);
            index += 1;
        }
        // Timers due at this very instant fire after its events.
        fire_before(&mut m, instant + 1);
    }
    fire_before(&mut m, end + 1);
    let mut out = m.out;
    out.sort();
    out
}

/// The input cut into batches of [`BATCH`] events, each with its epoch.
pub fn batches_of(events: &[Event]) -> Arc<Vec<(Millis, Vec<Event>)>> {
    Arc::new(
        batch_epochs(events)
            .into_iter()
            .zip(events.chunks(BATCH).map(<[Event]>::to_vec))
            .collect(),
    )
}

/// What a run of the dataflow produced, by the instant it was emitted at.
pub struct RunOutput {
    pub decisions: Vec<(Millis, Outcome)>,
    pub records: Vec<(Millis, StateRecord)>,
}

/// Runs the dataflow on batches `from..to` (each at its epoch, never below `start`), with
/// `durability` (if any); worker 0 first re-sends `waiting` at `start`. Ends by advancing every input
/// to `end` and waiting for the probe.
#[allow(clippy::too_many_arguments)]
pub fn run(
    batches: Arc<Vec<(Millis, Vec<Event>)>>,
    from: usize,
    to: usize,
    start: Millis,
    end: Millis,
    waiting: Vec<Event>,
    durability: Option<Durability>,
    workers: usize,
) -> RunOutput {
    run_rules(rules(), batches, from, to, start, end, waiting, durability, workers)
}

/// [`run`] with these rules instead of the four defaults.
#[allow(clippy::too_many_arguments)]
pub fn run_rules(
    rules: RuleSet,
    batches: Arc<Vec<(Millis, Vec<Event>)>>,
    from: usize,
    to: usize,
    start: Millis,
    end: Millis,
    waiting: Vec<Event>,
    durability: Option<Durability>,
    workers: usize,
) -> RunOutput {
    let decisions = Arc::new(Mutex::new(Vec::new()));
    let records = Arc::new(Mutex::new(Vec::new()));
    let (d_sink, r_sink) = (Arc::clone(&decisions), Arc::clone(&records));
    let waiting = Arc::new(waiting);
    let rules = Arc::new(rules);
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
            // Households on, as in the engine: they must not change the four rules' decisions.
            let config = kairos_dataflows::households::HouseholdConfig::default();
            let outputs = kairos_dataflows::decisions(
                input.to_stream(scope),
                rules,
                None,
                stats,
                durability,
                &config,
                kairos_dataflows::Retention::default(),
                kairos_dataflows::Observe::default(),
            );
            let (out, state) = (outputs.decisions, outputs.state);
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

/// What a checkpoint's records restore, as a second run with `workers` workers takes it:
/// the durability of that run (its states sharded as the dataflow places them, restored at
/// `at`), and the events that were waiting.
pub fn restore_from(records: Vec<(Millis, StateRecord)>, workers: usize, at: Millis) -> (Durability, Vec<Event>) {
    let mut states: BTreeMap<Msisdn, kairos_dataflows::state::SubscriberState> = BTreeMap::new();
    let mut waiting = Vec::new();
    for (_, record) in records {
        match record {
            StateRecord::Subscriber { msisdn, state } => match state {
                Some(state) => {
                    states.insert(msisdn, *state);
                }
                None => {
                    states.remove(&msisdn);
                }
            },
            StateRecord::Pending { events, .. } => waiting.extend(events),
        }
    }
    let mut restored = vec![Vec::new(); workers];
    for (msisdn, state) in states {
        restored[kairos_dataflows::subscriber_worker(msisdn, workers)].push((msisdn, state));
    }
    let durability = Durability {
        requests: Arc::new(kairos_dataflows::checkpoint::CheckpointRequests::default()),
        restored: Arc::new(Mutex::new(restored)),
        restored_at: at,
        erased: Arc::default(),
    };
    (durability, waiting)
}

/// The outcomes of a run cut at a checkpoint at `at`: the first run's before it, then all of
/// the second's, sorted.
pub fn stitched(first: Vec<(Millis, Outcome)>, second: Vec<(Millis, Outcome)>, at: Millis) -> Vec<Outcome> {
    let mut got: Vec<Outcome> = first.into_iter().filter(|(t, _)| *t < at).map(|(_, o)| o).collect();
    got.extend(second.into_iter().map(|(_, o)| o));
    got.sort();
    got
}
