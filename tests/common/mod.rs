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
    kairos_with_env(args, &[])
}

/// Runs the `kairos` binary with `args` and these environment variables set.
pub fn kairos_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(args)
        .current_dir(root())
        .envs(env.iter().copied())
        .output()
        .expect("running kairos")
}

/// Writes lines to a `.jsonl` file.
pub fn write_jsonl(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").expect("writing events");
}

/// Replays `events` with `workers` workers into `out`, returning the parsed actions.
pub fn replay(events: &Path, out: &Path, workers: usize) -> Vec<serde_json::Value> {
    replay_with_rules(events, &root().join("rules"), out, workers)
}

/// [`replay`] with the rules of `rules`.
pub fn replay_with_rules(events: &Path, rules: &Path, out: &Path, workers: usize) -> Vec<serde_json::Value> {
    let output = kairos(&[
        "replay",
        "--events",
        events.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
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

/// The actions a live run publishes by the time event time reaches `newest` (the newest
/// event's `ts`): a replay also publishes, when its log ends, the actions still held for
/// quiet hours; a run keeps them until event time reaches their `send_at`.
#[allow(dead_code)]
pub fn sent_by(actions: &[serde_json::Value], newest: u64) -> Vec<serde_json::Value> {
    actions
        .iter()
        .filter(|a| kairos_model::time::parse_rfc3339(a["send_at"].as_str().unwrap()).unwrap() <= newest)
        .cloned()
        .collect()
}

/// The actions a run over `lines` must produce, by action id (the replay's, as JSON text,
/// sent by the newest event): `lines` are written to `dir`/events.jsonl and replayed there.
#[allow(dead_code)]
pub fn expected_actions(lines: &[String], dir: &Path) -> std::collections::BTreeMap<String, String> {
    let events = dir.join("events.jsonl");
    write_jsonl(&events, lines);
    let newest = lines
        .iter()
        .filter_map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).ok()?;
            kairos_model::time::parse_rfc3339(value["ts"].as_str()?).ok()
        })
        .max()
        .expect("events with timestamps");
    sent_by(&replay(&events, &dir.join("replay"), 2), newest)
        .iter()
        .map(|a| (a["action_id"].as_str().unwrap().to_string(), a.to_string()))
        .collect()
}

/// The action topics' records, read again until they hold at least `want` (or `patience`
/// has passed).
#[allow(dead_code)]
pub fn read_actions(
    brokers: &str,
    topics: &std::collections::BTreeMap<&'static str, String>,
    partitions: i32,
    want: usize,
    patience: std::time::Duration,
) -> Vec<String> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        let actions: Vec<String> = ["actions.sms", "actions.email", "actions.push"]
            .iter()
            .flat_map(|t| read_topic(brokers, &topics[t], partitions, std::time::Duration::from_secs(2)))
            .collect();
        if actions.len() >= want || std::time::Instant::now() >= deadline {
            return actions;
        }
    }
}

/// Compares the actions a run produced with those it must (see [`expected_actions`]):
/// panics on an action that is not one of them, byte for byte; returns the ids read more
/// than once (with their count) and the ids missing.
#[allow(dead_code)]
pub fn compare_actions(
    actions: &[String],
    expected: &std::collections::BTreeMap<String, String>,
) -> (Vec<(String, usize)>, Vec<String>) {
    let mut seen: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for value in actions {
        let action: serde_json::Value = serde_json::from_str(value).expect("actions are JSON");
        let id = action["action_id"].as_str().expect("an action_id").to_string();
        assert_eq!(
            expected.get(&id).map(String::as_str),
            Some(action.to_string().as_str()),
            "unexpected action {action}"
        );
        *seen.entry(id).or_default() += 1;
    }
    let twice = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| (id.clone(), *n))
        .collect();
    let missing = expected.keys().filter(|id| !seen.contains_key(*id)).cloned().collect();
    (twice, missing)
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

/// Creates `topics` with `partitions` partitions each on the broker (the load harness's).
pub fn create_topics(brokers: &str, topics: &[&str], partitions: i32) {
    kairos_loadtest::harness::create_topics(brokers, topics, partitions).expect("topics created");
}

