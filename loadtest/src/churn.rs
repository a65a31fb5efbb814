//! Who leaves, and what they do first: the churn layer of a household world.
//!
//! With a [`ChurnSpec`], some subscribers are planted as *churners*: each terminates
//! (a customer record with `"status": "terminated"`, contract §5.1) on a day of the world and
//! sends nothing after it. Before that, the signals of their *driver*:
//! - **decline**: their activity fades over 2–6 weeks (each event kept with a falling chance);
//! - **complaint**: one to three visits of the `complaint` page in the 6 weeks before;
//! - **contract**: the contract ends a few days before they go (port-out at contract end);
//! - **prepaid dry**: a prepaid line whose top-ups stop 6–10 weeks before;
//! - **silent**: a prepaid SIM left in a drawer — nothing at all for 3–6 weeks, then the
//!   operator terminates it;
//! - **household**: the decision maker left, and this member follows within 10 days;
//! - **abrupt**: no signal at all (a port-out nobody saw coming: the score cannot find them).
//!
//! Customers hold products (`"products"` in their records: mobile, and broadband, TV, cloud
//! storage, music for some); those with broadband or TV leave half as often. Many churners
//! also look at the `cancel` page in their last two weeks, and some of those
//! whose use declines first move to a cheaper plan (a customer record with a lower
//! `monthly_fee`). The same signals appear as noise among those who stay: holidays (two weeks
//! of near silence, then back), complaints that were resolved, a look at the cancel page, a
//! cheaper plan, contracts that end and are renewed (a new customer record with a later
//! `contract_end`).
//!
//! **Retention with a planted effect.** The generator cannot see what kairos decides while it
//! writes the log, so the loop is closed in two passes ([`crate::harness::churn_eval`]): the
//! world is generated and replayed; the retention actions kairos *sent* are handed back
//! ([`Offers`]); the world is generated again, and a churner sent an offer before the day
//! they would have left is *saved* with the planted probability ([`ChurnSpec::effect`]): they
//! answer with a `response` (`accepted`), their signals stop and they stay. Held-out churners
//! (the control group) are not offered anything and leave as planned. Everything else in the
//! world is the same in both passes: this layer only drops, restates and adds events with
//! randomness of its own (a hash of the world's seed, the subscriber and the instant), never
//! from the world's random stream.

use std::collections::HashMap;

use chrono::{Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::{json, Value};

use crate::households::Population;
use crate::world::msisdn;

/// How the world's customers leave.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChurnSpec {
    /// Share of customers who leave within 30 days without any particular reason (before the
    /// multipliers for prepaid lines, new and long-standing customers).
    pub monthly_rate: f64,
    /// Of the churners not leaving at contract end, the weights of the drivers decline,
    /// complaint, prepaid dry (prepaid lines only) and abrupt.
    pub drivers: [f64; 4],
    /// Chance that a customer whose contract ends during the world leaves at its end.
    pub contract_leave: f64,
    /// Chance that each other member follows a decision maker who leaves.
    pub household_follow: f64,
    /// Share of churners who look at the cancel page in their last two weeks.
    pub cancel_look: f64,
    /// Shares of stayers with a complaint, with a look at the cancel page, with a holiday.
    pub stayer_complaint: f64,
    pub stayer_cancel: f64,
    pub holiday: f64,
    /// Chance that a churner sent a retention offer before leaving is saved by it.
    pub effect: f64,
    /// The weight of the silent driver beside `drivers` (prepaid lines only).
    pub silent: f64,
    /// Share of declining churners who move to a cheaper plan first, and of stayers who do.
    pub downgrade: f64,
    pub stayer_downgrade: f64,
}

impl Default for ChurnSpec {
    /// About 2.5 % a month, a fifth of the churners abrupt, 40 % saved by an offer.
    fn default() -> ChurnSpec {
        ChurnSpec {
            monthly_rate: 0.02,
            drivers: [0.45, 0.2, 0.2, 0.15],
            contract_leave: 0.25,
            household_follow: 0.5,
            cancel_look: 0.5,
            stayer_complaint: 0.05,
            stayer_cancel: 0.02,
            holiday: 0.08,
            effect: 0.4,
            silent: 0.15,
            downgrade: 0.4,
            stayer_downgrade: 0.03,
        }
    }
}

