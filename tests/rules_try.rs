//! `kairos rules try`: a candidate rule set (the shipped rules with `roaming-welcome`
//! changed — no cooldown, a message with markup in it — and `data-pack-100` removed) dry-run
//! against the shipped rules over a small generated world. The report's numbers are checked
//! against the candidate run's own `decisions.jsonl`, its difference against the two rule
//! sets, and the HTML as headless Chromium renders it.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

/// The changed rule's English message: markup that must reach the page as text.
const MARKUP: &str = "<script>alert(1)</script> & <b>bold</b>";

struct Fixture {
    root: PathBuf,
    report: Value,
}

impl Fixture {
    fn out(&self) -> PathBuf {
        self.root.join("out")
    }

    fn rule(&self, id: &str) -> &Value {
        self.report["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["rule"] == id)
            .unwrap_or_else(|| panic!("no rule {id} in the report"))
    }
}

/// Generates the world, writes the candidate rules and runs the dry run, once for all tests.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rules_try");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();

        let lines = common::world(500, 3, "2026-07-01", 5, 20, 0.3, 0.002);
        common::write_jsonl(&root.join("events.jsonl"), &lines);

        let candidate = root.join("candidate-rules");
        copy_rules(&common::root().join("rules"), &candidate);
        std::fs::remove_file(candidate.join("data-pack-100.toml")).unwrap();
        let roaming = std::fs::read_to_string(candidate.join("roaming-welcome.toml")).unwrap();
        let mut in_messages = false;
        let changed: String = roaming
            .lines()
            .filter(|l| !l.starts_with("cooldown"))
            .map(|l| {
                in_messages |= l.trim() == "[messages]";
                // Every language's message (the world's subscribers speak pt, es, fr, de).
                let lang = l.split(" = \"").next().unwrap_or("");
                if in_messages && lang.len() == 2 && lang.bytes().all(|b| b.is_ascii_lowercase()) {
                    format!("{lang} = \"Welcome to {{country_name}}! {MARKUP}\"")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert_ne!(changed, roaming);
        std::fs::write(candidate.join("roaming-welcome.toml"), changed + "\n").unwrap();

        let output = common::kairos(&[
            "rules",
            "try",
            candidate.to_str().unwrap(),
            "--events",
            root.join("events.jsonl").to_str().unwrap(),
            "--against",
            common::root().join("rules").to_str().unwrap(),
            "--out",
            root.join("out").to_str().unwrap(),
            "--samples",
            "3",
        ]);
        assert!(
            output.status.success(),
            "kairos rules try failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let report: Value =
            serde_json::from_str(&std::fs::read_to_string(root.join("out/report.json")).unwrap()).unwrap();
        Fixture { root, report }
    })
}

/// Copies the rule files and the policy (the `*.toml` files directly in `from`).
fn copy_rules(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() && path.extension().is_some_and(|x| x == "toml") {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Counts of one rule's decisions, computed directly from `decisions.jsonl`.
#[derive(Debug, Default, PartialEq)]
struct Counted {
    moments: u64,
    sent: u64,
    deferred: u64,
    reasons: BTreeMap<String, u64>,
    channels: BTreeMap<String, u64>,
    days: BTreeMap<String, u64>,
}

fn count(decisions: &[Value]) -> BTreeMap<String, Counted> {
    let mut by_rule: BTreeMap<String, Counted> = BTreeMap::new();
    for d in decisions {
        let c = by_rule.entry(d["rule"].as_str().unwrap().to_string()).or_default();
        c.moments += 1;
        if d["decision"] == "sent" {
            c.sent += 1;
            let send_at = d["send_at"].as_str().unwrap();
            if send_at != d["moment_ts"].as_str().unwrap() {
                c.deferred += 1;
            }
            *c.channels
                .entry(d["channel"].as_str().unwrap().to_string())
                .or_default() += 1;
            *c.days.entry(send_at[..10].to_string()).or_default() += 1;
        } else {
            *c.reasons.entry(d["reason"].as_str().unwrap().to_string()).or_default() += 1;
        }
    }
    by_rule
}

fn check_stats(rule: &str, stats: &Value, counted: &Counted) {
    let n = |v: &Value| v.as_u64().unwrap_or_else(|| panic!("{rule}: not a count: {v}"));
    assert_eq!(n(&stats["moments"]), counted.moments, "{rule}: moments");
    assert_eq!(n(&stats["sent"]), counted.sent, "{rule}: sent");
    assert_eq!(n(&stats["deferred"]), counted.deferred, "{rule}: deferred");
    assert_eq!(
        n(&stats["suppressed"]),
        counted.reasons.values().sum::<u64>(),
        "{rule}: suppressed"
    );
    for (reason, value) in stats["suppressed_by_reason"].as_object().unwrap() {
        assert_eq!(
            n(value),
            counted.reasons.get(reason).copied().unwrap_or(0),
            "{rule}: suppressed {reason}"
        );
    }
    for reason in counted.reasons.keys() {
        assert!(
            stats["suppressed_by_reason"].get(reason).is_some(),
            "{rule}: {reason} missing"
        );
    }
    for channel in ["sms", "email", "push"] {
        assert_eq!(
            n(&stats["actions_by_channel"][channel]),
            counted.channels.get(channel).copied().unwrap_or(0),
            "{rule}: {channel}"
        );
    }
    let days: BTreeMap<String, u64> = stats["actions_by_day"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["day"].as_str().unwrap().to_string(), n(&d["total"])))
        .collect();
    assert_eq!(days, counted.days, "{rule}: actions by day");
}

#[test]
fn report_numbers_are_the_candidate_runs_decisions() {
    let f = fixture();
    let report = &f.report;
    assert_eq!(report["version"], 1);
    let candidate = read_jsonl(&f.out().join("candidate/decisions.jsonl"));
    let published = read_jsonl(&f.out().join("published/decisions.jsonl"));
    assert!(
        candidate.len() > 100,
        "the world should give many decisions, got {}",
        candidate.len()
    );
    let (c_counts, p_counts) = (count(&candidate), count(&published));

    for rule in report["rules"].as_array().unwrap() {
        let id = rule["rule"].as_str().unwrap();
        let empty = Counted::default();
        if rule["candidate"].is_null() {
            assert!(
                !c_counts.contains_key(id),
                "{id}: decided by the candidate set but reported as absent"
            );
        } else {
            check_stats(id, &rule["candidate"], c_counts.get(id).unwrap_or(&empty));
            // The funnel ends in what was sent.
            let funnel = rule["funnel"].as_array().unwrap();
            assert_eq!(funnel.first().unwrap()["remaining"], rule["candidate"]["moments"]);
            assert_eq!(funnel.last().unwrap()["step"], "sent");
            assert_eq!(funnel.last().unwrap()["remaining"], rule["candidate"]["sent"]);
        }
        if !rule["published"].is_null() {
            check_stats(id, &rule["published"], p_counts.get(id).unwrap_or(&empty));
        }
        let sent = |side: &str| rule[side]["sent"].as_i64().unwrap_or(0);
        assert_eq!(
            rule["delta"]["sent"].as_i64().unwrap(),
            sent("candidate") - sent("published"),
            "{id}: delta"
        );
    }
    let all = |decisions: &[Value]| {
        let mut c = Counted::default();
        for counted in count(decisions).into_values() {
            c.moments += counted.moments;
            c.sent += counted.sent;
        }
        c
    };
    assert_eq!(
        report["totals"]["candidate"]["moments"].as_u64().unwrap(),
        all(&candidate).moments
    );
    assert_eq!(
        report["totals"]["candidate"]["sent"].as_u64().unwrap(),
        all(&candidate).sent
    );
    assert_eq!(
        report["totals"]["published"]["sent"].as_u64().unwrap(),
        all(&published).sent
    );
    let actions = read_jsonl(&f.out().join("candidate/actions.jsonl"));
    assert_eq!(
        report["totals"]["candidate"]["sent"].as_u64().unwrap(),
        actions.len() as u64
    );
    let timeline: u64 = report["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["candidate"]["total"].as_u64().unwrap())
        .sum();
    assert_eq!(timeline, actions.len() as u64);

    // Inputs: every line of the world was read; the invalid ones are the dead letters.
    let lines = std::fs::read_to_string(f.root.join("events.jsonl"))
        .unwrap()
        .lines()
        .count() as u64;
    assert_eq!(report["inputs"]["events_read"].as_u64().unwrap(), lines);
    let dead = read_jsonl(&f.out().join("candidate/dead-letter.jsonl")).len() as u64;
    assert_eq!(report["inputs"]["events_invalid"].as_u64().unwrap(), dead);
    assert!(dead > 0, "the world plants invalid lines");
    assert!(report["inputs"]["first_event"]
        .as_str()
        .unwrap()
        .starts_with("2026-07-01"));
}

#[test]
fn report_says_what_changed_against_the_published_rules() {
    let f = fixture();
    let roaming = f.rule("roaming-welcome");
    assert_eq!(roaming["status"], "changed");
    assert_ne!(roaming["version"], roaming["published_version"]);
    // Without its cooldown the rule is never suppressed by one.
    assert_eq!(roaming["candidate"]["suppressed_by_reason"]["cooldown"], 0);
    let was = roaming["published"]["suppressed_by_reason"]["cooldown"]
        .as_i64()
        .unwrap();
    assert_eq!(
        roaming["delta"]["suppressed_by_reason"]["cooldown"].as_i64().unwrap(),
        -was
    );
    assert!(roaming["delta"]["sent"].as_i64().unwrap() >= 0);
    // The samples are the new message, the numbers masked.
    let samples = roaming["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 3);
    for sample in samples {
        assert!(sample["message"].as_str().unwrap().ends_with(MARKUP), "{sample}");
        let msisdn = sample["msisdn"].as_str().unwrap();
        assert!(msisdn.starts_with("****") && msisdn[msisdn.len() - 3..].bytes().all(|b| b.is_ascii_digit()));
    }

    let removed = f.rule("data-pack-100");
    assert_eq!(removed["status"], "removed");
    assert!(removed["candidate"].is_null() && removed["version"].is_null());
    let published_sent = removed["published"]["sent"].as_i64().unwrap();
    assert_eq!(removed["delta"]["sent"].as_i64().unwrap(), -published_sent);

    for rule in f.report["rules"].as_array().unwrap() {
        let id = rule["rule"].as_str().unwrap();
        if id != "roaming-welcome" && id != "data-pack-100" {
            assert_eq!(rule["status"], "unchanged", "{id}");
            assert_eq!(rule["version"], rule["published_version"], "{id}");
        }
    }
    assert_eq!(f.report["inputs"]["policy_changed"], false);
    assert_eq!(
        f.report["inputs"]["candidate_rule_count"].as_u64().unwrap() + 1,
        f.report["inputs"]["against_rule_count"].as_u64().unwrap()
    );
}

#[test]
fn invalid_candidate_rules_are_reported_as_file_line_col_and_no_report_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    copy_rules(&common::root().join("rules"), &rules);
    std::fs::write(
        rules.join("broken.toml"),
        "id = \"broken\"\nmoment = \"roaming_arrival\"\noffer = \"X\"\nchannel = \"fax\"\n[messages]\nen = \"hi\"\n",
    )
    .unwrap();
    let events = dir.path().join("events.jsonl");
    let (lines, _) = common::roaming_scenario();
    common::write_jsonl(&events, &lines);
    let out = dir.path().join("out");
    let output = common::kairos(&[
        "rules",
        "try",
        rules.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("broken.toml:4:"), "want file:line:col, got {stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no report written"), "{stderr}");
    assert!(!out.join("report.html").exists() && !out.join("report.json").exists());
}

#[test]
fn headless_chromium_renders_the_reports_numbers() {
    let f = fixture();
    let page = f.out().join("report.html");
    let dom = common::chromium(&page, "--dump-dom");
    assert!(
        dom.contains("<html") && dom.contains("Dry run"),
        "not the report: {}",
        &dom[..dom.len().min(500)]
    );

    let report = &f.report;
    let num = |v: &Value| v.as_u64().unwrap().to_string();
    for rule in report["rules"].as_array().unwrap() {
        let id = rule["rule"].as_str().unwrap();
        let cell = |metric: &str| common::text_after(&dom, &format!("data-rule=\"{id}\" data-metric=\"{metric}\""));
        assert_eq!(cell("status"), rule["status"].as_str().unwrap(), "{id}");
        let c = &rule["candidate"];
        if c.is_null() {
            assert_eq!(cell("sent"), "–", "{id}: removed");
            continue;
        }
        assert_eq!(cell("moments"), num(&c["moments"]), "{id}: moments");
        assert_eq!(cell("sent"), num(&c["sent"]), "{id}: sent");
        assert_eq!(cell("suppressed"), num(&c["suppressed"]), "{id}: suppressed");
        assert_eq!(cell("deferred"), num(&c["deferred"]), "{id}: deferred");
        assert_eq!(cell("channel.sms"), num(&c["actions_by_channel"]["sms"]), "{id}: sms");
        assert_eq!(
            cell("channel.email"),
            num(&c["actions_by_channel"]["email"]),
            "{id}: email"
        );
        for (reason, n) in c["suppressed_by_reason"].as_object().unwrap() {
            assert_eq!(cell(&format!("suppressed.{reason}")), num(n), "{id}: {reason}");
        }
        let delta = rule["delta"]["sent"].as_i64().unwrap();
        let shown = cell("delta.sent");
        assert_eq!(
            shown.trim_start_matches('+').parse::<i64>().unwrap(),
            delta,
            "{id}: delta sent"
        );
        // The funnel is an SVG with its numbers as text.
        assert!(
            dom.contains(&format!("<svg class=\"funnel\" data-rule=\"{id}\"")),
            "{id}: no funnel"
        );
        for step in rule["funnel"].as_array().unwrap() {
            let attributes = format!(
                "class=\"funnel-value\" data-rule=\"{id}\" data-step=\"{}\"",
                step["step"].as_str().unwrap()
            );
            assert_eq!(
                common::text_after(&dom, &attributes),
                num(&step["remaining"]),
                "{id}: funnel {step}"
            );
        }
    }
    let totals = &report["totals"]["candidate"];
    assert_eq!(common::text_after(&dom, "data-total=\"sent\""), num(&totals["sent"]));
    assert_eq!(
        common::text_after(&dom, "data-total=\"moments\""),
        num(&totals["moments"])
    );
    assert_eq!(
        common::text_after(&dom, "data-total=\"events_read\""),
        num(&report["inputs"]["events_read"])
    );

    // The timeline: an SVG with bars, and every day's numbers.
    assert!(dom.contains("<svg id=\"timeline-chart\""), "no timeline chart");
    assert!(
        dom.matches("<rect class=\"bar\"").count() >= 3,
        "the timeline has no bars"
    );
    let days = report["timeline"].as_array().unwrap();
    assert!(days.len() >= 3, "three days of events: {days:?}");
    for day in days {
        let d = day["day"].as_str().unwrap();
        assert_eq!(
            common::text_after(&dom, &format!("<td data-day=\"{d}\" data-channel=\"total\"")),
            num(&day["candidate"]["total"]),
            "{d}"
        );
        assert_eq!(
            common::text_after(&dom, &format!("class=\"bar-total\" data-day=\"{d}\"")),
            num(&day["candidate"]["total"])
        );
    }

    // The changed message's markup arrives as text: no script element, no bold.
    assert!(!dom.contains("<script"), "the page must run no script");
    assert!(!dom.contains("<b>bold</b>"));
    assert!(dom.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;"));
}
