//! `SubscriberState`: the keyed operator that owns each subscriber's state, applies their
//! events in event-time order, fires timers when event time passes them, detects moments
//! and applies the contact policy.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use chrono_tz::Tz;
use kairos_model::event::{EventBody, EventKind, ResponseOutcome, UsageKind};
use kairos_model::rule::ActionClass;
use kairos_model::time::format_rfc3339;
use kairos_model::{
    Action, CountryCode, CustomerRecord, Decision, Event, Millis, MomentKind, Msisdn, Rule, RuleSet, SuppressReason,
    Verdict,
};
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;
use timely::progress::frontier::MutableAntichain;

use crate::checkpoint::{Durability, StateRecord};
use crate::condition;
use crate::evidence::call_weight;
use crate::households::{Evidence, EvidenceUpdate, HouseholdConfig, HouseholdView, ViewUpdate};
use crate::policy::{admit, Deferred, Exposure, Subject};
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
    /// Quiet hours end for an action held until then (`send_at`).
    Deliver { action_id: String },
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
    states: FxHashMap<Msisdn, SubscriberState>,
    /// Subscribers changed since the last checkpoint; `None` when nothing checkpoints
    /// (a replay), so no work is spent on it.
    dirty: Option<FxHashSet<Msisdn>>,
    /// How households are found; `None` when they are not.
    households: Option<HouseholdConfig>,
    /// Household evidence produced and not yet sent to the graph.
    pub evidence: Vec<EvidenceUpdate>,
    /// How long marketing actions are kept for the policy's caps and arbitration.
    horizon: Millis,
}

impl SubscriberLogic {
    /// Logic for one worker's share of subscribers; with `track_changes`, it remembers which
    /// subscribers changed, for [`SubscriberLogic::take_changes`].
    pub fn new(
        rules: Arc<RuleSet>,
        stats: Arc<DataflowStats>,
        track_changes: bool,
        households: Option<HouseholdConfig>,
    ) -> SubscriberLogic {
        let mut logic = SubscriberLogic {
            horizon: 0,
            rules: Arc::new(RuleSet::default()),
            conditions: HashMap::new(),
            declared: Vec::new(),
            stats,
            states: FxHashMap::default(),
            dirty: track_changes.then(FxHashSet::default),
            households,
            evidence: Vec::new(),
        };
        logic.set_rules(rules);
        logic
    }

