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
//! | `d` + [`ErasedIndex::key`] (16 bytes) | `0x01` + bincode of the `ts` of an erasure |
//! | `m:salt` | the 32 random bytes the `d` keys are hashed with |
//!
//! **Erasure.** A subscriber erased by `"deleted": true` leaves no key or value that holds
//! the number: its `s` key is deleted and its tombstone (the `ts` of the deletion, so that an
//! older record arriving later cannot bring it back) is kept under `d` and a keyed hash of
//! the number. A checkpoint that erased anyone is followed by a flush and a full compaction,
//! so that no file of the folder still holds the old values — the erased subscriber's, and
//! those of the other subscribers whose evidence named them (see `dataflows/src/erased.rs`).
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
pub mod inheritance;
pub mod stored;
mod versions;
pub mod writer;

use versions::{decode_waiting, encode_subscriber, encode_waiting};

use std::path::{Path, PathBuf};

use kairos_dataflows::erased::{ErasedIndex, ErasedKey};
use kairos_dataflows::state::{CustomerState, SubscriberState};
use kairos_model::{Event, Millis, Msisdn};
use rocksdb::{Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::rules::history::RulesRecord;

/// The version of the on-disk layout, raised whenever a stored type changes. 2:
/// `SubscriberState` gained `previous_country`; 3: its contact history (held actions, caps);
/// 4: subscriber values of version 2 (`recent`, see `versions.rs`); 5: of version 3
/// (`lifecycle`). A store of version 3 or 4 is read (its values are upgraded as they are
/// written again) and marked 5, so that an older kairos refuses it instead of quarantining
/// the values it cannot read.
pub const FORMAT_VERSION: u32 = 5;
/// The oldest layout this kairos reads.
const OLDEST_FORMAT_VERSION: u32 = 3;
/// The version byte in front of every value but a subscriber's (`versions.rs`).
const VALUE_VERSION: u8 = 1;
const SUBSCRIBER_PREFIX: u8 = b's';
/// Erased numbers, by keyed hash.
const ERASED_PREFIX: u8 = b'd';
const META_SALT: &[u8] = b"m:salt";
/// When the store last compacted after an erasure (wall clock, ms).
const META_ERASED_AT: &[u8] = b"m:erased_at";
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
    /// The numbers erased before the checkpoint (their states are not in `subscribers`).
    pub erased: ErasedIndex,
}

/// One checkpoint to write.
#[derive(Debug, Default)]
pub struct CheckpointWrite<'a> {
    pub meta: CheckpointMeta,
    /// The states changed since the last checkpoint; `None`: forgotten, the key goes.
    pub subscribers: Vec<(Msisdn, Option<&'a SubscriberState>)>,
    pub waiting: &'a [Event],
    pub rules: Option<RulesRecord>,
}

/// The RocksDB store: a narrow, batched wrapper.
pub struct StateStore {
    db: DB,
    dir: PathBuf,
    /// What erased numbers are hashed with (`m:salt`).
    salt: Vec<u8>,
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
    let (version, rest) = bytes.split_first().ok_or_else(|| StateError::Corrupt {
        key: key(),
        reason: "empty value".into(),
    })?;
    if *version != VALUE_VERSION {
        return Err(StateError::Corrupt {
            key: key(),
            reason: format!("unknown value version {version}"),
        });
    }
    decode_body(key, rest, limit)
}

/// Decodes the bincode after a value's version byte.
fn decode_body<T: DeserializeOwned>(key: impl Fn() -> String, rest: &[u8], limit: Limit) -> Result<T, StateError> {
    let corrupt = |reason: String| StateError::Corrupt { key: key(), reason };
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
                            |(msisdn, value)| match versions::decode_subscriber(String::new, value) {
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

/// 32 bytes from the kernel's random source.
fn random_salt() -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut salt = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut salt)?;
    Ok(salt)
}

fn erased_key(salt: &[u8], msisdn: Msisdn) -> [u8; 17] {
    let mut key = [ERASED_PREFIX; 17];
    key[1..].copy_from_slice(&ErasedIndex::key(salt, msisdn));
    key
}

fn subscriber_key(msisdn: Msisdn) -> [u8; 9] {
    let mut key = [SUBSCRIBER_PREFIX; 9];
    key[1..].copy_from_slice(&msisdn.as_u64().to_be_bytes());
    key
}

