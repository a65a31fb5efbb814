//! Contact policy: whether a moment becomes an action, on which channel and when.
//!
//! Every rule's moments pass, in order: a reachable channel (consent, an address for e-mail,
//! no opt-out since), the rule's cooldown per dedupe key, then by class:
//!
//! | | quiet hours | frequency caps | arbitration | control groups |
//! |---|---|---|---|---|
//! | marketing | defer (or as the rule says) | counted and enforced | yes | global and the rule's |
//! | transactional | as the rule says (default ignore) | neither | no | the rule's |
//! | regulatory | ignored | neither | no | none |
//!
//! Decisions are taken when the moment happens, never held back to wait for competitors:
//! arbitration compares a moment with the marketing actions of the last (and, for late
//! events, the next) `window` and with the other moments found at the same instant.

use chrono::{Datelike, Duration, LocalResult, NaiveTime, TimeZone, Timelike};
use chrono_tz::Tz;
use kairos_model::event::{Consent, CustomerRecord, CustomerStatus};
use kairos_model::rule::{ActionClass, CalendarPeriod, CapSpan, Policy, QuietMode};
use kairos_model::{Action, Channel, CountryCode, Millis, Msisdn, Rule, SuppressReason};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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

/// How many sent actions are remembered with their channel, for opt-outs that name them.
pub const REMEMBERED_ACTIONS: usize = 64;

/// How many (rule, dedupe key) cooldown entries a subscriber keeps, at most: the one sent
/// longest ago goes first. Keys are few in practice (a rule's key is a country, a billing
/// cycle, a handset), so this only bounds a rule whose `dedupe_key` never repeats.
pub const COOLDOWNS_KEPT: usize = 256;

/// How many marketing actions are kept for caps and arbitration, at most.
pub const EXPOSURES_KEPT: usize = 256;

/// A marketing action that counts for caps (when sent) and arbitration (sent or held out).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Exposure {
    pub action_id: String,
    pub rule: String,
    pub moment_at: Millis,
    pub send_at: Millis,
    pub channel: Channel,
    /// The rule's arbitration score.
    pub score: f64,
    /// Sent (counts for caps), or held out in a control group (does not).
    pub sent: bool,
}

/// An action admitted for later: quiet hours hold it until `action.send_at`, when consent
/// and opt-out are checked again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deferred {
    pub action: Action,
    pub class: ActionClass,
    pub moment_key: String,
}

/// What a dedupe key that named an erased number becomes.
pub const ERASED_KEY: &str = "erased";

/// When a rule last acted on one subscriber, per dedupe key; which channels they opted out
/// of, and since when; the marketing actions that count for caps and arbitration; and the
/// actions waiting for quiet hours to end.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContactHistory {
    /// (rule id, dedupe key, moment time of the last sent action).
    sent: Vec<(String, String, Millis)>,
    /// The latest sent actions (id, channel), newest last.
    actions: Vec<(String, Channel)>,
    /// Channels opted out of, with the `ts` of the opt-out.
    opted_out: Vec<(Channel, Millis)>,
    /// Marketing actions sent or held out, by send time.
    exposures: Vec<Exposure>,
    /// Actions waiting for their `send_at`.
    pub deferred: Vec<Deferred>,
}

impl ContactHistory {
    /// Forgets the dedupe keys that name an erased number (`names`: the numbers' digits):
    /// the cooldown entries for them go, and an action waiting for quiet hours keeps its
    /// place with the key redacted. Whether anything changed.
    pub fn forget(&mut self, names: &[String]) -> bool {
        let named = |key: &str| names.iter().any(|n| key.contains(n.as_str()));
        let before = self.sent.len();
        self.sent.retain(|(_, key, _)| !named(key));
        let mut changed = self.sent.len() != before;
        for deferred in &mut self.deferred {
            if named(&deferred.moment_key) {
                deferred.moment_key = ERASED_KEY.to_string();
                changed = true;
            }
        }
        changed
    }

    /// The moment time of the last action this rule sent for this key.
    pub fn last_sent(&self, rule: &str, key: &str) -> Option<Millis> {
        self.sent
            .iter()
            .find(|(r, k, _)| r == rule && k == key)
            .map(|(_, _, t)| *t)
    }

