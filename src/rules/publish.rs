//! Rule sets published on a compacted Kafka topic, for deployments of several `kairos run`
//! processes: `kairos rules publish DIR` checks the folder and publishes its files as one
//! record (key `rules`) with the event time it takes force at; every process follows the
//! topic and puts the set in force at that event time (or at once, if its event time has
//! already passed it), so all workers of all processes switch at the same instant.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use kairos_model::time::{format_rfc3339, parse_rfc3339};
use kairos_model::{Millis, RuleSet};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::config::KafkaConfig;

/// Why a rule set could not be published, followed, or read from the topic.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The folder or the published files do not check: each problem, with file:line:col.
    #[error("{0}")]
    Rules(String),
    #[error("effective_at: {0}")]
    EffectiveAt(String),
    #[error("cannot create a Kafka {what}: {source}")]
    Client {
        what: &'static str,
        source: rdkafka::error::KafkaError,
    },
    #[error("cannot publish to {topic}: {source}{hint}")]
    Publish {
        topic: String,
        source: rdkafka::error::KafkaError,
        hint: &'static str,
    },
    #[error("cannot read {topic}: {source}")]
    Read {
        topic: String,
        source: rdkafka::error::KafkaError,
    },
    #[error("{topic}:0@{offset}: not a published rule set: {reason}")]
    NotARuleSet { topic: String, offset: i64, reason: String },
    #[error("cannot read {0} to its end within 30 s")]
    TimedOut(String),
}

/// The record key every published rule set carries (the topic is compacted on it).
pub const KEY: &str = "rules";

/// One published rule set: the folder's files and when they take force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Published {
    /// The folder's fingerprint (as `kairos run` logs it).
    pub version: String,
    /// Event time from which the set is in force (RFC 3339).
    pub effective_at: String,
    /// File name → text: the rule files and `policy.toml`.
    pub files: BTreeMap<String, String>,
}

impl Published {
    /// Reads and checks a folder for publishing.
    pub fn from_dir(dir: &Path, effective_at: Millis) -> Result<Published, PublishError> {
        let lines = |errors: Vec<super::RuleError>| {
            PublishError::Rules(errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
        };
        // What is published is exactly what was checked: the folder is read once.
        let files = super::read_dir_files(dir).map_err(lines)?;
        super::load_files(dir, &files).map_err(lines)?;
        Ok(Published {
            version: super::watch::fingerprint(dir),
            effective_at: format_rfc3339(effective_at),
            files,
        })
    }

    /// The checked rule set and the instant it takes force at.
    pub fn rules(&self) -> Result<(RuleSet, Millis), PublishError> {
        let at = parse_rfc3339(&self.effective_at).map_err(|e| PublishError::EffectiveAt(e.to_string()))?;
        let set =
            super::load_files(Path::new(&format!("published:{}", self.version)), &self.files).map_err(|errors| {
                PublishError::Rules(errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
            })?;
        Ok((set, at))
    }
}

/// Publishes a checked set to `topic` and waits until the broker has it.
pub fn publish(kafka: &KafkaConfig, topic: &str, published: &Published) -> Result<(), PublishError> {
    let producer: BaseProducer = kafka
        .client_config("kairos-rules-publisher", &[("enable.idempotence", "true")])
        .create()
        .map_err(|source| PublishError::Client {
            what: "producer",
            source,
        })?;
    // Serialising strings and maps of strings cannot fail.
    let payload = serde_json::to_string(published).unwrap_or_default();
    let failed = |hint| {
        move |source| PublishError::Publish {
            topic: topic.to_string(),
            source,
            hint,
        }
    };
    producer
        .send(BaseRecord::to(topic).key(KEY).payload(&payload))
        .map_err(|(e, _)| failed("")(e))?;
    producer.flush(Duration::from_secs(30)).map_err(failed(
        " (does the topic exist? create it compacted: cleanup.policy=compact)",
    ))
}

/// Follows the rules topic (partition 0) from its beginning: the newest record wins.
pub struct PublishedRules {
    consumer: BaseConsumer,
    topic: String,
}

impl PublishedRules {
    pub fn follow(kafka: &KafkaConfig, topic: &str) -> Result<PublishedRules, PublishError> {
        let group = format!("{}-rules", kafka.group_id);
        let settings = [
            ("group.id", group.as_str()),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "false"),
        ];
        let consumer: BaseConsumer = kafka
            .client_config("kairos-rules-follower", &settings)
            .create()
            .map_err(|source| PublishError::Client {
                what: "consumer",
                source,
            })?;
        let read = |source| PublishError::Read {
            topic: topic.to_string(),
            source,
        };
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, 0, Offset::Beginning)
            .map_err(read)?;
        consumer.assign(&assignment).map_err(read)?;
        Ok(PublishedRules {
            consumer,
            topic: topic.to_string(),
        })
    }

