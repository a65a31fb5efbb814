//! Oracle test for the household graph: the differential dataflow (several workers, links
//! added and expiring over time) against a plain sequential model — each pair's contact
//! pattern (reciprocity, distinct days, family time, share of each one's contacts), nights
//! under one cell, the same thresholds, connected components by union-find, and the size
//! bound's tiers — at many instants.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use differential_dataflow::input::Input;
use kairos_dataflows::households::{graph, ContactPattern, Evidence, Facts, HouseholdConfig, HouseholdView, Slot};
use kairos_model::time::DAY;
use kairos_model::{Millis, Msisdn};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use timely::dataflow::ProbeHandle;

const MINUTE: Millis = 60_000;

fn config() -> HouseholdConfig {
    HouseholdConfig {
        window_days: 2,
        // Scaled to a window of three days: every branch of the scoring is reached.
        contact_min_days: 2,
        contact_min_family_days: 1,
        contact_min_share_percent: 20,
        contact_alone_days: 3,
        min_shared_nights: 1,
        granularity_ms: MINUTE,
        // Caps out of reach: this test is about components; the caps have unit tests of
        // their own in the golden cases.
        max_shared: 1_000,
        max_call_partners: 1_000,
        max_payees: 1_000,
        // Small, so that components above it (and so the tiers of the split) are common.
        max_household: 5,
        ..HouseholdConfig::default()
    }
}

fn msisdn(i: u64) -> Msisdn {
    Msisdn::from_u64(351_910_000_000 + i).unwrap()
}

const SLOTS: [Slot; 4] = [Slot::Evening, Slot::Weekend, Slot::Daytime, Slot::Night];

/// Seeded evidence: facts (some shared accounts), contacts between random pairs (a record per
/// caller, callee, day and slot, as the engine makes them), nights under a few cells, top-ups
/// paid for another, over four days, each piece expiring as the engine makes it.
fn random_evidence(seed: u64, subscribers: u64) -> Vec<(Evidence, Millis, isize)> {
    let config = config();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut updates = Vec::new();
    for i in 0..subscribers {
        let facts = Facts {
            first_seen: rng.random_range(0..10) * MINUTE,
            account: format!("A-{}", if rng.random_bool(0.3) { i / 3 } else { 1_000 + i }),
            address: None,
            fee_cents: rng.random_range(0..5_000),
            postpaid: rng.random_bool(0.5),
        };
        updates.push((Evidence::Facts(msisdn(i), facts.clone()), facts.first_seen, 1));
    }
    let mut once = BTreeSet::new();
    // Pairs that talk often (so that patterns of several days are common), and strangers.
    let close: Vec<(u64, u64)> = (0..subscribers / 2)
        .map(|_| (rng.random_range(0..subscribers), rng.random_range(0..subscribers)))
        .collect();
    for _ in 0..subscribers * 8 {
        let at = rng.random_range(0..4 * DAY);
        let day = (at / DAY) as u32;
        let evidence = match rng.random_range(0..10) {
            0..=5 => {
                let (a, b) = *close.choose(&mut rng).unwrap();
                let (a, b) = if rng.random_bool(0.5) { (a, b) } else { (b, a) };
                Evidence::Contact(msisdn(a), msisdn(b), day, *SLOTS.choose(&mut rng).unwrap())
            }
            6 => {
                let (a, b) = (rng.random_range(0..subscribers), rng.random_range(0..subscribers));
                Evidence::Contact(msisdn(a), msisdn(b), day, *SLOTS.choose(&mut rng).unwrap())
            }
            7 | 8 => Evidence::Night(msisdn(rng.random_range(0..subscribers)), rng.random_range(0..3)),
            _ => Evidence::Paid(
                msisdn(rng.random_range(0..subscribers)),
                msisdn(rng.random_range(0..subscribers)),
            ),
        };
        // A contact or a night counts once per day, as `HouseholdState::once` makes it.
        let daily = !matches!(evidence, Evidence::Paid(..));
        if daily && !once.insert((evidence.clone(), day)) {
            continue;
        }
        updates.push((evidence.clone(), at, 1));
        updates.push((evidence, config.expiry(at), -1));
    }
    updates
}

