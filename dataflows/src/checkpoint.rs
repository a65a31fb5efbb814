//! Checkpoints of the subscriber state, as data: the dataflow says *what* to make durable
//! and *when* it is consistent; the `kairos` crate's `state` module writes it (RocksDB).
//!
//! A checkpoint at instant `R` holds every subscriber's state after all instants before `R`
//! were applied and none after, plus the events that were sent into the dataflow before `R`
//! but wait for later instants. Together with each input's position at the moment its
//! epoch first reached `R`, that is everything needed to resume: re-read from those
//! positions, re-send the waiting events, and the dataflow computes what it would have.
//! Timers are not stored: they are recomputed from the restored states.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kairos_model::{Event, Millis, Msisdn};
use serde::{Deserialize, Serialize};

use crate::state::SubscriberState;

/// Which checkpoint the process wants next, shared by its workers. The coordinator asks
/// for an instant no input epoch has reached yet; each subscriber operator takes the
/// checkpoint when its frontier reaches it.
#[derive(Debug, Default)]
pub struct CheckpointRequests {
    requested: AtomicU64,
}

impl CheckpointRequests {
    /// Asks for a checkpoint at instant `at` (ignored unless later than the last request).
    pub fn request(&self, at: Millis) {
        self.requested.fetch_max(at, Ordering::SeqCst);
    }

    /// The latest instant asked for (0: none yet).
    pub fn requested(&self) -> Millis {
        self.requested.load(Ordering::SeqCst)
    }
}

/// What the subscriber operator emits for a checkpoint, at the checkpoint's instant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StateRecord {
    /// A subscriber whose state changed since the previous checkpoint; `None`: a state that
    /// was forgotten (a non-customer's, after its retention), whose stored copy goes.
    Subscriber {
        msisdn: Msisdn,
        state: Option<Box<SubscriberState>>,
    },
    /// Events sent before the checkpoint that wait for a later instant (one record per
    /// worker, possibly empty, so the writer knows every worker took part).
    Pending {
        worker: usize,
        at: Millis,
        events: Vec<Event>,
    },
}

/// Restored subscriber states, one list per worker.
pub type RestoredShards = Arc<Mutex<Vec<Vec<(Msisdn, SubscriberState)>>>>;

/// How the dataflow checkpoints and what it resumes from.
#[derive(Clone, Debug, Default)]
pub struct Durability {
    pub requests: Arc<CheckpointRequests>,
    /// Restored subscriber states, one list per worker (taken by that worker's operator).
    pub restored: RestoredShards,
    /// The instant the restored checkpoint was taken at (0 when starting afresh).
    pub restored_at: Millis,
    /// The numbers erased before it (read by every worker).
    pub erased: Arc<crate::erased::ErasedIndex>,
}

impl Durability {
    /// Takes worker `index`'s share of the restored states.
    pub fn take_restored(&self, index: usize) -> Vec<(Msisdn, SubscriberState)> {
        let mut restored = self.restored.lock().unwrap_or_else(|p| p.into_inner());
        restored.get_mut(index).map(std::mem::take).unwrap_or_default()
    }
}
