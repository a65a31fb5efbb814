//! `policy.toml`: the contact policy over every rule of a folder — quiet hours, frequency
//! caps, arbitration and the global control group (see `rules/README.md`).

use std::path::Path;

use kairos_model::rule::{Arbitration, CalendarPeriod, Cap, CapSpan, Holdout, Policy, QuietHours, Score};
use kairos_model::time::DAY;
use kairos_model::Channel;
use serde::Deserialize;
use toml::Spanned;

use super::{parse_duration, RuleError};

/// The policy file's name in a rules folder.
pub const POLICY_FILE: &str = "policy.toml";

/// The policy file, as written. Unknown keys are errors.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "kairos contact policy (policy.toml, v1)")]
pub struct PolicyFile {
    /// Quiet hours, in the subscriber's current local time.
    #[serde(default)]
    quiet_hours: Option<QuietHoursFile>,
    /// Frequency caps on marketing actions.
    #[serde(default)]
    caps: Vec<CapFile>,
    /// Arbitration between marketing rules that fire close together. Without this table,
    /// every rule's moments are judged on their own.
    #[serde(default)]
    arbitration: Option<ArbitrationFile>,
    /// The global control group.
    #[serde(default)]
    holdout: Option<HoldoutFile>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct QuietHoursFile {
    /// Local time the quiet hours start, `HH:MM` (e.g. "21:00").
    #[schemars(with = "String")]
    start: Spanned<String>,
    /// Local time they end, `HH:MM` (e.g. "08:00"); before `start` means the next day.
    #[schemars(with = "String")]
    end: Spanned<String>,
    /// The channels they apply to. Default: sms and push.
    #[serde(default)]
    channels: Option<Vec<Channel>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct CapFile {
    /// Named in decisions when the cap suppresses an action.
    #[schemars(with = "String")]
    name: Spanned<String>,
    /// The channel counted and capped; every channel together when absent.
    #[serde(default)]
    channel: Option<Channel>,
    /// At most this many marketing actions sent…
    #[schemars(with = "u32")]
    max: Spanned<u32>,
    /// …within any period this long (a rolling window: "7d", "24h"), or
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    window: Option<Spanned<String>>,
    /// …per calendar `day`, `week` (Monday to Sunday) or `month` in the customer's time zone.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    period: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct ArbitrationFile {
    /// How close together (event time) moments compete: "0s" for one instant only, "1h".
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    window: Option<Spanned<String>>,
    /// `priority_x_value` (default), `priority` or `value`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    score: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct HoldoutFile {
    /// Share of subscribers in the global control group, 0 to 0.5 (0.05 = 5 %).
    #[schemars(with = "f64")]
    share: Spanned<f64>,
    /// How long membership holds before it is drawn again (default "90d").
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    sticky: Option<Spanned<String>>,
    /// Mixed into the draw; change it to draw new groups. Default "kairos".
    #[serde(default)]
    salt: Option<String>,
}

/// The longest a cap, an arbitration window or stickiness may be.
const LONGEST: u64 = 366 * DAY;

/// Parses and checks a policy file's text.
pub fn parse_policy(path: &Path, text: &str) -> Result<Policy, Vec<RuleError>> {
    let file: PolicyFile = super::parse_toml(path, text)?;
    let mut errors = Vec::new();
    let mut err = super::errors_at(path, text, &mut errors);
    let duration = |value: &Spanned<String>, what: &str, err: &mut dyn FnMut(usize, String)| -> u64 {
        match parse_duration(value.get_ref()) {
            Ok(ms) if ms <= LONGEST => ms,
            Ok(_) => {
                err(
                    value.span().start,
                    format!("{what} {:?} is too long — at most 366d", value.get_ref()),
                );
                0
            }
            Err(why) => {
                err(value.span().start, format!("{what}: {why}"));
                0
            }
        }
    };
    let quiet_hours = file.quiet_hours.map(|quiet| {
        let minute = |value: &Spanned<String>, err: &mut dyn FnMut(usize, String)| {
            clock_minute(value.get_ref()).unwrap_or_else(|| {
                err(
                    value.span().start,
                    format!(
                        "invalid time {:?} — use HH:MM on a 24-hour clock, e.g. \"21:00\"",
                        value.get_ref()
                    ),
                );
                0
            })
        };
        let start_minute = minute(&quiet.start, &mut err);
        let end_minute = minute(&quiet.end, &mut err);
        if start_minute == end_minute && clock_minute(quiet.start.get_ref()).is_some() {
            err(
                quiet.end.span().start,
                "quiet hours start and end at the same time — give a window, e.g. start = \"21:00\", end = \"08:00\""
                    .into(),
            );
        }
        let mut channels = quiet.channels.unwrap_or_else(|| vec![Channel::Sms, Channel::Push]);
        channels.sort();
        channels.dedup();
        QuietHours {
            start_minute,
            end_minute,
            channels,
        }
    });
    let mut caps: Vec<Cap> = Vec::new();
    for cap in file.caps {
        let name = cap.name.get_ref().trim().to_string();
        if name.is_empty() {
            err(
                cap.name.span().start,
                "empty cap name — name it, e.g. \"marketing-sms-weekly\"".into(),
            );
        } else if caps.iter().any(|c| c.name == name) {
            err(
                cap.name.span().start,
                format!("duplicate cap name {name:?} — names must be unique"),
            );
        }
        if *cap.max.get_ref() == 0 {
            err(
                cap.max.span().start,
                "max = 0 would stop every marketing action — at least 1 (or remove the cap)".into(),
            );
        }
        let span = match (&cap.window, &cap.period) {
            (Some(window), None) => {
                let ms = duration(window, "window", &mut err);
                if ms == 0 && parse_duration(window.get_ref()).is_ok() {
                    err(window.span().start, "window must be longer than 0 — e.g. \"7d\"".into());
                }
                CapSpan::Rolling(ms)
            }
            (None, Some(period)) => match CalendarPeriod::ALL.into_iter().find(|p| p.as_str() == period.get_ref()) {
                Some(p) => CapSpan::Calendar(p),
                None => {
                    err(
                        period.span().start,
                        format!("unknown period {:?} — day, week or month", period.get_ref()),
                    );
                    CapSpan::Calendar(CalendarPeriod::Day)
                }
            },
            (Some(window), Some(_)) => {
                err(
                    window.span().start,
                    "a cap has either a rolling `window` or a calendar `period`, not both".into(),
                );
                CapSpan::Rolling(1)
            }
            (None, None) => {
                err(
                    cap.name.span().start,
                    format!(
                        "cap {name:?} needs a rolling `window` (e.g. \"7d\") or a calendar `period` (day, week, month)"
                    ),
                );
                CapSpan::Rolling(1)
            }
        };
        caps.push(Cap {
            name,
            channel: cap.channel,
            max: *cap.max.get_ref(),
            span,
        });
    }
    let arbitration = file.arbitration.map(|a| Arbitration {
        window: a.window.as_ref().map_or(0, |w| duration(w, "window", &mut err)),
        score: match &a.score {
            None => Score::default(),
            Some(score) => Score::ALL
                .into_iter()
                .find(|s| s.as_str() == score.get_ref())
                .unwrap_or_else(|| {
                    err(
                        score.span().start,
                        format!(
                            "unknown score {:?} — priority_x_value, priority or value",
                            score.get_ref()
                        ),
                    );
                    Score::default()
                }),
        },
    });
    let holdout = match file.holdout {
        None => Holdout {
            share: 0.0,
            sticky: 90 * DAY,
            salt: "kairos".into(),
        },
        Some(h) => {
            let share = *h.share.get_ref();
            if !(0.0..=0.5).contains(&share) {
                err(
                    h.share.span().start,
                    format!("share {share} is out of range — 0 to 0.5, e.g. 0.05 for 5 %"),
                );
            }
            let sticky = h.sticky.as_ref().map_or(90 * DAY, |s| duration(s, "sticky", &mut err));
            if sticky < DAY {
                if let Some(s) = &h.sticky {
                    err(s.span().start, "sticky must be at least 1d — e.g. \"90d\"".into());
                }
            }
            Holdout {
                share,
                sticky: sticky.max(DAY),
                salt: h.salt.unwrap_or_else(|| "kairos".into()),
            }
        }
    };
    drop(err);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Policy {
        caps,
        quiet_hours,
        arbitration,
        holdout,
    })
}

/// `HH:MM` → minutes after midnight.
fn clock_minute(text: &str) -> Option<u16> {
    let (hours, minutes) = text.split_once(':')?;
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    let (hours, minutes): (u16, u16) = (hours.parse().ok()?, minutes.parse().ok()?);
    (hours < 24 && minutes < 60).then_some(hours * 60 + minutes)
}

/// The JSON Schema of the policy file.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(PolicyFile);
    serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[quiet_hours]
start = "21:00"
end = "08:00"

[[caps]]
name = "marketing-sms-weekly"
channel = "sms"
max = 2
window = "7d"

[[caps]]
name = "marketing-daily"
max = 1
period = "day"

[arbitration]
window = "1h"

[holdout]
share = 0.05
"#;

