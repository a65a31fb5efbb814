//! Activity features kept per subscriber for rule conditions: usage over windows of up to 90
//! days (daily buckets), the last self-care visit, and top-ups over the last 90 days.
//!
//! Days are UTC days of event time; windows end at the moment being judged. Buckets older
//! than the longest window are dropped as newer ones arrive, so the state stays bounded.
//! Each window also says when it next changes by time alone (its oldest non-empty day
//! leaving it), so that a moment on silence fires at that instant (`condition`'s clocks).

use kairos_model::event::UsageKind;
use kairos_model::time::DAY;
use kairos_model::Millis;
use serde::{Deserialize, Serialize};

/// The longest usage window, in days.
pub const USAGE_DAYS: u32 = 90;
/// The longest top-up window, in days.
pub const TOPUP_DAYS: u32 = 90;

/// One day's usage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayUsage {
    /// Days since the Unix epoch.
    pub day: u32,
    pub data_bytes: u64,
    pub voice_seconds: u32,
    pub sms: u32,
}

/// Usage over a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsageTotals {
    pub data_bytes: u64,
    pub voice_seconds: u64,
    pub sms: u64,
}

/// The activity features of one subscriber.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    /// Daily usage, oldest first, at most [`USAGE_DAYS`] days back from the newest (a state
    /// stored by a kairos before 90-day windows holds 28).
    pub usage: Vec<DayUsage>,
    /// The last self-care visit: when, and which page.
    pub last_selfcare: Option<(Millis, String)>,
    /// Top-ups of the last [`TOPUP_DAYS`] days: (when, amount), in the order applied.
    pub topups: Vec<(Millis, f64)>,
}

fn day_of(at: Millis) -> u32 {
    u32::try_from(at / DAY).unwrap_or(u32::MAX)
}

impl Activity {
    /// Counts a usage record into its day.
    pub fn add_usage(&mut self, at: Millis, kind: UsageKind, amount: u64) {
        let day = day_of(at);
        let newest = self.usage.last().map_or(day, |d| d.day.max(day));
        if day + USAGE_DAYS <= newest {
            return; // older than any window
        }
        let index = match self.usage.binary_search_by_key(&day, |d| d.day) {
            Ok(index) => index,
            Err(index) => {
                self.usage.insert(
                    index,
                    DayUsage {
                        day,
                        ..DayUsage::default()
                    },
                );
                index
            }
        };
        let bucket = &mut self.usage[index];
        match kind {
            UsageKind::Data => bucket.data_bytes = bucket.data_bytes.saturating_add(amount),
            UsageKind::Voice => {
                bucket.voice_seconds = bucket
                    .voice_seconds
                    .saturating_add(amount.try_into().unwrap_or(u32::MAX))
            }
            UsageKind::Sms => bucket.sms = bucket.sms.saturating_add(amount.try_into().unwrap_or(u32::MAX)),
        }
        self.usage.retain(|d| d.day + USAGE_DAYS > newest);
    }

    /// The buckets of the `days` days ending with the day of `at`, oldest first.
    fn window(&self, at: Millis, days: u32) -> impl Iterator<Item = &DayUsage> {
        let today = day_of(at);
        self.usage
            .iter()
            .filter(move |d| d.day <= today && d.day + days > today)
    }

    /// Usage over the `days` days ending with the day of `at`.
    pub fn usage_over(&self, at: Millis, days: u32) -> UsageTotals {
        self.window(at, days)
            // Saturating: a day's bucket may already hold u64::MAX bytes (the contract allows
            // any u64 per record), and a sum that wrapped would read as almost nothing used.
            .fold(UsageTotals::default(), |t, d| UsageTotals {
                data_bytes: t.data_bytes.saturating_add(d.data_bytes),
                voice_seconds: t.voice_seconds.saturating_add(u64::from(d.voice_seconds)),
                sms: t.sms.saturating_add(u64::from(d.sms)),
            })
    }

    /// The instant the usage over the `days` days up to `at` next changes with no new
    /// record: the UTC midnight at which its oldest non-empty day leaves it.
    pub fn usage_changes_at(&self, at: Millis, days: u32) -> Option<Millis> {
        let empty = |d: &&DayUsage| d.data_bytes == 0 && d.voice_seconds == 0 && d.sms == 0;
        let oldest = self.window(at, days).find(|d| !empty(d))?;
        Some(u64::from(oldest.day + days) * DAY)
    }

    /// Records a self-care visit (the newest by event time wins).
    pub fn visit(&mut self, at: Millis, page: &str) {
        if self.last_selfcare.as_ref().is_none_or(|(t, _)| *t <= at) {
            self.last_selfcare = Some((at, page.to_string()));
        }
    }

    /// Records a top-up, forgetting those older than the window.
    pub fn topup(&mut self, at: Millis, amount: f64) {
        self.topups.push((at, amount));
        let newest = self.topups.iter().map(|(t, _)| *t).max().unwrap_or(at);
        self.topups.retain(|(t, _)| t + u64::from(TOPUP_DAYS) * DAY > newest);
    }

    /// Top-ups in the `days` days up to `at` (`at - days·DAY < t ≤ at`): (count, amount).
    pub fn topups_over(&self, at: Millis, days: u32) -> (u64, f64) {
        let span = u64::from(days) * DAY;
        self.topups
            .iter()
            .filter(|(t, _)| *t <= at && t + span > at)
            // Amounts have no upper bound in the contract: the sum stops at f64::MAX instead of
            // becoming infinity (which conditions would compare oddly and JSON cannot write).
            .fold((0, 0.0), |(n, sum), (_, amount)| (n + 1, (sum + amount).min(f64::MAX)))
    }

