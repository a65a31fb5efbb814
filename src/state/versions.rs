//! The versions of a stored subscriber value. The byte in front says which:
//!
//! | byte | kairos | value |
//! |---|---|---|
//! | `0x04` | this release | bincode of [`SubscriberState`] |
//! | `0x03` | before plan downgrades and the churn risk in the household graph | bincode of [`V3`]: a lifecycle without `downgrades` ([`LifecycleV3`]), a household part without `risk` and views without the members' complaints, leavers and most at risk ([`HouseholdStateV3`]) |
//! | `0x02` | before `lifecycle` (layout 4) | bincode of [`V2`]: the same fields but the last, and a customer record without status and products ([`RecordV2`]) |
//! | `0x01` | before `recent` (layout 3) | bincode of [`V1`]: those of `V2` but the last |
//!
//! The events waiting at a checkpoint (`m:waiting`) are versioned the same way: `0x02` for
//! this release's [`Event`]s, `0x01` for those written before status and products
//! ([`EventV1`]).
//!
//! bincode is not self-describing, so an added field cannot be defaulted while decoding:
//! the old value is read as its own frozen type and completed. A version-1 value is upgraded
//! when its state is written again (the next checkpoint that changes it); `recent` starts
//! empty, with the last event counted from the checkpoint it is restored from
//! (`SubscriberLogic::restore`). `lifecycle` is seeded from what the older state kept
//! (`Lifecycle::seeded`: the last top-up and self-care visit, the last day of data, voice
//! and SMS, the oldest day kept as `first_seen`), so a customer already silent at the
//! upgrade is still seen as silent; complaints and cancel visits start empty; an older
//! customer record is `active` with no products (what it said, since it could not say more).
//! A version-3 value keeps everything it had; its plan downgrades start empty, and the
//! household views' new parts (the members' complaints and leavers, the member most at
//! risk) and its churn risk in the graph are set again at the restart, when the graph is
//! rebuilt from every state.

use chrono::NaiveDate;
use kairos_dataflows::evidence::HouseholdState;
use kairos_dataflows::features::Activity;
use kairos_dataflows::households::{Evidence, Facts, HouseholdView, LinkKind};
use kairos_dataflows::lifecycle::Lifecycle;
use kairos_dataflows::policy::ContactHistory;
use kairos_dataflows::state::{CustomerState, DataCycle, Recent, SubscriberState};
use kairos_model::event::{
    Consent, Customer, CustomerRecord, CustomerStatus, Device, EventBody, Network, Plan, Response, Selfcare, Topup,
    Usage,
};
use kairos_model::{CountryCode, Event, Millis, Msisdn, Origin, Stage, TimeZone};
use serde::{Deserialize, Serialize};

use super::{decode_body, Limit, StateError};

/// A customer record as kairos stored it before `status`, `status_reason` and `products`
/// (subscriber values 1 and 2, waiting events 1). Frozen.
#[derive(Deserialize, Serialize)]
pub(super) struct RecordV2 {
    account_id: String,
    address_id: Option<String>,
    home_country: CountryCode,
    timezone: TimeZone,
    language: Option<String>,
    email: Option<String>,
    tenure_start: Option<NaiveDate>,
    prepaid: Option<bool>,
    plan: Option<Plan>,
    device: Option<Device>,
    contract_end: Option<NaiveDate>,
    consent: Consent,
}

impl From<RecordV2> for CustomerRecord {
    fn from(r: RecordV2) -> CustomerRecord {
        CustomerRecord {
            account_id: r.account_id,
            address_id: r.address_id,
            home_country: r.home_country,
            timezone: r.timezone,
            language: r.language,
            email: r.email,
            tenure_start: r.tenure_start,
            prepaid: r.prepaid,
            plan: r.plan,
            device: r.device,
            contract_end: r.contract_end,
            consent: r.consent,
            status: CustomerStatus::Active,
            status_reason: None,
            products: Vec::new(),
        }
    }
}

/// [`CustomerState`] holding a [`RecordV2`]. Frozen (variants in the same order).
#[derive(Deserialize, Serialize)]
pub(super) enum CustomerStateV2 {
    Unknown,
    Known { since: Millis, record: Box<RecordV2> },
    Deleted { since: Millis },
}