    /// Records a sent action; only the latest per rule and key is kept. Nothing is
    /// forgotten by age (a late event may still need an old entry: it is applied after
    /// newer ones), only by number: at most [`COOLDOWNS_KEPT`] keys, the oldest going first.
    pub fn record(&mut self, rule: &str, key: &str, at: Millis) {
        match self.sent.iter_mut().find(|(r, k, _)| r == rule && k == key) {
            Some(entry) => entry.2 = at,
            None => {
                if self.sent.len() >= COOLDOWNS_KEPT {
                    let oldest = (0..self.sent.len()).min_by_key(|i| (self.sent[*i].2, *i));
                    if let Some(oldest) = oldest {
                        self.sent.remove(oldest);
                    }
                }
                self.sent.push((rule.to_string(), key.to_string(), at));
            }
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

    /// Counts a marketing action for caps and arbitration; those older than `horizon`
    /// before it are forgotten (no cap or window reaches them).
    pub fn expose(&mut self, exposure: Exposure, horizon: Millis) {
        let newest = exposure.send_at.max(exposure.moment_at);
        self.exposures
            .retain(|e| e.send_at.max(e.moment_at).saturating_add(horizon) >= newest);
        if self.exposures.len() == EXPOSURES_KEPT {
            self.exposures.remove(0);
        }
        self.exposures.push(exposure);
    }

    /// An action that was not delivered after all no longer counts.
    pub fn unexpose(&mut self, action_id: &str) {
        self.exposures.retain(|e| e.action_id != action_id);
    }

    /// The marketing actions counted for caps and arbitration.
    pub fn exposures(&self) -> &[Exposure] {
        &self.exposures
    }
}

/// Who a moment is for: the customer record, the serving country and the number.
pub struct Subject<'a> {
    pub msisdn: Msisdn,
    pub customer: &'a CustomerRecord,
    /// The serving country of the last network event with one.
    pub country: Option<CountryCode>,
}

impl Subject<'_> {
    /// The subscriber's current local time zone: the visited country's while roaming (its
    /// capital's zone), else the customer's `timezone`.
    pub fn current_tz(&self) -> Tz {
        self.country
            .filter(|c| *c != self.customer.home_country)
            .and_then(|c| kairos_model::country::country(c.as_str()))
            .and_then(|c| c.timezone.parse().ok())
            .unwrap_or_else(|| self.customer.timezone.tz())
    }
}

/// What the policy made of one moment of one rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    /// The channel chosen (the rule's when none is reachable).
    pub channel: Channel,
    /// When the channel may deliver it: the moment's time, or the end of quiet hours.
    pub send_at: Millis,
    /// Admitted, or suppressed with the reason and which cap or rule did it.
    pub verdict: Result<(), (SuppressReason, Option<String>)>,
}

impl Judgement {
    /// Whether the action counts as given to the subscriber for cooldowns and arbitration:
    /// sent, or held out in a control group (which must look exactly like being sent).
    pub fn exposed(&self) -> bool {
        matches!(
            self.verdict,
            Ok(()) | Err((SuppressReason::GlobalHoldout | SuppressReason::RuleHoldout, _))
        )
    }
}

