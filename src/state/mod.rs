//! state: the durable copy of the engine's state in RocksDB — subscriber states, the events
//! waiting at the checkpoint, the input positions that produced them and the output
//! progress — written as one `WriteBatch` per checkpoint (by `writer.rs`, when the
//! coordinator in `coordinator.rs` has agreed its instant), and read back on restart.
//!
//! Layout (every key and value is versioned, so a later release can migrate them):
//!
//! | key | value |
//! |---|---|
//! | `v` | format version (`u32`, big-endian) |
//! | `s` + msisdn (`u64` BE) | `0x01` + bincode of the `SubscriberState` |
//! | `m:checkpoint` | `0x01` + bincode of [`CheckpointMeta`] |
//! | `m:waiting` | `0x01` + bincode of the waiting events |
//! | `m:rules` | `0x01` + bincode of the [`RulesRecord`]: the rule sets in force from the checkpoint's instant on |
//! | `q` + the rest of a bad `s` key | a subscriber value that did not decode at start, as it was stored |
//!
//! A deleted subscriber keeps its (tiny) tombstone state, so an older record arriving later
//! cannot bring it back.
//!
//! **Bad stored values.** Values are decoded with a size limit ([`SUBSCRIBER_VALUE_LIMIT`],
//! [`CHECKPOINT_VALUE_LIMIT`]): a corrupt length makes the value corrupt instead of making
//! bincode allocate whatever it claims (and the process abort). A subscriber value that does
//! not decode is *quarantined* at start: moved, bytes unchanged, from its `s` key to the same
//! key under `q` (one synced write), counted in `kairos_state_quarantined_total` and logged
//! without the number (the number only at debug level); that subscriber starts from empty
//! state, the others load, and the next start does not see it again. The `q` keys are never
//! read by kairos: they are kept for whoever investigates, and may be deleted. A corrupt
//! `m:checkpoint` or `m:waiting` is different — without them kairos cannot know where its
//! inputs resume — so it stops start with an error that says what to do.

pub mod coordinator;
pub mod stored;
pub mod writer;

use std::path::{Path, PathBuf};

use kairos_dataflows::state::SubscriberState;
use kairos_model::{Event, Millis, Msisdn};
use rocksdb::{Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::rules::history::RulesRecord;

/// The version of the on-disk layout, raised whenever a stored type changes. 2:
/// `SubscriberState` gained `previous_country`; 3: its contact history (held actions, caps).
pub const FORMAT_VERSION: u32 = 3;
/// The version byte in front of every value.
const VALUE_VERSION: u8 = 1;
const SUBSCRIBER_PREFIX: u8 = b's';
/// Where a subscriber value that did not decode is moved (never loaded).
const QUARANTINE_PREFIX: u8 = b'q';
/// The most bytes a subscriber value may claim while it decodes. A real state is a few KiB
/// (contact history, a month of usage buckets and top-ups, household evidence: about 1 KiB
/// in the load tests' worlds); 64 MiB is far above any of them and far below an allocation
/// that could take the process down.
pub const SUBSCRIBER_VALUE_LIMIT: usize = 64 << 20;
/// The most bytes `m:checkpoint` or `m:waiting` may claim while it decodes: the events
/// waiting at a checkpoint are held in memory by the workers (about 200 bytes each), so 4 GiB
/// is some 20 million of them — more than a process that wrote them could have held.
pub const CHECKPOINT_VALUE_LIMIT: usize = 4 << 30;
/// A value shorter than [`SMALL_VALUE`] decodes under [`SUBSCRIBER_VALUE_LIMIT`] whatever its
/// kind: what a value decodes to is at most some tens of times its encoded size (a varint of
/// one byte becomes eight; an event of ~60 bytes some 200), so a short value that claims
/// gigabytes is corrupt, and is refused before anything that large is allocated.
const SMALL_VALUE: usize = 1 << 20;
const META_CHECKPOINT: &[u8] = b"m:checkpoint";
const META_WAITING: &[u8] = b"m:waiting";
const META_RULES: &[u8] = b"m:rules";
const META_VERSION: &[u8] = b"v";

/// Why the state store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot open the state store at {path}: {source} (is another kairos using it?)")]
    Open { path: PathBuf, source: rocksdb::Error },
    #[error("state store {path} has format version {found}; this kairos reads version {FORMAT_VERSION} — keep the older kairos, or move the folder away to start from empty state (inputs are then read from `start_from`)")]
    Version { path: PathBuf, found: u32 },
    #[error("state store I/O failed: {0}")]
    Io(#[from] rocksdb::Error),
    #[error("state store value for {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("the checkpoint record {key} in the state store {path} is corrupt ({reason}): without it kairos cannot know where its inputs resume — restore the folder from a backup, or move it away to start from empty state (inputs are then read from `start_from`)")]
    CorruptCheckpoint { path: PathBuf, key: String, reason: String },
}

/// A position in a Kafka partition: (topic, partition, offset in librdkafka's raw form,
/// where -2 is "the beginning").
pub type Position = (String, i32, i64);

/// Everything about a checkpoint besides the states.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// The checkpoint instant: every instant before it is reflected in the states.
    pub at: Millis,
    /// Where each input partition resumes.
    pub inputs: Vec<Position>,
    /// The end of each output partition when this checkpoint was written.
    pub outputs: Vec<Position>,
    /// Where a restart looks for outputs it may emit again: the outputs' end at the previous
    /// checkpoint (everything decided after this checkpoint was produced after that point).
    pub scan_from: Vec<Position>,
}

