//! `SubscriberState`: the keyed operator that owns each subscriber's state, applies their
//! events in event-time order, fires timers when event time passes them, detects moments
//! and applies the contact policy.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono_tz::Tz;
use kairos_model::event::{EventBody, UsageKind};
use kairos_model::time::format_rfc3339;
use kairos_model::{
    Action, CountryCode, CustomerRecord, Decision, Event, Millis, MomentKind, Msisdn, Rule, RuleSet, Verdict,
};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use crate::checkpoint::{Durability, StateRecord};
use crate::condition;
use crate::policy::admit;
use crate::state::{CustomerChange, SubscriberState};
use crate::{moments, subscriber_route, DataflowStats};

/// An instant in the future at which something about a subscriber must be re-examined.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timer {
    pub due: Millis,
    pub msisdn: Msisdn,
    pub kind: TimerKind,
}

/// Why a timer was set.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TimerKind {
    /// `handset_ageing` starts to hold for this handset.
    HandsetAgeing { imei: String },
}

/// A moment detected on one subscriber, before the rules and policy act on it.
struct Moment {
    kind: MomentKind,
    /// The event time at which the moment happened.
    at: Millis,
    /// What makes this moment distinct for dedupe and action ids (country, cycle, IMEI).
    key: String,
    /// Set when the moment was found for one rule only (a data-pack threshold).
    rule: Option<String>,
    /// For roaming: the country before the arrival.
    previous_country: Option<CountryCode>,
    variables: Vec<(&'static str, String)>,
}

/// The name under which once-only moments not tied to one rule are remembered.
const HANDSET_ONCE: &str = "handset_ageing";

/// One worker's share of subscribers, and the rules they are judged by.
pub struct SubscriberLogic {
    rules: Arc<RuleSet>,
    /// Each rule's compiled condition, by rule id (compiled per worker).
    conditions: HashMap<String, cel::Program>,
    /// The declared moments' expressions, in rule order.
    declared: Vec<DeclaredProgram>,
    stats: Arc<DataflowStats>,
    states: HashMap<Msisdn, SubscriberState>,
    /// Subscribers changed since the last checkpoint; `None` when nothing checkpoints
    /// (a replay), so no work is spent on it.
    dirty: Option<HashSet<Msisdn>>,
}

impl SubscriberLogic {
    /// Logic for one worker's share of subscribers; with `track_changes`, it remembers which
    /// subscribers changed, for [`SubscriberLogic::take_changes`].
    pub fn new(rules: Arc<RuleSet>, stats: Arc<DataflowStats>, track_changes: bool) -> SubscriberLogic {
        // Conditions were checked when the rules were loaded; one that no longer compiles
        // never holds.
        let conditions = rules
            .rules
            .iter()
            .filter_map(|r| {
                let program = condition::compile(r.condition.as_deref()?).unwrap_or_else(|_| never());
                Some((r.id.clone(), program))
            })
            .collect();
        let declared = rules
            .rules
            .iter()
            .filter_map(|r| {
                let declared = r.declared.as_ref()?;
                Some(DeclaredProgram {
                    rule: r.id.clone(),
                    when: condition::compile(&declared.when).unwrap_or_else(|_| never()),
                    key: declared
                        .dedupe_key
                        .as_deref()
                        .map(|k| condition::compile(k).unwrap_or_else(|_| never())),
                })
            })
            .collect();
        SubscriberLogic {
            rules,
            conditions,
            declared,
            stats,
            states: HashMap::new(),
            dirty: track_changes.then(HashSet::new),
        }
    }

    /// Installs restored states and returns the timers they need (those at or after `from`:
    /// earlier ones had their chance before the checkpoint).
    pub fn restore(&mut self, restored: Vec<(Msisdn, SubscriberState)>, from: Millis) -> Vec<Timer> {
        let mut timers = Vec::new();
        for (msisdn, mut state) in restored {
            let mut found = Vec::new();
            if let Some(timer) = handset_check(&mut state, msisdn, 0, from.saturating_sub(1), &mut found) {
                timers.push(timer);
            }
            self.states.insert(msisdn, state);
        }
        timers
    }

    fn touch(&mut self, msisdn: Msisdn) {
        if let Some(dirty) = self.dirty.as_mut() {
            dirty.insert(msisdn);
        }
    }

