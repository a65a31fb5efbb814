//! The rule sets a run has put in force, as the checkpoint keeps them: a restart resumes
//! with the set that was in force at the checkpoint's instant, and puts the sets that took
//! force after it in force again at the same instants — so the events it decides again are
//! decided under the rules they were decided under before, whatever the folder holds by then.
//!
//! A set is kept as its files (name → text), not as the checked [`RuleSet`]: the restart
//! checks them again with the code it runs, and the record stays readable when the checked
//! form changes between versions of kairos.
//!
//! At start ([`StartRules::resolve`]), with a checkpoint that recorded its rules:
//! - the recorded set is in force at the resumed instant, and the sets that took force later
//!   are scheduled at their instants;
//! - a folder that differs from the newest of them is a change made while the engine was
//!   down: it takes force right after them (as a live change takes force at the event time
//!   the engine has reached);
//! - a folder that does not check is logged and counted, and the recorded sets keep running
//!   (a broken save the running engine refused no longer stops every later restart).
//!
//! Without such a record (a first start, or a checkpoint written by an older kairos), the
//! folder is in force and must check, as before.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;

use kairos_model::{Millis, RuleSet};
use serde::{Deserialize, Serialize};

use super::RuleError;

/// Files of a rule set: name → text (the rule files and `policy.toml`).
pub type Files = BTreeMap<String, String>;

/// A rule set and the event time it took force at.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RulesAt {
    pub at: Millis,
    /// The set's fingerprint (see [`fingerprint_of`]).
    pub version: String,
    pub files: Files,
}

/// What a checkpoint records of the rules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RulesRecord {
    /// The set in force at the checkpoint's instant.
    pub in_force: RulesAt,
    /// The sets that took force after it, in order (events after the instant were already
    /// decided under them).
    pub later: Vec<RulesAt>,
}

/// A checked set waiting for its instant.
#[derive(Clone, Debug)]
pub struct Pending {
    /// In force from this event time (or at once, when event time is past it).
    pub at: Millis,
    pub set: RuleSet,
    pub version: String,
    pub files: Files,
    /// Recorded by a checkpoint as having taken force at `at`: a newer set from the rules
    /// topic does not replace it.
    pub recorded: bool,
}

impl Pending {
    fn checked(rules: &RulesAt, recorded: bool) -> Result<Pending, Vec<RuleError>> {
        let set = super::load_files(&checkpointed_dir(&rules.version), &rules.files)?;
        Ok(Pending {
            at: rules.at,
            set,
            version: rules.version.clone(),
            files: rules.files.clone(),
            recorded,
        })
    }
}

/// What the errors of a recorded set name as its folder.
fn checkpointed_dir(version: &str) -> std::path::PathBuf {
    format!("checkpointed:{version}").into()
}

/// The sets put in force during this run, for the checkpoint writer: worker 0 adds each
/// switch; each checkpoint takes the record for its instant and forgets what no later
/// checkpoint can need.
#[derive(Debug)]
pub struct RulesHistory {
    sets: Mutex<Vec<RulesAt>>,
}

impl RulesHistory {
    /// A history whose first set (in force from `first.at`) is followed by `later`.
    pub fn new(first: RulesAt, later: impl IntoIterator<Item = RulesAt>) -> RulesHistory {
        let mut sets = vec![first];
        sets.extend(later);
        RulesHistory { sets: Mutex::new(sets) }
    }

    /// A set took force at `at` (worker 0, when it switches).
    pub fn switched(&self, at: Millis, version: &str, files: &Files) {
        let mut sets = self.sets.lock().unwrap_or_else(|p| p.into_inner());
        // Instants only grow: a set at the same instant as the previous one replaces it.
        sets.retain(|s| s.at < at);
        sets.push(RulesAt {
            at,
            version: version.to_string(),
            files: files.clone(),
        });
    }

    /// The record for a checkpoint at `at` (events before `at` are in its states). Sets
    /// replaced before `at` are dropped: checkpoints are taken in increasing instants.
    pub fn record_at(&self, at: Millis) -> RulesRecord {
        let mut sets = self.sets.lock().unwrap_or_else(|p| p.into_inner());
        // The set in force at `at` is the last that took force at or before it; the first
        // set is in force from the run's start whatever its instant says.
        let in_force = sets.iter().rposition(|s| s.at <= at).unwrap_or(0);
        sets.drain(..in_force);
        RulesRecord {
            in_force: sets[0].clone(),
            later: sets[1..].to_vec(),
        }
    }
}

/// A content hash of a rule set's files (name and bytes, in name order): the same as
/// [`super::watch::fingerprint`] of a folder holding exactly these files.
pub fn fingerprint_of(files: &Files) -> String {
    super::watch::fingerprint_parts(files.iter().map(|(name, text)| (name.as_str(), text.as_bytes())))
}