/// The instant the graph counts an update at.
fn counted_at(at: Millis) -> Millis {
    at.div_ceil(MINUTE) * MINUTE
}

fn find(parent: &mut BTreeMap<Msisdn, Msisdn>, x: Msisdn) -> Msisdn {
    let p = parent[&x];
    if p == x {
        return x;
    }
    let root = find(parent, p);
    parent.insert(x, root);
    root
}

/// What a link is, for the tiers of the size bound.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Hard,
    Call,
    Payer,
}

/// Union-find over the links in force at `at`, with the size bound: each subscriber's
/// founder (the least (first seen, number) of their household). A household is a connected
/// component of at most `max_household` members over all links; the members of larger ones
/// take their component over the links other than calls, then over hard links only, among
/// themselves, and stay alone when even that is too large.
/// Also says whether a component was above the bound (a split happened).
fn model(updates: &[(Evidence, Millis, isize)], at: Millis) -> (BTreeMap<Msisdn, Msisdn>, bool) {
    let config = config();
    let mut facts: BTreeMap<Msisdn, Facts> = BTreeMap::new();
    let mut contacts: BTreeMap<(Msisdn, Msisdn, u32, Slot), isize> = BTreeMap::new();
    let mut nights: BTreeMap<(Msisdn, u64), isize> = BTreeMap::new();
    let mut paid: BTreeMap<(Msisdn, Msisdn), isize> = BTreeMap::new();
    for (evidence, t, diff) in updates {
        if counted_at(*t) > at {
            continue;
        }
        match evidence {
            Evidence::Facts(m, f) => {
                facts.insert(*m, f.clone());
            }
            Evidence::Contact(a, b, day, slot) if a != b => *contacts.entry((*a, *b, *day, *slot)).or_default() += diff,
            Evidence::Night(m, cell) => *nights.entry((*m, *cell)).or_default() += diff,
            Evidence::Paid(a, b) if a != b => *paid.entry((*a, *b)).or_default() += diff,
            _ => {}
        }
    }
    // Each pair's pattern, and each subscriber's records with everybody.
    type Record = (bool, u32, Slot);
    let mut records: BTreeMap<(Msisdn, Msisdn), Vec<Record>> = BTreeMap::new();
    let mut totals: BTreeMap<Msisdn, isize> = BTreeMap::new();
    for ((a, b, day, slot), n) in contacts.iter().filter(|(_, n)| **n > 0) {
        records
            .entry((*a.min(b), *a.max(b)))
            .or_default()
            .push((a < b, *day, *slot));
        *totals.entry(*a).or_default() += n;
        *totals.entry(*b).or_default() += n;
    }
    let mut links: Vec<(Msisdn, Msisdn, Kind)> = Vec::new();
    for ((a, b), list) in &records {
        let p = ContactPattern::of(list.iter().copied());
        let total = totals[a].max(totals[b]);
        let family = p.reciprocal()
            && p.days >= config.contact_min_days
            && p.family_days >= config.contact_min_family_days
            && 100 * p.records as isize >= config.contact_min_share_percent as isize * total
            && facts.contains_key(a)
            && facts.contains_key(b);
        if !family {
            continue;
        }
        let shared_nights: isize = nights
            .iter()
            .filter(|((m, _), n)| m == a && **n > 0)
            .map(|((_, cell), n)| (*n).min(nights.get(&(*b, *cell)).copied().unwrap_or(0).max(0)))
            .sum();
        if p.days >= config.contact_alone_days || shared_nights >= config.min_shared_nights as isize {
            links.push((*a, *b, Kind::Call));
        }
    }
    links.extend(
        paid.iter()
            .filter(|(_, n)| **n >= config.payer_threshold)
            .filter(|((a, b), _)| facts.contains_key(a) && facts.contains_key(b))
            .map(|((a, b), _)| (*a, *b, Kind::Payer)),
    );
    let mut by_account: BTreeMap<&str, Vec<Msisdn>> = BTreeMap::new();
    for (m, f) in &facts {
        by_account.entry(&f.account).or_default().push(*m);
    }
    for members in by_account.values() {
        links.extend(members.windows(2).map(|w| (w[0], w[1], Kind::Hard)));
    }
    let tiers: [fn(Kind) -> bool; 3] = [|_| true, |k| k != Kind::Call, |k| k == Kind::Hard];
    let mut founders: BTreeMap<Msisdn, Msisdn> = BTreeMap::new();
    let mut pending: BTreeSet<Msisdn> = facts.keys().copied().collect();
    let mut split = false;
    for tier in tiers {
        let mut parent: BTreeMap<Msisdn, Msisdn> = pending.iter().map(|m| (*m, *m)).collect();
        for (a, b, kind) in &links {
            if tier(*kind) && pending.contains(a) && pending.contains(b) {
                let (ra, rb) = (find(&mut parent, *a), find(&mut parent, *b));
                parent.insert(ra, rb);
            }
        }
        let mut components: BTreeMap<Msisdn, Vec<Msisdn>> = BTreeMap::new();
        for m in &pending {
            components.entry(find(&mut parent, *m)).or_default().push(*m);
        }
        split |= components.values().any(|c| c.len() > config.max_household);
        for members in components.values().filter(|c| c.len() <= config.max_household) {
            let founder = members.iter().map(|m| (facts[m].first_seen, *m)).min().unwrap().1;
            for m in members {
                founders.insert(*m, founder);
                pending.remove(m);
            }
        }
    }
    founders.extend(pending.iter().map(|m| (*m, *m)));
    (founders, split)
}

