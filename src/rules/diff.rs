//! `kairos rules diff OLD NEW`: what a new rule set changes, rule by rule and in the
//! policy, in words a reviewer can check before publishing it.

use kairos_model::rule::{CapSpan, Policy};
use kairos_model::{Rule, RuleSet};

/// One line per difference; empty when the sets decide alike.
pub fn diff(old: &RuleSet, new: &RuleSet) -> Vec<String> {
    let mut lines = Vec::new();
    for rule in &new.rules {
        match old.rules.iter().find(|r| r.id == rule.id) {
            None => lines.push(format!(
                "+ {}: new rule ({} → {} on {}, {})",
                rule.id,
                rule.moment_name(),
                rule.offer,
                rule.channel.as_str(),
                rule.class.as_str()
            )),
            Some(before) if before.version != rule.version => {
                let fields = changed_fields(before, rule);
                if fields.is_empty() {
                    lines.push(format!(
                        "~ {}: version {} → {} (comments or layout only)",
                        rule.id, before.version, rule.version
                    ));
                } else {
                    lines.push(format!("~ {}: version {} → {}", rule.id, before.version, rule.version));
                    lines.extend(fields.into_iter().map(|f| format!("    {f}")));
                }
            }
            Some(_) => {}
        }
    }
    for rule in &old.rules {
        if !new.rules.iter().any(|r| r.id == rule.id) {
            lines.push(format!(
                "- {}: removed (its actions held for quiet hours will not be sent)",
                rule.id
            ));
        }
    }
    lines.extend(
        policy_changes(&old.policy, &new.policy)
            .into_iter()
            .map(|l| format!("~ policy: {l}")),
    );
    lines
}

fn changed_fields(a: &Rule, b: &Rule) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = |name: &str, before: String, after: String| {
        if before != after {
            out.push(format!("{name}: {before} → {after}"));
        }
    };
    let text = |v: Option<&str>| v.map_or("(none)".to_string(), |v| format!("{v:?}"));
    field("moment", a.moment_name().into(), b.moment_name().into());
    field(
        "when",
        text(a.declared.as_ref().map(|d| d.when.as_str())),
        text(b.declared.as_ref().map(|d| d.when.as_str())),
    );
    field(
        "dedupe_key",
        text(a.declared.as_ref().and_then(|d| d.dedupe_key.as_deref())),
        text(b.declared.as_ref().and_then(|d| d.dedupe_key.as_deref())),
    );
    field("condition", text(a.condition.as_deref()), text(b.condition.as_deref()));
    field("threshold", format!("{:?}", a.threshold), format!("{:?}", b.threshold));
    field("offer", a.offer.clone(), b.offer.clone());
    field("channel", a.channel.as_str().into(), b.channel.as_str().into());
    field(
        "fallback_channel",
        text(a.fallback_channel.map(|c| c.as_str())),
        text(b.fallback_channel.map(|c| c.as_str())),
    );
    field("class", a.class.as_str().into(), b.class.as_str().into());
    field(
        "quiet_hours",
        a.quiet_hours.as_str().into(),
        b.quiet_hours.as_str().into(),
    );
    field("priority", a.priority.to_string(), b.priority.to_string());
    field("value", a.value.to_string(), b.value.to_string());
    field("holdout", a.holdout.to_string(), b.holdout.to_string());
    field("cooldown", duration(a.cooldown), duration(b.cooldown));
    let languages: std::collections::BTreeSet<&String> = a.messages.keys().chain(b.messages.keys()).collect();
    for language in languages {
        field(
            &format!("messages.{language}"),
            text(a.messages.get(language).map(String::as_str)),
            text(b.messages.get(language).map(String::as_str)),
        );
    }
    out
}

fn policy_changes(a: &Policy, b: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    let quiet = |p: &Policy| {
        p.quiet_hours.as_ref().map_or("none".to_string(), |q| {
            let channels: Vec<&str> = q.channels.iter().map(|c| c.as_str()).collect();
            format!(
                "{:02}:{:02}–{:02}:{:02} on {}",
                q.start_minute / 60,
                q.start_minute % 60,
                q.end_minute / 60,
                q.end_minute % 60,
                channels.join(", ")
            )
        })
    };
    if quiet(a) != quiet(b) {
        out.push(format!("quiet hours: {} → {}", quiet(a), quiet(b)));
    }
    let cap = |c: &kairos_model::rule::Cap| {
        let span = match c.span {
            CapSpan::Rolling(ms) => format!("in any {}", duration(ms)),
            CapSpan::Calendar(period) => format!("per calendar {}", period.as_str()),
        };
        format!(
            "{} marketing {} {span}",
            c.max,
            c.channel
                .map_or("messages".to_string(), |ch| format!("{} messages", ch.as_str()))
        )
    };
    for new in &b.caps {
        match a.caps.iter().find(|c| c.name == new.name) {
            None => out.push(format!("cap {} added: {}", new.name, cap(new))),
            Some(old) if old != new => out.push(format!("cap {}: {} → {}", new.name, cap(old), cap(new))),
            Some(_) => {}
        }
    }
    for old in &a.caps {
        if !b.caps.iter().any(|c| c.name == old.name) {
            out.push(format!("cap {} removed (was {})", old.name, cap(old)));
        }
    }
    let arbitration = |p: &Policy| {
        p.arbitration.as_ref().map_or("none".to_string(), |x| {
            format!("{} within {}", x.score.as_str(), duration(x.window))
        })
    };
    if arbitration(a) != arbitration(b) {
        out.push(format!("arbitration: {} → {}", arbitration(a), arbitration(b)));
    }
    let holdout = |p: &Policy| {
        format!(
            "{} % for {} (salt {:?})",
            p.holdout.share * 100.0,
            duration(p.holdout.sticky),
            p.holdout.salt
        )
    };
    if holdout(a) != holdout(b) {
        out.push(format!("global control group: {} → {}", holdout(a), holdout(b)));
    }
    out
}

/// Milliseconds in the rule files' units (`90d`, `24h`, `0s`).
fn duration(ms: u64) -> String {
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms > 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    if ms == 0 {
        "0s".into()
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn names_every_changed_field_added_and_removed_rule_and_policy_change() {
        let shipped = crate::rules::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")).unwrap();
        assert!(diff(&shipped, &shipped).is_empty());
        let mut edited = shipped.clone();
        let roaming = edited.rules.iter_mut().find(|r| r.id == "roaming-welcome").unwrap();
        roaming.version = "0000000".into();
        roaming.cooldown = 48 * 3_600_000;
        roaming.messages.insert("en".into(), "Hi".into());
        edited.rules.retain(|r| r.id != "family-plan");
        let mut added = edited.rules[0].clone();
        added.id = "zz-new".into();
        edited.rules.push(added);
        edited.policy.caps[0].max = 3;
        edited.policy.arbitration = None;
        let lines = diff(&shipped, &edited);
        let text = lines.join("\n");
        assert!(text.contains("~ roaming-welcome: version"), "{text}");
        assert!(text.contains("    cooldown: 1d → 2d"), "{text}");
        assert!(text.contains("    messages.en: \"Welcome to"), "{text}");
        assert!(text.contains("+ zz-new: new rule"), "{text}");
        assert!(text.contains("- family-plan: removed"), "{text}");
        assert!(
            text.contains("~ policy: cap marketing-sms-weekly: 2 marketing sms messages in any 7d → 3 marketing sms messages in any 7d"),
            "{text}"
        );
        assert!(
            text.contains("~ policy: arbitration: priority_x_value within 1h → none"),
            "{text}"
        );
        assert_eq!(lines.len(), 7, "{text}");
    }
}
