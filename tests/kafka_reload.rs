//! A live rule change against the running engine and a real Kafka broker: while events
//! stream in, a rule file is saved with a new message; the new version is in force from one
//! event time on — every action before it carries the old message, every action at or after
//! it the new one — and every event is decided exactly once. A broken save in between is
//! refused and counted, and the running set stays in force.

mod common;

use std::time::{Duration, Instant};

use kairos_model::time::{format_rfc3339, parse_rfc3339};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

const PARTITIONS: i32 = 3;
const SUBSCRIBERS: u64 = 50;
const COUNTRIES: [&str; 4] = ["ES", "FR", "IT", "DE"];

fn rule(version: &str) -> String {
    format!(
        "id = \"travel-tips\"\nmoment = \"roaming_arrival\"\noffer = \"TIPS\"\nchannel = \"sms\"\n\
         class = \"regulatory\"\n[messages]\nen = \"{version}: welcome to {{country_name}}\"\n"
    )
}

/// Event time of the first arrival; the `n`-th is `n` seconds later.
const START: &str = "2026-07-01T00:00:00Z";

fn msisdn(i: u64) -> String {
    format!("3519100{i:05}")
}

/// A producer, after it has written the subscribers' customer records to `topic`.
fn customers(brokers: &str, topic: &str) -> BaseProducer {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "1")
        .create()
        .unwrap();
    for i in 0..SUBSCRIBERS {
        let line = format!(
            "{{\"type\":\"customer\",\"ts\":\"2026-06-01T00:00:00Z\",\"msisdn\":\"{}\",\"account_id\":\"A-{i}\",\
             \"home_country\":\"PT\",\"timezone\":\"Europe/Lisbon\",\"consent\":{{\"sms\":true}}}}",
            msisdn(i)
        );
        send(&producer, topic, &msisdn(i), &line);
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    producer
}

/// The `n`-th arrival: subscriber `n % SUBSCRIBERS` in a new country, `n` seconds after
/// [`START`] — every one a roaming moment.
fn arrival(producer: &BaseProducer, topic: &str, n: u64) {
    let country = COUNTRIES[((n / SUBSCRIBERS) % COUNTRIES.len() as u64) as usize];
    let line = format!(
        "{{\"type\":\"network\",\"ts\":\"{}\",\"msisdn\":\"{}\",\"event\":\"location_update\",\"country\":\"{country}\"}}",
        format_rfc3339(parse_rfc3339(START).unwrap() + n * 1_000),
        msisdn(n % SUBSCRIBERS)
    );
    send(producer, topic, &msisdn(n % SUBSCRIBERS), &line);
}

fn send(producer: &BaseProducer, topic: &str, key: &str, line: &str) {
    let mut record = BaseRecord::to(topic).key(key).payload(line);
    while let Err((_, back)) = producer.send(record) {
        record = back;
        producer.poll(Duration::from_millis(5));
    }
}

/// A run of the engine over topics of its own and a rules folder holding [`rule`]`("v1")`,
/// looked at every 100 ms; `state` are extra lines for the `[state]` section.
struct Setup {
    brokers: String,
    topics: std::collections::BTreeMap<&'static str, String>,
    /// Holds the folder for as long as the test runs.
    _dir: tempfile::TempDir,
    rules: std::path::PathBuf,
    config: std::path::PathBuf,
    log_path: std::path::PathBuf,
}