    /// The states changed since the last call, for a checkpoint.
    pub fn take_changes(&mut self) -> Vec<(Msisdn, SubscriberState)> {
        let mut changed: Vec<Msisdn> = self.dirty.as_mut().map(|d| d.drain().collect()).unwrap_or_default();
        changed.sort();
        changed
            .into_iter()
            .filter_map(|m| self.states.get(&m).map(|s| (m, s.clone())))
            .collect()
    }

    /// Applies one event at instant `now` (`now ≥ event.ts`; greater for a late event) and
    /// pushes the decisions and timers it causes.
    pub fn apply(&mut self, event: &Event, now: Millis, decisions: &mut Vec<Decision>, timers: &mut Vec<Timer>) {
        self.touch(event.msisdn);
        let state = self.states.entry(event.msisdn).or_default();
        let mut found = Vec::new();
        match &event.body {
            EventBody::Customer(update) => match state.apply_customer(event.ts, update) {
                CustomerChange::Stale => DataflowStats::bump(&self.stats.stale_customer_records),
                CustomerChange::Deleted => {}
                CustomerChange::Upserted => {
                    if !state.unassigned_data.is_empty() {
                        let (tz, anchor) = state.record().map_or((Tz::UTC, 1), cycle_of);
                        state.assign_held_data(tz, anchor);
                    }
                    if let Some(timer) = handset_check(state, event.msisdn, event.ts, now, &mut found) {
                        timers.push(timer);
                    }
                }
            },
            EventBody::Network(network) => {
                let previous = state.country;
                if network.country.is_some() {
                    state.previous_country = state.country;
                    state.country = network.country;
                }
                match state.record() {
                    None => DataflowStats::bump(&self.stats.events_without_customer),
                    Some(record) => {
                        if let Some(country) = moments::roaming_arrival(record, previous, network) {
                            found.push(Moment {
                                kind: MomentKind::RoamingArrival,
                                at: event.ts,
                                key: country.to_string(),
                                rule: None,
                                previous_country: previous,
                                variables: vec![
                                    ("country", country.to_string()),
                                    ("country_name", country.name().into()),
                                ],
                            });
                        }
                    }
                }
            }
            EventBody::Usage(usage) if usage.kind == UsageKind::Data => {
                state.activity.add_usage(event.ts, usage.kind, usage.amount);
                let Some(record) = state.record() else {
                    DataflowStats::bump(&self.stats.events_without_customer);
                    state.hold_data(event.ts, usage.amount);
                    return;
                };
                let (tz, anchor) = cycle_of(record);
                if let Some(cycle) = state.add_data(event.ts, usage.amount, tz, anchor) {
                    data_pack_check(&self.rules, state, event.ts, cycle.start, cycle.used, &mut found);
                }
            }
            EventBody::Usage(_) | EventBody::Selfcare(_) | EventBody::Topup(_) | EventBody::Response(_) => {
                match &event.body {
                    EventBody::Usage(usage) => state.activity.add_usage(event.ts, usage.kind, usage.amount),
                    EventBody::Selfcare(visit) => state.activity.visit(event.ts, &visit.page),
                    EventBody::Topup(topup) => state.activity.topup(event.ts, topup.amount),
                    _ => {}
                }
                if state.record().is_none() {
                    DataflowStats::bump(&self.stats.events_without_customer);
                }
            }
        }
        let judges = Judges {
            rules: &self.rules,
            conditions: &self.conditions,
            declared: &self.declared,
            stats: &self.stats,
        };
        if !self.declared.is_empty() {
            judges.declared(state, event.ts, &mut found);
        }
        judges.decide(state, event.msisdn, found, decisions);
    }

