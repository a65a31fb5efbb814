//! What turns found moments into decisions: the rules in force, compiled once per worker
//! ([`Judges`]) — each rule's condition, the declared moments' `when` and `dedupe_key` —
//! and the contact policy's verdict for every candidate, best first. Judging is apart from
//! detecting (`detect.rs`) because declared moments are found by the same compiled
//! expressions that judge, and because caps and arbitration must see every moment found
//! together at once.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use kairos_model::event::{CustomerStatus, EventKind};
use kairos_model::rule::ActionClass;
use kairos_model::{Action, Decision, Millis, MomentKind, Msisdn, Rule, RuleSet, Stage, SuppressReason, Verdict};

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
    /// The lifecycle stages in file order, and their definitions (`None`: the catch-all).
    stages: Vec<Stage>,
    stage_definitions: Standing,
    /// The churn model's factors, in file order.
    factors: Standing,
    /// The fields of every declared moment, stage and churn factor that event time moves:
    /// the review timers' instants are their clocks' (empty: no reviews).
    clocked: Reads,
}

/// Conditions that decide where a subscriber stands — the stage definitions, the churn
/// factors — compiled, with what they read.
struct Standing {
    /// In file order (`None`: holds always).
    whens: Vec<Option<Expression>>,
    reads: Reads,
    /// After which events they can change (`None`: any event).
    triggers: Option<Vec<EventKind>>,
    /// Whether one reads something event time moves (then review timers decide again).
    clocked: bool,
}

impl Standing {
    fn new<'w>(whens: impl IntoIterator<Item = Option<&'w str>>) -> Standing {
        let whens: Vec<Option<Expression>> = whens.into_iter().map(|w| w.map(compile_or_never)).collect();
        let reads = Reads::union(whens.iter().flatten().map(|w| &w.reads));
        Standing {
            triggers: reads.triggers(),
            clocked: !reads.clocked().is_empty(),
            reads,
            whens,
        }
    }

    /// Whether `trigger` decides them again.
    fn due(&self, trigger: Trigger) -> bool {
        !self.whens.is_empty() && due(trigger, self.triggers.as_deref(), self.clocked)
    }

    /// Whether each holds for the subscriber of `source` (one whose evaluation fails is
    /// counted, and does not hold).
    fn holding<'s>(&'s self, source: &FieldSource<'_>, stats: &'s DataflowStats) -> impl Iterator<Item = bool> + 's {
        let context = self.reads.context(source);
        self.whens.iter().map(move |when| match when {
            None => true,
            Some(when) => condition::holds(&when.program, &context).unwrap_or_else(|_| {
                DataflowStats::bump(&stats.condition_errors);
                false
            }),
        })
    }
}

/// Why declared moments are evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Trigger {
    /// An event of this kind was applied: those that read what it can change.
    Event(EventKind),
    /// A customer record or a household change: every declared moment (whether a
    /// subscriber has a record decides whether anything fires at all).
    Everything,
    /// A review timer, or a rule set taking force: those that read what event time moves.
    Clock,
}

