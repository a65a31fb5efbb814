//! The dry run of a candidate rule set (`kairos rules try`): what each rule would have done
//! over a log, and how that differs from the rules in force. Pure: no I/O — the two
//! replays and the files are [`super::rules_try`]'s.
//!
//! # What is counted
//!
//! Every moment a rule acts on gives one decision, `sent` or `suppressed` with one reason
//! (rules/README.md, "Contact policy"). Per rule, from a run's decisions:
//!
//! - `moments`: decisions; `sent`: decisions sent; `suppressed`: the rest, by reason
//!   ([`REASONS`] in the order the policy checks them, then any other reason by name);
//! - `deferred`: sent with a `send_at` after `moment_ts` (held for quiet hours);
//! - `actions_by_channel` and `actions_by_day`: the sent decisions by channel, and by the
//!   UTC date of `send_at`;
//! - the **funnel**: moments, then what is left after each reason that stopped any
//!   (`removed`, `remaining`), down to `sent` — `remaining` of the last step is `sent`,
//!   since each decision stops at the first reason that says no;
//! - **samples**: the first few actions by `send_at` as they would be sent, the subscriber
//!   number masked but for its last 3 digits.
//!
//! The **difference** against the published rules: a rule is `added` (only in the
//! candidate set), `removed` (only published), `changed` (another version: any edit of the
//! file) or `unchanged`; `delta` is candidate − published for every count (a rule missing on
//! one side counts zero there). An unchanged rule can still move: caps and arbitration weigh
//! the rules against each other, and `policy.toml` may differ (`policy_changed`).
//!
//! The HTML page is self-contained (inline CSS and SVG, no script, nothing fetched), so it
//! can be mailed or attached to a change ticket; every number it shows is in the JSON, and
//! the numbers the JSON has per rule and in total sit in cells with `data-rule` /
//! `data-total`, `data-metric` (or `data-day`, `data-channel`, `data-step`) attributes.
//!
//! ```
//! use kairos::report::dryrun::{mask_msisdn, escape_html};
//! assert_eq!(mask_msisdn("351910000123"), "*********123");
//! assert_eq!(escape_html("<b>&"), "&lt;b&gt;&amp;");
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use kairos_model::time::{format_rfc3339, DAY};
use kairos_model::{Channel, Millis, Msisdn};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

/// The version of the JSON report's shape.
pub const FORMAT_VERSION: u32 = 1;

/// The suppression reasons, in the order the contact policy checks them.
pub const REASONS: [&str; 8] = [
    "no_consent",
    "opted_out",
    "cooldown",
    "quiet_hours",
    "cap",
    "arbitration",
    "global_holdout",
    "rule_holdout",
];

/// The default number of sample messages per rule.
pub const DEFAULT_SAMPLES: usize = 5;

/// One line of `decisions.jsonl`, as far as the report needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionLine {
    pub rule: String,
    pub rule_version: String,
    pub msisdn: Msisdn,
    pub moment_ts: Millis,
    /// `None` when sent; the suppression reason otherwise.
    pub reason: Option<String>,
    pub class: String,
    pub channel: Channel,
    /// When sent: when the channel may deliver it.
    pub send_at: Option<Millis>,
}

/// One line of `actions.jsonl`: a message as it would be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionLine {
    pub action_id: String,
    pub rule: String,
    pub msisdn: Msisdn,
    pub channel: Channel,
    pub send_at: Millis,
    pub language: String,
    pub message: String,
}

/// A rule of a rule set, as far as the report needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleInfo {
    pub id: String,
    pub version: String,
    pub class: String,
    pub channel: Channel,
}

/// One replay of the log with one rule set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Run {
    pub rules: Vec<RuleInfo>,
    pub decisions: Vec<DecisionLine>,
    pub actions: Vec<ActionLine>,
}

/// What was compared and read, for the report's header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inputs {
    /// The candidate rules folder, as given.
    pub candidate_rules: String,
    /// The published rules folder, as given.
    pub against_rules: String,
    /// Whether the two folders' contact policies differ.
    pub policy_changed: bool,
    /// The event paths, as given.
    pub event_paths: Vec<String>,
    pub event_files: usize,
    /// Lines read, and of them invalid (dead letters).
    pub events_read: u64,
    pub events_invalid: u64,
    /// The oldest and newest `ts` of the valid events.
    pub first_event: Option<Millis>,
    pub last_event: Option<Millis>,
    /// `kairos 0.1.0`.
    pub generated_by: String,
}

/// Counts by suppression reason: every reason of [`REASONS`] (0 when none), in that order,
/// then any other reason the decisions named, by name. Serialized as a JSON object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ByReason<T>(pub Vec<(String, T)>);

impl<T: Copy + Default + std::ops::AddAssign> ByReason<T> {
    fn new() -> ByReason<T> {
        ByReason(REASONS.iter().map(|r| (r.to_string(), T::default())).collect())
    }

    fn add(&mut self, reason: &str, n: T) {
        match self.0.iter_mut().find(|(r, _)| r == reason) {
            Some((_, count)) => *count += n,
            None => {
                // Unknown reasons after the known ones, in name order.
                let at = REASONS.len() + self.0[REASONS.len()..].partition_point(|(r, _)| r.as_str() < reason);
                self.0.insert(at, (reason.to_string(), n));
            }
        }
    }

    /// The count of `reason` (0 when it never occurred).
    pub fn get(&self, reason: &str) -> T {
        self.0
            .iter()
            .find(|(r, _)| r == reason)
            .map_or_else(T::default, |&(_, n)| n)
    }
}

impl<T: Serialize> Serialize for ByReason<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (reason, n) in &self.0 {
            map.serialize_entry(reason, n)?;
        }
        map.end()
    }
}

/// Actions by channel, and all of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ChannelCounts {
    pub sms: u64,
    pub email: u64,
    pub push: u64,
    pub total: u64,
}

impl ChannelCounts {
    fn add(&mut self, channel: Channel) {
        match channel {
            Channel::Sms => self.sms += 1,
            Channel::Email => self.email += 1,
            Channel::Push => self.push += 1,
        }
        self.total += 1;
    }

    /// The count of a channel.
    pub fn get(&self, channel: Channel) -> u64 {
        match channel {
            Channel::Sms => self.sms,
            Channel::Email => self.email,
            Channel::Push => self.push,
        }
    }
}

/// Actions of one UTC day (by `send_at`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DayCount {
    /// `YYYY-MM-DD`.
    pub day: String,
    #[serde(flatten)]
    pub actions: ChannelCounts,
}

/// What one rule set did: one rule's decisions, or every rule's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Decisions (moments the rule acted on).
    pub moments: u64,
    pub sent: u64,
    /// Sent with `send_at` after `moment_ts` (held for quiet hours).
    pub deferred: u64,
    pub suppressed: u64,
    pub suppressed_by_reason: ByReason<u64>,
    pub actions_by_channel: ChannelCounts,
    /// Days with at least one action, in order.
    pub actions_by_day: Vec<DayCount>,
}

