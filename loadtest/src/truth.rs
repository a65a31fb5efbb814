//! The ground truth of a generated world: the moments of contract §4's four default rules that
//! its events plant, found by a plain sequential walk over the events as they are sent — written
//! from the contract, without the engine's code — so a load test checks what the engine
//! decided, not only how fast.
//!
//! A moment is `(rule, msisdn, moment_ts)`. The engine decides every moment once (sent or
//! suppressed, with a reason), so each one must appear among its decisions. The walk takes
//! the events in the order the engine applies them: by `ts`, customer records before activity
//! at the same instant. It assumes no event arrives late (the generator's worlds, and the Kafka
//! harness, which stamps events with the time they are sent, have none).

use std::collections::{BTreeSet, HashMap};

use chrono::{Datelike, Duration, NaiveDate, TimeZone as _};
use chrono_tz::Tz;
use kairos_model::mcc::{mcc_country, parse_mcc};
use kairos_model::time::{format_rfc3339, parse_date, parse_rfc3339};
use serde::Serialize;
use serde_json::Value;

/// The four default rules whose moments are planted.
pub const RULES: [&str; 4] = ["roaming-welcome", "data-pack-80", "data-pack-100", "handset-upgrade"];

/// A moment the engine must decide.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Moment {
    pub rule: &'static str,
    pub msisdn: String,
    /// Milliseconds since the Unix epoch.
    pub at: u64,
}

/// What of an event the truth needs, parsed once from its JSON line.
#[derive(Debug, Clone)]
pub enum Planted {
    Customer(Box<Customer>),
    Deleted,
    /// A network event and the country it puts the subscriber in (when it names one).
    Network(Option<Country>),
    /// Data usage in bytes.
    Data(u64),
    /// Anything else (other usage, self-care, top-ups, responses): no moment.
    Other,
}

/// An ISO 3166-1 alpha-2 code.
pub type Country = [u8; 2];

fn country(code: &str) -> Option<Country> {
    code.as_bytes().try_into().ok()
}

/// The fields of a customer record the default rules read.
#[derive(Debug, Clone)]
pub struct Customer {
    home_country: Country,
    tz: Tz,
    pack_bytes: Option<u64>,
    anchor_day: u32,
    /// When the handset condition starts to hold, and the handset.
    handset: Option<(u64, String)>,
}

/// An event line, read for the truth: whose it is, its time, and what it plants.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub msisdn: String,
    pub ts: u64,
    pub planted: Planted,
}

impl Parsed {
    /// Reads a generated line; `None` for lines that are not valid events (the planted
    /// invalid ones).
    pub fn from_line(line: &str) -> Option<Parsed> {
        let v: Value = serde_json::from_str(line).ok()?;
        let ts = parse_rfc3339(v.get("ts")?.as_str()?).ok()?;
        let msisdn = v.get("msisdn")?.as_str()?.to_string();
        let planted = match v.get("type")?.as_str()? {
            "customer" if v.get("deleted").and_then(Value::as_bool) == Some(true) => Planted::Deleted,
            "customer" => Planted::Customer(Box::new(Customer::from_json(&v)?)),
            "network" => Planted::Network(network_country(&v)),
            "usage" if v.get("kind")?.as_str()? == "data" => Planted::Data(v.get("bytes")?.as_u64()?),
            "usage" | "selfcare" | "topup" | "response" => Planted::Other,
            _ => return None,
        };
        Some(Parsed { msisdn, ts, planted })
    }

    /// The engine applies customer records before activity at the same instant.
    pub fn rank(&self) -> u8 {
        self.planted.rank()
    }
}

impl Planted {
    /// Customer records (0) come before activity (1) at one instant.
    pub fn rank(&self) -> u8 {
        match self {
            Planted::Customer(_) | Planted::Deleted => 0,
            _ => 1,
        }
    }
}

/// The serving country: `country`, or that of `mcc`.
fn network_country(v: &Value) -> Option<Country> {
    if let Some(code) = v.get("country").and_then(Value::as_str) {
        return country(code);
    }
    country(mcc_country(parse_mcc(v.get("mcc")?.as_str()?)?)?)
}

