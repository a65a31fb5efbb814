//! The generator as a Kafka producer: a seeded world held in memory, sent open-loop at a
//! target rate that follows a schedule, each event stamped with the time it is sent (so event
//! time is "now" and an action's delay is its Kafka timestamp minus its `moment_ts`). The
//! activity of the world's day is sent round and round; its customer records go first. The
//! ground truth walks the events as they are sent, with the times they were given.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::households::{HouseholdSpec, Population};
use crate::truth::{Moment, Parsed, Truth};
use crate::world::{self, WorldSpec};

/// One event line, ready to be restamped and sent.
struct Line {
    text: Box<[u8]>,
    /// Where the 24 bytes of its `ts` value start (`2026-07-01T00:00:00.000Z`).
    ts_at: Option<usize>,
    /// The subscriber (the message key); `None` for the planted invalid lines.
    parsed: Option<Parsed>,
}

impl Line {
    fn new(text: &str) -> Line {
        let ts_at = text
            .find("\"ts\":\"")
            .map(|i| i + 6)
            .filter(|i| text.len() >= i + 24 && text.as_bytes()[i + 23] == b'Z');
        Line {
            text: text.as_bytes().into(),
            ts_at,
            parsed: Parsed::from_line(text),
        }
    }
}

/// A world in memory: customer records, then one day of activity.
pub struct World {
    customers: Vec<Line>,
    activity: Vec<Line>,
}

impl World {
    /// Generates the world of `spec` (with households when `households`).
    pub fn generate(spec: &WorldSpec, households: bool) -> World {
        let population = households.then(|| Population::build(spec, &HouseholdSpec::default()));
        let mut customers = Vec::new();
        let mut activity = Vec::new();
        let start = spec.start.and_hms_opt(0, 0, 0).expect("midnight");
        let first = chrono::TimeZone::from_utc_datetime(&chrono::Utc, &start).timestamp_millis() as u64;
        world::generate_population(spec, population.as_ref(), |text| {
            let line = Line::new(text);
            // The opening records of every subscriber; later ones (hand-downs) are activity.
            let opening = line
                .parsed
                .as_ref()
                .is_some_and(|p| p.rank() == 0 && p.ts == first && activity.is_empty());
            if opening {
                customers.push(line);
            } else {
                activity.push(line);
            }
        });
        World { customers, activity }
    }

    pub fn customers(&self) -> usize {
        self.customers.len()
    }

    pub fn activity(&self) -> usize {
        self.activity.len()
    }

    /// The subscriber of the `i`-th customer record (wrapping), when there is one.
    pub fn msisdn(&self, i: usize) -> Option<&str> {
        let line = self.customers.get(i % self.customers.len().max(1))?;
        line.parsed.as_ref().map(|p| p.msisdn.as_str())
    }
}

/// A stretch of the load at one rate.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    /// Events per second.
    pub rate: f64,
    pub secs: f64,
}

/// Counters the producer shares with the observer.
#[derive(Default)]
pub struct FeedCounters {
    /// Events handed to the producer.
    pub sent: AtomicU64,
    /// Set by the producer when the schedule is done; set by others to stop it early.
    pub done: AtomicBool,
    /// Microseconds the producer fell behind its schedule, at most (open loop: it never
    /// waits for the engine, only for its own local queue).
    pub behind_us: AtomicU64,
    /// Set by others to hold the producer (a broker about to go away): it flushes what it
    /// sent, sets `holding`, and sends nothing until `hold` is cleared. The time held is
    /// taken out of the schedule (nothing is due for it), as the network elements' own
    /// buffers would not be emptied faster than event time once the broker is back.
    pub hold: AtomicBool,
    /// Set by the producer while it holds, everything sent before delivered.
    pub holding: AtomicBool,
}

/// The producer, sending into one topic keyed by msisdn.
pub struct Feed {
    producer: BaseProducer,
    topic: String,
    world: Arc<World>,
    next: usize,
    truth: Truth,
    last_ts: u64,
    stamp: Stamp,
    buffer: Vec<u8>,
    /// Every line sent, as sent (restamped), one per line: the input of the replay a
    /// fault campaign compares with.
    record: Option<std::io::BufWriter<std::fs::File>>,
}

