//! telemetry: every metric kairos exports, named in one place, and the tallies that feed
//! both `/metrics` (run mode) and `summary.json` (replay).
//!
//! Names follow `kairos_<area>_<thing>_<unit>`. No label ever carries a subscriber number.
//! `docker/grafana/dashboards/kairos.json` and `docker/prometheus/alerts.yml` read these
//! names; `tests/prometheus.rs` checks every panel and alert against a live engine.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use kairos_dataflows::DataflowStats;
use kairos_model::{Decision, EventKind, Millis, Verdict};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use serde::Serialize;

use crate::admin::{self, AdminError, Health};

/// Events read and decoded, by `type`.
pub const EVENTS_IN: &str = "kairos_ingest_events_total";
/// Messages that were not valid events (sent to the dead-letter output).
pub const INVALID_EVENTS: &str = "kairos_ingest_invalid_events_total";
/// Events that arrived after the input frontier had passed their time (still applied).
pub const LATE_EVENTS: &str = "kairos_ingest_late_events_total";
/// Messages not yet read per owned partition (high watermark − position).
pub const INPUT_LAG: &str = "kairos_ingest_lag_messages";
/// Wall clock minus the input frontier (event time), per worker.
pub const EVENT_TIME_LAG: &str = "kairos_ingest_event_time_lag_seconds";
/// Actions sent, by rule and channel.
pub const ACTIONS_OUT: &str = "kairos_sink_actions_total";
/// Moments suppressed by policy, by rule and reason.
pub const SUPPRESSED: &str = "kairos_policy_suppressed_total";
/// Records that could not be delivered by a sink.
pub const SINK_ERRORS: &str = "kairos_sink_delivery_errors_total";
/// Moments detected (before policy).
pub const MOMENTS: &str = "kairos_dataflow_moments_total";
/// Moments found again by a second event (same rule, subscriber, instant, key): judged once.
pub const MOMENTS_REPEATED: &str = "kairos_dataflow_moments_repeated_total";
/// States of non-customers forgotten after `forget_non_customers_after_ms` without events.
pub const FORGOTTEN: &str = "kairos_dataflow_non_customers_forgotten_total";
/// Events about subscribers without a customer record.
pub const WITHOUT_CUSTOMER: &str = "kairos_dataflow_events_without_customer_total";
/// Events about erased subscribers (they build no state).
pub const FOR_ERASED: &str = "kairos_dataflow_events_for_erased_total";
/// Erasures applied (their traces removed from every other subscriber's state).
pub const ERASURES: &str = "kairos_dataflow_erasures_total";
/// Customer records older than the one in force (ignored, contract §1).
pub const STALE_CUSTOMER_RECORDS: &str = "kairos_dataflow_stale_customer_records_total";
/// Rule conditions that failed to evaluate (counted as not holding).
pub const CONDITION_ERRORS: &str = "kairos_dataflow_condition_errors_total";
/// Checkpoints written.
pub const CHECKPOINTS: &str = "kairos_state_checkpoints_total";
/// Subscriber states written by checkpoints.
pub const CHECKPOINT_SUBSCRIBERS: &str = "kairos_state_checkpoint_subscribers_total";
/// How long writing a checkpoint took (flush + write).
pub const CHECKPOINT_SECONDS: &str = "kairos_state_checkpoint_seconds";
/// Checkpoints that could not be written (retried).
pub const CHECKPOINT_ERRORS: &str = "kairos_state_checkpoint_errors_total";
/// Events read by a worker and not yet decided (waiting for the frontier to pass them).
pub const WAITING_EVENTS: &str = "kairos_ingest_waiting_events";
/// Partitions a worker does not read because its waiting events reached the bound.
pub const PAUSED_PARTITIONS: &str = "kairos_ingest_paused_partitions";
/// Restarts of the engine from its last checkpoint within the process, by `reason`
/// (`delivery`: a record was not delivered; `kafka`: the brokers could not be reached at start).
pub const ENGINE_RESTARTS: &str = "kairos_engine_restarts_total";
/// RocksDB write batches (one per checkpoint, synced).
pub const STATE_WRITE_BATCHES: &str = "kairos_state_write_batches_total";
/// Bytes written in those batches.
pub const STATE_WRITE_BYTES: &str = "kairos_state_write_bytes_total";
/// Stored subscriber values that did not decode at start, moved aside to the quarantine
/// prefix (`src/state/mod.rs`): those subscribers started from empty state, the rest loaded.
pub const STATE_QUARANTINED: &str = "kairos_state_quarantined_total";
/// Compactions of the state store after a checkpoint that erased subscribers.
pub const STATE_ERASURE_COMPACTIONS: &str = "kairos_state_erasure_compactions_total";
/// Events applied to subscriber state by the dataflow.
pub const DATAFLOW_UPDATES: &str = "kairos_dataflow_updates_total";
/// Actions held for quiet hours right now (decided when they come due).
pub const HELD_ACTIONS: &str = "kairos_policy_held_actions";
pub const HOUSEHOLDS_SPLIT: &str = "kairos_households_split_members";
/// Records handed to the producer and not yet acknowledged by the brokers.
pub const SINK_QUEUE: &str = "kairos_sink_queue_depth";
/// Subscribers restored at start.
pub const RESTORED_SUBSCRIBERS: &str = "kairos_state_restored_subscribers";
/// Rule sets put in force by a live change.
pub const RULE_CHANGES: &str = "kairos_rules_changes_total";
/// Changed rule sets that did not check (the running set stayed in force).
pub const RULE_REJECTIONS: &str = "kairos_rules_rejected_total";
/// Rules in force.
pub const RULES_IN_FORCE: &str = "kairos_rules_in_force";
/// 1 for the version (folder fingerprint or published version) of the rule set in force, 0
/// for the versions it replaced.
pub const RULES_INFO: &str = "kairos_rules_info";
/// Wall clock at production minus the moment's event time (or, for an action held for quiet
/// hours, its `send_at`), by rule class.
pub const EVENT_TO_ACTION: &str = "kairos_sink_event_to_action_seconds";
/// Wall clock minus the Kafka timestamp of the last message read, per worker, while its
/// partitions have unread messages (0 when caught up): how far behind the engine reads.
pub const INPUT_LAG_SECONDS: &str = "kairos_ingest_lag_seconds";
/// The input frontier minus the wall clock, per worker (0 unless event time runs ahead:
/// a clock far in the future in some input).
pub const FRONTIER_AHEAD: &str = "kairos_ingest_frontier_ahead_seconds";
/// When the last checkpoint was written, or the process started (Unix seconds): its age is
/// `time() - this`.
pub const LAST_CHECKPOINT: &str = "kairos_state_last_checkpoint_timestamp_seconds";
/// How long the last checkpoint took to write.
pub const LAST_CHECKPOINT_SECONDS: &str = "kairos_state_last_checkpoint_duration_seconds";
/// Keys in the state store (RocksDB's estimate): about one per subscriber.
pub const STORE_KEYS: &str = "kairos_state_store_keys";
/// Bytes of the state store on disk (SST files) and in memory (memtables).
pub const STORE_BYTES: &str = "kairos_state_store_bytes";
/// Resident memory of the process.
pub const RESIDENT_MEMORY: &str = "kairos_process_resident_memory_bytes";
/// When the process started (Unix seconds): `changes()` of it counts restarts.
pub const START_TIME: &str = "kairos_process_start_time_seconds";
/// Whether the engine is ready (`/readyz`): 1 or 0.
pub const READY: &str = "kairos_ready";

