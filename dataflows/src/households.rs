//! Households: the subscribers who live together, found continuously from the evidence
//! their events leave, in differential dataflow.
//!
//! ```text
//! SubscriberState ── evidence updates (+w at t, −w when it expires) ──▶ delay to granularity
//!   facts (account, address, fee)      ─▶ hard links: same account / same address (capped)
//!   calls & SMS: a record per caller,  ─▶ soft links: a pair's contact pattern (reciprocal,
//!     callee, UTC day, slot of the week     many days, evenings and weekends, a share of
//!   nights under a cell (hashed id)          each one's contacts; few days: also nights
//!                                            under one cell), hubs (call centres, corner
//!   top-ups paid for another                 shops, kiosks) dropped
//!   a self-care login to another's account
//!   a handset moving between holders   ─▶ hand-down links
//!                                       ─▶ propagate: connected components, label = the
//!                                          oldest member (first seen, then number)
//!                                       ─▶ per household: decision maker, value, accounts,
//!                                          cancel intents, complaints, members who left, the
//!                                          member most at risk of leaving, a competitor's
//!                                          number they all call
//!                                       ─▶ (msisdn, HouseholdView) ──feedback──▶ SubscriberState
//! ```
//!
//! Evidence is an update in the collection at the instant it happens and its retraction when
//! it leaves the window (aligned to the end of its UTC day, so that a subscriber's state can
//! re-emit exactly what is still in force after a restart). Strengths are sums carried in the
//! diffs (`count`), not lists of events. Times are delayed to `granularity_ms` so that the
//! label propagation runs once per step of event time, not once per millisecond.

use std::collections::BTreeMap;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use differential_dataflow::VecCollection;
use kairos_model::time::DAY;
use kairos_model::{Millis, Msisdn};
use serde::{Deserialize, Serialize};

use crate::subscriber_route;

/// How households are found. Every knob is documented in `kairos.example.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HouseholdConfig {
    /// Find households at all.
    pub enabled: bool,
    /// How long soft evidence counts (days, after the end of the UTC day it happened).
    pub window_days: u64,
    /// Households are recomputed once per this much event time (ms).
    pub granularity_ms: u64,
    /// No longer used (calls are judged by [`ContactPattern`] since 1.1); accepted so that
    /// older configuration files still load.
    pub call_threshold: isize,
    /// No longer used; accepted so that older configuration files still load.
    pub evening_weight: isize,
    /// No longer used; accepted so that older configuration files still load.
    pub day_weight: isize,
    /// Local hours [from, to) that count as evening (on weekdays; any hour of a weekend day
    /// outside the night is family time too).
    pub evening_hours: (u32, u32),
    /// Local hours [from, to) that count as night: calls then are neither family nor work
    /// time, and the cell serving a subscriber then is where they sleep.
    pub night_hours: (u32, u32),
    /// Calls/SMS link two members only when, within the window, there were contacts between
    /// them on at least this many distinct days (UTC)…
    pub contact_min_days: u32,
    /// … of which at least this many in an evening or at the weekend (local time of the
    /// caller), both having called or texted the other…
    pub contact_min_family_days: u32,
    /// … and the pair's contacts are at least this share (per cent) of each one's contacts
    /// with everybody (family are each other's top contacts).
    pub contact_min_share_percent: u32,
    /// Such calls link alone only on at least this many distinct days; below it they also
    /// need the two to sleep under the same cell (`min_shared_nights`).
    pub contact_alone_days: u32,
    /// Nights (UTC days with a sighting in `night_hours`) on which both were served by one
    /// cell that, with calls of the family pattern, link them. A cell covers a whole street:
    /// nights alone never link anybody.
    pub min_shared_nights: u32,
    /// Top-ups one paid for another within the window that link them.
    pub payer_threshold: isize,
    /// More members than this on one account or address: a business, not a household.
    pub max_shared: usize,
    /// A subscriber with more strong call partners than this is a hub (call centre): their
    /// call links are ignored.
    pub max_call_partners: usize,
    /// A payer topping up more subscribers than this is a shop: their payer links are ignored.
    pub max_payees: usize,
    /// A self-care account used by more subscribers than this links none of them.
    pub max_login_users: usize,
    /// A handset with more holders than this in the window (a refurbisher) links none.
    pub max_handset_holders: usize,
    /// An off-net number strongly tied to at least this many members is a likely member on
    /// a competitor.
    pub competitor_min_members: usize,
    /// An off-net number that more members than this call or text in the window (strongly or
    /// not) is a service (a call centre, a taxi line, a bank), never a competitor's member.
    pub competitor_max_callers: usize,
    /// An off-net number strongly tied to members of more households than this is a service
    /// too: a member on a competitor is family to one household (two, with their parents').
    pub competitor_max_households: usize,
    /// The most members a household may have. A component of links above it is a sign of
    /// wrong links (friends of friends percolating): it is split by dropping its soft links,
    /// call links first, never accepted (see [`households_within`]).
    pub max_household: usize,
}

