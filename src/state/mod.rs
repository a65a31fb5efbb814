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
//!
//! A deleted subscriber keeps its (tiny) tombstone state, so an older record arriving later
//! cannot bring it back.

pub mod coordinator;
pub mod stored;
pub mod writer;

use std::path::{Path, PathBuf};

use kairos_dataflows::state::SubscriberState;
use kairos_model::{Event, Millis, Msisdn};
use rocksdb::{Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// The version of the on-disk layout, raised whenever a stored type changes. 2:
/// `SubscriberState` gained `previous_country`; 3: its contact history (held actions, caps).
pub const FORMAT_VERSION: u32 = 3;
/// The version byte in front of every value.
const VALUE_VERSION: u8 = 1;
const SUBSCRIBER_PREFIX: u8 = b's';
const META_CHECKPOINT: &[u8] = b"m:checkpoint";
const META_WAITING: &[u8] = b"m:waiting";
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
}

/// One checkpoint to write.
#[derive(Debug, Default)]
pub struct CheckpointWrite<'a> {
    pub meta: CheckpointMeta,
    pub subscribers: Vec<(Msisdn, &'a SubscriberState)>,
    pub waiting: &'a [Event],
}

/// The RocksDB store: a narrow, batched wrapper.
pub struct StateStore {
    db: DB,
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = vec![VALUE_VERSION];
    // Serialising plain data to a Vec cannot fail.
    bytes.extend(bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap_or_default());
    bytes
}

/// The most a stored value may decode to. Without a limit, a corrupt length in a value
/// (found by the `state` fuzz target, fuzz/README.md) made bincode allocate that length at
/// once: a panic ("capacity overflow") or an abort instead of a `Corrupt` error.
const MAX_DECODED_BYTES: usize = 1 << 30;

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StateError> {
    decode_as(|| key.to_string(), bytes)
}

/// [`decode`], naming the key only when the value is corrupt.
fn decode_as<T: DeserializeOwned>(key: impl Fn() -> String, bytes: &[u8]) -> Result<T, StateError> {
    let corrupt = |reason: String| StateError::Corrupt { key: key(), reason };
    match bytes.split_first() {
        Some((&VALUE_VERSION, rest)) => {
            let config = bincode::config::standard().with_limit::<MAX_DECODED_BYTES>();
            bincode::serde::decode_from_slice(rest, config)
                .map(|(value, _)| value)
                .map_err(|e| corrupt(e.to_string()))
        }
        Some((version, _)) => Err(corrupt(format!("unknown value version {version}"))),
        None => Err(corrupt("empty value".into())),
    }
}

/// How many subscriber values are decoded together.
const DECODE_CHUNK: usize = 65_536;

/// Decodes `raw` on `threads` threads into `out` (in order), emptying `raw`.
fn decode_states(
    raw: &mut Vec<(Msisdn, Box<[u8]>)>,
    threads: usize,
    out: &mut Vec<(Msisdn, SubscriberState)>,
) -> Result<(), StateError> {
    let per_thread = raw.len().div_ceil(threads.max(1)).max(1);
    let parts: Vec<Result<Vec<(Msisdn, SubscriberState)>, StateError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = raw
            .chunks(per_thread)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(msisdn, value)| Ok((*msisdn, decode_as(|| format!("s{msisdn}"), value)?)))
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    });
    for part in parts {
        out.extend(part?);
    }
    raw.clear();
    Ok(())
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
        Ok(StateStore { db })
    }

    /// The last checkpoint, if any was written.
    pub fn load(&self) -> Result<Option<Restored>, StateError> {
        let Some(meta) = self.db.get(META_CHECKPOINT)? else {
            return Ok(None);
        };
        let meta: CheckpointMeta = decode("m:checkpoint", &meta)?;
        let waiting = match self.db.get(META_WAITING)? {
            Some(bytes) => decode("m:waiting", &bytes)?,
            None => Vec::new(),
        };
        // Values are read in key order and decoded in chunks on every core: decoding a
        // million states took 8.9 s on one (loadtest/results, restart).
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut subscribers = Vec::new();
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
            let Some(msisdn) = number.and_then(Msisdn::from_u64) else {
                return Err(StateError::Corrupt {
                    key: format!("{key:?}"),
                    reason: "not a subscriber key".into(),
                });
            };
            raw.push((msisdn, value));
            if raw.len() == DECODE_CHUNK {
                decode_states(&mut raw, threads, &mut subscribers)?;
            }
        }
        decode_states(&mut raw, threads, &mut subscribers)?;
        Ok(Some(Restored {
            meta,
            subscribers,
            waiting,
        }))
    }

    /// Writes a checkpoint atomically (one `WriteBatch`, synced to disk).
    pub fn write(&self, checkpoint: &CheckpointWrite<'_>) -> Result<(), StateError> {
        let mut batch = WriteBatch::default();
        for (msisdn, state) in &checkpoint.subscribers {
            batch.put(subscriber_key(*msisdn), encode(state));
        }
        batch.put(META_WAITING, encode(&checkpoint.waiting));
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
            })
            .unwrap();
        state.unassigned_data.push((1, 2));
        let later = CheckpointMeta { at: 200, ..meta };
        store
            .write(&CheckpointWrite {
                meta: later.clone(),
                subscribers: vec![(b, &state)],
                waiting: &[],
            })
            .unwrap();
        drop(store);

        let restored = StateStore::open(dir.path()).unwrap().load().unwrap().unwrap();
        assert_eq!(restored.meta, later);
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
            error.contains("m:checkpoint is corrupt: unknown value version 9"),
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
        let error = decode::<CheckpointMeta>("m:checkpoint", &input[1..])
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("state store value for m:checkpoint is corrupt"),
            "{error}"
        );
        // A length just over the limit, in a value far shorter than it.
        let mut value = vec![VALUE_VERSION, 0, 1, 0xfc];
        value.extend(u32::try_from(MAX_DECODED_BYTES + 1).unwrap().to_le_bytes());
        let error = decode::<CheckpointMeta>("m:checkpoint", &value)
            .unwrap_err()
            .to_string();
        assert!(error.contains("is corrupt"), "{error}");
    }
}