impl Stats {
    /// Counts `decisions`.
    pub fn of<'a>(decisions: impl IntoIterator<Item = &'a DecisionLine>) -> Stats {
        let mut stats = Stats {
            moments: 0,
            sent: 0,
            deferred: 0,
            suppressed: 0,
            suppressed_by_reason: ByReason::new(),
            actions_by_channel: ChannelCounts::default(),
            actions_by_day: Vec::new(),
        };
        let mut days: BTreeMap<Millis, ChannelCounts> = BTreeMap::new();
        for d in decisions {
            stats.moments += 1;
            match &d.reason {
                Some(reason) => {
                    stats.suppressed += 1;
                    stats.suppressed_by_reason.add(reason, 1);
                }
                None => {
                    stats.sent += 1;
                    stats.actions_by_channel.add(d.channel);
                    let send_at = d.send_at.unwrap_or(d.moment_ts);
                    if send_at > d.moment_ts {
                        stats.deferred += 1;
                    }
                    days.entry(send_at / DAY).or_default().add(d.channel);
                }
            }
        }
        stats.actions_by_day = days
            .into_iter()
            .map(|(day, actions)| DayCount {
                day: day_name(day),
                actions,
            })
            .collect();
        stats
    }

    fn empty() -> Stats {
        Stats::of([])
    }
}

/// Candidate − published, for every count of [`Stats`] but the days.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Delta {
    pub moments: i64,
    pub sent: i64,
    pub deferred: i64,
    pub suppressed: i64,
    pub suppressed_by_reason: ByReason<i64>,
    pub actions_by_channel: ChannelDelta,
}

/// Candidate − published actions by channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ChannelDelta {
    pub sms: i64,
    pub email: i64,
    pub push: i64,
    pub total: i64,
}

fn minus(a: u64, b: u64) -> i64 {
    i64::try_from(a).unwrap_or(i64::MAX) - i64::try_from(b).unwrap_or(i64::MAX)
}

impl Delta {
    /// `candidate − published`; a side that is `None` counts zero.
    pub fn between(candidate: Option<&Stats>, published: Option<&Stats>) -> Delta {
        let empty = Stats::empty();
        let c = candidate.unwrap_or(&empty);
        let p = published.unwrap_or(&empty);
        let mut reasons = ByReason::new();
        for (reason, n) in &c.suppressed_by_reason.0 {
            reasons.add(reason, minus(*n, 0));
        }
        for (reason, n) in &p.suppressed_by_reason.0 {
            reasons.add(reason, minus(0, *n));
        }
        let (cc, pc) = (c.actions_by_channel, p.actions_by_channel);
        Delta {
            moments: minus(c.moments, p.moments),
            sent: minus(c.sent, p.sent),
            deferred: minus(c.deferred, p.deferred),
            suppressed: minus(c.suppressed, p.suppressed),
            suppressed_by_reason: reasons,
            actions_by_channel: ChannelDelta {
                sms: minus(cc.sms, pc.sms),
                email: minus(cc.email, pc.email),
                push: minus(cc.push, pc.push),
                total: minus(cc.total, pc.total),
            },
        }
    }
}

/// How a rule differs between the published and the candidate set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Added,
    Removed,
    Changed,
    Unchanged,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Added => "added",
            Status::Removed => "removed",
            Status::Changed => "changed",
            Status::Unchanged => "unchanged",
        }
    }
}

/// One step of a rule's funnel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FunnelStep {
    /// `moments`, a suppression reason, or `sent`.
    pub step: String,
    /// Decisions this step stopped (0 for `moments` and `sent`).
    pub removed: u64,
    /// Decisions left after it.
    pub remaining: u64,
}

/// The funnel of `stats`: moments, each reason that stopped any (in policy order), sent.
pub fn funnel(stats: &Stats) -> Vec<FunnelStep> {
    let mut steps = vec![FunnelStep {
        step: "moments".into(),
        removed: 0,
        remaining: stats.moments,
    }];
    let mut remaining = stats.moments;
    for (reason, n) in &stats.suppressed_by_reason.0 {
        let n = *n;
        if n > 0 {
            remaining = remaining.saturating_sub(n);
            steps.push(FunnelStep {
                step: reason.clone(),
                removed: n,
                remaining,
            });
        }
    }
    steps.push(FunnelStep {
        step: "sent".into(),
        removed: 0,
        remaining: stats.sent,
    });
    steps
}

/// A message as it would be sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Sample {
    pub send_at: String,
    /// The subscriber number but for its last 3 digits (`*********123`).
    pub msisdn: String,
    pub channel: &'static str,
    pub language: String,
    pub message: String,
}

/// `351910000123` → `*********123`.
pub fn mask_msisdn(msisdn: &str) -> String {
    let keep = msisdn.len().saturating_sub(3);
    msisdn
        .char_indices()
        .map(|(i, c)| if i < keep { '*' } else { c })
        .collect()
}

/// One rule of either set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleReport {
    pub rule: String,
    pub status: Status,
    /// The candidate's version (`None`: removed).
    pub version: Option<String>,
    /// The published version (`None`: added).
    pub published_version: Option<String>,
    pub class: String,
    pub channel: &'static str,
    /// What the candidate set did with the rule (`None`: removed).
    pub candidate: Option<Stats>,
    /// What the published set did with it (`None`: added).
    pub published: Option<Stats>,
    pub delta: Delta,
    /// The candidate's funnel (empty when removed).
    pub funnel: Vec<FunnelStep>,
    /// The candidate's first actions by `send_at`.
    pub samples: Vec<Sample>,
}

/// Both sets over all rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub candidate: Stats,
    pub published: Stats,
    pub delta: Delta,
}

/// Actions of one UTC day, both sets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TimelineDay {
    pub day: String,
    pub candidate: ChannelCounts,
    pub published: ChannelCounts,
}

/// The header's facts, as the JSON has them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InputsJson {
    pub candidate_rules: String,
    pub against_rules: String,
    pub candidate_rule_count: usize,
    pub against_rule_count: usize,
    pub policy_changed: bool,
    pub event_paths: Vec<String>,
    pub event_files: usize,
    pub events_read: u64,
    pub events_invalid: u64,
    /// RFC 3339 UTC; `None` without a valid event.
    pub first_event: Option<String>,
    pub last_event: Option<String>,
}

/// The whole report: `report.json`, and what `report.html` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DryRunReport {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    pub generated_by: String,
    pub inputs: InputsJson,
    pub samples_per_rule: usize,
    pub totals: Totals,
    /// Every UTC day from the first action's to the last one's (either set), with zeros.
    pub timeline: Vec<TimelineDay>,
    /// Every rule of either set, by id.
    pub rules: Vec<RuleReport>,
}

/// `YYYY-MM-DD` of a day number (days since the Unix epoch).
fn day_name(day: Millis) -> String {
    let text = format_rfc3339(day.saturating_mul(DAY));
    text.get(..10).unwrap_or(&text).to_string()
}

/// The longest timeline filled with zero days; a longer span lists only days with actions.
const MAX_TIMELINE_DAYS: u64 = 1_000;

fn timeline(candidate: &Stats, published: &Stats) -> Vec<TimelineDay> {
    let index = |stats: &Stats| -> BTreeMap<String, ChannelCounts> {
        stats
            .actions_by_day
            .iter()
            .map(|d| (d.day.clone(), d.actions))
            .collect()
    };
    let (c, p) = (index(candidate), index(published));
    let mut days: BTreeSet<String> = c.keys().chain(p.keys()).cloned().collect();
    let number = |day: Option<&String>| {
        day.and_then(|d| kairos_model::time::parse_rfc3339(&format!("{d}T00:00:00Z")).ok())
            .map(|t| t / DAY)
    };
    if let (Some(first), Some(last)) = (number(days.first()), number(days.last())) {
        if last - first < MAX_TIMELINE_DAYS {
            days.extend((first..=last).map(day_name));
        }
    }
    days.into_iter()
        .map(|day| TimelineDay {
            candidate: c.get(&day).copied().unwrap_or_default(),
            published: p.get(&day).copied().unwrap_or_default(),
            day,
        })
        .collect()
}

