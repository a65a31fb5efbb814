//! The uplift of each rule over its control group (`kairos report uplift`): which decisions
//! converted, and what that says with 95 % confidence. Pure: no I/O (reading is
//! [`super::input`]'s).
//!
//! # What is measured
//!
//! - **Treated**: decisions `sent`. **Control**: decisions `suppressed` with reason
//!   `global_holdout` or `rule_holdout` — eligible and held out on purpose. Every other
//!   decision (suppressed for consent, cooldown, opt-out, a cap, quiet hours, arbitration,
//!   or any reason this report does not know) is **excluded**: it could not have been sent,
//!   so it belongs to neither group.
//! - A decision **converts** when some `response` event has
//!   - the decision's `msisdn`,
//!   - an `outcome` in the conversion outcomes (default `accepted`),
//!   - a `ts` in `[moment_ts, moment_ts + window]` (both ends included; default 7 days), and
//!   - an `action_id` that is the decision's own, or that is not the id of any *other*
//!     decision in the input. A purchase the BSS reports against a held-out decision's id,
//!     or with an id kairos never issued, counts; a response to another rule's action does
//!     not (that action, not this one, gets the credit).
//!
//!   The window starts at `moment_ts`, not `send_at`, for both groups: a held-out decision
//!   has no send time, and deferring the treated group's start would bias the comparison.
//!   Each decision counts at most once, however many responses match; one response may
//!   convert several decisions (of different rules) when its id is none of theirs.
//! - A decision listed more than once (the same `action_id`: overlapping dumps, a re-emitted
//!   decision) counts once, as its first occurrence.
//! - Per rule and for all rules together (`all`, pooled): n and conversions per group, the
//!   conversion rates with **Wilson score** 95 % intervals, the absolute uplift (treated rate
//!   − control rate) with **Newcombe's hybrid score** 95 % interval (method 10 of Newcombe,
//!   *Statistics in Medicine* 17, 873–890, 1998), and the relative uplift (absolute uplift /
//!   control rate) when the control rate is above zero. An empty group has no rate: "not
//!   enough data".
//!
//! The intervals treat decisions as independent trials. Two decisions of one subscriber
//! are not quite that, and the pooled `all` row mixes rules whose holdout shares may differ
//! (read the per-rule rows first).
//!
//! ```
//! use kairos::report::uplift::{newcombe, wilson, Z95};
//! let d = newcombe(56, 70, 48, 80, Z95).unwrap();
//! assert_eq!((format!("{:.4}", d.low), format!("{:.4}", d.high)), ("0.0524".into(), "0.3339".into()));
//! assert!(wilson(0, 0, Z95).is_none());
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use kairos_model::event::ResponseOutcome;
use kairos_model::time::{DAY, HOUR};
use kairos_model::{Millis, Msisdn};
use serde::Serialize;

/// The standard normal quantile for a two-sided 95 % interval (Φ⁻¹(0.975)).
pub const Z95: f64 = 1.959_963_984_540_054;

/// The suppression reasons that put a decision in the control group.
pub const HOLDOUT_REASONS: [&str; 2] = ["global_holdout", "rule_holdout"];

/// Which side of the comparison a decision is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// Sent.
    Treated,
    /// Held out (`global_holdout`, `rule_holdout`).
    Control,
    /// Not eligible to be sent (any other suppression reason, or none).
    Excluded,
}

impl Group {
    /// The group of a decision: `sent` is treated; `suppressed` is control when `reason` is
    /// a holdout, excluded otherwise.
    pub fn of(sent: bool, reason: Option<&str>) -> Group {
        match (sent, reason) {
            (true, _) => Group::Treated,
            (false, Some(reason)) if HOLDOUT_REASONS.contains(&reason) => Group::Control,
            (false, _) => Group::Excluded,
        }
    }
}

/// One decision, as far as the report needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionRecord {
    pub action_id: String,
    pub rule: String,
    pub msisdn: Msisdn,
    pub moment_ts: Millis,
    pub group: Group,
}