/// Local midnight of `date` in `tz`, as epoch milliseconds (the earlier instant when ambiguous,
/// the first valid one after a gap).
fn local_midnight(date: NaiveDate, tz: Tz) -> u64 {
    let mut at = date.and_hms_opt(0, 0, 0).expect("midnight");
    loop {
        if let Some(t) = tz.from_local_datetime(&at).earliest() {
            return t.timestamp_millis().max(0) as u64;
        }
        at += Duration::minutes(30);
    }
}

impl Customer {
    fn from_json(v: &Value) -> Option<Customer> {
        let tz: Tz = v.get("timezone")?.as_str()?.parse().ok()?;
        let date = |value: Option<&Value>| value.and_then(Value::as_str).and_then(|s| parse_date(s).ok());
        let plan = v.get("plan");
        let device = v.get("device");
        let acquired = date(device.and_then(|d| d.get("acquired")));
        let contract_end = date(v.get("contract_end"));
        let handset = match (acquired, contract_end) {
            (Some(acquired), Some(end)) => {
                let aged = local_midnight(acquired + Duration::days(730), tz);
                let ending = local_midnight(end - Duration::days(60), tz);
                let imei = device
                    .and_then(|d| d.get("imei"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                Some((aged.max(ending), imei.to_string()))
            }
            _ => None,
        };
        Some(Customer {
            home_country: country(v.get("home_country")?.as_str()?)?,
            tz,
            pack_bytes: plan.and_then(|p| p.get("data_pack_bytes")).and_then(Value::as_u64),
            anchor_day: plan
                .and_then(|p| p.get("cycle_anchor_day"))
                .and_then(Value::as_u64)
                .map_or(1, |d| d as u32),
            handset,
        })
    }

    /// The start of the billing cycle holding `ts`: local midnight of the anchor day (the
    /// month's last day when the month is shorter) on or before it.
    fn cycle_start(&self, ts: u64) -> u64 {
        let local = self
            .tz
            .timestamp_millis_opt(ts as i64)
            .single()
            .expect("a valid instant")
            .date_naive();
        let anchor_in = |year: i32, month: u32| {
            let last = (28..=31)
                .rev()
                .find(|d| NaiveDate::from_ymd_opt(year, month, *d).is_some())
                .unwrap_or(28);
            NaiveDate::from_ymd_opt(year, month, self.anchor_day.min(last)).expect("a day of the month")
        };
        let this = anchor_in(local.year(), local.month());
        let start = local_midnight(this, self.tz);
        if start <= ts {
            return start;
        }
        let (year, month) = if local.month() == 1 {
            (local.year() - 1, 12)
        } else {
            (local.year(), local.month() - 1)
        };
        local_midnight(anchor_in(year, month), self.tz)
    }
}

#[derive(Default)]
struct Sub {
    since: Option<u64>,
    customer: Option<Customer>,
    country: Option<Country>,
    /// The cycle's start and the data used in it.
    cycle: Option<(u64, u64)>,
    /// Thresholds fired in the current cycle.
    thresholds: [bool; 2],
    handsets: BTreeSet<String>,
}

/// The sequential walk. Feed it events in order with [`Truth::observe`]; [`Truth::finish`]
/// fires the handset moments due by the end of event time.
#[derive(Default)]
pub struct Truth {
    subs: HashMap<String, Sub>,
    /// Handset moments waiting for event time: (due, msisdn, imei).
    timers: BTreeSet<(u64, String, String)>,
    moments: Vec<Moment>,
    /// The events of the newest instant, applied once it is complete (customer records
    /// first, as the engine does).
    pending: Vec<(String, Planted)>,
    pending_ts: u64,
}

impl Truth {
    pub fn new() -> Truth {
        Truth::default()
    }

    /// Takes one event at `ts` (events must come in `ts` order; at one instant, customer
    /// records are applied before activity).
    pub fn observe(&mut self, msisdn: &str, ts: u64, planted: &Planted) {
        if ts != self.pending_ts {
            self.flush();
            self.fire_before(ts);
            self.pending_ts = ts;
        }
        self.pending.push((msisdn.to_string(), planted.clone()));
    }

    /// Applies the events of the pending instant.
    fn flush(&mut self) {
        let mut pending = std::mem::take(&mut self.pending);
        pending.sort_by_key(|(_, p)| p.rank());
        for (msisdn, planted) in &pending {
            self.apply(msisdn, self.pending_ts, planted);
        }
        pending.clear();
        self.pending = pending;
    }

    fn apply(&mut self, msisdn: &str, ts: u64, planted: &Planted) {
        let sub = self.subs.entry(msisdn.to_string()).or_default();
        match planted {
            Planted::Customer(record) => {
                if sub.since.is_some_and(|s| ts < s) {
                    return;
                }
                sub.since = Some(ts);
                sub.customer = Some((**record).clone());
                if let Some((starts, imei)) = record.handset.clone() {
                    if !sub.handsets.contains(&imei) {
                        if starts > ts {
                            self.timers.insert((starts, msisdn.to_string(), imei));
                        } else {
                            sub.handsets.insert(imei);
                            self.moments.push(moment("handset-upgrade", msisdn, starts.max(ts)));
                        }
                    }
                }
            }
            Planted::Deleted => {
                if sub.since.is_none_or(|s| ts >= s) {
                    *sub = Sub {
                        since: Some(ts),
                        ..Sub::default()
                    };
                }
            }
            Planted::Network(Some(country)) => {
                let previous = sub.country.replace(*country);
                if let Some(customer) = &sub.customer {
                    if *country != customer.home_country && previous != Some(*country) {
                        self.moments.push(moment("roaming-welcome", msisdn, ts));
                    }
                }
            }
            Planted::Data(bytes) => {
                let Some(customer) = &sub.customer else { return };
                let start = customer.cycle_start(ts);
                let used = match sub.cycle {
                    Some((s, used)) if s == start => used + bytes,
                    Some((s, _)) if start < s => return,
                    _ => {
                        sub.thresholds = [false; 2];
                        *bytes
                    }
                };
                sub.cycle = Some((start, used));
                let Some(pack) = customer.pack_bytes.filter(|p| *p > 0) else {
                    return;
                };
                for (i, (rule, share)) in [("data-pack-80", 0.8), ("data-pack-100", 1.0)].into_iter().enumerate() {
                    if !sub.thresholds[i] && used as f64 / pack as f64 >= share {
                        sub.thresholds[i] = true;
                        self.moments.push(moment(rule, msisdn, ts));
                    }
                }
            }
            Planted::Network(None) | Planted::Other => {}
        }
    }

    /// Fires the handset moments due before `limit`.
    fn fire_before(&mut self, limit: u64) {
        while let Some(first) = self.timers.first().cloned().filter(|t| t.0 < limit) {
            self.timers.remove(&first);
            let (due, msisdn, imei) = first;
            let Some(sub) = self.subs.get_mut(&msisdn) else {
                continue;
            };
            // Only if the record in force still says so.
            let current = sub.customer.as_ref().and_then(|c| c.handset.clone());
            if current == Some((due, imei.clone())) && sub.handsets.insert(imei) {
                self.moments.push(moment("handset-upgrade", &msisdn, due));
            }
        }
    }

    /// The moments planted up to and including event time `end`, sorted.
    pub fn finish(mut self, end: u64) -> Vec<Moment> {
        self.flush();
        self.fire_before(end + 1);
        let mut moments = self.moments;
        moments.sort();
        moments
    }
}

fn moment(rule: &'static str, msisdn: &str, at: u64) -> Moment {
    Moment {
        rule,
        msisdn: msisdn.to_string(),
        at,
    }
}

/// The truth of a whole set of generated lines (in any order).
pub fn of_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<Moment> {
    let mut events: Vec<(u64, u8, usize, Parsed)> = lines
        .into_iter()
        .filter_map(Parsed::from_line)
        .enumerate()
        .map(|(i, p)| (p.ts, p.rank(), i, p))
        .collect();
    events.sort_by_key(|(ts, rank, i, _)| (*ts, *rank, *i));
    let end = events.last().map_or(0, |e| e.0);
    let mut truth = Truth::new();
    for (ts, _, _, p) in &events {
        truth.observe(&p.msisdn, *ts, &p.planted);
    }
    truth.finish(end)
}

/// How the engine's decisions compare with the truth.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Check {
    pub planted: usize,
    pub found: usize,
    /// Planted moments with no decision.
    pub missing: Vec<Moment>,
    /// Decisions of the default rules at moments not planted.
    pub unexpected: Vec<Moment>,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty()
    }