/// Builds the report of a dry run: `candidate` against `published`, with the first
/// `samples` actions of each candidate rule.
pub fn build(inputs: &Inputs, candidate: &Run, published: &Run, samples: usize) -> DryRunReport {
    let infos = |run: &Run| -> BTreeMap<String, RuleInfo> {
        let mut infos: BTreeMap<String, RuleInfo> = run.rules.iter().map(|r| (r.id.clone(), r.clone())).collect();
        // A decision of a rule the set does not list (not expected): still reported.
        for d in &run.decisions {
            infos.entry(d.rule.clone()).or_insert_with(|| RuleInfo {
                id: d.rule.clone(),
                version: d.rule_version.clone(),
                class: d.class.clone(),
                channel: d.channel,
            });
        }
        infos
    };
    let (c_infos, p_infos) = (infos(candidate), infos(published));
    fn by_rule(run: &Run) -> BTreeMap<&str, Vec<&DecisionLine>> {
        let mut map: BTreeMap<&str, Vec<&DecisionLine>> = BTreeMap::new();
        for d in &run.decisions {
            map.entry(d.rule.as_str()).or_default().push(d);
        }
        map
    }
    let (c_decisions, p_decisions) = (by_rule(candidate), by_rule(published));
    let ids: BTreeSet<&String> = c_infos.keys().chain(p_infos.keys()).collect();
    let rules = ids
        .into_iter()
        .map(|id| {
            let (c, p) = (c_infos.get(id), p_infos.get(id));
            let status = match (c, p) {
                (Some(_), None) => Status::Added,
                (None, Some(_)) => Status::Removed,
                (Some(c), Some(p)) if c.version != p.version => Status::Changed,
                _ => Status::Unchanged,
            };
            let stats = |info: Option<&RuleInfo>, decisions: &BTreeMap<&str, Vec<&DecisionLine>>| {
                info.map(|_| Stats::of(decisions.get(id.as_str()).into_iter().flatten().copied()))
            };
            let c_stats = stats(c, &c_decisions);
            let p_stats = stats(p, &p_decisions);
            let info = c.or(p).expect("the id came from one of the sets");
            let mut actions: Vec<&ActionLine> = if c.is_some() {
                candidate.actions.iter().filter(|a| &a.rule == id).collect()
            } else {
                Vec::new()
            };
            actions.sort_by(|a, b| (a.send_at, a.msisdn, &a.action_id).cmp(&(b.send_at, b.msisdn, &b.action_id)));
            RuleReport {
                rule: id.clone(),
                status,
                version: c.map(|r| r.version.clone()),
                published_version: p.map(|r| r.version.clone()),
                class: info.class.clone(),
                channel: info.channel.as_str(),
                delta: Delta::between(c_stats.as_ref(), p_stats.as_ref()),
                funnel: c_stats.as_ref().map(funnel).unwrap_or_default(),
                samples: actions
                    .into_iter()
                    .take(samples)
                    .map(|a| Sample {
                        send_at: format_rfc3339(a.send_at),
                        msisdn: mask_msisdn(&a.msisdn.to_string()),
                        channel: a.channel.as_str(),
                        language: a.language.clone(),
                        message: a.message.clone(),
                    })
                    .collect(),
                candidate: c_stats,
                published: p_stats,
            }
        })
        .collect();
    let c_total = Stats::of(&candidate.decisions);
    let p_total = Stats::of(&published.decisions);
    DryRunReport {
        version: FORMAT_VERSION,
        generated_by: inputs.generated_by.clone(),
        inputs: InputsJson {
            candidate_rules: inputs.candidate_rules.clone(),
            against_rules: inputs.against_rules.clone(),
            candidate_rule_count: candidate.rules.len(),
            against_rule_count: published.rules.len(),
            policy_changed: inputs.policy_changed,
            event_paths: inputs.event_paths.clone(),
            event_files: inputs.event_files,
            events_read: inputs.events_read,
            events_invalid: inputs.events_invalid,
            first_event: inputs.first_event.map(format_rfc3339),
            last_event: inputs.last_event.map(format_rfc3339),
        },
        samples_per_rule: samples,
        timeline: timeline(&c_total, &p_total),
        totals: Totals {
            delta: Delta::between(Some(&c_total), Some(&p_total)),
            candidate: c_total,
            published: p_total,
        },
        rules,
    }
}

/// Escapes text for HTML content and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `+3`, `-2`, `0`.
fn signed(n: i64) -> String {
    if n > 0 {
        format!("+{n}")
    } else {
        n.to_string()
    }
}

fn delta_class(n: i64) -> &'static str {
    match n.signum() {
        1 => "up",
        -1 => "down",
        _ => "zero",
    }
}

const CHANNEL_COLOURS: [(Channel, &str); 3] = [
    (Channel::Sms, "#2563eb"),
    (Channel::Email, "#059669"),
    (Channel::Push, "#d97706"),
];

const STYLE: &str = r#"
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #1e293b;
  margin: 0; background: #f8fafc; }
