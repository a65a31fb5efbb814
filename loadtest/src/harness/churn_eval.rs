//! The churn loop on generated worlds: `kairos-loadtest fit-churn` fits the weights of
//! `churn.toml` on worlds of known churners, and `kairos-loadtest churn-eval` judges the score
//! and the retention loop on other worlds, with the retention effect planted.
//!
//! Every world's churn rates are drawn from ranges by its own seed ([`ChurnSpec::drawn`]), and
//! so are its household parameters; the fit's worlds and the evaluation's do not share seeds.
//!
//! - **fit-churn**: each world is generated (no retention: who was planted to leave leaves),
//!   and `kairos report churn` scores it at the day 30 days before its end with the rules
//!   folder's factors. Every customer scored is one row — the factors that held, and whether
//!   they terminated within 30 days — and the weights are the L2-penalised maximum-likelihood
//!   logistic regression of all rows (Newton's method). The weights and the intercept are
//!   written into the `churn.toml` given (its comments and factors kept), with `fitted`
//!   saying which command, worlds and rows they came from.
//! - **churn-eval**: each world is generated and replayed; the retention actions kairos sent
//!   go back to the generator, which generates the world again with churners saved by an
//!   offer at the planted rate ([`crate::churn`]); `kairos report churn` then reports on that
//!   world. The result: AUC and top-decile lift of the score, and the retention loop's
//!   measured reduction of churn beside the one planted (from the truth: the treated who
//!   would have left within the horizon and were saved).

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use chrono::NaiveDate;
use serde::Serialize;
use serde_json::Value;

use crate::churn::{ChurnLayer, ChurnSpec, ChurnTruth, Offers};
use crate::households::{HouseholdSpec, Noise, Population};
use crate::world::{self, WorldSpec};

/// What to fit or evaluate on.
#[derive(Clone)]
pub struct ChurnEvalSpec {
    pub binary: PathBuf,
    pub rules: PathBuf,
    pub out: PathBuf,
    pub worlds: u32,
    /// World k's parameters are drawn with `params_seed + k`.
    pub params_seed: u64,
    pub subscribers: u64,
    pub days: u32,
    pub events_per_day: u32,
    pub workers: usize,
    /// Days of the horizon (and from the observation instant to the end of the log).
    pub horizon_days: u32,
    /// Keep each world's events.
    pub keep: bool,
    /// churn-eval: also replay the first pass without the lifecycle features (what they cost).
    pub cost: bool,
    pub command: String,
}

const START: (i32, u32, u32) = (2026, 3, 1);

/// One world, generated: its spec, population and the path of its events.
struct Generated {
    events: PathBuf,
    lines: u64,
    truth: Vec<ChurnTruth>,
    churn: ChurnSpec,
}

fn world_spec(spec: &ChurnEvalSpec, params_seed: u64) -> WorldSpec {
    WorldSpec {
        subscribers: spec.subscribers,
        days: spec.days,
        start: NaiveDate::from_ymd_opt(START.0, START.1, START.2).expect("valid date"),
        seed: params_seed.wrapping_mul(7919).wrapping_add(3),
        events_per_day: spec.events_per_day,
        travel_rate: 0.03,
        invalid_rate: 0.0,
        duplicate_rate: 0.0,
    }
}

/// Generates world `params_seed` into `dir/name`, with the retention `offers` answered.
fn generate(spec: &ChurnEvalSpec, params_seed: u64, dir: &Path, name: &str, offers: Offers) -> Result<Generated> {
    let world = world_spec(spec, params_seed);
    let households = HouseholdSpec {
        max_size: 7,
        noise: Noise::drawn(params_seed),
        ..HouseholdSpec::default()
    };
    let population = Population::build(&world, &households);
    let churn = ChurnSpec::drawn(params_seed);
    let mut layer = ChurnLayer::new(
        churn.clone(),
        world.seed,
        world.start,
        world.days,
        world.subscribers,
        offers,
    );
    let events = dir.join(name);
    let lines = world::write_world(&events, &world, Some(&population), Some(&mut layer))
        .with_context(|| format!("cannot write {}", events.display()))?;
    Ok(Generated {
        events,
        lines,
        truth: layer.truth().collect(),
        churn,
    })
}

/// Runs `binary` with `args`, polling its peak resident memory: (seconds, peak MB).
fn run(binary: &Path, args: &[&std::ffi::OsStr], what: &str) -> Result<(f64, f64)> {
    let started = Instant::now();
    let mut child = Command::new(binary)
        .args(args)
        .arg("--no-progress")
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let mut peak = 0.0f64;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        peak = peak.max(super::engine::memory_mb(child.id()).1);
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok((started.elapsed().as_secs_f64(), peak))
}

