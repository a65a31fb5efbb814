//! A bounded `kairos run` over a topic range is the same engine as a replay: a generated
//! world is produced into real Kafka topics (message timestamps = event times), then read in
//! two bounded runs — up to a time, and from the final checkpoint of the first to the end.
//! Each run must stop by itself, and together they must give exactly the actions of one
//! replay of the same events: none missing, none twice.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kairos_model::time::parse_rfc3339;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const PARTITIONS: i32 = 3;

/// Runs `kairos run` with `args` (and `env`) until it exits by itself (at most 120 s).
fn bounded_run(config: &std::path::Path, args: &[&str], env: &[(&str, &str)], log: &std::path::Path) {
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(["run", "--config", config.to_str().unwrap()])
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "kairos run {args:?} did not stop at the end of its range\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(status.success(), "kairos run {args:?} exited with {status}\n{text}");
}

fn actions(brokers: &str, topics: &BTreeMap<&'static str, String>) -> Vec<serde_json::Value> {
    ["actions.sms", "actions.email", "actions.push"]
        .iter()
        .flat_map(|t| common::read_topic(brokers, &topics[t], PARTITIONS, Duration::from_secs(2)))
        .map(|v| serde_json::from_str(&v).unwrap())
        .collect()
}

/// The actions sent at or before `last` (a run ends at its newest event; a replay sends what
/// is held for quiet hours after that too).
fn until(actions: &[serde_json::Value], last: u64) -> Vec<serde_json::Value> {
    actions
        .iter()
        .filter(|a| parse_rfc3339(a["send_at"].as_str().unwrap()).unwrap() <= last)
        .cloned()
        .collect()
}

