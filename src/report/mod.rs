//! report: what the engine's output says after the fact. `kairos report uplift` measures,
//! per rule, how much more often subscribers who were sent an offer converted than the
//! ones held out as a control group; `kairos rules try` replays a log with a candidate rule
//! set and with the published one, and reports what would change.
//!
//! `kairos report summary` shows what a replay's output folder holds, for a first look.
//! `kairos report churn` holds the churn-risk score at an instant against who terminated
//! after it, and the retention actions against their control group.
//!
//! [`input`] reads decisions, actions and events (with ingest's reader and the decoder);
//! [`uplift`], [`dryrun`] and [`summary`] are the pure parts — counting, statistics,
//! rendering.

pub mod churn;
pub mod dryrun;
pub mod input;
pub mod summary;
pub mod uplift;

use std::path::{Path, PathBuf};

use input::Problem;
use kairos_model::RuleSet;
use uplift::{Conversion, InputCounts, UpliftReport};

use crate::pipeline::{self, ReplayOptions};
use crate::progress::Progress;
use crate::sinks::files::ReplaySummary;

/// What `kairos report uplift` reads and how it counts a conversion.
#[derive(Clone, Debug)]
pub struct UpliftOptions {
    /// Decision files (or folders of them, or `kairos replay` output folders).
    pub decisions: Vec<PathBuf>,
    /// Event files or folders holding the `response` events.
    pub events: Vec<PathBuf>,
    pub conversion: Conversion,
    /// Where reading the inputs is counted, when progress is shown.
    pub progress: Option<Progress>,
}

/// The report and the skipped lines worth showing (the first few of each input).
#[derive(Debug)]
pub struct UpliftRun {
    pub report: UpliftReport,
    pub problems: Vec<Problem>,
}

/// Reads the inputs and measures the uplift. Errors (one line) only when an input cannot
/// be read; lines that are not a decision or not an event are counted in the report.
pub fn uplift(options: &UpliftOptions) -> Result<UpliftRun, String> {
    let progress = options.progress.as_ref();
    if let Some(progress) = progress {
        progress.set_step("decisions 1/2");
    }
    let decisions = input::read_decisions(&options.decisions, progress)?;
    if let Some(progress) = progress {
        progress.set_step("responses 2/2");
    }
    let responses = input::read_responses(&options.events, progress)?;
    let measured = uplift::measure(&decisions.records, &responses.records, &options.conversion);
    let inputs = InputCounts {
        decision_files: decisions.files,
        malformed_decision_lines: decisions.problem_count,
        event_files: responses.files,
        responses: responses.records.len() as u64,
        other_events: responses.skipped,
        invalid_event_lines: responses.problem_count,
        ..InputCounts::default()
    };
    let mut problems = decisions.problems;
    problems.extend(responses.problems);
    Ok(UpliftRun {
        report: UpliftReport::new(measured, &options.conversion, inputs),
        problems,
    })
}

/// What `kairos rules try` is asked to do.
#[derive(Clone, Debug)]
pub struct TryOptions {
    /// The candidate rules folder (rule files and an optional `policy.toml`).
    pub candidate: PathBuf,
    /// The published rules folder to compare with.
    pub against: PathBuf,
    /// Event files or folders of them.
    pub events: Vec<PathBuf>,
    /// Where `report.html`, `report.json` and the two replays (`candidate/`,
    /// `published/`) go; created if missing.
    pub out: PathBuf,
    pub workers: usize,
    /// Sample messages per rule.
    pub samples: usize,
    /// Where each pass over the events is counted, when progress is shown.
    pub progress: Option<Progress>,
}

/// A finished dry run: the report, where it was written, and both replays' summaries.
#[derive(Debug)]
pub struct TryRun {
    pub report: dryrun::DryRunReport,
    pub html: PathBuf,
    pub json: PathBuf,
    pub candidate: ReplaySummary,
    pub published: ReplaySummary,
}

/// The rules of a set, as the dry run reports them.
fn rule_infos(set: &RuleSet) -> Vec<dryrun::RuleInfo> {
    set.rules
        .iter()
        .map(|r| dryrun::RuleInfo {
            id: r.id.clone(),
            version: r.version.clone(),
            class: r.class.as_str().to_string(),
            channel: r.channel,
        })
        .collect()
}