impl Default for HouseholdConfig {
    fn default() -> HouseholdConfig {
        HouseholdConfig {
            enabled: true,
            window_days: 30,
            granularity_ms: 600_000,
            call_threshold: 12,
            evening_weight: 3,
            day_weight: 1,
            evening_hours: (18, 23),
            night_hours: (0, 6),
            contact_min_days: 6,
            contact_min_family_days: 3,
            contact_min_share_percent: 5,
            contact_alone_days: 15,
            min_shared_nights: 3,
            payer_threshold: 1,
            max_shared: 8,
            max_call_partners: 8,
            max_payees: 4,
            max_login_users: 6,
            max_handset_holders: 3,
            competitor_min_members: 2,
            competitor_max_callers: 10,
            competitor_max_households: 2,
            max_household: 10,
        }
    }
}

impl HouseholdConfig {
    /// When evidence of event time `ts` leaves the window.
    pub fn expiry(&self, ts: Millis) -> Millis {
        (ts / DAY + 1 + self.window_days).saturating_mul(DAY)
    }
}

/// What a subscriber's customer record says about their household.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Facts {
    /// When the subscriber was first seen with a record: the oldest member founds the
    /// household and names it.
    pub first_seen: Millis,
    pub account: String,
    pub address: Option<String>,
    pub fee_cents: u64,
    pub postpaid: bool,
}

/// One piece of evidence about who belongs with whom.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Evidence {
    /// The subscriber's facts in force.
    Facts(Msisdn, Facts),
    /// Calls or SMS from the first to the second (the weight is the diff).
    Call(Msisdn, Msisdn),
    /// The first paid a top-up for the second.
    Paid(Msisdn, Msisdn),
    /// The subscriber used this self-care account.
    Login(Msisdn, String),
    /// The handset (IMEI) is held by the subscriber since the instant.
    Holder(String, Millis, Msisdn),
    /// The subscriber visited the self-care cancel page.
    Cancel(Msisdn),
    /// On the UTC day, the first called or texted the second in this part of the caller's
    /// local week (one record per caller, callee, day and slot; weight 1).
    Contact(Msisdn, Msisdn, u32, Slot),
    /// On a UTC day, the subscriber was served at night by this cell (a hash of its id; one
    /// record per day and cell, so the weights count nights).
    Night(Msisdn, u64),
    /// What the subscriber's products weigh in stickiness, in thousandths (`stickiness.toml`).
    Held(Msisdn, u32),
    /// The subscriber filed a complaint (self-care page `complaint`).
    Complaint(Msisdn),
    /// The subscriber's line was terminated (a record with status `terminated`).
    Left(Msisdn),
    /// The subscriber's churn risk (`churn.toml`), in thousandths, while they are a customer.
    Risk(Msisdn, u32),
}

/// When in the caller's local week a contact happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Slot {
    /// A weekday evening (`evening_hours`).
    Evening,
    /// Saturday or Sunday, outside the night.
    Weekend,
    /// A weekday outside the evening and the night: work time.
    Daytime,
    /// `night_hours`, any day.
    Night,
}

impl Slot {
    /// Family time: evenings and weekends.
    pub fn is_family_time(self) -> bool {
        matches!(self, Slot::Evening | Slot::Weekend)
    }
}

impl Evidence {
    /// Whether this evidence names `msisdn` (as either party).
    pub fn names(&self, msisdn: Msisdn) -> bool {
        match self {
            Evidence::Facts(m, _)
            | Evidence::Login(m, _)
            | Evidence::Holder(_, _, m)
            | Evidence::Cancel(m)
            | Evidence::Night(m, _)
            | Evidence::Held(m, _)
            | Evidence::Complaint(m)
            | Evidence::Left(m)
            | Evidence::Risk(m, _) => *m == msisdn,
            Evidence::Call(a, b) | Evidence::Paid(a, b) | Evidence::Contact(a, b, _, _) => *a == msisdn || *b == msisdn,
        }
    }
}

/// An update of the evidence collection: data, time, diff.
pub type EvidenceUpdate = (Evidence, Millis, isize);

/// Why two subscribers are linked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LinkKind {
    Account,
    Address,
    Calls,
    Payer,
    Login,
    Handset,
}

impl LinkKind {
    /// The name in `households.jsonl`.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::Account => "account",
            LinkKind::Address => "address",
            LinkKind::Calls => "calls",
            LinkKind::Payer => "payer",
            LinkKind::Login => "selfcare_login",
            LinkKind::Handset => "handset",
        }
    }
}

