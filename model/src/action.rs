//! What the engine decides: an [`Action`] (contract §2) wrapped in a [`Decision`] that says
//! whether it was sent or why it was suppressed.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::event::Msisdn;
use crate::rule::ActionClass;
use crate::time::{format_rfc3339, Millis};

/// A delivery channel, one output topic each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Sms,
    Email,
    Push,
}

impl Channel {
    /// All channels.
    pub const ALL: [Channel; 3] = [Channel::Sms, Channel::Email, Channel::Push];

    /// The contract's name for the channel.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Email => "email",
            Channel::Push => "push",
        }
    }
}

/// An offer action to send (contract §2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub action_id: String,
    pub rule: String,
    pub rule_version: String,
    /// The moment's name: a built-in one (`roaming_arrival`) or one a rule declares.
    pub moment: String,
    pub msisdn: Msisdn,
    pub household: Option<String>,
    pub offer: String,
    pub channel: Channel,
    pub moment_ts: Millis,
    pub send_at: Millis,
    pub language: String,
    pub message: String,
}

/// The contract's JSON shape of an action, field order as in contract §2.
#[derive(Serialize)]
struct ActionJson<'a> {
    action_id: &'a str,
    rule: &'a str,
    rule_version: &'a str,
    moment: &'a str,
    msisdn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    household: Option<&'a str>,
    offer: &'a str,
    channel: &'a str,
    moment_ts: String,
    send_at: String,
    language: &'a str,
    message: &'a str,
}

impl Action {
    /// A deterministic id: the same rule, subscriber and moment give the same id in every
    /// run (contract §2), whatever the rule's version, so a downstream sender can drop
    /// duplicates. `moment_key` distinguishes moments of one rule at one instant (the
    /// country for roaming).
    ///
    /// ```
    /// use kairos_model::{action::Action, Msisdn};
    /// let m = Msisdn::parse("351910000001").unwrap();
    /// let a = Action::id_for("roaming-welcome", m, 1_000, "US");
    /// assert!(a.starts_with("rw-"));
    /// assert_eq!(a, Action::id_for("roaming-welcome", m, 1_000, "US"));
    /// assert_ne!(a, Action::id_for("roaming-welcome", m, 1_000, "ES"));
    /// ```
    pub fn id_for(rule: &str, msisdn: Msisdn, moment_ts: Millis, moment_key: &str) -> String {
        let mut hasher = Sha256::new();
        for part in [
            rule.as_bytes(),
            &msisdn.as_u64().to_be_bytes(),
            &moment_ts.to_be_bytes(),
            moment_key.as_bytes(),
        ] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        let digest = hasher.finalize();
        let mut id: String = rule.split('-').filter_map(|w| w.chars().next()).collect();
        id.push('-');
        for byte in &digest[..12] {
            id.push_str(&format!("{byte:02x}"));
        }
        id
    }

    /// The action as one line of JSON (no trailing newline), in the contract's shape.
    pub fn to_json(&self) -> String {
        let json = ActionJson {
            action_id: &self.action_id,
            rule: &self.rule,
            rule_version: &self.rule_version,
            moment: &self.moment,
            msisdn: self.msisdn.to_string(),
            household: self.household.as_deref(),
            offer: &self.offer,
            channel: self.channel.as_str(),
            moment_ts: format_rfc3339(self.moment_ts),
            send_at: format_rfc3339(self.send_at),
            language: &self.language,
            message: &self.message,
        };
        serde_json::to_string(&json).unwrap_or_default()
    }

    /// The order of `actions.jsonl`: (`moment_ts`, `msisdn`, `rule`), then the id so the
    /// order is total.
    pub fn sort_key(&self) -> (Millis, Msisdn, &str, &str) {
        (self.moment_ts, self.msisdn, &self.rule, &self.action_id)
    }
}