impl From<CustomerStateV2> for CustomerState {
    fn from(state: CustomerStateV2) -> CustomerState {
        match state {
            CustomerStateV2::Unknown => CustomerState::Unknown,
            CustomerStateV2::Known { since, record } => CustomerState::Known {
                since,
                record: Box::new((*record).into()),
            },
            CustomerStateV2::Deleted { since } => CustomerState::Deleted { since },
        }
    }
}

/// An event as kairos stored it among the waiting events before status and products.
/// Frozen (fields and variants in the same order as [`Event`] and [`EventBody`] had).
#[derive(Deserialize, Serialize)]
pub(super) struct EventV1 {
    ts: Millis,
    msisdn: Msisdn,
    origin: Origin,
    body: BodyV1,
}

#[derive(Deserialize, Serialize)]
pub(super) enum BodyV1 {
    Customer(CustomerV1),
    Network(Network),
    Usage(Usage),
    Selfcare(Selfcare),
    Topup(Topup),
    Response(Response),
}

#[derive(Deserialize, Serialize)]
pub(super) enum CustomerV1 {
    Upsert(Box<RecordV2>),
    Deleted,
}

impl From<EventV1> for Event {
    fn from(e: EventV1) -> Event {
        let body = match e.body {
            BodyV1::Customer(CustomerV1::Upsert(record)) => {
                EventBody::Customer(Customer::Upsert(Box::new((*record).into())))
            }
            BodyV1::Customer(CustomerV1::Deleted) => EventBody::Customer(Customer::Deleted),
            BodyV1::Network(n) => EventBody::Network(n),
            BodyV1::Usage(u) => EventBody::Usage(u),
            BodyV1::Selfcare(s) => EventBody::Selfcare(s),
            BodyV1::Topup(t) => EventBody::Topup(t),
            BodyV1::Response(r) => EventBody::Response(r),
        };
        Event {
            ts: e.ts,
            msisdn: e.msisdn,
            origin: e.origin,
            body,
        }
    }
}

/// The byte in front of the waiting events written by this release.
const WAITING_VERSION: u8 = 2;

/// The bytes stored for the events waiting at a checkpoint.
pub(super) fn encode_waiting(events: &[Event]) -> Vec<u8> {
    let mut bytes = vec![WAITING_VERSION];
    bytes.extend(bincode::serde::encode_to_vec(events, bincode::config::standard()).unwrap_or_default());
    bytes
}

/// Decodes the waiting events of any version this kairos reads.
pub(super) fn decode_waiting(key: impl Fn() -> String, bytes: &[u8]) -> Result<Vec<Event>, StateError> {
    match bytes.split_first() {
        Some((&WAITING_VERSION, rest)) => decode_body(key, rest, Limit::Checkpoint),
        Some((1, rest)) => decode_body::<Vec<EventV1>>(key, rest, Limit::Checkpoint)
            .map(|events| events.into_iter().map(Event::from).collect()),
        Some((version, _)) => Err(StateError::Corrupt {
            key: key(),
            reason: format!("unknown value version {version}"),
        }),
        None => Err(StateError::Corrupt {
            key: key(),
            reason: "empty value".into(),
        }),
    }
}

/// A subscriber's part in the household graph as kairos stored it before `held` and the
/// view's `held_milli` (subscriber values 1 and 2). Frozen.
#[derive(Default, Deserialize, Serialize)]
pub(super) struct HouseholdStateV2 {
    first_seen: Option<Millis>,
    facts: Option<Facts>,
    handset: Option<(String, Millis)>,
    evidence: std::collections::BTreeMap<(Millis, Evidence), isize>,
    view: Option<HouseholdViewV2>,
    pending_views: Vec<(Millis, HouseholdViewV2, isize)>,
}

/// A household view before `held_milli`. Frozen.
#[derive(Deserialize, Serialize)]
pub(super) struct HouseholdViewV2 {
    founder: Msisdn,
    decision_maker: Msisdn,
    size: u32,
    value_cents: u64,
    accounts: u32,
    cancel_intents: u32,
    competitor_peer: Option<Msisdn>,
    gave_handset: bool,
    got_handset: bool,
    links: Vec<(Msisdn, LinkKind)>,
}