/// One `response` event.
#[derive(Clone, Debug, PartialEq)]
pub struct ResponseRecord {
    pub msisdn: Msisdn,
    pub ts: Millis,
    pub action_id: String,
    pub outcome: ResponseOutcome,
}

/// What counts as a conversion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversion {
    /// How long after `moment_ts` a response still counts (inclusive).
    pub window: Millis,
    /// The response outcomes that count, by their contract names (`accepted`, …).
    pub outcomes: Vec<String>,
}

impl Default for Conversion {
    /// An `accepted` response within 7 days.
    fn default() -> Conversion {
        Conversion {
            window: 7 * DAY,
            outcomes: vec!["accepted".to_string()],
        }
    }
}

/// Parses a window: a whole number with a unit, `s`, `m`, `h` or `d` (`7d`, `36h`, `90m`).
///
/// ```
/// use kairos::report::uplift::parse_window;
/// assert_eq!(parse_window("36h"), Ok(36 * 3_600_000));
/// assert!(parse_window("7").is_err());
/// ```
pub fn parse_window(text: &str) -> Result<Millis, String> {
    let text = text.trim();
    let invalid = || format!("invalid window {text:?}: expected a whole number and a unit s, m, h or d (e.g. 7d, 36h)");
    let split = text
        .len()
        .checked_sub(1)
        .filter(|&i| text.is_char_boundary(i))
        .ok_or_else(invalid)?;
    let (number, unit) = text.split_at(split);
    let unit = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => HOUR,
        "d" => DAY,
        _ => return Err(invalid()),
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    number
        .parse::<Millis>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("invalid window {text:?}: too long"))
}

/// A window in the largest unit that divides it (`604800000` → `7d`).
pub fn format_window(window: Millis) -> String {
    [(DAY, "d"), (HOUR, "h"), (60_000, "m"), (1_000, "s")]
        .into_iter()
        .find(|&(unit, _)| window.is_multiple_of(unit))
        .map_or_else(
            || format!("{window}ms"),
            |(unit, name)| format!("{}{name}", window / unit),
        )
}

/// Parses a comma-separated list of response outcomes (`accepted,clicked`) into their names,
/// without repeats, in the order given.
pub fn parse_outcomes(text: &str) -> Result<Vec<String>, String> {
    let mut outcomes: Vec<String> = Vec::new();
    for name in text.split(',').map(str::trim) {
        if ResponseOutcome::parse(name).is_none() {
            return Err(format!(
                "invalid outcome {name:?}: valid outcomes are delivered, clicked, accepted, declined, opted_out"
            ));
        }
        if !outcomes.iter().any(|o| o == name) {
            outcomes.push(name.to_string());
        }
    }
    Ok(outcomes)
}

/// A two-sided confidence interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

/// The Wilson score interval for `successes` out of `n` (Wilson 1927; method 3 of Newcombe
/// 1998), or `None` when `n` is 0.
pub fn wilson(successes: u64, n: u64, z: f64) -> Option<Interval> {
    if n == 0 || successes > n {
        return None;
    }
    let n = n as f64;
    let p = successes as f64 / n;
    let z2 = z * z;
    let denominator = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denominator;
    let half = z / denominator * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    // At 0 or n successes one bound is exactly 0 or 1; rounding must not step outside.
    Some(Interval {
        low: (centre - half).clamp(0.0, 1.0),
        high: (centre + half).clamp(0.0, 1.0),
    })
}

