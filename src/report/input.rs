//! The reports' inputs: decision lines (`decisions.jsonl` of a replay, or a dump of the
//! `kairos.decisions` topic) and `response` events, read with ingest's line reader
//! ([`files::read_lines`]) and the engine's decoder ([`decode`]).
//!
//! A path that cannot be read is an error; a line that is not a decision, or not a valid
//! event, is a [`Problem`]: counted, the first few kept to be shown, and skipped.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use kairos_model::event::{Customer, CustomerStatus, EventBody};
use kairos_model::{time, Channel, Msisdn, Origin};
use serde_json::Value;

use super::dryrun::{ActionLine, DecisionLine};
use super::uplift::{DecisionRecord, Group, ResponseRecord};
use crate::decode::decode;
use crate::ingest::files;
use crate::progress::Progress;

/// How many problems are kept to be shown (all are counted).
pub const KEEP_PROBLEMS: usize = 10;

/// A skipped input line and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: u64,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
    }
}

/// What was read from a set of files: the records, and the lines that were skipped.
#[derive(Debug)]
pub struct Loaded<T> {
    pub records: Vec<T>,
    /// Files read.
    pub files: usize,
    /// Valid lines that were not wanted (events of other types).
    pub skipped: u64,
    /// Lines that could not be used.
    pub problem_count: u64,
    /// The first [`KEEP_PROBLEMS`] of them.
    pub problems: Vec<Problem>,
}

impl<T> Loaded<T> {
    fn new(files: usize) -> Loaded<T> {
        Loaded {
            records: Vec::new(),
            files,
            skipped: 0,
            problem_count: 0,
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, file: &Path, line: u64, reason: String) {
        self.problem_count += 1;
        if self.problems.len() < KEEP_PROBLEMS {
            self.problems.push(Problem {
                file: file.to_path_buf(),
                line,
                reason,
            });
        }
    }
}

/// The decision files behind `paths`: files as given, and the `.jsonl` / `.jsonl.gz` files
/// under folders (as [`files::discover`] finds them) — except that a folder written by
/// `kairos replay --out` (it holds `decisions.jsonl`) stands for its `decisions.jsonl`.
pub fn decision_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut found = Vec::new();
    for path in paths {
        let replay_output = path.join("decisions.jsonl");
        if path.is_dir() && replay_output.is_file() {
            found.push(replay_output);
        } else {
            found.extend(files::discover(std::slice::from_ref(path))?);
        }
    }
    Ok(found)
}

/// Reads every decision in `paths` (see [`decision_files`]), counting on `progress`.
pub fn read_decisions(paths: &[PathBuf], progress: Option<&Progress>) -> Result<Loaded<DecisionRecord>, String> {
    let found = decision_files(paths)?;
    begin(progress, &found);
    let mut read = Loaded::new(found.len());
    for path in &found {
        files::read_lines_counted(path, progress, |number, line| {
            match parse_decision(line) {
                Ok(decision) => {
                    if let Some(progress) = progress {
                        progress.saw_event_time(decision.moment_ts);
                    }
                    read.records.push(decision)
                }
                Err(why) => read.problem(path, number, format!("not a decision: {why}")),
            }
            Ok::<(), String>(())
        })?;
    }
    Ok(read)
}

/// Reads every `response` event in `paths` (files or folders of `.jsonl` / `.jsonl.gz`);
/// other events are counted as skipped, invalid lines as problems; counting on `progress`.
pub fn read_responses(paths: &[PathBuf], progress: Option<&Progress>) -> Result<Loaded<ResponseRecord>, String> {
    let found = files::discover(paths)?;
    begin(progress, &found);
    let mut read = Loaded::new(found.len());
    for (index, path) in found.iter().enumerate() {
        let source = u32::try_from(index).unwrap_or(u32::MAX);
        files::read_lines_counted(path, progress, |number, line| {
            match decode(
                line,
                Origin {
                    source,
                    position: number,
                },
            ) {
                Ok(event) => {
                    if let Some(progress) = progress {
                        progress.saw_event_time(event.ts);
                    }
                    match event.body {
                        EventBody::Response(response) => read.records.push(ResponseRecord {
                            msisdn: event.msisdn,
                            ts: event.ts,
                            action_id: response.action_id,
                            outcome: response.outcome,
                        }),
                        _ => read.skipped += 1,
                    }
                }
                Err(why) => read.problem(path, number, format!("invalid event: {why}")),
            }
            Ok::<(), String>(())
        })?;
    }
    Ok(read)
}