/// Buckets of [`EVENT_TO_ACTION`] (seconds): the triggered path's target is p99 ≤ 1 s, and
/// the brief allows minutes for some moments.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Buckets of [`CHECKPOINT_SECONDS`].
const CHECKPOINT_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Serves `/metrics`, `/healthz` and `/readyz` on `listen` (see `admin.rs`) and describes
/// the metrics; the returned [`Health`] is where the engine says how far it has started.
pub fn serve(listen: SocketAddr, workers: usize) -> Result<Arc<Health>, AdminError> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(EVENT_TO_ACTION.into()), LATENCY_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(CHECKPOINT_SECONDS.into()), CHECKPOINT_BUCKETS))
        .map_err(|e| AdminError::Recorder(e.to_string()))?;
    let health = Arc::new(Health::new(workers));
    admin::serve(listen, recorder, Arc::clone(&health))?;
    describe();
    // Counters of rare events exist from the start (at 0), so that a dashboard or an alert
    // reading them has a series before the first error, not "no data".
    for name in [
        SINK_ERRORS,
        CHECKPOINT_ERRORS,
        RULE_CHANGES,
        RULE_REJECTIONS,
        INVALID_EVENTS,
        LATE_EVENTS,
        CHECKPOINTS,
        STATE_QUARANTINED,
    ] {
        metrics::counter!(name).absolute(0);
    }
    for reason in ["delivery", "kafka"] {
        metrics::counter!(ENGINE_RESTARTS, "reason" => reason).absolute(0);
    }
    let started = unix_seconds();
    metrics::gauge!(START_TIME).set(started);
    // Nothing is owed a checkpoint from before the process started: the age counts from then.
    metrics::gauge!(LAST_CHECKPOINT).set(started);
    metrics::gauge!(READY).set(0.0);
    Ok(health)
}

