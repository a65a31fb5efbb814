//! A seeded synthetic operator: subscribers with plans, devices, consent and home
//! countries, and a day-by-day stream of their network signalling, usage, self-care logins
//! and top-ups, with roaming trips (border flapping included) and a sprinkle of invalid
//! messages. The same seed gives the same events, byte for byte.

use chrono::{Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

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
}

/// Home markets: (country, time zone, language, MCC of the home network).
const HOMES: &[(&str, &str, &str, &str)] = &[
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

/// Generates the world's events in time order, as JSON lines, handing each to `emit`.
pub fn generate(spec: &WorldSpec, mut emit: impl FnMut(&str)) {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let start = spec.start.and_hms_opt(0, 0, 0).expect("midnight exists");
    let mut lines: Vec<(NaiveDateTime, u64, String)> = Vec::new();
    let mut homes = Vec::with_capacity(spec.subscribers as usize);

    // Day 0, 00:00: every subscriber's customer record.
    for i in 0..spec.subscribers {
        let home = *HOMES.choose(&mut rng).expect("non-empty");
        homes.push(home);
        let record = customer(&mut rng, i, home, start);
        lines.push((start, i, record.to_string()));
    }

    for day in 0..spec.days {
        let day_start = start + Duration::days(i64::from(day));
        let mut day_lines = Vec::new();
        for (i, home) in homes.iter().enumerate() {
            let i = i as u64;
            let id = msisdn(i);
            let travels = rng.random_bool(spec.travel_rate);
            let (abroad, abroad_mcc) = *DESTINATIONS.choose(&mut rng).expect("non-empty");
            let (abroad, abroad_mcc) = if abroad == home.0 {
                ("US", "310")
            } else {
                (abroad, abroad_mcc)
            };
            // Lands between 06:00 and 20:00; flaps back to home at a border now and then.
            let arrival = day_start + Duration::minutes(rng.random_range(360..1200));
            let flaps = travels && rng.random_bool(0.2);
            let events = rng
                .random_range(spec.events_per_day / 2..=spec.events_per_day * 3 / 2)
                .max(1);
            for _ in 0..events {
                let at = day_start + Duration::milliseconds(rng.random_range(0..86_400_000));
                let away = travels && at >= arrival;
                let (country, mcc) = if away { (abroad, abroad_mcc) } else { (home.0, home.3) };
                let ts = rfc3339(at);
                let roll: f64 = rng.random();
                let event = if roll < 0.45 {
                    let kind = ["location_update", "attach", "call", "sms"]
                        .choose(&mut rng)
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
                        .choose(&mut rng)
                        .copied()
                        .unwrap_or("home");
                    json!({"type":"selfcare","ts":ts,"msisdn":id,"account_id":format!("A-{i}"),"channel":"app","page":page})
                } else {
                    let amount = [5.0, 10.0, 20.0].choose(&mut rng).copied().unwrap_or(10.0);
                    json!({"type":"topup","ts":ts,"msisdn":id,"amount":amount,"currency":"EUR"})
                };
                day_lines.push((at, i, event.to_string()));
            }
            if travels {
                let ts = rfc3339(arrival);
                day_lines.push((arrival, i, json!({"type":"network","ts":ts,"msisdn":id,"event":"location_update","country":abroad,"mcc":abroad_mcc}).to_string()));
                if flaps {
                    let back = arrival + Duration::minutes(rng.random_range(5..90));
                    let again = back + Duration::minutes(rng.random_range(5..90));
                    day_lines.push((back, i, json!({"type":"network","ts":rfc3339(back),"msisdn":id,"event":"location_update","country":home.0}).to_string()));
                    day_lines.push((again, i, json!({"type":"network","ts":rfc3339(again),"msisdn":id,"event":"location_update","country":abroad}).to_string()));
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
        day_lines.sort();
        lines.append(&mut day_lines);
    }
    for (_, _, line) in &lines {
        emit(line);
    }
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

    fn spec(seed: u64) -> WorldSpec {
        WorldSpec {
            subscribers: 50,
            days: 2,
            start: NaiveDate::from_ymd_opt(2026, 7, 1).unwrap(),
            seed,
            events_per_day: 20,
            travel_rate: 0.3,
            invalid_rate: 0.01,
        }
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
}