/// `kairos replay` of `events` into `out` with `rules`: (seconds, peak MB).
fn replay(spec: &ChurnEvalSpec, rules: &Path, events: &Path, out: &Path, what: &str) -> Result<(f64, f64)> {
    let workers = spec.workers.to_string();
    run(
        &spec.binary,
        &[
            "replay".as_ref(),
            "--events".as_ref(),
            events.as_os_str(),
            "--rules".as_ref(),
            rules.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
            "--workers".as_ref(),
            workers.as_ref(),
        ],
        what,
    )
}

/// A copy of the rules folder `rules` without the lifecycle features: one catch-all stage and
/// a churn model of no factors (no stage or score is decided, and nothing reads a field that
/// moves with event time, so there are no review timers).
fn without_lifecycle(rules: &Path, into: &Path) -> Result<()> {
    std::fs::create_dir_all(into)?;
    for entry in std::fs::read_dir(rules).with_context(|| format!("cannot read {}", rules.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&path, into.join(path.file_name().expect("a file name")))?;
        }
    }
    std::fs::write(into.join("lifecycle.toml"), "[[stage]]\nname = \"stable\"\n")?;
    std::fs::write(
        into.join("churn.toml"),
        "fitted = \"none: the cost baseline\"\nintercept = -3.9\nthreshold = 0.33\nfactor = []\n",
    )?;
    Ok(())
}