impl Trigger {
    /// What applying an event of `kind` evaluates.
    pub(super) fn after(kind: EventKind) -> Trigger {
        match kind {
            EventKind::Customer => Trigger::Everything,
            kind => Trigger::Event(kind),
        }
    }
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
    /// Whether it reads something event time moves (then review timers evaluate it).
    clocked: bool,
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
        let declared: Vec<DeclaredProgram> = rules
            .rules
            .iter()
            .filter_map(|r| {
                let declared = r.declared.as_ref()?;
                let when = compile_or_never(&declared.when);
                let key = declared.dedupe_key.as_deref().map(compile_or_never);
                let reads = Reads::union(std::iter::once(&when.reads).chain(key.as_ref().map(|k| &k.reads)));
                Some(DeclaredProgram {
                    triggers: reads.triggers(),
                    clocked: !reads.clocked().is_empty(),
                    reads,
                    rule: r.id.clone(),
                    when,
                    key,
                })
            })
            .collect();
        let definitions = &rules.stages.definitions;
        let stage_definitions = Standing::new(definitions.iter().map(|d| d.when.as_deref()));
        let factors = Standing::new(rules.churn.factors.iter().map(|f| Some(f.when.as_str())));
        let clocked = Reads::union(
            declared
                .iter()
                .map(|d| &d.reads)
                .chain([&stage_definitions.reads, &factors.reads]),
        )
        .clocked();
        Judges {
            stages: definitions.iter().map(|d| d.stage).collect(),
            stage_definitions,
            factors,
            clocked,
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
            previous_stage: moment.previous_stage,
        };
        let source = FieldSource::new(msisdn, state, record, moment.at, Some(fields), &self.rules);
        match condition::holds(&condition.program, &condition.reads.context(&source)) {
            Ok(holds) => holds,
            Err(_) => {
                DataflowStats::bump(&self.stats.condition_errors);
                false
            }
        }
    }

    /// Whether some declared moment reads what event time moves (so states need reviews).
    pub(super) fn has_clocks(&self) -> bool {
        !self.clocked.is_empty()
    }

    /// Sets the subscriber's review for the next instant a time-moving field of a declared
    /// moment may change after `at` (a restored state, whose timers are not stored).
    pub(super) fn schedule_review(
        &self,
        state: &mut SubscriberState,
        msisdn: Msisdn,
        at: Millis,
        timers: &mut Vec<Timer>,
    ) {
        if !self.has_clocks() {
            return;
        }
        let Some(record) = state.record().filter(|r| r.status != CustomerStatus::Terminated) else {
            return;
        };
        let next = self
            .clocked
            .next_change(&FieldSource::new(msisdn, state, record, at, None, &self.rules));
        if let Some(next) = next {
            review(state, msisdn, at, next, timers);
        }
    }

    /// Decides the subscriber's lifecycle stage at `at` — seen from the newest instant known
    /// of them, as reviews are — and returns whether it changed. A change from a stage
    /// decided before is a `lifecycle_change` moment, put in `found` (`None`: the stage
    /// changes without one, as when the stage definitions themselves changed). The first
    /// stage decided is no change.
    pub(super) fn stage(
        &self,
        state: &mut SubscriberState,
        msisdn: Msisdn,
        at: Millis,
        found: Option<&mut Vec<Moment>>,
    ) -> bool {
        let Some(record) = state.record() else { return false };
        let newest = at.max(state.recent.last_event);
        let stage = if record.status == CustomerStatus::Terminated {
            Some(Stage::Gone)
        } else {
            let source = FieldSource::new(msisdn, state, record, newest, None, &self.rules);
            let holding = self.stage_definitions.holding(&source, &self.stats);
            self.stages
                .iter()
                .zip(holding)
                .find_map(|(stage, holds)| holds.then_some(*stage))
        };
        let before = state.lifecycle.stage;
        let Some(stage) = stage.filter(|s| before != Some(*s)) else {
            return false;
        };
        state.lifecycle.stage = Some(stage);
        state.lifecycle.stage_since = newest;
        if let (Some(from), Some(found)) = (before, found) {
            found.push(Moment {
                kind: MomentKind::LifecycleChange,
                at: newest,
                key: stage.as_str().to_string(),
                rule: None,
                previous_country: None,
                previous_stage: Some(from),
                variables: vec![("from", from.as_str().to_string()), ("to", stage.as_str().to_string())],
            });
        }
        true
    }

    /// Scores the subscriber's churn risk at `at` — seen from the newest instant known of
    /// them, as stages are — and returns whether the score changed. A rise to the model's
    /// threshold or above from a score below it is a `churn_risk` moment, put in `found`
    /// (`None`: the score changes without one, as when the model itself changed). The first
    /// score is no rise. A terminated customer is not scored (their last score stays).
    pub(super) fn churn(
        &self,
        state: &mut SubscriberState,
        msisdn: Msisdn,
        at: Millis,
        found: Option<&mut Vec<Moment>>,
    ) -> bool {
        let Some(record) = state.record().filter(|r| r.status != CustomerStatus::Terminated) else {
            return false;
        };
        let newest = at.max(state.recent.last_event);
        let source = FieldSource::new(msisdn, state, record, newest, None, &self.rules);
        let holding = self
            .factors
            .holding(&source, &self.stats)
            .enumerate()
            .fold(0u64, |bits, (i, holds)| if holds { bits | 1 << i } else { bits });
        let before = state.lifecycle.churn;
        if before == Some(holding) {
            return false;
        }
        state.lifecycle.churn = Some(holding);
        let model = &self.rules.churn;
        let (risk, threshold) = (model.risk(holding), model.threshold);
        if let (Some(before), Some(found)) = (before, found) {
            if model.risk(before) < threshold && risk >= threshold {
                let reason = model.reasons(holding).first().copied().unwrap_or_default().to_string();
                found.push(Moment {
                    kind: MomentKind::ChurnRisk,
                    at: newest,
                    key: reason.clone(),
                    rule: None,
                    previous_country: None,
                    previous_stage: None,
                    variables: vec![("risk", format!("{risk:.2}")), ("reason", reason)],
                });
            }
        }
        true
    }

    /// Whether the stage definitions differ from `other`'s (a new rule set's).
    pub(super) fn same_stages(&self, other: &RuleSet) -> bool {
        self.rules.stages == other.stages
    }

    /// Whether the churn model differs from `other`'s.
    pub(super) fn same_churn(&self, other: &RuleSet) -> bool {
        self.rules.churn == other.churn
    }

    /// Declared moments: each whose `when` holds now, for a dedupe key it has not fired for
    /// while holding; those that stopped holding are forgotten, so they can happen again.
    /// `trigger` says which are evaluated. Afterwards the subscriber's next review is set
    /// for the instant a time-moving field they read next changes.
    pub(super) fn declared(
        &self,
        state: &mut SubscriberState,
        msisdn: Msisdn,
        at: Millis,
        trigger: Trigger,
        found: &mut Vec<Moment>,
        timers: &mut Vec<Timer>,
    ) {
        let mut trigger = trigger;
        let stages_due = self.stage_definitions.due(trigger);
        if stages_due && self.stage(state, msisdn, at, Some(&mut *found)) {
            // Every declared moment reads the stage, or may — and so may the churn factors.
            trigger = Trigger::Everything;
        }
        let churn_due = self.factors.due(trigger);
        if churn_due && self.churn(state, msisdn, at, Some(&mut *found)) {
            trigger = Trigger::Everything;
        }
        let due: Vec<&DeclaredProgram> = self
            .declared
            .iter()
            .filter(|d| due(trigger, d.triggers.as_deref(), d.clocked))
            .collect();
        if due.is_empty() && !stages_due && !churn_due {
            return;
        }
        let Some(record) = state.record() else { return };
        let reads = Reads::union(due.iter().map(|d| &d.reads));
        let source = FieldSource::new(msisdn, state, record, at, None, &self.rules);
        let context = reads.context(&source);
        // What evaluates them next when nothing happens to the subscriber — seen from the
        // newest instant known of them: a late event's own instant would hide what came
        // after it (the newer activity a silence counts from) and could end the reviews.
        // A terminated customer is sent nothing: no reviews for them.
        let newest = at.max(state.recent.last_event);
        let next_review = if record.status == CustomerStatus::Terminated {
            None
        } else if newest == at {
            self.clocked.next_change(&source)
        } else {
            self.clocked
                .next_change(&FieldSource::new(msisdn, state, record, newest, None, &self.rules))
        };
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
        if let Some(next) = next_review {
            review(state, msisdn, newest, next, timers);
        }
        for (declared, outcome) in due.iter().zip(outcomes) {
            match outcome {
                // Stopped holding — unless seen from a late event's instant, which cannot
                // tell what holds now.
                None if newest > at => {}
                None => state.unmark_fired(&declared.rule),
                Some(key) if state.has_fired(&declared.rule, &key) => {}
                Some(key) => found.push(Moment {
                    kind: MomentKind::Declared,
                    at,
                    key: key.clone(),
                    rule: Some(declared.rule.clone()),
                    previous_country: None,
                    previous_stage: None,
                    variables: vec![("key", key)],
                }),
            }
        }
    }
}

