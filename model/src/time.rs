//! Event time: milliseconds since the Unix epoch (UTC), the timestamp of every dataflow.
//!
//! Input accepts any RFC 3339 offset; output is always UTC with a `Z` (contract §2).

use chrono::{DateTime, NaiveDate, SecondsFormat, TimeZone, Utc};

/// Milliseconds since 1970-01-01T00:00:00Z. Events before 1970 are out of range.
pub type Millis = u64;

/// One day of event time.
pub const DAY: Millis = 24 * 60 * 60 * 1000;
/// One hour of event time.
pub const HOUR: Millis = 60 * 60 * 1000;

/// Parses an RFC 3339 timestamp into [`Millis`], rejecting instants before 1970 and
/// after 9999-12-31. Sub-millisecond digits are truncated.
///
/// ```
/// assert_eq!(kairos_model::time::parse_rfc3339("1970-01-01T00:00:01.5Z"), Ok(1500));
/// assert_eq!(kairos_model::time::parse_rfc3339("2026-07-01T15:02:11+01:00"),
///            kairos_model::time::parse_rfc3339("2026-07-01T14:02:11Z"));
/// ```
pub fn parse_rfc3339(text: &str) -> Result<Millis, &'static str> {
    let parsed = DateTime::parse_from_rfc3339(text).map_err(|_| "not an RFC 3339 timestamp")?;
    let millis = parsed.timestamp_millis();
    if millis > LATEST {
        return Err("timestamp after 9999-12-31T23:59:59.999Z");
    }
    u64::try_from(millis).map_err(|_| "timestamp before 1970-01-01")
}

/// 9999-12-31T23:59:59.999Z, the last instant RFC 3339 output can write.
const LATEST: i64 = 253_402_300_799_999;

/// Formats [`Millis`] as RFC 3339 UTC with a `Z`, with milliseconds only when non-zero.
///
/// ```
/// assert_eq!(kairos_model::time::format_rfc3339(1500), "1970-01-01T00:00:01.500Z");
/// assert_eq!(kairos_model::time::format_rfc3339(0), "1970-01-01T00:00:00Z");
/// ```
pub fn format_rfc3339(millis: Millis) -> String {
    let signed = i64::try_from(millis).unwrap_or(i64::MAX);
    match Utc.timestamp_millis_opt(signed).single() {
        Some(instant) => instant.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        // Only reachable for instants past year 262143, which decode never produces.
        None => format!("@{millis}ms"),
    }
}

/// The wall clock now, as [`Millis`] (0 for a clock set before 1970): what the engine
/// compares event time with in its gauges and latencies, never what it decides by.
pub fn now() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

/// Parses a calendar date `YYYY-MM-DD` (a local date in the subscriber's time zone).
pub fn parse_date(text: &str) -> Result<NaiveDate, &'static str> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| "not a calendar date YYYY-MM-DD")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_normalises_offsets() {
        let t = parse_rfc3339("2026-07-01T15:02:11.250+01:00").unwrap();
        assert_eq!(format_rfc3339(t), "2026-07-01T14:02:11.250Z");
        assert_eq!(
            format_rfc3339(parse_rfc3339("2026-07-01T14:02:11Z").unwrap()),
            "2026-07-01T14:02:11Z"
        );
    }

    #[test]
    fn rejects_what_is_not_a_timestamp() {
        for bad in [
            "",
            "2026-07-01",
            "2026-13-01T00:00:00Z",
            "2026-07-01T14:02:11",
            "1969-12-31T23:59:59Z",
            "yesterday",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_range_ends_where_rfc3339_output_ends() {
        let last = parse_rfc3339("9999-12-31T23:59:59.999Z").unwrap();
        assert_eq!(format_rfc3339(last), "9999-12-31T23:59:59.999Z");
        assert_eq!(last, LATEST as u64);
    }

    #[test]
    fn dates() {
        assert!(parse_date("2024-02-29").is_ok());
        assert!(parse_date("2023-02-29").is_err());
        assert!(parse_date("2024-3-1x").is_err());
    }
}
