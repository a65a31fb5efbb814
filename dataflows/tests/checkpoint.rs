//! Checkpoint and restore, without I/O: run the dataflow, take a checkpoint at a random
//! instant, "crash" some time after it, start a second dataflow from the checkpoint (states,
//! waiting events, input position) and the rest of the input. The decisions before the
//! checkpoint from the first run plus the decisions of the second must equal those of a run
//! without a crash — with any number of workers on either side.

mod world;

use std::sync::Arc;

use kairos_dataflows::checkpoint::{CheckpointRequests, Durability, StateRecord};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use world::{batch_epochs, batches_of, model, random_events, run};

#[test]
fn a_restored_checkpoint_continues_exactly_where_the_first_run_stopped() {
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let mut checked = 0;
    for seed in 0..12u64 {
        let events = random_events(seed, 700);
        let expected = model(&events);
        let epochs = batch_epochs(&events);
        let end = events.iter().map(|e| e.ts).max().unwrap() + 1;
        let batches = batches_of(&events);

        // The checkpoint instant: the epoch of a random batch; the input position: the first
        // batch sent at or after it. The crash: a while later.
        let c = rng.random_range(5..batches.len() - 5);
        let at = epochs[c];
        let position = epochs.iter().position(|e| *e >= at).unwrap();
        let crash = rng.random_range(position + 1..batches.len());
        let (first_workers, second_workers) = (rng.random_range(1..4), rng.random_range(1..4));

        let requests = Arc::new(CheckpointRequests::default());
        requests.request(at);
        let first = run(
            Arc::clone(&batches),
            0,
            crash,
            0,
            epochs[crash - 1].max(at),
            Vec::new(),
            Some(Durability {
                requests,
                restored: Arc::default(),
                restored_at: 0,
                erased: Arc::default(),
            }),
            first_workers,
        );

        // What a durable store would hold for the checkpoint.
        let markers = first
            .records
            .iter()
            .filter(|(_, r)| matches!(r, StateRecord::Pending { .. }))
            .count();
        assert_eq!(markers, first_workers, "every worker takes part in the checkpoint");
        let (durability, waiting) = world::restore_from(first.records, second_workers, at);
        let second = run(
            Arc::clone(&batches),
            position,
            batches.len(),
            at,
            end,
            waiting,
            Some(durability),
            second_workers,
        );

        let got = world::stitched(first.decisions, second.decisions, at);
        if got != expected {
            let missing: Vec<_> = expected.iter().filter(|o| !got.contains(o)).collect();
            let extra: Vec<_> = got.iter().filter(|o| !expected.contains(o)).collect();
            panic!(
                "seed {seed}: checkpoint at batch {c} ({at}), position {position}, crash {crash}, \
                 workers {first_workers}→{second_workers}\nmissing {missing:#?}\nextra {extra:#?}"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 12);
}
