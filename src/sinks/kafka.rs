//! The Kafka sink of `kairos run`: actions to one topic per channel, every decision to the
//! decisions topic, invalid input to the dead-letter topic. Keys are the subscriber's msisdn
//! (dead letters keep the key of the message they replace).
//!
//! Effectively once: the producer is idempotent (librdkafka's retries never duplicate a
//! record); action ids are deterministic; and the sink tracks where each output partition
//! ends, so that after a restart it can read back what it produced since the previous
//! checkpoint ([`KafkaSink::recall`]) and not produce it again.
//!
//! [`sink_and_checkpoint`] is the run's last operator: decisions go to the sink as they are
//! made, and the dataflow's checkpoint records to the checkpoint writer (`state/writer.rs`)
//! once every decision before the checkpoint's instant is out.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kairos_dataflows::checkpoint::StateRecord;
use kairos_model::{Channel, Decision, Millis, Verdict};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::{Operator, OutputBuilderSession};
use timely::dataflow::operators::Probe;
use timely::dataflow::{ProbeHandle, StreamVec};

use crate::config::{KafkaConfig, OutputTopics};
use crate::ingest::{DeadLetter, SourcePosition};
use crate::state::coordinator::Coordinator;
use crate::state::writer::{BackgroundWriter, CheckpointWriter};
use crate::state::Position;
use crate::telemetry;

/// Why the Kafka sink could not start, read back its outputs, or deliver.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot create the Kafka {what} for {brokers}: {source}")]
    Client {
        what: &'static str,
        brokers: String,
        source: KafkaError,
    },
    #[error("cannot read metadata of output topic {topic}: {source}")]
    Metadata { topic: String, source: KafkaError },
    #[error("output topic {topic} does not exist on {brokers} (create it)")]
    Missing { topic: String, brokers: String },
    #[error("cannot read the end of {topic}/{partition}: {source}")]
    End {
        topic: String,
        partition: i32,
        source: KafkaError,
    },
    #[error("reading back the outputs: {0}")]
    ReadBack(KafkaError),
    #[error("reading back the outputs stalled (nothing for {RECALL_STALL:?}) with {0} partition(s) unread")]
    ReadBackTimedOut(usize),
    #[error("flushing the producer: {0}")]
    Flush(KafkaError),
}

/// How long the read-back at start may go without receiving anything before it gives up.
const RECALL_STALL: Duration = Duration::from_secs(30);

/// Where each output partition ends, as far as this process has produced.
type OutputEnds = Arc<Mutex<BTreeMap<(String, i32), i64>>>;

/// The first record the brokers did not take, once one was not: from then on this sink
/// produces nothing and no checkpoint is written (see [`KafkaSink::failure`]). The flag is
/// what every decision looks at; the reason is read only when the engine stops.
#[derive(Default)]
struct DeliveryFailure {
    failed: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl DeliveryFailure {
    /// Counts a record not delivered; the first one's `reason` is kept and logged.
    fn record(&self, reason: impl FnOnce() -> String) {
        metrics::counter!(telemetry::SINK_ERRORS).increment(1);
        let mut first = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            let reason = reason();
            tracing::error!(%reason, "record not delivered: no checkpoint will cover it; the engine restarts from the last one");
            *first = Some(reason);
            self.failed.store(true, Ordering::Release);
        }
    }