/// What a subscriber's household looks like, as rules read it (`household.*`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HouseholdView {
    /// The founding (oldest) member: the household id is derived from it.
    pub founder: Msisdn,
    pub decision_maker: Msisdn,
    pub size: u32,
    /// Sum of the members' monthly fees, in cents.
    pub value_cents: u64,
    /// Distinct accounts among the members.
    pub accounts: u32,
    /// What the members' products weigh together in stickiness, in thousandths.
    pub held_milli: u32,
    /// Members who visited the cancel page within the window.
    pub cancel_intents: u32,
    /// Members who filed a complaint within the window.
    pub complaints: u32,
    /// Members whose line was terminated within the window.
    pub members_left: u32,
    /// This subscriber is the member most at risk of leaving: the highest churn risk among
    /// the members who are customers, then the lowest number.
    pub most_at_risk: bool,
    /// An off-net number strongly tied to several members.
    pub competitor_peer: Option<Msisdn>,
    /// This subscriber's handset went to another member within the window.
    pub gave_handset: bool,
    /// This subscriber got a handset from another member within the window.
    pub got_handset: bool,
    /// The links that hold this subscriber in the household: (other member, why).
    pub links: Vec<(Msisdn, LinkKind)>,
}

impl HouseholdView {
    /// Whether the view names `msisdn` (founder, decision maker, competitor, a link).
    pub fn names(&self, msisdn: Msisdn) -> bool {
        self.founder == msisdn
            || self.decision_maker == msisdn
            || self.competitor_peer == Some(msisdn)
            || self.links.iter().any(|(m, _)| *m == msisdn)
    }

    /// The household id: stable while the founder stays (an unrelated member joining later
    /// never changes it).
    pub fn id(&self) -> String {
        household_id(self.founder)
    }
}

/// The id of the household founded by `founder`.
pub fn household_id(founder: Msisdn) -> String {
    format!("H-{:016x}", subscriber_route(founder))
}

/// A view update on its way back to the subscribers: (msisdn, view, time, diff).
pub type ViewUpdate = (Msisdn, HouseholdView, Millis, isize);

/// One part of what a member's view is made of.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Part {
    Label((Millis, Msisdn)),
    Summary(Summary),
    Cancels(u32),
    Complaints(u32),
    Left(u32),
    Riskiest(Msisdn),
    Held(u32),
    Competitor(Msisdn),
    Gave,
    Got,
    Link(Msisdn, LinkKind),
}

/// Per household: decision maker, size, value, accounts.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
struct Summary {
    decision_maker: Msisdn,
    size: u32,
    value_cents: u64,
    accounts: u32,
}

/// What the contacts between two subscribers in the window look like: the soft evidence of
/// calls and SMS, judged by what families do and friends and colleagues do not.
///
/// - **Reciprocity**: both called or texted the other (a call centre, a shop, a fan does not
///   call back).
/// - **Many distinct days**: a family talks most days; a friend who texts once a week has four
///   days a month however many messages (a sum of weights is what let those friendships pass).
/// - **Evenings and weekends**: days with a contact in family time, so a colleague who calls on
///   every weekday in office hours is not family.
/// - **A share of each one's contacts**: the pair's records are a share of both parties'
///   records with everybody, so a busy subscriber's many acquaintances do not qualify.
///
/// Even then calls alone link only with many days of them (`contact_alone_days`); with
/// fewer, a second kind of evidence must agree: the two sleep under the same cell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContactPattern {
    /// The lower number called or texted the higher.
    pub forward: bool,
    /// The higher number called or texted the lower.
    pub backward: bool,
    /// Distinct days with a contact either way.
    pub days: u32,
    /// Distinct days with a contact in family time (an evening or the weekend).
    pub family_days: u32,
    /// Contact records (caller, callee, day, slot).
    pub records: u32,
}

impl ContactPattern {
    /// The pattern of a pair's records: (from the lower number, day, slot).
    pub fn of(records: impl IntoIterator<Item = (bool, u32, Slot)>) -> ContactPattern {
        let mut pattern = ContactPattern::default();
        let (mut days, mut family_days) = (Vec::new(), Vec::new());
        for (forward, day, slot) in records {
            pattern.records += 1;
            if forward {
                pattern.forward = true;
            } else {
                pattern.backward = true;
            }
            days.push(day);
            if slot.is_family_time() {
                family_days.push(day);
            }
        }
        for list in [&mut days, &mut family_days] {
            list.sort_unstable();
            list.dedup();
        }
        pattern.days = days.len() as u32;
        pattern.family_days = family_days.len() as u32;
        pattern
    }

    /// Both called or texted the other.
    pub fn reciprocal(&self) -> bool {
        self.forward && self.backward
    }

    /// Enough distinct days, enough of them in family time.
    pub fn is_family_like(&self, min_days: u32, min_family_days: u32) -> bool {
        self.days >= min_days && self.family_days >= min_family_days
    }
}

/// A link between two subscribers, and why.
type Edge = (Msisdn, Msisdn, LinkKind);

/// The household graph over `evidence`: every subscriber with a customer record and their
/// household's view.
pub fn graph<'scope>(
    evidence: VecCollection<'scope, Millis, Evidence, isize>,
    config: &HouseholdConfig,
) -> VecCollection<'scope, Millis, (Msisdn, HouseholdView), isize> {
    graph_counting(evidence, config, None)
}

