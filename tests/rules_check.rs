//! `kairos rules check DIR`: exit status and `file:line:col` output.

mod common;

#[test]
fn rules_check_accepts_the_shipped_rules_and_lists_every_problem_otherwise() {
    let ok = common::kairos(&["rules", "check", "rules"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "rules: 8 rule(s) OK");
    let examples = common::kairos(&["rules", "check", "rules/examples"]);
    assert!(
        examples.status.success(),
        "{}",
        String::from_utf8_lossy(&examples.stdout)
    );
    assert_eq!(
        String::from_utf8_lossy(&examples.stdout).trim(),
        "rules/examples: 2 rule(s) OK"
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