    fn is_set(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    fn reason(&self) -> Option<String> {
        self.reason.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Tracks the end of each partition; records the first delivery that failed.
pub struct DeliveryReport {
    ends: OutputEnds,
    failure: Arc<DeliveryFailure>,
}

impl ClientContext for DeliveryReport {}

impl ProducerContext for DeliveryReport {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(message) => {
                let mut ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
                let end = ends
                    .entry((message.topic().to_string(), message.partition()))
                    .or_insert(0);
                *end = (*end).max(message.offset() + 1);
            }
            Err((error, message)) => self.failure.record(|| {
                format!(
                    "a record to {}/{} was not delivered: {error}",
                    message.topic(),
                    message.partition()
                )
            }),
        }
    }
}

/// A producer shared by all workers (librdkafka producers are thread-safe).
pub struct KafkaSink {
    producer: ThreadedProducer<DeliveryReport>,
    topics: OutputTopics,
    ends: OutputEnds,
    failure: Arc<DeliveryFailure>,
    /// What a previous run already produced since the restored checkpoint's scan point.
    produced: HashSet<String>,
    kafka: KafkaConfig,
}

fn action_identity(id: &str) -> String {
    format!("a:{id}")
}

fn decision_identity(id: &str) -> String {
    format!("d:{id}")
}

/// A dead letter is identified by where its message was read.
fn dead_letter_identity(topic: &str, partition: i64, offset: i64) -> String {
    format!("x:{topic}/{partition}/{offset}")
}

impl KafkaSink {
    /// Connects the producer.
    pub fn new(kafka: &KafkaConfig, topics: OutputTopics) -> Result<KafkaSink, SinkError> {
        let delivery_timeout = kafka.delivery_timeout_ms.to_string();
        let config = kafka.client_config(
            "kairos-sink",
            &[
                ("enable.idempotence", "true"),
                // A few milliseconds of batching costs little latency and saves many requests.
                ("linger.ms", "5"),
                ("compression.type", "lz4"),
                // `[kafka] delivery_timeout_ms`: past it a record counts as failed, and the
                // engine restarts from its last checkpoint.
                ("message.timeout.ms", &delivery_timeout),
            ],
        );
        let ends = OutputEnds::default();
        let failure = Arc::new(DeliveryFailure::default());
        let producer = config
            .create_with_context(DeliveryReport {
                ends: Arc::clone(&ends),
                failure: Arc::clone(&failure),
            })
            .map_err(|source| SinkError::Client {
                what: "producer",
                brokers: kafka.brokers.clone(),
                source,
            })?;
        Ok(KafkaSink {
            producer,
            topics,
            ends,
            failure,
            produced: HashSet::new(),
            kafka: kafka.clone(),
        })
    }

    fn all_topics(&self) -> [&str; 5] {
        [
            &self.topics.actions_sms,
            &self.topics.actions_email,
            &self.topics.actions_push,
            &self.topics.decisions,
            &self.topics.dead_letter,
        ]
    }

    /// Learns where every output partition ends now (before anything is produced), and,
    /// after a restart, reads back what was produced from `scan_from` on, so it is not
    /// produced again. Returns how many records were recalled.
    pub fn recall(&mut self, scan_from: Option<&[Position]>) -> Result<usize, SinkError> {
        let consumer: BaseConsumer = self
            .kafka
            .client_config(
                "kairos-recall",
                &[
                    ("group.id", self.kafka.group_id.as_str()),
                    ("enable.auto.commit", "false"),
                    ("enable.partition.eof", "true"),
                ],
            )
            .create()
            .map_err(|source| SinkError::Client {
                what: "client",
                brokers: self.kafka.brokers.clone(),
                source,
            })?;
        let timeout = Duration::from_secs(10);
        let mut ranges = Vec::new();
        for topic in self.all_topics() {
            let partitions = crate::ingest::kafka::topic_partitions(&consumer, topic, timeout)
                .map_err(|source| SinkError::Metadata {
                    topic: topic.to_string(),
                    source,
                })?
                .ok_or_else(|| SinkError::Missing {
                    topic: topic.to_string(),
                    brokers: self.kafka.brokers.clone(),
                })?;
            for partition in partitions {
                let (low, high) =
                    consumer
                        .fetch_watermarks(topic, partition, timeout)
                        .map_err(|source| SinkError::End {
                            topic: topic.to_string(),
                            partition,
                            source,
                        })?;
                self.ends
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((topic.to_string(), partition), high);
                if let Some(from) = scan_from {
                    let start = from
                        .iter()
                        .find(|(t, p, _)| t == topic && *p == partition)
                        .map_or(low, |(_, _, offset)| *offset)
                        .max(low);
                    if start < high {
                        ranges.push((topic.to_string(), partition, start, high));
                    }
                }
            }
        }
        if ranges.is_empty() {
            return Ok(0);
        }
        let mut assignment = TopicPartitionList::new();
        for (topic, partition, start, _) in &ranges {
            assignment
                .add_partition_offset(topic, *partition, Offset::Offset(*start))
                .map_err(SinkError::ReadBack)?;
        }
        consumer.assign(&assignment).map_err(SinkError::ReadBack)?;
        let mut remaining: BTreeMap<(String, i32), i64> =
            ranges.iter().map(|(t, p, _, h)| ((t.clone(), *p), *h)).collect();
        // However much there is to read back (it grows with the time since the checkpoint),
        // reading stops only when nothing arrives for RECALL_STALL.
        let mut last_progress = Instant::now();
        let mut recalled = 0;
        while !remaining.is_empty() {
            if last_progress.elapsed() > RECALL_STALL {
                return Err(SinkError::ReadBackTimedOut(remaining.len()));
            }
            let Some(result) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            last_progress = Instant::now();
            let message = match result {
                Ok(message) => message,
                Err(KafkaError::PartitionEOF(_)) => continue,
                Err(e) => return Err(SinkError::ReadBack(e)),
            };
            let key = (message.topic().to_string(), message.partition());
            if remaining.get(&key).is_some_and(|high| message.offset() + 1 >= *high) {
                remaining.remove(&key);
            }
            let Some(value) = message
                .payload()
                .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
            else {
                continue;
            };
            let identity = if key.0 == self.topics.dead_letter {
                match (
                    value["topic"].as_str(),
                    value["partition"].as_i64(),
                    value["offset"].as_i64(),
                ) {
                    (Some(topic), Some(partition), Some(offset)) => dead_letter_identity(topic, partition, offset),
                    _ => continue,
                }
            } else {
                let Some(id) = value["action_id"].as_str() else {
                    continue;
                };
                if key.0 == self.topics.decisions {
                    decision_identity(id)
                } else {
                    action_identity(id)
                }
            };
            self.produced.insert(identity);
            recalled += 1;
        }
        Ok(recalled)
    }

