//! The subscriber operator's two halves: [`SubscriberLogic`] (here) is everything that
//! happens to one subscriber when an event, a timer or a household change is applied;
//! [`subscriber_state`] (`operator.rs`) is the timely operator that decides *when* — event
//! time, checkpoints, capabilities. They are apart so the logic can be tested without a
//! dataflow and the operator read without the business rules.
//!
//! - `detect.rs`: the moments defined in code (roaming arrival, data-pack threshold, handset
//!   ageing), found on the state after an event or a timer.
//! - `judge.rs`: what turns found moments into decisions — the rules in force, compiled
//!   once per worker; conditions, declared moments and the contact policy.
//! - `operator.rs`: the keyed timely operator.
//!
//! What a CEL expression can read, and how its values are taken from the state, is
//! `condition`'s vocabulary, not this module's.

mod detect;
mod judge;
mod operator;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono_tz::Tz;
use kairos_model::event::{CustomerStatus, EventBody, ResponseOutcome, UsageKind};
use kairos_model::{Decision, Event, Millis, Msisdn, RuleSet};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use crate::erased::ErasedIndex;
use crate::evidence::{cell_hash, contact_slot, held_milli, utc_day};
use crate::households::{Evidence, EvidenceUpdate, HouseholdConfig, HouseholdView, Slot, ViewUpdate};
use crate::state::{CustomerChange, CustomerState, SubscriberState};
use crate::{lifecycle, moments, DataflowStats, Retention};
use detect::{cycle_of, data_pack_check, handset_check, record_imei, roaming_check};
use judge::{deliver, Judges, Trigger};
pub use operator::{subscriber_state, Broadcasts, SubscriberOutput};

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
    /// A state without a customer record may have gone without events for
    /// [`Retention::forget_non_customers_after_ms`]: then it is forgotten.
    Forget,
    /// A time-moving field a declared moment reads may change now with no event (a window
    /// slides, a day of silence passes): the moments that read such fields are evaluated.
    /// Only the review whose instant the state holds (`lifecycle.review_at`) counts.
    Review,
}