impl Feed {
    pub fn new(brokers: &str, topic: &str, world: Arc<World>) -> Result<Feed> {
        Feed::with_producer(brokers, topic, world, false)
    }

    /// A feed whose producer neither loses, repeats nor reorders a record through broker
    /// restarts (idempotent, `acks=all`, retried without a deadline), so that what it sent is
    /// exactly what the input topic holds — what a fault campaign needs to compare the run
    /// with a replay of the same input.
    pub fn reliable(brokers: &str, topic: &str, world: Arc<World>) -> Result<Feed> {
        Feed::with_producer(brokers, topic, world, true)
    }

    fn with_producer(brokers: &str, topic: &str, world: Arc<World>, reliable: bool) -> Result<Feed> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("client.id", "kairos-loadtest")
            .set("linger.ms", "5")
            .set("batch.size", "1000000")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "2000000")
            .set("queue.buffering.max.kbytes", "1048576");
        if reliable {
            config.set("enable.idempotence", "true").set("message.timeout.ms", "0");
        } else {
            config.set("acks", "1");
        }
        let producer: BaseProducer = config.create().context("cannot create the load producer")?;
        Ok(Feed {
            producer,
            topic: topic.to_string(),
            world,
            next: 0,
            truth: Truth::new(),
            last_ts: 0,
            stamp: Stamp::default(),
            buffer: Vec::with_capacity(1024),
            record: None,
        })
    }

    /// Writes every line sent from now on into `path` (JSON Lines, as sent).
    pub fn record_to(&mut self, path: &std::path::Path) -> Result<()> {
        let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        self.record = Some(std::io::BufWriter::new(file));
        Ok(())
    }

    /// The newest `ts` sent so far.
    pub fn newest(&self) -> u64 {
        self.last_ts
    }

    /// Sends every customer record now, as fast as the producer takes them; returns how many.
    pub fn send_customers(&mut self, counters: &FeedCounters) -> Result<u64> {
        let world = Arc::clone(&self.world);
        for line in &world.customers {
            self.send(line, kairos_model::time::now())?;
            counters.sent.fetch_add(1, Ordering::Relaxed);
        }
        self.flush();
        Ok(world.customers.len() as u64)
    }

    /// Sends the activity on `schedule`, open loop, until it ends or `counters.done` is set.
    pub fn run(&mut self, schedule: &[Step], counters: &FeedCounters) -> Result<()> {
        let world = Arc::clone(&self.world);
        let begun = Instant::now();
        let mut sent_here = 0u64;
        let total: f64 = schedule.iter().map(|s| s.secs).sum();
        let mut held = Duration::ZERO;
        loop {
            if counters.hold.load(Ordering::SeqCst) {
                // The wait for the flush is held time too (a broker already away makes it
                // last its whole timeout): not counting it once made the feed send a minute
                // of load at one instant when released.
                let since = Instant::now();
                self.flush();
                counters.holding.store(true, Ordering::SeqCst);
                while counters.hold.load(Ordering::SeqCst) && !counters.done.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                held += since.elapsed();
                counters.holding.store(false, Ordering::SeqCst);
            }
            let elapsed = begun.elapsed().saturating_sub(held).as_secs_f64();
            if elapsed >= total || counters.done.load(Ordering::Relaxed) {
                break;
            }
            let due = due_by(schedule, elapsed) as u64;
            if due > sent_here {
                let lag = (due - sent_here) as f64 / rate_at(schedule, elapsed).max(1.0);
                counters.behind_us.fetch_max((lag * 1e6) as u64, Ordering::Relaxed);
            }
            let now = kairos_model::time::now();
            while sent_here < due {
                let line = &world.activity[self.next % world.activity.len()];
                self.next += 1;
                self.send(line, now)?;
                sent_here += 1;
                counters.sent.fetch_add(1, Ordering::Relaxed);
                if sent_here.is_multiple_of(4096) {
                    self.producer.poll(Duration::ZERO);
                }
            }
            self.producer.poll(Duration::ZERO);
            std::thread::sleep(Duration::from_micros(500));
        }
        self.flush();
        if let Some(record) = &mut self.record {
            record.flush().context("cannot write the record of what was sent")?;
        }
        counters.done.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn send(&mut self, line: &Line, ts: u64) -> Result<()> {
        let ts = ts.max(self.last_ts);
        self.last_ts = ts;
        self.buffer.clear();
        self.buffer.extend_from_slice(&line.text);
        if let Some(at) = line.ts_at {
            self.buffer[at..at + 24].copy_from_slice(self.stamp.of(ts));
        }
        let key = line.parsed.as_ref().map_or("", |p| p.msisdn.as_str());
        if let Some(p) = &line.parsed {
            self.truth.observe(&p.msisdn, ts, &p.planted);
        }
        if let Some(record) = &mut self.record {
            record
                .write_all(&self.buffer)
                .and_then(|()| record.write_all(b"\n"))
                .context("cannot write the record of what was sent")?;
        }
        loop {
            let record = BaseRecord::<str, [u8]>::to(&self.topic).key(key).payload(&self.buffer);
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    self.producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e).context("cannot send a load event"),
            }
        }
    }

    fn flush(&mut self) {
        let _ = self.producer.flush(Duration::from_secs(60));
    }

    /// The moments planted by what was sent (handset moments due by the newest event sent).
    pub fn truth(self) -> Vec<Moment> {
        let end = self.last_ts;
        self.truth.finish(end)
    }
}