fn unix_seconds() -> f64 {
    kairos_model::time::now() as f64 / 1000.0
}

/// Describes every metric (the `# HELP` lines of `/metrics`).
fn describe() {
    metrics::describe_counter!(EVENTS_IN, "Events read and decoded, by type");
    metrics::describe_counter!(INVALID_EVENTS, "Messages that were not valid events (dead-lettered)");
    metrics::describe_counter!(
        LATE_EVENTS,
        "Events older than the input frontier when read (still applied)"
    );
    metrics::describe_gauge!(INPUT_LAG, "Messages not yet read, per owned input partition");
    metrics::describe_gauge!(EVENT_TIME_LAG, "Wall clock minus the input frontier, per worker");
    metrics::describe_counter!(ACTIONS_OUT, "Actions sent, by rule and channel");
    metrics::describe_counter!(SUPPRESSED, "Moments suppressed by contact policy, by rule and reason");
    metrics::describe_counter!(SINK_ERRORS, "Records a sink failed to deliver");
    metrics::describe_counter!(RULE_CHANGES, "Rule sets put in force by a live change");
    metrics::describe_counter!(
        RULE_REJECTIONS,
        "Changed rule sets that did not check (the running set stayed in force)"
    );
    metrics::describe_gauge!(RULES_IN_FORCE, "Rules in force");
    metrics::describe_counter!(MOMENTS, "Moments detected before policy");
    metrics::describe_counter!(WITHOUT_CUSTOMER, "Events about subscribers without a customer record");
    metrics::describe_counter!(FOR_ERASED, "Events about erased subscribers (they build no state)");
    metrics::describe_counter!(
        MOMENTS_REPEATED,
        "Moments found again by another event (same rule, subscriber, instant and key): judged once"
    );
    metrics::describe_counter!(
        FORGOTTEN,
        "States of numbers without a customer record forgotten after forget_non_customers_after_ms without events"
    );
    metrics::describe_counter!(
        ERASURES,
        "Erasures applied to every worker's states (evidence, keys and views naming the number removed)"
    );
    metrics::describe_counter!(
        STALE_CUSTOMER_RECORDS,
        "Customer records older than the one in force (ignored)"
    );
    metrics::describe_counter!(
        CONDITION_ERRORS,
        "Rule conditions that failed to evaluate (counted as not holding)"
    );
    metrics::describe_counter!(CHECKPOINTS, "Checkpoints written");
    metrics::describe_counter!(CHECKPOINT_SUBSCRIBERS, "Subscriber states written by checkpoints");
    metrics::describe_histogram!(CHECKPOINT_SECONDS, "Time to flush outputs and write a checkpoint");
    metrics::describe_counter!(CHECKPOINT_ERRORS, "Checkpoints that could not be written (retried)");
    metrics::describe_gauge!(
        WAITING_EVENTS,
        "Events read by a worker and not yet decided (waiting for the frontier)"
    );
    metrics::describe_gauge!(
        PAUSED_PARTITIONS,
        "Partitions not read because the worker's waiting events reached [engine] max_waiting_events"
    );
    metrics::describe_counter!(
        ENGINE_RESTARTS,
        "Restarts from the last checkpoint within the process, by reason (delivery, kafka)"
    );
    metrics::describe_counter!(STATE_WRITE_BATCHES, "RocksDB write batches (one per checkpoint)");
    metrics::describe_counter!(STATE_WRITE_BYTES, "Bytes written in RocksDB write batches");
    metrics::describe_counter!(
        STATE_QUARANTINED,
        "Stored subscriber values that did not decode at start, quarantined (those subscribers started empty)"
    );
    metrics::describe_counter!(
        STATE_ERASURE_COMPACTIONS,
        "Full compactions of the state store after a checkpoint that erased subscribers"
    );
    metrics::describe_counter!(DATAFLOW_UPDATES, "Events applied to subscriber state");
    metrics::describe_gauge!(HELD_ACTIONS, "Actions held for quiet hours, decided when they come due");
    metrics::describe_gauge!(
        HOUSEHOLDS_SPLIT,
        "Subscribers whose component of household links was above max_household and was split"
    );
    metrics::describe_gauge!(SINK_QUEUE, "Records handed to the producer, not yet acknowledged");
    metrics::describe_gauge!(
        RESTORED_SUBSCRIBERS,
        "Subscribers restored from the last checkpoint at start"
    );
    metrics::describe_gauge!(RULES_INFO, "1 for the version of the rule set in force");
    metrics::describe_histogram!(
        EVENT_TO_ACTION,
        "Wall clock at production minus the moment's event time (or send_at when held), by rule class"
    );
    metrics::describe_gauge!(
        INPUT_LAG_SECONDS,
        "Wall clock minus the Kafka timestamp of the last message read, while behind, per worker"
    );
    metrics::describe_gauge!(
        FRONTIER_AHEAD,
        "Input frontier minus wall clock, per worker (0 unless ahead)"
    );
    metrics::describe_gauge!(LAST_CHECKPOINT, "When the last checkpoint was written (Unix seconds)");
    metrics::describe_gauge!(LAST_CHECKPOINT_SECONDS, "How long the last checkpoint took to write");
    metrics::describe_gauge!(
        STORE_KEYS,
        "Keys in the state store (estimate; about one per subscriber)"
    );
    metrics::describe_gauge!(STORE_BYTES, "Bytes of the state store (SST files and memtables)");
    metrics::describe_gauge!(RESIDENT_MEMORY, "Resident memory of the process");
    metrics::describe_gauge!(START_TIME, "When the process started (Unix seconds)");
    metrics::describe_gauge!(READY, "1 when /readyz says ready");
}

