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
    /// The subscriber's lifecycle stage changes (the rules folder's `lifecycle.toml`, see
    /// [`Stages`]). Dedupe key: the stage entered.
    LifecycleChange,
    /// The subscriber's churn risk rises to the threshold of the rules folder's `churn.toml`
    /// (see [`ChurnModel`]). Dedupe key: the strongest reason.
    ChurnRisk,
}

impl MomentKind {
    /// The moments built into the engine.
    pub const ALL: [MomentKind; 5] = [
        MomentKind::RoamingArrival,
        MomentKind::DataPackThreshold,
        MomentKind::HandsetAgeing,
        MomentKind::LifecycleChange,
        MomentKind::ChurnRisk,
    ];

    /// The contract's name of the moment.
    pub fn as_str(self) -> &'static str {
        match self {
            MomentKind::RoamingArrival => "roaming_arrival",
            MomentKind::DataPackThreshold => "data_pack_threshold",
            MomentKind::HandsetAgeing => "handset_ageing",
            MomentKind::Declared => "declared",
            MomentKind::LifecycleChange => "lifecycle_change",
            MomentKind::ChurnRisk => "churn_risk",
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
            MomentKind::LifecycleChange => &["from", "to", "offer"],
            MomentKind::ChurnRisk => &["risk", "reason", "offer"],
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
    /// What the policy lets through: marketing, transactional or regulatory.
    pub class: ActionClass,
    /// What quiet hours do to the rule's actions.
    pub quiet_hours: QuietMode,
    /// The value of an accepted offer, for arbitration (default 1.0).
    pub value: f64,
    /// The share of subscribers held out of this rule as its control group (0 for none).
    pub holdout: f64,
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
    /// The rule's arbitration score under `score`.
    pub fn score(&self, score: Score) -> f64 {
        match score {
            Score::PriorityTimesValue => f64::from(self.priority) * self.value,
            Score::Priority => f64::from(self.priority),
            Score::Value => self.value,
        }
    }

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
    ///     declared: None, priority: 0, class: Default::default(), quiet_hours: Default::default(), value: 1.0, holdout: 0.0, offer: "ROAM".into(), channel: Channel::Sms, fallback_channel: None, threshold: None, condition: None, cooldown: 0,
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

/// What kind of message a rule sends, which decides the contact policy it is under.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ActionClass {
    /// Offers: consent, cooldown, quiet hours, frequency caps, arbitration and control
    /// groups all apply.
    #[default]
    Marketing,
    /// Service messages the customer needs (a data pack running out): consent and cooldown
    /// apply, caps neither count nor stop them, quiet hours as the rule says (default:
    /// ignored), no arbitration, no global control group.
    Transactional,
    /// Messages the law requires without undue delay (the EU roaming price information):
    /// only consent, opt-out and the cooldown stop them.
    Regulatory,
}

impl ActionClass {
    pub const ALL: [ActionClass; 3] = [
        ActionClass::Marketing,
        ActionClass::Transactional,
        ActionClass::Regulatory,
    ];

    /// The name used in rule files and decisions.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionClass::Marketing => "marketing",
            ActionClass::Transactional => "transactional",
            ActionClass::Regulatory => "regulatory",
        }
    }

    /// The inverse of [`ActionClass::as_str`].
    pub fn parse(text: &str) -> Option<ActionClass> {
        ActionClass::ALL.into_iter().find(|c| c.as_str() == text)
    }

    /// What quiet hours do to the class's actions when the rule does not say.
    pub fn default_quiet_mode(self) -> QuietMode {
        match self {
            ActionClass::Marketing => QuietMode::Defer,
            ActionClass::Transactional | ActionClass::Regulatory => QuietMode::Ignore,
        }
    }
}

/// What quiet hours do to an action that falls inside them.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum QuietMode {
    /// Hold it until the quiet hours end (`send_at`).
    #[default]
    Defer,
    /// Drop it (suppressed as `quiet_hours`).
    Discard,
    /// Send it anyway.
    Ignore,
}

impl QuietMode {
    pub const ALL: [QuietMode; 3] = [QuietMode::Defer, QuietMode::Discard, QuietMode::Ignore];

    /// The name used in rule files.
    pub fn as_str(self) -> &'static str {
        match self {
            QuietMode::Defer => "defer",
            QuietMode::Discard => "discard",
            QuietMode::Ignore => "ignore",
        }
    }

    /// The inverse of [`QuietMode::as_str`].
    pub fn parse(text: &str) -> Option<QuietMode> {
        QuietMode::ALL.into_iter().find(|m| m.as_str() == text)
    }
}

/// How long a frequency cap looks back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CapSpan {
    /// Any period of this length (milliseconds): at most `max` sends within this long of
    /// each other.
    Rolling(Millis),
    /// A calendar period in the subscriber's own time zone (`customer.timezone`).
    Calendar(CalendarPeriod),
}