/// The dataflow on `workers` workers: every update of (msisdn, founder).
fn dataflow(updates: Vec<(Evidence, Millis, isize)>, workers: usize) -> Vec<((Msisdn, Msisdn), Millis, isize)> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&out);
    let updates = Arc::new(updates);
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let sink = Arc::clone(&sink);
        let probe = ProbeHandle::new();
        let mut input = worker.dataflow::<Millis, _, _>(|scope| {
            let (input, evidence) = scope.new_collection::<Evidence, isize>();
            graph(evidence, &config())
                .map(|(m, view)| (m, view.founder))
                .inspect(move |update| sink.lock().unwrap().push(*update))
                .probe_with(&probe);
            input
        });
        for (i, (evidence, at, diff)) in updates.iter().enumerate() {
            if i % peers == index {
                input.update_at(evidence.clone(), *at, *diff);
            }
        }
        input.close();
        while !probe.done() {
            worker.step();
        }
    })
    .unwrap();
    let mut all = out.lock().unwrap().clone();
    all.sort();
    all
}

/// The dataflow's (msisdn → founder) at `at`, from its updates.
fn at_time(updates: &[((Msisdn, Msisdn), Millis, isize)], at: Millis) -> BTreeMap<Msisdn, Msisdn> {
    let mut counts: BTreeMap<(Msisdn, Msisdn), isize> = BTreeMap::new();
    for (pair, t, diff) in updates {
        if *t <= at {
            *counts.entry(*pair).or_default() += diff;
        }
    }
    let mut founders = BTreeMap::new();
    for ((m, founder), count) in counts {
        assert!(count == 0 || count == 1, "{m:?} → {founder:?} counted {count} times");
        if count == 1 {
            assert!(founders.insert(m, founder).is_none(), "{m:?} is in two households");
        }
    }
    founders
}

