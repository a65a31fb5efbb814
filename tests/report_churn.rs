//! `kairos report churn` on a log whose answer is known: who holds the one churn factor at the
//! observation instant, who terminates within the horizon after it, and so the AUC, the lift
//! at the top and the calibration by hand; the retention loop recounted from the replay's
//! decisions; the HTML page's numbers as headless Chromium renders them.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

const DAY: i64 = 86_400_000;
/// 2026-06-01T00:00:00Z.
const START: i64 = 1_780_272_000_000;

fn ts(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn msisdn(i: usize) -> String {
    format!("3519100{i:05}")
}

/// Who is who: 10 look at the cancel page on day 40 (8 of them terminate on day 55), 30 do not
/// (2 terminate on day 60), one terminates on day 45 (gone at the instant), one on day 85
/// (after the horizon: a stayer).
struct Log {
    lines: Vec<String>,
    terminated: HashMap<String, i64>,
}

fn log() -> Log {
    let mut lines: Vec<(i64, String)> = Vec::new();
    let mut terminated = HashMap::new();
    for i in 0..42 {
        let m = msisdn(i);
        let record = |at: i64, status: &str| {
            json!({"type":"customer","ts":ts(at),"msisdn":m,"account_id":format!("A{i}"),"address_id":format!("AD{i}"),"home_country":"PT","timezone":"Europe/Lisbon","language":"pt",
                "tenure_start":"2025-01-01","prepaid":false,"status":status,
                "plan":{"id":"P","data_pack_bytes":10_737_418_240u64,"cycle_anchor_day":1,"monthly_fee":20.0},
                "device":{"imei":format!("35{i:013}"),"model":"X","acquired":"2026-01-01"},
                "contract_end":"2028-01-01","consent":{"sms":true,"email":false,"push":false}})
            .to_string()
        };
        lines.push((START, record(START, "active")));
        let leaves = match i {
            0..=7 => Some(55),
            10..=11 => Some(60),
            40 => Some(45),
            41 => Some(85),
            _ => None,
        };
        if i < 10 {
            let at = START + 40 * DAY + 3_600_000;
            lines.push((at, json!({"type":"selfcare","ts":ts(at),"msisdn":m,"account_id":format!("A{i}"),"channel":"app","page":"cancel"}).to_string()));
        }
        let end = leaves.unwrap_or(91);
        for day in 1..end.min(91) {
            let at = START + day * DAY + 36_000_000;
            lines.push((
                at,
                json!({"type":"usage","ts":ts(at),"msisdn":m,"kind":"data","bytes":5_000_000}).to_string(),
            ));
        }
        if let Some(day) = leaves {
            let at = START + day * DAY + 43_200_000;
            lines.push((at, record(at, "terminated")));
            terminated.insert(m, at);
        }
    }
    lines.sort();
    Log {
        lines: lines.into_iter().map(|(_, l)| l).collect(),
        terminated,
    }
}

/// The shipped rules with a churn model of one factor (the cancel page) and a retention rule
/// that holds half out.
fn rules(dir: &Path) -> PathBuf {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    for entry in std::fs::read_dir(common::root().join("rules")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&path, rules.join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(
        rules.join("churn.toml"),
        "fitted = \"by hand, for this test\"\nintercept = -3.0\nthreshold = 0.33\n\n[[factor]]\nname = \"cancel_page\"\n\
         when = \"subscriber.cancel_visits_30d > 0\"\nweight = 3.0\nreason = \"looked at the cancel page\"\n",
    )
    .unwrap();
    let shipped = std::fs::read_to_string(common::root().join("rules/retention-churn.toml")).unwrap();
    let halved = shipped
        .replace("holdout = 0.2", "holdout = 0.5")
        .replace("condition = \"household.monthly_value < 60.0\"", "condition = \"true\"");
    std::fs::write(rules.join("retention-churn.toml"), halved).unwrap();
    std::fs::remove_file(rules.join("retention-churn-household.toml")).unwrap();
    rules
}

struct Fixture {
    _dir: tempfile::TempDir,
    out: PathBuf,
    report: Value,
    log: Log,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let log = log();
    let events = dir.path().join("events.jsonl");
    common::write_jsonl(&events, &log.lines);
    let rules = rules(dir.path());
    let out = dir.path().join("out");
    let at = ts(START + 50 * DAY);
    let output = common::kairos(&[
        "report",
        "churn",
        "--events",
        events.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--at",
        &at,
        "--horizon",
        "30d",
        "--top",
        "4,20",
        "--daily",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with("# Churn report: scores at 2026-07-21T00:00:00Z"),
        "{stdout}"
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    Fixture {
        _dir: dir,
        out,
        report,
        log,
    }
}

fn close(value: &Value, want: f64) {
    let got = value.as_f64().unwrap_or(f64::NAN);
    assert!((got - want).abs() < 1e-9, "got {got}, want {want}");
}

#[test]
fn the_scores_at_the_instant_are_held_against_who_left_after_it() {
    let f = fixture();
    let r = &f.report;
    // 41 customers at the instant (one gone), 10 leave within 30 days (the one of day 85 does
    // not count).
    assert_eq!(r["base"]["scored"], 41);
    assert_eq!(r["base"]["gone"], 1);
    assert_eq!(r["base"]["leavers"], 10);
    // Risk 1/(1+e^0) = 0.5 for the ten, 1/(1+e^3) for the others. Pairs (leaver, stayer):
    // 8 high leavers over 29 low stayers win, 8 × 2 high stayers tie, 2 low leavers × 29 tie.
    close(&r["auc"], (8.0 * 29.0 + 0.5 * 16.0 + 0.5 * 58.0) / (10.0 * 31.0));
    // The top 4 are four of the ten: 80 % of them left, against 10 / 41.
    assert_eq!(r["top"][0]["k"], 4);
    close(&r["top"][0]["precision"], 0.8);
    close(&r["top_decile_lift"], 0.8 / (10.0 / 41.0));
    // Top 20: the ten (8), and 10 of the 31 low (2 leavers among them).
    close(&r["top"][1]["leavers"], 8.0 + 2.0 * 10.0 / 31.0);
    // Calibration: two bands, each with its observed rate.
    let bands = r["calibration"].as_array().unwrap();
    assert_eq!(bands.len(), 2);
    assert_eq!(
        (bands[0]["n"].as_u64(), bands[0]["leavers"].as_u64()),
        (Some(31), Some(2))
    );
    assert_eq!(
        (bands[1]["n"].as_u64(), bands[1]["leavers"].as_u64()),
        (Some(10), Some(8))
    );
    close(&bands[1]["mean_risk"], 0.5);
    // The one reason, its hit rate; the stages at the instant.
    assert_eq!(r["reasons"][0]["reason"], "looked at the cancel page");
    assert_eq!(
        (r["reasons"][0]["n"].as_u64(), r["reasons"][0]["leavers"].as_u64()),
        (Some(10), Some(8))
    );
    let stages: BTreeMap<&str, u64> = r["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["stage"].as_str().unwrap(), s["n"].as_u64().unwrap()))
        .collect();
    assert_eq!(stages.get("leaving"), Some(&10));
    assert_eq!(stages.get("gone"), Some(&1));
    assert_eq!(stages.values().sum::<u64>(), 42);
    assert_eq!(r["inputs"]["model"], "by hand, for this test");
    assert_eq!(r["inputs"]["terminations"], 12);

    // scores.jsonl: one line per customer scored, with its factors and outcome.
    let scores = common::read_jsonl(&f.out.join("scores.jsonl"));
    assert_eq!(scores.len(), 41);
    let cancel: Vec<&Value> = scores
        .iter()
        .filter(|s| s["churn_factors"] == json!(["cancel_page"]))
        .collect();
    assert_eq!(cancel.len(), 10);
    assert_eq!(cancel.iter().filter(|s| s["left"] == true).count(), 8);
    for s in &scores {
        let left = f
            .log
            .terminated
            .get(s["msisdn"].as_str().unwrap())
            .is_some_and(|t| *t <= START + 80 * DAY);
        assert_eq!(s["left"], left, "{s}");
    }
}

#[test]
fn the_retention_loop_is_recounted_from_the_decisions_and_the_log() {
    let f = fixture();
    let decisions = common::read_jsonl(&f.out.join("replay/decisions.jsonl"));
    let retention: Vec<&Value> = decisions.iter().filter(|d| d["rule"] == "retention-churn").collect();
    // The ten who looked at the cancel page crossed the threshold on day 40.
    let reached: HashSet<&str> = retention.iter().map(|d| d["msisdn"].as_str().unwrap()).collect();
    assert_eq!(reached.len(), 10);
    let (mut treated, mut control) = ((0, 0), (0, 0));
    for d in &retention {
        let at = chrono::DateTime::parse_from_rfc3339(d["moment_ts"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
        let left = f
            .log
            .terminated
            .get(d["msisdn"].as_str().unwrap())
            .is_some_and(|t| *t > at && *t <= at + 30 * DAY);
        let arm = match (d["decision"].as_str(), d["reason"].as_str()) {
            (Some("sent"), _) => &mut treated,
            (_, Some("rule_holdout")) => &mut control,
            other => panic!("unexpected decision {other:?}"),
        };
        arm.0 += u64::from(left);
        arm.1 += 1;
    }
    assert!(treated.1 > 0 && control.1 > 0, "{treated:?} {control:?}");
    let row = f.report["retention"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == "retention-churn")
        .unwrap()
        .clone();
    assert_eq!(
        (row["treated"]["n"].as_u64(), row["treated"]["left"].as_u64()),
        (Some(treated.1), Some(treated.0))
    );
    assert_eq!(
        (row["control"]["n"].as_u64(), row["control"]["left"].as_u64()),
        (Some(control.1), Some(control.0))
    );
    let reduction = control.0 as f64 / control.1 as f64 - treated.0 as f64 / treated.1 as f64;
    close(&row["reduction"], reduction);
    // The pooled row is this rule's (retention-household holds nobody out).
    assert_eq!(f.report["retention"]["rows"][0]["treated"], row["treated"]);
}

/// `--daily`: the same scores as of every day whose horizon lies in the log — the row of the
/// observation instant is the report itself; day 41 (after the cancel visits) worked by hand.
#[test]
fn the_scores_day_by_day_agree_with_the_instant_and_by_hand() {
    let f = fixture();
    let r = &f.report;
    // The report's instants: whole seconds, UTC.
    let ts = |ms: i64| kairos_model::time::format_rfc3339(ms as u64);
    let daily = r["daily"].as_array().unwrap();
    // Days 1 to 60: the last event is on day 90, the horizon 30 days.
    assert_eq!(daily.len(), 60);
    assert_eq!(daily[0]["at"], ts(START + DAY));
    assert_eq!(daily[59]["at"], ts(START + 60 * DAY));
    let same = daily.iter().find(|d| d["at"] == ts(START + 50 * DAY)).unwrap();
    assert_eq!(same["base"], r["base"]);
    assert_eq!(same["auc"], r["auc"]);
    assert_eq!(same["top_decile_lift"], r["top_decile_lift"]);
    assert_eq!(same["stages"], r["stages"]);
    // Day 41: 42 customers, nobody gone; leavers within 30 days: 0–7 and 10–11 (cancel
    // visitors 0–9 scored σ(0), everyone else σ(-3)) and 40. Pairs (leaver, stayer): 8 × 29
    // won, 8 × 2 and 3 × 29 tied, of 11 × 31.
    let day41 = daily.iter().find(|d| d["at"] == ts(START + 41 * DAY)).unwrap();
    assert_eq!(day41["base"]["scored"], 42);
    assert_eq!(day41["base"]["leavers"], 11);
    close(
        &day41["auc"],
        (8.0 * 29.0 + 0.5 * (8.0 * 2.0 + 3.0 * 29.0)) / (11.0 * 31.0),
    );
    let leaving = day41["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "leaving")
        .unwrap();
    assert_eq!(leaving["n"], 10);
    // Before the visits nobody stands out: every score ties (day 20: one leaver, on day 45).
    assert_eq!(daily[19]["at"], ts(START + 20 * DAY));
    assert_eq!(daily[19]["base"]["leavers"], 1);
    close(&daily[19]["auc"], 0.5);
    let markdown = std::fs::read_to_string(f.out.join("report.md")).unwrap();
    assert!(markdown.contains("## Day by day"), "{markdown}");
}

#[test]
fn headless_chromium_renders_the_churn_reports_numbers() {
    let f = fixture();
    let dom = common::chromium(&f.out.join("report.html"), "--dump-dom");
    let r = &f.report;
    assert_eq!(common::text_after(&dom, "data-metric=\"scored\""), "41");
    assert_eq!(common::text_after(&dom, "data-metric=\"leavers\""), "10");
    assert_eq!(
        common::text_after(&dom, "data-metric=\"auc\""),
        format!("{:.3}", r["auc"].as_f64().unwrap())
    );
    assert_eq!(
        common::text_after(&dom, "data-metric=\"lift\""),
        format!("{:.2}×", r["top_decile_lift"].as_f64().unwrap())
    );
    assert_eq!(common::text_after(&dom, "data-stage=\"leaving\""), "10");
    let row = &dom[dom.find("data-day=\"2026-07-21\"").unwrap()..];
    assert_eq!(
        common::text_after(row, "data-metric=\"auc\""),
        format!("{:.3}", r["auc"].as_f64().unwrap())
    );
    for chart in [
        "gains-chart",
        "calibration-chart",
        "stages-chart",
        "daily-auc-chart",
        "stage-flows-chart",
    ] {
        assert!(dom.contains(&format!("<svg id=\"{chart}\"")), "{chart}");
    }
}

#[test]
fn an_instant_without_a_horizon_inside_the_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    common::write_jsonl(&events, &log().lines);
    let out = dir.path().join("out");
    let output = common::kairos(&[
        "report",
        "churn",
        "--events",
        events.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--at",
        "2026-08-20T00:00:00Z",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--at 2026-08-20T00:00:00Z: the log runs from"),
        "{stderr}"
    );
    assert!(!out.join("report.json").exists());
    let bad = common::kairos(&[
        "report",
        "churn",
        "--events",
        events.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--horizon",
        "soon",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--horizon"));
}

/// A generated world with churners (households and their evidence, decline, complaints,
/// cancel-page visits, terminations), as lines.
fn churn_world(subscribers: u64, days: u32) -> Vec<String> {
    use kairos_loadtest::churn::{ChurnLayer, ChurnSpec, Offers};
    use kairos_loadtest::households::{HouseholdSpec, Population};
    let spec = kairos_loadtest::world::WorldSpec {
        subscribers,
        days,
        start: "2026-06-01".parse().unwrap(),
        seed: 23,
        events_per_day: 6,
        travel_rate: 0.02,
        invalid_rate: 0.0,
        duplicate_rate: 0.0,
    };
    let population = Population::build(&spec, &HouseholdSpec::default());
    // A high rate, so that a small world has churners of every kind.
    let churn = ChurnSpec {
        monthly_rate: 0.1,
        ..ChurnSpec::default()
    };
    let mut layer = ChurnLayer::new(churn, spec.seed, spec.start, days, subscribers, Offers::default());
    let mut lines = Vec::new();
    kairos_loadtest::world::generate_reporting(&spec, Some(&population), Some(&mut layer), None, |line| {
        lines.push(line.to_string())
    });
    lines
}

fn replay_options(events: &Path, out: PathBuf, workers: usize) -> kairos::pipeline::ReplayOptions {
    kairos::pipeline::ReplayOptions {
        events: vec![events.to_path_buf()],
        out,
        rules: common::root().join("rules"),
        workers,
        allowed_lateness_ms: 0,
        max_future_ms: kairos::decode::Horizon::DEFAULT_MAX_FUTURE,
        households: Default::default(),
        retention: Default::default(),
        progress: None,
    }
}

/// The oracle of the standings at an instant: the same for every worker count, and those a
/// replay of the log cut just before the instant ends with (its `subscribers.jsonl`), silent
/// subscribers and household changes included.
#[test]
fn standings_at_an_instant_are_those_of_the_log_cut_there_whatever_the_workers() {
    let dir = tempfile::tempdir().unwrap();
    let lines = churn_world(300, 30);
    let events = dir.path().join("world.jsonl");
    common::write_jsonl(&events, &lines);
    let at = START + 20 * DAY;
    let days: Vec<u64> = (1..=25).map(|d| (START + d * DAY) as u64).collect();
    let replayed = |workers: usize| {
        let options = replay_options(&events, dir.path().join(format!("full-{workers}")), workers);
        let watch = kairos::pipeline::Watch {
            at: Some(at as u64),
            daily: days.clone(),
        };
        kairos::pipeline::replay_observing(&options, &watch).unwrap()
    };
    let (full, three) = (replayed(1), replayed(3));
    // The day-by-day series: every day asked for, the same for 3 workers, and at the
    // instant the same risks and stages as the standings.
    let instants: std::collections::BTreeSet<u64> = full.daily.iter().map(|(t, _, _, _)| *t).collect();
    assert_eq!(instants.into_iter().collect::<Vec<_>>(), days);
    assert_eq!(full.daily, three.daily, "3 workers differ from 1");
    let at_instant: Vec<(kairos_model::Msisdn, f32, kairos_model::Stage)> = full
        .daily
        .iter()
        .filter(|(t, _, _, _)| *t == at as u64)
        .map(|(_, m, r, s)| (*m, *r, *s))
        .collect();
    let standing: Vec<(kairos_model::Msisdn, f32, kairos_model::Stage)> = full
        .standings_at
        .iter()
        .map(|s| (s.msisdn, s.churn_risk as f32, s.lifecycle))
        .collect();
    assert_eq!(at_instant, standing);
    let one = full.standings_at;
    assert!(one.len() > 250, "{} customers", one.len());
    assert!(
        one.iter().any(|s| s.lifecycle == kairos_model::Stage::Gone),
        "the world has leavers by day 20"
    );
    assert!(one.iter().any(|s| !s.churn_factors.is_empty()));
    assert_eq!(one, three.standings_at, "3 workers differ from 1");

    // The log cut before the instant, and one event of a number that is no customer 1 ms
    // before it, so that event time ends there.
    let cut: Vec<String> = lines
        .iter()
        .filter(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let t = chrono::DateTime::parse_from_rfc3339(v["ts"].as_str().unwrap()).unwrap();
            t.timestamp_millis() < at
        })
        .cloned()
        .chain(std::iter::once(
            json!({"type":"network","ts":ts(at - 1),"msisdn":"447700900001","event":"attach","mcc":"234"}).to_string(),
        ))
        .collect();
    assert!(cut.len() < lines.len());
    let cut_events = dir.path().join("cut.jsonl");
    common::write_jsonl(&cut_events, &cut);
    let out = dir.path().join("cut");
    kairos::pipeline::replay(&replay_options(&cut_events, out.clone(), 2)).unwrap();
    let ended = common::read_jsonl(&out.join("subscribers.jsonl"));
    assert_eq!(ended.len(), one.len());
    let round = |x: f64, places: i32| (x * 10f64.powi(places)).round() / 10f64.powi(places);
    for (s, e) in one.iter().zip(&ended) {
        assert_eq!(e["msisdn"], s.msisdn.to_string());
        assert_eq!(e["lifecycle"], s.lifecycle.as_str(), "{e}");
        assert_eq!(e["household"].as_str(), s.household.as_deref(), "{e}");
        assert_eq!(e["churn_reasons"], json!(s.churn_reasons), "{e}");
        assert_eq!(e["churn_factors"], json!(s.churn_factors), "{e}");
        assert_eq!(e["churn_risk"].as_f64(), Some(round(s.churn_risk, 4)), "{e}");
        assert_eq!(e["stickiness"].as_f64(), Some(round(s.stickiness, 3)), "{e}");
    }
}
