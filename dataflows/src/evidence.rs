//! What one subscriber's events say about their household: the evidence the household graph
//! (`households.rs`) is built from, emitted by `SubscriberState` as updates at the event's
//! time (`ts`, not the instant a late event is applied at, so the graph's steps do not depend
//! on how late events arrived; the operator moves an update whose step has closed to the next
//! one) with their retraction when they leave the window — and kept in the subscriber's state, so
//! that after a restart the graph can be rebuilt from the states alone.

use std::collections::BTreeMap;

use chrono::{Datelike, TimeZone as _, Timelike};
use chrono_tz::Tz;
use kairos_model::event::{CustomerRecord, CustomerStatus};
use kairos_model::{Millis, Msisdn, Stickiness};
use serde::{Deserialize, Serialize};

use crate::households::{Evidence, EvidenceUpdate, Facts, HouseholdConfig, HouseholdView, Slot};

/// A subscriber's part in the household graph.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HouseholdState {
    /// When the subscriber was first seen with a customer record.
    pub first_seen: Option<Millis>,
    /// The facts in force in the graph.
    pub facts: Option<Facts>,
    /// The handset held now (IMEI), and since when.
    pub handset: Option<(String, Millis)>,
    /// Soft evidence still in the window: weight by (expiry, evidence).
    pub evidence: BTreeMap<(Millis, Evidence), isize>,
    /// The household, as the graph last said.
    pub view: Option<HouseholdView>,
    /// Only in a checkpoint: the graph's changes already computed for instants at or after
    /// the checkpoint, not applied yet — (instant, view, diff) — re-applied after a restart.
    pub pending_views: Vec<(Millis, HouseholdView, isize)>,
    /// What the products weigh in the graph, in thousandths (0: nothing in it).
    pub held: u32,
    /// The churn risk in the graph, in thousandths (`None`: nothing in it — no score yet,
    /// or no longer a customer).
    pub risk: Option<u32>,
}

impl HouseholdState {
    /// Soft evidence at event time `ts`, applied at instant `now`: in force from `now` until
    /// it leaves the window.
    pub fn soft(
        &mut self,
        config: &HouseholdConfig,
        evidence: Evidence,
        ts: Millis,
        now: Millis,
        weight: isize,
        out: &mut Vec<EvidenceUpdate>,
    ) {
        let expires = config.expiry(ts).max(now + 1);
        while let Some(entry) = self.evidence.first_entry() {
            if entry.key().0 > now {
                break;
            }
            entry.remove();
        }
        out.push((evidence.clone(), ts, weight));
        out.push((evidence.clone(), expires, -weight));
        *self.evidence.entry((expires, evidence)).or_default() += weight;
    }

    /// Soft evidence that counts once per UTC day (a contact, a night under a cell): added
    /// with weight 1 unless the same evidence of the same day is already in the window.
    pub fn once(
        &mut self,
        config: &HouseholdConfig,
        evidence: Evidence,
        ts: Millis,
        now: Millis,
        out: &mut Vec<EvidenceUpdate>,
    ) {
        let expires = config.expiry(ts).max(now + 1);
        if !self.evidence.contains_key(&(expires, evidence.clone())) {
            self.soft(config, evidence, ts, now, 1, out);
        }
    }

    /// The customer record in force changed (or is gone, with `None`).
    pub fn facts(
        &mut self,
        msisdn: Msisdn,
        (record, weights): (Option<&CustomerRecord>, &Stickiness),
        ts: Millis,
        out: &mut Vec<EvidenceUpdate>,
    ) {
        let first_seen = *self.first_seen.get_or_insert(ts);
        let facts = record.map(|r| Facts {
            first_seen,
            account: r.account_id.clone(),
            address: r.address_id.clone(),
            // A terminated line pays nothing: it stays a member (its links, and that it
            // left, still say something of the household) worth nothing.
            fee_cents: r
                .plan
                .as_ref()
                .and_then(|p| p.monthly_fee)
                .filter(|_| r.status != CustomerStatus::Terminated)
                .map_or(0, |fee| (fee.max(0.0) * 100.0).round() as u64),
            postpaid: !r.prepaid.unwrap_or(false),
        });
        // What the products weigh, apart from the facts: a change of weights alone changes it.
        self.reweigh(msisdn, held_milli(record, weights), ts, out);
        if facts == self.facts {
            return;
        }
        if let Some(old) = self.facts.take() {
            out.push((Evidence::Facts(msisdn, old), ts, -1));
        }
        if let Some(new) = &facts {
            out.push((Evidence::Facts(msisdn, new.clone()), ts, 1));
        }
        self.facts = facts;
    }