    /// Fires a timer whose instant event time has passed, if it still holds.
    pub fn fire(&mut self, timer: &Timer, decisions: &mut Vec<Decision>) {
        if !self.states.contains_key(&timer.msisdn) {
            return;
        }
        // Firing changes state too (the once-only mark, the contact history).
        self.touch(timer.msisdn);
        let Some(state) = self.states.get_mut(&timer.msisdn) else {
            return;
        };
        let mut found = Vec::new();
        match &timer.kind {
            TimerKind::HandsetAgeing { imei } => {
                // A newer record may have changed the handset or the contract: then this
                // timer is stale, and the newer record set its own.
                let current = state.record().and_then(|record| {
                    let starts = moments::handset_ageing_starts(record, record.timezone.tz())?;
                    Some((starts, record_imei(record)))
                });
                if current == Some((timer.due, imei.clone())) {
                    handset_check(state, timer.msisdn, timer.due, timer.due, &mut found);
                }
            }
        }
        let judges = Judges {
            rules: &self.rules,
            conditions: &self.conditions,
            declared: &self.declared,
            stats: &self.stats,
        };
        judges.decide(state, timer.msisdn, found, decisions);
    }
}

fn never() -> cel::Program {
    condition::compile("false").expect("`false` is CEL")
}

/// The time zone and billing-cycle anchor day of a customer (day 1 when the plan has none).
fn cycle_of(record: &CustomerRecord) -> (Tz, u8) {
    (
        record.timezone.tz(),
        record.plan.as_ref().and_then(|p| p.cycle_anchor_day).unwrap_or(1),
    )
}

fn record_imei(record: &CustomerRecord) -> String {
    record.device.as_ref().and_then(|d| d.imei.clone()).unwrap_or_default()
}

/// `handset_ageing`: a moment now if the condition already holds at `now` (moment time
/// `max(starts, record_ts)`), or a timer for the instant it starts to hold. Nothing once the
/// moment has fired for this handset.
fn handset_check(
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
        variables: vec![("model", model), ("contract_end", contract_end)],
    });
    None
}

/// `data_pack_threshold`: every rule whose threshold the cycle's total has reached and that
/// has not fired in this cycle yet.
fn data_pack_check(
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
                variables: vec![
                    ("percent", format!("{:.0}", threshold * 100.0)),
                    ("pack_gb", format!("{:.0}", pack as f64 / (1u64 << 30) as f64)),
                ],
            });
        }
    }
}

/// What judges moments: the rules, their conditions, and the counters.
struct Judges<'a> {
    rules: &'a RuleSet,
    conditions: &'a HashMap<String, cel::Program>,
    declared: &'a [DeclaredProgram],
    stats: &'a DataflowStats,
}

/// A declared moment's compiled `when` and `dedupe_key`.
struct DeclaredProgram {
    rule: String,
    when: cel::Program,
    key: Option<cel::Program>,
}

impl Judges<'_> {
    /// Turns moments into decisions: once-only moments are marked, every rule of the moment
    /// whose condition holds is judged by the contact policy, and every outcome is recorded.
    fn decide(&self, state: &mut SubscriberState, msisdn: Msisdn, found: Vec<Moment>, decisions: &mut Vec<Decision>) {
        for moment in found {
            DataflowStats::bump(&self.stats.moments);
            // Once per rule and cycle (data pack), once per handset: whatever the policy decides.
            match (&moment.rule, moment.kind) {
                (Some(rule), _) => state.mark_fired(rule, &moment.key, true),
                (None, MomentKind::HandsetAgeing) => state.mark_fired(HANDSET_ONCE, &moment.key, false),
                (None, _) => {}
            }
            let rules = self
                .rules
                .for_moment(moment.kind)
                .filter(|r| moment.rule.as_ref().is_none_or(|id| *id == r.id));
            for rule in rules {
                if !self.condition_holds(rule, state, &moment) {
                    continue;
                }
                if let Some(decision) = judge(rule, state, msisdn, &moment) {
                    decisions.push(decision);
                }
            }
        }
    }

    /// Whether the rule's condition (if any) holds for this moment.
    fn condition_holds(&self, rule: &Rule, state: &SubscriberState, moment: &Moment) -> bool {
        let Some(program) = self.conditions.get(&rule.id) else {
            return true;
        };
        let Some(record) = state.record() else { return false };
        let mut values = state_values(state, record, moment.at);
        let only = |kind: MomentKind| text(if moment.kind == kind { &moment.key } else { "" });
        values.extend([
            ("moment.kind", text(rule.moment_name())),
            ("moment.key", text(&moment.key)),
            ("moment.country", only(MomentKind::RoamingArrival)),
            (
                "moment.previous_country",
                text(moment.previous_country.as_ref().map_or("", |c| c.as_str())),
            ),
            (
                "moment.percent",
                cel::Value::Int(rule.threshold.map_or(0, |t| (t * 100.0).round() as i64)),
            ),
            ("moment.imei", only(MomentKind::HandsetAgeing)),
        ]);
        match condition::holds(program, &condition::context(values)) {
            Ok(holds) => holds,
            Err(_) => {
                DataflowStats::bump(&self.stats.condition_errors);
                false
            }
        }
    }

    /// Declared moments: each whose `when` holds now, for a dedupe key it has not fired for
    /// while holding; those that stopped holding are forgotten, so they can happen again.
    fn declared(&self, state: &mut SubscriberState, at: Millis, found: &mut Vec<Moment>) {
        let Some(record) = state.record() else { return };
        let context = condition::context(state_values(state, record, at));
        let mut outcomes = Vec::with_capacity(self.declared.len());
        for declared in self.declared {
            let outcome = condition::holds(&declared.when, &context).and_then(|holds| match &declared.key {
                _ if !holds => Ok(None),
                None => Ok(Some(String::new())),
                Some(key) => condition::key(key, &context).map(Some),
            });
            outcomes.push(outcome.unwrap_or_else(|_| {
                DataflowStats::bump(&self.stats.condition_errors);
                None
            }));
        }
        for (declared, outcome) in self.declared.iter().zip(outcomes) {
            match outcome {
                None => state.unmark_fired(&declared.rule),
                Some(key) if state.has_fired(&declared.rule, &key) => {}
                Some(key) => found.push(Moment {
                    kind: MomentKind::Declared,
                    at,
                    key: key.clone(),
                    rule: Some(declared.rule.clone()),
                    previous_country: None,
                    variables: vec![("key", key)],
                }),
            }
        }
    }
}