impl StateStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<StateStore, StateError> {
        // The MANIFEST logs every table's first and last key, and an erased subscriber's key
        // may have been one: a new MANIFEST, listing only the tables in force, is started at
        // every change of the table set (a flush, a compaction — minutes apart; a MANIFEST
        // of a few hundred tables is a few KiB), so the old one goes (`write_erasing`).
        let mut options = Options::default()
            .get_options_from_string("max_manifest_file_size=1;max_manifest_space_amp_pct=0")
            .map_err(|source| StateError::Open {
                path: dir.to_path_buf(),
                source,
            })?;
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
                if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&found) {
                    return Err(StateError::Version {
                        path: dir.to_path_buf(),
                        found,
                    });
                }
                if found != FORMAT_VERSION {
                    tracing::info!(from = found, to = FORMAT_VERSION, "state store layout upgraded");
                    db.put(META_VERSION, FORMAT_VERSION.to_be_bytes())?;
                }
            }
        }
        let salt = match db.get(META_SALT)? {
            Some(salt) => salt,
            None => {
                let salt = random_salt().map_err(|e| StateError::Corrupt {
                    key: "m:salt".into(),
                    reason: format!("cannot draw a random salt from /dev/urandom: {e}"),
                })?;
                db.put(META_SALT, &salt)?;
                salt
            }
        };
        Ok(StateStore {
            db,
            dir: dir.to_path_buf(),
            salt,
        })
    }

    /// Decodes a record of the checkpoint itself: corrupt, it is an error that stops start.
    fn checkpoint_record<T: DeserializeOwned>(&self, key: &str, bytes: &[u8]) -> Result<T, StateError> {
        decode(key, bytes, Limit::Checkpoint).map_err(|error| self.corrupt_checkpoint(error))
    }

    /// A checkpoint record that does not decode stops the start, saying what to do.
    fn corrupt_checkpoint(&self, error: StateError) -> StateError {
        match error {
            StateError::Corrupt { key, reason } => StateError::CorruptCheckpoint {
                path: self.dir.clone(),
                key,
                reason,
            },
            other => other,
        }
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
            Some(bytes) => {
                decode_waiting(|| "m:waiting".to_string(), &bytes).map_err(|error| self.corrupt_checkpoint(error))?
            }
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
        // Tombstones an older kairos kept under the number move to their hashed key.
        let (tombstones, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut subscribers)
            .into_iter()
            .partition(|(_, state)| matches!(state.customer, CustomerState::Deleted { .. }));
        subscribers = kept;
        if !tombstones.is_empty() {
            let mut batch = WriteBatch::default();
            for (msisdn, state) in &tombstones {
                self.erase(&mut batch, *msisdn, state);
            }
            self.write_erasing(batch)?;
        }
        let erased = self.erased()?;
        Ok(Some(Restored {
            meta,
            subscribers,
            waiting,
            rules,
            quarantined: bad.len(),
            erased,
        }))
    }

    /// Writes a checkpoint atomically (one `WriteBatch`, synced to disk).
    pub fn write(&self, checkpoint: &CheckpointWrite<'_>) -> Result<(), StateError> {
        let mut batch = WriteBatch::default();
        let mut erasing = false;
        for (msisdn, state) in &checkpoint.subscribers {
            match state {
                None => batch.delete(subscriber_key(*msisdn)),
                Some(state) if matches!(state.customer, CustomerState::Deleted { .. }) => {
                    self.erase(&mut batch, *msisdn, state);
                    erasing = true;
                }
                Some(state) => batch.put(subscriber_key(*msisdn), encode_subscriber(state)),
            }
        }
        batch.put(META_WAITING, encode_waiting(checkpoint.waiting));
        if let Some(rules) = &checkpoint.rules {
            batch.put(META_RULES, encode(rules));
        }
        batch.put(META_CHECKPOINT, encode(&checkpoint.meta));
        let bytes = batch.size_in_bytes();
        if erasing {
            self.write_erasing(batch)?;
        } else {
            let mut options = WriteOptions::default();
            options.set_sync(true);
            self.db.write_opt(batch, &options)?;
        }
        metrics::counter!(crate::telemetry::STATE_WRITE_BATCHES).increment(1);
        metrics::counter!(crate::telemetry::STATE_WRITE_BYTES).increment(bytes as u64);
        Ok(())
    }

    /// Adds to `batch` the erasure of `msisdn`: its `s` key goes, its tombstone is kept
    /// under the keyed hash.
    fn erase(&self, batch: &mut WriteBatch, msisdn: Msisdn, state: &SubscriberState) {
        if let CustomerState::Deleted { since } = state.customer {
            batch.delete(subscriber_key(msisdn));
            batch.put(erased_key(&self.salt, msisdn), encode(&since));
        }
    }

    /// Writes a batch that erased someone, then makes the old values unreadable from the
    /// folder: the memtable and the write-ahead log are flushed into a table, and every
    /// table is compacted into the bottom level (where deleted keys and overwritten values
    /// are dropped), so the log and the tables that held them are removed. Erasures are
    /// rare; the compaction costs about a rewrite of the store.
    fn write_erasing(&self, batch: WriteBatch) -> Result<(), StateError> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options)?;
        let started = std::time::Instant::now();
        self.db.flush()?;
        let mut compact = rocksdb::CompactOptions::default();
        compact.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        compact.set_exclusive_manual_compaction(true);
        self.db.compact_range_opt(None::<&[u8]>, None::<&[u8]>, &compact);
        // One more change of the table set after the compaction: the MANIFEST it starts
        // lists only the compacted tables.
        self.db.put(META_ERASED_AT, encode(&kairos_model::time::now()))?;
        self.db.flush()?;
        metrics::counter!(crate::telemetry::STATE_ERASURE_COMPACTIONS).increment(1);
        tracing::info!(
            compaction_ms = started.elapsed().as_millis() as u64,
            "checkpoint erased subscribers: the state store was compacted so that no file keeps their values"
        );
        Ok(())
    }

    /// The erased numbers' tombstones, by keyed hash.
    fn erased(&self) -> Result<ErasedIndex, StateError> {
        let mut erased = Vec::new();
        for item in self
            .db
            .iterator(IteratorMode::From(&[ERASED_PREFIX], Direction::Forward))
        {
            let (key, value) = item?;
            if key.first() != Some(&ERASED_PREFIX) {
                break;
            }
            let hash: Option<ErasedKey> = key.get(1..).and_then(|k| k.try_into().ok());
            match (hash, decode::<Millis>("d", &value, Limit::Subscriber)) {
                (Some(hash), Ok(since)) => erased.push((hash, since)),
                // A bad tombstone forgets one erasure's instant, never the number: skipped.
                _ => tracing::warn!("a stored erasure tombstone does not decode: skipped"),
            }
        }
        Ok(ErasedIndex::new(self.salt.clone(), erased))
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

    #[test]
    fn a_checkpoint_reads_back_as_written_and_later_ones_override() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.load().unwrap(), None);
        let a = Msisdn::from_u64(351_910_000_001).unwrap();
        let b = Msisdn::from_u64(351_910_000_002).unwrap();
        let mut state = SubscriberState {
            country: kairos_model::CountryCode::parse("ES").ok(),
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
                subscribers: vec![(a, Some(&state)), (b, Some(&state))],
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
                subscribers: vec![(b, Some(&state))],
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

        // A forgotten state (no state in the checkpoint) loses its key; the other stays.
        let store = StateStore::open(dir.path()).unwrap();
        store
            .write(&CheckpointWrite {
                meta: CheckpointMeta { at: 300, ..later },
                subscribers: vec![(a, None)],
                waiting: &[],
                rules: None,
            })
            .unwrap();
        assert!(store.db.get(subscriber_key(a)).unwrap().is_none());
        let restored = store.load().unwrap().unwrap();
        assert_eq!(
            restored.subscribers.iter().map(|(m, _)| *m).collect::<Vec<_>>(),
            vec![b]
        );
    }

    #[test]
    fn a_store_of_the_previous_layout_opens_and_is_marked_with_this_one() {
        let dir = tempfile::tempdir().unwrap();
        drop(StateStore::open(dir.path()).unwrap());
        let db = DB::open_default(dir.path()).unwrap();
        db.put(META_VERSION, OLDEST_FORMAT_VERSION.to_be_bytes()).unwrap();
        drop(db);
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(
            store.db.get(META_VERSION).unwrap().as_deref(),
            Some(&FORMAT_VERSION.to_be_bytes()[..])
        );
    }

    /// Every file of `dir` (recursively) that holds `msisdn` as its digits or as 8 bytes in
    /// either order.
    pub(crate) fn files_naming(dir: &Path, msisdn: Msisdn) -> Vec<PathBuf> {
        let digits = msisdn.to_string().into_bytes();
        let (be, le) = (msisdn.as_u64().to_be_bytes(), msisdn.as_u64().to_le_bytes());
        let mut found = Vec::new();
        let mut folders = vec![dir.to_path_buf()];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(&folder).unwrap().filter_map(Result::ok) {
                let path = entry.path();
                if path.is_dir() {
                    folders.push(path);
                    continue;
                }
                let bytes = std::fs::read(&path).unwrap_or_default();
                let holds = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
                if holds(&digits) || holds(&be) || holds(&le) {
                    found.push(path);
                }
            }
        }
        found
    }

    #[test]
    fn an_erasure_leaves_no_file_of_the_store_holding_the_number() {
        use kairos_dataflows::households::Evidence;
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let (s, x) = (
            Msisdn::from_u64(351_910_000_001).unwrap(),
            Msisdn::from_u64(351_917_654_321).unwrap(),
        );
        let mut other = SubscriberState::default();
        other.household.evidence.insert((1_000, Evidence::Call(s, x)), 3);
        other.mark_fired("competitor-member", &x.to_string(), false);
        let erased = SubscriberState {
            country: kairos_model::CountryCode::parse("ES").ok(),
            ..Default::default()
        };
        let checkpoint = |at, subscribers| CheckpointWrite {
            meta: CheckpointMeta {
                at,
                ..Default::default()
            },
            subscribers,
            waiting: &[],
            rules: None,
        };
        store
            .write(&checkpoint(100, vec![(s, Some(&other)), (x, Some(&erased))]))
            .unwrap();
        // Some unrelated subscribers, so that the tables hold more than these two.
        let filler = SubscriberState::default();
        let many: Vec<Msisdn> = (0..2_000)
            .map(|i| Msisdn::from_u64(351_920_000_000 + i).unwrap())
            .collect();
        store
            .write(&checkpoint(150, many.iter().map(|m| (*m, Some(&filler))).collect()))
            .unwrap();
        store.db.flush().unwrap();
        assert!(
            !files_naming(dir.path(), x).is_empty(),
            "the test must see the number before"
        );

        // The erasure: X's tombstone and S forgetting X, in one checkpoint.
        let forgotten = SubscriberState::default();
        let tombstone = SubscriberState {
            customer: CustomerState::Deleted { since: 180 },
            ..Default::default()
        };
        store
            .write(&checkpoint(200, vec![(s, Some(&forgotten)), (x, Some(&tombstone))]))
            .unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(files_naming(dir.path(), x), Vec::<PathBuf>::new(), "{names:?}");
        drop(store);

        // A restart knows X is erased, by its hash only, and loads S.
        let restored = StateStore::open(dir.path()).unwrap().load().unwrap().unwrap();
        assert_eq!(restored.erased.since(x), Some(180));
        assert_eq!(restored.erased.since(s), None);
        assert!(restored.subscribers.iter().all(|(m, _)| *m != x));
        assert_eq!(restored.subscribers.len(), 2_001);
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
                subscribers: vec![
                    (number(1), Some(&state)),
                    (number(2), Some(&state)),
                    (number(3), Some(&state)),
                ],
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
        let error = versions::decode_subscriber(|| "s2".into(), &corrupt).unwrap_err();
        assert!(error.to_string().contains("s2 is corrupt"), "{error}");
        assert!(error.to_string().to_lowercase().contains("limit"), "{error}");
        // Just above the limit is refused too; a real value's lengths decode.
        let corrupt = with_corrupt_length(&store, number(2), SUBSCRIBER_VALUE_LIMIT as u64 + 1);
        assert!(versions::decode_subscriber(|| "s2".into(), &corrupt).is_err());
        let good = store.db.get(subscriber_key(number(2))).unwrap().unwrap();
        assert_eq!(versions::decode_subscriber(|| "s2".into(), &good).unwrap(), state);
        // Bytes after a whole value are corruption too.
        let mut longer = good.clone();
        longer.push(0);
        let error = versions::decode_subscriber(|| "s2".into(), &longer).unwrap_err();
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
