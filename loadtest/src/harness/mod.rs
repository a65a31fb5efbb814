//! The load harness: `kairos run` against the local broker fed by the generator at a
//! schedule of rates (the `kafka` rate search, `spike`, `restart`), and `kairos replay` of
//! generated files (`replay`). Every run checks what the engine decided against the world's
//! ground truth and writes a report (`report.json`, `report.md`, `report.svg`).

pub mod churn_eval;
pub mod engine;
pub mod faults;
pub mod feed;
pub mod households_eval;
pub mod memory;
pub mod observe;
pub mod replay;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

use crate::report::{Marker, Percentiles, Phase, Report, Sample};
use crate::truth;
use crate::world::WorldSpec;
use engine::{events_read, scrape, Engine, EngineSpec, Topics};
use feed::{Feed, FeedCounters, Step, World};
use observe::Seen;

/// A live run: the world, the engine, the schedule and what to measure.
pub struct LiveSpec {
    pub scenario: String,
    pub command: String,
    pub engine: EngineSpec,
    pub world: WorldSpec,
    pub households: bool,
    pub partitions: i32,
    pub out: PathBuf,
    pub schedule: Vec<Step>,
    /// Seconds of each step not measured (warm-up).
    pub warmup: f64,
    /// `kill -9` the engine this many seconds into the load, and start it again at once.
    pub kill_at: Option<f64>,
    /// The latency target: p99 at most this (ms).
    pub max_p99_ms: f64,
    /// Stop after the first step not held (the rate search).
    pub stop_when_not_held: bool,
}

/// The cumulative counts at one tick of the sampler.
#[derive(Debug, Clone, Copy, Default)]
struct Tick {
    t: f64,
    sent: f64,
    consumed: f64,
    /// Events in Kafka the engine has not read: its own partition lag (librdkafka's view,
    /// refreshed every second) when it is up; while it is down, the lag before plus what was
    /// sent since.
    lag: f64,
    rss_mb: f64,
    cpu: f64,
    up: bool,
}

/// The engine's partition lag, when it reports one.
fn engine_lag(metrics: &engine::Metrics) -> Option<f64> {
    metrics.get("kairos_ingest_lag_messages").copied()
}

/// Creates `names` on the broker with `partitions` partitions each.
pub fn create_topics(brokers: &str, names: &[&str], partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("cannot create a Kafka admin client")?;
    let new: Vec<NewTopic> = names
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in runtime
        .block_on(admin.create_topics(&new, &options))
        .with_context(|| format!("cannot create topics on {brokers}"))?
    {
        result.map_err(|(topic, e)| anyhow::anyhow!("cannot create topic {topic}: {e}"))?;
    }
    Ok(())
}

fn log(message: impl AsRef<str>) {
    eprintln!("kairos-loadtest: {}", message.as_ref());
}

