//! The vocabulary: every name a CEL expression can read, as one typed table.
//!
//! Each [`Field`] says everything the engine needs to know about a name in one place — its
//! path, its type, what it means (the text `rules/README.md` shows), how its value is taken
//! from a subscriber at an event time, and what can change it. Checking a rule, building the
//! context it is evaluated in, and deciding after which events a declared moment must be
//! evaluated again all read this table; nothing else lists the names, so a new feature is
//! one new entry here (and its row in `rules/README.md`, which a test of the `kairos` crate
//! compares with this table).

use std::cell::OnceCell;
use std::sync::Arc;

use cel::Value;
use chrono::NaiveDate;
use chrono_tz::Tz;
use kairos_model::event::{CustomerRecord, EventKind};
use kairos_model::time::{format_rfc3339, DAY};
use kairos_model::{CountryCode, Millis, MomentKind, Msisdn};

use crate::calendar::local_date;
use crate::features::UsageTotals;
use crate::households::HouseholdView;
use crate::moments;
use crate::state::SubscriberState;
use ChangedBy::{Events, EventsAndTime, Household, Moment};
use EventKind::{Customer, Network, Selfcare, Topup, Usage};

/// The type of a vocabulary field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    Bool,
    Int,
    Double,
    String,
}

impl FieldType {
    /// CEL's name of the type.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Bool => "bool",
            FieldType::Int => "int",
            FieldType::Double => "double",
            FieldType::String => "string",
        }
    }
}

/// What can change a field's value between two evaluations. A declared moment is evaluated
/// again only after what can change what it reads ([`super::Reads::triggers`]), so an entry
/// that names too little makes moments late, and one that names too much only costs time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangedBy {
    /// Applying an event of one of these kinds, and nothing else.
    Events(&'static [EventKind]),
    /// These events, and the passing of event time alone (a window slides, a day goes by):
    /// without a timer for the instant it changes, whatever reads it is evaluated after
    /// every event.
    EventsAndTime(&'static [EventKind]),
    /// The household graph's view of the subscriber's household; every declared moment is
    /// evaluated when it changes.
    Household,
    /// The moment being judged: only conditions read it, and it is new every time.
    Moment,
}

/// One name an expression can read.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    /// The dotted path, as written in an expression (`customer.plan.id`).
    pub path: &'static str,
    pub ty: FieldType,
    /// What it means, for `rules/README.md`.
    pub meaning: &'static str,
    pub changed_by: ChangedBy,
    /// Its value for a subscriber at an event time; always of type `ty`.
    pub value: fn(&FieldSource<'_>) -> Value,
}

/// The moment a condition is judged for: what `moment.*` reads.
#[derive(Clone, Copy, Debug)]
pub struct MomentFields<'a> {
    pub kind: MomentKind,
    /// The moment's name as the rule names it (a declared moment's own name).
    pub name: &'a str,
    pub key: &'a str,
    /// For a roaming arrival, the country before it.
    pub previous_country: Option<CountryCode>,
    /// The rule's data-pack threshold (a share of the pack).
    pub threshold: Option<f64>,
}

/// Everything a field's value is taken from: one subscriber at event time `at`. Values that
/// several fields share (the local date, usage windows) are computed once, when the first
/// of them is read, so a context of three fields costs three fields.
pub struct FieldSource<'a> {
    pub msisdn: Msisdn,
    pub state: &'a SubscriberState,
    pub record: &'a CustomerRecord,
    /// The customer's time zone (for local calendar days).
    pub tz: Tz,
    pub at: Millis,
    pub household: Option<&'a HouseholdView>,
    /// `None` for a declared moment's `when` and `dedupe_key`, which read the state only.
    pub moment: Option<MomentFields<'a>>,
    today: OnceCell<NaiveDate>,
    week: OnceCell<UsageTotals>,
    month: OnceCell<UsageTotals>,
    topups: OnceCell<(u64, f64)>,
}