/// One worker's share of subscribers, and the rules they are judged by.
pub struct SubscriberLogic {
    /// The rules in force, compiled: what turns moments into decisions.
    judges: Judges,
    stats: Arc<DataflowStats>,
    states: FxHashMap<Msisdn, SubscriberState>,
    /// Subscribers changed since the last checkpoint; `None` when nothing checkpoints
    /// (a replay), so no work is spent on it.
    dirty: Option<FxHashSet<Msisdn>>,
    /// How households are found; `None` when they are not.
    households: Option<HouseholdConfig>,
    /// Household evidence produced and not yet sent to the graph.
    pub evidence: Vec<EvidenceUpdate>,
    /// Numbers erased before the restored checkpoint (their states are not in `states`).
    erased: Arc<ErasedIndex>,
    /// Numbers erased in this run, by the instant: for a few graph steps after it, views
    /// that name them (computed from evidence before the erasure) are dropped.
    recently_erased: BTreeMap<Msisdn, Millis>,
    /// How long states that are not customers' are kept without events.
    retention: Retention,
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
        SubscriberLogic {
            judges: Judges::new(rules, Arc::clone(&stats)),
            stats,
            states: FxHashMap::default(),
            dirty: track_changes.then(FxHashSet::default),
            households,
            evidence: Vec::new(),
            erased: Arc::default(),
            recently_erased: BTreeMap::new(),
            retention: Retention::default(),
        }
    }

    /// Keeps states that are not customers' as `retention` says.
    pub fn with_retention(mut self, retention: Retention) -> SubscriberLogic {
        self.retention = retention;
        self
    }

    /// Whether `view` names a number erased within the last few graph steps before `now`.
    fn names_erased(&mut self, view: &HouseholdView, now: Millis) -> bool {
        if self.recently_erased.is_empty() {
            return false;
        }
        // Views computed before an erasure apply at most a step after it: three are plenty.
        let keep = self.households.as_ref().map_or(0, |h| 3 * h.granularity_ms.max(1));
        self.recently_erased.retain(|_, at| at.saturating_add(keep) >= now);
        self.recently_erased.keys().any(|m| view.names(*m))
    }

    /// The numbers erased before the restored checkpoint.
    pub fn set_erased(&mut self, erased: Arc<ErasedIndex>) {
        self.erased = erased;
    }

    /// Forgets the numbers erased at instant `now` in every other state of this worker:
    /// household evidence naming them leaves the graph now, views naming them are dropped
    /// (the graph sends new ones), once-only marks and contact-history keys naming them go.
    /// One pass over the worker's states for all of an instant's erasures.
    pub fn forget(&mut self, erased: &[Msisdn], now: Millis) {
        if erased.is_empty() {
            return;
        }
        self.stats.erasures.fetch_add(erased.len() as u64, Ordering::Relaxed);
        self.recently_erased.extend(erased.iter().map(|m| (*m, now)));
        let names: Vec<String> = erased.iter().map(ToString::to_string).collect();
        let mut changed = Vec::new();
        for (msisdn, state) in &mut self.states {
            if erased.contains(msisdn) {
                continue;
            }
            if state.forget(erased, &names, now, &mut self.evidence) {
                changed.push(*msisdn);
            }
        }
        if self.households.is_none() {
            // No graph to tell: what would have gone to it is dropped.
            self.evidence.clear();
        }
        for msisdn in changed {
            self.touch(msisdn);
        }
    }

    /// Puts a rule set in force (at start, or a live change at an instant): its conditions
    /// and declared moments are compiled here, once per worker. State is kept by rule id, so
    /// cooldowns and once-only marks survive edits of a rule; an action a removed rule had
    /// held for quiet hours is not sent (see [`deliver`]).
    ///
    /// When the new rules declare moments on what event time moves, those are evaluated at
    /// `now` for every subscriber (in number order), and each subscriber's review is set.
    pub fn set_rules(
        &mut self,
        rules: Arc<RuleSet>,
        now: Millis,
        decisions: &mut Vec<Decision>,
        timers: &mut Vec<Timer>,
    ) {
        // New stage definitions move subscribers between stages with no change of theirs, and
        // a new churn model scores them anew: at `now`, without lifecycle_change or
        // churn_risk moments.
        let restage = !self.judges.same_stages(&rules);
        let rescore = !self.judges.same_churn(&rules);
        // New weights: every member's holding weighs anew in their household.
        let reweigh = self.households.is_some() && self.judges.rules.stickiness != rules.stickiness;
        self.judges = Judges::new(rules, Arc::clone(&self.stats));
        let clocks = self.judges.has_clocks();
        if !clocks && !restage && !rescore && !reweigh {
            return;
        }
        let mut numbers: Vec<Msisdn> = self.states.keys().copied().collect();
        numbers.sort_unstable();
        for msisdn in numbers {
            let Some(state) = self.states.get_mut(&msisdn) else {
                continue;
            };
            if state.record().is_none() {
                continue;
            }
            if restage {
                self.judges.stage(state, msisdn, now, None);
            }
            if restage || rescore {
                self.judges.churn(state, msisdn, now, None);
            }
            if reweigh {
                let held = held_milli(state.record(), &self.judges.rules.stickiness);
                state.household.reweigh(msisdn, held, now, &mut self.evidence);
            }
            if self.households.is_some() && (restage || rescore) {
                share_risk(&self.judges.rules, state, msisdn, &mut self.evidence);
            }
            if clocks {
                let mut found = Vec::new();
                self.judges
                    .declared(state, msisdn, now, Trigger::Clock, &mut found, timers);
                self.judges.decide(state, msisdn, found, decisions, timers);
            }
            self.touch(msisdn);
        }
    }

    /// Installs restored states and returns the timers they need (those at or after `from`:
    /// earlier ones had their chance before the checkpoint).
    pub fn restore(&mut self, restored: Vec<(Msisdn, SubscriberState)>, from: Millis) -> (Vec<Timer>, Vec<ViewUpdate>) {
        let mut timers = Vec::new();
        let mut views = Vec::new();
        for (msisdn, mut state) in restored {
            // A state stored before `recent` was: its last event is taken as the checkpoint's.
            if state.recent.last_event == 0 {
                state.recent.last_event = from;
            }
            timers.extend(forget_timer(&self.retention, msisdn, &state, from));
            for (at, view, diff) in std::mem::take(&mut state.household.pending_views) {
                views.push((msisdn, view, at, diff));
            }
            let mut found = Vec::new();
            if let Some(timer) = handset_check(&mut state, msisdn, 0, from.saturating_sub(1), &mut found) {
                timers.push(timer);
            }
            // The pending review, and one for what the rules in force read now (the rules
            // may not be those the state was stored under).
            if state.lifecycle.review_at >= from {
                timers.push(Timer {
                    due: state.lifecycle.review_at,
                    msisdn,
                    kind: TimerKind::Review,
                });
            }
            self.judges.schedule_review(&mut state, msisdn, from, &mut timers);
            timers.extend(state.contacts.deferred.iter().map(|deferred| Timer {
                due: deferred.action.send_at.max(from),
                msisdn,
                kind: TimerKind::Deliver {
                    action_id: deferred.action.action_id.clone(),
                },
            }));
            if self.households.is_some() {
                let held = held_milli(state.record(), &self.judges.rules.stickiness);
                let risk = risk_milli(&state, &self.judges.rules);
                state.household.re_emit(msisdn, (held, risk), from, &mut self.evidence);
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
            if self.names_erased(&view, at) {
                continue;
            }
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

    /// Where each customer of this worker stands at `at`.
    pub fn standings(&self, at: Millis) -> Vec<crate::standing::Standing> {
        self.states
            .iter()
            .filter_map(|(msisdn, state)| crate::standing::standing(*msisdn, state, &self.judges.rules, at))
            .collect()
    }

    /// Every customer's churn risk and lifecycle stage at `at`, as [`Self::standings`] would
    /// give them (the same stage for a rule set without stage definitions).
    pub fn risks_and_stages(&self, at: Millis) -> Vec<(Millis, Msisdn, f32, kairos_model::Stage)> {
        let model = &self.judges.rules.churn;
        self.states
            .iter()
            .filter_map(|(msisdn, state)| {
                let record = state.record()?;
                let stage = crate::standing::stage_of(state, record);
                let risk = state.lifecycle.risk(model).unwrap_or(0.0) as f32;
                Some((at, *msisdn, risk, stage))
            })
            .collect()
    }

    /// Every state, taken (when event time has ended).
    pub fn take_states(&mut self) -> impl Iterator<Item = (Msisdn, SubscriberState)> {
        std::mem::take(&mut self.states).into_iter()
    }

    /// The states changed since the last call, for a checkpoint: `None` for a state that
    /// was forgotten (its stored copy goes).
    pub fn take_changes(&mut self) -> Vec<(Msisdn, Option<SubscriberState>)> {
        let mut changed: Vec<Msisdn> = self.dirty.as_mut().map(|d| d.drain().collect()).unwrap_or_default();
        changed.sort();
        changed.into_iter().map(|m| (m, self.states.get(&m).cloned())).collect()
    }

    /// Applies one event at instant `now` (`now ≥ event.ts`; greater for a late event) and
    /// pushes the decisions and timers it causes.
    pub fn apply(&mut self, event: &Event, now: Millis, decisions: &mut Vec<Decision>, timers: &mut Vec<Timer>) {
        let erased = &self.erased;
        let mut created = false;
        let state = self.states.entry(event.msisdn).or_insert_with(|| {
            created = true;
            SubscriberState {
                customer: match erased.since(event.msisdn) {
                    Some(since) => CustomerState::Deleted { since },
                    None => CustomerState::Unknown,
                },
                ..SubscriberState::default()
            }
        });
        // An erased number's events build no state until a newer customer record arrives.
        if matches!(state.customer, CustomerState::Deleted { .. }) && !matches!(event.body, EventBody::Customer(_)) {
            DataflowStats::bump(&self.stats.events_for_erased);
            return;
        }
        state.recent.last_event = state.recent.last_event.max(event.ts);
        state.lifecycle.apply(event);
        // A new state without a customer record (one that this event, a record, does not
        // give it) is forgotten after a while without events (the timer looks again when it
        // fires; one per state is enough).
        if created && !matches!(event.body, EventBody::Customer(_)) {
            timers.extend(forget_timer(&self.retention, event.msisdn, state, event.ts));
        }
        // `touch`, on the field: `state` borrows `states` (one lookup per event).
        if let Some(dirty) = self.dirty.as_mut() {
            dirty.insert(event.msisdn);
        }
        let mut found = Vec::new();
        // The actions held for quiet hours go with the erased state: each is decided
        // `erased`, without the number.
        let held_actions = match &event.body {
            EventBody::Customer(kairos_model::event::Customer::Deleted) => state.contacts.deferred.clone(),
            _ => Vec::new(),
        };
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
        let was_terminated = state.record().is_some_and(|r| r.status == CustomerStatus::Terminated);
        match &event.body {
            EventBody::Customer(update) => match state.apply_customer(event.ts, update) {
                CustomerChange::Stale => DataflowStats::bump(&self.stats.stale_customer_records),
                CustomerChange::Deleted => {
                    // Actions held for the erased subscriber go with the rest of the state.
                    self.stats.held.fetch_sub(held, Ordering::Relaxed);
                    decisions.extend(held_actions.into_iter().map(|deferred| Decision {
                        action: deferred.action,
                        verdict: kairos_model::Verdict::Suppressed(kairos_model::SuppressReason::Erased),
                        moment_key: String::new(),
                        class: deferred.class,
                        detail: None,
                    }));
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
                        let weights = &self.judges.rules.stickiness;
                        household.facts(event.msisdn, (record.as_ref(), weights), event.ts, &mut self.evidence);
                        // The line terminated: the members see one of them leave.
                        let terminated = record.as_ref().is_some_and(|r| r.status == CustomerStatus::Terminated);
                        if terminated && !was_terminated {
                            household.soft(
                                config,
                                Evidence::Left(event.msisdn),
                                event.ts,
                                now,
                                1,
                                &mut self.evidence,
                            );
                        }
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
                    Some(record) => roaming_check(record, previous, network, event.ts, &mut found),
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
                    data_pack_check(&self.judges.rules, state, event.ts, cycle.start, cycle.used, &mut found);
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
        let trigger = Trigger::after(event.kind());
        self.judges
            .declared(state, event.msisdn, event.ts, trigger, &mut found, timers);
        if self.households.is_some() {
            share_risk(&self.judges.rules, state, event.msisdn, &mut self.evidence);
        }
        self.judges.decide(state, event.msisdn, found, decisions, timers);
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
        if !self.states.contains_key(&msisdn) {
            return;
        }
        let mut net: BTreeMap<&HouseholdView, isize> = BTreeMap::new();
        for (view, diff) in updates {
            if !self.names_erased(view, now) {
                *net.entry(view).or_default() += diff;
            }
        }
        let Some(state) = self.states.get_mut(&msisdn) else {
            return;
        };
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
        let mut found = Vec::new();
        self.judges
            .declared(state, msisdn, now, Trigger::Everything, &mut found, timers);
        share_risk(&self.judges.rules, state, msisdn, &mut self.evidence);
        self.judges.decide(state, msisdn, found, decisions, timers);
    }

    /// Fires a timer whose instant event time has passed, if it still holds.
    pub fn fire(&mut self, timer: &Timer, decisions: &mut Vec<Decision>, timers: &mut Vec<Timer>) {
        let Some(state) = self.states.get(&timer.msisdn) else {
            return;
        };
        if timer.kind == TimerKind::Forget {
            match forget_timer(&self.retention, timer.msisdn, state, timer.due) {
                // Heard of since: looked at again then.
                Some(later) if later.due > timer.due => timers.push(later),
                Some(_) => self.forget_non_customer(timer.msisdn, timer.due),
                // A customer now (or forgetting was turned off): kept.
                None => {}
            }
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
                if deliver(state, action_id, &self.judges.rules, decisions) {
                    self.stats.held.fetch_sub(1, Ordering::Relaxed);
                }
                return;
            }
            TimerKind::Review => {
                // Stale: a review for another instant was set since.
                if state.lifecycle.review_at != timer.due {
                    return;
                }
                state.lifecycle.review_at = 0;
                self.judges
                    .declared(state, timer.msisdn, timer.due, Trigger::Clock, &mut found, timers);
                if self.households.is_some() {
                    share_risk(&self.judges.rules, state, timer.msisdn, &mut self.evidence);
                }
            }
            TimerKind::Forget => return,
        }
        self.judges.decide(state, timer.msisdn, found, decisions, timers);
    }
}

impl SubscriberLogic {
    /// Forgets the state of a number that is not a customer, at instant `now`: its
    /// household evidence leaves the graph, and the next checkpoint deletes its stored copy.
    /// The number is not erased: a later event about it starts a new state.
    fn forget_non_customer(&mut self, msisdn: Msisdn, now: Millis) {
        let Some(mut state) = self.states.remove(&msisdn) else {
            return;
        };
        if self.households.is_some() {
            state.household.erase(msisdn, now, &mut self.evidence);
        }
        DataflowStats::bump(&self.stats.forgotten);
        self.touch(msisdn);
    }
}

/// The timer that forgets a non-customer's state, if it is one and forgetting is on: due
/// `forget_non_customers_after_ms` after its last event, not before `from`.
fn forget_timer(retention: &Retention, msisdn: Msisdn, state: &SubscriberState, from: Millis) -> Option<Timer> {
    let after = retention.forget_non_customers_after_ms;
    (after > 0 && matches!(state.customer, CustomerState::Unknown)).then(|| Timer {
        due: state.recent.last_event.saturating_add(after).max(from),
        msisdn,
        kind: TimerKind::Forget,
    })
}

/// The churn risk a customer has in the household graph, in thousandths: the score in
/// force (`None` before one, for a terminated customer — who is no longer at risk — and
/// when the model has no factors).
fn risk_milli(state: &SubscriberState, rules: &RuleSet) -> Option<u32> {
    state.record().filter(|r| r.status != CustomerStatus::Terminated)?;
    let risk = state.lifecycle.risk(&rules.churn)?;
    Some((risk.clamp(0.0, 1.0) * 1000.0).round() as u32)
}

/// Puts the subscriber's churn risk in the household graph when it changed there (the
/// graph finds each household's member most at risk), at the newest instant known of them,
/// as the score is decided (so the graph's updates of one subscriber never go back in time).
fn share_risk(rules: &RuleSet, state: &mut SubscriberState, msisdn: Msisdn, out: &mut Vec<EvidenceUpdate>) {
    let risk = risk_milli(state, rules);
    let at = state.recent.last_event;
    state.household.rescore(msisdn, risk, at, out);
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
            // The slot of the week, worked out once for the contact and the night.
            let slot = contact_slot(config, event.ts, tz);
            if let Some(peer) = network.peer.filter(|p| *p != me) {
                let contact = Evidence::Contact(me, peer, utc_day(event.ts), slot);
                household.once(config, contact, event.ts, now, out);
            }
            if let Some(cell) = network.cell.as_deref().filter(|c| !c.is_empty()) {
                if slot == Slot::Night {
                    household.once(config, Evidence::Night(me, cell_hash(cell)), event.ts, now, out);
                }
            }
        }
        EventBody::Usage(usage) if usage.kind != UsageKind::Data => {
            if let Some(peer) = usage.peer.filter(|p| *p != me) {
                let contact = Evidence::Contact(me, peer, utc_day(event.ts), contact_slot(config, event.ts, tz));
                household.once(config, contact, event.ts, now, out);
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
            match visit.page.as_str() {
                lifecycle::CANCEL_PAGE => household.soft(config, Evidence::Cancel(me), event.ts, now, 1, out),
                lifecycle::COMPLAINT_PAGE => household.soft(config, Evidence::Complaint(me), event.ts, now, 1, out),
                _ => {}
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kairos_model::event::{Consent, Customer, Network, NetworkKind};
    use kairos_model::{Channel, CountryCode, CustomerRecord, MomentKind, Origin, Rule, Verdict};

    use super::detect::HANDSET_ONCE;
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
            status: Default::default(),
            status_reason: None,
            products: Vec::new(),
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
    fn an_erasure_forgets_the_number_in_other_states_and_its_events_build_no_state() {
        let config = HouseholdConfig::default();
        let mut logic = SubscriberLogic::new(
            Arc::new(RuleSet::default()),
            Arc::new(DataflowStats::default()),
            true,
            Some(config),
        );
        let (s, x) = (
            Msisdn::from_u64(351_910_000_001).unwrap(),
            Msisdn::from_u64(351_910_000_002).unwrap(),
        );
        let at = |ts, msisdn, body| Event {
            ts,
            msisdn,
            origin: Origin {
                source: 0,
                position: ts,
            },
            body,
        };
        let upsert = |ts, msisdn| {
            at(
                ts,
                msisdn,
                EventBody::Customer(Customer::Upsert(Box::new(customer(None, None)))),
            )
        };
        let call = |ts, from, to| {
            at(
                ts,
                from,
                EventBody::Network(Network {
                    event: NetworkKind::Call,
                    country: CountryCode::parse("PT").ok(),
                    mcc: None,
                    mnc: None,
                    cell: None,
                    imei: None,
                    peer: Some(to),
                }),
            )
        };
        let (mut decisions, mut timers) = (Vec::new(), Vec::new());
        for event in [upsert(1, s), upsert(1, x), call(10, s, x)] {
            logic.apply(&event, event.ts, &mut decisions, &mut timers);
        }
        logic
            .states
            .get_mut(&s)
            .unwrap()
            .mark_fired("competitor-member", &x.to_string(), false);
        logic.take_changes();
        logic.evidence.clear();

        // X is erased at 100: on X's worker its state goes; on every worker, what names X.
        logic.apply(
            &at(100, x, EventBody::Customer(Customer::Deleted)),
            100,
            &mut decisions,
            &mut timers,
        );
        logic.forget(&[x], 100);
        let other = &logic.states[&s];
        assert!(other.household.evidence.keys().all(|(_, e)| !e.names(x)));
        assert!(!other.has_fired("competitor-member", &x.to_string()));
        // The graph hears the call leave now, and its expiry is cancelled.
        let call_evidence = |e: &Evidence| matches!(e, Evidence::Contact(a, b, 0, _) if *a == s && *b == x);
        let retracted: isize = logic
            .evidence
            .iter()
            .filter(|(e, _, _)| call_evidence(e))
            .map(|(_, t, d)| if *t == 100 { *d } else { 0 })
            .sum();
        assert!(retracted < 0, "{:?}", logic.evidence);
        let net: isize = logic
            .evidence
            .iter()
            .filter(|(e, _, _)| call_evidence(e))
            .map(|(_, _, d)| d)
            .sum();
        assert_eq!(net, 0, "the expiry's retraction is cancelled: gone for good");
        let changed: Vec<Msisdn> = logic.take_changes().into_iter().map(|(m, _)| m).collect();
        assert_eq!(changed, vec![s, x], "both reach the next checkpoint");

        // X's own later events build nothing; a newer record brings X back.
        let before = logic.states[&x].clone();
        logic.apply(&call(200, x, s), 200, &mut decisions, &mut timers);
        assert_eq!(logic.states[&x], before);
        assert_eq!(logic.stats.events_for_erased.load(Ordering::Relaxed), 1);
        assert!(logic.take_changes().is_empty());
        logic.apply(&upsert(300, x), 300, &mut decisions, &mut timers);
        assert!(logic.states[&x].record().is_some());

        // After a restart the erased number is known only by its hash: still no state.
        let y = Msisdn::from_u64(351_910_000_003).unwrap();
        let salt = b"salt".to_vec();
        logic.set_erased(Arc::new(ErasedIndex::new(
            salt.clone(),
            [(ErasedIndex::key(&salt, y), 50)],
        )));
        logic.apply(&call(400, y, s), 400, &mut decisions, &mut timers);
        assert!(matches!(
            logic.states[&y].customer,
            CustomerState::Deleted { since: 50 }
        ));
        assert!(logic.states[&y].household.evidence.is_empty());
        logic.apply(&upsert(40, y), 400, &mut decisions, &mut timers);
        assert!(
            logic.states[&y].record().is_none(),
            "an older record does not resurrect it"
        );
    }

    #[test]
    fn an_erased_subscribers_held_actions_are_decided_erased_without_the_number() {
        let mut logic = SubscriberLogic::new(
            Arc::new(RuleSet::default()),
            Arc::new(DataflowStats::default()),
            true,
            None,
        );
        let x = Msisdn::from_u64(351_910_000_002).unwrap();
        let action = kairos_model::Action {
            action_id: "a1".into(),
            rule: "r".into(),
            rule_version: "v".into(),
            moment: "roaming_arrival".into(),
            msisdn: x,
            household: None,
            offer: "O".into(),
            channel: Channel::Sms,
            moment_ts: 5,
            send_at: 1_000,
            language: "en".into(),
            message: "m".into(),
        };
        let state = logic.states.entry(x).or_default();
        state.contacts.deferred.push(crate::policy::Deferred {
            action,
            class: Default::default(),
            moment_key: "ES".into(),
        });
        let (mut decisions, mut timers) = (Vec::new(), Vec::new());
        let deleted = Event {
            ts: 10,
            msisdn: x,
            origin: Origin { source: 0, position: 1 },
            body: EventBody::Customer(Customer::Deleted),
        };
        logic.apply(&deleted, 10, &mut decisions, &mut timers);
        assert_eq!(decisions.len(), 1);
        assert!(decisions[0].is_erased());
        let json = decisions[0].to_json();
        assert!(
            !json.contains(&x.to_string()) && json.contains("\"reason\":\"erased\""),
            "{json}"
        );
    }

    #[test]
    fn a_fired_timer_is_a_change_to_checkpoint() {
        let rules = RuleSet {
            rules: vec![rule("handset", MomentKind::HandsetAgeing, None)],
            policy: Default::default(),
            stages: Default::default(),
            stickiness: Default::default(),
            churn: Default::default(),
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
        assert!(changes[0].1.as_ref().unwrap().has_fired(HANDSET_ONCE, "1"));
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
                stages: Default::default(),
                stickiness: Default::default(),
                churn: Default::default(),
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
            logic.set_rules(
                set(replacement),
                at("2026-07-02T06:00:00Z"),
                &mut decisions,
                &mut timers,
            );
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
                stages: Default::default(),
                stickiness: Default::default(),
                churn: Default::default(),
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
                stages: Default::default(),
                stickiness: Default::default(),
                churn: Default::default(),
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

    fn event_at(ts: Millis, msisdn: Msisdn, body: EventBody) -> Event {
        Event {
            ts,
            msisdn,
            origin: Origin {
                source: 0,
                position: ts,
            },
            body,
        }
    }

    fn attach(ts: Millis, msisdn: Msisdn, country: &str) -> Event {
        event_at(
            ts,
            msisdn,
            EventBody::Network(Network {
                event: NetworkKind::Attach,
                country: CountryCode::parse(country).ok(),
                mcc: None,
                mnc: None,
                cell: None,
                imei: None,
                peer: None,
            }),
        )
    }

    #[test]
    fn the_same_moment_found_by_two_events_is_decided_once() {
        let rules = RuleSet {
            rules: vec![rule("roaming-welcome", MomentKind::RoamingArrival, None)],
            policy: Default::default(),
            stages: Default::default(),
            stickiness: Default::default(),
            churn: Default::default(),
        };
        let mut logic = SubscriberLogic::new(Arc::new(rules), Arc::new(DataflowStats::default()), true, None);
        let msisdn = Msisdn::from_u64(351_910_000_001).unwrap();
        let upsert = event_at(
            1,
            msisdn,
            EventBody::Customer(Customer::Upsert(Box::new(customer(None, None)))),
        );
        let (mut decisions, mut timers) = (Vec::new(), Vec::new());
        logic.apply(&upsert, 1, &mut decisions, &mut timers);
        // ES, back home, ES again: all within one millisecond, two arrivals in ES at 100.
        for event in [
            attach(100, msisdn, "ES"),
            attach(100, msisdn, "PT"),
            attach(100, msisdn, "ES"),
        ] {
            logic.apply(&event, 100, &mut decisions, &mut timers);
        }
        assert_eq!(decisions.len(), 1, "{decisions:?}");
        assert_eq!(decisions[0].verdict, Verdict::Sent);
        assert_eq!(logic.stats.moments_repeated.load(Ordering::Relaxed), 1);
        // What was judged is part of the state: a restart from a checkpoint between the two
        // events judges the second no more than the run without one.
        let (_, state) = logic.take_changes().pop().unwrap();
        let mut restarted = SubscriberLogic::new(
            Arc::clone(&logic.judges.rules),
            Arc::new(DataflowStats::default()),
            true,
            None,
        );
        restarted.restore(vec![(msisdn, state.unwrap())], 100);
        restarted.apply(&attach(100, msisdn, "PT"), 100, &mut decisions, &mut timers);
        restarted.apply(&attach(100, msisdn, "ES"), 100, &mut decisions, &mut timers);
        assert_eq!(decisions.len(), 1, "{decisions:?}");
        // Another arrival at another instant is another moment.
        for event in [attach(200, msisdn, "PT"), attach(300, msisdn, "ES")] {
            restarted.apply(&event, event.ts, &mut decisions, &mut timers);
        }
        assert_eq!(decisions.len(), 2, "{decisions:?}");
        assert_ne!(decisions[0].action.action_id, decisions[1].action.action_id);
    }

    #[test]
    fn a_non_customers_state_is_forgotten_after_its_retention_and_a_customers_is_kept() {
        let mut logic = SubscriberLogic::new(
            Arc::new(RuleSet::default()),
            Arc::new(DataflowStats::default()),
            true,
            Some(HouseholdConfig::default()),
        )
        .with_retention(Retention {
            forget_non_customers_after_ms: 1_000,
        });
        let (roamer, customer_number) = (
            Msisdn::from_u64(34_600_000_001).unwrap(),
            Msisdn::from_u64(351_910_000_001).unwrap(),
        );
        let call = |ts, from, to| {
            event_at(
                ts,
                from,
                EventBody::Network(Network {
                    event: NetworkKind::Call,
                    country: CountryCode::parse("PT").ok(),
                    mcc: None,
                    mnc: None,
                    cell: None,
                    // A handset's holder is evidence the graph hears at once.
                    imei: Some(format!("{}", from.as_u64() % 1000)),
                    peer: Some(to),
                }),
            )
        };
        let upsert = event_at(
            0,
            customer_number,
            EventBody::Customer(Customer::Upsert(Box::new(customer(None, None)))),
        );
        let (mut decisions, mut timers) = (Vec::new(), Vec::new());
        for event in [
            upsert,
            call(10, roamer, customer_number),
            call(10, customer_number, roamer),
        ] {
            logic.apply(&event, event.ts, &mut decisions, &mut timers);
        }
        let forget: Vec<Timer> = std::mem::take(&mut timers);
        assert_eq!(
            forget,
            vec![Timer {
                due: 1_010,
                msisdn: roamer,
                kind: TimerKind::Forget
            }],
            "one timer, for the number without a record"
        );
        logic.apply(&call(500, roamer, customer_number), 500, &mut decisions, &mut timers);
        assert!(timers.is_empty(), "the state's timer is already set");
        logic.take_changes();
        logic.evidence.clear();

        // At 1,010 the roamer was heard of 510 ms ago: looked at again at 1,500.
        logic.fire(&forget[0], &mut decisions, &mut timers);
        assert!(logic.states.contains_key(&roamer));
        let again = std::mem::take(&mut timers);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].due, 1_500);
        // At 1,500, a thousand milliseconds without events: forgotten, evidence and all.
        logic.fire(&again[0], &mut decisions, &mut timers);
        assert!(!logic.states.contains_key(&roamer));
        assert!(
            logic.states.contains_key(&customer_number),
            "a customer's state is kept"
        );
        assert!(timers.is_empty());
        assert_eq!(logic.stats.forgotten.load(Ordering::Relaxed), 1);
        assert!(
            logic.evidence.iter().all(|(_, t, d)| *t == 1_500 && *d < 0) && !logic.evidence.is_empty(),
            "the roamer's evidence leaves the graph: {:?}",
            logic.evidence
        );
        // The next checkpoint deletes the stored copy.
        assert_eq!(logic.take_changes(), vec![(roamer, None)]);
        // A state restored from a checkpoint gets its timer back; a customer's gets none.
        let mut restarted = SubscriberLogic::new(
            Arc::new(RuleSet::default()),
            Arc::new(DataflowStats::default()),
            true,
            None,
        )
        .with_retention(Retention {
            forget_non_customers_after_ms: 1_000,
        });
        let mut unknown = SubscriberState::default();
        unknown.recent.last_event = 700;
        let known = logic.states[&customer_number].clone();
        let (restored, _) = restarted.restore(vec![(roamer, unknown), (customer_number, known)], 1_200);
        assert_eq!(
            restored,
            vec![Timer {
                due: 1_700,
                msisdn: roamer,
                kind: TimerKind::Forget
            }]
        );
    }
}