    /// Puts a rule set in force (at start, or a live change at an instant): its conditions
    /// and declared moments are compiled here, once per worker. State is kept by rule id, so
    /// cooldowns and once-only marks survive edits of a rule; an action a removed rule had
    /// held for quiet hours is not sent (see [`deliver`]).
    pub fn set_rules(&mut self, rules: Arc<RuleSet>) {
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
                let sources: Vec<&str> = std::iter::once(declared.when.as_str())
                    .chain(declared.dedupe_key.as_deref())
                    .collect();
                Some(DeclaredProgram {
                    triggers: triggers(&sources),
                    reads: reads(&sources),
                    rule: r.id.clone(),
                    when: condition::compile(&declared.when).unwrap_or_else(|_| never()),
                    key: declared
                        .dedupe_key
                        .as_deref()
                        .map(|k| condition::compile(k).unwrap_or_else(|_| never())),
                })
            })
            .collect();
        self.horizon = crate::policy::horizon(&rules.policy);
        self.conditions = conditions;
        self.declared = declared;
        self.rules = rules;
    }

    /// Installs restored states and returns the timers they need (those at or after `from`:
    /// earlier ones had their chance before the checkpoint).
    pub fn restore(&mut self, restored: Vec<(Msisdn, SubscriberState)>, from: Millis) -> (Vec<Timer>, Vec<ViewUpdate>) {
        let mut timers = Vec::new();
        let mut views = Vec::new();
        for (msisdn, mut state) in restored {
            for (at, view, diff) in std::mem::take(&mut state.household.pending_views) {
                views.push((msisdn, view, at, diff));
            }
            let mut found = Vec::new();
            if let Some(timer) = handset_check(&mut state, msisdn, 0, from.saturating_sub(1), &mut found) {
                timers.push(timer);
            }
            timers.extend(state.contacts.deferred.iter().map(|deferred| Timer {
                due: deferred.action.send_at.max(from),
                msisdn,
                kind: TimerKind::Deliver {
                    action_id: deferred.action.action_id.clone(),
                },
            }));
            if self.households.is_some() {
                state.household.re_emit(msisdn, from, &mut self.evidence);
            }
            self.stats
                .held
                .fetch_add(state.contacts.deferred.len() as i64, Ordering::Relaxed);
            self.states.insert(msisdn, state);
        }
        (timers, views)
    }

    /// Keeps the graph's changes computed for instants at or after a checkpoint, not applied
    /// yet, in the states the checkpoint is about to take: (instant, msisdn, view, diff).
    pub fn stash_views(&mut self, views: Vec<(Millis, Msisdn, HouseholdView, isize)>) -> Vec<Msisdn> {
        let mut stashed = Vec::new();
        for (at, msisdn, view, diff) in views {
            if let Some(state) = self.states.get_mut(&msisdn) {
                state.household.pending_views.push((at, view, diff));
                stashed.push(msisdn);
            }
        }
        for msisdn in &stashed {
            self.touch(*msisdn);
        }
        stashed
    }

    /// Forgets the stashes once the checkpoint has them.
    pub fn clear_stashes(&mut self, stashed: &[Msisdn]) {
        for msisdn in stashed {
            if let Some(state) = self.states.get_mut(msisdn) {
                state.household.pending_views.clear();
            }
        }
    }

    /// Adds `applied` events to the dataflow's update count (one atomic add per instant,
    /// not per event).
    fn count_updates(&self, applied: usize) {
        if applied > 0 {
            self.stats.updates.fetch_add(applied as u64, Ordering::Relaxed);
        }
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
        // A deletion erases the household state with the rest; the graph must hear of it.
        let mut erased = match &event.body {
            EventBody::Customer(kairos_model::event::Customer::Deleted) if self.households.is_some() => {
                state.household.clone()
            }
            _ => Default::default(),
        };
        if let Some(config) = &self.households {
            household_evidence(config, state, event, now, &mut self.evidence);
        }
        let held = state.contacts.deferred.len() as i64;
        match &event.body {
            EventBody::Customer(update) => match state.apply_customer(event.ts, update) {
                CustomerChange::Stale => DataflowStats::bump(&self.stats.stale_customer_records),
                CustomerChange::Deleted => {
                    // Actions held for the erased subscriber go with the rest of the state.
                    self.stats.held.fetch_sub(held, Ordering::Relaxed);
                    if self.households.is_some() {
                        erased.erase(event.msisdn, now, &mut self.evidence);
                    }
                }
                CustomerChange::Upserted => {
                    if let kairos_model::event::Customer::Upsert(record) = update {
                        state.contacts.consent_again(&record.consent, event.ts);
                    }
                    if let Some(config) = &self.households {
                        let record = state.record().cloned();
                        let household = &mut state.household;
                        household.facts(event.msisdn, record.as_ref(), event.ts, &mut self.evidence);
                        if let Some(imei) = record.as_ref().and_then(|r| r.device.as_ref()?.imei.as_deref()) {
                            household.handset(config, event.msisdn, imei, event.ts, now, &mut self.evidence);
                        }
                    }
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
                    EventBody::Response(response) if response.outcome == ResponseOutcome::OptedOut => {
                        state.contacts.opt_out(&response.action_id, event.ts)
                    }
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
            horizon: self.horizon,
        };
        if !self.declared.is_empty() {
            judges.declared(state, event.msisdn, event.ts, Some(event.kind()), &mut found);
        }
        judges.decide(state, event.msisdn, found, decisions, timers);
    }

    /// The household graph changed a subscriber's household at instant `now`: the updates
    /// (view, diff) of that instant. Declared moments may start to hold.
    pub fn view_changes(
        &mut self,
        msisdn: Msisdn,
        updates: &[(HouseholdView, isize)],
        now: Millis,
        decisions: &mut Vec<Decision>,
        timers: &mut Vec<Timer>,
    ) {
        let Some(state) = self.states.get_mut(&msisdn) else {
            return;
        };
        let mut net: BTreeMap<&HouseholdView, isize> = BTreeMap::new();
        for (view, diff) in updates {
            *net.entry(view).or_default() += diff;
        }
        let household = &mut state.household;
        let before = household.view.clone();
        if let Some((view, _)) = net.iter().find(|(_, diff)| **diff > 0) {
            household.view = Some((*view).clone());
        } else if household
            .view
            .as_ref()
            .is_some_and(|v| net.get(v).is_some_and(|d| *d < 0))
        {
            household.view = None;
        }
        // After a restart the graph says everything again: nothing changed, nothing happens.
        if household.view == before {
            return;
        }
        if let Some(dirty) = self.dirty.as_mut() {
            dirty.insert(msisdn);
        }
        if !self.declared.is_empty() {
            let judges = Judges {
                rules: &self.rules,
                conditions: &self.conditions,
                declared: &self.declared,
                stats: &self.stats,
                horizon: self.horizon,
            };
            let mut found = Vec::new();
            judges.declared(state, msisdn, now, None, &mut found);
            judges.decide(state, msisdn, found, decisions, timers);
        }
    }

    /// Fires a timer whose instant event time has passed, if it still holds.
    pub fn fire(&mut self, timer: &Timer, decisions: &mut Vec<Decision>, timers: &mut Vec<Timer>) {
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
            TimerKind::Deliver { action_id } => {
                if deliver(state, action_id, &self.rules, decisions) {
                    self.stats.held.fetch_sub(1, Ordering::Relaxed);
                }
                return;
            }
        }
        let judges = Judges {
            rules: &self.rules,
            conditions: &self.conditions,
            declared: &self.declared,
            stats: &self.stats,
            horizon: self.horizon,
        };
        judges.decide(state, timer.msisdn, found, decisions, timers);
    }
}