impl ChurnSpec {
    /// A world's churn drawn from ranges by `seed` (for judging the score on worlds it was
    /// not fitted on).
    pub fn drawn(seed: u64) -> ChurnSpec {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xc4_0f_2a_11);
        let mut range = |lo: f64, hi: f64| lo + (hi - lo) * rng.random::<f64>();
        ChurnSpec {
            monthly_rate: range(0.01, 0.035),
            drivers: [range(0.25, 0.6), range(0.1, 0.3), range(0.1, 0.3), range(0.05, 0.25)],
            contract_leave: range(0.1, 0.4),
            household_follow: range(0.2, 0.7),
            cancel_look: range(0.25, 0.7),
            stayer_complaint: range(0.02, 0.08),
            stayer_cancel: range(0.005, 0.03),
            holiday: range(0.03, 0.15),
            effect: range(0.2, 0.6),
            silent: range(0.05, 0.3),
            downgrade: range(0.2, 0.6),
            stayer_downgrade: range(0.01, 0.05),
        }
    }
}

/// Why a churner leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    Decline,
    Complaint,
    Contract,
    PrepaidDry,
    Silent,
    Household,
    Abrupt,
}

/// The retention actions kairos sent in a first pass: by subscriber index, the earliest
/// `(moment_ts, action_id)`.
pub type Offers = HashMap<u32, (i64, String)>;

/// What a subscriber's record says at day 0, as far as fates depend on it.
#[derive(Debug, Clone, Copy)]
struct Profile {
    prepaid: bool,
    tenure_days: i64,
    /// Day of the world the contract ends on (may be negative or past the world).
    contract_day: i64,
    /// The products held, one bit each in [`PRODUCTS`] order.
    products: u8,
}

/// The products a customer of this world may hold (`rules/stickiness.toml` weighs them), and
/// the share of postpaid and of prepaid customers who hold each. Everyone holds `mobile`.
const PRODUCTS: [(&str, f64, f64); 5] = [
    ("mobile", 1.0, 1.0),
    ("broadband", 0.3, 0.0),
    ("tv", 0.15, 0.0),
    ("cloud-storage", 0.15, 0.05),
    ("music", 0.15, 0.1),
];
/// Those of [`PRODUCTS`] hard to replace: a customer holding one leaves half as often.
const STICKY_PRODUCTS: u8 = 0b0000_0110;

impl Profile {
    fn products(&self) -> Vec<&'static str> {
        PRODUCTS
            .iter()
            .enumerate()
            .filter(|(i, _)| self.products & (1 << i) != 0)
            .map(|(_, (name, _, _))| *name)
            .collect()
    }
}

