//! The first look at a replay's output folder (`kairos report summary DIR`): what a
//! marketer wants to see first — what was read, actions by rule and channel, suppressions by
//! reason, one message per rule as it would be sent (the subscriber number masked), and
//! where the files are. Pure: reading the folder is [`super::summary`]'s.
//!
//! The counts are those of [`dryrun::Stats`], over the folder's `decisions.jsonl`, so they
//! agree with `kairos rules try`'s report of the same replay.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use kairos_model::time::format_rfc3339;
use kairos_model::Channel;
use serde::Deserialize;

use super::dryrun::{mask_msisdn, ActionLine, DecisionLine, Stats};

/// What the replay read, from its `summary.json` (absent when the file is missing or is not
/// a replay's summary; the other fields of `ReplaySummary` are not needed here).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ReplayFacts {
    pub files: u64,
    pub events_valid: u64,
    pub events_invalid: u64,
    #[serde(default)]
    pub events_late: u64,
}

impl ReplayFacts {
    /// The facts of a `summary.json`; `None` when it lacks them.
    pub fn of_json(summary: &serde_json::Value) -> Option<ReplayFacts> {
        ReplayFacts::deserialize(summary).ok()
    }
}

/// One of the folder's files, and how many lines it has (`None`: not a line file, or absent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputFile {
    pub path: String,
    pub lines: Option<u64>,
    /// What it holds, for a reader who has not read the contract.
    pub holds: &'static str,
}

/// The files of a replay's output folder, in the order they are shown, with what they hold.
pub const FILES: [(&str, &str); 6] = [
    (
        "actions.jsonl",
        "the actions to send, one JSON line each, as the SMS / e-mail / push senders get them",
    ),
    ("decisions.jsonl", "every decision, sent or suppressed, and why"),
    (
        "dead-letter.jsonl",
        "input lines that are not valid events, with file:line and the reason",
    ),
    (
        "households.jsonl",
        "each subscriber's household and the links that hold it",
    ),
    (
        "subscribers.jsonl",
        "where each customer stands as event time ends: lifecycle stage, stickiness, churn risk and its reasons",
    ),
    ("summary.json", "the replay's counts, as JSON"),
];

/// The message shown for a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub rule: String,
    pub channel: Channel,
    pub language: String,
    pub send_at: String,
    /// Masked but for the last 3 digits.
    pub msisdn: String,
    pub text: String,
}

/// The first look at a replay's output folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputSummary {
    pub dir: String,
    pub facts: Option<ReplayFacts>,
    pub total: Stats,
    /// Every rule that decided anything, by id.
    pub rules: Vec<(String, Stats)>,
    /// One per rule that sent anything: its first action by `send_at`.
    pub messages: Vec<Message>,
    pub files: Vec<OutputFile>,
}

/// Counts the decisions and picks each rule's first message.
pub fn build(
    dir: &str,
    facts: Option<ReplayFacts>,
    decisions: &[DecisionLine],
    actions: &[ActionLine],
    files: Vec<OutputFile>,
) -> OutputSummary {
    let mut by_rule: BTreeMap<&str, Vec<&DecisionLine>> = BTreeMap::new();
    for d in decisions {
        by_rule.entry(&d.rule).or_default().push(d);
    }
    let rules = by_rule
        .into_iter()
        .map(|(rule, decisions)| (rule.to_string(), Stats::of(decisions)))
        .collect();
    let mut first: BTreeMap<&str, &ActionLine> = BTreeMap::new();
    for a in actions {
        first
            .entry(&a.rule)
            .and_modify(|kept| {
                if (a.send_at, &a.action_id) < (kept.send_at, &kept.action_id) {
                    *kept = a;
                }
            })
            .or_insert(a);
    }
    let messages = first
        .into_values()
        .map(|a| Message {
            rule: a.rule.clone(),
            channel: a.channel,
            language: a.language.clone(),
            send_at: format_rfc3339(a.send_at),
            msisdn: mask_msisdn(&a.msisdn.to_string()),
            text: a.message.clone(),
        })
        .collect();
    OutputSummary {
        dir: dir.to_string(),
        facts,
        total: Stats::of(decisions),
        rules,
        messages,
        files,
    }
}

fn count(n: u64) -> String {
    crate::progress::format_count(n)
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", count(n), if n == 1 { one } else { many })
}

