//! The `faults` scenario: a fault campaign against a Kafka broker of the campaign's own.
//!
//! Under a steady load (the world's activity stamped with the time it is sent, as in the other
//! live scenarios) and with the engine's default allowed lateness, the campaign does, in an
//! order and at instants drawn from its seed: `kill -9` of the engine followed by a restart,
//! broker restarts (short, and one outage longer than the engine's delivery timeout),
//! `SIGSTOP`/`SIGCONT` pauses of the engine, one event stamped in year 2999 and a burst of
//! garbage on an input partition of its own. Then every output topic is read back and
//! checked (see [`verify`]) against the ground truth and against `kairos replay` of exactly
//! what was sent.
//!
//! The broker is started with `scripts/kafka` on its own port and data folder, so the shared
//! broker is never touched; only 127.0.0.1 is ever a target.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;

use super::engine::{self, events_read, scrape, Engine, EngineSpec, Topics};
use super::feed::{Feed, FeedCounters, Step, World};
use super::observe::{self, Seen};
use super::{create_topics, marketing_rules};
use crate::report::{Marker, Report};
use crate::truth::{self, Moment};
use crate::world::WorldSpec;

/// The broker of the campaign: `scripts/kafka` with its own port and data folder.
#[derive(Debug, Clone)]
pub struct BrokerSpec {
    pub script: PathBuf,
    pub port: u16,
    pub dir: PathBuf,
    /// Leave its data folder in place at the end (it is removed otherwise).
    pub keep: bool,
}

/// The shared development broker: never the campaign's.
const SHARED_PORT: u16 = 19092;

/// The campaign's broker, stopped when dropped.
struct Broker {
    spec: BrokerSpec,
}

impl Broker {
    fn new(spec: &BrokerSpec) -> Result<Broker> {
        // The shared broker (and its controller and SASL ports) must never be restarted.
        if spec.port.abs_diff(SHARED_PORT) < 3 {
            bail!(
                "--broker-port {} is the shared broker's (or next to it): the campaign restarts its broker, \
                 so it needs one of its own",
                spec.port
            );
        }
        Ok(Broker { spec: spec.clone() })
    }

    fn script(&self, command: &str) -> Result<()> {
        let status = Command::new("bash")
            .arg(&self.spec.script)
            .arg(command)
            .env("KAFKA_PORT", self.spec.port.to_string())
            .env("KAIROS_KAFKA_DIR", &self.spec.dir)
            .env("KAFKA_SASL", "0")
            .env("KAFKA_STOP_TIMEOUT", "20")
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("cannot run {}", self.spec.script.display()))?;
        if !status.success() {
            bail!("scripts/kafka {command} on port {} failed ({status})", self.spec.port);
        }
        Ok(())
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.spec.port)
    }

    fn start(&self) -> Result<()> {
        self.script("start")
    }

    fn stop(&self) -> Result<()> {
        self.script("stop")
    }

    /// `kill -9` of the broker (the pid `scripts/kafka` wrote), waiting until it is gone.
    fn kill(&self) -> Result<()> {
        let path = self.spec.dir.join("kafka.pid");
        let pid = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let pid = pid.trim();
        let status = Command::new("kill").args(["-KILL", pid]).status()?;
        if !status.success() {
            bail!("kill -KILL {pid} (the campaign's broker) failed");
        }
        let since = Instant::now();
        while Path::new(&format!("/proc/{pid}")).exists() {
            if since.elapsed() > Duration::from_secs(30) {
                bail!("the campaign's broker (pid {pid}) did not die");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.script("stop");
        if !self.spec.keep {
            let _ = std::fs::remove_dir_all(&self.spec.dir);
        }
    }
}

/// What the campaign does.
#[derive(Debug, Clone)]
pub struct FaultSpec {
    pub command: String,
    /// The engine (its `brokers` are the campaign's broker's, whatever they say here).
    pub engine: EngineSpec,
    pub broker: BrokerSpec,
    pub world: WorldSpec,
    pub households: bool,
    pub partitions: i32,
    pub out: PathBuf,
    /// Events per second of the load.
    pub rate: f64,
    /// Draws the order of the faults, the instants between them and the pauses' lengths.
    pub seed: u64,
    pub kills: usize,
    pub short_restarts: usize,
    /// Seconds the broker stays away in the long outage; 0 for none.
    pub long_outage_secs: f64,
    pub pauses: usize,
    /// Shortest and longest pause (s).
    pub pause_secs: (f64, f64),
    /// Shortest and longest stretch of plain load before each fault (s).
    pub gap_secs: (f64, f64),
    /// Garbage messages sent to the garbage partition (over [`GARBAGE_SECS`]).
    pub garbage: usize,
    /// The engine's `[kafka] delivery_timeout_ms`, when not its default.
    pub delivery_timeout_ms: Option<u64>,
    /// Whether actions that differ from the replay (or planted moments missed) without a late
    /// event to explain them fail the run; otherwise they are reported as notes. Lost and
    /// duplicated records fail it always.
    pub fail_on_differences: bool,
}

/// The garbage is spread over longer than the engine's `STALLED_AFTER` (10 s): a partition
/// that only delivers garbage must stop holding the frontier while it still delivers.
const GARBAGE_SECS: f64 = 15.0;

/// What the engine's log says, at debug level for one target only: each event applied late.
const ENGINE_ENV: [(&str, &str); 1] = [("KAIROS_LOG", "info,kairos::late=debug")];

/// The default `[kafka] delivery_timeout_ms` of the engine (`src/config.rs`).
const ENGINE_DELIVERY_TIMEOUT_MS: u64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Kill,
    BrokerRestart,
    LongOutage,
    Pause,
    Poison,
    Garbage,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "a kill -9",
            Fault::BrokerRestart => "a broker restart",
            Fault::LongOutage => "the long outage",
            Fault::Pause => "a pause",
            Fault::Poison => "the 2999 event",
            Fault::Garbage => "the garbage",
        }
    }
}

/// One line of the timeline.
#[derive(Debug, Clone)]
struct Happened {
    t: f64,
    what: String,
}

fn log(message: impl AsRef<str>) {
    eprintln!("kairos-loadtest faults: {}", message.as_ref());
}

/// A seed from the clock that an `f64` holds exactly (so the report's number is the seed).
pub fn clock_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (nanos as u64) & ((1 << 53) - 1)
}

/// The faults of `spec` in the order the seed gives.
fn plan(spec: &FaultSpec, rng: &mut ChaCha8Rng) -> Vec<Fault> {
    let mut faults = Vec::new();
    faults.extend(std::iter::repeat_n(Fault::Kill, spec.kills));
    faults.extend(std::iter::repeat_n(Fault::BrokerRestart, spec.short_restarts));
    faults.extend(std::iter::repeat_n(Fault::Pause, spec.pauses));
    if spec.long_outage_secs > 0.0 {
        faults.push(Fault::LongOutage);
    }
    faults.push(Fault::Poison);
    if spec.garbage > 0 {
        faults.push(Fault::Garbage);
    }
    faults.shuffle(rng);
    faults
}

fn between(rng: &mut ChaCha8Rng, (low, high): (f64, f64)) -> f64 {
    if high > low {
        rng.random_range(low..high)
    } else {
        low
    }
}

/// The engine as the campaign drives it, with what is counted across its processes.
struct Subject {
    engine: Engine,
    binary: PathBuf,
    config: PathBuf,
    metrics: std::net::SocketAddr,
    log: PathBuf,
    /// The late events counted by processes that are gone, and the most the current one said.
    late_before: f64,
    late_now: f64,
    /// Processes that ended by themselves (not killed by the campaign).
    exited: Vec<String>,
    /// Seconds from each kill to the new process's readiness.
    ready_after_kill: Vec<f64>,
}

impl Subject {
    fn start(&mut self) -> Result<Duration> {
        self.late_before += self.late_now;
        self.late_now = 0.0;
        self.engine = Engine::start_with_env(&self.binary, &self.config, self.metrics, &self.log, &ENGINE_ENV)?;
        self.engine.wait_ready(Duration::from_secs(300))
    }

