//! The Kafka sink of `kairos run`: actions to one topic per channel, every decision to the
//! decisions topic, invalid input to the dead-letter topic. Keys are the subscriber's msisdn.
//!
//! The producer is idempotent (`enable.idempotence`), so librdkafka's own retries never
//! duplicate a record. Effectively-once across restarts needs the output progress stored
//! with the state; that lands with durable state (see ARCHITECTURE.md).

use std::time::Duration;

use kairos_model::{Channel, Decision, Verdict};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use crate::config::{KafkaConfig, OutputTopics};
use crate::ingest::DeadLetter;
use crate::telemetry;

/// Counts and logs records the brokers did not take.
pub struct DeliveryReport;

impl ClientContext for DeliveryReport {}

impl ProducerContext for DeliveryReport {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, message)) = result {
            metrics::counter!(telemetry::SINK_ERRORS).increment(1);
            use rdkafka::Message;
            tracing::error!(topic = message.topic(), %error, "record not delivered");
        }
    }
}

/// A producer shared by all workers (librdkafka producers are thread-safe).
pub struct KafkaSink {
    producer: ThreadedProducer<DeliveryReport>,
    topics: OutputTopics,
}

impl KafkaSink {
    /// Connects the producer.
    pub fn new(kafka: &KafkaConfig, topics: OutputTopics) -> Result<KafkaSink, String> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &kafka.brokers)
            .set("client.id", "kairos-sink")
            .set("enable.idempotence", "true")
            // A few milliseconds of batching costs little latency and saves many requests.
            .set("linger.ms", "5")
            .set("compression.type", "lz4");
        for (key, value) in &kafka.client {
            config.set(key, value);
        }
        let producer = config
            .create_with_context(DeliveryReport)
            .map_err(|e| format!("cannot create the Kafka producer for {}: {e}", kafka.brokers))?;
        Ok(KafkaSink { producer, topics })
    }

    /// Sends a decision, and its action when it was sent.
    pub fn decision(&self, decision: &Decision) {
        let key = decision.action.msisdn.to_string();
        if decision.verdict == Verdict::Sent {
            let topic = match decision.action.channel {
                Channel::Sms => &self.topics.actions_sms,
                Channel::Email => &self.topics.actions_email,
                Channel::Push => &self.topics.actions_push,
            };
            self.send(topic, key.as_bytes(), decision.action.to_json().as_bytes());
        }
        self.send(&self.topics.decisions, key.as_bytes(), decision.to_json().as_bytes());
        telemetry::record_decision(decision);
    }

    /// Sends an invalid input's record, keyed like the original message.
    pub fn dead_letter(&self, letter: &DeadLetter, key: Option<&[u8]>) {
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
        // A full local queue means the brokers are slower than the engine: wait, never drop.
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) => {
                    metrics::counter!(telemetry::SINK_ERRORS).increment(1);
                    tracing::error!(%error, "cannot produce record");
                    return;
                }
            }
        }
    }

    /// Waits until every record is delivered (or `timeout` passes).
    pub fn flush(&self, timeout: Duration) -> Result<(), String> {
        self.producer
            .flush(timeout)
            .map_err(|e| format!("flushing the producer: {e}"))
    }
}