/// A folder's files, checked.
pub struct Folder {
    pub version: String,
    pub result: Result<(RuleSet, Files), Vec<RuleError>>,
}

impl Folder {
    pub fn read(dir: &Path) -> Folder {
        match super::read_dir_files(dir) {
            Ok(files) => Folder {
                version: fingerprint_of(&files),
                result: super::load_files(dir, &files).map(|set| (set, files)),
            },
            Err(errors) => Folder {
                version: super::watch::fingerprint(dir),
                result: Err(errors),
            },
        }
    }
}

/// The rules a run starts with.
#[derive(Debug)]
pub struct StartRules {
    /// In force at the resumed instant.
    pub in_force: RuleSet,
    pub version: String,
    pub files: Files,
    /// Sets to put in force later, in order.
    pub queue: VecDeque<Pending>,
    /// The folder's version and problems when it does not check (logged and counted at
    /// start; the watcher does not refuse it again on every look).
    pub folder_rejected: Option<(String, Vec<String>)>,
    /// The folder's version (what the watcher compares against).
    pub folder_version: String,
    /// What happened, for the start's log (no personal data: versions and counts).
    pub notes: Vec<String>,
}

/// Why the rules a run needs could not be had.
#[derive(Debug)]
pub struct NoRules(pub Vec<RuleError>);

impl StartRules {
    /// The rules to resume at `resumed_at` with: the checkpoint's record when it has one that
    /// checks, the folder otherwise (see the module's documentation).
    pub fn resolve(folder: Folder, record: Option<&RulesRecord>, resumed_at: Millis) -> Result<StartRules, NoRules> {
        let mut notes = Vec::new();
        let recorded = record.and_then(|record| {
            let checked = Pending::checked(&record.in_force, true).and_then(|first| {
                let later = record
                    .later
                    .iter()
                    .map(|r| Pending::checked(r, true))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((first, later))
            });
            match checked {
                Ok(sets) => Some(sets),
                Err(errors) => {
                    notes.push(format!(
                        "the rules the checkpoint recorded (version {}) do not check with this kairos ({} problem(s), first: {}): the folder's are used",
                        record.in_force.version,
                        errors.len(),
                        errors.first().map(ToString::to_string).unwrap_or_default()
                    ));
                    None
                }
            }
        });
        let folder_version = folder.version.clone();
        let (first, mut queue, folder_rejected) = match (recorded, folder.result) {
            (None, Err(errors)) => return Err(NoRules(errors)),
            (None, Ok((set, files))) => {
                let first = Pending {
                    at: 0,
                    set,
                    version: folder.version,
                    files,
                    recorded: false,
                };
                (first, VecDeque::new(), None)
            }
            (Some((first, later)), folder_result) => {
                let mut queue: VecDeque<Pending> = later.into();
                let newest = queue.back().unwrap_or(&first).version.clone();
                let rejected = match folder_result {
                    Ok((set, files)) => {
                        if folder.version != newest {
                            notes.push(format!(
                                "the rules folder (version {}) differs from the set the checkpoint recorded (version {newest}): it takes force on resuming",
                                folder.version
                            ));
                            queue.push_back(Pending {
                                at: 0,
                                set,
                                version: folder.version,
                                files,
                                recorded: false,
                            });
                        }
                        None
                    }
                    Err(errors) => {
                        notes.push(format!(
                            "the rules folder (version {}) does not check ({} problem(s), first: {}): the set the checkpoint recorded (version {newest}) stays in force",
                            folder.version,
                            errors.len(),
                            errors.first().map(ToString::to_string).unwrap_or_default()
                        ));
                        Some((folder.version, errors.iter().map(ToString::to_string).collect()))
                    }
                };
                (first, queue, rejected)
            }
        };
        // What is due by the resumed instant is in force from the start.
        let mut in_force = first;
        while let Some(next) = queue.pop_front() {
            if next.at > resumed_at {
                queue.push_front(next);
                break;
            }
            in_force = next;
        }
        Ok(StartRules {
            in_force: in_force.set,
            version: in_force.version,
            files: in_force.files,
            queue,
            folder_rejected,
            folder_version,
            notes,
        })
    }

