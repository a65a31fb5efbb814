//! A range of the input topics for a bounded `kairos run`: where each partition starts
//! (`--from`) and where it stops (`--to`), by offset or by Kafka message timestamp.
//!
//! ```text
//! --from earliest | latest | 2026-07-01T00:00:00Z | kairos.network:0:1200,kairos.usage:3:0
//! --to   end      | 2026-07-02T00:00:00Z | kairos.network:0:5000
//! ```
//! - `earliest` / `latest`: the start / the end of each partition when kairos starts (`end`
//!   is the same as `latest`);
//! - a timestamp (RFC 3339): the first message whose Kafka timestamp is at or after it (the
//!   end of the partition when there is none);
//! - `TOPIC:PARTITION:OFFSET,…`: those offsets; partitions not listed start where the
//!   configuration says (`start_from`) and stop at their end.
//!
//! `--to` is exclusive: the message at the stop offset is not read.

use std::collections::BTreeMap;

use kairos_model::time::parse_rfc3339;
use kairos_model::Millis;

/// Where a partition starts or stops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bound {
    Earliest,
    /// The partition's end (high watermark) when kairos starts.
    Latest,
    /// The first offset whose Kafka timestamp is at or after this instant.
    Time(Millis),
    /// Explicit offsets by (topic, partition).
    Offsets(BTreeMap<(String, i32), i64>),
}

impl Bound {
    /// Parses `--from` / `--to` (`flag` names it in errors).
    ///
    /// ```
    /// use kairos::ingest::range::Bound;
    /// assert_eq!(Bound::parse("end", "--to"), Ok(Bound::Latest));
    /// assert_eq!(Bound::parse("1970-01-01T00:00:01Z", "--to"), Ok(Bound::Time(1_000)));
    /// assert!(Bound::parse("kairos.usage:x:3", "--from").unwrap_err().contains("kairos.usage:x:3"));
    /// ```
    pub fn parse(text: &str, flag: &str) -> Result<Bound, String> {
        let hint = "earliest, latest (or end), an RFC 3339 timestamp, or TOPIC:PARTITION:OFFSET[,…]";
        match text.trim() {
            "" => Err(format!("{flag}: empty — give {hint}")),
            "earliest" if flag == "--to" => Err(format!(
                "{flag} earliest would read nothing — give end, a timestamp or offsets"
            )),
            "earliest" => Ok(Bound::Earliest),
            "latest" | "end" => Ok(Bound::Latest),
            text if text.as_bytes()[0].is_ascii_digit() && text.contains('T') => parse_rfc3339(text)
                .map(Bound::Time)
                .map_err(|e| format!("{flag} {text:?}: {e} — give {hint}")),
            text => {
                let mut offsets = BTreeMap::new();
                for item in text.split(',') {
                    let parsed = item.rsplit_once(':').and_then(|(rest, offset)| {
                        let (topic, partition) = rest.rsplit_once(':')?;
                        let partition: i32 = partition.parse().ok().filter(|p| *p >= 0)?;
                        let offset: i64 = offset.parse().ok().filter(|o| *o >= 0)?;
                        (!topic.is_empty()).then(|| ((topic.to_string(), partition), offset))
                    });
                    match parsed {
                        Some((key, offset)) => {
                            offsets.insert(key, offset);
                        }
                        None => return Err(format!("{flag}: cannot read {item:?} — give {hint}")),
                    }
                }
                Ok(Bound::Offsets(offsets))
            }
        }
    }
}

/// The range of a bounded run; `to: None` runs for ever.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Range {
    pub from: Option<Bound>,
    pub to: Option<Bound>,
}

impl Range {
    /// Whether the run stops at the end of the range.
    pub fn bounded(&self) -> bool {
        self.to.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_parse_or_say_what_would_be_valid() {
        assert_eq!(Bound::parse("earliest", "--from"), Ok(Bound::Earliest));
        assert_eq!(Bound::parse("latest", "--from"), Ok(Bound::Latest));
        assert_eq!(
            Bound::parse("2026-07-01T00:00:00+01:00", "--from"),
            Ok(Bound::Time(1_782_860_400_000))
        );
        assert_eq!(
            Bound::parse("kairos.network:0:12,kairos.usage:3:0", "--to"),
            Ok(Bound::Offsets(BTreeMap::from([
                (("kairos.network".to_string(), 0), 12),
                (("kairos.usage".to_string(), 3), 0)
            ])))
        );
        for bad in [
            "kairos.network:0",
            "kairos.network:-1:3",
            ":0:3",
            "t:0:-4",
            "2026-13-01T00:00:00Z",
        ] {
            let error = Bound::parse(bad, "--from").unwrap_err();
            assert!(error.starts_with("--from"), "{error}");
            assert!(error.contains("TOPIC:PARTITION:OFFSET"), "{error}");
        }
        assert!(Bound::parse("earliest", "--to")
            .unwrap_err()
            .contains("would read nothing"));
    }
}
