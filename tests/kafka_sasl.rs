//! `[kafka.client]` reaches every client of `kairos run`: against only the local broker's
//! SASL_PLAINTEXT listener (mechanism PLAIN, `scripts/kafka start` opens it beside the
//! PLAINTEXT one), the engine gets ready, reads the roaming scenario and produces its
//! actions; with a wrong password it stops with an error that says authentication failed,
//! instead of waiting for a broker that will never let it in.
//!
//! The test itself creates the topics, produces the events and reads the actions over
//! PLAINTEXT: only the engine is confined to the SASL listener.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{kafka_brokers, kafka_sasl, roaming_scenario, SaslListener, EXPECTED_ACTIONS};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

const PARTITIONS: i32 = 2;

/// A `kairos run` configuration that reaches the broker only through `sasl`, logging in
/// with `password`.
fn write_sasl_config(
    path: &Path,
    sasl: &SaslListener,
    password: &str,
    topics: &BTreeMap<&'static str, String>,
    state: &Path,
    metrics_port: u16,
) {
    let text = format!(
        r#"[kafka]
brokers = "{brokers}"
input_topics = ["{customers}", "{network}"]

[kafka.client]
"security.protocol" = "SASL_PLAINTEXT"
"sasl.mechanism" = "PLAIN"
"sasl.username" = "{username}"
"sasl.password" = "{password}"

[topics]
actions_sms = "{sms}"
actions_email = "{email}"
actions_push = "{push}"
decisions = "{decisions}"
dead_letter = "{dead_letter}"

[engine]
workers = 2
rules = "{rules}"

[metrics]
listen = "127.0.0.1:{metrics_port}"

[state]
dir = "{state}"
"#,
        brokers = sasl.brokers,
        username = sasl.username,
        customers = topics["customers"],
        network = topics["network"],
        sms = topics["actions.sms"],
        email = topics["actions.email"],
        push = topics["actions.push"],
        decisions = topics["decisions"],
        dead_letter = topics["dead-letter"],
        rules = common::root().join("rules").display(),
        state = state.display(),
    );
    std::fs::write(path, text).expect("writing the run configuration");
}

fn produce(brokers: &str, topics: &BTreeMap<&'static str, String>, lines: &[String]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("test producer");
    for line in lines {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        let key = value["msisdn"]
            .as_str()
            .unwrap_or("")
            .trim_start_matches('+')
            .to_string();
        producer
            .send(
                BaseRecord::to(common::input_topic(topics, line))
                    .key(&key)
                    .payload(line),
            )
            .expect("enqueue");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// The values of `topic` (read over PLAINTEXT by one consumer) once `want` have come, then
/// a second more to catch any extra; at most 90 s.
fn consume(brokers: &str, topic: &str, want: usize) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "kairos-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("test consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut values = Vec::new();
    let mut enough_at: Option<Instant> = None;
    while Instant::now() < deadline && enough_at.is_none_or(|at| at.elapsed() < Duration::from_secs(1)) {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            values.push(String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned());
        }
        if values.len() >= want && enough_at.is_none() {
            enough_at = Some(Instant::now());
        }
    }
    values
}

#[test]
fn kafka_run_through_only_a_sasl_plain_listener_gets_ready_and_produces_the_actions() {
    let brokers = kafka_brokers();
    let sasl = kafka_sasl();
    let topics = common::kafka_topics("sasl");
    let names: Vec<&str> = topics.values().map(String::as_str).collect();
    common::create_topics(&brokers, &names, PARTITIONS);
    let (lines, _) = roaming_scenario();
    produce(&brokers, &topics, &lines);

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kairos.toml");
    let port = common::free_port();
    write_sasl_config(&config, &sasl, &sasl.password, &topics, &dir.path().join("state"), port);
    let log = dir.path().join("kairos.log");
    let mut engine = common::start_engine(&config, &log);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    // Ready: the state restored, the outputs read back and every partition assigned — each
    // by a client that logged in over SASL.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some((200, _)) = common::http_get(port, "/readyz") {
            break;
        }
        if let Some(status) = engine.0.try_wait().unwrap() {
            panic!("kairos run exited with {status} before it was ready:\n{}", log_text());
        }
        assert!(Instant::now() < deadline, "never ready over SASL:\n{}", log_text());
        std::thread::sleep(Duration::from_millis(100));
    }

    // The events were read and the actions produced through the SASL listener.
    let actions = consume(&brokers, &topics["actions.sms"], EXPECTED_ACTIONS.len());
    let mut moments: Vec<String> = actions
        .iter()
        .map(|a| serde_json::from_str::<serde_json::Value>(a).unwrap()["moment_ts"].to_string())
        .collect();
    moments.sort();
    let expected: Vec<String> = EXPECTED_ACTIONS.iter().map(|(ts, _)| format!("\"{ts}\"")).collect();
    assert_eq!(moments, expected, "actions {actions:#?}\nkairos log:\n{}", log_text());

    // A clean stop, with its final checkpoint (the producer's flush went over SASL too).
    let pid = engine.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = engine.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(30),
            "kairos did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "kairos run exited with {status}\n{}", log_text());
    assert!(log_text().contains("final_checkpoint=true"), "{}", log_text());
    assert!(
        !log_text().contains(&sasl.password),
        "the password must never be logged:\n{}",
        log_text()
    );
}

#[test]
fn kafka_run_with_a_wrong_sasl_password_stops_saying_authentication_failed() {
    let brokers = kafka_brokers();
    let sasl = kafka_sasl();
    let topics = common::kafka_topics("saslbad");
    let names: Vec<&str> = topics.values().map(String::as_str).collect();
    common::create_topics(&brokers, &names, PARTITIONS);

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kairos.toml");
    let wrong = "not-the-password";
    write_sasl_config(
        &config,
        &sasl,
        wrong,
        &topics,
        &dir.path().join("state"),
        common::free_port(),
    );
    let log = dir.path().join("kairos.log");
    let started = Instant::now();
    let mut engine = common::start_engine(&config, &log);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let status = loop {
        if let Some(status) = engine.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "kairos run kept waiting with a wrong password:\n{}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "kairos run must fail:\n{}", log_text());
    let text = log_text();
    let last = text
        .lines()
        .rev()
        .find(|l| l.starts_with("kairos:"))
        .unwrap_or_default();
    assert!(
        last.contains("authentication failed") && last.contains(&sasl.brokers),
        "the error must say that logging in to the brokers failed:\n{text}"
    );
    assert!(!text.contains(wrong), "the password must never be logged:\n{text}");
}