/// Decides whether a moment at `at` may become an action, on which channel and when: the
/// first reachable of the rule's channel and fallback, the cooldown (from the last *sent*
/// or held-out action of the rule and key, so a suppressed moment does not extend it;
/// exactly `cooldown` later is allowed again), then quiet hours, frequency caps,
/// arbitration and control groups as the rule's class says (see the module's table).
///
/// ```
/// # use std::collections::BTreeMap;
/// use kairos_dataflows::policy::{admit, ContactHistory, Subject};
/// use kairos_model::{event::{Consent, CustomerRecord, CustomerStatus}, rule::Policy, Channel, CountryCode, MomentKind, Msisdn, Rule, SuppressReason};
/// let mut customer = CustomerRecord { account_id: "A".into(), address_id: None,
///     home_country: CountryCode::parse("PT").unwrap(), timezone: kairos_model::TimeZone::parse("Europe/Lisbon").unwrap(), language: None,
///     email: None, tenure_start: None, prepaid: None, plan: None, device: None, contract_end: None,
///     consent: Consent { sms: true, email: true, push: false }, status: Default::default(),
///     status_reason: None, products: Vec::new() };
/// let rule = Rule { id: "r".into(), version: "v".into(), moment: MomentKind::HandsetAgeing, declared: None,
///     priority: 0, class: Default::default(), quiet_hours: Default::default(), value: 1.0, holdout: 0.0,
///     offer: "O".into(), channel: Channel::Email, fallback_channel: Some(Channel::Sms), threshold: None,
///     condition: None, cooldown: 100, messages: BTreeMap::new() };
/// let policy = Policy::default();
/// let mut history = ContactHistory::default();
/// let m = Msisdn::parse("351910000001").unwrap();
/// let judge = |customer: &CustomerRecord, history: &ContactHistory, key: &str, at: u64| {
///     let subject = Subject { msisdn: m, customer, country: None };
///     let j = admit(&policy, &subject, history, &rule, key, at);
///     j.verdict.map(|()| j.channel).map_err(|(why, _)| why)
/// };
/// // No e-mail address: the fallback channel.
/// assert_eq!(judge(&customer, &history, "k", 1000), Ok(Channel::Sms));
/// customer.email = Some("a@example.com".into());
/// assert_eq!(judge(&customer, &history, "k", 1000), Ok(Channel::Email));
/// history.record("r", "k", 1000);
/// assert_eq!(judge(&customer, &history, "k", 1099), Err(SuppressReason::Cooldown));
/// assert_eq!(judge(&customer, &history, "k", 1100), Ok(Channel::Email));
/// customer.consent = Consent::default();
/// assert_eq!(judge(&customer, &history, "other", 1100), Err(SuppressReason::NoConsent));
/// customer.status = CustomerStatus::Terminated;
/// assert_eq!(judge(&customer, &history, "other", 1100), Err(SuppressReason::Terminated));
/// ```
pub fn admit(
    policy: &Policy,
    subject: &Subject<'_>,
    history: &ContactHistory,
    rule: &Rule,
    key: &str,
    at: Millis,
) -> Judgement {
    let customer = subject.customer;
    let reachable_now: Vec<Channel> = std::iter::once(rule.channel)
        .chain(rule.fallback_channel)
        .filter(|channel| reachable(customer, *channel))
        .collect();
    let mut judgement = Judgement {
        channel: rule.channel,
        send_at: at,
        verdict: Ok(()),
    };
    let suppress = |mut judgement: Judgement, reason: SuppressReason, detail: Option<String>| {
        judgement.verdict = Err((reason, detail));
        judgement
    };
    // A terminated customer gets nothing, whatever they once consented to (contract §5.1).
    if customer.status == CustomerStatus::Terminated {
        return suppress(judgement, SuppressReason::Terminated, None);
    }
    judgement.channel = match reachable_now.iter().find(|c| !history.opted_out(**c)) {
        Some(channel) => *channel,
        None if reachable_now.is_empty() => return suppress(judgement, SuppressReason::NoConsent, None),
        None => return suppress(judgement, SuppressReason::OptedOut, None),
    };
    if let Some(last) = history.last_sent(&rule.id, key) {
        if at < last.saturating_add(rule.cooldown) {
            return suppress(judgement, SuppressReason::Cooldown, None);
        }
    }
    let quiet_mode = match rule.class {
        ActionClass::Regulatory => QuietMode::Ignore,
        _ => rule.quiet_hours,
    };
    if let Some(quiet) = policy
        .quiet_hours
        .as_ref()
        .filter(|q| q.channels.contains(&judgement.channel))
    {
        if quiet_mode != QuietMode::Ignore {
            if let Some(end) = quiet_end(quiet.start_minute, quiet.end_minute, subject.current_tz(), at) {
                if quiet_mode == QuietMode::Discard {
                    return suppress(judgement, SuppressReason::QuietHours, None);
                }
                judgement.send_at = end;
            }
        }
    }
    if rule.class != ActionClass::Marketing {
        if rule.class == ActionClass::Transactional
            && in_control_group(&policy.holdout, &rule.id, rule.holdout, subject.msisdn, at)
        {
            return suppress(judgement, SuppressReason::RuleHoldout, None);
        }
        return judgement;
    }
    let tz = customer.timezone.tz();
    for cap in &policy.caps {
        if cap.channel.is_some_and(|c| c != judgement.channel) {
            continue;
        }
        let counted = history
            .exposures
            .iter()
            .filter(|e| e.sent && cap.channel.is_none_or(|c| c == e.channel))
            .filter(|e| same_span(cap.span, e.send_at, judgement.send_at, tz))
            .count();
        if counted >= cap.max as usize {
            return suppress(judgement, SuppressReason::Cap, Some(cap.name.clone()));
        }
    }
    if let Some(arbitration) = &policy.arbitration {
        let score = rule.score(arbitration.score);
        if let Some(winner) = history
            .exposures
            .iter()
            .filter(|e| e.moment_at.abs_diff(at) <= arbitration.window && e.score >= score)
            .min_by_key(|e| e.moment_at.abs_diff(at))
        {
            return suppress(judgement, SuppressReason::Arbitration, Some(winner.rule.clone()));
        }
    }
    if in_control_group(&policy.holdout, "", policy.holdout.share, subject.msisdn, at) {
        return suppress(judgement, SuppressReason::GlobalHoldout, None);
    }
    if in_control_group(&policy.holdout, &rule.id, rule.holdout, subject.msisdn, at) {
        return suppress(judgement, SuppressReason::RuleHoldout, None);
    }
    judgement
}

