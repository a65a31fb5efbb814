//! Contact policy applied to each moment: consent, then cooldown per rule and dedupe key.
//! (Caps, quiet hours, arbitration and control groups come with the contact-policy issue.)

use kairos_model::event::{Consent, CustomerRecord};
use kairos_model::{Channel, Millis, SuppressReason};

/// Whether the customer consented to marketing on `channel`. A missing `consent` object or
/// channel means no consent (contract §1).
pub fn has_consent(consent: &Consent, channel: Channel) -> bool {
    match channel {
        Channel::Sms => consent.sms,
        Channel::Email => consent.email,
        Channel::Push => consent.push,
    }
}

/// When a rule last acted on one subscriber, per dedupe key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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

    /// Number of remembered entries.
    pub fn len(&self) -> usize {
        self.sent.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }
}

/// Decides whether a moment at `at` may become an action: `Ok(())` to send, or the first
/// policy that suppresses it. A cooldown runs from the last *sent* action, so a suppressed
/// moment does not extend it; exactly `cooldown` later is allowed again.
///
/// ```
/// use kairos_dataflows::policy::{admit, ContactHistory};
/// use kairos_model::{event::Consent, Channel, SuppressReason};
/// let mut history = ContactHistory::default();
/// let yes = Consent { sms: true, ..Consent::default() };
/// assert_eq!(admit(&yes, &history, "r", "US", Channel::Sms, 100, 1000), Ok(()));
/// history.record("r", "US", 1000);
/// assert_eq!(admit(&yes, &history, "r", "US", Channel::Sms, 100, 1099), Err(SuppressReason::Cooldown));
/// assert_eq!(admit(&yes, &history, "r", "US", Channel::Sms, 100, 1100), Ok(()));
/// assert_eq!(admit(&Consent::default(), &history, "r", "ES", Channel::Sms, 100, 1100), Err(SuppressReason::NoConsent));
/// ```
pub fn admit(
    consent: &Consent,
    history: &ContactHistory,
    rule: &str,
    key: &str,
    channel: Channel,
    cooldown: Millis,
    at: Millis,
) -> Result<(), SuppressReason> {
    if !has_consent(consent, channel) {
        return Err(SuppressReason::NoConsent);
    }
    if let Some(last) = history.last_sent(rule, key) {
        if at < last.saturating_add(cooldown) {
            return Err(SuppressReason::Cooldown);
        }
    }
    Ok(())
}

/// The customer's preferred language, if any.
pub fn language(customer: &CustomerRecord) -> Option<&str> {
    customer.language.as_deref()
}