#[test]
fn households_match_union_find_as_links_come_and_expire_for_any_worker_count() {
    let (mut merged_and_split, mut above_the_bound) = (0, 0);
    for seed in 0..4 {
        let updates = random_evidence(seed, 80);
        let instants: Vec<Millis> = (0..=5 * 24).map(|h| h * 3_600_000).collect();
        let modelled: Vec<(BTreeMap<Msisdn, Msisdn>, bool)> = instants.iter().map(|at| model(&updates, *at)).collect();
        above_the_bound += modelled.iter().filter(|(_, split)| *split).count();
        let expected: Vec<BTreeMap<Msisdn, Msisdn>> = modelled.into_iter().map(|(founders, _)| founders).collect();
        // The world must both merge households and split them again as links expire.
        let sizes: Vec<usize> = expected
            .iter()
            .map(|founders| founders.values().collect::<BTreeSet<_>>().len())
            .collect();
        if sizes.windows(2).any(|w| w[1] > w[0]) && sizes.windows(2).any(|w| w[1] < w[0]) {
            merged_and_split += 1;
        }
        for workers in [1, 2, 3] {
            let got = dataflow(updates.clone(), workers);
            for (at, expected) in instants.iter().zip(&expected) {
                let got = at_time(&got, *at);
                assert_eq!(&got, expected, "seed {seed}, {workers} workers, at {at} ms");
            }
        }
    }
    assert!(merged_and_split >= 2, "the worlds should merge and split households");
    assert!(above_the_bound > 0, "some components should be above the size bound");
}

#[test]
fn a_households_value_and_holding_are_its_members_sums_and_saturate_instead_of_wrapping() {
    // Members of one account: their fees and what their products weigh add up.
    let facts = |i: u64, fee_cents| Facts {
        first_seen: i * MINUTE,
        account: "A-1".into(),
        address: None,
        fee_cents,
        postpaid: true,
    };
    let sums = |members: &[(u64, u32)]| -> Vec<(Msisdn, u32, u64, u32)> {
        let updates = members
            .iter()
            .enumerate()
            .flat_map(|(i, (fee, held))| {
                let i = i as u64 + 1;
                [
                    (Evidence::Facts(msisdn(i), facts(i, *fee)), i * MINUTE, 1),
                    (Evidence::Held(msisdn(i), *held), i * MINUTE, 1),
                ]
            })
            .collect();
        final_views(updates, &config())
            .into_iter()
            .map(|(m, view)| (m, view.size, view.value_cents, view.held_milli))
            .collect()
    };
    assert_eq!(
        sums(&[(1_000, 2_500), (2_000, 1_000), (500, 1_000)]),
        vec![
            (msisdn(1), 3, 3_500, 4_500),
            (msisdn(2), 3, 3_500, 4_500),
            (msisdn(3), 3, 3_500, 4_500)
        ]
    );
    // The largest fee decode lets through (a fee of 1e300 is u64::MAX cents), and the largest
    // holding: a wrapped sum would make the household worth almost nothing.
    assert_eq!(
        sums(&[(u64::MAX, u32::MAX), (u64::MAX, u32::MAX)]),
        vec![(msisdn(1), 2, u64::MAX, u32::MAX), (msisdn(2), 2, u64::MAX, u32::MAX)]
    );
}

/// Every member's view once all of `updates` are in (one worker).
fn final_views(updates: Vec<(Evidence, Millis, isize)>, config: &HouseholdConfig) -> BTreeMap<Msisdn, HouseholdView> {
    let config = config.clone();
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&out);
    timely::execute(timely::Config::process(1), move |worker| {
        let sink = Arc::clone(&sink);
        let probe = ProbeHandle::new();
        let mut input = worker.dataflow::<Millis, _, _>(|scope| {
            let (input, evidence) = scope.new_collection::<Evidence, isize>();
            graph(evidence, &config)
                .inspect(move |update| sink.lock().unwrap().push(update.clone()))
                .probe_with(&probe);
            input
        });
        for (evidence, at, diff) in &updates {
            input.update_at(evidence.clone(), *at, *diff);
        }
        input.close();
        while !probe.done() {
            worker.step();
        }
    })
    .unwrap();
    let mut counts: BTreeMap<(Msisdn, HouseholdView), isize> = BTreeMap::new();
    for (view, _, diff) in out.lock().unwrap().iter() {
        *counts.entry(view.clone()).or_default() += diff;
    }
    counts
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(view, _)| view)
        .collect()
}

