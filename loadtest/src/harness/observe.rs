//! What comes out of the engine: every action on the action topics with its delay (the
//! record's Kafka timestamp minus the action's `moment_ts`), read as it arrives; and, once the
//! run is over, every decision and action read back for the ground truth and for duplicates.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kairos_model::time::parse_rfc3339;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::report::Percentiles;
use crate::truth::{decided_moment, Moment};

/// One action seen: when its moment happened and how long it took to reach its topic (ms).
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub moment: u64,
    pub delay_ms: f64,
    /// When the harness read it (ms since the Unix epoch).
    pub read_at: u64,
}

/// A consumer of every partition of `topics` from the beginning.
pub fn reader(brokers: &str, topics: &[&str], partitions: i32) -> Result<BaseConsumer> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "kairos-loadtest-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .context("cannot create a reader")?;
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        for p in 0..partitions {
            assignment.add_partition_offset(topic, p, Offset::Beginning)?;
        }
    }
    consumer
        .assign(&assignment)
        .context("cannot assign the output topics")?;
    Ok(consumer)
}

/// Reads the action topics until `stop`, recording each action not deferred by policy (an
/// action held for quiet hours leaves at its `send_at`, by design).
pub fn watch_actions(consumer: BaseConsumer, seen: Arc<Mutex<Vec<Seen>>>, stop: Arc<AtomicBool>) {
    #[derive(serde::Deserialize)]
    struct Action<'a> {
        moment_ts: &'a str,
        send_at: Option<&'a str>,
    }
    let mut batch = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(50)) else {
            if !batch.is_empty() {
                seen.lock().unwrap_or_else(|p| p.into_inner()).append(&mut batch);
            }
            continue;
        };
        let Some(stamp) = message.timestamp().to_millis() else {
            continue;
        };
        let Ok(action) = serde_json::from_slice::<Action>(message.payload().unwrap_or_default()) else {
            continue;
        };
        let Ok(moment) = parse_rfc3339(action.moment_ts) else {
            continue;
        };
        if action.send_at.is_some_and(|s| s != action.moment_ts) {
            continue;
        }
        batch.push(Seen {
            moment,
            delay_ms: stamp as f64 - moment as f64,
            read_at: kairos_model::time::now(),
        });
        if batch.len() >= 256 {
            seen.lock().unwrap_or_else(|p| p.into_inner()).append(&mut batch);
        }
    }
    seen.lock().unwrap_or_else(|p| p.into_inner()).append(&mut batch);
}

/// Percentiles (nearest rank) of `delays`; `None` when empty.
pub fn percentiles(delays: &mut [f64]) -> Option<Percentiles> {
    if delays.is_empty() {
        return None;
    }
    delays.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let rank = ((q * delays.len() as f64).ceil() as usize).clamp(1, delays.len());
        delays[rank - 1]
    };
    Some(Percentiles {
        count: delays.len() as u64,
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        p999: at(0.999),
        max: delays[delays.len() - 1],
    })
}

/// What the output topics held at the end of a run.
#[derive(Debug, Default)]
pub struct Outputs {
    /// Moments of the default rules among the decisions.
    pub decided: Vec<Moment>,
    pub decisions: u64,
    pub actions: u64,
    /// Action ids seen more than once.
    pub duplicate_actions: u64,
    /// Decisions (by action id) seen more than once.
    pub duplicate_decisions: u64,
}

/// Reads the decisions and action topics to their end (until nothing new for `settle`).
pub fn read_outputs(
    brokers: &str,
    decisions: &str,
    actions: &[&str],
    partitions: i32,
    settle: Duration,
) -> Result<Outputs> {
    let mut topics = vec![decisions];
    topics.extend_from_slice(actions);
    let consumer = reader(brokers, &topics, partitions)?;
    #[derive(serde::Deserialize)]
    struct Id<'a> {
        action_id: &'a str,
    }
    let mut out = Outputs::default();
    let (mut action_ids, mut decision_ids) = (HashSet::new(), HashSet::new());
    let mut quiet = Instant::now();
    while quiet.elapsed() < settle {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        quiet = Instant::now();
        let payload = message.payload().unwrap_or_default();
        let id = serde_json::from_slice::<Id>(payload).map_or(String::new(), |i| i.action_id.to_string());
        if message.topic() == decisions {
            out.decisions += 1;
            out.decided.extend(decided_moment(payload));
            if !decision_ids.insert(id) {
                out.duplicate_decisions += 1;
            }
        } else {
            out.actions += 1;
            if !action_ids.insert(id) {
                out.duplicate_actions += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut d: Vec<f64> = (1..=1000).map(f64::from).collect();
        d.reverse();
        let p = percentiles(&mut d).unwrap();
        assert_eq!(
            (p.count, p.p50, p.p90, p.p99, p.p999, p.max),
            (1000, 500.0, 900.0, 990.0, 999.0, 1000.0)
        );
        assert!(percentiles(&mut []).is_none());
        let p = percentiles(&mut [7.0]).unwrap();
        assert_eq!((p.p50, p.p999), (7.0, 7.0));
    }
}