    /// One line, and the first few moments that differ.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "planted moments {}, decided {}, missing {}, not planted {}",
            self.planted,
            self.found,
            self.missing.len(),
            self.unexpected.len()
        );
        for (what, list) in [("missing", &self.missing), ("not planted", &self.unexpected)] {
            for m in list.iter().take(5) {
                text.push_str(&format!("\n  {what}: {}", moment_json(m)));
            }
        }
        text
    }
}

/// A moment as one JSON object (`rule`, `msisdn`, `moment_ts`).
pub fn moment_json(m: &Moment) -> String {
    serde_json::json!({"rule": m.rule, "msisdn": m.msisdn, "moment_ts": format_rfc3339(m.at)}).to_string()
}

/// Compares `truth` with decided moments (`rule`, `msisdn`, `moment_ts` of each decision; any
/// rule outside [`RULES`] is ignored; a moment decided twice counts once here — duplicates are
/// the business of the exactly-once checks).
pub fn check(truth: &[Moment], decided: impl IntoIterator<Item = Moment>) -> Check {
    let decided: BTreeSet<Moment> = decided.into_iter().filter(|m| RULES.contains(&m.rule)).collect();
    let planted: BTreeSet<&Moment> = truth.iter().collect();
    Check {
        planted: planted.len(),
        found: planted.iter().filter(|m| decided.contains(**m)).count(),
        missing: planted
            .iter()
            .filter(|m| !decided.contains(**m))
            .map(|m| (*m).clone())
            .collect(),
        unexpected: decided.iter().filter(|m| !planted.contains(m)).cloned().collect(),
    }
}