/// Replays the events with the rules of `rules` into `out` and reads back what it decided.
fn replay_with(
    options: &TryOptions,
    rules: &Path,
    set: &RuleSet,
    out: PathBuf,
    step: &str,
) -> Result<(ReplaySummary, dryrun::Run), String> {
    if let Some(progress) = &options.progress {
        progress.set_step(step);
    }
    let replay = ReplayOptions {
        events: options.events.clone(),
        out,
        rules: rules.to_path_buf(),
        workers: options.workers,
        allowed_lateness_ms: 0,
        max_future_ms: crate::decode::Horizon::DEFAULT_MAX_FUTURE,
        households: Default::default(),
        retention: Default::default(),
        progress: options.progress.clone(),
    };
    let summary = pipeline::replay(&replay).map_err(|e| e.to_string())?;
    let run = dryrun::Run {
        rules: rule_infos(set),
        decisions: input::read_output(&replay.out.join("decisions.jsonl"), input::parse_decision_line)?,
        actions: input::read_output(&replay.out.join("actions.jsonl"), input::parse_action_line)?,
    };
    Ok((summary, run))
}

/// `kairos rules try`: replays the events with the candidate rules (into `out/candidate/`)
/// and with the published ones (`out/published/`) — the replays write files and contact
/// nobody — then writes `out/report.json` and `out/report.html`. Errors (one line) when a
/// rule set is invalid, an input cannot be read or an output cannot be written.
pub fn rules_try(options: &TryOptions) -> Result<TryRun, String> {
    let candidate_set = pipeline::load_rules(&options.candidate).map_err(|e| e.to_string())?;
    let against_set =
        pipeline::load_rules(&options.against).map_err(|e| format!("--against {}: {e}", options.against.display()))?;
    std::fs::create_dir_all(&options.out).map_err(|e| format!("cannot create {}: {e}", options.out.display()))?;
    let (candidate_summary, candidate) = replay_with(
        options,
        &options.candidate,
        &candidate_set,
        options.out.join("candidate"),
        "candidate rules 1/3",
    )?;
    let (published_summary, published) = replay_with(
        options,
        &options.against,
        &against_set,
        options.out.join("published"),
        "published rules 2/3",
    )?;
    if let Some(progress) = &options.progress {
        progress.set_step("event time range 3/3");
    }
    let range = input::event_time_range(&options.events, options.progress.as_ref())?;
    let inputs = dryrun::Inputs {
        candidate_rules: options.candidate.display().to_string(),
        against_rules: options.against.display().to_string(),
        policy_changed: candidate_set.policy != against_set.policy,
        event_paths: options.events.iter().map(|p| p.display().to_string()).collect(),
        event_files: candidate_summary.files,
        events_read: candidate_summary.events_valid + candidate_summary.events_invalid,
        events_invalid: candidate_summary.events_invalid,
        first_event: range.map(|(first, _)| first),
        last_event: range.map(|(_, last)| last),
        generated_by: format!("kairos {}", env!("CARGO_PKG_VERSION")),
    };
    let report = dryrun::build(&inputs, &candidate, &published, options.samples);
    let html = options.out.join("report.html");
    let json = options.out.join("report.json");
    std::fs::write(&json, report.to_json()).map_err(|e| format!("cannot write {}: {e}", json.display()))?;
    std::fs::write(&html, report.to_html()).map_err(|e| format!("cannot write {}: {e}", html.display()))?;
    Ok(TryRun {
        report,
        html,
        json,
        candidate: candidate_summary,
        published: published_summary,
    })
}

