//! The moments defined in code, found on a subscriber's state after an event or a timer.
//! The predicates themselves (when a moment holds) are `crate::moments`, pure functions of a
//! record and a country or a date; here they meet the state — once-only marks, billing
//! cycles, the rules' thresholds — and become [`Moment`]s for the judges.

use chrono_tz::Tz;
use kairos_model::event::{CustomerRecord, Network};
use kairos_model::time::format_rfc3339;
use kairos_model::{CountryCode, Millis, MomentKind, Msisdn, RuleSet, Stage};

use super::{Timer, TimerKind};
use crate::moments;
use crate::state::SubscriberState;

/// The name under which once-only moments not tied to one rule are remembered.
pub(super) const HANDSET_ONCE: &str = "handset_ageing";

/// A moment detected on one subscriber, before the rules and policy act on it.
pub(super) struct Moment {
    pub(super) kind: MomentKind,
    /// The event time at which the moment happened.
    pub(super) at: Millis,
    /// What makes this moment distinct for dedupe and action ids (country, cycle, IMEI).
    pub(super) key: String,
    /// Set when the moment was found for one rule only (a data-pack threshold).
    pub(super) rule: Option<String>,
    /// For roaming: the country before the arrival.
    pub(super) previous_country: Option<CountryCode>,
    /// For a lifecycle change: the stage left.
    pub(super) previous_stage: Option<Stage>,
    pub(super) variables: Vec<(&'static str, String)>,
}

/// The time zone and billing-cycle anchor day of a customer (day 1 when the plan has none).
pub(super) fn cycle_of(record: &CustomerRecord) -> (Tz, u8) {
    (
        record.timezone.tz(),
        record.plan.as_ref().and_then(|p| p.cycle_anchor_day).unwrap_or(1),
    )
}

pub(super) fn record_imei(record: &CustomerRecord) -> String {
    record.device.as_ref().and_then(|d| d.imei.clone()).unwrap_or_default()
}

/// `handset_ageing`: a moment now if the condition already holds at `now` (moment time
/// `max(starts, record_ts)`), or a timer for the instant it starts to hold. Nothing once the
/// moment has fired for this handset.
pub(super) fn handset_check(
    state: &mut SubscriberState,
    msisdn: Msisdn,
    record_ts: Millis,
    now: Millis,
    found: &mut Vec<Moment>,
) -> Option<Timer> {
    let record = state.record()?;
    let starts = moments::handset_ageing_starts(record, record.timezone.tz())?;
    let imei = record_imei(record);
    if state.has_fired(HANDSET_ONCE, &imei) {
        return None;
    }
    if starts > now {
        return Some(Timer {
            due: starts,
            msisdn,
            kind: TimerKind::HandsetAgeing { imei },
        });
    }
    let model = record
        .device
        .as_ref()
        .and_then(|d| d.model.clone())
        .unwrap_or_else(|| "your phone".into());
    let contract_end = record.contract_end.map(|d| d.to_string()).unwrap_or_default();
    found.push(Moment {
        kind: MomentKind::HandsetAgeing,
        at: starts.max(record_ts),
        key: imei,
        rule: None,
        previous_country: None,
        previous_stage: None,
        variables: vec![("model", model), ("contract_end", contract_end)],
    });
    None
}

/// `data_pack_threshold`: every rule whose threshold the cycle's total has reached and that
/// has not fired in this cycle yet.
pub(super) fn data_pack_check(
    rules: &RuleSet,
    state: &SubscriberState,
    ts: Millis,
    cycle_start: Millis,
    used: u64,
    found: &mut Vec<Moment>,
) {
    let Some(record) = state.record() else { return };
    let Some(ratio) = moments::pack_ratio(record, used) else {
        return;
    };
    let pack = record.plan.as_ref().and_then(|p| p.data_pack_bytes).unwrap_or(0);
    let key = format_rfc3339(cycle_start);
    for rule in rules.for_moment(MomentKind::DataPackThreshold) {
        let threshold = rule.threshold.unwrap_or(1.0);
        if ratio >= threshold && !state.has_fired(&rule.id, &key) {
            found.push(Moment {
                kind: MomentKind::DataPackThreshold,
                at: ts,
                key: key.clone(),
                rule: Some(rule.id.clone()),
                previous_country: None,
                previous_stage: None,
                variables: vec![
                    ("percent", format!("{:.0}", threshold * 100.0)),
                    ("pack_gb", format!("{:.0}", pack as f64 / (1u64 << 30) as f64)),
                ],
            });
        }
    }
}

/// `roaming_arrival`: a network event at `ts` that puts the subscriber in a new foreign
/// country (`previous`: the serving country before it).
pub(super) fn roaming_check(
    record: &CustomerRecord,
    previous: Option<CountryCode>,
    network: &Network,
    ts: Millis,
    found: &mut Vec<Moment>,
) {
    if let Some(country) = moments::roaming_arrival(record, previous, network) {
        found.push(Moment {
            kind: MomentKind::RoamingArrival,
            at: ts,
            key: country.to_string(),
            rule: None,
            previous_country: previous,
            previous_stage: None,
            variables: vec![
                ("country", country.to_string()),
                ("country_name", country.name().into()),
            ],
        });
    }
}
