//! `kairos replay` end to end (contract §3): the roaming scenario's actions, dead letters,
//! decisions and summary; byte-identical output (`subscribers.jsonl` too) for 1, 2 and 4 workers; gzip input; and
//! the exit status when it cannot run.

mod common;

use common::{read_jsonl, replay, roaming_scenario, write_jsonl, ANA, EXPECTED_ACTIONS};

#[test]
fn roaming_scenario_gives_exactly_the_contracts_actions() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, invalid) = roaming_scenario();
    let events = dir.path().join("events.jsonl");
    write_jsonl(&events, &lines);
    let out = dir.path().join("out");
    let actions = replay(&events, &out, 2);

    assert_eq!(actions.len(), EXPECTED_ACTIONS.len(), "{actions:#?}");
    for (action, (moment_ts, country)) in actions.iter().zip(EXPECTED_ACTIONS) {
        assert_eq!(action["rule"], "roaming-welcome");
        assert_eq!(action["moment"], "roaming_arrival");
        assert_eq!(action["msisdn"], ANA);
        assert_eq!(action["channel"], "sms");
        assert_eq!(action["offer"], "ROAM-PACK");
        assert_eq!(action["moment_ts"], moment_ts);
        assert_eq!(action["send_at"], moment_ts);
        assert_eq!(action["language"], "en");
        assert!(
            action["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("Welcome to {country}!")),
            "{action}"
        );
        assert!(action["action_id"].as_str().unwrap().starts_with("rw-"));
        assert_eq!(action["rule_version"].as_str().unwrap().len(), 7);
        // The traveller lives alone: a household of one, named after them.
        assert!(action["household"].as_str().unwrap().starts_with("H-"), "{action}");
    }
    let households = read_jsonl(&out.join("households.jsonl"));
    let traveller = households
        .iter()
        .find(|h| h["msisdn"] == actions[0]["msisdn"])
        .expect("the traveller is in households.jsonl");
    assert_eq!(traveller["household"], actions[0]["household"]);
    assert_eq!(traveller["decision_maker"], actions[0]["msisdn"]);
    assert_eq!(traveller["size"], 1);

    let dead = read_jsonl(&out.join("dead-letter.jsonl"));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["line"], invalid as u64 + 1);
    assert_eq!(dead[0]["field"], "ts");
    assert!(dead[0]["file"].as_str().unwrap().ends_with("events.jsonl"));
    assert!(dead[0]["error"].as_str().unwrap().contains("not an RFC 3339 timestamp"));

    let decisions = read_jsonl(&out.join("decisions.jsonl"));
    let verdicts: Vec<(String, String)> = decisions
        .iter()
        .map(|d| {
            (
                d["moment_key"].as_str().unwrap().into(),
                d["reason"].as_str().unwrap_or("sent").into(),
            )
        })
        .collect();
    let expected = [("US", "sent"), ("FR", "no_consent"), ("ES", "sent"), ("ES", "cooldown")];
    assert_eq!(verdicts, expected.map(|(k, r)| (k.to_string(), r.to_string())));

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["events_valid"], lines.len() as u64 - 1);
    assert_eq!(summary["events_invalid"], 1);
    assert_eq!(summary["events_by_type"]["customer"], 2);
    assert_eq!(summary["events_by_type"]["network"], 7);
    assert_eq!(summary["events_without_customer"], 1);
    assert_eq!(summary["actions_by_rule"]["roaming-welcome"], 2);
    assert_eq!(summary["suppressed_by_reason"]["cooldown"], 1);
    assert_eq!(summary["suppressed_by_reason"]["no_consent"], 1);
}

#[test]
fn output_is_byte_identical_whatever_the_workers_and_gzip_reads_the_same() {
    let dir = tempfile::tempdir().unwrap();
    // A world from the project's seeded generator, big enough for many chunks and moments.
    let lines = common::world(2_000, 2, "2026-07-01", 11, 12, 0.2, 0.002);
    let plain = dir.path().join("world.jsonl");
    write_jsonl(&plain, &lines);
    let gz = dir.path().join("gz").join("world.jsonl.gz");
    std::fs::create_dir(gz.parent().unwrap()).unwrap();
    let mut encoder = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::fast());
    std::io::Write::write_all(&mut encoder, (lines.join("\n") + "\n").as_bytes()).unwrap();
    encoder.finish().unwrap();

    let outputs = |events: &std::path::Path, workers: usize| {
        let out = dir.path().join(format!(
            "out-{workers}-{}",
            events.extension().unwrap().to_str().unwrap()
        ));
        replay(events, &out, workers);
        [
            "actions.jsonl",
            "decisions.jsonl",
            "dead-letter.jsonl",
            "subscribers.jsonl",
        ]
        .map(|f| std::fs::read(out.join(f)).unwrap())
    };
    let one = outputs(&plain, 1);
    assert!(one[0].len() > 10_000, "the world should produce many actions");
    assert!(!one[2].is_empty(), "the world plants invalid lines");
    // One line per customer of the world, each with its standing (contract §5.2).
    let standings: Vec<serde_json::Value> = String::from_utf8_lossy(&one[3])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(standings.len() > 1_000, "{} customers", standings.len());
    for line in &standings {
        let risk = line["churn_risk"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&risk), "{line}");
        assert!(line["stickiness"].as_f64().unwrap() >= 0.0, "{line}");
        assert!(line["churn_reasons"].as_array().unwrap().len() <= 4, "{line}");
        let stage = line["lifecycle"].as_str().unwrap();
        assert!(
            ["new", "growth", "stable", "decline", "leaving", "gone"].contains(&stage),
            "{line}"
        );
    }
    assert!(one == outputs(&plain, 2), "2 workers differ from 1");
    assert!(one == outputs(&plain, 4), "4 workers differ from 1");
    let from_gzip = outputs(&gz, 3);
    assert!(
        one[0] == from_gzip[0] && one[1] == from_gzip[1],
        "gzip input gives other actions"
    );
}