/// One subscriber's fate. Instants are milliseconds since the epoch.
#[derive(Debug, Clone, Default)]
struct Fate {
    /// When they would terminate, and why.
    leave: Option<(i64, Driver)>,
    /// From when their activity fades (until `leave`).
    fade_from: Option<i64>,
    /// From when a prepaid line stops topping up.
    dry_from: Option<i64>,
    /// From when a line sends nothing at all (until `leave`).
    silent_from: Option<i64>,
    /// When the customer moves to a cheaper plan.
    downgrade: Option<i64>,
    /// A quiet stretch of a stayer.
    holiday: Option<(i64, i64)>,
    /// Self-care visits planted: (instant, page).
    visits: Vec<(i64, &'static str)>,
    /// A stayer whose contract ends during the world renews it at this instant.
    renew: Option<i64>,
    /// Saved by the offer sent at this instant (action id).
    saved: Option<(i64, String)>,
}

/// One line of the churn truth (`--churn-truth`).
#[derive(Debug, Clone, Serialize)]
pub struct ChurnTruth {
    pub msisdn: String,
    /// Planted to leave (before any retention).
    pub churner: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<Driver>,
    /// When they would have left (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub planned_leave: Option<String>,
    /// Saved by a retention offer (they stay).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub saved: bool,
    /// When they terminated in this world.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminated: Option<String>,
}

/// The churn layer of one world: built empty, told the day-0 record of every subscriber
/// ([`ChurnLayer::observe`]), then drawn ([`ChurnLayer::draw`]) before the first day.
pub struct ChurnLayer {
    spec: ChurnSpec,
    seed: u64,
    start: i64,
    days: u32,
    offers: Offers,
    profiles: Vec<Option<Profile>>,
    fates: Vec<Fate>,
    /// Each subscriber's customer record as it stands (restated when it changes).
    records: HashMap<u32, Value>,
}

const DAY_MS: i64 = 86_400_000;

fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// A uniform draw in [0, 1) from the world's seed, a subscriber, an instant and a purpose.
fn uniform(seed: u64, s: u32, at: i64, salt: u64) -> f64 {
    let mut x = seed
        ^ u64::from(s).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (at as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9)
        ^ salt.wrapping_mul(0x94d0_49bb_1331_11eb);
    // splitmix64's finaliser.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

impl ChurnLayer {
    /// The layer of the world of `seed` starting at `start` for `days` days; `offers` are the
    /// retention actions of a first pass (empty for the first pass itself).
    pub fn new(
        spec: ChurnSpec,
        seed: u64,
        start: NaiveDate,
        days: u32,
        subscribers: u64,
        offers: Offers,
    ) -> ChurnLayer {
        let start = start
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc()
            .timestamp_millis();
        ChurnLayer {
            spec,
            seed: seed ^ 0x5eed_c4a7,
            start,
            days,
            offers,
            profiles: vec![None; subscribers as usize],
            fates: Vec::new(),
            records: HashMap::new(),
        }
    }

    /// Takes note of subscriber `s`'s day-0 customer record, and gives it the products they
    /// hold (drawn here: a world without churn has records without products).
    pub fn observe(&mut self, s: u32, record: &mut Value) {
        let day = |key: &str| {
            record[key]
                .as_str()
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                .map(|d| (d.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp_millis() - self.start) / DAY_MS)
        };
        let prepaid = record["prepaid"].as_bool().unwrap_or(false);
        let products = PRODUCTS
            .iter()
            .enumerate()
            .filter(|(i, (_, postpaid_share, prepaid_share))| {
                let share = if prepaid { prepaid_share } else { postpaid_share };
                uniform(self.seed, s, 0, 20 + *i as u64) < *share
            })
            .fold(0u8, |bits, (i, _)| bits | 1 << i);
        let profile = Profile {
            prepaid,
            tenure_days: day("tenure_start").map_or(0, |d| -d),
            contract_day: day("contract_end").unwrap_or(i64::MAX / 4),
            products,
        };
        record["products"] = json!(profile.products());
        if let Some(slot) = self.profiles.get_mut(s as usize) {
            *slot = Some(profile);
        }
        self.records.insert(s, record.clone());
    }

    /// The record `s`'s customer record now is (after a hand-down, for instance), with the
    /// products they hold.
    pub fn restate(&mut self, s: u32, record: &mut Value) {
        if let Some(Some(profile)) = self.profiles.get(s as usize) {
            record["products"] = json!(profile.products());
        }
        self.records.insert(s, record.clone());
    }

    /// Draws every subscriber's fate (after [`Self::observe`] of all day-0 records).
    pub fn draw(&mut self, pop: &Population) {
        let n = self.profiles.len();
        let end = self.start + i64::from(self.days) * DAY_MS;
        let mut fates = vec![Fate::default(); n];
        for (s, fate) in fates.iter_mut().enumerate() {
            let s = s as u32;
            let Some(p) = self.profiles[s as usize] else { continue };
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ u64::from(s).wrapping_mul(0x2545_f491_4f6c_dd1d));
            let mut hazard = self.spec.monthly_rate;
            if p.prepaid {
                hazard *= 1.4;
            }
            if p.tenure_days < 90 {
                hazard *= 1.6;
            } else if p.tenure_days >= 1095 {
                hazard *= 0.6;
            }
            if p.products & STICKY_PRODUCTS != 0 {
                hazard *= 0.5;
            }
            // Leaving days from day 14 on, so that every churner has a history before.
            let span = i64::from(self.days).saturating_sub(14);
            let contract_in_world = (14..i64::from(self.days)).contains(&p.contract_day);
            if contract_in_world && rng.random_bool(self.spec.contract_leave) {
                let at = (p.contract_day + rng.random_range(0..7)) * DAY_MS + rng.random_range(0..DAY_MS);
                fate.leave = Some((self.start + at, Driver::Contract));
            } else if span > 0
                && rng.random_bool((1.0 - (1.0 - hazard.min(0.9)).powf(span as f64 / 30.0)).clamp(0.0, 1.0))
            {
                let at = self.start + (14 + rng.random_range(0..span)) * DAY_MS + rng.random_range(0..DAY_MS);
                let [decline, complaint, dry, abrupt] = self.spec.drivers;
                let mut weights = [decline, complaint, dry, abrupt, self.spec.silent];
                if !p.prepaid {
                    weights[2] = 0.0;
                    weights[4] = 0.0;
                }
                let total: f64 = weights.iter().sum();
                let mut roll = rng.random::<f64>() * total;
                let mut driver = Driver::Abrupt;
                let drivers = [
                    Driver::Decline,
                    Driver::Complaint,
                    Driver::PrepaidDry,
                    Driver::Abrupt,
                    Driver::Silent,
                ];
                for (w, d) in weights.iter().zip(drivers) {
                    if roll < *w {
                        driver = d;
                        break;
                    }
                    roll -= w;
                }
                fate.leave = Some((at, driver));
            } else if contract_in_world {
                // Renewed some days before the contract ends.
                let at = (p.contract_day - rng.random_range(1..20)).max(1) * DAY_MS + rng.random_range(0..DAY_MS);
                fate.renew = Some(self.start + at);
            }
        }
        // Members follow a decision maker who leaves.
        for h in pop.households() {
            let Some((at, _)) = fates[h.payer as usize].leave else {
                continue;
            };
            for &m in pop.members(pop.household_of(h.payer)) {
                if m == h.payer || fates[m as usize].leave.is_some() {
                    continue;
                }
                if uniform(self.seed, m, 0, 1) < self.spec.household_follow {
                    let later = at + (uniform(self.seed, m, 0, 2) * 10.0 * DAY_MS as f64) as i64;
                    if later < end {
                        fates[m as usize].leave = Some((later, Driver::Household));
                        fates[m as usize].renew = None;
                    }
                }
            }
        }
        // The signals before leaving, and the noise of those who stay.
        for (s, fate) in fates.iter_mut().enumerate() {
            let s = s as u32;
            if self.profiles[s as usize].is_none() {
                continue;
            }
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ u64::from(s).wrapping_mul(0x9e6c_63d0_676a_9a99));
            let earliest = self.start + DAY_MS;
            let within = |rng: &mut ChaCha8Rng, from: i64, to: i64| {
                let from = from.max(earliest);
                if to <= from {
                    from
                } else {
                    rng.random_range(from..to)
                }
            };
            match fate.leave {
                Some((at, driver)) => {
                    match driver {
                        Driver::Decline => {
                            let from = at - rng.random_range(14..42) * DAY_MS;
                            fate.fade_from = Some(from);
                            // Draws of their own (not the stream's), so the rest stays as it was.
                            if uniform(self.seed, s, 0, 7) < self.spec.downgrade {
                                let before = (uniform(self.seed, s, 0, 8) * 28.0 * DAY_MS as f64) as i64;
                                fate.downgrade = Some((at - 7 * DAY_MS - before).max(earliest));
                            }
                        }
                        Driver::Silent => {
                            fate.silent_from = Some(at - rng.random_range(21..42) * DAY_MS);
                        }
                        Driver::Complaint => {
                            for _ in 0..rng.random_range(1..=3) {
                                let t = within(&mut rng, at - 40 * DAY_MS, at - DAY_MS);
                                fate.visits.push((t, "complaint"));
                            }
                        }
                        Driver::PrepaidDry => {
                            fate.dry_from = Some(at - rng.random_range(45..75) * DAY_MS);
                            fate.fade_from = Some(at - 14 * DAY_MS);
                        }
                        Driver::Household => {
                            fate.fade_from = Some(at - rng.random_range(3..14) * DAY_MS);
                        }
                        Driver::Contract | Driver::Abrupt => {}
                    }
                    if !matches!(driver, Driver::Abrupt | Driver::Silent) && rng.random_bool(self.spec.cancel_look) {
                        for _ in 0..rng.random_range(1..=2) {
                            let t = within(&mut rng, at - 14 * DAY_MS, at - 3_600_000);
                            fate.visits.push((t, "cancel"));
                        }
                    }
                    if let Some((offered, id)) = self.offers.get(&s) {
                        if *offered < at && uniform(self.seed, s, 0, 3) < self.spec.effect {
                            fate.saved = Some((*offered, id.clone()));
                        }
                    }
                }
                None => {
                    if rng.random_bool(self.spec.stayer_complaint) {
                        fate.visits.push((within(&mut rng, earliest, end), "complaint"));
                    }
                    if rng.random_bool(self.spec.stayer_cancel) {
                        fate.visits.push((within(&mut rng, earliest, end), "cancel"));
                    }
                    if rng.random_bool(self.spec.holiday) {
                        let from = within(&mut rng, earliest, end);
                        fate.holiday = Some((from, from + rng.random_range(7..17) * DAY_MS));
                    }
                    if uniform(self.seed, s, 0, 7) < self.spec.stayer_downgrade {
                        let span = (end - earliest).max(1) as f64;
                        fate.downgrade = Some(earliest + (uniform(self.seed, s, 0, 8) * span) as i64);
                    }
                }
            }
            // A saved churner does nothing of their plan after the offer.
            if let Some((offered, _)) = &fate.saved {
                fate.visits.retain(|(t, _)| t < offered);
                fate.downgrade = fate.downgrade.filter(|t| t < offered);
            }
            fate.visits.sort_unstable();
        }
        self.fates = fates;
    }

