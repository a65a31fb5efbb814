//! The state kept per subscriber: the customer record, the serving country, data used in the
//! current billing cycle, which once-only moments have fired, and the contact history.

use chrono_tz::Tz;
use kairos_model::event::{Customer, CustomerRecord};
use kairos_model::{CountryCode, Millis, Msisdn};
use serde::{Deserialize, Serialize};

use crate::calendar::{cycle_containing, Cycle};
use crate::evidence::HouseholdState;
use crate::features::Activity;
use crate::lifecycle::Lifecycle;
use crate::policy::ContactHistory;

/// What the engine knows about one subscriber.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SubscriberState {
    pub customer: CustomerState,
    /// Serving country of the last network event that had one.
    pub country: Option<CountryCode>,
    /// Serving country of the network event with a country before that one.
    pub previous_country: Option<CountryCode>,
    /// Data used in the current billing cycle.
    pub data_cycle: Option<DataCycle>,
    /// Data used before any customer record said which cycle it belongs to: (ts, bytes).
    /// Counted into the cycles once a record arrives (contract §4: such events still
    /// update state).
    pub unassigned_data: Vec<(Millis, u64)>,
    /// Once-only moments already fired: (rule id, dedupe key).
    pub fired: Vec<(String, String)>,
    pub contacts: ContactHistory,
    /// Usage windows, self-care and top-ups, for conditions.
    pub activity: Activity,
    /// The subscriber's part in the household graph, and their household.
    pub household: HouseholdState,
    /// When the subscriber was last heard of, and the moments judged lately.
    pub recent: Recent,
    /// First heard of, the last activity of each kind, complaints and cancel visits, and
    /// the pending review of time-moving features.
    pub lifecycle: Lifecycle,
}

/// How long (event time) a judged moment is remembered, so that the same moment found again
/// within it is not judged again: measured back from the newest moment the subscriber had
/// judged (see [`Recent`]).
pub const JUDGED_WINDOW: Millis = 7 * 24 * 3_600_000;

/// How many judged moments a state remembers at most, whatever their age (a bound, far above
/// a week of a subscriber's moments).
pub const RECENT_MOMENTS: usize = 64;

/// How many handsets' once-only marks (`handset_ageing`) a state keeps; the oldest go first.
pub const HANDSETS_KEPT: usize = 16;

/// What a state remembers of its latest activity.
///
/// `judged` makes a moment found twice a single decision. Two events can find the same
/// moment — two arrivals in one country stamped in the same millisecond (a hand-over
/// ES→IT→ES→IT within 1 ms), an event delivered again later: same rule, subscriber,
/// instant and key, hence the same `action_id` (contract §2), and one id must have one
/// decision. The moments judged within [`JUDGED_WINDOW`] of the newest are remembered (at
/// most [`RECENT_MOMENTS`]); a repeat older than that is judged again (a cooldown then
/// usually suppresses it, under the same id).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recent {
    /// `ts` of the newest event about the subscriber (0 when not known: a state stored by
    /// a kairos before this field; restore counts it from the checkpoint instead).
    pub last_event: Millis,
    /// (moment instant, [`moment_tag`]) of the moments judged lately, in the order judged.
    pub judged: Vec<(Millis, u64)>,
}

impl Recent {
    /// The oldest instant still remembered: [`JUDGED_WINDOW`] before the newest.
    fn horizon(&self) -> Millis {
        let newest = self.judged.iter().map(|(at, _)| *at).max().unwrap_or(0);
        newest.saturating_sub(JUDGED_WINDOW)
    }

    /// Whether the moment with this instant and tag was judged already (within the window).
    pub fn judged(&self, at: Millis, tag: u64) -> bool {
        at >= self.horizon() && self.judged.contains(&(at, tag))
    }

    /// Remembers a judged moment; those that fell out of the window are forgotten (and the
    /// first judged, beyond [`RECENT_MOMENTS`]).
    pub fn remember(&mut self, at: Millis, tag: u64) {
        self.judged.push((at, tag));
        let horizon = self.horizon();
        self.judged.retain(|(at, _)| *at >= horizon);
        if self.judged.len() > RECENT_MOMENTS {
            self.judged.remove(0);
        }
    }
}