    #[test]
    fn parses_a_good_policy() {
        let policy = parse_policy(Path::new("policy.toml"), GOOD).unwrap();
        let quiet = policy.quiet_hours.unwrap();
        assert_eq!((quiet.start_minute, quiet.end_minute), (21 * 60, 8 * 60));
        assert_eq!(quiet.channels, vec![Channel::Sms, Channel::Push]);
        assert_eq!(policy.caps.len(), 2);
        assert_eq!(policy.caps[0].span, CapSpan::Rolling(7 * DAY));
        assert_eq!(policy.caps[1].span, CapSpan::Calendar(CalendarPeriod::Day));
        assert_eq!(policy.caps[1].channel, None);
        let arbitration = policy.arbitration.unwrap();
        assert_eq!(
            (arbitration.window, arbitration.score),
            (3_600_000, Score::PriorityTimesValue)
        );
        assert_eq!((policy.holdout.share, policy.holdout.sticky), (0.05, 90 * DAY));
    }

    #[test]
    fn every_problem_is_reported_where_it_is() {
        let bad = GOOD
            .replace("\"21:00\"", "\"9pm\"")
            .replace("max = 2", "max = 0")
            .replace("period = \"day\"", "period = \"fortnight\"")
            .replace("share = 0.05", "share = 0.9");
        let errors: Vec<String> = parse_policy(Path::new("policy.toml"), &bad)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(errors.len(), 4, "{errors:#?}");
        assert!(
            errors[0].starts_with("policy.toml:3:9: invalid time \"9pm\""),
            "{errors:#?}"
        );
        assert!(errors[1].starts_with("policy.toml:9:7: max = 0"), "{errors:#?}");
        assert!(
            errors[2].starts_with("policy.toml:15:10: unknown period \"fortnight\""),
            "{errors:#?}"
        );
        assert!(
            errors[3].starts_with("policy.toml:21:9: share 0.9 is out of range"),
            "{errors:#?}"
        );
        let typo = parse_policy(
            Path::new("policy.toml"),
            &GOOD.replace("[arbitration]\nwindow", "[arbitration]\nwindw"),
        )
        .unwrap_err();
        assert!(typo[0].to_string().contains("unknown field `windw`"), "{}", typo[0]);
        let both = parse_policy(
            Path::new("policy.toml"),
            &GOOD.replace("period = \"day\"", "period = \"day\"\nwindow = \"1d\""),
        )
        .unwrap_err();
        assert!(both[0].message.contains("not both"), "{}", both[0]);
    }

    #[test]
    fn clock_times_are_strict() {
        assert_eq!(clock_minute("00:00"), Some(0));
        assert_eq!(clock_minute("23:59"), Some(23 * 60 + 59));
        for bad in ["24:00", "7:00", "07:60", "0700", "07:00:00"] {
            assert_eq!(clock_minute(bad), None, "{bad}");
        }
    }
}