/// The rule set in force is now `version`, of `rules` rules; the version it replaced (if
/// any, and another) drops to 0.
pub fn rules_in_force(replaced: Option<&str>, version: &str, rules: usize) {
    if let Some(old) = replaced.filter(|old| *old != version) {
        metrics::gauge!(RULES_INFO, "version" => old.to_string()).set(0.0);
    }
    metrics::gauge!(RULES_INFO, "version" => version.to_string()).set(1.0);
    metrics::gauge!(RULES_IN_FORCE).set(rules as f64);
}

/// A worker's frontier against the wall clock `now`, and how far behind its input it reads.
pub fn worker_position(
    worker: usize,
    frontier: Millis,
    now: Millis,
    input_lag_seconds: f64,
    (waiting, paused): (u64, usize),
) {
    let worker = worker.to_string();
    metrics::gauge!(WAITING_EVENTS, "worker" => worker.clone()).set(waiting as f64);
    metrics::gauge!(PAUSED_PARTITIONS, "worker" => worker.clone()).set(paused as f64);
    metrics::gauge!(EVENT_TIME_LAG, "worker" => worker.clone()).set(now.saturating_sub(frontier) as f64 / 1000.0);
    metrics::gauge!(FRONTIER_AHEAD, "worker" => worker.clone()).set(frontier.saturating_sub(now) as f64 / 1000.0);
    metrics::gauge!(INPUT_LAG_SECONDS, "worker" => worker).set(input_lag_seconds);
}

