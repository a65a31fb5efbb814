//! Helpers shared by the integration tests: the contract's roaming scenario, running the
//! `kairos` binary, and a real local Kafka broker.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The subscriber of the roaming scenario (home PT, SMS consent, speaks English).
pub const ANA: &str = "351910000001";
/// A subscriber without SMS consent.
pub const BRUNO: &str = "351910000002";

/// The contract's roaming scenario, in the order a source would emit it:
/// home → abroad → another country → home → the same country again within 24 h, plus a
/// subscriber without consent, one without a customer record, and one invalid event.
/// Returns (lines, index of the invalid line).
pub fn roaming_scenario() -> (Vec<String>, usize) {
    let customer = |msisdn: &str, sms: bool, language: &str| {
        format!(
            r#"{{"type":"customer","ts":"2026-06-01T00:00:00Z","msisdn":"+{msisdn}","account_id":"A-{msisdn}","home_country":"PT","timezone":"Europe/Lisbon","language":"{language}","consent":{{"sms":{sms},"email":true}},"unknown_field":[1,2]}}"#
        )
    };
    let network = |msisdn: &str, ts: &str, place: &str| {
        format!(r#"{{"type":"network","ts":"{ts}","msisdn":"{msisdn}","event":"location_update",{place}}}"#)
    };
    let lines = vec![
        customer(ANA, true, "en"),
        customer(BRUNO, false, "pt"),
        network(ANA, "2026-07-01T08:00:00Z", r#""country":"PT""#),
        // Arrives in the US: only the MCC is given.
        network(ANA, "2026-07-01T14:02:11Z", r#""mcc":"310","mnc":"260""#),
        network(BRUNO, "2026-07-01T14:30:00Z", r#""country":"FR""#),
        // Moves on to Spain (offset time: 17:05:00.250Z).
        network(ANA, "2026-07-01T18:05:00.250+01:00", r#""country":"ES""#),
        // An invalid event: its timestamp does not parse.
        network(ANA, "yesterday", r#""country":"ES""#),
        network(ANA, "2026-07-02T09:00:00Z", r#""country":"PT""#),
        // Spain again within 24 h of the last welcome to Spain: suppressed by cooldown.
        network(ANA, "2026-07-02T12:00:00Z", r#""country":"ES""#),
        // No customer record: state is kept, nothing is sent.
        network("351910000099", "2026-07-02T13:00:00Z", r#""country":"US""#),
    ];
    (lines, 6)
}

/// The two actions the contract requires for [`roaming_scenario`], as (moment_ts, country name).
pub const EXPECTED_ACTIONS: [(&str, &str); 2] = [
    ("2026-07-01T14:02:11Z", "United States"),
    ("2026-07-01T17:05:00.250Z", "Spain"),
];

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the `kairos` binary with `args`.
pub fn kairos(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("running kairos")
}

/// Writes lines to a `.jsonl` file.
pub fn write_jsonl(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").expect("writing events");
}

/// Replays `events` with `workers` workers into `out`, returning the parsed actions.
pub fn replay(events: &Path, out: &Path, workers: usize) -> Vec<serde_json::Value> {
    let output = kairos(&[
        "replay",
        "--events",
        events.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--workers",
        &workers.to_string(),
    ]);
    assert!(
        output.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    read_jsonl(&out.join("actions.jsonl"))
}

/// Parses a JSON Lines file.
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("reading output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("output lines are JSON"))
        .collect()
}

/// The broker to test against: `KAIROS_KAFKA_BROKERS`, or the project's local broker,
/// started (and fetched, the first time) by `scripts/kafka start`. Never skipped.
pub fn kafka_brokers() -> String {
    if let Ok(brokers) = std::env::var("KAIROS_KAFKA_BROKERS") {
        return brokers;
    }
    let status = Command::new("bash")
        .arg(root().join("scripts/kafka"))
        .arg("start")
        .status()
        .expect("running scripts/kafka start");
    assert!(
        status.success(),
        "scripts/kafka start failed: the Kafka tests need the local broker"
    );
    format!(
        "127.0.0.1:{}",
        std::env::var("KAFKA_PORT").unwrap_or_else(|_| "19092".into())
    )
}

/// A prefix for topic names unique to this test run, so reruns against one broker never see
/// old records.
pub fn unique_prefix(tag: &str) -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{tag}{}-{millis}", std::process::id())
}

/// Creates `topics` with `partitions` partitions each on the broker.
pub fn create_topics(brokers: &str, topics: &[&str], partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let options = AdminOptions::new().operation_timeout(Some(std::time::Duration::from_secs(30)));
    for result in runtime
        .block_on(admin.create_topics(&new, &options))
        .expect("creating topics")
    {
        result.expect("topic created");
    }
}