/// Runs a live scenario and returns its report (also written into `spec.out`).
pub fn run_live(spec: &LiveSpec) -> Result<Report> {
    std::fs::create_dir_all(&spec.out).with_context(|| format!("cannot create {}", spec.out.display()))?;
    let prefix = format!(
        "load-{}-{}-{}",
        spec.scenario,
        std::process::id(),
        kairos_model::time::now()
    );
    let topics = Topics::new(&prefix);
    let brokers = spec.engine.brokers.clone();
    create_topics(&brokers, &[&topics.input], spec.partitions)?;
    create_topics(&brokers, &topics.outputs(), 2)?;

    let generated = Instant::now();
    let world = Arc::new(World::generate(&spec.world, spec.households));
    log(format!(
        "world of {} subscribers: {} customer records, {} activity events per round ({:.1} s)",
        spec.world.subscribers,
        world.customers(),
        world.activity(),
        generated.elapsed().as_secs_f64()
    ));

    let (config, metrics) = engine::write_config(&spec.engine, &topics, &spec.out)?;
    let log_path = spec.out.join("kairos.log");
    let _ = std::fs::remove_file(&log_path);
    let _ = std::fs::remove_dir_all(spec.out.join("state"));
    let mut engine = Engine::start(&spec.engine.binary, &config, metrics, &log_path)?;
    let ready = engine.wait_ready(Duration::from_secs(120))?;
    log(format!("engine ready in {:.2} s", ready.as_secs_f64()));

    // The customer records first, read by the engine before the clock starts.
    let counters = Arc::new(FeedCounters::default());
    let mut feed = Feed::new(&brokers, &topics.input, Arc::clone(&world))?;
    let customers = feed.send_customers(&counters)? as f64;
    let loading = Instant::now();
    while scrape(metrics).map(|m| events_read(&m)).unwrap_or(0.0) < customers {
        if loading.elapsed() > Duration::from_secs(600) || !engine.running() {
            bail!("the engine did not read the {customers} customer records");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    log(format!(
        "{customers} customer records read in {:.1} s",
        loading.elapsed().as_secs_f64()
    ));

    // The action watcher, then the load.
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let consumer = observe::reader(&brokers, &topics.actions(), 2)?;
        let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
        std::thread::spawn(move || observe::watch_actions(consumer, seen, stop))
    };
    let t0_ms = kairos_model::time::now();
    let t0 = Instant::now();
    let producer = {
        let counters = Arc::clone(&counters);
        let schedule = spec.schedule.clone();
        std::thread::spawn(move || -> Result<Feed> {
            feed.run(&schedule, &counters)?;
            Ok(feed)
        })
    };

    let mut ticks = vec![Tick {
        t: 0.0,
        sent: customers,
        consumed: customers,
        up: true,
        ..Tick::default()
    }];
    let mut markers = Vec::new();
    let mut previous_read = customers;
    let mut consumed = customers;
    let mut killed = false;
    let mut restarted_at: Option<f64> = None;
    let mut processing_again: Option<f64> = None;
    let boundaries: Vec<f64> = spec
        .schedule
        .iter()
        .scan(0.0, |end, s| {
            *end += s.secs;
            Some(*end)
        })
        .collect();
    let mut judged = 0;
    let mut stopped_early = None;
    let mut tick_at = t0;
    loop {
        tick_at += Duration::from_secs(1);
        std::thread::sleep(tick_at.saturating_duration_since(Instant::now()));
        let t = t0.elapsed().as_secs_f64();
        if let Some(kill_at) = spec.kill_at.filter(|k| !killed && t >= *k) {
            engine.kill();
            killed = true;
            markers.push(Marker {
                t: kill_at.max(t - 1.0),
                label: "kill -9".into(),
            });
            log(format!("engine killed at {t:.1} s"));
            engine = Engine::start(&spec.engine.binary, &config, metrics, &log_path)?;
            previous_read = 0.0;
            let ready = engine.wait_ready(Duration::from_secs(300))?;
            let back = t0.elapsed().as_secs_f64();
            restarted_at = Some(back);
            markers.push(Marker {
                t: back,
                label: format!("restarted ({:.1} s)", ready.as_secs_f64()),
            });
            log(format!("engine restarted, ready after {:.2} s", ready.as_secs_f64()));
            tick_at = Instant::now();
        }
        let scraped = scrape(metrics).ok();
        let up = scraped.is_some();
        let sent_now = counters.sent.load(Ordering::Relaxed) as f64;
        let before = ticks.last().copied().unwrap_or_default();
        let lag = match scraped.as_ref().and_then(engine_lag) {
            Some(lag) => lag,
            None if up => sent_now - consumed,
            None => before.lag + (sent_now - before.sent),
        };
        if let Some(m) = &scraped {
            let read = events_read(m);
            let delta = if read >= previous_read {
                read - previous_read
            } else {
                read
            };
            if restarted_at.is_some() && processing_again.is_none() && read > 0.0 {
                processing_again = Some(t);
            }
            previous_read = read;
            consumed += delta;
        }
        let (rss_mb, _) = engine.memory_mb();
        ticks.push(Tick {
            t,
            sent: sent_now,
            consumed,
            lag,
            rss_mb,
            cpu: engine.cpu_seconds(),
            up,
        });
        // The rate search: judge each step a few seconds after it ends.
        if spec.stop_when_not_held && judged < boundaries.len() && t >= boundaries[judged] + 3.0 {
            let phase = judge(
                spec,
                judged,
                &ticks,
                &seen.lock().unwrap_or_else(|p| p.into_inner()),
                t0_ms,
            );
            log(format!(
                "step {} at {:.0}/s: consumed {:.0}/s, lag {:.0} → {:.0}, p99 {} → {}",
                phase.name,
                phase.target_rate,
                phase.consumed_rate,
                phase.lag_start,
                phase.lag_end,
                phase
                    .latency
                    .as_ref()
                    .map_or("-".into(), |l| format!("{:.0} ms", l.p99)),
                if phase.held { "held" } else { "not held" }
            ));
            judged += 1;
            if !phase.held && judged < boundaries.len() {
                counters.done.store(true, Ordering::Relaxed);
                stopped_early = Some(judged);
            }
        }
        if counters.done.load(Ordering::Relaxed) && producer.is_finished() {
            break;
        }
    }
    let feed = producer
        .join()
        .map_err(|_| anyhow::anyhow!("the producer panicked"))??;
    let sent = counters.sent.load(Ordering::Relaxed) as f64;

    // Drain: wait until the engine has read everything sent (by its count, or — across a
    // restart, when some reads were counted by neither process — by its partition lag).
    let draining = Instant::now();
    let mut caught_up = 0;
    while consumed < sent && caught_up < 3 && draining.elapsed() < Duration::from_secs(600) {
        std::thread::sleep(Duration::from_millis(500));
        if let Ok(m) = scrape(metrics) {
            let read = events_read(&m);
            consumed += if read >= previous_read {
                read - previous_read
            } else {
                read
            };
            previous_read = read;
            caught_up = if engine_lag(&m) == Some(0.0) { caught_up + 1 } else { 0 };
        }
    }
    log(format!(
        "{sent} events sent, the engine read {consumed} ({:.1} s to drain)",
        draining.elapsed().as_secs_f64()
    ));
    // Let the last instants close (idle partitions) and their outputs land.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let outputs = observe::read_outputs(
        &brokers,
        &topics.decisions,
        &topics.actions(),
        2,
        Duration::from_secs(5),
    )?;
    let (_, peak_mb) = engine.memory_mb();
    let held = scrape(metrics)
        .ok()
        .and_then(|m| m.get("kairos_policy_held_actions").copied())
        .unwrap_or(0.0) as u64;
    engine.kill();
    let planted = feed.truth();
    let mut check = truth::check(&planted, outputs.decided.iter().cloned());
    let marketing = marketing_rules(&spec.engine.rules)?;
    // A marketing action held for quiet hours is decided when they end — after the run, when
    // its moment fell in the night of the subscriber's time zone. Those may be missing, as
    // many as the engine says it holds; every other planted moment must be decided.
    let (waiting, missing): (Vec<_>, Vec<_>) = check
        .missing
        .drain(..)
        .partition(|m| marketing.iter().any(|r| r == m.rule));
    check.missing = missing;
    if waiting.len() as u64 > held {
        check.missing.extend(waiting.iter().cloned());
    }
    log(format!(
        "{}; {} marketing moments not yet decided, {held} actions held for quiet hours",
        check.summary(),
        waiting.len()
    ));

    // The report.
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()));
    let steps = stopped_early.unwrap_or(spec.schedule.len());
    let phases: Vec<Phase> = (0..steps).map(|i| judge(spec, i, &ticks, &seen, t0_ms)).collect();
    let samples = samples(&ticks, &seen, t0_ms);
    let mut report = Report {
        scenario: spec.scenario.clone(),
        started: kairos_model::time::format_rfc3339(t0_ms),
        command: spec.command.clone(),
        machine: engine::machine(),
        versions: engine::versions(&spec.engine.binary),
        ..Report::default()
    };
    for (k, v) in [
        ("subscribers", spec.world.subscribers.to_string()),
        ("events per subscriber per day", spec.world.events_per_day.to_string()),
        ("seed", spec.world.seed.to_string()),
        ("duplicated events (share)", spec.world.duplicate_rate.to_string()),
        ("households", spec.households.to_string()),
        ("workers", spec.engine.workers.to_string()),
        ("rules", spec.engine.rules.display().to_string()),
        ("input partitions", spec.partitions.to_string()),
        ("warm-up per step (s)", spec.warmup.to_string()),
        ("events per round of the world", world.activity().to_string()),
    ] {
        report.config.insert(k.into(), v);
    }
    let mut all: Vec<f64> = seen.iter().map(|s| s.delay_ms).collect();
    if let Some(all) = observe::percentiles(&mut all) {
        report.results.insert("actions timed".into(), all.count as f64);
    }
    report.results.insert("events sent".into(), sent);
    report.results.insert("engine peak RSS (MB)".into(), peak_mb.round());
    report.results.insert(
        "generator behind schedule at most (ms)".into(),
        counters.behind_us.load(Ordering::Relaxed) as f64 / 1000.0,
    );
    if let Some(best) = phases
        .iter()
        .filter(|p| p.held)
        .max_by(|a, b| a.target_rate.total_cmp(&b.target_rate))
    {
        report
            .results
            .insert("max rate held (events/s)".into(), best.target_rate);
        if let Some(l) = &best.latency {
            for (name, v) in [
                ("p50", l.p50),
                ("p90", l.p90),
                ("p99", l.p99),
                ("p99.9", l.p999),
                ("max", l.max),
            ] {
                report
                    .results
                    .insert(format!("latency {name} at max rate held (ms)"), v);
            }
        }
    }
    if let Some(kill_at) = spec.kill_at {
        let back = restarted_at.unwrap_or(kill_at);
        report
            .results
            .insert("restart: ready after kill (s)".into(), back - kill_at);
        if let Some(again) = processing_again {
            report.results.insert(
                "restart: events read again after kill (s, 1 s resolution)".into(),
                again - kill_at,
            );
        }
        // The first action of a moment after the kill, as it reached its topic.
        let kill_ms = t0_ms + (kill_at * 1000.0) as u64;
        if let Some(first) = seen.iter().filter(|s| s.moment > kill_ms).map(|s| s.read_at).min() {
            report.results.insert(
                "restart: first new action after kill (s)".into(),
                first.saturating_sub(kill_ms) as f64 / 1000.0,
            );
        }
        if let Some(r) = recovery(&ticks, &samples, spec, kill_at, 0) {
            report.results.insert("restart: recovered after kill (s)".into(), r);
        } else {
            report
                .failures
                .push("the engine did not recover from the restart".into());
        }
    }
    if spec.stop_when_not_held {
        // The rate search: where each step starts.
        let mut start = 0.0;
        for step in spec.schedule.iter().take(steps) {
            markers.push(Marker {
                t: start,
                label: step.name.clone(),
            });
            start += step.secs;
        }
    }
    if spec.scenario == "spike" && spec.schedule.len() >= 3 {
        let end = spec.schedule[0].secs + spec.schedule[1].secs;
        markers.push(Marker {
            t: spec.schedule[0].secs,
            label: "spike".into(),
        });
        markers.push(Marker {
            t: end,
            label: "spike ends".into(),
        });
        match recovery(&ticks, &samples, spec, end, 0) {
            Some(r) => {
                report.results.insert("spike: recovered after its end (s)".into(), r);
            }
            None => report.failures.push("the engine did not recover from the spike".into()),
        }
    }
    report.truth.insert("planted moments".into(), check.planted as u64);
    report.truth.insert("found".into(), check.found as u64);
    report.truth.insert("missing".into(), check.missing.len() as u64);
    report.truth.insert("not planted".into(), check.unexpected.len() as u64);
    report.truth.insert(
        "not yet decided (marketing, held for quiet hours)".into(),
        waiting.len() as u64,
    );
    report
        .truth
        .insert("actions held for quiet hours (engine)".into(), held);
    report.truth.insert("decisions".into(), outputs.decisions);
    report.truth.insert("actions".into(), outputs.actions);
    report
        .truth
        .insert("duplicate actions".into(), outputs.duplicate_actions);
    report
        .truth
        .insert("duplicate decisions".into(), outputs.duplicate_decisions);
    if !check.passed() {
        report.failures.push(format!("ground truth: {}", check.summary()));
    }
    if outputs.duplicate_actions > 0 || outputs.duplicate_decisions > 0 {
        report.failures.push(format!(
            "{} duplicate actions, {} duplicate decisions",
            outputs.duplicate_actions, outputs.duplicate_decisions
        ));
    }
    if consumed < sent && caught_up < 3 {
        report
            .failures
            .push(format!("the engine read {consumed} of {sent} events"));
    }
    report.passed = report.failures.is_empty();
    report.phases = phases;
    report.samples = samples;
    report.markers = markers;
    write(&report, &spec.out)?;
    Ok(report)
}