/// Newcombe's hybrid score interval for the difference `x1/n1 − x2/n2` of two independent
/// proportions (method 10 of Newcombe 1998), built from their Wilson intervals; `None` when
/// either group is empty.
pub fn newcombe(x1: u64, n1: u64, x2: u64, n2: u64, z: f64) -> Option<Interval> {
    let (w1, w2) = (wilson(x1, n1, z)?, wilson(x2, n2, z)?);
    let (p1, p2) = (x1 as f64 / n1 as f64, x2 as f64 / n2 as f64);
    let d = p1 - p2;
    Some(Interval {
        low: d - ((p1 - w1.low).powi(2) + (w2.high - p2).powi(2)).sqrt(),
        high: d + ((w1.high - p1).powi(2) + (p2 - w2.low).powi(2)).sqrt(),
    })
}

/// For each decision, whether it converts (see the module documentation). Decisions are
/// taken as given: [`measure`] removes repeated ids first.
pub fn converts(decisions: &[DecisionRecord], responses: &[ResponseRecord], conversion: &Conversion) -> Vec<bool> {
    let wanted: Vec<ResponseOutcome> = conversion
        .outcomes
        .iter()
        .filter_map(|o| ResponseOutcome::parse(o))
        .collect();
    // Each subscriber's counting responses, by time.
    let mut by_msisdn: HashMap<Msisdn, Vec<(Millis, &str)>> = HashMap::new();
    for r in responses.iter().filter(|r| wanted.contains(&r.outcome)) {
        by_msisdn.entry(r.msisdn).or_default().push((r.ts, &r.action_id));
    }
    for list in by_msisdn.values_mut() {
        list.sort_unstable();
    }
    let ids: HashSet<&str> = decisions.iter().map(|d| d.action_id.as_str()).collect();
    decisions
        .iter()
        .map(|d| {
            let Some(list) = by_msisdn.get(&d.msisdn) else {
                return false;
            };
            let end = d.moment_ts.saturating_add(conversion.window);
            let first = list.partition_point(|&(ts, _)| ts < d.moment_ts);
            list[first..]
                .iter()
                .take_while(|&&(ts, _)| ts <= end)
                .any(|&(_, id)| id == d.action_id || !ids.contains(id))
        })
        .collect()
}

/// One group's numbers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupStats {
    /// Decisions in the group.
    pub n: u64,
    /// Of which converted.
    pub conversions: u64,
    /// `conversions / n`; `null` when `n` is 0.
    pub rate: Option<f64>,
    /// The Wilson score 95 % interval of the rate; `null` when `n` is 0.
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
}

impl GroupStats {
    fn new(n: u64, conversions: u64) -> GroupStats {
        let ci = wilson(conversions, n, Z95);
        GroupStats {
            n,
            conversions,
            rate: (n > 0).then(|| conversions as f64 / n as f64),
            ci_low: ci.map(|i| i.low),
            ci_high: ci.map(|i| i.high),
        }
    }
}

/// Treated rate − control rate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UpliftEstimate {
    /// The absolute uplift (a difference of proportions, −1 … 1).
    pub absolute: f64,
    /// Newcombe's hybrid score 95 % interval of `absolute`.
    pub ci_low: f64,
    pub ci_high: f64,
    /// `absolute / control rate`; `null` when the control rate is 0.
    pub relative: Option<f64>,
}

/// The comparison for one rule, or for all of them (`rule` = `all`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleUplift {
    pub rule: String,
    pub treated: GroupStats,
    pub control: GroupStats,
    /// Decisions in neither group.
    pub excluded: u64,
    /// `null` when either group is empty.
    pub uplift: Option<UpliftEstimate>,
}

#[derive(Default)]
struct Tally {
    treated: (u64, u64),
    control: (u64, u64),
    excluded: u64,
}

impl Tally {
    fn add(&mut self, group: Group, converted: bool) {
        let slot = match group {
            Group::Treated => &mut self.treated,
            Group::Control => &mut self.control,
            Group::Excluded => {
                self.excluded += 1;
                return;
            }
        };
        slot.0 += 1;
        slot.1 += u64::from(converted);
    }

