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

#[test]
fn kill_9_at_random_moments_loses_and_repeats_no_action() {
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