/// A stable 64-bit tag of a rule's moment (rule id, key; the instant is kept beside it):
/// FNV-1a, the same in every process and release, as a checkpoint needs.
pub fn moment_tag(rule: &str, key: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in rule.bytes().chain([0xff]).chain(key.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The customer record in force.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum CustomerState {
    #[default]
    Unknown,
    Known {
        /// `ts` of the record in force.
        since: Millis,
        record: Box<CustomerRecord>,
    },
    /// Erased by `"deleted": true`; remembered so an older record cannot resurrect it.
    Deleted { since: Millis },
}

/// How many data records are kept for a subscriber without a customer record.
pub const UNASSIGNED_DATA_KEPT: usize = 512;

/// Bytes used in one billing cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataCycle {
    pub start: Millis,
    pub end: Millis,
    pub used: u64,
}

/// What applying a customer record did.
#[derive(Debug, PartialEq, Eq)]
pub enum CustomerChange {
    /// Older than the record in force: ignored.
    Stale,
    Upserted,
    Deleted,
}

impl SubscriberState {
    /// The customer record in force, if any.
    pub fn record(&self) -> Option<&CustomerRecord> {
        match &self.customer {
            CustomerState::Known { record, .. } => Some(record),
            _ => None,
        }
    }

    /// Applies a customer record: a newer one (by `ts`) replaces the older as a whole; a
    /// deletion purges state and contact history (contract §1).
    pub fn apply_customer(&mut self, ts: Millis, update: &Customer) -> CustomerChange {
        let since = match &self.customer {
            CustomerState::Unknown => None,
            CustomerState::Known { since, .. } | CustomerState::Deleted { since } => Some(*since),
        };
        if since.is_some_and(|since| ts < since) {
            return CustomerChange::Stale;
        }
        match update {
            Customer::Upsert(record) => {
                let fee = |r: &CustomerRecord| r.plan.as_ref().and_then(|p| p.monthly_fee);
                if let (Some(before), Some(now)) = (self.record().and_then(fee), fee(record)) {
                    if now < before {
                        self.lifecycle.downgraded(ts);
                    }
                }
                self.customer = CustomerState::Known {
                    since: ts,
                    record: record.clone(),
                };
                CustomerChange::Upserted
            }
            Customer::Deleted => {
                *self = SubscriberState {
                    customer: CustomerState::Deleted { since: ts },
                    ..SubscriberState::default()
                };
                CustomerChange::Deleted
            }
        }
    }

    /// Counts data used at `ts` into its billing cycle and returns the cycle's total, or
    /// `None` when the record belongs to an earlier cycle than the one in progress (late).
    pub fn add_data(&mut self, ts: Millis, bytes: u64, tz: Tz, anchor_day: u8) -> Option<DataCycle> {
        let Cycle { start, end } = cycle_containing(ts, tz, anchor_day);
        let cycle = match self.data_cycle {
            Some(current) if current.start == start => DataCycle {
                used: current.used.saturating_add(bytes),
                ..current
            },
            Some(current) if start < current.start => return None,
            _ => DataCycle {
                start,
                end,
                used: bytes,
            },
        };
        self.data_cycle = Some(cycle);
        Some(cycle)
    }

    /// Keeps data used while no customer record is known, for at most
    /// [`UNASSIGNED_DATA_KEPT`] records (the oldest are dropped: they cannot matter after a
    /// month of usage).
    pub fn hold_data(&mut self, ts: Millis, bytes: u64) {
        if self.unassigned_data.len() == UNASSIGNED_DATA_KEPT {
            self.unassigned_data.remove(0);
        }
        self.unassigned_data.push((ts, bytes));
    }

    /// Counts the data held while no record was known into its billing cycles.
    pub fn assign_held_data(&mut self, tz: Tz, anchor_day: u8) {
        let mut held = std::mem::take(&mut self.unassigned_data);
        held.sort();
        for (ts, bytes) in held {
            self.add_data(ts, bytes, tz, anchor_day);
        }
    }

    /// Forgets every trace of the erased numbers in this (other) subscriber's state at
    /// instant `now` (`names`: their digits): household evidence and views, once-only marks
    /// and contact-history keys that name them. Whether anything changed.
    pub fn forget(
        &mut self,
        erased: &[Msisdn],
        names: &[String],
        now: Millis,
        evidence: &mut Vec<crate::households::EvidenceUpdate>,
    ) -> bool {
        let household = self.household.forget(erased, now, evidence);
        let fired = self.fired.len();
        self.fired
            .retain(|(_, key)| !names.iter().any(|n| key.contains(n.as_str())));
        let contacts = self.contacts.forget(names);
        household || contacts || self.fired.len() != fired
    }

    /// Whether a once-only moment of `rule` already fired for `key`.
    pub fn has_fired(&self, rule: &str, key: &str) -> bool {
        self.fired.iter().any(|(r, k)| r == rule && k == key)
    }

    /// Forgets every key `rule` fired for (a declared moment that stopped holding).
    pub fn unmark_fired(&mut self, rule: &str) {
        self.fired.retain(|(r, _)| r != rule);
    }

    /// Data used in the billing cycle in progress at `at`: 0 once that cycle has ended and
    /// no data has been used in the next one yet.
    pub fn cycle_used_at(&self, at: Millis) -> (Option<Millis>, u64) {
        match self.data_cycle {
            Some(cycle) if cycle.start <= at && at < cycle.end => (Some(cycle.start), cycle.used),
            _ => (None, 0),
        }
    }

    /// Records that a once-only moment fired. With `replaces`, the rule's earlier keys are
    /// forgotten (a new billing cycle makes the old one's irrelevant).
    /// Of a rule without `replaces` (one mark per handset), at most [`HANDSETS_KEPT`] marks
    /// are kept: a subscriber's sixteenth-last handset will not come back.
    pub fn mark_fired(&mut self, rule: &str, key: &str, replaces: bool) {
        if replaces {
            self.fired.retain(|(r, _)| r != rule);
        } else if self.fired.iter().filter(|(r, _)| r == rule).count() >= HANDSETS_KEPT {
            if let Some(oldest) = self.fired.iter().position(|(r, _)| r == rule) {
                self.fired.remove(oldest);
            }
        }
        self.fired.push((rule.to_string(), key.to_string()));
    }
}
