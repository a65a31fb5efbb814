//! A rule as the dataflows run it. Files are parsed into these by the `kairos` crate
//! (`src/rules`); here every rule is already valid.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::action::Channel;
use crate::time::Millis;

/// The moments the engine knows how to detect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MomentKind {
    /// A network event puts the subscriber in a country other than home and other than the
    /// country of their previous network event (contract §4). Dedupe key: the country.
    RoamingArrival,
    /// Data usage in the current billing cycle reaches the rule's `threshold` share of the
    /// pack. Once per rule and cycle; dedupe key: the cycle's start.
    DataPackThreshold,
    /// The handset is 730 days old and the contract ends within 60 days (or has ended).
    /// Once per rule and handset; dedupe key: the IMEI.
    HandsetAgeing,
    /// A moment declared in a rule file: its `when` condition over the subscriber's state
    /// becomes true (or, while true, its dedupe key changes). See [`Declared`].
    Declared,
}

impl MomentKind {
    /// The moments built into the engine.
    pub const ALL: [MomentKind; 3] = [
        MomentKind::RoamingArrival,
        MomentKind::DataPackThreshold,
        MomentKind::HandsetAgeing,
    ];

    /// The contract's name of the moment.
    pub fn as_str(self) -> &'static str {
        match self {
            MomentKind::RoamingArrival => "roaming_arrival",
            MomentKind::DataPackThreshold => "data_pack_threshold",
            MomentKind::HandsetAgeing => "handset_ageing",
            MomentKind::Declared => "declared",
        }
    }

    /// The inverse of [`MomentKind::as_str`] for the built-in moments.
    pub fn parse(text: &str) -> Option<MomentKind> {
        MomentKind::ALL.into_iter().find(|m| m.as_str() == text)
    }

    /// The template variables the moment provides to messages.
    pub fn variables(self) -> &'static [&'static str] {
        match self {
            MomentKind::RoamingArrival => &["country", "country_name", "offer"],
            MomentKind::DataPackThreshold => &["percent", "pack_gb", "offer"],
            MomentKind::HandsetAgeing => &["model", "contract_end", "offer"],
            MomentKind::Declared => &["key", "offer"],
        }
    }

    /// Whether the rule needs a `threshold`.
    pub fn needs_threshold(self) -> bool {
        self == MomentKind::DataPackThreshold
    }
}

/// A moment declared by a rule file rather than built into the engine: it happens for a
/// subscriber when `when` becomes true on their state after one of their events, or when,
/// while it stays true, `dedupe_key` takes a new value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Declared {
    /// The moment's name in actions and decisions (`cancel_intent`).
    pub name: String,
    /// CEL over `customer.*` and `subscriber.*`: the state in which the moment holds.
    pub when: String,
    /// Optional CEL giving the moment's dedupe key (a string or an int); `""` without it.
    pub dedupe_key: Option<String>,
}

/// One rule: a moment, the offer it makes and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Stable id (`roaming-welcome`); actions and cooldowns are keyed by it.
    pub id: String,
    /// Content hash of the rule's definition, carried by every action it produces.
    pub version: String,
    pub moment: MomentKind,
    /// For [`MomentKind::Declared`]: the moment's definition.
    pub declared: Option<Declared>,
    /// Higher wins when contact policy must choose between rules (default 0).
    pub priority: i32,
    pub offer: String,
    pub channel: Channel,
    /// Used when the subscriber cannot be reached on `channel` (no consent, no address).
    pub fallback_channel: Option<Channel>,
    /// For `data_pack_threshold`: the share of the pack (0.8 = 80 %).
    pub threshold: Option<f64>,
    /// Optional CEL condition over the customer, the subscriber's features and the moment:
    /// the rule acts on a moment only when it holds.
    pub condition: Option<String>,
    /// No second action for the same subscriber and dedupe key within this long.
    pub cooldown: Millis,
    /// Message templates by language (`en` is always present); `{variable}` placeholders.
    pub messages: BTreeMap<String, String>,
}

impl Rule {
    /// The name of the rule's moment, as actions and decisions carry it.
    pub fn moment_name(&self) -> &str {
        match &self.declared {
            Some(declared) => &declared.name,
            None => self.moment.as_str(),
        }
    }

    /// Picks the subscriber's language when the rule has a message for it, else `en`, and
    /// fills the template's `{variables}`.
    ///
    /// ```
    /// # use std::collections::BTreeMap;
    /// # use kairos_model::{Rule, MomentKind, Channel};
    /// let rule = Rule { id: "r".into(), version: "v".into(), moment: MomentKind::RoamingArrival,
    ///     declared: None, priority: 0, offer: "ROAM".into(), channel: Channel::Sms, fallback_channel: None, threshold: None, condition: None, cooldown: 0,
    ///     messages: BTreeMap::from([("en".into(), "Welcome to {country_name}!".into())]) };
    /// assert_eq!(rule.render(Some("pt"), &[("country_name", "Spain")]),
    ///            ("en".to_string(), "Welcome to Spain!".to_string()));
    /// ```
    pub fn render(&self, language: Option<&str>, variables: &[(&str, &str)]) -> (String, String) {
        let (language, template) = language
            .and_then(|l| self.messages.get_key_value(l))
            .or_else(|| self.messages.get_key_value("en"))
            .map(|(l, t)| (l.as_str(), t.as_str()))
            .unwrap_or(("en", ""));
        let mut message = String::with_capacity(template.len() + 16);
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            message.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            match after.find('}') {
                Some(close) => {
                    let name = &after[..close];
                    match variables.iter().find(|(n, _)| *n == name) {
                        Some((_, value)) => message.push_str(value),
                        None => message.push_str(&rest[open..open + close + 2]),
                    }
                    rest = &after[close + 1..];
                }
                None => {
                    message.push_str(&rest[open..]);
                    rest = "";
                }
            }
        }
        message.push_str(rest);
        (language.to_string(), message)
    }
}

/// The rules in force, in id order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
}

impl RuleSet {
    /// The rules that act on a moment.
    pub fn for_moment(&self, moment: MomentKind) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(move |r| r.moment == moment)
    }
}
