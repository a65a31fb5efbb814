//! The true households of a synthetic world, and the people around them who are not family.
//!
//! [`Population::build`] groups the world's subscribers into households (1–6 members) from the
//! seed alone, before any event is made, so the truth can be written without generating the
//! events and the events can plant evidence that agrees with it:
//!
//! - **hard links**: half of the multi-member households share one `account_id` (a family
//!   account; in larger ones a grown-up child may keep an own account at the same address),
//!   three in ten have an account each but share `address_id`, and two in ten share neither;
//! - **soft evidence**: members call and text each other often (more in the local evening), the
//!   decision maker tops up the prepaid lines of the others (`payer`), hands an old handset down
//!   (the same `imei` moves from one member to another), and the others may log in to self-care
//!   with the decision maker's account; in some households a member is on a competitor, an
//!   off-net number that several members call often;
//! - **noise** that is not family: groups of colleagues who call each other during working
//!   hours, corner shops (one subscriber each) that top up for many strangers, hub numbers (on-net
//!   businesses and an off-net service line) that many subscribers call, and calls to random
//!   on-net and off-net numbers.
//!
//! The decision maker of a household (`"role":"payer"` in the truth) is the account holder with
//! the highest monthly fee; the generator makes it strictly the highest in the household.

use std::collections::HashMap;

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::world::{msisdn, WorldSpec};

/// How the world's subscribers are grouped into households.
#[derive(Debug, Clone)]
pub struct HouseholdSpec {
    /// With `false`, the world is the pre-household one (byte for byte): no households, no
    /// planted evidence, no noise.
    pub enabled: bool,
    /// The largest household (1–6); `1` makes everybody single (the noise stays).
    pub max_size: usize,
    /// Share of multi-member households with a member on a competitor (an off-net number).
    pub competitor_rate: f64,
    /// Share of multi-member households where the decision maker hands a handset down during
    /// the generated days.
    pub hand_down_rate: f64,
    /// Share of subscribers who belong to a group of colleagues.
    pub colleague_share: f64,
    /// The rates of the evidence and of the noise around households.
    pub noise: Noise,
}

impl Default for HouseholdSpec {
    fn default() -> Self {
        HouseholdSpec {
            enabled: true,
            max_size: 6,
            competitor_rate: 0.15,
            hand_down_rate: 0.15,
            colleague_share: 0.3,
            noise: Noise::default(),
        }
    }
}

/// The parameters of a world's households and of the people around them who are not family.
/// [`Noise::default`] is the world the project's tests and demo use; [`Noise::drawn`] draws
/// every parameter from a range, so that a threshold tuned to one world fails on another
/// (`kairos-loadtest generate --params-seed N`, `kairos-loadtest households-eval`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Noise {
    /// Relative weights of household sizes 1–7.
    pub size_weights: [f64; MAX_SIZE],
    /// Of multi-member households, the share on one account (the rest of the first
    /// `address_rate` share an address with an account each; the others share neither).
    pub account_rate: f64,
    pub address_rate: f64,
    /// Share of a subscriber's calls and SMS that go to family.
    pub family_share: f64,
    /// Share of multi-member households that hardly call each other (they talk through
    /// messaging apps): their family share is a fifth.
    pub quiet_family_rate: f64,
    /// Share of family calls in the local evening.
    pub family_evening: f64,
    /// Share of a colleague's calls that go to the group (on weekdays).
    pub colleague_calls: f64,
    /// Share of colleague pairs who also call each other on most weekdays (busy colleagues),
    /// and the chance of such a call on a weekday.
    pub busy_colleague_rate: f64,
    pub busy_colleague_daily: f64,
    /// Mean number of friends per subscriber who text once a week, in the evening.
    pub weekly_friends: f64,
    /// Share of subscribers with a close friend they talk to on two or three evenings a week.
    pub close_friend_rate: f64,
    /// The chance that a new friend is a friend's friend (contact graphs that percolate).
    pub friend_of_friend: f64,
    /// Share of subscribers who call the operator's service line in a month, how often, and
    /// the share of those calls in the evening.
    pub service_callers: f64,
    pub service_calls_per_month: f64,
    pub service_evening: f64,
    /// Households per home cell (a cell covers a street: neighbours sleep under it too).
    pub households_per_cell: u32,
    /// Share of network records that name the cell (and handset).
    pub cell_rate: f64,
    /// Share of nights spent away from home (another cell).
    pub away_nights: f64,
    /// Share of singles who share a flat (two or three to a flat: one home cell, separate
    /// households), and of flats registered at one `address_id`.
    pub flatmate_rate: f64,
    pub flat_shared_address: f64,
    /// Share of flatmate pairs who talk like close friends.
    pub flatmate_calls: f64,
}

