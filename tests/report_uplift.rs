//! `kairos report uplift`: the numbers of `--json` on small decision and event files, the
//! Markdown table in `--out`, skipped lines, and an unreadable path.

mod common;

use std::io::Write;
use std::path::Path;

use serde_json::Value;

const T0: &str = "2026-07-01T00:00:00Z";

fn decision(id: &str, rule: &str, msisdn: u64, decision: &str, reason: Option<&str>) -> String {
    let reason = reason.map_or(String::new(), |r| format!(r#","reason":"{r}","class":"marketing""#));
    format!(
        r#"{{"action_id":"{id}","rule":"{rule}","rule_version":"3f2a9c1","moment":"m","msisdn":"{msisdn}","moment_ts":"{T0}","moment_key":"k","channel":"sms","decision":"{decision}"{reason}}}"#
    )
}

fn response(msisdn: u64, ts: &str, id: &str, outcome: &str) -> String {
    format!(r#"{{"type":"response","ts":"{ts}","msisdn":"{msisdn}","action_id":"{id}","outcome":"{outcome}"}}"#)
}

/// Decisions and responses with known answers:
/// - family-plan: Newcombe's example (a), 56/70 sent vs 48/80 held out (half the held-out
///   conversions reported against their own id, half with an id kairos never issued);
/// - handset-upgrade: a response to another rule's action (hu-1), one 8 days late (hu-2),
///   two to the same decision (hu-3, listed twice), a capped decision with a response
///   (excluded), a held-out one that only clicked (hu-5);
/// - roaming-welcome: sent and converted, no control group.
fn write_inputs(dir: &Path) -> (String, String) {
    let mut decisions = Vec::new();
    let mut responses = Vec::new();
    for i in 0..150u64 {
        let id = format!("fp-{i}");
        let msisdn = 351_910_000_000 + i;
        if i < 70 {
            decisions.push(decision(&id, "family-plan", msisdn, "sent", None));
        } else {
            let reason = if i % 2 == 0 { "global_holdout" } else { "rule_holdout" };
            decisions.push(decision(&id, "family-plan", msisdn, "suppressed", Some(reason)));
        }
        if i < 56 || (70..94).contains(&i) {
            responses.push(response(msisdn, "2026-07-03T10:00:00Z", &id, "accepted"));
        } else if (94..118).contains(&i) {
            responses.push(response(
                msisdn,
                "2026-07-03T10:00:00Z",
                &format!("bss-{i}"),
                "accepted",
            ));
        }
    }
    let (x, y, z, w, v) = (
        351_920_000_001,
        351_920_000_002,
        351_920_000_003,
        351_920_000_004,
        351_920_000_005,
    );
    decisions.extend([
        decision("hu-1", "handset-upgrade", x, "sent", None),
        decision("rw-1", "roaming-welcome", x, "sent", None),
        decision("hu-2", "handset-upgrade", y, "sent", None),
        decision("hu-3", "handset-upgrade", z, "sent", None),
        decision("hu-3", "handset-upgrade", z, "sent", None),
        decision("hu-4", "handset-upgrade", w, "suppressed", Some("cap")),
        decision("hu-5", "handset-upgrade", v, "suppressed", Some("global_holdout")),
        r#"{"rule":"handset-upgrade","decision":"sent"}"#.to_string(),
        "not json".to_string(),
    ]);
    responses.extend([
        response(x, "2026-07-02T00:00:00Z", "rw-1", "accepted"),
        response(y, "2026-07-09T00:00:00Z", "hu-2", "accepted"),
        response(z, "2026-07-02T00:00:00Z", "hu-3", "accepted"),
        response(z, "2026-07-03T00:00:00Z", "hu-3", "accepted"),
        response(w, "2026-07-02T00:00:00Z", "hu-4", "accepted"),
        response(v, "2026-07-02T00:00:00Z", "hu-5", "clicked"),
        r#"{"type":"topup","ts":"2026-07-02T00:00:00Z","msisdn":"351920000001","amount":5}"#.to_string(),
        r#"{"type":"response","ts":"yesterday","msisdn":"351920000001","action_id":"x","outcome":"accepted"}"#
            .to_string(),
    ]);
    let decisions_path = dir.join("decisions.jsonl");
    common::write_jsonl(&decisions_path, &decisions);
    // The events in two files of a folder, one of them gzipped.
    let events = dir.join("events");
    std::fs::create_dir(&events).unwrap();
    let (first, second) = responses.split_at(100);
    common::write_jsonl(&events.join("a.jsonl"), first);
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(events.join("b.jsonl.gz")).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all((second.join("\n") + "\n").as_bytes()).unwrap();
    gz.finish().unwrap();
    (
        decisions_path.to_str().unwrap().to_string(),
        events.to_str().unwrap().to_string(),
    )
}

fn close(value: &Value, want: f64) -> bool {
    value.as_f64().is_some_and(|got| (got - want).abs() < 0.000_05)
}

fn run_json(args: &[&str]) -> (Value, String) {
    let output = common::kairos(args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    let json = serde_json::from_slice(&output.stdout).expect("--json prints JSON");
    (json, stderr)
}

#[test]
fn report_uplift_counts_conversions_per_rule_with_intervals() {
    let dir = tempfile::tempdir().unwrap();
    let (decisions, events) = write_inputs(dir.path());
    let (json, stderr) = run_json(&[
        "report",
        "uplift",
        "--decisions",
        &decisions,
        "--events",
        &events,
        "--json",
    ]);
    assert_eq!(json["window"], "7d");
    assert_eq!(json["window_ms"], 604_800_000u64);
    assert_eq!(json["outcomes"], serde_json::json!(["accepted"]));
    assert_eq!(
        json["inputs"],
        serde_json::json!({
            "decision_files": 1, "decisions": 156, "duplicate_decisions": 1,
            "malformed_decision_lines": 2, "event_files": 2, "responses": 110,
            "other_events": 1, "invalid_event_lines": 1,
        })
    );
    let rules: Vec<&str> = json["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["family-plan", "handset-upgrade", "roaming-welcome"]);

    let fp = &json["rules"][0];
    assert_eq!(fp["treated"]["n"], 70);
    assert_eq!(fp["treated"]["conversions"], 56);
    assert_eq!(fp["control"]["n"], 80);
    assert_eq!(fp["control"]["conversions"], 48);
    assert_eq!(fp["excluded"], 0);
    assert!(close(&fp["treated"]["rate"], 0.8));
    // Wilson 95 % interval of 56/70 and 48/80.
    assert!(
        close(&fp["treated"]["ci_low"], 0.6918) && close(&fp["treated"]["ci_high"], 0.8770),
        "{fp}"
    );
    assert!(
        close(&fp["control"]["ci_low"], 0.4905) && close(&fp["control"]["ci_high"], 0.7004),
        "{fp}"
    );
    // Newcombe (1998), example (a): 0.2000, 95 % CI 0.0524 to 0.3339.
    let uplift = &fp["uplift"];
    assert!(close(&uplift["absolute"], 0.2), "{uplift}");
    assert!(
        close(&uplift["ci_low"], 0.0524) && close(&uplift["ci_high"], 0.3339),
        "{uplift}"
    );
    assert!(close(&uplift["relative"], 0.2 / 0.6), "{uplift}");

    let hu = &json["rules"][1];
    assert_eq!(
        (&hu["treated"]["n"], &hu["treated"]["conversions"]),
        (&Value::from(3), &Value::from(1)),
        "{hu}"
    );
    assert_eq!(
        (&hu["control"]["n"], &hu["control"]["conversions"]),
        (&Value::from(1), &Value::from(0)),
        "{hu}"
    );
    assert_eq!(hu["excluded"], 1);
    assert!(close(&hu["uplift"]["absolute"], 1.0 / 3.0), "{hu}");
    assert_eq!(hu["uplift"]["relative"], Value::Null, "the control rate is 0");

    let rw = &json["rules"][2];
    assert_eq!(
        (&rw["treated"]["n"], &rw["treated"]["conversions"]),
        (&Value::from(1), &Value::from(1))
    );
    assert_eq!(rw["control"]["n"], 0);
    assert_eq!(rw["control"]["rate"], Value::Null);
    assert_eq!(rw["control"]["ci_low"], Value::Null);
    assert_eq!(rw["uplift"], Value::Null);

    let all = &json["all"];
    assert_eq!(all["rule"], "all");
    assert_eq!(
        (&all["treated"]["n"], &all["treated"]["conversions"]),
        (&Value::from(74), &Value::from(58))
    );
    assert_eq!(
        (&all["control"]["n"], &all["control"]["conversions"]),
        (&Value::from(81), &Value::from(48))
    );
    assert_eq!(all["excluded"], 1);

    // The skipped lines, each as file:line: reason.
    assert!(
        stderr.contains(&format!(
            "{decisions}:158: not a decision: field `action_id`: missing required field"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{decisions}:159: not a decision: not JSON")),
        "{stderr}"
    );
    assert!(stderr.contains("b.jsonl.gz:12: invalid event: field `ts`"), "{stderr}");
}

#[test]
fn report_uplift_takes_outcomes_and_window_and_writes_markdown_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let (decisions, events) = write_inputs(dir.path());
    let (json, _) = run_json(&[
        "report",
        "uplift",
        "--decisions",
        &decisions,
        "--events",
        &events,
        "--outcomes",
        "accepted,clicked",
        "--window",
        "10d",
        "--json",
    ]);
    assert_eq!(json["window"], "10d");
    assert_eq!(json["outcomes"], serde_json::json!(["accepted", "clicked"]));
    let hu = &json["rules"][1];
    // hu-2's late response is now in the window; hu-5's click counts.
    assert_eq!(hu["treated"]["conversions"], 2, "{hu}");
    assert_eq!(hu["control"]["conversions"], 1, "{hu}");

    let out = dir.path().join("uplift.md");
    let output = common::kairos(&[
        "report",
        "uplift",
        "--decisions",
        &decisions,
        "--events",
        &events,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stdout.is_empty());
    let table = std::fs::read_to_string(&out).unwrap();
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(rows.len(), 5, "{table}");
    assert!(rows[0].starts_with("| rule | treated n |"), "{table}");
    assert!(
        rows[1].starts_with("| family-plan | 70 | 56 | 80.00% (69.18% to 87.70%) | 80 | 48 | 60.00% (49.05% to 70.04%) | +20.00 pp (+5.24 to +33.39) | +33.3% |"),
        "{table}"
    );
    assert!(
        rows[3].ends_with("| 0 | 0 | not enough data | not enough data | – |"),
        "{table}"
    );
    assert!(rows[4].starts_with("| all | 74 | 58 |"), "{table}");
}

#[test]
fn report_uplift_reads_a_replay_output_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, _) = common::roaming_scenario();
    let events = dir.path().join("events.jsonl");
    common::write_jsonl(&events, &lines);
    let out = dir.path().join("out");
    let actions = common::replay(&events, &out, 1);
    // The subscriber accepts the first welcome.
    let responses = dir.path().join("responses.jsonl");
    let accepted = response(
        351_910_000_001,
        "2026-07-01T15:00:00Z",
        actions[0]["action_id"].as_str().unwrap(),
        "accepted",
    );
    common::write_jsonl(&responses, &[accepted]);
    let (json, _) = run_json(&[
        "report",
        "uplift",
        "--decisions",
        out.to_str().unwrap(),
        "--events",
        responses.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(json["inputs"]["malformed_decision_lines"], 0, "{json}");
    let rw = &json["rules"][0];
    assert_eq!(rw["rule"], "roaming-welcome");
    assert_eq!(rw["treated"]["n"], 2, "{rw}");
    assert_eq!(rw["treated"]["conversions"], 1, "{rw}");
    assert!(rw["excluded"].as_u64().unwrap() >= 1, "the suppressed decisions: {rw}");
    assert_eq!(rw["uplift"], Value::Null, "no control group yet: {rw}");
}

#[test]
fn report_uplift_fails_with_one_line_on_an_unreadable_path() {
    let dir = tempfile::tempdir().unwrap();
    let (decisions, _) = write_inputs(dir.path());
    let output = common::kairos(&[
        "report",
        "uplift",
        "--decisions",
        &decisions,
        "--events",
        "/nonexistent/responses.jsonl",
    ]);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("kairos: cannot read /nonexistent/responses.jsonl: "),
        "{stderr}"
    );

    let bad_window = common::kairos(&[
        "report",
        "uplift",
        "--decisions",
        &decisions,
        "--events",
        &decisions,
        "--window",
        "7",
    ]);
    assert!(!bad_window.status.success());
    assert!(
        String::from_utf8_lossy(&bad_window.stderr).starts_with("kairos: --window: invalid window \"7\""),
        "{}",
        String::from_utf8_lossy(&bad_window.stderr)
    );
}