/// Why a moment did not become a sent action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SuppressReason {
    /// The subscriber has not consented to the rule's channel.
    NoConsent,
    /// The rule already fired for this subscriber (and dedupe key) within its cooldown.
    Cooldown,
    /// The customer opted out of the channel (a `response` with `opted_out`), and no newer
    /// customer record gave consent again.
    OptedOut,
    /// A frequency cap is full (the decision's `detail` names it).
    Cap,
    /// Inside quiet hours, and the rule discards rather than defers.
    QuietHours,
    /// Another rule won arbitration (the decision's `detail` names it).
    Arbitration,
    /// The subscriber is in the global control group: recorded, not sent.
    GlobalHoldout,
    /// The subscriber is in the rule's control group: recorded, not sent.
    RuleHoldout,
    /// The rule was removed (a live rule change) while the action waited for quiet hours.
    RuleRemoved,
    /// The subscriber was erased (`"deleted": true`) while the action waited for quiet
    /// hours: the decision says so without naming them ([`Decision::is_erased`]).
    Erased,
    /// The customer's record in force says `"status": "terminated"` (contract §5.1): no
    /// action on any channel.
    Terminated,
}

impl SuppressReason {
    /// The name used in decisions, summaries and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            SuppressReason::NoConsent => "no_consent",
            SuppressReason::Cooldown => "cooldown",
            SuppressReason::OptedOut => "opted_out",
            SuppressReason::Cap => "cap",
            SuppressReason::QuietHours => "quiet_hours",
            SuppressReason::Arbitration => "arbitration",
            SuppressReason::GlobalHoldout => "global_holdout",
            SuppressReason::RuleHoldout => "rule_holdout",
            SuppressReason::RuleRemoved => "rule_removed",
            SuppressReason::Erased => "erased",
            SuppressReason::Terminated => "terminated",
        }
    }
}

/// Sent, or suppressed with the reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    Sent,
    Suppressed(SuppressReason),
}

/// Every decision the engine takes on a moment (the `kairos.decisions` audit stream).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The action as it was, or would have been, sent.
    pub action: Action,
    pub verdict: Verdict,
    /// The moment's dedupe key (the country for roaming), for the audit trail.
    pub moment_key: String,
    /// The rule's class, which decided the policy applied.
    pub class: ActionClass,
    /// Which cap suppressed it, or which rule won arbitration over it.
    pub detail: Option<String>,
}

#[derive(Serialize)]
struct DecisionJson<'a> {
    action_id: &'a str,
    rule: &'a str,
    rule_version: &'a str,
    moment: &'a str,
    msisdn: String,
    moment_ts: String,
    moment_key: &'a str,
    channel: &'a str,
    decision: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    class: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    send_at: Option<String>,
}

impl Decision {
    /// A decision about an erased subscriber: written without their number (`"msisdn": ""`)
    /// and produced without a record key.
    pub fn is_erased(&self) -> bool {
        self.verdict == Verdict::Suppressed(SuppressReason::Erased)
    }

    /// The decision as one line of JSON (no trailing newline).
    pub fn to_json(&self) -> String {
        let a = &self.action;
        let (decision, reason) = match self.verdict {
            Verdict::Sent => ("sent", None),
            Verdict::Suppressed(why) => ("suppressed", Some(why.as_str())),
        };
        let json = DecisionJson {
            action_id: &a.action_id,
            rule: &a.rule,
            rule_version: &a.rule_version,
            moment: &a.moment,
            msisdn: if self.is_erased() {
                String::new()
            } else {
                a.msisdn.to_string()
            },
            moment_ts: format_rfc3339(a.moment_ts),
            moment_key: if self.is_erased() { "" } else { &self.moment_key },
            channel: a.channel.as_str(),
            decision,
            reason,
            detail: self.detail.as_deref(),
            class: self.class.as_str(),
            send_at: (self.verdict == Verdict::Sent).then(|| format_rfc3339(a.send_at)),
        };
        serde_json::to_string(&json).unwrap_or_default()
    }
}