    /// When `s` terminates in this world (not when saved, nor after its last day).
    fn terminates(&self, s: u32) -> Option<i64> {
        let fate = self.fates.get(s as usize)?;
        let end = self.start + i64::from(self.days) * DAY_MS;
        match (&fate.leave, &fate.saved) {
            (Some((at, _)), None) if *at < end => Some(*at),
            _ => None,
        }
    }

    /// Whether `s` sends nothing of its own at `at`: terminated, or a line gone silent.
    pub fn quiet(&self, s: u32, at: NaiveDateTime) -> bool {
        let t = at.and_utc().timestamp_millis();
        self.gone(s, at)
            || self.fates.get(s as usize).is_some_and(|f| {
                let recovered = f.saved.as_ref().is_some_and(|(offered, _)| t >= *offered);
                !recovered && f.silent_from.is_some_and(|from| t >= from)
            })
    }

    /// Whether `s` has terminated by `at`.
    pub fn gone(&self, s: u32, at: NaiveDateTime) -> bool {
        self.terminates(s)
            .is_some_and(|end| at.and_utc().timestamp_millis() >= end)
    }

    /// Whether the world's event of `s` at `at` is sent (churners fade and stop, prepaid
    /// lines dry up, holidays go quiet), and the event as sent: with churn planted, the
    /// world's own draws of the cancel page become a look at the plans (cancel visits are
    /// this layer's).
    pub fn keep(&self, s: u32, at: NaiveDateTime, event: &mut Value) -> bool {
        let Some(fate) = self.fates.get(s as usize) else {
            return true;
        };
        let t = at.and_utc().timestamp_millis();
        if self.quiet(s, at) {
            return false;
        }
        if event["type"] == "selfcare" && event["page"] == "cancel" {
            event["page"] = json!("plans");
        }
        let recovered = fate.saved.as_ref().is_some_and(|(offered, _)| t >= *offered);
        if !recovered {
            if let (Some(from), Some((end, _))) = (fate.fade_from, fate.leave) {
                if t >= from && end > from {
                    let gone = (t - from) as f64 / (end - from) as f64;
                    if uniform(self.seed, s, t, 4) < 0.9 * gone {
                        return false;
                    }
                }
            }
            if fate.dry_from.is_some_and(|from| t >= from) && event["type"] == "topup" {
                return false;
            }
        }
        if let Some((from, to)) = fate.holiday {
            if (from..to).contains(&t) && uniform(self.seed, s, t, 5) < 0.85 {
                return false;
            }
        }
        true
    }