/// The measured part of step `i`: from its warm-up's end to its end.
fn judge(spec: &LiveSpec, i: usize, ticks: &[Tick], seen: &[Seen], t0_ms: u64) -> Phase {
    let start: f64 = spec.schedule[..i].iter().map(|s| s.secs).sum();
    let step = &spec.schedule[i];
    let (from, to) = (start + spec.warmup.min(step.secs / 2.0), start + step.secs);
    let at = |t: f64| {
        ticks
            .iter()
            .min_by(|a, b| (a.t - t).abs().total_cmp(&(b.t - t).abs()))
            .copied()
            .unwrap_or_default()
    };
    let (a, b) = (at(from), at(to));
    let span = (b.t - a.t).max(1e-9);
    let mut delays: Vec<f64> = seen
        .iter()
        .filter(|s| s.moment >= t0_ms + (from * 1000.0) as u64 && s.moment < t0_ms + (to * 1000.0) as u64)
        .map(|s| s.delay_ms)
        .collect();
    let latency = observe::percentiles(&mut delays);
    let produced_rate = (b.sent - a.sent) / span;
    let consumed_rate = (b.consumed - a.consumed) / span;
    let (lag_start, lag_end) = (a.lag, b.lag);
    let mut notes = Vec::new();
    if produced_rate < 0.95 * step.rate {
        notes.push(format!("the generator sent only {produced_rate:.0}/s"));
    }
    // Kept up: the lag did not grow by more than a quarter second of input over the window
    // (the engine's lag is sampled once a second, so less would be noise).
    if lag_end - lag_start > (0.25 * step.rate).max(5000.0) {
        notes.push(format!("lag grew by {:.0} events", lag_end - lag_start));
    }
    match &latency {
        Some(l) if l.p99 > spec.max_p99_ms => notes.push(format!("p99 {:.0} ms", l.p99)),
        None => notes.push("no actions timed".into()),
        _ => {}
    }
    Phase {
        name: step.name.clone(),
        target_rate: step.rate,
        from,
        to,
        produced_rate,
        consumed_rate,
        lag_start,
        lag_end,
        held: notes.is_empty(),
        latency,
        note: notes.join("; "),
    }
}