impl Default for Noise {
    fn default() -> Self {
        Noise {
            // Roughly the European distribution of households: a third single, most others 2–4.
            size_weights: [0.33, 0.28, 0.17, 0.14, 0.055, 0.025, 0.0],
            account_rate: 0.5,
            address_rate: 0.3,
            family_share: 0.30,
            quiet_family_rate: 0.1,
            family_evening: 0.6,
            colleague_calls: 0.16,
            busy_colleague_rate: 0.3,
            busy_colleague_daily: 0.7,
            weekly_friends: 1.5,
            close_friend_rate: 0.1,
            friend_of_friend: 0.5,
            service_callers: 0.6,
            service_calls_per_month: 2.0,
            service_evening: 0.3,
            households_per_cell: 60,
            cell_rate: 0.5,
            away_nights: 0.05,
            flatmate_rate: 0.05,
            flat_shared_address: 0.2,
            flatmate_calls: 0.3,
        }
    }
}

impl Noise {
    /// A world's parameters drawn from ranges by `seed`: each one anywhere between a quiet
    /// world and a noisy one.
    pub fn drawn(seed: u64) -> Noise {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(7);
        let mut r = |from: f64, to: f64| from + rng.random::<f64>() * (to - from);
        // Sizes: a share of singles, then a geometric-like tail of larger households.
        let singles = r(0.22, 0.42);
        let decay = r(0.45, 0.8);
        let mut size_weights = [0.0; MAX_SIZE];
        size_weights[0] = singles;
        let mut w = 1.0;
        let mut tail = [0.0; MAX_SIZE - 1];
        for t in &mut tail {
            *t = w;
            w *= decay;
        }
        let tail_sum: f64 = tail.iter().sum();
        for (k, t) in tail.iter().enumerate() {
            size_weights[k + 1] = (1.0 - singles) * t / tail_sum;
        }
        let account_rate = r(0.25, 0.6);
        Noise {
            size_weights,
            account_rate,
            address_rate: r(0.1, 0.4).min(1.0 - account_rate),
            family_share: r(0.12, 0.35),
            quiet_family_rate: r(0.05, 0.3),
            family_evening: r(0.35, 0.7),
            colleague_calls: r(0.08, 0.25),
            busy_colleague_rate: r(0.1, 0.5),
            busy_colleague_daily: r(0.5, 0.9),
            weekly_friends: r(0.5, 3.5),
            close_friend_rate: r(0.03, 0.2),
            friend_of_friend: r(0.2, 0.8),
            service_callers: r(0.4, 0.95),
            service_calls_per_month: r(1.0, 5.0),
            service_evening: r(0.15, 0.5),
            households_per_cell: r(20.0, 150.0) as u32,
            cell_rate: r(0.3, 0.9),
            away_nights: r(0.02, 0.15),
            flatmate_rate: r(0.0, 0.15),
            flat_shared_address: r(0.0, 0.4),
            flatmate_calls: r(0.1, 0.5),
        }
    }
}

impl HouseholdSpec {
    /// No households: the world as it was before households existed.
    pub fn off() -> Self {
        HouseholdSpec {
            enabled: false,
            ..HouseholdSpec::default()
        }
    }
}

/// The largest household the generator makes.
const MAX_SIZE: usize = 7;

/// Data packs (GiB); the monthly fee grows with the pack.
pub const PACKS_GB: [u64; 6] = [1, 2, 5, 10, 20, 50];

/// The monthly fee of a plan with a `pack_gb` data pack.
pub fn monthly_fee(pack_gb: u64) -> f64 {
    10.0 + pack_gb as f64 / 2.0
}

/// The off-net customer-service line that many subscribers call.
pub const SERVICE_LINE: &str = "351800100100";

/// The off-net number of household `h`'s member on a competitor (not a subscriber: another range).
pub fn competitor_msisdn(h: u32) -> String {
    format!("35196{h:07}")
}

/// A random off-net number (another operator's customer; seldom the same twice).
fn random_off_net(rng: &mut ChaCha8Rng) -> String {
    format!("35193{:07}", rng.random_range(0..10_000_000u32))
}

const NONE: u32 = u32::MAX;

/// How a household's members are linked in the operator's reference data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Link {
    /// A household of one.
    Single,
    /// One shared `account_id` (and the same `address_id`).
    Account,
    /// An account each, one `address_id`.
    Address,
    /// Neither: only the soft evidence (calls, top-ups, hand-downs, self-care) links them.
    Soft,
}

/// The decision maker gives their handset to another member and gets a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandDown {
    pub giver: u32,
    pub receiver: u32,
    /// Day of the world (0-based) and millisecond of that day (UTC) when it happens.
    pub day: u32,
    pub ms: u32,
}

/// One true household.
#[derive(Debug, Clone)]
pub struct Household {
    start: u32,
    len: u32,
    /// Index into [`crate::world`]'s home markets.
    pub home: usize,
    pub link: Link,
    /// The decision maker (subscriber index).
    pub payer: u32,
    /// Whether a member is on a competitor (see [`competitor_msisdn`]).
    pub competitor: bool,
    /// Whether the other members log in to self-care with the decision maker's account.
    pub shared_selfcare: bool,
    pub hand_down: Option<HandDown>,
}

impl Household {
    /// Number of members.
    pub fn size(&self) -> u32 {
        self.len
    }
}