    /// The events this layer adds for `s` on the day starting at `day_start`: self-care
    /// visits, renewals, the termination record, the answer to a retention offer.
    pub fn day_events(&mut self, pop: &Population, s: u32, day_start: NaiveDateTime) -> Vec<(NaiveDateTime, Value)> {
        let from = day_start.and_utc().timestamp_millis();
        let to = from + DAY_MS;
        let Some(fate) = self.fates.get(s as usize) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let at_of = |t: i64| chrono::DateTime::from_timestamp_millis(t).map(|d| d.naive_utc());
        let id = msisdn(u64::from(s));
        for (t, page) in fate.visits.iter().filter(|(t, _)| (from..to).contains(t)) {
            if self.terminates(s).is_some_and(|end| *t >= end) {
                continue;
            }
            let event = json!({"type":"selfcare","ts":rfc3339(*t),"msisdn":id,"account_id":pop.selfcare_account_id(s),"channel":"app","page":page});
            out.extend(at_of(*t).map(|at| (at, event)));
        }
        if let Some((offered, action)) = &fate.saved {
            let answered = offered + 3_600_000 + (uniform(self.seed, s, 0, 6) * 36.0 * 3_600_000.0) as i64;
            if (from..to).contains(&answered) {
                let event = json!({"type":"response","ts":rfc3339(answered),"msisdn":id,"action_id":action,"outcome":"accepted"});
                out.extend(at_of(answered).map(|at| (at, event)));
            }
        }
        if let Some(t) = fate.downgrade.filter(|t| (from..to).contains(t)) {
            if let Some(record) = self.records.get_mut(&s) {
                // A cheaper plan with the same pack: the fee is what moves.
                if let Some(fee) = record["plan"]["monthly_fee"].as_f64() {
                    record["plan"]["monthly_fee"] = json!((fee * 60.0).round() / 100.0);
                    if let Some(id) = record["plan"]["id"].as_str().map(|id| format!("{id}-SAVER")) {
                        record["plan"]["id"] = json!(id);
                    }
                    record["ts"] = json!(rfc3339(t));
                    out.extend(at_of(t).map(|at| (at, record.clone())));
                }
            }
        }
        let renewal = fate.renew.filter(|t| (from..to).contains(t));
        let end = self.terminates(s).filter(|t| (from..to).contains(t));
        if let Some(t) = renewal {
            if let Some(record) = self.records.get_mut(&s) {
                let ends = record["contract_end"]
                    .as_str()
                    .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                    .map(|d| d + Duration::days(730));
                if let Some(ends) = ends {
                    record["contract_end"] = json!(ends.to_string());
                }
                record["ts"] = json!(rfc3339(t));
                out.extend(at_of(t).map(|at| (at, record.clone())));
            }
        }
        if let Some(t) = end {
            if let Some(record) = self.records.get(&s) {
                let mut record = record.clone();
                record["ts"] = json!(rfc3339(t));
                record["status"] = json!("terminated");
                record["status_reason"] = json!("port_out");
                out.extend(at_of(t).map(|at| (at, record)));
            }
        }
        out
    }