/// Input and output topic names for one Kafka test, unique to this run (`tag` tells tests
/// apart in the broker).
pub fn kafka_topics(tag: &str) -> std::collections::BTreeMap<&'static str, String> {
    let run = unique_prefix(tag);
    [
        "customers",
        "network",
        "usage",
        "actions.sms",
        "actions.email",
        "actions.push",
        "decisions",
        "dead-letter",
    ]
    .into_iter()
    .map(|t| (t, format!("{run}.{t}")))
    .collect()
}

/// A `kairos run` configuration over `topics` (see [`kafka_topics`]), with the shipped rules
/// and 2 workers; `engine` and `state` are extra lines for those sections.
pub fn write_run_config(
    path: &Path,
    brokers: &str,
    topics: &std::collections::BTreeMap<&'static str, String>,
    state_dir: &Path,
    engine: &str,
    state: &str,
) {
    let text = format!(
        "[kafka]\nbrokers = \"{brokers}\"\ninput_topics = [\"{}\", \"{}\", \"{}\"]\n\
         [topics]\nactions_sms = \"{}\"\nactions_email = \"{}\"\nactions_push = \"{}\"\ndecisions = \"{}\"\ndead_letter = \"{}\"\n\
         [engine]\nworkers = 2\n{}{engine}\n[metrics]\nlisten = \"127.0.0.1:0\"\n\
         [state]\ndir = \"{}\"\n{state}\n",
        topics["customers"],
        topics["network"],
        topics["usage"],
        topics["actions.sms"],
        topics["actions.email"],
        topics["actions.push"],
        topics["decisions"],
        topics["dead-letter"],
        // `engine` may name its own rules folder.
        if engine.contains("rules =") {
            String::new()
        } else {
            format!("rules = \"{}\"\n", root().join("rules").display())
        },
        state_dir.display(),
    );
    std::fs::write(path, text).expect("writing the run configuration");
}

/// The input topic an event line goes to (by its `type`).
pub fn input_topic<'a>(topics: &'a std::collections::BTreeMap<&'static str, String>, line: &str) -> &'a str {
    let value: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
    match value["type"].as_str() {
        Some("customer") => &topics["customers"],
        Some("usage") => &topics["usage"],
        _ => &topics["network"],
    }
}

/// Every value in `topic` (all `partitions`), read until nothing new came for `settle`.
pub fn read_topic(brokers: &str, topic: &str, partitions: i32, settle: std::time::Duration) -> Vec<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let consumer: BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "kairos-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    let mut assignment = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .expect("assignable");
    }
    consumer.assign(&assignment).expect("assigned");
    let mut values = Vec::new();
    let mut quiet_since = std::time::Instant::now();
    while quiet_since.elapsed() < settle {
        if let Some(Ok(message)) = consumer.poll(std::time::Duration::from_millis(100)) {
            values.push(String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned());
            quiet_since = std::time::Instant::now();
        }
    }
    values
}