/// How far back caps and arbitration look: what [`ContactHistory::expose`] must keep.
pub fn horizon(policy: &Policy) -> Millis {
    const DAY: Millis = kairos_model::time::DAY;
    let caps = policy.caps.iter().map(|cap| match cap.span {
        CapSpan::Rolling(length) => length,
        CapSpan::Calendar(CalendarPeriod::Day) => 2 * DAY,
        CapSpan::Calendar(CalendarPeriod::Week) => 8 * DAY,
        CapSpan::Calendar(CalendarPeriod::Month) => 32 * DAY,
    });
    caps.chain(policy.arbitration.as_ref().map(|a| a.window))
        .max()
        .unwrap_or(0)
}

/// Whether two sends fall in one cap span: within `length` of each other for a rolling
/// window (so no period of that length holds more than the cap), or in the same local
/// calendar day, week or month.
fn same_span(span: CapSpan, a: Millis, b: Millis, tz: Tz) -> bool {
    match span {
        CapSpan::Rolling(length) => a.abs_diff(b) < length,
        CapSpan::Calendar(period) => calendar_period(period, a, tz) == calendar_period(period, b, tz),
    }
}

/// The local calendar period an instant falls in, as a comparable triple.
fn calendar_period(period: CalendarPeriod, at: Millis, tz: Tz) -> (i32, u32, u32) {
    let date = crate::calendar::local_date(at, tz);
    match period {
        CalendarPeriod::Day => (date.year(), date.month(), date.day()),
        CalendarPeriod::Week => {
            let week = date.iso_week();
            (week.year(), week.week(), 0)
        }
        CalendarPeriod::Month => (date.year(), date.month(), 0),
    }
}

