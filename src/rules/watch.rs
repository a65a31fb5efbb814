//! Live rule changes: `kairos run` looks at its rules folder every `rules_poll_ms` and, when
//! its content has changed and stayed the same for one more look (an editor's save is
//! complete), checks the new set; a valid set is handed to the dataflow to take force at one
//! event time on every worker, an invalid one is logged, counted and ignored — the running
//! set stays in force.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kairos_model::RuleSet;
use sha2::{Digest, Sha256};

/// A content hash of every `*.toml` file directly in `dir` (name and bytes), in name order:
/// what changes when a rule or the policy is saved, added or removed. Also the rule set's
/// version in logs.
pub fn fingerprint(dir: &Path) -> String {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    let files: Vec<(String, Vec<u8>)> = paths
        .iter()
        .map(|path| {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, std::fs::read(path).unwrap_or_default())
        })
        .collect();
    fingerprint_parts(files.iter().map(|(name, bytes)| (name.as_str(), bytes.as_slice())))
}

/// The hash of [`fingerprint`] over (name, bytes) pairs given in name order.
pub fn fingerprint_parts<'a>(files: impl Iterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut hasher = Sha256::new();
    for (name, bytes) in files {
        for part in [name.as_bytes(), bytes] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
    }
    hasher.finalize()[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// What a look at the folder found.
#[derive(Debug)]
pub enum Change {
    /// A new valid set, with its version (the folder's fingerprint) and its files.
    Valid {
        rules: Box<RuleSet>,
        version: String,
        files: super::history::Files,
    },
    /// A new set that does not check: each problem, one line.
    Invalid { version: String, problems: Vec<String> },
}

/// Watches one rules folder.
pub struct RulesWatcher {
    dir: PathBuf,
    every: Duration,
    last_look: Instant,
    /// The fingerprint of the set in force, and of the last one rejected.
    in_force: String,
    rejected: Option<String>,
    /// What the previous look saw: a change is taken once two looks agree.
    previous: String,
}

impl RulesWatcher {
    /// A watcher of `dir`, whose current content is in force.
    pub fn new(dir: &Path, every: Duration) -> RulesWatcher {
        RulesWatcher::resume(dir, every, &fingerprint(dir), None)
    }

    /// A watcher of `dir` whose content (version `folder`) was taken at start, or refused
    /// there (`rejected`): only a later change is news.
    pub fn resume(dir: &Path, every: Duration, folder: &str, rejected: Option<String>) -> RulesWatcher {
        RulesWatcher {
            dir: dir.to_path_buf(),
            every,
            last_look: Instant::now(),
            previous: folder.to_string(),
            in_force: folder.to_string(),
            rejected,
        }
    }

    /// The version of the set in force.
    pub fn version(&self) -> &str {
        &self.in_force
    }

    /// Looks at the folder if it is time; a change that has held since the previous look is
    /// checked and returned once.
    pub fn look(&mut self) -> Option<Change> {
        if self.last_look.elapsed() < self.every {
            return None;
        }
        self.last_look = Instant::now();
        let now = fingerprint(&self.dir);
        let settled = now == self.previous;
        self.previous = now.clone();
        if !settled || now == self.in_force || self.rejected.as_ref() == Some(&now) {
            return None;
        }
        match super::read_dir_files(&self.dir)
            .and_then(|files| super::load_files(&self.dir, &files).map(|rules| (rules, files)))
        {
            Ok((rules, files)) => {
                self.in_force = now.clone();
                self.rejected = None;
                Some(Change::Valid {
                    rules: Box::new(rules),
                    version: now,
                    files,
                })
            }
            Err(errors) => {
                self.rejected = Some(now.clone());
                Some(Change::Invalid {
                    version: now,
                    problems: errors.iter().map(ToString::to_string).collect(),
                })
            }
        }
    }
}

/// What changed between two rule sets, by rule id: (added, changed, removed).
pub fn changes(old: &RuleSet, new: &RuleSet) -> (Vec<String>, Vec<String>, Vec<String>) {
    let versions = |set: &RuleSet| -> BTreeMap<String, String> {
        set.rules.iter().map(|r| (r.id.clone(), r.version.clone())).collect()
    };
    let (before, after) = (versions(old), versions(new));
    let added = after.keys().filter(|id| !before.contains_key(*id)).cloned().collect();
    let removed = before.keys().filter(|id| !after.contains_key(*id)).cloned().collect();
    let changed = after
        .iter()
        .filter(|(id, version)| before.get(*id).is_some_and(|v| v != *version))
        .map(|(id, _)| id.clone())
        .collect();
    (added, changed, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: &str =
        "id = \"r\"\nmoment = \"roaming_arrival\"\noffer = \"O\"\nchannel = \"sms\"\n[messages]\nen = \"hi\"\n";

    #[test]
    fn a_settled_valid_change_is_taken_once_and_an_invalid_one_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("r.toml"), RULE).unwrap();
        let mut watcher = RulesWatcher::new(dir.path(), Duration::ZERO);
        let first = watcher.version().to_string();
        assert!(watcher.look().is_none(), "nothing changed");
        std::fs::write(dir.path().join("r.toml"), RULE.replace("hi", "hello")).unwrap();
        assert!(watcher.look().is_none(), "a change is taken once it has settled");
        match watcher.look() {
            Some(Change::Valid { rules, version, .. }) => {
                assert_eq!(rules.rules[0].messages["en"], "hello");
                assert_ne!(version, first);
            }
            other => panic!("expected a valid change, got {other:?}"),
        }
        assert!(watcher.look().is_none(), "taken once");
        std::fs::write(dir.path().join("r.toml"), RULE.replace("sms", "fax")).unwrap();
        watcher.look();
        match watcher.look() {
            Some(Change::Invalid { problems, .. }) => assert!(problems[0].contains("r.toml:4"), "{problems:?}"),
            other => panic!("expected an invalid change, got {other:?}"),
        }
        assert!(watcher.look().is_none(), "reported once");
        // Putting the file back as it was in force is no change.
        std::fs::write(dir.path().join("r.toml"), RULE.replace("hi", "hello")).unwrap();
        watcher.look();
        assert!(watcher.look().is_none());
    }

    #[test]
    fn changes_name_added_changed_and_removed_rules() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.toml"), RULE.replace("\"r\"", "\"a\"")).unwrap();
        std::fs::write(dir.path().join("b.toml"), RULE.replace("\"r\"", "\"b\"")).unwrap();
        let old = super::super::load_dir(dir.path()).unwrap();
        std::fs::write(
            dir.path().join("a.toml"),
            RULE.replace("\"r\"", "\"a\"").replace("hi", "yo"),
        )
        .unwrap();
        std::fs::remove_file(dir.path().join("b.toml")).unwrap();
        std::fs::write(dir.path().join("c.toml"), RULE.replace("\"r\"", "\"c\"")).unwrap();
        let new = super::super::load_dir(dir.path()).unwrap();
        assert_eq!(
            changes(&old, &new),
            (vec!["c".to_string()], vec!["a".to_string()], vec!["b".to_string()])
        );
    }
}