/// A subscriber's customer record (account `account`), first seen at 1 min.
fn customer(i: u64, account: &str) -> (Evidence, Millis, isize) {
    let facts = Facts {
        first_seen: MINUTE,
        account: account.into(),
        address: None,
        fee_cents: 1_000,
        postpaid: true,
    };
    (Evidence::Facts(msisdn(i), facts), MINUTE, 1)
}

/// `from` calls `to` in `slot` on each of `days` days (from day 0), as the engine records it:
/// one contact per day (no expiry: the views are read with everything in).
fn calls(from: Msisdn, to: Msisdn, days: u32, slot: Slot) -> Vec<(Evidence, Millis, isize)> {
    (0..days)
        .map(|d| {
            (
                Evidence::Contact(from, to, d, slot),
                Millis::from(d) * DAY + 19 * 3_600_000,
                1,
            )
        })
        .collect()
}

/// Both call each other in the evening on each of `days` days.
fn family_calls(a: Msisdn, b: Msisdn, days: u32) -> Vec<(Evidence, Millis, isize)> {
    let mut out = calls(a, b, days, Slot::Evening);
    out.extend(calls(b, a, days, Slot::Evening));
    out
}

#[test]
fn no_household_above_the_size_bound_survives_links_that_percolate() {
    // 40 subscribers in pairs (one account each pair), and strong calls from each to the
    // next: friends of friends join all 40 into one component.
    let mut updates: Vec<(Evidence, Millis, isize)> = (0..40).map(|i| customer(i, &format!("A-{}", i / 2))).collect();
    updates.extend((0..39).flat_map(|i| family_calls(msisdn(i), msisdn(i + 1), 20)));
    let views = final_views(updates, &HouseholdConfig::default());
    assert_eq!(views.len(), 40);
    let bound = HouseholdConfig::default().max_household as u32;
    assert!(views.values().all(|v| v.size <= bound), "{views:?}");
    // What is left after the call links are dropped: the pairs.
    for i in (0..40).step_by(2) {
        let (a, b) = (&views[&msisdn(i)], &views[&msisdn(i + 1)]);
        assert_eq!((a.size, a.founder), (2, b.founder), "{a:?} {b:?}");
        // Only links within the household are shown.
        assert!(a.links.iter().all(|(m, _)| *m == msisdn(i + 1)), "{a:?}");
    }
}

#[test]
fn a_number_many_members_call_is_a_service_and_never_a_competitor_peer() {
    // Household A: 1 and 2 (one account); household B: 3 and 4; 5 to 14 alone.
    let mut updates = vec![customer(1, "A"), customer(2, "A"), customer(3, "B"), customer(4, "B")];
    updates.extend((5..=14).map(|i| customer(i, &format!("S-{i}"))));
    let (tied, service, competitor) = (msisdn(899), msisdn(900), msisdn(901));
    let often = |a: u64, peer: Msisdn| calls(msisdn(a), peer, 10, Slot::Evening);
    // The operator's service line: strongly tied to both members of A and of B (evening calls
    // on many days), and called now and then by everyone else: 14 callers.
    updates.extend([1, 2, 3, 4].into_iter().flat_map(|i| often(i, service)));
    updates.extend((5..=14).flat_map(|i| calls(msisdn(i), service, 1, Slot::Daytime)));
    // A number strongly tied to both members of A and to members of two more households
    // (5 and 6): few callers, but three households.
    updates.extend([1, 2, 5, 6].into_iter().flat_map(|i| often(i, tied)));
    // A member on a competitor: strongly tied to both members of A, and to no one else.
    updates.extend([1, 2].into_iter().flat_map(|i| often(i, competitor)));

    let peers: BTreeMap<Msisdn, Option<Msisdn>> = final_views(updates, &HouseholdConfig::default())
        .into_iter()
        .map(|(m, view)| (m, view.competitor_peer))
        .collect();
    // The lower numbers (the service line, the widely tied one) would win without the
    // service filter: the most members, then the lowest number.
    assert_eq!(peers[&msisdn(1)], Some(competitor), "{peers:?}");
    assert_eq!(peers[&msisdn(2)], Some(competitor), "{peers:?}");
    assert_eq!(
        peers[&msisdn(3)],
        None,
        "household B's only tie is the service line: {peers:?}"
    );
    assert_eq!(peers[&msisdn(4)], None, "{peers:?}");
    assert!(
        peers.values().all(|p| *p != Some(service) && *p != Some(tied)),
        "{peers:?}"
    );
}

