//! What a restarted process inherits from the one that was killed: outputs it must keep
//! recalling until its own checkpoints have passed everything the other could have decided.
//!
//! A checkpoint's `scan_from` is where a restart from it starts reading the outputs back
//! (so as not to produce them again). Within one process that is the outputs' end at the
//! previous checkpoint: the coordinator proposes an instant only once the last one is
//! written, so nothing decided at or after a checkpoint's instant was produced before that
//! end. Across a kill it is not so. Process A, killed, may have decided and produced far
//! past its last checkpoint `t`; process B restores `t`, recalls A's outputs (from the
//! restored `scan_from`) and does not produce them again. If B's first checkpoint, at `t'`,
//! recorded B's own start as `scan_from`, a third process restoring `t'` would decide again
//! whatever A had decided at or after `t'`, and not recall it: a duplicate.
//!
//! So B's checkpoints keep the restored `scan_from` until one of them passes everything A
//! could have decided:
//! - A read only what the input partitions held when B started. B's checkpoint must resume
//!   each partition at or past where B had read everything it held then (past its end then,
//!   or at its end of partition): no event A read, and no dead letter A wrote for it, is
//!   read again by a restart from that checkpoint.
//! - A decided nothing at or after its epoch, and its epoch was at most one past the newest
//!   event it read (or one past a checkpoint instant of its own, of which only the last can
//!   lie beyond its last written checkpoint `t`). So A decided nothing after
//!   `max(t, newest + 1)`, where `newest` is the newest event below those ends.
//! - Those events (and the waiting events restored with `t`) are decided by B at instants of
//!   its own; the checkpoint's instant must be past each of them, so that none waits in it.
//!
//! `decided_through` is the latest of all these instants; a checkpoint whose instant is
//! past it, and whose positions are past the partitions' catch-up positions, recalls
//! from the outputs' end at B's previous checkpoint again: from then on nothing of A's can
//! come back. Until then a restart reads back everything from the restored `scan_from` on —
//! more than needed, never less.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use kairos_model::Millis;

use super::Position;

/// The restored checkpoint's `scan_from`, and how far this process has come in passing
/// what the killed one may have decided (see the module docs).
#[derive(Debug)]
pub struct Inheritance {
    scan_from: Vec<Position>,
    /// Per input partition: the position by which it had delivered everything it held when
    /// this process started; `None` until it has.
    caught_up: Mutex<HashMap<(String, i32), Option<i64>>>,
    /// The latest instant at which an event read below those ends is, or may have been,
    /// decided (or a restored waiting event is).
    decided_through: AtomicU64,
}

impl Inheritance {
    /// What a process inherits from the checkpoint it restored: its `scan_from`, the
    /// latest instant of its waiting events (they are decided there), and the input
    /// partitions.
    pub fn new(scan_from: Vec<Position>, waiting_through: Millis, partitions: &[(String, i32)]) -> Inheritance {
        Inheritance {
            scan_from,
            caught_up: Mutex::new(partitions.iter().map(|p| (p.clone(), None)).collect()),
            decided_through: AtomicU64::new(waiting_through),
        }
    }

    /// Partition `(topic, partition)` has delivered everything it held at start, and a
    /// restart from a position at or past `at` reads none of it again.
    pub fn caught_up(&self, topic: &str, partition: i32, at: i64) {
        let mut caught_up = self.caught_up.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = caught_up.get_mut(&(topic.to_string(), partition)) {
            slot.get_or_insert(at);
        }
    }

    /// Something inherited (an event read below the ends at start) is decided, or may have
    /// been decided by the killed process, at `instant`.
    pub fn decided_at(&self, instant: Millis) {
        self.decided_through.fetch_max(instant, Ordering::AcqRel);
    }

    /// Whether a checkpoint at `at` resuming at `inputs` has passed everything inherited.
    pub fn settled_by(&self, at: Millis, inputs: &[Position]) -> bool {
        if at <= self.decided_through.load(Ordering::Acquire) {
            return false;
        }
        let caught_up = self.caught_up.lock().unwrap_or_else(|p| p.into_inner());
        caught_up.iter().all(|((topic, partition), caught)| {
            caught.is_some_and(|from| {
                inputs
                    .iter()
                    .find(|(t, p, _)| t == topic && p == partition)
                    .is_some_and(|(_, _, resume)| *resume >= from)
            })
        })
    }

    /// The `scan_from` a checkpoint records while it has not settled.
    pub fn scan_from(&self) -> &[Position] {
        &self.scan_from
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partitions() -> Vec<(String, i32)> {
        vec![("in".into(), 0), ("in".into(), 1)]
    }

    #[test]
    fn a_checkpoint_settles_only_past_every_partitions_catch_up_and_every_inherited_instant() {
        let inherited = Inheritance::new(vec![("out".into(), 0, 7)], 1_000, &partitions());
        let at = |o0, o1| vec![("in".to_string(), 0, o0), ("in".to_string(), 1, o1)];
        // Nothing caught up yet.
        assert!(!inherited.settled_by(5_000, &at(100, 100)));
        inherited.caught_up("in", 0, 40);
        inherited.caught_up("in", 0, 90); // the first catch-up position stays
        assert!(
            !inherited.settled_by(5_000, &at(100, 100)),
            "partition 1 has not caught up"
        );
        inherited.caught_up("in", 1, 20);
        assert!(inherited.settled_by(5_000, &at(40, 20)));
        assert!(
            !inherited.settled_by(5_000, &at(39, 20)),
            "it resumes before partition 0's catch-up"
        );
        // An instant not past the restored waiting events, then not past an inherited event.
        assert!(!inherited.settled_by(1_000, &at(40, 20)));
        inherited.decided_at(6_000);
        inherited.decided_at(2_000); // never moves back
        assert!(!inherited.settled_by(6_000, &at(40, 20)));
        assert!(inherited.settled_by(6_001, &at(40, 20)));
        // A position missing from the checkpoint is not past anything.
        assert!(!inherited.settled_by(9_000, &at(40, 20)[..1]));
        assert_eq!(inherited.scan_from(), &[("out".to_string(), 0, 7)]);
    }
}