/// Starts counting a pass over `found` on `progress`: their size is its total.
fn begin(progress: Option<&Progress>, found: &[PathBuf]) {
    if let Some(progress) = progress {
        progress.begin(files::total_size(found));
    }
}

/// Parses one decision line: a JSON object with the strings `action_id`, `rule`, `msisdn`
/// (E.164), `moment_ts` (RFC 3339), `decision` (`sent` or `suppressed`) and, optionally,
/// `reason`. Other fields are ignored.
pub fn parse_decision(line: &[u8]) -> Result<DecisionRecord, String> {
    let value: Value = serde_json::from_slice(line).map_err(|e| format!("not JSON ({e})"))?;
    let object = value.as_object().ok_or("not a JSON object")?;
    let string = |field: &str| -> Result<Option<&str>, String> {
        match object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("field `{field}`: expected a string")),
        }
    };
    let required = |field: &str| -> Result<&str, String> {
        string(field)?.ok_or_else(|| format!("field `{field}`: missing required field"))
    };
    let action_id = required("action_id")?;
    let rule = required("rule")?;
    let msisdn = required("msisdn")?;
    let msisdn = Msisdn::parse(msisdn).map_err(|why| format!("field `msisdn`: {why} (got {msisdn:?})"))?;
    let moment_ts = required("moment_ts")?;
    let moment_ts =
        time::parse_rfc3339(moment_ts).map_err(|why| format!("field `moment_ts`: {why} (got {moment_ts:?})"))?;
    let sent = match required("decision")? {
        "sent" => true,
        "suppressed" => false,
        other => {
            return Err(format!(
                "field `decision`: expected \"sent\" or \"suppressed\" (got {other:?})"
            ))
        }
    };
    Ok(DecisionRecord {
        action_id: action_id.to_string(),
        rule: rule.to_string(),
        msisdn,
        moment_ts,
        group: Group::of(sent, string("reason")?),
    })
}

/// The fields of one JSON object line, read as the reports need them.
struct Fields<'a>(&'a serde_json::Map<String, Value>);

impl<'a> Fields<'a> {
    fn of(value: &'a Value) -> Result<Fields<'a>, String> {
        value
            .as_object()
            .map(Fields)
            .ok_or_else(|| "not a JSON object".to_string())
    }

    fn string(&self, field: &str) -> Result<Option<&'a str>, String> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("field `{field}`: expected a string")),
        }
    }

    fn required(&self, field: &str) -> Result<&'a str, String> {
        self.string(field)?
            .ok_or_else(|| format!("field `{field}`: missing required field"))
    }

    fn msisdn(&self) -> Result<Msisdn, String> {
        let msisdn = self.required("msisdn")?;
        Msisdn::parse(msisdn).map_err(|why| format!("field `msisdn`: {why} (got {msisdn:?})"))
    }

    fn time(&self, field: &str) -> Result<Option<kairos_model::Millis>, String> {
        self.string(field)?
            .map(|text| time::parse_rfc3339(text).map_err(|why| format!("field `{field}`: {why} (got {text:?})")))
            .transpose()
    }

    fn channel(&self) -> Result<Channel, String> {
        let channel = self.required("channel")?;
        Channel::ALL
            .into_iter()
            .find(|c| c.as_str() == channel)
            .ok_or_else(|| format!("field `channel`: expected sms, email or push (got {channel:?})"))
    }
}