    /// Scrapes the engine once; notes a process that ended by itself, and starts it again.
    fn tick(&mut self, t: f64) -> Option<engine::Metrics> {
        if !self.engine.running() {
            self.exited.push(format!("at {t:.1} s the engine had ended by itself"));
            log(format!("the engine ended by itself at {t:.1} s; starting it again"));
            if let Err(e) = self.start() {
                self.exited.push(format!("and could not start again: {e:#}"));
            }
            return None;
        }
        let m = scrape(self.metrics).ok()?;
        if let Some(late) = m.get("kairos_ingest_late_events_total") {
            self.late_now = self.late_now.max(*late);
        }
        Some(m)
    }

    fn late(&self) -> f64 {
        self.late_before + self.late_now
    }

    fn signal(&self, signal: &str) -> Result<()> {
        let status = Command::new("kill")
            .args([signal, &self.engine.pid().to_string()])
            .status()
            .context("cannot run kill")?;
        if !status.success() {
            bail!("kill {signal} {} failed", self.engine.pid());
        }
        Ok(())
    }
}

/// Runs the campaign and returns its report (also written into `spec.out`).
pub fn run(spec: &FaultSpec) -> Result<Report> {
    std::fs::create_dir_all(&spec.out).with_context(|| format!("cannot create {}", spec.out.display()))?;
    let begun_ms = kairos_model::time::now();
    log(format!(
        "seed {} (rerun this campaign with --seed {})",
        spec.seed, spec.seed
    ));
    let broker = Broker::new(&spec.broker)?;
    let started = Instant::now();
    broker.start()?;
    log(format!(
        "broker of its own on {} ({:.1} s)",
        broker.brokers(),
        started.elapsed().as_secs_f64()
    ));
    let brokers = broker.brokers();
    let prefix = format!("faults-{}-{}", std::process::id(), kairos_model::time::now());
    let topics = Topics::new(&prefix);
    let garbage_topic = format!("{prefix}.garbage");
    create_topics(&brokers, &[&topics.input], spec.partitions)?;
    create_topics(&brokers, &[&garbage_topic], 1)?;
    create_topics(&brokers, &topics.outputs(), 2)?;

    let world = Arc::new(World::generate(&spec.world, spec.households));
    log(format!(
        "world of {} subscribers: {} customer records, {} activity events per round",
        spec.world.subscribers,
        world.customers(),
        world.activity()
    ));

    // The engine: the garbage topic is one more input; the delivery timeout as asked.
    let mut engine_spec = spec.engine.clone();
    engine_spec.brokers = brokers.clone();
    let (config, metrics) = engine::write_config(&engine_spec, &topics, &spec.out)?;
    let mut text = std::fs::read_to_string(&config)?;
    let inputs = format!("input_topics = [\"{}\"]", topics.input);
    if !text.contains(&inputs) {
        bail!("the engine's configuration does not name its input as expected");
    }
    text = text.replace(
        &inputs,
        &format!("input_topics = [\"{}\", \"{garbage_topic}\"]", topics.input),
    );
    if let Some(ms) = spec.delivery_timeout_ms {
        text = text.replacen("[kafka]\n", &format!("[kafka]\ndelivery_timeout_ms = {ms}\n"), 1);
    }
    std::fs::write(&config, text)?;
    let log_path = spec.out.join("kairos.log");
    let _ = std::fs::remove_file(&log_path);
    let _ = std::fs::remove_dir_all(spec.out.join("state"));
    let mut subject = Subject {
        engine: Engine::start_with_env(&spec.engine.binary, &config, metrics, &log_path, &ENGINE_ENV)?,
        binary: spec.engine.binary.clone(),
        config: config.clone(),
        metrics,
        log: log_path.clone(),
        late_before: 0.0,
        late_now: 0.0,
        exited: Vec::new(),
        ready_after_kill: Vec::new(),
    };
    let ready = subject.engine.wait_ready(Duration::from_secs(120))?;
    log(format!("engine ready in {:.2} s", ready.as_secs_f64()));

    // The customer records, read before the load starts; every line sent is recorded.
    let counters = Arc::new(FeedCounters::default());
    let sent_path = spec.out.join("sent.jsonl");
    let mut feed = Feed::reliable(&brokers, &topics.input, Arc::clone(&world))?;
    feed.record_to(&sent_path)?;
    let customers = feed.send_customers(&counters)? as f64;
    let loading = Instant::now();
    while scrape(metrics).map(|m| events_read(&m)).unwrap_or(0.0) < customers {
        if loading.elapsed() > Duration::from_secs(600) || !subject.engine.running() {
            bail!("the engine did not read the {customers} customer records");
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let consumer = observe::reader(&brokers, &topics.actions(), 2)?;
        let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
        std::thread::spawn(move || observe::watch_actions(consumer, seen, stop))
    };
    let injector: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("client.id", "kairos-loadtest-faults")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "0")
        .create()
        .context("cannot create the fault injector's producer")?;
    let injector = Arc::new(injector);

    let t0 = Instant::now();
    let producer = {
        let counters = Arc::clone(&counters);
        let schedule = vec![Step {
            name: "load".into(),
            rate: spec.rate,
            secs: 1e9,
        }];
        std::thread::spawn(move || -> Result<Feed> {
            feed.run(&schedule, &counters)?;
            Ok(feed)
        })
    };

    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let faults = plan(spec, &mut rng);
    let mut timeline: Vec<Happened> = Vec::new();
    let mut markers = Vec::new();
    let mut results: BTreeMap<String, f64> = BTreeMap::new();
    let mut failures: Vec<String> = Vec::new();
    let mut garbage_thread = None;
    let (mut kills, mut short, mut long, mut pauses, mut paused_secs) = (0, 0, 0, 0, 0.0);
    let mut short_away = Vec::new();
    let mut poison_key = None;
    let mut fault_starts: Vec<(u64, &'static str)> = Vec::new();
    let note = |timeline: &mut Vec<Happened>, what: String| {
        let t = t0.elapsed().as_secs_f64();
        log(format!("{t:.1} s: {what}"));
        timeline.push(Happened { t, what });
    };
    for (i, fault) in faults.iter().enumerate() {
        let gap = between(&mut rng, spec.gap_secs);
        load_for(&mut subject, t0, Duration::from_secs_f64(gap));
        fault_starts.push((kairos_model::time::now(), fault.name()));
        match fault {
            Fault::Kill => {
                let t = t0.elapsed().as_secs_f64();
                subject.engine.kill();
                kills += 1;
                let ready = subject.start()?;
                subject.ready_after_kill.push(ready.as_secs_f64());
                markers.push(Marker {
                    t,
                    label: "kill -9".into(),
                });
                note(
                    &mut timeline,
                    format!(
                        "kill -9 #{kills} (fault {}/{}), ready again after {:.2} s",
                        i + 1,
                        faults.len(),
                        ready.as_secs_f64()
                    ),
                );
            }
            Fault::Pause => {
                let secs = between(&mut rng, spec.pause_secs);
                let t = t0.elapsed().as_secs_f64();
                subject.signal("-STOP")?;
                std::thread::sleep(Duration::from_secs_f64(secs));
                subject.signal("-CONT")?;
                pauses += 1;
                paused_secs += secs;
                markers.push(Marker {
                    t,
                    label: format!("SIGSTOP {secs:.1} s"),
                });
                note(
                    &mut timeline,
                    format!("SIGSTOP … SIGCONT of the engine for {secs:.2} s"),
                );
            }
            Fault::BrokerRestart | Fault::LongOutage => {
                let long_one = *fault == Fault::LongOutage;
                let t = t0.elapsed().as_secs_f64();
                let away = Instant::now();
                if long_one {
                    // A crash under load (SIGKILL, the feed still sending): what the engine
                    // has in flight is never acknowledged and fails at its delivery timeout.
                    // The feed then holds; its own unacknowledged records are retried, once
                    // each (idempotent), when the broker is back.
                    broker.kill()?;
                    counters.hold.store(true, Ordering::SeqCst);
                    note(
                        &mut timeline,
                        format!(
                            "broker killed (SIGKILL) under load for the long outage ({:.0} s)",
                            spec.long_outage_secs
                        ),
                    );
                    std::thread::sleep(Duration::from_secs_f64(spec.long_outage_secs));
                } else {
                    // A clean restart: the feed's records delivered first, then SIGTERM.
                    hold_feed(&counters, true)?;
                    broker.stop()?;
                }
                broker.start()?;
                let secs = away.elapsed().as_secs_f64();
                hold_feed(&counters, false)?;
                markers.push(Marker {
                    t,
                    label: if long_one {
                        format!("broker away {secs:.0} s")
                    } else {
                        "broker restart".into()
                    },
                });
                if long_one {
                    long += 1;
                    results.insert("long outage: broker away (s)".into(), secs);
                    note(&mut timeline, format!("broker back after {secs:.1} s (long outage)"));
                    let back = Instant::now();
                    let (ready, steady) = wait_steady(&mut subject, &seen, spec.rate, Duration::from_secs(600));
                    match ready {
                        Some(r) => {
                            results.insert("long outage: engine ready after the broker is back (s)".into(), r);
                        }
                        None => failures.push("the engine was not ready within 600 s of the long outage".into()),
                    }
                    match steady {
                        Some(s) => {
                            results.insert("long outage: steady after the broker is back (s)".into(), s);
                            note(
                                &mut timeline,
                                format!(
                                    "steady again {s:.1} s after the broker came back (measured for {:.1} s)",
                                    back.elapsed().as_secs_f64()
                                ),
                            );
                        }
                        None => failures.push("the engine was not steady within 600 s of the long outage".into()),
                    }
                } else {
                    short += 1;
                    short_away.push(secs);
                    note(&mut timeline, format!("broker restarted: away {secs:.1} s"));
                }
            }
            Fault::Poison => {
                let msisdn = world
                    .msisdn(rng.random_range(0..world.customers().max(1)))
                    .unwrap_or("351910000001");
                let line = format!(
                    r#"{{"type":"network","ts":"2999-01-01T00:00:00Z","msisdn":"{msisdn}","event":"location_update","country":"JP"}}"#
                );
                send(&injector, &topics.input, Some(msisdn), line.as_bytes())?;
                injector.flush(Duration::from_secs(60)).context("the poisoned event")?;
                poison_key = Some(msisdn.to_string());
                markers.push(Marker {
                    t: t0.elapsed().as_secs_f64(),
                    label: "year 2999".into(),
                });
                note(
                    &mut timeline,
                    "an event stamped 2999-01-01 sent to the input topic".into(),
                );
            }
            Fault::Garbage => {
                let injector = Arc::clone(&injector);
                let (topic, count, seed) = (garbage_topic.clone(), spec.garbage, rng.random::<u64>());
                markers.push(Marker {
                    t: t0.elapsed().as_secs_f64(),
                    label: "garbage".into(),
                });
                note(
                    &mut timeline,
                    format!("{count} garbage messages start on {topic} over {GARBAGE_SECS:.0} s"),
                );
                garbage_thread = Some(std::thread::spawn(move || send_garbage(&injector, &topic, count, seed)));
            }
        }
    }
    load_for(&mut subject, t0, Duration::from_secs(5));
    counters.done.store(true, Ordering::Relaxed);
    let feed = producer
        .join()
        .map_err(|_| anyhow::anyhow!("the producer panicked"))??;
    let garbage_sent = match garbage_thread {
        Some(thread) => thread
            .join()
            .map_err(|_| anyhow::anyhow!("the garbage sender panicked"))??,
        None => 0,
    };
    let sent = counters.sent.load(Ordering::Relaxed);
    note(&mut timeline, format!("load stopped: {sent} events sent"));

    // Drain: the engine has read everything (its partition lag is 0 three times in a row),
    // then the outputs stop growing.
    // The gauge of the garbage partition is not trusted alone: it counted a partition read
    // to its end before a restart as unread (fixed in the engine; kept here so that an engine
    // with that fault still drains): once the input topic is read, 30 s more at most.
    let draining = Instant::now();
    let mut caught_up = 0;
    let mut input_read_since: Option<Instant> = None;
    while caught_up < 3 && draining.elapsed() < Duration::from_secs(600) {
        std::thread::sleep(Duration::from_millis(500));
        let lag = subject
            .tick(t0.elapsed().as_secs_f64())
            .and_then(|m| m.get("kairos_ingest_lag_messages").copied());
        let input_lag = input_lag(&subject, &topics.input);
        if input_lag == Some(0.0) {
            input_read_since.get_or_insert_with(Instant::now);
        } else {
            input_read_since = None;
        }
        let garbage_left = input_read_since.is_some_and(|s| s.elapsed() > Duration::from_secs(30));
        if garbage_left && lag != Some(0.0) {
            log(format!(
                "the engine's lag gauge still says {lag:?} while its input topic is read; the garbage partition's gauge is not believed"
            ));
            caught_up = 3;
            break;
        }
        caught_up = if lag == Some(0.0) { caught_up + 1 } else { 0 };
    }
    if caught_up < 3 {
        failures.push("the engine had not read every event 600 s after the load stopped".into());
    }
    let mut ends = output_ends(&brokers, &topics)?;
    let mut quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(5) && draining.elapsed() < Duration::from_secs(900) {
        std::thread::sleep(Duration::from_millis(500));
        subject.tick(t0.elapsed().as_secs_f64());
        let now = output_ends(&brokers, &topics)?;
        if now != ends {
            ends = now;
            quiet = Instant::now();
        }
    }
    note(
        &mut timeline,
        format!("drained in {:.1} s", draining.elapsed().as_secs_f64()),
    );
    let held = subject
        .tick(t0.elapsed().as_secs_f64())
        .and_then(|m| m.get("kairos_policy_held_actions").copied())
        .unwrap_or(0.0) as u64;
    let (_, peak_mb) = subject.engine.memory_mb();
    subject.engine.kill();
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();

    let read = Instant::now();
    let outputs = Outputs {
        actions: topics
            .actions()
            .iter()
            .map(|t| read_all(&brokers, t, 2))
            .collect::<Result<Vec<_>>>()?
            .concat(),
        decisions: read_all(&brokers, &topics.decisions, 2)?,
        dead_letters: read_all(&brokers, &topics.dead_letter, 2)?,
    };
    log(format!(
        "read back {} actions, {} decisions, {} dead letters ({:.1} s)",
        outputs.actions.len(),
        outputs.decisions.len(),
        outputs.dead_letters.len(),
        read.elapsed().as_secs_f64()
    ));
    drop(broker);
    save_outputs(&spec.out.join("outputs"), &outputs, &topics)?;

    // The run without faults: a replay of exactly what was sent.
    let newest = feed.newest();
    let planted = feed.truth();
    let replay_dir = spec.out.join("replay");
    let replay = replay_of(spec, &sent_path, &replay_dir)?;
    let engine_log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let late = LateEvents::from_log(&engine_log);
    let marketing = marketing_rules(&spec.engine.rules)?;
    let checked = verify(&Inputs {
        outputs: &outputs,
        replay: &replay,
        newest,
        planted: &planted,
        held,
        marketing: &marketing,
        late: &late,
        input_topic: &topics.input,
        garbage_topic: &garbage_topic,
        garbage_sent,
        poison_key: poison_key.as_deref(),
    });
    write_differences(&spec.out.join("differences.jsonl"), &checked.differences)?;
    // Every copy of a repeated action or decision, where and when it was produced.
    let mut repeated = String::new();
    for (topic, records) in [
        ("actions", &outputs.actions),
        (topics.decisions.as_str(), &outputs.decisions),
    ] {
        for r in records {
            let id = serde_json::from_str::<Value>(&r.value)
                .ok()
                .and_then(|v| v["action_id"].as_str().map(str::to_string));
            if id.is_some_and(|id| checked.duplicated_ids.contains(&id)) {
                repeated.push_str(&r.to_json(topic));
                repeated.push('\n');
            }
        }
    }
    std::fs::write(spec.out.join("duplicates.jsonl"), repeated)?;

    // The report.
    let mut report = Report {
        scenario: "faults".into(),
        started: kairos_model::time::format_rfc3339(begun_ms),
        command: spec.command.clone(),
        machine: engine::machine(),
        versions: engine::versions(&spec.engine.binary),
        ..Report::default()
    };
    for (k, v) in [
        ("seed", spec.seed.to_string()),
        ("subscribers", spec.world.subscribers.to_string()),
        ("events per subscriber per day", spec.world.events_per_day.to_string()),
        ("world seed", spec.world.seed.to_string()),
        ("households", spec.households.to_string()),
        ("workers", spec.engine.workers.to_string()),
        ("rules", spec.engine.rules.display().to_string()),
        ("input partitions", format!("{} + 1 (garbage)", spec.partitions)),
        ("load (events/s)", spec.rate.to_string()),
        ("allowed lateness (ms)", "0 (the engine's default)".into()),
        (
            "delivery timeout (ms)",
            match spec.delivery_timeout_ms {
                Some(ms) => format!("{ms} (set for the campaign)"),
                None => format!("{ENGINE_DELIVERY_TIMEOUT_MS} (the engine's default)"),
            },
        ),
        ("broker", format!("{} (the campaign's own)", brokers)),
        (
            "pause length (s)",
            format!("{}–{}", spec.pause_secs.0, spec.pause_secs.1),
        ),
        (
            "load between faults (s)",
            format!("{}–{}", spec.gap_secs.0, spec.gap_secs.1),
        ),
    ] {
        report.config.insert(k.into(), v);
    }
    let r = &mut results;
    r.insert("kills".into(), kills as f64);
    r.insert("broker restarts (short)".into(), short as f64);
    r.insert("broker outages (long)".into(), long as f64);
    if let Some(most) = short_away.iter().copied().reduce(f64::max) {
        r.insert("short broker restarts: away at most (s)".into(), most);
    }
    r.insert("pauses".into(), pauses as f64);
    r.insert("paused in all (s)".into(), paused_secs);
    r.insert("poisoned events".into(), if poison_key.is_some() { 1.0 } else { 0.0 });
    r.insert("garbage messages".into(), garbage_sent as f64);
    r.insert("events sent".into(), sent as f64);
    r.insert("engine peak RSS (MB)".into(), peak_mb.round());
    let mut ready = subject.ready_after_kill.clone();
    if let Some(p) = observe::percentiles(&mut ready) {
        r.insert("kill → ready p50 (s)".into(), p.p50);
        r.insert("kill → ready max (s)".into(), p.max);
    }
    r.insert(
        "engine restarts within the process".into(),
        engine_log
            .matches("kairos run: restarting from the last checkpoint")
            .count() as f64,
    );
    r.insert("late events counted (engine)".into(), subject.late().round());
    r.insert("late events logged".into(), late.events as f64);
    r.insert("subscribers with a late event".into(), late.subscribers.len() as f64);
    for (after, n) in late.after_faults(&fault_starts) {
        r.insert(
            format!("late events logged, after {after} (before the next fault)"),
            n as f64,
        );
    }
    report.results = results;
    report.truth = checked.counts.clone();
    report
        .truth
        .insert("planted moments".into(), checked.truth.planted as u64);
    report.truth.insert("found".into(), checked.truth.found as u64);
    failures.extend(subject.exited.iter().cloned());
    failures.extend(checked.failures.iter().cloned());
    let differences = checked.unexplained.iter().cloned();
    let mut reported = Vec::new();
    if spec.fail_on_differences {
        failures.extend(differences);
    } else {
        reported.extend(differences.map(|d| format!("not a failure here (--fail-on-differences false): {d}")));
    }
    report.failures = failures;
    report.passed = report.failures.is_empty();
    report.markers = markers;
    report.notes = notes(&timeline, &checked, &late);
    report.notes.extend(reported);
    super::write(&report, &spec.out)?;
    Ok(report)
}

/// The engine's lag gauge summed over the partitions of `topic`.
fn input_lag(subject: &Subject, topic: &str) -> Option<f64> {
    let text = engine::scrape_text(subject.metrics).ok()?;
    let series = format!("kairos_ingest_lag_messages{{topic=\"{topic}\"");
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(&series))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse().ok()))
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Keeps the load running for `span`, scraping the engine every second.
fn load_for(subject: &mut Subject, t0: Instant, span: Duration) {
    let until = Instant::now() + span;
    while Instant::now() < until {
        std::thread::sleep(
            until
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(1)),
        );
        subject.tick(t0.elapsed().as_secs_f64());
    }
}

