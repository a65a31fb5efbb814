//! How well the churn-risk score foretold who left, and what retention did
//! (`kairos report churn`). Pure: no I/O (the replay and the reading are [`super`]'s).
//!
//! # What is measured
//!
//! - **The score.** Every customer not yet gone at the observation instant `T` is scored as
//!   kairos scored them then (`subscriber.churn_risk`, after everything before `T` was
//!   applied). A customer *left* when the log has a `customer` record with
//!   `"status": "terminated"` for them in `(T, T + horizon]` (contract §5.1).
//!   - **AUC**: the chance that a leaver is scored above a stayer (ties count half; the
//!     Mann–Whitney statistic).
//!   - **Lift at the top**: the churn rate among the highest scores over the rate of all.
//!     The score takes few distinct values, so many customers tie; a top `k` that cuts a
//!     tie takes the tie's rate for the part it takes (the expectation over a random order
//!     within the tie), not whichever customers a sort happened to put first.
//!   - **Cumulative gains**: the share of leavers among the top 10 %, 20 %, … of scores.
//!   - **Calibration**: per band of predicted risk, the mean prediction beside the rate
//!     observed (Wilson 95 % interval).
//!   - **Reasons**: per reason code given at `T`, how many held it and how many of them left.
//!   - **Stages**: the lifecycle stage at `T` and the churn rate of each.
//! - **The retention loop.** Among the decisions of the retention rules (by default those on
//!   the `churn_risk` and `cancel_intent` moments, and declared moments whose `when` reads
//!   the score, as `household_at_risk` does) whose horizon lies within the log, by
//!   intention to treat: a subscriber is *treated* when their first decision was sent,
//!   *control* when it was held out (`global_holdout`, `rule_holdout`); any other suppression
//!   leaves them out of the comparison. From that decision's `moment_ts`, did they terminate
//!   within the horizon? The churn rates with Wilson intervals, and the reduction (control −
//!   treated) with Newcombe's hybrid score interval, as `report uplift` gives them. Per rule,
//!   the rule's own first decisions; pooled (`all`), over the rules that hold some out (a
//!   subscriber held out of one rule may still be sent another's: that dilutes the reduction,
//!   it does not bias it in the treatment's favour).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use kairos_model::time::{format_rfc3339, DAY};
use kairos_model::{Millis, Msisdn, Stage};
use serde::Serialize;

use super::dryrun::escape_html;
use super::uplift::{newcombe, wilson, DecisionRecord, Group, Interval, Z95};

/// One customer as scored at the observation instant.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    pub msisdn: Msisdn,
    pub risk: f64,
    pub stage: String,
    pub reasons: Vec<String>,
    /// Terminated within the horizon after the observation instant.
    pub left: bool,
}

