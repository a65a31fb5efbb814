//! What turns found moments into decisions: the rules in force, compiled once per worker
//! ([`Judges`]) — each rule's condition, the declared moments' `when` and `dedupe_key` —
//! and the contact policy's verdict for every candidate, best first. Judging is apart from
//! detecting (`detect.rs`) because declared moments are found by the same compiled
//! expressions that judge, and because caps and arbitration must see every moment found
//! together at once.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use kairos_model::event::EventKind;
use kairos_model::rule::ActionClass;
use kairos_model::{Action, Decision, Millis, MomentKind, Msisdn, Rule, RuleSet, SuppressReason, Verdict};

use super::detect::{Moment, HANDSET_ONCE};
use super::{Timer, TimerKind};
use crate::condition::{self, Expression, FieldSource, MomentFields, Reads};
use crate::households::HouseholdView;
use crate::policy::{admit, Deferred, Exposure, Subject};
use crate::state::{moment_tag, SubscriberState};
use crate::DataflowStats;

/// What judges moments: the rules in force, compiled once per worker, and the counters.
pub(super) struct Judges {
    pub(super) rules: Arc<RuleSet>,
    /// Each rule's compiled condition, by rule id.
    conditions: HashMap<String, Expression>,
    /// The declared moments' expressions, in rule order.
    declared: Vec<DeclaredProgram>,
    stats: Arc<DataflowStats>,
    /// How long marketing actions are kept for caps and arbitration.
    horizon: Millis,
}

/// A declared moment's compiled `when` and `dedupe_key`.
struct DeclaredProgram {
    rule: String,
    when: Expression,
    key: Option<Expression>,
    /// What `when` and `dedupe_key` read: all its context needs.
    reads: Reads,
    /// The events after which it can change (`None`: any event); it is also evaluated
    /// whenever the subscriber's household changes.
    triggers: Option<Vec<EventKind>>,
}

impl Judges {
    /// Compiles a rule set's conditions and declared moments (and finds what each reads).
    pub(super) fn new(rules: Arc<RuleSet>, stats: Arc<DataflowStats>) -> Judges {
        let conditions = rules
            .rules
            .iter()
            .filter_map(|r| {
                let condition = r.condition.as_deref()?;
                Some((r.id.clone(), compile_or_never(condition)))
            })
            .collect();
        let declared = rules
            .rules
            .iter()
            .filter_map(|r| {
                let declared = r.declared.as_ref()?;
                let when = compile_or_never(&declared.when);
                let key = declared.dedupe_key.as_deref().map(compile_or_never);
                let reads = Reads::union(std::iter::once(&when.reads).chain(key.as_ref().map(|k| &k.reads)));
                Some(DeclaredProgram {
                    triggers: reads.triggers(),
                    reads,
                    rule: r.id.clone(),
                    when,
                    key,
                })
            })
            .collect();
        Judges {
            horizon: crate::policy::horizon(&rules.policy),
            rules,
            conditions,
            declared,
            stats,
        }
    }

    /// Turns moments into decisions: once-only moments are marked, every rule of the moment
    /// whose condition holds is judged by the contact policy, and every outcome is recorded.
    /// The candidates of one call (moments found together) are judged best first —
    /// marketing rules by arbitration score, then rule id — so the best takes the room
    /// caps and arbitration leave, and the others are suppressed with the reason.
    pub(super) fn decide(
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
            // The same rule's moment at the same instant with the same key is one moment
            // (one `action_id`), however many events found it: it is judged once.
            let tag = moment_tag(&rule.id, &moment.key);
            if state.recent.judged(moment.at, tag) {
                DataflowStats::bump(&self.stats.moments_repeated);
                continue;
            }
            match judge(policy, self.horizon, rule, state, msisdn, moment, timers) {
                Judged::Decided(decision) => {
                    state.recent.remember(moment.at, tag);
                    decisions.push(decision);
                }
                Judged::Held => {
                    state.recent.remember(moment.at, tag);
                    self.stats.held.fetch_add(1, Ordering::Relaxed);
                }
                Judged::Nobody => {}
            }
        }
    }

    /// Whether the rule's condition (if any) holds for this moment.
    fn condition_holds(&self, rule: &Rule, state: &SubscriberState, msisdn: Msisdn, moment: &Moment) -> bool {
        let Some(condition) = self.conditions.get(&rule.id) else {
            return true;
        };
        let Some(record) = state.record() else { return false };
        let fields = MomentFields {
            kind: moment.kind,
            name: rule.moment_name(),
            key: &moment.key,
            previous_country: moment.previous_country,
            threshold: rule.threshold,
        };
        let source = FieldSource::new(msisdn, state, record, moment.at, Some(fields));
        match condition::holds(&condition.program, &condition.reads.context(&source)) {
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
    pub(super) fn declared(
        &self,
        state: &mut SubscriberState,
        msisdn: Msisdn,
        at: Millis,
        after: Option<EventKind>,
        found: &mut Vec<Moment>,
    ) {
        if self.declared.is_empty() {
            return;
        }
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
        let reads = Reads::union(due.iter().map(|d| &d.reads));
        let context = reads.context(&FieldSource::new(msisdn, state, record, at, None));
        let mut outcomes = Vec::with_capacity(due.len());
        for declared in &due {
            let outcome = condition::holds(&declared.when.program, &context).and_then(|holds| match &declared.key {
                _ if !holds => Ok(None),
                None => Ok(Some(String::new())),
                Some(key) => condition::key(&key.program, &context).map(Some),
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
pub(super) fn deliver(
    state: &mut SubscriberState,
    action_id: &str,
    rules: &RuleSet,
    decisions: &mut Vec<Decision>,
) -> bool {
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

/// An expression that was checked when its rules were loaded; one that no longer compiles
/// never holds.
fn compile_or_never(source: &str) -> Expression {
    Expression::compile(source).unwrap_or_else(|_| Expression::never())
}