/// A calendar period for caps, in the subscriber's local time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CalendarPeriod {
    Day,
    /// Monday to Sunday (ISO 8601 weeks).
    Week,
    Month,
}

impl CalendarPeriod {
    pub const ALL: [CalendarPeriod; 3] = [CalendarPeriod::Day, CalendarPeriod::Week, CalendarPeriod::Month];

    /// The name used in the policy file.
    pub fn as_str(self) -> &'static str {
        match self {
            CalendarPeriod::Day => "day",
            CalendarPeriod::Week => "week",
            CalendarPeriod::Month => "month",
        }
    }
}

/// A frequency cap on marketing actions: at most `max` sent on `channel` (on any channel
/// when `None`) per `span`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cap {
    /// The name decisions give when the cap suppresses an action.
    pub name: String,
    pub channel: Option<Channel>,
    pub max: u32,
    pub span: CapSpan,
}

/// Quiet hours: from `start` to `end` (minutes after local midnight; `start > end` spans
/// midnight), on `channels`, in the subscriber's current local time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuietHours {
    pub start_minute: u16,
    pub end_minute: u16,
    pub channels: Vec<Channel>,
}

/// How arbitration scores a rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Score {
    /// `priority × value` (Pega's default arbitration, without propensity).
    #[default]
    PriorityTimesValue,
    Priority,
    Value,
}

impl Score {
    pub const ALL: [Score; 3] = [Score::PriorityTimesValue, Score::Priority, Score::Value];

    /// The name used in the policy file.
    pub fn as_str(self) -> &'static str {
        match self {
            Score::PriorityTimesValue => "priority_x_value",
            Score::Priority => "priority",
            Score::Value => "value",
        }
    }
}

/// Arbitration between marketing rules that fire for one subscriber close together.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Arbitration {
    /// How close together (event time, milliseconds); 0 = only moments at one instant.
    pub window: Millis,
    pub score: Score,
}

/// Control groups: a global holdout from every marketing rule, and the rules' own.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Holdout {
    /// The share of subscribers in the global control group (0.05 = 5 %).
    pub share: f64,
    /// How long a subscriber stays in (or out of) a control group before it is drawn again
    /// (milliseconds; periods start at the Unix epoch).
    pub sticky: Millis,
    /// Mixed into the draw: a new salt draws new groups.
    pub salt: String,
}

/// The contact policy over all rules (`policy.toml` in the rules folder).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub caps: Vec<Cap>,
    pub quiet_hours: Option<QuietHours>,
    /// `None`: every rule's moments are judged on their own.
    pub arbitration: Option<Arbitration>,
    pub holdout: Holdout,
}

/// A stage of the customer's lifecycle (contract §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Stage {
    New,
    Growth,
    Stable,
    Decline,
    Leaving,
    /// Terminated (contract §5.1): no stage definition decides it, and none follows it
    /// until a record says the customer is active again.
    Gone,
}

impl Stage {
    /// Every stage, in the contract's order.
    pub const ALL: [Stage; 6] = [
        Stage::New,
        Stage::Growth,
        Stage::Stable,
        Stage::Decline,
        Stage::Leaving,
        Stage::Gone,
    ];

    /// The contract's name of the stage.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::New => "new",
            Stage::Growth => "growth",
            Stage::Stable => "stable",
            Stage::Decline => "decline",
            Stage::Leaving => "leaving",
            Stage::Gone => "gone",
        }
    }

    /// The inverse of [`Stage::as_str`].
    pub fn parse(text: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// One definition of `lifecycle.toml`: the stage, and the CEL over `customer.*` and
/// `subscriber.*` that puts a subscriber in it (`None`: everyone the definitions before it
/// left; only the last may have none).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageRule {
    pub stage: Stage,
    pub when: Option<String>,
}

/// The lifecycle stages of a rules folder (`lifecycle.toml`): a terminated customer is
/// `gone`; anyone else is in the stage of the first definition that holds, in file order.
/// Empty: no stages are kept (a rule set built in code; a folder always has the file's, or
/// the built-in defaults).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stages {
    pub definitions: Vec<StageRule>,
}

/// A service a subscriber can receive, as the stickiness weights name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Service {
    Data,
    Voice,
    Sms,
    /// The operator's app or web portal (any self-care event).
    Selfcare,
}

impl Service {
    pub const ALL: [Service; 4] = [Service::Data, Service::Voice, Service::Sms, Service::Selfcare];

    /// The name `stickiness.toml` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Data => "data",
            Service::Voice => "voice",
            Service::Sms => "sms",
            Service::Selfcare => "selfcare",
        }
    }

    /// The inverse of [`Service::as_str`].
    pub fn parse(text: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// One product's weight in stickiness: its kind's, and whether it is shared by a family
/// (then the family bonus is added).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProductWeight {
    pub weight: f64,
    pub family_shared: bool,
}