    /// The subscriber is seen with handset `imei` at event time `ts`: a new holding, unless
    /// the sighting is older than the holding in force; the previous one stays in the window
    /// (so a hand-down to the next holder is seen).
    pub fn handset(
        &mut self,
        config: &HouseholdConfig,
        msisdn: Msisdn,
        imei: &str,
        ts: Millis,
        now: Millis,
        out: &mut Vec<EvidenceUpdate>,
    ) {
        // The same handset, or an older sighting arriving late: nothing changes hands (so the
        // order events arrive in cannot invent a hand-down back and forth).
        if imei.is_empty()
            || self
                .handset
                .as_ref()
                .is_some_and(|(held, since)| held == imei || ts < *since)
        {
            return;
        }
        self.release_handset(config, msisdn, ts, now, out);
        out.push((Evidence::Holder(imei.to_string(), ts, msisdn), ts, 1));
        self.handset = Some((imei.to_string(), ts));
    }

    fn release_handset(
        &mut self,
        config: &HouseholdConfig,
        msisdn: Msisdn,
        ts: Millis,
        now: Millis,
        out: &mut Vec<EvidenceUpdate>,
    ) {
        if let Some((old, since)) = self.handset.take() {
            let holding = Evidence::Holder(old, since, msisdn);
            let expires = config.expiry(ts).max(now + 1);
            out.push((holding.clone(), expires, -1));
            *self.evidence.entry((expires, holding)).or_default() += 1;
        }
    }

    /// The subscriber is erased: their facts and handset leave the graph now (soft evidence
    /// leaves as it expires).
    pub fn erase(&mut self, msisdn: Msisdn, now: Millis, out: &mut Vec<EvidenceUpdate>) {
        if let Some(old) = self.facts.take() {
            out.push((Evidence::Facts(msisdn, old), now, -1));
        }
        if self.held > 0 {
            out.push((Evidence::Held(msisdn, std::mem::take(&mut self.held)), now, -1));
        }
        if let Some((imei, since)) = self.handset.take() {
            out.push((Evidence::Holder(imei, since, msisdn), now, -1));
        }
        if let Some(risk) = self.risk.take() {
            out.push((Evidence::Risk(msisdn, risk), now, -1));
        }
    }

    /// Forgets the erased numbers at instant `now`: the soft evidence naming them leaves the
    /// graph now (its later expiry is cancelled), and a household view naming them is
    /// dropped (the graph sends the new one). Whether anything changed.
    pub fn forget(&mut self, erased: &[Msisdn], now: Millis, out: &mut Vec<EvidenceUpdate>) -> bool {
        let before = self.evidence.len();
        self.evidence.retain(|(expires, evidence), weight| {
            if !erased.iter().any(|m| evidence.names(*m)) {
                return true;
            }
            if *expires > now {
                out.push((evidence.clone(), now, -*weight));
                out.push((evidence.clone(), *expires, *weight));
            }
            false
        });
        let mut changed = self.evidence.len() != before;
        if self.view.as_ref().is_some_and(|v| erased.iter().any(|m| v.names(*m))) {
            self.view = None;
            changed = true;
        }
        let pending = self.pending_views.len();
        self.pending_views
            .retain(|(_, view, _)| !erased.iter().any(|m| view.names(*m)));
        changed || self.pending_views.len() != pending
    }

    /// What the products weigh in the graph becomes `held` (thousandths, [`held_milli`]) at
    /// event time `ts`.
    pub fn reweigh(&mut self, msisdn: Msisdn, held: u32, ts: Millis, out: &mut Vec<EvidenceUpdate>) {
        if held == self.held {
            return;
        }
        if self.held > 0 {
            out.push((Evidence::Held(msisdn, self.held), ts, -1));
        }
        if held > 0 {
            out.push((Evidence::Held(msisdn, held), ts, 1));
        }
        self.held = held;
    }

    /// The churn risk in the graph becomes `risk` (thousandths; `None`: out of it) at event
    /// time `ts`.
    pub fn rescore(&mut self, msisdn: Msisdn, risk: Option<u32>, ts: Millis, out: &mut Vec<EvidenceUpdate>) {
        if risk == self.risk {
            return;
        }
        if let Some(old) = self.risk {
            out.push((Evidence::Risk(msisdn, old), ts, -1));
        }
        if let Some(new) = risk {
            out.push((Evidence::Risk(msisdn, new), ts, 1));
        }
        self.risk = risk;
    }

