//! The always-on path against a real Apache Kafka broker: produce the roaming scenario,
//! run `kairos run`, read back exactly the contract's actions from the SMS topic, the
//! decisions, the dead letter for the invalid event, and `/metrics`; then replay the same
//! events from a file and get the same actions.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, kafka_brokers, replay, roaming_scenario, write_jsonl, ANA, EXPECTED_ACTIONS};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

const PARTITIONS: i32 = 3;

/// Topic names unique to this run, so reruns against one broker never see old records.
struct Topics {
    customers: String,
    network: String,
    sms: String,
    email: String,
    push: String,
    decisions: String,
    dead_letter: String,
}

impl Topics {
    fn new() -> Topics {
        let run = common::unique_prefix("t");
        let name = |suffix: &str| format!("{run}.{suffix}");
        Topics {
            customers: name("customers"),
            network: name("network"),
            sms: name("actions.sms"),
            email: name("actions.email"),
            push: name("actions.push"),
            decisions: name("decisions"),
            dead_letter: name("dead-letter"),
        }
    }

    fn all(&self) -> [&str; 7] {
        [
            &self.customers,
            &self.network,
            &self.sms,
            &self.email,
            &self.push,
            &self.decisions,
            &self.dead_letter,
        ]
    }
}

fn produce(brokers: &str, topics: &Topics, lines: &[String]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("test producer");
    for line in lines {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = value["msisdn"]
            .as_str()
            .unwrap_or("")
            .trim_start_matches('+')
            .to_string();
        let topic = if value["type"] == "customer" {
            &topics.customers
        } else {
            &topics.network
        };
        producer
            .send(BaseRecord::to(topic).key(&key).payload(line))
            .expect("enqueue");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// Reads every record of `topic` until `want` have arrived (or the deadline), then keeps
/// listening for `settle` to catch any extra record.
fn consume(brokers: &str, topic: &str, want: usize, deadline: Duration, settle: Duration) -> Vec<(String, String)> {
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
    let mut records = Vec::new();
    let started = Instant::now();
    let mut enough_at: Option<Instant> = None;
    while started.elapsed() < deadline && enough_at.is_none_or(|at| at.elapsed() < settle) {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
            let value = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
            records.push((key, value));
        }
        if records.len() >= want && enough_at.is_none() {
            enough_at = Some(Instant::now());
        }
    }
    records
}

fn scrape(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body
}

#[test]
fn kafka_run_emits_exactly_the_contracts_roaming_actions() {
    let brokers = kafka_brokers();
    let topics = Topics::new();
    common::create_topics(&brokers, &topics.all(), PARTITIONS);
    let (lines, _) = roaming_scenario();
    produce(&brokers, &topics, &lines);

    let dir = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let config = dir.path().join("kairos.toml");
    std::fs::write(
        &config,
        format!(
            r#"[kafka]
brokers = "{brokers}"
input_topics = ["{customers}", "{network}"]
start_from = "earliest"

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
            customers = topics.customers,
            network = topics.network,
            sms = topics.sms,
            email = topics.email,
            push = topics.push,
            decisions = topics.decisions,
            dead_letter = topics.dead_letter,
            rules = common::root().join("rules").display(),
            state = dir.path().join("state").display(),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("kairos.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(["run", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting kairos run");
    let mut engine = common::Engine(child);
    let log_text = || std::fs::read_to_string(dir.path().join("kairos.log")).unwrap_or_default();

    let actions = consume(
        &brokers,
        &topics.sms,
        2,
        Duration::from_secs(90),
        Duration::from_secs(3),
    );
    assert_eq!(
        actions.len(),
        2,
        "actions on {}: {actions:#?}\nkairos log:\n{}",
        topics.sms,
        log_text()
    );
    let mut parsed: Vec<serde_json::Value> = actions
        .iter()
        .map(|(key, value)| {
            assert_eq!(key, ANA, "actions are keyed by msisdn");
            serde_json::from_str(value).unwrap()
        })
        .collect();
    parsed.sort_by(|a, b| a["moment_ts"].as_str().cmp(&b["moment_ts"].as_str()));
    for (action, (moment_ts, country)) in parsed.iter().zip(EXPECTED_ACTIONS) {
        assert_eq!(action["rule"], "roaming-welcome");
        assert_eq!(action["msisdn"], ANA);
        assert_eq!(action["channel"], "sms");
        assert_eq!(action["moment_ts"], moment_ts);
        assert!(action["message"].as_str().unwrap().contains(country), "{action}");
    }

    let decisions = consume(
        &brokers,
        &topics.decisions,
        4,
        Duration::from_secs(30),
        Duration::from_secs(1),
    );
    let mut reasons: Vec<String> = decisions
        .iter()
        .map(|(_, v)| {
            serde_json::from_str::<serde_json::Value>(v).unwrap()["reason"]
                .as_str()
                .unwrap_or("sent")
                .into()
        })
        .collect();
    reasons.sort();
    assert_eq!(reasons, ["cooldown", "no_consent", "sent", "sent"], "{decisions:#?}");

    let dead = consume(
        &brokers,
        &topics.dead_letter,
        1,
        Duration::from_secs(30),
        Duration::from_secs(1),
    );
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0].0, ANA, "dead letters keep the original key");
    let letter: serde_json::Value = serde_json::from_str(&dead[0].1).unwrap();
    assert_eq!(letter["topic"], topics.network.as_str());
    assert_eq!(letter["field"], "ts");
    assert!(
        letter["offset"].as_i64().is_some() && letter["partition"].as_i64().is_some(),
        "{letter}"
    );

    // Metrics are exported every second by the workers; give them a moment.
    let expected_metrics = [
        "kairos_ingest_events_total{type=\"network\"} 7".to_string(),
        "kairos_ingest_events_total{type=\"customer\"} 2".to_string(),
        "kairos_ingest_invalid_events_total 1".to_string(),
        "kairos_sink_actions_total{rule=\"roaming-welcome\",channel=\"sms\"} 2".to_string(),
        "kairos_policy_suppressed_total{rule=\"roaming-welcome\",reason=\"cooldown\"} 1".to_string(),
        "kairos_ingest_event_time_lag_seconds{worker=\"1\"}".to_string(),
        // From librdkafka's statistics: the owned input partitions are caught up.
        format!(
            "kairos_ingest_lag_messages{{topic=\"{}\",partition=\"2\"}} 0",
            topics.network
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut metrics = scrape(metrics_port);
    while Instant::now() < deadline && !expected_metrics.iter().all(|m| metrics.contains(m.as_str())) {
        std::thread::sleep(Duration::from_millis(250));
        metrics = scrape(metrics_port);
    }
    for expected in &expected_metrics {
        assert!(
            metrics.contains(expected.as_str()),
            "missing {expected:?} in /metrics:\n{metrics}"
        );
    }

    // SIGTERM: stop reading, take a final checkpoint, flush, exit cleanly.
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
    assert!(
        log_text().contains("final_checkpoint=true"),
        "no final checkpoint on SIGTERM:\n{}",
        log_text()
    );

    // The same events replayed from a file give the same actions, byte for byte.
    let events = dir.path().join("events.jsonl");
    write_jsonl(&events, &lines);
    let replayed: Vec<String> = replay(&events, &dir.path().join("replay"), 2)
        .iter()
        .map(|a| a.to_string())
        .collect();
    let from_kafka: Vec<String> = parsed.iter().map(|a| a.to_string()).collect();
    assert_eq!(replayed, from_kafka);
}

#[test]
fn kafka_run_refuses_a_missing_input_topic_with_a_clear_reason() {
    let brokers = kafka_brokers();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kairos.toml");
    let port = free_port();
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{brokers}\"\ninput_topics = [\"no-such-topic-{port}\"]\n[engine]\nrules = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n[state]\ndir = \"{}\"\n",
            common::root().join("rules").display(),
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let output = common::kairos(&["run", "--config", config.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("kairos: input topic no-such-topic-{port}")),
        "{stderr}"
    );
}