/// Parses one line of a replay's `decisions.jsonl` for the dry run: `rule`, `rule_version`,
/// `msisdn`, `moment_ts`, `decision` (`sent` or `suppressed`, then with a `reason`),
/// `class`, `channel` and, when sent, `send_at`.
pub fn parse_decision_line(line: &[u8]) -> Result<DecisionLine, String> {
    let value: Value = serde_json::from_slice(line).map_err(|e| format!("not JSON ({e})"))?;
    let f = Fields::of(&value)?;
    let reason = match f.required("decision")? {
        "sent" => None,
        "suppressed" => Some(f.required("reason")?.to_string()),
        other => {
            return Err(format!(
                "field `decision`: expected \"sent\" or \"suppressed\" (got {other:?})"
            ))
        }
    };
    Ok(DecisionLine {
        rule: f.required("rule")?.to_string(),
        rule_version: f.string("rule_version")?.unwrap_or_default().to_string(),
        msisdn: f.msisdn()?,
        moment_ts: f
            .time("moment_ts")?
            .ok_or("field `moment_ts`: missing required field")?,
        reason,
        class: f.string("class")?.unwrap_or_default().to_string(),
        channel: f.channel()?,
        send_at: f.time("send_at")?,
    })
}

/// Parses one line of a replay's `actions.jsonl` (contract §2) for the dry run's samples.
pub fn parse_action_line(line: &[u8]) -> Result<ActionLine, String> {
    let value: Value = serde_json::from_slice(line).map_err(|e| format!("not JSON ({e})"))?;
    let f = Fields::of(&value)?;
    Ok(ActionLine {
        action_id: f.required("action_id")?.to_string(),
        rule: f.required("rule")?.to_string(),
        msisdn: f.msisdn()?,
        channel: f.channel()?,
        send_at: f.time("send_at")?.ok_or("field `send_at`: missing required field")?,
        language: f.string("language")?.unwrap_or_default().to_string(),
        message: f.string("message")?.unwrap_or_default().to_string(),
    })
}

/// Reads every line of one of kairos's own output files with `parse`; a line that does not
/// parse is an error (`file:line: reason`), since kairos wrote it.
pub fn read_output<T>(path: &Path, parse: impl Fn(&[u8]) -> Result<T, String>) -> Result<Vec<T>, String> {
    let mut records = Vec::new();
    files::read_lines(path, |number, line| {
        records.push(parse(line).map_err(|why| format!("{}:{number}: {why}", path.display()))?);
        Ok::<(), String>(())
    })?;
    Ok(records)
}

/// The oldest and newest `ts` of the valid events in `paths` (files or folders), counting on
/// `progress`.
pub fn event_time_range(
    paths: &[PathBuf],
    progress: Option<&Progress>,
) -> Result<Option<(kairos_model::Millis, kairos_model::Millis)>, String> {
    let mut range: Option<(kairos_model::Millis, kairos_model::Millis)> = None;
    let found = files::discover(paths)?;
    begin(progress, &found);
    for (index, path) in found.iter().enumerate() {
        let source = u32::try_from(index).unwrap_or(u32::MAX);
        files::read_lines_counted(path, progress, |number, line| {
            if let Ok(event) = decode(
                line,
                Origin {
                    source,
                    position: number,
                },
            ) {
                if let Some(progress) = progress {
                    progress.saw_event_time(event.ts);
                }
                range = Some(match range {
                    None => (event.ts, event.ts),
                    Some((first, last)) => (first.min(event.ts), last.max(event.ts)),
                });
            }
            Ok::<(), String>(())
        })?;
    }
    Ok(range)
}

/// What the churn report reads from the events: each subscriber's first termination
/// (`customer` with `"status": "terminated"`, contract §5.1), the range of event time, and
/// the valid and invalid lines.
#[derive(Debug, Default)]
pub struct Terminations {
    pub first: HashMap<Msisdn, kairos_model::Millis>,
    pub records: u64,
    pub range: Option<(kairos_model::Millis, kairos_model::Millis)>,
    pub valid: u64,
    pub invalid: u64,
}

