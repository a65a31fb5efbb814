//! When to checkpoint, agreed by the workers of one process.
//!
//! A checkpoint at instant `R` needs, from every worker, its input positions at the moment
//! its epoch first reached `R` — so no worker may already be past `R` when `R` is chosen, and
//! the dataflow must learn of `R` before its frontier can pass it. Two phases, propose and
//! confirm, then the write:
//!
//! 1. worker 0 *proposes* `R` = one past the highest epoch any worker has published;
//! 2. each worker answers: it acks if its epoch is still below `R` (and from then on holds its
//!    epoch below `R`), or nacks (the proposal is dropped and a later one made);
//! 3. once every worker acked, `R` is *confirmed*: the dataflow's request is set, the workers
//!    may cross `R`, and each records its positions as it does;
//! 4. once the frontier has passed `R` and every decision before it is out, the checkpoint
//!    writer (`writer.rs`, fed by the sink's operator in `sinks/kafka.rs`) writes it and
//!    completes `R`.
//!
//! Holding below a proposal lasts only until every worker has looked once (one loop each).
//!
//! To stop (SIGTERM, or the end of a bounded run's range), every worker stops reading and
//! says so ([`Coordinator::stop`]); worker 0 then proposes a *final* checkpoint at once,
//! whatever the interval, and once it is written [`Coordinator::finished`] tells every worker
//! to leave. A restart resumes exactly there: nothing read is lost, nothing is re-read.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kairos_dataflows::checkpoint::CheckpointRequests;
use kairos_model::Millis;

use super::Position;

/// A worker's positions when its epoch first reached a checkpoint instant.
type Recorded = (Millis, Vec<Position>);

/// Shared by the workers of one process (see the module docs).
#[derive(Debug)]
pub struct Coordinator {
    requests: Arc<CheckpointRequests>,
    /// Per worker: the epoch it is at or about to advance to.
    published: Vec<AtomicU64>,
    proposal: AtomicU64,
    /// Per worker: the proposal it answered.
    answered: Vec<AtomicU64>,
    nacked: AtomicBool,
    confirmed: AtomicU64,
    /// Per worker: its input positions when its epoch first reached the confirmed instant.
    positions: Mutex<Vec<Option<Recorded>>>,
    interval: Duration,
    last_done: Mutex<Instant>,
    /// Per worker: it reads no more input.
    stopped: Vec<AtomicBool>,
    /// The final checkpoint's instant, once proposed after every worker stopped.
    final_at: AtomicU64,
    /// The final checkpoint is written.
    finished: AtomicBool,
    /// No final checkpoint will come (a worker failed, or writing it took too long).
    abandoned: AtomicBool,
}

impl Coordinator {
    /// A coordinator for `workers` workers that checkpoints every `interval` at most.
    pub fn new(workers: usize, requests: Arc<CheckpointRequests>, interval: Duration) -> Coordinator {
        Coordinator {
            requests,
            published: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            proposal: AtomicU64::new(0),
            answered: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            nacked: AtomicBool::new(false),
            confirmed: AtomicU64::new(0),
            positions: Mutex::new(vec![None; workers]),
            interval,
            last_done: Mutex::new(Instant::now()),
            stopped: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            final_at: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
        }
    }

    /// Worker `me` reads no more input: once every worker has stopped, the next checkpoint
    /// is the final one.
    pub fn stop(&self, me: usize) {
        self.stopped[me].store(true, SeqCst);
    }

    /// The final checkpoint is written: the workers may leave.
    pub fn finished(&self) -> bool {
        self.finished.load(SeqCst)
    }

    /// Gives up the final checkpoint (a worker failed, or it could not be written in time):
    /// the workers leave without it, and a restart resumes from the last one written.
    pub fn abandon(&self) {
        self.abandoned.store(true, SeqCst);
    }

    /// Whether the final checkpoint was given up.
    pub fn abandoned(&self) -> bool {
        self.abandoned.load(SeqCst)
    }

    /// Called by every worker before it moves its epoch from `current` to `next`: answers a
    /// proposal, holds below an unconfirmed one, and records `positions` when crossing the
    /// confirmed instant. Returns the epoch the worker may move to. A worker whose inputs
    /// are all idle moves up to a confirmed instant, so a quiet engine still checkpoints.
    pub fn gate(
        &self,
        me: usize,
        current: Millis,
        next: Millis,
        all_idle: bool,
        positions: impl FnOnce() -> Vec<Position>,
    ) -> Millis {
        self.published[me].fetch_max(next.max(current), SeqCst);
        let proposal = self.proposal.load(SeqCst);
        let confirmed = self.confirmed.load(SeqCst);
        if proposal != 0 && self.answered[me].load(SeqCst) != proposal {
            if current >= proposal {
                self.nacked.store(true, SeqCst);
            }
            self.answered[me].store(proposal, SeqCst);
        }
        let mut next = next;
        if proposal != 0 && confirmed != proposal {
            next = next.min(proposal - 1).max(current);
        }
        if confirmed != 0 {
            if all_idle {
                next = next.max(confirmed);
            }
            let mut recorded = self.positions.lock().unwrap_or_else(|p| p.into_inner());
            if next >= confirmed && recorded[me].as_ref().is_none_or(|(at, _)| *at != confirmed) {
                recorded[me] = Some((confirmed, positions()));
            }
        }
        next
    }