    /// The truth about every subscriber, in msisdn order.
    pub fn truth(&self) -> impl Iterator<Item = ChurnTruth> + '_ {
        self.fates.iter().enumerate().map(|(s, fate)| {
            let s = s as u32;
            ChurnTruth {
                msisdn: msisdn(u64::from(s)),
                churner: fate.leave.is_some(),
                driver: fate.leave.map(|(_, d)| d),
                planned_leave: fate.leave.map(|(at, _)| rfc3339(at)),
                saved: fate.saved.is_some(),
                terminated: self.terminates(s).map(rfc3339),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn draws_are_uniform_and_stable() {
        let draws: Vec<f64> = (0..10_000).map(|s| uniform(7, s, 0, 1)).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        assert_eq!(uniform(7, 3, 5, 1), uniform(7, 3, 5, 1));
        assert_ne!(uniform(7, 3, 5, 1), uniform(7, 3, 5, 2));
    }

    use crate::households::HouseholdSpec;
    use crate::world::{generate_reporting, WorldSpec};

    fn spec() -> WorldSpec {
        WorldSpec {
            subscribers: 1_500,
            days: 60,
            start: NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
            seed: 5,
            events_per_day: 3,
            travel_rate: 0.02,
            invalid_rate: 0.0,
            duplicate_rate: 0.0,
        }
    }

    /// The world's lines and its churn truth, with `offers` answered.
    fn world(offers: Offers) -> (Vec<Value>, Vec<ChurnTruth>) {
        let spec = spec();
        let pop = Population::build(&spec, &HouseholdSpec::default());
        let churn = ChurnSpec {
            monthly_rate: 0.06,
            ..ChurnSpec::default()
        };
        let mut layer = ChurnLayer::new(churn, spec.seed, spec.start, spec.days, spec.subscribers, offers);
        let mut lines = Vec::new();
        generate_reporting(&spec, Some(&pop), Some(&mut layer), None, |l| {
            lines.push(serde_json::from_str(l).unwrap())
        });
        (lines, layer.truth().collect())
    }

    fn ms(v: &Value) -> i64 {
        chrono::DateTime::parse_from_rfc3339(v["ts"].as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn churners_terminate_and_send_nothing_after_and_stayers_make_the_same_noise() {
        let (lines, truth) = world(Offers::new());
        let terminated: HashMap<&str, i64> = lines
            .iter()
            .filter(|l| l["status"] == "terminated")
            .map(|l| (l["msisdn"].as_str().unwrap(), ms(l)))
            .collect();
        let planned: Vec<&ChurnTruth> = truth.iter().filter(|t| t.terminated.is_some()).collect();
        assert!(planned.len() > 100, "{} churners", planned.len());
        assert_eq!(terminated.len(), planned.len());
        for t in &planned {
            assert!(terminated.contains_key(t.msisdn.as_str()), "{t:?}");
        }
        // Nothing of theirs after the termination record.
        for l in &lines {
            if let Some(end) = terminated.get(l["msisdn"].as_str().unwrap_or("")) {
                assert!(ms(l) <= *end, "{l}");
            }
        }
        // Every driver planted; cancel and complaint pages among churners and stayers both.
        for driver in [
            Driver::Decline,
            Driver::Complaint,
            Driver::Contract,
            Driver::PrepaidDry,
            Driver::Silent,
            Driver::Household,
            Driver::Abrupt,
        ] {
            assert!(truth.iter().any(|t| t.driver == Some(driver)), "{driver:?}");
        }
        // A silent line sends nothing of its own in its last three weeks (the operator's
        // records still come).
        for t in truth
            .iter()
            .filter(|t| t.driver == Some(Driver::Silent) && t.terminated.is_some())
        {
            let end = terminated[t.msisdn.as_str()];
            let sent = lines
                .iter()
                .find(|l| l["msisdn"] == t.msisdn.as_str() && l["type"] != "customer" && ms(l) > end - 21 * DAY_MS);
            assert!(sent.is_none(), "{sent:?}");
        }
        // Cheaper plans: a later record with a lower fee, among churners and stayers.
        let downgraded: HashSet<&str> = lines
            .iter()
            .filter(|l| l["type"] == "customer" && l["plan"]["id"].as_str().is_some_and(|id| id.ends_with("-SAVER")))
            .map(|l| l["msisdn"].as_str().unwrap())
            .collect();
        assert!(downgraded.iter().any(|m| terminated.contains_key(m)));
        assert!(downgraded.iter().any(|m| !terminated.contains_key(m)));
        assert!(downgraded.len() * 10 < truth.len(), "{}", downgraded.len());
        // Products in every record; the hard-to-replace ones keep customers.
        let holds = |l: &Value, product: &str| l["products"].as_array().is_some_and(|p| p.iter().any(|x| x == product));
        let records: Vec<&Value> = lines.iter().filter(|l| l["type"] == "customer").collect();
        assert!(records.iter().all(|l| holds(l, "mobile")));
        let sticky: HashSet<&str> = records
            .iter()
            .filter(|l| holds(l, "broadband") || holds(l, "tv"))
            .map(|l| l["msisdn"].as_str().unwrap())
            .collect();
        let rate = |who: &dyn Fn(&str) -> bool| {
            let n = truth.iter().filter(|t| who(&t.msisdn)).count();
            truth.iter().filter(|t| who(&t.msisdn) && t.churner).count() as f64 / n.max(1) as f64
        };
        assert!(sticky.len() > 100, "{}", sticky.len());
        assert!(rate(&|m| sticky.contains(m)) < rate(&|m| !sticky.contains(m)));
        let visitors = |page: &str| -> HashSet<&str> {
            lines
                .iter()
                .filter(|l| l["page"] == page)
                .map(|l| l["msisdn"].as_str().unwrap())
                .collect()
        };
        for page in ["cancel", "complaint"] {
            let who = visitors(page);
            assert!(who.iter().any(|m| terminated.contains_key(m)), "{page}");
            assert!(who.iter().any(|m| !terminated.contains_key(m)), "{page}");
            // A signal, not the base: far fewer than everyone.
            assert!(who.len() * 5 < truth.len(), "{page}: {}", who.len());
        }
        // Renewals: a later record with a contract ending two years on.
        assert!(lines
            .iter()
            .any(|l| l["type"] == "customer" && ms(l) > ms(&lines[0]) && l.get("status").is_none()));
    }

    #[test]
    fn offers_save_churners_at_the_planted_rate_and_change_nothing_else() {
        let (first, truth) = world(Offers::new());
        // Offer every churner something 5 days before they would leave.
        let offers: Offers = truth
            .iter()
            .enumerate()
            .filter_map(|(s, t)| {
                let leave = chrono::DateTime::parse_from_rfc3339(t.terminated.as_deref()?).ok()?;
                Some((s as u32, (leave.timestamp_millis() - 5 * DAY_MS, format!("act-{s}"))))
            })
            .collect();
        let (second, truth2) = world(offers.clone());
        let saved: HashSet<&str> = truth2.iter().filter(|t| t.saved).map(|t| t.msisdn.as_str()).collect();
        let share = saved.len() as f64 / offers.len() as f64;
        assert!((share - ChurnSpec::default().effect).abs() < 0.1, "{share}");
        // The saved answer, stay, and keep sending events; nobody else's events change.
        let of = |lines: &[Value], keep: &dyn Fn(&str) -> bool| -> Vec<String> {
            lines
                .iter()
                .filter(|l| keep(l["msisdn"].as_str().unwrap_or("")))
                .map(Value::to_string)
                .collect()
        };
        let (a, b) = (
            of(&first, &|m| !saved.contains(m)),
            of(&second, &|m| !saved.contains(m)),
        );
        let differ = a.iter().zip(&b).position(|(x, y)| x != y);
        assert!(
            a.len() == b.len() && differ.is_none(),
            "{} vs {} lines, first difference at {differ:?}",
            a.len(),
            b.len()
        );
        for m in &saved {
            assert!(second
                .iter()
                .any(|l| l["msisdn"] == *m && l["type"] == "response" && l["outcome"] == "accepted"));
            assert!(!second.iter().any(|l| l["msisdn"] == *m && l["status"] == "terminated"));
        }
    }

    #[test]
    fn drawn_specs_stay_in_their_ranges_and_differ() {
        let (a, b) = (ChurnSpec::drawn(1), ChurnSpec::drawn(2));
        assert_ne!(a, b);
        for spec in [a, b] {
            assert!((0.01..0.035).contains(&spec.monthly_rate));
            assert!((0.2..0.6).contains(&spec.effect));
        }
    }
}
