//! Contact policy applied to each moment: a reachable channel (consent, an address for
//! e-mail, and no opt-out since), then the rule's cooldown per dedupe key. (Caps, quiet
//! hours, arbitration and control groups come with the contact-policy issue.)

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

/// How many sent actions are remembered with their channel, for opt-outs that name them.
pub const REMEMBERED_ACTIONS: usize = 64;

/// When a rule last acted on one subscriber, per dedupe key; which channels they opted out
/// of, and since when.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactHistory {
    /// (rule id, dedupe key, moment time of the last sent action).
    sent: Vec<(String, String, Millis)>,
    /// The latest sent actions (id, channel), newest last.
    actions: Vec<(String, Channel)>,
    /// Channels opted out of, with the `ts` of the opt-out.
    opted_out: Vec<(Channel, Millis)>,
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

    /// Remembers on which channel an action went (for an opt-out that names it).
    pub fn remember(&mut self, action_id: &str, channel: Channel) {
        if self.actions.len() == REMEMBERED_ACTIONS {
            self.actions.remove(0);
        }
        self.actions.push((action_id.to_string(), channel));
    }

    /// A `response` with `opted_out` at `ts` for `action_id`: the customer opted out of the
    /// channel that action went on — of every channel when the action is not known (the safe
    /// reading of "stop").
    pub fn opt_out(&mut self, action_id: &str, ts: Millis) {
        let known = self
            .actions
            .iter()
            .rev()
            .find(|(id, _)| id == action_id)
            .map(|(_, c)| *c);
        let channels: Vec<Channel> = match known {
            Some(channel) => vec![channel],
            None => Channel::ALL.to_vec(),
        };
        for channel in channels {
            self.opted_out.retain(|(c, _)| *c != channel);
            self.opted_out.push((channel, ts));
        }
    }

    /// A customer record of `ts` gives consent again on the channels it consents to, for
    /// opt-outs older than it.
    pub fn consent_again(&mut self, consent: &Consent, ts: Millis) {
        self.opted_out
            .retain(|(channel, since)| !(has_consent(consent, *channel) && *since < ts));
    }

    /// Whether the customer opted out of `channel`.
    pub fn opted_out(&self, channel: Channel) -> bool {
        self.opted_out.iter().any(|(c, _)| *c == channel)
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
    let reachable_now: Vec<Channel> = std::iter::once(rule.channel)
        .chain(rule.fallback_channel)
        .filter(|channel| reachable(customer, *channel))
        .collect();
    let channel = match reachable_now.iter().find(|c| !history.opted_out(**c)) {
        Some(channel) => *channel,
        None if reachable_now.is_empty() => return Err(SuppressReason::NoConsent),
        None => return Err(SuppressReason::OptedOut),
    };
    if let Some(last) = history.last_sent(&rule.id, key) {
        if at < last.saturating_add(rule.cooldown) {
            return Err(SuppressReason::Cooldown);
        }
    }
    Ok(channel)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kairos_model::{CountryCode, MomentKind, TimeZone};

    use super::*;

    fn customer() -> CustomerRecord {
        CustomerRecord {
            account_id: "A".into(),
            address_id: None,
            home_country: CountryCode::parse("PT").unwrap(),
            timezone: TimeZone::parse("Europe/Lisbon").unwrap(),
            language: None,
            email: Some("a@example.com".into()),
            tenure_start: None,
            prepaid: None,
            plan: None,
            device: None,
            contract_end: None,
            consent: Consent {
                sms: true,
                email: true,
                push: false,
            },
        }
    }

    fn rule(fallback: Option<Channel>) -> Rule {
        Rule {
            id: "r".into(),
            version: "v".into(),
            moment: MomentKind::RoamingArrival,
            declared: None,
            priority: 0,
            offer: "O".into(),
            channel: Channel::Sms,
            fallback_channel: fallback,
            threshold: None,
            condition: None,
            cooldown: 0,
            messages: BTreeMap::new(),
        }
    }

    #[test]
    fn an_opt_out_closes_the_channel_of_the_action_it_answers_until_consent_is_given_again() {
        let mut history = ContactHistory::default();
        history.remember("a-1", Channel::Sms);
        history.opt_out("a-1", 100);
        assert!(history.opted_out(Channel::Sms) && !history.opted_out(Channel::Email));
        // The fallback channel is still open; without one, the moment is suppressed.
        assert_eq!(
            admit(&customer(), &history, &rule(Some(Channel::Email)), "k", 200),
            Ok(Channel::Email)
        );
        assert_eq!(
            admit(&customer(), &history, &rule(None), "k", 200),
            Err(SuppressReason::OptedOut)
        );
        // A record older than the opt-out does not undo it; a newer one that consents does.
        history.consent_again(&customer().consent, 50);
        assert!(history.opted_out(Channel::Sms));
        history.consent_again(&customer().consent, 150);
        assert_eq!(admit(&customer(), &history, &rule(None), "k", 200), Ok(Channel::Sms));
        // An opt-out naming an unknown action closes every channel.
        history.opt_out("not-remembered", 300);
        assert!(Channel::ALL.iter().all(|c| history.opted_out(*c)));
        // No consent at all stays `no_consent`.
        let mut silent = customer();
        silent.consent = Consent::default();
        assert_eq!(
            admit(&silent, &history, &rule(None), "k", 400),
            Err(SuppressReason::NoConsent)
        );
    }
}
