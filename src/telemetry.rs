//! telemetry: every metric kairos exports, named in one place, and the tallies that feed
//! both `/metrics` (run mode) and `summary.json` (replay).
//!
//! Names follow `kairos_<area>_<thing>_<unit>`. No label ever carries a subscriber number.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use kairos_model::{Decision, EventKind, Verdict};
use serde::Serialize;

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
/// Events about subscribers without a customer record.
pub const WITHOUT_CUSTOMER: &str = "kairos_dataflow_events_without_customer_total";
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
/// RocksDB write batches (one per checkpoint, synced).
pub const STATE_WRITE_BATCHES: &str = "kairos_state_write_batches_total";
/// Bytes written in those batches.
pub const STATE_WRITE_BYTES: &str = "kairos_state_write_bytes_total";
/// Events applied to subscriber state by the dataflow.
pub const DATAFLOW_UPDATES: &str = "kairos_dataflow_updates_total";
/// Actions held for quiet hours right now (decided when they come due).
pub const HELD_ACTIONS: &str = "kairos_policy_held_actions";
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

/// Starts the Prometheus exporter on `listen` (serving `/metrics`) and describes the metrics.
pub fn serve_prometheus(listen: SocketAddr) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(listen)
        .install()
        .map_err(|e| format!("cannot serve metrics on {listen}: {e}"))?;
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
    metrics::describe_counter!(STATE_WRITE_BATCHES, "RocksDB write batches (one per checkpoint)");
    metrics::describe_counter!(STATE_WRITE_BYTES, "Bytes written in RocksDB write batches");
    metrics::describe_counter!(DATAFLOW_UPDATES, "Events applied to subscriber state");
    metrics::describe_gauge!(HELD_ACTIONS, "Actions held for quiet hours, decided when they come due");
    metrics::describe_gauge!(SINK_QUEUE, "Records handed to the producer, not yet acknowledged");
    metrics::describe_gauge!(
        RESTORED_SUBSCRIBERS,
        "Subscribers restored from the last checkpoint at start"
    );
    Ok(())
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
