//! rules: the rule files marketing operations write, checked and turned into a
//! [`RuleSet`] the dataflows run.
//!
//! One TOML file per rule under the rules folder (see `rules/README.md` for the format).
//! Every problem is reported as `file:line:col: what is wrong — what would be valid`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use kairos_model::rule::{ActionClass, Declared, QuietMode};
use kairos_model::{Channel, MomentKind, Rule, RuleSet};
use serde::Deserialize;
use sha2::{Digest, Sha256};

pub mod churn;
pub mod diff;
pub mod history;
pub mod lifecycle;
pub mod policy;
pub mod publish;
pub mod stickiness;
pub mod watch;

use churn::CHURN_FILE;
use lifecycle::LIFECYCLE_FILE;
use policy::POLICY_FILE;
use stickiness::STICKINESS_FILE;

/// The files of a rules folder that are not rules: what every rule of it shares.
pub const NOT_RULES: [&str; 4] = [POLICY_FILE, LIFECYCLE_FILE, STICKINESS_FILE, CHURN_FILE];

/// A problem in a rule file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RuleError {
    pub path: PathBuf,
    /// 1-based line and column, when the problem has a place in the file.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => write!(f, "{}:{line}:{col}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// One rule file, as written. Unknown keys are errors: a typo must not silently change
/// what a rule does.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "kairos rule file (v1)")]
struct RuleFile {
    /// Stable id; lower-case letters, digits and `-`.
    id: String,
    /// Free text for people.
    #[serde(default)]
    description: Option<String>,
    /// The moment that triggers the rule: a built-in one (`roaming_arrival`,
    /// `data_pack_threshold`, `handset_ageing`), or a new one's name (snake_case) declared
    /// by `when`.
    moment: String,
    /// Declares a new moment: CEL over `customer.*` and `subscriber.*`; the moment happens
    /// when it becomes true after one of the subscriber's events.
    #[serde(default)]
    when: Option<String>,
    /// For a declared moment: CEL giving its dedupe key (a string or an int). While `when`
    /// stays true, a new key is a new moment (e.g. `subscriber.country`). Default: none.
    #[serde(default)]
    dedupe_key: Option<String>,
    /// Higher wins when contact policy must choose between rules. Default 0.
    #[serde(default)]
    priority: i32,
    /// `marketing` (default: quiet hours, caps, arbitration and control groups apply),
    /// `transactional` (consent and cooldown; quiet hours as `quiet_hours` says, default
    /// ignored) or `regulatory` (sent without undue delay unless the customer opted out).
    #[serde(default)]
    class: ActionClass,
    /// What quiet hours (policy.toml) do to this rule's actions: `defer` (hold until they
    /// end), `discard`, or `ignore`. Default: `defer` for marketing, `ignore` otherwise.
    #[serde(default)]
    quiet_hours: Option<QuietMode>,
    /// What an accepted offer is worth, for arbitration by `priority_x_value` or `value`.
    /// Default 1.0.
    #[serde(default)]
    value: Option<f64>,
    /// Share of subscribers held out of this rule as its control group (0.1 = 10 %):
    /// decided and recorded, not sent. Default 0.
    #[serde(default)]
    holdout: Option<f64>,
    /// The offer code the action carries.
    offer: String,
    /// `sms`, `email` or `push`.
    channel: Channel,
    /// Used when the subscriber cannot be reached on `channel` (no consent, no e-mail
    /// address). Default: none (suppressed as `no_consent`).
    #[serde(default)]
    fallback_channel: Option<Channel>,
    /// For `data_pack_threshold`: the share of the pack that triggers the rule (0.8 = 80 %).
    #[serde(default)]
    threshold: Option<f64>,
    /// Optional CEL condition (see rules/README.md for what it can read).
    #[serde(default)]
    condition: Option<String>,
    /// No second action for the same subscriber and dedupe key within this long:
    /// a number followed by `s`, `m`, `h` or `d` (`24h`). Default: no cooldown.
    #[serde(default)]
    cooldown: Option<String>,
    /// Message templates by language code; `en` is required. `{variable}` placeholders
    /// name the moment's variables (see rules/README.md).
    messages: BTreeMap<String, String>,
}

/// The JSON Schema of the rule file format (for editors; TOML maps onto it one to one).
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(RuleFile);
    serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n"
}

/// The rules folder commands use when none is named: `rules` in the current folder.
pub const DEFAULT_DIR: &str = "rules";

