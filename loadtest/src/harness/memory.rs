//! The `memory` scenario: where a replay's bytes are. One `kairos replay` of a generated world
//! for its peak resident memory (VmHWM, polled), then the same replay under heaptrack, whose
//! heap at its peak is cut into the engine's components by the frames of each allocation's
//! stack: usage windows, contact history, the rest of each subscriber's state, household
//! evidence, the household graph's arrangements, timely's channels, decoding, the replay's
//! collected outputs, CEL, and what is left.
//!
//! heaptrack sees `malloc`: the binary it traces must run on the system allocator, not the
//! mimalloc global allocator of the default build (the scenario refuses a heap far below the
//! RSS, which is what a mimalloc binary shows). The peak RSS is the default build's.
//!
//! A stack is read from its allocation upwards and given to the first component one of its
//! frames names, so an allocation made by a `Vec` inside a usage window counts as the window's,
//! and one made by differential's spine inside the household graph as the arrangement's.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::report::Machine;
use crate::world::WorldSpec;

use super::{engine, replay};

/// What to measure.
pub struct MemorySpec {
    pub command: String,
    /// The kairos whose peak RSS is measured (the default build, on mimalloc).
    pub binary: PathBuf,
    /// The kairos traced under heaptrack: the same code on the system allocator.
    pub traced_binary: PathBuf,
    pub rules: PathBuf,
    pub world: WorldSpec,
    pub workers: usize,
    pub households: bool,
    pub cache: PathBuf,
    pub out: PathBuf,
    /// The `heaptrack` program (its `heaptrack_print` is looked for beside it).
    pub heaptrack: PathBuf,
}

/// One component's bytes at the heap's peak.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Component {
    pub name: String,
    pub bytes: u64,
    pub bytes_per_subscriber: f64,
    /// Its largest stacks, each named by its first frame that decided it (or its allocation).
    pub top: Vec<(String, u64)>,
}

/// The scenario's report.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    pub command: String,
    pub started: String,
    pub machine: Machine,
    pub versions: BTreeMap<String, String>,
    pub subscribers: u64,
    pub days: u32,
    pub events: u64,
    pub workers: usize,
    pub households: bool,
    /// The plain replay: seconds and peak resident memory.
    pub seconds: f64,
    pub peak_rss_mb: f64,
    pub peak_rss_bytes_per_subscriber: f64,
    /// The heap at its peak under heaptrack, the sum of the components.
    pub heap_peak_bytes: u64,
    pub heap_peak_bytes_per_subscriber: f64,
    pub components: Vec<Component>,
}

/// Components, in the order a frame is tried against them: (name, substrings of a frame).
/// The first frame from the allocation up that contains one of a component's substrings
/// decides; a frame is tried against every component before the next frame is.
pub const COMPONENTS: &[(&str, &[&str])] = &[
    (
        "household graph: differential arrangements",
        &[
            "differential_dataflow::trace",
            "differential_dataflow::operators::arrange",
            "spine_fueled",
        ],
    ),
    ("household graph: differential operators", &["differential_dataflow::"]),
    ("household graph: kairos operators", &["kairos_dataflows::households"]),
    (
        "household evidence in subscriber state",
        &["kairos_dataflows::evidence"],
    ),
    ("usage windows (features)", &["kairos_dataflows::features"]),
    (
        "lifecycle",
        &["kairos_dataflows::lifecycle", "kairos_dataflows::standing"],
    ),
    (
        "contact history and policy",
        &["kairos_dataflows::policy", "ContactHistory"],
    ),
    (
        "CEL conditions",
        &["kairos_dataflows::condition", "cel_interpreter", "cel_parser"],
    ),
    (
        "subscriber state: other",
        &[
            "kairos_dataflows::subscriber",
            "kairos_dataflows::state",
            "kairos_dataflows::moments",
        ],
    ),
    (
        "timely channels and progress",
        &["timely_communication", "timely::", "timely_container", "timely_bytes"],
    ),
    ("decode", &["kairos::decode", "serde_json", "kairos_model::event"]),
    ("ingest (file reader)", &["kairos::ingest"]),
    (
        "replay outputs collected",
        &["kairos::sinks", "kairos::pipeline::replay", "kairos::pipeline"],
    ),
    ("rules loaded", &["kairos::rules", "kairos_model::rule"]),
];