impl Setup {
    fn new(tag: &str, state: &str) -> Setup {
        let brokers = common::kafka_brokers();
        let topics = common::kafka_topics(tag);
        let names: Vec<&str> = topics.values().map(String::as_str).collect();
        common::create_topics(&brokers, &names, PARTITIONS);
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules");
        std::fs::create_dir(&rules).unwrap();
        std::fs::write(rules.join("travel-tips.toml"), rule("v1")).unwrap();
        let config = dir.path().join("kairos.toml");
        common::write_run_config(
            &config,
            &brokers,
            &topics,
            &dir.path().join("state"),
            &format!("rules = \"{}\"\nrules_poll_ms = 100", rules.display()),
            state,
        );
        let log_path = dir.path().join("kairos.log");
        Setup {
            brokers,
            topics,
            _dir: dir,
            rules,
            config,
            log_path,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A consumer of the SMS actions topic from its beginning.
    fn actions(&self, group: &str) -> BaseConsumer {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut assignment = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            assignment
                .add_partition_offset(&self.topics["actions.sms"], partition, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&assignment).unwrap();
        consumer
    }
}

#[test]
fn a_saved_rule_change_takes_force_at_one_event_time_without_losing_or_repeating_an_event() {
    let setup = Setup::new("r", "");
    let (brokers, topics, rules) = (&setup.brokers, &setup.topics, &setup.rules);
    let _engine = common::start_engine(&setup.config, &setup.log_path);
    let log = || setup.log();

    let producer = customers(brokers, &topics["customers"]);

    // Every network event is an arrival in a new country: one moment, one decision each.
    let consumer = setup.actions("kairos-reload-test");
    let mut actions: Vec<serde_json::Value> = Vec::new();
    let read = |actions: &mut Vec<serde_json::Value>| {
        while let Some(Ok(message)) = consumer.poll(Duration::from_millis(5)) {
            actions.push(serde_json::from_slice(message.payload().unwrap()).unwrap());
        }
    };
    let mut produced = 0u64;
    let mut produce = |n: u64| {
        for _ in 0..n {
            arrival(&producer, &topics["network"], produced);
            produced += 1;
        }
        producer.poll(Duration::ZERO);
    };

    // Stream until the engine acts on the first rule set.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !actions.iter().any(|a| a["message"].as_str().unwrap().starts_with("v1")) {
        assert!(
            Instant::now() < deadline,
            "no action from the first rule set:\n{}",
            log()
        );
        produce(5);
        std::thread::sleep(Duration::from_millis(20));
        read(&mut actions);
    }
    // A broken save is refused: the running set stays in force.
    std::fs::write(rules.join("travel-tips.toml"), rule("v1").replace("sms", "fax")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log().contains("do not check") {
        assert!(
            Instant::now() < deadline,
            "the broken save was not reported:\n{}",
            log()
        );
        produce(5);
        std::thread::sleep(Duration::from_millis(20));
        read(&mut actions);
    }
    // The real change, timed from the save to the first action under it.
    let saved = Instant::now();
    std::fs::write(rules.join("travel-tips.toml"), rule("v2")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut first_new = None;
    while first_new.is_none() {
        assert!(Instant::now() < deadline, "no action under the new rule:\n{}", log());
        produce(5);
        std::thread::sleep(Duration::from_millis(20));
        read(&mut actions);
        if actions.iter().any(|a| a["message"].as_str().unwrap().starts_with("v2")) {
            first_new = Some(saved.elapsed());
        }
    }
    produce(100);
    producer.flush(Duration::from_secs(10)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (actions.len() as u64) < produced {
        assert!(
            Instant::now() < deadline,
            "{} of {produced} actions:\n{}",
            actions.len(),
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
        read(&mut actions);
    }
    std::thread::sleep(Duration::from_millis(500));
    read(&mut actions);

    // Exactly one action per event, none repeated.
    let mut ids: Vec<&str> = actions.iter().map(|a| a["action_id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len() as u64, produced, "every event decided exactly once");
    assert_eq!(actions.len() as u64, produced, "no action produced twice");
    // One switch instant: the log's `at`, and every action on its side of it.
    let text = log();
    let line = text
        .lines()
        .find(|l| l.contains("rules changed: the new set"))
        .expect("the change is logged");
    let at = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("at="))
        .map(|t| parse_rfc3339(t.trim_matches('"')).unwrap())
        .expect("the log names the instant");
    for action in &actions {
        let moment = parse_rfc3339(action["moment_ts"].as_str().unwrap()).unwrap();
        let message = action["message"].as_str().unwrap();
        let expected = if moment < at { "v1" } else { "v2" };
        assert!(
            message.starts_with(expected),
            "{action} is on the wrong side of {}",
            format_rfc3339(at)
        );
    }
    assert!(text.contains("rules changed but do not check"));
    let new = actions
        .iter()
        .filter(|a| a["message"].as_str().unwrap().starts_with("v2"))
        .count();
    println!(
        "live rule change: {produced} events, {} actions under v1 and {new} under v2, switched at {}; \
         saved → first action under the new version {:?}",
        actions.len() - new,
        format_rfc3339(at),
        first_new.unwrap()
    );
}

#[test]
fn a_published_rule_set_takes_force_at_its_event_time() {
    let brokers = common::kafka_brokers();
    let topics = common::kafka_topics("p");
    let rules_topic = format!("{}.rules", common::unique_prefix("p"));
    let mut names: Vec<&str> = topics.values().map(String::as_str).collect();
    names.push(&rules_topic);
    common::create_topics(&brokers, &names, PARTITIONS);
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = (dir.path().join("v1"), dir.path().join("v2"));
    for (folder, version) in [(&v1, "v1"), (&v2, "v2")] {
        std::fs::create_dir(folder).unwrap();
        std::fs::write(folder.join("travel-tips.toml"), rule(version)).unwrap();
    }
    let config = dir.path().join("kairos.toml");
    common::write_run_config(
        &config,
        &brokers,
        &topics,
        &dir.path().join("state"),
        // Events come in bursts here, over partitions that go idle in between: five minutes
        // of allowed lateness keep every event at its own instant, so the side of the
        // switch an action falls on is its moment's alone. Once every partition is idle,
        // event time moves to the newest event read; a partition whose part of a burst
        // reaches the broker or the consumer a little after the others' (a noisy machine, a
        // pause of the broker's JVM) would then see its events late, at the frontier, under
        // the set in force there. Two seconds of quiet before a partition counts as idle
        // keep such stragglers in order; the default (100 ms) is for latency.
        &format!(
            "rules = \"{}\"\nrules_topic = \"{rules_topic}\"\nallowed_lateness_ms = 300000\nidle_after_ms = 2000",
            v1.display()
        ),
        "",
    );
    let log_path = dir.path().join("kairos.log");
    let _engine = common::start_engine(&config, &log_path);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let producer = customers(&brokers, &topics["customers"]);
    let start = parse_rfc3339(START).unwrap();
    let arrivals = |from: u64, to: u64| {
        for n in from..to {
            arrival(&producer, &topics["network"], n);
        }
        producer.flush(Duration::from_secs(10)).unwrap();
    };
    arrivals(0, 100);
    let deadline = Instant::now() + Duration::from_secs(60);
    while common::read_topic(&brokers, &topics["actions.sms"], PARTITIONS, Duration::from_secs(2)).is_empty() {
        assert!(Instant::now() < deadline, "the engine did not start:\n{}", log());
    }
    // Published ahead of the stream: in force from the event time it names, not from when
    // it was read.
    let at = start + 150 * 1_000;
    let published = common::kairos(&[
        "rules",
        "publish",
        v2.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--at",
        &format_rfc3339(at),
    ]);
    assert!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    std::thread::sleep(Duration::from_millis(500));
    arrivals(100, 300);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut actions: Vec<serde_json::Value> = Vec::new();
    while actions.len() < 300 {
        assert!(
            Instant::now() < deadline,
            "{} of 300 actions:\n{}",
            actions.len(),
            log()
        );
        actions = common::read_topic(&brokers, &topics["actions.sms"], PARTITIONS, Duration::from_secs(1))
            .iter()
            .map(|v| serde_json::from_str(v).unwrap())
            .collect();
    }
    assert_eq!(actions.len(), 300, "no action twice");
    for action in &actions {
        let moment = parse_rfc3339(action["moment_ts"].as_str().unwrap()).unwrap();
        let expected = if moment < at { "v1" } else { "v2" };
        assert!(
            action["message"].as_str().unwrap().starts_with(expected),
            "{action} is on the wrong side of {}:\n{}",
            format_rfc3339(at),
            log()
        );
    }
    assert!(
        log().contains(&format!("at=\"{}\"", format_rfc3339(at)))
            || log().contains(&format!("at={}", format_rfc3339(at))),
        "the switch is logged at the published instant:\n{}",
        log()
    );
}

/// Writes a tombstone (key `rules`, no value) to the rules topic.
fn tombstone(brokers: &str, topic: &str) {
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    producer
        .send(BaseRecord::<str, [u8]>::to(topic).key(kairos::rules::publish::KEY))
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
}

#[test]
fn a_tombstone_on_the_rules_topic_blocks_neither_start_nor_the_follower() {
    use kairos::rules::publish::{publish, Published, PublishedRules};
    let brokers = common::kafka_brokers();
    let topic = format!("{}.rules", common::unique_prefix("tomb"));
    common::create_topics(&brokers, &[&topic], 1);
    let kafka = kairos::config::KafkaConfig {
        brokers: brokers.clone(),
        input_topics: Vec::new(),
        start_from: Default::default(),
        group_id: "kairos-test-tombstone".into(),
        delivery_timeout_ms: 60_000,
        client: Default::default(),
    };
    let first = Published::from_dir(&common::root().join("rules"), 1_000).unwrap();
    publish(&kafka, &topic, &first).unwrap();
    tombstone(&brokers, &topic);

    // What `kairos run` reads at start: the set before the tombstone is the newest.
    let follower = PublishedRules::follow(&kafka, &topic).unwrap();
    assert_eq!(follower.latest().unwrap(), Some(first.clone()));

    // What it reads while running: another tombstone is nothing new, the next set is read.
    tombstone(&brokers, &topic);
    assert!(follower.poll(Duration::from_secs(2)).is_none());
    let second = Published {
        effective_at: format_rfc3339(2_000),
        ..first.clone()
    };
    publish(&kafka, &topic, &second).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let read = loop {
        if let Some(record) = follower.poll(Duration::from_millis(500)) {
            break record.unwrap();
        }
        assert!(Instant::now() < deadline, "the set after the tombstone was not read");
    };
    assert_eq!(read, second);
}

/// Reads `consumer` into `actions` until it holds `want` of them (or fails after a minute).
fn read_until(consumer: &BaseConsumer, actions: &mut Vec<serde_json::Value>, want: u64, log: &dyn Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while (actions.len() as u64) < want {
        assert!(
            Instant::now() < deadline,
            "{} of {want} actions:\n{}",
            actions.len(),
            log()
        );
        while let Some(Ok(message)) = consumer.poll(Duration::from_millis(50)) {
            actions.push(serde_json::from_slice(message.payload().unwrap()).unwrap());
        }
    }
}

#[test]
fn a_restart_resumes_with_the_checkpointed_rules_and_a_broken_folder_does_not_stop_it() {
    let setup = Setup::new("rc", "checkpoint_interval_ms = 200");
    let (brokers, topics, rules, config, log_path) = (
        &setup.brokers,
        &setup.topics,
        &setup.rules,
        &setup.config,
        &setup.log_path,
    );
    let log = || setup.log();
    let mut engine = common::start_engine(config, log_path);
    let producer = customers(brokers, &topics["customers"]);
    let consumer = setup.actions("kairos-rules-checkpoint-test");
    let mut actions: Vec<serde_json::Value> = Vec::new();
    let mut produced = 0u64;
    let mut produce = |n: u64| {
        for _ in 0..n {
            arrival(&producer, &topics["network"], produced);
            produced += 1;
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        produced
    };

    // v1, then a live change to v2 and enough event time after it for a checkpoint to pass it.
    let upto = produce(60);
    read_until(&consumer, &mut actions, upto, &log);
    std::fs::write(rules.join("travel-tips.toml"), rule("v2")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log().contains("rules changed: the new set") {
        assert!(Instant::now() < deadline, "the change was not taken:\n{}", log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let upto = produce(120);
    read_until(&consumer, &mut actions, upto, &log);
    std::thread::sleep(Duration::from_secs(2));
    engine.0.kill().unwrap(); // SIGKILL: no final checkpoint
    let _ = engine.0.wait();
    let switched = log()
        .lines()
        .find(|l| l.contains("rules changed: the new set"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("at=")))
        .map(|t| parse_rfc3339(t.trim_matches('"')).unwrap())
        .expect("the switch's instant is logged");

    // The folder is broken while the engine is down: it starts anyway, with v2.
    std::fs::write(rules.join("travel-tips.toml"), "id = \"travel-tips\"\nmoment = ").unwrap();
    let _engine = common::start_engine(config, log_path);
    let upto = produce(60);
    read_until(&consumer, &mut actions, upto, &log);
    let text = log();
    let restored_at = text
        .lines()
        .filter(|l| l.contains("kairos run: starting"))
        .nth(1)
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("restored_at=")))
        .map(|t| parse_rfc3339(t.trim_matches('"')).unwrap())
        .expect("the restart logs the instant it resumed from");
    assert!(
        restored_at > switched,
        "the checkpoint before the kill should be past the switch at {}, it was at {}",
        format_rfc3339(switched),
        format_rfc3339(restored_at)
    );
    assert!(
        text.contains("does not check") && text.contains("stays in force"),
        "the broken folder is reported:\n{text}"
    );
    for action in &actions[180..] {
        assert!(action["message"].as_str().unwrap().starts_with("v2"), "{action}");
    }

    // A good save is still taken live after the refused folder.
    std::fs::write(rules.join("travel-tips.toml"), rule("v3")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !actions.iter().any(|a| a["message"].as_str().unwrap().starts_with("v3")) {
        assert!(Instant::now() < deadline, "no action under v3:\n{}", log());
        let upto = produce(5);
        read_until(&consumer, &mut actions, upto, &log);
    }
    std::thread::sleep(Duration::from_millis(500));
    while let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
        actions.push(serde_json::from_slice(message.payload().unwrap()).unwrap());
    }
    let mut ids: Vec<&str> = actions.iter().map(|a| a["action_id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len() as u64, produced, "every event decided once");
    assert_eq!(actions.len() as u64, produced, "no action produced twice");
}