/// Starts `kairos run --config CONFIG`, appending its log to `log` (so restarts keep one log).
#[allow(dead_code)]
pub fn start_engine(config: &Path, log: &Path) -> Engine {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    Engine(
        std::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
            .args(["run", "--config", config.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// A running `kairos` process, killed (if still running) when dropped.
pub struct Engine(pub std::process::Child);

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The lines of a seeded generated world (`kairos_loadtest::world`, households included)
/// starting on `start` (YYYY-MM-DD).
pub fn world(
    subscribers: u64,
    days: u32,
    start: &str,
    seed: u64,
    events_per_day: u32,
    travel_rate: f64,
    invalid_rate: f64,
) -> Vec<String> {
    let spec = kairos_loadtest::world::WorldSpec {
        subscribers,
        days,
        start: start.parse().expect("a YYYY-MM-DD date"),
        seed,
        events_per_day,
        travel_rate,
        invalid_rate,
        duplicate_rate: 0.0,
    };
    let mut lines = Vec::new();
    kairos_loadtest::world::generate(&spec, |line| lines.push(line.to_string()));
    lines
}

/// The local broker's SASL_PLAINTEXT listener (mechanism PLAIN) and the user it knows, for
/// the tests of `[kafka.client]` security settings.
pub struct SaslListener {
    /// `host:port` of the SASL listener.
    pub brokers: String,
    pub username: String,
    pub password: String,
}

/// The SASL listener `scripts/kafka start` opens beside the PLAINTEXT one:
/// `KAIROS_KAFKA_SASL_BROKERS`, or the PLAINTEXT broker's port + 2 (the script's
/// `KAFKA_SASL_PORT` default); the user is `KAIROS_KAFKA_SASL_USERNAME` /
/// `KAIROS_KAFKA_SASL_PASSWORD`, or the script's defaults. Never skipped: a broker without
/// the listener fails the test, saying how to add it.
pub fn kafka_sasl() -> SaslListener {
    let plaintext = kafka_brokers();
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
    let brokers = std::env::var("KAIROS_KAFKA_SASL_BROKERS").unwrap_or_else(|_| {
        let first = plaintext.split(',').next().unwrap_or_default();
        let (host, port) = first.rsplit_once(':').expect("KAIROS_KAFKA_BROKERS is host:port");
        let port: u16 = port.parse().expect("KAIROS_KAFKA_BROKERS has a numeric port");
        format!("{host}:{}", port + 2)
    });
    let address = brokers.split(',').next().unwrap_or_default();
    assert!(
        std::net::TcpStream::connect(address).is_ok(),
        "no SASL listener on {address}: the broker was started without one (by an older \
         scripts/kafka, or with KAFKA_SASL=0). When nobody else uses it, `scripts/kafka restart` \
         adds it; or set KAIROS_KAFKA_SASL_BROKERS to a SASL_PLAINTEXT/PLAIN listener"
    );
    SaslListener {
        brokers,
        username: env("KAIROS_KAFKA_SASL_USERNAME", "kairos"),
        password: env("KAIROS_KAFKA_SASL_PASSWORD", "kairos-secret"),
    }
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `GET path` on 127.0.0.1:`port`: (status, body), or `None` when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    Some((status, body))
}

/// Produces one input line to its topic (see [`input_topic`]), keyed by its subscriber,
/// waiting while the producer's queue is full.
pub fn send_line(
    producer: &rdkafka::producer::BaseProducer,
    topics: &std::collections::BTreeMap<&'static str, String>,
    line: &str,
) {
    let value: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
    let key = value["msisdn"].as_str().unwrap_or("").to_string();
    let mut record = rdkafka::producer::BaseRecord::to(input_topic(topics, line))
        .key(&key)
        .payload(line);
    while let Err((_, back)) = producer.send(record) {
        record = back;
        producer.poll(std::time::Duration::from_millis(10));
    }
}

/// Stops `engine` with SIGTERM and waits for it; panics, with `log`, unless it exits cleanly.
pub fn stop_engine(engine: &mut Engine, log: &str) {
    let pid = engine.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(engine.0.wait().unwrap().success(), "{log}");
}

/// Where headless Chromium is (the Debian package `chromium`, installed by scripts/setup).
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Runs headless Chromium on `page` with `mode` (`--dump-dom`, `--screenshot=…`), killing it
/// after a minute; returns its stdout.
pub fn chromium(page: &Path, mode: &str) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "headless Chromium is missing ({CHROMIUM}): run scripts/setup, which installs the Debian package `chromium`"
    );
    let profile = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.path().display()),
            mode,
            &format!("file://{}", page.display()),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting chromium");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            panic!("chromium did not finish within 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let dom = reader.join().unwrap();
    if !status.success() {
        let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap_or_default();
        panic!("chromium failed ({status}): {stderr}");
    }
    dom
}

/// The text of the first element whose opening tag contains `attributes` (`data-rule="r"
/// data-metric="sent"`), up to the next tag.
pub fn text_after(dom: &str, attributes: &str) -> String {
    let at = dom
        .find(attributes)
        .unwrap_or_else(|| panic!("no element with {attributes} in the rendered page"));
    let rest = &dom[at + attributes.len()..];
    let rest = &rest[rest.find('>').expect("the tag ends") + 1..];
    rest[..rest.find('<').unwrap_or(rest.len())].trim().to_string()
}