/// Holds the feed (waiting until what it sent is delivered) or lets it go again.
fn hold_feed(counters: &FeedCounters, hold: bool) -> Result<()> {
    counters.hold.store(hold, Ordering::SeqCst);
    if hold {
        let since = Instant::now();
        while !counters.holding.load(Ordering::SeqCst) {
            if since.elapsed() > Duration::from_secs(120) {
                bail!("the feed did not deliver what it sent within 120 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(())
}

/// After an outage: seconds until the engine is ready, and until it is steady — ready, its
/// partition lag within a second of input, and the actions that reached their topics in
/// each second within 1 s of their moment (p99), for 5 seconds in a row.
fn wait_steady(
    subject: &mut Subject,
    seen: &Mutex<Vec<Seen>>,
    rate: f64,
    limit: Duration,
) -> (Option<f64>, Option<f64>) {
    let since = Instant::now();
    let band = rate.max(1000.0);
    let (mut ready_at, mut steady_from, mut run) = (None, None, 0);
    let mut tick_at = Instant::now();
    while since.elapsed() < limit {
        tick_at += Duration::from_secs(1);
        std::thread::sleep(tick_at.saturating_duration_since(Instant::now()));
        let t = since.elapsed().as_secs_f64();
        let m = subject.tick(t);
        let ready = m
            .as_ref()
            .and_then(|m| m.get("kairos_ready"))
            .is_some_and(|r| *r >= 1.0);
        if ready && ready_at.is_none() {
            ready_at = Some(t);
        }
        let lag = m.as_ref().and_then(|m| m.get("kairos_ingest_lag_messages").copied());
        let now = kairos_model::time::now();
        let mut delays: Vec<f64> = seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|s| s.read_at + 1000 >= now)
            .map(|s| s.delay_ms)
            .collect();
        let p99 = observe::percentiles(&mut delays).map(|p| p.p99);
        let ok = ready && lag.is_some_and(|l| l <= band) && p99.is_none_or(|p| p <= 1000.0);
        if ok {
            if run == 0 {
                steady_from = Some(t);
            }
            run += 1;
            if run >= 5 {
                return (ready_at, steady_from);
            }
        } else {
            run = 0;
        }
    }
    (ready_at, None)
}

fn send(producer: &BaseProducer, topic: &str, key: Option<&str>, payload: &[u8]) -> Result<()> {
    loop {
        let mut record = BaseRecord::<str, [u8]>::to(topic).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e).context("cannot send an injected message"),
        }
    }
}

/// Sends `count` messages that are not JSON (bytes of every value, never an opening brace)
/// to `topic`, spread over [`GARBAGE_SECS`]; returns how many were delivered.
fn send_garbage(producer: &BaseProducer, topic: &str, count: usize, seed: u64) -> Result<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let begun = Instant::now();
    for i in 0..count {
        let due = Duration::from_secs_f64(GARBAGE_SECS * i as f64 / count.max(1) as f64);
        std::thread::sleep(due.saturating_sub(begun.elapsed()));
        let len = rng.random_range(1..200);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.random::<u8>()).collect();
        bytes[0] = 0xff;
        send(producer, topic, None, &bytes)?;
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(120))
        .context("the garbage was not delivered")?;
    Ok(count)
}

