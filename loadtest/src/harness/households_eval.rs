//! `kairos-loadtest households-eval`: how well `kairos replay` finds households on worlds it
//! was not tuned on. Each world's parameters (household sizes, link rates, how much families
//! call, weekly friends, busy colleagues, friends of friends, the service line, cells, flats)
//! are drawn from ranges by its own seed ([`Noise::drawn`]); every world is generated,
//! replayed with the shipped rules and scored against its truth, beside the hard-links-only
//! baseline (one account, one address) on the same world. The report gives each world, the
//! mean and the **worst**.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use chrono::NaiveDate;
use serde::Serialize;

use crate::households::{HouseholdSpec, Noise, Population};
use crate::score::{self, Assignment, Score};
use crate::world::{self, WorldSpec};

/// What to evaluate.
pub struct EvalSpec {
    pub binary: PathBuf,
    pub rules: PathBuf,
    pub out: PathBuf,
    pub worlds: u32,
    /// The first world's parameter seed; world k uses `params_seed + k`.
    pub params_seed: u64,
    pub subscribers: u64,
    pub days: u32,
    pub events_per_day: u32,
    pub workers: usize,
    /// Keep each world's events (otherwise deleted once scored).
    pub keep: bool,
    pub command: String,
}

/// One world's result.
#[derive(Debug, Clone, Serialize)]
pub struct WorldResult {
    pub params_seed: u64,
    pub noise: Noise,
    pub events: u64,
    pub true_households: u64,
    pub kairos: Score,
    pub hard_links_only: Score,
    pub replay_seconds: f64,
    pub events_per_second: f64,
}

/// The whole evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub command: String,
    pub subscribers: u64,
    pub days: u32,
    pub events_per_day: u32,
    pub workers: usize,
    pub worlds: Vec<WorldResult>,
}

/// The largest account or address group the baseline links (as `max_shared`).
const MAX_SHARED: usize = 8;

/// Runs the evaluation, writing `report.json` and `report.md` into `spec.out`.
pub fn run(spec: &EvalSpec) -> Result<EvalReport> {
    std::fs::create_dir_all(&spec.out).with_context(|| format!("cannot create {}", spec.out.display()))?;
    let mut report = EvalReport {
        command: spec.command.clone(),
        subscribers: spec.subscribers,
        days: spec.days,
        events_per_day: spec.events_per_day,
        workers: spec.workers,
        worlds: Vec::new(),
    };
    for k in 0..spec.worlds {
        let params_seed = spec.params_seed + u64::from(k);
        let result = one_world(spec, params_seed)?;
        eprintln!(
            "households-eval: world {params_seed}: F1 {:.3} (hard links only {:.3}), exact {:.3}, decision makers {:.3}, {:.0} events/s",
            result.kairos.f1,
            result.hard_links_only.f1,
            result.kairos.exact_share,
            result.kairos.decision_maker.as_ref().map_or(0.0, |d| d.accuracy),
            result.events_per_second
        );
        report.worlds.push(result);
        // Written after every world, so a long evaluation shows what it has.
        write(&spec.out, &report)?;
    }
    Ok(report)
}

fn one_world(spec: &EvalSpec, params_seed: u64) -> Result<WorldResult> {
    let dir = spec.out.join(format!("world-{params_seed}"));
    std::fs::create_dir_all(&dir)?;
    let world = WorldSpec {
        subscribers: spec.subscribers,
        days: spec.days,
        start: NaiveDate::from_ymd_opt(2026, 6, 1).expect("valid date"),
        seed: params_seed.wrapping_mul(7919).wrapping_add(1),
        events_per_day: spec.events_per_day,
        travel_rate: 0.03,
        invalid_rate: 0.0,
        duplicate_rate: 0.0,
    };
    let noise = Noise::drawn(params_seed);
    let households = HouseholdSpec {
        max_size: 7,
        noise: noise.clone(),
        ..HouseholdSpec::default()
    };
    let population = Population::build(&world, &households);
    let truth: Vec<Assignment> = population.truth_records().map(|t| Assignment::from(&t)).collect();

    let events_path = dir.join("events.jsonl");
    let events = world::write_world(&events_path, &world, Some(&population), None)
        .with_context(|| format!("cannot write {}", events_path.display()))?;

    let out = dir.join("replay");
    let started = Instant::now();
    let status = Command::new(&spec.binary)
        .arg("replay")
        .arg("--events")
        .arg(&events_path)
        .arg("--rules")
        .arg(&spec.rules)
        .arg("--out")
        .arg(&out)
        .arg("--workers")
        .arg(spec.workers.to_string())
        .arg("--no-progress")
        .status()
        .with_context(|| format!("cannot start {}", spec.binary.display()))?;
    let replay_seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("kairos replay failed on world {params_seed} ({status})");
    }
    let got_path = out.join("households.jsonl");
    let got = score::read_assignments(
        std::io::BufReader::new(
            std::fs::File::open(&got_path).with_context(|| format!("cannot open {}", got_path.display()))?,
        ),
        &got_path.display().to_string(),
    )?;
    let kairos = score::score(&truth, &got)?;
    let hard_links_only = score::score(&truth, &hard_links(&population))?;
    if !spec.keep {
        std::fs::remove_file(&events_path).ok();
    }
    Ok(WorldResult {
        params_seed,
        noise,
        events,
        true_households: population.households().len() as u64,
        kairos,
        hard_links_only,
        replay_seconds,
        events_per_second: events as f64 / replay_seconds.max(1e-9),
    })
}