/// [`graph`], adding to `split` (when given) every member placed by the size bound's split
/// and taking away every one no longer: how many members are, at the latest step, in
/// households split out of a component above `max_household` (or alone for it).
pub fn graph_counting<'scope>(
    evidence: VecCollection<'scope, Millis, Evidence, isize>,
    config: &HouseholdConfig,
    split: Option<Arc<AtomicI64>>,
) -> VecCollection<'scope, Millis, (Msisdn, HouseholdView), isize> {
    let step = config.granularity_ms.max(1);
    let evidence = evidence.delay(move |t| t.div_ceil(step).saturating_mul(step));
    let facts = evidence.clone().flat_map(|e| match e {
        Evidence::Facts(m, f) => Some((m, f)),
        _ => None,
    });
    let members = facts.clone().map(|(m, _)| (m, ()));

    // Hard links: one account, one address (a business account or a block of flats has
    // too many members to be a household).
    let max_shared = config.max_shared;
    let hard = facts
        .clone()
        .flat_map(|(m, f)| {
            let account = Some(((LinkKind::Account, f.account), m));
            let address = f.address.map(|a| ((LinkKind::Address, a), m));
            account.into_iter().chain(address)
        })
        .reduce(
            move |(kind, _), holders, out: &mut Vec<((Msisdn, Msisdn, LinkKind), isize)>| {
                if holders.len() <= max_shared {
                    let first = *holders[0].0;
                    out.extend(holders[1..].iter().map(|(m, _)| ((first, **m, *kind), 1)));
                }
            },
        )
        .map(|(_, edge)| edge);

    // Calls and SMS: a record per caller, callee, day and slot; each pair judged by what
    // families do and friends and colleagues do not (`ContactPattern`), both ends members,
    // hubs dropped.
    let contacts = evidence.clone().flat_map(|e| match e {
        Evidence::Contact(from, to, day, slot) if from != to => Some((from, to, day, slot)),
        _ => None,
    });
    let patterns = contacts
        .clone()
        .map(|(from, to, day, slot)| ((from.min(to), from.max(to)), (from < to, day, slot)))
        .reduce(|_, records, out: &mut Vec<(ContactPattern, isize)>| {
            let present = records.iter().filter(|(_, diff)| *diff > 0).map(|(r, _)| **r);
            out.push((ContactPattern::of(present), 1));
        });
    let (min_days, min_family_days) = (config.contact_min_days, config.contact_min_family_days);
    // Every contact record naming a subscriber, either way: the share's denominator.
    let totals = contacts.flat_map(|(from, to, _, _)| [from, to]).count();
    let share = isize::try_from(config.contact_min_share_percent).unwrap_or(isize::MAX);
    let family = patterns
        .clone()
        .filter(move |(_, p)| p.reciprocal() && p.is_family_like(min_days, min_family_days))
        .map(|((a, b), p)| (a, (b, p)))
        .join_map(totals.clone(), |a, (b, p), total_a| (*b, (*a, *p, *total_a)))
        .join_map(totals, |b, (a, p, total_a), total_b| {
            ((*a, *b), *p, (*total_a).max(*total_b))
        })
        .filter(move |(_, p, total)| 100 * p.records as isize >= share * *total)
        .map(|(pair, p, _)| (pair, p.days));
    let family = family
        .clone()
        .semijoin(both_members(family.map(|(pair, _)| pair), members.clone()));
    // Calls of the family pattern link alone when there are enough days of them; otherwise
    // only with nights under one cell (a street's worth of homes: never alone).
    let alone_days = config.contact_alone_days;
    let strong = family
        .clone()
        .filter(move |(_, days)| *days >= alone_days)
        .map(|(pair, _)| pair);
    let corroborate = family.filter(move |(_, days)| *days < alone_days).map(|(pair, _)| pair);
    let nights = evidence
        .clone()
        .flat_map(|e| match e {
            Evidence::Night(m, cell) => Some((m, cell)),
            _ => None,
        })
        .count();
    let min_nights = isize::try_from(config.min_shared_nights).unwrap_or(isize::MAX);
    let slept_together = corroborate
        .join_map(
            nights.clone().map(|((m, cell), n)| (m, (cell, n))),
            |a, b, (cell, n)| ((*b, *cell), (*a, *n)),
        )
        .join_map(nights, |(b, _), (a, n_a), n_b| ((*a, *b), (*n_a).min(*n_b)))
        .reduce(|_, shared, out: &mut Vec<(isize, isize)>| {
            out.push((shared.iter().map(|(n, diff)| **n * *diff).sum(), 1));
        })
        .filter(move |(_, n)| *n >= min_nights)
        .map(|(pair, _)| pair);
    let on_net = strong.concat(slept_together);
    let call_hubs = over_degree(on_net.clone(), config.max_call_partners);
    let calls = without_nodes(on_net, call_hubs).map(|(a, b)| (a, b, LinkKind::Calls));
    // One end a subscriber, the other off-net (whose own calls are not seen, so there is no
    // reciprocity to ask for): (member, off-net number).
    let keys = members.clone().map(|(m, _)| m);
    let strong_off_net = patterns
        .clone()
        .filter(move |(_, p)| p.is_family_like(min_days, min_family_days))
        .map(|(pair, _)| pair);
    let off_net = member_and_off_net(strong_off_net, keys.clone());
    // Every member in touch with an off-net number at all in the window, strong or not.
    let touched = member_and_off_net(patterns.map(|(pair, _)| pair), keys);

    // Top-ups paid for another: payers with many payees are shops.
    let payer_threshold = config.payer_threshold;
    let paid = evidence
        .clone()
        .flat_map(|e| match e {
            Evidence::Paid(payer, payee) if payer != payee => Some((payer, payee)),
            _ => None,
        })
        .count()
        .filter(move |(_, n)| *n >= payer_threshold)
        .map(|(pair, _)| pair);
    let paid = both_members(paid, members.clone());
    let max_payees = config.max_payees as isize;
    let shops = paid
        .clone()
        .map(|(payer, _)| payer)
        .count()
        .filter(move |(_, n)| *n > max_payees)
        .map(|(payer, _)| payer);
    let payers = paid.antijoin(shops).map(|(a, b)| (a, b, LinkKind::Payer));

    // A self-care login to another's account links the user to the account's holders.
    let max_login_users = config.max_login_users;
    let logins = evidence
        .clone()
        .flat_map(|e| match e {
            Evidence::Login(m, account) => Some((account, m)),
            _ => None,
        })
        .distinct()
        .reduce(move |_, users, out: &mut Vec<(Msisdn, isize)>| {
            if users.len() <= max_login_users {
                out.extend(users.iter().map(|(m, _)| (**m, 1)));
            }
        });
    let holders_by_account = facts.clone().map(|(m, f)| (f.account, m));
    let login = logins
        .join_map(holders_by_account, |_, user, holder| (*user, *holder))
        .filter(|(user, holder)| user != holder);
    let login = both_members(login, members.clone()).map(|(a, b)| (a, b, LinkKind::Login));

    // Hand-downs: consecutive holders of one handset (giver, receiver).
    let max_holders = config.max_handset_holders;
    let handdowns = evidence
        .clone()
        .flat_map(|e| match e {
            Evidence::Holder(imei, since, m) => Some((imei, (since, m))),
            _ => None,
        })
        .reduce(move |_, held, out: &mut Vec<((Msisdn, Msisdn), isize)>| {
            let mut distinct: Vec<Msisdn> = Vec::new();
            for ((_, m), _) in held {
                if distinct.last() != Some(m) {
                    distinct.push(*m);
                }
            }
            if distinct.len() <= max_holders {
                for pair in distinct.windows(2) {
                    if pair[0] != pair[1] {
                        out.push(((pair[0], pair[1]), 1));
                    }
                }
            }
        })
        .map(|(_, pair)| pair);
    let handdowns = both_members(handdowns, members.clone());

    let edges: VecCollection<'scope, Millis, Edge, isize> = hard
        .concat(calls)
        .concat(payers)
        .concat(login)
        .concat(handdowns.clone().map(|(a, b)| (a, b, LinkKind::Handset)));

    // Connected components: every member starts with its own label (first seen, number);
    // the least label of a component wins, so the oldest member founds the household. A
    // component above `max_household` is split: first without its call links, then with
    // hard links only, then every member of what is still too large stays alone.
    let undirected = |kinds: fn(LinkKind) -> bool| {
        edges
            .clone()
            .filter(move |(_, _, kind)| kinds(*kind))
            .flat_map(|(a, b, _)| [(a, b), (b, a)])
            .distinct()
    };
    let tiers = [
        undirected(|_| true),
        undirected(|kind| kind != LinkKind::Calls),
        undirected(|kind| matches!(kind, LinkKind::Account | LinkKind::Address)),
    ];
    let nodes = facts.clone().map(|(m, f)| (m, (f.first_seen, m)));
    let (labels, split_members) = households_within(nodes, tiers, config.max_household.max(1));
    if let Some(split) = split {
        split_members.inspect(move |(_, _, diff)| {
            split.fetch_add(*diff as i64, Ordering::Relaxed);
        });
    }

    // Per household: the decision maker (postpaid first, then the highest fee, then the
    // oldest), size, value, accounts.
    let by_label = labels.clone().join_map(facts, |m, label, f| (*label, (*m, f.clone())));
    let summaries = by_label.reduce(|_, members, out: &mut Vec<(Summary, isize)>| {
        let decision_maker = members
            .iter()
            .map(|((m, f), _)| {
                (
                    f.postpaid,
                    f.fee_cents,
                    std::cmp::Reverse(f.first_seen),
                    std::cmp::Reverse(*m),
                )
            })
            .max()
            .map(|(_, _, _, std::cmp::Reverse(m))| m)
            .unwrap_or(members[0].0 .0);
        let mut accounts: Vec<&str> = members.iter().map(|((_, f), _)| f.account.as_str()).collect();
        accounts.sort_unstable();
        accounts.dedup();
        out.push((
            Summary {
                decision_maker,
                size: members.len() as u32,
                // Saturating: fees have no upper bound in the contract (a fee of 1e300 is
                // u64::MAX cents), and a wrapped sum would make a rich household look poor.
                value_cents: members
                    .iter()
                    .fold(0u64, |sum, ((_, f), _)| sum.saturating_add(f.fee_cents)),
                accounts: accounts.len() as u32,
            },
            1,
        ));
    });
    let member_of = labels.clone().map(|(m, label)| (label, m));

    // Cancel intents per household.
    let cancels = members_with(&evidence, &labels, |e| match e {
        Evidence::Cancel(m) => Some(*m),
        _ => None,
    });
    // Members who complained, and members who left, per household.
    let complaints = members_with(&evidence, &labels, |e| match e {
        Evidence::Complaint(m) => Some(*m),
        _ => None,
    });
    let left = members_with(&evidence, &labels, |e| match e {
        Evidence::Left(m) => Some(*m),
        _ => None,
    });

    // The member most at risk of leaving: the highest risk, then the lowest number.
    let riskiest = evidence
        .clone()
        .flat_map(|e| match e {
            Evidence::Risk(m, milli) => Some((m, milli)),
            _ => None,
        })
        .join_map(labels.clone(), |m, milli, label| (*label, (*milli, *m)))
        .reduce(|_, members, out: &mut Vec<(Msisdn, isize)>| {
            let best = members
                .iter()
                .map(|((milli, m), _)| (*milli, std::cmp::Reverse(*m)))
                .max();
            if let Some((_, std::cmp::Reverse(m))) = best {
                out.push((m, 1));
            }
        });

    // What the members hold together, in stickiness (each member's latest weight).
    let held = evidence
        .clone()
        .flat_map(|e| match e {
            Evidence::Held(m, milli) => Some((m, milli)),
            _ => None,
        })
        .join_map(labels.clone(), |_, milli, label| (*label, *milli))
        .reduce(|_, members, out: &mut Vec<(u32, isize)>| {
            // Members of one weight come as one record with their count.
            let sum = members.iter().fold(0u32, |sum, (milli, n)| {
                sum.saturating_add(milli.saturating_mul(u32::try_from(*n).unwrap_or(0)))
            });
            out.push((sum, 1));
        });

    // A service, not a competitor's member: an off-net number that many members are in touch
    // with, or that is strongly tied to several households. With the evening weight, a
    // service line everyone calls now and then passes the call threshold for whole families.
    let (max_callers, max_households) = (
        config.competitor_max_callers as isize,
        config.competitor_max_households as isize,
    );
    let called_by_many = touched
        .map(|(_, peer)| peer)
        .count()
        .filter(move |(_, n)| *n > max_callers)
        .map(|(peer, _)| peer);
    let tied_to_many = off_net
        .clone()
        .join_map(labels.clone(), |_, peer, label| (*peer, *label))
        .distinct()
        .map(|(peer, _)| peer)
        .count()
        .filter(move |(_, n)| *n > max_households)
        .map(|(peer, _)| peer);
    let services = called_by_many.concat(tied_to_many).distinct();
    // A competitor's number: strongly tied to several members of one household.
    let min_members = config.competitor_min_members as isize;
    let competitors = off_net
        .map(|(member, peer)| (peer, member))
        .antijoin(services)
        .map(|(peer, member)| (member, peer))
        .join_map(labels.clone(), |_, peer, label| (*label, *peer))
        .count()
        .filter(move |(_, n)| *n >= min_members)
        .map(|((label, peer), n)| (label, (n, peer)))
        .reduce(|_, candidates, out: &mut Vec<(Msisdn, isize)>| {
            // The most members, then the lowest number.
            let best = candidates
                .iter()
                .map(|((n, peer), _)| (*n, std::cmp::Reverse(*peer)))
                .max();
            if let Some((_, std::cmp::Reverse(peer))) = best {
                out.push((peer, 1));
            }
        });

    // Each member's parts, gathered into one view.
    let household_parts = summaries
        .map(|(label, s)| (label, Part::Summary(s)))
        .concat(cancels.map(|(label, n)| (label, Part::Cancels(n as u32))))
        .concat(complaints.map(|(label, n)| (label, Part::Complaints(n as u32))))
        .concat(left.map(|(label, n)| (label, Part::Left(n as u32))))
        .concat(riskiest.map(|(label, m)| (label, Part::Riskiest(m))))
        .concat(held.map(|(label, milli)| (label, Part::Held(milli))))
        .concat(competitors.map(|(label, peer)| (label, Part::Competitor(peer))))
        .join_map(member_of, |_, part, m| (*m, part.clone()));
    let same_household = |pairs: VecCollection<'scope, Millis, (Msisdn, Msisdn), isize>| {
        pairs
            .join_map(labels.clone(), |a, b, label| (*b, (*a, *label)))
            .join_map(labels.clone(), |b, (a, la), lb| (*a, *b, la == lb))
            .filter(|(_, _, same)| *same)
            .map(|(a, b, _)| (a, b))
    };
    let handed = same_household(handdowns);
    let edges_pairs = edges.clone().map(|(a, b, _)| (a, b)).distinct();
    let member_parts = labels
        .clone()
        .map(|(m, label)| (m, Part::Label(label)))
        .concat(handed.clone().map(|(giver, _)| (giver, Part::Gave)))
        .concat(handed.map(|(_, receiver)| (receiver, Part::Got)))
        .concat(
            // Only the links within the household (a split drops the others).
            edges
                .map(|(a, b, kind)| ((a, b), kind))
                .semijoin(same_household(edges_pairs))
                .flat_map(|((a, b), kind)| [(a, Part::Link(b, kind)), (b, Part::Link(a, kind))]),
        );
    household_parts
        .concat(member_parts)
        .reduce(|member, parts, out: &mut Vec<(HouseholdView, isize)>| {
            let (mut founder, mut summary) = (None, None);
            let (mut cancel_intents, mut competitor_peer, mut held_milli) = (0, None, 0);
            let (mut complaints, mut members_left, mut most_at_risk) = (0, 0, false);
            let (mut gave_handset, mut got_handset) = (false, false);
            let mut links: BTreeMap<Msisdn, LinkKind> = BTreeMap::new();
            for (part, _) in parts {
                match part {
                    Part::Label((_, f)) => founder = Some(*f),
                    Part::Summary(s) => summary = Some(s),
                    Part::Cancels(n) => cancel_intents = *n,
                    Part::Complaints(n) => complaints = *n,
                    Part::Left(n) => members_left = *n,
                    Part::Riskiest(m) => most_at_risk = m == member,
                    Part::Held(milli) => held_milli = *milli,
                    Part::Competitor(peer) => competitor_peer = Some(*peer),
                    Part::Gave => gave_handset = true,
                    Part::Got => got_handset = true,
                    Part::Link(other, kind) => {
                        links.entry(*other).or_insert(*kind);
                    }
                }
            }
            if let (Some(founder), Some(s)) = (founder, summary) {
                out.push((
                    HouseholdView {
                        founder,
                        decision_maker: s.decision_maker,
                        size: s.size,
                        value_cents: s.value_cents,
                        accounts: s.accounts,
                        held_milli,
                        cancel_intents,
                        complaints,
                        members_left,
                        most_at_risk,
                        competitor_peer,
                        gave_handset,
                        got_handset,
                        links: links.into_iter().take(8).collect(),
                    },
                    1,
                ));
            }
        })
}