    /// Where each output partition ends, for a checkpoint (call after [`KafkaSink::flush`]).
    pub fn ends(&self) -> Vec<Position> {
        let ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
        ends.iter()
            .map(|((topic, partition), end)| (topic.clone(), *partition, *end))
            .collect()
    }

    /// Sends a decision, and its action when it was sent — unless a previous run already did.
    pub fn decision(&self, decision: &Decision) {
        if self.failed() {
            return;
        }
        let key = decision.action.msisdn.to_string();
        let id = &decision.action.action_id;
        // A decision a previous run already produced is neither produced nor counted again.
        let fresh = !self.produced.contains(&action_identity(id));
        if decision.verdict == Verdict::Sent && fresh {
            let topic = match decision.action.channel {
                Channel::Sms => &self.topics.actions_sms,
                Channel::Email => &self.topics.actions_email,
                Channel::Push => &self.topics.actions_push,
            };
            self.send(topic, key.as_bytes(), decision.action.to_json().as_bytes());
            telemetry::action_latency(decision, kairos_model::time::now());
        }
        if decision.verdict != Verdict::Sent || fresh {
            telemetry::record_decision(decision);
        }
        if !self.produced.contains(&decision_identity(id)) {
            let payload = decision.to_json();
            let record = BaseRecord::to(&self.topics.decisions).payload(payload.as_bytes());
            // An erased subscriber's decision names nobody, not even in its key.
            if decision.is_erased() {
                self.send_record(record);
            } else {
                self.send_record(record.key(key.as_bytes()));
            }
        }
    }

    /// Sends an invalid input's record, keyed like the original message — unless a previous
    /// run already did.
    pub fn dead_letter(&self, letter: &DeadLetter, key: Option<&[u8]>) {
        if self.failed() {
            return;
        }
        if let SourcePosition::Kafka {
            topic,
            partition,
            offset,
        } = &letter.source
        {
            if self
                .produced
                .contains(&dead_letter_identity(topic, i64::from(*partition), *offset))
            {
                return;
            }
        }
        let payload = letter.to_json();
        let record = BaseRecord::to(&self.topics.dead_letter).payload(payload.as_bytes());
        match key {
            Some(key) => self.send_record(record.key(key)),
            None => self.send_record(record),
        }
    }

    fn send(&self, topic: &str, key: &[u8], payload: &[u8]) {
        self.send_record(BaseRecord::to(topic).key(key).payload(payload));
    }