/// When `at` is inside the quiet hours `start..end` (minutes after local midnight; a
/// window with `start > end` spans midnight) in `tz`: the instant they end, the first local
/// `end` after `at` (where a DST change skips it, the first instant after the gap).
/// `None` outside quiet hours.
///
/// ```
/// use kairos_dataflows::policy::quiet_end;
/// use kairos_model::time::{parse_rfc3339 as t, format_rfc3339};
/// let lisbon: chrono_tz::Tz = "Europe/Lisbon".parse().unwrap();
/// // 22:30 in Lisbon (21:30 UTC in summer): quiet until 08:00 local, 07:00 UTC.
/// let end = quiet_end(21 * 60, 8 * 60, lisbon, t("2026-07-01T21:30:00Z").unwrap());
/// assert_eq!(end.map(format_rfc3339).as_deref(), Some("2026-07-02T07:00:00Z"));
/// assert_eq!(quiet_end(21 * 60, 8 * 60, lisbon, t("2026-07-01T12:00:00Z").unwrap()), None);
/// ```
pub fn quiet_end(start: u16, end: u16, tz: Tz, at: Millis) -> Option<Millis> {
    let utc = chrono::DateTime::from_timestamp_millis(i64::try_from(at).ok()?)?;
    let local = utc.with_timezone(&tz);
    let minute = (local.hour() * 60 + local.minute()) as u16;
    let quiet = if start <= end {
        start <= minute && minute < end
    } else {
        minute >= start || minute < end
    };
    if !quiet || start == end {
        return None;
    }
    let mut date = local.date_naive();
    if minute >= end {
        date = date.succ_opt()?;
    }
    let mut wanted = date.and_time(NaiveTime::from_hms_opt(u32::from(end / 60), u32::from(end % 60), 0)?);
    for _ in 0..24 * 4 {
        match tz.from_local_datetime(&wanted) {
            LocalResult::Single(instant) | LocalResult::Ambiguous(instant, _) => {
                return u64::try_from(instant.timestamp_millis()).ok();
            }
            LocalResult::None => wanted += Duration::minutes(15),
        }
    }
    None
}

/// Whether the subscriber is in a control group of `share` for `scope` (the rule's id, or
/// `""` for the global group) at `at`: a stable hash of the salt, the scope, the number and
/// the sticky period `at` falls in, so membership holds for the whole period and is drawn
/// again in the next one.
pub fn in_control_group(
    holdout: &kairos_model::rule::Holdout,
    scope: &str,
    share: f64,
    msisdn: Msisdn,
    at: Millis,
) -> bool {
    if share <= 0.0 {
        return false;
    }
    let period = at.checked_div(holdout.sticky).unwrap_or(0);
    let mut hasher = Sha256::new();
    for part in [
        holdout.salt.as_bytes(),
        scope.as_bytes(),
        &msisdn.as_u64().to_be_bytes(),
        &period.to_be_bytes(),
    ] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let draw = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) >> 11;
    (draw as f64) / ((1u64 << 53) as f64) < share
}