/// Per household label, how many distinct members some evidence (picked by `pick`) names.
fn members_with<'scope>(
    evidence: &VecCollection<'scope, Millis, Evidence, isize>,
    labels: &Labels<'scope>,
    pick: impl Fn(&Evidence) -> Option<Msisdn> + 'static,
) -> VecCollection<'scope, Millis, (Label, isize), isize> {
    evidence
        .clone()
        .flat_map(move |e| pick(&e))
        .distinct()
        .map(|m| (m, ()))
        .join_map(labels.clone(), |_, _, label| *label)
        .count()
}

/// Pairs whose two ends are both members.
fn both_members<'scope>(
    pairs: VecCollection<'scope, Millis, (Msisdn, Msisdn), isize>,
    members: VecCollection<'scope, Millis, (Msisdn, ()), isize>,
) -> VecCollection<'scope, Millis, (Msisdn, Msisdn), isize> {
    let keys = members.map(|(m, _)| m);
    pairs
        .semijoin(keys.clone())
        .map(|(a, b)| (b, a))
        .semijoin(keys)
        .map(|(b, a)| (a, b))
}

/// A household's label: the (first seen, number) of its founder.
type Label = (Millis, Msisdn);

/// Each member's household label.
type Labels<'scope> = VecCollection<'scope, Millis, (Msisdn, Label), isize>;