    fn send_record<K: ToBytes + ?Sized>(&self, mut record: BaseRecord<'_, K, [u8]>) {
        // A full local queue means the brokers are slower than the engine: wait (the worker
        // reads nothing meanwhile: back-pressure), never drop — until a record fails, when
        // nothing more is produced.
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    if self.failed() {
                        return;
                    }
                    record = returned;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, returned)) => {
                    let topic = returned.topic.to_string();
                    return self
                        .failure
                        .record(|| format!("cannot produce a record to {topic}: {error}"));
                }
            }
        }
    }

    /// Why this sink stopped delivering: the first record the brokers did not take (or
    /// could not be handed to them), or a fatal error of the idempotent producer. From then
    /// on it produces nothing, and no checkpoint may be written: the state is ahead of what
    /// was delivered, and only a restart from the last checkpoint re-decides and re-produces
    /// what was lost (the read-back at start keeps what did arrive from being produced twice).
    pub fn failure(&self) -> Option<String> {
        if let Some(reason) = self.failure.reason() {
            return Some(reason);
        }
        let (code, reason) = self.producer.client().fatal_error()?;
        let reason = format!("the producer failed for good ({code:?}): {reason}");
        self.failure.record(|| reason.clone());
        Some(reason)
    }

    /// Whether a record was not delivered (one atomic load: what each decision checks).
    pub fn failed(&self) -> bool {
        self.failure.is_set()
    }

    /// Gives up every record not yet delivered (after a failure, before a restart), so that
    /// none of them lands after the next start has read back what the outputs hold.
    pub fn purge(&self) {
        self.producer
            .purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
    }

    /// Records handed to the producer and not yet acknowledged by the brokers.
    pub fn queue_depth(&self) -> i32 {
        self.producer.in_flight_count()
    }

    /// Waits until every record is delivered (or `timeout` passes).
    pub fn flush(&self, timeout: Duration) -> Result<(), SinkError> {
        self.producer.flush(timeout).map_err(SinkError::Flush)
    }
}

/// What the run's last operator hands decisions and checkpoints to (shared by the workers).
#[derive(Clone)]
pub struct Outputs {
    pub sink: Arc<KafkaSink>,
    pub coordinator: Arc<Coordinator>,
    pub writer: Arc<Mutex<CheckpointWriter>>,
    pub background: Arc<BackgroundWriter>,
}

/// The run's last operator: every decision to the Kafka sink as it is made (`probe` then
/// tells when an instant is fully decided); the checkpoint records of every worker go to
/// worker 0, which hands a complete checkpoint to the background writer once every decision
/// before its instant is out (no worker waits while it flushes and writes).
pub fn sink_and_checkpoint<'scope>(
    decisions: StreamVec<'scope, Millis, Decision>,
    state: StreamVec<'scope, Millis, StateRecord>,
    probe: &ProbeHandle<Millis>,
    outputs: Outputs,
    worker: usize,
) {
    let Outputs {
        sink,
        coordinator,
        writer,
        background,
    } = outputs;
    decisions.probe_with(probe).binary_frontier(
        state,
        Pipeline,
        Exchange::new(|_: &StateRecord| 0),
        "KafkaSinkAndCheckpoint",
        move |_, _| {
            move |(decisions, decided),
                  (records, _),
                  _output: &mut OutputBuilderSession<'_, Millis, CapacityContainerBuilder<Vec<()>>>| {
                decisions.for_each(|_, batch| {
                    for decision in batch.drain(..) {
                        sink.decision(&decision);
                    }
                });
                if worker != 0 {
                    return;
                }
                let mut writer = writer.lock().unwrap_or_else(|p| p.into_inner());
                records.for_each(|_, batch| batch.drain(..).for_each(|r| writer.absorb(r)));
                // Write a checkpoint once every decision before it is out.
                let Some(at) = coordinator.confirmed() else { return };
                if background.busy() || !writer.complete_for(at) || decided.less_than(&at) {
                    return;
                }
                let Some(inputs) = coordinator.positions_for(at) else {
                    return;
                };
                background.submit(writer.take(at, inputs));
            }
        },
    );
}