impl<'a> FieldSource<'a> {
    /// The source of a subscriber's values at event time `at`, for the moment being judged
    /// (if any).
    pub fn new(
        msisdn: Msisdn,
        state: &'a SubscriberState,
        record: &'a CustomerRecord,
        at: Millis,
        moment: Option<MomentFields<'a>>,
    ) -> FieldSource<'a> {
        FieldSource {
            msisdn,
            state,
            record,
            tz: record.timezone.tz(),
            at,
            household: state.household.view.as_ref(),
            moment,
            today: OnceCell::new(),
            week: OnceCell::new(),
            month: OnceCell::new(),
            topups: OnceCell::new(),
        }
    }

    /// The customer's local date at `at`.
    fn today(&self) -> NaiveDate {
        *self.today.get_or_init(|| local_date(self.at, self.tz))
    }

    fn week(&self) -> &UsageTotals {
        self.week.get_or_init(|| self.state.activity.usage_over(self.at, 7))
    }

    fn month(&self) -> &UsageTotals {
        self.month.get_or_init(|| self.state.activity.usage_over(self.at, 28))
    }

    fn topups(&self) -> (u64, f64) {
        *self.topups.get_or_init(|| self.state.activity.topups_until(self.at))
    }

    /// The last self-care visit at or before `at`.
    fn last_visit(&self) -> Option<&(Millis, String)> {
        self.state
            .activity
            .last_selfcare
            .as_ref()
            .filter(|(t, _)| *t <= self.at)
    }

    /// The moment's key when the moment is of `kind`, else "".
    fn key_of(&self, kind: MomentKind) -> Value {
        string(self.moment.filter(|m| m.kind == kind).map_or("", |m| m.key))
    }
}

pub(super) fn string(text: &str) -> Value {
    Value::String(Arc::new(text.to_string()))
}