impl From<HouseholdViewV2> for HouseholdViewV3 {
    fn from(v: HouseholdViewV2) -> HouseholdViewV3 {
        HouseholdViewV3 {
            founder: v.founder,
            decision_maker: v.decision_maker,
            size: v.size,
            value_cents: v.value_cents,
            accounts: v.accounts,
            // Until the member's next record puts what they hold in the graph.
            held_milli: 0,
            cancel_intents: v.cancel_intents,
            competitor_peer: v.competitor_peer,
            gave_handset: v.gave_handset,
            got_handset: v.got_handset,
            links: v.links,
        }
    }
}

impl From<HouseholdStateV2> for HouseholdStateV3 {
    fn from(h: HouseholdStateV2) -> HouseholdStateV3 {
        HouseholdStateV3 {
            first_seen: h.first_seen,
            facts: h.facts,
            handset: h.handset,
            evidence: h.evidence,
            view: h.view.map(HouseholdViewV3::from),
            pending_views: h
                .pending_views
                .into_iter()
                .map(|(at, view, diff)| (at, view.into(), diff))
                .collect(),
            held: 0,
        }
    }
}

impl From<HouseholdStateV2> for HouseholdState {
    fn from(h: HouseholdStateV2) -> HouseholdState {
        HouseholdStateV3::from(h).into()
    }
}

/// A household view before the members' complaints, leavers and most at risk (subscriber
/// values 3). Frozen.
#[derive(Deserialize, Serialize)]
pub(super) struct HouseholdViewV3 {
    founder: Msisdn,
    decision_maker: Msisdn,
    size: u32,
    value_cents: u64,
    accounts: u32,
    held_milli: u32,
    cancel_intents: u32,
    competitor_peer: Option<Msisdn>,
    gave_handset: bool,
    got_handset: bool,
    links: Vec<(Msisdn, LinkKind)>,
}

impl From<HouseholdViewV3> for HouseholdView {
    fn from(v: HouseholdViewV3) -> HouseholdView {
        HouseholdView {
            founder: v.founder,
            decision_maker: v.decision_maker,
            size: v.size,
            value_cents: v.value_cents,
            accounts: v.accounts,
            held_milli: v.held_milli,
            cancel_intents: v.cancel_intents,
            // Until the graph says again: the restart rebuilds it from every state.
            complaints: 0,
            members_left: 0,
            most_at_risk: false,
            competitor_peer: v.competitor_peer,
            gave_handset: v.gave_handset,
            got_handset: v.got_handset,
            links: v.links,
        }
    }
}

/// A subscriber's part in the household graph before the churn risk was in it (subscriber
/// values 3). Frozen.
#[derive(Default, Deserialize, Serialize)]
pub(super) struct HouseholdStateV3 {
    first_seen: Option<Millis>,
    facts: Option<Facts>,
    handset: Option<(String, Millis)>,
    evidence: std::collections::BTreeMap<(Millis, Evidence), isize>,
    view: Option<HouseholdViewV3>,
    pending_views: Vec<(Millis, HouseholdViewV3, isize)>,
    held: u32,
}

impl From<HouseholdStateV3> for HouseholdState {
    fn from(h: HouseholdStateV3) -> HouseholdState {
        HouseholdState {
            first_seen: h.first_seen,
            facts: h.facts,
            handset: h.handset,
            evidence: h.evidence,
            view: h.view.map(HouseholdView::from),
            pending_views: h
                .pending_views
                .into_iter()
                .map(|(at, view, diff)| (at, view.into(), diff))
                .collect(),
            held: h.held,
            // The restart puts the score in force in the graph (`re_emit`).
            risk: None,
        }
    }
}

/// The lifecycle before plan downgrades were kept (subscriber values 3). Frozen.
#[derive(Default, Deserialize, Serialize)]
pub(super) struct LifecycleV3 {
    first_seen: Millis,
    last: [Millis; 6],
    complaints: Vec<Millis>,
    cancels: Vec<Millis>,
    review_at: Millis,
    stage: Option<Stage>,
    stage_since: Millis,
    churn: Option<u64>,
}