/// One sample per tick; latency by the second the moment happened in.
fn samples(ticks: &[Tick], seen: &[Seen], t0_ms: u64) -> Vec<Sample> {
    let seconds = ticks.last().map_or(0, |t| t.t.ceil() as usize) + 1;
    let mut by_second: Vec<Vec<f64>> = vec![Vec::new(); seconds];
    for s in seen {
        let second = (s.moment.saturating_sub(t0_ms) / 1000) as usize;
        if let Some(bucket) = by_second.get_mut(second) {
            bucket.push(s.delay_ms);
        }
    }
    ticks
        .windows(2)
        .map(|w| {
            let (a, b) = (w[0], w[1]);
            let span = (b.t - a.t).max(1e-9);
            let second = a.t.floor() as usize;
            let mut delays = by_second.get(second).cloned().unwrap_or_default();
            let p = observe::percentiles(&mut delays);
            Sample {
                t: b.t,
                produced_per_s: (b.sent - a.sent) / span,
                consumed_per_s: (b.consumed - a.consumed) / span,
                lag: b.lag,
                actions_per_s: p.as_ref().map_or(0.0, |p| p.count as f64),
                latency_p50_ms: p.as_ref().map(|p| p.p50),
                latency_p99_ms: p.as_ref().map(|p: &Percentiles| p.p99),
                rss_mb: b.rss_mb,
                engine_cores: if a.up && b.up {
                    ((b.cpu - a.cpu) / span).max(0.0)
                } else {
                    0.0
                },
            }
        })
        .collect()
}

