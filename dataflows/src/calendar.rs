//! Local calendars: billing cycles and dates at local midnight in the subscriber's time zone.
//!
//! Contract §4: a billing cycle starts at local midnight on `plan.cycle_anchor_day` of each
//! month (the month's last day when the month is shorter) and lasts until the next; dates
//! such as `device.acquired` and `contract_end` are local calendar dates.

use chrono::{Datelike, Duration, LocalResult, NaiveDate, TimeZone};
use chrono_tz::Tz;
use kairos_model::Millis;

/// The instant of local midnight starting `date` in `tz`. Where a DST change skips
/// midnight, the first local instant of the day that exists.
///
/// ```
/// use kairos_dataflows::calendar::local_midnight;
/// let lisbon: chrono_tz::Tz = "Europe/Lisbon".parse().unwrap();
/// let date = chrono::NaiveDate::from_ymd_opt(2026, 7, 1).unwrap();
/// // Lisbon is UTC+1 in July: local midnight is 23:00 UTC the day before.
/// assert_eq!(local_midnight(date, lisbon), kairos_model::time::parse_rfc3339("2026-06-30T23:00:00Z").unwrap());
/// ```
pub fn local_midnight(date: NaiveDate, tz: Tz) -> Millis {
    let mut local = date.and_hms_opt(0, 0, 0).expect("midnight exists");
    // A gap is at most a few hours; step through it a quarter hour at a time.
    for _ in 0..24 * 4 {
        match tz.from_local_datetime(&local) {
            LocalResult::Single(instant) | LocalResult::Ambiguous(instant, _) => {
                return u64::try_from(instant.timestamp_millis()).unwrap_or(0);
            }
            LocalResult::None => local += Duration::minutes(15),
        }
    }
    u64::try_from(
        date.and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc()
            .timestamp_millis(),
    )
    .unwrap_or(0)
}

/// The local date of an instant in `tz`.
pub fn local_date(at: Millis, tz: Tz) -> NaiveDate {
    let utc = chrono::DateTime::from_timestamp_millis(i64::try_from(at).unwrap_or(i64::MAX)).unwrap_or_default();
    utc.with_timezone(&tz).date_naive()
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let (next_year, next_month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
    let first_of_next = NaiveDate::from_ymd_opt(next_year, next_month, 1).expect("valid month");
    first_of_next.pred_opt().expect("a day before").day()
}

/// The anchor date of the cycle starting in `(year, month)`.
fn anchor_date(year: i32, month: u32, anchor_day: u8) -> NaiveDate {
    let day = u32::from(anchor_day.clamp(1, 31)).min(days_in_month(year, month));
    NaiveDate::from_ymd_opt(year, month, day).expect("clamped to the month")
}

fn previous_month(year: i32, month: u32) -> (i32, u32) {
    if month == 1 {
        (year - 1, 12)
    } else {
        (year, month - 1)
    }
}

fn next_month(year: i32, month: u32) -> (i32, u32) {
    if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    }
}

/// A billing cycle: `[start, end)` in event time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cycle {
    pub start: Millis,
    pub end: Millis,
}

/// The billing cycle that contains `at`.
///
/// ```
/// use kairos_dataflows::calendar::cycle_containing;
/// use kairos_model::time::parse_rfc3339 as t;
/// let utc: chrono_tz::Tz = "UTC".parse().unwrap();
/// // Anchor day 31 in February: the cycle starts on the 28th.
/// let c = cycle_containing(t("2026-03-05T10:00:00Z").unwrap(), utc, 31);
/// assert_eq!((c.start, c.end), (t("2026-02-28T00:00:00Z").unwrap(), t("2026-03-31T00:00:00Z").unwrap()));
/// ```
pub fn cycle_containing(at: Millis, tz: Tz, anchor_day: u8) -> Cycle {
    let date = local_date(at, tz);
    let (year, month) = (date.year(), date.month());
    let this_month = local_midnight(anchor_date(year, month, anchor_day), tz);
    let (start_year, start_month) = if at >= this_month {
        (year, month)
    } else {
        previous_month(year, month)
    };
    let start = local_midnight(anchor_date(start_year, start_month, anchor_day), tz);
    let (end_year, end_month) = next_month(start_year, start_month);
    let end = local_midnight(anchor_date(end_year, end_month, anchor_day), tz);
    Cycle { start, end }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kairos_model::time::parse_rfc3339 as t;

    fn tz(name: &str) -> Tz {
        name.parse().unwrap()
    }

    #[test]
    fn cycles_start_at_local_midnight_on_the_anchor_day() {
        let lisbon = tz("Europe/Lisbon");
        // 2026-07-15 00:30 Lisbon (UTC+1) is 2026-07-14T23:30Z: already the new cycle.
        let c = cycle_containing(t("2026-07-14T23:30:00Z").unwrap(), lisbon, 15);
        assert_eq!(c.start, t("2026-07-14T23:00:00Z").unwrap());
        assert_eq!(c.end, t("2026-08-14T23:00:00Z").unwrap());
        // Half an hour earlier it is the previous cycle.
        let c = cycle_containing(t("2026-07-14T22:30:00Z").unwrap(), lisbon, 15);
        assert_eq!(c.start, t("2026-06-14T23:00:00Z").unwrap());
        assert_eq!(c.end, t("2026-07-14T23:00:00Z").unwrap());
    }

    #[test]
    fn short_months_use_their_last_day_and_cycles_tile_the_year() {
        let utc = tz("UTC");
        let c = cycle_containing(t("2026-02-28T00:00:00Z").unwrap(), utc, 30);
        assert_eq!(c.start, t("2026-02-28T00:00:00Z").unwrap());
        assert_eq!(c.end, t("2026-03-30T00:00:00Z").unwrap());
        let leap = cycle_containing(t("2028-02-29T12:00:00Z").unwrap(), utc, 31);
        assert_eq!(leap.start, t("2028-02-29T00:00:00Z").unwrap());
        for anchor in [1u8, 15, 28, 29, 30, 31] {
            let mut at = t("2026-01-01T00:00:00Z").unwrap();
            let mut previous: Option<Cycle> = None;
            while at < t("2027-01-01T00:00:00Z").unwrap() {
                let c = cycle_containing(at, tz("America/Sao_Paulo"), anchor);
                assert!(c.start <= at && at < c.end, "anchor {anchor}");
                if let Some(p) = previous.filter(|p| *p != c) {
                    assert_eq!(p.end, c.start, "cycles tile time (anchor {anchor})");
                }
                previous = Some(c);
                at += 6 * 3_600_000;
            }
        }
    }

    #[test]
    fn a_dst_gap_at_midnight_moves_the_start_to_the_first_existing_instant() {
        // Chile (America/Santiago) springs forward at 24:00 on the first Saturday of
        // September 2026: 2026-09-06 00:00 local does not exist.
        let santiago = tz("America/Santiago");
        let date = NaiveDate::from_ymd_opt(2026, 9, 6).unwrap();
        assert_eq!(local_midnight(date, santiago), t("2026-09-06T04:00:00Z").unwrap());
    }
}