/// The `customer.*` and `subscriber.*` values of a subscriber at event time `at`.
fn state_values(state: &SubscriberState, record: &CustomerRecord, at: Millis) -> condition::Values {
    let mut values = condition::customer_values(record, record.timezone.tz(), at);
    let (cycle_start, cycle) = state.cycle_used_at(at);
    let week = state.activity.usage_over(at, 7);
    let month = state.activity.usage_over(at, 28);
    let (topups, topped_up) = state.activity.topups_until(at);
    let int = |n: u64| cel::Value::Int(i64::try_from(n).unwrap_or(i64::MAX));
    let last_visit = state.activity.last_selfcare.as_ref().filter(|(t, _)| *t <= at);
    let days_since = last_visit.map_or(-1, |(t, _)| ((at - t) / kairos_model::time::DAY) as i64);
    let country = |c: &Option<CountryCode>| text(c.as_ref().map_or("", |c| c.as_str()));
    values.extend([
        ("subscriber.usage_7d.data_bytes", int(week.data_bytes)),
        ("subscriber.usage_7d.voice_seconds", int(week.voice_seconds)),
        ("subscriber.usage_7d.sms", int(week.sms)),
        ("subscriber.usage_28d.data_bytes", int(month.data_bytes)),
        ("subscriber.usage_28d.voice_seconds", int(month.voice_seconds)),
        ("subscriber.usage_28d.sms", int(month.sms)),
        ("subscriber.topups_30d.count", int(topups)),
        ("subscriber.topups_30d.amount", cel::Value::Float(topped_up)),
        ("subscriber.selfcare.days_since", cel::Value::Int(days_since)),
        (
            "subscriber.selfcare.last_page",
            text(last_visit.map_or("", |(_, page)| page.as_str())),
        ),
        ("subscriber.country", country(&state.country)),
        ("subscriber.previous_country", country(&state.previous_country)),
        (
            "subscriber.cycle.start",
            text(&cycle_start.map(format_rfc3339).unwrap_or_default()),
        ),
        ("subscriber.cycle.used_bytes", int(cycle)),
        (
            "subscriber.cycle.ratio",
            cel::Value::Float(moments::pack_ratio(record, cycle).unwrap_or(0.0)),
        ),
    ]);
    values
}

fn text(value: &str) -> cel::Value {
    cel::Value::String(Arc::new(value.to_string()))
}