/// What the report was asked and what it read, for its header.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Inputs {
    pub events: Vec<String>,
    pub rules: String,
    /// The churn model's provenance (`fitted` of `churn.toml`).
    pub model: String,
    pub at: String,
    pub horizon_days: f64,
    pub first_event: Option<String>,
    pub last_event: Option<String>,
    /// Terminated records in the log.
    pub terminations: u64,
    pub events_read: u64,
    pub events_invalid: u64,
    pub generated_by: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Base {
    /// Customers scored (not gone at `T`).
    pub scored: u64,
    /// Customers already gone at `T` (not scored).
    pub gone: u64,
    /// Of the scored, how many left within the horizon.
    pub leavers: u64,
    pub rate: f64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TopK {
    pub k: u64,
    /// Expected leavers among the top `k` (fractional where `k` cuts a tie).
    pub leavers: f64,
    pub precision: f64,
    pub lift: f64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Gain {
    /// Share of the scored, best first (0.1, 0.2, …, 1).
    pub share: f64,
    /// Share of the leavers among them.
    pub captured: f64,
    pub lift: f64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Band {
    pub from: f64,
    pub to: f64,
    pub n: u64,
    pub mean_risk: f64,
    pub leavers: u64,
    pub observed: f64,
    pub interval: Option<Interval>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ReasonRow {
    pub reason: String,
    pub n: u64,
    pub leavers: u64,
    pub rate: f64,
    pub interval: Option<Interval>,
    pub lift: f64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StageRow {
    pub stage: String,
    pub n: u64,
    pub share: f64,
    pub leavers: u64,
    pub rate: f64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Arm {
    pub n: u64,
    pub left: u64,
    /// Churn rate within the horizon (none for an empty group).
    pub rate: Option<f64>,
    pub interval: Option<Interval>,
}

impl Arm {
    fn new(left: u64, n: u64) -> Arm {
        Arm {
            n,
            left,
            rate: (n > 0).then(|| left as f64 / n as f64),
            interval: wilson(left, n, Z95),
        }
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RetentionRow {
    /// A rule id, or `all` (pooled over the retention rules).
    pub rule: String,
    pub treated: Arm,
    pub control: Arm,
    /// Control's churn rate minus treated's: how much churn the retention prevented.
    pub reduction: Option<f64>,
    pub interval: Option<Interval>,
    /// The reduction over the control's rate.
    pub relative: Option<f64>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RetentionLoop {
    pub rules: Vec<String>,
    /// Decisions whose horizon ends after the log (not counted).
    pub incomplete: u64,
    pub rows: Vec<RetentionRow>,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct ChurnReport {
    pub version: u32,
    pub inputs: Inputs,
    pub base: Base,
    /// None without both leavers and stayers.
    pub auc: Option<f64>,
    pub top_decile_lift: Option<f64>,
    pub top: Vec<TopK>,
    pub gains: Vec<Gain>,
    pub calibration: Vec<Band>,
    pub reasons: Vec<ReasonRow>,
    pub stages: Vec<StageRow>,
    pub retention: RetentionLoop,
    /// With `--daily`: the same scores day by day (empty otherwise).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub daily: Vec<DayRow>,
}

/// The scores as of one day (its first instant, UTC) against who left within the horizon
/// after it, and where customers stood.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DayRow {
    pub at: String,
    pub base: Base,
    pub auc: Option<f64>,
    pub top_decile_lift: Option<f64>,
    /// The stage distribution (the gone among it) and each stage's churn rate.
    pub stages: Vec<StageRow>,
}

/// Where a customer in `stage` at `at`, terminated at `terminated` (if ever), stands for the
/// report: `None` when already gone at `at`, else whether they left within `horizon` after it.
pub fn outcome(stage: Stage, terminated: Option<Millis>, at: Millis, horizon: Millis) -> Option<bool> {
    if stage == Stage::Gone || terminated.is_some_and(|t| t <= at) {
        return None;
    }
    Some(terminated.is_some_and(|t| t <= at.saturating_add(horizon)))
}

/// The day-by-day series of `standings` — (instant, number, risk, stage), as a replay's
/// `Watch::daily` gives them — against `terminated` (each subscriber's termination instant)
/// within `horizon` after each instant.
pub fn daily(
    standings: &[(Millis, Msisdn, f32, Stage)],
    terminated: &HashMap<Msisdn, Millis>,
    horizon: Millis,
) -> Vec<DayRow> {
    let mut rows = Vec::new();
    for day in standings.chunk_by(|a, b| a.0 == b.0) {
        let at = day[0].0;
        let mut gone = 0;
        let mut scored = Vec::with_capacity(day.len());
        for (_, msisdn, risk, stage) in day {
            let Some(left) = outcome(*stage, terminated.get(msisdn).copied(), at, horizon) else {
                gone += 1;
                continue;
            };
            scored.push(Scored {
                msisdn: *msisdn,
                risk: f64::from(*risk),
                stage: stage.as_str().to_string(),
                reasons: Vec::new(),
                left,
            });
        }
        let (base, auc, top_decile_lift, _, _) = score(&scored, gone, &[]);
        rows.push(DayRow {
            at: instant(at),
            base,
            auc,
            top_decile_lift,
            stages: stages(&scored, gone),
        });
    }
    rows
}

/// The report format's version.
pub const VERSION: u32 = 1;

/// The lifecycle stages in the order a report lists them.
const STAGES: [&str; 6] = ["new", "growth", "stable", "decline", "leaving", "gone"];

/// AUC of `scored` (ties count half), or `None` without both classes.
pub fn auc(scored: &[Scored]) -> Option<f64> {
    let mut by_risk: Vec<(f64, bool)> = scored.iter().map(|s| (s.risk, s.left)).collect();
    by_risk.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = by_risk.iter().filter(|(_, left)| *left).count() as f64;
    let negatives = by_risk.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    // Sum of the leavers' ranks (1-based), a tie taking its average rank.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < by_risk.len() {
        let mut j = i;
        while j < by_risk.len() && by_risk[j].0 == by_risk[i].0 {
            j += 1;
        }
        let average = (i + 1 + j) as f64 / 2.0;
        let leavers = by_risk[i..j].iter().filter(|(_, left)| *left).count() as f64;
        rank_sum += average * leavers;
        i = j;
    }
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

/// Ties of equal risk, highest first: (size, leavers).
fn ties(scored: &[Scored]) -> Vec<(u64, u64)> {
    let mut by_risk: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for s in scored {
        let entry = by_risk.entry(s.risk.to_bits()).or_default();
        entry.0 += 1;
        entry.1 += u64::from(s.left);
    }
    // Non-negative floats order as their bits do.
    by_risk.into_values().rev().collect()
}

/// Expected leavers among the top `k` of `ties` (a random order within each tie).
fn expected_leavers(ties: &[(u64, u64)], k: u64) -> f64 {
    let mut left = k;
    let mut leavers = 0.0;
    for &(size, hits) in ties {
        if left == 0 {
            break;
        }
        let take = left.min(size);
        leavers += hits as f64 * take as f64 / size as f64;
        left -= take;
    }
    leavers
}

/// Measures the score of `scored` (the customers not gone at `T`; `gone` of them already
/// were), the top `tops` (counts; the top tenth is always given as the lift).
pub fn score(scored: &[Scored], gone: u64, tops: &[u64]) -> (Base, Option<f64>, Option<f64>, Vec<TopK>, Vec<Gain>) {
    let n = scored.len() as u64;
    let leavers = scored.iter().filter(|s| s.left).count() as u64;
    let rate = if n > 0 { leavers as f64 / n as f64 } else { 0.0 };
    let base = Base {
        scored: n,
        gone,
        leavers,
        rate,
    };
    let ties = ties(scored);
    let lift_of = |k: u64| {
        let expected = expected_leavers(&ties, k);
        let precision = if k > 0 { expected / k as f64 } else { 0.0 };
        (expected, precision, if rate > 0.0 { precision / rate } else { 0.0 })
    };
    let top: Vec<TopK> = tops
        .iter()
        .filter(|k| **k > 0 && **k <= n)
        .map(|&k| {
            let (leavers, precision, lift) = lift_of(k);
            TopK {
                k,
                leavers,
                precision,
                lift,
            }
        })
        .collect();
    let decile = (n as f64 / 10.0).round() as u64;
    let top_decile_lift = (decile > 0 && leavers > 0).then(|| lift_of(decile).2);
    let gains = (1..=10)
        .filter(|_| n > 0 && leavers > 0)
        .map(|d| {
            let share = f64::from(d) / 10.0;
            let k = (n as f64 * share).round() as u64;
            let captured = expected_leavers(&ties, k) / leavers as f64;
            Gain {
                share,
                captured,
                lift: captured / share,
            }
        })
        .collect();
    (base, auc(scored), top_decile_lift, top, gains)
}

/// Per band of predicted risk (tenths), the mean prediction and the rate observed.
pub fn calibration(scored: &[Scored]) -> Vec<Band> {
    let mut bands: BTreeMap<usize, (u64, f64, u64)> = BTreeMap::new();
    for s in scored {
        let band = ((s.risk * 10.0).floor() as usize).min(9);
        let entry = bands.entry(band).or_default();
        entry.0 += 1;
        entry.1 += s.risk;
        entry.2 += u64::from(s.left);
    }
    bands
        .into_iter()
        .map(|(band, (n, sum, leavers))| Band {
            from: band as f64 / 10.0,
            to: (band + 1) as f64 / 10.0,
            n,
            mean_risk: sum / n as f64,
            leavers,
            observed: leavers as f64 / n as f64,
            interval: wilson(leavers, n, Z95),
        })
        .collect()
}

/// Per reason code, how many held it and how many of them left; most held first.
pub fn reasons(scored: &[Scored], base_rate: f64) -> Vec<ReasonRow> {
    let mut by: HashMap<&str, (u64, u64)> = HashMap::new();
    for s in scored {
        for reason in &s.reasons {
            let entry = by.entry(reason.as_str()).or_default();
            entry.0 += 1;
            entry.1 += u64::from(s.left);
        }
    }
    let mut rows: Vec<ReasonRow> = by
        .into_iter()
        .map(|(reason, (n, leavers))| {
            let rate = leavers as f64 / n as f64;
            ReasonRow {
                reason: reason.to_string(),
                n,
                leavers,
                rate,
                interval: wilson(leavers, n, Z95),
                lift: if base_rate > 0.0 { rate / base_rate } else { 0.0 },
            }
        })
        .collect();
    rows.sort_by(|a, b| b.n.cmp(&a.n).then_with(|| a.reason.cmp(&b.reason)));
    rows
}

/// The stage distribution at `T` (the gone among it) and each stage's churn rate.
pub fn stages(scored: &[Scored], gone: u64) -> Vec<StageRow> {
    let total = scored.len() as u64 + gone;
    let mut by: HashMap<&str, (u64, u64)> = HashMap::new();
    for s in scored {
        let entry = by.entry(s.stage.as_str()).or_default();
        entry.0 += 1;
        entry.1 += u64::from(s.left);
    }
    if gone > 0 {
        by.entry("gone").or_default().0 += gone;
    }
    let mut names: Vec<&str> = STAGES.to_vec();
    let mut others: Vec<&str> = by.keys().filter(|k| !STAGES.contains(k)).copied().collect();
    others.sort_unstable();
    names.extend(others);
    names
        .into_iter()
        .filter_map(|stage| {
            let (n, leavers) = *by.get(stage)?;
            Some(StageRow {
                stage: stage.to_string(),
                n,
                share: n as f64 / total.max(1) as f64,
                leavers,
                rate: leavers as f64 / n as f64,
            })
        })
        .collect()
}

/// The retention loop over `decisions` of the rules `rules`: `terminated` gives each
/// subscriber's termination instant; a decision whose horizon ends after `end` is not counted.
///
/// Each comparison is by intention to treat: a subscriber's arm is the group of their first
/// decision (sent: treated; held out: control; any other suppression: not compared), and
/// the horizon runs from that decision's `moment_ts`. Per rule, the rule's own first
/// decision; pooled (`all`), the first decision among the rules that hold some subscribers
/// out — a rule with no control group would add treated subscribers of another kind only.
pub fn retention(
    decisions: &[DecisionRecord],
    rules: &[String],
    terminated: &HashMap<Msisdn, Millis>,
    horizon: Millis,
    end: Millis,
) -> RetentionLoop {
    let mut incomplete = 0;
    // Per rule, per subscriber: the first decision (moment_ts, group).
    type First = HashMap<Msisdn, (Millis, Group)>;
    let mut per_rule: BTreeMap<&str, First> = rules.iter().map(|r| (r.as_str(), First::new())).collect();
    for d in decisions {
        let Some(first) = per_rule.get_mut(d.rule.as_str()) else {
            continue;
        };
        if d.moment_ts.saturating_add(horizon) > end {
            incomplete += 1;
            continue;
        }
        let entry = first.entry(d.msisdn).or_insert((d.moment_ts, d.group));
        if d.moment_ts < entry.0 {
            *entry = (d.moment_ts, d.group);
        }
    }
    let mut pooled = First::new();
    for first in per_rule
        .values()
        .filter(|f| f.values().any(|(_, g)| *g == Group::Control))
    {
        for (msisdn, (at, group)) in first {
            let entry = pooled.entry(*msisdn).or_insert((*at, *group));
            if *at < entry.0 {
                *entry = (*at, *group);
            }
        }
    }
    let row = |rule: &str, first: &First| {
        let (mut treated, mut control) = ((0, 0), (0, 0));
        for (msisdn, (from, group)) in first {
            let left = terminated
                .get(msisdn)
                .is_some_and(|t| *t > *from && *t <= from.saturating_add(horizon));
            let arm = match group {
                Group::Treated => &mut treated,
                Group::Control => &mut control,
                Group::Excluded => continue,
            };
            arm.0 += u64::from(left);
            arm.1 += 1;
        }
        let (t, c) = (Arm::new(treated.0, treated.1), Arm::new(control.0, control.1));
        let reduction = match (t.rate, c.rate) {
            (Some(t), Some(c)) => Some(c - t),
            _ => None,
        };
        RetentionRow {
            rule: rule.to_string(),
            interval: newcombe(control.0, control.1, treated.0, treated.1, Z95),
            relative: reduction.zip(c.rate).filter(|(_, c)| *c > 0.0).map(|(r, c)| r / c),
            reduction,
            treated: t,
            control: c,
        }
    };
    let mut rows = vec![row("all", &pooled)];
    rows.extend(per_rule.iter().map(|(rule, first)| row(rule, first)));
    RetentionLoop {
        rules: rules.to_vec(),
        incomplete,
        rows,
    }
}

/// Builds the report.
pub fn build(inputs: Inputs, scored: &[Scored], gone: u64, tops: &[u64], retention: RetentionLoop) -> ChurnReport {
    let (base, auc, top_decile_lift, top, gains) = score(scored, gone, tops);
    ChurnReport {
        version: VERSION,
        calibration: calibration(scored),
        reasons: reasons(scored, base.rate),
        stages: stages(scored, gone),
        inputs,
        base,
        auc,
        top_decile_lift,
        top,
        gains,
        retention,
        daily: Vec::new(),
    }
}

/// `0.1234` as `12.3 %`.
fn pct(x: f64) -> String {
    format!("{:.1} %", x * 100.0)
}

fn interval(i: &Option<Interval>) -> String {
    i.as_ref()
        .map_or_else(|| "—".to_string(), |i| format!("[{}, {}]", pct(i.low), pct(i.high)))
}

fn opt(x: Option<f64>, f: impl Fn(f64) -> String) -> String {
    x.map_or_else(|| "not enough data".to_string(), f)
}

/// The horizon of a report in days, for its text.
pub fn horizon_days(horizon: Millis) -> f64 {
    horizon as f64 / DAY as f64
}

/// An instant as the reports print it.
pub fn instant(at: Millis) -> String {
    format_rfc3339(at)
}

impl ChurnReport {
    /// Pretty JSON with a final newline.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut m = String::new();
        let i = &self.inputs;
        let _ = writeln!(
            m,
            "# Churn report: scores at {} against who left within {} days\n",
            i.at, i.horizon_days
        );
        let _ = writeln!(
            m,
            "Events: {} ({} read, {} invalid; first {}, last {}). Rules: `{}`. Model: {}.\n",
            i.events.join(", "),
            i.events_read,
            i.events_invalid,
            i.first_event.as_deref().unwrap_or("—"),
            i.last_event.as_deref().unwrap_or("—"),
            i.rules,
            i.model
        );
        let b = &self.base;
        let _ = writeln!(
            m,
            "| scored | already gone | left within the horizon | churn rate | AUC | top-decile lift |\n|---:|---:|---:|---:|---:|---:|\n| {} | {} | {} | {} | {} | {} |\n",
            b.scored,
            b.gone,
            b.leavers,
            pct(b.rate),
            opt(self.auc, |a| format!("{a:.3}")),
            opt(self.top_decile_lift, |l| format!("{l:.2}×")),
        );
        if !self.top.is_empty() {
            let _ = writeln!(
                m,
                "## The top of the scores\n\n| top k | leavers (expected) | precision | lift |\n|---:|---:|---:|---:|"
            );
            for t in &self.top {
                let _ = writeln!(
                    m,
                    "| {} | {:.1} | {} | {:.2}× |",
                    t.k,
                    t.leavers,
                    pct(t.precision),
                    t.lift
                );
            }
            m.push('\n');
        }
        if !self.gains.is_empty() {
            let _ = writeln!(
                m,
                "## Cumulative gains\n\n| top share | leavers captured | lift |\n|---:|---:|---:|"
            );
            for g in &self.gains {
                let _ = writeln!(m, "| {} | {} | {:.2}× |", pct(g.share), pct(g.captured), g.lift);
            }
            m.push('\n');
        }
        let _ = writeln!(
            m,
            "## Calibration\n\n| predicted | n | mean predicted | observed | 95 % interval |\n|---|---:|---:|---:|---|"
        );
        for band in &self.calibration {
            let _ = writeln!(
                m,
                "| {}–{} | {} | {} | {} | {} |",
                pct(band.from),
                pct(band.to),
                band.n,
                pct(band.mean_risk),
                pct(band.observed),
                interval(&band.interval)
            );
        }
        let _ = writeln!(m, "\n## Reasons given at the observation instant\n\n| reason | held by | left | rate | 95 % interval | lift |\n|---|---:|---:|---:|---|---:|");
        for r in &self.reasons {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {:.2}× |",
                r.reason,
                r.n,
                r.leavers,
                pct(r.rate),
                interval(&r.interval),
                r.lift
            );
        }
        let _ = writeln!(m, "\n## Lifecycle stages at the observation instant\n\n| stage | customers | share | left | churn rate |\n|---|---:|---:|---:|---:|");
        for s in &self.stages {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} |",
                s.stage,
                s.n,
                pct(s.share),
                s.leavers,
                pct(s.rate)
            );
        }
        if !self.daily.is_empty() {
            let _ = write!(
                m,
                "\n## Day by day\n\nThe scores as of each day (00:00 UTC) against who left within the horizon after it, \
                 and the stages then (shares of every customer known, the gone among them).\n\n\
                 | day | scored | left | churn rate | AUC | top-decile lift |"
            );
            for stage in STAGES {
                let _ = write!(m, " {stage} |");
            }
            let _ = write!(m, "\n|---|---:|---:|---:|---:|---:|");
            for _ in STAGES {
                m.push_str("---:|");
            }
            m.push('\n');
            for d in &self.daily {
                let _ = write!(
                    m,
                    "| {} | {} | {} | {} | {} | {} |",
                    d.at.get(..10).unwrap_or(&d.at),
                    d.base.scored,
                    d.base.leavers,
                    pct(d.base.rate),
                    opt(d.auc, |a| format!("{a:.3}")),
                    opt(d.top_decile_lift, |l| format!("{l:.2}×")),
                );
                for stage in STAGES {
                    let share = d.stages.iter().find(|s| s.stage == stage).map_or(0.0, |s| s.share);
                    let _ = write!(m, " {} |", pct(share));
                }
                m.push('\n');
            }
        }
        let r = &self.retention;
        let _ = writeln!(
            m,
            "\n## The retention loop\n\nRules: {}. Decisions whose horizon ends after the log, not counted: {}.\n\n\
             | rule | treated | left | churn | 95 % | control | left | churn | 95 % | reduction (control − treated) | 95 % (Newcombe) | relative |\n\
             |---|---:|---:|---:|---|---:|---:|---:|---|---:|---|---:|",
            if r.rules.is_empty() { "none".to_string() } else { r.rules.join(", ") },
            r.incomplete
        );
        for row in &r.rows {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.rule,
                row.treated.n,
                row.treated.left,
                opt(row.treated.rate, pct),
                interval(&row.treated.interval),
                row.control.n,
                row.control.left,
                opt(row.control.rate, pct),
                interval(&row.control.interval),
                opt(row.reduction, |x| format!("{:+.1} pt", x * 100.0)),
                interval(&row.interval),
                opt(row.relative, pct),
            );
        }
        let _ = writeln!(
            m,
            "\nGenerated by {} (report format version {}).",
            i.generated_by, self.version
        );
        m
    }

    /// The report as one self-contained HTML page with its plots.
    pub fn to_html(&self) -> String {
        let mut h = String::new();
        let i = &self.inputs;
        let title = format!("Churn report: scores at {}", i.at);
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"generator\" content=\"{gen}\">\n\
             <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n<h1>{title}</h1>\n\
             <p class=\"lede\">Against who terminated within {days} days after; model: {model}.</p>\n",
            gen = escape_html(&i.generated_by),
            title = escape_html(&title),
            days = i.horizon_days,
            model = escape_html(&i.model),
        );
        let b = &self.base;
        let card = |h: &mut String, metric: &str, label: &str, value: String| {
            let _ = write!(
                h,
                "<div class=\"card\"><div class=\"label\">{label}</div><div class=\"value\" data-metric=\"{metric}\">{}</div></div>",
                escape_html(&value)
            );
        };
        h.push_str("<div class=\"cards\">");
        card(&mut h, "scored", "customers scored", b.scored.to_string());
        card(&mut h, "leavers", "left within the horizon", b.leavers.to_string());
        card(&mut h, "rate", "churn rate", pct(b.rate));
        card(&mut h, "auc", "AUC", opt(self.auc, |a| format!("{a:.3}")));
        card(
            &mut h,
            "lift",
            "top-decile lift",
            opt(self.top_decile_lift, |l| format!("{l:.2}×")),
        );
        if let Some(all) = self.retention.rows.first() {
            card(
                &mut h,
                "reduction",
                "churn prevented (all retention)",
                opt(all.reduction, |x| format!("{:+.1} pt", x * 100.0)),
            );
        }
        h.push_str("</div>\n<div class=\"grid\">");
        self.gains_svg(&mut h);
        self.calibration_svg(&mut h);
        self.stages_svg(&mut h);
        h.push_str("</div>\n");
        let _ = write!(h, "<h2>The top of the scores</h2>\n<table><tr><th>top k</th><th>leavers (expected)</th><th>precision</th><th>lift</th></tr>");
        for t in &self.top {
            let _ = write!(
                h,
                "<tr data-top=\"{k}\"><td>{k}</td><td>{:.1}</td><td data-metric=\"precision\">{}</td><td>{:.2}×</td></tr>",
                t.leavers,
                pct(t.precision),
                t.lift,
                k = t.k
            );
        }
        h.push_str("</table>\n<h2>Reasons given at the observation instant</h2>\n<table><tr><th class=\"text\">reason</th><th>held by</th><th>left</th><th>rate</th><th>95 % interval</th><th>lift</th></tr>");
        for r in &self.reasons {
            let _ = write!(
                h,
                "<tr><td class=\"text\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}×</td></tr>",
                escape_html(&r.reason),
                r.n,
                r.leavers,
                pct(r.rate),
                interval(&r.interval),
                r.lift
            );
        }
        h.push_str("</table>\n");
        self.daily_html(&mut h);
        h.push_str("<h2>The retention loop</h2>\n");
        let _ = write!(
            h,
            "<p class=\"note\">Rules: {}. By intention to treat: a subscriber is treated when their first retention \
             decision was sent, control when it was held out; the pooled row takes the rules that hold someone out. \
             Decisions whose horizon ends after the log, not counted: {}.</p>\n<table><tr><th class=\"text\">rule</th>\
             <th>treated</th><th>left</th><th>churn</th><th>control</th><th>left</th><th>churn</th><th>reduction</th><th>95 % (Newcombe)</th><th>relative</th></tr>",
            escape_html(&self.retention.rules.join(", ")),
            self.retention.incomplete
        );
        for row in &self.retention.rows {
            let _ = write!(
                h,
                "<tr data-rule=\"{rule}\"><td class=\"text\">{rule}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td data-metric=\"reduction\">{}</td><td>{}</td><td>{}</td></tr>",
                row.treated.n,
                row.treated.left,
                opt(row.treated.rate, pct),
                row.control.n,
                row.control.left,
                opt(row.control.rate, pct),
                opt(row.reduction, |x| format!("{:+.1} pt", x * 100.0)),
                interval(&row.interval),
                opt(row.relative, pct),
                rule = escape_html(&row.rule),
            );
        }
        let _ = write!(
            h,
            "</table>\n<p class=\"note\">Events: {} ({} read, {} invalid; {} to {}); {} terminations in the log. Generated by {} \
             (report format version {}).</p>\n</main>\n</body>\n</html>\n",
            escape_html(&i.events.join(", ")),
            i.events_read,
            i.events_invalid,
            escape_html(i.first_event.as_deref().unwrap_or("—")),
            escape_html(i.last_event.as_deref().unwrap_or("—")),
            i.terminations,
            escape_html(&i.generated_by),
            self.version
        );
        h
    }

    /// The cumulative gains (lift) curve: share of leavers captured by the top share.
    fn gains_svg(&self, h: &mut String) {
        let points: Vec<(f64, f64)> = std::iter::once((0.0, 0.0))
            .chain(self.gains.iter().map(|g| (g.share, g.captured)))
            .collect();
        plot(
            h,
            (
                "gains-chart",
                "Cumulative gains",
                "top share of scores",
                "share of leavers",
            ),
            &points,
            true,
            Reference::Diagonal,
        );
    }

    /// Observed churn against predicted risk, per band.
    fn calibration_svg(&self, h: &mut String) {
        let max = self
            .calibration
            .iter()
            .map(|b| b.mean_risk.max(b.observed))
            .fold(0.05_f64, f64::max)
            .min(1.0);
        let points: Vec<(f64, f64)> = self
            .calibration
            .iter()
            .map(|b| (b.mean_risk / max, b.observed / max))
            .collect();
        let title = format!("Calibration (axes to {})", pct(max));
        plot(
            h,
            ("calibration-chart", &title, "predicted risk", "observed churn"),
            &points,
            false,
            Reference::Diagonal,
        );
    }

    /// The day-by-day section: AUC by day, the stage flows (each stage's share of the
    /// customers day by day, stacked) and the table. Nothing without `--daily`.
    fn daily_html(&self, h: &mut String) {
        if self.daily.is_empty() {
            return;
        }
        h.push_str("<h2>Day by day</h2>\n<p class=\"note\">The scores as of each day (00:00 UTC) against who left within the horizon after it, and the stages then.</p>\n<div class=\"grid\">");
        let last = (self.daily.len().max(2) - 1) as f64;
        let points: Vec<(f64, f64)> = self
            .daily
            .iter()
            .enumerate()
            .filter_map(|(k, d)| Some((k as f64 / last, d.auc?)))
            .collect();
        let x_label = format!(
            "day, {} to {}",
            self.daily[0].at.get(..10).unwrap_or_default(),
            self.daily[self.daily.len() - 1].at.get(..10).unwrap_or_default()
        );
        plot(
            h,
            ("daily-auc-chart", "AUC day by day (0.5: chance)", &x_label, "AUC"),
            &points,
            true,
            Reference::Half,
        );
        self.stage_flows_svg(h);
        h.push_str("</div>\n<table><tr><th class=\"text\">day</th><th>scored</th><th>left</th><th>churn rate</th><th>AUC</th><th>top-decile lift</th>");
        for stage in STAGES {
            let _ = write!(h, "<th>{stage}</th>");
        }
        h.push_str("</tr>");
        for d in &self.daily {
            let day = d.at.get(..10).unwrap_or(&d.at);
            let _ = write!(
                h,
                "<tr data-day=\"{day}\"><td class=\"text\">{day}</td><td>{}</td><td>{}</td><td>{}</td><td data-metric=\"auc\">{}</td><td>{}</td>",
                d.base.scored,
                d.base.leavers,
                pct(d.base.rate),
                opt(d.auc, |a| format!("{a:.3}")),
                opt(d.top_decile_lift, |l| format!("{l:.2}×")),
                day = escape_html(day),
            );
            for stage in STAGES {
                let share = d.stages.iter().find(|s| s.stage == stage).map_or(0.0, |s| s.share);
                let _ = write!(h, "<td data-stage=\"{stage}\">{}</td>", pct(share));
            }
            h.push_str("</tr>");
        }
        h.push_str("</table>\n");
    }

    /// The stage flows: each stage's share of the customers, day by day, stacked in stage
    /// order (new at the bottom, gone on top).
    fn stage_flows_svg(&self, h: &mut String) {
        const W: f64 = 300.0;
        const H: f64 = 220.0;
        const L: f64 = 10.0;
        const T: f64 = 28.0;
        const COLOURS: [&str; 6] = ["#16a34a", "#65a30d", "#2563eb", "#f59e0b", "#dc2626", "#64748b"];
        let n = self.daily.len();
        let x = |k: usize| L + if n > 1 { k as f64 / (n - 1) as f64 * W } else { W / 2.0 };
        let y = |v: f64| T + (1.0 - v.clamp(0.0, 1.0)) * H;
        let _ = write!(
            h,
            "<figure><svg id=\"stage-flows-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{ht}\" role=\"img\" aria-label=\"stage flows\">\
             <text x=\"4\" y=\"16\" font-size=\"13\" font-weight=\"600\">Stage flows (share of customers)</text>",
            w = L + W + 90.0,
            ht = T + H + 20.0,
        );
        let share = |d: &DayRow, stage: &str| d.stages.iter().find(|s| s.stage == stage).map_or(0.0, |s| s.share);
        let mut below = vec![0.0; n];
        for (stage, colour) in STAGES.iter().zip(COLOURS) {
            let above: Vec<f64> = self
                .daily
                .iter()
                .zip(&below)
                .map(|(d, b)| b + share(d, stage))
                .collect();
            let mut points: Vec<String> = (0..n).map(|k| format!("{:.1},{:.1}", x(k), y(above[k]))).collect();
            points.extend((0..n).rev().map(|k| format!("{:.1},{:.1}", x(k), y(below[k]))));
            let _ = write!(
                h,
                "<polygon points=\"{}\" fill=\"{colour}\" fill-opacity=\"0.8\"><title>{stage}</title></polygon>",
                points.join(" ")
            );
            let middle = (above[n - 1] + below[n - 1]) / 2.0;
            let _ = write!(
                h,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{stage}</text>",
                L + W + 6.0,
                y(middle) + 4.0
            );
            below = above;
        }
        h.push_str("</svg></figure>");
    }

    /// The stage distribution at the observation instant.
    fn stages_svg(&self, h: &mut String) {
        const W: f64 = 300.0;
        let rows = self.stages.len().max(1) as f64;
        let height = 40.0 + rows * 26.0;
        let _ = write!(
            h,
            "<figure><svg id=\"stages-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{height}\" role=\"img\" aria-label=\"stages\">\
             <text x=\"4\" y=\"16\" font-size=\"13\" font-weight=\"600\">Stages at the observation instant</text>"
        );
        for (k, s) in self.stages.iter().enumerate() {
            let y = 30.0 + k as f64 * 26.0;
            let width = (s.share * (W - 150.0)).max(1.0);
            let _ = write!(
                h,
                "<text x=\"4\" y=\"{ty}\" font-size=\"12\">{stage}</text><rect x=\"70\" y=\"{y}\" width=\"{width:.1}\" height=\"18\" fill=\"#2563eb\"/>\
                 <text x=\"{tx:.1}\" y=\"{ty}\" font-size=\"12\" data-stage=\"{stage}\">{}</text>",
                s.n,
                ty = y + 13.0,
                tx = 74.0 + width,
                stage = escape_html(&s.stage),
            );
        }
        h.push_str("</svg></figure>");
    }
}

/// What a plot's dashed reference line is.
#[derive(Clone, Copy)]
enum Reference {
    /// The diagonal: chance for gains, perfect calibration.
    Diagonal,
    /// The level 0.5: chance for an AUC.
    Half,
}

/// A line plot in the unit square with a dashed reference line, points as dots.
fn plot(
    h: &mut String,
    (id, title, x_label, y_label): (&str, &str, &str, &str),
    points: &[(f64, f64)],
    line: bool,
    reference: Reference,
) {
    const S: f64 = 220.0;
    const L: f64 = 44.0;
    const T: f64 = 28.0;
    let x = |v: f64| L + v.clamp(0.0, 1.0) * S;
    let y = |v: f64| T + (1.0 - v.clamp(0.0, 1.0)) * S;
    let _ = write!(
        h,
        "<figure><svg id=\"{id}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{ht}\" role=\"img\" aria-label=\"{title}\">\
         <text x=\"4\" y=\"16\" font-size=\"13\" font-weight=\"600\">{title}</text>\
         <rect x=\"{L}\" y=\"{T}\" width=\"{S}\" height=\"{S}\" fill=\"#fff\" stroke=\"#cbd5e1\"/>\
         <line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y1}\" stroke=\"#94a3b8\" stroke-dasharray=\"4 3\"/>\
         <text x=\"{L}\" y=\"{xl}\" font-size=\"11\">{x_label}</text>\
         <text x=\"12\" y=\"{yl}\" font-size=\"11\" text-anchor=\"middle\" transform=\"rotate(-90 12 {yl})\">{y_label}</text>",
        w = L + S + 16.0,
        ht = T + S + 34.0,
        title = escape_html(title),
        x0 = x(0.0),
        y0 = y(match reference {
            Reference::Diagonal => 0.0,
            Reference::Half => 0.5,
        }),
        x1 = x(1.0),
        y1 = y(match reference {
            Reference::Diagonal => 1.0,
            Reference::Half => 0.5,
        }),
        xl = T + S + 24.0,
        yl = T + S / 2.0,
    );
    if line && points.len() > 1 {
        let path: Vec<String> = points
            .iter()
            .map(|(a, b)| format!("{:.1},{:.1}", x(*a), y(*b)))
            .collect();
        let _ = write!(
            h,
            "<polyline fill=\"none\" stroke=\"#2563eb\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
    }
    for (a, b) in points {
        let _ = write!(
            h,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#2563eb\"/>",
            x(*a),
            y(*b)
        );
    }
    h.push_str("</svg></figure>");
}

const STYLE: &str = r#"
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #1e293b; margin: 0; background: #f8fafc; }
main { max-width: 1040px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 32px 0 10px; border-bottom: 2px solid #e2e8f0; }
.lede, .note { color: #475569; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
.card { background: #fff; border: 1px solid #e2e8f0; border-radius: 8px; padding: 10px 16px; min-width: 140px; }
.card .label { color: #64748b; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .value { font-size: 24px; font-weight: 600; font-variant-numeric: tabular-nums; }
.grid { display: flex; flex-wrap: wrap; gap: 12px 28px; } figure { margin: 0; }
table { border-collapse: collapse; background: #fff; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #e2e8f0; padding: 4px 9px; text-align: right; } th { background: #f1f5f9; font-size: 12px; }
td.text, th.text { text-align: left; }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(risk: f64, left: bool) -> Scored {
        Scored {
            msisdn: Msisdn::parse("+351910000001").unwrap(),
            risk,
            stage: "stable".into(),
            reasons: Vec::new(),
            left,
        }
    }

    #[test]
    fn auc_counts_ties_half() {
        // A perfect score, a useless one, and ties.
        let perfect = [
            scored(0.9, true),
            scored(0.8, true),
            scored(0.1, false),
            scored(0.2, false),
        ];
        assert_eq!(auc(&perfect), Some(1.0));
        let inverted = [scored(0.1, true), scored(0.9, false)];
        assert_eq!(auc(&inverted), Some(0.0));
        let tied = [scored(0.5, true), scored(0.5, false)];
        assert_eq!(auc(&tied), Some(0.5));
        // 2 leavers, 2 stayers: leaver at 0.9 beats both (2), leaver at 0.5 ties one, beats one (1.5).
        let mixed = [
            scored(0.9, true),
            scored(0.5, true),
            scored(0.5, false),
            scored(0.1, false),
        ];
        assert_eq!(auc(&mixed), Some(3.5 / 4.0));
        assert_eq!(auc(&[scored(0.3, false)]), None);
    }

    #[test]
    fn a_top_that_cuts_a_tie_takes_its_rate() {
        // Ten at 0.9 of whom 4 left, ninety at 0.1 of whom 6 left: the top 5 expects 2.
        let mut all: Vec<Scored> = (0..10).map(|i| scored(0.9, i < 4)).collect();
        all.extend((0..90).map(|i| scored(0.1, i < 6)));
        let (base, _, decile, top, gains) = score(&all, 3, &[5, 20]);
        assert_eq!((base.scored, base.gone, base.leavers), (100, 3, 10));
        assert!((top[0].leavers - 2.0).abs() < 1e-9);
        // Top 20: the 4 of the first tie, and 10/90 of the second's 6.
        assert!((top[1].leavers - (4.0 + 6.0 * 10.0 / 90.0)).abs() < 1e-9);
        // The top tenth is the first tie: 40 % against 10 %.
        assert!((decile.unwrap() - 4.0).abs() < 1e-9);
        assert!((gains.last().unwrap().captured - 1.0).abs() < 1e-9);
    }

    #[test]
    fn calibration_bands_hold_their_rates() {
        let all = [scored(0.05, false), scored(0.05, true), scored(0.35, true)];
        let bands = calibration(&all);
        assert_eq!(bands.len(), 2);
        assert_eq!((bands[0].n, bands[0].leavers), (2, 1));
        assert!((bands[0].observed - 0.5).abs() < 1e-12 && (bands[1].from - 0.3).abs() < 1e-12);
    }

    fn decision(rule: &str, n: u64, at: Millis, group: Group) -> DecisionRecord {
        DecisionRecord {
            action_id: format!("{rule}-{n}"),
            rule: rule.into(),
            msisdn: Msisdn::parse(&format!("+3519100{n:05}")).unwrap(),
            moment_ts: at,
            group,
        }
    }

    #[test]
    fn the_retention_loop_compares_who_left_after_an_action_with_who_was_held_out() {
        let h = 30 * DAY;
        let mut decisions = Vec::new();
        let mut terminated = HashMap::new();
        // 10 treated of whom 2 leave; 10 held out of whom 5 leave; one excluded; one too late.
        for n in 0..10 {
            decisions.push(decision("retain", n, DAY, Group::Treated));
            if n < 2 {
                terminated.insert(decisions.last().unwrap().msisdn, 5 * DAY);
            }
        }
        for n in 10..20 {
            decisions.push(decision("retain", n, DAY, Group::Control));
            if n < 15 {
                terminated.insert(decisions.last().unwrap().msisdn, 10 * DAY);
            }
        }
        decisions.push(decision("retain", 20, DAY, Group::Excluded));
        decisions.push(decision("retain", 21, 80 * DAY, Group::Treated));
        // Left before the action's moment: not a leaver of this loop.
        terminated.insert(decisions[0].msisdn, 0);
        decisions.push(decision("other", 30, DAY, Group::Treated));
        // A rule with no control group is reported, and left out of the pooled row.
        let r = retention(&decisions, &["retain".into(), "other".into()], &terminated, h, 90 * DAY);
        assert_eq!(r.incomplete, 1);
        let all = &r.rows[0];
        assert_eq!(
            (all.treated.n, all.treated.left, all.control.n, all.control.left),
            (10, 1, 10, 5)
        );
        assert!((all.reduction.unwrap() - 0.4).abs() < 1e-12);
        assert!((all.relative.unwrap() - 0.8).abs() < 1e-12);
        let ci = all.interval.unwrap();
        assert!(ci.low < 0.4 && ci.high > 0.4 && ci.high < 1.0);
        let names: Vec<&str> = r.rows.iter().map(|row| row.rule.as_str()).collect();
        assert_eq!(names, ["all", "other", "retain"]);
        assert_eq!((r.rows[1].treated.n, r.rows[1].control.n), (1, 0));
    }

    #[test]
    fn every_stage_is_listed_in_order_with_the_gone() {
        let mut a = scored(0.1, false);
        a.stage = "decline".into();
        let rows = stages(&[scored(0.1, true), a], 2);
        let names: Vec<&str> = rows.iter().map(|r| r.stage.as_str()).collect();
        assert_eq!(names, ["stable", "decline", "gone"]);
        assert!((rows[2].share - 0.5).abs() < 1e-12);
    }
}
