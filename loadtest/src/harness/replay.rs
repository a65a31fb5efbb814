//! The `replay` scenario: `kairos replay` of generated worlds, timed, with its peak resident
//! memory (VmHWM, polled), and its decisions checked against the world's planted moments.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::report::{ReplayRun, Report};
use crate::truth::{self, Moment};
use crate::world::WorldSpec;

use super::engine;

/// What to replay.
pub struct ReplaySpec {
    pub command: String,
    pub binary: PathBuf,
    pub rules: PathBuf,
    pub worlds: Vec<WorldSpec>,
    pub workers: Vec<usize>,
    pub households: Vec<bool>,
    /// Where generated worlds are kept between runs (they are big and deterministic).
    pub cache: PathBuf,
    pub out: PathBuf,
}

/// The world file of `spec` and its planted moments, generated unless already in `cache`.
pub fn world_file(spec: &WorldSpec, cache: &Path) -> Result<(PathBuf, Vec<Moment>)> {
    std::fs::create_dir_all(cache).with_context(|| format!("cannot create {}", cache.display()))?;
    let name = format!(
        "world-{}s-{}d-{}e-seed{}{}",
        spec.subscribers,
        spec.days,
        spec.events_per_day,
        spec.seed,
        if spec.duplicate_rate > 0.0 {
            format!("-dup{}", spec.duplicate_rate)
        } else {
            String::new()
        }
    );
    let events = cache.join(format!("{name}.jsonl"));
    let moments = cache.join(format!("{name}.moments.jsonl"));
    if !(events.exists() && moments.exists()) {
        // In a process of its own: a big world's day is freed with it, not kept by this
        // process's allocator through the replays (7.6 GB for a million subscribers).
        let started = Instant::now();
        let partial = cache.join(format!("{name}.partial.jsonl"));
        let status = Command::new(std::env::current_exe()?)
            .arg("generate")
            .arg("--out")
            .arg(&partial)
            .arg("--moments")
            .arg(&moments)
            .args(["--subscribers", &spec.subscribers.to_string()])
            .args(["--days", &spec.days.to_string()])
            .args(["--start", &spec.start.to_string()])
            .args(["--seed", &spec.seed.to_string()])
            .args(["--events-per-day", &spec.events_per_day.to_string()])
            .args(["--travel-rate", &spec.travel_rate.to_string()])
            .args(["--invalid-rate", &spec.invalid_rate.to_string()])
            .args(["--duplicate-rate", &spec.duplicate_rate.to_string()])
            .arg("--no-progress")
            .stderr(Stdio::null())
            .status()
            .context("cannot run the generator")?;
        if !status.success() {
            bail!("generating {} failed ({status})", events.display());
        }
        std::fs::rename(&partial, &events)?;
        eprintln!(
            "kairos-loadtest: generated {} ({:.1} s)",
            events.display(),
            started.elapsed().as_secs_f64()
        );
    }
    let planted = BufReader::new(std::fs::File::open(&moments)?)
        .lines()
        .map(|l| truth::decided_moment(l?.as_bytes()).context("a malformed moments file"))
        .collect::<Result<Vec<_>>>()?;
    Ok((events, planted))
}

/// Runs `kairos replay` once, polling its peak memory: its seconds and peak RSS in MB.
pub fn replay_once(
    binary: &Path,
    rules: &Path,
    events: &Path,
    out: &Path,
    workers: usize,
    households: bool,
) -> Result<(f64, f64)> {
    let _ = std::fs::remove_dir_all(out);
    let mut command = Command::new(binary);
    command
        .args(["replay", "--events"])
        .arg(events)
        .arg("--out")
        .arg(out)
        .arg("--rules")
        .arg(rules)
        .args(["--workers", &workers.to_string()])
        // Its stderr is read only at the end: progress lines would fill the pipe.
        .arg("--no-progress")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if !households {
        command.arg("--no-households");
    }
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let mut peak = 0.0f64;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        peak = peak.max(engine::memory_mb(child.id()).1);
        std::thread::sleep(Duration::from_millis(50));
    };
    let seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        bail!("kairos replay failed ({status}): {err}");
    }
    Ok((seconds, peak))
}

/// Runs every combination and writes the report.
pub fn run(spec: &ReplaySpec) -> Result<Report> {
    std::fs::create_dir_all(&spec.out)?;
    let mut report = Report {
        scenario: "replay".into(),
        started: kairos_model::time::format_rfc3339(kairos_model::time::now()),
        command: spec.command.clone(),
        machine: engine::machine(),
        versions: engine::versions(&spec.binary),
        ..Report::default()
    };
    report.config.insert("rules".into(), spec.rules.display().to_string());
    for world in &spec.worlds {
        let (events, planted) = world_file(world, &spec.cache)?;
        report.config.insert(
            format!("world of {} subscribers", world.subscribers),
            format!(
                "{} day(s), {} events per subscriber per day, seed {}: {}",
                world.days,
                world.events_per_day,
                world.seed,
                events.display()
            ),
        );
        for &households in &spec.households {
            for &workers in &spec.workers {
                let out = spec.out.join(format!(
                    "replay-{}s-{}w-{}",
                    world.subscribers,
                    workers,
                    if households { "households" } else { "no-households" }
                ));
                let (seconds, peak) = replay_once(&spec.binary, &spec.rules, &events, &out, workers, households)?;
                let summary: serde_json::Value = serde_json::from_str(
                    &std::fs::read_to_string(out.join("summary.json")).context("the replay wrote no summary")?,
                )?;
                let n = |k: &str| summary[k].as_u64().unwrap_or(0);
                let read = n("events_valid") + n("events_invalid");
                let actions: u64 = summary["actions_by_rule"]
                    .as_object()
                    .map_or(0, |o| o.values().filter_map(|v| v.as_u64()).sum());
                let decided = BufReader::new(std::fs::File::open(out.join("decisions.jsonl"))?)
                    .lines()
                    .map_while(Result::ok)
                    .filter_map(|l| truth::decided_moment(l.as_bytes()));
                let check = truth::check(&planted, decided);
                if !check.passed() {
                    report.failures.push(format!(
                        "{} subscribers, {workers} worker(s): {}",
                        world.subscribers,
                        check.summary()
                    ));
                }
                let run = ReplayRun {
                    subscribers: world.subscribers,
                    events: read,
                    workers,
                    households,
                    seconds,
                    events_per_s: read as f64 / seconds,
                    peak_rss_mb: peak.round(),
                    actions,
                    planted: Some(check.planted as u64),
                    found: Some(check.found as u64),
                };
                eprintln!(
                    "kairos-loadtest: replay {} subscribers, {workers} worker(s), households {households}: {read} events in {seconds:.1} s = {:.0} events/s, peak RSS {:.0} MB, {actions} actions, moments {}/{}",
                    world.subscribers, run.events_per_s, run.peak_rss_mb, check.found, check.planted
                );
                report.replays.push(run);
                // Keep the outputs small: the report has what matters.
                let _ = std::fs::remove_dir_all(&out);
            }
        }
    }
    report.passed = report.failures.is_empty();
    super::write(&report, &spec.out)?;
    Ok(report)
}
