//! Kafka ingest for `kairos run`: each timely worker owns a fixed share of the input
//! topics' partitions (`assign`, never consumer-group rebalancing), polls each through its
//! own partition queue, and derives the epoch it allows from what its partitions have
//! delivered.
//!
//! Offsets are not committed to Kafka: where to resume belongs with the engine's durable
//! state (see ARCHITECTURE.md), so a restart can never skip events whose effects were lost.
//!
//! The epoch (this worker's share of the input frontier):
//! - an *active* partition allows `newest ts − allowed lateness`; one that has delivered
//!   nothing yet allows nothing (0);
//! - a partition that has reached its end and been quiet for `idle_after` is *idle* and
//!   does not hold the frontier back;
//! - a worker whose partitions are all idle follows the slowest active worker, or, when
//!   every partition of every worker is idle, moves just past the newest event any of them
//!   has seen — so the last events before a pause are decided without waiting for more.

// Errors here happen once, at start (librdkafka's `KafkaError` makes them large); returning
// them by value keeps the call sites plain.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kairos_model::{Millis, Origin};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::config::{KafkaConfig, StartFrom};
use crate::decode::{decode_within, DecodeError, Horizon};
use crate::ingest::range::{Bound, Range};
use crate::ingest::{DeadLetter, Received, SourcePosition};
use crate::state::inheritance::Inheritance;
use crate::telemetry;

/// Receives librdkafka's statistics (for the lag gauge) and its errors (for the log).
#[derive(Default)]
pub struct IngestContext {
    /// Set on any error of the client (a broker away, a connection lost): what the
    /// partitions said about being at their end may be stale (see [`OwnedPartition::confirmed`]).
    disrupted: AtomicBool,
}

impl ClientContext for IngestContext {
    /// A partition read to its end is how idleness is seen (`enable.partition.eof`), not an
    /// error; everything else is logged.
    fn error(&self, error: KafkaError, reason: &str) {
        let end_of_partition = matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        );
        if !end_of_partition {
            self.disrupted.store(true, Ordering::Release);
            tracing::error!(%error, reason, "librdkafka");
        }
    }

    fn stats(&self, statistics: Statistics) {
        for (topic, stats) in &statistics.topics {
            for (partition, p) in &stats.partitions {
                // librdkafka lists partition -1 (unassigned messages) too; and it reports -1
                // offsets for partitions this client does not fetch.
                if *partition < 0 || p.hi_offset < 0 {
                    continue;
                }
                let fetched = p.next_offset.saturating_sub(p.fetchq_cnt.max(0));
                if let Some(lag) = unread(p.hi_offset, p.app_offset, fetched, p.lo_offset) {
                    metrics::gauge!(telemetry::INPUT_LAG, "topic" => topic.clone(), "partition" => partition.to_string())
                        .set(lag as f64);
                }
            }
        }
    }
}

/// Messages not yet handed to the engine: from the next offset to read to the high
/// watermark. librdkafka's own `consumer_lag` counts from the *committed* offset, and kairos
/// never commits to Kafka. Before this process has handed over a message of the partition,
/// librdkafka knows no application offset: the next one is then where its fetcher stands
/// less what it holds fetched (`fetched`: the offset the partition was assigned at, after a
/// restart), or, before any fetch, the start of the log. (Counting from the start of the log
/// there showed a partition read to its end before a restart as wholly unread until its next
/// message arrived; the fault campaign found it.)
fn unread(high_watermark: i64, next_to_read: i64, fetched: i64, low_watermark: i64) -> Option<i64> {
    let from = if next_to_read >= 0 {
        next_to_read
    } else if fetched >= 0 {
        fetched.max(low_watermark)
    } else {
        low_watermark.max(0)
    };
    (high_watermark >= 0).then(|| (high_watermark - from).max(0))
}

impl ConsumerContext for IngestContext {}

/// What one partition has delivered, as far as the frontier is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionView {
    /// The newest event time read from it.
    pub newest: Option<Millis>,
    /// At its end and quiet for `idle_after`.
    pub idle: bool,
}

/// A worker's view of its partitions: the least epoch its active partitions allow (`None`
/// when none is active), and just past the newest event of its idle ones.
pub fn worker_view(partitions: impl IntoIterator<Item = PartitionView>, lateness: Millis) -> (Option<Millis>, Millis) {
    let mut active: Option<Millis> = None;
    let mut idle: Millis = 0;
    for p in partitions {
        if p.idle {
            idle = idle.max(p.newest.map_or(0, |t| t.saturating_add(1)));
        } else {
            // A partition that has delivered nothing yet allows nothing.
            let allows = p.newest.map_or(0, |t| t.saturating_sub(lateness));
            active = Some(active.map_or(allows, |a| a.min(allows)));
        }
    }
    (active, idle)
}

