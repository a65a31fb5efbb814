//! A seeded synthetic operator: subscribers with plans, devices, consent and home
//! countries, and a day-by-day stream of their network signalling, usage, self-care logins
//! and top-ups, with roaming trips (border flapping included) and a sprinkle of invalid
//! messages. The same seed gives the same events, byte for byte.
//!
//! By default the subscribers live in true households ([`crate::households`]), and the events
//! carry the evidence: shared `account_id` / `address_id` in customer records, calls and SMS
//! between members (`peer` on voice/sms usage and on network `call`/`sms`, mostly in the local
//! evening), top-ups paid by the decision maker (`payer`), handsets handed down (the `imei` of
//! customer records and network events moves to another member, with a new customer record for
//! both), self-care logins with another member's `account_id`, households travelling together,
//! and an off-net member on a competitor called by several members. The noise: colleagues
//! calling in working hours, corner shops paying strangers' top-ups, hub numbers many call.

use std::collections::HashMap;

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use crate::churn::ChurnLayer;
use crate::households::{self, device_changes, Contact, HandDown, HouseholdSpec, Population};
use crate::progress::Progress;

/// What world to make.
#[derive(Debug, Clone)]
pub struct WorldSpec {
    pub subscribers: u64,
    pub days: u32,
    pub start: NaiveDate,
    pub seed: u64,
    /// Average events per subscriber per day (network + usage + self-care + top-ups).
    pub events_per_day: u32,
    /// Share of subscribers who travel on a given day.
    pub travel_rate: f64,
    /// Share of lines that are invalid on purpose.
    pub invalid_rate: f64,
    /// Share of lines sent twice in a row (an at-least-once source's duplicates).
    pub duplicate_rate: f64,
}

/// Home markets: (country, time zone, language, MCC of the home network).
pub(crate) const HOMES: &[Home] = &[
    ("PT", "Europe/Lisbon", "pt", "268"),
    ("ES", "Europe/Madrid", "es", "214"),
    ("FR", "Europe/Paris", "fr", "208"),
    ("DE", "Europe/Berlin", "de", "262"),
];

/// Where people travel, by MCC or country code.
const DESTINATIONS: &[(&str, &str)] = &[
    ("US", "310"),
    ("GB", "234"),
    ("ES", "214"),
    ("FR", "208"),
    ("IT", "222"),
    ("BR", "724"),
    ("JP", "440"),
    ("MA", "604"),
    ("CH", "228"),
    ("DE", "262"),
];

const INVALID_LINES: &[&str] = &[
    "not json at all",
    "{\"type\":\"network\",\"ts\":\"yesterday\",\"msisdn\":\"351910000001\",\"event\":\"attach\",\"country\":\"PT\"}",
    "{\"type\":\"teleport\",\"ts\":\"2026-07-01T00:00:00Z\",\"msisdn\":\"351910000001\"}",
    "{\"type\":\"usage\",\"ts\":\"2026-07-01T00:00:00Z\",\"msisdn\":\"351910000001\",\"kind\":\"data\",\"bytes\":-5}",
    "[1,2,3]",
    "{\"type\":\"topup\",\"ts\":\"2026-07-01T00:00:00Z\",\"amount\":5}",
];

/// The subscriber number of the `i`-th subscriber (Portuguese-looking mobile numbers).
pub fn msisdn(i: u64) -> String {
    format!("3519{:08}", 10_000_000 + i)
}

