//! `kairos rules check DIR`: exit status and `file:line:col` output.

mod common;

#[test]
fn rules_check_accepts_the_shipped_rules_and_lists_every_problem_otherwise() {
    let ok = common::kairos(&["rules", "check", "rules"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "rules: 10 rule(s) OK");
    let examples = common::kairos(&["rules", "check", "rules/examples"]);
    assert!(
        examples.status.success(),
        "{}",
        String::from_utf8_lossy(&examples.stdout)
    );
    assert_eq!(
        String::from_utf8_lossy(&examples.stdout).trim(),
        "rules/examples: 3 rule(s) OK"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.toml"),
        "id = \"a\"\nmoment = \"landing\"\noffer = \"\"\nchannel = \"sms\"\n[messages]\nen = \"x\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("b.toml"), "id = \"b\"\nmoment = \"roaming_arrival\"\n").unwrap();
    let bad = common::kairos(&["rules", "check", dir.path().to_str().unwrap()]);
    assert!(!bad.status.success());
    let stdout = String::from_utf8_lossy(&bad.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let a = dir.path().join("a.toml").display().to_string();
    let b = dir.path().join("b.toml").display().to_string();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{a}:2:1: unknown moment \"landing\""))),
        "{stdout}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&format!("{a}:3:1: empty offer"))),
        "{stdout}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{b}:")) && l.contains("missing field")),
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("kairos: 3 problem(s) in"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn rules_diff_says_what_changes_and_exits_like_diff() {
    let same = common::kairos(&["rules", "diff", "rules", "rules"]);
    assert_eq!(same.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&same.stdout).trim(), "no difference");

    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(common::root().join("rules")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let roaming = dir.path().join("roaming-welcome.toml");
    let text = std::fs::read_to_string(&roaming).unwrap();
    std::fs::write(&roaming, text.replace("cooldown = \"24h\"", "cooldown = \"48h\"")).unwrap();
    std::fs::remove_file(dir.path().join("data-pack-100.toml")).unwrap();
    let changed = common::kairos(&["rules", "diff", "rules", dir.path().to_str().unwrap()]);
    assert_eq!(changed.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&changed.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].starts_with("~ roaming-welcome: version "), "{stdout}");
    assert_eq!(lines[1], "    cooldown: 1d → 2d");
    assert!(lines[2].starts_with("- data-pack-100: removed"), "{stdout}");

    std::fs::write(dir.path().join("policy.toml"), "[holdout]\nshare = 2.0\n").unwrap();
    let invalid = common::kairos(&["rules", "diff", "rules", dir.path().to_str().unwrap()]);
    assert_eq!(invalid.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&invalid.stderr).contains("policy.toml:2:9: share 2 is out of range"));
}
