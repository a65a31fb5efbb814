//! What a load-test run found, as data: written as `report.json`, `report.md` and a chart
//! `report.svg` (throughput, lag and latency over time) into the run's folder.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The machine a run was measured on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_gb: f64,
    pub cpu: String,
    pub kernel: String,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// One second of a live run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the load started.
    pub t: f64,
    /// Events the generator sent in this second (per second).
    pub produced_per_s: f64,
    /// Events the engine read and decoded in this second (per second).
    pub consumed_per_s: f64,
    /// Events sent but not yet read by the engine, at the end of the second.
    pub lag: f64,
    /// Actions that reached the action topics in this second (per second).
    pub actions_per_s: f64,
    /// Event → action latency of the actions of this second (none when there were none).
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    /// The engine's resident memory, MB.
    pub rss_mb: f64,
    /// CPU the engine used in this second, in cores.
    pub engine_cores: f64,
}

/// A phase of a live run at one target rate (or a step of the rate search).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    /// Target input rate, events/s.
    pub target_rate: f64,
    /// From and to (seconds since the load started) of the part measured (after warm-up).
    pub from: f64,
    pub to: f64,
    /// Rate the generator achieved, events/s.
    pub produced_rate: f64,
    /// Rate the engine read, events/s.
    pub consumed_rate: f64,
    /// Lag at the start and at the end of the measured part, events.
    pub lag_start: f64,
    pub lag_end: f64,
    /// Event → action latency of the actions whose moment fell in the measured part.
    pub latency: Option<Percentiles>,
    /// Held: the engine kept up (lag not growing) with p99 ≤ 1 s.
    pub held: bool,
    /// Why not held, or anything worth saying.
    pub note: String,
}

/// Something that happened at an instant of a live run (drawn on the chart).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    pub t: f64,
    pub label: String,
}

/// One `kairos replay` measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplayRun {
    pub subscribers: u64,
    pub events: u64,
    pub workers: usize,
    pub households: bool,
    pub seconds: f64,
    pub events_per_s: f64,
    pub peak_rss_mb: f64,
    pub actions: u64,
    /// Planted moments and how many the replay decided (when checked).
    pub planted: Option<u64>,
    pub found: Option<u64>,
}

/// A whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `replay`, `kafka`, `spike` or `restart`.
    pub scenario: String,
    /// When it started, RFC 3339.
    pub started: String,
    /// The command line that ran it.
    pub command: String,
    pub machine: Machine,
    /// kairos's commit, Kafka's version, rustc, …
    pub versions: BTreeMap<String, String>,
    /// The world and the engine's settings.
    pub config: BTreeMap<String, String>,
    /// The headline numbers (e.g. `max_rate_held`, `recovery_s`), by name.
    pub results: BTreeMap<String, f64>,
    pub phases: Vec<Phase>,
    pub samples: Vec<Sample>,
    pub markers: Vec<Marker>,
    pub replays: Vec<ReplayRun>,
    /// Ground truth: planted moments, found, missing, not planted, duplicate actions.
    pub truth: BTreeMap<String, u64>,
    /// Whether the run passed its checks (truth, no duplicates), and what failed.
    pub passed: bool,
    pub failures: Vec<String>,
}
