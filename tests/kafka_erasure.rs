//! Erasure through the running engine and a real Kafka broker: a generated world (households
//! on) is produced, then one subscriber whom others call is erased (`"deleted": true`) and
//! keeps sending events. After the engine stops with its final checkpoint, no file of its
//! state folder holds the number — as digits or as 8 bytes in either order — and neither
//! does the engine's log; the checkpoint after the erasure compacted the store.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kairos_model::time::{format_rfc3339, parse_rfc3339};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, Producer};

const PARTITIONS: i32 = 2;

/// Every file under `dir` that holds `number` as digits or as 8 bytes (big or little endian).
fn files_naming(dir: &Path, number: u64) -> Vec<PathBuf> {
    let needles = [
        number.to_string().into_bytes(),
        number.to_be_bytes().to_vec(),
        number.to_le_bytes().to_vec(),
    ];
    let mut found = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for path in std::fs::read_dir(&folder)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
        {
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap_or_default();
            if needles
                .iter()
                .any(|n| bytes.windows(n.len()).any(|w| w == n.as_slice()))
            {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn an_erased_number_leaves_no_trace_in_the_state_folder() {
    let brokers = common::kafka_brokers();
    let topics = common::kafka_topics("erase");
    let names: Vec<&str> = topics.values().map(String::as_str).collect();
    common::create_topics(&brokers, &names, PARTITIONS);
    let mut lines = common::world(300, 2, "2026-07-01", 11, 30, 0.2, 0.0);
    let values: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    // The erased: a customer whom other subscribers call most.
    let customers: std::collections::BTreeSet<&str> = values
        .iter()
        .filter(|v| v["type"] == "customer")
        .filter_map(|v| v["msisdn"].as_str())
        .collect();
    let mut called: std::collections::BTreeMap<&str, usize> = Default::default();
    for v in &values {
        if let Some(peer) = v["peer"].as_str().filter(|p| customers.contains(p)) {
            *called.entry(peer).or_default() += 1;
        }
    }
    let (erased, calls) = called
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(m, n)| (m.to_string(), *n))
        .unwrap();
    assert!(calls >= 3, "the world should have a customer others call");
    let end = values
        .iter()
        .filter_map(|v| v["ts"].as_str())
        .map(|t| parse_rfc3339(t).unwrap())
        .max()
        .unwrap();
    let at = |offset_ms: u64| format_rfc3339(end + offset_ms);
    lines.push(format!(
        "{{\"type\":\"customer\",\"ts\":\"{}\",\"msisdn\":\"{erased}\",\"deleted\":true}}",
        at(60_000)
    ));
    // The erased number's SIM keeps sending: it must build no state.
    lines.push(format!(
        "{{\"type\":\"network\",\"ts\":\"{}\",\"msisdn\":\"{erased}\",\"event\":\"location_update\",\"country\":\"ES\"}}",
        at(120_000)
    ));
    let other = customers.iter().find(|m| **m != erased).unwrap().to_string();
    lines.push(format!(
        "{{\"type\":\"network\",\"ts\":\"{}\",\"msisdn\":\"{other}\",\"event\":\"location_update\",\"country\":\"FR\"}}",
        at(4 * 3_600_000)
    ));

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kairos.toml");
    let state = dir.path().join("state");
    common::write_run_config(
        &config,
        &brokers,
        &topics,
        &state,
        "allowed_lateness_ms = 3600000",
        "checkpoint_interval_ms = 200",
    );
    let log_path = dir.path().join("kairos.log");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let engine = common::start_engine(&config, &log_path);
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    for line in &lines {
        common::send_line(&producer, &topics, line);
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let deadline = Instant::now() + Duration::from_secs(120);
    while !log().contains("checkpoint erased subscribers") {
        assert!(Instant::now() < deadline, "no checkpoint erased anyone:\n{}", log());
        std::thread::sleep(Duration::from_millis(200));
    }
    // A few more checkpoints, then a clean stop (a final checkpoint).
    std::thread::sleep(Duration::from_secs(2));
    let pid = engine.0.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut engine = engine;
    let status = engine.0.wait().unwrap();
    assert!(status.success(), "kairos run stopped with {status}:\n{}", log());

    let number: u64 = erased.parse().unwrap();
    let traces = files_naming(&state, number);
    assert!(
        traces.is_empty(),
        "files of the state folder naming the erased number: {traces:?}"
    );
    assert!(!log().contains(&erased), "the engine's log names the erased number");
    // The test can see a number that is there: another customer's is.
    assert!(!files_naming(&state, other.parse().unwrap()).is_empty());
}
