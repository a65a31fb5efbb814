//! Contact policy applied to each moment: a reachable channel (consent, and an address for
//! e-mail), then the rule's cooldown per dedupe key. (Caps, quiet hours, arbitration and
//! control groups come with the contact-policy issue.)

use kairos_model::event::{Consent, CustomerRecord};
use kairos_model::{Channel, Millis, Rule, SuppressReason};
use serde::{Deserialize, Serialize};

/// Whether the customer consented to marketing on `channel`. A missing `consent` object or
/// channel means no consent (contract §1).
pub fn has_consent(consent: &Consent, channel: Channel) -> bool {
    match channel {
        Channel::Sms => consent.sms,
        Channel::Email => consent.email,
        Channel::Push => consent.push,
    }
}

/// Whether the customer can be contacted on `channel`: consent, and for e-mail an address.
pub fn reachable(customer: &CustomerRecord, channel: Channel) -> bool {
    has_consent(&customer.consent, channel) && (channel != Channel::Email || customer.email.is_some())
}

/// The rule's channel if the customer is reachable there, else its fallback channel.
pub fn choose_channel(customer: &CustomerRecord, rule: &Rule) -> Result<Channel, SuppressReason> {
    std::iter::once(rule.channel)
        .chain(rule.fallback_channel)
        .find(|channel| reachable(customer, *channel))
        .ok_or(SuppressReason::NoConsent)
}

/// When a rule last acted on one subscriber, per dedupe key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactHistory {
    /// (rule id, dedupe key, moment time of the last sent action).
    sent: Vec<(String, String, Millis)>,
}

impl ContactHistory {
    /// The moment time of the last action this rule sent for this key.
    pub fn last_sent(&self, rule: &str, key: &str) -> Option<Millis> {
        self.sent
            .iter()
            .find(|(r, k, _)| r == rule && k == key)
            .map(|(_, _, t)| *t)
    }

    /// Records a sent action; only the latest per rule and key is kept. Nothing is
    /// forgotten by age: a late event may still need an old entry (it is applied after
    /// newer ones), and the entries are bounded by the distinct keys of a subscriber.
    pub fn record(&mut self, rule: &str, key: &str, at: Millis) {
        match self.sent.iter_mut().find(|(r, k, _)| r == rule && k == key) {
            Some(entry) => entry.2 = at,
            None => self.sent.push((rule.to_string(), key.to_string(), at)),
        }
    }
}

/// Decides whether a moment at `at` may become an action, and on which channel: the first
/// reachable of the rule's channel and fallback, then the cooldown. A cooldown runs from the
/// last *sent* action of the rule and key, so a suppressed moment does not extend it;
/// exactly `cooldown` later is allowed again.
///
/// ```
/// # use std::collections::BTreeMap;
/// use kairos_dataflows::policy::{admit, ContactHistory};
/// use kairos_model::{event::{Consent, CustomerRecord}, Channel, CountryCode, MomentKind, Rule, SuppressReason};
/// let mut customer = CustomerRecord { account_id: "A".into(), address_id: None,
///     home_country: CountryCode::parse("PT").unwrap(), timezone: kairos_model::TimeZone::parse("Europe/Lisbon").unwrap(), language: None,
///     email: None, tenure_start: None, prepaid: None, plan: None, device: None, contract_end: None,
///     consent: Consent { sms: true, email: true, push: false } };
/// let rule = Rule { id: "r".into(), version: "v".into(), moment: MomentKind::HandsetAgeing, declared: None,
///     priority: 0, offer: "O".into(),
///     channel: Channel::Email, fallback_channel: Some(Channel::Sms), threshold: None, condition: None, cooldown: 100,
///     messages: BTreeMap::new() };
/// let mut history = ContactHistory::default();
/// // No e-mail address: the fallback channel.
/// assert_eq!(admit(&customer, &history, &rule, "k", 1000), Ok(Channel::Sms));
/// customer.email = Some("a@example.com".into());
/// assert_eq!(admit(&customer, &history, &rule, "k", 1000), Ok(Channel::Email));
/// history.record("r", "k", 1000);
/// assert_eq!(admit(&customer, &history, &rule, "k", 1099), Err(SuppressReason::Cooldown));
/// assert_eq!(admit(&customer, &history, &rule, "k", 1100), Ok(Channel::Email));
/// customer.consent = Consent::default();
/// assert_eq!(admit(&customer, &history, &rule, "other", 1100), Err(SuppressReason::NoConsent));
/// ```
pub fn admit(
    customer: &CustomerRecord,
    history: &ContactHistory,
    rule: &Rule,
    key: &str,
    at: Millis,
) -> Result<Channel, SuppressReason> {
    let channel = choose_channel(customer, rule)?;
    if let Some(last) = history.last_sent(&rule.id, key) {
        if at < last.saturating_add(rule.cooldown) {
            return Err(SuppressReason::Cooldown);
        }
    }
    Ok(channel)
}