/// The end offsets of every output partition.
fn output_ends(brokers: &str, topics: &Topics) -> Result<Vec<i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("cannot create a consumer")?;
    let mut ends = Vec::new();
    for topic in topics.outputs() {
        for p in 0..2 {
            // On a loaded machine one metadata request can time out (seen in a smoke run
            // while a build shared the cores): a few more tries before the run fails.
            let mut tries = 0;
            let high = loop {
                match consumer.fetch_watermarks(topic, p, Duration::from_secs(10)) {
                    Ok((_, high)) => break high,
                    Err(e) if tries < 5 => {
                        tries += 1;
                        log(format!("the end of {topic}/{p}: {e}; asking again ({tries} of 5)"));
                    }
                    Err(e) => return Err(e).with_context(|| format!("the end of {topic}/{p}")),
                }
            };
            ends.push(high);
        }
    }
    Ok(ends)
}

/// One record read back: where it was and what it said.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    /// The Kafka timestamp (ms since the Unix epoch): when it was produced.
    pub timestamp: Option<i64>,
    pub value: String,
}

impl Record {
    /// One line of JSON: where it was, when, and what it said.
    fn to_json(&self, topic: &str) -> String {
        let value: Value = serde_json::from_str(&self.value).unwrap_or_else(|_| Value::String(self.value.clone()));
        serde_json::json!({
            "topic": topic, "partition": self.partition, "offset": self.offset,
            "timestamp": self.timestamp.map(|t| kairos_model::time::format_rfc3339(t.max(0) as u64)),
            "value": value,
        })
        .to_string()
    }
}

