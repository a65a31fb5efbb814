//! ingest: where events come from — JSON Lines files (replay) or Kafka partitions owned by
//! timely workers (run) — and how each input decides the epoch its events enter at.
//!
//! Both sources decode what they read (`crate::decode`) and hand the pipeline the same
//! thing, [`Received`]: an event to send at the worker's current epoch, or a [`DeadLetter`]
//! for what did not decode; and each says the next epoch (the input frontier this worker
//! allows).

pub mod files;
pub mod kafka;
pub mod login;
pub mod range;

use kairos_model::Event;
use serde::Serialize;

use crate::decode::DecodeError;

/// A message read and decoded: an event, or a dead letter (with the key of the message it
/// replaces, for Kafka).
pub enum Received {
    Event(Event),
    Invalid(DeadLetter, Option<Vec<u8>>),
}

/// Where an input message was read.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(untagged)]
pub enum SourcePosition {
    File { file: String, line: u64 },
    Kafka { topic: String, partition: i32, offset: i64 },
}

/// An input message that is not a valid event, with where it came from and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub source: SourcePosition,
    pub error: DecodeError,
    /// The message as read (lossily decoded, cut at 4 KiB).
    pub input: String,
}

/// Longest slice of a bad message kept in its dead-letter record.
const KEEP_INPUT_BYTES: usize = 4096;

impl DeadLetter {
    /// Wraps a decode error with its source and (a bounded copy of) the input.
    pub fn new(source: SourcePosition, error: DecodeError, input: &[u8]) -> DeadLetter {
        let kept = &input[..input.len().min(KEEP_INPUT_BYTES)];
        DeadLetter {
            source,
            error,
            input: String::from_utf8_lossy(kept).into_owned(),
        }
    }

    /// One line of JSON: the source position, the reason, the offending field and the input.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Json<'a> {
            #[serde(flatten)]
            source: &'a SourcePosition,
            error: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            field: Option<&'a str>,
            input: &'a str,
        }
        serde_json::to_string(&Json {
            source: &self.source,
            error: self.error.to_string(),
            field: self.error.field.as_deref(),
            input: &self.input,
        })
        .unwrap_or_default()
    }
}