/// What an activity event says about the subscriber's household (customer records are
/// handled with the record).
fn household_evidence(
    config: &HouseholdConfig,
    state: &mut SubscriberState,
    event: &Event,
    now: Millis,
    out: &mut Vec<EvidenceUpdate>,
) {
    let me = event.msisdn;
    let tz = state.record().map_or(Tz::UTC, |r| r.timezone.tz());
    // Another account's self-care login (the own account's needs no evidence).
    let login = match &event.body {
        EventBody::Selfcare(visit) => {
            let own = state.record().map(|r| r.account_id.as_str());
            visit
                .account_id
                .as_deref()
                .filter(|a| Some(*a) != own)
                .map(str::to_string)
        }
        _ => None,
    };
    let household = &mut state.household;
    match &event.body {
        EventBody::Network(network) => {
            if let Some(imei) = &network.imei {
                household.handset(config, me, imei, event.ts, now, out);
            }
            if let Some(peer) = network.peer {
                let weight = call_weight(config, event.ts, tz);
                household.soft(config, Evidence::Call(me, peer), event.ts, now, weight, out);
            }
        }
        EventBody::Usage(usage) if usage.kind != UsageKind::Data => {
            if let Some(peer) = usage.peer {
                let weight = call_weight(config, event.ts, tz);
                household.soft(config, Evidence::Call(me, peer), event.ts, now, weight, out);
            }
        }
        EventBody::Topup(topup) => {
            if let Some(payer) = topup.payer.filter(|p| *p != me) {
                household.soft(config, Evidence::Paid(payer, me), event.ts, now, 1, out);
            }
        }
        EventBody::Selfcare(visit) => {
            if let Some(account) = login {
                household.soft(config, Evidence::Login(me, account), event.ts, now, 1, out);
            }
            if visit.page == "cancel" {
                household.soft(config, Evidence::Cancel(me), event.ts, now, 1, out);
            }
        }
        _ => {}
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
    /// How long marketing actions are kept for caps and arbitration.
    horizon: Millis,
}

/// A declared moment's compiled `when` and `dedupe_key`.
struct DeclaredProgram {
    rule: String,
    when: cel::Program,
    key: Option<cel::Program>,
    /// The events after which it can change (`None`: any event); it is also evaluated
    /// whenever the subscriber's household changes.
    triggers: Option<Vec<EventKind>>,
    /// The vocabulary paths its context needs (see [`reads`]).
    reads: Vec<&'static str>,
}

/// The vocabulary paths an expression may read: every path whose parent (the path without its
/// last part) the sources mention. A context with only these holds every value the
/// expression can reach (whole maps included) and spares building the rest.
fn reads(sources: &[&str]) -> Vec<&'static str> {
    condition::VOCABULARY
        .iter()
        .map(|field| field.path)
        .filter(|path| {
            let parent = path.rsplit_once('.').map_or(*path, |(parent, _)| parent);
            sources.iter().any(|s| s.contains(parent))
        })
        .collect()
}