/// The rules shipped with kairos: the `rules/` of the checkout it was built from.
pub const SHIPPED_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");

/// No rules folder was named and none was found where one is looked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no rules folder: there is no ./rules in {here} and the rules shipped with kairos \
     are not at {shipped} any more; pass {flag} DIR with a folder of rule files (as the \
     rules/ of a kairos checkout)"
)]
pub struct NoRulesFolder {
    /// The option that names the folder (`--rules`, `--against`).
    pub flag: &'static str,
    pub here: String,
    pub shipped: String,
}

/// The rules folder to use when `flag` names none: `./rules` when it exists (the checkout's,
/// or the operator's own beside their data), otherwise the rules shipped with kairos
/// ([`SHIPPED_DIR`]) — so that `kairos replay` also runs from another folder.
pub fn default_dir(flag: &'static str) -> Result<PathBuf, NoRulesFolder> {
    let here = std::env::current_dir().unwrap_or_default();
    find_default_dir(&here, Path::new(SHIPPED_DIR), flag)
}

/// [`default_dir`] from the folder `here`, with the shipped rules at `shipped`.
pub fn find_default_dir(here: &Path, shipped: &Path, flag: &'static str) -> Result<PathBuf, NoRulesFolder> {
    if here.join(DEFAULT_DIR).is_dir() {
        Ok(PathBuf::from(DEFAULT_DIR))
    } else if shipped.is_dir() {
        Ok(shipped.to_path_buf())
    } else {
        Err(NoRulesFolder {
            flag,
            here: here.display().to_string(),
            shipped: shipped.display().to_string(),
        })
    }
}

/// Loads and checks every `*.toml` rule file in `dir`, in file-name order.
pub fn load_dir(dir: &Path) -> Result<RuleSet, Vec<RuleError>> {
    load_files(dir, &read_dir_files(dir)?)
}