fn rfc3339(t: NaiveDateTime) -> String {
    Utc.from_utc_datetime(&t).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Generates the world's events in time order, as JSON lines, handing each to `emit`. The
/// world has true households ([`HouseholdSpec::default`]); see [`generate_with`].
pub fn generate(spec: &WorldSpec, emit: impl FnMut(&str)) {
    generate_with(spec, &HouseholdSpec::default(), emit);
}

/// Generates the world's events with the household structure `households` (with
/// [`HouseholdSpec::off`], the world without households of before, byte for byte).
pub fn generate_with(spec: &WorldSpec, households: &HouseholdSpec, emit: impl FnMut(&str)) {
    let population = households.enabled.then(|| Population::build(spec, households));
    generate_population(spec, population.as_ref(), emit);
}

/// Generates the world's events for a population built by [`Population::build`] from the same
/// `spec` (or for no households at all).
pub fn generate_population(spec: &WorldSpec, population: Option<&Population>, emit: impl FnMut(&str)) {
    generate_reporting(spec, population, None, None, emit);
}

/// Generates the world into the file `path`, a JSON line per event, with `churn` planted as
/// [`generate_reporting`] does; the number of lines written.
pub fn write_world(
    path: &std::path::Path,
    spec: &WorldSpec,
    population: Option<&Population>,
    churn: Option<&mut ChurnLayer>,
) -> std::io::Result<u64> {
    use std::io::Write as _;
    let mut writer = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut lines = 0u64;
    let mut failure = None;
    generate_reporting(spec, population, churn, None, |line| {
        if failure.is_none() {
            if let Err(e) = writer.write_all(line.as_bytes()).and_then(|()| writer.write_all(b"\n")) {
                failure = Some(e);
            }
        }
        lines += 1;
    });
    if let Some(e) = failure {
        return Err(e);
    }
    writer.flush()?;
    Ok(lines)
}

/// [`generate_population`], with the churners and retention answers of `churn` planted (a
/// world with households only; see [`crate::churn`]), counting on `progress` the
/// subscriber-days generated (of `subscribers × days`), the lines emitted and the newest
/// event time; the world is the same with or without progress.
pub fn generate_reporting(
    spec: &WorldSpec,
    population: Option<&Population>,
    mut churn: Option<&mut ChurnLayer>,
    progress: Option<&Progress>,
    mut emit: impl FnMut(&str),
) {
    if population.is_none() {
        churn = None;
    }
    if let Some(progress) = progress {
        progress.begin(spec.subscribers.saturating_mul(u64::from(spec.days)));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let start = spec.start.and_hms_opt(0, 0, 0).expect("midnight exists");
    let mut homes = Vec::with_capacity(spec.subscribers as usize);
    let changes = population.map(device_changes).unwrap_or_default();
    // Customer records of those who hand a handset down or get one, to restate later.
    let mut records: HashMap<u32, Value> = HashMap::new();
    if let Some(pop) = population {
        assert_eq!(pop.subscribers(), spec.subscribers, "population of another world");
    }

    // Day 0, 00:00: every subscriber's customer record.
    for i in 0..spec.subscribers {
        let record = match population {
            None => {
                let home = *HOMES.choose(&mut rng).expect("non-empty");
                homes.push(home);
                customer(&mut rng, i, home, start)
            }
            Some(pop) => {
                let home = HOMES[pop.household(i as u32).home];
                homes.push(home);
                let mut record = household_customer(&mut rng, i, home, start, pop);
                if changes.contains_key(&(i as u32)) {
                    records.insert(i as u32, record.clone());
                }
                if let Some(layer) = churn.as_deref_mut() {
                    layer.observe(i as u32, &mut record);
                }
                record
            }
        };
        emit(&record.to_string());
    }
    if let (Some(layer), Some(pop)) = (churn.as_deref_mut(), population) {
        layer.draw(pop);
    }
    if let Some(progress) = progress {
        progress.add_events(spec.subscribers);
    }

    for day in 0..spec.days {
        let day_start = start + Duration::days(i64::from(day));
        let weekday = day_start.weekday().num_days_from_monday() < 5;
        let mut day_lines = Vec::new();
        // Lines generated are counted a subscriber at a time, not one atomic add per event.
        let mut counted = 0;
        // Households travel together: each household's trip of the day (if any).
        let trips: Vec<Option<Trip>> = match population {
            None => Vec::new(),
            Some(pop) => pop
                .households()
                .iter()
                .map(|h| {
                    rng.random_bool(spec.travel_rate)
                        .then(|| Trip::draw(&mut rng, HOMES[h.home], day_start))
                })
                .collect(),
        };
        for (i, home) in homes.iter().enumerate() {
            let i = i as u64;
            let id = msisdn(i);
            let trip = match population {
                None => {
                    let travels = rng.random_bool(spec.travel_rate);
                    let trip = Trip::draw(&mut rng, *home, day_start);
                    travels.then_some(trip)
                }
                Some(pop) => match trips[pop.household_of(i as u32) as usize] {
                    // Most of the household goes, their phones attaching within minutes.
                    Some(trip) if rng.random_bool(0.85) => Some(Trip {
                        arrival: trip.arrival + Duration::seconds(rng.random_range(0..1800)),
                        ..trip
                    }),
                    Some(_) => None,
                    // Now and then someone travels alone (business).
                    None => rng
                        .random_bool(spec.travel_rate * 0.15)
                        .then(|| Trip::draw(&mut rng, *home, day_start)),
                },
            };
            let flaps = trip.is_some() && rng.random_bool(0.2);
            let events = rng
                .random_range(spec.events_per_day / 2..=spec.events_per_day * 3 / 2)
                .max(1);
            let place = |at: NaiveDateTime| match trip {
                Some(trip) if at >= trip.arrival => (trip.country, trip.mcc),
                _ => (home.0, home.3),
            };
            for _ in 0..events {
                let (at, mut event) = match population {
                    None => legacy_event(&mut rng, spec, i, &id, day_start, place),
                    Some(pop) => {
                        let day = Day::of(pop, i as u32, day_start, weekday);
                        let imei = |at: NaiveDateTime| imei_at(i as u32, at, &changes, start);
                        household_event(&mut rng, pop, i as u32, &id, &day, place, imei)
                    }
                };
                if churn
                    .as_deref()
                    .is_none_or(|layer| layer.keep(i as u32, at, &mut event))
                {
                    day_lines.push((at, i, event.to_string()));
                }
            }
            // The contacts of who they know: friends, busy colleagues, the service line.
            if let Some(pop) = population {
                let day_of = Day::of(pop, i as u32, day_start, weekday);
                for (peer, contact) in pop.planned(&mut rng, i as u32, day, weekday) {
                    let at = day_start + Duration::milliseconds(rng.random_range(0..86_400_000));
                    let at = day_of.retime(&mut rng, contact, at);
                    let mut event = if rng.random_bool(0.5) {
                        json!({"type":"usage","ts":rfc3339(at),"msisdn":id,"kind":"sms","count":rng.random_range(1u64..=3),"peer":peer})
                    } else {
                        json!({"type":"usage","ts":rfc3339(at),"msisdn":id,"kind":"voice","seconds":rng.random_range(5u64..900),"peer":peer})
                    };
                    if churn
                        .as_deref()
                        .is_none_or(|layer| layer.keep(i as u32, at, &mut event))
                    {
                        day_lines.push((at, i, event.to_string()));
                    }
                }
                if let Some(layer) = churn.as_deref_mut() {
                    for (at, event) in layer.day_events(pop, i as u32, day_start) {
                        day_lines.push((at, i, event.to_string()));
                    }
                }
            }
            if let Some(progress) = progress {
                progress.add_done(1);
                progress.add_events((day_lines.len() - counted) as u64);
                counted = day_lines.len();
            }
            if let Some(trip) = trip {
                let (abroad, abroad_mcc, arrival) = (trip.country, trip.mcc, trip.arrival);
                let ts = rfc3339(arrival);
                let mut lines = vec![(arrival, json!({"type":"network","ts":ts,"msisdn":id,"event":"location_update","country":abroad,"mcc":abroad_mcc}).to_string())];
                if flaps {
                    let back = arrival + Duration::minutes(rng.random_range(5..90));
                    let again = back + Duration::minutes(rng.random_range(5..90));
                    lines.push((back, json!({"type":"network","ts":rfc3339(back),"msisdn":id,"event":"location_update","country":home.0}).to_string()));
                    lines.push((again, json!({"type":"network","ts":rfc3339(again),"msisdn":id,"event":"location_update","country":abroad}).to_string()));
                }
                // A churner who has left (or whose SIM lies in a drawer) travels with no SIM
                // of this operator (the draws are made all the same: the world's random
                // stream must not depend on who left).
                if churn.as_deref().is_none_or(|layer| !layer.quiet(i as u32, arrival)) {
                    day_lines.extend(lines.into_iter().map(|(at, line)| (at, i, line)));
                }
            }
        }
        // Hand-downs: the decision maker gets a new handset, another member the old one.
        if let Some(pop) = population {
            for hd in pop.hand_downs().filter(|hd| hd.day == day) {
                let at = day_start + Duration::milliseconds(i64::from(hd.ms));
                let mut giver = records[&hd.giver].clone();
                let mut receiver = records[&hd.receiver].clone();
                receiver["device"] = giver["device"].clone();
                giver["device"] =
                    json!({"imei": new_imei(hd.giver), "model": "Phone Z", "acquired": at.date().to_string()});
                for (s, mut record) in [(hd.giver, giver), (hd.receiver, receiver)] {
                    record["ts"] = json!(rfc3339(at));
                    if let Some(layer) = churn.as_deref_mut() {
                        // A new record of someone who has left would make them a customer again.
                        if layer.gone(s, at) {
                            continue;
                        }
                        layer.restate(s, &mut record);
                    }
                    day_lines.push((at, u64::from(s), record.to_string()));
                }
            }
        }
        if spec.invalid_rate > 0.0 {
            let invalid = (day_lines.len() as f64 * spec.invalid_rate).round() as usize;
            for _ in 0..invalid {
                let at = day_start + Duration::milliseconds(rng.random_range(0..86_400_000));
                let line = INVALID_LINES.choose(&mut rng).copied().unwrap_or("{");
                day_lines.push((at, u64::MAX, line.to_string()));
            }
        }
        // Each day is emitted once complete: memory holds one day, not the whole world.
        day_lines.sort();
        let mut duplicates = 0;
        for (_, _, line) in &day_lines {
            emit(line);
            // No draw at all when there are no duplicates: such worlds stay byte for byte.
            if spec.duplicate_rate > 0.0 && rng.random_bool(spec.duplicate_rate) {
                emit(line);
                duplicates += 1;
            }
        }
        if let Some(progress) = progress {
            progress.add_events((day_lines.len() - counted + duplicates) as u64);
            if let Some((newest, _, _)) = day_lines.last() {
                progress.saw_event_time(u64::try_from(newest.and_utc().timestamp_millis()).unwrap_or(0));
            }
        }
    }
}

type Home = (&'static str, &'static str, &'static str, &'static str);

/// A subscriber's (or a household's) trip abroad on a day.
#[derive(Debug, Clone, Copy)]
struct Trip {
    country: &'static str,
    mcc: &'static str,
    /// Lands between 06:00 and 20:00 (UTC).
    arrival: NaiveDateTime,
}

impl Trip {
    fn draw(rng: &mut ChaCha8Rng, home: Home, day_start: NaiveDateTime) -> Trip {
        let (abroad, abroad_mcc) = *DESTINATIONS.choose(rng).expect("non-empty");
        let (country, mcc) = if abroad == home.0 {
            ("US", "310")
        } else {
            (abroad, abroad_mcc)
        };
        let arrival = day_start + Duration::minutes(rng.random_range(360..1200));
        Trip { country, mcc, arrival }
    }
}

/// One event of the world without households.
fn legacy_event(
    rng: &mut ChaCha8Rng,
    spec: &WorldSpec,
    i: u64,
    id: &str,
    day_start: NaiveDateTime,
    place: impl Fn(NaiveDateTime) -> (&'static str, &'static str),
) -> (NaiveDateTime, Value) {
    let at = day_start + Duration::milliseconds(rng.random_range(0..86_400_000));
    let (country, mcc) = place(at);
    let ts = rfc3339(at);
    let roll: f64 = rng.random();
    let event = if roll < 0.45 {
        let kind = ["location_update", "attach", "call", "sms"]
            .choose(rng)
            .copied()
            .unwrap_or("attach");
        // Half the records name the country, half only the MCC (contract §1).
        if rng.random_bool(0.5) {
            json!({"type":"network","ts":ts,"msisdn":id,"event":kind,"country":country,"mcc":mcc,"cell":format!("{mcc}-01-{}", rng.random_range(1000..9999))})
        } else {
            json!({"type":"network","ts":ts,"msisdn":id,"event":kind,"mcc":mcc})
        }
    } else if roll < 0.85 {
        // Heavy users (one in five) burn through small packs within days.
        let top = if i.is_multiple_of(5) { 400_000_000 } else { 50_000_000 };
        json!({"type":"usage","ts":ts,"msisdn":id,"kind":"data","bytes":rng.random_range(10_000u64..top)})
    } else if roll < 0.93 {
        let peer = msisdn(rng.random_range(0..spec.subscribers));
        json!({"type":"usage","ts":ts,"msisdn":id,"kind":"voice","seconds":rng.random_range(5u64..900),"peer":peer})
    } else if roll < 0.98 {
        let page = ["home", "plans", "roaming", "billing", "cancel"]
            .choose(rng)
            .copied()
            .unwrap_or("home");
        json!({"type":"selfcare","ts":ts,"msisdn":id,"account_id":format!("A-{i}"),"channel":"app","page":page})
    } else {
        let amount = [5.0, 10.0, 20.0].choose(rng).copied().unwrap_or(10.0);
        json!({"type":"topup","ts":ts,"msisdn":id,"amount":amount,"currency":"EUR"})
    };
    (at, event)
}

/// The day an event of a household world falls on, for the subscriber's local time.
struct Day {
    start: NaiveDateTime,
    weekday: bool,
    /// Hours east of UTC.
    offset: i64,
    /// Shares of family calls and of service-line calls in the evening.
    family_evening: f64,
    service_evening: f64,
}

impl Day {
    /// Subscriber `s`'s day starting at `start` (UTC midnight).
    fn of(pop: &Population, s: u32, start: NaiveDateTime, weekday: bool) -> Day {
        Day {
            start,
            weekday,
            offset: households::utc_offset_hours(pop.household(s).home, start.date()),
            family_evening: pop.noise().family_evening,
            service_evening: pop.noise().service_evening,
        }
    }

    /// A random instant between `from` and `to` o'clock local time.
    fn local(&self, rng: &mut ChaCha8Rng, from: i64, to: i64) -> NaiveDateTime {
        self.start
            + Duration::hours(from - self.offset)
            + Duration::milliseconds(rng.random_range(0..(to - from) * 3_600_000))
    }

    /// The local hour of `at`.
    fn hour(&self, at: NaiveDateTime) -> i64 {
        ((at - self.start).num_hours() + self.offset).rem_euclid(24)
    }

    /// When a call or SMS to `contact` happens: family and friends mostly in the evening,
    /// colleagues in working hours, businesses in opening hours (mostly), anyone else at any
    /// time.
    fn retime(&self, rng: &mut ChaCha8Rng, contact: Contact, at: NaiveDateTime) -> NaiveDateTime {
        match contact {
            Contact::Family | Contact::Competitor if rng.random_bool(self.family_evening) => self.local(rng, 18, 23),
            Contact::WeeklyFriend | Contact::CloseFriend if rng.random_bool(0.75) => self.local(rng, 18, 23),
            Contact::WeeklyFriend | Contact::CloseFriend => self.local(rng, 9, 23),
            Contact::Colleague if rng.random_bool(0.9) => self.local(rng, 9, 18),
            Contact::BusyColleague => self.local(rng, 9, 18),
            Contact::ServiceLine if rng.random_bool(self.service_evening) => self.local(rng, 18, 21),
            Contact::Hub | Contact::ServiceLine if rng.random_bool(0.8) => self.local(rng, 8, 20),
            _ => at,
        }
    }
}

/// One event of a world with households: the same mix as [`legacy_event`], with the peers of
/// calls and SMS, the payers of top-ups and the self-care accounts drawn from the population.
fn household_event(
    rng: &mut ChaCha8Rng,
    pop: &Population,
    i: u32,
    id: &str,
    day: &Day,
    place: impl Fn(NaiveDateTime) -> (&'static str, &'static str),
    imei: impl Fn(NaiveDateTime) -> String,
) -> (NaiveDateTime, Value) {
    let mut at = day.start + Duration::milliseconds(rng.random_range(0..86_400_000));
    let roll: f64 = rng.random();
    let peer = |at: &mut NaiveDateTime, rng: &mut ChaCha8Rng| {
        let (peer, contact) = pop.pick_peer(rng, i, day.weekday);
        *at = day.retime(rng, contact, *at);
        peer
    };
    let event = if roll < 0.45 {
        let kind = ["location_update", "attach", "call", "sms"]
            .choose(rng)
            .copied()
            .unwrap_or("attach");
        let named = rng.random_bool(pop.noise().cell_rate);
        let peer = matches!(kind, "call" | "sms").then(|| peer(&mut at, rng));
        let (country, mcc) = place(at);
        let ts = rfc3339(at);
        // Some records name the country (with the cell and handset), the others only the MCC.
        let mut event = if named {
            let abroad = mcc != HOMES[pop.household(i).home].3;
            let cell = pop.cell(rng, i, mcc, abroad, day.hour(at), day.weekday);
            json!({"type":"network","ts":ts,"msisdn":id,"event":kind,"country":country,"mcc":mcc,"cell":cell,"imei":imei(at)})
        } else {
            json!({"type":"network","ts":ts,"msisdn":id,"event":kind,"mcc":mcc})
        };
        if let Some(peer) = peer {
            event["peer"] = json!(peer);
        }
        event
    } else if roll < 0.85 {
        // Heavy users (one in five) burn through small packs within days.
        let top = if i.is_multiple_of(5) { 400_000_000 } else { 50_000_000 };
        json!({"type":"usage","ts":rfc3339(at),"msisdn":id,"kind":"data","bytes":rng.random_range(10_000u64..top)})
    } else if roll < 0.90 {
        let peer = peer(&mut at, rng);
        json!({"type":"usage","ts":rfc3339(at),"msisdn":id,"kind":"voice","seconds":rng.random_range(5u64..900),"peer":peer})
    } else if roll < 0.93 {
        let peer = peer(&mut at, rng);
        json!({"type":"usage","ts":rfc3339(at),"msisdn":id,"kind":"sms","count":rng.random_range(1u64..=3),"peer":peer})
    } else if roll < 0.98 {
        let page = ["home", "plans", "roaming", "billing", "cancel"]
            .choose(rng)
            .copied()
            .unwrap_or("home");
        json!({"type":"selfcare","ts":rfc3339(at),"msisdn":id,"account_id":pop.selfcare_account_id(i),"channel":"app","page":page})
    } else {
        let amount = [5.0, 10.0, 20.0].choose(rng).copied().unwrap_or(10.0);
        let payer = match (pop.paid_by(i), pop.shop_of(i)) {
            (Some(parent), _) if rng.random_bool(0.85) => Some(parent),
            (_, Some(shop)) if rng.random_bool(0.7) => {
                at = day.local(rng, 9, 20);
                Some(shop)
            }
            _ => None,
        };
        let mut event = json!({"type":"topup","ts":rfc3339(at),"msisdn":id,"amount":amount,"currency":"EUR"});
        if let Some(payer) = payer {
            event["payer"] = json!(msisdn(u64::from(payer)));
        }
        event
    };
    (at, event)
}

/// Subscriber `i`'s first handset.
fn first_imei(i: u32) -> String {
    format!("35{i:013}")
}

/// The new handset a decision maker gets when handing the old one down.
fn new_imei(i: u32) -> String {
    format!("86{i:013}")
}

/// The handset subscriber `i` uses at `at`.
fn imei_at(i: u32, at: NaiveDateTime, changes: &HashMap<u32, HandDown>, start: NaiveDateTime) -> String {
    match changes.get(&i) {
        Some(hd) if at >= start + Duration::days(i64::from(hd.day)) + Duration::milliseconds(i64::from(hd.ms)) => {
            if hd.giver == i {
                new_imei(i)
            } else {
                first_imei(hd.giver)
            }
        }
        _ => first_imei(i),
    }
}

/// A customer record in a world with households: accounts, addresses, packs and prepaid
/// from the population.
fn household_customer(rng: &mut ChaCha8Rng, i: u64, home: Home, at: NaiveDateTime, pop: &Population) -> Value {
    let s = i as u32;
    let (country, timezone, language, _) = home;
    let acquired = at.date() - Duration::days(rng.random_range(30..1500));
    let contract_end = at.date() + Duration::days(rng.random_range(-60..700));
    let tenure_start = at.date() - Duration::days(rng.random_range(10..4000));
    let pack_gb = pop.pack_gb(s);
    json!({
        "type": "customer",
        "ts": rfc3339(at),
        "msisdn": msisdn(i),
        "account_id": pop.account_id(s),
        "address_id": pop.address_id(s),
        "home_country": country,
        "timezone": timezone,
        "language": language,
        "email": format!("customer{i}@example.com"),
        "tenure_start": tenure_start.to_string(),
        "prepaid": pop.prepaid(s),
        "plan": {"id": format!("PLAN-{pack_gb}G"), "data_pack_bytes": pack_gb << 30, "cycle_anchor_day": rng.random_range(1..=28), "monthly_fee": households::monthly_fee(pack_gb)},
        "device": {"imei": first_imei(s), "model": "Phone X", "acquired": acquired.to_string()},
        "contract_end": contract_end.to_string(),
        "consent": {"sms": rng.random_bool(0.85), "email": rng.random_bool(0.6), "push": rng.random_bool(0.5)}
    })
}

fn customer(rng: &mut ChaCha8Rng, i: u64, home: (&str, &str, &str, &str), at: NaiveDateTime) -> Value {
    let (country, timezone, language, _) = home;
    let acquired = at.date() - Duration::days(rng.random_range(30..1500));
    let contract_end = at.date() + Duration::days(rng.random_range(-60..700));
    let pack_gb: u64 = *[1u64, 2, 5, 10, 20, 50].choose(rng).unwrap_or(&10);
    let consent_sms = rng.random_bool(0.85);
    json!({
        "type": "customer",
        "ts": rfc3339(at),
        "msisdn": msisdn(i),
        "account_id": format!("A-{}", i / 2),
        "address_id": format!("ADDR-{}", i / 3),
        "home_country": country,
        "timezone": timezone,
        "language": language,
        "email": format!("customer{i}@example.com"),
        "tenure_start": (at.date() - Duration::days(rng.random_range(10..4000))).to_string(),
        "prepaid": rng.random_bool(0.3),
        "plan": {"id": format!("PLAN-{pack_gb}G"), "data_pack_bytes": pack_gb << 30, "cycle_anchor_day": rng.random_range(1..=28), "monthly_fee": 10.0 + pack_gb as f64 / 2.0},
        "device": {"imei": format!("35{:013}", i), "model": "Phone X", "acquired": acquired.to_string()},
        "contract_end": contract_end.to_string(),
        "consent": {"sms": consent_sms, "email": rng.random_bool(0.6), "push": rng.random_bool(0.5)}
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn spec(seed: u64) -> WorldSpec {
        WorldSpec {
            subscribers: 50,
            days: 2,
            start: NaiveDate::from_ymd_opt(2026, 7, 1).unwrap(),
            seed,
            events_per_day: 20,
            travel_rate: 0.3,
            invalid_rate: 0.01,
            duplicate_rate: 0.0,
        }
    }

    #[test]
    fn duplicates_repeat_lines_of_the_same_world() {
        let one_day = WorldSpec { days: 1, ..spec(5) };
        let mut plain = Vec::new();
        generate(&one_day, |l| plain.push(l.to_string()));
        let mut doubled = Vec::new();
        generate(
            &WorldSpec {
                duplicate_rate: 0.1,
                ..one_day.clone()
            },
            |l| doubled.push(l.to_string()),
        );
        let extra = doubled.len() - plain.len();
        assert!(
            extra * 100 > plain.len() * 5 && extra * 100 < plain.len() * 15,
            "{extra} of {}",
            plain.len()
        );
        // Each duplicate comes right after its original; without them, the same world.
        let mut deduped = doubled.clone();
        deduped.dedup();
        let mut plain_deduped = plain.clone();
        plain_deduped.dedup();
        assert_eq!(deduped, plain_deduped);
    }

    /// FNV-1a over the lines, each followed by a newline.
    fn fnv(lines: &[String]) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in lines.iter().flat_map(|l| l.bytes().chain([b'\n'])) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    }

    fn events(spec: &WorldSpec, hh: &HouseholdSpec) -> Vec<String> {
        let mut out = Vec::new();
        generate_with(spec, hh, |l| out.push(l.to_string()));
        out
    }

    #[test]
    fn without_households_the_world_is_the_one_of_before() {
        let lines = events(&spec(7), &HouseholdSpec::off());
        assert_eq!(lines.len(), 2110);
        assert_eq!(lines.iter().map(|l| l.len() + 1).sum::<usize>(), 261_448);
        assert_eq!(fnv(&lines), 0x95b7_ca41_9210_e8ae);
    }

    #[test]
    fn same_seed_same_world_other_seed_other_world() {
        let collect = |seed| {
            let mut out = Vec::new();
            generate(&spec(seed), |l| out.push(l.to_string()));
            out
        };
        let a = collect(7);
        assert_eq!(a, collect(7));
        assert_ne!(a, collect(8));
        assert!(a.len() > 50 * 2 * 10);
        assert!(
            a.iter()
                .filter(|l| l.contains("\"country\":\"US\"") || l.contains("\"mcc\":\"310\""))
                .count()
                > 0
        );
    }

    #[test]
    fn events_are_in_time_order_after_the_customer_records() {
        let mut out = Vec::new();
        generate(&spec(1), |l| out.push(l.to_string()));
        let times: Vec<String> = out
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v.get("ts").and_then(Value::as_str).map(String::from))
            .filter(|t| t.ends_with('Z') && t.len() == 24)
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
    }

    /// A small household world, parsed, with its truth.
    struct Small {
        events: Vec<Value>,
        truth: Vec<crate::households::TruthRecord>,
    }

    impl Small {
        fn new() -> Small {
            let spec = WorldSpec {
                subscribers: 1_000,
                days: 2,
                start: NaiveDate::from_ymd_opt(2026, 7, 1).unwrap(),
                seed: 3,
                events_per_day: 20,
                travel_rate: 0.1,
                invalid_rate: 0.0,
                duplicate_rate: 0.0,
            };
            let pop = Population::build(&spec, &HouseholdSpec::default());
            let mut events = Vec::new();
            generate_population(&spec, Some(&pop), |l| events.push(serde_json::from_str(l).unwrap()));
            Small {
                events,
                truth: pop.truth_records().collect(),
            }
        }

        fn household(&self, msisdn: &str) -> Option<&str> {
            let i: usize = msisdn
                .strip_prefix("3519")?
                .parse::<usize>()
                .ok()?
                .checked_sub(10_000_000)?;
            self.truth.get(i).map(|t| t.household.as_str())
        }

        fn of_type<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
            self.events.iter().filter(move |e| e["type"] == kind)
        }

        fn str<'a>(e: &'a Value, key: &str) -> &'a str {
            e[key].as_str().unwrap_or("")
        }
    }

    #[test]
    fn household_worlds_are_deterministic() {
        let (seven, eight) = (spec(7), spec(8));
        let on = HouseholdSpec::default();
        let a = events(&seven, &on);
        assert_eq!(a, events(&seven, &on));
        assert_ne!(a, events(&eight, &on));
        assert_ne!(a, events(&seven, &HouseholdSpec::off()));
        let truth = |spec: &WorldSpec| -> Vec<String> {
            Population::build(spec, &on)
                .truth_records()
                .map(|t| serde_json::to_string(&t).unwrap())
                .collect()
        };
        assert_eq!(truth(&seven), truth(&seven));
        assert_ne!(truth(&seven), truth(&eight));
    }

    #[test]
    fn the_truth_covers_every_subscriber_and_agrees_with_the_records() {
        let w = Small::new();
        assert_eq!(w.truth.len(), 1_000);
        let mut customers: Vec<&str> = w.of_type("customer").map(|e| Small::str(e, "msisdn")).collect();
        customers.sort_unstable();
        customers.dedup();
        let truth: Vec<&str> = w.truth.iter().map(|t| t.msisdn.as_str()).collect();
        assert_eq!(customers, truth);
        let first: HashMap<&str, &Value> = w
            .of_type("customer")
            .filter(|e| Small::str(e, "ts") == "2026-07-01T00:00:00.000Z")
            .map(|e| (Small::str(e, "msisdn"), e))
            .collect();
        assert_eq!(first.len(), 1_000);
        let fee = |m: &str| first[m]["plan"]["monthly_fee"].as_f64().unwrap();
        // One decision maker per household, with the highest monthly fee in it.
        let mut by_household: HashMap<&str, Vec<&crate::households::TruthRecord>> = HashMap::new();
        for t in &w.truth {
            by_household.entry(&t.household).or_default().push(t);
        }
        for members in by_household.values() {
            assert_eq!(members.len() as u32, members[0].size);
            let payers: Vec<_> = members.iter().filter(|t| t.role == "payer").collect();
            assert_eq!(payers.len(), 1);
            for t in members {
                assert_eq!(t.decision_maker, payers[0].msisdn);
                if t.role != "payer" {
                    assert!(fee(&t.msisdn) < fee(&payers[0].msisdn));
                }
            }
        }
        // Hard links never cross households; each kind of link exists.
        for key in ["account_id", "address_id"] {
            let mut of: HashMap<&str, &str> = HashMap::new();
            for e in w.of_type("customer") {
                let m = Small::str(e, "msisdn");
                let h = w.household(m).unwrap();
                assert_eq!(*of.entry(Small::str(e, key)).or_insert(h), h, "{key} of {m}");
            }
        }
        for link in ["single", "account", "address", "soft"] {
            assert!(
                w.truth.iter().any(|t| serde_json::to_value(t.link).unwrap() == link),
                "{link}"
            );
        }
        assert!(w.truth.iter().any(|t| t.competitor_peer.is_some()));
        assert!(w.truth.iter().any(|t| t.shop) && w.truth.iter().any(|t| t.hub));
    }

    #[test]
    fn the_evidence_is_planted() {
        let w = Small::new();
        let tz: HashMap<&str, &str> = w
            .of_type("customer")
            .map(|e| (Small::str(e, "msisdn"), Small::str(e, "timezone")))
            .collect();
        // July: Lisbon is UTC+1, the others UTC+2.
        let evening = |e: &Value| {
            let hour: i64 = Small::str(e, "ts")[11..13].parse().unwrap();
            let offset = if tz[Small::str(e, "msisdn")] == "Europe/Lisbon" {
                1
            } else {
                2
            };
            (18..23).contains(&(hour + offset))
        };
        // Calls and SMS inside households, in usage and network events, mostly in the evening.
        let mut family_households = HashSet::new();
        let (mut family, mut family_evening, mut colleague, mut colleague_evening) = (0, 0, 0, 0);
        let mut kinds = HashSet::new();
        let mut called_by: HashMap<&str, HashSet<&str>> = HashMap::new();
        for e in w.events.iter().filter(|e| e.get("peer").is_some()) {
            let (m, peer) = (Small::str(e, "msisdn"), Small::str(e, "peer"));
            assert_ne!(m, peer);
            called_by.entry(peer).or_default().insert(m);
            let t = &w.truth[w.truth.binary_search_by(|t| t.msisdn.as_str().cmp(m)).unwrap()];
            if w.household(peer) == Some(t.household.as_str()) {
                family += 1;
                family_evening += usize::from(evening(e));
                family_households.insert(t.household.as_str());
                kinds.insert((Small::str(e, "type"), Small::str(e, "kind"), Small::str(e, "event")));
            } else if t.colleagues.is_some() && w.truth.iter().any(|o| o.msisdn == peer && o.colleagues == t.colleagues)
            {
                colleague += 1;
                colleague_evening += usize::from(evening(e));
            }
        }
        let multi: HashSet<&str> = w
            .truth
            .iter()
            .filter(|t| t.size > 1)
            .map(|t| t.household.as_str())
            .collect();
        assert!(
            family_households.len() * 10 >= multi.len() * 9,
            "{} of {}",
            family_households.len(),
            multi.len()
        );
        assert!(kinds.contains(&("usage", "voice", "")) && kinds.contains(&("usage", "sms", "")));
        assert!(kinds.contains(&("network", "", "call")) && kinds.contains(&("network", "", "sms")));
        assert!(family_evening * 2 > family, "{family_evening} of {family}");
        assert!(
            colleague > 100 && colleague_evening * 10 < colleague,
            "{colleague_evening} of {colleague}"
        );

        // The hub is called by many, the competitor by several members of one household.
        let hub = w.truth.iter().find(|t| t.hub).unwrap();
        assert!(called_by[hub.msisdn.as_str()].len() > 50);
        assert!(called_by[crate::households::SERVICE_LINE].len() > 50);
        assert!(w
            .truth
            .iter()
            .filter_map(|t| t.competitor_peer.as_deref())
            .any(|c| { called_by.get(c).is_some_and(|callers| callers.len() >= 2) }));

        // Top-ups: the decision maker pays for members, the shop for strangers.
        let shop = w.truth.iter().find(|t| t.shop).unwrap();
        let mut shop_paid = HashSet::new();
        let mut family_paid = 0;
        for e in w.of_type("topup").filter(|e| e.get("payer").is_some()) {
            let (m, payer) = (Small::str(e, "msisdn"), Small::str(e, "payer"));
            if payer == shop.msisdn {
                assert_ne!(w.household(m), w.household(payer));
                shop_paid.insert(m);
            } else {
                assert_eq!(w.household(m), w.household(payer));
                assert_eq!(w.truth.iter().find(|t| t.msisdn == payer).unwrap().role, "payer");
                family_paid += 1;
            }
        }
        assert!(shop_paid.len() >= 5, "{shop_paid:?}");
        assert!(family_paid > 20);

        // Hand-downs: an imei on two members' customer records and network events.
        let mut imei_users: HashMap<&str, HashSet<&str>> = HashMap::new();
        for e in &w.events {
            let imei = match Small::str(e, "type") {
                "customer" => e["device"]["imei"].as_str(),
                "network" => e["imei"].as_str(),
                _ => None,
            };
            if let Some(imei) = imei {
                imei_users.entry(imei).or_default().insert(Small::str(e, "msisdn"));
            }
        }
        let handed: Vec<_> = imei_users.values().filter(|users| users.len() > 1).collect();
        assert!(handed.len() >= 5);
        for users in handed {
            assert_eq!(users.len(), 2);
            let hh: HashSet<_> = users.iter().map(|m| w.household(m)).collect();
            assert_eq!(hh.len(), 1);
        }

        // Self-care: one account used by members with accounts of their own.
        let account: HashMap<&str, &str> = w
            .of_type("customer")
            .map(|e| (Small::str(e, "msisdn"), Small::str(e, "account_id")))
            .collect();
        let shared = w
            .of_type("selfcare")
            .filter(|e| account[Small::str(e, "msisdn")] != Small::str(e, "account_id"))
            .inspect(|e| {
                let owner = w
                    .of_type("customer")
                    .find(|c| Small::str(c, "account_id") == Small::str(e, "account_id"))
                    .unwrap();
                assert_eq!(
                    w.household(Small::str(owner, "msisdn")),
                    w.household(Small::str(e, "msisdn"))
                );
            })
            .count();
        assert!(shared > 10);
    }
}