/// The events after which an expression reading these sources can change value: `None` for
/// any event (it reads something time moves, or nothing known). What reads only
/// `household.*` changes with the household alone.
fn triggers(sources: &[&str]) -> Option<Vec<EventKind>> {
    let mut kinds = Vec::new();
    let mut read_any = false;
    for field in condition::VOCABULARY {
        if !sources.iter().any(|s| s.contains(field.path)) {
            continue;
        }
        read_any = true;
        let kind = match field.path {
            p if p.starts_with("household.") => continue,
            "subscriber.country" | "subscriber.previous_country" => EventKind::Network,
            "subscriber.selfcare.last_page" => EventKind::Selfcare,
            "customer.tenure_days" | "customer.device.age_days" | "customer.contract.days_left" => return None,
            p if p.starts_with("customer.") => EventKind::Customer,
            _ => return None,
        };
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    read_any.then_some(kinds)
}

impl Judges<'_> {
    /// Turns moments into decisions: once-only moments are marked, every rule of the moment
    /// whose condition holds is judged by the contact policy, and every outcome is recorded.
    /// The candidates of one call (moments found together) are judged best first —
    /// marketing rules by arbitration score, then rule id — so the best takes the room
    /// caps and arbitration leave, and the others are suppressed with the reason.
    fn decide(
        &self,
        state: &mut SubscriberState,
        msisdn: Msisdn,
        found: Vec<Moment>,
        decisions: &mut Vec<Decision>,
        timers: &mut Vec<Timer>,
    ) {
        let mut candidates: Vec<(&Rule, &Moment)> = Vec::new();
        for moment in &found {
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
                if self.condition_holds(rule, state, msisdn, moment) {
                    candidates.push((rule, moment));
                }
            }
        }
        let policy = &self.rules.policy;
        let score = |rule: &Rule| match rule.class {
            ActionClass::Marketing => crate::policy::score_of(policy, rule),
            _ => f64::INFINITY,
        };
        candidates.sort_by(|(a, _), (b, _)| score(b).total_cmp(&score(a)).then_with(|| a.id.cmp(&b.id)));
        for (rule, moment) in candidates {
            match judge(policy, self.horizon, rule, state, msisdn, moment, timers) {
                Judged::Decided(decision) => decisions.push(decision),
                Judged::Held => {
                    self.stats.held.fetch_add(1, Ordering::Relaxed);
                }
                Judged::Nobody => {}
            }
        }
    }

    /// Whether the rule's condition (if any) holds for this moment.
    fn condition_holds(&self, rule: &Rule, state: &SubscriberState, msisdn: Msisdn, moment: &Moment) -> bool {
        let Some(program) = self.conditions.get(&rule.id) else {
            return true;
        };
        let Some(record) = state.record() else { return false };
        let mut values = state_values(msisdn, state, record, moment.at);
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
    /// `after`: the kind of event just applied, or `None` after a household change.
    fn declared(
        &self,
        state: &mut SubscriberState,
        msisdn: Msisdn,
        at: Millis,
        after: Option<EventKind>,
        found: &mut Vec<Moment>,
    ) {
        let due: Vec<&DeclaredProgram> = self
            .declared
            .iter()
            .filter(|d| match (after, &d.triggers) {
                (None, _) | (_, None) => true,
                (Some(kind), Some(kinds)) => kinds.contains(&kind),
            })
            .collect();
        if due.is_empty() {
            return;
        }
        let Some(record) = state.record() else { return };
        let mut values = state_values(msisdn, state, record, at);
        values.retain(|(path, _)| due.iter().any(|d| d.reads.contains(path)));
        let context = condition::context(values);
        let mut outcomes = Vec::with_capacity(due.len());
        for declared in &due {
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
        for (declared, outcome) in due.iter().zip(outcomes) {
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
fn state_values(msisdn: Msisdn, state: &SubscriberState, record: &CustomerRecord, at: Millis) -> condition::Values {
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
    let view = state.household.view.as_ref();
    let number = |m: Option<Msisdn>| text(&m.map(|m| m.to_string()).unwrap_or_default());
    values.extend([
        ("household.id", text(&view.map(HouseholdView::id).unwrap_or_default())),
        ("household.size", int(view.map_or(0, |v| u64::from(v.size)))),
        (
            "household.monthly_value",
            cel::Value::Float(view.map_or(0.0, |v| v.value_cents as f64 / 100.0)),
        ),
        ("household.accounts", int(view.map_or(0, |v| u64::from(v.accounts)))),
        ("household.decision_maker", number(view.map(|v| v.decision_maker))),
        (
            "household.is_decision_maker",
            cel::Value::Bool(view.is_some_and(|v| v.decision_maker == msisdn)),
        ),
        (
            "household.cancel_intents",
            int(view.map_or(0, |v| u64::from(v.cancel_intents))),
        ),
        (
            "household.competitor_peer",
            number(view.and_then(|v| v.competitor_peer)),
        ),
        (
            "household.gave_handset",
            cel::Value::Bool(view.is_some_and(|v| v.gave_handset)),
        ),
        (
            "household.got_handset",
            cel::Value::Bool(view.is_some_and(|v| v.got_handset)),
        ),
    ]);
    values
}

fn text(value: &str) -> cel::Value {
    cel::Value::String(Arc::new(value.to_string()))
}

/// What the contact policy made of one rule's moment (returned and consumed at once, so
/// the size difference costs nothing a box would not cost more).
#[allow(clippy::large_enum_variant)]
enum Judged {
    Decided(Decision),
    /// The action waits for quiet hours to end (a [`TimerKind::Deliver`] timer decides it).
    Held,
    /// No customer record: nobody to act for.
    Nobody,
}

/// Judges one rule's moment by the contact policy: a decision now, or the action held until
/// quiet hours end.
fn judge(
    policy: &kairos_model::rule::Policy,
    horizon: Millis,
    rule: &Rule,
    state: &mut SubscriberState,
    msisdn: Msisdn,
    moment: &Moment,
    timers: &mut Vec<Timer>,
) -> Judged {
    let Some(record) = state.record() else {
        return Judged::Nobody;
    };
    let subject = Subject {
        msisdn,
        customer: record,
        country: state.country,
    };
    let judgement = admit(policy, &subject, &state.contacts, rule, &moment.key, moment.at);
    let mut variables: Vec<(&str, &str)> = moment.variables.iter().map(|(n, v)| (*n, v.as_str())).collect();
    variables.push(("offer", &rule.offer));
    let (language, message) = rule.render(record.language.as_deref(), &variables);
    let action = Action {
        action_id: Action::id_for(&rule.id, msisdn, moment.at, &moment.key),
        rule: rule.id.clone(),
        rule_version: rule.version.clone(),
        moment: rule.moment_name().to_string(),
        msisdn,
        household: state.household.view.as_ref().map(HouseholdView::id),
        offer: rule.offer.clone(),
        channel: judgement.channel,
        moment_ts: moment.at,
        send_at: judgement.send_at,
        language,
        message,
    };
    if judgement.exposed() {
        state.contacts.record(&rule.id, &moment.key, moment.at);
        if rule.class == ActionClass::Marketing {
            let exposure = Exposure {
                action_id: action.action_id.clone(),
                rule: rule.id.clone(),
                moment_at: moment.at,
                send_at: judgement.send_at,
                channel: judgement.channel,
                score: crate::policy::score_of(policy, rule),
                sent: judgement.verdict.is_ok(),
            };
            state.contacts.expose(exposure, horizon);
        }
    }
    let (verdict, detail) = match judgement.verdict {
        Ok(()) => {
            state.contacts.remember(&action.action_id, judgement.channel);
            if judgement.send_at > moment.at {
                timers.push(Timer {
                    due: judgement.send_at,
                    msisdn,
                    kind: TimerKind::Deliver {
                        action_id: action.action_id.clone(),
                    },
                });
                state.contacts.deferred.push(Deferred {
                    action,
                    class: rule.class,
                    moment_key: moment.key.clone(),
                });
                return Judged::Held;
            }
            (Verdict::Sent, None)
        }
        Err((reason, detail)) => (Verdict::Suppressed(reason), detail),
    };
    Judged::Decided(Decision {
        action,
        verdict,
        moment_key: moment.key.clone(),
        class: rule.class,
        detail,
    })
}

/// Quiet hours have ended for a held action: it is sent unless, meanwhile, the customer
/// opted out of its channel or withdrew consent, or its rule was removed (then it no longer
/// counts for caps).
/// Returns whether the action was still held (and no longer is).
fn deliver(state: &mut SubscriberState, action_id: &str, rules: &RuleSet, decisions: &mut Vec<Decision>) -> bool {
    let Some(index) = state
        .contacts
        .deferred
        .iter()
        .position(|d| d.action.action_id == action_id)
    else {
        return false;
    };
    let deferred = state.contacts.deferred.remove(index);
    let channel = deferred.action.channel;
    let verdict = match state.record() {
        None => return true,
        Some(_) if !rules.rules.iter().any(|r| r.id == deferred.action.rule) => {
            Verdict::Suppressed(SuppressReason::RuleRemoved)
        }
        Some(record) if !crate::policy::reachable(record, channel) => Verdict::Suppressed(SuppressReason::NoConsent),
        Some(_) if state.contacts.opted_out(channel) => Verdict::Suppressed(SuppressReason::OptedOut),
        Some(_) => Verdict::Sent,
    };
    if verdict != Verdict::Sent {
        state.contacts.unexpose(action_id);
    }
    decisions.push(Decision {
        action: deferred.action,
        verdict,
        moment_key: deferred.moment_key,
        class: deferred.class,
        detail: None,
    });
    true
}

/// What waits in the operator for the frontier to pass its instant.
enum Pending {
    /// A change of a subscriber's household (from the graph).
    View(Msisdn, HouseholdView, isize),
    /// An event, with the epoch it was sent at.
    Event(Event, Millis),
    Timer(Timer),
    /// A new rule set, in force from this instant on.
    Rules(Arc<RuleSet>),
}

/// The operator's output: decisions, and (with durability) checkpoint records.
pub type SubscriberOutput = Result<Decision, StateRecord>;

/// Whether every input frontier has passed `instant`.
fn passed(frontiers: &[MutableAntichain<Millis>], instant: Millis) -> bool {
    frontiers.iter().all(|f| !f.less_equal(&instant))
}

/// The operator: exchanges events by subscriber, holds each until the frontier passes
/// `max(ts, T)`, then applies each instant's household changes, then its events in
/// [`Event::apply_order`], then its timers, and emits the decisions at that instant. When the
/// input closes (an empty frontier), held events are applied and timers beyond the end of
/// event time are dropped: they do not fire (contract §3).
///
/// Household evidence goes out on a second output, to the household graph, at the end of its
/// step of event time (`granularity_ms`); the graph's view of each household comes back on
/// the second input (`views`, a feedback loop): a view the graph computed for the step ending
/// at `t` applies at `t + step`, so every worker count sees it at the same instant, and the
/// subscribers run up to a step ahead of the graph without waiting for it.
///
/// With `durability`, it starts from the restored states and, when the frontier reaches a
/// requested checkpoint instant `R`, emits at `R` the states changed since the previous
/// checkpoint and the events sent before `R` that still wait (see [`crate::checkpoint`]).
pub fn subscriber_state<'scope>(
    events: StreamVec<'scope, Millis, Event>,
    views: StreamVec<'scope, Millis, ViewUpdate>,
    rule_updates: StreamVec<'scope, Millis, RuleSet>,
    rules: Arc<RuleSet>,
    stats: Arc<DataflowStats>,
    durability: Option<Durability>,
    households: Option<HouseholdConfig>,
) -> (
    StreamVec<'scope, Millis, SubscriberOutput>,
    StreamVec<'scope, Millis, EvidenceUpdate>,
) {
    let scope = events.scope();
    let me = scope.index();
    let mut builder = OperatorBuilder::new("SubscriberState".to_owned(), scope);
    let mut events_in = builder.new_input(events, Exchange::new(|event: &Event| subscriber_route(event.msisdn)));
    let mut views_in = builder.new_input(views, Exchange::new(|view: &ViewUpdate| subscriber_route(view.0)));
    // Rule sets arrive on every worker (broadcast upstream), each at the instant it takes
    // force.
    let mut rules_in = builder.new_input(rule_updates, timely::dataflow::channels::pact::Pipeline);
    let (decisions_out, decisions_stream) = builder.new_output();
    let (evidence_out, evidence_stream) = builder.new_output();
    let mut decisions_out = OutputBuilder::<_, CapacityContainerBuilder<Vec<SubscriberOutput>>>::from(decisions_out);
    let mut evidence_out = OutputBuilder::<_, CapacityContainerBuilder<Vec<EvidenceUpdate>>>::from(evidence_out);
    // Evidence goes to the graph at the end of its step of event time (the graph counts it
    // there anyway), so the feedback loop holds this operator back once per step, not once
    // per instant.
    let step = households.as_ref().map_or(1, |h| h.granularity_ms.max(1));
    let round = move |t: Millis| t.div_ceil(step).saturating_mul(step);
    builder.build(move |mut initial| {
        let initial_evidence = initial.pop().expect("two outputs");
        let initial = initial.pop().expect("two outputs");
        let mut logic = SubscriberLogic::new(rules, stats, durability.is_some(), households);
        // Views, events and timers waiting for the frontier, by the instant they apply at.
        let mut pending: BTreeMap<Millis, Vec<Pending>> = BTreeMap::new();
        // With durability: a capability at or before the next checkpoint instant.
        let mut checkpoint_cap = durability.as_ref().map(|_| initial.clone());
        let mut last_checkpoint = durability.as_ref().map_or(0, |d| d.restored_at);
        let restored = durability.as_ref().map(|d| d.take_restored(me)).unwrap_or_default();
        let (restored_timers, restored_views) = logic.restore(restored, last_checkpoint);
        for timer in restored_timers {
            pending.entry(timer.due).or_default().push(Pending::Timer(timer));
        }
        for (msisdn, view, at, diff) in restored_views {
            pending.entry(at).or_default().push(Pending::View(msisdn, view, diff));
        }
        // Capabilities at or before every pending instant, one per output.
        let mut held: Option<Capability<Millis>> = pending.keys().next().map(|t| initial.delayed(t));
        let mut held_evidence: Option<Capability<Millis>> =
            pending.keys().next().map(|t| initial_evidence.delayed(&round(*t)));
        // The restored states' evidence goes out on the first activation.
        let mut restore_cap = Some(initial_evidence.delayed(&round(last_checkpoint)));
        drop((initial, initial_evidence));
        let mut decisions = Vec::new();
        let mut timers = Vec::new();
        move |frontiers| {
            let mut output = decisions_out.activate();
            let mut evidence = evidence_out.activate();
            if let Some(cap) = restore_cap.take() {
                if !logic.evidence.is_empty() {
                    let rounded = logic.evidence.drain(..).map(|(e, t, d)| (e, round(t), d));
                    evidence.session(&cap).give_iterator(rounded);
                }
            }
            let mut hold = |stamp: &timely::dataflow::operators::InputCapability<Millis>| {
                let (Some(cap), Some(mut cap_evidence)) = (stamp.retain_least(0), stamp.retain_least(1)) else {
                    return None;
                };
                cap_evidence.downgrade(&round(*cap_evidence.time()));
                let time = *cap.time();
                if held.as_ref().is_none_or(|h| h.time() > cap.time()) {
                    held = Some(cap);
                }
                if held_evidence.as_ref().is_none_or(|h| h.time() > cap_evidence.time()) {
                    held_evidence = Some(cap_evidence);
                }
                Some(time)
            };
            events_in.for_each_stamp(|stamp, data| {
                let Some(epoch) = hold(&stamp) else { return };
                for batch in data {
                    for event in batch.drain(..) {
                        pending
                            .entry(event.ts.max(epoch))
                            .or_default()
                            .push(Pending::Event(event, epoch));
                    }
                }
            });
            rules_in.for_each_stamp(|stamp, data| {
                let Some(time) = hold(&stamp) else { return };
                for batch in data {
                    for rules in batch.drain(..) {
                        pending.entry(time).or_default().push(Pending::Rules(Arc::new(rules)));
                    }
                }
            });
            views_in.for_each_stamp(|stamp, data| {
                if hold(&stamp).is_none() {
                    return;
                }
                for batch in data {
                    for (msisdn, view, time, diff) in batch.drain(..) {
                        pending
                            .entry(time.saturating_add(step))
                            .or_default()
                            .push(Pending::View(msisdn, view, diff));
                    }
                }
            });
            // The events' input is closed: event time has ended. What is held applies; the
            // graph's later views and timers beyond the end do not.
            let closed = frontiers[0].is_empty();
            // The checkpoint wanted next, if the frontier has reached it.
            let requested = durability.as_ref().map_or(0, |d| d.requests.requested());
            // Reached when every event before it is in, and every change the graph computed
            // for instants up to its step (so a restart can re-apply them at their instants).
            let reached = !frontiers[0].less_than(&requested)
                && !frontiers[1].less_equal(&round(requested))
                && !frontiers[2].less_than(&requested);
            let mut checkpoint = (requested > last_checkpoint).then_some(requested);
            loop {
                let next = pending.keys().next().copied();
                // Take the checkpoint once every instant before it is applied; nothing at or
                // after it is applied before it is taken.
                if let Some(at) = checkpoint.filter(|at| next.is_none_or(|n| n >= *at)) {
                    if !reached {
                        break;
                    }
                    if let Some(cap) = checkpoint_cap.as_mut() {
                        cap.downgrade(&at);
                        let views: Vec<(Millis, Msisdn, HouseholdView, isize)> = pending
                            .range(at..)
                            .flat_map(|(instant, items)| {
                                items.iter().filter_map(move |p| match p {
                                    Pending::View(msisdn, view, diff) => Some((*instant, *msisdn, view.clone(), *diff)),
                                    _ => None,
                                })
                            })
                            .collect();
                        let stashed = logic.stash_views(views);
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
                        drop(session);
                        logic.clear_stashes(&stashed);
                    }
                    last_checkpoint = at;
                    checkpoint = None;
                }
                let Some(instant) = next else { break };
                if !closed && !passed(frontiers, instant) {
                    break;
                }
                let (Some(cap), Some(cap_evidence)) = (held.as_mut(), held_evidence.as_mut()) else {
                    break;
                };
                let mut events = Vec::new();
                let mut due = Vec::new();
                let mut changed: BTreeMap<Msisdn, Vec<(HouseholdView, isize)>> = BTreeMap::new();
                for item in pending.remove(&instant).unwrap_or_default() {
                    match item {
                        Pending::View(msisdn, view, diff) => changed.entry(msisdn).or_default().push((view, diff)),
                        Pending::Event(event, _) => events.push(event),
                        Pending::Timer(timer) => due.push(timer),
                        // In force for everything at this instant, on every worker.
                        Pending::Rules(rules) => logic.set_rules(rules),
                    }
                }
                if !closed {
                    for (msisdn, updates) in &changed {
                        logic.view_changes(*msisdn, updates, instant, &mut decisions, &mut timers);
                    }
                }
                events.sort_by_key(|e| e.apply_order());
                for event in &events {
                    logic.apply(event, instant, &mut decisions, &mut timers);
                }
                // Once event time has ended, moments no longer fire; actions held for quiet
                // hours still go, with their `send_at`.
                if closed {
                    due.retain(|timer| matches!(timer.kind, TimerKind::Deliver { .. }));
                }
                due.sort();
                for timer in &due {
                    logic.fire(timer, &mut decisions, &mut timers);
                }
                logic.count_updates(events.len());
                for timer in timers.drain(..) {
                    if !closed || matches!(timer.kind, TimerKind::Deliver { .. }) {
                        pending.entry(timer.due).or_default().push(Pending::Timer(timer));
                    }
                }
                if !decisions.is_empty() {
                    let at = cap.delayed(&instant);
                    output.session(&at).give_iterator(decisions.drain(..).map(Ok));
                }
                if !logic.evidence.is_empty() {
                    // At the step of the event's time, or the first step still open.
                    let open = *cap_evidence.time();
                    let rounded = logic.evidence.drain(..).map(|(e, t, d)| (e, round(t).max(open), d));
                    evidence.session(&*cap_evidence).give_iterator(rounded);
                }
            }
            match pending.keys().next() {
                Some(next) => {
                    if let Some(cap) = held.as_mut() {
                        cap.downgrade(next);
                    }
                    if let Some(cap) = held_evidence.as_mut() {
                        cap.downgrade(&round(*next));
                    }
                }
                None => {
                    held = None;
                    held_evidence = None;
                }
            }
            // The next checkpoint will be at or after the frontier.
            let least = frontiers.iter().filter_map(|f| f.frontier().first().copied()).min();
            match least {
                Some(at) => {
                    if let Some(cap) = checkpoint_cap.as_mut() {
                        // Never past a checkpoint still to take.
                        let at = at.min(checkpoint.unwrap_or(Millis::MAX));
                        cap.downgrade(&at.max(*cap.time()));
                    }
                }
                None => checkpoint_cap = None,
            }
        }
    });
    (decisions_stream, evidence_stream)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kairos_model::event::{Consent, Customer, Network, NetworkKind};
    use kairos_model::{Channel, Origin};

    use super::*;

    #[test]
    fn a_declared_context_holds_what_the_expression_can_reach() {
        let family = reads(&["household.is_decision_maker && household.size >= 2"]);
        assert!(family.contains(&"household.size") && family.contains(&"household.id"));
        assert!(!family
            .iter()
            .any(|p| p.starts_with("customer.") || p.starts_with("subscriber.")));
        // A whole map read by its name brings all of its values.
        let plan = reads(&["size(customer.plan) > 0"]);
        assert!(plan.contains(&"customer.plan.monthly_fee"));
        assert!(!plan
            .iter()
            .any(|p| p.starts_with("subscriber.") || p.starts_with("household.")));
        let both = reads(&["subscriber.selfcare.last_page == 'cancel'", "customer.language"]);
        assert!(both.contains(&"subscriber.selfcare.days_since") && both.contains(&"customer.language"));
        assert!(!both.contains(&"subscriber.cycle.ratio"));
    }
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
            class: Default::default(),
            quiet_hours: Default::default(),
            value: 1.0,
            holdout: 0.0,
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
            policy: Default::default(),
        };
        let mut logic = SubscriberLogic::new(Arc::new(rules), Arc::new(DataflowStats::default()), true, None);
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
        logic.fire(&timers[0].clone(), &mut decisions, &mut timers);
        assert_eq!(decisions.len(), 1);
        let changes = logic.take_changes();
        assert_eq!(changes.len(), 1, "the fired mark must reach the next checkpoint");
        assert!(changes[0].1.has_fired(HANDSET_ONCE, "1"));
        // Without change tracking (a replay) nothing is remembered.
        let mut replay = SubscriberLogic::new(
            Arc::new(RuleSet::default()),
            Arc::new(DataflowStats::default()),
            false,
            None,
        );
        replay.apply(&event, 1, &mut decisions, &mut timers);
        assert!(replay.take_changes().is_empty());
    }

    #[test]
    fn an_action_held_for_quiet_hours_is_not_sent_once_its_rule_is_removed_and_survives_an_edit() {
        let quiet = kairos_model::rule::Policy {
            quiet_hours: Some(kairos_model::rule::QuietHours {
                start_minute: 21 * 60,
                end_minute: 8 * 60,
                channels: vec![Channel::Sms],
            }),
            ..Default::default()
        };
        let set = |rules: Vec<Rule>| {
            Arc::new(RuleSet {
                rules,
                policy: quiet.clone(),
            })
        };
        let travel = rule("travel", MomentKind::RoamingArrival, None);
        let msisdn = Msisdn::from_u64(351_910_000_001).unwrap();
        let at = |text: &str| kairos_model::time::parse_rfc3339(text).unwrap();
        let events = [
            Event {
                ts: at("2026-07-01T00:00:00Z"),
                msisdn,
                origin: Origin { source: 0, position: 1 },
                body: EventBody::Customer(Customer::Upsert(Box::new(customer(None, None)))),
            },
            // 23:00 in Madrid: held until 08:00 there.
            Event {
                ts: at("2026-07-01T21:00:00Z"),
                msisdn,
                origin: Origin { source: 0, position: 2 },
                body: EventBody::Network(Network {
                    event: NetworkKind::LocationUpdate,
                    country: CountryCode::parse("ES").ok(),
                    mcc: None,
                    mnc: None,
                    cell: None,
                    imei: None,
                    peer: None,
                }),
            },
        ];
        for (replacement, expected) in [
            (vec![], Verdict::Suppressed(kairos_model::SuppressReason::RuleRemoved)),
            (
                vec![Rule {
                    version: "edited".into(),
                    ..travel.clone()
                }],
                Verdict::Sent,
            ),
        ] {
            let mut logic = SubscriberLogic::new(
                set(vec![travel.clone()]),
                Arc::new(DataflowStats::default()),
                false,
                None,
            );
            let (mut decisions, mut timers) = (Vec::new(), Vec::new());
            for event in &events {
                logic.apply(event, event.ts, &mut decisions, &mut timers);
            }
            assert!(decisions.is_empty(), "held, not decided yet");
            assert_eq!(timers.len(), 1);
            assert_eq!(timers[0].due, at("2026-07-02T06:00:00Z"));
            logic.set_rules(set(replacement));
            logic.fire(&timers[0].clone(), &mut decisions, &mut timers);
            assert_eq!(decisions.len(), 1);
            assert_eq!(decisions[0].verdict, expected);
            assert_eq!(decisions[0].action.send_at, at("2026-07-02T06:00:00Z"));
        }
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
        let mut logic = SubscriberLogic::new(
            Arc::new(RuleSet {
                rules: vec![rule],
                policy: Default::default(),
            }),
            Arc::clone(&stats),
            false,
            None,
        );
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
        let mut logic = SubscriberLogic::new(
            Arc::new(RuleSet {
                rules: vec![rule],
                policy: Default::default(),
            }),
            Arc::clone(&stats),
            false,
            None,
        );
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
