//! The replay outputs of contract §3, written once the replay has finished:
//! `actions.jsonl` (sorted by `moment_ts`, `msisdn`, `rule`), `decisions.jsonl`,
//! `dead-letter.jsonl`, `summary.json`, `households.jsonl`, and `subscribers.jsonl` (where
//! each customer stands as event time ends, contract §5.2).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use std::sync::atomic::Ordering;

use kairos_dataflows::households::{household_id, HouseholdView};
use kairos_dataflows::standing::Standing;
use kairos_dataflows::DataflowStats;
use kairos_model::{Decision, Msisdn, Verdict};
use serde::Serialize;

use crate::ingest::DeadLetter;
use crate::telemetry::IngestTally;

/// What `summary.json` reports.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReplaySummary {
    pub files: usize,
    pub workers: usize,
    pub events_by_type: BTreeMap<&'static str, u64>,
    pub events_valid: u64,
    pub events_invalid: u64,
    pub events_late: u64,
    pub events_without_customer: u64,
    /// Customer records older than the one in force (ignored).
    pub customer_records_stale: u64,
    pub moments: u64,
    /// Rule conditions that failed to evaluate (counted as not holding).
    pub condition_errors: u64,
    pub actions_by_rule: BTreeMap<String, u64>,
    pub suppressed_by_reason: BTreeMap<String, u64>,
    /// Subscribers in `households.jsonl`, households, and households of two or more.
    pub household_members: u64,
    pub households: u64,
    pub households_of_several: u64,
    pub seconds: f64,
    pub events_per_second: f64,
}

impl ReplaySummary {
    /// Counts from the replay's tallies and decisions.
    pub fn new(
        files: usize,
        workers: usize,
        tally: &IngestTally,
        decisions: &[Decision],
        households: &[(Msisdn, HouseholdView)],
        stats: &DataflowStats,
        seconds: f64,
    ) -> ReplaySummary {
        let mut sizes: BTreeMap<Msisdn, u64> = BTreeMap::new();
        for (_, view) in households {
            *sizes.entry(view.founder).or_default() += 1;
        }
        let mut actions_by_rule = BTreeMap::new();
        let mut suppressed_by_reason = BTreeMap::new();
        for decision in decisions {
            match decision.verdict {
                Verdict::Sent => *actions_by_rule.entry(decision.action.rule.clone()).or_insert(0) += 1,
                Verdict::Suppressed(reason) => {
                    *suppressed_by_reason.entry(reason.as_str().to_string()).or_insert(0) += 1
                }
            }
        }
        let read = tally.valid() + tally.invalid;
        ReplaySummary {
            files,
            workers,
            events_by_type: tally.by_type(),
            events_valid: tally.valid(),
            events_invalid: tally.invalid,
            events_late: tally.late,
            events_without_customer: stats.events_without_customer.load(Ordering::Relaxed),
            customer_records_stale: stats.stale_customer_records.load(Ordering::Relaxed),
            moments: stats.moments.load(Ordering::Relaxed),
            condition_errors: stats.condition_errors.load(Ordering::Relaxed),
            actions_by_rule,
            suppressed_by_reason,
            household_members: households.len() as u64,
            households: sizes.len() as u64,
            households_of_several: sizes.values().filter(|n| **n > 1).count() as u64,
            seconds,
            events_per_second: if seconds > 0.0 { read as f64 / seconds } else { 0.0 },
        }
    }
}

#[derive(Serialize)]
struct HouseholdLine<'a> {
    msisdn: String,
    household: String,
    decision_maker: String,
    size: u32,
    links: Vec<LinkJson<'a>>,
}

#[derive(Serialize)]
struct LinkJson<'a> {
    msisdn: String,
    kind: &'a str,
}

/// One line of `households.jsonl`.
fn household_line(msisdn: Msisdn, view: &HouseholdView) -> String {
    let line = HouseholdLine {
        msisdn: msisdn.to_string(),
        household: household_id(view.founder),
        decision_maker: view.decision_maker.to_string(),
        size: view.size,
        links: view
            .links
            .iter()
            .map(|(other, kind)| LinkJson {
                msisdn: other.to_string(),
                kind: kind.as_str(),
            })
            .collect(),
    };
    serde_json::to_string(&line).unwrap_or_default()
}

/// One line of `subscribers.jsonl` (contract §5.2).
#[derive(Serialize)]
struct SubscriberLine<'a> {
    msisdn: String,
    household: Option<&'a str>,
    lifecycle: &'static str,
    stickiness: f64,
    churn_risk: f64,
    churn_reasons: &'a [String],
    churn_factors: &'a [String],
}

fn subscriber_line(standing: &Standing) -> String {
    // Rounded: the numbers are read by people and compared across runs, not summed.
    let round = |x: f64, places: i32| {
        let scale = 10f64.powi(places);
        (x * scale).round() / scale
    };
    let line = SubscriberLine {
        msisdn: standing.msisdn.to_string(),
        household: standing.household.as_deref(),
        lifecycle: standing.lifecycle.as_str(),
        stickiness: round(standing.stickiness, 3),
        churn_risk: round(standing.churn_risk, 4),
        churn_reasons: &standing.churn_reasons,
        churn_factors: &standing.churn_factors,
    };
    serde_json::to_string(&line).unwrap_or_default()
}

/// What a replay writes.
pub struct ReplayOutputs<'a> {
    pub decisions: &'a mut [Decision],
    pub dead_letters: &'a mut [DeadLetter],
    pub households: &'a [(Msisdn, HouseholdView)],
    /// In number order.
    pub standings: &'a [Standing],
    pub summary: &'a ReplaySummary,
}

/// Writes the outputs into `dir` (created if missing). Decisions and dead letters are
/// sorted so that every output is the same for the same input, whatever the workers.
pub fn write_replay_outputs(dir: &Path, outputs: ReplayOutputs<'_>) -> std::io::Result<()> {
    let ReplayOutputs {
        decisions,
        dead_letters,
        households,
        standings,
        summary,
    } = outputs;
    std::fs::create_dir_all(dir)?;
    write_lines(
        &dir.join("households.jsonl"),
        households.iter().map(|(m, view)| household_line(*m, view)),
    )?;
    write_lines(&dir.join("subscribers.jsonl"), standings.iter().map(subscriber_line))?;
    decisions.sort_by(|a, b| a.action.sort_key().cmp(&b.action.sort_key()));
    write_lines(
        &dir.join("actions.jsonl"),
        decisions
            .iter()
            .filter(|d| d.verdict == Verdict::Sent)
            .map(|d| d.action.to_json()),
    )?;
    write_lines(&dir.join("decisions.jsonl"), decisions.iter().map(Decision::to_json))?;
    dead_letters.sort_by(|a, b| a.source.cmp(&b.source));
    write_lines(
        &dir.join("dead-letter.jsonl"),
        dead_letters.iter().map(DeadLetter::to_json),
    )?;
    let mut file = BufWriter::new(File::create(dir.join("summary.json"))?);
    serde_json::to_writer_pretty(&mut file, summary)?;
    file.write_all(b"\n")?;
    file.flush()
}

fn write_lines(path: &Path, lines: impl Iterator<Item = String>) -> std::io::Result<()> {
    let mut file = BufWriter::new(File::create(path)?);
    for line in lines {
        file.write_all(line.as_bytes())?;
        file.write_all(b"\n")?;
    }
    file.flush()
}