/// Whether what reads fields changed by `triggers` (`None`: any event; `clocked`: some
/// field event time moves) is evaluated for `trigger`.
fn due(trigger: Trigger, triggers: Option<&[EventKind]>, clocked: bool) -> bool {
    match (trigger, triggers) {
        (Trigger::Everything, _) => true,
        (Trigger::Clock, _) => clocked,
        (Trigger::Event(_), None) => true,
        (Trigger::Event(kind), Some(kinds)) => kinds.contains(&kind),
    }
}

/// Reviews stop this long after the subscriber's newest event: what only event time moves
/// is looked at again for a year and a month of silence at most (a moment on a longer
/// silence happens at the subscriber's next event instead).
pub const REVIEW_HORIZON: Millis = 400 * kairos_model::time::DAY;

/// Sets the subscriber's review for `next` unless one is pending at or before it (a pending
/// review past it becomes stale: `fire` ignores a review whose instant is not the state's).
fn review(state: &mut SubscriberState, msisdn: Msisdn, at: Millis, next: Millis, timers: &mut Vec<Timer>) {
    // Clocks do not know a condition's thresholds (days since grows every day, forever):
    // without a bound, event time jumping years ahead would review every subscriber once a
    // day all the way.
    if next > state.recent.last_event.saturating_add(REVIEW_HORIZON) {
        return;
    }
    // A review pending at `at` itself is kept: at one instant events are applied before
    // timers, so it has yet to fire (and a restore at `at` pushed it again).
    let pending = state.lifecycle.review_at;
    if pending >= at && pending <= next {
        return;
    }
    state.lifecycle.review_at = next;
    timers.push(Timer {
        due: next,
        msisdn,
        kind: TimerKind::Review,
    });
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
/// was terminated, opted out of its channel or withdrew consent, or its rule was removed
/// (then it no longer counts for caps).
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
        Some(record) if record.status == kairos_model::event::CustomerStatus::Terminated => {
            Verdict::Suppressed(SuppressReason::Terminated)
        }
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