/// What a restart resumes from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Restored {
    pub meta: CheckpointMeta,
    pub subscribers: Vec<(Msisdn, SubscriberState)>,
    pub waiting: Vec<Event>,
    /// The rules the checkpoint recorded (none from a kairos before 0.1's rule history, or
    /// when the record does not decode: then the folder's rules are used, with a warning).
    pub rules: Option<RulesRecord>,
    /// Subscriber values that did not decode and were quarantined by this load.
    pub quarantined: usize,
}

/// One checkpoint to write.
#[derive(Debug, Default)]
pub struct CheckpointWrite<'a> {
    pub meta: CheckpointMeta,
    pub subscribers: Vec<(Msisdn, &'a SubscriberState)>,
    pub waiting: &'a [Event],
    pub rules: Option<RulesRecord>,
}

/// The RocksDB store: a narrow, batched wrapper.
pub struct StateStore {
    db: DB,
    dir: PathBuf,
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = vec![VALUE_VERSION];
    // Serialising plain data to a Vec cannot fail.
    bytes.extend(bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap_or_default());
    bytes
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8], limit: Limit) -> Result<T, StateError> {
    decode_as(|| key.to_string(), bytes, limit)
}

/// Which size limit a value decodes under.
#[derive(Clone, Copy)]
enum Limit {
    Subscriber,
    Checkpoint,
}

/// [`decode`], naming the key only when the value is corrupt.
fn decode_as<T: DeserializeOwned>(key: impl Fn() -> String, bytes: &[u8], limit: Limit) -> Result<T, StateError> {
    let corrupt = |reason: String| StateError::Corrupt { key: key(), reason };
    let (version, rest) = bytes.split_first().ok_or_else(|| corrupt("empty value".into()))?;
    if *version != VALUE_VERSION {
        return Err(corrupt(format!("unknown value version {version}")));
    }
    let config = bincode::config::standard();
    let decoded = match limit {
        Limit::Subscriber => bincode::serde::decode_from_slice(rest, config.with_limit::<SUBSCRIBER_VALUE_LIMIT>()),
        Limit::Checkpoint if rest.len() >= SMALL_VALUE => {
            bincode::serde::decode_from_slice(rest, config.with_limit::<CHECKPOINT_VALUE_LIMIT>())
        }
        Limit::Checkpoint => bincode::serde::decode_from_slice(rest, config.with_limit::<SUBSCRIBER_VALUE_LIMIT>()),
    };
    let (value, read) = decoded.map_err(|e| corrupt(e.to_string()))?;
    // `encode` writes exactly one value: bytes after it mean the value is not what was written.
    if read != rest.len() {
        return Err(corrupt(format!("{} bytes after the value", rest.len() - read)));
    }
    Ok(value)
}

/// How many subscriber values are decoded together.
const DECODE_CHUNK: usize = 65_536;

/// A stored subscriber value that does not decode: its key, its bytes and why.
struct BadValue {
    key: Box<[u8]>,
    value: Box<[u8]>,
    reason: String,
}