/// Reads a decision (or action) JSON object as a moment; `None` for other rules or malformed
/// lines.
pub fn decided_moment(line: &[u8]) -> Option<Moment> {
    #[derive(serde::Deserialize)]
    struct Decided<'a> {
        rule: &'a str,
        msisdn: &'a str,
        moment_ts: &'a str,
    }
    let d: Decided = serde_json::from_slice(line).ok()?;
    let rule = RULES.into_iter().find(|r| *r == d.rule)?;
    Some(moment(rule, d.msisdn, parse_rfc3339(d.moment_ts).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer(ts: &str, tz: &str, anchor: u32, acquired: &str, end: &str) -> String {
        serde_json::json!({"type":"customer","ts":ts,"msisdn":"351910000001","account_id":"A","home_country":"PT",
            "timezone":tz,"plan":{"data_pack_bytes":1000,"cycle_anchor_day":anchor},
            "device":{"imei":"35000","acquired":acquired},"contract_end":end})
        .to_string()
    }

    fn network(ts: &str, country: &str) -> String {
        format!(r#"{{"type":"network","ts":"{ts}","msisdn":"351910000001","event":"attach","country":"{country}"}}"#)
    }

    fn data(ts: &str, bytes: u64) -> String {
        format!(r#"{{"type":"usage","ts":"{ts}","msisdn":"351910000001","kind":"data","bytes":{bytes}}}"#)
    }

    fn ms(text: &str) -> u64 {
        parse_rfc3339(text).unwrap()
    }

    #[test]
    fn roaming_arrivals_are_changes_of_foreign_country() {
        let lines = [
            customer("2026-07-01T00:00:00Z", "Europe/Lisbon", 1, "2026-01-01", "2028-01-01"),
            network("2026-07-01T08:00:00Z", "PT"),
            network("2026-07-01T09:00:00Z", "ES"),
            network("2026-07-01T09:30:00Z", "ES"),
            network("2026-07-01T10:00:00Z", "PT"),
            network("2026-07-01T11:00:00Z", "ES"),
        ];
        let got = of_lines(lines.iter().map(String::as_str));
        let at: Vec<u64> = got.iter().map(|m| m.at).collect();
        assert_eq!(at, vec![ms("2026-07-01T09:00:00Z"), ms("2026-07-01T11:00:00Z")]);
        assert!(got.iter().all(|m| m.rule == "roaming-welcome"));
    }

    #[test]
    fn data_thresholds_fire_once_per_cycle_and_restart_at_the_anchor() {
        // Cycle anchored on the 2nd, Lisbon time (UTC+1 in July): the cycle turns at
        // 2026-07-01T23:00:00Z.
        let lines = [
            customer("2026-07-01T00:00:00Z", "Europe/Lisbon", 2, "2026-01-01", "2028-01-01"),
            data("2026-07-01T10:00:00Z", 700),
            data("2026-07-01T11:00:00Z", 100), // 80 %
            data("2026-07-01T12:00:00Z", 50),
            data("2026-07-01T22:59:59Z", 500),  // 100 %
            data("2026-07-01T23:00:00Z", 2000), // new cycle: both at once
        ];
        let got = of_lines(lines.iter().map(String::as_str));
        let seen: BTreeSet<(&str, u64)> = got.iter().map(|m| (m.rule, m.at)).collect();
        let expected = BTreeSet::from([
            ("data-pack-80", ms("2026-07-01T11:00:00Z")),
            ("data-pack-100", ms("2026-07-01T22:59:59Z")),
            ("data-pack-100", ms("2026-07-01T23:00:00Z")),
            ("data-pack-80", ms("2026-07-01T23:00:00Z")),
        ]);
        assert_eq!(seen, expected);
    }

    #[test]
    fn handsets_fire_at_the_later_of_ageing_and_contract_end_or_when_known() {
        // Aged long ago, contract ends within 60 days: due when the record arrives.
        let now = [customer(
            "2026-07-01T05:00:00Z",
            "Europe/Lisbon",
            1,
            "2023-01-01",
            "2026-08-01",
        )];
        let got = of_lines(now.iter().map(String::as_str));
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].rule, got[0].at),
            ("handset-upgrade", ms("2026-07-01T05:00:00Z"))
        );
        // Due at local midnight of contract_end − 60 days, once event time passes it.
        let later = [
            customer("2026-07-01T00:00:00Z", "Europe/Lisbon", 1, "2023-01-01", "2026-08-31"),
            network("2026-07-02T22:00:00Z", "PT"),
        ];
        let got = of_lines(later.iter().map(String::as_str));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].at, ms("2026-07-01T23:00:00Z")); // 2026-07-02 00:00 Lisbon
                                                           // Not yet, when event time ends before it.
        let early = [
            customer("2026-07-01T00:00:00Z", "Europe/Lisbon", 1, "2023-01-01", "2026-08-31"),
            network("2026-07-01T22:00:00Z", "PT"),
        ];
        assert!(of_lines(early.iter().map(String::as_str)).is_empty());
    }

    #[test]
    fn the_check_names_what_is_missing_and_what_was_not_planted() {
        let truth = vec![moment("roaming-welcome", "1", 5), moment("data-pack-80", "1", 7)];
        let decided = vec![
            moment("roaming-welcome", "1", 5),
            moment("handset-upgrade", "2", 9),
            moment("roaming-welcome", "1", 5),
        ];
        let c = check(&truth, decided);
        assert_eq!((c.planted, c.found), (2, 1));
        assert_eq!(c.missing, vec![moment("data-pack-80", "1", 7)]);
        assert_eq!(c.unexpected, vec![moment("handset-upgrade", "2", 9)]);
        assert!(!c.passed());
        let line = br#"{"rule":"data-pack-80","msisdn":"1","moment_ts":"1970-01-01T00:00:00.007Z","x":1}"#;
        assert_eq!(decided_moment(line), Some(moment("data-pack-80", "1", 7)));
        assert_eq!(
            decided_moment(br#"{"rule":"family-plan","msisdn":"1","moment_ts":"1970-01-01T00:00:00Z"}"#),
            None
        );
    }
}
