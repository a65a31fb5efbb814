//! Golden cases: `tests/golden/<case>/` holds `events.jsonl`, optionally a `rules/` folder
//! (the shipped `rules/` otherwise), `expected-actions.jsonl` and `expected-decisions.jsonl`,
//! for household cases `expected-households.jsonl`, and for lifecycle and churn cases (and
//! any case that has the file: create it empty before regenerating) `expected-subscribers.jsonl`.
//! Each case is replayed with 1 and 3 workers and must give exactly the expected files.
//!
//! To regenerate the expectations after a deliberate change, run
//! `KAIROS_REGENERATE_GOLDEN=1 cargo test --release --test golden` and review the diff.

mod common;

use std::path::Path;

fn run_case(case: &Path, regenerate: bool) -> Result<(), String> {
    let rules = if case.join("rules").is_dir() {
        case.join("rules")
    } else {
        common::root().join("rules")
    };
    let mut outputs = Vec::new();
    for workers in [1, 3] {
        let out = tempfile::tempdir().unwrap();
        let result = common::kairos(&[
            "replay",
            "--events",
            case.join("events.jsonl").to_str().unwrap(),
            "--out",
            out.path().to_str().unwrap(),
            "--rules",
            rules.to_str().unwrap(),
            "--workers",
            &workers.to_string(),
        ]);
        if !result.status.success() {
            return Err(format!("replay failed: {}", String::from_utf8_lossy(&result.stderr)));
        }
        let read = |name: &str| std::fs::read_to_string(out.path().join(name)).unwrap();
        outputs.push([
            read("actions.jsonl"),
            read("decisions.jsonl"),
            read("households.jsonl"),
            read("subscribers.jsonl"),
        ]);
    }
    if outputs[0] != outputs[1] {
        return Err("1 and 3 workers disagree".into());
    }
    let [actions, decisions, households, subscribers] = &outputs[0];
    let kind = case
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    for (name, got) in [
        ("expected-actions.jsonl", actions),
        ("expected-decisions.jsonl", decisions),
        ("expected-households.jsonl", households),
        ("expected-subscribers.jsonl", subscribers),
    ] {
        let path = case.join(name);
        if name == "expected-households.jsonl" && !kind.starts_with("household") {
            continue;
        }
        let standings = kind.starts_with("churn") || kind.starts_with("lifecycle") || path.exists();
        if name == "expected-subscribers.jsonl" && !standings {
            continue;
        }
        if regenerate {
            std::fs::write(&path, got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if expected != *got {
            return Err(format!("{name} differs:\n--- expected\n{expected}\n--- got\n{got}"));
        }
    }
    Ok(())
}

#[test]
fn golden_cases() {
    let regenerate = std::env::var_os("KAIROS_REGENERATE_GOLDEN").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(common::root().join("tests/golden"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("events.jsonl").exists())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no golden cases found");
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            run_case(case, regenerate)
                .err()
                .map(|e| format!("{}: {e}", case.display()))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} golden cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