/// Every record of `topic` (all `partitions`), to the end each partition had when reading began.
fn read_all(brokers: &str, topic: &str, partitions: i32) -> Result<Vec<Record>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "kairos-loadtest-faults-verifier")
        .set("enable.auto.commit", "false")
        .create()
        .context("cannot create the verifier's consumer")?;
    let mut assignment = TopicPartitionList::new();
    let mut remaining = BTreeMap::new();
    for p in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .with_context(|| format!("the end of {topic}/{p}"))?;
        if high > low {
            assignment.add_partition_offset(topic, p, Offset::Offset(low))?;
            remaining.insert(p, high);
        }
    }
    let mut records = Vec::new();
    if remaining.is_empty() {
        return Ok(records);
    }
    consumer.assign(&assignment)?;
    let mut progress = Instant::now();
    while !remaining.is_empty() {
        if progress.elapsed() > Duration::from_secs(60) {
            bail!(
                "reading {topic} back stalled with {} partitions unread",
                remaining.len()
            );
        }
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        progress = Instant::now();
        let p = message.partition();
        if remaining.get(&p).is_some_and(|high| message.offset() + 1 >= *high) {
            remaining.remove(&p);
        }
        records.push(Record {
            partition: p,
            offset: message.offset(),
            timestamp: message.timestamp().to_millis(),
            value: String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned(),
        });
    }
    Ok(records)
}

/// What the output topics held.
#[derive(Debug, Default)]
pub struct Outputs {
    pub actions: Vec<Record>,
    pub decisions: Vec<Record>,
    pub dead_letters: Vec<Record>,
}

/// What the replay gave: its actions and each subscriber's household.
#[derive(Debug, Default)]
pub struct Replayed {
    pub actions: Vec<Value>,
    /// How many decisions the replay made for each action id (more than one when two
    /// moments share an id: see `verify`).
    pub decisions: HashMap<String, usize>,
    pub households: HashMap<String, String>,
}

fn replay_of(spec: &FaultSpec, events: &Path, out: &Path) -> Result<Replayed> {
    let _ = std::fs::remove_dir_all(out);
    let started = Instant::now();
    let mut command = Command::new(&spec.engine.binary);
    command
        .arg("replay")
        .arg("--events")
        .arg(events)
        .arg("--out")
        .arg(out)
        .arg("--rules")
        .arg(&spec.engine.rules)
        .args(["--workers", &spec.engine.workers.to_string(), "--no-progress"]);
    if !spec.households {
        command.arg("--no-households");
    }
    let output = command.output().context("cannot run kairos replay")?;
    if !output.status.success() {
        bail!(
            "kairos replay failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    log(format!(
        "replay of what was sent: {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let lines = |name: &str| -> Result<Vec<Value>> {
        let path = out.join(name);
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        text.lines()
            .map(|l| serde_json::from_str(l).with_context(|| format!("{} is not JSON Lines", path.display())))
            .collect()
    };
    let households = lines("subscribers.jsonl")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|s| Some((s["msisdn"].as_str()?.to_string(), s["household"].as_str()?.to_string())))
        .collect();
    let mut decisions = HashMap::new();
    for d in lines("decisions.jsonl")? {
        if let Some(id) = d["action_id"].as_str() {
            *decisions.entry(id.to_string()).or_default() += 1;
        }
    }
    Ok(Replayed {
        actions: lines("actions.jsonl")?,
        decisions,
        households,
    })
}

/// The events the engine's log says it applied late (`kairos::late` at debug level).
#[derive(Debug, Default)]
pub struct LateEvents {
    pub events: u64,
    /// By subscriber: the earliest event time (`ts`) of its events applied late.
    pub subscribers: HashMap<String, u64>,
    /// When each was logged (wall clock, ms).
    pub at: Vec<u64>,
}