impl From<LifecycleV3> for Lifecycle {
    fn from(l: LifecycleV3) -> Lifecycle {
        Lifecycle {
            first_seen: l.first_seen,
            last: l.last,
            complaints: l.complaints,
            cancels: l.cancels,
            review_at: l.review_at,
            stage: l.stage,
            stage_since: l.stage_since,
            churn: l.churn,
            // Downgrades before the upgrade are not known.
            downgrades: Vec::new(),
        }
    }
}

/// The byte in front of a subscriber value written by this release.
const SUBSCRIBER_VERSION: u8 = 4;

/// A subscriber value of version 1, as kairos wrote it before `recent`. Frozen: never
/// change it; a later change of [`SubscriberState`] gets a new version and its own type.
#[derive(Deserialize, Serialize)]
pub(super) struct V1 {
    customer: CustomerStateV2,
    country: Option<CountryCode>,
    previous_country: Option<CountryCode>,
    data_cycle: Option<DataCycle>,
    unassigned_data: Vec<(Millis, u64)>,
    fired: Vec<(String, String)>,
    contacts: ContactHistory,
    activity: Activity,
    household: HouseholdStateV2,
}

impl From<V1> for V2 {
    fn from(v1: V1) -> V2 {
        V2 {
            customer: v1.customer,
            country: v1.country,
            previous_country: v1.previous_country,
            data_cycle: v1.data_cycle,
            unassigned_data: v1.unassigned_data,
            fired: v1.fired,
            contacts: v1.contacts,
            activity: v1.activity,
            household: v1.household,
            recent: Recent::default(),
        }
    }
}

/// A subscriber value of version 2, as kairos wrote it before `lifecycle`. Frozen, as [`V1`].
#[derive(Deserialize, Serialize)]
pub(super) struct V2 {
    customer: CustomerStateV2,
    country: Option<CountryCode>,
    previous_country: Option<CountryCode>,
    data_cycle: Option<DataCycle>,
    unassigned_data: Vec<(Millis, u64)>,
    fired: Vec<(String, String)>,
    contacts: ContactHistory,
    activity: Activity,
    household: HouseholdStateV2,
    recent: Recent,
}

impl From<V2> for SubscriberState {
    fn from(v2: V2) -> SubscriberState {
        let lifecycle = Lifecycle::seeded(&v2.activity, v2.recent.last_event);
        SubscriberState {
            customer: v2.customer.into(),
            country: v2.country,
            previous_country: v2.previous_country,
            data_cycle: v2.data_cycle,
            unassigned_data: v2.unassigned_data,
            fired: v2.fired,
            contacts: v2.contacts,
            activity: v2.activity,
            household: v2.household.into(),
            recent: v2.recent,
            lifecycle,
        }
    }
}

/// A subscriber value of version 3, as kairos wrote it before plan downgrades, the
/// household's complaints and leavers and the churn risk in the graph. Frozen, as [`V1`].
#[derive(Deserialize, Serialize)]
pub(super) struct V3 {
    customer: CustomerState,
    country: Option<CountryCode>,
    previous_country: Option<CountryCode>,
    data_cycle: Option<DataCycle>,
    unassigned_data: Vec<(Millis, u64)>,
    fired: Vec<(String, String)>,
    contacts: ContactHistory,
    activity: Activity,
    household: HouseholdStateV3,
    recent: Recent,
    lifecycle: LifecycleV3,
}

impl From<V3> for SubscriberState {
    fn from(v3: V3) -> SubscriberState {
        SubscriberState {
            customer: v3.customer,
            country: v3.country,
            previous_country: v3.previous_country,
            data_cycle: v3.data_cycle,
            unassigned_data: v3.unassigned_data,
            fired: v3.fired,
            contacts: v3.contacts,
            activity: v3.activity,
            household: v3.household.into(),
            recent: v3.recent,
            lifecycle: v3.lifecycle.into(),
        }
    }
}

/// The bytes stored for a subscriber's state.
pub(super) fn encode_subscriber(state: &SubscriberState) -> Vec<u8> {
    let mut bytes = vec![SUBSCRIBER_VERSION];
    // Serialising plain data to a Vec cannot fail.
    bytes.extend(bincode::serde::encode_to_vec(state, bincode::config::standard()).unwrap_or_default());
    bytes
}