/// The baseline: households from the customer records alone — one account or one address
/// (groups of at most [`MAX_SHARED`], as the engine's cap), connected components.
pub fn hard_links(population: &Population) -> Vec<Assignment> {
    let n = population.subscribers() as usize;
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(parent: &mut [usize], x: usize) -> usize {
        let mut root = x;
        while parent[root] != root {
            root = parent[root];
        }
        let mut x = x;
        while parent[x] != root {
            let next = parent[x];
            parent[x] = root;
            x = next;
        }
        root
    }
    let mut groups: HashMap<String, Vec<usize>> = HashMap::new();
    for s in 0..n {
        groups.entry(population.account_id(s as u32)).or_default().push(s);
        groups.entry(population.address_id(s as u32)).or_default().push(s);
    }
    for members in groups.values().filter(|m| m.len() <= MAX_SHARED) {
        for pair in members.windows(2) {
            let (a, b) = (find(&mut parent, pair[0]), find(&mut parent, pair[1]));
            parent[a] = b;
        }
    }
    (0..n)
        .map(|s| {
            let root = find(&mut parent, s);
            Assignment::new(world::msisdn(s as u64), format!("B-{root}"))
        })
        .collect()
}

fn write(dir: &Path, report: &EvalReport) -> Result<()> {
    std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(report)?)?;
    std::fs::write(dir.join("report.md"), markdown(report))?;
    Ok(())
}

/// The report as Markdown: a row per world, then the mean and the worst of each column.
pub fn markdown(report: &EvalReport) -> String {
    let mut out = String::new();
    out.push_str("# Households on worlds kairos was not tuned on\n\n");
    out.push_str(&format!(
        "`{}`\n\n{} worlds of {} subscribers × {} days (~{} events per subscriber per day), each with its parameters drawn from ranges (`Noise::drawn(params_seed)`), replayed with {} workers and the shipped rules.\n\n",
        report.command,
        report.worlds.len(),
        report.subscribers,
        report.days,
        report.events_per_day,
        report.workers
    ));
    out.push_str("| params seed | precision | recall | F1 | exact households | decision makers | hard links only: P / R / F1 | events/s |\n");
    out.push_str("|---:|---:|---:|---:|---:|---:|---|---:|\n");
    let row = |w: &WorldResult| {
        format!(
            "| {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} / {:.3} / {:.3} | {:.0} |\n",
            w.params_seed,
            w.kairos.precision,
            w.kairos.recall,
            w.kairos.f1,
            w.kairos.exact_share,
            w.kairos.decision_maker.as_ref().map_or(0.0, |d| d.accuracy),
            w.hard_links_only.precision,
            w.hard_links_only.recall,
            w.hard_links_only.f1,
            w.events_per_second
        )
    };
    for w in &report.worlds {
        out.push_str(&row(w));
    }
    if !report.worlds.is_empty() {
        let column = |f: &dyn Fn(&WorldResult) -> f64| -> (f64, f64) {
            let values: Vec<f64> = report.worlds.iter().map(f).collect();
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let worst = values.iter().copied().fold(f64::INFINITY, f64::min);
            (mean, worst)
        };
        let columns: [&dyn Fn(&WorldResult) -> f64; 9] = [
            &|w| w.kairos.precision,
            &|w| w.kairos.recall,
            &|w| w.kairos.f1,
            &|w| w.kairos.exact_share,
            &|w| w.kairos.decision_maker.as_ref().map_or(0.0, |d| d.accuracy),
            &|w| w.hard_links_only.precision,
            &|w| w.hard_links_only.recall,
            &|w| w.hard_links_only.f1,
            &|w| w.events_per_second,
        ];
        let stats: Vec<(f64, f64)> = columns.iter().map(|c| column(c)).collect();
        for (name, pick) in [("**mean**", 0), ("**worst**", 1)] {
            let v = |i: usize| if pick == 0 { stats[i].0 } else { stats[i].1 };
            out.push_str(&format!(
                "| {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} / {:.3} / {:.3} | {:.0} |\n",
                v(0),
                v(1),
                v(2),
                v(3),
                v(4),
                v(5),
                v(6),
                v(7),
                v(8)
            ));
        }
        out.push_str(
            "\n(The worst of each column is taken over the worlds separately.)\n\n## The worlds' parameters\n\n",
        );
        out.push_str("| params seed | households | singles | on one account | at one address | family share of calls | quiet families | weekly friends | close friends | friend of friend | busy colleagues | service callers | households per cell | cell rate | flatmates |\n");
        out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for w in &report.worlds {
            let n = &w.noise;
            let total: f64 = n.size_weights.iter().sum();
            out.push_str(&format!(
                "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.2} | {:.2} |\n",
                w.params_seed,
                w.true_households,
                n.size_weights[0] / total,
                n.account_rate,
                n.address_rate,
                n.family_share,
                n.quiet_family_rate,
                n.weekly_friends,
                n.close_friend_rate,
                n.friend_of_friend,
                n.busy_colleague_rate,
                n.service_callers,
                n.households_per_cell,
                n.cell_rate,
                n.flatmate_rate
            ));
        }
    }
    out
}
