//! Crash test against real Kafka: a generated world is produced into the input topics at a
//! steady pace while `kairos run` is killed with SIGKILL at random moments and restarted
//! from its state folder each time. In the end the action topics must hold exactly the
//! actions a replay of the same events gives — none missing, none twice.

mod common;

use std::time::Duration;

use common::kafka_brokers;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const PARTITIONS: i32 = 3;

/// One crash test at a time. Each runs a broker's worth of traffic and `kairos` processes of
/// two workers, and compresses event time about 20 000×: side by side on a machine of two
/// cores, a process starved of CPU for a second holds a partition back hours of event time,
/// and what it then delivers is late — a difference from the replay that is the machine's,
/// not the engine's.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn kill_9_at_random_moments_loses_and_repeats_no_action() {
    let _serial = one_at_a_time();
    let brokers = kafka_brokers();
    let topics = common::kafka_topics("c");
    let names: Vec<&str> = topics.values().map(String::as_str).collect();
    common::create_topics(&brokers, &names, PARTITIONS);

    // A world with many moments: trips, handsets ageing, data packs.
    let lines = common::world(400, 3, "2026-07-01", 5, 25, 0.3, 0.002);
    let dir = tempfile::tempdir().unwrap();
    let expected = common::expected_actions(&lines, dir.path());
    assert!(
        expected.len() > 200,
        "the world should produce many actions, got {}",
        expected.len()
    );

    // Produce at a steady pace in the background: about 12 s for the whole world.
    let producer_brokers = brokers.clone();
    let producer_topics = topics.clone();
    let feed = std::thread::spawn(move || {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &producer_brokers)
            .set("linger.ms", "5")
            .create()
            .unwrap();
        let per_slice = lines.len() / 120 + 1;
        for slice in lines.chunks(per_slice) {
            for line in slice {
                let value: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
                let key = value["msisdn"].as_str().unwrap_or("").to_string();
                let topic = common::input_topic(&producer_topics, line);
                loop {
                    match producer.send(BaseRecord::to(topic).key(&key).payload(line)) {
                        Ok(()) => break,
                        Err(_) => {
                            producer.poll(Duration::from_millis(10));
                        }
                    }
                }
            }
            producer.poll(Duration::ZERO);
            std::thread::sleep(Duration::from_millis(100));
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    });

    let config = dir.path().join("kairos.toml");
    // Event time runs ~20 000× faster than the clock here: an input quiet for 100 ms is a
    // half-hour gap in event time, and its next events would be late. Allowing an hour of
    // lateness makes nothing late, so the run must decide exactly what the replay decides —
    // household steps included — and any difference is a lost or repeated action.
    common::write_run_config(
        &config,
        &brokers,
        &topics,
        &dir.path().join("state"),
        "allowed_lateness_ms = 3600000",
        "checkpoint_interval_ms = 200",
    );
    let log_path = dir.path().join("kairos.log");
    let start = || common::start_engine(&config, &log_path);

    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let kills = 5;
    for _ in 0..kills {
        let mut engine = start();
        std::thread::sleep(Duration::from_millis(rng.random_range(1_000..3_000)));
        engine.0.kill().unwrap(); // SIGKILL
        engine.0.wait().unwrap();
    }
    let _engine = start();
    feed.join().unwrap();

    // Wait for the actions to settle, then compare.
    let got = common::read_actions(&brokers, &topics, PARTITIONS, expected.len(), Duration::from_secs(90));
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let (twice, missing) = common::compare_actions(&got, &expected);
    let restarts = log.matches("kairos run: starting").count();
    assert!(
        twice.is_empty() && missing.is_empty(),
        "{} kills: {} actions expected, {} read; {} twice, {} missing\ntwice: {twice:?}\nmissing: {missing:?}\nlog:\n{log}",
        kills,
        expected.len(),
        got.len(),
        twice.len(),
        missing.len()
    );
    assert_eq!(restarts, kills + 1);
    for line in log.lines().filter(|l| l.contains("kairos run: starting")) {
        let field = |name: &str| {
            line.split(&format!("{name}="))
                .nth(1)
                .and_then(|v| v.split_whitespace().next())
        };
        eprintln!(
            "restart: restored_subscribers={} restored_at={} recalled_outputs={}",
            field("restored_subscribers").unwrap_or("?"),
            field("restored_at").unwrap_or("?"),
            field("recalled_outputs").unwrap_or("?")
        );
    }
    // The restarts resumed from checkpoints, not from the beginning.
    assert!(
        log.matches("restored_subscribers=400").count() >= 3,
        "too few restarts resumed from a checkpoint:\n{log}"
    );
    eprintln!(
        "crash test: {kills} kills, {} restarts, {} actions expected, {} read, 0 missing, 0 twice",
        restarts,
        expected.len(),
        got.len()
    );
}

