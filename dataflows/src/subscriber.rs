//! `SubscriberState`: the keyed operator that owns each subscriber's state, applies their
//! events in event-time order, detects moments and applies the contact policy.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kairos_model::event::{Customer, CustomerRecord, EventBody};
use kairos_model::{Action, CountryCode, Decision, Event, Millis, MomentKind, Msisdn, RuleSet, Verdict};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use crate::policy::{admit, ContactHistory};
use crate::{moments, subscriber_route, DataflowStats};

/// What the engine knows about one subscriber.
#[derive(Clone, Debug, Default)]
pub struct SubscriberState {
    customer: CustomerState,
    /// Serving country of the last network event that had one.
    last_country: Option<CountryCode>,
    contacts: ContactHistory,
}

#[derive(Clone, Debug, Default)]
enum CustomerState {
    #[default]
    Unknown,
    Known {
        since: Millis,
        record: Box<CustomerRecord>,
    },
    /// Erased by `"deleted": true`; remembered so an older record cannot resurrect it.
    Deleted {
        since: Millis,
    },
}

impl CustomerState {
    fn since(&self) -> Option<Millis> {
        match self {
            CustomerState::Unknown => None,
            CustomerState::Known { since, .. } | CustomerState::Deleted { since } => Some(*since),
        }
    }
}

/// Applies one subscriber's events, in order, and says what to decide.
pub struct SubscriberLogic {
    rules: Arc<RuleSet>,
    stats: Arc<DataflowStats>,
    states: HashMap<Msisdn, SubscriberState>,
}

impl SubscriberLogic {
    /// Logic for one worker's share of subscribers.
    pub fn new(rules: Arc<RuleSet>, stats: Arc<DataflowStats>) -> SubscriberLogic {
        SubscriberLogic {
            rules,
            stats,
            states: HashMap::new(),
        }
    }

    /// Number of subscribers with state on this worker.
    pub fn subscribers(&self) -> usize {
        self.states.len()
    }

    /// Applies one event and pushes the decisions it causes.
    pub fn apply(&mut self, event: &Event, decisions: &mut Vec<Decision>) {
        let state = self.states.entry(event.msisdn).or_default();
        match &event.body {
            EventBody::Customer(update) => {
                if state.customer.since().is_some_and(|since| event.ts < since) {
                    DataflowStats::bump(&self.stats.stale_customer_records);
                    return;
                }
                match update {
                    Customer::Upsert(record) => {
                        state.customer = CustomerState::Known {
                            since: event.ts,
                            record: record.clone(),
                        };
                    }
                    Customer::Deleted => {
                        // Contract §1: state and contact history are purged.
                        *state = SubscriberState {
                            customer: CustomerState::Deleted { since: event.ts },
                            ..Default::default()
                        };
                    }
                }
            }
            EventBody::Network(network) => {
                let previous = state.last_country;
                if network.country.is_some() {
                    state.last_country = network.country;
                }
                let CustomerState::Known { record, .. } = &state.customer else {
                    DataflowStats::bump(&self.stats.events_without_customer);
                    return;
                };
                if let Some(country) = moments::roaming_arrival(record, previous, network) {
                    DataflowStats::bump(&self.stats.moments);
                    let name = country.name();
                    for rule in self.rules.for_moment(MomentKind::RoamingArrival) {
                        let key = country.as_str();
                        let verdict = match admit(
                            &record.consent,
                            &state.contacts,
                            &rule.id,
                            key,
                            rule.channel,
                            rule.cooldown,
                            event.ts,
                        ) {
                            Ok(()) => {
                                state.contacts.record(&rule.id, key, event.ts);
                                Verdict::Sent
                            }
                            Err(reason) => Verdict::Suppressed(reason),
                        };
                        let (language, message) = rule.render(
                            record.language.as_deref(),
                            &[("country", key), ("country_name", name), ("offer", &rule.offer)],
                        );
                        let action = Action {
                            action_id: Action::id_for(&rule.id, event.msisdn, event.ts, key),
                            rule: rule.id.clone(),
                            rule_version: rule.version.clone(),
                            moment: MomentKind::RoamingArrival,
                            msisdn: event.msisdn,
                            household: None,
                            offer: rule.offer.clone(),
                            channel: rule.channel,
                            moment_ts: event.ts,
                            send_at: event.ts,
                            language,
                            message,
                        };
                        decisions.push(Decision {
                            action,
                            verdict,
                            moment_key: key.to_string(),
                        });
                    }
                }
            }
            EventBody::Usage(_) | EventBody::Selfcare(_) | EventBody::Topup(_) | EventBody::Response(_) => {
                if !matches!(state.customer, CustomerState::Known { .. }) {
                    DataflowStats::bump(&self.stats.events_without_customer);
                }
            }
        }
    }
}

/// The operator: exchanges events by subscriber, holds each until the frontier passes
/// `max(ts, T)`, then applies each instant's events in [`Event::apply_order`] and emits the
/// decisions at that instant.
pub fn subscriber_state<'scope>(
    events: StreamVec<'scope, Millis, Event>,
    rules: Arc<RuleSet>,
    stats: Arc<DataflowStats>,
) -> StreamVec<'scope, Millis, Decision> {
    let route = Exchange::new(|event: &Event| subscriber_route(event.msisdn));
    events.unary_frontier(route, "SubscriberState", move |_initial, _info| {
        let mut logic = SubscriberLogic::new(rules, stats);
        // Events waiting for the frontier, by the instant they apply at.
        let mut pending: BTreeMap<Millis, Vec<Event>> = BTreeMap::new();
        // A capability at or before every pending instant.
        let mut held: Option<Capability<Millis>> = None;
        let mut decisions = Vec::new();
        move |(input, frontier), output| {
            input.for_each_stamp(|stamp, data| {
                let Some(cap) = stamp.retain_least(output.output_index()) else {
                    return;
                };
                let epoch = *cap.time();
                for batch in data {
                    for event in batch.drain(..) {
                        pending.entry(event.ts.max(epoch)).or_default().push(event);
                    }
                }
                if held.as_ref().is_none_or(|h| h.time() > cap.time()) {
                    held = Some(cap);
                }
            });
            let Some(cap) = held.as_mut() else { return };
            // Every instant strictly before the frontier is complete.
            let complete = |instant: Millis| !frontier.frontier().less_equal(&instant);
            while let Some(entry) = pending.first_entry() {
                let instant = *entry.key();
                if !complete(instant) {
                    break;
                }
                let mut batch = entry.remove();
                batch.sort_by_key(|e| e.apply_order());
                for event in &batch {
                    logic.apply(event, &mut decisions);
                }
                if !decisions.is_empty() {
                    let at = cap.delayed(&instant);
                    output.session(&at).give_iterator(decisions.drain(..));
                }
            }
            match pending.keys().next() {
                Some(next) => cap.downgrade(next),
                None => held = None,
            }
        }
    })
}