/// `kairos report summary`: reads a `kairos replay --out` folder — its `decisions.jsonl`
/// and `actions.jsonl` (required), `summary.json` (its counts of what was read, when it is
/// there) — and counts the lines of its files. Errors (one line) when the folder is not a
/// replay's output or a file cannot be read.
pub fn summary(dir: &Path) -> Result<summary::OutputSummary, String> {
    let decisions_path = dir.join("decisions.jsonl");
    if !decisions_path.is_file() {
        return Err(format!(
            "{} is not the output folder of a replay: it has no decisions.jsonl \
             (kairos replay --events … --out {} writes one)",
            dir.display(),
            dir.display()
        ));
    }
    let decisions = input::read_output(&decisions_path, input::parse_decision_line)?;
    let actions = input::read_output(&dir.join("actions.jsonl"), input::parse_action_line)?;
    let facts = std::fs::read(dir.join("summary.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|json| summary::ReplayFacts::of_json(&json));
    let mut files = Vec::new();
    for (name, holds) in summary::FILES {
        let path = dir.join(name);
        if !path.is_file() {
            continue;
        }
        let lines = match name {
            "actions.jsonl" => Some(actions.len() as u64),
            "decisions.jsonl" => Some(decisions.len() as u64),
            _ if name.ends_with(".jsonl") => Some(count_lines(&path)?),
            _ => None,
        };
        files.push(summary::OutputFile {
            path: path.display().to_string(),
            lines,
            holds,
        });
    }
    Ok(summary::build(
        &dir.display().to_string(),
        facts,
        &decisions,
        &actions,
        files,
    ))
}

/// The non-blank lines of a `.jsonl` file.
fn count_lines(path: &Path) -> Result<u64, String> {
    let mut lines = 0;
    crate::ingest::files::read_lines(path, |_, _| {
        lines += 1;
        Ok::<(), String>(())
    })?;
    Ok(lines)
}

/// What `kairos report churn` is asked to do.
#[derive(Clone, Debug)]
pub struct ChurnOptions {
    /// Event files or folders of them (the whole log: before and after the instant).
    pub events: Vec<PathBuf>,
    pub rules: PathBuf,
    /// Where `report.md`, `report.json`, `report.html`, `scores.jsonl` and the replay
    /// (`replay/`) go; created if missing.
    pub out: PathBuf,
    /// The observation instant; by default the last event's `ts` minus the horizon.
    pub at: Option<kairos_model::Millis>,
    pub horizon: kairos_model::Millis,
    pub workers: usize,
    /// The sizes of the top of the scores to report.
    pub tops: Vec<u64>,
    /// The retention rules of the loop; by default the rules on `churn_risk` and
    /// `cancel_intent`, and the declared moments that read the score.
    pub retention_rules: Option<Vec<String>>,
    /// Also score as of every day (00:00 UTC) whose horizon lies in the log.
    pub daily: bool,
    pub households: kairos_dataflows::households::HouseholdConfig,
    pub progress: Option<Progress>,
}

/// A finished churn report and where its files are.
#[derive(Debug)]
pub struct ChurnRun {
    pub report: churn::ChurnReport,
    pub markdown: PathBuf,
    pub json: PathBuf,
    pub html: PathBuf,
    pub scores: PathBuf,
}

/// One line of `scores.jsonl`: a customer as scored at the observation instant, and whether
/// they left within the horizon.
#[derive(serde::Serialize)]
struct ScoreLine<'a> {
    msisdn: String,
    lifecycle: &'a str,
    churn_risk: f64,
    churn_reasons: &'a [String],
    churn_factors: &'a [String],
    left: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    terminated: Option<String>,
}

/// `kairos report churn`: reads the log's terminations and event time, replays it (into
/// `out/replay/`) keeping every customer's standing at the observation instant, and writes
/// the report. Errors (one line) when the rules are invalid, an input cannot be read, the
/// instant leaves no horizon inside the log, or an output cannot be written.
pub fn churn(options: &ChurnOptions) -> Result<ChurnRun, String> {
    use kairos_model::MomentKind;

    let rules = pipeline::load_rules(&options.rules).map_err(|e| e.to_string())?;
    let retention_rules = match &options.retention_rules {
        Some(ids) => {
            if let Some(unknown) = ids.iter().find(|id| !rules.rules.iter().any(|r| &r.id == *id)) {
                return Err(format!(
                    "--retention-rule {unknown}: no such rule in {}",
                    options.rules.display()
                ));
            }
            ids.clone()
        }
        None => rules
            .rules
            .iter()
            .filter(|r| {
                r.moment == MomentKind::ChurnRisk
                    || r.declared.as_ref().is_some_and(|d| {
                        d.name == "cancel_intent" || kairos_dataflows::condition::reads_churn_risk(&d.when)
                    })
            })
            .map(|r| r.id.clone())
            .collect(),
    };
    if let Some(progress) = &options.progress {
        progress.set_step("terminations 1/2");
    }
    let read = input::read_terminations(&options.events, options.progress.as_ref())?;
    let Some((first, last)) = read.range else {
        return Err("the events hold no valid event: nothing to report".to_string());
    };
    let at = options.at.unwrap_or(last.saturating_sub(options.horizon));
    if at <= first || at.saturating_add(options.horizon) > last.saturating_add(1) {
        return Err(format!(
            "--at {}: the log runs from {} to {}, so an instant with {} days after it inside the log is between {} and {}",
            churn::instant(at),
            churn::instant(first),
            churn::instant(last),
            churn::horizon_days(options.horizon),
            churn::instant(first.saturating_add(1)),
            churn::instant(last.saturating_sub(options.horizon)),
        ));
    }
    if let Some(progress) = &options.progress {
        progress.set_step("replay 2/2");
    }
    std::fs::create_dir_all(&options.out).map_err(|e| format!("cannot create {}: {e}", options.out.display()))?;
    let replay = ReplayOptions {
        events: options.events.clone(),
        out: options.out.join("replay"),
        rules: options.rules.clone(),
        workers: options.workers,
        allowed_lateness_ms: 0,
        max_future_ms: crate::decode::Horizon::DEFAULT_MAX_FUTURE,
        households: options.households.clone(),
        retention: Default::default(),
        progress: options.progress.clone(),
    };
    // Each day's first instant after the log's first event whose horizon ends in the log.
    let daily: Vec<kairos_model::Millis> = if options.daily {
        let day = kairos_model::time::DAY;
        (first / day + 1..)
            .map(|d| d * day)
            .take_while(|d| d.saturating_add(options.horizon) <= last.saturating_add(1))
            .collect()
    } else {
        Vec::new()
    };
    let watch = pipeline::Watch { at: Some(at), daily };
    let replayed = pipeline::replay_observing(&replay, &watch).map_err(|e| e.to_string())?;
    let mut gone = 0;
    let mut scored = Vec::new();
    let scores_path = options.out.join("scores.jsonl");
    let mut lines = String::new();
    for s in &replayed.standings_at {
        let terminated = read.first.get(&s.msisdn).copied();
        let Some(left) = churn::outcome(s.lifecycle, terminated, at, options.horizon) else {
            gone += 1;
            continue;
        };
        let line = ScoreLine {
            msisdn: s.msisdn.to_string(),
            lifecycle: s.lifecycle.as_str(),
            churn_risk: s.churn_risk,
            churn_reasons: &s.churn_reasons,
            churn_factors: &s.churn_factors,
            left,
            terminated: terminated.map(churn::instant),
        };
        lines.push_str(&serde_json::to_string(&line).unwrap_or_default());
        lines.push('\n');
        scored.push(churn::Scored {
            msisdn: s.msisdn,
            risk: s.churn_risk,
            stage: s.lifecycle.as_str().to_string(),
            reasons: s.churn_reasons.clone(),
            left,
        });
    }
    std::fs::write(&scores_path, lines).map_err(|e| format!("cannot write {}: {e}", scores_path.display()))?;
    let decisions = input::read_decisions(std::slice::from_ref(&replay.out), None)?;
    let retention = churn::retention(&decisions.records, &retention_rules, &read.first, options.horizon, last);
    let inputs = churn::Inputs {
        events: options.events.iter().map(|p| p.display().to_string()).collect(),
        rules: options.rules.display().to_string(),
        model: rules.churn.fitted.clone(),
        at: churn::instant(at),
        horizon_days: churn::horizon_days(options.horizon),
        first_event: Some(churn::instant(first)),
        last_event: Some(churn::instant(last)),
        terminations: read.records,
        events_read: read.valid + read.invalid,
        events_invalid: read.invalid,
        generated_by: format!("kairos {}", env!("CARGO_PKG_VERSION")),
    };
    let mut report = churn::build(inputs, &scored, gone, &options.tops, retention);
    report.daily = churn::daily(&replayed.daily, &read.first, options.horizon);
    let write = |name: &str, text: String| {
        let path = options.out.join(name);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok::<PathBuf, String>(path)
    };
    Ok(ChurnRun {
        markdown: write("report.md", report.to_markdown())?,
        json: write("report.json", report.to_json())?,
        html: write("report.html", report.to_html())?,
        scores: scores_path,
        report,
    })
}