/// Seconds from `since` until the run is back to steady: lag within the band of the
/// undisturbed part of step `base` and each second's p99 within the target, for 5 seconds in a
/// row.
fn recovery(ticks: &[Tick], samples: &[Sample], spec: &LiveSpec, since: f64, base: usize) -> Option<f64> {
    let base_from = spec.warmup.min(spec.schedule[base].secs / 2.0);
    let base_to = spec.schedule[base].secs;
    let base_lag = ticks
        .iter()
        .filter(|t| t.t >= base_from && t.t <= base_to)
        .map(|t| t.lag)
        .fold(0.0, f64::max);
    let band = (2.0 * base_lag).max(0.25 * spec.schedule[base].rate);
    let ok = |s: &Sample| s.lag <= band && s.latency_p99_ms.is_none_or(|p| p <= spec.max_p99_ms);
    let after: Vec<&Sample> = samples.iter().filter(|s| s.t > since).collect();
    (0..after.len())
        .find(|&i| after.len() >= i + 5 && after[i..i + 5].iter().all(|s| ok(s)))
        .map(|i| (after[i].t - since).max(0.0))
}

/// The ids of the rules in `dir` whose actions are marketing (a rule without `class` is), so
/// may wait for quiet hours.
pub(crate) fn marketing_rules(dir: &std::path::Path) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_none_or(|x| x != "toml") || path.file_name().is_some_and(|n| n == "policy.toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let rule: toml::Table = text
            .parse()
            .with_context(|| format!("{} is not a rule file", path.display()))?;
        let class = rule.get("class").and_then(|c| c.as_str()).unwrap_or("marketing");
        if let (Some(id), "marketing") = (rule.get("id").and_then(|i| i.as_str()), class) {
            ids.push(id.to_string());
        }
    }
    Ok(ids)
}

/// Writes `report.json`, `report.md` and `report.svg` into `out`.
pub fn write(report: &Report, out: &std::path::Path) -> Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    for (name, text) in [
        ("report.json", json),
        ("report.md", crate::report::markdown(report)),
        ("report.svg", crate::report::svg(report)),
    ] {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    log(format!("report → {}", out.join("report.md").display()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_marketing_rules_are_read_from_their_files() {
        let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
        let mut marketing = marketing_rules(&rules).unwrap();
        marketing.sort();
        assert!(marketing.contains(&"handset-upgrade".to_string()), "{marketing:?}");
        assert!(marketing.contains(&"family-plan".to_string()), "{marketing:?}");
        for other in ["roaming-welcome", "data-pack-80", "data-pack-100"] {
            assert!(!marketing.contains(&other.to_string()), "{marketing:?}");
        }
    }
}
