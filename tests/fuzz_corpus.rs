//! The fuzz targets' smoke, on stable Rust and without instrumentation (fuzz/README.md):
//! every committed corpus input and every crash regression input of each target
//! (`fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`) runs through the target's body
//! ([`kairos::fuzzing`]) and must return without a panic.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kairos::fuzzing::TARGETS;
use kairos::state::stored::{Stored, StoredKind};
use kairos::state::CheckpointMeta;
use kairos_dataflows::households::HouseholdConfig;
use kairos_dataflows::subscriber::SubscriberLogic;
use kairos_model::{Event, Origin};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir`, sorted; none when it does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.is_file());
    files.sort();
    files
}

/// Runs `target`'s inputs in `kind` (corpus or regressions); the paths of those that panic.
fn run(target: &str, body: fn(&[u8]), kind: &str) -> (usize, Vec<String>) {
    let files = inputs(&fuzz_dir().join(kind).join(target));
    let mut failed = Vec::new();
    for path in &files {
        let data = std::fs::read(path).unwrap();
        if std::panic::catch_unwind(|| body(&data)).is_err() {
            failed.push(path.display().to_string());
        }
    }
    (files.len(), failed)
}

#[test]
fn every_corpus_and_regression_input_runs_through_its_target() {
    let mut failed = Vec::new();
    for (target, body) in TARGETS {
        let (corpus, mut bad) = run(target, *body, "corpus");
        assert!(
            corpus >= 5,
            "fuzz/corpus/{target} has {corpus} inputs; seed it (fuzz/seed)"
        );
        failed.append(&mut bad);
        let (_, mut bad) = run(target, *body, "regressions");
        failed.append(&mut bad);
    }
    assert!(failed.is_empty(), "inputs that panic: {failed:#?}");
}

#[test]
fn every_corpus_folder_is_a_target() {
    for kind in ["corpus", "regressions"] {
        for entry in std::fs::read_dir(fuzz_dir().join(kind)).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                TARGETS.iter().any(|(t, _)| *t == name),
                "fuzz/{kind}/{name} is no target: {:?}",
                TARGETS.iter().map(|(t, _)| t).collect::<Vec<_>>()
            );
        }
    }
}

/// The golden cases' subscriber states, checkpoints and waiting events, encoded as the store
/// writes them, decode to what was encoded. With `KAIROS_FUZZ_SEEDS` set, they are written to
/// `fuzz/corpus/state/` (fuzz/seed): the state target's seeds.
#[test]
fn state_values_of_the_golden_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut values: Vec<(StoredKind, Stored)> = Vec::new();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(root.join("tests/golden"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    cases.sort();
    for case in cases.iter().filter(|c| c.join("events.jsonl").exists()) {
        // A case without a rules folder runs the shipped rules (as tests/golden.rs does).
        let own = case.join("rules");
        let dir = if own.is_dir() { own } else { root.join("rules") };
        let rules = kairos::rules::load_dir(&dir).unwrap();
        let mut logic = SubscriberLogic::new(
            Arc::new(rules),
            Default::default(),
            true,
            Some(HouseholdConfig::default()),
        );
        let text = std::fs::read_to_string(case.join("events.jsonl")).unwrap();
        let events: Vec<Event> = text
            .lines()
            .enumerate()
            .filter_map(|(i, line)| {
                let origin = Origin {
                    source: 0,
                    position: i as u64 + 1,
                };
                kairos::decode::decode(line.as_bytes(), origin).ok()
            })
            .collect();
        let (mut decisions, mut timers, mut now) = (Vec::new(), Vec::new(), 0);
        for event in &events {
            now = event.ts.max(now);
            logic.apply(event, now, &mut decisions, &mut timers);
        }
        for state in logic.take_changes().into_iter().filter_map(|(_, state)| state) {
            values.push((StoredKind::Subscriber, Stored::Subscriber(Box::new(state))));
        }
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        values.push((
            StoredKind::Checkpoint,
            Stored::Checkpoint(CheckpointMeta {
                at: now,
                inputs: vec![
                    (format!("kairos.{name}"), 0, events.len() as i64),
                    ("kairos.usage".into(), 3, -2),
                ],
                outputs: vec![("kairos.decisions".into(), 0, decisions.len() as i64)],
                scan_from: vec![("kairos.decisions".into(), 0, 0)],
            }),
        ));
        values.push((
            StoredKind::Waiting,
            Stored::Waiting(events.into_iter().rev().take(4).collect()),
        ));
    }
    assert!(values.len() > 100, "{} values", values.len());
    let seeds = std::env::var_os("KAIROS_FUZZ_SEEDS").is_some();
    let folder = fuzz_dir().join("corpus/state");
    for (kind, value) in &values {
        let bytes = value.encode();
        assert_eq!(&Stored::decode(*kind, &bytes).unwrap(), value);
        if seeds {
            // The target's input: the kind's index, then the stored bytes.
            let which = StoredKind::ALL.iter().position(|k| k == kind).unwrap() as u8;
            let input: Vec<u8> = std::iter::once(which).chain(bytes).collect();
            std::fs::create_dir_all(&folder).unwrap();
            std::fs::write(folder.join(format!("golden-{:016x}", fnv(&input))), &input).unwrap();
        }
    }
}

/// A stable name for a seed (FNV-1a).
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}
