//! kairos's computation: events in, decisions out — timely dataflow, no I/O.
//!
//! ```text
//! events ──exchange(msisdn)──▶ SubscriberState ──▶ decisions (and checkpoint records)
//!                               │  apply events in event-time order per subscriber
//!                               │  moments, declared moments, conditions
//!                               │  policy::{consent, cooldown}
//!                               └─ household evidence ──▶ households::graph (differential)
//!                                        ▲                         │
//!                                        └── views, one step later ◀┘  (feedback loop)
//! ```
//!
//! Time is event time in milliseconds ([`Millis`]). Ingest sends each event at its input's
//! current epoch `T ≤ ts` (an event with `ts < T` is late: still applied, at `T`). The
//! subscriber operator holds every event until the input frontier passes `max(ts, T)`, then
//! applies that instant's events in a deterministic order, so the same input gives the same
//! decisions whatever the number of workers or the arrival interleaving.
//!
//! The per-subscriber state is a keyed timely operator: moments are sequential state
//! machines over one subscriber's events. What spans subscribers — the household graph — is
//! differential dataflow: evidence as updates with expiry, strengths as sums in the diffs,
//! connected components by label propagation, incremental as links come and go.

pub mod calendar;
pub mod checkpoint;
pub mod condition;
pub mod erased;
pub mod evidence;
pub mod features;
pub mod households;
pub mod lifecycle;
pub mod moments;
pub mod policy;
pub mod standing;
pub mod state;
pub mod subscriber;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use differential_dataflow::AsCollection;
use kairos_model::event::{Customer, EventBody};
use kairos_model::{Decision, Event, Millis, RuleSet};
use timely::dataflow::operators::core::Map;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::core::ToStream;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{ConnectLoop, Feedback};
use timely::dataflow::StreamVec;

use crate::checkpoint::{Durability, StateRecord};
use crate::households::{HouseholdConfig, ViewUpdate};

/// Counters the dataflow keeps about what it saw; telemetry exports them.
#[derive(Debug, Default)]
pub struct DataflowStats {
    /// Events about subscribers with no customer record at that time (applied, never acted on).
    pub events_without_customer: AtomicU64,
    /// Events about erased subscribers (`"deleted": true`, no newer record since): they
    /// build no state.
    pub events_for_erased: AtomicU64,
    /// Erasures whose traces were looked for in the other subscribers' states.
    pub erasures: AtomicU64,
    /// Customer records older than the one already held (ignored, contract §1).
    pub stale_customer_records: AtomicU64,
    /// Moments detected (before policy).
    pub moments: AtomicU64,
    /// Moments found again for a rule, subscriber, instant and key already judged (two
    /// events that tell of one moment): not judged again.
    pub moments_repeated: AtomicU64,
    /// States of numbers that are not customers (no customer record), forgotten after
    /// [`Retention::forget_non_customers_after_ms`] without an event.
    pub forgotten: AtomicU64,
    /// Rule conditions that failed to evaluate (counted as not holding).
    pub condition_errors: AtomicU64,
    /// Events applied to subscriber state (the dataflow's updates).
    pub updates: AtomicU64,
    /// Actions held for quiet hours right now (deferred, not yet due).
    pub held: AtomicI64,
    /// Members whose component of links was above `max_household` and was split (see
    /// `households::graph_counting`), right now.
    pub households_split: Arc<AtomicI64>,
}

impl DataflowStats {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// How long what is not about a customer is kept (event time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// A state without a customer record — an inbound roamer's, a number seen only in
    /// usage or signalling — is forgotten this long after the last event about it
    /// (`TimerKind::Forget`); 0 keeps such states for ever.
    pub forget_non_customers_after_ms: Millis,
}

impl Retention {
    /// 30 days: an inbound roamer's stay, with room; usage windows reach back no further.
    pub const DEFAULT_FORGET_AFTER: Millis = 30 * 24 * 3_600_000;
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            forget_non_customers_after_ms: Retention::DEFAULT_FORGET_AFTER,
        }
    }
}

/// What kairos's dataflow produces.
pub struct Outputs<'scope> {
    /// Every decision.
    pub decisions: StreamVec<'scope, Millis, Decision>,
    /// With durability: the checkpoint records of the subscriber state.
    pub state: StreamVec<'scope, Millis, StateRecord>,
    /// Every change of a subscriber's household: (msisdn, view, time, diff).
    pub households: StreamVec<'scope, Millis, ViewUpdate>,
}