fn judge(rule: &Rule, state: &mut SubscriberState, msisdn: Msisdn, moment: &Moment) -> Option<Decision> {
    let record = state.record()?;
    let verdict = admit(record, &state.contacts, rule, &moment.key, moment.at);
    let channel = verdict.unwrap_or(rule.channel);
    let mut variables: Vec<(&str, &str)> = moment.variables.iter().map(|(n, v)| (*n, v.as_str())).collect();
    variables.push(("offer", &rule.offer));
    let (language, message) = rule.render(record.language.as_deref(), &variables);
    let action = Action {
        action_id: Action::id_for(&rule.id, msisdn, moment.at, &moment.key),
        rule: rule.id.clone(),
        rule_version: rule.version.clone(),
        moment: rule.moment_name().to_string(),
        msisdn,
        household: None,
        offer: rule.offer.clone(),
        channel,
        moment_ts: moment.at,
        send_at: moment.at,
        language,
        message,
    };
    let verdict = match verdict {
        Ok(_) => {
            state.contacts.record(&rule.id, &moment.key, moment.at);
            Verdict::Sent
        }
        Err(reason) => Verdict::Suppressed(reason),
    };
    Some(Decision {
        action,
        verdict,
        moment_key: moment.key.clone(),
    })
}

/// What waits in the operator for the frontier to pass its instant.
enum Pending {
    /// An event, with the epoch it was sent at.
    Event(Event, Millis),
    Timer(Timer),
}

/// The operator's output: decisions, and (with durability) checkpoint records.
pub type SubscriberOutput = Result<Decision, StateRecord>;