/// What the reference data and the soft evidence say about one subscriber.
#[derive(Debug, Clone)]
struct Member {
    /// Subscriber index of the account holder (`A-<index>`).
    account: u32,
    /// `ADDR-<n>`.
    address: u64,
    /// Subscriber index of the account used for self-care logins.
    selfcare: u32,
    pack_gb: u64,
    prepaid: bool,
    /// Who tops this line up (another member), or `NONE`.
    paid_by: u32,
    /// The corner shop that tops this line up, or `NONE`.
    shop: u32,
    /// Colleague group, or `NONE`.
    colleagues: u32,
}

/// Whom a call or an SMS goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contact {
    Family,
    Competitor,
    Colleague,
    /// A colleague who calls on most weekdays, in office hours.
    BusyColleague,
    /// A friend who texts once a week in the evening.
    WeeklyFriend,
    /// A close friend (or a flatmate) talked to on two or three evenings a week.
    CloseFriend,
    Hub,
    ServiceLine,
    OffNet,
    Anyone,
}

/// A friendship (not family): how often the two are in touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Friendship {
    Weekly,
    Close,
}

/// A number in [0, 1) from a pair and a salt, the same whichever way the pair is given: the
/// generator's decisions about a pair (which weekday, busy or not) without a random draw.
fn pair_hash(a: u32, b: u32, salt: u64) -> f64 {
    let (lo, hi) = (u64::from(a.min(b)), u64::from(a.max(b)));
    let mut x = (lo << 32 | hi) ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// The true structure of a world: households, their links and evidence, and the noise.
#[derive(Debug, Clone)]
pub struct Population {
    subscribers: u64,
    /// Household of each subscriber.
    household_of: Vec<u32>,
    households: Vec<Household>,
    /// Members of all households, household after household.
    members: Vec<u32>,
    member: Vec<Member>,
    /// Members of all colleague groups, group after group, and where each group starts.
    colleague_members: Vec<u32>,
    colleague_start: Vec<u32>,
    shops: Vec<u32>,
    hubs: Vec<u32>,
    /// Per subscriber: 1 for a shop, 2 for a hub, 0 otherwise.
    special: Vec<u8>,
    /// The world's rates.
    noise: Noise,
    /// Per household: the cell its home is under; whether it hardly calls.
    home_cell: Vec<u32>,
    quiet: Vec<bool>,
    /// Per subscriber: friends (not family) and how close.
    friends: Vec<Vec<(u32, Friendship)>>,
    /// Per subscriber: the flat shared with other singles (`F-<n>`), or `NONE`.
    flat_of: Vec<u32>,
}

/// One line of the truth file.
#[derive(Debug, Clone, Serialize)]
pub struct TruthRecord {
    pub msisdn: String,
    /// The true household, `T-<n>`.
    pub household: String,
    /// `payer` for the household's decision maker, `member` for the others.
    pub role: &'static str,
    /// The decision maker's msisdn.
    pub decision_maker: String,
    pub size: u32,
    pub link: Link,
    /// The off-net number of the household's member on a competitor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub competitor_peer: Option<String>,
    /// Noise: this subscriber is a corner shop that tops up strangers' lines.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub shop: bool,
    /// Noise: this subscriber is a hub (a business) that many subscribers call.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub hub: bool,
    /// Noise: the colleague group (`C-<n>`) this subscriber belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub colleagues: Option<String>,
    /// Noise: the flat (`F-<n>`) this single shares with other singles (separate households
    /// under one roof).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flat: Option<String>,
}

impl Population {
    /// The population of `spec`'s world, from its seed (a stream of its own, so the events'
    /// random stream is untouched).
    pub fn build(spec: &WorldSpec, hh: &HouseholdSpec) -> Population {
        let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
        rng.set_stream(1);
        let n = u32::try_from(spec.subscribers).expect("fewer than 4 billion subscribers");
        let noise = &hh.noise;
        let weights = noise.size_weights;
        let max_size = hh.max_size.clamp(1, weights.len());
        let homes = crate::world::HOMES.len();

        // Households: consecutive runs of a random permutation, so a household's numbers are
        // scattered over the range.
        let mut order: Vec<u32> = (0..n).collect();
        order.shuffle(&mut rng);
        let mut household_of = vec![0u32; n as usize];
        let mut households = Vec::new();
        let mut member = vec![
            Member {
                account: 0,
                address: 0,
                selfcare: 0,
                pack_gb: 1,
                prepaid: false,
                paid_by: NONE,
                shop: NONE,
                colleagues: NONE,
            };
            n as usize
        ];
        let total: f64 = weights[..max_size].iter().sum();
        let mut start = 0u32;
        while start < n {
            let mut roll = rng.random::<f64>() * total;
            let mut size = max_size;
            for (k, w) in weights[..max_size].iter().enumerate() {
                if roll < *w {
                    size = k + 1;
                    break;
                }
                roll -= w;
            }
            let len = (size as u32).min(n - start);
            let h = households.len() as u32;
            let ids = &order[start as usize..(start + len) as usize];
            let payer = ids[0];
            let home = rng.random_range(0..homes);
            let link = if len == 1 {
                Link::Single
            } else {
                match rng.random::<f64>() {
                    r if r < noise.account_rate => Link::Account,
                    r if r < noise.account_rate + noise.address_rate => Link::Address,
                    _ => Link::Soft,
                }
            };
            // A grown-up child with an own account in a family-account household.
            let own_account = if link == Link::Account && len >= 3 && rng.random_bool(0.2) {
                Some(ids[1 + rng.random_range(0..len as usize - 1)])
            } else {
                None
            };
            let shared_selfcare = match link {
                Link::Single => false,
                Link::Account => true,
                Link::Address | Link::Soft => rng.random_bool(0.4),
            };
            // Packs: the decision maker's fee is strictly the household's highest.
            let mut top = 0usize;
            for &s in &ids[1..] {
                let k = rng.random_range(0..PACKS_GB.len() - 1);
                top = top.max(k + 1);
                member[s as usize].pack_gb = PACKS_GB[k];
            }
            let payer_pack = if len == 1 {
                rng.random_range(0..PACKS_GB.len())
            } else {
                rng.random_range(top..PACKS_GB.len())
            };
            member[payer as usize].pack_gb = PACKS_GB[payer_pack];
            for &s in ids {
                household_of[s as usize] = h;
                let m = &mut member[s as usize];
                let own = s == payer || link != Link::Account || own_account == Some(s);
                m.account = if own { s } else { payer };
                m.address = match link {
                    Link::Single | Link::Account | Link::Address => u64::from(h),
                    Link::Soft => u64::from(n) + u64::from(s),
                };
                m.selfcare = if shared_selfcare { payer } else { m.account };
                m.prepaid = if len == 1 {
                    rng.random_bool(0.3)
                } else if s == payer {
                    false
                } else {
                    rng.random_bool(if len == 2 { 0.2 } else { 0.6 })
                };
                if m.prepaid && s != payer && rng.random_bool(0.85) {
                    m.paid_by = payer;
                }
            }
            let competitor = len >= 2 && rng.random_bool(hh.competitor_rate);
            let hand_down = if len >= 2 && spec.days > 0 && rng.random_bool(hh.hand_down_rate) {
                Some(HandDown {
                    giver: payer,
                    receiver: ids[1 + rng.random_range(0..len as usize - 1)],
                    day: rng.random_range(0..spec.days),
                    ms: rng.random_range(0..86_400_000),
                })
            } else {
                None
            };
            households.push(Household {
                start,
                len,
                home,
                link,
                payer,
                competitor,
                shared_selfcare,
                hand_down,
            });
            start += len;
        }

        // Corner shops and hubs: a few subscribers each (none in a tiny world).
        let mut special = vec![0u8; n as usize];
        let mut pick_special = |count: u64, kind: u8, rng: &mut ChaCha8Rng| -> Vec<u32> {
            let mut out = Vec::new();
            while (out.len() as u64) < count {
                let s = rng.random_range(0..n);
                if special[s as usize] == 0 {
                    special[s as usize] = kind;
                    out.push(s);
                }
            }
            out
        };
        let (shops, hubs) = if n >= 10 {
            let shops = pick_special(spec.subscribers.div_ceil(10_000), 1, &mut rng);
            let hubs = pick_special(spec.subscribers.div_ceil(20_000), 2, &mut rng);
            (shops, hubs)
        } else {
            (Vec::new(), Vec::new())
        };
        if !shops.is_empty() {
            for s in 0..n {
                let m = &member[s as usize];
                if m.prepaid && m.paid_by == NONE && special[s as usize] == 0 && rng.random_bool(0.35) {
                    let shop = *shops.choose(&mut rng).expect("non-empty");
                    if household_of[shop as usize] != household_of[s as usize] {
                        member[s as usize].shop = shop;
                    }
                }
            }
        }

        // Colleagues: groups of 2–6 from different households.
        let mut colleague_members = Vec::new();
        let mut colleague_start = Vec::new();
        order.shuffle(&mut rng);
        let mut group: Vec<u32> = Vec::new();
        let mut target = 0usize;
        let mut close = |group: &mut Vec<u32>, member: &mut [Member]| {
            if group.len() >= 2 {
                let g = colleague_start.len() as u32;
                colleague_start.push(colleague_members.len() as u32);
                for &s in group.iter() {
                    member[s as usize].colleagues = g;
                }
                colleague_members.append(group);
            }
            group.clear();
        };
        for &s in &order {
            if !rng.random_bool(hh.colleague_share) {
                continue;
            }
            if group.is_empty() {
                target = rng.random_range(2..=6);
            }
            let h = household_of[s as usize];
            if group.iter().any(|&o| household_of[o as usize] == h) {
                continue;
            }
            group.push(s);
            if group.len() == target {
                close(&mut group, &mut member);
            }
        }
        close(&mut group, &mut member);

        // Flats: singles two or three to a flat, under one roof (one home cell, sometimes one
        // address) but separate households.
        let mut flat_of = vec![NONE; n as usize];
        let mut flat_home: Vec<u32> = Vec::new();
        let mut flat: Vec<u32> = Vec::new();
        let mut flat_size = 2;
        for (h, household) in households.iter().enumerate() {
            if household.len != 1 || !rng.random_bool(noise.flatmate_rate.clamp(0.0, 1.0)) {
                continue;
            }
            let s = household.payer;
            if special[s as usize] != 0 {
                continue;
            }
            if flat.is_empty() {
                flat_size = rng.random_range(2..=3);
                flat_home.push(h as u32);
            }
            flat.push(s);
            flat_of[s as usize] = (flat_home.len() - 1) as u32;
            if flat.len() == flat_size {
                if rng.random_bool(noise.flat_shared_address.clamp(0.0, 1.0)) {
                    let first = flat[0] as usize;
                    let address = member[first].address;
                    for &m in &flat {
                        member[m as usize].address = address;
                    }
                }
                flat.clear();
            }
        }
        if flat.len() == 1 {
            flat_of[flat[0] as usize] = NONE;
        }
        // Home cells: a street's worth of households under each; flatmates under their flat's.
        let cells = (households.len() as u32)
            .div_ceil(noise.households_per_cell.max(1))
            .max(1);
        let mut home_cell: Vec<u32> = (0..households.len()).map(|_| rng.random_range(0..cells)).collect();
        for household in &households {
            let f = flat_of[household.payer as usize];
            if household.len == 1 && f != NONE {
                let h = household_of[household.payer as usize] as usize;
                home_cell[h] = home_cell[flat_home[f as usize] as usize];
            }
        }
        let quiet: Vec<bool> = households
            .iter()
            .map(|h| h.len > 1 && rng.random_bool(noise.quiet_family_rate.clamp(0.0, 1.0)))
            .collect();

        // Friends, not family: weekly texters and close friends, a share of them friends of
        // friends, so that contact graphs percolate.
        let mut friends: Vec<Vec<(u32, Friendship)>> = vec![Vec::new(); n as usize];
        if n >= 10 {
            let befriend =
                |s: u32, kind: Friendship, friends: &mut Vec<Vec<(u32, Friendship)>>, rng: &mut ChaCha8Rng| {
                    let mut other = rng.random_range(0..n);
                    if rng.random_bool(noise.friend_of_friend.clamp(0.0, 1.0)) && !friends[s as usize].is_empty() {
                        let (f, _) = *friends[s as usize].choose(rng).expect("non-empty");
                        if let Some(&(g, _)) = friends[f as usize].choose(rng) {
                            other = g;
                        }
                    }
                    let known = friends[s as usize].iter().any(|(o, _)| *o == other);
                    if other == s || known || household_of[other as usize] == household_of[s as usize] {
                        return;
                    }
                    friends[s as usize].push((other, kind));
                    friends[other as usize].push((s, kind));
                };
            // Half of each one's friendships are made by them, half by the others.
            let mean = noise.weekly_friends.max(0.0) / 2.0;
            for &s in &order {
                let k = mean.floor() as u32 + u32::from(rng.random_bool(mean.fract()));
                for _ in 0..k {
                    befriend(s, Friendship::Weekly, &mut friends, &mut rng);
                }
                if rng.random_bool((noise.close_friend_rate / 2.0).clamp(0.0, 1.0)) {
                    befriend(s, Friendship::Close, &mut friends, &mut rng);
                }
            }
        }

        // Flatmates who talk like close friends.
        let mut flats: Vec<Vec<u32>> = vec![Vec::new(); flat_home.len()];
        for (s, &f) in flat_of.iter().enumerate() {
            if f != NONE {
                flats[f as usize].push(s as u32);
            }
        }
        for flat in &flats {
            for (k, &a) in flat.iter().enumerate() {
                for &b in &flat[k + 1..] {
                    if pair_hash(a, b, 11) < noise.flatmate_calls {
                        friends[a as usize].push((b, Friendship::Close));
                        friends[b as usize].push((a, Friendship::Close));
                    }
                }
            }
        }

        // Each household's members, ascending (`order` has been reshuffled since).
        let mut population = Population {
            noise: noise.clone(),
            home_cell,
            quiet,
            friends,
            flat_of,
            subscribers: spec.subscribers,
            household_of,
            households,
            members: Vec::new(),
            member,
            colleague_members,
            colleague_start,
            shops,
            hubs,
            special,
        };
        population.members = population.collect_members();
        population
    }

    fn collect_members(&self) -> Vec<u32> {
        let mut fill: Vec<u32> = self.households.iter().map(|h| h.start).collect();
        let mut members = vec![0u32; self.household_of.len()];
        for (s, &h) in self.household_of.iter().enumerate() {
            let slot = &mut fill[h as usize];
            members[*slot as usize] = s as u32;
            *slot += 1;
        }
        members
    }

    /// Number of subscribers.
    pub fn subscribers(&self) -> u64 {
        self.subscribers
    }

    /// The households, by id (`T-<index>`).
    pub fn households(&self) -> &[Household] {
        &self.households
    }

    /// Household index of subscriber `s`.
    pub fn household_of(&self, s: u32) -> u32 {
        self.household_of[s as usize]
    }

    /// The members of household `h` (subscriber indices, ascending).
    pub fn members(&self, h: u32) -> &[u32] {
        let hh = &self.households[h as usize];
        &self.members[hh.start as usize..(hh.start + hh.len) as usize]
    }

    /// Subscriber `s`'s household.
    pub fn household(&self, s: u32) -> &Household {
        &self.households[self.household_of[s as usize] as usize]
    }

    /// `account_id` of subscriber `s` in the customer records.
    pub fn account_id(&self, s: u32) -> String {
        format!("A-{}", self.member[s as usize].account)
    }

    /// `address_id` of subscriber `s` in the customer records.
    pub fn address_id(&self, s: u32) -> String {
        format!("ADDR-{}", self.member[s as usize].address)
    }

    /// `account_id` that subscriber `s` logs in to self-care with.
    pub fn selfcare_account_id(&self, s: u32) -> String {
        format!("A-{}", self.member[s as usize].selfcare)
    }

    pub fn pack_gb(&self, s: u32) -> u64 {
        self.member[s as usize].pack_gb
    }

    pub fn prepaid(&self, s: u32) -> bool {
        self.member[s as usize].prepaid
    }

    /// The household member who tops up subscriber `s`'s line, if any.
    pub fn paid_by(&self, s: u32) -> Option<u32> {
        Some(self.member[s as usize].paid_by).filter(|&p| p != NONE)
    }

    /// The corner shop that tops up subscriber `s`'s line, if any.
    pub fn shop_of(&self, s: u32) -> Option<u32> {
        Some(self.member[s as usize].shop).filter(|&p| p != NONE)
    }

    /// The corner shops (subscriber indices).
    pub fn shops(&self) -> &[u32] {
        &self.shops
    }

    /// The on-net hubs that many subscribers call (subscriber indices).
    pub fn hubs(&self) -> &[u32] {
        &self.hubs
    }

    /// Subscriber `s`'s colleagues (the group, `s` included), if any.
    pub fn colleagues(&self, s: u32) -> Option<&[u32]> {
        let g = self.member[s as usize].colleagues;
        (g != NONE).then(|| {
            let from = self.colleague_start[g as usize] as usize;
            let to = self
                .colleague_start
                .get(g as usize + 1)
                .map_or(self.colleague_members.len(), |&e| e as usize);
            &self.colleague_members[from..to]
        })
    }

    /// Whom subscriber `s` calls or texts next, and why. Colleagues are only called on weekdays.
    pub fn pick_peer(&self, rng: &mut ChaCha8Rng, s: u32, weekday: bool) -> (String, Contact) {
        let h = self.household_of[s as usize];
        let household = &self.households[h as usize];
        let noise = &self.noise;
        let roll: f64 = rng.random();
        let family = if self.quiet[h as usize] {
            noise.family_share / 5.0
        } else {
            noise.family_share
        };
        if roll < family && household.len > 1 {
            let members = self.members(h);
            let k = rng.random_range(0..members.len() - 1);
            let at = members.iter().position(|&o| o == s).expect("in own household");
            let peer = members[if k >= at { k + 1 } else { k }];
            return (msisdn(u64::from(peer)), Contact::Family);
        }
        // A quiet family's calls that would have gone to family go to anybody else.
        let mut edge = noise.family_share;
        if (edge..edge + 0.06).contains(&roll) && household.competitor {
            return (competitor_msisdn(h), Contact::Competitor);
        }
        edge += 0.06;
        if (edge..edge + noise.colleague_calls).contains(&roll) && weekday {
            if let Some(group) = self.colleagues(s) {
                let k = rng.random_range(0..group.len() - 1);
                let at = group.iter().position(|&o| o == s).expect("in own group");
                let peer = group[if k >= at { k + 1 } else { k }];
                return (msisdn(u64::from(peer)), Contact::Colleague);
            }
        }
        edge += noise.colleague_calls;
        if (edge..edge + 0.03).contains(&roll) && !self.hubs.is_empty() {
            let hub = self.hubs[h as usize % self.hubs.len()];
            if hub != s {
                return (msisdn(u64::from(hub)), Contact::Hub);
            }
        }
        edge += 0.03;
        if (edge..edge + 0.10).contains(&roll) {
            return (random_off_net(rng), Contact::OffNet);
        }
        // Anybody else on the network.
        let mut peer = rng.random_range(0..self.subscribers);
        if peer == u64::from(s) {
            peer = (peer + 1) % self.subscribers;
        }
        (msisdn(peer), Contact::Anyone)
    }

    /// The calls and SMS subscriber `s` makes on day `day` (of the world) because of who they
    /// know rather than at random: weekly friends on their weekday, close friends and flatmates
    /// on two or three days a week, busy colleagues on most weekdays, the service line now
    /// and then.
    pub fn planned(&self, rng: &mut ChaCha8Rng, s: u32, day: u32, weekday: bool) -> Vec<(String, Contact)> {
        let noise = &self.noise;
        let mut out = Vec::new();
        for &(f, kind) in &self.friends[s as usize] {
            // The one who starts the friendship's contacts, and the one who answers less.
            let starts = (s < f) == (pair_hash(s, f, 3) < 0.5);
            let (today, chance) = match kind {
                Friendship::Weekly => (u64::from(day) % 7 == (pair_hash(s, f, 5) * 7.0) as u64, 0.9),
                Friendship::Close => (rng.random_bool(2.5 / 7.0), 0.9),
            };
            if today && rng.random_bool(if starts { chance } else { chance * 0.6 }) {
                let contact = match kind {
                    Friendship::Weekly => Contact::WeeklyFriend,
                    Friendship::Close => Contact::CloseFriend,
                };
                out.push((msisdn(u64::from(f)), contact));
            }
        }
        if weekday {
            if let Some(group) = self.colleagues(s) {
                for &c in group.iter().filter(|&&c| c != s) {
                    if pair_hash(s, c, 9) < noise.busy_colleague_rate
                        && rng.random_bool(noise.busy_colleague_daily * 0.6)
                    {
                        out.push((msisdn(u64::from(c)), Contact::BusyColleague));
                    }
                }
            }
        }
        if pair_hash(s, s, 13) < noise.service_callers
            && rng.random_bool((noise.service_calls_per_month / 30.0).clamp(0.0, 1.0))
        {
            out.push((SERVICE_LINE.to_string(), Contact::ServiceLine));
        }
        out
    }

    /// The cell id a network record of subscriber `s` names at local hour `hour`: the home
    /// cell at night (unless away), the workplace's cell on a working day for colleagues, any
    /// cell otherwise; abroad (`home_mcc` differs from `mcc`), a foreign one.
    pub fn cell(&self, rng: &mut ChaCha8Rng, s: u32, mcc: &str, abroad: bool, hour: i64, weekday: bool) -> String {
        let h = self.household_of[s as usize] as usize;
        if !abroad && !(6..23).contains(&hour) && !rng.random_bool(self.noise.away_nights.clamp(0.0, 1.0)) {
            return format!("{mcc}-02-{}", self.home_cell[h]);
        }
        let g = self.member[s as usize].colleagues;
        if !abroad && weekday && (9..18).contains(&hour) && g != NONE && rng.random_bool(0.7) {
            return format!("{mcc}-03-{g}");
        }
        format!("{mcc}-01-{}", rng.random_range(1000..9999))
    }

    /// The world's rates.
    pub fn noise(&self) -> &Noise {
        &self.noise
    }

    /// The hand-downs planned in the generated days.
    pub fn hand_downs(&self) -> impl Iterator<Item = &HandDown> {
        self.households.iter().filter_map(|h| h.hand_down.as_ref())
    }

    /// The truth about subscriber `s`.
    pub fn truth(&self, s: u32) -> TruthRecord {
        let h = self.household_of[s as usize];
        let household = &self.households[h as usize];
        TruthRecord {
            msisdn: msisdn(u64::from(s)),
            household: format!("T-{h}"),
            role: if household.payer == s { "payer" } else { "member" },
            decision_maker: msisdn(u64::from(household.payer)),
            size: household.len,
            link: household.link,
            competitor_peer: household.competitor.then(|| competitor_msisdn(h)),
            shop: self.special[s as usize] == 1,
            hub: self.special[s as usize] == 2,
            colleagues: Some(self.member[s as usize].colleagues)
                .filter(|&g| g != NONE)
                .map(|g| format!("C-{g}")),
            flat: Some(self.flat_of[s as usize])
                .filter(|&f| f != NONE)
                .map(|f| format!("F-{f}")),
        }
    }

    /// The truth, one record per subscriber in msisdn order.
    pub fn truth_records(&self) -> impl Iterator<Item = TruthRecord> + '_ {
        (0..self.subscribers as u32).map(|s| self.truth(s))
    }

    /// Histogram of household sizes: `[count of size 1, size 2, …]`.
    pub fn size_histogram(&self) -> Vec<u64> {
        let mut out = vec![0u64; MAX_SIZE];
        for h in &self.households {
            out[h.len as usize - 1] += 1;
        }
        out
    }
}