/// Rows as aligned columns, indented by two spaces: the first column left-aligned, the
/// others right-aligned — but for the last one when `free_last` (text of any length).
fn table(rows: &[Vec<String>], free_last: bool) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let aligned = if free_last { columns.saturating_sub(1) } else { columns };
    let widths: Vec<usize> = (0..aligned)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::from(" ");
        for (c, cell) in row.iter().enumerate() {
            line.push(' ');
            match widths.get(c) {
                Some(&width) if c == 0 => {
                    let _ = write!(line, "{cell:<width$}");
                }
                Some(&width) => {
                    let _ = write!(line, " {cell:>width$}");
                }
                None => {
                    let _ = write!(line, " {cell}");
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

impl OutputSummary {
    /// The summary as plain text for a terminal.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "What kairos decided, from {}", self.dir);
        let total = &self.total;
        let decided = format!(
            "{} decided: {} sent, {} suppressed",
            plural(total.moments, "moment", "moments"),
            count(total.sent),
            count(total.suppressed)
        );
        match &self.facts {
            Some(f) => {
                let _ = writeln!(
                    out,
                    "  {} read from {} ({} invalid, {} late); {decided}",
                    plural(f.events_valid + f.events_invalid, "event", "events"),
                    plural(f.files, "file", "files"),
                    count(f.events_invalid),
                    count(f.events_late),
                );
            }
            None => {
                let _ = writeln!(out, "  {decided}");
            }
        }

        let _ = writeln!(out, "\nActions by rule and channel");
        if self.rules.is_empty() {
            let _ = writeln!(out, "  no rule decided anything");
        } else {
            let mut rows = vec![["rule", "sms", "email", "push", "total", "held for quiet hours"]
                .map(String::from)
                .to_vec()];
            let row = |name: &str, s: &Stats| {
                let a = &s.actions_by_channel;
                vec![
                    name.to_string(),
                    count(a.sms),
                    count(a.email),
                    count(a.push),
                    count(a.total),
                    count(s.deferred),
                ]
            };
            rows.extend(self.rules.iter().map(|(rule, s)| row(rule, s)));
            rows.push(row("all rules", total));
            out.push_str(&table(&rows, false));
        }

        let _ = writeln!(out, "\nSuppressed, by reason of the contact policy");
        let reasons: Vec<&(String, u64)> = total.suppressed_by_reason.0.iter().filter(|(_, n)| *n > 0).collect();
        if reasons.is_empty() {
            let _ = writeln!(out, "  nothing was suppressed");
        } else {
            let mut rows = vec![["reason", "decisions", "rules"].map(String::from).to_vec()];
            for (reason, n) in reasons {
                let mut rules: Vec<(u64, &str)> = self
                    .rules
                    .iter()
                    .map(|(rule, s)| (s.suppressed_by_reason.get(reason), rule.as_str()))
                    .filter(|(n, _)| *n > 0)
                    .collect();
                // The rules it held back most first.
                rules.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
                let named = rules
                    .iter()
                    .map(|(n, rule)| format!("{rule} ({})", count(*n)))
                    .collect::<Vec<_>>()
                    .join(", ");
                rows.push(vec![reason.clone(), count(*n), named]);
            }
            out.push_str(&table(&rows, true));
        }

        let _ = writeln!(
            out,
            "\nOne message per rule (its first to be sent; subscriber numbers masked)"
        );
        if self.messages.is_empty() {
            let _ = writeln!(out, "  no message was sent");
        }
        for m in &self.messages {
            let _ = writeln!(
                out,
                "  {} · {} · {} · {} · {}\n    {}",
                m.rule,
                m.channel.as_str(),
                m.language,
                m.send_at,
                m.msisdn,
                m.text
            );
        }

        let _ = writeln!(out, "\nFiles");
        let rows: Vec<Vec<String>> = self
            .files
            .iter()
            .map(|f| {
                vec![
                    f.path.clone(),
                    f.lines.map_or_else(String::new, |n| plural(n, "line", "lines")),
                    f.holds.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(&rows, true));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kairos_model::Msisdn;

    fn decision(rule: &str, channel: Channel, reason: Option<&str>, moment: u64, send_at: Option<u64>) -> DecisionLine {
        DecisionLine {
            rule: rule.into(),
            rule_version: "v1".into(),
            msisdn: Msisdn::parse("351910000123").unwrap(),
            moment_ts: moment,
            reason: reason.map(String::from),
            class: "marketing".into(),
            channel,
            send_at,
        }
    }

    fn action(rule: &str, id: &str, send_at: u64, message: &str) -> ActionLine {
        ActionLine {
            action_id: id.into(),
            rule: rule.into(),
            msisdn: Msisdn::parse("351910000123").unwrap(),
            channel: Channel::Sms,
            send_at,
            language: "en".into(),
            message: message.into(),
        }
    }

    fn example() -> OutputSummary {
        let decisions = vec![
            decision("roaming-welcome", Channel::Sms, None, 1_000, Some(1_000)),
            decision("roaming-welcome", Channel::Sms, None, 2_000, Some(3_600_000)),
            decision("roaming-welcome", Channel::Sms, Some("cooldown"), 3_000, None),
            decision("data-pack-80", Channel::Push, None, 4_000, Some(4_000)),
            decision("data-pack-80", Channel::Push, Some("cooldown"), 5_000, None),
            decision("data-pack-80", Channel::Push, Some("cooldown"), 6_000, None),
            decision("data-pack-80", Channel::Push, Some("no_consent"), 7_000, None),
        ];
        let actions = vec![
            action("roaming-welcome", "b", 3_600_000, "Welcome back"),
            action("roaming-welcome", "a", 1_000, "Welcome to Spain!"),
            action("data-pack-80", "c", 4_000, "80 % used"),
        ];
        let files = vec![OutputFile {
            path: "out/actions.jsonl".into(),
            lines: Some(3),
            holds: FILES[0].1,
        }];
        let facts = ReplayFacts {
            files: 1,
            events_valid: 1_200,
            events_invalid: 3,
            events_late: 0,
        };
        build("out", Some(facts), &decisions, &actions, files)
    }

    #[test]
    fn counts_by_rule_and_channel_and_reason() {
        let summary = example();
        assert_eq!(summary.total.sent, 3);
        assert_eq!(summary.total.suppressed_by_reason.get("cooldown"), 3);
        let (rule, stats) = &summary.rules[1];
        assert_eq!(rule, "roaming-welcome");
        assert_eq!((stats.actions_by_channel.sms, stats.deferred), (2, 1));
        assert_eq!(summary.messages.len(), 2);
        assert_eq!(summary.messages[1].text, "Welcome to Spain!", "the first by send_at");
        assert_eq!(summary.messages[1].msisdn, "*********123");
    }

    #[test]
    fn text_shows_the_tables_a_message_per_rule_and_the_files() {
        let text = example().to_text();
        let expected = "\
What kairos decided, from out
  1,203 events read from 1 file (3 invalid, 0 late); 7 moments decided: 3 sent, 4 suppressed

Actions by rule and channel
  rule             sms  email  push  total  held for quiet hours
  data-pack-80       0      0     1      1                     0
  roaming-welcome    2      0     0      2                     1
  all rules          2      0     1      3                     1

Suppressed, by reason of the contact policy
  reason      decisions  rules
  no_consent          1  data-pack-80 (1)
  cooldown            3  data-pack-80 (2), roaming-welcome (1)

One message per rule (its first to be sent; subscriber numbers masked)
  data-pack-80 · sms · en · 1970-01-01T00:00:04Z · *********123
    80 % used
  roaming-welcome · sms · en · 1970-01-01T00:00:01Z · *********123
    Welcome to Spain!

Files
  out/actions.jsonl  3 lines  the actions to send, one JSON line each, as the SMS / e-mail / push senders get them
";
        assert_eq!(text, expected);
        assert!(!text.contains("351910000123"), "numbers are masked");
    }

    #[test]
    fn an_empty_replay_says_so() {
        let text = build("out", None, &[], &[], Vec::new()).to_text();
        assert!(text.contains("0 moments decided: 0 sent, 0 suppressed"), "{text}");
        assert!(text.contains("no rule decided anything"), "{text}");
        assert!(text.contains("nothing was suppressed"), "{text}");
        assert!(text.contains("no message was sent"), "{text}");
    }

    #[test]
    fn facts_come_from_summary_json() {
        let json = serde_json::json!({"files": 2, "events_valid": 10, "events_invalid": 1, "events_late": 4});
        assert_eq!(
            ReplayFacts::of_json(&json),
            Some(ReplayFacts {
                files: 2,
                events_valid: 10,
                events_invalid: 1,
                events_late: 4
            })
        );
        assert_eq!(ReplayFacts::of_json(&serde_json::json!({"files": 2})), None);
    }
}