#[test]
fn it_says_why_it_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let missing = common::kairos(&[
        "replay",
        "--events",
        "/nonexistent/events.jsonl",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("kairos: cannot read /nonexistent/events.jsonl"),
        "{stderr}"
    );

    let (lines, _) = roaming_scenario();
    let events = dir.path().join("events.jsonl");
    write_jsonl(&events, &lines);
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(rules.join("bad.toml"), "id = \"x\"\nmoment = \"landing\"\n").unwrap();
    let bad = common::kairos(&[
        "replay",
        "--events",
        events.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
    ]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("kairos: invalid rules:") && stderr.contains("bad.toml"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one-line reason: {stderr}");
}

#[test]
fn outside_the_checkout_it_uses_the_shipped_rules() {
    // Run from a folder without rules/: the rules shipped with kairos are found and named.
    let dir = tempfile::tempdir().unwrap();
    let (lines, _) = roaming_scenario();
    write_jsonl(&dir.path().join("events.jsonl"), &lines);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(["replay", "--events", "events.jsonl", "--out", "out"])
        .current_dir(dir.path())
        .output()
        .expect("running kairos");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let shipped = common::root().join("rules");
    assert!(
        stderr.contains(&format!("using the rules shipped with kairos in {}", shipped.display())),
        "{stderr}"
    );
    assert_eq!(
        read_jsonl(&dir.path().join("out/actions.jsonl")).len(),
        EXPECTED_ACTIONS.len()
    );

    // A rules/ folder where it runs is the one used, without a word.
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::copy(
        shipped.join("roaming-welcome.toml"),
        dir.path().join("rules/roaming-welcome.toml"),
    )
    .unwrap();
    let local = std::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(["replay", "--events", "events.jsonl", "--out", "local"])
        .current_dir(dir.path())
        .output()
        .expect("running kairos");
    let stderr = String::from_utf8_lossy(&local.stderr);
    assert!(local.status.success(), "{stderr}");
    assert!(!stderr.contains("shipped"), "{stderr}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("local/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["actions_by_rule"], serde_json::json!({"roaming-welcome": 2}));
}

#[test]
fn an_event_stamped_in_the_future_is_a_dead_letter_and_moves_nothing() {
    // Contract §5.1: one network event from a clock set to 2999 must not move event time
    // there (issue 13 reports that before, it released every handset timer at once).
    let dir = tempfile::tempdir().unwrap();
    let lines = common::world(1_000, 1, "2026-07-01", 5, 12, 0.2, 0.0);
    let clean = dir.path().join("clean.jsonl");
    write_jsonl(&clean, &lines);
    let subscriber = lines
        .iter()
        .find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["type"] == "network").then(|| v["msisdn"].as_str().unwrap().to_string())
        })
        .unwrap();
    let poison = format!(
        r#"{{"type":"network","ts":"2999-01-01T00:00:00Z","msisdn":"{subscriber}","event":"location_update","country":"PT"}}"#
    );
    let mut poisoned = lines.clone();
    poisoned.insert(lines.len() / 3, poison);
    let poisoned_file = dir.path().join("poisoned.jsonl");
    write_jsonl(&poisoned_file, &poisoned);

    let before = replay(&clean, &dir.path().join("clean-out"), 2);
    let out = dir.path().join("poisoned-out");
    let after = replay(&poisoned_file, &out, 2);
    assert!(!before.is_empty());
    assert_eq!(after, before, "the future event changed the actions");
    let dead = read_jsonl(&out.join("dead-letter.jsonl"));
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0]["field"], "ts");
    assert_eq!(dead[0]["line"], lines.len() as u64 / 3 + 1);
    let error = dead[0]["error"].as_str().unwrap();
    assert!(
        error.contains("2999-01-01T00:00:00Z is more than 3600 s after the wall clock"),
        "{error}"
    );

    // With a larger max_future it is an event like any other: the check is what stops it.
    let loose = dir.path().join("loose-out");
    let status = common::kairos(&[
        "replay",
        "--events",
        poisoned_file.to_str().unwrap(),
        "--out",
        loose.to_str().unwrap(),
        "--rules",
        common::root().join("rules").to_str().unwrap(),
        "--max-future-ms",
        "40000000000000",
        "--no-progress",
    ]);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert!(read_jsonl(&loose.join("dead-letter.jsonl")).is_empty());
    assert_ne!(read_jsonl(&loose.join("actions.jsonl")), before);
}