/// The operator: exchanges events by subscriber, holds each until the frontier passes
/// `max(ts, T)`, then applies each instant's events in [`Event::apply_order`], then that
/// instant's timers, and emits the decisions at that instant. When the input closes (an
/// empty frontier), held events are applied and timers beyond the end of event time are
/// dropped: they do not fire (contract §3).
///
/// With `durability`, it starts from the restored states and, when the frontier reaches a
/// requested checkpoint instant `R`, emits at `R` the states changed since the previous
/// checkpoint and the events sent before `R` that still wait (see [`crate::checkpoint`]).
pub fn subscriber_state<'scope>(
    events: StreamVec<'scope, Millis, Event>,
    rules: Arc<RuleSet>,
    stats: Arc<DataflowStats>,
    durability: Option<Durability>,
) -> StreamVec<'scope, Millis, SubscriberOutput> {
    let route = Exchange::new(|event: &Event| subscriber_route(event.msisdn));
    let me = events.scope().index();
    events.unary_frontier(route, "SubscriberState", move |initial, _info| {
        let mut logic = SubscriberLogic::new(rules, stats, durability.is_some());
        // Events and timers waiting for the frontier, by the instant they apply at.
        let mut pending: BTreeMap<Millis, Vec<Pending>> = BTreeMap::new();
        // With durability: a capability at or before the next checkpoint instant.
        let mut checkpoint_cap = durability.as_ref().map(|_| initial.clone());
        let mut last_checkpoint = durability.as_ref().map_or(0, |d| d.restored_at);
        let restored = durability.as_ref().map(|d| d.take_restored(me)).unwrap_or_default();
        for timer in logic.restore(restored, last_checkpoint) {
            pending.entry(timer.due).or_default().push(Pending::Timer(timer));
        }
        // A capability at or before every pending instant.
        let mut held: Option<Capability<Millis>> = pending.keys().next().map(|t| initial.delayed(t));
        drop(initial);
        let mut decisions = Vec::new();
        let mut timers = Vec::new();
        move |(input, frontier), output| {
            input.for_each_stamp(|stamp, data| {
                let Some(cap) = stamp.retain_least(output.output_index()) else {
                    return;
                };
                let epoch = *cap.time();
                for batch in data {
                    for event in batch.drain(..) {
                        pending
                            .entry(event.ts.max(epoch))
                            .or_default()
                            .push(Pending::Event(event, epoch));
                    }
                }
                if held.as_ref().is_none_or(|h| h.time() > cap.time()) {
                    held = Some(cap);
                }
            });
            let closed = frontier.frontier().is_empty();
            // The checkpoint wanted next, if the frontier has reached it.
            let requested = durability.as_ref().map_or(0, |d| d.requests.requested());
            let mut checkpoint = (requested > last_checkpoint && !frontier.less_than(&requested)).then_some(requested);
            loop {
                let next = pending.keys().next().copied();
                // Take the checkpoint once every instant before it is applied.
                if let Some(at) = checkpoint.filter(|at| next.is_none_or(|n| n >= *at)) {
                    if let Some(cap) = checkpoint_cap.as_mut() {
                        cap.downgrade(&at);
                        let waiting: Vec<Event> = pending
                            .values()
                            .flatten()
                            .filter_map(|p| match p {
                                Pending::Event(event, sent) if *sent < at => Some(event.clone()),
                                _ => None,
                            })
                            .collect();
                        let mut session = output.session(&*cap);
                        for (msisdn, state) in logic.take_changes() {
                            session.give(Err(StateRecord::Subscriber {
                                msisdn,
                                state: Box::new(state),
                            }));
                        }
                        session.give(Err(StateRecord::Pending {
                            worker: me,
                            at,
                            events: waiting,
                        }));
                    }
                    last_checkpoint = at;
                    checkpoint = None;
                }
                let Some(instant) = next else { break };
                if frontier.frontier().less_equal(&instant) {
                    break;
                }
                let Some(cap) = held.as_mut() else { break };
                let mut events = Vec::new();
                let mut due = Vec::new();
                for item in pending.remove(&instant).unwrap_or_default() {
                    match item {
                        Pending::Event(event, _) => events.push(event),
                        Pending::Timer(timer) => due.push(timer),
                    }
                }
                events.sort_by_key(|e| e.apply_order());
                for event in &events {
                    logic.apply(event, instant, &mut decisions, &mut timers);
                }
                if !closed {
                    due.sort();
                    for timer in &due {
                        logic.fire(timer, &mut decisions);
                    }
                    for timer in timers.drain(..) {
                        pending.entry(timer.due).or_default().push(Pending::Timer(timer));
                    }
                }
                timers.clear();
                if !decisions.is_empty() {
                    let at = cap.delayed(&instant);
                    output.session(&at).give_iterator(decisions.drain(..).map(Ok));
                }
            }
            match (pending.keys().next(), held.as_mut()) {
                (Some(next), Some(cap)) => cap.downgrade(next),
                _ => held = None,
            }
            // The next checkpoint will be at or after the frontier.
            match frontier.frontier().first() {
                Some(at) => {
                    if let Some(cap) = checkpoint_cap.as_mut() {
                        cap.downgrade(&(*at).max(*cap.time()));
                    }
                }
                None => checkpoint_cap = None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kairos_model::event::{Consent, Customer, Network, NetworkKind};
    use kairos_model::{Channel, Origin};

    use super::*;
    use crate::condition::VOCABULARY;

    fn customer(
        device: Option<kairos_model::event::Device>,
        contract_end: Option<chrono::NaiveDate>,
    ) -> CustomerRecord {
        CustomerRecord {
            account_id: "A".into(),
            address_id: None,
            home_country: CountryCode::parse("PT").unwrap(),
            timezone: kairos_model::TimeZone::parse("Europe/Lisbon").unwrap(),
            language: None,
            email: None,
            tenure_start: None,
            prepaid: None,
            plan: None,
            device,
            contract_end,
            consent: Consent {
                sms: true,
                ..Consent::default()
            },
        }
    }

    fn rule(id: &str, moment: MomentKind, condition: Option<String>) -> Rule {
        Rule {
            id: id.into(),
            version: "v".into(),
            moment,
            declared: None,
            priority: 0,
            offer: "O".into(),
            channel: Channel::Sms,
            fallback_channel: None,
            threshold: None,
            condition,
            cooldown: 0,
            messages: BTreeMap::from([("en".into(), "m".into())]),
        }
    }

    #[test]
    fn a_fired_timer_is_a_change_to_checkpoint() {
        let rules = RuleSet {
            rules: vec![rule("handset", MomentKind::HandsetAgeing, None)],
        };
        let mut logic = SubscriberLogic::new(Arc::new(rules), Arc::new(DataflowStats::default()), true);
        let msisdn = Msisdn::from_u64(351_910_000_001).unwrap();
        let date = |y, m, d| chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap();
        let device = kairos_model::event::Device {
            imei: Some("1".into()),
            model: None,
            acquired: Some(date(2024, 1, 1)),
        };
        let record = customer(Some(device), Some(date(2026, 3, 1)));
        let event = Event {
            ts: 1,
            msisdn,
            origin: Origin { source: 0, position: 1 },
            body: EventBody::Customer(Customer::Upsert(Box::new(record))),
        };
        let (mut decisions, mut timers) = (Vec::new(), Vec::new());
        logic.apply(&event, 1, &mut decisions, &mut timers);
        assert_eq!(timers.len(), 1, "the handset ages in the future");
        assert_eq!(logic.take_changes().len(), 1);
        logic.fire(&timers[0], &mut decisions);
        assert_eq!(decisions.len(), 1);
        let changes = logic.take_changes();
        assert_eq!(changes.len(), 1, "the fired mark must reach the next checkpoint");
        assert!(changes[0].1.has_fired(HANDSET_ONCE, "1"));
        // Without change tracking (a replay) nothing is remembered.
        let mut replay = SubscriberLogic::new(Arc::new(RuleSet::default()), Arc::new(DataflowStats::default()), false);
        replay.apply(&event, 1, &mut decisions, &mut timers);
        assert!(replay.take_changes().is_empty());
    }

    #[test]
    fn conditions_can_read_every_vocabulary_field_at_run_time() {
        // Every field compared with itself: true only if the engine supplies all of them.
        let condition = VOCABULARY
            .iter()
            .map(|f| format!("{0} == {0}", f.path))
            .collect::<Vec<_>>()
            .join(" && ");
        let rule = rule("all", MomentKind::RoamingArrival, Some(condition));
        let stats = Arc::new(DataflowStats::default());
        let mut logic = SubscriberLogic::new(Arc::new(RuleSet { rules: vec![rule] }), Arc::clone(&stats), false);
        let msisdn = Msisdn::from_u64(351_910_000_001).unwrap();
        let record = customer(None, None);
        let event = |ts, body| Event {
            ts,
            msisdn,
            origin: Origin {
                source: 0,
                position: ts,
            },
            body,
        };
        let (mut decisions, mut timers) = (Vec::new(), Vec::new());
        logic.apply(
            &event(1, EventBody::Customer(Customer::Upsert(Box::new(record)))),
            1,
            &mut decisions,
            &mut timers,
        );
        let network = Network {
            event: NetworkKind::LocationUpdate,
            country: Some(CountryCode::parse("ES").unwrap()),
            mcc: None,
            mnc: None,
            cell: None,
            imei: None,
            peer: None,
        };
        logic.apply(&event(2, EventBody::Network(network)), 2, &mut decisions, &mut timers);
        assert_eq!(stats.condition_errors.load(std::sync::atomic::Ordering::Relaxed), 0);
        assert_eq!(decisions.len(), 1);
    }

    #[test]
    fn features_know_the_previous_serving_country_and_the_moment_key() {
        let condition = "subscriber.country == 'FR' && subscriber.previous_country == 'ES' \
                         && moment.previous_country == 'ES' && moment.key == 'FR' && moment.kind == 'roaming_arrival'";
        let rule = rule("fr-from-es", MomentKind::RoamingArrival, Some(condition.into()));
        let stats = Arc::new(DataflowStats::default());
        let mut logic = SubscriberLogic::new(Arc::new(RuleSet { rules: vec![rule] }), Arc::clone(&stats), false);
        let msisdn = Msisdn::from_u64(351_910_000_001).unwrap();
        let (mut decisions, mut timers) = (Vec::new(), Vec::new());
        let mut apply = |ts, body| {
            let origin = Origin {
                source: 0,
                position: ts,
            };
            let event = Event {
                ts,
                msisdn,
                origin,
                body,
            };
            logic.apply(&event, ts, &mut decisions, &mut timers);
        };
        let network = |kind, country: Option<&str>| {
            EventBody::Network(Network {
                event: kind,
                country: country.map(|c| CountryCode::parse(c).unwrap()),
                mcc: None,
                mnc: None,
                cell: None,
                imei: None,
                peer: None,
            })
        };
        apply(1, EventBody::Customer(Customer::Upsert(Box::new(customer(None, None)))));
        apply(2, network(NetworkKind::LocationUpdate, Some("ES")));
        apply(3, network(NetworkKind::Detach, None));
        apply(4, network(NetworkKind::LocationUpdate, Some("FR")));
        assert_eq!(stats.condition_errors.load(std::sync::atomic::Ordering::Relaxed), 0);
        let moments: Vec<(Millis, &str)> = decisions
            .iter()
            .map(|d| (d.action.moment_ts, d.moment_key.as_str()))
            .collect();
        assert_eq!(moments, [(4, "FR")], "only the arrival in FR from ES fires");
        assert_eq!(logic.states[&msisdn].previous_country, CountryCode::parse("ES").ok());
    }
}