impl LateEvents {
    /// How many were logged after each kind of fault (`starts`: when each fault began, in
    /// order) and before the next one; "no fault yet" before the first.
    pub fn after_faults(&self, starts: &[(u64, &'static str)]) -> BTreeMap<&'static str, u64> {
        let mut by = BTreeMap::new();
        for at in &self.at {
            let last = starts.iter().rev().find(|(start, _)| start <= at);
            *by.entry(last.map_or("no fault yet", |(_, name)| *name)).or_default() += 1;
        }
        by
    }

    pub fn from_log(text: &str) -> LateEvents {
        let mut late = LateEvents::default();
        for line in text
            .lines()
            .filter(|l| l.contains("kairos::late") && l.contains("late event"))
        {
            let Some(msisdn) = line
                .split("msisdn=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
            else {
                continue;
            };
            let ts = line
                .split(" ts=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0);
            late.events += 1;
            let earliest = late.subscribers.entry(msisdn.to_string()).or_insert(ts);
            *earliest = (*earliest).min(ts);
            if let Some(at) = line
                .split_whitespace()
                .next()
                .and_then(|t| kairos_model::time::parse_rfc3339(t).ok())
            {
                late.at.push(at);
            }
        }
        late
    }
}

/// How far after a late event's own time a decision may still differ because of it, at
/// least: two steps of the household graph (`[households] granularity_ms`, 10 min).
const LATE_REACH_MS: u64 = 20 * 60 * 1000;

/// What [`verify`] compares.
pub struct Inputs<'a> {
    pub outputs: &'a Outputs,
    pub replay: &'a Replayed,
    /// The newest `ts` sent: where the run's event time ends.
    pub newest: u64,
    pub planted: &'a [Moment],
    /// Actions the engine still held for quiet hours at the end.
    pub held: u64,
    pub marketing: &'a [String],
    pub late: &'a LateEvents,
    pub input_topic: &'a str,
    pub garbage_topic: &'a str,
    pub garbage_sent: usize,
    /// The subscriber of the event stamped in 2999, when one was sent.
    pub poison_key: Option<&'a str>,
}

/// How an action of the run differs from the replay's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Difference {
    /// The replay has it, the run does not.
    Missing,
    /// The run has it, the replay does not.
    Extra,
    /// Both have the id, with other content.
    Changed,
}

/// One action (or planted moment) in which the run and the run without faults differ, and
/// whether the engine's lateness explains it.
#[derive(Debug, Clone)]
pub struct Differing {
    pub what: Difference,
    pub action_id: String,
    pub rule: String,
    pub msisdn: String,
    pub moment_ts: String,
    /// The subscriber, or someone in its household, had an event applied late.
    pub explained: bool,
    /// Who of those had late events (at most a few).
    pub late_members: Vec<String>,
}

/// What the verifier found.
#[derive(Debug, Default)]
pub struct Checked {
    pub counts: BTreeMap<String, u64>,
    pub truth: truth::Check,
    pub differences: Vec<Differing>,
    /// Action ids whose action or decision came more than once.
    pub duplicated_ids: BTreeSet<String>,
    pub failures: Vec<String>,
    /// Differences from the replay (and planted moments missed) that no late event explains.
    pub unexplained: Vec<String>,
}

/// The checks of the campaign, over what the output topics held:
/// - every action id at most once across the action topics;
/// - every `sent` decision's action present exactly once, and no action without one;
/// - decisions not duplicated, keyed by `action_id` (the engine makes one decision per
///   action id: the id hashes rule, subscriber, moment time and dedupe key) — and dead
///   letters not duplicated, keyed by their source `(topic, partition, offset)`;
/// - every planted moment decided (the ground truth);
/// - the event stamped 2999 and every garbage message are dead letters, and no action is
///   dated later than an hour past the end of the input;
/// - the actions equal the replay's (those due by the newest event sent), except where the
///   subscriber or its household had an event applied late — counted, never hidden.
pub fn verify(inputs: &Inputs) -> Checked {
    let mut checked = Checked::default();
    let outputs = inputs.outputs;
    let parse = |r: &Record| serde_json::from_str::<Value>(&r.value).ok();

    // Actions: at most once per id.
    let mut actions: BTreeMap<String, (usize, Value)> = BTreeMap::new();
    let mut unreadable = 0;
    for record in &outputs.actions {
        match parse(record).and_then(|v| Some((v["action_id"].as_str()?.to_string(), v))) {
            Some((id, v)) => actions.entry(id).or_insert((0, v)).0 += 1,
            None => unreadable += 1,
        }
    }
    let duplicated: u64 = actions.values().map(|(n, _)| (*n as u64).saturating_sub(1)).sum();

    // Decisions: at most once per action id; each sent one's action there exactly once.
    let mut decisions: BTreeMap<String, (usize, Value)> = BTreeMap::new();
    for record in &outputs.decisions {
        match parse(record).and_then(|v| Some((v["action_id"].as_str()?.to_string(), v))) {
            Some((id, v)) => decisions.entry(id).or_insert((0, v)).0 += 1,
            None => unreadable += 1,
        }
    }
    // The engine makes one decision per moment, and a moment's action id hashes its rule,
    // subscriber, time and dedupe key — so two moments of one rule, subscriber and key at the
    // same millisecond (a roaming arrival in the same country twice within one instant) share
    // an id and give two decisions: the replay has them too. A copy is a duplicate when the
    // run has more of an id than the replay; fewer (but some) means one was skipped as
    // already produced after a restart.
    let in_replay = |id: &str| inputs.replay.decisions.get(id).copied().unwrap_or(0);
    let decisions_duplicated: u64 = decisions
        .iter()
        .map(|(id, (n, _))| (*n as u64).saturating_sub(in_replay(id).max(1) as u64))
        .sum();
    let shared_ids = decisions.keys().filter(|id| in_replay(id) > 1).count() as u64;
    let shared_fewer = decisions
        .iter()
        .filter(|(id, (n, _))| in_replay(id) > 1 && *n < in_replay(id))
        .count() as u64;
    checked.duplicated_ids = actions
        .iter()
        .chain(decisions.iter())
        .filter(|(_, (n, _))| *n > 1)
        .map(|(id, _)| id.clone())
        .collect();
    let sent: BTreeSet<&String> = decisions
        .iter()
        .filter(|(_, (_, v))| v["decision"] == "sent")
        .map(|(id, _)| id)
        .collect();
    let lost: Vec<&String> = sent.iter().copied().filter(|id| !actions.contains_key(*id)).collect();
    let without_decision = actions.keys().filter(|id| !sent.contains(id)).count() as u64;

    // Dead letters: at most once per source position.
    let mut letters: BTreeMap<(String, i64, i64), usize> = BTreeMap::new();
    let mut poison_found = false;
    for record in &outputs.dead_letters {
        let Some(v) = parse(record) else {
            unreadable += 1;
            continue;
        };
        let (Some(topic), Some(partition), Some(offset)) =
            (v["topic"].as_str(), v["partition"].as_i64(), v["offset"].as_i64())
        else {
            unreadable += 1;
            continue;
        };
        *letters.entry((topic.to_string(), partition, offset)).or_default() += 1;
        let input = v["input"].as_str().unwrap_or_default();
        if topic == inputs.input_topic && input.contains("2999-01-01") && v["field"] == "ts" {
            poison_found = true;
        }
    }
    let letters_duplicated: u64 = letters.values().map(|n| (*n as u64).saturating_sub(1)).sum();
    let garbage_letters = letters.keys().filter(|(t, _, _)| t == inputs.garbage_topic).count();

    // Nothing dated after the input's end (the 2999 event moved no time).
    let horizon = inputs.newest + 3_600_000;
    let beyond = actions
        .values()
        .filter(|(_, v)| {
            ["moment_ts", "send_at"].iter().any(|f| {
                v[*f]
                    .as_str()
                    .and_then(|s| kairos_model::time::parse_rfc3339(s).ok())
                    .is_some_and(|t| t > horizon)
            })
        })
        .count() as u64;

    // Lateness: whom it touched (the subscriber, and its household in the replay and in the
    // run's action).
    let mut members: HashMap<&str, Vec<&str>> = HashMap::new();
    for (msisdn, household) in &inputs.replay.households {
        members.entry(household.as_str()).or_default().push(msisdn.as_str());
    }
    // A late event can change what is decided from its own time on (it is applied later than
    // that, at the frontier), never before; a household's view follows its members' events
    // by up to two steps of the graph.
    let explain = |msisdn: &str, moment: u64, households: &[Option<&str>]| -> Vec<String> {
        let mut who: BTreeSet<&str> = BTreeSet::new();
        who.insert(msisdn);
        if let Some(h) = inputs.replay.households.get(msisdn) {
            who.extend(members.get(h.as_str()).into_iter().flatten().copied());
        }
        for h in households.iter().flatten() {
            who.extend(members.get(h).into_iter().flatten().copied());
        }
        who.into_iter()
            .filter(|m| {
                inputs
                    .late
                    .subscribers
                    .get(*m)
                    .is_some_and(|earliest| *earliest <= moment.saturating_add(LATE_REACH_MS))
            })
            .take(5)
            .map(str::to_string)
            .collect()
    };

    // The run against the replay.
    let expected: BTreeMap<String, &Value> = inputs
        .replay
        .actions
        .iter()
        .filter(|a| {
            a["send_at"]
                .as_str()
                .and_then(|s| kairos_model::time::parse_rfc3339(s).ok())
                .is_some_and(|t| t <= inputs.newest)
        })
        .filter_map(|a| Some((a["action_id"].as_str()?.to_string(), a)))
        .collect();
    let field = |v: &Value, f: &str| v[f].as_str().unwrap_or_default().to_string();
    let mut differ = |what: Difference, id: &str, run: Option<&Value>, replay: Option<&Value>| {
        let v = run.or(replay).cloned().unwrap_or_default();
        let msisdn = field(&v, "msisdn");
        let households = [
            run.and_then(|a| a["household"].as_str()),
            replay.and_then(|a| a["household"].as_str()),
        ];
        let moment = v["moment_ts"]
            .as_str()
            .and_then(|t| kairos_model::time::parse_rfc3339(t).ok())
            .unwrap_or(u64::MAX);
        let late_members = explain(&msisdn, moment, &households);
        checked.differences.push(Differing {
            what,
            action_id: id.to_string(),
            rule: field(&v, "rule"),
            moment_ts: field(&v, "moment_ts"),
            msisdn,
            explained: !late_members.is_empty(),
            late_members,
        });
    };
    for (id, want) in &expected {
        match actions.get(id) {
            None => differ(Difference::Missing, id, None, Some(want)),
            Some((_, got)) if got != *want => differ(Difference::Changed, id, Some(got), Some(want)),
            Some(_) => {}
        }
    }
    for (id, (_, got)) in &actions {
        if !expected.contains_key(id) {
            differ(Difference::Extra, id, Some(got), None);
        }
    }

    // The ground truth, with the marketing moments still held for quiet hours allowed for.
    let decided = outputs
        .decisions
        .iter()
        .filter_map(|r| truth::decided_moment(r.value.as_bytes()));
    let mut truth = truth::check(inputs.planted, decided);
    let (waiting, missing): (Vec<_>, Vec<_>) = truth
        .missing
        .drain(..)
        .partition(|m| inputs.marketing.iter().any(|r| r == m.rule));
    truth.missing = missing;
    if waiting.len() as u64 > inputs.held {
        truth.missing.extend(waiting.iter().cloned());
    }
    let late_truth = |m: &Moment| !explain(&m.msisdn, m.at, &[]).is_empty();
    let truth_missing_unexplained = truth.missing.iter().filter(|m| !late_truth(m)).count() as u64;
    let truth_unplanted_unexplained = truth.unexpected.iter().filter(|m| !late_truth(m)).count() as u64;

    let explained = checked.differences.iter().filter(|d| d.explained).count() as u64;
    let unexplained = checked.differences.len() as u64 - explained;
    let count = |what: Difference, explained: bool| {
        checked
            .differences
            .iter()
            .filter(|d| d.what == what && d.explained == explained)
            .count() as u64
    };
    let c = &mut checked.counts;
    for (k, v) in [
        ("actions checked", actions.values().map(|(n, _)| *n as u64).sum::<u64>()),
        ("distinct actions", actions.len() as u64),
        (
            "actions expected (replay, due by the end of the input)",
            expected.len() as u64,
        ),
        ("lost (a sent decision without its action)", lost.len() as u64),
        ("duplicated actions", duplicated),
        ("actions without a sent decision", without_decision),
        ("decisions", outputs.decisions.len() as u64),
        (
            "decisions duplicated (by action id, beyond the replay's own)",
            decisions_duplicated,
        ),
        (
            "action ids the replay also decides more than once (shared by two moments)",
            shared_ids,
        ),
        ("of those, fewer decisions in the run than in the replay", shared_fewer),
        ("dead letters", outputs.dead_letters.len() as u64),
        (
            "dead letters duplicated (by topic, partition, offset)",
            letters_duplicated,
        ),
        ("garbage messages dead-lettered", garbage_letters as u64),
        ("poisoned event dead-lettered", u64::from(poison_found)),
        ("actions dated past the input's end", beyond),
        ("records not readable", unreadable),
        (
            "missing vs replay, explained by lateness",
            count(Difference::Missing, true),
        ),
        ("missing vs replay, not explained", count(Difference::Missing, false)),
        ("extra vs replay, explained by lateness", count(Difference::Extra, true)),
        ("extra vs replay, not explained", count(Difference::Extra, false)),
        (
            "changed vs replay, explained by lateness",
            count(Difference::Changed, true),
        ),
        ("changed vs replay, not explained", count(Difference::Changed, false)),
        ("planted moments missing", truth.missing.len() as u64),
        (
            "planted moments missing, not explained by lateness",
            truth_missing_unexplained,
        ),
        ("moments not planted", truth.unexpected.len() as u64),
        (
            "moments not planted, not explained by lateness",
            truth_unplanted_unexplained,
        ),
        (
            "not yet decided (marketing, held for quiet hours)",
            waiting.len() as u64,
        ),
        ("actions held for quiet hours (engine)", inputs.held),
    ] {
        c.insert(k.into(), v);
    }

    let f = &mut checked.failures;
    if !lost.is_empty() {
        f.push(format!(
            "{} actions lost: sent decisions without their action (first {})",
            lost.len(),
            lost[0]
        ));
    }
    if duplicated > 0 {
        f.push(format!("{duplicated} duplicated actions"));
    }
    if without_decision > 0 {
        f.push(format!("{without_decision} actions without a sent decision"));
    }
    if decisions_duplicated > 0 {
        f.push(format!("{decisions_duplicated} duplicated decisions"));
    }
    if letters_duplicated > 0 {
        f.push(format!("{letters_duplicated} duplicated dead letters"));
    }
    if inputs.poison_key.is_some() && !poison_found {
        f.push("the event stamped 2999 is not among the dead letters".into());
    }
    if garbage_letters != inputs.garbage_sent {
        f.push(format!(
            "{} garbage messages sent, {garbage_letters} dead letters of them",
            inputs.garbage_sent
        ));
    }
    if beyond > 0 {
        f.push(format!("{beyond} actions dated more than an hour past the input's end"));
    }
    if unreadable > 0 {
        f.push(format!("{unreadable} output records are not what their topic holds"));
    }
    let d = &mut checked.unexplained;
    if unexplained > 0 {
        d.push(format!(
            "{unexplained} actions differ from the replay without a late event to explain them (see differences.jsonl)"
        ));
    }
    if truth_missing_unexplained > 0 || truth_unplanted_unexplained > 0 {
        d.push(format!("ground truth: {}", truth.summary()));
    }
    checked.truth = truth;
    checked
}

/// Keeps what the output topics held (the broker's data goes with it), for whoever
/// investigates a failure: one JSON line per record, with its partition, offset and time.
fn save_outputs(dir: &Path, outputs: &Outputs, topics: &Topics) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, topic, records) in [
        ("actions.jsonl", "actions", &outputs.actions),
        ("decisions.jsonl", topics.decisions.as_str(), &outputs.decisions),
        ("dead-letter.jsonl", topics.dead_letter.as_str(), &outputs.dead_letters),
    ] {
        let text: String = records.iter().map(|r| r.to_json(topic) + "\n").collect();
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn write_differences(path: &Path, differences: &[Differing]) -> Result<()> {
    let mut text = String::new();
    for d in differences {
        text.push_str(
            &serde_json::json!({
                "difference": format!("{:?}", d.what).to_lowercase(),
                "action_id": d.action_id,
                "rule": d.rule,
                "msisdn": d.msisdn,
                "moment_ts": d.moment_ts,
                "explained_by_lateness": d.explained,
                "late_members": d.late_members,
            })
            .to_string(),
        );
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The report's notes: the timeline (short), and what differed from the replay, and why.
fn notes(timeline: &[Happened], checked: &Checked, late: &LateEvents) -> Vec<String> {
    let mut notes = Vec::new();
    let mut line = String::from("Timeline (s since the load started): ");
    let shown: Vec<String> = timeline
        .iter()
        .filter(|h| !h.what.starts_with("kill -9"))
        .map(|h| format!("{:.0}: {}", h.t, h.what))
        .collect();
    line.push_str(&shown.join("; "));
    let kills: Vec<String> = timeline
        .iter()
        .filter(|h| h.what.starts_with("kill -9"))
        .map(|h| format!("{:.0}", h.t))
        .collect();
    if !kills.is_empty() {
        line.push_str(&format!("; kill -9 at {}", kills.join(", ")));
    }
    notes.push(line);
    let explained = checked.differences.iter().filter(|d| d.explained).count();
    notes.push(format!(
        "Lateness: the engine logged {} events applied late, for {} subscribers. {} actions differ from \
         the replay of what was sent, {explained} of them for a subscriber (or a member of its household) \
         with a late event no later than 20 min after the action's moment: a late event is applied at \
         the frontier, not at its own time, so from its time on the run may legitimately decide \
         otherwise than the replay. That reading is generous (most subscribers have some late event \
         under the default lateness of 0); a difference without one is a bug. Each difference is in \
         differences.jsonl.",
        late.events,
        late.subscribers.len(),
        checked.differences.len()
    ));
    for d in checked.differences.iter().filter(|d| !d.explained).take(10) {
        notes.push(format!(
            "Not explained: {:?} {} ({}, moment {}).",
            d.what, d.action_id, d.rule, d.moment_ts
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: i64, value: &str) -> Record {
        Record {
            partition: 0,
            offset,
            timestamp: None,
            value: value.to_string(),
        }
    }

    fn action(id: &str, msisdn: &str) -> String {
        format!(
            r#"{{"action_id":"{id}","rule":"roaming-welcome","msisdn":"{msisdn}","moment_ts":"2026-12-01T10:00:00Z","send_at":"2026-12-01T10:00:00Z"}}"#
        )
    }

    fn decision(id: &str, msisdn: &str) -> String {
        format!(
            r#"{{"action_id":"{id}","rule":"roaming-welcome","msisdn":"{msisdn}","moment_ts":"2026-12-01T10:00:00Z","decision":"sent"}}"#
        )
    }

    fn planted() -> &'static [Moment] {
        static PLANTED: std::sync::OnceLock<Vec<Moment>> = std::sync::OnceLock::new();
        PLANTED.get_or_init(|| {
            vec![Moment {
                rule: "roaming-welcome",
                msisdn: "1".into(),
                at: kairos_model::time::parse_rfc3339("2026-12-01T10:00:00Z").unwrap(),
            }]
        })
    }

    fn inputs<'a>(outputs: &'a Outputs, replay: &'a Replayed, late: &'a LateEvents) -> Inputs<'a> {
        Inputs {
            outputs,
            replay,
            newest: kairos_model::time::parse_rfc3339("2026-12-01T11:00:00Z").unwrap(),
            planted: planted(),
            held: 0,
            marketing: &[],
            late,
            input_topic: "in",
            garbage_topic: "garbage",
            garbage_sent: 1,
            poison_key: Some("1"),
        }
    }

    #[test]
    fn a_clean_run_passes_and_every_fault_of_the_outputs_fails_it() {
        let replay = Replayed {
            actions: vec![serde_json::from_str(&action("a", "1")).unwrap()],
            decisions: HashMap::from([("a".to_string(), 1)]),
            households: HashMap::new(),
        };
        let late = LateEvents::default();
        let mut outputs = Outputs {
            actions: vec![record(0, &action("a", "1"))],
            decisions: vec![record(0, &decision("a", "1"))],
            dead_letters: vec![
                record(
                    0,
                    r#"{"topic":"in","partition":1,"offset":7,"error":"x","field":"ts","input":"{\"ts\":\"2999-01-01T00:00:00Z\"}"}"#,
                ),
                record(
                    1,
                    r#"{"topic":"garbage","partition":0,"offset":0,"error":"not JSON","input":"?"}"#,
                ),
            ],
        };
        let ok = verify(&inputs(&outputs, &replay, &late));
        assert!(ok.failures.is_empty(), "{:?}", ok.failures);
        assert_eq!(ok.counts["actions checked"], 1);

        // The same action twice, the same decision twice, a dead letter twice.
        outputs.actions.push(record(1, &action("a", "1")));
        outputs.decisions.push(record(1, &decision("a", "1")));
        outputs.dead_letters.push(outputs.dead_letters[1].clone());
        let bad = verify(&inputs(&outputs, &replay, &late));
        assert_eq!(bad.counts["duplicated actions"], 1);
        assert_eq!(
            bad.counts["decisions duplicated (by action id, beyond the replay's own)"],
            1
        );
        assert_eq!(bad.counts["dead letters duplicated (by topic, partition, offset)"], 1);
        assert_eq!(bad.failures.len(), 3, "{:?}", bad.failures);

        // Two moments sharing an id, decided twice by the replay too: not a duplicate.
        let replay = Replayed {
            decisions: HashMap::from([("a".to_string(), 2)]),
            ..replay
        };
        let shared = verify(&inputs(&outputs, &replay, &late));
        assert_eq!(
            shared.counts["decisions duplicated (by action id, beyond the replay's own)"],
            0
        );
        assert_eq!(
            shared.counts["action ids the replay also decides more than once (shared by two moments)"],
            1
        );
    }

    #[test]
    fn a_lost_action_fails_unless_lateness_explains_the_difference_from_the_replay() {
        let replay = Replayed {
            actions: vec![
                serde_json::from_str(&action("a", "1")).unwrap(),
                serde_json::from_str(&action("b", "2")).unwrap(),
            ],
            decisions: HashMap::new(),
            households: HashMap::from([("2".to_string(), "H".to_string()), ("3".to_string(), "H".to_string())]),
        };
        let outputs = Outputs {
            actions: vec![record(0, &action("a", "1"))],
            decisions: vec![record(0, &decision("a", "1")), record(1, &decision("c", "1"))],
            dead_letters: vec![],
        };
        let late = LateEvents::default();
        let mut i = inputs(&outputs, &replay, &late);
        i.poison_key = None;
        i.garbage_sent = 0;
        let got = verify(&i);
        // "c" was decided sent and is not there: lost. "b" is missing against the replay.
        assert_eq!(got.counts["lost (a sent decision without its action)"], 1);
        assert_eq!(got.counts["missing vs replay, not explained"], 1);
        assert_eq!(got.failures.len(), 1, "{:?}", got.failures);
        assert_eq!(got.unexplained.len(), 1, "{:?}", got.unexplained);

        // A late event of another member of subscriber 2's household explains "b".
        let late = LateEvents::from_log(
            "2026-12-01T10:00:00.000Z DEBUG kairos::late: late event msisdn=3 ts=1796119200000 epoch=1796119200005\n\
             2026-12-01T10:00:00.000Z DEBUG kairos::late: late event msisdn=2 ts=1796130000000 epoch=1796130000005\n\
             2026-12-01T10:00:00.000Z  INFO kairos: something else msisdn=1\n",
        );
        // Subscriber 2's own late event is hours after the moment: it explains nothing.
        assert_eq!((late.events, late.subscribers.len()), (2, 2));
        let starts = [(
            kairos_model::time::parse_rfc3339("2026-12-01T09:00:00Z").unwrap(),
            "a pause",
        )];
        assert_eq!(late.after_faults(&starts), BTreeMap::from([("a pause", 2)]));
        assert_eq!(late.after_faults(&[]), BTreeMap::from([("no fault yet", 2)]));
        let mut i = inputs(&outputs, &replay, &late);
        i.poison_key = None;
        i.garbage_sent = 0;
        let got = verify(&i);
        assert_eq!(got.counts["missing vs replay, explained by lateness"], 1);
        assert_eq!(got.differences[0].late_members, vec!["3".to_string()]);
        assert_eq!(got.failures.len(), 1, "{:?}", got.failures);
        assert!(got.unexplained.is_empty(), "{:?}", got.unexplained);
    }

    #[test]
    fn the_plan_has_every_fault_asked_for_in_an_order_of_the_seed() {
        let spec = FaultSpec {
            command: String::new(),
            engine: EngineSpec {
                binary: PathBuf::new(),
                brokers: String::new(),
                workers: 2,
                rules: PathBuf::new(),
                households: true,
                engine_extra: String::new(),
            },
            broker: BrokerSpec {
                script: PathBuf::new(),
                port: 19392,
                dir: PathBuf::new(),
                keep: false,
            },
            world: WorldSpec {
                subscribers: 1,
                days: 1,
                start: chrono::NaiveDate::from_ymd_opt(2026, 7, 1).unwrap(),
                seed: 1,
                events_per_day: 1,
                travel_rate: 0.0,
                invalid_rate: 0.0,
                duplicate_rate: 0.0,
            },
            households: true,
            partitions: 4,
            out: PathBuf::new(),
            rate: 1.0,
            seed: 7,
            kills: 50,
            short_restarts: 2,
            long_outage_secs: 1.0,
            pauses: 3,
            pause_secs: (1.0, 2.0),
            gap_secs: (1.0, 2.0),
            garbage: 10,
            delivery_timeout_ms: None,
            fail_on_differences: true,
        };
        let a = plan(&spec, &mut ChaCha8Rng::seed_from_u64(7));
        let b = plan(&spec, &mut ChaCha8Rng::seed_from_u64(8));
        assert_eq!(a.len(), 50 + 2 + 3 + 1 + 1 + 1);
        assert_eq!(a.iter().filter(|f| **f == Fault::Kill).count(), 50);
        assert_ne!(a, b);
        assert_eq!(a, plan(&spec, &mut ChaCha8Rng::seed_from_u64(7)));
        assert!(Broker::new(&BrokerSpec {
            port: 19092,
            ..spec.broker.clone()
        })
        .is_err());
        assert!(clock_seed() < 1 << 53);
    }
}