/// Events due by `elapsed` seconds into `schedule`.
pub fn due_by(schedule: &[Step], elapsed: f64) -> f64 {
    let mut due = 0.0;
    let mut start = 0.0;
    for step in schedule {
        let within = (elapsed - start).clamp(0.0, step.secs);
        due += within * step.rate;
        start += step.secs;
    }
    due
}

/// The target rate at `elapsed` seconds into `schedule`.
pub fn rate_at(schedule: &[Step], elapsed: f64) -> f64 {
    let mut start = 0.0;
    for step in schedule {
        if elapsed < start + step.secs {
            return step.rate;
        }
        start += step.secs;
    }
    0.0
}

/// RFC 3339 of a millisecond, cached (events sent in the same millisecond share it).
#[derive(Default)]
struct Stamp {
    ms: u64,
    text: [u8; 24],
}

impl Stamp {
    fn of(&mut self, ms: u64) -> &[u8; 24] {
        if ms != self.ms || self.text[0] == 0 {
            let t = chrono::DateTime::from_timestamp_millis(ms as i64).unwrap_or_default();
            let text = t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
            self.text.copy_from_slice(&text.as_bytes()[..24]);
            self.ms = ms;
        }
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_integrates_its_rates() {
        let s = [
            Step {
                name: "a".into(),
                rate: 100.0,
                secs: 10.0,
            },
            Step {
                name: "b".into(),
                rate: 300.0,
                secs: 5.0,
            },
        ];
        assert_eq!(due_by(&s, 0.0), 0.0);
        assert_eq!(due_by(&s, 5.0), 500.0);
        assert_eq!(due_by(&s, 12.0), 1000.0 + 600.0);
        assert_eq!(due_by(&s, 99.0), 2500.0);
        assert_eq!(rate_at(&s, 10.5), 300.0);
        assert_eq!(rate_at(&s, 15.0), 0.0);
    }

    #[test]
    fn lines_are_restamped_in_place() {
        let line = Line::new(
            r#"{"msisdn":"351910000001","ts":"2026-07-01T00:00:00.000Z","type":"network","event":"attach","country":"PT"}"#,
        );
        let at = line.ts_at.unwrap();
        let mut stamp = Stamp::default();
        let mut text = line.text.to_vec();
        text[at..at + 24].copy_from_slice(stamp.of(1_790_000_000_123));
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains(r#""ts":"2026-09-21T14:13:20.123Z""#), "{text}");
        assert_eq!(Parsed::from_line(&text).unwrap().ts, 1_790_000_000_123);
        assert!(Line::new("not json").ts_at.is_none());
    }

    #[test]
    fn a_world_splits_into_opening_records_and_activity() {
        let spec = WorldSpec {
            subscribers: 30,
            days: 1,
            start: chrono::NaiveDate::from_ymd_opt(2026, 7, 1).unwrap(),
            seed: 3,
            events_per_day: 10,
            travel_rate: 0.2,
            invalid_rate: 0.01,
            duplicate_rate: 0.0,
        };
        let w = World::generate(&spec, true);
        assert_eq!(w.customers(), 30);
        assert!(w.activity() > 100);
    }
}