/// A process killed before its first checkpoint: the next start must still recall what it
/// produced. The first start records where it begins before it produces anything; without
/// that record, the next start began from empty state with nothing to read back, and
/// produced every action of the killed process again.
#[test]
fn a_process_killed_before_its_first_checkpoint_is_recalled_by_the_next() {
    let _serial = one_at_a_time();
    let world = RecallWorld::new("f", 29);
    let log = || world.log();
    let deciding = world.config("deciding", DECIDING);
    let settling = world.config("settling", SETTLING);

    world.produce();
    // A: a first start, on an empty folder; decides the whole world and is killed.
    let decided = world.decide_all_and_kill(&deciding);

    // B: resumes from A's first record, reads A's actions back and produces none again.
    let _b = common::start_engine(&settling, &world.log_path);
    let valid = world.lines.len() as u64;
    assert!(
        wait_for_metrics(world.port, Duration::from_secs(60), |page| counter(
            page,
            "kairos_ingest_events_total"
        ) >= valid),
        "B did not read the world:\n{}",
        log()
    );
    world.assert_exactly_the_replays_actions();
    // What B read back: A's actions and their decisions (every decision is on its topic).
    let text = log();
    let starts: Vec<&str> = text.lines().filter(|l| l.contains("kairos run: starting")).collect();
    assert_eq!(starts.len(), 2, "{text}");
    let recalled: usize = starts[1]
        .split("recalled_outputs=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        recalled >= 2 * decided.len(),
        "B should have read A's actions back:\n{text}"
    );
    eprintln!(
        "a kill before the first checkpoint: {} actions, none twice",
        world.expected.len()
    );
}

/// Decides as soon as the input is quiet; no periodic checkpoint for ten minutes:
/// ((allowed lateness, idle after), checkpoint interval), in ms.
const DECIDING: ((u64, u64), u64) = ((3_600_000, 100), 600_000);
/// Decides at once and checkpoints often.
const SETTLING: ((u64, u64), u64) = ((3_600_000, 100), 200);

/// The world of a recall test — 150 subscribers over two days, on topics of its own — with
/// the actions a replay of it gives, and the state folder, log and metrics port its
/// processes share.
struct RecallWorld {
    brokers: String,
    topics: std::collections::BTreeMap<&'static str, String>,
    lines: Vec<String>,
    expected: std::collections::BTreeMap<String, String>,
    dir: tempfile::TempDir,
    log_path: std::path::PathBuf,
    port: u16,
}

impl RecallWorld {
    fn new(prefix: &str, seed: u64) -> RecallWorld {
        let brokers = kafka_brokers();
        let topics = common::kafka_topics(prefix);
        let names: Vec<&str> = topics.values().map(String::as_str).collect();
        common::create_topics(&brokers, &names, PARTITIONS);
        let lines = common::world(150, 2, "2026-07-01", seed, 25, 0.3, 0.0);
        let dir = tempfile::tempdir().unwrap();
        let expected = common::expected_actions(&lines, dir.path());
        assert!(expected.len() > 20, "too few actions: {}", expected.len());
        let log_path = dir.path().join("kairos.log");
        RecallWorld {
            brokers,
            topics,
            lines,
            expected,
            dir,
            log_path,
            port: common::free_port(),
        }
    }

    /// Produces the world into its input topics; the producer is kept for later sends.
    fn produce(&self) -> BaseProducer {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .unwrap();
        for line in &self.lines {
            common::send_line(&producer, &self.topics, line);
        }
        producer.flush(Duration::from_secs(30)).unwrap();
        producer
    }

    /// Process A: starts with `config`, decides the whole world and is killed with
    /// SIGKILL; returns the actions it produced.
    fn decide_all_and_kill(&self, config: &std::path::Path) -> Vec<String> {
        let mut a = common::start_engine(config, &self.log_path);
        let expected = self.expected.len();
        let decided = common::read_actions(
            &self.brokers,
            &self.topics,
            PARTITIONS,
            expected,
            Duration::from_secs(90),
        );
        assert_eq!(decided.len(), expected, "A did not decide the world:\n{}", self.log());
        a.0.kill().unwrap();
        a.0.wait().unwrap();
        decided
    }

    /// Reads the action topics and fails unless they hold exactly the replay's actions:
    /// none missing, none twice.
    fn assert_exactly_the_replays_actions(&self) {
        let got = common::read_actions(
            &self.brokers,
            &self.topics,
            PARTITIONS,
            self.expected.len() + 1,
            Duration::from_secs(5),
        );
        let (twice, missing) = common::compare_actions(&got, &self.expected);
        assert!(
            twice.is_empty() && missing.is_empty(),
            "{} actions expected, {} read; {} twice, {} missing\ntwice: {twice:?}\nlog:\n{}",
            self.expected.len(),
            got.len(),
            twice.len(),
            missing.len(),
            self.log()
        );
    }