    /// Called by worker 0 on every loop: proposes, confirms or drops a checkpoint instant.
    pub fn drive(&self) {
        let proposal = self.proposal.load(SeqCst);
        if proposal == 0 {
            let stopped = self.stopped.iter().all(|s| s.load(SeqCst));
            let due = self.last_done.lock().unwrap_or_else(|p| p.into_inner()).elapsed() >= self.interval;
            if due || stopped {
                let highest = self.published.iter().map(|p| p.load(SeqCst)).max().unwrap_or(0);
                self.nacked.store(false, SeqCst);
                if stopped {
                    self.final_at.store(highest + 1, SeqCst);
                }
                self.proposal.store(highest + 1, SeqCst);
            }
            return;
        }
        if self.confirmed.load(SeqCst) == proposal {
            return;
        }
        if self.nacked.load(SeqCst) {
            self.proposal.store(0, SeqCst);
            return;
        }
        if self.answered.iter().all(|a| a.load(SeqCst) == proposal) {
            self.confirmed.store(proposal, SeqCst);
            self.requests.request(proposal);
        }
    }

    /// The confirmed instant being checkpointed, if any.
    pub fn confirmed(&self) -> Option<Millis> {
        Some(self.confirmed.load(SeqCst)).filter(|c| *c != 0)
    }

    /// Every worker's positions for `at`, once all have recorded them.
    pub fn positions_for(&self, at: Millis) -> Option<Vec<Position>> {
        let recorded = self.positions.lock().unwrap_or_else(|p| p.into_inner());
        let mut all = Vec::new();
        for entry in recorded.iter() {
            match entry {
                Some((when, positions)) if *when == at => all.extend(positions.iter().cloned()),
                _ => return None,
            }
        }
        all.sort();
        Some(all)
    }

    /// The checkpoint at `at` is written: the next one may be proposed after the interval.
    pub fn complete(&self, at: Millis) {
        if self.confirmed.load(SeqCst) == at {
            *self.last_done.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
            self.confirmed.store(0, SeqCst);
            self.proposal.store(0, SeqCst);
            if self.final_at.load(SeqCst) == at {
                self.finished.store(true, SeqCst);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coordinator(workers: usize) -> Coordinator {
        Coordinator::new(workers, Arc::new(CheckpointRequests::default()), Duration::ZERO)
    }

    #[test]
    fn a_checkpoint_is_confirmed_only_when_no_worker_is_past_it() {
        let c = coordinator(2);
        assert_eq!(c.gate(0, 0, 10, false, Vec::new), 10);
        assert_eq!(c.gate(1, 0, 20, false, Vec::new), 20);
        c.drive();
        // Proposed 21: both answer; worker 1 may not go past it before confirmation.
        assert_eq!(c.gate(0, 10, 15, false, Vec::new), 15);
        assert_eq!(c.gate(1, 20, 30, false, Vec::new), 20, "held below the proposal");
        c.drive();
        assert_eq!(c.confirmed(), Some(21));
        assert_eq!(c.requests.requested(), 21);
        // Crossing it records the positions, once.
        assert_eq!(c.gate(1, 20, 30, false, || vec![("in".into(), 1, 7)]), 30);
        assert_eq!(c.positions_for(21), None, "worker 0 has not crossed yet");
        assert_eq!(c.gate(0, 15, 40, false, || vec![("in".into(), 0, 3)]), 40);
        assert_eq!(c.gate(0, 40, 50, false, || vec![("in".into(), 0, 99)]), 50);
        assert_eq!(
            c.positions_for(21),
            Some(vec![("in".into(), 0, 3), ("in".into(), 1, 7)])
        );
        c.complete(21);
        assert_eq!(c.confirmed(), None);
    }

    #[test]
    fn a_worker_already_past_the_proposal_makes_it_start_over() {
        let c = coordinator(2);
        c.gate(0, 0, 10, false, Vec::new);
        c.drive(); // proposes 11 while worker 1's epoch is unknown
        c.gate(1, 50, 60, false, Vec::new); // worker 1 is already at 50: nack
        c.gate(0, 10, 10, false, Vec::new);
        c.drive();
        assert_eq!(c.confirmed(), None);
        c.drive(); // a new proposal past everything published
        c.gate(0, 10, 10, false, Vec::new);
        c.gate(1, 60, 60, false, Vec::new);
        c.drive();
        assert_eq!(c.confirmed(), Some(61));
    }

    #[test]
    fn once_every_worker_stopped_a_final_checkpoint_is_taken_at_once() {
        let c = Coordinator::new(2, Arc::new(CheckpointRequests::default()), Duration::from_secs(3600));
        c.gate(0, 0, 10, false, Vec::new);
        c.gate(1, 0, 20, false, Vec::new);
        c.drive();
        assert_eq!(c.proposal.load(SeqCst), 0, "not due for an hour");
        c.stop(0);
        c.drive();
        assert_eq!(c.proposal.load(SeqCst), 0, "worker 1 still reads");
        c.stop(1);
        c.drive();
        assert_eq!(c.proposal.load(SeqCst), 21, "proposed at once");
        // Stopped workers stay where they are, and move up to the confirmed instant.
        c.gate(0, 10, 10, true, Vec::new);
        c.gate(1, 20, 20, true, Vec::new);
        c.drive();
        assert_eq!(c.confirmed(), Some(21));
        assert_eq!(c.gate(0, 10, 10, true, || vec![("in".into(), 0, 5)]), 21);
        assert_eq!(c.gate(1, 20, 20, true, || vec![("in".into(), 1, 9)]), 21);
        assert!(!c.finished());
        c.complete(21);
        assert!(c.finished());
    }

    #[test]
    fn idle_workers_move_up_to_a_confirmed_checkpoint() {
        let c = coordinator(1);
        c.gate(0, 0, 5, true, Vec::new);
        c.drive();
        c.gate(0, 5, 5, true, Vec::new);
        c.drive();
        assert_eq!(c.confirmed(), Some(6));
        assert_eq!(c.gate(0, 5, 5, true, || vec![("in".into(), 0, -2)]), 6);
        assert_eq!(c.positions_for(6), Some(vec![("in".into(), 0, -2)]));
    }
}