/// Households of at most `max` members over `tiers` of links (each pair in both directions;
/// each tier's links a subset of the one before). A member takes the label of its connected
/// component in the first tier where that component has at most `max` members; a member in
/// none stays alone. Each tier's components are found by [`propagate_within`] in `max`
/// rounds, so however large a component of wrong links grows, a change costs at most `max`
/// rounds of label propagation per tier. Also returns the members of components above
/// `max` in the first tier (those the split placed).
///
/// A group of members that share a label after `max` rounds is a whole component exactly
/// when no link leaves it: a component of at most `max` members has a diameter below `max`,
/// so its least label has reached every member; and a larger component either shows a link
/// between two labels or puts more than `max` members under one.
fn households_within<'scope, const N: usize>(
    nodes: VecCollection<'scope, Millis, (Msisdn, Label), isize>,
    tiers: [VecCollection<'scope, Millis, (Msisdn, Msisdn), isize>; N],
    max: usize,
) -> (Labels<'scope>, VecCollection<'scope, Millis, Msisdn, isize>) {
    let mut pending = nodes.clone();
    let mut placed: Option<Labels<'scope>> = None;
    let mut split = None;
    for links in tiers {
        let keys = pending.clone().map(|(m, _)| m);
        let links = links
            .semijoin(keys.clone())
            .map(|(a, b)| (b, a))
            .semijoin(keys)
            .map(|(b, a)| (a, b));
        let labels = propagate_within(links.clone(), pending.clone(), max as u64);
        let crossing = links
            .join_map(labels.clone(), |_, b, la| (*b, *la))
            .join_map(labels.clone(), |_, la, lb| (*la, *lb))
            .flat_map(|(la, lb)| if la != lb { vec![la, lb] } else { Vec::new() });
        let too_large = labels
            .clone()
            .map(|(_, label)| label)
            .count()
            .filter(move |(_, n)| *n > max as isize)
            .map(|(label, _)| label);
        let whole = labels
            .map(|(m, label)| (label, m))
            .antijoin(crossing.concat(too_large).distinct())
            .map(|(label, m)| (m, label));
        pending = pending.antijoin(whole.clone().map(|(m, _)| m));
        split.get_or_insert_with(|| pending.clone().map(|(m, _)| m));
        placed = Some(match placed {
            None => whole,
            Some(placed) => placed.concat(whole),
        });
    }
    let split = split.unwrap_or_else(|| nodes.clone().filter(|_| false).map(|(m, _)| m));
    match placed {
        Some(placed) => (placed.concat(pending), split),
        None => (nodes, split),
    }
}