/// Decodes `raw` on `threads` threads into `out` (in order), emptying `raw`; the values that
/// do not decode go to `bad`.
fn decode_states(
    raw: &mut Vec<(Msisdn, Box<[u8]>)>,
    threads: usize,
    out: &mut Vec<(Msisdn, SubscriberState)>,
    bad: &mut Vec<BadValue>,
) {
    type Part = (Vec<(Msisdn, SubscriberState)>, Vec<BadValue>);
    let per_thread = raw.len().div_ceil(threads.max(1)).max(1);
    let parts: Vec<Part> = std::thread::scope(|scope| {
        let handles: Vec<_> = raw
            .chunks(per_thread)
            .map(|part| {
                scope.spawn(move || {
                    let mut part_bad = Vec::new();
                    let states = part
                        .iter()
                        .filter_map(
                            |(msisdn, value)| match decode_as(String::new, value, Limit::Subscriber) {
                                Ok(state) => Some((*msisdn, state)),
                                Err(error) => {
                                    let reason = match error {
                                        StateError::Corrupt { reason, .. } => reason,
                                        other => other.to_string(),
                                    };
                                    part_bad.push(BadValue {
                                        key: subscriber_key(*msisdn).into(),
                                        value: value.clone(),
                                        reason,
                                    });
                                    None
                                }
                            },
                        )
                        .collect();
                    (states, part_bad)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    });
    for (states, part_bad) in parts {
        out.extend(states);
        bad.extend(part_bad);
    }
    raw.clear();
}

fn subscriber_key(msisdn: Msisdn) -> [u8; 9] {
    let mut key = [SUBSCRIBER_PREFIX; 9];
    key[1..].copy_from_slice(&msisdn.as_u64().to_be_bytes());
    key
}

impl StateStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<StateStore, StateError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let db = DB::open(&options, dir).map_err(|source| StateError::Open {
            path: dir.to_path_buf(),
            source,
        })?;
        match db.get(META_VERSION)? {
            None => db.put(META_VERSION, FORMAT_VERSION.to_be_bytes())?,
            Some(bytes) => {
                let found = bytes.try_into().map(u32::from_be_bytes).unwrap_or(0);
                if found != FORMAT_VERSION {
                    return Err(StateError::Version {
                        path: dir.to_path_buf(),
                        found,
                    });
                }
            }
        }
        Ok(StateStore {
            db,
            dir: dir.to_path_buf(),
        })
    }

    /// Decodes a record of the checkpoint itself: corrupt, it is an error that stops start.
    fn checkpoint_record<T: DeserializeOwned>(&self, key: &str, bytes: &[u8]) -> Result<T, StateError> {
        decode(key, bytes, Limit::Checkpoint).map_err(|error| match error {
            StateError::Corrupt { key, reason } => StateError::CorruptCheckpoint {
                path: self.dir.clone(),
                key,
                reason,
            },
            other => other,
        })
    }

    /// Moves a subscriber value that does not decode from its `s` key to the same key under
    /// `q`, in one synced write, so that no later start reads it again.
    fn quarantine(&self, bad: &BadValue) -> Result<(), StateError> {
        let mut moved = bad.key.to_vec();
        moved[0] = QUARANTINE_PREFIX;
        let mut batch = WriteBatch::default();
        batch.put(&moved, &bad.value);
        batch.delete(&bad.key);
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options)?;
        metrics::counter!(crate::telemetry::STATE_QUARANTINED).increment(1);
        // The number is personal data: only its key kind and the reason at warn level.
        tracing::warn!(
            key_kind = "subscriber",
            reason = %bad.reason,
            bytes = bad.value.len(),
            "a stored subscriber state does not decode: moved to the quarantine prefix `q` (never loaded again), that subscriber starts from empty state"
        );
        tracing::debug!(key = ?bad.key, reason = %bad.reason, "quarantined subscriber value");
        Ok(())
    }

    /// The last checkpoint, if any was written.
    pub fn load(&self) -> Result<Option<Restored>, StateError> {
        let Some(meta) = self.db.get(META_CHECKPOINT)? else {
            return Ok(None);
        };
        let meta: CheckpointMeta = self.checkpoint_record("m:checkpoint", &meta)?;
        let waiting = match self.db.get(META_WAITING)? {
            Some(bytes) => self.checkpoint_record("m:waiting", &bytes)?,
            None => Vec::new(),
        };
        // Not a record start depends on: one that does not decode leaves the folder's rules.
        let rules = match self.db.get(META_RULES)? {
            Some(bytes) => match decode::<RulesRecord>("m:rules", &bytes, Limit::Checkpoint) {
                Ok(rules) => Some(rules),
                Err(error) => {
                    tracing::warn!(%error, "the checkpoint's rule record does not decode: the rules folder's set is in force");
                    None
                }
            },
            None => None,
        };
        // Values are read in key order and decoded in chunks on every core: decoding a
        // million states took 8.9 s on one (loadtest/results, restart).
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut subscribers = Vec::new();
        let mut bad = Vec::new();
        let mut raw: Vec<(Msisdn, Box<[u8]>)> = Vec::with_capacity(DECODE_CHUNK);
        for item in self
            .db
            .iterator(IteratorMode::From(&[SUBSCRIBER_PREFIX], Direction::Forward))
        {
            let (key, value) = item?;
            if key.first() != Some(&SUBSCRIBER_PREFIX) {
                break;
            }
            let number = key.get(1..9).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
            match number.and_then(Msisdn::from_u64) {
                Some(msisdn) if key.len() == 9 => raw.push((msisdn, value)),
                _ => bad.push(BadValue {
                    key,
                    value,
                    reason: "not a subscriber key (`s` and a number of 8 bytes)".into(),
                }),
            }
            if raw.len() == DECODE_CHUNK {
                decode_states(&mut raw, threads, &mut subscribers, &mut bad);
            }
        }
        decode_states(&mut raw, threads, &mut subscribers, &mut bad);
        for value in &bad {
            self.quarantine(value)?;
        }
        Ok(Some(Restored {
            meta,
            subscribers,
            waiting,
            rules,
            quarantined: bad.len(),
        }))
    }

    /// Writes a checkpoint atomically (one `WriteBatch`, synced to disk).
    pub fn write(&self, checkpoint: &CheckpointWrite<'_>) -> Result<(), StateError> {
        let mut batch = WriteBatch::default();
        for (msisdn, state) in &checkpoint.subscribers {
            batch.put(subscriber_key(*msisdn), encode(state));
        }
        batch.put(META_WAITING, encode(&checkpoint.waiting));
        if let Some(rules) = &checkpoint.rules {
            batch.put(META_RULES, encode(rules));
        }
        batch.put(META_CHECKPOINT, encode(&checkpoint.meta));
        let bytes = batch.size_in_bytes();
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options)?;
        metrics::counter!(crate::telemetry::STATE_WRITE_BATCHES).increment(1);
        metrics::counter!(crate::telemetry::STATE_WRITE_BYTES).increment(bytes as u64);
        Ok(())
    }

    /// How big the store is: RocksDB's estimate of its keys (about one per subscriber), and
    /// its bytes on disk (SST files) plus in memory (memtables).
    pub fn size(&self) -> (u64, u64) {
        let property = |name: &str| self.db.property_int_value(name).ok().flatten().unwrap_or(0);
        (
            property("rocksdb.estimate-num-keys"),
            property("rocksdb.total-sst-files-size") + property("rocksdb.cur-size-all-mem-tables"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kairos_dataflows::state::CustomerState;

    #[test]
    fn a_checkpoint_reads_back_as_written_and_later_ones_override() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.load().unwrap(), None);
        let a = Msisdn::from_u64(351_910_000_001).unwrap();
        let b = Msisdn::from_u64(351_910_000_002).unwrap();
        let mut state = SubscriberState {
            customer: CustomerState::Deleted { since: 5 },
            ..Default::default()
        };
        let meta = CheckpointMeta {
            at: 100,
            inputs: vec![("in".into(), 0, 42)],
            ..Default::default()
        };
        store
            .write(&CheckpointWrite {
                meta: meta.clone(),
                subscribers: vec![(a, &state), (b, &state)],
                waiting: &[],
                rules: None,
            })
            .unwrap();
        state.unassigned_data.push((1, 2));
        let later = CheckpointMeta { at: 200, ..meta };
        let in_force = |at, text: &str| crate::rules::history::RulesAt {
            at,
            version: format!("v{at}"),
            files: [("a.toml".to_string(), text.to_string())].into(),
        };
        let rules = RulesRecord {
            in_force: in_force(150, "x"),
            later: vec![in_force(250, "y")],
        };
        store
            .write(&CheckpointWrite {
                meta: later.clone(),
                subscribers: vec![(b, &state)],
                waiting: &[],
                rules: Some(rules.clone()),
            })
            .unwrap();
        drop(store);

        let restored = StateStore::open(dir.path()).unwrap().load().unwrap().unwrap();
        assert_eq!(restored.meta, later);
        assert_eq!(restored.rules, Some(rules));
        assert_eq!(restored.subscribers.len(), 2);
        assert_eq!(restored.subscribers[0].1.unassigned_data, vec![]);
        assert_eq!(restored.subscribers[1].1.unassigned_data, vec![(1, 2)]);
    }

    #[test]
    fn other_versions_and_corrupt_values_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = DB::open_default(dir.path()).unwrap();
            db.put(META_VERSION, 7u32.to_be_bytes()).unwrap();
        }
        let error = StateStore::open(dir.path()).err().unwrap().to_string();
        assert!(error.contains("format version 7"), "{error}");

        let dir = tempfile::tempdir().unwrap();
        {
            let store = StateStore::open(dir.path()).unwrap();
            store.db.put(META_CHECKPOINT, [9u8, 1, 2]).unwrap();
        }
        let error = StateStore::open(dir.path()).unwrap().load().err().unwrap().to_string();
        assert!(
            error.contains("checkpoint record m:checkpoint in the state store")
                && error.contains("is corrupt (unknown value version 9)")
                && error.contains("restore the folder from a backup, or move it away"),
            "{error}"
        );
    }

    fn number(n: u64) -> Msisdn {
        Msisdn::from_u64(351_910_000_000 + n).unwrap()
    }

    /// A state whose encoding holds `marker` as a bincode string (length byte, then bytes).
    fn state_with(marker: &str) -> SubscriberState {
        let mut state = SubscriberState::default();
        state.mark_fired(marker, "2026-07-01T00:00:00Z", false);
        state
    }

    /// Writes a checkpoint of subscribers 1..=3 (each with a state holding `MARKER`).
    fn three_subscribers(dir: &Path) -> SubscriberState {
        let store = StateStore::open(dir).unwrap();
        let state = state_with(MARKER);
        store
            .write(&CheckpointWrite {
                meta: CheckpointMeta {
                    at: 100,
                    ..Default::default()
                },
                subscribers: vec![(number(1), &state), (number(2), &state), (number(3), &state)],
                waiting: &[],
                rules: None,
            })
            .unwrap();
        state
    }

    const MARKER: &str = "a-rule-id-to-find";

    /// The stored value of `msisdn`, with the length of [`MARKER`] replaced by `length`
    /// (bincode's varint: 253, then eight bytes little-endian).
    fn with_corrupt_length(store: &StateStore, msisdn: Msisdn, length: u64) -> Vec<u8> {
        let value = store.db.get(subscriber_key(msisdn)).unwrap().unwrap();
        let at = value
            .windows(MARKER.len())
            .position(|w| w == MARKER.as_bytes())
            .expect("the marker is in the encoding");
        assert_eq!(value[at - 1] as usize, MARKER.len());
        let mut corrupt = value[..at - 1].to_vec();
        corrupt.push(253);
        corrupt.extend(length.to_le_bytes());
        corrupt.extend(&value[at..]);
        corrupt
    }

    #[test]
    fn a_corrupt_length_is_a_corrupt_value_not_an_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let state = three_subscribers(dir.path());
        let store = StateStore::open(dir.path()).unwrap();
        // 2^62 bytes: without a limit bincode would allocate them before reading, and the
        // process would abort (a test process included).
        let corrupt = with_corrupt_length(&store, number(2), 1 << 62);
        let error = decode_as::<SubscriberState>(|| "s2".into(), &corrupt, Limit::Subscriber).unwrap_err();
        assert!(error.to_string().contains("s2 is corrupt"), "{error}");
        assert!(error.to_string().to_lowercase().contains("limit"), "{error}");
        // Just above the limit is refused too; a real value's lengths decode.
        let corrupt = with_corrupt_length(&store, number(2), SUBSCRIBER_VALUE_LIMIT as u64 + 1);
        assert!(decode_as::<SubscriberState>(|| "s2".into(), &corrupt, Limit::Subscriber).is_err());
        let good = store.db.get(subscriber_key(number(2))).unwrap().unwrap();
        assert_eq!(
            decode_as::<SubscriberState>(|| "s2".into(), &good, Limit::Subscriber).unwrap(),
            state
        );
        // Bytes after a whole value are corruption too.
        let mut longer = good.clone();
        longer.push(0);
        let error = decode_as::<SubscriberState>(|| "s2".into(), &longer, Limit::Subscriber).unwrap_err();
        assert!(error.to_string().contains("1 bytes after the value"), "{error}");
    }

    #[test]
    fn a_corrupt_subscriber_value_is_quarantined_and_the_others_load() {
        let dir = tempfile::tempdir().unwrap();
        let state = three_subscribers(dir.path());
        let corrupt = {
            let store = StateStore::open(dir.path()).unwrap();
            let corrupt = with_corrupt_length(&store, number(2), 1 << 62);
            store.db.put(subscriber_key(number(2)), &corrupt).unwrap();
            // A key under `s` that is not a subscriber's, and a value of an unknown version.
            store.db.put(b"s\x01", [VALUE_VERSION]).unwrap();
            store.db.put(subscriber_key(number(3)), [9u8, 0, 0]).unwrap();
            corrupt
        };

        let store = StateStore::open(dir.path()).unwrap();
        let restored = store.load().unwrap().unwrap();
        assert_eq!(restored.subscribers, vec![(number(1), state.clone())]);
        assert_eq!(restored.quarantined, 3);
        assert_eq!(restored.meta.at, 100);
        // Moved, bytes unchanged, to the quarantine prefix; gone from the subscribers.
        let mut moved = subscriber_key(number(2));
        moved[0] = QUARANTINE_PREFIX;
        assert_eq!(store.db.get(moved).unwrap(), Some(corrupt));
        assert_eq!(store.db.get(subscriber_key(number(2))).unwrap(), None);
        assert_eq!(store.db.get(b"q\x01").unwrap().as_deref(), Some(&[VALUE_VERSION][..]));
        drop(store);

        // The next start does not see them again.
        let again = StateStore::open(dir.path()).unwrap().load().unwrap().unwrap();
        assert_eq!(again.subscribers, vec![(number(1), state)]);
        assert_eq!(again.quarantined, 0);
    }

    #[test]
    fn corrupt_waiting_events_stop_start_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        three_subscribers(dir.path());
        {
            let store = StateStore::open(dir.path()).unwrap();
            let mut waiting = vec![VALUE_VERSION, 253];
            waiting.extend((1u64 << 62).to_le_bytes());
            store.db.put(META_WAITING, waiting).unwrap();
        }
        let error = StateStore::open(dir.path()).unwrap().load().unwrap_err().to_string();
        assert!(
            error.contains("checkpoint record m:waiting") && error.contains("move it away"),
            "{error}"
        );
    }

    /// Found by the `state` fuzz target (fuzz/regressions/state/): a string length of about
    /// 2^64 in a checkpoint's input positions panicked with "capacity overflow"; a length
    /// within the address space but beyond memory aborted.
    #[test]
    fn a_corrupt_length_in_a_value_is_an_error_not_an_allocation() {
        let input = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/regressions/state/crash-eaddc877dfbc3c94f1855229340517378443949a"
        ))
        .unwrap();
        // The target's first byte picks the kind (1: the checkpoint); the rest is the value.
        let error = decode::<CheckpointMeta>("m:checkpoint", &input[1..], Limit::Checkpoint)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("state store value for m:checkpoint is corrupt"),
            "{error}"
        );
        // A length just over the limit of a short value, in a value far shorter than it.
        let mut value = vec![VALUE_VERSION, 0, 1, 0xfc];
        value.extend(u32::try_from(SUBSCRIBER_VALUE_LIMIT + 1).unwrap().to_le_bytes());
        let error = decode::<CheckpointMeta>("m:checkpoint", &value, Limit::Checkpoint)
            .unwrap_err()
            .to_string();
        assert!(error.contains("is corrupt"), "{error}");
    }
}