/// The dataflow's counters, and the process's memory (worker 0, once a second).
pub fn dataflow_stats(stats: &DataflowStats) {
    metrics::counter!(MOMENTS).absolute(stats.moments.load(Ordering::Relaxed));
    metrics::counter!(MOMENTS_REPEATED).absolute(stats.moments_repeated.load(Ordering::Relaxed));
    metrics::counter!(FORGOTTEN).absolute(stats.forgotten.load(Ordering::Relaxed));
    metrics::counter!(WITHOUT_CUSTOMER).absolute(stats.events_without_customer.load(Ordering::Relaxed));
    metrics::counter!(FOR_ERASED).absolute(stats.events_for_erased.load(Ordering::Relaxed));
    metrics::counter!(ERASURES).absolute(stats.erasures.load(Ordering::Relaxed));
    metrics::counter!(STALE_CUSTOMER_RECORDS).absolute(stats.stale_customer_records.load(Ordering::Relaxed));
    metrics::counter!(CONDITION_ERRORS).absolute(stats.condition_errors.load(Ordering::Relaxed));
    metrics::counter!(DATAFLOW_UPDATES).absolute(stats.updates.load(Ordering::Relaxed));
    metrics::gauge!(HELD_ACTIONS).set(stats.held.load(Ordering::Relaxed) as f64);
    let split = stats.households_split.load(Ordering::Relaxed);
    metrics::gauge!(HOUSEHOLDS_SPLIT).set(split as f64);
    // Logged when it grows: links that join too many are wrong links worth a look.
    static SPLIT_LOGGED: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let before = SPLIT_LOGGED.swap(split, Ordering::Relaxed);
    if split > before {
        tracing::warn!(
            members = split,
            before,
            "households above max_household were split: their call links, then their soft links, dropped"
        );
    }
    if let Some(bytes) = resident_bytes() {
        metrics::gauge!(RESIDENT_MEMORY).set(bytes as f64);
    }
}

/// A checkpoint was written in `seconds`.
pub fn checkpoint_written(seconds: f64, subscribers: usize) {
    metrics::counter!(CHECKPOINTS).increment(1);
    metrics::counter!(CHECKPOINT_SUBSCRIBERS).increment(subscribers as u64);
    metrics::histogram!(CHECKPOINT_SECONDS).record(seconds);
    metrics::gauge!(LAST_CHECKPOINT_SECONDS).set(seconds);
    metrics::gauge!(LAST_CHECKPOINT).set(unix_seconds());
}

/// Resident memory of this process, from `/proc/self/status` (Linux).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The event → action latency of a produced action, by its rule's class (wall clock `now`).
pub fn action_latency(decision: &Decision, now: Millis) {
    let due = decision.action.moment_ts.max(decision.action.send_at);
    metrics::histogram!(EVENT_TO_ACTION, "class" => decision.class.as_str())
        .record(now.saturating_sub(due) as f64 / 1000.0);
}

/// What one worker's ingest saw since the last [`IngestTally::publish`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IngestTally {
    pub events: [u64; 6],
    pub invalid: u64,
    pub late: u64,
}

impl IngestTally {
    /// Counts one valid event.
    pub fn event(&mut self, kind: EventKind, late: bool) {
        self.events[kind as usize] += 1;
        self.late += u64::from(late);
    }

    /// Adds another tally into this one.
    pub fn merge(&mut self, other: &IngestTally) {
        for (mine, theirs) in self.events.iter_mut().zip(other.events) {
            *mine += theirs;
        }
        self.invalid += other.invalid;
        self.late += other.late;
    }

    /// Total valid events.
    pub fn valid(&self) -> u64 {
        self.events.iter().sum()
    }

    /// Adds the tally to the exported counters and resets it.
    pub fn publish(&mut self) {
        for kind in EventKind::ALL {
            let n = self.events[kind as usize];
            if n > 0 {
                metrics::counter!(EVENTS_IN, "type" => kind.as_str()).increment(n);
            }
        }
        if self.invalid > 0 {
            metrics::counter!(INVALID_EVENTS).increment(self.invalid);
        }
        if self.late > 0 {
            metrics::counter!(LATE_EVENTS).increment(self.late);
        }
        *self = IngestTally::default();
    }

    /// Events by type name, for reports.
    pub fn by_type(&self) -> BTreeMap<&'static str, u64> {
        EventKind::ALL
            .iter()
            .map(|k| (k.as_str(), self.events[*k as usize]))
            .collect()
    }
}

/// Counts a decision in the exported counters.
pub fn record_decision(decision: &Decision) {
    let action = &decision.action;
    match decision.verdict {
        Verdict::Sent => {
            metrics::counter!(ACTIONS_OUT, "rule" => action.rule.clone(), "channel" => action.channel.as_str())
                .increment(1)
        }
        Verdict::Suppressed(reason) => {
            metrics::counter!(SUPPRESSED, "rule" => action.rule.clone(), "reason" => reason.as_str()).increment(1)
        }
    }
}