    /// Everything this subscriber holds in force, again, at instant `at` (a restart: the
    /// graph starts empty) — what the products weigh as `held` and the churn risk as `risk`
    /// (by the weights and the model in force now: they may have changed while kairos was
    /// stopped, and a state stored before weights weighed nothing).
    pub fn re_emit(
        &mut self,
        msisdn: Msisdn,
        (held, risk): (u32, Option<u32>),
        at: Millis,
        out: &mut Vec<EvidenceUpdate>,
    ) {
        self.held = held;
        self.risk = risk;
        if let Some(risk) = risk {
            out.push((Evidence::Risk(msisdn, risk), at, 1));
        }
        if let Some(facts) = &self.facts {
            out.push((Evidence::Facts(msisdn, facts.clone()), at, 1));
        }
        if self.held > 0 {
            out.push((Evidence::Held(msisdn, self.held), at, 1));
        }
        if let Some((imei, since)) = &self.handset {
            out.push((Evidence::Holder(imei.clone(), *since, msisdn), at, 1));
        }
        for ((expires, evidence), weight) in self.evidence.iter().filter(|((expires, _), _)| *expires > at) {
            out.push((evidence.clone(), at, *weight));
            out.push((evidence.clone(), *expires, -weight));
        }
    }
}

/// What a customer record's products weigh in stickiness, in thousandths.
pub fn held_milli(record: Option<&CustomerRecord>, weights: &Stickiness) -> u32 {
    record.map_or(0, |r| {
        (weights.held(&r.products) * 1000.0)
            .round()
            .clamp(0.0, f64::from(u32::MAX)) as u32
    })
}

/// When in the caller's local week (time zone `tz`) a contact at `ts` happened.
pub fn contact_slot(config: &HouseholdConfig, ts: Millis, tz: Tz) -> Slot {
    let Some(local) = tz.timestamp_millis_opt(ts as i64).single() else {
        return Slot::Daytime;
    };
    let hour = local.hour();
    let within = |(from, to): (u32, u32)| {
        if from <= to {
            hour >= from && hour < to
        } else {
            hour >= from || hour < to
        }
    };
    if within(config.night_hours) {
        Slot::Night
    } else if local.weekday().number_from_monday() >= 6 {
        Slot::Weekend
    } else if within(config.evening_hours) {
        Slot::Evening
    } else {
        Slot::Daytime
    }
}

/// A cell id as the graph holds it: a hash that is the same in every process and release
/// (FNV-1a, 64 bits), so the graph keeps no strings for cells.
pub fn cell_hash(cell: &str) -> u64 {
    cell.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The UTC day of `ts` (days since 1970-01-01).
pub fn utc_day(ts: Millis) -> u32 {
    u32::try_from(ts / kairos_model::time::DAY).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kairos_model::time::parse_rfc3339;

    fn at(ts: &str) -> Millis {
        parse_rfc3339(ts).unwrap()
    }

    #[test]
    fn a_contact_falls_in_a_slot_of_the_callers_local_week() {
        let config = HouseholdConfig::default();
        let lisbon: Tz = "Europe/Lisbon".parse().unwrap();
        // 1 July 2026 is a Wednesday; Lisbon is UTC+1 in summer.
        assert_eq!(contact_slot(&config, at("2026-07-01T18:30:00Z"), lisbon), Slot::Evening);
        assert_eq!(contact_slot(&config, at("2026-07-01T16:30:00Z"), lisbon), Slot::Daytime);
        assert_eq!(contact_slot(&config, at("2026-07-01T01:00:00Z"), lisbon), Slot::Night);
        assert_eq!(contact_slot(&config, at("2026-07-04T14:00:00Z"), lisbon), Slot::Weekend);
        // 21:30 UTC on Saturday is 22:30 in Lisbon (the weekend) and 00:30 in Helsinki (night).
        let helsinki: Tz = "Europe/Helsinki".parse().unwrap();
        assert_eq!(contact_slot(&config, at("2026-07-04T21:30:00Z"), helsinki), Slot::Night);
        assert_eq!(contact_slot(&config, at("2026-07-04T21:30:00Z"), lisbon), Slot::Weekend);
    }

    #[test]
    fn a_contact_counts_once_a_day() {
        let config = HouseholdConfig::default();
        let (a, b) = (
            Msisdn::from_u64(351_910_000_001).unwrap(),
            Msisdn::from_u64(351_910_000_002).unwrap(),
        );
        let mut state = HouseholdState::default();
        let mut out = Vec::new();
        let contact = |day| Evidence::Contact(a, b, day, Slot::Evening);
        let t = at("2026-07-01T18:30:00Z");
        state.once(&config, contact(utc_day(t)), t, t, &mut out);
        state.once(&config, contact(utc_day(t)), t + 60_000, t + 60_000, &mut out);
        assert_eq!(out.len(), 2, "one record and its expiry: {out:?}");
        let next = t + kairos_model::time::DAY;
        state.once(&config, contact(utc_day(next)), next, next, &mut out);
        assert_eq!(out.len(), 4, "the next day counts again: {out:?}");
        assert_eq!(cell_hash("268-01-4711"), cell_hash("268-01-4711"));
        assert_ne!(cell_hash("268-01-4711"), cell_hash("268-01-4712"));
    }
}