/// Decodes a stored subscriber value of any version this kairos reads.
pub(super) fn decode_subscriber(key: impl Fn() -> String, bytes: &[u8]) -> Result<SubscriberState, StateError> {
    match bytes.split_first() {
        Some((&SUBSCRIBER_VERSION, rest)) => decode_body(key, rest, Limit::Subscriber),
        Some((3, rest)) => decode_body::<V3>(key, rest, Limit::Subscriber).map(SubscriberState::from),
        Some((2, rest)) => decode_body::<V2>(key, rest, Limit::Subscriber).map(SubscriberState::from),
        Some((1, rest)) => {
            decode_body::<V1>(key, rest, Limit::Subscriber).map(|v1| SubscriberState::from(V2::from(v1)))
        }
        Some((version, _)) => Err(StateError::Corrupt {
            key: key(),
            reason: format!("unknown value version {version}"),
        }),
        None => Err(StateError::Corrupt {
            key: key(),
            reason: "empty value".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kairos_dataflows::state::CustomerState;

    #[test]
    fn a_value_of_version_1_reads_as_the_same_state_with_recent_empty() {
        let v1 = V1 {
            customer: CustomerStateV2::Deleted { since: 42 },
            country: Some(CountryCode::parse("ES").unwrap()),
            previous_country: Some(CountryCode::parse("PT").unwrap()),
            data_cycle: None,
            unassigned_data: vec![(7, 1_000)],
            fired: vec![("roaming-welcome".into(), "ES".into())],
            contacts: ContactHistory::default(),
            activity: Activity::default(),
            household: HouseholdStateV2::default(),
        };
        let mut bytes = vec![1];
        bytes.extend(bincode::serde::encode_to_vec(&v1, bincode::config::standard()).unwrap());
        let state = decode_subscriber(|| "s".into(), &bytes).unwrap();
        assert_eq!(state.customer, CustomerState::Deleted { since: 42 });
        assert_eq!(state.previous_country, Some(CountryCode::parse("PT").unwrap()));
        assert_eq!(state.unassigned_data, vec![(7, 1_000)]);
        assert_eq!(state.fired, vec![("roaming-welcome".to_string(), "ES".to_string())]);
        assert_eq!(state.recent, Recent::default());
        // Written again, it is a value of this release's version, and reads back the same.
        let again = encode_subscriber(&state);
        assert_eq!(again[0], SUBSCRIBER_VERSION);
        assert_eq!(decode_subscriber(|| "s".into(), &again).unwrap(), state);
        // A value of this version is not read as an older one.
        let mut wrong = again.clone();
        wrong[0] = 1;
        assert!(decode_subscriber(|| "s".into(), &wrong).is_err());
    }

    #[test]
    fn a_value_of_version_2_reads_as_the_same_state_with_its_lifecycle_seeded() {
        let day = kairos_model::time::DAY;
        let mut recent = Recent {
            last_event: 20 * day + 5,
            ..Recent::default()
        };
        // Data on days 10 and 20 (the newest, still going at the last event), SMS on day 12,
        // a top-up at day 15 + 7 ms; no voice, no self-care.
        let mut activity = Activity::default();
        activity.add_usage(10 * day + 3, kairos_model::event::UsageKind::Data, 100);
        activity.add_usage(12 * day, kairos_model::event::UsageKind::Sms, 1);
        activity.add_usage(20 * day + 1, kairos_model::event::UsageKind::Data, 100);
        activity.topups.push((15 * day + 7, 10.0));
        recent.remember(50, 7);
        let v2 = V2 {
            customer: CustomerStateV2::Deleted { since: 42 },
            country: Some(CountryCode::parse("ES").unwrap()),
            previous_country: None,
            data_cycle: None,
            unassigned_data: vec![],
            fired: vec![("family-plan".into(), "".into())],
            contacts: ContactHistory::default(),
            activity: activity.clone(),
            household: HouseholdStateV2 {
                view: Some(HouseholdViewV2 {
                    founder: Msisdn::from_u64(351_910_000_001).unwrap(),
                    decision_maker: Msisdn::from_u64(351_910_000_002).unwrap(),
                    size: 2,
                    value_cents: 4_500,
                    accounts: 1,
                    cancel_intents: 1,
                    competitor_peer: None,
                    gave_handset: false,
                    got_handset: true,
                    links: vec![(Msisdn::from_u64(351_910_000_002).unwrap(), LinkKind::Account)],
                }),
                ..Default::default()
            },
            recent: recent.clone(),
        };
        let mut bytes = vec![2];
        bytes.extend(bincode::serde::encode_to_vec(&v2, bincode::config::standard()).unwrap());
        let state = decode_subscriber(|| "s".into(), &bytes).unwrap();
        assert_eq!(state.recent, recent);
        assert_eq!(state.fired, vec![("family-plan".to_string(), String::new())]);
        use kairos_dataflows::lifecycle::Activity as Kind;
        let seeded = &state.lifecycle;
        assert_eq!(seeded.first_seen, 10 * day);
        assert_eq!(
            seeded.last[Kind::Data as usize],
            20 * day + 5,
            "not after the newest event"
        );
        assert_eq!(seeded.last[Kind::Sms as usize], 13 * day - 1, "the end of its day");
        assert_eq!(seeded.last[Kind::Voice as usize], 0);
        assert_eq!(seeded.last[Kind::Topup as usize], 15 * day + 7);
        assert_eq!(seeded.last[Kind::Selfcare as usize], 0);
        assert!(seeded.complaints.is_empty() && seeded.review_at == 0 && seeded.stage.is_none());
        // The household as it was, holding nothing in stickiness until the next record.
        let view = state.household.view.as_ref().unwrap();
        assert_eq!(
            (view.size, view.value_cents, view.cancel_intents, view.held_milli),
            (2, 4_500, 1, 0)
        );
        assert!(view.got_handset && view.links.len() == 1 && state.household.held == 0);
        let again = encode_subscriber(&state);
        assert_eq!(again[0], SUBSCRIBER_VERSION);
        assert_eq!(decode_subscriber(|| "s".into(), &again).unwrap(), state);
        let mut wrong = again.clone();
        wrong[0] = 2;
        assert!(decode_subscriber(|| "s".into(), &wrong).is_err());
    }

    #[test]
    fn a_value_of_version_3_reads_as_the_same_state_without_downgrades_and_risk() {
        let day = kairos_model::time::DAY;
        let member = Msisdn::from_u64(351_910_000_002).unwrap();
        let v3 = V3 {
            customer: CustomerState::Deleted { since: 42 },
            country: None,
            previous_country: None,
            data_cycle: None,
            unassigned_data: vec![],
            fired: vec![("retention-churn".into(), "".into())],
            contacts: ContactHistory::default(),
            activity: Activity::default(),
            household: HouseholdStateV3 {
                view: Some(HouseholdViewV3 {
                    founder: member,
                    decision_maker: member,
                    size: 3,
                    value_cents: 9_000,
                    accounts: 2,
                    held_milli: 2_500,
                    cancel_intents: 1,
                    competitor_peer: None,
                    gave_handset: true,
                    got_handset: false,
                    links: vec![(member, LinkKind::Calls)],
                }),
                held: 1_500,
                ..Default::default()
            },
            recent: Recent {
                last_event: 30 * day,
                ..Recent::default()
            },
            lifecycle: LifecycleV3 {
                first_seen: day,
                last: [2 * day, 3 * day, 0, 0, 4 * day, 5 * day],
                complaints: vec![6 * day],
                cancels: vec![7 * day, 8 * day],
                review_at: 31 * day,
                stage: Some(Stage::Decline),
                stage_since: 20 * day,
                churn: Some(0b101),
            },
        };
        let mut bytes = vec![3];
        bytes.extend(bincode::serde::encode_to_vec(&v3, bincode::config::standard()).unwrap());
        let state = decode_subscriber(|| "s".into(), &bytes).unwrap();
        let life = &state.lifecycle;
        assert_eq!(
            (life.first_seen, life.last[4], life.review_at),
            (day, 4 * day, 31 * day)
        );
        assert_eq!((life.complaints.len(), life.cancels.len()), (1, 2));
        assert_eq!(
            (life.stage, life.stage_since, life.churn),
            (Some(Stage::Decline), 20 * day, Some(0b101))
        );
        assert!(
            life.downgrades.is_empty(),
            "downgrades before the upgrade are not known"
        );
        let household = &state.household;
        assert_eq!((household.held, household.risk), (1_500, None));
        let view = household.view.as_ref().unwrap();
        assert_eq!(
            (
                view.size,
                view.value_cents,
                view.accounts,
                view.held_milli,
                view.cancel_intents
            ),
            (3, 9_000, 2, 2_500, 1)
        );
        assert!(view.gave_handset && !view.most_at_risk && view.complaints == 0 && view.members_left == 0);
        assert_eq!(state.fired, vec![("retention-churn".to_string(), String::new())]);
        let again = encode_subscriber(&state);
        assert_eq!(again[0], SUBSCRIBER_VERSION);
        assert_eq!(decode_subscriber(|| "s".into(), &again).unwrap(), state);
        let mut wrong = again.clone();
        wrong[0] = 3;
        assert!(decode_subscriber(|| "s".into(), &wrong).is_err());
    }

    fn record_v2() -> RecordV2 {
        RecordV2 {
            account_id: "A-1".into(),
            address_id: Some("ADDR".into()),
            home_country: CountryCode::parse("PT").unwrap(),
            timezone: TimeZone::parse("Europe/Lisbon").unwrap(),
            language: Some("pt".into()),
            email: None,
            tenure_start: NaiveDate::from_ymd_opt(2020, 1, 1),
            prepaid: Some(false),
            plan: None,
            device: None,
            contract_end: None,
            consent: Consent {
                sms: true,
                ..Consent::default()
            },
        }
    }

    #[test]
    fn an_older_customer_record_reads_as_active_without_products() {
        let v2 = V2 {
            customer: CustomerStateV2::Known {
                since: 7,
                record: Box::new(record_v2()),
            },
            country: None,
            previous_country: None,
            data_cycle: None,
            unassigned_data: vec![],
            fired: vec![],
            contacts: ContactHistory::default(),
            activity: Activity::default(),
            household: HouseholdStateV2::default(),
            recent: Recent::default(),
        };
        let mut bytes = vec![2];
        bytes.extend(bincode::serde::encode_to_vec(&v2, bincode::config::standard()).unwrap());
        let state = decode_subscriber(|| "s".into(), &bytes).unwrap();
        let record = state.record().unwrap();
        assert_eq!(record.account_id, "A-1");
        assert_eq!(record.language.as_deref(), Some("pt"));
        assert!(record.consent.sms);
        assert_eq!(record.status, CustomerStatus::Active);
        assert!(record.products.is_empty());

        // The waiting events of an older checkpoint, a record among them.
        let old = vec![
            EventV1 {
                ts: 5,
                msisdn: Msisdn::from_u64(351_910_000_001).unwrap(),
                origin: Origin { source: 0, position: 9 },
                body: BodyV1::Customer(CustomerV1::Upsert(Box::new(record_v2()))),
            },
            EventV1 {
                ts: 6,
                msisdn: Msisdn::from_u64(351_910_000_002).unwrap(),
                origin: Origin { source: 1, position: 3 },
                body: BodyV1::Topup(Topup {
                    amount: 5.0,
                    currency: None,
                    payer: None,
                }),
            },
        ];
        let mut bytes = vec![1];
        bytes.extend(bincode::serde::encode_to_vec(&old, bincode::config::standard()).unwrap());
        let events = decode_waiting(|| "m:waiting".into(), &bytes).unwrap();
        assert_eq!(events.len(), 2);
        match &events[0].body {
            EventBody::Customer(Customer::Upsert(record)) => {
                assert_eq!(record.status, CustomerStatus::Active);
                assert_eq!(record.address_id.as_deref(), Some("ADDR"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(events[1].origin.position, 3);
        // This release's waiting events read back as written; not as the older version.
        let again = encode_waiting(&events);
        assert_eq!(decode_waiting(|| "w".into(), &again).unwrap(), events);
        let mut wrong = again.clone();
        wrong[0] = 1;
        assert!(decode_waiting(|| "w".into(), &wrong).is_err());
    }
}
