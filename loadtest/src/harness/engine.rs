//! The engine under test, as a process: its configuration, start and `kill -9`, its
//! `/metrics` and its resident memory and CPU (from `/proc`). Only 127.0.0.1 is ever used.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::report::Machine;

/// Topic names of one run (unique, so runs never see each other's records).
#[derive(Debug, Clone)]
pub struct Topics {
    pub input: String,
    pub sms: String,
    pub email: String,
    pub push: String,
    pub decisions: String,
    pub dead_letter: String,
}

impl Topics {
    pub fn new(prefix: &str) -> Topics {
        let t = |name: &str| format!("{prefix}.{name}");
        Topics {
            input: t("in"),
            sms: t("actions.sms"),
            email: t("actions.email"),
            push: t("actions.push"),
            decisions: t("decisions"),
            dead_letter: t("dead-letter"),
        }
    }

    pub fn actions(&self) -> [&str; 3] {
        [&self.sms, &self.email, &self.push]
    }

    pub fn outputs(&self) -> [&str; 5] {
        [&self.sms, &self.email, &self.push, &self.decisions, &self.dead_letter]
    }
}

/// How the engine is run.
#[derive(Debug, Clone)]
pub struct EngineSpec {
    pub binary: PathBuf,
    pub brokers: String,
    pub workers: usize,
    pub rules: PathBuf,
    pub households: bool,
    /// Extra `[engine]` lines (e.g. `idle_after_ms = 50`).
    pub engine_extra: String,
}

/// A port on 127.0.0.1 free right now.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Writes `kairos run`'s configuration for `topics` into `dir/kairos.toml`, with its state in
/// `dir/state`; returns the configuration's path and where `/metrics` is served.
pub fn write_config(spec: &EngineSpec, topics: &Topics, dir: &Path) -> Result<(PathBuf, SocketAddr)> {
    let port = free_port()?;
    let path = dir.join("kairos.toml");
    let text = format!(
        "[kafka]\nbrokers = \"{brokers}\"\ninput_topics = [\"{input}\"]\n\
         [topics]\nactions_sms = \"{sms}\"\nactions_email = \"{email}\"\nactions_push = \"{push}\"\n\
         decisions = \"{decisions}\"\ndead_letter = \"{dead}\"\n\
         [engine]\nworkers = {workers}\nrules = \"{rules}\"\n{extra}\n\
         [metrics]\nlisten = \"127.0.0.1:{port}\"\n\
         [state]\ndir = \"{state}\"\n\
         [households]\nenabled = {households}\n",
        brokers = spec.brokers,
        input = topics.input,
        sms = topics.sms,
        email = topics.email,
        push = topics.push,
        decisions = topics.decisions,
        dead = topics.dead_letter,
        workers = spec.workers,
        rules = spec.rules.display(),
        extra = spec.engine_extra,
        state = dir.join("state").display(),
        households = spec.households,
    );
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok((path, SocketAddr::from(([127, 0, 0, 1], port))))
}

/// A running `kairos run`, killed when dropped.
pub struct Engine {
    child: Child,
    pub metrics: SocketAddr,
    started: Instant,
    /// Where its stderr goes: an engine that ends early is explained by its last lines.
    log: PathBuf,
}

impl Engine {
    /// Starts `kairos run --config CONFIG`, appending its log to `log`.
    pub fn start(binary: &Path, config: &Path, metrics: SocketAddr, log: &Path) -> Result<Engine> {
        Engine::start_with_env(binary, config, metrics, log, &[])
    }