/// Each subscriber's household size with `updates` and the default configuration.
fn sizes(updates: Vec<(Evidence, Millis, isize)>) -> BTreeMap<Msisdn, u32> {
    final_views(updates, &HouseholdConfig::default())
        .into_iter()
        .map(|(m, view)| (m, view.size))
        .collect()
}

/// Subscriber `m` under `cell` on each of `nights` nights.
fn nights(m: Msisdn, cell: u64, nights: u32) -> Vec<(Evidence, Millis, isize)> {
    (0..nights)
        .map(|d| (Evidence::Night(m, cell), Millis::from(d) * DAY + 2 * 3_600_000, 1))
        .collect()
}

#[test]
fn friends_colleagues_and_neighbours_are_not_family_but_families_are() {
    let mut updates: Vec<(Evidence, Millis, isize)> = (1..=12).map(|i| customer(i, &format!("A-{i}"))).collect();
    // 1 and 2: a friend who texts every week in the evening, and is texted back (4 days).
    updates.extend(calls(msisdn(1), msisdn(2), 4, Slot::Evening));
    updates.extend(calls(msisdn(2), msisdn(1), 4, Slot::Evening));
    // 3 and 4: colleagues who call each other on 20 working days, in office hours.
    updates.extend(calls(msisdn(3), msisdn(4), 20, Slot::Daytime));
    updates.extend(calls(msisdn(4), msisdn(3), 20, Slot::Daytime));
    // 5 and 6: neighbours under one cell every night, who never call.
    updates.extend(nights(msisdn(5), 7, 28));
    updates.extend(nights(msisdn(6), 7, 28));
    // 7 calls 8 every evening; 8 never calls back (a fan, a debt collector).
    updates.extend(calls(msisdn(7), msisdn(8), 25, Slot::Evening));
    // 9 and 10: family who talk on 8 evenings (too few to link alone) and sleep under one cell.
    updates.extend(family_calls(msisdn(9), msisdn(10), 8));
    updates.extend(nights(msisdn(9), 3, 10));
    updates.extend(nights(msisdn(10), 3, 10));
    // 11 and 12: family who talk on 20 evenings and weekends: calls alone are enough.
    updates.extend(family_calls(msisdn(11), msisdn(12), 20));
    let sizes = sizes(updates);
    for i in 1..=8 {
        assert_eq!(sizes[&msisdn(i)], 1, "{i} is no one's family: {sizes:?}");
    }
    for i in 9..=12 {
        assert_eq!(sizes[&msisdn(i)], 2, "{i} lives with family: {sizes:?}");
    }
}

#[test]
fn calls_of_the_family_pattern_without_a_shared_night_link_only_when_frequent() {
    let mut updates: Vec<(Evidence, Millis, isize)> = (1..=4).map(|i| customer(i, &format!("A-{i}"))).collect();
    // 1 and 2: a close friend, 8 evenings, sleeping under other cells.
    updates.extend(family_calls(msisdn(1), msisdn(2), 8));
    updates.extend(nights(msisdn(1), 1, 10));
    updates.extend(nights(msisdn(2), 2, 10));
    // 3 talks to 4 on 8 evenings, but to a hundred others on 10 days each: 4 is a small
    // share of 3's contacts (and one night under one cell would not make it more).
    updates.extend(family_calls(msisdn(3), msisdn(4), 8));
    for other in 100..200 {
        updates.extend(calls(msisdn(3), msisdn(other), 10, Slot::Daytime));
    }
    updates.extend(nights(msisdn(3), 5, 10));
    updates.extend(nights(msisdn(4), 5, 10));
    let sizes = sizes(updates);
    assert!((1..=4).all(|i| sizes[&msisdn(i)] == 1), "{sizes:?}");
}
