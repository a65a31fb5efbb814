//! `kairos report summary DIR` on a replay's output folder: what was read, actions by rule
//! and channel, suppressions by reason, one message per rule (the number masked), the files;
//! and a folder that is not a replay's output.

mod common;

use common::{roaming_scenario, write_jsonl, ANA};

#[test]
fn summary_of_the_roaming_scenarios_replay() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, _) = roaming_scenario();
    let events = dir.path().join("events.jsonl");
    write_jsonl(&events, &lines);
    let out = dir.path().join("out");
    common::replay(&events, &out, 2);

    let output = common::kairos(&["report", "summary", out.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let out = out.display();
    let expected_start = format!(
        "\
What kairos decided, from {out}
  10 events read from 1 file (1 invalid, 0 late); 4 moments decided: 2 sent, 2 suppressed

Actions by rule and channel
  rule             sms  email  push  total  held for quiet hours
  roaming-welcome    2      0     0      2                     0
  all rules          2      0     0      2                     0

Suppressed, by reason of the contact policy
  reason      decisions  rules
  no_consent          1  roaming-welcome (1)
  cooldown            1  roaming-welcome (1)

One message per rule (its first to be sent; subscriber numbers masked)
  roaming-welcome · sms · en · 2026-07-01T14:02:11Z · *********001
    Welcome to United States!"
    );
    assert!(stdout.starts_with(&expected_start), "{stdout}");
    for file in [
        "actions.jsonl",
        "decisions.jsonl",
        "dead-letter.jsonl",
        "households.jsonl",
        "summary.json",
    ] {
        assert!(stdout.contains(&format!("{out}/{file}")), "{file} listed: {stdout}");
    }
    let dead_letters = stdout.lines().find(|l| l.contains("/dead-letter.jsonl")).unwrap_or("");
    assert!(dead_letters.contains(" 1 line "), "{stdout}");
    assert!(!stdout.contains(ANA), "no subscriber number: {stdout}");
}

#[test]
fn a_folder_that_is_not_a_replays_output_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = common::kairos(&["report", "summary", dir.path().to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with(&format!(
            "kairos: {} is not the output folder of a replay: it has no decisions.jsonl",
            dir.path().display()
        )),
        "{stderr}"
    );
}
