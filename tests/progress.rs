//! Progress on long work: `kairos replay` with stderr not a terminal writes plain progress
//! lines there (at the interval of `KAIROS_PROGRESS_INTERVAL_MS`), stdout stays empty and
//! the output files are byte for byte those of a run without progress (`--no-progress`).

mod common;

use std::path::Path;
use std::process::Output;

/// `kairos ARGS` from the checkout, stderr piped (not a terminal), progress lines every
/// `interval_ms`.
fn kairos_with_interval(args: &[&str], interval_ms: &str) -> Output {
    common::kairos_with_env(args, &[("KAIROS_PROGRESS_INTERVAL_MS", interval_ms)])
}

fn replay_args<'a>(events: &'a str, out: &'a str) -> Vec<&'a str> {
    vec!["replay", "--events", events, "--out", out, "--workers", "2"]
}

/// A progress line of a replay: `kairos replay: N events (N/s), X of Y (P %), …`.
fn is_progress_line(line: &str) -> bool {
    line.starts_with("kairos replay: ")
        && line.contains(" events (")
        && line.contains("/s), ")
        && line.contains(" of ")
        && line.contains(" %)")
        && line.contains(" in")
}

/// `summary.json` without the fields that measure the run's own speed.
fn summary_without_timings(out: &Path) -> serde_json::Value {
    let mut summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let fields = summary.as_object_mut().unwrap();
    fields.remove("seconds");
    fields.remove("events_per_second");
    summary
}

#[test]
fn replay_writes_progress_lines_on_stderr_and_changes_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("world.jsonl");
    common::write_jsonl(&events, &common::world(3000, 2, "2026-07-01", 11, 30, 0.05, 0.001));
    let (with, without) = (dir.path().join("with"), dir.path().join("without"));
    let events = events.to_str().unwrap();

    let shown = kairos_with_interval(&replay_args(events, with.to_str().unwrap()), "5");
    let stderr = String::from_utf8_lossy(&shown.stderr);
    assert!(shown.status.success(), "{stderr}");
    assert!(shown.stdout.is_empty(), "progress never goes to stdout");
    let progress: Vec<&str> = stderr.lines().filter(|l| is_progress_line(l)).collect();
    assert!(!progress.is_empty(), "no progress line in: {stderr}");
    assert!(
        progress
            .iter()
            .any(|l| l.contains("event time 2026-07-0") && l.contains("B of ")),
        "a line with the position in event time and in the input: {stderr}"
    );
    assert!(
        stderr.lines().last().unwrap_or("").contains(" actions, "),
        "the closing line comes last, after the progress: {stderr}"
    );
    assert!(!stderr.contains("35191"), "no subscriber number on stderr: {stderr}");

    let mut args = replay_args(events, without.to_str().unwrap());
    args.push("--no-progress");
    let quiet = kairos_with_interval(&args, "5");
    let quiet_stderr = String::from_utf8_lossy(&quiet.stderr);
    assert!(quiet.status.success(), "{quiet_stderr}");
    assert!(quiet.stdout.is_empty());
    assert!(
        !quiet_stderr.lines().any(is_progress_line),
        "--no-progress shows none: {quiet_stderr}"
    );

    for file in [
        "actions.jsonl",
        "decisions.jsonl",
        "dead-letter.jsonl",
        "households.jsonl",
    ] {
        assert!(
            std::fs::read(with.join(file)).unwrap() == std::fs::read(without.join(file)).unwrap(),
            "{file} differs with progress shown"
        );
    }
    assert_eq!(summary_without_timings(&with), summary_without_timings(&without));
}

#[test]
fn without_the_interval_a_short_replay_writes_no_progress_line() {
    // The default interval is 5 s: a replay of a few events is over long before.
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    common::write_jsonl(&events, &common::roaming_scenario().0);
    let out = dir.path().join("out");
    let output = common::kairos(&replay_args(events.to_str().unwrap(), out.to_str().unwrap()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "only the closing line: {stderr}");
}