/// `kairos report churn` of `events` into `out` with `rules`; its report.json.
fn churn_report(spec: &ChurnEvalSpec, rules: &Path, events: &Path, out: &Path) -> Result<(Value, f64)> {
    let horizon = format!("{}d", spec.horizon_days);
    let workers = spec.workers.to_string();
    let (seconds, _) = run(
        &spec.binary,
        &[
            "report".as_ref(),
            "churn".as_ref(),
            "--events".as_ref(),
            events.as_os_str(),
            "--rules".as_ref(),
            rules.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
            "--horizon".as_ref(),
            horizon.as_ref(),
            "--workers".as_ref(),
            workers.as_ref(),
        ],
        "kairos report churn",
    )?;
    let path = out.join("report.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok((serde_json::from_str(&text)?, seconds))
}

/// The factor names of a `churn.toml`, in order.
fn factor_names(churn_toml: &str) -> Result<Vec<String>> {
    let value: toml::Value = toml::from_str(churn_toml).context("churn.toml is not TOML")?;
    Ok(value
        .get("factor")
        .and_then(toml::Value::as_array)
        .map(|factors| {
            factors
                .iter()
                .filter_map(|f| f.get("name").and_then(toml::Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_default())
}

/// Rows of `scores.jsonl`: the factors that held (as indices into `names`) and whether they left.
fn rows(scores: &Path, names: &[String]) -> Result<Vec<(Vec<usize>, bool)>> {
    let index: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
    let file = std::fs::File::open(scores).with_context(|| format!("cannot open {}", scores.display()))?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let v: Value = serde_json::from_str(&line?)?;
        let factors = v["churn_factors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.as_str().and_then(|f| index.get(f).copied()))
                    .collect()
            })
            .unwrap_or_default();
        out.push((factors, v["left"].as_bool().unwrap_or(false)));
    }
    Ok(out)
}

/// The fitted logistic regression.
#[derive(Debug, Clone, Serialize)]
pub struct Fit {
    pub intercept: f64,
    pub weights: Vec<f64>,
    pub rows: u64,
    pub leavers: u64,
    /// Mean log-loss on the rows fitted.
    pub log_loss: f64,
    pub iterations: u32,
}

/// L2-penalised logistic regression (`penalty` on the weights, not the intercept) of `rows`
/// over `k` binary factors, by Newton's method on the rows grouped by their pattern of
/// factors (the factors are binary, so the distinct patterns are few).
pub fn fit(rows: &[(Vec<usize>, bool)], k: usize, penalty: f64) -> Fit {
    // Patterns → (n, leavers).
    let mut patterns: HashMap<Vec<usize>, (f64, f64)> = HashMap::new();
    for (factors, left) in rows {
        let mut key = factors.clone();
        key.sort_unstable();
        key.dedup();
        let entry = patterns.entry(key).or_default();
        entry.0 += 1.0;
        entry.1 += f64::from(u8::from(*left));
    }
    let patterns: Vec<(Vec<usize>, f64, f64)> = patterns.into_iter().map(|(p, (n, y))| (p, n, y)).collect();
    let leavers: f64 = patterns.iter().map(|p| p.2).sum();
    let total: f64 = patterns.iter().map(|p| p.1).sum();
    let d = k + 1;
    let logit = |beta: &[f64], pattern: &[usize]| beta[0] + pattern.iter().map(|&j| beta[j + 1]).sum::<f64>();
    // The penalised log-likelihood, which each step must not lower.
    let objective = |beta: &[f64]| {
        let likelihood: f64 = patterns
            .iter()
            .map(|(pattern, n, y)| {
                let z = logit(beta, pattern);
                // log σ(z), stable for large |z|; log(1 − σ(z)) = log σ(z) − z.
                let log_p = if z >= 0.0 {
                    -(-z).exp().ln_1p()
                } else {
                    z - z.exp().ln_1p()
                };
                let log_q = log_p - z;
                y * log_p + (n - y) * log_q
            })
            .sum();
        likelihood - 0.5 * penalty * beta[1..].iter().map(|b| b * b).sum::<f64>()
    };
    let mut beta = vec![0.0; d];
    let rate = (leavers / total.max(1.0)).clamp(1e-6, 1.0 - 1e-6);
    beta[0] = (rate / (1.0 - rate)).ln();
    let mut iterations = 0;
    let mut current = objective(&beta);
    for _ in 0..100 {
        iterations += 1;
        let mut gradient = vec![0.0; d];
        let mut hessian = vec![vec![0.0; d]; d];
        for (pattern, n, y) in &patterns {
            let p = 1.0 / (1.0 + (-logit(&beta, pattern)).exp());
            let features: Vec<usize> = std::iter::once(0).chain(pattern.iter().map(|j| j + 1)).collect();
            for &a in &features {
                gradient[a] += y - n * p;
                for &b in &features {
                    hessian[a][b] += n * p * (1.0 - p);
                }
            }
        }
        for j in 1..d {
            gradient[j] -= penalty * beta[j];
            hessian[j][j] += penalty;
        }
        let step = solve(hessian, gradient);
        // Damped: halve the step until the objective does not fall (a full Newton step can
        // overshoot far from the optimum, where a factor nearly separates leavers).
        let mut scale = 1.0;
        let mut next = beta.clone();
        let mut improved = false;
        for _ in 0..40 {
            next = beta.iter().zip(&step).map(|(b, s)| b + scale * s).collect();
            let value = objective(&next);
            if value.is_finite() && value >= current - 1e-12 {
                current = value;
                improved = true;
                break;
            }
            scale /= 2.0;
        }
        let size: f64 = step.iter().map(|s| (s * scale).abs()).fold(0.0, f64::max);
        if !improved {
            break;
        }
        beta = next;
        if size < 1e-9 {
            break;
        }
    }
    let log_loss = patterns
        .iter()
        .map(|(pattern, n, y)| {
            let logit = beta[0] + pattern.iter().map(|&j| beta[j + 1]).sum::<f64>();
            let p = (1.0 / (1.0 + (-logit).exp())).clamp(1e-12, 1.0 - 1e-12);
            -(y * p.ln() + (n - y) * (1.0 - p).ln())
        })
        .sum::<f64>()
        / total.max(1.0);
    Fit {
        intercept: beta[0],
        weights: beta[1..].to_vec(),
        rows: total as u64,
        leavers: leavers as u64,
        log_loss,
        iterations,
    }
}

/// Solves `a x = b` (symmetric positive definite) by Gaussian elimination with pivoting.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        a.swap(col, pivot);
        b.swap(col, pivot);
        let diagonal = a[col][col];
        if diagonal.abs() < 1e-12 {
            continue;
        }
        for row in col + 1..n {
            let factor = a[row][col] / diagonal;
            if factor == 0.0 {
                continue;
            }
            let (upper, lower) = a.split_at_mut(row);
            for (x, pivot_value) in lower[0][col..].iter_mut().zip(&upper[col][col..]) {
                *x -= factor * pivot_value;
            }
            b[row] -= factor * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let sum: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = if a[row][row].abs() < 1e-12 {
            0.0
        } else {
            (b[row] - sum) / a[row][row]
        };
    }
    x
}

/// `churn.toml` with the fitted intercept and weights written in place of the old ones (the
/// comments, names, conditions, reasons and threshold kept), and `fitted` saying where they
/// came from.
pub fn rewrite(churn_toml: &str, fit: &Fit, provenance: &str) -> String {
    let mut out = String::with_capacity(churn_toml.len());
    let mut factor: Option<usize> = None;
    let mut next = 0;
    for line in churn_toml.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("[[factor]]") {
            factor = Some(next);
            next += 1;
        }
        let key = trimmed.split('=').next().map(str::trim);
        let replaced = match (key, factor) {
            (Some("fitted"), None) => Some(format!("fitted = {}", toml_string(provenance))),
            (Some("intercept"), None) => Some(format!("intercept = {:.3}", fit.intercept)),
            (Some("weight"), Some(i)) => fit.weights.get(i).map(|w| format!("weight = {w:.3}")),
            _ => None,
        };
        match replaced {
            Some(text) if trimmed.contains('=') => out.push_str(&text),
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

fn toml_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `fit-churn`: fits the weights on `spec.worlds` worlds and writes them into `target`
/// (a `churn.toml`); the fit and each world's scores go to `spec.out`.
///
/// With `scores` (files written by `kairos report churn`: a replay of real history, or of
/// worlds generated before), the rows are read from them instead and no world is generated.
pub fn fit_churn(spec: &ChurnEvalSpec, target: &Path, penalty: f64, scores: &[PathBuf]) -> Result<Fit> {
    std::fs::create_dir_all(&spec.out).with_context(|| format!("cannot create {}", spec.out.display()))?;
    let churn_toml = std::fs::read_to_string(spec.rules.join("churn.toml"))
        .with_context(|| format!("cannot read {}/churn.toml", spec.rules.display()))?;
    let names = factor_names(&churn_toml)?;
    let mut all = Vec::new();
    for path in scores {
        let read = rows(path, &names)?;
        eprintln!(
            "fit-churn: {}: {} customers scored, {} left within the horizon",
            path.display(),
            read.len(),
            read.iter().filter(|r| r.1).count()
        );
        all.extend(read);
    }
    let worlds = if scores.is_empty() { spec.worlds } else { 0 };
    for k in 0..worlds {
        let seed = spec.params_seed + u64::from(k);
        let dir = spec.out.join(format!("world-{seed}"));
        std::fs::create_dir_all(&dir)?;
        let generated = generate(spec, seed, &dir, "events.jsonl", Offers::default())?;
        let (_, seconds) = churn_report(spec, &spec.rules, &generated.events, &dir.join("report"))?;
        let rows = rows(&dir.join("report").join("scores.jsonl"), &names)?;
        eprintln!(
            "fit-churn: world {seed}: {} events, {} customers scored, {} left within the horizon (report {seconds:.0} s)",
            generated.lines,
            rows.len(),
            rows.iter().filter(|r| r.1).count()
        );
        all.extend(rows);
        if !spec.keep {
            std::fs::remove_file(&generated.events).ok();
        }
    }
    let fit = fit(&all, names.len(), penalty);
    let data = if scores.is_empty() {
        format!(
            "{} generated worlds (params seeds {}..{})",
            spec.worlds,
            spec.params_seed,
            spec.params_seed + u64::from(spec.worlds) - 1
        )
    } else {
        format!("{} scores file(s)", scores.len())
    };
    let provenance = format!(
        "{} — {} customers of {data}, {} left within {} days; L2 penalty {penalty}; mean log-loss {:.4}",
        spec.command, fit.rows, fit.leavers, spec.horizon_days, fit.log_loss
    );
    std::fs::write(target, rewrite(&churn_toml, &fit, &provenance))
        .with_context(|| format!("cannot write {}", target.display()))?;
    let mut lines = format!(
        "# fit-churn\n\n`{}`\n\nintercept {:.3}\n\n| factor | weight |\n|---|---:|\n",
        spec.command, fit.intercept
    );
    for (name, w) in names.iter().zip(&fit.weights) {
        lines.push_str(&format!("| {name} | {w:.3} |\n"));
    }
    lines.push_str(&format!(
        "\n{} rows, {} leavers, mean log-loss {:.4}, {} Newton iterations.\n",
        fit.rows, fit.leavers, fit.log_loss, fit.iterations
    ));
    std::fs::write(spec.out.join("fit.md"), lines)?;
    std::fs::write(spec.out.join("fit.json"), serde_json::to_string_pretty(&fit)? + "\n")?;
    Ok(fit)
}

/// One evaluated world.
#[derive(Debug, Clone, Serialize)]
pub struct WorldResult {
    pub params_seed: u64,
    pub churn: ChurnSpec,
    pub events: u64,
    pub churners_planted: u64,
    pub scored: u64,
    pub leavers: u64,
    pub auc: Option<f64>,
    pub top_decile_lift: Option<f64>,
    pub stages: Value,
    pub retention: Value,
    /// The reduction of churn planted, for the arms of the report's pooled row: the share of
    /// the treated who would have left within the horizon and were saved, less that share
    /// among the control (saved by another rule's action).
    pub planted_reduction: Option<f64>,
    /// The arms' balance: in the treated and in the control, the share who would have left
    /// within the horizon without any retention (planted). Holdouts drawn at random make them
    /// equal up to chance; the measured reduction is the planted one plus control's share
    /// less treated's.
    pub would_leave: [Option<f64>; 2],
    pub treated: u64,
    pub replay_seconds: f64,
    pub replay_peak_mb: f64,
    pub report_seconds: f64,
    /// With `--cost`: the first pass's replay with and without the lifecycle features.
    pub cost: Option<Cost>,
}

/// What the lifecycle features cost a replay of one world's first pass.
#[derive(Debug, Clone, Serialize)]
pub struct Cost {
    pub events: u64,
    pub with_events_per_second: f64,
    pub with_peak_mb: f64,
    pub without_events_per_second: f64,
    pub without_peak_mb: f64,
}

/// The whole evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub command: String,
    pub subscribers: u64,
    pub days: u32,
    pub events_per_day: u32,
    pub horizon_days: u32,
    pub worlds: Vec<WorldResult>,
}

/// One decision of the retention loop's rules (the shipped ones: on churn_risk,
/// cancel_intent and household_at_risk), from a replay's decisions.jsonl.
struct LoopDecision {
    msisdn: String,
    rule: String,
    at: i64,
    action: String,
    /// Sent (`Some(true)`), held out (`Some(false)`) or suppressed for another reason.
    sent: Option<bool>,
}

fn loop_decisions(path: &Path) -> Result<Vec<LoopDecision>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let v: Value = serde_json::from_str(&line?)?;
        if !matches!(
            v["moment"].as_str(),
            Some("churn_risk" | "cancel_intent" | "household_at_risk")
        ) {
            continue;
        }
        let (Some(msisdn), Some(rule), Some(ts), Some(action)) = (
            v["msisdn"].as_str(),
            v["rule"].as_str(),
            v["moment_ts"].as_str(),
            v["action_id"].as_str(),
        ) else {
            continue;
        };
        let Ok(at) = chrono::DateTime::parse_from_rfc3339(ts) else {
            continue;
        };
        let sent = match (v["decision"].as_str(), v["reason"].as_str()) {
            (Some("sent"), _) => Some(true),
            (_, Some("global_holdout" | "rule_holdout")) => Some(false),
            _ => None,
        };
        out.push(LoopDecision {
            msisdn: msisdn.to_string(),
            rule: rule.to_string(),
            at: at.timestamp_millis(),
            action: action.to_string(),
            sent,
        });
    }
    Ok(out)
}

/// The retention actions sent, by subscriber index: the earliest (moment_ts, action_id).
fn offers(decisions: &[LoopDecision]) -> Offers {
    let mut offers = Offers::new();
    for d in decisions.iter().filter(|d| d.sent == Some(true)) {
        let Some(s) = d.msisdn.strip_prefix("3519").and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        let s = s.saturating_sub(10_000_000) as u32;
        let slot = offers.entry(s).or_insert((d.at, d.action.clone()));
        if d.at < slot.0 {
            *slot = (d.at, d.action.clone());
        }
    }
    offers
}

/// The arms of the report's pooled row (`kairos report churn`): over the rules that hold some
/// subscribers out, each subscriber's first decision whose horizon ends by `end` — its
/// instant, and whether it was sent; other suppressions are in neither arm.
fn arms(decisions: &[LoopDecision], horizon: i64, end: i64) -> HashMap<String, (i64, bool)> {
    let with_control: std::collections::HashSet<&str> = decisions
        .iter()
        .filter(|d| d.sent == Some(false))
        .map(|d| d.rule.as_str())
        .collect();
    let mut first: HashMap<String, (i64, Option<bool>)> = HashMap::new();
    for d in decisions
        .iter()
        .filter(|d| with_control.contains(d.rule.as_str()) && d.at + horizon <= end)
    {
        let entry = first.entry(d.msisdn.clone()).or_insert((d.at, d.sent));
        if d.at < entry.0 {
            *entry = (d.at, d.sent);
        }
    }
    first
        .into_iter()
        .filter_map(|(m, (at, sent))| sent.map(|sent| (m, (at, sent))))
        .collect()
}

/// `churn-eval`: the closed loop on `spec.worlds` worlds.
pub fn churn_eval(spec: &ChurnEvalSpec) -> Result<EvalReport> {
    std::fs::create_dir_all(&spec.out).with_context(|| format!("cannot create {}", spec.out.display()))?;
    let mut report = EvalReport {
        command: spec.command.clone(),
        subscribers: spec.subscribers,
        days: spec.days,
        events_per_day: spec.events_per_day,
        horizon_days: spec.horizon_days,
        worlds: Vec::new(),
    };
    for k in 0..spec.worlds {
        let seed = spec.params_seed + u64::from(k);
        let dir = spec.out.join(format!("world-{seed}"));
        std::fs::create_dir_all(&dir)?;
        // Pass 1: the world as it would be without any retention answered.
        let first = generate(spec, seed, &dir, "events-pass1.jsonl", Offers::default())?;
        let replay_out = dir.join("pass1");
        let (replay_seconds, replay_peak_mb) =
            replay(spec, &spec.rules, &first.events, &replay_out, "kairos replay (pass 1)")?;
        let sent = offers(&loop_decisions(&replay_out.join("decisions.jsonl"))?);
        // Pass 2: the same world, the offers answered with the planted effect.
        let second = generate(spec, seed, &dir, "events.jsonl", sent)?;
        let (measured, report_seconds) = churn_report(spec, &spec.rules, &second.events, &dir.join("report"))?;
        // What the features cost: the first pass's events again, the same rules but the
        // lifecycle ones (after the report, so that a long evaluation has its main numbers first).
        let cost = if spec.cost {
            let bare = dir.join("rules-without-lifecycle");
            without_lifecycle(&spec.rules, &bare)?;
            let (seconds, peak) = replay(
                spec,
                &bare,
                &first.events,
                &dir.join("pass1-without"),
                "kairos replay (without)",
            )?;
            Some(Cost {
                with_events_per_second: first.lines as f64 / replay_seconds.max(1e-9),
                with_peak_mb: replay_peak_mb,
                without_events_per_second: first.lines as f64 / seconds.max(1e-9),
                without_peak_mb: peak,
                events: first.lines,
            })
        } else {
            None
        };
        if !spec.keep {
            std::fs::remove_file(&first.events).ok();
        }
        // The reduction planted, for the arms of the report's pooled row: in each arm, the
        // share who would have left within the horizon of their first decision and were
        // saved (by that offer or a later one); the difference is what the report should find.
        let decisions = loop_decisions(&dir.join("report").join("replay").join("decisions.jsonl"))?;
        let truth: HashMap<&str, &ChurnTruth> = second.truth.iter().map(|t| (t.msisdn.as_str(), t)).collect();
        let end = chrono::DateTime::parse_from_rfc3339(measured["inputs"]["last_event"].as_str().unwrap_or(""))
            .map(|t| t.timestamp_millis())
            .unwrap_or(i64::MAX);
        let horizon = i64::from(spec.horizon_days) * 86_400_000;
        // Per arm: (would have left within the horizon, of whom saved, subscribers).
        let (mut treated, mut control) = ((0u64, 0u64, 0u64), (0u64, 0u64, 0u64));
        for (msisdn, (at, sent)) in arms(&decisions, horizon, end) {
            let t = truth.get(msisdn.as_str());
            let would_leave = t.is_some_and(|t| {
                t.planned_leave
                    .as_deref()
                    .and_then(|p| chrono::DateTime::parse_from_rfc3339(p).ok())
                    .is_some_and(|p| p.timestamp_millis() > at && p.timestamp_millis() <= at + horizon)
            });
            let arm = if sent { &mut treated } else { &mut control };
            arm.0 += u64::from(would_leave);
            arm.1 += u64::from(would_leave && t.is_some_and(|t| t.saved));
            arm.2 += 1;
        }
        let share = |x: u64, n: u64| (n > 0).then(|| x as f64 / n as f64);
        let planted_reduction = share(treated.1, treated.2)
            .zip(share(control.1, control.2))
            .map(|(t, c)| t - c);
        let would_leave = [share(treated.0, treated.2), share(control.0, control.2)];
        let result = WorldResult {
            params_seed: seed,
            churn: second.churn.clone(),
            events: second.lines,
            churners_planted: second.truth.iter().filter(|t| t.churner).count() as u64,
            scored: measured["base"]["scored"].as_u64().unwrap_or(0),
            leavers: measured["base"]["leavers"].as_u64().unwrap_or(0),
            auc: measured["auc"].as_f64(),
            top_decile_lift: measured["top_decile_lift"].as_f64(),
            stages: measured["stages"].clone(),
            retention: measured["retention"]["rows"][0].clone(),
            planted_reduction,
            would_leave,
            treated: treated.2,
            replay_seconds,
            replay_peak_mb,
            report_seconds,
            cost,
        };
        eprintln!(
            "churn-eval: world {seed}: AUC {:.3}, top-decile lift {:.2}, retention reduction measured {} planted {}",
            result.auc.unwrap_or(f64::NAN),
            result.top_decile_lift.unwrap_or(f64::NAN),
            result.retention["reduction"]
                .as_f64()
                .map_or("—".into(), |r| format!("{:+.3}", r)),
            result.planted_reduction.map_or("—".into(), |r| format!("{r:+.3}")),
        );
        report.worlds.push(result);
        std::fs::write(
            spec.out.join("report.json"),
            serde_json::to_string_pretty(&report)? + "\n",
        )?;
        std::fs::write(spec.out.join("report.md"), markdown(&report))?;
        if !spec.keep {
            std::fs::remove_file(&second.events).ok();
        }
    }
    Ok(report)
}

/// The evaluation as Markdown: each world, the mean and the worst.
pub fn markdown(report: &EvalReport) -> String {
    let mut m = format!(
        "# churn-eval\n\n`{}`\n\n{} subscribers × {} days, about {} events a subscriber a day; horizon {} days.\n\n\
         | world | events | churners planted | scored | left in horizon | AUC | top-decile lift | treated | reduction measured | 95 % | planted | would leave: treated | control |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|\n",
        report.command, report.subscribers, report.days, report.events_per_day, report.horizon_days
    );
    let f = |x: Option<f64>, d: usize| x.map_or("—".to_string(), |x| format!("{x:.d$}"));
    for w in &report.worlds {
        let r = &w.retention;
        m.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | [{}, {}] | {} | {} | {} |\n",
            w.params_seed,
            w.events,
            w.churners_planted,
            w.scored,
            w.leavers,
            f(w.auc, 3),
            f(w.top_decile_lift, 2),
            w.treated,
            f(r["reduction"].as_f64(), 3),
            f(r["interval"]["low"].as_f64(), 3),
            f(r["interval"]["high"].as_f64(), 3),
            f(w.planted_reduction, 3),
            f(w.would_leave[0], 3),
            f(w.would_leave[1], 3),
        ));
    }
    let aucs: Vec<f64> = report.worlds.iter().filter_map(|w| w.auc).collect();
    let lifts: Vec<f64> = report.worlds.iter().filter_map(|w| w.top_decile_lift).collect();
    for w in &report.worlds {
        if let Some(c) = &w.cost {
            m.push_str(&format!(
                "\nWorld {}: the first pass's replay ({} events) with the lifecycle features {:.0} events/s and {:.0} MB peak RSS; \
                 without them {:.0} events/s and {:.0} MB.\n",
                w.params_seed, c.events, c.with_events_per_second, c.with_peak_mb, c.without_events_per_second, c.without_peak_mb
            ));
        }
        if let Some(stages) = w.stages.as_array() {
            let text: Vec<String> = stages
                .iter()
                .map(|s| {
                    format!(
                        "{} {} ({:.1} %)",
                        s["stage"].as_str().unwrap_or("?"),
                        s["n"],
                        s["share"].as_f64().unwrap_or(0.0) * 100.0
                    )
                })
                .collect();
            m.push_str(&format!(
                "\nWorld {}: stages at the observation instant: {}.\n",
                w.params_seed,
                text.join(", ")
            ));
        }
    }
    if !aucs.is_empty() {
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let worst = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        m.push_str(&format!(
            "\nAUC mean {:.3}, worst {:.3}; top-decile lift mean {:.2}, worst {:.2}.\n",
            mean(&aucs),
            worst(&aucs),
            mean(&lifts),
            worst(&lifts)
        ));
    }
    m.push_str(&retention_summary(&report.worlds));
    m
}