    /// The log every process of the test appends to.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Writes the configuration `name` of one process: its idleness and checkpoint interval
    /// (same topics, same state folder, same metrics port).
    fn config(&self, name: &str, ((lateness_ms, idle_after_ms), interval_ms): ((u64, u64), u64)) -> std::path::PathBuf {
        let path = self.dir.path().join(format!("{name}.toml"));
        common::write_run_config(
            &path,
            &self.brokers,
            &self.topics,
            &self.dir.path().join("state"),
            &format!("allowed_lateness_ms = {lateness_ms}\nidle_after_ms = {idle_after_ms}"),
            &format!("checkpoint_interval_ms = {interval_ms}"),
        );
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("127.0.0.1:0", &format!("127.0.0.1:{}", self.port))).unwrap();
        path
    }
}

/// Polls `/metrics` on `port` until `ready` says so of the page (or `patience` passes).
fn wait_for_metrics(port: u16, patience: Duration, ready: impl Fn(&str) -> bool) -> bool {
    let deadline = std::time::Instant::now() + patience;
    while std::time::Instant::now() < deadline {
        if common::http_get(port, "/metrics").is_some_and(|(_, page)| ready(&page)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The sum of a counter's series on a metrics page.
fn counter(page: &str, name: &str) -> u64 {
    page.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = if rest.starts_with('{') {
                rest.rsplit_once(' ')?.1
            } else {
                rest.strip_prefix(' ')?
            };
            value.trim().parse::<f64>().ok()
        })
        .sum::<f64>() as u64
}

/// The recall gap: process A decides far past its last checkpoint and is killed; B restores
/// that checkpoint, recalls A's actions, and writes a checkpoint before it has decided them
/// again (its event time held back a day, it is stopped); C restores B's checkpoint. C must
/// still know A's actions — B's checkpoint recalls from the point B restored, not from B's
/// start — and produce none of them again.
#[test]
fn a_restart_after_a_restart_recalls_what_the_first_killed_process_decided() {
    let _serial = one_at_a_time();
    let world = RecallWorld::new("g", 23);
    let log = || world.log();
    let deciding = world.config("deciding", DECIDING);
    // Holds event time a day behind the newest event (for a minute before the input
    // counts as idle): the second day of the world waits.
    let holding = world.config("holding", ((86_400_000, 60_000), 600_000));
    let settling = world.config("settling", SETTLING);

    // A first checkpoint before any input: a clean stop.
    let mut first = common::start_engine(&deciding, &world.log_path);
    assert!(
        wait_for_metrics(world.port, Duration::from_secs(60), |_| true),
        "the engine did not start:\n{}",
        log()
    );
    common::stop_engine(&mut first, &log());
    assert!(log().contains("final_checkpoint=true"), "{}", log());

    // A: decides the whole world, then is killed without a checkpoint after the first.
    let producer = world.produce();
    let send = |line: &str| common::send_line(&producer, &world.topics, line);
    world.decide_all_and_kill(&deciding);

    // B: recalls A's actions, reads the whole world while its event time is held back a
    // day, and stops: its final checkpoint lies a day before what A decided last.
    let mut b = common::start_engine(&holding, &world.log_path);
    let valid = world.lines.len() as u64;
    assert!(
        wait_for_metrics(world.port, Duration::from_secs(60), |page| counter(
            page,
            "kairos_ingest_events_total"
        ) >= valid),
        "B did not read the world:\n{}",
        log()
    );
    common::stop_engine(&mut b, &log());
    assert_eq!(log().matches("final_checkpoint=true").count(), 2, "{}", log());
    assert!(
        !log().contains("checkpoints have passed what the process before"),
        "B's checkpoints cannot have passed what A decided:\n{}",
        log()
    );

    // C: restores B's checkpoint and decides everything again; none of it is produced twice.
    // Only input moves event time: one event of a number that is no customer, a
    // millisecond after the world's newest, lets it pass what waits.
    let _c = common::start_engine(&settling, &world.log_path);
    let newest = world
        .lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| kairos_model::time::parse_rfc3339(v["ts"].as_str()?).ok())
        .max()
        .unwrap();
    send(&format!(
        r#"{{"type":"network","ts":"{}","msisdn":"351919999999","event":"location_update","country":"PT"}}"#,
        kairos_model::time::format_rfc3339(newest + 1)
    ));
    producer.flush(Duration::from_secs(30)).unwrap();
    // Settling takes about a second here; minutes leave room for a loaded machine, and a
    // failure shows where C's workers and checkpoints stood.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while !log().contains("checkpoints have passed what the process before") {
        assert!(
            std::time::Instant::now() < deadline,
            "C's checkpoints did not settle:\n{}\nC's metrics:\n{}",
            log(),
            common::http_get(world.port, "/metrics")
                .map(|(_, page)| page
                    .lines()
                    .filter(|l| l.starts_with("kairos_") && !l.starts_with("kairos_rules"))
                    .collect::<Vec<_>>()
                    .join("\n"))
                .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    world.assert_exactly_the_replays_actions();
    eprintln!(
        "recall after a restart after a restart: {} actions, none twice",
        world.expected.len()
    );
}