    /// The instant the top-ups of the `days` days up to `at` next change with no new one:
    /// when the oldest of them leaves the window.
    pub fn topups_change_at(&self, at: Millis, days: u32) -> Option<Millis> {
        let span = u64::from(days) * DAY;
        self.topups
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| *t <= at && t + span > at)
            .min()
            .map(|t| t + span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_sum_the_right_days_and_old_days_are_dropped() {
        let mut a = Activity::default();
        for day in 0..40u64 {
            a.add_usage(day * DAY + 1000, UsageKind::Data, 10);
            a.add_usage(day * DAY + 2000, UsageKind::Voice, 60);
        }
        a.add_usage(39 * DAY, UsageKind::Sms, 2);
        assert_eq!(a.usage.len(), 40);
        assert_eq!(
            a.usage_over(39 * DAY + 5, 7),
            UsageTotals {
                data_bytes: 70,
                voice_seconds: 420,
                sms: 2
            }
        );
        assert_eq!(a.usage_over(39 * DAY + 5, 28).data_bytes, 280);
        // A late record for a day still in the window counts; one older is dropped.
        a.add_usage(35 * DAY, UsageKind::Data, 5);
        a.add_usage(2 * DAY, UsageKind::Data, 5);
        assert_eq!(a.usage_over(39 * DAY, 7).data_bytes, 75);
        a.add_usage(130 * DAY, UsageKind::Data, 5);
        a.add_usage(2 * DAY, UsageKind::Data, 5);
        // Day 130: days 0..=40 are 90 or more days older, dropped; so is a new record of day 2.
        assert_eq!(a.usage.len(), 1);
        assert_eq!(a.usage_over(130 * DAY, 90).data_bytes, 5);
    }

    #[test]
    fn a_window_changes_by_time_when_its_oldest_busy_day_leaves_it() {
        let mut a = Activity::default();
        assert_eq!(a.usage_changes_at(10 * DAY, 7), None);
        a.add_usage(10 * DAY + 5, UsageKind::Sms, 1);
        a.add_usage(12 * DAY + 5, UsageKind::Voice, 0);
        a.add_usage(13 * DAY + 5, UsageKind::Data, 1);
        // At day 14 the 7-day window holds days 8..=14: day 10 is its oldest busy day and
        // leaves it at the start of day 17; day 12 (a zero record) does not count.
        assert_eq!(a.usage_changes_at(14 * DAY, 7), Some(17 * DAY));
        assert_eq!(a.usage_changes_at(17 * DAY, 7), Some(20 * DAY));
        assert_eq!(a.usage_over(17 * DAY, 7).sms, 0);
        assert_eq!(a.usage_changes_at(20 * DAY, 7), None);
        a.topup(DAY, 5.0);
        a.topup(3 * DAY, 5.0);
        assert_eq!(a.topups_change_at(3 * DAY, 30), Some(31 * DAY));
        assert_eq!(a.topups_change_at(31 * DAY, 30), Some(33 * DAY));
        assert_eq!(a.topups_change_at(33 * DAY, 30), None);
    }

    #[test]
    fn topups_and_visits() {
        let mut a = Activity::default();
        a.topup(0, 5.0);
        a.topup(10 * DAY, 10.0);
        assert_eq!(a.topups_over(10 * DAY, 30), (2, 15.0));
        a.topup(31 * DAY, 20.0);
        assert_eq!(a.topups_over(31 * DAY, 30), (2, 30.0));
        assert_eq!(a.topups_over(31 * DAY, 90), (3, 35.0));
        a.topup(91 * DAY, 1.0);
        assert_eq!(a.topups.len(), 3, "the one of day 0, 91 days before, is forgotten");
    }

    #[test]
    fn sums_of_the_largest_numbers_the_contract_allows_saturate() {
        let mut a = Activity::default();
        // Two records of u64::MAX bytes on two days (each day's bucket already saturates).
        a.add_usage(DAY + 1, UsageKind::Data, u64::MAX);
        a.add_usage(2 * DAY + 1, UsageKind::Data, u64::MAX);
        a.add_usage(2 * DAY + 2, UsageKind::Data, u64::MAX);
        for day in 1..=3 {
            a.add_usage(day * DAY + 3, UsageKind::Voice, u64::MAX);
            a.add_usage(day * DAY + 4, UsageKind::Sms, u64::MAX);
        }
        let totals = a.usage_over(3 * DAY, 7);
        assert_eq!(totals.data_bytes, u64::MAX);
        assert_eq!(totals.voice_seconds, 3 * u64::from(u32::MAX));
        assert_eq!(totals.sms, 3 * u64::from(u32::MAX));
        // Top-ups of the largest number JSON can write stay a finite sum.
        a.topup(DAY, f64::MAX);
        a.topup(DAY + 1, f64::MAX);
        assert_eq!(a.topups_over(DAY + 2, 30), (2, f64::MAX));
        assert_eq!(a.topups.len(), 2);
        a.visit(5, "plans");
        a.visit(3, "home");
        assert_eq!(a.last_selfcare, Some((5, "plans".to_string())));
    }
}