/// Local-time offset (hours east of UTC) of home market `home` on `date`: the four home
/// markets keep EU summer time (from the last Sunday of March to the last Sunday of October).
pub fn utc_offset_hours(home: usize, date: chrono::NaiveDate) -> i64 {
    use chrono::Datelike;
    let base = if crate::world::HOMES[home].0 == "PT" { 0 } else { 1 };
    let last_sunday = |month: u32| {
        let next = if month == 12 {
            chrono::NaiveDate::from_ymd_opt(date.year() + 1, 1, 1)
        } else {
            chrono::NaiveDate::from_ymd_opt(date.year(), month + 1, 1)
        }
        .expect("valid date");
        let last = next.pred_opt().expect("valid date");
        last - chrono::Duration::days(i64::from(last.weekday().num_days_from_sunday()))
    };
    let summer = date >= last_sunday(3) && date < last_sunday(10);
    base + i64::from(summer)
}

/// The hand-down each involved subscriber takes part in (as giver or receiver).
pub(crate) fn device_changes(pop: &Population) -> HashMap<u32, HandDown> {
    let mut out = HashMap::new();
    for hd in pop.hand_downs() {
        out.insert(hd.giver, *hd);
        out.insert(hd.receiver, *hd);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn spec(subscribers: u64, seed: u64) -> WorldSpec {
        WorldSpec {
            subscribers,
            days: 2,
            start: NaiveDate::from_ymd_opt(2026, 7, 1).unwrap(),
            seed,
            events_per_day: 20,
            travel_rate: 0.1,
            invalid_rate: 0.0,
            duplicate_rate: 0.0,
        }
    }

    #[test]
    fn households_partition_the_subscribers() {
        let pop = Population::build(&spec(10_000, 3), &HouseholdSpec::default());
        let mut seen = vec![false; 10_000];
        for (h, hh) in pop.households().iter().enumerate() {
            let members = pop.members(h as u32);
            assert!((1..=6).contains(&members.len()));
            assert!(members.windows(2).all(|w| w[0] < w[1]));
            assert!(members.contains(&hh.payer));
            for &s in members {
                assert!(!seen[s as usize]);
                seen[s as usize] = true;
                assert_eq!(pop.household_of(s), h as u32);
                if s != hh.payer {
                    assert!(monthly_fee(pop.pack_gb(s)) < monthly_fee(pop.pack_gb(hh.payer)));
                    assert!(!pop.prepaid(hh.payer));
                }
            }
        }
        assert!(seen.iter().all(|&s| s));
        let sizes = pop.size_histogram();
        let households: u64 = sizes.iter().sum();
        // Many singles, many 2–4, a few 5–6.
        assert!(sizes[0] * 4 > households && sizes[0] * 2 < households, "{sizes:?}");
        assert!((sizes[1] + sizes[2] + sizes[3]) * 2 > households, "{sizes:?}");
        assert!(sizes[4] > 0 && sizes[5] > 0, "{sizes:?}");
        for link in [Link::Single, Link::Account, Link::Address, Link::Soft] {
            assert!(pop.households().iter().any(|h| h.link == link), "{link:?}");
        }
    }

    #[test]
    fn noise_is_never_family() {
        let pop = Population::build(&spec(20_000, 9), &HouseholdSpec::default());
        assert_eq!(pop.shops().len(), 2);
        assert_eq!(pop.hubs().len(), 1);
        let mut shop_customers = 0;
        for s in 0..20_000u32 {
            if let Some(shop) = pop.shop_of(s) {
                shop_customers += 1;
                assert_ne!(pop.household_of(shop), pop.household_of(s));
            }
            if let Some(group) = pop.colleagues(s) {
                assert!(group.contains(&s));
                let mut hh: Vec<u32> = group.iter().map(|&o| pop.household_of(o)).collect();
                hh.sort_unstable();
                hh.dedup();
                assert_eq!(hh.len(), group.len());
            }
            if let Some(p) = pop.paid_by(s) {
                assert_eq!(pop.household_of(p), pop.household_of(s));
            }
        }
        assert!(shop_customers > 500, "{shop_customers}");
    }

    #[test]
    fn drawn_worlds_differ_and_their_noise_is_never_family() {
        let mut families = Vec::new();
        for seed in 1..=5 {
            let noise = Noise::drawn(seed);
            assert_ne!(noise, Noise::drawn(seed + 100));
            assert!(noise.size_weights.iter().all(|w| *w >= 0.0) && noise.account_rate + noise.address_rate <= 1.0);
            let hh = HouseholdSpec {
                max_size: 7,
                noise,
                ..HouseholdSpec::default()
            };
            let pop = Population::build(&spec(5_000, seed), &hh);
            let (mut flatmates, mut friendships) = (0, 0);
            for s in 0..5_000u32 {
                for &(f, _) in &pop.friends[s as usize] {
                    assert_ne!(pop.household_of(f), pop.household_of(s), "a friend is not family");
                    friendships += 1;
                }
                if pop.flat_of[s as usize] != NONE {
                    assert_eq!(pop.household(s).size(), 1, "flatmates are singles");
                    flatmates += 1;
                }
            }
            assert!(friendships > 0);
            families.push((pop.households().len(), flatmates));
        }
        families.sort_unstable();
        families.dedup();
        assert_eq!(families.len(), 5, "five different worlds: {families:?}");
    }

    #[test]
    fn peers_are_never_oneself() {
        let pop = Population::build(&spec(500, 4), &HouseholdSpec::default());
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut family = 0;
        for s in 0..500u32 {
            for _ in 0..50 {
                let (peer, contact) = pop.pick_peer(&mut rng, s, true);
                assert_ne!(peer, msisdn(u64::from(s)));
                if contact == Contact::Family {
                    family += 1;
                    let p: u64 = peer[4..].parse::<u64>().unwrap() - 10_000_000;
                    assert_eq!(pop.household_of(p as u32), pop.household_of(s));
                }
            }
        }
        assert!(family > 1000);
    }

    #[test]
    fn summer_time() {
        let d = |m, day| NaiveDate::from_ymd_opt(2026, m, day).unwrap();
        assert_eq!(utc_offset_hours(0, d(7, 1)), 1);
        assert_eq!(utc_offset_hours(0, d(1, 10)), 0);
        assert_eq!(utc_offset_hours(1, d(7, 1)), 2);
        assert_eq!(utc_offset_hours(1, d(3, 28)), 1);
        assert_eq!(utc_offset_hours(1, d(3, 29)), 2);
        assert_eq!(utc_offset_hours(1, d(10, 24)), 2);
        assert_eq!(utc_offset_hours(1, d(10, 25)), 1);
    }
}