    /// The newest record read in this call, if any (waits at most `wait` for the first).
    /// A record that does not parse is an error for the caller to log and count; a
    /// tombstone is skipped (see [`read_record`]).
    pub fn poll(&self, wait: Duration) -> Option<Result<Published, PublishError>> {
        let mut newest = None;
        let mut wait = wait;
        while let Some(message) = self.consumer.poll(wait) {
            wait = Duration::ZERO;
            match message {
                Ok(message) => {
                    if let Some(record) = read_record(&self.topic, message.offset(), message.payload()) {
                        newest = Some(record);
                    }
                }
                Err(source) => {
                    newest = Some(Err(PublishError::Read {
                        topic: self.topic.clone(),
                        source,
                    }))
                }
            }
        }
        newest
    }

    /// Reads the topic to its current end: the set published last, if any.
    pub fn latest(&self) -> Result<Option<Published>, PublishError> {
        // A topic just created may have no leader yet: retried for up to 30 s.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let high = loop {
            match self.consumer.fetch_watermarks(&self.topic, 0, Duration::from_secs(5)) {
                Ok((_, high)) => break high,
                Err(source) if std::time::Instant::now() > deadline => {
                    return Err(PublishError::Read {
                        topic: self.topic.clone(),
                        source,
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        let mut latest = None;
        loop {
            let position = self
                .consumer
                .position()
                .ok()
                .and_then(|p| p.find_partition(&self.topic, 0).map(|e| e.offset()));
            if high == 0 || matches!(position, Some(Offset::Offset(o)) if o >= high) {
                return Ok(latest);
            }
            if std::time::Instant::now() > deadline {
                return Err(PublishError::TimedOut(self.topic.clone()));
            }
            if let Some(record) = self.poll(Duration::from_millis(200)) {
                latest = Some(record?);
            }
        }
    }
}

/// One record of the rules topic at `offset`: a published set, an error when its value is
/// not one, or `None` for a tombstone (a record without a value — what an operator writes to
/// clear the compacted key). A tombstone is ignored with a warning and the set in force
/// stays: kairos has no "no rules" state to switch to, and a tombstone blocking every start
/// (or making the follower refuse it again on each poll) would be worse than keeping the
/// rules. Once compaction has removed the records before it, a later start runs the folder's
/// set.
pub fn read_record(topic: &str, offset: i64, payload: Option<&[u8]>) -> Option<Result<Published, PublishError>> {
    let Some(payload) = payload else {
        tracing::warn!(
            topic,
            offset,
            "a tombstone (a record without a value) on the rules topic: ignored, the rule set in force stays"
        );
        return None;
    };
    Some(
        serde_json::from_slice::<Published>(payload).map_err(|e| PublishError::NotARuleSet {
            topic: topic.to_string(),
            offset,
            reason: e.to_string(),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_set_round_trips_and_is_checked_again_on_reading() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        let published = Published::from_dir(&dir, 1_000).unwrap();
        assert!(published.files.contains_key("policy.toml"));
        let text = serde_json::to_string(&published).unwrap();
        let back: Published = serde_json::from_str(&text).unwrap();
        let (set, at) = back.rules().unwrap();
        assert_eq!(at, 1_000);
        assert_eq!(set, crate::rules::load_dir(&dir).unwrap());
        let mut broken = back.clone();
        broken
            .files
            .insert("roaming-welcome.toml".into(), "id = \"x\"\n".into());
        let error = broken.rules().unwrap_err().to_string();
        assert!(error.contains("roaming-welcome.toml"), "{error}");
    }

    #[test]
    fn a_tombstone_is_skipped_and_an_empty_or_foreign_value_is_an_error() {
        assert!(read_record("rules", 7, None).is_none(), "a tombstone is no record");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        let published = Published::from_dir(&dir, 1_000).unwrap();
        let text = serde_json::to_vec(&published).unwrap();
        assert_eq!(read_record("rules", 8, Some(&text)).unwrap().unwrap(), published);
        // An empty value is a value: not a rule set, said with where it is.
        let error = read_record("rules", 9, Some(b"")).unwrap().unwrap_err().to_string();
        assert!(error.starts_with("rules:0@9: not a published rule set"), "{error}");
    }
}