/// The score arbitration gives a rule under the policy (0 without arbitration).
pub fn score_of(policy: &Policy, rule: &Rule) -> f64 {
    policy.arbitration.as_ref().map_or(0.0, |a| rule.score(a.score))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kairos_model::rule::{Arbitration, Cap, Holdout, QuietHours, Score};
    use kairos_model::time::{format_rfc3339, parse_rfc3339, DAY, HOUR};
    use kairos_model::{MomentKind, TimeZone};

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
            status: Default::default(),
            status_reason: None,
            products: Vec::new(),
        }
    }

    fn rule(id: &str, class: ActionClass, priority: i32) -> Rule {
        Rule {
            id: id.into(),
            version: "v".into(),
            moment: MomentKind::RoamingArrival,
            declared: None,
            priority,
            class,
            quiet_hours: class.default_quiet_mode(),
            value: 1.0,
            holdout: 0.0,
            offer: "O".into(),
            channel: Channel::Sms,
            fallback_channel: None,
            threshold: None,
            condition: None,
            cooldown: 0,
            messages: BTreeMap::new(),
        }
    }

    fn t(text: &str) -> Millis {
        parse_rfc3339(text).unwrap()
    }

    fn msisdn() -> Msisdn {
        Msisdn::parse("351910000001").unwrap()
    }

    /// Judges and, like the subscriber operator, records what was sent or held out.
    fn judge(policy: &Policy, history: &mut ContactHistory, rule: &Rule, country: &str, at: Millis) -> Judgement {
        let customer = customer();
        let subject = Subject {
            msisdn: msisdn(),
            customer: &customer,
            country: CountryCode::parse(country).ok(),
        };
        let judgement = admit(policy, &subject, history, rule, "k", at);
        if judgement.exposed() {
            history.record(&rule.id, "k", at);
            if rule.class == ActionClass::Marketing {
                let exposure = Exposure {
                    action_id: format!("{}-{at}", rule.id),
                    rule: rule.id.clone(),
                    moment_at: at,
                    send_at: judgement.send_at,
                    channel: judgement.channel,
                    score: score_of(policy, rule),
                    sent: judgement.verdict.is_ok(),
                };
                history.expose(exposure, horizon(policy));
            }
        }
        judgement
    }

    fn reason(judgement: &Judgement) -> Option<&'static str> {
        judgement.verdict.as_ref().err().map(|(why, _)| why.as_str())
    }

    #[test]
    fn an_opt_out_closes_the_channel_of_the_action_it_answers_until_consent_is_given_again() {
        let policy = Policy::default();
        let mut history = ContactHistory::default();
        history.remember("a-1", Channel::Sms);
        history.opt_out("a-1", 100);
        assert!(history.opted_out(Channel::Sms) && !history.opted_out(Channel::Email));
        let mut with_fallback = rule("r", ActionClass::Marketing, 0);
        with_fallback.fallback_channel = Some(Channel::Email);
        let customer = customer();
        let subject = Subject {
            msisdn: msisdn(),
            customer: &customer,
            country: None,
        };
        let channel = |history: &ContactHistory, rule: &Rule| {
            let j = admit(&policy, &subject, history, rule, "k", 200);
            j.verdict.map(|()| j.channel).map_err(|(why, _)| why)
        };
        // The fallback channel is still open; without one, the moment is suppressed.
        assert_eq!(channel(&history, &with_fallback), Ok(Channel::Email));
        let sms_only = rule("r", ActionClass::Regulatory, 0);
        assert_eq!(channel(&history, &sms_only), Err(SuppressReason::OptedOut));
        // A record older than the opt-out does not undo it; a newer one that consents does.
        history.consent_again(&customer.consent, 50);
        assert!(history.opted_out(Channel::Sms));
        history.consent_again(&customer.consent, 150);
        assert_eq!(channel(&history, &sms_only), Ok(Channel::Sms));
        // An opt-out naming an unknown action closes every channel.
        history.opt_out("not-remembered", 300);
        assert!(Channel::ALL.iter().all(|c| history.opted_out(*c)));
        // No consent at all stays `no_consent`.
        let mut silent = customer.clone();
        silent.consent = Consent::default();
        let subject = Subject {
            msisdn: msisdn(),
            customer: &silent,
            country: None,
        };
        let j = admit(&policy, &subject, &history, &sms_only, "k", 400);
        assert_eq!(j.verdict, Err((SuppressReason::NoConsent, None)));
    }

    fn capped(span: CapSpan, max: u32) -> Policy {
        Policy {
            caps: vec![Cap {
                name: "sms-cap".into(),
                channel: Some(Channel::Sms),
                max,
                span,
            }],
            ..Policy::default()
        }
    }

    #[test]
    fn a_rolling_cap_counts_marketing_sends_across_rules_and_not_other_classes() {
        let policy = capped(CapSpan::Rolling(7 * DAY), 2);
        let mut history = ContactHistory::default();
        let start = t("2026-07-01T10:00:00Z");
        let (a, b, c) = (
            rule("a", ActionClass::Marketing, 0),
            rule("b", ActionClass::Marketing, 0),
            rule("c", ActionClass::Marketing, 0),
        );
        assert_eq!(reason(&judge(&policy, &mut history, &a, "PT", start)), None);
        // Transactional and regulatory neither count nor are stopped.
        for _ in 0..3 {
            let info = rule("info", ActionClass::Transactional, 0);
            assert_eq!(reason(&judge(&policy, &mut history, &info, "PT", start + HOUR)), None);
        }
        // Two moments in the same second: the second one is the third send.
        assert_eq!(reason(&judge(&policy, &mut history, &b, "PT", start + DAY)), None);
        let third = judge(&policy, &mut history, &c, "PT", start + DAY);
        assert_eq!(third.verdict, Err((SuppressReason::Cap, Some("sms-cap".into()))));
        // The first send leaves the window after exactly 7 days.
        assert_eq!(
            reason(&judge(&policy, &mut history, &c, "PT", start + 7 * DAY - 1)),
            Some("cap")
        );
        assert_eq!(reason(&judge(&policy, &mut history, &c, "PT", start + 7 * DAY)), None);
        // A late moment between earlier sends is checked against both sides.
        assert_eq!(
            reason(&judge(&policy, &mut history, &a, "PT", start + 3 * DAY)),
            Some("cap")
        );
    }

    #[test]
    fn a_calendar_cap_counts_per_local_day_of_the_customer() {
        let policy = capped(CapSpan::Calendar(CalendarPeriod::Day), 1);
        let mut history = ContactHistory::default();
        let a = rule("a", ActionClass::Marketing, 0);
        let b = rule("b", ActionClass::Marketing, 0);
        // 22:30 UTC is 23:30 in Lisbon (summer): the next UTC day, 00:30 Lisbon, is a new day.
        assert_eq!(
            reason(&judge(&policy, &mut history, &a, "PT", t("2026-07-01T10:00:00Z"))),
            None
        );
        assert_eq!(
            reason(&judge(&policy, &mut history, &b, "PT", t("2026-07-01T22:30:00Z"))),
            Some("cap")
        );
        assert_eq!(
            reason(&judge(&policy, &mut history, &b, "PT", t("2026-07-01T23:30:00Z"))),
            None
        );
    }

    #[test]
    fn quiet_hours_defer_to_their_end_in_the_current_local_time_across_dst() {
        let policy = Policy {
            quiet_hours: Some(QuietHours {
                start_minute: 21 * 60,
                end_minute: 8 * 60,
                channels: vec![Channel::Sms],
            }),
            ..Policy::default()
        };
        let offer = rule("offer", ActionClass::Marketing, 0);
        let send_at = |country: &str, at: &str| {
            let mut history = ContactHistory::default();
            let j = judge(&policy, &mut history, &offer, country, t(at));
            assert_eq!(j.verdict, Ok(()));
            format_rfc3339(j.send_at)
        };
        // At home in Lisbon at 22:30 local: held until 08:00 local.
        assert_eq!(send_at("PT", "2026-07-01T21:30:00Z"), "2026-07-02T07:00:00Z");
        // The same instant in New York is 17:30: sent at once.
        assert_eq!(send_at("US", "2026-07-01T21:30:00Z"), "2026-07-01T21:30:00Z");
        // 03:00 in Lisbon is 22:00 in New York: quiet there until 08:00 New York time.
        assert_eq!(send_at("US", "2026-07-02T02:00:00Z"), "2026-07-02T12:00:00Z");
        // The night the clocks go back (25 October 2026): 08:00 local is 08:00 UTC again.
        assert_eq!(send_at("PT", "2026-10-24T21:30:00Z"), "2026-10-25T08:00:00Z");
        // The night they go forward (29 March 2026): 08:00 local is 07:00 UTC.
        assert_eq!(send_at("PT", "2026-03-28T22:00:00Z"), "2026-03-29T07:00:00Z");
        // Discard instead of defer; regulatory ignores quiet hours; e-mail is not quiet.
        let mut discard = offer.clone();
        discard.quiet_hours = QuietMode::Discard;
        let mut history = ContactHistory::default();
        let j = judge(&policy, &mut history, &discard, "PT", t("2026-07-01T21:30:00Z"));
        assert_eq!(reason(&j), Some("quiet_hours"));
        let mut regulatory = offer.clone();
        regulatory.class = ActionClass::Regulatory;
        regulatory.quiet_hours = QuietMode::Defer;
        let j = judge(&policy, &mut history, &regulatory, "PT", t("2026-07-01T21:30:00Z"));
        assert_eq!(j.send_at, t("2026-07-01T21:30:00Z"));
        let mut email = offer.clone();
        email.id = "email".into();
        email.channel = Channel::Email;
        let j = judge(&policy, &mut history, &email, "PT", t("2026-07-01T21:30:00Z"));
        assert_eq!(j.send_at, t("2026-07-01T21:30:00Z"));
    }

    #[test]
    fn arbitration_lets_the_best_of_a_window_through_and_names_the_winner() {
        let policy = Policy {
            arbitration: Some(Arbitration {
                window: HOUR,
                score: Score::PriorityTimesValue,
            }),
            ..Policy::default()
        };
        let mut history = ContactHistory::default();
        let at = t("2026-07-01T10:00:00Z");
        let (low, high) = (
            rule("low", ActionClass::Marketing, 1),
            rule("high", ActionClass::Marketing, 5),
        );
        assert_eq!(reason(&judge(&policy, &mut history, &high, "PT", at)), None);
        let lost = judge(&policy, &mut history, &low, "PT", at + 10 * 60_000);
        assert_eq!(lost.verdict, Err((SuppressReason::Arbitration, Some("high".into()))));
        // An equal score also loses (ties go to the one decided first); outside the window wins.
        let mut twin = high.clone();
        twin.id = "twin".into();
        assert_eq!(
            reason(&judge(&policy, &mut history, &twin, "PT", at + HOUR)),
            Some("arbitration")
        );
        assert_eq!(reason(&judge(&policy, &mut history, &low, "PT", at + HOUR + 1)), None);
        // A better offer later in the window still goes: nothing is held back to wait.
        let best = rule("best", ActionClass::Marketing, 9);
        assert_eq!(reason(&judge(&policy, &mut history, &best, "PT", at + HOUR + 2)), None);
        // Not for other classes.
        let info = rule("info", ActionClass::Transactional, 0);
        assert_eq!(reason(&judge(&policy, &mut history, &info, "PT", at + HOUR + 3)), None);
    }

    #[test]
    fn control_groups_are_sticky_for_their_period_and_hold_the_configured_share() {
        let holdout = Holdout {
            share: 0.1,
            sticky: 90 * DAY,
            salt: "s".into(),
        };
        let at = t("2026-07-01T00:00:00Z");
        let period_start = at - at % holdout.sticky;
        let numbers: Vec<Msisdn> = (0..20_000)
            .map(|i| Msisdn::from_u64(351_910_000_000 + i).unwrap())
            .collect();
        let members: Vec<bool> = numbers
            .iter()
            .map(|m| in_control_group(&holdout, "", holdout.share, *m, at))
            .collect();
        let share = members.iter().filter(|m| **m).count() as f64 / numbers.len() as f64;
        assert!((share - 0.1).abs() < 0.01, "share {share}");
        // Sticky through the period; drawn again in the next one; per rule independent.
        for (m, member) in numbers.iter().zip(&members).take(2_000) {
            assert_eq!(in_control_group(&holdout, "", 0.1, *m, period_start), *member);
            assert_eq!(
                in_control_group(&holdout, "", 0.1, *m, period_start + holdout.sticky - 1),
                *member
            );
        }
        let redrawn = numbers
            .iter()
            .zip(&members)
            .filter(|(m, member)| in_control_group(&holdout, "", 0.1, **m, period_start + holdout.sticky) != **member)
            .count();
        assert!(redrawn > 1_000, "{redrawn} changed group in the next period");
        let both = numbers
            .iter()
            .zip(&members)
            .filter(|(m, member)| **member && in_control_group(&holdout, "rule", 0.1, **m, at))
            .count();
        assert!(
            both < 400,
            "{both} in both groups: the rule's draw must not follow the global one"
        );
        // A held-out decision counts for arbitration and the cooldown, not for caps.
        let policy = Policy {
            holdout: Holdout {
                share: 0.5,
                ..holdout.clone()
            },
            ..capped(CapSpan::Rolling(DAY), 1)
        };
        let held = numbers
            .iter()
            .find(|m| in_control_group(&policy.holdout, "", 0.5, **m, at))
            .unwrap();
        let customer = customer();
        let subject = Subject {
            msisdn: *held,
            customer: &customer,
            country: None,
        };
        let j = admit(
            &policy,
            &subject,
            &ContactHistory::default(),
            &rule("a", ActionClass::Marketing, 0),
            "k",
            at,
        );
        assert_eq!(reason(&j), Some("global_holdout"));
        assert!(j.exposed());
        let regulatory = admit(
            &policy,
            &subject,
            &ContactHistory::default(),
            &rule("r", ActionClass::Regulatory, 0),
            "k",
            at,
        );
        assert_eq!(regulatory.verdict, Ok(()));
    }
}