/// The `*.toml` files directly in `dir`: name → text.
pub fn read_dir_files(dir: &Path) -> Result<BTreeMap<String, String>, Vec<RuleError>> {
    let whole = |message: String| {
        vec![RuleError {
            path: dir.to_path_buf(),
            position: None,
            message,
        }]
    };
    let entries = std::fs::read_dir(dir).map_err(|e| whole(format!("cannot read the rules folder: {e}")))?;
    let mut files = BTreeMap::new();
    let mut errors = Vec::new();
    for path in entries.filter_map(Result::ok).map(|e| e.path()) {
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        if !name.ends_with(".toml") {
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                files.insert(name, text);
            }
            Err(e) => errors.push(RuleError {
                path,
                position: None,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(errors)
    }
}

/// Checks a rule set given as its files (name → text, as in a rules folder: rule files and
/// an optional `policy.toml`); errors name `dir/name`.
pub fn load_files(dir: &Path, files: &BTreeMap<String, String>) -> Result<RuleSet, Vec<RuleError>> {
    let mut paths: Vec<(PathBuf, &str)> = files
        .iter()
        .filter(|(name, _)| name.ends_with(".toml") && !NOT_RULES.contains(&name.as_str()))
        .map(|(name, text)| (dir.join(name), text.as_str()))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(vec![RuleError {
            path: dir.to_path_buf(),
            position: None,
            message: "no rule files (*.toml) in the rules folder".to_string(),
        }]);
    }
    let mut rules: Vec<Rule> = Vec::new();
    let mut errors = Vec::new();
    // The files every rule of the folder shares; one that is absent has its built-in text
    // (the policy: none, no limits).
    let mut shared = SharedFiles {
        dir,
        files,
        errors: &mut errors,
    };
    let policy = shared.parse(POLICY_FILE, None, policy::parse_policy);
    let stages = shared.parse(
        LIFECYCLE_FILE,
        Some(lifecycle::DEFAULT_LIFECYCLE),
        lifecycle::parse_lifecycle,
    );
    let stickiness = shared.parse(
        STICKINESS_FILE,
        Some(stickiness::DEFAULT_STICKINESS),
        stickiness::parse_stickiness,
    );
    let churn = shared.parse(CHURN_FILE, Some(churn::DEFAULT_CHURN), churn::parse_churn);
    for (path, text) in &paths {
        let text: &str = text;
        match parse_rule(path, text) {
            Ok(rule) => {
                if let Some(other) = rules.iter().find(|r| r.id == rule.id) {
                    errors.push(RuleError {
                        path: path.clone(),
                        position: position_of(text, "id"),
                        message: format!(
                            "duplicate rule id {:?} — ids must be unique across the folder ({} is taken)",
                            rule.id, other.id
                        ),
                    });
                } else {
                    rules.push(rule);
                }
            }
            Err(mut e) => errors.append(&mut e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    rules.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(RuleSet {
        rules,
        policy,
        stages,
        stickiness,
        churn,
    })
}

/// Parses and checks one rule file's text.
pub fn parse_rule(path: &Path, text: &str) -> Result<Rule, Vec<RuleError>> {
    let err = |key: Option<&str>, message: String| RuleError {
        path: path.to_path_buf(),
        position: key.and_then(|k| position_of(text, k)),
        message,
    };
    let file: RuleFile = parse_toml(path, text)?;
    let mut errors = Vec::new();
    if file.id.is_empty()
        || !file
            .id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        errors.push(err(
            Some("id"),
            format!(
                "invalid id {:?} — use lower-case letters, digits and '-', e.g. \"roaming-welcome\"",
                file.id
            ),
        ));
    }
    let builtin = MomentKind::parse(&file.moment);
    let moment = match (builtin, &file.when) {
        (Some(kind), None) => Some(kind),
        (Some(kind), Some(_)) => {
            errors.push(err(
                Some("when"),
                format!(
                    "{} is a built-in moment; `when` declares a new one — give it a new name, or narrow {} with `condition`",
                    kind.as_str(),
                    kind.as_str()
                ),
            ));
            None
        }
        (None, Some(when)) => {
            let snake = !file.moment.is_empty()
                && file.moment.starts_with(|c: char| c.is_ascii_lowercase())
                && file
                    .moment
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !snake || file.moment == MomentKind::Declared.as_str() {
                errors.push(err(
                    Some("moment"),
                    format!(
                        "invalid moment name {:?} for a declared moment — use lower-case letters, digits and '_', e.g. \"cancel_intent\"",
                        file.moment
                    ),
                ));
            }
            if let Err(problems) = kairos_dataflows::condition::check_when(when) {
                for problem in problems {
                    errors.push(err(Some("when"), format!("when: {problem}")));
                }
            }
            Some(MomentKind::Declared)
        }
        (None, None) => {
            let known: Vec<&str> = MomentKind::ALL.iter().map(|m| m.as_str()).collect();
            errors.push(err(
                Some("moment"),
                format!(
                    "unknown moment {:?} — known moments: {}; or declare a new one with `when = \"…\"`",
                    file.moment,
                    known.join(", ")
                ),
            ));
            None
        }
    };
    match (&file.dedupe_key, moment) {
        (Some(_), Some(kind)) if kind != MomentKind::Declared => errors.push(err(
            Some("dedupe_key"),
            format!(
                "{} has a fixed dedupe key (see rules/README.md) — dedupe_key is for declared moments; remove it",
                kind.as_str()
            ),
        )),
        (Some(key), _) => {
            if let Err(problems) = kairos_dataflows::condition::check_key(key) {
                for problem in problems {
                    errors.push(err(Some("dedupe_key"), format!("dedupe_key: {problem}")));
                }
            }
        }
        (None, _) => {}
    }
    if let Some(moment) = moment {
        match file.threshold {
            None if moment.needs_threshold() => errors.push(err(
                Some("moment"),
                format!(
                    "{} needs a threshold — add e.g. `threshold = 0.8` for 80 % of the pack",
                    moment.as_str()
                ),
            )),
            Some(_) if !moment.needs_threshold() => errors.push(err(
                Some("threshold"),
                format!("{} takes no threshold — remove it", moment.as_str()),
            )),
            Some(t) if !(t > 0.0 && t <= 10.0) => errors.push(err(
                Some("threshold"),
                format!("threshold {t} is out of range — a share of the pack above 0 and at most 10 (e.g. 0.8)"),
            )),
            _ => {}
        }
    }
    if let Some(condition) = &file.condition {
        if let Err(problems) = kairos_dataflows::condition::check(condition) {
            for problem in problems {
                errors.push(err(Some("condition"), format!("condition: {problem}")));
            }
        }
    }
    if file.fallback_channel == Some(file.channel) {
        errors.push(err(
            Some("fallback_channel"),
            "fallback_channel is the same as channel — name another channel or remove it".to_string(),
        ));
    }
    if file.offer.trim().is_empty() {
        errors.push(err(
            Some("offer"),
            "empty offer — give the offer code the action carries, e.g. \"ROAM-PACK\"".to_string(),
        ));
    }
    let cooldown = match file.cooldown.as_deref().map(parse_duration) {
        None => 0,
        Some(Ok(ms)) => ms,
        Some(Err(why)) => {
            errors.push(err(Some("cooldown"), why));
            0
        }
    };
    if !file.messages.contains_key("en") {
        errors.push(err(
            Some("messages"),
            "no `en` message — every rule needs an English message as the fallback".to_string(),
        ));
    }
    if let Some(moment) = moment {
        for (language, template) in &file.messages {
            for variable in template_variables(template) {
                if !moment.variables().contains(&variable) {
                    errors.push(err(
                        Some(language),
                        format!(
                            "unknown variable {{{variable}}} in the {language} message — {} provides: {}",
                            if moment == MomentKind::Declared {
                                "a declared moment"
                            } else {
                                moment.as_str()
                            },
                            moment
                                .variables()
                                .iter()
                                .map(|v| format!("{{{v}}}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
            }
        }
    }
    let quiet_hours = match (file.class, file.quiet_hours) {
        (ActionClass::Regulatory, Some(mode)) if mode != QuietMode::Ignore => {
            errors.push(err(
                Some("quiet_hours"),
                format!(
                    "a regulatory rule is sent without undue delay — quiet_hours = \"{}\" is not allowed; remove it, or make the rule marketing or transactional",
                    mode.as_str()
                ),
            ));
            QuietMode::Ignore
        }
        (class, mode) => mode.unwrap_or(class.default_quiet_mode()),
    };
    let value = file.value.unwrap_or(1.0);
    if !(value.is_finite() && value >= 0.0) {
        errors.push(err(
            Some("value"),
            format!("value {value} is out of range — a number ≥ 0, e.g. 25.0"),
        ));
    }
    let holdout = file.holdout.unwrap_or(0.0);
    if !(0.0..=0.5).contains(&holdout) {
        errors.push(err(
            Some("holdout"),
            format!("holdout {holdout} is out of range — a share from 0 to 0.5, e.g. 0.1 for 10 %"),
        ));
    } else if holdout > 0.0 && file.class == ActionClass::Regulatory {
        errors.push(err(
            Some("holdout"),
            "a regulatory rule cannot hold customers out — remove holdout".to_string(),
        ));
    }
    let _ = file.description;
    match moment {
        Some(moment) if errors.is_empty() => Ok(Rule {
            id: file.id,
            version: version_of(text),
            moment,
            declared: file.when.map(|when| Declared {
                name: file.moment,
                when,
                dedupe_key: file.dedupe_key,
            }),
            priority: file.priority,
            class: file.class,
            quiet_hours,
            value,
            holdout,
            offer: file.offer,
            channel: file.channel,
            fallback_channel: file.fallback_channel,
            threshold: file.threshold,
            condition: file.condition,
            cooldown,
            messages: file.messages,
        }),
        _ => Err(errors),
    }
}

/// The rule version: the first 7 hex digits of the SHA-256 of the file's bytes.
fn version_of(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect::<String>()[..7].to_string()
}

/// `30s`, `15m`, `24h`, `7d` → milliseconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let hint = "a duration is a whole number followed by s, m, h or d, e.g. \"24h\"";
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?} — {hint}"))?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("invalid duration {text:?} — {hint}")),
    };
    number
        .checked_mul(unit_ms)
        .ok_or_else(|| format!("duration {text:?} is too long"))
}

fn template_variables(template: &str) -> impl Iterator<Item = &str> {
    template
        .split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
}

/// Where `key = …` (or the table `[key]`) first appears, for errors found after parsing.
fn position_of(text: &str, key: &str) -> Option<(usize, usize)> {
    text.lines().enumerate().find_map(|(i, line)| {
        let trimmed = line.trim_start();
        let column = line.len() - trimmed.len() + 1;
        if trimmed.trim_end() == format!("[{key}]") {
            return Some((i + 1, column));
        }
        let rest = trimmed.strip_prefix(key)?;
        rest.trim_start().starts_with('=').then_some((i + 1, column))
    })
}

/// The files of a folder that are not rules, parsed into what the rules share; their
/// errors join the folder's.
struct SharedFiles<'a> {
    dir: &'a Path,
    files: &'a BTreeMap<String, String>,
    errors: &'a mut Vec<RuleError>,
}

impl SharedFiles<'_> {
    /// File `name` (or `default`'s text when absent; the type's default without one).
    fn parse<T: Default>(
        &mut self,
        name: &str,
        default: Option<&str>,
        parse: fn(&Path, &str) -> Result<T, Vec<RuleError>>,
    ) -> T {
        let Some(text) = self.files.get(name).map(String::as_str).or(default) else {
            return T::default();
        };
        parse(&self.dir.join(name), text).unwrap_or_else(|mut e| {
            self.errors.append(&mut e);
            T::default()
        })
    }
}

/// A rules-folder file's TOML, deserialized; a syntax or shape error is one [`RuleError`]
/// at the line and column the parser names.
fn parse_toml<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, Vec<RuleError>> {
    toml::from_str(text).map_err(|e| {
        vec![RuleError {
            path: path.to_path_buf(),
            position: e.span().map(|span| line_col(text, span.start)),
            message: e.message().trim().to_string(),
        }]
    })
}

/// A collector of errors at byte offsets of `text`: `push(start, message)`.
fn errors_at<'a>(path: &'a Path, text: &'a str, errors: &'a mut Vec<RuleError>) -> impl FnMut(usize, String) + 'a {
    move |start, message| {
        errors.push(RuleError {
            path: path.to_path_buf(),
            position: Some(line_col(text, start)),
            message,
        })
    }
}

/// The errors of a parse, one line each as they are shown (none when it parsed).
#[cfg(test)]
pub(crate) fn error_lines<T>(parsed: Result<T, Vec<RuleError>>) -> Vec<String> {
    parsed.err().unwrap_or_default().iter().map(|e| e.to_string()).collect()
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.len(), |nl| before.len() - nl - 1) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
id = "roaming-welcome"
moment = "roaming_arrival"
offer = "ROAM-PACK"
channel = "sms"
cooldown = "24h"
[messages]
en = "Welcome to {country_name}!"
"#;

    #[test]
    fn default_rules_folder_is_the_local_one_then_the_shipped_one() {
        let here = tempfile::tempdir().unwrap();
        let shipped = tempfile::tempdir().unwrap();
        assert_eq!(
            find_default_dir(here.path(), shipped.path(), "--rules"),
            Ok(shipped.path().to_path_buf())
        );
        std::fs::create_dir(here.path().join("rules")).unwrap();
        assert_eq!(
            find_default_dir(here.path(), shipped.path(), "--rules"),
            Ok(PathBuf::from("rules"))
        );
        let nowhere = here.path().join("gone");
        let error = find_default_dir(shipped.path(), &nowhere, "--against").unwrap_err();
        let message = error.to_string();
        assert!(message.contains("pass --against DIR"), "{message}");
        assert!(message.contains(&nowhere.display().to_string()), "{message}");
        assert!(Path::new(SHIPPED_DIR).join("roaming-welcome.toml").is_file());
    }

    #[test]
    fn parses_a_good_rule() {
        let rule = parse_rule(Path::new("r.toml"), GOOD).unwrap();
        assert_eq!(rule.cooldown, 24 * 3_600_000);
        assert_eq!(rule.version.len(), 7);
        assert_eq!(rule.channel, Channel::Sms);
    }

    #[test]
    fn version_changes_with_content() {
        let a = parse_rule(Path::new("r.toml"), GOOD).unwrap();
        let b = parse_rule(Path::new("r.toml"), &GOOD.replace("ROAM-PACK", "ROAM-PACK-2")).unwrap();
        assert_ne!(a.version, b.version);
    }

    #[test]
    fn reports_every_problem_with_its_place() {
        let bad = GOOD
            .replace("roaming_arrival", "landing")
            .replace("\"24h\"", "\"1 day\"")
            .replace("id = \"roaming-welcome\"", "id = \"Roaming Welcome\"");
        let errors = parse_rule(Path::new("r.toml"), &bad).unwrap_err();
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 3, "{text:?}");
        assert!(text[0].starts_with("r.toml:2:1: invalid id"), "{text:?}");
        assert!(
            text[1].starts_with("r.toml:3:1: unknown moment \"landing\" — known moments: roaming_arrival"),
            "{text:?}"
        );
        assert!(text[2].starts_with("r.toml:6:1: invalid duration"), "{text:?}");
    }

    #[test]
    fn syntax_errors_and_unknown_keys_have_positions() {
        let e = parse_rule(Path::new("r.toml"), &GOOD.replace("offer =", "ofer =")).unwrap_err();
        assert!(
            e[0].to_string().starts_with("r.toml:4:1: unknown field `ofer`"),
            "{}",
            e[0]
        );
        let e = parse_rule(
            Path::new("r.toml"),
            &GOOD.replace("channel = \"sms\"", "channel = \"fax\""),
        )
        .unwrap_err();
        assert!(e[0].to_string().contains("r.toml:5:11"), "{}", e[0]);
    }

    #[test]
    fn unknown_template_variables_are_errors() {
        let e = parse_rule(Path::new("r.toml"), &GOOD.replace("{country_name}", "{city}")).unwrap_err();
        assert!(e[0].message.contains("unknown variable {city}"), "{}", e[0]);
        assert_eq!(e[0].position, Some((8, 1)));
    }

    fn only_error(text: &str) -> String {
        let errors = parse_rule(Path::new("r.toml"), text).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors[0].to_string()
    }

    #[test]
    fn every_class_of_problem_is_reported_with_what_would_be_valid() {
        let pack = GOOD
            .replace("roaming_arrival", "data_pack_threshold")
            .replace("{country_name}", "{percent}%");
        let cases: Vec<(String, &str)> = vec![
            (
                pack.clone(),
                "r.toml:3:1: data_pack_threshold needs a threshold — add e.g. `threshold = 0.8`",
            ),
            (pack.replace("cooldown", "threshold = 1.5\ncooldown"), ""),
            (
                pack.replace("cooldown", "threshold = 0\ncooldown"),
                "r.toml:6:1: threshold 0 is out of range",
            ),
            (
                pack.replace("cooldown", "threshold = 11.0\ncooldown"),
                "threshold 11 is out of range",
            ),
            (
                GOOD.replace("cooldown", "threshold = 0.8\ncooldown"),
                "r.toml:6:1: roaming_arrival takes no threshold — remove it",
            ),
            (
                GOOD.replace("cooldown", "fallback_channel = \"sms\"\ncooldown"),
                "r.toml:6:1: fallback_channel is the same as channel",
            ),
            (
                GOOD.replace("cooldown", "fallback_channel = \"pigeon\"\ncooldown"),
                "r.toml:6:20: unknown variant `pigeon`, expected one of `sms`, `email`, `push`",
            ),
            (
                GOOD.replace("en = ", "pt = "),
                "r.toml:7:1: no `en` message — every rule needs an English message",
            ),
            (GOOD.replace("\"ROAM-PACK\"", "\"  \""), "r.toml:4:1: empty offer"),
            (GOOD.replace("offer = \"ROAM-PACK\"\n", ""), "missing field `offer`"),
            (
                GOOD.replace("id = \"roaming-welcome\"", "id = \"roaming-welcome"),
                "r.toml:2:22: invalid basic string",
            ),
            (
                GOOD.replace("cooldown = \"24h\"", "cooldown = 24"),
                "r.toml:6:12: invalid type: integer `24`, expected a string",
            ),
        ];
        for (text, expected) in cases {
            match parse_rule(Path::new("r.toml"), &text) {
                Ok(_) if expected.is_empty() => {}
                Ok(rule) => panic!("accepted {rule:?}, expected {expected:?}"),
                Err(_) if expected.is_empty() => panic!("rejected a valid rule:\n{text}"),
                Err(_) => {
                    let error = only_error(&text);
                    assert!(error.contains(expected), "{error:?} does not contain {expected:?}");
                }
            }
        }
    }

    #[test]
    fn folder_problems_duplicate_ids_and_every_file_reported() {
        let dir = tempfile::tempdir().unwrap();
        let errors = load_dir(dir.path()).unwrap_err();
        assert!(errors[0].message.starts_with("no rule files (*.toml)"), "{errors:?}");
        std::fs::write(dir.path().join("a.toml"), GOOD).unwrap();
        std::fs::write(dir.path().join("b.toml"), GOOD).unwrap();
        std::fs::write(dir.path().join("c.toml"), GOOD.replace("roaming_arrival", "landing")).unwrap();
        std::fs::write(dir.path().join("notes.md"), "not a rule").unwrap();
        let errors = load_dir(dir.path()).unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 2, "{text:?}");
        assert!(
            text[0].contains("b.toml:2:1: duplicate rule id \"roaming-welcome\""),
            "{text:?}"
        );
        assert!(text[1].contains("c.toml:3:1: unknown moment \"landing\""), "{text:?}");
    }

    #[test]
    fn condition_problems_point_at_the_condition() {
        let text = GOOD.replace("cooldown", "condition = \"customer.age > 3\"\ncooldown");
        let error = only_error(&text);
        assert!(
            error.starts_with("r.toml:6:1: condition: unknown field `customer.age` — known fields:"),
            "{error}"
        );
        let text = GOOD.replace("cooldown", "condition = \"customer.prepaid &&\"\ncooldown");
        assert!(only_error(&text).starts_with("r.toml:6:1: condition: not a valid CEL expression at 1:"));
        let ok = GOOD.replace("cooldown", "condition = \"!customer.prepaid\"\ncooldown");
        assert_eq!(
            parse_rule(Path::new("r.toml"), &ok).unwrap().condition.as_deref(),
            Some("!customer.prepaid")
        );
    }

    #[test]
    fn declared_moment_problems_say_what_would_be_valid() {
        let declared = GOOD
            .replace(
                "moment = \"roaming_arrival\"",
                "moment = \"cancel_intent\"\nwhen = \"subscriber.selfcare.last_page == 'cancel'\"",
            )
            .replace("{country_name}", "{key}");
        let rule = parse_rule(Path::new("r.toml"), &declared).unwrap();
        assert_eq!(rule.moment, MomentKind::Declared);
        assert_eq!(rule.moment_name(), "cancel_intent");
        assert_eq!(
            rule.declared.as_ref().unwrap().when,
            "subscriber.selfcare.last_page == 'cancel'"
        );

        let on_builtin = GOOD.replace("cooldown", "when = \"true\"\ncooldown");
        assert!(
            only_error(&on_builtin)
                .starts_with("r.toml:6:1: roaming_arrival is a built-in moment; `when` declares a new one"),
            "{}",
            only_error(&on_builtin)
        );
        let bad_name = declared.replace("cancel_intent", "Cancel-Intent");
        assert!(only_error(&bad_name).starts_with("r.toml:3:1: invalid moment name \"Cancel-Intent\""));
        let reads_moment = declared.replace("subscriber.selfcare.last_page == 'cancel'", "moment.country == 'US'");
        assert!(
            only_error(&reads_moment).starts_with(
                "r.toml:4:1: when: unknown name `moment` — this expression reads customer.*, subscriber.*"
            ),
            "{}",
            only_error(&reads_moment)
        );
        let not_bool = declared.replace("subscriber.selfcare.last_page == 'cancel'", "subscriber.cycle.ratio");
        assert!(only_error(&not_bool).contains("when: a condition must give true or false"));
        let key = |k: &str| declared.replace("cooldown", &format!("dedupe_key = \"{k}\"\ncooldown"));
        assert_eq!(
            parse_rule(Path::new("r.toml"), &key("subscriber.country"))
                .unwrap()
                .declared
                .unwrap()
                .dedupe_key
                .as_deref(),
            Some("subscriber.country")
        );
        assert!(
            only_error(&key("subscriber.cycle.ratio"))
                .starts_with("r.toml:7:1: dedupe_key: a dedupe key must give a string or an int"),
            "{}",
            only_error(&key("subscriber.cycle.ratio"))
        );
        let key_on_builtin = GOOD.replace("cooldown", "dedupe_key = \"subscriber.country\"\ncooldown");
        assert!(only_error(&key_on_builtin).starts_with("r.toml:6:1: roaming_arrival has a fixed dedupe key"));
        let unknown = GOOD.replace("roaming_arrival", "landing");
        assert!(only_error(&unknown).ends_with("or declare a new one with `when = \"…\"`"));
        let builtin_variable = declared.replace("{key}", "{country_name}");
        assert!(only_error(&builtin_variable).contains("a declared moment provides: {key}, {offer}"));
    }

    #[test]
    fn the_readme_documents_every_name_a_condition_can_read() {
        let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/README.md")).unwrap();
        for field in kairos_dataflows::condition::VOCABULARY {
            let row = format!("| `{}` | {} |", field.path, field.ty.as_str());
            assert!(readme.contains(&row), "rules/README.md lacks {row}");
        }
    }

    #[test]
    fn the_shipped_json_schema_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/schema.json");
        if std::env::var_os("KAIROS_REGENERATE_SCHEMA").is_some() {
            std::fs::write(&path, json_schema()).unwrap();
        }
        let shipped = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            shipped == json_schema(),
            "rules/schema.json is stale: run KAIROS_REGENERATE_SCHEMA=1 cargo test --release -p kairos --lib schema"
        );
        assert!(shipped.contains("\"moment\"") && shipped.contains("\"condition\""));
        type Schema = fn() -> String;
        let shared: [(&str, Schema); 4] = [
            ("churn", churn::json_schema),
            ("policy", policy::json_schema),
            ("lifecycle", lifecycle::json_schema),
            ("stickiness", stickiness::json_schema),
        ];
        for (name, schema) in shared {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("rules/{name}.schema.json"));
            if std::env::var_os("KAIROS_REGENERATE_SCHEMA").is_some() {
                std::fs::write(&path, schema()).unwrap();
            }
            assert!(
                std::fs::read_to_string(&path).unwrap_or_default() == schema(),
                "rules/{name}.schema.json is stale: run KAIROS_REGENERATE_SCHEMA=1 cargo test --release -p kairos --lib schema"
            );
        }
    }

    #[test]
    fn the_shipped_policy_loads_with_the_rules() {
        let rules = load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")).unwrap();
        assert_eq!(rules.policy.caps.len(), 2);
        assert!(rules.policy.quiet_hours.is_some() && rules.policy.arbitration.is_some());
        assert!(rules.rules.iter().all(|r| r.id != "policy"));
        let class = |id: &str| rules.rules.iter().find(|r| r.id == id).unwrap().class;
        assert_eq!(class("roaming-welcome"), ActionClass::Regulatory);
        assert_eq!(class("data-pack-80"), ActionClass::Transactional);
        assert_eq!(class("handset-upgrade"), ActionClass::Marketing);
    }

    #[test]
    fn class_quiet_hours_value_and_holdout_are_checked() {
        let rule = parse_rule(
            Path::new("r.toml"),
            &GOOD.replace("cooldown", "class = \"transactional\"\ncooldown"),
        )
        .unwrap();
        assert_eq!(
            (rule.class, rule.quiet_hours),
            (ActionClass::Transactional, QuietMode::Ignore)
        );
        let marketing = parse_rule(Path::new("r.toml"), GOOD).unwrap();
        assert_eq!(
            (marketing.class, marketing.quiet_hours, marketing.value),
            (ActionClass::Marketing, QuietMode::Defer, 1.0)
        );
        let regulatory = GOOD.replace(
            "cooldown",
            "class = \"regulatory\"\nquiet_hours = \"defer\"\nholdout = 0.1\ncooldown",
        );
        let errors: Vec<String> = parse_rule(Path::new("r.toml"), &regulatory)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].starts_with("r.toml:7:1: a regulatory rule is sent without undue delay"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("r.toml:8:1: a regulatory rule cannot hold customers out"),
            "{errors:?}"
        );
        let e = only_error(&GOOD.replace("cooldown", "value = -3.0\ncooldown"));
        assert!(e.starts_with("r.toml:6:1: value -3 is out of range"), "{e}");
        let e = only_error(&GOOD.replace("cooldown", "holdout = 0.9\ncooldown"));
        assert!(e.starts_with("r.toml:6:1: holdout 0.9 is out of range"), "{e}");
        let e = only_error(&GOOD.replace("cooldown", "class = \"promo\"\ncooldown"));
        assert!(e.contains("r.toml:6:9") && e.contains("unknown variant `promo`"), "{e}");
    }

    #[test]
    fn a_bad_policy_file_fails_the_folder_with_its_place() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("r.toml"), GOOD).unwrap();
        std::fs::write(
            dir.path().join("policy.toml"),
            "[quiet_hours]\nstart = \"25:00\"\nend = \"08:00\"\n",
        )
        .unwrap();
        let errors = load_dir(dir.path()).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0]
                .to_string()
                .ends_with("policy.toml:2:9: invalid time \"25:00\" — use HH:MM on a 24-hour clock, e.g. \"21:00\""),
            "{}",
            errors[0]
        );
        std::fs::remove_file(dir.path().join("policy.toml")).unwrap();
        assert_eq!(load_dir(dir.path()).unwrap().policy, kairos_model::Policy::default());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(90_000));
        assert_eq!(parse_duration("7d"), Ok(7 * 86_400_000));
        assert!(parse_duration("7").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("-1h").is_err());
    }

    #[test]
    fn shipped_rules_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        let set = load_dir(&dir).unwrap();
        assert!(set.rules.iter().any(|r| r.id == "roaming-welcome"));
    }
}
