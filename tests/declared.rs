//! Declared moments: a moment written as a CEL condition that becomes true on the state
//! needs no code. The built-in `roaming_arrival` and `data_pack_threshold` moments, declared
//! in rule files, must give the same decisions (ids, subscribers, times, channels, verdicts)
//! as the built-ins on a generated world whose customer records precede their activity.

mod common;

use std::path::Path;

const DECLARED_ROAMING: &str = r#"
id = "roaming-welcome"
moment = "roaming_arrival_declared"
when = "subscriber.country != '' && subscriber.country != customer.home_country && subscriber.country != subscriber.previous_country"
dedupe_key = "subscriber.country"
offer = "ROAM-PACK"
channel = "sms"
cooldown = "24h"
[messages]
en = "Welcome to {key}! {offer}"
"#;

fn declared_pack(id: &str, threshold: f64) -> String {
    format!(
        r#"
id = "{id}"
moment = "pack_{percent}"
when = "subscriber.cycle.ratio >= {threshold:?}"
dedupe_key = "subscriber.cycle.start"
offer = "DATA"
channel = "sms"
[messages]
en = "{{offer}}"
"#,
        percent = (threshold * 100.0) as u32
    )
}

/// (action_id, rule, msisdn, moment_ts, moment_key, channel, decision, reason) of every decision.
fn decisions(dir: &Path) -> Vec<String> {
    let mut lines: Vec<String> = common::read_jsonl(&dir.join("decisions.jsonl"))
        .into_iter()
        .map(|d| {
            [
                "action_id",
                "rule",
                "msisdn",
                "moment_ts",
                "moment_key",
                "channel",
                "decision",
                "reason",
            ]
            .map(|f| d[f].to_string())
            .join(" ")
        })
        .collect();
    lines.sort();
    lines
}

fn replay(events: &Path, rules: &Path, out: &Path) {
    common::replay_with_rules(events, rules, out, 2);
}

#[test]
fn declared_roaming_and_data_pack_moments_decide_like_the_built_in_ones() {
    let dir = tempfile::tempdir().unwrap();
    let lines = common::world(1_500, 3, "2026-07-29", 5, 16, 0.2, 0.0);
    let events = dir.path().join("world.jsonl");
    common::write_jsonl(&events, &lines);

    let builtin = dir.path().join("builtin");
    std::fs::create_dir(&builtin).unwrap();
    for rule in ["roaming-welcome", "data-pack-80", "data-pack-100"] {
        let file = format!("{rule}.toml");
        std::fs::copy(common::root().join("rules").join(&file), builtin.join(&file)).unwrap();
    }
    let declared = dir.path().join("declared");
    std::fs::create_dir(&declared).unwrap();
    std::fs::write(declared.join("roaming-welcome.toml"), DECLARED_ROAMING).unwrap();
    std::fs::write(declared.join("data-pack-80.toml"), declared_pack("data-pack-80", 0.8)).unwrap();
    std::fs::write(declared.join("data-pack-100.toml"), declared_pack("data-pack-100", 1.0)).unwrap();

    replay(&events, &builtin, &dir.path().join("out-builtin"));
    replay(&events, &declared, &dir.path().join("out-declared"));
    let expected = decisions(&dir.path().join("out-builtin"));
    let got = decisions(&dir.path().join("out-declared"));
    let count = |rule: &str| expected.iter().filter(|d| d.contains(&format!("\"{rule}\""))).count();
    assert!(
        count("roaming-welcome") > 100 && count("data-pack-80") > 50 && count("data-pack-100") > 20,
        "the world should exercise every rule: {} roaming, {} pack 80, {} pack 100",
        count("roaming-welcome"),
        count("data-pack-80"),
        count("data-pack-100")
    );
    let missing: Vec<&String> = expected.iter().filter(|d| !got.contains(d)).take(5).collect();
    let extra: Vec<&String> = got.iter().filter(|d| !expected.contains(d)).take(5).collect();
    assert!(
        expected == got,
        "declared moments decide differently ({} vs {} decisions); missing e.g. {missing:#?}; extra e.g. {extra:#?}",
        expected.len(),
        got.len()
    );
    // And the actions name the declared moment.
    let actions = common::read_jsonl(&dir.path().join("out-declared").join("actions.jsonl"));
    assert!(actions.iter().any(|a| a["moment"] == "roaming_arrival_declared"));
    assert!(actions.iter().any(|a| a["moment"] == "pack_80"));
}

#[test]
fn a_declared_moment_happens_when_its_condition_becomes_true_and_again_after_it_was_false() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("cancel-intent.toml"),
        r#"
id = "cancel-intent-save"
moment = "cancel_intent"
when = "subscriber.selfcare.last_page == 'cancel'"
offer = "LOYALTY-20"
channel = "sms"
[messages]
en = "Stay with us: {offer}"
"#,
    )
    .unwrap();
    let customer = r#"{"type":"customer","ts":"2026-07-01T00:00:00Z","msisdn":"351910000001","account_id":"A","home_country":"PT","timezone":"Europe/Lisbon","consent":{"sms":true}}"#;
    let visit = |ts: &str, page: &str| {
        format!(r#"{{"type":"selfcare","ts":"{ts}","msisdn":"351910000001","channel":"app","page":"{page}"}}"#)
    };
    let lines = vec![
        customer.to_string(),
        visit("2026-07-02T10:00:00Z", "plans"),
        visit("2026-07-02T10:01:00Z", "cancel"), // becomes true: a moment
        visit("2026-07-02T10:02:00Z", "cancel"), // still true: nothing
        r#"{"type":"usage","ts":"2026-07-02T10:03:00Z","msisdn":"351910000001","kind":"sms","count":1}"#.to_string(),
        visit("2026-07-03T09:00:00Z", "invoices"), // false again
        visit("2026-07-05T18:30:00Z", "cancel"),   // true again: a second moment
    ];
    let events = dir.path().join("events.jsonl");
    common::write_jsonl(&events, &lines);
    let out = dir.path().join("out");
    replay(&events, &rules, &out);
    let actions = common::read_jsonl(&out.join("actions.jsonl"));
    let times: Vec<&str> = actions.iter().map(|a| a["moment_ts"].as_str().unwrap()).collect();
    assert_eq!(times, ["2026-07-02T10:01:00Z", "2026-07-05T18:30:00Z"]);
    assert!(actions
        .iter()
        .all(|a| a["moment"] == "cancel_intent" && a["offer"] == "LOYALTY-20"));
}