fn ids(actions: &[serde_json::Value]) -> Vec<String> {
    let mut ids: Vec<String> = actions
        .iter()
        .map(|a| a["action_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// A generated world produced into topics of its own (message timestamps = event times), in
/// event-time order, and the actions a replay of it gives.
struct World {
    brokers: String,
    topics: BTreeMap<&'static str, String>,
    dir: tempfile::TempDir,
    /// (event time, line), in time order.
    events: Vec<(u64, String)>,
    expected: Vec<serde_json::Value>,
}

impl World {
    fn in_kafka(tag: &str, subscribers: u64, seed: u64) -> World {
        let brokers = common::kafka_brokers();
        let topics = common::kafka_topics(tag);
        let names: Vec<&str> = topics.values().map(String::as_str).collect();
        common::create_topics(&brokers, &names, PARTITIONS);

        let spec = kairos_loadtest::world::WorldSpec {
            subscribers,
            days: 3,
            start: chrono::NaiveDate::from_ymd_opt(2026, 7, 1).unwrap(),
            seed,
            events_per_day: 20,
            travel_rate: 0.3,
            invalid_rate: 0.0,
            duplicate_rate: 0.0,
        };
        let mut events: Vec<(u64, String)> = Vec::new();
        kairos_loadtest::world::generate(&spec, |line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let ts = parse_rfc3339(value["ts"].as_str().unwrap()).unwrap();
            events.push((ts, line.to_string()));
        });
        // In event-time order, so that a Kafka timestamp splits the stream at one instant.
        events.sort_by_key(|(ts, _)| *ts);
        let lines: Vec<String> = events.iter().map(|(_, l)| l.clone()).collect();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("events.jsonl");
        common::write_jsonl(&file, &lines);
        let expected = common::replay(&file, &dir.path().join("replay"), 2);
        assert!(
            expected.len() > 200,
            "the world should give many actions, got {}",
            expected.len()
        );

        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("linger.ms", "5")
            .create()
            .unwrap();
        for (ts, line) in &events {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let key = value["msisdn"].as_str().unwrap().to_string();
            let record = BaseRecord::to(common::input_topic(&topics, line))
                .key(&key)
                .payload(line)
                .timestamp(*ts as i64);
            let mut record = record;
            while let Err((_, back)) = producer.send(record) {
                record = back;
                producer.poll(Duration::from_millis(10));
            }
        }
        producer.flush(Duration::from_secs(30)).unwrap();
        World {
            brokers,
            topics,
            dir,
            events,
            expected,
        }
    }
}

#[test]
fn two_bounded_runs_split_at_a_time_give_the_actions_of_one_replay() {
    let World {
        brokers,
        topics,
        dir,
        events,
        expected,
    } = World::in_kafka("b", 600, 21);
    let config = dir.path().join("kairos.toml");
    // A tiny bound on the events waiting for the frontier: the workers keep pausing the
    // partitions that run ahead and reading the ones that hold the frontier back, and the
    // result must still be the replay's.
    common::write_run_config(
        &config,
        &brokers,
        &topics,
        &dir.path().join("state"),
        "max_waiting_events = 16",
        "",
    );
    let log = dir.path().join("kairos.log");
    // In the quiet hours of the evening, so that actions decided before it wait past it.
    let split = "2026-07-02T22:30:00Z";
    let split_ms = parse_rfc3339(split).unwrap();
    bounded_run(&config, &["--from", "earliest", "--to", split], &[], &log);

    // The first run decided everything up to its newest event, and nothing after it: an
    // action held for quiet hours past it waits in the final checkpoint for the second run.
    let newest_before = events
        .iter()
        .map(|(ts, _)| *ts)
        .filter(|ts| *ts < split_ms)
        .max()
        .unwrap();
    let first = actions(&brokers, &topics);
    assert!(!first.is_empty());
    assert_eq!(
        ids(&first),
        ids(&until(&expected, newest_before)),
        "actions of the first run"
    );
    let held_over = expected.iter().filter(|a| {
        let at = |field: &str| parse_rfc3339(a[field].as_str().unwrap()).unwrap();
        at("moment_ts") <= newest_before && at("send_at") > newest_before
    });
    assert!(
        held_over.count() > 0,
        "the world should have actions held for quiet hours across the split"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("final_checkpoint=true"), "{text}");
    assert!(
        text.contains("events waiting for the frontier at their bound"),
        "the bound of 16 waiting events never held a partition back:\n{text}"
    );

    // The second resumes from the first's final checkpoint (its --from is for partitions
    // without a stored position) and reads to the end. Actions held for quiet hours past the
    // newest event still wait in its final checkpoint (a replay, whose log has ended,
    // publishes them with their `send_at`).
    bounded_run(&config, &["--from", "earliest", "--to", "end"], &[], &log);
    let newest = events.last().unwrap().0;
    let expected = until(&expected, newest);
    let all = actions(&brokers, &topics);
    let got = ids(&all);
    let mut unique = got.clone();
    unique.dedup();
    assert_eq!(got.len(), unique.len(), "an action was produced twice");
    assert_eq!(got, ids(&expected), "two bounded runs differ from one replay");
    // Same actions, not only the same ids.
    let by_id = |actions: &[serde_json::Value]| -> BTreeMap<String, serde_json::Value> {
        actions
            .iter()
            .map(|a| (a["action_id"].as_str().unwrap().to_string(), a.clone()))
            .collect()
    };
    assert_eq!(by_id(&all), by_id(&expected));
}

/// librdkafka fetches from the assignment on, and what it fetches for a partition before the
/// partition's own queue is split off waits on the consumer's queue. Those messages were once
/// dropped: on a loaded machine a restart lost thousands of events, and a partition whose
/// messages were all among them never caught up with its end, so event time froze. Here the
/// gap is widened to 100 ms with the whole world waiting in the topics: one bounded run must
/// still read every event and give the replay's actions.
#[test]
fn events_fetched_before_the_partition_queues_are_split_are_read() {
    let World {
        brokers,
        topics,
        dir,
        events,
        expected,
    } = World::in_kafka("q", 300, 22);
    let config = dir.path().join("kairos.toml");
    common::write_run_config(&config, &brokers, &topics, &dir.path().join("state"), "", "");
    let log = dir.path().join("kairos.log");
    bounded_run(
        &config,
        &["--from", "earliest", "--to", "end"],
        &[("KAIROS_TEST_SPLIT_DELAY_MS", "100")],
        &log,
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("were read from the consumer's queue"),
        "nothing was fetched before the queues were split:\n{text}"
    );
    let newest = events.last().unwrap().0;
    assert_eq!(
        ids(&actions(&brokers, &topics)),
        ids(&until(&expected, newest)),
        "a bounded run differs from the replay"
    );
}