    fn finish(&self, rule: String) -> RuleUplift {
        let treated = GroupStats::new(self.treated.0, self.treated.1);
        let control = GroupStats::new(self.control.0, self.control.1);
        let uplift = match (treated.rate, control.rate) {
            (Some(t), Some(c)) => {
                newcombe(self.treated.1, self.treated.0, self.control.1, self.control.0, Z95).map(|ci| UpliftEstimate {
                    absolute: t - c,
                    ci_low: ci.low,
                    ci_high: ci.high,
                    relative: (c > 0.0).then(|| (t - c) / c),
                })
            }
            _ => None,
        };
        RuleUplift {
            rule,
            treated,
            control,
            excluded: self.excluded,
            uplift,
        }
    }
}

/// The comparison per rule (by rule id) and pooled.
#[derive(Clone, Debug, PartialEq)]
pub struct Measured {
    pub rules: Vec<RuleUplift>,
    pub all: RuleUplift,
    /// Decisions whose `action_id` was already seen (ignored).
    pub duplicate_decisions: u64,
}

/// Groups, matches and counts `decisions` against `responses`.
pub fn measure(decisions: &[DecisionRecord], responses: &[ResponseRecord], conversion: &Conversion) -> Measured {
    let mut seen = HashSet::new();
    let unique: Vec<DecisionRecord> = decisions
        .iter()
        .filter(|d| seen.insert(d.action_id.as_str()))
        .cloned()
        .collect();
    let converted = converts(&unique, responses, conversion);
    let mut by_rule: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut all = Tally::default();
    for (d, &converted) in unique.iter().zip(&converted) {
        by_rule.entry(&d.rule).or_default().add(d.group, converted);
        all.add(d.group, converted);
    }
    Measured {
        rules: by_rule
            .into_iter()
            .map(|(rule, tally)| tally.finish(rule.to_string()))
            .collect(),
        all: all.finish("all".to_string()),
        duplicate_decisions: (decisions.len() - unique.len()) as u64,
    }
}

/// What was read (the `inputs` object of the JSON report).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct InputCounts {
    /// Decision files read.
    pub decision_files: usize,
    /// Distinct decisions (by `action_id`).
    pub decisions: u64,
    /// Lines repeating an `action_id` already read (ignored).
    pub duplicate_decisions: u64,
    /// Lines that are not a decision (skipped).
    pub malformed_decision_lines: u64,
    /// Event files read.
    pub event_files: usize,
    /// `response` events read, whatever their outcome.
    pub responses: u64,
    /// Valid events of other types (skipped).
    pub other_events: u64,
    /// Lines that are not a valid event (skipped).
    pub invalid_event_lines: u64,
}

/// The whole report: what `--json` prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UpliftReport {
    /// The conversion window, as `7d`, `36h`, …, and in milliseconds.
    pub window: String,
    pub window_ms: Millis,
    /// The outcomes that count as a conversion.
    pub outcomes: Vec<String>,
    /// The confidence level of every interval.
    pub confidence: f64,
    pub inputs: InputCounts,
    /// One entry per rule, by rule id.
    pub rules: Vec<RuleUplift>,
    /// Every rule pooled.
    pub all: RuleUplift,
}

const NOT_ENOUGH_DATA: &str = "not enough data";

impl UpliftReport {
    /// Assembles the report; `inputs.decisions` and `inputs.duplicate_decisions` are taken
    /// from `measured`.
    pub fn new(measured: Measured, conversion: &Conversion, mut inputs: InputCounts) -> UpliftReport {
        inputs.duplicate_decisions = measured.duplicate_decisions;
        inputs.decisions = measured
            .rules
            .iter()
            .map(|r| r.treated.n + r.control.n + r.excluded)
            .sum();
        UpliftReport {
            window: format_window(conversion.window),
            window_ms: conversion.window,
            outcomes: conversion.outcomes.clone(),
            confidence: 0.95,
            inputs,
            rules: measured.rules,
            all: measured.all,
        }
    }