/// The subscriber states as event time ended, one list for every worker (a replay's
/// `subscribers.jsonl` is made from them).
pub type FinalStates = Arc<std::sync::Mutex<Vec<(kairos_model::Msisdn, state::SubscriberState)>>>;

/// Where customers stand at an instant, from every worker.
pub type Standings = Arc<std::sync::Mutex<Vec<standing::Standing>>>;

/// Every customer's churn risk and lifecycle stage at instants: (instant, number, risk,
/// stage), from every worker.
pub type DailyStandings = Arc<std::sync::Mutex<Vec<(Millis, kairos_model::Msisdn, f32, kairos_model::Stage)>>>;

/// What a replay asks the dataflow to hand back besides the decisions.
#[derive(Clone, Debug, Default)]
pub struct Observe {
    /// The states as event time ends, once the input has closed and what was held is applied.
    pub final_states: Option<FinalStates>,
    /// Where every customer stands at an instant `T`: after everything before `T` (events,
    /// timers, household changes) is applied and before anything at `T` — the scores a
    /// churn report holds against who left after `T`.
    pub standings_at: Option<(Millis, Standings)>,
    /// Every customer's risk and stage at each of these instants (ascending), taken as
    /// `standings_at` is: a churn report's day-by-day series, lighter than a standing.
    pub daily: Option<(Vec<Millis>, DailyStandings)>,
}

/// Builds kairos's dataflow on a stream of decoded events: every decision, (with
/// `durability`) the checkpoint records of the subscriber state, and the households; what
/// `observe` asks for is put where it says.
// The streams in and the settings of the dataflow: grouping them would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn decisions<'scope>(
    events: StreamVec<'scope, Millis, Event>,
    rules: Arc<RuleSet>,
    rule_updates: Option<StreamVec<'scope, Millis, RuleSet>>,
    stats: Arc<DataflowStats>,
    durability: Option<Durability>,
    households: &HouseholdConfig,
    retention: Retention,
    observe: Observe,
) -> Outputs<'scope> {
    let scope = events.scope();
    // A rule set sent by any worker at instant `T` is in force on every worker from `T` on.
    let rule_updates = rule_updates
        .unwrap_or_else(|| Vec::<RuleSet>::new().to_stream(scope))
        .broadcast();
    // An erasure seen by any worker reaches every worker, where other subscribers' states
    // may name the number.
    let erasures = events
        .clone()
        .flat_map(|event| match event.body {
            EventBody::Customer(Customer::Deleted) => Some((event.msisdn, event.ts)),
            _ => None,
        })
        .broadcast();
    let broadcasts = subscriber::Broadcasts {
        rules: rule_updates,
        erasures,
    };
    if !households.enabled {
        let none = Vec::<ViewUpdate>::new().to_stream(scope);
        let (outputs, _) = subscriber::subscriber_state(
            events,
            none.clone(),
            broadcasts,
            rules,
            stats,
            durability,
            None,
            (retention, observe.clone()),
        );
        let (decisions, state) = outputs.ok_err(|output| output);
        return Outputs {
            decisions,
            state,
            households: none,
        };
    }
    // A view computed for the step ending at `t` applies one step later, so the subscribers
    // run a step ahead of the graph instead of waiting for it at every step.
    let (feedback, views) = scope.feedback(households.granularity_ms.max(1));
    let config = Some(households.clone());
    let split = Some(Arc::clone(&stats.households_split));
    let (outputs, evidence) = subscriber::subscriber_state(
        events,
        views,
        broadcasts,
        rules,
        stats,
        durability,
        config,
        (retention, observe.clone()),
    );
    let (decisions, state) = outputs.ok_err(|output| output);
    let households = households::graph_counting(evidence.as_collection(), households, split)
        .inner
        .map(|((msisdn, view), time, diff)| (msisdn, view, time, diff));
    households.clone().connect_loop(feedback);
    Outputs {
        decisions,
        state,
        households,
    }
}

/// The worker a subscriber's state lives on, of `peers`: what timely's exchange does with
/// [`subscriber_route`] (a remainder; a mask for powers of two, which is the same).
pub fn subscriber_worker(msisdn: kairos_model::Msisdn, peers: usize) -> usize {
    (subscriber_route(msisdn) % peers as u64) as usize
}

/// The hash that places a subscriber's state: a stable mix of the number, so that
/// neighbouring numbers spread over workers.
pub fn subscriber_route(msisdn: kairos_model::Msisdn) -> u64 {
    let mut x = msisdn.as_u64().wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