/// The stickiness weights of a rules folder (`stickiness.toml`): how hard a subscriber's
/// holding is to give up. The sum of what they hold (each product's weight, plus the family
/// bonus for a family-shared one), of the services they received within `service_days`,
/// and of the tenure bonus per whole year (up to `tenure_max_years`). Empty (the default):
/// everyone's stickiness is 0 (a rule set built in code; a folder always has the file's, or
/// the built-in defaults).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stickiness {
    pub products: BTreeMap<String, ProductWeight>,
    /// The weight of a product id the file does not list.
    pub unlisted: f64,
    pub family_bonus: f64,
    /// Each service's weight, in [`Service::ALL`] order (those the file leaves out: 0).
    pub services: [f64; 4],
    pub service_days: u32,
    pub tenure_per_year: f64,
    pub tenure_max_years: u32,
}

impl Stickiness {
    /// What a holding of `products` weighs (products and family bonus; not services or
    /// tenure).
    pub fn held(&self, products: &[String]) -> f64 {
        products
            .iter()
            .map(|id| match self.products.get(id) {
                Some(p) if p.family_shared => p.weight + self.family_bonus,
                Some(p) => p.weight,
                None => self.unlisted,
            })
            .sum()
    }

    /// The tenure bonus after `years` whole years.
    pub fn tenure(&self, years: u32) -> f64 {
        f64::from(years.min(self.tenure_max_years)) * self.tenure_per_year
    }
}

/// One factor of the churn-risk score (`churn.toml`): while its `when` (CEL over
/// `customer.*`, `subscriber.*`, `household.*`) holds, its weight is added to the log-odds of
/// leaving; `reason` is how `churn_reasons` names it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChurnFactor {
    pub name: String,
    pub when: String,
    pub weight: f64,
    pub reason: String,
}

/// The churn-risk score of a rules folder (`churn.toml`), a logistic model over factors
/// that hold or not: `risk = 1 / (1 + e^-(intercept + Σ weight of each factor that holds))`.
/// The reasons are the factors that hold with a positive weight, the largest first (at most
/// [`ChurnModel::REASONS`]). A `churn_risk` moment happens when the risk rises to
/// `threshold` or above. No factors (the default): no score is kept.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChurnModel {
    /// Where the weights came from (the fit's command and data), as the file says.
    pub fitted: String,
    pub intercept: f64,
    pub threshold: f64,
    /// At most [`ChurnModel::MAX_FACTORS`], in file order.
    pub factors: Vec<ChurnFactor>,
}

impl ChurnModel {
    /// The most reasons a score gives (the discipline of credit-score reason codes).
    pub const REASONS: usize = 4;
    /// The most factors a model has (which hold is kept as one bit each).
    pub const MAX_FACTORS: usize = 64;

    /// The risk when the factors whose bits are set in `holding` hold.
    pub fn risk(&self, holding: u64) -> f64 {
        let logit = self.intercept
            + self
                .factors
                .iter()
                .enumerate()
                .filter(|(i, _)| holding & (1 << i) != 0)
                .map(|(_, f)| f.weight)
                .sum::<f64>();
        1.0 / (1.0 + (-logit).exp())
    }

    /// The names of the factors that hold, in file order (those that lower the risk too).
    pub fn holding(&self, holding: u64) -> Vec<&str> {
        self.factors
            .iter()
            .enumerate()
            .filter(|(i, _)| holding & (1 << i) != 0)
            .map(|(_, f)| f.name.as_str())
            .collect()
    }

    /// The reasons for a score: the factors that hold with a positive weight, the largest
    /// first (then in file order), at most [`ChurnModel::REASONS`].
    pub fn reasons(&self, holding: u64) -> Vec<&str> {
        let mut held: Vec<(usize, &ChurnFactor)> = self
            .factors
            .iter()
            .enumerate()
            .filter(|(i, f)| holding & (1 << i) != 0 && f.weight > 0.0)
            .collect();
        held.sort_by(|(i, a), (j, b)| b.weight.total_cmp(&a.weight).then(i.cmp(j)));
        held.into_iter()
            .take(Self::REASONS)
            .map(|(_, f)| f.reason.as_str())
            .collect()
    }
}

/// The rules in force, in id order, the contact policy over them, the lifecycle stages
/// they can target and the stickiness weights.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub policy: Policy,
    #[serde(default)]
    pub stages: Stages,
    #[serde(default)]
    pub stickiness: Stickiness,
    #[serde(default)]
    pub churn: ChurnModel,
}

impl RuleSet {
    /// The rules that act on a moment.
    pub fn for_moment(&self, moment: MomentKind) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(move |r| r.moment == moment)
    }
}