    /// The report as pretty-printed JSON, with a final newline.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// The report as a Markdown table with a line of definitions above and the input counts
    /// below.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let outcomes = self
            .outcomes
            .iter()
            .map(|o| format!("`{o}`"))
            .collect::<Vec<_>>()
            .join(" or ");
        let _ = writeln!(out, "# Uplift by rule\n");
        let _ = writeln!(
            out,
            "Converted: a response {outcomes} from the subscriber within {} of the moment, to the decision's own \
             action or to none other. Treated: sent. Control: held out (`global_holdout`, `rule_holdout`). \
             95% intervals: Wilson score (rates), Newcombe hybrid score (uplift, in percentage points).\n",
            self.window
        );
        out.push_str(
            "| rule | treated n | treated conv. | treated rate (95% CI) | control n | control conv. \
             | control rate (95% CI) | uplift (95% CI) | relative uplift |\n",
        );
        out.push_str("|---|--:|--:|---|--:|--:|---|---|--:|\n");
        for row in self.rules.iter().chain([&self.all]) {
            let uplift = row.uplift.as_ref();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.rule,
                row.treated.n,
                row.treated.conversions,
                rate_cell(&row.treated),
                row.control.n,
                row.control.conversions,
                rate_cell(&row.control),
                uplift.map_or_else(
                    || NOT_ENOUGH_DATA.to_string(),
                    |u| format!(
                        "{:+.2} pp ({:+.2} to {:+.2})",
                        u.absolute * 100.0,
                        u.ci_low * 100.0,
                        u.ci_high * 100.0
                    )
                ),
                uplift
                    .and_then(|u| u.relative)
                    .map_or_else(|| "–".to_string(), |r| format!("{:+.1}%", r * 100.0)),
            );
        }
        let i = &self.inputs;
        let _ = writeln!(
            out,
            "\nInputs: {} decision(s) from {} file(s) ({} excluded: neither sent nor held out; {} duplicate(s) \
             ignored; {} malformed line(s) skipped); {} response(s) from {} event file(s) ({} other event(s) \
             skipped; {} invalid line(s) skipped).",
            i.decisions,
            i.decision_files,
            self.all.excluded,
            i.duplicate_decisions,
            i.malformed_decision_lines,
            i.responses,
            i.event_files,
            i.other_events,
            i.invalid_event_lines,
        );
        out
    }
}