main { max-width: 1040px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 2px solid #e2e8f0; }
h3 { font-size: 16px; margin: 0 0 8px; }
.lede { color: #475569; margin: 0 0 16px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0; }
dl.facts dt { color: #64748b; } dl.facts dd { margin: 0; font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
.card { background: #fff; border: 1px solid #e2e8f0; border-radius: 8px; padding: 10px 16px; min-width: 150px; }
.card .label { color: #64748b; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .value { font-size: 26px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .was { color: #64748b; font-size: 12px; }
table { border-collapse: collapse; background: #fff; margin: 8px 0 4px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #e2e8f0; padding: 4px 9px; text-align: right; vertical-align: top; }
th { background: #f1f5f9; font-weight: 600; font-size: 12px; }
td.text, th.text { text-align: left; }
td.message { text-align: left; max-width: 520px; white-space: pre-wrap; word-break: break-word; }
.up { color: #047857; } .down { color: #b91c1c; } .zero { color: #94a3b8; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; }
.badge.added { background: #dcfce7; color: #166534; } .badge.removed { background: #fee2e2; color: #991b1b; }
.badge.changed { background: #fef3c7; color: #92400e; } .badge.unchanged { background: #e2e8f0; color: #475569; }
section.rule { background: #fff; border: 1px solid #e2e8f0; border-radius: 8px; padding: 16px 18px; margin: 16px 0; }
section.rule .meta { color: #64748b; font-size: 13px; margin: 0 0 10px; }
.note { color: #64748b; font-size: 13px; }
.grid { display: flex; flex-wrap: wrap; gap: 12px 28px; align-items: flex-start; }
.grid > div > table.days { margin-top: 12px; }
svg text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px; }
"#;

impl DryRunReport {
    /// The report as pretty-printed JSON, with a final newline.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// The report as one self-contained HTML page.
    pub fn to_html(&self) -> String {
        let mut h = String::new();
        let i = &self.inputs;
        let title = format!("Dry run of {} against {}", i.candidate_rules, i.against_rules);
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <meta name=\"generator\" content=\"{gen}\">\n<title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n",
            gen = escape_html(&self.generated_by),
            title = escape_html(&title),
        );
        self.header_html(&mut h);
        self.summary_html(&mut h);
        self.timeline_html(&mut h);
        self.diff_html(&mut h);
        self.rules_html(&mut h);
        let _ = writeln!(
            h,
            "<p class=\"note\">Generated by {} (report format version {}). The replay outputs of both runs are kept \
             beside this page, in <code>candidate/</code> and <code>published/</code>.</p>\n</main>\n</body>\n</html>",
            escape_html(&self.generated_by),
            self.version
        );
        h
    }

    fn header_html(&self, h: &mut String) {
        let i = &self.inputs;
        let range = match (&i.first_event, &i.last_event) {
            (Some(first), Some(last)) => format!("{first} → {last}"),
            _ => "no valid events".to_string(),
        };
        let _ = writeln!(
            h,
            "<header>\n<h1>Dry run: <code>{}</code></h1>\n<p class=\"lede\">The candidate rules and the published rules \
             were each replayed over the same events by the engine of <code>kairos replay</code>. <strong>Nobody was \
             contacted.</strong></p>\n<dl class=\"facts\">",
            escape_html(&i.candidate_rules)
        );
        let paths = i
            .event_paths
            .iter()
            .map(|p| escape_html(p))
            .collect::<Vec<_>>()
            .join(", ");
        let rows: [(&str, String); 7] = [
            (
                "candidate rules",
                format!(
                    "<span id=\"candidate-dir\">{}</span> ({} rules)",
                    escape_html(&i.candidate_rules),
                    i.candidate_rule_count
                ),
            ),
            (
                "against (published)",
                format!(
                    "<span id=\"against-dir\">{}</span> ({} rules)",
                    escape_html(&i.against_rules),
                    i.against_rule_count
                ),
            ),
            (
                "contact policy",
                if i.policy_changed {
                    "<span id=\"policy-changed\">changed</span> (policy.toml differs)".to_string()
                } else {
                    "<span id=\"policy-changed\">unchanged</span>".to_string()
                },
            ),
            ("events", format!("{paths} ({} file(s))", i.event_files)),
            (
                "lines read",
                format!(
                    "<span data-total=\"events_read\">{}</span>, of which <span data-total=\"events_invalid\">{}</span> invalid",
                    i.events_read, i.events_invalid
                ),
            ),
            ("event time", format!("<span id=\"time-range\">{}</span>", escape_html(&range))),
            (
                "generated by",
                format!("<span id=\"generated-by\">{}</span>", escape_html(&self.generated_by)),
            ),
        ];
        for (label, value) in rows {
            let _ = writeln!(h, "<dt>{label}</dt><dd>{value}</dd>");
        }
        h.push_str("</dl>\n</header>\n");
    }

    fn summary_html(&self, h: &mut String) {
        let t = &self.totals;
        h.push_str("<h2 id=\"summary\">Summary</h2>\n<div class=\"cards\">\n");
        let cards: [(&str, &str, u64, u64, i64); 4] = [
            (
                "moments",
                "moments",
                t.candidate.moments,
                t.published.moments,
                t.delta.moments,
            ),
            ("sent", "actions sent", t.candidate.sent, t.published.sent, t.delta.sent),
            (
                "suppressed",
                "suppressed",
                t.candidate.suppressed,
                t.published.suppressed,
                t.delta.suppressed,
            ),
            (
                "deferred",
                "deferred (quiet hours)",
                t.candidate.deferred,
                t.published.deferred,
                t.delta.deferred,
            ),
        ];
        for (metric, label, c, p, d) in cards {
            let _ = writeln!(
                h,
                "<div class=\"card\"><div class=\"label\">{label}</div><div class=\"value\" data-total=\"{metric}\">{c}</div>\
                 <div class=\"was\">published <span data-total=\"published.{metric}\">{p}</span> · \
                 <span class=\"{}\" data-total=\"delta.{metric}\">{}</span></div></div>",
                delta_class(d),
                signed(d)
            );
        }
        h.push_str("</div>\n");

        // Per rule.
        h.push_str(
            "<table id=\"rules-summary\">\n<thead><tr><th class=\"text\">rule</th><th class=\"text\">status</th>\
             <th class=\"text\">class</th><th>moments</th><th>sent</th><th>suppressed</th><th>deferred</th>\
             <th>sms</th><th>email</th><th>push</th><th>published sent</th><th>Δ sent</th></tr></thead>\n<tbody>\n",
        );
        for r in &self.rules {
            let c = r.candidate.as_ref();
            let rule = escape_html(&r.rule);
            let cell = |metric: &str, n: Option<u64>| {
                format!(
                    "<td data-rule=\"{rule}\" data-metric=\"{metric}\">{}</td>",
                    count_or_dash(n)
                )
            };
            let _ = writeln!(
                h,
                "<tr><td class=\"text\"><a href=\"#rule-{rule}\">{rule}</a></td><td class=\"text\"><span class=\"badge {s}\" \
                 data-rule=\"{rule}\" data-metric=\"status\">{s}</span></td><td class=\"text\">{class}</td>{}{}{}{}{}{}{}{}\
                 <td class=\"{dc}\" data-rule=\"{rule}\" data-metric=\"delta.sent\">{ds}</td></tr>",
                cell("moments", c.map(|c| c.moments)),
                cell("sent", c.map(|c| c.sent)),
                cell("suppressed", c.map(|c| c.suppressed)),
                cell("deferred", c.map(|c| c.deferred)),
                cell("channel.sms", c.map(|c| c.actions_by_channel.sms)),
                cell("channel.email", c.map(|c| c.actions_by_channel.email)),
                cell("channel.push", c.map(|c| c.actions_by_channel.push)),
                cell("published.sent", r.published.as_ref().map(|p| p.sent)),
                s = r.status.as_str(),
                class = escape_html(&r.class),
                dc = delta_class(r.delta.sent),
                ds = signed(r.delta.sent),
            );
        }
        let _ = writeln!(
            h,
            "</tbody>\n<tfoot><tr><th class=\"text\" colspan=\"3\">all rules</th><th data-total=\"moments\">{}</th>\
             <th data-total=\"sent\">{}</th><th data-total=\"suppressed\">{}</th><th data-total=\"deferred\">{}</th>\
             <th data-total=\"channel.sms\">{}</th><th data-total=\"channel.email\">{}</th><th data-total=\"channel.push\">{}</th>\
             <th data-total=\"published.sent\">{}</th><th data-total=\"delta.sent\">{}</th></tr></tfoot>\n</table>",
            t.candidate.moments,
            t.candidate.sent,
            t.candidate.suppressed,
            t.candidate.deferred,
            t.candidate.actions_by_channel.sms,
            t.candidate.actions_by_channel.email,
            t.candidate.actions_by_channel.push,
            t.published.sent,
            signed(t.delta.sent),
        );

        // Suppressions by reason, all rules.
        h.push_str(
            "<h3 style=\"margin-top:20px\">Suppressed, by reason (all rules)</h3>\n<table id=\"reasons\">\n<thead><tr>\
             <th class=\"text\">reason</th><th>candidate</th><th>published</th><th>Δ</th></tr></thead>\n<tbody>\n",
        );
        for (reason, c) in &t.candidate.suppressed_by_reason.0 {
            let p = t.published.suppressed_by_reason.get(reason);
            let d = t.delta.suppressed_by_reason.get(reason);
            let reason = escape_html(reason);
            let _ = writeln!(
                h,
                "<tr><td class=\"text\"><code>{reason}</code></td><td data-total=\"suppressed.{reason}\">{c}</td>\
                 <td data-total=\"published.suppressed.{reason}\">{p}</td><td class=\"{}\" data-total=\"delta.suppressed.{reason}\">{}</td></tr>",
                delta_class(d),
                signed(d)
            );
        }
        h.push_str("</tbody>\n</table>\n<p class=\"note\">Each decision stops at the first step of the contact policy that says no, in this order.</p>\n");
    }

    fn timeline_html(&self, h: &mut String) {
        h.push_str("<h2 id=\"timeline\">Actions per day</h2>\n<p class=\"lede\">Candidate actions by the UTC day of their <code>send_at</code>, stacked by channel; the dashed line is the published rules' total.</p>\n");
        h.push_str(&timeline_svg(&self.timeline));
        h.push_str(
            "<table id=\"timeline-table\">\n<thead><tr><th class=\"text\">day (UTC)</th><th>sms</th><th>email</th>\
             <th>push</th><th>total</th><th>published</th><th>Δ</th></tr></thead>\n<tbody>\n",
        );
        for day in &self.timeline {
            let c = day.candidate;
            let d = minus(c.total, day.published.total);
            let cell =
                |channel: &str, n: u64| format!("<td data-day=\"{}\" data-channel=\"{channel}\">{n}</td>", day.day);
            let _ = writeln!(
                h,
                "<tr><td class=\"text\">{}</td>{}{}{}{}<td data-day=\"{}\" data-channel=\"published.total\">{}</td><td class=\"{}\">{}</td></tr>",
                day.day,
                cell("sms", c.sms),
                cell("email", c.email),
                cell("push", c.push),
                cell("total", c.total),
                day.day,
                day.published.total,
                delta_class(d),
                signed(d),
            );
        }
        h.push_str("</tbody>\n</table>\n");
    }

    fn diff_html(&self, h: &mut String) {
        let changed = self.rules.iter().filter(|r| r.status != Status::Unchanged).count();
        let _ = writeln!(
            h,
            "<h2 id=\"diff\">Against the published rules</h2>\n<p class=\"lede\">{changed} rule(s) added, removed or \
             changed; the contact policy is {}. A rule's numbers can move even when it is unchanged: caps and \
             arbitration weigh the rules against each other.</p>",
            if self.inputs.policy_changed {
                "<strong>changed</strong>"
            } else {
                "unchanged"
            }
        );
        h.push_str(
            "<table id=\"diff-table\">\n<thead><tr><th class=\"text\">rule</th><th class=\"text\">status</th>\
             <th class=\"text\">published version</th><th class=\"text\">candidate version</th><th>Δ moments</th>\
             <th>Δ sent</th><th>Δ deferred</th><th class=\"text\">Δ suppressed, by reason</th></tr></thead>\n<tbody>\n",
        );
        for r in &self.rules {
            let rule = escape_html(&r.rule);
            let version = |v: &Option<String>| v.as_deref().map_or_else(|| "–".to_string(), escape_html);
            let reasons: Vec<String> = r
                .delta
                .suppressed_by_reason
                .0
                .iter()
                .filter(|(_, n)| *n != 0)
                .map(|(reason, n)| {
                    format!(
                        "<span class=\"{}\"><code>{}</code> {}</span>",
                        delta_class(*n),
                        escape_html(reason),
                        signed(*n)
                    )
                })
                .collect();
            let _ = writeln!(
                h,
                "<tr data-rule=\"{rule}\" data-status=\"{s}\"><td class=\"text\">{rule}</td><td class=\"text\"><span class=\"badge {s}\">{s}</span></td>\
                 <td class=\"text\"><code data-rule=\"{rule}\" data-metric=\"published_version\">{pv}</code></td>\
                 <td class=\"text\"><code data-rule=\"{rule}\" data-metric=\"version\">{cv}</code></td>\
                 <td class=\"{mc}\" data-rule=\"{rule}\" data-metric=\"delta.moments\">{dm}</td>\
                 <td class=\"{sc}\">{ds}</td><td class=\"{fc}\" data-rule=\"{rule}\" data-metric=\"delta.deferred\">{dd}</td>\
                 <td class=\"text\">{reasons}</td></tr>",
                s = r.status.as_str(),
                pv = version(&r.published_version),
                cv = version(&r.version),
                mc = delta_class(r.delta.moments),
                dm = signed(r.delta.moments),
                sc = delta_class(r.delta.sent),
                ds = signed(r.delta.sent),
                fc = delta_class(r.delta.deferred),
                dd = signed(r.delta.deferred),
                reasons = if reasons.is_empty() {
                    "<span class=\"zero\">no change</span>".to_string()
                } else {
                    reasons.join(", ")
                },
            );
        }
        h.push_str("</tbody>\n</table>\n");
    }

    fn rules_html(&self, h: &mut String) {
        h.push_str("<h2 id=\"rules\">Rule by rule</h2>\n");
        for r in &self.rules {
            let rule = escape_html(&r.rule);
            let _ = writeln!(
                h,
                "<section class=\"rule\" id=\"rule-{rule}\" data-rule=\"{rule}\">\n<h3>{rule} <span class=\"badge {s}\">{s}</span></h3>\n\
                 <p class=\"meta\">class {class} · channel {channel} · version {version}</p>",
                s = r.status.as_str(),
                class = escape_html(&r.class),
                channel = r.channel,
                version = match (&r.published_version, &r.version) {
                    (Some(p), Some(c)) if p != c => format!("<code>{}</code> → <code>{}</code>", escape_html(p), escape_html(c)),
                    (_, Some(c)) => format!("<code>{}</code>", escape_html(c)),
                    (Some(p), None) => format!("<code>{}</code> (removed: the candidate set has no such rule)", escape_html(p)),
                    (None, None) => "–".into(),
                }
            );
            // Left: the funnel and the actions by day; right: every count, both sets.
            h.push_str("<div class=\"grid\">\n<div>\n");
            if let Some(c) = &r.candidate {
                h.push_str(&funnel_svg(&r.rule, &r.funnel));
                days_table(h, &rule, &c.actions_by_day);
            } else {
                h.push_str("<p class=\"note\">Not in the candidate set: it would send nothing.</p>\n");
            }
            h.push_str("</div>\n");
            let (c, p) = (r.candidate.as_ref(), r.published.as_ref());
            h.push_str(
                "<table class=\"reasons\">\n<thead><tr><th class=\"text\"></th><th>candidate</th><th>published</th><th>Δ</th></tr></thead>\n<tbody>\n",
            );
            // (metric, candidate, published, delta); moments, sent and deferred carry their
            // data attributes in the summary table.
            let mut rows: Vec<CountRow> = vec![
                (
                    "moments".into(),
                    c.map(|c| c.moments),
                    p.map(|p| p.moments),
                    r.delta.moments,
                    false,
                ),
                ("sent".into(), c.map(|c| c.sent), p.map(|p| p.sent), r.delta.sent, false),
                (
                    "deferred".into(),
                    c.map(|c| c.deferred),
                    p.map(|p| p.deferred),
                    r.delta.deferred,
                    false,
                ),
            ];
            for (reason, d) in &r.delta.suppressed_by_reason.0 {
                rows.push((
                    format!("suppressed.{reason}"),
                    c.map(|c| c.suppressed_by_reason.get(reason)),
                    p.map(|p| p.suppressed_by_reason.get(reason)),
                    *d,
                    true,
                ));
            }
            for (metric, cn, pn, d, attributes) in rows {
                let metric = escape_html(&metric);
                let data = |prefix: &str| {
                    if attributes {
                        format!(" data-rule=\"{rule}\" data-metric=\"{prefix}{metric}\"")
                    } else {
                        String::new()
                    }
                };
                let label = match metric.strip_prefix("suppressed.") {
                    Some(reason) => format!("<code>{reason}</code>"),
                    None => format!("<strong>{metric}</strong>"),
                };
                let _ = writeln!(
                    h,
                    "<tr><td class=\"text\">{label}</td><td{}>{}</td><td{}>{}</td><td class=\"{}\"{}>{}</td></tr>",
                    data(""),
                    count_or_dash(cn),
                    data("published."),
                    count_or_dash(pn),
                    delta_class(d),
                    data("delta."),
                    signed(d)
                );
            }
            h.push_str("</tbody>\n</table>\n</div>\n");
            // Samples.
            if !r.samples.is_empty() {
                let _ = writeln!(
                    h,
                    "<h4>The first {} message(s), as they would be sent</h4>\n<table class=\"samples\" data-rule=\"{rule}\">\n\
                     <thead><tr><th class=\"text\">send_at</th><th class=\"text\">to</th><th class=\"text\">channel</th>\
                     <th class=\"text\">lang.</th><th class=\"text\">message</th></tr></thead>\n<tbody>",
                    r.samples.len()
                );
                for s in &r.samples {
                    let _ = writeln!(
                        h,
                        "<tr><td class=\"text\"><code>{}</code></td><td class=\"text\"><code>{}</code></td><td class=\"text\">{}</td>\
                         <td class=\"text\">{}</td><td class=\"message\">{}</td></tr>",
                        escape_html(&s.send_at),
                        escape_html(&s.msisdn),
                        s.channel,
                        escape_html(&s.language),
                        escape_html(&s.message)
                    );
                }
                h.push_str("</tbody>\n</table>\n");
            } else if r.candidate.is_some() {
                h.push_str("<p class=\"note\">No message would be sent.</p>\n");
            }
            h.push_str("</section>\n");
        }
    }
}

/// A row of a rule's counts: metric, candidate, published, delta, and whether the cells
/// carry data attributes.
type CountRow = (String, Option<u64>, Option<u64>, i64, bool);

/// A count, or `–` for a rule that is not in that set.
fn count_or_dash(n: Option<u64>) -> String {
    n.map_or_else(|| "–".to_string(), |n| n.to_string())
}

/// One rule's actions by UTC day and channel.
fn days_table(h: &mut String, rule: &str, days: &[DayCount]) {
    if days.is_empty() {
        return;
    }
    h.push_str(
        "<table class=\"days\">\n<thead><tr><th class=\"text\">day (UTC)</th><th>sms</th><th>email</th><th>push</th>\
         <th>total</th></tr></thead>\n<tbody>\n",
    );
    for d in days {
        let cell = |channel: &str, n: u64| {
            format!(
                "<td data-rule=\"{rule}\" data-day=\"{}\" data-channel=\"{channel}\">{n}</td>",
                d.day
            )
        };
        let _ = writeln!(
            h,
            "<tr><td class=\"text\">{}</td>{}{}{}{}</tr>",
            d.day,
            cell("sms", d.actions.sms),
            cell("email", d.actions.email),
            cell("push", d.actions.push),
            cell("total", d.actions.total)
        );
    }
    h.push_str("</tbody>\n</table>\n");
}

/// A rule's funnel as horizontal bars: what is left after each step, and what it removed.
fn funnel_svg(rule: &str, steps: &[FunnelStep]) -> String {
    const LABEL: f64 = 120.0;
    const BAR: f64 = 300.0;
    const ROW: f64 = 26.0;
    let width = LABEL + BAR + 120.0;
    let height = ROW * steps.len() as f64 + 8.0;
    let rule = escape_html(rule);
    let top = steps.first().map_or(0, |s| s.remaining).max(1) as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg class=\"funnel\" data-rule=\"{rule}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"funnel of {rule}\">"
    );
    for (i, step) in steps.iter().enumerate() {
        let y = 4.0 + ROW * i as f64;
        let w = BAR * step.remaining as f64 / top;
        let removed = BAR * step.removed as f64 / top;
        let (fill, label) = match step.step.as_str() {
            "moments" => ("#64748b", "moments".to_string()),
            "sent" => ("#059669", "sent".to_string()),
            reason => ("#94a3b8", format!("− {reason}")),
        };
        let name = escape_html(&step.step);
        let _ = writeln!(
            s,
            "<text x=\"{x}\" y=\"{ty}\" text-anchor=\"end\" font-size=\"12\" fill=\"#334155\">{label}</text>\
             <rect x=\"{LABEL}\" y=\"{y}\" width=\"{w:.1}\" height=\"{h}\" rx=\"2\" fill=\"{fill}\"/>",
            x = LABEL - 8.0,
            ty = y + 14.0,
            label = escape_html(&label),
            h = ROW - 8.0,
        );
        if step.removed > 0 {
            let _ = writeln!(
                s,
                "<rect x=\"{x:.1}\" y=\"{y}\" width=\"{removed:.1}\" height=\"{h}\" rx=\"2\" fill=\"#fca5a5\"/>",
                x = LABEL + w,
                h = ROW - 8.0,
            );
        }
        let _ = write!(
            s,
            "<text x=\"{x}\" y=\"{ty}\" font-size=\"12\" fill=\"#0f172a\"><tspan class=\"funnel-value\" data-rule=\"{rule}\" \
             data-step=\"{name}\" font-weight=\"600\">{}</tspan>",
            step.remaining,
            x = LABEL + BAR + 8.0,
            ty = y + 14.0,
        );
        if step.removed > 0 {
            let _ = write!(
                s,
                "<tspan class=\"funnel-removed\" data-rule=\"{rule}\" data-step=\"{name}\" fill=\"#b91c1c\"> (−{})</tspan>",
                step.removed
            );
        }
        s.push_str("</text>\n");
    }
    s.push_str("</svg>\n");
    s
}

/// A round step for `max` split into about 4 ticks: 1, 2 or 5 × 10ⁿ.
fn tick_step(max: u64) -> u64 {
    let mut step = 1u64;
    loop {
        for m in [1, 2, 5] {
            if max.div_ceil(step * m) <= 4 {
                return step * m;
            }
        }
        step = step.saturating_mul(10);
    }
}

/// Actions per day: bars stacked by channel (candidate), the published total as a line.
fn timeline_svg(days: &[TimelineDay]) -> String {
    const W: f64 = 960.0;
    const H: f64 = 300.0;
    const LEFT: f64 = 56.0;
    const RIGHT: f64 = 16.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 44.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg id=\"timeline-chart\" class=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" width=\"100%\" viewBox=\"0 0 {W} {H}\" \
         role=\"img\" aria-label=\"actions per day\" style=\"max-width:{W}px;background:#fff;border:1px solid #e2e8f0;border-radius:8px\">"
    );
    // Legend.
    let mut x = LEFT;
    for (channel, colour) in CHANNEL_COLOURS {
        let _ = writeln!(
            s,
            "<rect x=\"{x}\" y=\"12\" width=\"12\" height=\"12\" fill=\"{colour}\"/><text x=\"{}\" y=\"22\" font-size=\"12\" fill=\"#334155\">{}</text>",
            x + 16.0,
            channel.as_str()
        );
        x += 70.0;
    }
    let _ = writeln!(
        s,
        "<line x1=\"{x}\" y1=\"18\" x2=\"{}\" y2=\"18\" stroke=\"#0f172a\" stroke-width=\"2\" stroke-dasharray=\"5 3\"/>\
         <text x=\"{}\" y=\"22\" font-size=\"12\" fill=\"#334155\">published (total)</text>",
        x + 22.0,
        x + 28.0
    );
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let base = TOP + plot_h;
    if days.is_empty() {
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"14\" fill=\"#64748b\">no actions</text>\n</svg>",
            W / 2.0,
            TOP + plot_h / 2.0
        );
        return s;
    }
    let max = days
        .iter()
        .map(|d| d.candidate.total.max(d.published.total))
        .max()
        .unwrap_or(0)
        .max(1);
    let step = tick_step(max);
    let top_value = max.div_ceil(step) * step;
    let y_of = |n: u64| base - plot_h * n as f64 / top_value as f64;
    // Y axis: grid lines and labels.
    let mut tick = 0;
    while tick <= top_value {
        let y = y_of(tick);
        let _ = writeln!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#e2e8f0\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"11\" fill=\"#64748b\">{tick}</text>",
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0
        );
        tick += step;
    }
    let _ = writeln!(
        s,
        "<text x=\"14\" y=\"{:.1}\" font-size=\"11\" fill=\"#64748b\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">actions</text>",
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    let slot = plot_w / days.len() as f64;
    let bar = (slot * 0.7).max(1.0);
    let label_every = days.len().div_ceil(16).max(1);
    let show_totals = days.len() <= 45;
    let mut line = Vec::new();
    for (i, day) in days.iter().enumerate() {
        let x0 = LEFT + slot * i as f64 + (slot - bar) / 2.0;
        let mut level = 0u64;
        for (channel, colour) in CHANNEL_COLOURS {
            let n = day.candidate.get(channel);
            if n == 0 {
                continue;
            }
            let (y_top, y_bottom) = (y_of(level + n), y_of(level));
            let _ = writeln!(
                s,
                "<rect class=\"bar\" data-day=\"{}\" data-channel=\"{}\" data-value=\"{n}\" x=\"{x0:.1}\" y=\"{y_top:.1}\" \
                 width=\"{bar:.1}\" height=\"{:.1}\" fill=\"{colour}\"><title>{} {}: {n}</title></rect>",
                day.day,
                channel.as_str(),
                (y_bottom - y_top).max(0.0),
                day.day,
                channel.as_str()
            );
            level += n;
        }
        if show_totals {
            let _ = writeln!(
                s,
                "<text class=\"bar-total\" data-day=\"{}\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"11\" \
                 font-weight=\"600\" fill=\"#0f172a\">{}</text>",
                day.day,
                x0 + bar / 2.0,
                y_of(day.candidate.total) - 4.0,
                day.candidate.total
            );
        }
        line.push(format!(
            "{:.1},{:.1}",
            LEFT + slot * (i as f64 + 0.5),
            y_of(day.published.total)
        ));
        if i % label_every == 0 {
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"11\" fill=\"#475569\">{}</text>",
                LEFT + slot * (i as f64 + 0.5),
                base + 16.0,
                day.day.get(5..).unwrap_or(&day.day)
            );
        }
    }
    let _ = writeln!(
        s,
        "<line x1=\"{LEFT}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" stroke=\"#94a3b8\"/>",
        W - RIGHT
    );
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"11\" fill=\"#64748b\">day (UTC, {} → {})</text>",
        LEFT + plot_w / 2.0,
        H - 8.0,
        days.first().map_or("", |d| d.day.as_str()),
        days.last().map_or("", |d| d.day.as_str())
    );
    if line.len() == 1 {
        // One day: a short dash instead of a line.
        if let Some((x, y)) = line[0].split_once(',') {
            let x: f64 = x.parse().unwrap_or(LEFT);
            let _ = writeln!(
                s,
                "<line class=\"published\" x1=\"{:.1}\" y1=\"{y}\" x2=\"{:.1}\" y2=\"{y}\" stroke=\"#0f172a\" stroke-width=\"2\" stroke-dasharray=\"5 3\"/>",
                x - bar / 2.0 - 6.0,
                x + bar / 2.0 + 6.0
            );
        }
    } else {
        let _ = writeln!(
            s,
            "<polyline class=\"published\" points=\"{}\" fill=\"none\" stroke=\"#0f172a\" stroke-width=\"2\" stroke-dasharray=\"5 3\"/>",
            line.join(" ")
        );
    }
    for point in &line {
        if let Some((x, y)) = point.split_once(',') {
            let _ = writeln!(s, "<circle cx=\"{x}\" cy=\"{y}\" r=\"3\" fill=\"#0f172a\"/>");
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_1: Millis = 1_782_864_000_000; // 2026-07-01T00:00:00Z

    fn msisdn(n: u64) -> Msisdn {
        Msisdn::parse(&format!("35191{n:07}")).unwrap()
    }

    fn decision(
        rule: &str,
        who: u64,
        moment_ts: Millis,
        reason: Option<&str>,
        send_at: Option<Millis>,
    ) -> DecisionLine {
        DecisionLine {
            rule: rule.into(),
            rule_version: "v1".into(),
            msisdn: msisdn(who),
            moment_ts,
            reason: reason.map(str::to_string),
            class: "marketing".into(),
            channel: Channel::Sms,
            send_at: if reason.is_none() {
                send_at.or(Some(moment_ts))
            } else {
                None
            },
        }
    }

    fn action(rule: &str, who: u64, send_at: Millis, message: &str) -> ActionLine {
        ActionLine {
            action_id: format!("{rule}-{who}-{send_at}"),
            rule: rule.into(),
            msisdn: msisdn(who),
            channel: Channel::Sms,
            send_at,
            language: "en".into(),
            message: message.into(),
        }
    }

    fn info(id: &str, version: &str) -> RuleInfo {
        RuleInfo {
            id: id.into(),
            version: version.into(),
            class: "marketing".into(),
            channel: Channel::Sms,
        }
    }

    fn inputs() -> Inputs {
        Inputs {
            candidate_rules: "cand".into(),
            against_rules: "rules".into(),
            generated_by: "kairos test".into(),
            events_read: 10,
            ..Inputs::default()
        }
    }

    #[test]
    fn stats_count_moments_reasons_deferrals_channels_and_days() {
        let hour = 3_600_000;
        let mut email = decision("r", 5, DAY_1 + 2 * hour, None, None);
        email.channel = Channel::Email;
        let decisions = vec![
            decision("r", 1, DAY_1 + hour, None, None),
            // Held for quiet hours: sent the next day.
            decision("r", 2, DAY_1 + 22 * hour, None, Some(DAY_1 + 32 * hour)),
            decision("r", 3, DAY_1 + hour, Some("cooldown"), None),
            decision("r", 4, DAY_1 + hour, Some("cooldown"), None),
            decision("r", 4, DAY_1 + hour, Some("no_consent"), None),
            decision("r", 4, DAY_1 + hour, Some("brand_new_reason"), None),
            email,
        ];
        let stats = Stats::of(&decisions);
        assert_eq!(
            (stats.moments, stats.sent, stats.suppressed, stats.deferred),
            (7, 3, 4, 1)
        );
        assert_eq!(stats.suppressed_by_reason.get("cooldown"), 2);
        assert_eq!(stats.suppressed_by_reason.get("no_consent"), 1);
        assert_eq!(stats.suppressed_by_reason.get("cap"), 0);
        assert_eq!(stats.suppressed_by_reason.get("brand_new_reason"), 1);
        // Known reasons in policy order, then the unknown one.
        let names: Vec<&str> = stats.suppressed_by_reason.0.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(names[..REASONS.len()], REASONS);
        assert_eq!(names[REASONS.len()..], ["brand_new_reason"]);
        assert_eq!(
            stats.actions_by_channel,
            ChannelCounts {
                sms: 2,
                email: 1,
                push: 0,
                total: 3
            }
        );
        let days: Vec<(&str, u64, u64)> = stats
            .actions_by_day
            .iter()
            .map(|d| (d.day.as_str(), d.actions.sms, d.actions.email))
            .collect();
        assert_eq!(days, [("2026-07-01", 1, 1), ("2026-07-02", 1, 0)]);

        let steps = funnel(&stats);
        let steps: Vec<(&str, u64, u64)> = steps
            .iter()
            .map(|s| (s.step.as_str(), s.removed, s.remaining))
            .collect();
        assert_eq!(
            steps,
            [
                ("moments", 0, 7),
                ("no_consent", 1, 6),
                ("cooldown", 2, 4),
                ("brand_new_reason", 1, 3),
                ("sent", 0, 3)
            ]
        );
    }

    #[test]
    fn diff_says_added_removed_changed_unchanged_with_deltas() {
        let published = Run {
            rules: vec![info("kept", "a"), info("edited", "a"), info("dropped", "a")],
            decisions: vec![
                decision("kept", 1, DAY_1, None, None),
                decision("edited", 1, DAY_1, Some("cooldown"), None),
                decision("edited", 2, DAY_1, Some("cooldown"), None),
                decision("dropped", 3, DAY_1, None, None),
                decision("dropped", 4, DAY_1, None, None),
            ],
            actions: vec![],
        };
        let candidate = Run {
            rules: vec![info("kept", "a"), info("edited", "b"), info("fresh", "a")],
            decisions: vec![
                decision("kept", 1, DAY_1, None, None),
                decision("edited", 1, DAY_1, None, None),
                decision("edited", 2, DAY_1, Some("cap"), None),
                decision("fresh", 5, DAY_1 + DAY, None, None),
            ],
            actions: vec![],
        };
        let report = build(&inputs(), &candidate, &published, 3);
        let status: Vec<(&str, Status)> = report.rules.iter().map(|r| (r.rule.as_str(), r.status)).collect();
        assert_eq!(
            status,
            [
                ("dropped", Status::Removed),
                ("edited", Status::Changed),
                ("fresh", Status::Added),
                ("kept", Status::Unchanged)
            ]
        );
        let rule = |id: &str| report.rules.iter().find(|r| r.rule == id).unwrap();
        let dropped = rule("dropped");
        assert!(dropped.candidate.is_none() && dropped.funnel.is_empty());
        assert_eq!(
            (dropped.version.as_deref(), dropped.published_version.as_deref()),
            (None, Some("a"))
        );
        assert_eq!((dropped.delta.sent, dropped.delta.moments), (-2, -2));
        let edited = rule("edited");
        assert_eq!(edited.delta.sent, 1);
        assert_eq!(edited.delta.moments, 0);
        assert_eq!(edited.delta.suppressed_by_reason.get("cooldown"), -2);
        assert_eq!(edited.delta.suppressed_by_reason.get("cap"), 1);
        let fresh = rule("fresh");
        assert!(fresh.published.is_none());
        assert_eq!(fresh.delta.sent, 1);
        assert_eq!(rule("kept").delta.sent, 0);
        // Totals and a timeline without gaps.
        assert_eq!((report.totals.candidate.sent, report.totals.published.sent), (3, 3));
        assert_eq!(report.totals.delta.suppressed, -1);
        let days: Vec<(&str, u64, u64)> = report
            .timeline
            .iter()
            .map(|d| (d.day.as_str(), d.candidate.total, d.published.total))
            .collect();
        assert_eq!(days, [("2026-07-01", 2, 3), ("2026-07-02", 1, 0)]);

        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["rules"][0]["status"], "removed");
        assert_eq!(json["rules"][0]["candidate"], serde_json::Value::Null);
        assert_eq!(json["rules"][1]["delta"]["suppressed_by_reason"]["cooldown"], -2);
        assert_eq!(json["totals"]["candidate"]["actions_by_channel"]["sms"], 3);
        assert_eq!(json["timeline"][1]["candidate"]["total"], 1);

        let html = report.to_html();
        assert!(
            html.contains(r#"<td data-rule="edited" data-metric="sent">1</td>"#),
            "{html}"
        );
        assert!(html.contains(r#"data-rule="dropped" data-metric="status">removed<"#));
        assert!(html.contains(r#"data-rule="edited" data-metric="delta.suppressed.cooldown">-2<"#));
        assert!(html.contains(r#"<td data-day="2026-07-02" data-channel="total">1</td>"#));
    }

    #[test]
    fn samples_are_the_first_by_send_at_masked_and_escaped_in_html() {
        let evil = "Hi <script>alert('x')</script> & \"bye\"";
        let candidate = Run {
            rules: vec![info("r", "a")],
            decisions: vec![
                decision("r", 1, DAY_1 + 5, None, None),
                decision("r", 2, DAY_1 + 1, None, None),
                decision("r", 3, DAY_1 + 9, None, None),
            ],
            actions: vec![
                action("r", 1, DAY_1 + 5, "second"),
                action("r", 2, DAY_1 + 1, evil),
                action("r", 3, DAY_1 + 9, "third"),
            ],
        };
        let report = build(&inputs(), &candidate, &Run::default(), 2);
        let samples = &report.rules[0].samples;
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].message, evil);
        assert_eq!(samples[0].msisdn, "*********002");
        assert_eq!(samples[1].message, "second");
        let html = report.to_html();
        assert!(!html.contains("<script"), "a message must not open a script");
        assert!(html.contains("Hi &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;bye&quot;"));
        assert!(!html.contains("351910000002"), "numbers are masked");
        assert!(!html.contains("third"));
        // Self-contained: nothing fetched.
        assert!(!html.contains("src=") && !html.contains("href=\"http") && !html.contains("@import"));
    }

    #[test]
    fn funnel_and_timeline_are_svg_with_their_numbers_as_text() {
        let candidate = Run {
            rules: vec![info("r", "a")],
            decisions: vec![
                decision("r", 1, DAY_1, None, None),
                decision("r", 2, DAY_1, Some("quiet_hours"), None),
                decision("r", 3, DAY_1 + 3 * DAY, None, None),
            ],
            actions: vec![],
        };
        let report = build(&inputs(), &candidate, &Run::default(), 0);
        assert_eq!(report.timeline.len(), 4, "days without actions are in the timeline");
        let html = report.to_html();
        assert!(html.contains("<svg class=\"funnel\" data-rule=\"r\""));
        assert!(html.contains("data-step=\"moments\" font-weight=\"600\">3</tspan>"));
        assert!(html.contains("data-step=\"quiet_hours\" font-weight=\"600\">2</tspan>"));
        assert!(html.contains("data-step=\"quiet_hours\" fill=\"#b91c1c\"> (−1)</tspan>"));
        assert!(html.contains("data-step=\"sent\" font-weight=\"600\">2</tspan>"));
        assert!(html.contains("<svg id=\"timeline-chart\""));
        assert!(html.contains("<text class=\"bar-total\" data-day=\"2026-07-04\""));
        assert!(!html.contains("<script"));
    }

    #[test]
    fn tick_steps_are_round() {
        assert_eq!(tick_step(1), 1);
        assert_eq!(tick_step(4), 1);
        assert_eq!(tick_step(7), 2);
        assert_eq!(tick_step(19), 5);
        assert_eq!(tick_step(1234), 500);
        assert_eq!(mask_msisdn("12"), "12");
    }
}