const OTHER: &str = "other";

/// The component of one folded stack (`root;…;allocation`), and the frame that decided it.
pub fn classify(stack: &str) -> (&'static str, &str) {
    let frames: Vec<&str> = stack.split(';').collect();
    for frame in frames.iter().rev() {
        for (name, patterns) in COMPONENTS {
            if patterns.iter().any(|p| frame.contains(p)) {
                return (name, frame);
            }
        }
    }
    (OTHER, frames.last().copied().unwrap_or(""))
}

/// Sums heaptrack's folded stacks (`stack cost` lines) by component, largest first.
pub fn breakdown(folded: &str, subscribers: u64, top: usize) -> Vec<Component> {
    let mut by: BTreeMap<&'static str, (u64, BTreeMap<String, u64>)> = BTreeMap::new();
    for line in folded.lines() {
        let Some((stack, cost)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(bytes) = cost.trim().parse::<u64>() else {
            continue;
        };
        if bytes == 0 {
            continue;
        }
        let (name, frame) = classify(stack);
        let entry = by.entry(name).or_default();
        entry.0 += bytes;
        *entry.1.entry(short(frame)).or_default() += bytes;
    }
    let mut out: Vec<Component> = by
        .into_iter()
        .map(|(name, (bytes, frames))| {
            let mut frames: Vec<(String, u64)> = frames.into_iter().collect();
            frames.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            frames.truncate(top);
            Component {
                name: name.to_string(),
                bytes,
                bytes_per_subscriber: bytes as f64 / subscribers.max(1) as f64,
                top: frames,
            }
        })
        .collect();
    out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    out
}

/// A frame without its generic arguments and its source position, at most 120 characters.
fn short(frame: &str) -> String {
    let mut s = String::new();
    let mut depth = 0usize;
    for c in frame.chars() {
        match c {
            '<' => {
                depth += 1;
                if depth == 1 {
                    s.push_str("<…>");
                }
            }
            '>' if depth > 0 => depth -= 1,
            _ if depth == 0 => s.push(c),
            _ => {}
        }
    }
    // Rust backtraces put the source after " at ", heaptrack after " (".
    let s = s.split(" at ").next().and_then(|s| s.split(" (").next()).unwrap_or("");
    let s = s.trim().to_string();
    s.chars().take(120).collect()
}

/// Runs the scenario and writes `report.json` and `report.md` into `spec.out`.
pub fn run(spec: &MemorySpec) -> Result<MemoryReport> {
    std::fs::create_dir_all(&spec.out).with_context(|| format!("cannot create {}", spec.out.display()))?;
    // `heaptrack` alone gives `heaptrack_print` alone, found on the PATH the same way.
    let print = spec.heaptrack.with_file_name("heaptrack_print");
    let (events, _) = replay::world_file(&spec.world, &spec.cache)?;

    eprintln!("kairos-loadtest: memory: the plain replay");
    let plain = spec.out.join("replay");
    let (seconds, peak_rss_mb) = replay::replay_once(
        &spec.binary,
        &spec.rules,
        &events,
        &plain,
        spec.workers,
        spec.households,
    )?;
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(plain.join("summary.json")).context("the replay wrote no summary")?,
    )?;
    let lines = ["events_valid", "events_invalid"]
        .iter()
        .map(|k| summary[k].as_u64().unwrap_or(0))
        .sum::<u64>();
    let _ = std::fs::remove_dir_all(&plain);
    eprintln!(
        "kairos-loadtest: memory: {lines} events in {seconds:.1} s, peak RSS {peak_rss_mb:.0} MB = {:.0} bytes a subscriber",
        peak_rss_mb * 1024.0 * 1024.0 / spec.world.subscribers.max(1) as f64
    );

    eprintln!("kairos-loadtest: memory: the replay under heaptrack (it runs several times slower)");
    let traced = spec.out.join("replay-heaptrack");
    let _ = std::fs::remove_dir_all(&traced);
    let prefix = spec.out.join("heaptrack");
    for entry in std::fs::read_dir(&spec.out)?.flatten() {
        if entry.file_name().to_string_lossy().starts_with("heaptrack.") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let started = Instant::now();
    let mut command = Command::new(&spec.heaptrack);
    command
        .arg("-o")
        .arg(&prefix)
        .arg(&spec.traced_binary)
        .args(["replay", "--events"])
        .arg(&events)
        .arg("--out")
        .arg(&traced)
        .arg("--rules")
        .arg(&spec.rules)
        .args(["--workers", &spec.workers.to_string(), "--no-progress"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if !spec.households {
        command.arg("--no-households");
    }
    let status = command.status().with_context(|| {
        format!(
            "cannot run {} (loadtest/run memory installs it)",
            spec.heaptrack.display()
        )
    })?;
    if !status.success() {
        bail!("the replay under heaptrack failed ({status})");
    }
    let _ = std::fs::remove_dir_all(&traced);
    eprintln!(
        "kairos-loadtest: memory: traced in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let data = std::fs::read_dir(&spec.out)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("heaptrack."))
        })
        .context("heaptrack wrote no data file")?;
    let stacks = spec.out.join("peak.stacks");
    let status = Command::new(&print)
        .arg("-f")
        .arg(&data)
        .args([
            "--print-peaks=0",
            "--print-allocators=0",
            "--print-temporary=0",
            "--print-leaks=0",
        ])
        .args(["--flamegraph-cost-type", "peak", "-F"])
        .arg(&stacks)
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {}", print.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", print.display());
    }
    let folded = std::fs::read_to_string(&stacks).with_context(|| format!("cannot read {}", stacks.display()))?;
    let components = breakdown(&folded, spec.world.subscribers, 6);
    let heap: u64 = components.iter().map(|c| c.bytes).sum();
    // heaptrack sees malloc only: a kairos whose global allocator is mimalloc (the default
    // build) shows a heap of almost nothing against its RSS.
    if (heap as f64) < 0.1 * peak_rss_mb * 1024.0 * 1024.0 {
        bail!(
            "heaptrack saw {:.1} MB of heap against a peak RSS of {peak_rss_mb:.0} MB: the kairos binary allocates \
             outside malloc (its mimalloc global allocator); give --traced-kairos one on the system allocator (cargo build -p kairos --no-default-features; loadtest/run memory builds it)",
            heap as f64 / 1048576.0
        );
    }
    let n = spec.world.subscribers.max(1) as f64;
    let report = MemoryReport {
        command: spec.command.clone(),
        started: kairos_model::time::format_rfc3339(kairos_model::time::now()),
        machine: engine::machine(),
        versions: engine::versions(&spec.binary),
        subscribers: spec.world.subscribers,
        days: spec.world.days,
        events: lines,
        workers: spec.workers,
        households: spec.households,
        seconds,
        peak_rss_mb: peak_rss_mb.round(),
        peak_rss_bytes_per_subscriber: peak_rss_mb * 1024.0 * 1024.0 / n,
        heap_peak_bytes: heap,
        heap_peak_bytes_per_subscriber: heap as f64 / n,
        components,
    };
    std::fs::write(spec.out.join("report.json"), serde_json::to_string_pretty(&report)?)?;
    std::fs::write(spec.out.join("report.md"), markdown(&report))?;
    Ok(report)
}