fn rate_cell(group: &GroupStats) -> String {
    match (group.rate, group.ci_low, group.ci_high) {
        (Some(rate), Some(low), Some(high)) => {
            format!("{:.2}% ({:.2}% to {:.2}%)", rate * 100.0, low * 100.0, high * 100.0)
        }
        _ => NOT_ENOUGH_DATA.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64) -> bool {
        (got - want).abs() < 0.000_05
    }

    fn assert_interval(got: Option<Interval>, low: f64, high: f64) {
        let got = got.expect("an interval");
        assert!(
            close(got.low, low) && close(got.high, high),
            "got {got:?}, want {low} to {high}"
        );
    }

    /// Newcombe (1998a), "Two-sided confidence intervals for the single proportion",
    /// Table I, method 3 (score, no continuity correction).
    #[test]
    fn wilson_matches_newcombe_table_i() {
        assert_interval(wilson(81, 263, Z95), 0.2553, 0.3662);
        assert_interval(wilson(15, 148, Z95), 0.0624, 0.1605);
        assert_interval(wilson(0, 20, Z95), 0.0, 0.1611);
        assert_interval(wilson(1, 29, Z95), 0.0061, 0.1718);
        let all = wilson(29, 29, Z95).unwrap();
        assert_eq!(all.high, 1.0);
        assert_eq!(wilson(0, 20, Z95).unwrap().low, 0.0);
    }

    /// Newcombe (1998b), "Interval estimation for the difference between independent
    /// proportions", Table II, method 10 (hybrid score, no continuity correction).
    #[test]
    fn newcombe_matches_newcombe_table_ii() {
        assert_interval(newcombe(56, 70, 48, 80, Z95), 0.0524, 0.3339);
        assert_interval(newcombe(9, 10, 3, 10, Z95), 0.1705, 0.8090);
        assert_interval(newcombe(6, 7, 2, 7, Z95), 0.0582, 0.8062);
        assert_interval(newcombe(5, 56, 0, 29, Z95), -0.0381, 0.1926);
        assert_interval(newcombe(0, 10, 0, 20, Z95), -0.1611, 0.2775);
        assert_interval(newcombe(0, 10, 0, 10, Z95), -0.2775, 0.2775);
        assert_interval(newcombe(10, 10, 0, 20, Z95), 0.6791, 1.0);
        assert_interval(newcombe(10, 10, 0, 10, Z95), 0.6075, 1.0);
    }

    #[test]
    fn empty_groups_have_no_interval() {
        assert_eq!(wilson(0, 0, Z95), None);
        assert_eq!(newcombe(0, 0, 3, 10, Z95), None);
        assert_eq!(newcombe(3, 10, 0, 0, Z95), None);
    }

    #[test]
    fn groups_follow_decision_and_reason() {
        assert_eq!(Group::of(true, None), Group::Treated);
        assert_eq!(Group::of(false, Some("global_holdout")), Group::Control);
        assert_eq!(Group::of(false, Some("rule_holdout")), Group::Control);
        for reason in [
            "no_consent",
            "cooldown",
            "opted_out",
            "cap",
            "quiet_hours",
            "arbitration",
            "something_new",
        ] {
            assert_eq!(Group::of(false, Some(reason)), Group::Excluded, "{reason}");
        }
        assert_eq!(Group::of(false, None), Group::Excluded);
    }

    #[test]
    fn windows_and_outcomes_parse() {
        assert_eq!(parse_window("7d"), Ok(7 * DAY));
        assert_eq!(parse_window("90s"), Ok(90_000));
        assert_eq!(parse_window("15m"), Ok(15 * 60_000));
        assert_eq!(parse_window("0h"), Ok(0));
        for bad in ["", "d", "7", "7w", "-1d", "1.5d", "7 d", "99999999999999999999d", "7é"] {
            assert!(parse_window(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_window(7 * DAY), "7d");
        assert_eq!(format_window(36 * HOUR), "36h");
        assert_eq!(format_window(90_000), "90s");
        assert_eq!(format_window(1), "1ms");
        assert_eq!(
            parse_outcomes("accepted, clicked,accepted"),
            Ok(vec!["accepted".to_string(), "clicked".to_string()])
        );
        assert!(parse_outcomes("bought").unwrap_err().contains("valid outcomes are"));
        assert!(parse_outcomes("").is_err());
    }

    const ANA: u64 = 351_910_000_001;
    const BRUNO: u64 = 351_910_000_002;
    const T0: Millis = 1_782_864_000_000; // 2026-07-01T00:00:00Z

    fn decision(id: &str, rule: &str, msisdn: u64, moment_ts: Millis, group: Group) -> DecisionRecord {
        DecisionRecord {
            action_id: id.to_string(),
            rule: rule.to_string(),
            msisdn: Msisdn::from_u64(msisdn).unwrap(),
            moment_ts,
            group,
        }
    }

    fn response(msisdn: u64, ts: Millis, id: &str, outcome: ResponseOutcome) -> ResponseRecord {
        ResponseRecord {
            msisdn: Msisdn::from_u64(msisdn).unwrap(),
            ts,
            action_id: id.to_string(),
            outcome,
        }
    }

    fn accepted(msisdn: u64, ts: Millis, id: &str) -> ResponseRecord {
        response(msisdn, ts, id, ResponseOutcome::Accepted)
    }

    fn one(d: DecisionRecord, others: &[DecisionRecord], responses: &[ResponseRecord]) -> bool {
        let mut all = vec![d];
        all.extend_from_slice(others);
        converts(&all, responses, &Conversion::default())[0]
    }

    #[test]
    fn a_response_to_the_decisions_own_id_converts() {
        let d = decision("hu-1", "handset-upgrade", ANA, T0, Group::Treated);
        assert!(one(d.clone(), &[], &[accepted(ANA, T0 + HOUR, "hu-1")]));
        // Held out: the BSS may still report the purchase against the held-out id.
        let held = DecisionRecord {
            group: Group::Control,
            ..d
        };
        assert!(one(held, &[], &[accepted(ANA, T0 + HOUR, "hu-1")]));
    }

    #[test]
    fn a_response_with_an_unknown_or_empty_id_converts() {
        let d = decision("hu-1", "handset-upgrade", ANA, T0, Group::Control);
        assert!(one(d.clone(), &[], &[accepted(ANA, T0 + HOUR, "bss-purchase-77")]));
        assert!(one(d, &[], &[accepted(ANA, T0 + HOUR, "")]));
    }

    #[test]
    fn a_response_to_another_decision_does_not_convert() {
        let d = decision("hu-1", "handset-upgrade", ANA, T0, Group::Treated);
        let other = decision("fp-1", "family-plan", ANA, T0, Group::Treated);
        // Also when the other decision was never sent (any decision in the input counts).
        let capped = decision("rw-1", "roaming-welcome", ANA, T0, Group::Excluded);
        let responses = [accepted(ANA, T0 + HOUR, "fp-1"), accepted(ANA, T0 + HOUR, "rw-1")];
        assert!(!one(d.clone(), &[other.clone(), capped.clone()], &responses));
        // … but the other decision converts.
        let all = [d, other, capped];
        assert_eq!(
            converts(&all, &responses, &Conversion::default()),
            vec![false, true, true]
        );
    }

    #[test]
    fn only_the_subscribers_responses_in_the_window_with_a_counting_outcome_convert() {
        let d = decision("hu-1", "handset-upgrade", ANA, T0, Group::Treated);
        let window = Conversion::default().window;
        assert!(
            !one(d.clone(), &[], &[accepted(ANA, T0 - 1, "hu-1")]),
            "before the moment"
        );
        assert!(one(d.clone(), &[], &[accepted(ANA, T0, "hu-1")]), "at the moment");
        assert!(
            one(d.clone(), &[], &[accepted(ANA, T0 + window, "hu-1")]),
            "at the window's end"
        );
        assert!(
            !one(d.clone(), &[], &[accepted(ANA, T0 + window + 1, "hu-1")]),
            "after the window"
        );
        assert!(
            !one(d.clone(), &[], &[accepted(BRUNO, T0 + 1, "hu-1")]),
            "another subscriber"
        );
        let clicked = response(ANA, T0 + 1, "hu-1", ResponseOutcome::Clicked);
        assert!(
            !one(d.clone(), &[], std::slice::from_ref(&clicked)),
            "not a counting outcome"
        );
        let clicks_count = Conversion {
            window: HOUR,
            outcomes: vec!["clicked".into(), "accepted".into()],
        };
        assert_eq!(
            converts(std::slice::from_ref(&d), &[clicked], &clicks_count),
            vec![true]
        );
        let late = accepted(ANA, T0 + HOUR + 1, "hu-1");
        assert_eq!(converts(&[d], &[late], &clicks_count), vec![false], "a shorter window");
    }

    #[test]
    fn each_decision_counts_once() {
        let decisions = [
            decision("hu-1", "handset-upgrade", ANA, T0, Group::Treated),
            // The same decision again (an overlapping dump): ignored.
            decision("hu-1", "handset-upgrade", ANA, T0, Group::Treated),
            decision("hu-2", "handset-upgrade", BRUNO, T0, Group::Control),
        ];
        let responses = [
            accepted(ANA, T0 + 1, "hu-1"),
            accepted(ANA, T0 + 2, "hu-1"),
            accepted(ANA, T0 + 3, "unknown"),
        ];
        let m = measure(&decisions, &responses, &Conversion::default());
        assert_eq!(m.duplicate_decisions, 1);
        assert_eq!(m.rules.len(), 1);
        assert_eq!((m.rules[0].treated.n, m.rules[0].treated.conversions), (1, 1));
        assert_eq!((m.rules[0].control.n, m.rules[0].control.conversions), (1, 0));
        let u = m.rules[0].uplift.as_ref().unwrap();
        assert_eq!(u.absolute, 1.0);
        assert_eq!(u.relative, None, "the control rate is 0");
    }

    #[test]
    fn measures_per_rule_and_pooled_with_empty_groups() {
        let mut decisions = Vec::new();
        let mut responses = Vec::new();
        // family-plan: 56/70 treated vs 48/80 held out (Newcombe's example (a)).
        for i in 0..150u64 {
            let id = format!("fp-{i}");
            let msisdn = ANA + i;
            let group = if i < 70 { Group::Treated } else { Group::Control };
            decisions.push(decision(&id, "family-plan", msisdn, T0, group));
            if i < 56 || (70..118).contains(&i) {
                responses.push(accepted(msisdn, T0 + DAY, &id));
            }
        }
        // roaming-welcome: sent only, and one suppressed by cooldown.
        decisions.push(decision("rw-1", "roaming-welcome", BRUNO + 1000, T0, Group::Treated));
        decisions.push(decision("rw-2", "roaming-welcome", BRUNO + 1001, T0, Group::Excluded));
        let m = measure(&decisions, &responses, &Conversion::default());
        assert_eq!(
            m.rules.iter().map(|r| r.rule.as_str()).collect::<Vec<_>>(),
            ["family-plan", "roaming-welcome"]
        );
        let fp = &m.rules[0];
        assert_eq!(
            (
                fp.treated.n,
                fp.treated.conversions,
                fp.control.n,
                fp.control.conversions
            ),
            (70, 56, 80, 48)
        );
        let u = fp.uplift.as_ref().unwrap();
        assert!(
            close(u.absolute, 0.2) && close(u.ci_low, 0.0524) && close(u.ci_high, 0.3339),
            "{u:?}"
        );
        assert!(close(u.relative.unwrap(), 0.2 / 0.6));
        assert!(close(fp.treated.ci_low.unwrap(), wilson(56, 70, Z95).unwrap().low));

        let rw = &m.rules[1];
        assert_eq!((rw.treated.n, rw.control.n, rw.excluded), (1, 0, 1));
        assert_eq!(rw.control.rate, None);
        assert_eq!(rw.control.ci_low, None);
        assert_eq!(rw.uplift, None);

        assert_eq!(m.all.rule, "all");
        assert_eq!((m.all.treated.n, m.all.treated.conversions), (71, 56));
        assert_eq!(
            (m.all.control.n, m.all.control.conversions, m.all.excluded),
            (80, 48, 1)
        );

        let report = UpliftReport::new(m, &Conversion::default(), InputCounts::default());
        assert_eq!(report.inputs.decisions, 152);
        let table = report.to_markdown();
        let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(rows.len(), 4, "{table}");
        assert!(rows[1].starts_with("| family-plan | 70 | 56 | 80.00% ("), "{table}");
        assert!(rows[1].contains("+20.00 pp (+5.24 to +33.39) | +33.3% |"), "{table}");
        assert!(rows[2].starts_with("| roaming-welcome | 1 | 0 | 0.00% ("), "{table}");
        assert!(
            rows[2].ends_with("| 0 | 0 | not enough data | not enough data | – |"),
            "{table}"
        );
        assert!(rows[3].starts_with("| all | 71 | 56 |"), "{table}");
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["window"], "7d");
        assert_eq!(json["rules"][1]["uplift"], serde_json::Value::Null);
        assert_eq!(json["all"]["control"]["n"], 80);
    }
}
