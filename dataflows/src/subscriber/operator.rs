//! `SubscriberState`, the timely operator around [`SubscriberLogic`]: it owns event time —
//! what waits for the frontier, in which order an instant's inputs are applied, when a
//! checkpoint is consistent, which capabilities are still needed. Everything about one
//! subscriber is the logic's; this file only decides *when* the logic is called, so that the
//! same input gives the same calls whatever the number of workers or the arrival
//! interleaving.

use std::collections::BTreeMap;
use std::sync::Arc;

use kairos_model::{Decision, Event, Millis, Msisdn, RuleSet};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;
use timely::progress::frontier::MutableAntichain;

use super::{SubscriberLogic, Timer, TimerKind};
use crate::checkpoint::{Durability, StateRecord};
use crate::households::{EvidenceUpdate, HouseholdConfig, HouseholdView, ViewUpdate};
use crate::{subscriber_route, DataflowStats, Retention};

/// What waits in the operator for the frontier to pass its instant.
enum Pending {
    /// A change of a subscriber's household (from the graph).
    View(Msisdn, HouseholdView, isize),
    /// An event, with the epoch it was sent at.
    Event(Event, Millis),
    Timer(Timer),
    /// A new rule set, in force from this instant on.
    Rules(Arc<RuleSet>),
    /// A number erased at this instant (on every worker: its traces in other states go).
    Erased(Msisdn),
}

/// The operator's output: decisions, and (with durability) checkpoint records.
pub type SubscriberOutput = Result<Decision, StateRecord>;

/// What every worker receives whole: rule sets at the instant they take force, and erased
/// numbers with the `ts` of their deletion.
pub struct Broadcasts<'scope> {
    pub rules: StreamVec<'scope, Millis, RuleSet>,
    pub erasures: StreamVec<'scope, Millis, (Msisdn, Millis)>,
}

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
// The streams in and the settings of one operator: grouping them would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn subscriber_state<'scope>(
    events: StreamVec<'scope, Millis, Event>,
    views: StreamVec<'scope, Millis, ViewUpdate>,
    broadcast: Broadcasts<'scope>,
    rules: Arc<RuleSet>,
    stats: Arc<DataflowStats>,
    durability: Option<Durability>,
    households: Option<HouseholdConfig>,
    (retention, observe): (Retention, crate::Observe),
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
    let Broadcasts {
        rules: rule_updates,
        erasures,
    } = broadcast;
    let mut rules_in = builder.new_input(rule_updates, timely::dataflow::channels::pact::Pipeline);
    // Erasures arrive on every worker too (broadcast upstream): (number, `ts`).
    let mut erasures_in = builder.new_input(erasures, timely::dataflow::channels::pact::Pipeline);
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
        let mut logic = SubscriberLogic::new(rules, stats, durability.is_some(), households).with_retention(retention);
        if let Some(durability) = &durability {
            logic.set_erased(Arc::clone(&durability.erased));
        }
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
        let crate::Observe {
            mut final_states,
            standings_at: mut snapshot,
            daily,
        } = observe;
        let (daily_at, daily_sink) = daily.unzip();
        let mut daily_at: std::collections::VecDeque<Millis> = daily_at.unwrap_or_default().into();
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
            erasures_in.for_each_stamp(|stamp, data| {
                let Some(epoch) = hold(&stamp) else { return };
                for batch in data {
                    for (msisdn, ts) in batch.drain(..) {
                        pending.entry(ts.max(epoch)).or_default().push(Pending::Erased(msisdn));
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
                && !frontiers[2].less_than(&requested)
                && !frontiers[3].less_than(&requested);
            let mut checkpoint = (requested > last_checkpoint).then_some(requested);
            loop {
                let next = pending.keys().next().copied();
                // Where everyone stands at the instant asked for: once nothing before it can
                // still come, and before anything at it applies.
                let ready =
                    |at: Millis| next.is_none_or(|n| n >= at) && (closed || passed(frontiers, at.saturating_sub(1)));
                if let Some((at, _)) = &snapshot {
                    let at = *at;
                    if ready(at) {
                        if let Some((_, sink)) = snapshot.take() {
                            let standings = logic.standings(at);
                            sink.lock().unwrap_or_else(|p| p.into_inner()).extend(standings);
                        }
                    }
                }
                while let (Some(&at), Some(sink)) = (daily_at.front(), daily_sink.as_ref()) {
                    if !ready(at) {
                        break;
                    }
                    daily_at.pop_front();
                    let risks = logic.risks_and_stages(at);
                    sink.lock().unwrap_or_else(|p| p.into_inner()).extend(risks);
                }
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
                                state: state.map(Box::new),
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
                let mut erased = Vec::new();
                for item in pending.remove(&instant).unwrap_or_default() {
                    match item {
                        Pending::View(msisdn, view, diff) => changed.entry(msisdn).or_default().push((view, diff)),
                        Pending::Event(event, _) => events.push(event),
                        Pending::Timer(timer) => due.push(timer),
                        // In force for everything at this instant, on every worker.
                        Pending::Rules(rules) => logic.set_rules(rules, instant, &mut decisions, &mut timers),
                        Pending::Erased(msisdn) => erased.push(msisdn),
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
                // After the instant's events (the erased subscriber's own deletion among them),
                // in a deterministic order.
                erased.sort();
                erased.dedup();
                logic.forget(&erased, instant);
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
                        // A timer already due (a handset bought long before the event that
                        // told of it) fires at this instant: event time never goes back.
                        let at = timer.due.max(instant);
                        pending.entry(at).or_default().push(Pending::Timer(timer));
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
            // Event time has ended and everything held is applied: the states as they end.
            if closed && pending.is_empty() {
                if let Some(sink) = final_states.take() {
                    sink.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(logic.take_states());
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
