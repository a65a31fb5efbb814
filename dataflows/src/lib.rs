//! kairos's computation: events in, decisions out — timely dataflow, no I/O.
//!
//! ```text
//! events ──exchange(msisdn)──▶ SubscriberState ──▶ decisions
//!                               │  apply events in event-time order per subscriber
//!                               │  moments::roaming_arrival
//!                               └─ policy::{consent, cooldown}
//! ```
//!
//! Time is event time in milliseconds ([`Millis`]). Ingest sends each event at its input's
//! current epoch `T ≤ ts` (an event with `ts < T` is late: still applied, at `T`). The
//! subscriber operator holds every event until the input frontier passes `max(ts, T)`, then
//! applies that instant's events in a deterministic order, so the same input gives the same
//! decisions whatever the number of workers or the arrival interleaving.
//!
//! The per-subscriber state is a keyed timely operator for now; the shared differential
//! arrangements of features, households and rules come with the issues that need them.

pub mod calendar;
pub mod checkpoint;
pub mod condition;
pub mod features;
pub mod households;
pub mod moments;
pub mod policy;
pub mod state;
pub mod subscriber;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use kairos_model::{Decision, Event, Millis, RuleSet};
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::StreamVec;

use crate::checkpoint::{Durability, StateRecord};

/// Counters the dataflow keeps about what it saw; telemetry exports them.
#[derive(Debug, Default)]
pub struct DataflowStats {
    /// Events about subscribers with no customer record at that time (applied, never acted on).
    pub events_without_customer: AtomicU64,
    /// Customer records older than the one already held (ignored, contract §1).
    pub stale_customer_records: AtomicU64,
    /// Moments detected (before policy).
    pub moments: AtomicU64,
    /// Rule conditions that failed to evaluate (counted as not holding).
    pub condition_errors: AtomicU64,
}

impl DataflowStats {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Builds kairos's dataflow on a stream of decoded events: every decision, and (with
/// `durability`) the checkpoint records of the subscriber state.
pub fn decisions<'scope>(
    events: StreamVec<'scope, Millis, Event>,
    rules: Arc<RuleSet>,
    stats: Arc<DataflowStats>,
    durability: Option<Durability>,
) -> (
    StreamVec<'scope, Millis, Decision>,
    StreamVec<'scope, Millis, StateRecord>,
) {
    subscriber::subscriber_state(events, rules, stats, durability).ok_err(|output| output)
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
