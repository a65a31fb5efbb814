//! One stored value on its own, as [`super::StateStore::load`] decodes it: for tools and
//! the `state` fuzz target (`fuzz/`), which feed values that no store holds.

use kairos_dataflows::state::SubscriberState;
use kairos_model::Event;

use super::versions::{decode_subscriber, decode_waiting, encode_subscriber, encode_waiting};
use super::{decode, encode, CheckpointMeta, Limit, StateError};

/// Which kind of value a key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredKind {
    /// `s` + msisdn: a subscriber's state.
    Subscriber,
    /// `m:checkpoint`.
    Checkpoint,
    /// `m:waiting`: the events waiting at the checkpoint.
    Waiting,
}

impl StoredKind {
    pub const ALL: [StoredKind; 3] = [StoredKind::Subscriber, StoredKind::Checkpoint, StoredKind::Waiting];

    /// The key named in errors.
    fn key(self) -> &'static str {
        match self {
            StoredKind::Subscriber => "s",
            StoredKind::Checkpoint => "m:checkpoint",
            StoredKind::Waiting => "m:waiting",
        }
    }
}

/// A decoded value.
#[derive(Clone, Debug, PartialEq)]
pub enum Stored {
    Subscriber(Box<SubscriberState>),
    Checkpoint(CheckpointMeta),
    Waiting(Vec<Event>),
}

impl Stored {
    /// Decodes `bytes` (version byte and bincode) as a value of `kind`.
    pub fn decode(kind: StoredKind, bytes: &[u8]) -> Result<Stored, StateError> {
        let key = kind.key();
        Ok(match kind {
            StoredKind::Subscriber => Stored::Subscriber(Box::new(decode_subscriber(|| key.to_string(), bytes)?)),
            StoredKind::Checkpoint => Stored::Checkpoint(decode(key, bytes, Limit::Checkpoint)?),
            StoredKind::Waiting => Stored::Waiting(decode_waiting(|| key.to_string(), bytes)?),
        })
    }

    /// The bytes the store keeps for this value.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Stored::Subscriber(state) => encode_subscriber(state.as_ref()),
            Stored::Checkpoint(meta) => encode(meta),
            Stored::Waiting(events) => encode_waiting(events),
        }
    }
}
