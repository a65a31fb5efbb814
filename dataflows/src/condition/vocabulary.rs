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
use kairos_model::{CountryCode, Millis, MomentKind, Msisdn, RuleSet, Service};

use crate::calendar::{local_date, local_midnight};
use crate::features::UsageTotals;
use crate::households::HouseholdView;
use crate::lifecycle::{self, Activity};
use crate::moments;
use crate::state::SubscriberState;
use ChangedBy::{Events, EventsAndTime, Household, Moment};
use EventKind::{Customer, Network, Response, Selfcare, Topup, Usage};

/// Every kind of event (what can make an event the subscriber's first).
const ANY_EVENT: &[EventKind] = &[Customer, Network, Usage, Selfcare, Topup, Response];
/// The events that are the subscriber's own activity.
const ACTIVITY: &[EventKind] = &[Network, Usage, Selfcare, Topup];

/// The type of a vocabulary field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    Bool,
    Int,
    Double,
    String,
    /// A list of strings (`"tv" in customer.products`).
    StringList,
}

impl FieldType {
    /// CEL's name of the type.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Bool => "bool",
            FieldType::Int => "int",
            FieldType::Double => "double",
            FieldType::String => "string",
            FieldType::StringList => "list(string)",
        }
    }
}

/// When a field's value next changes by the passing of event time alone, with no event:
/// the earliest instant after `source.at` at which it may (a clock may answer early, which
/// only costs an evaluation; never late, which would make a moment late), or `None` when it
/// does not change until an event.
pub type Clock = fn(&FieldSource<'_>) -> Option<Millis>;

/// What can change a field's value between two evaluations. A declared moment is evaluated
/// again only after what can change what it reads ([`super::Reads::triggers`]) and at the
/// instant its clocks name ([`super::Reads::next_change`]), so an entry that names too
/// little makes moments late, and one that names too much only costs time.
#[derive(Clone, Copy, Debug)]
pub enum ChangedBy {
    /// Applying an event of one of these kinds, and nothing else.
    Events(&'static [EventKind]),
    /// These events, and the passing of event time alone (a window slides, a day goes by),
    /// at the instants the clock names: a review timer evaluates what reads it then, so a
    /// moment on silence happens at its instant, without a later event of the subscriber.
    EventsAndTime(&'static [EventKind], Clock),
    /// The household graph's view of the subscriber's household; every declared moment is
    /// evaluated when it changes.
    Household,
    /// The subscriber's lifecycle stage or churn score, as the stage definitions and churn
    /// factors last decided them; every declared moment is evaluated when they change (a
    /// stage's definition cannot read the stage, nor a churn factor the score).
    Lifecycle,
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
    /// For a lifecycle change, the stage left.
    pub previous_stage: Option<kairos_model::Stage>,
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
    /// The rules in force: their stickiness weights and churn model.
    pub rules: &'a RuleSet,
    today: OnceCell<NaiveDate>,
    /// Usage over 7, 14, 28 and 90 days.
    windows: [OnceCell<UsageTotals>; 4],
    /// Top-ups over 30 and 90 days.
    topups: [OnceCell<(u64, f64)>; 2],
}

/// The usage windows' lengths, in days, as `FieldSource::windows` holds them.
const WINDOWS: [u32; 4] = [7, 14, 28, 90];
/// The top-up windows' lengths, in days.
const TOPUP_WINDOWS: [u32; 2] = [30, 90];
/// The recent part of a usage trend, in days; the rest of the 90 days is the baseline.
pub const TREND_RECENT_DAYS: u32 = 14;

impl<'a> FieldSource<'a> {
    /// The source of a subscriber's values at event time `at`, for the moment being judged
    /// (if any).
    pub fn new(
        msisdn: Msisdn,
        state: &'a SubscriberState,
        record: &'a CustomerRecord,
        at: Millis,
        moment: Option<MomentFields<'a>>,
        rules: &'a RuleSet,
    ) -> FieldSource<'a> {
        FieldSource {
            msisdn,
            state,
            record,
            tz: record.timezone.tz(),
            at,
            household: state.household.view.as_ref(),
            moment,
            rules,
            today: OnceCell::new(),
            windows: Default::default(),
            topups: Default::default(),
        }
    }

    /// The customer's local date at `at`.
    fn today(&self) -> NaiveDate {
        *self.today.get_or_init(|| local_date(self.at, self.tz))
    }

    /// The usage over `WINDOWS[window]` days up to `at`.
    fn usage(&self, window: usize) -> &UsageTotals {
        self.windows[window].get_or_init(|| self.state.activity.usage_over(self.at, WINDOWS[window]))
    }

    fn week(&self) -> &UsageTotals {
        self.usage(0)
    }

    fn fortnight(&self) -> &UsageTotals {
        self.usage(1)
    }

    fn month(&self) -> &UsageTotals {
        self.usage(2)
    }

    fn quarter(&self) -> &UsageTotals {
        self.usage(3)
    }

    /// The top-ups of `TOPUP_WINDOWS[window]` days up to `at`: (count, amount).
    fn topups(&self, window: usize) -> (u64, f64) {
        *self.topups[window].get_or_init(|| self.state.activity.topups_over(self.at, TOPUP_WINDOWS[window]))
    }

    /// When the usage over `days` days next changes by time alone.
    fn usage_clock(&self, days: u32) -> Option<Millis> {
        self.state.activity.usage_changes_at(self.at, days)
    }

    /// When the top-ups of `days` days next change by time alone.
    fn topups_clock(&self, days: u32) -> Option<Millis> {
        self.state.activity.topups_change_at(self.at, days)
    }

    /// The next local midnight after `at`: when day counts of local dates grow.
    fn next_local_midnight(&self) -> Option<Millis> {
        Some(local_midnight(self.today().succ_opt()?, self.tz))
    }

    /// Whole days since the last activity of `kind` at or before `at` (-1 when none), and
    /// when that number grows.
    fn days_since(&self, last: Option<Millis>) -> (i64, Option<Millis>) {
        match last {
            None => (-1, None),
            Some(t) => {
                let (days, grows) = lifecycle::days_since(t, self.at);
                (i64::try_from(days).unwrap_or(i64::MAX), Some(grows))
            }
        }
    }

    /// When kairos first heard of the subscriber, if that is not after `at`.
    fn first_seen(&self) -> Option<Millis> {
        let first = self.state.lifecycle.first_seen;
        (first > 0 && first <= self.at).then_some(first)
    }

    /// Since when the subscriber is in their stage, if one is decided and not after `at`.
    fn stage_since(&self) -> Option<Millis> {
        let lifecycle = &self.state.lifecycle;
        (lifecycle.stage.is_some() && lifecycle.stage_since <= self.at).then_some(lifecycle.stage_since)
    }

    fn last(&self, kind: Activity) -> Option<Millis> {
        self.state.lifecycle.last(kind, self.at)
    }

    /// The last use of `service` at or before `at`.
    fn last_use(&self, service: Service) -> Option<Millis> {
        match service {
            Service::Data => self.last(Activity::Data),
            Service::Voice => self.last(Activity::Voice),
            Service::Sms => self.last(Activity::Sms),
            Service::Selfcare => self.last_visit().map(|(t, _)| *t),
        }
    }

    /// Whole 365-day years since `tenure_start` (`None` when unknown or in the future).
    fn tenure_years(&self) -> Option<u32> {
        let days = days_between(self.record.tenure_start?, self.today());
        u32::try_from(days / 365).ok()
    }

    /// `subscriber.stickiness` (see `rules/stickiness.toml`): what the record lists, the
    /// services used within the window, the tenure bonus.
    pub fn stickiness(&self) -> f64 {
        let w = &self.rules.stickiness;
        let window = u64::from(w.service_days) * DAY;
        let services: f64 = Service::ALL
            .into_iter()
            .filter(|service| self.last_use(*service).is_some_and(|t| self.at - t < window))
            .map(|service| w.services[service as usize])
            .sum();
        w.held(&self.record.products) + services + self.tenure_years().map_or(0.0, |y| w.tenure(y))
    }

    /// The churn risk of the factors that held when the subscriber was last scored (0 before,
    /// and without a model).
    pub fn churn_risk(&self) -> f64 {
        self.state.lifecycle.risk(&self.rules.churn).unwrap_or(0.0)
    }

    /// The reasons for [`Self::churn_risk`].
    pub fn churn_reasons(&self) -> Vec<&str> {
        let model = &self.rules.churn;
        self.state
            .lifecycle
            .churn
            .map_or_else(Vec::new, |holding| model.reasons(holding))
    }

    /// When [`Self::stickiness`] next changes by time alone: a service leaving the window,
    /// or a year of tenure completing (while years still count).
    fn stickiness_clock(&self) -> Option<Millis> {
        let w = &self.rules.stickiness;
        let window = u64::from(w.service_days) * DAY;
        let expiry = Service::ALL
            .into_iter()
            .filter(|service| w.services[*service as usize] > 0.0)
            .filter_map(|service| self.last_use(service))
            .map(|t| t + window)
            .filter(|end| *end > self.at)
            .min();
        let year = match (self.record.tenure_start, self.tenure_years()) {
            (Some(start), Some(years)) if years < w.tenure_max_years && w.tenure_per_year > 0.0 => start
                .checked_add_days(chrono::Days::new(365 * (u64::from(years) + 1)))
                .map(|date| local_midnight(date, self.tz)),
            _ => None,
        };
        expiry.into_iter().chain(year).min()
    }

    /// The usage of the last [`TREND_RECENT_DAYS`] days per day, over the subscriber's own
    /// daily average in the rest of the 90 days (counted from the UTC day kairos first heard
    /// of them, so a newer subscriber's baseline is their own shorter history): 1.0 steady,
    /// 0.5 halved, 0.0 stopped; -1.0 with fewer than 14 days of baseline or none used in it.
    fn trend(&self, pick: fn(&UsageTotals) -> u64) -> f64 {
        let recent = pick(self.fortnight());
        let baseline = pick(self.quarter()).saturating_sub(recent);
        let first = self.state.lifecycle.first_seen;
        let today = self.at / DAY;
        let baseline_end = today.saturating_sub(u64::from(TREND_RECENT_DAYS));
        let baseline_days = if first == 0 || first / DAY > baseline_end {
            0
        } else {
            (baseline_end - first / DAY + 1).min(u64::from(90 - TREND_RECENT_DAYS))
        };
        if baseline_days < u64::from(TREND_RECENT_DAYS) || baseline == 0 {
            return -1.0;
        }
        let per_day = |total: u64, days: u64| total as f64 / days as f64;
        per_day(recent, u64::from(TREND_RECENT_DAYS)) / per_day(baseline, baseline_days)
    }

    /// A trend moves every UTC day while there is usage in the 90 days (the windows slide,
    /// the baseline's days grow); without any, it stays -1.0.
    fn trend_clock(&self) -> Option<Millis> {
        self.usage_clock(90).map(|_| (self.at / DAY + 1) * DAY)
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

fn strings(items: &[String]) -> Value {
    Value::List(Arc::new(items.iter().map(|s| string(s)).collect()))
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

/// The billing cycle's fields change by time at its start (a late event's moment sees the
/// cycle ahead of it) and at its end.
fn cycle_clock(s: &FieldSource<'_>) -> Option<Millis> {
    let cycle = s.state.data_cycle?;
    [cycle.start, cycle.end].into_iter().find(|t| *t > s.at)
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
        changed_by: EventsAndTime(&[Customer], |s| s.record.tenure_start.and(s.next_local_midnight())),
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
        changed_by: EventsAndTime(&[Customer], |s| {
            let acquired = s.record.device.as_ref().and_then(|d| d.acquired);
            acquired.and(s.next_local_midnight())
        }),
        value: |s| {
            let acquired = s.record.device.as_ref().and_then(|d| d.acquired);
            Value::Int(acquired.map_or(-1, |d| days_between(d, s.today())))
        },
    },
    Field {
        path: "customer.contract.days_left",
        ty: FieldType::Int,
        meaning: "days until contract_end (negative when past); 0 when none",
        changed_by: EventsAndTime(&[Customer], |s| s.record.contract_end.and(s.next_local_midnight())),
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
        path: "customer.status",
        ty: FieldType::String,
        meaning: "active, suspended or terminated (contract §5.1; no action is ever sent to a terminated customer)",
        changed_by: Events(&[Customer]),
        value: |s| string(s.record.status.as_str()),
    },
    Field {
        path: "customer.status_reason",
        ty: FieldType::String,
        meaning: "why, as the record says (e.g. port_out), \"\" when it does not",
        changed_by: Events(&[Customer]),
        value: |s| string(s.record.status_reason.as_deref().unwrap_or("")),
    },
    Field {
        path: "customer.products",
        ty: FieldType::StringList,
        meaning: "the product ids the customer holds (e.g. 'tv' in customer.products)",
        changed_by: Events(&[Customer]),
        value: |s| strings(&s.record.products),
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
        changed_by: EventsAndTime(&[Customer, Usage], cycle_clock),
        value: |s| string(&s.state.cycle_used_at(s.at).0.map(format_rfc3339).unwrap_or_default()),
    },
    Field {
        path: "subscriber.cycle.used_bytes",
        ty: FieldType::Int,
        meaning: "data used in the billing cycle in progress",
        changed_by: EventsAndTime(&[Customer, Usage], cycle_clock),
        value: |s| int(s.state.cycle_used_at(s.at).1),
    },
    Field {
        path: "subscriber.cycle.ratio",
        ty: FieldType::Double,
        meaning: "used_bytes / plan.data_pack_bytes; 0.0 without a pack",
        changed_by: EventsAndTime(&[Customer, Usage], cycle_clock),
        value: |s| {
            let used = s.state.cycle_used_at(s.at).1;
            Value::Float(moments::pack_ratio(s.record, used).unwrap_or(0.0))
        },
    },
    Field {
        path: "subscriber.usage_7d.data_bytes",
        ty: FieldType::Int,
        meaning: "data used in the 7 days up to the moment (UTC days)",
        changed_by: EventsAndTime(&[Usage], |s| s.usage_clock(7)),
        value: |s| int(s.week().data_bytes),
    },
    Field {
        path: "subscriber.usage_7d.voice_seconds",
        ty: FieldType::Int,
        meaning: "voice seconds in the 7 days up to the moment",
        changed_by: EventsAndTime(&[Usage], |s| s.usage_clock(7)),
        value: |s| int(s.week().voice_seconds),
    },
    Field {
        path: "subscriber.usage_7d.sms",
        ty: FieldType::Int,
        meaning: "SMS sent in the 7 days up to the moment",
        changed_by: EventsAndTime(&[Usage], |s| s.usage_clock(7)),
        value: |s| int(s.week().sms),
    },
    Field {
        path: "subscriber.usage_28d.data_bytes",
        ty: FieldType::Int,
        meaning: "data used in the 28 days up to the moment",
        changed_by: EventsAndTime(&[Usage], |s| s.usage_clock(28)),
        value: |s| int(s.month().data_bytes),
    },
    Field {
        path: "subscriber.usage_28d.voice_seconds",
        ty: FieldType::Int,
        meaning: "voice seconds in the 28 days up to the moment",
        changed_by: EventsAndTime(&[Usage], |s| s.usage_clock(28)),
        value: |s| int(s.month().voice_seconds),
    },
    Field {
        path: "subscriber.usage_28d.sms",
        ty: FieldType::Int,
        meaning: "SMS sent in the 28 days up to the moment",
        changed_by: EventsAndTime(&[Usage], |s| s.usage_clock(28)),
        value: |s| int(s.month().sms),
    },
    Field {
        path: "subscriber.topups_30d.count",
        ty: FieldType::Int,
        meaning: "top-ups in the 30 days up to the moment",
        changed_by: EventsAndTime(&[Topup], |s| s.topups_clock(30)),
        value: |s| int(s.topups(0).0),
    },
    Field {
        path: "subscriber.topups_30d.amount",
        ty: FieldType::Double,
        meaning: "amount topped up in the 30 days up to the moment",
        changed_by: EventsAndTime(&[Topup], |s| s.topups_clock(30)),
        value: |s| Value::Float(s.topups(0).1),
    },
    Field {
        path: "subscriber.selfcare.days_since",
        ty: FieldType::Int,
        meaning: "whole days since the last self-care visit; -1 when none",
        changed_by: EventsAndTime(&[Selfcare], |s| s.days_since(s.last_visit().map(|(t, _)| *t)).1),
        value: |s| Value::Int(s.days_since(s.last_visit().map(|(t, _)| *t)).0),
    },
    Field {
        path: "subscriber.selfcare.last_page",
        ty: FieldType::String,
        meaning: "page of the last self-care visit, \"\" when none",
        changed_by: Events(&[Selfcare]),
        value: |s| string(s.last_visit().map_or("", |(_, page)| page.as_str())),
    },
    Field {
        path: "subscriber.usage_14d.data_bytes",
        ty: FieldType::Int,
        meaning: "data used in the 14 days up to the moment",
        changed_by: EventsAndTime(&[Usage], |s| s.usage_clock(14)),
        value: |s| int(s.fortnight().data_bytes),
    },
    Field {
        path: "subscriber.usage_14d.voice_seconds",
        ty: FieldType::Int,
        meaning: "voice seconds in the 14 days up to the moment",
        changed_by: EventsAndTime(&[Usage], |s| s.usage_clock(14)),
        value: |s| int(s.fortnight().voice_seconds),
    },
    Field {
        path: "subscriber.usage_14d.sms",
        ty: FieldType::Int,
        meaning: "SMS sent in the 14 days up to the moment",
        changed_by: EventsAndTime(&[Usage], |s| s.usage_clock(14)),
        value: |s| int(s.fortnight().sms),
    },
    Field {
        path: "subscriber.usage_90d.data_bytes",
        ty: FieldType::Int,
        meaning: "data used in the 90 days up to the moment",
        changed_by: EventsAndTime(&[Usage], |s| s.usage_clock(90)),
        value: |s| int(s.quarter().data_bytes),
    },
    Field {
        path: "subscriber.usage_90d.voice_seconds",
        ty: FieldType::Int,
        meaning: "voice seconds in the 90 days up to the moment",
        changed_by: EventsAndTime(&[Usage], |s| s.usage_clock(90)),
        value: |s| int(s.quarter().voice_seconds),
    },
    Field {
        path: "subscriber.usage_90d.sms",
        ty: FieldType::Int,
        meaning: "SMS sent in the 90 days up to the moment",
        changed_by: EventsAndTime(&[Usage], |s| s.usage_clock(90)),
        value: |s| int(s.quarter().sms),
    },
    Field {
        path: "subscriber.trend.data",
        ty: FieldType::Double,
        meaning: "data per day in the last 14 days over the subscriber's own daily average in the 76 days before (from when first heard of): 1.0 steady, 0.0 stopped; -1.0 with under 14 days of baseline or none in it",
        changed_by: EventsAndTime(&[Usage], |s| s.trend_clock()),
        value: |s| Value::Float(s.trend(|t| t.data_bytes)),
    },
    Field {
        path: "subscriber.trend.voice",
        ty: FieldType::Double,
        meaning: "voice seconds per day in the last 14 days over the subscriber's own daily average in the 76 days before (from when first heard of): 1.0 steady, 0.0 stopped; -1.0 with under 14 days of baseline or none in it",
        changed_by: EventsAndTime(&[Usage], |s| s.trend_clock()),
        value: |s| Value::Float(s.trend(|t| t.voice_seconds)),
    },
    Field {
        path: "subscriber.trend.sms",
        ty: FieldType::Double,
        meaning: "SMS per day in the last 14 days over the subscriber's own daily average in the 76 days before (from when first heard of): 1.0 steady, 0.0 stopped; -1.0 with under 14 days of baseline or none in it",
        changed_by: EventsAndTime(&[Usage], |s| s.trend_clock()),
        value: |s| Value::Float(s.trend(|t| t.sms)),
    },
    Field {
        path: "subscriber.topups_90d.count",
        ty: FieldType::Int,
        meaning: "top-ups in the 90 days up to the moment",
        changed_by: EventsAndTime(&[Topup], |s| s.topups_clock(90)),
        value: |s| int(s.topups(1).0),
    },
    Field {
        path: "subscriber.topups_90d.amount",
        ty: FieldType::Double,
        meaning: "amount topped up in the 90 days up to the moment",
        changed_by: EventsAndTime(&[Topup], |s| s.topups_clock(90)),
        value: |s| Value::Float(s.topups(1).1),
    },
    Field {
        path: "subscriber.days_since.data",
        ty: FieldType::Int,
        meaning: "whole days since the last data usage record; -1 when none",
        changed_by: EventsAndTime(&[Usage], |s| s.days_since(s.last(Activity::Data)).1),
        value: |s| Value::Int(s.days_since(s.last(Activity::Data)).0),
    },
    Field {
        path: "subscriber.days_since.voice",
        ty: FieldType::Int,
        meaning: "whole days since the last voice usage record; -1 when none",
        changed_by: EventsAndTime(&[Usage], |s| s.days_since(s.last(Activity::Voice)).1),
        value: |s| Value::Int(s.days_since(s.last(Activity::Voice)).0),
    },
    Field {
        path: "subscriber.days_since.sms",
        ty: FieldType::Int,
        meaning: "whole days since the last SMS usage record; -1 when none",
        changed_by: EventsAndTime(&[Usage], |s| s.days_since(s.last(Activity::Sms)).1),
        value: |s| Value::Int(s.days_since(s.last(Activity::Sms)).0),
    },
    Field {
        path: "subscriber.days_since.topup",
        ty: FieldType::Int,
        meaning: "whole days since the last top-up; -1 when none",
        changed_by: EventsAndTime(&[Topup], |s| s.days_since(s.last(Activity::Topup)).1),
        value: |s| Value::Int(s.days_since(s.last(Activity::Topup)).0),
    },
    Field {
        path: "subscriber.days_since.network",
        ty: FieldType::Int,
        meaning: "whole days since the last network event; -1 when none",
        changed_by: EventsAndTime(&[Network], |s| s.days_since(s.last(Activity::Network)).1),
        value: |s| Value::Int(s.days_since(s.last(Activity::Network)).0),
    },
    Field {
        path: "subscriber.days_since.activity",
        ty: FieldType::Int,
        meaning: "whole days since the last usage, network, top-up or self-care event; -1 when none",
        changed_by: EventsAndTime(ACTIVITY, |s| s.days_since(s.state.lifecycle.last_activity(s.at)).1),
        value: |s| Value::Int(s.days_since(s.state.lifecycle.last_activity(s.at)).0),
    },
    Field {
        path: "subscriber.history_days",
        ty: FieldType::Int,
        meaning: "whole days since kairos first heard of the subscriber; -1 when not known",
        changed_by: EventsAndTime(ANY_EVENT, |s| s.days_since(s.first_seen()).1),
        value: |s| Value::Int(s.days_since(s.first_seen()).0),
    },
    Field {
        path: "subscriber.complaints_90d",
        ty: FieldType::Int,
        meaning: "complaints filed (self-care page complaint) in the 90 days up to the moment",
        changed_by: EventsAndTime(&[Selfcare], |s| lifecycle::in_window(&s.state.lifecycle.complaints, s.at, 90).1),
        value: |s| int(lifecycle::in_window(&s.state.lifecycle.complaints, s.at, 90).0),
    },
    Field {
        path: "subscriber.downgrades_90d",
        ty: FieldType::Int,
        meaning: "plan downgrades (a newer customer record with a lower monthly fee) in the 90 days up to the moment",
        changed_by: EventsAndTime(&[Customer], |s| lifecycle::in_window(&s.state.lifecycle.downgrades, s.at, 90).1),
        value: |s| int(lifecycle::in_window(&s.state.lifecycle.downgrades, s.at, 90).0),
    },
    Field {
        path: "subscriber.cancel_visits_30d",
        ty: FieldType::Int,
        meaning: "visits to the self-care cancel page in the 30 days up to the moment",
        changed_by: EventsAndTime(&[Selfcare], |s| lifecycle::in_window(&s.state.lifecycle.cancels, s.at, 30).1),
        value: |s| int(lifecycle::in_window(&s.state.lifecycle.cancels, s.at, 30).0),
    },
    Field {
        path: "subscriber.lifecycle.stage",
        ty: FieldType::String,
        meaning: "the lifecycle stage (`lifecycle.toml`): new, growth, stable, decline, leaving or gone; \"\" before one is decided",
        changed_by: ChangedBy::Lifecycle,
        value: |s| string(s.state.lifecycle.stage.map_or("", |stage| stage.as_str())),
    },
    Field {
        path: "subscriber.lifecycle.days_in_stage",
        ty: FieldType::Int,
        meaning: "whole days since the subscriber entered the stage (-1 before one is decided)",
        changed_by: EventsAndTime(ANY_EVENT, |s| s.days_since(s.stage_since()).1),
        value: |s| Value::Int(s.days_since(s.stage_since()).0),
    },
    Field {
        path: "subscriber.stickiness",
        ty: FieldType::Double,
        meaning: "how hard the holding is to give up (`stickiness.toml`): products by kind, family bonus, services used within the window, tenure",
        changed_by: EventsAndTime(&[Customer, Usage, Selfcare], |s| s.stickiness_clock()),
        value: |s| Value::Float(s.stickiness()),
    },
    Field {
        path: "subscriber.churn_risk",
        ty: FieldType::Double,
        meaning: "the churn risk in [0, 1] (`churn.toml`): the logistic score of the churn factors that hold; 0 before one is scored",
        changed_by: ChangedBy::Lifecycle,
        value: |s| Value::Float(s.churn_risk()),
    },
    Field {
        path: "subscriber.churn_reasons",
        ty: FieldType::StringList,
        meaning: "the reasons for the churn risk (`churn.toml`): up to four, the strongest first",
        changed_by: ChangedBy::Lifecycle,
        value: |s| {
            let reasons = s.churn_reasons();
            Value::List(Arc::new(reasons.into_iter().map(string).collect()))
        },
    },
    Field {
        path: "subscriber.churn_at_risk",
        ty: FieldType::Bool,
        meaning: "the churn risk is at or above `churn.toml`'s threshold (where the `churn_risk` moment happens)",
        changed_by: ChangedBy::Lifecycle,
        value: |s| Value::Bool(s.churn_risk() >= s.rules.churn.threshold),
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
        path: "household.stickiness",
        ty: FieldType::Double,
        meaning: "what the members hold together: the sum of their products' weights and family bonuses (`stickiness.toml`); 0 while unknown",
        changed_by: Household,
        value: |s| Value::Float(s.household.map_or(0.0, |v| f64::from(v.held_milli) / 1000.0)),
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
        path: "household.complaints",
        ty: FieldType::Int,
        meaning: "members who filed a complaint (self-care page complaint) within the window",
        changed_by: Household,
        value: |s| int(s.household.map_or(0, |v| u64::from(v.complaints))),
    },
    Field {
        path: "household.members_left",
        ty: FieldType::Int,
        meaning: "members whose line was terminated (status terminated) within the window",
        changed_by: Household,
        value: |s| int(s.household.map_or(0, |v| u64::from(v.members_left))),
    },
    Field {
        path: "household.most_at_risk",
        ty: FieldType::Bool,
        meaning: "this subscriber is the member most at risk of leaving: the highest churn risk among the members who are customers (then the lowest number)",
        changed_by: Household,
        value: |s| Value::Bool(s.household.is_some_and(|v| v.most_at_risk)),
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
    Field {
        path: "moment.from",
        ty: FieldType::String,
        meaning: "lifecycle_change: the stage left",
        changed_by: Moment,
        value: |s| string(s.moment.and_then(|m| m.previous_stage).map_or("", |stage| stage.as_str())),
    },
    Field {
        path: "moment.to",
        ty: FieldType::String,
        meaning: "lifecycle_change: the stage entered",
        changed_by: Moment,
        value: |s| s.key_of(MomentKind::LifecycleChange),
    },
    Field {
        path: "moment.reason",
        ty: FieldType::String,
        meaning: "churn_risk: the strongest reason for the risk",
        changed_by: Moment,
        value: |s| s.key_of(MomentKind::ChurnRisk),
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
            status: Default::default(),
            status_reason: None,
            products: Vec::new(),
        }
    }

    #[test]
    fn stickiness_adds_products_services_and_tenure_and_changes_when_a_service_leaves_the_window() {
        let at = kairos_model::time::parse_rfc3339("2026-07-01T12:00:00Z").unwrap();
        let msisdn = Msisdn::from_u64(351_910_000_001).unwrap();
        let weight = |weight, family_shared| kairos_model::rule::ProductWeight { weight, family_shared };
        let stickiness = kairos_model::Stickiness {
            products: [
                ("broadband".to_string(), weight(2.0, false)),
                ("family-line".to_string(), weight(1.0, true)),
            ]
            .into_iter()
            .collect(),
            unlisted: 0.5,
            family_bonus: 1.0,
            services: [0.5, 0.5, 0.25, 0.25],
            service_days: 30,
            tenure_per_year: 0.25,
            tenure_max_years: 6,
        };
        let weights = RuleSet {
            stickiness,
            ..Default::default()
        };
        let mut record = record(true);
        record.products = vec!["broadband".into(), "family-line".into(), "an-add-on".into()];
        let mut state = SubscriberState::default();
        state.lifecycle.last[Activity::Data as usize] = at - 10 * DAY;
        state.lifecycle.last[Activity::Voice as usize] = at - 40 * DAY;
        let source = FieldSource::new(msisdn, &state, &record, at, None, &weights);
        // 2 + (1 + 1) + 0.5 held; data (voice is 40 days old); two whole years since 2024-01-01.
        assert_eq!(source.stickiness(), 4.5 + 0.5 + 0.5);
        assert_eq!(
            source.stickiness_clock(),
            Some(at + 20 * DAY),
            "data leaves the window first"
        );
        let later = FieldSource::new(msisdn, &state, &record, at + 20 * DAY, None, &weights);
        assert_eq!(later.stickiness(), 4.5 + 0.5);
        // Then the third year completes, at local midnight of 2026-12-31 (1,095 days).
        let year = local_midnight(chrono::NaiveDate::from_ymd_opt(2026, 12, 31).unwrap(), later.tz);
        assert_eq!(later.stickiness_clock(), Some(year));
        let no_rules = RuleSet::default();
        let empty = FieldSource::new(msisdn, &state, &record, at, None, &no_rules);
        assert_eq!(empty.stickiness(), 0.0, "no weights, no stickiness");
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
            previous_stage: None,
        };
        let mut state = SubscriberState::default();
        let no_rules = RuleSet::default();
        for known in [false, true] {
            let record = record(known);
            if known {
                state.country = CountryCode::parse("ES").ok();
                state.activity.visit(at - 1, "cancel");
            }
            let source = FieldSource::new(msisdn, &state, &record, at, Some(moment), &no_rules);
            for field in VOCABULARY {
                let value = (field.value)(&source);
                let ty = match value {
                    Value::Bool(_) => FieldType::Bool,
                    Value::Int(_) => FieldType::Int,
                    Value::Float(_) => FieldType::Double,
                    Value::String(_) => FieldType::String,
                    Value::List(_) => FieldType::StringList,
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