    /// Schedules the newest set of the rules topic, unless it is already the newest set here.
    pub fn published(&mut self, pending: Pending, resumed_at: Millis) {
        let newest = self.queue.back().map_or(&self.version, |p| &p.version);
        if *newest == pending.version {
            return;
        }
        if self.queue.is_empty() && pending.at <= resumed_at {
            self.in_force = pending.set;
            self.version = pending.version;
            self.files = pending.files;
        } else {
            self.queue.push_back(pending);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, offer: &str) -> (String, String) {
        (
            format!("{id}.toml"),
            format!("id = \"{id}\"\nmoment = \"roaming_arrival\"\noffer = \"{offer}\"\nchannel = \"sms\"\nclass = \"regulatory\"\n[messages]\nen = \"hi\"\n"),
        )
    }

    fn files(rules: &[(&str, &str)]) -> Files {
        rules.iter().map(|(id, offer)| rule(id, offer)).collect()
    }

    fn at(at: Millis, files: Files) -> RulesAt {
        RulesAt {
            at,
            version: fingerprint_of(&files),
            files,
        }
    }

    fn folder(files: Files) -> Folder {
        Folder {
            version: fingerprint_of(&files),
            result: super::super::load_files(Path::new("rules"), &files).map(|set| (set, files)),
        }
    }

    fn broken() -> Folder {
        let mut files = files(&[("a", "A1")]);
        files.insert("b.toml".into(), "id = \"b\"\nmoment = ".into());
        folder(files)
    }

    #[test]
    fn a_checkpoint_records_the_set_in_force_at_its_instant_and_those_after_it() {
        let (a, b, c) = (files(&[("a", "A1")]), files(&[("a", "A2")]), files(&[("a", "A3")]));
        let history = RulesHistory::new(at(0, a.clone()), []);
        history.switched(100, &fingerprint_of(&b), &b);
        history.switched(200, &fingerprint_of(&c), &c);
        let record = history.record_at(50);
        assert_eq!(record.in_force, at(0, a));
        assert_eq!(record.later, vec![at(100, b.clone()), at(200, c.clone())]);
        // At the switch's instant the new set is in force (events at 100 were decided by it).
        let record = history.record_at(100);
        assert_eq!((record.in_force, record.later), (at(100, b), vec![at(200, c.clone())]));
        let record = history.record_at(500);
        assert_eq!((record.in_force, record.later), (at(200, c), vec![]));
    }

    #[test]
    fn a_restart_resumes_with_the_recorded_sets_whatever_the_folder_holds() {
        let (a, b) = (files(&[("a", "A1")]), files(&[("a", "A2")]));
        let record = RulesRecord {
            in_force: at(0, a.clone()),
            later: vec![at(100, b.clone())],
        };
        // The folder was put back to `a` after the crash: `b` still takes force at 100, and
        // `a` again after it.
        let start = StartRules::resolve(folder(a.clone()), Some(&record), 50).unwrap();
        assert_eq!(start.version, fingerprint_of(&a));
        let queued: Vec<(Millis, String, bool)> = start
            .queue
            .iter()
            .map(|p| (p.at, p.version.clone(), p.recorded))
            .collect();
        assert_eq!(
            queued,
            vec![(100, fingerprint_of(&b), true), (0, fingerprint_of(&a), false)]
        );
        // The folder holds `b`: nothing to add.
        let start = StartRules::resolve(folder(b.clone()), Some(&record), 50).unwrap();
        assert_eq!(start.queue.len(), 1);
        // Resumed past 100: `b` is in force from the start.
        let start = StartRules::resolve(folder(b.clone()), Some(&record), 150).unwrap();
        assert_eq!((start.version, start.queue.len()), (fingerprint_of(&b), 0));
    }

    #[test]
    fn a_broken_folder_at_restart_keeps_the_recorded_set_and_stops_only_a_first_start() {
        let a = files(&[("a", "A1")]);
        let record = RulesRecord {
            in_force: at(0, a.clone()),
            later: vec![],
        };
        let start = StartRules::resolve(broken(), Some(&record), 50).unwrap();
        assert_eq!(start.version, fingerprint_of(&a));
        assert!(start.queue.is_empty());
        let (version, problems) = start.folder_rejected.unwrap();
        assert_eq!(version, broken().version);
        assert!(problems[0].contains("b.toml"), "{problems:?}");
        assert!(start.notes[0].contains("does not check"), "{:?}", start.notes);
        assert!(StartRules::resolve(broken(), None, 50).is_err());
    }

    #[test]
    fn a_recorded_set_this_kairos_cannot_check_falls_back_to_the_folder() {
        let mut odd = files(&[("a", "A1")]);
        odd.insert("a.toml".into(), "id = \"a\"\nno_such_field = 1\n".into());
        let record = RulesRecord {
            in_force: at(0, odd),
            later: vec![],
        };
        let a = files(&[("a", "A1")]);
        let start = StartRules::resolve(folder(a.clone()), Some(&record), 50).unwrap();
        assert_eq!(start.version, fingerprint_of(&a));
        assert!(start.notes[0].contains("do not check"), "{:?}", start.notes);
    }

    #[test]
    fn the_folder_fingerprint_and_the_files_fingerprint_agree() {
        let dir = tempfile::tempdir().unwrap();
        let a = files(&[("a", "A1"), ("b", "B1")]);
        for (name, text) in &a {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), "not a rule").unwrap();
        assert_eq!(super::super::watch::fingerprint(dir.path()), fingerprint_of(&a));
        assert_eq!(Folder::read(dir.path()).version, fingerprint_of(&a));
    }
}
