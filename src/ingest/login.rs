//! The first contact of `kairos run` with the brokers, before any other client: one metadata
//! request made with the `[kafka.client]` settings every client uses.
//!
//! librdkafka reports a refused login (a wrong SASL password, a mechanism the listener does
//! not offer) only to the client's error callback, and keeps retrying; the request that was
//! waiting then fails with a transport error or a time-out that does not say why. Asked once
//! here, with a context that keeps what the callback heard, start stops with the brokers' own
//! reason and what to check, instead of "broker transport failure" from whichever client
//! happened to ask first.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};
use rdkafka::ClientContext;

use crate::config::KafkaConfig;

/// How long the brokers may take to answer at all (a refused login is known within about a
/// second: librdkafka reports it to the error callback).
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// One metadata request of the check: a healthy broker answers in milliseconds.
const ATTEMPT: Duration = Duration::from_secs(1);

/// Why the brokers could not be reached or would not let kairos in.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("cannot create a Kafka client for {brokers}: {source}")]
    Client { brokers: String, source: KafkaError },
    #[error("Kafka authentication failed at {brokers}: {reason} — check `[kafka.client]`: `sasl.mechanism`, `sasl.username` and `sasl.password` (and `security.protocol`) must match the brokers' listener")]
    Authentication { brokers: String, reason: String },
    #[error("cannot reach the Kafka brokers {brokers} within {seconds} s: {source}{heard} — are they up, and does `[kafka.client]` `security.protocol` match their listener?")]
    Unreachable {
        brokers: String,
        seconds: u64,
        source: KafkaError,
        /// The first error librdkafka reported meanwhile, if any (` (…)`).
        heard: String,
    },
}

/// A client context that keeps the first authentication error and the first other error
/// that says more than "all brokers are down".
#[derive(Default)]
struct Heard {
    authentication: Mutex<Option<String>>,
    other: Mutex<Option<String>>,
}

impl ClientContext for Heard {
    fn error(&self, error: KafkaError, reason: &str) {
        // Logged as librdkafka's default context does, and kept for the error of start.
        tracing::error!("librdkafka: {error}: {reason}");
        let lock = |slot: &'_ Mutex<Option<String>>| {
            let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| reason.to_string());
        };
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::Authentication) => lock(&self.authentication),
            Some(RDKafkaErrorCode::AllBrokersDown) => {}
            _ => lock(&self.other),
        }
    }
}

impl ProducerContext for Heard {
    type DeliveryOpaque = ();
    // Nothing is produced: the client only asks for metadata.
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

/// Asks the brokers for the metadata of the first input topic (or of the cluster) with the
/// engine's client settings: `Ok` once they answered, or why they did not.
// Once, at start (librdkafka's `KafkaError` makes the error large): returned by value, as
// `pipeline/run.rs` does with its own start errors.
#[allow(clippy::result_large_err)]
pub fn check_login(config: &KafkaConfig) -> Result<(), LoginError> {
    // A producer, not a consumer: a consumer with a group id would also log in to the group
    // coordinator, and dropping it mid-login logs an error of its own.
    let client: BaseProducer<Heard> = config
        .client_config("kairos-login", &[])
        .create_with_context(Heard::default())
        .map_err(|source| LoginError::Client {
            brokers: config.brokers.clone(),
            source,
        })?;
    let topic = config.input_topics.first().map(String::as_str);
    let heard = client.context();
    let taken = |slot: &Mutex<Option<String>>| slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    // Asked in short requests: the error callback runs only when the client's queue is
    // served (between them), and librdkafka keeps retrying a refused login meanwhile.
    let deadline = Instant::now() + LOGIN_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let source = match client.client().fetch_metadata(topic, left.clamp(ATTEMPT / 10, ATTEMPT)) {
            Ok(_) => return Ok(()),
            Err(source) => source,
        };
        // Serves the error callbacks (nothing was produced: there is nothing else to serve).
        client.poll(Duration::from_millis(50));
        if let Some(reason) = taken(&heard.authentication) {
            return Err(LoginError::Authentication {
                brokers: config.brokers.clone(),
                reason,
            });
        }
        if Instant::now() >= deadline {
            return Err(LoginError::Unreachable {
                brokers: config.brokers.clone(),
                seconds: LOGIN_TIMEOUT.as_secs(),
                source,
                heard: taken(&heard.other).map(|r| format!(" ({r})")).unwrap_or_default(),
            });
        }
    }
}