/// Reads the terminations of the events under `paths` (invalid lines are counted, not fatal).
pub fn read_terminations(paths: &[PathBuf], progress: Option<&Progress>) -> Result<Terminations, String> {
    let found = files::discover(paths)?;
    begin(progress, &found);
    let mut read = Terminations::default();
    for (index, path) in found.iter().enumerate() {
        let source = u32::try_from(index).unwrap_or(u32::MAX);
        files::read_lines_counted(path, progress, |number, line| {
            match decode(
                line,
                Origin {
                    source,
                    position: number,
                },
            ) {
                Ok(event) => {
                    read.valid += 1;
                    if let Some(progress) = progress {
                        progress.saw_event_time(event.ts);
                    }
                    read.range = Some(match read.range {
                        None => (event.ts, event.ts),
                        Some((first, last)) => (first.min(event.ts), last.max(event.ts)),
                    });
                    if let EventBody::Customer(Customer::Upsert(record)) = &event.body {
                        if record.status == CustomerStatus::Terminated {
                            read.records += 1;
                            let at = read.first.entry(event.msisdn).or_insert(event.ts);
                            *at = (*at).min(event.ts);
                        }
                    }
                }
                Err(_) => read.invalid += 1,
            }
            Ok::<(), String>(())
        })?;
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_replays_decision_and_action_lines_for_the_dry_run() {
        let sent = br#"{"action_id":"a1","rule":"handset-upgrade","rule_version":"7c01bfe","moment":"handset_ageing","msisdn":"351910000001","moment_ts":"2026-07-01T00:00:00Z","moment_key":"1","channel":"sms","decision":"sent","class":"marketing","send_at":"2026-07-01T07:00:00Z"}"#;
        let d = parse_decision_line(sent).unwrap();
        assert_eq!(
            (d.rule.as_str(), d.reason, d.channel),
            ("handset-upgrade", None, Channel::Sms)
        );
        assert_eq!(d.send_at.unwrap() - d.moment_ts, 7 * 3_600_000);
        let held = br#"{"rule":"r","msisdn":"351910000001","moment_ts":"2026-07-01T00:00:00Z","channel":"email","decision":"suppressed","reason":"cap","detail":"daily","class":"marketing"}"#;
        let d = parse_decision_line(held).unwrap();
        assert_eq!((d.reason.as_deref(), d.send_at), (Some("cap"), None));
        assert!(parse_decision_line(
            br#"{"rule":"r","msisdn":"1","moment_ts":"2026-07-01T00:00:00Z","channel":"fax","decision":"sent"}"#
        )
        .unwrap_err()
        .contains("channel"));
        let action = br#"{"action_id":"a1","rule":"r","msisdn":"+351910000001","channel":"push","moment_ts":"2026-07-01T00:00:00Z","send_at":"2026-07-01T00:00:00Z","language":"pt","message":"Ol\u00e1"}"#;
        let a = parse_action_line(action).unwrap();
        assert_eq!(
            (a.channel, a.language.as_str(), a.message.as_str()),
            (Channel::Push, "pt", "Olá")
        );
        assert!(parse_action_line(b"[]").is_err());
    }

    #[test]
    fn parses_decisions_old_and_new() {
        let sent = br#"{"action_id":"hu-1","rule":"handset-upgrade","rule_version":"3f2a9c1","moment":"handset_ageing","msisdn":"351910000001","moment_ts":"2026-07-01T00:00:00Z","moment_key":"356","channel":"email","decision":"sent","class":"marketing","send_at":"2026-07-01T08:00:00Z"}"#;
        let d = parse_decision(sent).unwrap();
        assert_eq!(d.action_id, "hu-1");
        assert_eq!(d.rule, "handset-upgrade");
        assert_eq!(d.msisdn.to_string(), "351910000001");
        assert_eq!(d.moment_ts, 1_782_864_000_000);
        assert_eq!(d.group, Group::Treated);
        let held = br#"{"action_id":"fp-1","rule":"family-plan","msisdn":"+351910000002","moment_ts":"2026-07-01T01:00:00+01:00","decision":"suppressed","reason":"rule_holdout"}"#;
        let d = parse_decision(held).unwrap();
        assert_eq!((d.group, d.moment_ts), (Group::Control, 1_782_864_000_000));
        let capped = br#"{"action_id":"x","rule":"r","msisdn":"1","moment_ts":"2026-07-01T00:00:00Z","decision":"suppressed","reason":"cap","detail":"marketing-sms-weekly"}"#;
        assert_eq!(parse_decision(capped).unwrap().group, Group::Excluded);
    }

    #[test]
    fn says_why_a_line_is_not_a_decision() {
        let error = |line: &str| parse_decision(line.as_bytes()).unwrap_err();
        assert!(error("{").starts_with("not JSON"));
        assert_eq!(error("[1]"), "not a JSON object");
        assert_eq!(
            error(
                r#"{"type":"response","ts":"2026-07-01T00:00:00Z","msisdn":"1","action_id":"a","outcome":"accepted"}"#
            ),
            "field `rule`: missing required field"
        );
        let base = r#""action_id":"a","rule":"r","msisdn":"1","moment_ts":"2026-07-01T00:00:00Z""#;
        assert_eq!(
            error(&format!(r#"{{{base},"decision":"maybe"}}"#)),
            "field `decision`: expected \"sent\" or \"suppressed\" (got \"maybe\")"
        );
        assert_eq!(
            error(&format!(r#"{{{base},"decision":"suppressed","reason":7}}"#)),
            "field `reason`: expected a string"
        );
        assert!(
            error(r#"{"action_id":"a","rule":"r","msisdn":"1","moment_ts":"soon","decision":"sent"}"#)
                .starts_with("field `moment_ts`: not an RFC 3339 timestamp")
        );
        assert!(error(
            r#"{"action_id":"a","rule":"r","msisdn":"x","moment_ts":"2026-07-01T00:00:00Z","decision":"sent"}"#
        )
        .starts_with("field `msisdn`:"));
    }

    #[test]
    fn reads_decisions_and_responses_counting_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        // A replay output folder stands for its decisions.jsonl.
        let replay = dir.path().join("out");
        std::fs::create_dir(&replay).unwrap();
        std::fs::write(
            replay.join("decisions.jsonl"),
            "{\"action_id\":\"a\",\"rule\":\"r\",\"msisdn\":\"1\",\"moment_ts\":\"2026-07-01T00:00:00Z\",\"decision\":\"sent\"}\n\nnot json\n",
        )
        .unwrap();
        std::fs::write(replay.join("actions.jsonl"), "{\"action_id\":\"a\"}\n").unwrap();
        let decisions = read_decisions(std::slice::from_ref(&replay), None).unwrap();
        assert_eq!(
            (decisions.files, decisions.records.len(), decisions.problem_count),
            (1, 1, 1)
        );
        assert_eq!(
            decisions.problems[0].to_string(),
            format!(
                "{}:3: not a decision: not JSON (expected ident at line 1 column 2)",
                replay.join("decisions.jsonl").display()
            )
        );

        let events = dir.path().join("events.jsonl");
        std::fs::write(
            &events,
            [
                r#"{"type":"response","ts":"2026-07-01T10:00:00Z","msisdn":"+1","action_id":"a","outcome":"accepted"}"#,
                r#"{"type":"topup","ts":"2026-07-01T10:00:00Z","msisdn":"1","amount":5}"#,
                r#"{"type":"response","ts":"2026-07-01T10:00:00Z","msisdn":"1","action_id":"a","outcome":"bought"}"#,
            ]
            .join("\n"),
        )
        .unwrap();
        let responses = read_responses(std::slice::from_ref(&events), None).unwrap();
        assert_eq!(
            (responses.records.len(), responses.skipped, responses.problem_count),
            (1, 1, 1)
        );
        assert_eq!(responses.records[0].msisdn.to_string(), "1");
        assert!(responses.problems[0]
            .to_string()
            .starts_with(&format!("{}:3: invalid event: field `outcome`", events.display())));

        assert!(read_responses(&[dir.path().join("missing.jsonl")], None)
            .unwrap_err()
            .starts_with("cannot read "));
        assert!(read_decisions(&[dir.path().join("missing")], None)
            .unwrap_err()
            .starts_with("cannot read "));
    }
}