fn int(n: u64) -> Value {
    Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

fn country(code: Option<CountryCode>) -> Value {
    string(code.as_ref().map_or("", |c| c.as_str()))
}

fn number(msisdn: Option<Msisdn>) -> Value {
    string(&msisdn.map(|m| m.to_string()).unwrap_or_default())
}

fn days_between(from: NaiveDate, to: NaiveDate) -> i64 {
    (to - from).num_days()
}

/// Everything an expression can read, evaluated at the moment's event time. A field's
/// `value` must give its `ty` (tested), and `changed_by` must name everything that can
/// change it.
pub const VOCABULARY: &[Field] = &[
    Field {
        path: "customer.home_country",
        ty: FieldType::String,
        meaning: "ISO 3166-1 alpha-2 code of the home country",
        changed_by: Events(&[Customer]),
        value: |s| string(s.record.home_country.as_str()),
    },
    Field {
        path: "customer.timezone",
        ty: FieldType::String,
        meaning: "IANA time zone",
        changed_by: Events(&[Customer]),
        value: |s| string(s.record.timezone.name()),
    },
    Field {
        path: "customer.language",
        ty: FieldType::String,
        meaning: "preferred language, \"\" when unknown",
        changed_by: Events(&[Customer]),
        value: |s| string(s.record.language.as_deref().unwrap_or("")),
    },
    Field {
        path: "customer.prepaid",
        ty: FieldType::Bool,
        meaning: "prepaid subscriber (false when unknown)",
        changed_by: Events(&[Customer]),
        value: |s| Value::Bool(s.record.prepaid.unwrap_or(false)),
    },
    Field {
        path: "customer.has_email",
        ty: FieldType::Bool,
        meaning: "an e-mail address is known",
        changed_by: Events(&[Customer]),
        value: |s| Value::Bool(s.record.email.is_some()),
    },
    Field {
        path: "customer.tenure_days",
        ty: FieldType::Int,
        meaning: "days since tenure_start, local calendar; -1 when unknown",
        changed_by: EventsAndTime(&[Customer]),
        value: |s| Value::Int(s.record.tenure_start.map_or(-1, |d| days_between(d, s.today()))),
    },
    Field {
        path: "customer.plan.id",
        ty: FieldType::String,
        meaning: "plan id, \"\" when unknown",
        changed_by: Events(&[Customer]),
        value: |s| string(s.record.plan.as_ref().and_then(|p| p.id.as_deref()).unwrap_or("")),
    },
    Field {
        path: "customer.plan.data_pack_bytes",
        ty: FieldType::Int,
        meaning: "data pack size; 0 when none",
        changed_by: Events(&[Customer]),
        value: |s| int(s.record.plan.as_ref().and_then(|p| p.data_pack_bytes).unwrap_or(0)),
    },
    Field {
        path: "customer.plan.monthly_fee",
        ty: FieldType::Double,
        meaning: "monthly fee; 0.0 when unknown",
        changed_by: Events(&[Customer]),
        value: |s| Value::Float(s.record.plan.as_ref().and_then(|p| p.monthly_fee).unwrap_or(0.0)),
    },
    Field {
        path: "customer.device.model",
        ty: FieldType::String,
        meaning: "handset model, \"\" when unknown",
        changed_by: Events(&[Customer]),
        value: |s| string(s.record.device.as_ref().and_then(|d| d.model.as_deref()).unwrap_or("")),
    },
    Field {
        path: "customer.device.age_days",
        ty: FieldType::Int,
        meaning: "days since device.acquired; -1 when unknown",
        changed_by: EventsAndTime(&[Customer]),
        value: |s| {
            let acquired = s.record.device.as_ref().and_then(|d| d.acquired);
            Value::Int(acquired.map_or(-1, |d| days_between(d, s.today())))
        },
    },
    Field {
        path: "customer.contract.days_left",
        ty: FieldType::Int,
        meaning: "days until contract_end (negative when past); 0 when none",
        changed_by: EventsAndTime(&[Customer]),
        value: |s| Value::Int(s.record.contract_end.map_or(0, |d| days_between(s.today(), d))),
    },
    Field {
        path: "customer.contract.known",
        ty: FieldType::Bool,
        meaning: "a contract_end is known",
        changed_by: Events(&[Customer]),
        value: |s| Value::Bool(s.record.contract_end.is_some()),
    },
    Field {
        path: "customer.consent.sms",
        ty: FieldType::Bool,
        meaning: "marketing consent for SMS",
        changed_by: Events(&[Customer]),
        value: |s| Value::Bool(s.record.consent.sms),
    },
    Field {
        path: "customer.consent.email",
        ty: FieldType::Bool,
        meaning: "marketing consent for e-mail",
        changed_by: Events(&[Customer]),
        value: |s| Value::Bool(s.record.consent.email),
    },
    Field {
        path: "customer.consent.push",
        ty: FieldType::Bool,
        meaning: "marketing consent for push",
        changed_by: Events(&[Customer]),
        value: |s| Value::Bool(s.record.consent.push),
    },
    Field {
        path: "subscriber.country",
        ty: FieldType::String,
        meaning: "current serving country, \"\" when unknown",
        changed_by: Events(&[Network]),
        value: |s| country(s.state.country),
    },
    Field {
        path: "subscriber.previous_country",
        ty: FieldType::String,
        meaning: "serving country of the network event with a country before the last one, \"\" when none",
        changed_by: Events(&[Network]),
        value: |s| country(s.state.previous_country),
    },
    Field {
        path: "subscriber.cycle.start",
        ty: FieldType::String,
        meaning: "start of the billing cycle in progress (RFC 3339 UTC), \"\" when no data was used in it yet",
        changed_by: EventsAndTime(&[Customer, Usage]),
        value: |s| string(&s.state.cycle_used_at(s.at).0.map(format_rfc3339).unwrap_or_default()),
    },
    Field {
        path: "subscriber.cycle.used_bytes",
        ty: FieldType::Int,
        meaning: "data used in the billing cycle in progress",
        changed_by: EventsAndTime(&[Customer, Usage]),
        value: |s| int(s.state.cycle_used_at(s.at).1),
    },
    Field {
        path: "subscriber.cycle.ratio",
        ty: FieldType::Double,
        meaning: "used_bytes / plan.data_pack_bytes; 0.0 without a pack",
        changed_by: EventsAndTime(&[Customer, Usage]),
        value: |s| {
            let used = s.state.cycle_used_at(s.at).1;
            Value::Float(moments::pack_ratio(s.record, used).unwrap_or(0.0))
        },
    },
    Field {
        path: "subscriber.usage_7d.data_bytes",
        ty: FieldType::Int,
        meaning: "data used in the 7 days up to the moment (UTC days)",
        changed_by: EventsAndTime(&[Usage]),
        value: |s| int(s.week().data_bytes),
    },
    Field {
        path: "subscriber.usage_7d.voice_seconds",
        ty: FieldType::Int,
        meaning: "voice seconds in the 7 days up to the moment",
        changed_by: EventsAndTime(&[Usage]),
        value: |s| int(s.week().voice_seconds),
    },
    Field {
        path: "subscriber.usage_7d.sms",
        ty: FieldType::Int,
        meaning: "SMS sent in the 7 days up to the moment",
        changed_by: EventsAndTime(&[Usage]),
        value: |s| int(s.week().sms),
    },
    Field {
        path: "subscriber.usage_28d.data_bytes",
        ty: FieldType::Int,
        meaning: "data used in the 28 days up to the moment",
        changed_by: EventsAndTime(&[Usage]),
        value: |s| int(s.month().data_bytes),
    },
    Field {
        path: "subscriber.usage_28d.voice_seconds",
        ty: FieldType::Int,
        meaning: "voice seconds in the 28 days up to the moment",
        changed_by: EventsAndTime(&[Usage]),
        value: |s| int(s.month().voice_seconds),
    },
    Field {
        path: "subscriber.usage_28d.sms",
        ty: FieldType::Int,
        meaning: "SMS sent in the 28 days up to the moment",
        changed_by: EventsAndTime(&[Usage]),
        value: |s| int(s.month().sms),
    },
    Field {
        path: "subscriber.topups_30d.count",
        ty: FieldType::Int,
        meaning: "top-ups in the 30 days up to the moment",
        changed_by: EventsAndTime(&[Topup]),
        value: |s| int(s.topups().0),
    },
    Field {
        path: "subscriber.topups_30d.amount",
        ty: FieldType::Double,
        meaning: "amount topped up in the 30 days up to the moment",
        changed_by: EventsAndTime(&[Topup]),
        value: |s| Value::Float(s.topups().1),
    },
    Field {
        path: "subscriber.selfcare.days_since",
        ty: FieldType::Int,
        meaning: "whole days since the last self-care visit; -1 when none",
        changed_by: EventsAndTime(&[Selfcare]),
        value: |s| Value::Int(s.last_visit().map_or(-1, |(t, _)| ((s.at - t) / DAY) as i64)),
    },
    Field {
        path: "subscriber.selfcare.last_page",
        ty: FieldType::String,
        meaning: "page of the last self-care visit, \"\" when none",
        changed_by: Events(&[Selfcare]),
        value: |s| string(s.last_visit().map_or("", |(_, page)| page.as_str())),
    },
    Field {
        path: "household.id",
        ty: FieldType::String,
        meaning: "the household's id, \"\" while none is known",
        changed_by: Household,
        value: |s| string(&s.household.map(HouseholdView::id).unwrap_or_default()),
    },
    Field {
        path: "household.size",
        ty: FieldType::Int,
        meaning: "members (1 for a subscriber alone; 0 while unknown)",
        changed_by: Household,
        value: |s| int(s.household.map_or(0, |v| u64::from(v.size))),
    },
    Field {
        path: "household.monthly_value",
        ty: FieldType::Double,
        meaning: "sum of the members' monthly fees",
        changed_by: Household,
        value: |s| Value::Float(s.household.map_or(0.0, |v| v.value_cents as f64 / 100.0)),
    },
    Field {
        path: "household.accounts",
        ty: FieldType::Int,
        meaning: "distinct customer accounts among the members (separate plans)",
        changed_by: Household,
        value: |s| int(s.household.map_or(0, |v| u64::from(v.accounts))),
    },
    Field {
        path: "household.decision_maker",
        ty: FieldType::String,
        meaning: "msisdn of the decision maker (postpaid first, then the highest fee, then the oldest)",
        changed_by: Household,
        value: |s| number(s.household.map(|v| v.decision_maker)),
    },
    Field {
        path: "household.is_decision_maker",
        ty: FieldType::Bool,
        meaning: "this subscriber is the household's decision maker",
        changed_by: Household,
        value: |s| Value::Bool(s.household.is_some_and(|v| v.decision_maker == s.msisdn)),
    },
    Field {
        path: "household.cancel_intents",
        ty: FieldType::Int,
        meaning: "members who visited the self-care cancel page within the window",
        changed_by: Household,
        value: |s| int(s.household.map_or(0, |v| u64::from(v.cancel_intents))),
    },
    Field {
        path: "household.competitor_peer",
        ty: FieldType::String,
        meaning: "an off-net number strongly tied to several members (likely a member on a competitor), \"\" when none",
        changed_by: Household,
        value: |s| number(s.household.and_then(|v| v.competitor_peer)),
    },
    Field {
        path: "household.gave_handset",
        ty: FieldType::Bool,
        meaning: "this subscriber's handset went to another member within the window",
        changed_by: Household,
        value: |s| Value::Bool(s.household.is_some_and(|v| v.gave_handset)),
    },
    Field {
        path: "household.got_handset",
        ty: FieldType::Bool,
        meaning: "this subscriber got a handset from another member within the window",
        changed_by: Household,
        value: |s| Value::Bool(s.household.is_some_and(|v| v.got_handset)),
    },
    Field {
        path: "moment.kind",
        ty: FieldType::String,
        meaning: "roaming_arrival, data_pack_threshold, handset_ageing, or a declared moment's name",
        changed_by: Moment,
        value: |s| string(s.moment.map_or("", |m| m.name)),
    },
    Field {
        path: "moment.key",
        ty: FieldType::String,
        meaning: "the moment's dedupe key: country, cycle start, IMEI, or a declared moment's dedupe_key",
        changed_by: Moment,
        value: |s| string(s.moment.map_or("", |m| m.key)),
    },
    Field {
        path: "moment.country",
        ty: FieldType::String,
        meaning: "roaming_arrival: the country arrived in",
        changed_by: Moment,
        value: |s| s.key_of(MomentKind::RoamingArrival),
    },
    Field {
        path: "moment.previous_country",
        ty: FieldType::String,
        meaning: "roaming_arrival: the country before, \"\" when none",
        changed_by: Moment,
        value: |s| country(s.moment.and_then(|m| m.previous_country)),
    },
    Field {
        path: "moment.percent",
        ty: FieldType::Int,
        meaning: "data_pack_threshold: the rule's threshold in percent",
        changed_by: Moment,
        value: |s| {
            let threshold = s.moment.and_then(|m| m.threshold);
            Value::Int(threshold.map_or(0, |t| (t * 100.0).round() as i64))
        },
    },
    Field {
        path: "moment.imei",
        ty: FieldType::String,
        meaning: "handset_ageing: the handset's IMEI",
        changed_by: Moment,
        value: |s| s.key_of(MomentKind::HandsetAgeing),
    },
];

#[cfg(test)]
mod tests {
    use kairos_model::event::{Consent, Device, Plan};
    use kairos_model::TimeZone;

    use super::*;

    fn record(known: bool) -> CustomerRecord {
        let date = chrono::NaiveDate::from_ymd_opt(2024, 1, 1);
        CustomerRecord {
            account_id: "A".into(),
            address_id: None,
            home_country: CountryCode::parse("PT").unwrap(),
            timezone: TimeZone::parse("Europe/Lisbon").unwrap(),
            language: known.then(|| "pt".into()),
            email: None,
            tenure_start: date.filter(|_| known),
            prepaid: Some(known),
            plan: known.then(|| Plan {
                id: Some("P".into()),
                data_pack_bytes: Some(1 << 30),
                cycle_anchor_day: None,
                monthly_fee: Some(20.0),
            }),
            device: known.then(|| Device {
                imei: Some("1".into()),
                model: Some("M".into()),
                acquired: date,
            }),
            contract_end: date.filter(|_| known),
            consent: Consent::default(),
        }
    }

    #[test]
    fn every_field_gives_a_value_of_its_type() {
        let at = kairos_model::time::parse_rfc3339("2026-07-01T12:00:00Z").unwrap();
        let msisdn = Msisdn::from_u64(351_910_000_001).unwrap();
        let moment = MomentFields {
            kind: MomentKind::RoamingArrival,
            name: "roaming_arrival",
            key: "ES",
            previous_country: None,
            threshold: Some(0.8),
        };
        let mut state = SubscriberState::default();
        for known in [false, true] {
            let record = record(known);
            if known {
                state.country = CountryCode::parse("ES").ok();
                state.activity.visit(at - 1, "cancel");
            }
            let source = FieldSource::new(msisdn, &state, &record, at, Some(moment));
            for field in VOCABULARY {
                let value = (field.value)(&source);
                let ty = match value {
                    Value::Bool(_) => FieldType::Bool,
                    Value::Int(_) => FieldType::Int,
                    Value::Float(_) => FieldType::Double,
                    Value::String(_) => FieldType::String,
                    _ => panic!("{} gives {value:?}", field.path),
                };
                assert_eq!(ty, field.ty, "{}", field.path);
            }
        }
    }

    #[test]
    fn paths_are_unique_and_no_field_is_also_a_map() {
        for (i, field) in VOCABULARY.iter().enumerate() {
            for other in &VOCABULARY[i + 1..] {
                assert_ne!(field.path, other.path);
                assert!(!other.path.starts_with(&format!("{}.", field.path)), "{}", other.path);
                assert!(!field.path.starts_with(&format!("{}.", other.path)), "{}", field.path);
            }
        }
    }
}