/// Over the worlds: how far the measured reduction lies from the planted one, how often the
/// planted value is inside the measured 95 % interval, and how much of the gap the arms'
/// balance (who would have left anyway) accounts for.
fn retention_summary(worlds: &[WorldResult]) -> String {
    let rows: Vec<(f64, f64, bool, Option<f64>)> = worlds
        .iter()
        .filter_map(|w| {
            let r = &w.retention;
            let measured = r["reduction"].as_f64()?;
            let planted = w.planted_reduction?;
            let inside = r["interval"]["low"].as_f64().is_some_and(|lo| lo <= planted)
                && r["interval"]["high"].as_f64().is_some_and(|hi| planted <= hi);
            let imbalance = w.would_leave[1].zip(w.would_leave[0]).map(|(c, t)| c - t);
            Some((measured, planted, inside, imbalance))
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let n = rows.len() as f64;
    let gaps: Vec<f64> = rows.iter().map(|(m, p, _, _)| m - p).collect();
    let mean_gap = gaps.iter().sum::<f64>() / n;
    let worst_gap = gaps
        .iter()
        .copied()
        .fold(0.0f64, |a, g| if g.abs() > a.abs() { g } else { a });
    let inside = rows.iter().filter(|r| r.2).count();
    let imbalances: Vec<f64> = rows.iter().filter_map(|r| r.3).collect();
    let mut text = format!(
        "\nRetention: measured − planted, mean {:+.3}, largest {:+.3}; the planted value inside the measured 95 % interval in {} of {} worlds.",
        mean_gap,
        worst_gap,
        inside,
        rows.len()
    );
    if !imbalances.is_empty() {
        text.push_str(&format!(
            " The arms' balance (control's would-leave share − treated's) averages {:+.3}.",
            imbalances.iter().sum::<f64>() / imbalances.len() as f64
        ));
    }
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fit_recovers_planted_weights() {
        // Two factors with log-odds +2 and -1 over an intercept of -3, drawn exactly.
        let mut rows = Vec::new();
        let p = |logit: f64| 1.0 / (1.0 + f64::exp(-logit));
        for (pattern, logit) in [(vec![], -3.0), (vec![0], -1.0), (vec![1], -4.0), (vec![0, 1], -2.0)] {
            let n = 20_000;
            let leavers = (p(logit) * n as f64).round() as usize;
            for i in 0..n {
                rows.push((pattern.clone(), i < leavers));
            }
        }
        let fit = fit(&rows, 2, 1e-6);
        assert!((fit.intercept + 3.0).abs() < 0.02, "{fit:?}");
        assert!(
            (fit.weights[0] - 2.0).abs() < 0.02 && (fit.weights[1] + 1.0).abs() < 0.03,
            "{fit:?}"
        );
        // A penalty pulls the weights towards 0.
        let penalised = super::fit(&rows, 2, 5_000.0);
        assert!(penalised.weights[0].abs() < fit.weights[0].abs());
    }

    #[test]
    fn the_fit_stays_finite_when_a_rare_factor_separates_the_leavers() {
        // 3 % leave at random; a factor held by 8, all of whom leave; one held by nobody.
        let mut rows: Vec<(Vec<usize>, bool)> = (0..20_000).map(|i| (vec![], i % 33 == 0)).collect();
        rows.extend((0..8).map(|_| (vec![0], true)));
        rows.extend((0..500).map(|i| (vec![1], i % 10 == 0)));
        let fit = fit(&rows, 3, 1.0);
        assert!(
            fit.intercept.is_finite() && fit.weights.iter().all(|w| w.is_finite() && w.abs() < 20.0),
            "{fit:?}"
        );
        // The base rate is the intercept's; the separating factor is strong but bounded;
        // the factor nobody holds stays at 0; the log-loss is near the base rate's entropy.
        assert!((fit.intercept - (1.0f64 / 32.0).ln()).abs() < 0.1, "{fit:?}");
        assert!(fit.weights[0] > 2.0, "{fit:?}");
        assert!(fit.weights[2].abs() < 1e-9, "{fit:?}");
        assert!(fit.log_loss < 0.2, "{fit:?}");
    }

    #[test]
    fn the_retention_summary_weighs_measured_against_planted_over_the_worlds() {
        let world = |seed, measured: f64, low: f64, high: f64, planted, would: [f64; 2]| WorldResult {
            params_seed: seed,
            churn: ChurnSpec::default(),
            events: 0,
            churners_planted: 0,
            scored: 0,
            leavers: 0,
            auc: None,
            top_decile_lift: None,
            stages: Value::Null,
            retention: serde_json::json!({"reduction": measured, "interval": {"low": low, "high": high}}),
            planted_reduction: Some(planted),
            would_leave: [Some(would[0]), Some(would[1])],
            treated: 0,
            replay_seconds: 0.0,
            replay_peak_mb: 0.0,
            report_seconds: 0.0,
            cost: None,
        };
        // One world finds +0.09 against +0.03 planted (outside), one +0.02 against +0.04 (inside).
        let worlds = [
            world(1, 0.09, 0.04, 0.14, 0.03, [0.35, 0.41]),
            world(2, 0.02, -0.03, 0.07, 0.04, [0.40, 0.38]),
        ];
        let text = retention_summary(&worlds);
        assert!(text.contains("mean +0.020, largest +0.060"), "{text}");
        assert!(
            text.contains("inside the measured 95 % interval in 1 of 2 worlds"),
            "{text}"
        );
        assert!(text.contains("averages +0.020"), "{text}");
        assert_eq!(retention_summary(&[]), "");
    }

    #[test]
    fn the_rewrite_keeps_the_file_and_replaces_the_numbers() {
        let text = "# comment\nfitted = \"prior\"\nintercept = -3.9\nthreshold = 0.33\n\n[[factor]]\nname = \"a\"\nwhen = \"x > 0\"\nweight = 2.2\nreason = \"r\"\n\n[[factor]]\nname = \"b\"\nwhen = \"y\"\nweight = -1.0\nreason = \"s\"\n";
        let fit = Fit {
            intercept: -4.25,
            weights: vec![1.5, -0.75],
            rows: 1,
            leavers: 0,
            log_loss: 0.0,
            iterations: 1,
        };
        let out = rewrite(text, &fit, "fit \"x\"");
        let value: toml::Value = toml::from_str(&out).unwrap();
        assert_eq!(value["fitted"].as_str(), Some("fit \"x\""));
        assert_eq!(value["intercept"].as_float(), Some(-4.25));
        assert_eq!(value["threshold"].as_float(), Some(0.33));
        let weights: Vec<f64> = value["factor"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["weight"].as_float().unwrap())
            .collect();
        assert_eq!(weights, [1.5, -0.75]);
        assert!(out.starts_with("# comment\n"));
        assert_eq!(factor_names(&out).unwrap(), ["a", "b"]);
    }
}
