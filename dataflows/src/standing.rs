//! Where a customer stands as event time ends — lifecycle stage, stickiness, churn risk and
//! its reasons, household: one line of a replay's `subscribers.jsonl` (contract §5.2).

use kairos_model::event::CustomerStatus;
use kairos_model::{Millis, Msisdn, RuleSet, Stage};

use crate::condition::FieldSource;
use crate::state::SubscriberState;

/// One customer's standing at an instant.
#[derive(Clone, Debug, PartialEq)]
pub struct Standing {
    pub msisdn: Msisdn,
    /// The household id, while one is known.
    pub household: Option<String>,
    pub lifecycle: Stage,
    pub stickiness: f64,
    pub churn_risk: f64,
    /// The strongest first, at most four.
    pub churn_reasons: Vec<String>,
    /// The names of the churn factors that hold, in the file's order (the ones that lower
    /// the risk too): what a fit of the weights reads.
    pub churn_factors: Vec<String>,
}

/// The standing of the subscriber of `state` at `at` under `rules`; `None` for a number that
/// is no customer (never had a record, or was erased).
pub fn standing(msisdn: Msisdn, state: &SubscriberState, rules: &RuleSet, at: Millis) -> Option<Standing> {
    let record = state.record()?;
    let source = FieldSource::new(msisdn, state, record, at, None, rules);
    let lifecycle = stage_of(state, record);
    Some(Standing {
        msisdn,
        household: state.household.view.as_ref().map(|v| v.id()),
        lifecycle,
        stickiness: source.stickiness(),
        churn_risk: source.churn_risk(),
        churn_reasons: source.churn_reasons().into_iter().map(str::to_string).collect(),
        churn_factors: state
            .lifecycle
            .churn
            .map(|holding| rules.churn.holding(holding).into_iter().map(str::to_string).collect())
            .unwrap_or_default(),
    })
}

/// The lifecycle stage of a customer. A rule set without stage definitions (one built in
/// code) decides none: a terminated customer is still gone, anyone else stable.
pub fn stage_of(state: &SubscriberState, record: &kairos_model::CustomerRecord) -> Stage {
    state.lifecycle.stage.unwrap_or(match record.status {
        CustomerStatus::Terminated => Stage::Gone,
        _ => Stage::Stable,
    })
}