/// Each node's least label within `rounds` hops over `links` (both directions given): label
/// propagation stopped after `rounds` rounds, so that its cost does not grow with the size
/// of a component.
fn propagate_within<'scope>(
    links: VecCollection<'scope, Millis, (Msisdn, Msisdn), isize>,
    nodes: VecCollection<'scope, Millis, (Msisdn, Label), isize>,
    rounds: u64,
) -> VecCollection<'scope, Millis, (Msisdn, Label), isize> {
    use differential_dataflow::operators::Iterate;
    use differential_dataflow::AsCollection;
    use timely::dataflow::operators::vec::Filter;
    nodes.clone().iterate(|scope, labels| {
        let links = links.enter(scope);
        let nodes = nodes.enter(scope);
        labels
            .join_map(links, |_, label, to| (*to, *label))
            .concat(nodes)
            .reduce(|_, proposed, out: &mut Vec<(Label, isize)>| out.push((*proposed[0].0, 1)))
            // Round k's changes are round k + 1's input: none from round `rounds` on.
            .inner
            .filter(move |(_, t, _)| t.inner < rounds)
            .as_collection()
    })
}

/// Of unordered `pairs`, those with one end in `members` and the other not, as (member,
/// other).
fn member_and_off_net<'scope>(
    pairs: VecCollection<'scope, Millis, (Msisdn, Msisdn), isize>,
    members: VecCollection<'scope, Millis, Msisdn, isize>,
) -> VecCollection<'scope, Millis, (Msisdn, Msisdn), isize> {
    let first_member = pairs
        .clone()
        .semijoin(members.clone())
        .map(|(a, b)| (b, a))
        .antijoin(members.clone())
        .map(|(b, a)| (a, b));
    let second_member = pairs
        .map(|(a, b)| (b, a))
        .semijoin(members.clone())
        .map(|(b, a)| (a, b))
        .antijoin(members)
        .map(|(a, b)| (b, a));
    first_member.concat(second_member)
}

/// Nodes with more than `max` distinct partners among `pairs` (either end).
fn over_degree<'scope>(
    pairs: VecCollection<'scope, Millis, (Msisdn, Msisdn), isize>,
    max: usize,
) -> VecCollection<'scope, Millis, Msisdn, isize> {
    let max = max as isize;
    pairs
        .flat_map(|(a, b)| [(a, b), (b, a)])
        .distinct()
        .map(|(a, _)| a)
        .count()
        .filter(move |(_, n)| *n > max)
        .map(|(m, _)| m)
}

/// Pairs touching none of `nodes`.
fn without_nodes<'scope>(
    pairs: VecCollection<'scope, Millis, (Msisdn, Msisdn), isize>,
    nodes: VecCollection<'scope, Millis, Msisdn, isize>,
) -> VecCollection<'scope, Millis, (Msisdn, Msisdn), isize> {
    pairs
        .antijoin(nodes.clone())
        .map(|(a, b)| (b, a))
        .antijoin(nodes)
        .map(|(b, a)| (a, b))
}