/// The report as markdown.
pub fn markdown(r: &MemoryReport) -> String {
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut s = format!(
        "# Where the bytes are: {} subscribers × {} day(s), households {}\n\n\
         `{}`\n\n\
         - {} events, {} worker(s); the plain replay took {:.1} s\n\
         - **peak RSS {:.0} MB = {:.0} bytes a subscriber**\n\
         - the heap at its peak (heaptrack): {:.0} MB = {:.0} bytes a subscriber\n\
         - machine: {} cores, {}; {}\n\n\
         | component | MB at the heap's peak | bytes a subscriber | share |\n|---|---:|---:|---:|\n",
        r.subscribers,
        r.days,
        if r.households { "on" } else { "off" },
        r.command,
        r.events,
        r.workers,
        r.seconds,
        r.peak_rss_mb,
        r.peak_rss_bytes_per_subscriber,
        mb(r.heap_peak_bytes),
        r.heap_peak_bytes_per_subscriber,
        r.machine.cores,
        r.machine.cpu,
        r.versions.get("kairos").map_or("?", String::as_str),
    );
    for c in &r.components {
        s.push_str(&format!(
            "| {} | {:.1} | {:.0} | {:.1} % |\n",
            c.name,
            mb(c.bytes),
            c.bytes_per_subscriber,
            100.0 * c.bytes as f64 / r.heap_peak_bytes.max(1) as f64
        ));
    }
    s.push_str("\n## The largest stacks of each component (by the frame that decided it)\n");
    for c in &r.components {
        s.push_str(&format!("\n**{}**\n\n", c.name));
        for (frame, bytes) in &c.top {
            s.push_str(&format!("- {:.1} MB `{}`\n", mb(*bytes), frame));
        }
    }
    s.push_str(
        "\nThe RSS is above the heap by the allocator's free pages, thread stacks and the binary; \
         heaptrack's peak is the heap's largest total, cut by the stacks alive at that moment.\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stack_goes_to_the_first_component_named_from_its_allocation_up() {
        let window = "main;kairos_dataflows::subscriber::operator::run;kairos_dataflows::features::Window::push;alloc::raw_vec::finish_grow;malloc";
        assert_eq!(
            classify(window),
            ("usage windows (features)", "kairos_dataflows::features::Window::push")
        );
        let spine = "main;kairos_dataflows::households::households_within;differential_dataflow::trace::implementations::spine_fueled::Spine<T>::insert;alloc::alloc";
        assert_eq!(classify(spine).0, "household graph: differential arrangements");
        let state =
            "main;kairos_dataflows::subscriber::operator::run;hashbrown::raw::RawTable<T>::reserve_rehash;malloc";
        assert_eq!(classify(state).0, "subscriber state: other");
        assert_eq!(classify("main;std::rt::lang_start;malloc").0, OTHER);
    }

    #[test]
    fn the_breakdown_sums_costs_by_component_largest_first() {
        let folded = "\
a;kairos_dataflows::features::Window::push;malloc 300
a;kairos_dataflows::features::Window::grow<u64>;malloc 100
a;timely_communication::allocator::zero_copy::bytes_slab;malloc 250
a;b;malloc 50
broken line
a;c;malloc 0
";
        let got = breakdown(folded, 10, 1);
        assert_eq!(
            got.iter().map(|c| (c.name.as_str(), c.bytes)).collect::<Vec<_>>(),
            vec![
                ("usage windows (features)", 400),
                ("timely channels and progress", 250),
                (OTHER, 50)
            ]
        );
        assert_eq!(got[0].bytes_per_subscriber, 40.0);
        assert_eq!(
            got[0].top,
            vec![("kairos_dataflows::features::Window::push".to_string(), 300)]
        );
        assert_eq!(short("x::Y<alloc::Vec<u8>>::z at src/a.rs:3"), "x::Y<…>::z");
        assert_eq!(
            short("kairos_dataflows::features::Activity::add_usage (features.rs)"),
            "kairos_dataflows::features::Activity::add_usage"
        );
    }
}