/// What each worker publishes so that the others can follow it (see the module docs).
#[derive(Debug)]
pub struct SharedFrontier {
    /// Per worker: the least epoch its active partitions allow, or `u64::MAX` if none is active.
    active: Vec<AtomicU64>,
    /// Per worker: just past the newest event of its idle partitions.
    idle: Vec<AtomicU64>,
}

impl SharedFrontier {
    /// Room for `workers` workers.
    pub fn new(workers: usize) -> SharedFrontier {
        SharedFrontier {
            active: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            idle: (0..workers).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Just past the newest event any worker's idle partitions have delivered: where event
    /// time ends once every partition is idle (the end of a bounded run).
    pub fn end(&self) -> Millis {
        self.idle.iter().map(|a| a.load(Ordering::Acquire)).max().unwrap_or(0)
    }

    /// Publishes worker `me`'s view and returns the epoch it should move to.
    fn agree(&self, me: usize, active: Option<Millis>, idle: Millis) -> Millis {
        self.active[me].store(active.unwrap_or(u64::MAX), Ordering::Release);
        self.idle[me].fetch_max(idle, Ordering::AcqRel);
        if let Some(active) = active {
            return active;
        }
        let others = self
            .active
            .iter()
            .map(|a| a.load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX);
        if others != u64::MAX {
            return others;
        }
        self.idle.iter().map(|a| a.load(Ordering::Acquire)).max().unwrap_or(0)
    }
}

struct OwnedPartition {
    topic: String,
    partition: i32,
    /// The next offset to read (librdkafka's raw form: -2 is "the beginning").
    next: i64,
    /// Index of the partition among all input partitions (the [`Origin::source`]).
    source: u32,
    /// Shared with the poll that reads it, so that a message it lends can move the partition.
    queue: Arc<PartitionQueue<IngestContext>>,
    newest: Option<Millis>,
    at_end: bool,
    last_message: Instant,
    /// When an event last moved `newest` forward (or the partition was assigned).
    last_progress: Instant,
    /// The Kafka timestamp of the last message read (milliseconds since the Unix epoch).
    last_timestamp: Option<Millis>,
    /// In a bounded run: the offset to stop before.
    stop: Option<i64>,
    /// Every message before `stop` has been read.
    done: bool,
    /// Its end of partition is known to be current: false from a disruption of the client
    /// (a broker away) until the broker confirms that nothing lies beyond what was read.
    /// Without it, a partition quiet since before an outage would count as idle while the
    /// others deliver again, and its own first events after the outage would be late.
    confirmed: bool,
    /// After a restart: where the partition ended when this process started, until it has
    /// delivered everything before that (see `crate::state::inheritance`).
    owed_until: Option<i64>,
}

/// How long a partition may deliver messages none of which moves its event time forward
/// (invalid ones, or events older than its newest) before it stops holding the frontier:
/// longer than the second between the ticks of timestamps stamped to the second, far
/// shorter than a freeze anyone would accept.
pub const STALLED_AFTER: Duration = Duration::from_secs(10);

/// What decides whether a partition holds the frontier back (see [`partition_idle`]).
#[derive(Clone, Copy, Debug)]
pub struct PartitionActivity {
    /// Read up to the stop of a bounded range.
    pub done: bool,
    /// At its end (librdkafka's partition EOF), and that end confirmed since any disruption.
    pub at_confirmed_end: bool,
    /// Since the last message of any kind.
    pub since_message: Duration,
    /// Since the last event that moved the partition's newest event time forward (or since
    /// it was assigned).
    pub since_progress: Duration,
}

/// Whether a partition holds nothing back: done with its range; at its end and quiet for
/// `idle_after`; or busy delivering messages that have not moved its event time for
/// [`STALLED_AFTER`] — a partition of garbage or of stale events must not freeze the
/// engine (its valid events are applied at the frontier, counted late).
pub fn partition_idle(activity: PartitionActivity, idle_after: Duration) -> bool {
    let quiet_at_end = activity.at_confirmed_end && activity.since_message >= idle_after;
    let stalled = activity.since_message < STALLED_AFTER && activity.since_progress >= STALLED_AFTER;
    activity.done || quiet_at_end || stalled
}

impl OwnedPartition {
    /// Whether, with the worker's waiting events at their bound at epoch `ahead_of`, this
    /// partition runs ahead of the frontier (it has delivered, and its newest event less the
    /// lateness is past the epoch): reading it would only add events that wait.
    fn runs_ahead(&self, ahead_of: Option<Millis>, lateness: Millis) -> bool {
        ahead_of.is_some_and(|epoch| self.newest.is_some_and(|n| n.saturating_sub(lateness) > epoch))
    }

    /// Whether it holds nothing back (see [`partition_idle`]).
    fn idle(&self, idle_after: Duration) -> bool {
        let activity = PartitionActivity {
            done: self.done,
            at_confirmed_end: self.at_end && self.confirmed,
            since_message: self.last_message.elapsed(),
            since_progress: self.last_progress.elapsed(),
        };
        partition_idle(activity, idle_after)
    }
}

/// How a worker's epoch follows its partitions (see the module docs).
#[derive(Clone, Debug)]
pub struct FrontierRules {
    pub shared: Arc<SharedFrontier>,
    pub lateness: Millis,
    pub idle_after: Duration,
    /// How far after the wall clock an event may be stamped (contract §5.1).
    pub max_future: Millis,
}

/// One worker's share of the input partitions.
pub struct PartitionIngest {
    consumer: Arc<BaseConsumer<IngestContext>>,
    partitions: Vec<OwnedPartition>,
    shared: Arc<SharedFrontier>,
    worker: usize,
    lateness: Millis,
    idle_after: Duration,
    max_future: Millis,
    last_error_log: Option<Instant>,
    /// When the broker was last asked to confirm an end of partition.
    last_confirm: Instant,
    /// After a restart: what the killed process may have read, and the newest event time
    /// read of it since the worker last asked (see [`PartitionIngest::take_inherited_newest`]).
    inheritance: Option<Arc<Inheritance>>,
    inherited_newest: Option<Millis>,
    /// Messages read from the consumer's own queue (fetched before their partition's queue
    /// was split), and whether that was logged.
    early: u64,
    early_logged: bool,
}

/// How often, at most, a worker asks the broker where its unconfirmed partitions end.
const CONFIRM_EVERY: Duration = Duration::from_millis(250);

/// Why the input partitions could not be found or owned.
#[derive(Debug, thiserror::Error)]
pub enum KafkaIngestError {
    #[error("cannot create a Kafka client for {brokers}: {source}")]
    Client { brokers: String, source: KafkaError },
    #[error("cannot read metadata of input topic {topic} from {brokers}: {source}")]
    Metadata {
        topic: String,
        brokers: String,
        source: KafkaError,
    },
    #[error("input topic {topic} does not exist on {brokers} (create it, or fix [kafka] input_topics)")]
    Missing { topic: String, brokers: String },
    #[error("cannot assign {topic}/{partition}: {source}")]
    Assign {
        topic: String,
        partition: i32,
        source: KafkaError,
    },
    #[error("cannot open a queue for {topic}/{partition}")]
    Queue { topic: String, partition: i32 },
    #[error("cannot {what} of {topic}/{partition}: {source}")]
    Offsets {
        what: &'static str,
        topic: String,
        partition: i32,
        source: KafkaError,
    },
}

/// The input partitions, in the order every worker agrees on.
pub fn list_partitions(config: &KafkaConfig) -> Result<Vec<(String, i32)>, KafkaIngestError> {
    let consumer: BaseConsumer =
        consumer_config(config, "kairos-metadata")
            .create()
            .map_err(|source| KafkaIngestError::Client {
                brokers: config.brokers.clone(),
                source,
            })?;
    let mut all = Vec::new();
    for topic in &config.input_topics {
        let partitions = topic_partitions(&consumer, topic, Duration::from_secs(10))
            .map_err(|source| KafkaIngestError::Metadata {
                topic: topic.clone(),
                brokers: config.brokers.clone(),
                source,
            })?
            .ok_or_else(|| KafkaIngestError::Missing {
                topic: topic.clone(),
                brokers: config.brokers.clone(),
            })?;
        all.extend(partitions.into_iter().map(|p| (topic.clone(), p)));
    }
    Ok(all)
}

/// Where each of `partitions` starts when there is no checkpoint: `--from` when given, else
/// `start_from` — made numeric for "latest", so that a record of it taken now (the first
/// start's, see `pipeline/run.rs`) resumes exactly where this process began reading.
pub fn start_positions(
    config: &KafkaConfig,
    partitions: &[(String, i32)],
    range: &Range,
) -> Result<HashMap<(String, i32), i64>, KafkaIngestError> {
    let consumer: BaseConsumer<IngestContext> = consumer_config(config, "kairos-start")
        .create_with_context(IngestContext::default())
        .map_err(|source| KafkaIngestError::Client {
            brokers: config.brokers.clone(),
            source,
        })?;
    let configured = match config.start_from {
        StartFrom::Earliest => Bound::Earliest,
        StartFrom::Latest => Bound::Latest,
    };
    partitions
        .iter()
        .map(|(topic, partition)| {
            let start = resolve(&consumer, topic, *partition, range.from.as_ref(), &configured)?;
            Ok(((topic.clone(), *partition), start))
        })
        .collect()
}

/// How long a topic that its broker does not know, or knows without partitions or leaders,
/// is asked for again before it counts as missing: a topic created just before kairos
/// starts (by a deploy script, a test) is briefly without leaders on a fresh broker.
pub const TOPIC_GRACE: Duration = Duration::from_secs(15);

/// The partitions of `topic`, sorted. While the broker knows no such topic, reports an
/// error for it or has none of its partitions, or one of its partitions has no leader yet,
/// it is asked again, for up to [`TOPIC_GRACE`]; then `None` when it still has no partitions
/// (a partition still without a leader is kept: a broker outage is the fetches' to ride out).
pub fn topic_partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Option<Vec<i32>>, KafkaError> {
    let started = Instant::now();
    loop {
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        let partitions: Vec<(i32, bool)> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| {
                t.partitions()
                    .iter()
                    .map(|p| (p.id(), p.error().is_none() && p.leader() >= 0))
            })
            .collect();
        let ready = !partitions.is_empty() && partitions.iter().all(|(_, led)| *led);
        if ready || started.elapsed() >= TOPIC_GRACE {
            let mut ids: Vec<i32> = partitions.into_iter().map(|(id, _)| id).collect();
            ids.sort_unstable();
            return Ok((!ids.is_empty()).then_some(ids));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn consumer_config(config: &KafkaConfig, client_id: &str) -> ClientConfig {
    config.client_config(
        client_id,
        &[
            // A group id is required by librdkafka's consumer, but partitions are assigned,
            // never subscribed, and no offset is ever committed to the group.
            ("group.id", config.group_id.as_str()),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            // End-of-partition events tell a caught-up partition from a slow one.
            ("enable.partition.eof", "true"),
            ("auto.offset.reset", config.start_from.as_reset()),
            ("fetch.wait.max.ms", "50"),
            ("statistics.interval.ms", "1000"),
        ],
    )
}

impl PartitionIngest {
    /// Assigns worker `worker` of `workers` its partitions: the `i`-th input partition
    /// belongs to worker `i % workers`. Each starts at its position in `resume` when there is
    /// one (a restored checkpoint), else where `start_from` says. After a restart,
    /// `inheritance` hears when each partition has delivered what it held at start.
    pub fn assign(
        config: &KafkaConfig,
        all: &[(String, i32)],
        (worker, workers): (usize, usize),
        frontier: FrontierRules,
        resume: &HashMap<(String, i32), i64>,
        inheritance: Option<Arc<Inheritance>>,
        range: &Range,
    ) -> Result<PartitionIngest, KafkaIngestError> {
        let FrontierRules {
            shared,
            lateness,
            idle_after,
            max_future,
        } = frontier;
        let consumer: BaseConsumer<IngestContext> = consumer_config(config, &format!("kairos-w{worker}"))
            .create_with_context(IngestContext::default())
            .map_err(|source| KafkaIngestError::Client {
                brokers: config.brokers.clone(),
                source,
            })?;
        let consumer = Arc::new(consumer);
        let owned: Vec<(usize, &(String, i32))> =
            all.iter().enumerate().filter(|(i, _)| i % workers == worker).collect();
        let mut assignment = TopicPartitionList::new();
        let mut starts = Vec::new();
        for (_, (topic, partition)) in &owned {
            // A stored position wins (a restored checkpoint); then `--from`; then
            // `start_from`, made numeric for "latest" so that a checkpoint taken before the
            // first message still resumes there.
            let configured = match config.start_from {
                StartFrom::Earliest => Bound::Earliest,
                StartFrom::Latest => Bound::Latest,
            };
            let start = match resume.get(&(topic.clone(), *partition)) {
                Some(raw) => *raw,
                None => resolve(&consumer, topic, *partition, range.from.as_ref(), &configured)?,
            };
            let stop = match &range.to {
                Some(to) => Some(resolve(&consumer, topic, *partition, Some(to), &Bound::Latest)?),
                None => None,
            };
            assignment
                .add_partition_offset(topic, *partition, Offset::from_raw(start))
                .map_err(|source| KafkaIngestError::Assign {
                    topic: topic.clone(),
                    partition: *partition,
                    source,
                })?;
            // What the partition holds now, if a killed process may have read some of it —
            // asked before the assignment, so that nothing delays splitting off the queues.
            let owed_until = match &inheritance {
                None => None,
                Some(inheritance) => {
                    let (low, high) = consumer
                        .fetch_watermarks(topic, *partition, Duration::from_secs(10))
                        .map_err(|source| KafkaIngestError::Offsets {
                            what: "read the end",
                            topic: topic.clone(),
                            partition: *partition,
                            source,
                        })?;
                    let from = if start < 0 { low } else { start };
                    if from >= high {
                        inheritance.caught_up(topic, *partition, start);
                        None
                    } else {
                        Some(high)
                    }
                }
            };
            starts.push((start, stop, owed_until));
        }
        consumer
            .assign(&assignment)
            .map_err(|source| KafkaIngestError::Assign {
                topic: "(all owned)".into(),
                partition: -1,
                source,
            })?;
        // librdkafka fetches from the assignment on, and what it fetches for a partition
        // before its queue is split waits on the consumer's queue (`poll` reads it first). On
        // a loaded machine that is thousands of messages; a test widens the gap at will.
        if let Some(delay) = split_delay() {
            std::thread::sleep(delay);
        }
        let mut partitions = Vec::new();
        for ((source, (topic, partition)), (start, stop, owed_until)) in owned.into_iter().zip(starts) {
            let queue = consumer
                .split_partition_queue(topic, *partition)
                .ok_or_else(|| KafkaIngestError::Queue {
                    topic: topic.clone(),
                    partition: *partition,
                })?;
            partitions.push(OwnedPartition {
                owed_until,
                topic: topic.clone(),
                partition: *partition,
                next: start,
                source: source as u32,
                queue: Arc::new(queue),
                newest: None,
                last_timestamp: None,
                at_end: false,
                last_message: Instant::now(),
                last_progress: Instant::now(),
                stop,
                confirmed: true,
                // A start at or past the stop reads nothing (-2 is "the beginning").
                done: stop.is_some_and(|stop| stop == 0 || (start >= 0 && start >= stop)),
            });
        }
        Ok(PartitionIngest {
            consumer,
            partitions,
            shared,
            worker,
            lateness,
            idle_after,
            max_future,
            last_error_log: None,
            last_confirm: Instant::now(),
            inheritance,
            inherited_newest: None,
            early: 0,
            early_logged: false,
        })
    }

    /// Where each owned partition resumes: the next offset to read.
    pub fn positions(&self) -> Vec<(String, i32, i64)> {
        self.partitions
            .iter()
            .map(|p| (p.topic.clone(), p.partition, p.next))
            .collect()
    }

    /// Whether every owned partition is idle (or there are none).
    pub fn all_idle(&self) -> bool {
        self.partitions.iter().all(|p| p.idle(self.idle_after))
    }

    /// In a bounded run: whether every owned partition has been read up to its stop.
    pub fn done(&self) -> bool {
        self.partitions.iter().all(|p| p.done)
    }

    /// How many partitions a poll with `ahead_of` would leave unread.
    pub fn paused(&self, ahead_of: Option<Millis>) -> usize {
        self.partitions
            .iter()
            .filter(|p| !p.done && p.runs_ahead(ahead_of, self.lateness))
            .count()
    }

    /// Number of partitions this worker owns.
    pub fn owned(&self) -> usize {
        self.partitions.len()
    }

    /// How far behind this worker reads, in seconds at wall clock `now`: `now` minus the
    /// Kafka timestamp of the last message read from the partitions that have not reached
    /// their end (the oldest of them); 0 when every partition is caught up.
    pub fn lag_seconds(&self, now: Millis) -> f64 {
        self.partitions
            .iter()
            .filter(|p| !p.at_end && !p.done)
            .filter_map(|p| p.last_timestamp)
            .min()
            .map_or(0.0, |t| now.saturating_sub(t) as f64 / 1000.0)
    }

    /// Reads up to `budget` messages per partition without blocking; returns how many. With
    /// `ahead_of` (the worker's epoch, when its waiting events are at their bound), only the
    /// partitions that hold the frontier there are read: those that have delivered nothing,
    /// or whose newest event less the lateness is not past it. Reading the others would only
    /// add events that wait; reading these moves the frontier, so the waiting drain.
    pub fn poll(&mut self, budget: usize, ahead_of: Option<Millis>, mut deliver: impl FnMut(Received)) -> usize {
        let horizon = Horizon::now(self.max_future);
        let mut read = 0;
        // Serves librdkafka's callbacks (statistics, errors). Messages come from the
        // partitions' queues — but those fetched between `assign` and the split of their
        // partition's queue wait on the consumer's own queue: they come first, in order,
        // before anything of the partition's queue (dropped, they were lost, and their
        // partition never caught up with its end).
        let consumer = Arc::clone(&self.consumer);
        while let Some(result) = consumer.poll(Duration::ZERO) {
            match result {
                Ok(message) => {
                    let Some(owned) = self
                        .partitions
                        .iter_mut()
                        .find(|p| p.partition == message.partition() && p.topic == message.topic())
                    else {
                        continue;
                    };
                    if owned.next >= 0 && message.offset() < owned.next {
                        continue;
                    }
                    if owned.stop.is_some_and(|stop| message.offset() >= stop) {
                        owned.done = true;
                        continue;
                    }
                    read += 1;
                    self.early += 1;
                    let reading = Reading {
                        inheritance: self.inheritance.as_deref(),
                        inherited_newest: &mut self.inherited_newest,
                        horizon: &horizon,
                    };
                    take(owned, &message, reading, &mut deliver);
                }
                // The end of a partition reached before its queue was split off (one
                // assigned at its end): it names only the partition's number, so every owned
                // partition of that number is at its end once the broker confirms it.
                Err(KafkaError::PartitionEOF(number)) => {
                    for owned in self.partitions.iter_mut().filter(|p| p.partition == number) {
                        owned.at_end = true;
                        owned.confirmed = false;
                    }
                }
                Err(error) => self.log_error(&error),
            }
        }
        if self.early > 0 && !self.early_logged {
            self.early_logged = true;
            tracing::info!(
                worker = self.worker,
                messages = self.early,
                "messages fetched before their partition's queue was split were read from the consumer's queue"
            );
        }
        if self.consumer.context().disrupted.swap(false, Ordering::AcqRel) {
            for owned in &mut self.partitions {
                owned.confirmed = false;
            }
        }
        self.confirm_ends();
        let mut errors = Vec::new();
        let lateness = self.lateness;
        for owned in self
            .partitions
            .iter_mut()
            .filter(|p| !p.done && !p.runs_ahead(ahead_of, lateness))
        {
            let queue = Arc::clone(&owned.queue);
            for _ in 0..budget {
                match queue.poll(Duration::ZERO) {
                    None => break,
                    Some(Err(KafkaError::PartitionEOF(_))) => {
                        owned.at_end = true;
                        // At its end: whatever it held at start lies before this position.
                        if owned.owed_until.take().is_some() {
                            if let Some(inheritance) = &self.inheritance {
                                inheritance.caught_up(&owned.topic, owned.partition, owned.next);
                            }
                        }
                        if let Some(stop) = owned.stop {
                            // Everything up to the end is read; the stop may lie beyond
                            // offsets a compacted topic no longer has.
                            owned.done = owned.next >= stop
                                || self
                                    .consumer
                                    .fetch_watermarks(&owned.topic, owned.partition, Duration::from_secs(10))
                                    .is_ok_and(|(_, high)| high >= stop);
                        }
                        break;
                    }
                    Some(Ok(message)) if owned.stop.is_some_and(|stop| message.offset() >= stop) => {
                        owned.done = true;
                        break;
                    }
                    Some(Err(error)) => {
                        errors.push(error);
                        break;
                    }
                    Some(Ok(message)) => {
                        read += 1;
                        let reading = Reading {
                            inheritance: self.inheritance.as_deref(),
                            inherited_newest: &mut self.inherited_newest,
                            horizon: &horizon,
                        };
                        take(owned, &message, reading, &mut deliver);
                    }
                }
            }
        }
        for error in errors {
            self.log_error(&error);
        }
        read
    }

    /// The newest event time read, since the last call, of what the partitions held when
    /// this process started (after a restart; see `crate::state::inheritance`).
    pub fn take_inherited_newest(&mut self) -> Option<Millis> {
        self.inherited_newest.take()
    }

    /// Asks the broker where each partition whose end is not confirmed ends (at most every
    /// [`CONFIRM_EVERY`]): one read to that end is at its end again.
    fn confirm_ends(&mut self) {
        if self.partitions.iter().all(|p| p.confirmed) || self.last_confirm.elapsed() < CONFIRM_EVERY {
            return;
        }
        self.last_confirm = Instant::now();
        for owned in self.partitions.iter_mut().filter(|p| !p.confirmed) {
            match self
                .consumer
                .fetch_watermarks(&owned.topic, owned.partition, Duration::from_millis(500))
            {
                // Nothing beyond what was read (-2, nothing read yet, counts only on an empty log).
                Ok((low, high)) => {
                    let next = if owned.next < 0 { low } else { owned.next };
                    owned.confirmed = next >= high;
                }
                // The broker is still away: ask again later.
                Err(_) => return,
            }
        }
    }

    /// The epoch this worker allows now (see the module docs). It never moves backwards:
    /// that is the caller's job (`InputHandle::advance_to` only moves forwards).
    pub fn epoch(&self) -> Millis {
        let views = self.partitions.iter().map(|p| PartitionView {
            newest: p.newest,
            idle: p.idle(self.idle_after),
        });
        let (active, idle) = worker_view(views, self.lateness);
        self.shared.agree(self.worker, active, idle)
    }

    fn log_error(&mut self, error: &KafkaError) {
        self.consumer.context().disrupted.store(true, Ordering::Release);
        // At most one line a second: a broker outage must not flood the log.
        if self
            .last_error_log
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            tracing::warn!(worker = self.worker, %error, "Kafka consumer error");
            self.last_error_log = Some(Instant::now());
        }
    }
}

impl Drop for PartitionIngest {
    /// The partitions' queues go before the consumer: a `PartitionQueue` lets go of its
    /// consumer before its queue, so the one holding the last reference would destroy the
    /// client with its own queue still open (librdkafka aborts: "pthread lock: Invalid
    /// argument").
    fn drop(&mut self) {
        self.partitions.clear();
    }
}

/// A pause between the assignment and the split of the partition queues, for tests only:
/// `KAIROS_TEST_SPLIT_DELAY_MS` (see `tests/kafka_bounded.rs`).
fn split_delay() -> Option<Duration> {
    let ms: u64 = std::env::var("KAIROS_TEST_SPLIT_DELAY_MS").ok()?.parse().ok()?;
    Some(Duration::from_millis(ms))
}

/// What taking a message needs besides its partition.
struct Reading<'a> {
    inheritance: Option<&'a Inheritance>,
    inherited_newest: &'a mut Option<Millis>,
    horizon: &'a Horizon,
}

/// Takes a message of `owned` (from its queue, or the consumer's): moves the partition on
/// and delivers the event, or a dead letter.
fn take(
    owned: &mut OwnedPartition,
    message: &BorrowedMessage<'_>,
    reading: Reading<'_>,
    deliver: &mut impl FnMut(Received),
) {
    // A message proves the connection; its partition's next end is current.
    owned.confirmed = true;
    owned.next = message.offset() + 1;
    owned.done = owned.stop.is_some_and(|stop| owned.next >= stop);
    owned.at_end = false;
    owned.last_message = Instant::now();
    owned.last_timestamp = message.timestamp().to_millis().and_then(|t| Millis::try_from(t).ok());
    let inherited = owned.owed_until.is_some_and(|end| message.offset() < end);
    if owned.owed_until.is_some_and(|end| owned.next >= end) {
        owned.owed_until = None;
        if let Some(inheritance) = reading.inheritance {
            inheritance.caught_up(&owned.topic, owned.partition, owned.next);
        }
    }
    let origin = Origin {
        source: owned.source,
        position: message.offset() as u64,
    };
    let position = || SourcePosition::Kafka {
        topic: owned.topic.clone(),
        partition: owned.partition,
        offset: message.offset(),
    };
    // Only a dead letter needs its own copy of the key.
    let key = || message.key().map(<[u8]>::to_vec);
    match message.payload() {
        None => deliver(Received::Invalid(
            DeadLetter::new(
                position(),
                DecodeError {
                    field: None,
                    reason: "empty message (no value)".into(),
                },
                b"",
            ),
            key(),
        )),
        Some(payload) => match decode_within(payload, origin, reading.horizon) {
            Ok(event) => {
                if inherited {
                    *reading.inherited_newest = (*reading.inherited_newest).max(Some(event.ts));
                }
                if owned.newest < Some(event.ts) {
                    owned.newest = Some(event.ts);
                    owned.last_progress = owned.last_message;
                }
                deliver(Received::Event(event));
            }
            Err(error) => deliver(Received::Invalid(DeadLetter::new(position(), error, payload), key())),
        },
    }
}

/// The raw offset a bound names for one partition; `fallback` for partitions an offset
/// list does not name, and when there is no bound.
fn resolve(
    consumer: &BaseConsumer<IngestContext>,
    topic: &str,
    partition: i32,
    bound: Option<&Bound>,
    fallback: &Bound,
) -> Result<i64, KafkaIngestError> {
    let bound = bound.unwrap_or(fallback);
    let failed = |what: &'static str| {
        move |source| KafkaIngestError::Offsets {
            what,
            topic: topic.to_string(),
            partition,
            source,
        }
    };
    let end = || {
        consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .map(|(_, high)| high)
            .map_err(failed("read the end"))
    };
    match bound {
        Bound::Earliest => Ok(Offset::Beginning.to_raw().unwrap_or(-2)),
        Bound::Latest => end(),
        Bound::Time(at) => {
            let mut wanted = TopicPartitionList::new();
            wanted
                .add_partition_offset(topic, partition, Offset::Offset(*at as i64))
                .map_err(failed("look up the offsets"))?;
            let found = consumer
                .offsets_for_times(wanted, Duration::from_secs(10))
                .map_err(failed("find the offset at that time"))?;
            match found.find_partition(topic, partition).map(|p| p.offset()) {
                Some(Offset::Offset(offset)) => Ok(offset),
                // No message at or after that time: the end.
                _ => end(),
            }
        }
        Bound::Offsets(offsets) => match offsets.get(&(topic.to_string(), partition)) {
            Some(offset) => Ok(*offset),
            None if matches!(fallback, Bound::Offsets(_)) => end(),
            None => resolve(consumer, topic, partition, None, fallback),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(newest: Option<Millis>, idle: bool) -> PartitionView {
        PartitionView { newest, idle }
    }

    #[test]
    fn active_partitions_hold_the_frontier_idle_ones_do_not() {
        // The slowest active partition decides, less the lateness.
        assert_eq!(
            worker_view([view(Some(1_000), false), view(Some(5_000), false)], 100),
            (Some(900), 0)
        );
        // One that has delivered nothing yet holds everything at 0.
        assert_eq!(
            worker_view([view(None, false), view(Some(5_000), false)], 0),
            (Some(0), 0)
        );
        // Idle partitions do not hold the frontier back, whatever their position.
        assert_eq!(
            worker_view([view(Some(10), true), view(Some(5_000), false)], 0),
            (Some(5_000), 11)
        );
        assert_eq!(worker_view([view(Some(10), true), view(None, true)], 0), (None, 11));
        assert_eq!(worker_view([], 0), (None, 0));
    }

    #[test]
    fn a_partition_of_garbage_or_stale_events_stops_holding_the_frontier() {
        let idle_after = Duration::from_millis(100);
        let at = |done, at_confirmed_end, since_message: u64, since_progress: u64| PartitionActivity {
            done,
            at_confirmed_end,
            since_message: Duration::from_millis(since_message),
            since_progress: Duration::from_millis(since_progress),
        };
        // Busy and moving forward: holds the frontier.
        assert!(!partition_idle(at(false, false, 1, 1), idle_after));
        // Busy for 10 s with messages that move nothing (invalid, or older than its newest):
        // it no longer freezes the engine.
        assert!(!partition_idle(at(false, false, 1, 9_999), idle_after));
        assert!(partition_idle(at(false, false, 1, 10_000), idle_after));
        // Silent without an end of partition (a broker away): it holds, however long.
        assert!(!partition_idle(at(false, false, 60_000, 60_000), idle_after));
        // At a confirmed end and quiet: idle; an end not confirmed since an outage is not.
        assert!(partition_idle(at(false, true, 100, 100), idle_after));
        assert!(!partition_idle(at(false, false, 100, 100), idle_after));
        assert!(partition_idle(at(true, false, 0, 0), idle_after));
    }

    #[test]
    fn unread_counts_from_the_next_offset_or_the_log_start() {
        assert_eq!(unread(100, 40, -1001, 0), Some(60));
        assert_eq!(unread(100, 40, 90, 0), Some(60), "the application's offset first");
        assert_eq!(unread(100, -1, -1001, 10), Some(90), "nothing fetched or read yet");
        assert_eq!(unread(100, 100, 100, 0), Some(0));
        assert_eq!(unread(-1, 5, 5, 0), None);
        // After a restart at offset 100 of a partition that ends there: nothing unread, though
        // nothing was handed over in this process.
        assert_eq!(unread(100, -1001, 100, 0), Some(0));
        assert_eq!(unread(100, -1001, 70, 0), Some(30));
    }

    #[test]
    fn workers_without_active_partitions_follow_the_others() {
        let shared = SharedFrontier::new(3);
        // Worker 0 is active at 500; worker 1 is all idle: it follows worker 0, not its own
        // (older) idle position, and does not hold the others back.
        assert_eq!(shared.agree(0, Some(500), 0), 500);
        assert_eq!(shared.agree(2, Some(700), 0), 700);
        assert_eq!(shared.agree(1, None, 300), 500);
        // When every worker is idle, all move just past the newest event anyone has seen.
        assert_eq!(shared.agree(0, None, 900), 700, "worker 2 is still active");
        assert_eq!(shared.agree(2, None, 1_200), 1_200);
        assert_eq!(shared.agree(1, None, 300), 1_200);
    }
}