    /// [`Engine::start`] with these environment variables set for the engine.
    pub fn start_with_env(
        binary: &Path,
        config: &Path,
        metrics: SocketAddr,
        log: &Path,
        env: &[(&str, &str)],
    ) -> Result<Engine> {
        let log_path = log.to_path_buf();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let child = Command::new(binary)
            .args(["run", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        Ok(Engine {
            child,
            metrics,
            started: Instant::now(),
            log: log_path,
        })
    }

    /// Waits until `/metrics` answers (the engine has loaded its state and owns its
    /// partitions), or the process ends.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Duration> {
        while self.started.elapsed() < timeout {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "kairos run ended before it was ready: {status}; the last lines of {}:\n{}",
                    self.log.display(),
                    last_lines(&self.log, 20)
                );
            }
            if scrape(self.metrics).is_ok_and(|m| m.contains_key(RESTORED)) {
                return Ok(self.started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("kairos run not ready after {timeout:?}")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Resident memory now and at its peak, MB.
    pub fn memory_mb(&self) -> (f64, f64) {
        memory_mb(self.pid())
    }

    /// CPU time used so far (user + system), seconds.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }
}

/// The last `n` lines of a log file (its whole text when shorter), for an error message.
pub fn last_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(unreadable: {e})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Resident memory (VmRSS) and its peak (VmHWM) of process `pid`, MB.
pub fn memory_mb(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time (user + system) of process `pid` so far, seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the name and state.
    (ticks(11) + ticks(12)) / 100.0
}

/// Subscribers restored at start: the engine exports it once it is up.
const RESTORED: &str = "kairos_state_restored_subscribers";

/// The engine's metrics, summed over labels, by name.
pub type Metrics = BTreeMap<String, f64>;

/// Reads `/metrics` (Prometheus text) and sums each metric over its labels.
pub fn scrape(addr: SocketAddr) -> Result<Metrics> {
    Ok(parse_metrics(&scrape_text(addr)?))
}

/// Reads `/metrics` as Prometheus text, labels and all.
pub fn scrape_text(addr: SocketAddr) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    if !text.starts_with("HTTP/1.") || !text.contains(" 200 ") {
        bail!("metrics answered {}", text.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

/// Sums Prometheus text samples by metric name (labels dropped; histogram parts keep their
/// `_sum` / `_count` names).
pub fn parse_metrics(body: &str) -> Metrics {
    let mut metrics = Metrics::new();
    for line in body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = match line.rsplit_once(' ') {
            Some(parts) => parts,
            None => continue,
        };
        let name = series.split('{').next().unwrap_or(series);
        if let Ok(value) = value.parse::<f64>() {
            *metrics.entry(name.to_string()).or_default() += value;
        }
    }
    metrics
}

/// The events the engine has read: valid and invalid.
pub fn events_read(metrics: &Metrics) -> f64 {
    metrics.get("kairos_ingest_events_total").copied().unwrap_or(0.0)
        + metrics
            .get("kairos_ingest_invalid_events_total")
            .copied()
            .unwrap_or(0.0)
}

/// This machine: cores, memory, CPU model, kernel.
pub fn machine() -> Machine {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kb = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".to_string(), |(_, v)| v.trim().to_string());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gb: (memory_kb / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        cpu,
        kernel,
    }
}

/// kairos's commit and the toolchain, as far as they can be learned here.
pub fn versions(binary: &Path) -> BTreeMap<String, String> {
    let run = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let mut versions = BTreeMap::new();
    if let Some(commit) = run("git", &["rev-parse", "--short", "HEAD"]) {
        let dirty = run("git", &["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
        versions.insert(
            "kairos commit".into(),
            if dirty { format!("{commit}+changes") } else { commit },
        );
    }
    if let Some(v) = run(&binary.display().to_string(), &["--version"]) {
        versions.insert("kairos".into(), v);
    }
    if let Some(v) = run("rustc", &["--version"]) {
        versions.insert("rustc".into(), v);
    }
    versions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_over_labels() {
        let body = "# HELP kairos_ingest_events_total Events\n\
                    kairos_ingest_events_total{type=\"usage\"} 10\n\
                    kairos_ingest_events_total{type=\"network\"} 5\n\
                    kairos_ingest_invalid_events_total 2\n\
                    kairos_state_checkpoint_seconds_sum 0.5\n";
        let m = parse_metrics(body);
        assert_eq!(m["kairos_ingest_events_total"], 15.0);
        assert_eq!(events_read(&m), 17.0);
        assert_eq!(m["kairos_state_checkpoint_seconds_sum"], 0.5);
    }

    #[test]
    fn this_process_has_memory_and_cpu() {
        let (rss, peak) = memory_mb(std::process::id());
        assert!(rss > 0.0 && peak >= rss, "{rss} {peak}");
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {}
        assert!(cpu_seconds(std::process::id()) > 0.0);
        assert!(machine().cores >= 1);
    }
}
