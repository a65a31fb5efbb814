//! Scores reconstructed households against the true ones.
//!
//! Both sides are assignments of subscribers to household labels (one JSON line per subscriber,
//! `{"msisdn":"…","household":"…"}`, other fields ignored). The subscribers are those of the
//! truth: one missing from the prediction counts as a household of its own; one the truth does
//! not know is counted and otherwise ignored.
//!
//! - **Pairwise** precision, recall and F1 over pairs of subscribers placed in one household:
//!   counted from the contingency table of (predicted, true) households, `Σ C(n, 2)` over its
//!   cells, never over all pairs of subscribers. With no predicted pairs the precision is 1
//!   (no pair is wrong); with no true pairs the recall is 1.
//! - **Exact** households: true households whose members form exactly one predicted household.
//! - **Decision maker** accuracy, when both sides name decision makers: a line's
//!   `decision_maker` is either the msisdn of its household's decision maker, or `true` when the
//!   subscriber is the decision maker (so is `"role":"payer"`). Over the subscribers of true
//!   households of two or more, the share whose predicted decision maker is the true one, and
//!   the share of such households right for every member.

use std::collections::HashMap;
use std::io::BufRead;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;

/// One subscriber's household (true or predicted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// E.164 digits, without a leading `+`.
    pub msisdn: String,
    pub household: String,
    pub decision_maker: Option<DecisionMaker>,
}

/// What a line says about its household's decision maker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionMaker {
    /// The msisdn of the household's decision maker.
    Msisdn(String),
    /// Whether this subscriber is the decision maker.
    Is(bool),
}

impl Assignment {
    /// An assignment without a decision maker.
    pub fn new(msisdn: impl Into<String>, household: impl Into<String>) -> Assignment {
        Assignment {
            msisdn: normalize(&msisdn.into()).to_string(),
            household: household.into(),
            decision_maker: None,
        }
    }

    /// The same, naming the decision maker.
    pub fn with_decision_maker(mut self, decision_maker: DecisionMaker) -> Assignment {
        self.decision_maker = Some(match decision_maker {
            DecisionMaker::Msisdn(m) => DecisionMaker::Msisdn(normalize(&m).to_string()),
            is => is,
        });
        self
    }

    /// Reads one JSON line: `msisdn` and `household` (strings or numbers), optionally
    /// `decision_maker` (an msisdn or a boolean) or `role` (`"payer"` = decision maker).
    pub fn from_json(line: &str) -> Result<Assignment> {
        let value: Value = serde_json::from_str(line).context("not JSON")?;
        let id = |key: &str| -> Result<String> {
            match value.get(key) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(Value::Number(n)) => Ok(n.to_string()),
                Some(_) => bail!("`{key}` is neither a string nor a number"),
                None => bail!("no `{key}`"),
            }
        };
        let mut assignment = Assignment::new(id("msisdn")?, id("household")?);
        let decision_maker = match value.get("decision_maker") {
            None | Some(Value::Null) => value
                .get("role")
                .and_then(Value::as_str)
                .map(|role| DecisionMaker::Is(role == "payer" || role == "decision_maker")),
            Some(Value::Bool(b)) => Some(DecisionMaker::Is(*b)),
            Some(Value::String(s)) => Some(DecisionMaker::Msisdn(s.clone())),
            Some(Value::Number(n)) => Some(DecisionMaker::Msisdn(n.to_string())),
            Some(_) => bail!("`decision_maker` is neither an msisdn nor a boolean"),
        };
        if let Some(dm) = decision_maker {
            assignment = assignment.with_decision_maker(dm);
        }
        Ok(assignment)
    }
}

impl From<&crate::households::TruthRecord> for Assignment {
    /// The truth about one subscriber, decision maker included (to score in Rust tests).
    fn from(t: &crate::households::TruthRecord) -> Assignment {
        Assignment::new(t.msisdn.clone(), t.household.clone())
            .with_decision_maker(DecisionMaker::Msisdn(t.decision_maker.clone()))
    }
}

fn normalize(msisdn: &str) -> &str {
    msisdn.strip_prefix('+').unwrap_or(msisdn)
}

/// Reads JSON lines of assignments (blank lines skipped); `what` names the input in errors.
pub fn read_assignments(reader: impl BufRead, what: &str) -> Result<Vec<Assignment>> {
    let mut out = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {what}"))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(Assignment::from_json(&line).with_context(|| format!("{what}, line {}", n + 1))?);
    }
    Ok(out)
}

/// Exact reconstructions among the true households of one size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SizeScore {
    pub size: u64,
    pub households: u64,
    pub exact: u64,
}

/// Decision-maker accuracy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionMakerScore {
    /// Subscribers of true households of two or more.
    pub subscribers: u64,
    /// … whose predicted decision maker is the true one.
    pub correct: u64,
    pub accuracy: f64,
    /// True households of two or more.
    pub households: u64,
    /// … where every member's predicted decision maker is the true one.
    pub households_correct: u64,
    pub household_accuracy: f64,
}

/// How well a prediction reconstructs the true households.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    /// Subscribers in the truth.
    pub subscribers: u64,
    /// Truth subscribers without a line in the prediction (each counted as a household of one).
    pub missing_in_got: u64,
    /// Prediction lines for subscribers the truth does not know (ignored).
    pub unknown_in_got: u64,
    /// Further prediction lines for a subscriber already seen (the first one counts).
    pub duplicates_in_got: u64,
    pub true_households: u64,
    /// True households of two or more.
    pub true_multi_households: u64,
    pub largest_true_household: u64,
    pub predicted_households: u64,
    pub predicted_multi_households: u64,
    pub largest_predicted_household: u64,
    pub true_pairs: u64,
    pub predicted_pairs: u64,
    /// Pairs in one household in both.
    pub correct_pairs: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// True households reconstructed exactly (the same member set).
    pub exact_households: u64,
    pub exact_share: f64,
    /// True households of two or more reconstructed exactly.
    pub exact_multi_households: u64,
    pub exact_multi_share: f64,
    pub by_true_size: Vec<SizeScore>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_maker: Option<DecisionMakerScore>,
}

fn pairs(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        1.0
    } else {
        part as f64 / whole as f64
    }
}

/// Interns labels as dense ids.
#[derive(Default)]
struct Labels<'a> {
    ids: HashMap<&'a str, u32>,
}

impl<'a> Labels<'a> {
    fn id(&mut self, label: &'a str) -> u32 {
        let next = self.ids.len() as u32;
        *self.ids.entry(label).or_insert(next)
    }
}

/// Scores `got` against `truth`. Fails when the truth names a subscriber twice.
pub fn score(truth: &[Assignment], got: &[Assignment]) -> Result<Score> {
    let n = truth.len();
    let mut index: HashMap<&str, u32> = HashMap::with_capacity(n);
    let mut true_labels = Labels::default();
    let mut true_of = Vec::with_capacity(n);
    for (i, a) in truth.iter().enumerate() {
        if index.insert(a.msisdn.as_str(), i as u32).is_some() {
            bail!("the truth names subscriber {} twice", a.msisdn);
        }
        true_of.push(true_labels.id(&a.household));
    }
    const NONE: u32 = u32::MAX;
    let mut got_labels = Labels::default();
    let mut pred_of = vec![NONE; n];
    let mut got_line = vec![NONE; n];
    let (mut unknown, mut duplicates) = (0u64, 0u64);
    for (k, a) in got.iter().enumerate() {
        match index.get(a.msisdn.as_str()) {
            None => unknown += 1,
            Some(&i) if pred_of[i as usize] != NONE => duplicates += 1,
            Some(&i) => {
                pred_of[i as usize] = got_labels.id(&a.household);
                got_line[i as usize] = k as u32;
            }
        }
    }
    let mut next = got_labels.ids.len() as u32;
    let mut missing = 0u64;
    for p in pred_of.iter_mut().filter(|p| **p == NONE) {
        *p = next;
        next += 1;
        missing += 1;
    }
    let true_count = true_labels.ids.len();
    let mut true_size = vec![0u64; true_count];
    let mut pred_size = vec![0u64; next as usize];
    for i in 0..n {
        true_size[true_of[i] as usize] += 1;
        pred_size[pred_of[i] as usize] += 1;
    }
    let predicted_households = pred_size.iter().filter(|&&s| s > 0).count() as u64;

    // The contingency table, as runs of equal (predicted, true) keys.
    let mut cells: Vec<u64> = (0..n)
        .map(|i| (u64::from(pred_of[i]) << 32) | u64::from(true_of[i]))
        .collect();
    cells.sort_unstable();
    let mut correct_pairs = 0u64;
    let mut exact_of = vec![false; true_count];
    let mut at = 0;
    while at < cells.len() {
        let key = cells[at];
        let run = cells[at..].iter().take_while(|&&c| c == key).count();
        let (p, t) = ((key >> 32) as usize, (key & 0xffff_ffff) as usize);
        correct_pairs += pairs(run as u64);
        if run as u64 == true_size[t] && run as u64 == pred_size[p] {
            exact_of[t] = true;
        }
        at += run;
    }
    let true_pairs: u64 = true_size.iter().map(|&s| pairs(s)).sum();
    let predicted_pairs: u64 = pred_size.iter().map(|&s| pairs(s)).sum();
    let precision = share(correct_pairs, predicted_pairs);
    let recall = share(correct_pairs, true_pairs);
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    let largest_true = true_size.iter().copied().max().unwrap_or(0);
    let mut by_size: Vec<SizeScore> = (1..=largest_true)
        .map(|size| SizeScore {
            size,
            households: 0,
            exact: 0,
        })
        .collect();
    for (t, &size) in true_size.iter().enumerate() {
        let entry = &mut by_size[size as usize - 1];
        entry.households += 1;
        entry.exact += u64::from(exact_of[t]);
    }
    by_size.retain(|s| s.households > 0);
    let exact = exact_of.iter().filter(|&&e| e).count() as u64;
    let multi = true_size.iter().filter(|&&s| s > 1).count() as u64;
    let exact_multi = (0..true_count).filter(|&t| exact_of[t] && true_size[t] > 1).count() as u64;

    let decision_maker = decision_makers(truth, got, &index, &true_of, &true_size, &pred_of, &got_line);
    Ok(Score {
        subscribers: n as u64,
        missing_in_got: missing,
        unknown_in_got: unknown,
        duplicates_in_got: duplicates,
        true_households: true_count as u64,
        true_multi_households: multi,
        largest_true_household: largest_true,
        predicted_households,
        predicted_multi_households: pred_size.iter().filter(|&&s| s > 1).count() as u64,
        largest_predicted_household: pred_size.iter().copied().max().unwrap_or(0),
        true_pairs,
        predicted_pairs,
        correct_pairs,
        precision,
        recall,
        f1,
        exact_households: exact,
        exact_share: share(exact, true_count as u64),
        exact_multi_households: exact_multi,
        exact_multi_share: share(exact_multi, multi),
        by_true_size: by_size,
        decision_maker,
    })
}

/// Each subscriber's decision maker (subscriber index) as `assignments` say, with `cluster_of`
/// the household of each subscriber and `line_of` its line (`u32::MAX`: none); `None` for
/// those without an answer (or an ambiguous one). `None` overall when no line names one.
fn named_decision_makers(
    assignments: &[Assignment],
    index: &HashMap<&str, u32>,
    cluster_of: &[u32],
    line_of: &[u32],
) -> Option<Vec<Option<u32>>> {
    if assignments.iter().all(|a| a.decision_maker.is_none()) {
        return None;
    }
    // Flags: the flagged member of each cluster (u32::MAX - 1 when more than one).
    const NONE: u32 = u32::MAX;
    const MANY: u32 = u32::MAX - 1;
    let mut flagged: HashMap<u32, u32> = HashMap::new();
    for (i, &line) in line_of.iter().enumerate() {
        if line == NONE {
            continue;
        }
        if let Some(DecisionMaker::Is(true)) = assignments[line as usize].decision_maker {
            flagged
                .entry(cluster_of[i])
                .and_modify(|f| *f = MANY)
                .or_insert(i as u32);
        }
    }
    Some(
        line_of
            .iter()
            .enumerate()
            .map(|(i, &line)| {
                if line == NONE {
                    return None;
                }
                match &assignments[line as usize].decision_maker {
                    Some(DecisionMaker::Msisdn(m)) => index.get(m.as_str()).copied(),
                    _ => flagged.get(&cluster_of[i]).copied().filter(|&f| f != MANY),
                }
            })
            .collect(),
    )
}

fn decision_makers(
    truth: &[Assignment],
    got: &[Assignment],
    index: &HashMap<&str, u32>,
    true_of: &[u32],
    true_size: &[u64],
    pred_of: &[u32],
    got_line: &[u32],
) -> Option<DecisionMakerScore> {
    let truth_lines: Vec<u32> = (0..truth.len() as u32).collect();
    let expected = named_decision_makers(truth, index, true_of, &truth_lines)?;
    let predicted = named_decision_makers(got, index, pred_of, got_line)?;
    // A true household's decision maker: what its members say (the first that says).
    let mut true_dm = vec![None; true_size.len()];
    for (i, dm) in expected.iter().enumerate() {
        let slot = &mut true_dm[true_of[i] as usize];
        if slot.is_none() {
            *slot = *dm;
        }
    }
    let (mut subscribers, mut correct) = (0u64, 0u64);
    let mut wrong = vec![false; true_size.len()];
    for i in 0..truth.len() {
        let t = true_of[i] as usize;
        if true_size[t] < 2 || true_dm[t].is_none() {
            continue;
        }
        subscribers += 1;
        if predicted[i].is_some() && predicted[i] == true_dm[t] {
            correct += 1;
        } else {
            wrong[t] = true;
        }
    }
    let households = (0..true_size.len())
        .filter(|&t| true_size[t] > 1 && true_dm[t].is_some())
        .count() as u64;
    let households_correct = (0..true_size.len())
        .filter(|&t| true_size[t] > 1 && true_dm[t].is_some() && !wrong[t])
        .count() as u64;
    Some(DecisionMakerScore {
        subscribers,
        correct,
        accuracy: share(correct, subscribers),
        households,
        households_correct,
        household_accuracy: share(households_correct, households),
    })
}

impl Score {
    /// A human-readable report.
    pub fn report(&self) -> String {
        let pct = |x: f64| format!("{:.2} %", 100.0 * x);
        let mut out = String::new();
        out += &format!(
            "subscribers          {} (missing from got: {}, unknown to the truth: {}, duplicate lines: {})\n",
            self.subscribers, self.missing_in_got, self.unknown_in_got, self.duplicates_in_got
        );
        out += &format!(
            "true households      {} ({} with 2+ members, largest {})\n",
            self.true_households, self.true_multi_households, self.largest_true_household
        );
        out += &format!(
            "predicted households {} ({} with 2+ members, largest {})\n",
            self.predicted_households, self.predicted_multi_households, self.largest_predicted_household
        );
        out += &format!(
            "pairs                true {}, predicted {}, correct {}\n",
            self.true_pairs, self.predicted_pairs, self.correct_pairs
        );
        out += &format!(
            "pairwise             precision {:.4}  recall {:.4}  F1 {:.4}\n",
            self.precision, self.recall, self.f1
        );
        out += &format!(
            "exact households     {} / {} = {} (2+ members: {} / {} = {})\n",
            self.exact_households,
            self.true_households,
            pct(self.exact_share),
            self.exact_multi_households,
            self.true_multi_households,
            pct(self.exact_multi_share)
        );
        let sizes: Vec<String> = self
            .by_true_size
            .iter()
            .map(|s| format!("{}: {}/{}", s.size, s.exact, s.households))
            .collect();
        out += &format!("exact by true size   {}\n", sizes.join("  "));
        if let Some(dm) = &self.decision_maker {
            out += &format!(
                "decision maker       {} / {} subscribers = {}, {} / {} households = {}\n",
                dm.correct,
                dm.subscribers,
                pct(dm.accuracy),
                dm.households_correct,
                dm.households,
                pct(dm.household_accuracy)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Assignments from `[(household, [members])]`.
    fn groups(groups: &[(&str, &[&str])]) -> Vec<Assignment> {
        groups
            .iter()
            .flat_map(|(h, members)| members.iter().map(move |m| Assignment::new(*m, *h)))
            .collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn perfect_prediction() {
        let truth = groups(&[("T1", &["a", "b", "c"]), ("T2", &["d", "e"]), ("T3", &["f"])]);
        // Other labels, other order: still perfect.
        let got = groups(&[("x", &["f"]), ("y", &["e", "d"]), ("z", &["c", "a", "b"])]);
        let s = score(&truth, &got).unwrap();
        assert_eq!((s.true_pairs, s.predicted_pairs, s.correct_pairs), (4, 4, 4));
        assert!(close(s.precision, 1.0) && close(s.recall, 1.0) && close(s.f1, 1.0));
        assert_eq!(
            (s.exact_households, s.true_households, s.exact_multi_households),
            (3, 3, 2)
        );
        assert_eq!((s.predicted_households, s.largest_predicted_household), (3, 3));
        assert!(s.decision_maker.is_none());
    }

    #[test]
    fn merge_error() {
        // {a,b} and {c,d} merged: true pairs 1+1 = 2, predicted C(4,2) = 6, correct 2.
        let truth = groups(&[("T1", &["a", "b"]), ("T2", &["c", "d"]), ("T3", &["e"])]);
        let got = groups(&[("X", &["a", "b", "c", "d"]), ("Y", &["e"])]);
        let s = score(&truth, &got).unwrap();
        assert_eq!((s.true_pairs, s.predicted_pairs, s.correct_pairs), (2, 6, 2));
        assert!(close(s.precision, 1.0 / 3.0));
        assert!(close(s.recall, 1.0));
        // F1 = 2·(1/3)·1 / (1/3 + 1) = 0.5
        assert!(close(s.f1, 0.5));
        assert_eq!(s.exact_households, 1); // {e}
        assert!(close(s.exact_share, 1.0 / 3.0));
        assert_eq!((s.exact_multi_households, s.true_multi_households), (0, 2));
        assert_eq!((s.predicted_households, s.largest_predicted_household), (2, 4));
        assert_eq!(
            s.by_true_size,
            vec![
                SizeScore {
                    size: 1,
                    households: 1,
                    exact: 1
                },
                SizeScore {
                    size: 2,
                    households: 2,
                    exact: 0
                }
            ]
        );
    }

    #[test]
    fn split_error() {
        // {a,b,c} split into {a,b} + {c}: true pairs 3, predicted 1, correct 1.
        let truth = groups(&[("T1", &["a", "b", "c"]), ("T2", &["d"])]);
        let got = groups(&[("X", &["a", "b"]), ("Y", &["c"]), ("Z", &["d"])]);
        let s = score(&truth, &got).unwrap();
        assert_eq!((s.true_pairs, s.predicted_pairs, s.correct_pairs), (3, 1, 1));
        assert!(close(s.precision, 1.0));
        assert!(close(s.recall, 1.0 / 3.0));
        // F1 = 2·1·(1/3) / (1 + 1/3) = 0.5
        assert!(close(s.f1, 0.5));
        assert_eq!(s.exact_households, 1); // {d}
        assert_eq!((s.predicted_households, s.largest_predicted_household), (3, 2));
    }

    #[test]
    fn mixed_errors_missing_and_unknown_subscribers() {
        // Truth {a,b,c,d} {e,f}; got X = {a,b,e}, Y = {c,d}, f missing, z unknown, a twice.
        let truth = groups(&[("T1", &["a", "b", "c", "d"]), ("T2", &["e", "f"])]);
        let mut got = groups(&[("X", &["a", "b", "e"]), ("Y", &["c", "d"]), ("W", &["z"])]);
        got.push(Assignment::new("a", "Y"));
        let s = score(&truth, &got).unwrap();
        // True pairs 6 + 1 = 7; predicted 3 + 1 (+ 0 for f alone) = 4;
        // correct: (X,T1) {a,b} 1 + (Y,T1) {c,d} 1 = 2.
        assert_eq!((s.true_pairs, s.predicted_pairs, s.correct_pairs), (7, 4, 2));
        assert!(close(s.precision, 0.5));
        assert!(close(s.recall, 2.0 / 7.0));
        // F1 = 2·0.5·(2/7) / (0.5 + 2/7) = 4/11
        assert!(close(s.f1, 4.0 / 11.0));
        assert_eq!((s.missing_in_got, s.unknown_in_got, s.duplicates_in_got), (1, 1, 1));
        assert_eq!(s.exact_households, 0);
        assert_eq!((s.predicted_households, s.largest_predicted_household), (3, 3));
    }

    #[test]
    fn everybody_alone() {
        let truth = groups(&[("T1", &["a", "b", "c"]), ("T2", &["d", "e"]), ("T3", &["f"])]);
        let got: Vec<Assignment> = ["a", "b", "c", "d", "e", "f"]
            .iter()
            .map(|m| Assignment::new(*m, format!("alone-{m}")))
            .collect();
        let s = score(&truth, &got).unwrap();
        assert_eq!((s.true_pairs, s.predicted_pairs, s.correct_pairs), (4, 0, 0));
        assert!(close(s.precision, 1.0) && close(s.recall, 0.0) && close(s.f1, 0.0));
        assert_eq!(s.exact_households, 1);
        // An empty prediction is the same: everybody alone.
        let empty = score(&truth, &[]).unwrap();
        assert_eq!(empty.missing_in_got, 6);
        assert_eq!((empty.precision, empty.recall, empty.f1), (s.precision, s.recall, s.f1));
        assert_eq!(empty.predicted_households, 6);
    }

    #[test]
    fn decision_makers_by_msisdn_and_by_flag() {
        let dm = |m: &str| DecisionMaker::Msisdn(m.to_string());
        let truth = vec![
            Assignment::new("a", "T1").with_decision_maker(dm("a")),
            Assignment::new("b", "T1").with_decision_maker(dm("a")),
            Assignment::new("c", "T1").with_decision_maker(dm("a")),
            Assignment::new("d", "T2").with_decision_maker(dm("e")),
            Assignment::new("e", "T2").with_decision_maker(dm("e")),
            Assignment::new("f", "T3").with_decision_maker(dm("f")),
        ];
        // By msisdn: c names b; 4 of 5 subscribers right, T2 right, T1 not.
        let got = vec![
            Assignment::new("a", "X").with_decision_maker(dm("a")),
            Assignment::new("b", "X").with_decision_maker(dm("+a")),
            Assignment::new("c", "X").with_decision_maker(dm("b")),
            Assignment::new("d", "Y").with_decision_maker(dm("e")),
            Assignment::new("e", "Y").with_decision_maker(dm("e")),
        ];
        let s = score(&truth, &got).unwrap().decision_maker.unwrap();
        assert_eq!(
            (s.subscribers, s.correct, s.households, s.households_correct),
            (5, 4, 2, 1)
        );
        assert!(close(s.accuracy, 0.8) && close(s.household_accuracy, 0.5));
        // By flag: a flagged in X (right for a, b, c), d flagged in Y (wrong for d, e).
        let got = vec![
            Assignment::new("a", "X").with_decision_maker(DecisionMaker::Is(true)),
            Assignment::new("b", "X").with_decision_maker(DecisionMaker::Is(false)),
            Assignment::new("c", "X"),
            Assignment::from_json(r#"{"msisdn":"d","household":"Y","role":"payer"}"#).unwrap(),
            Assignment::new("e", "Y").with_decision_maker(DecisionMaker::Is(false)),
            Assignment::new("f", "Z").with_decision_maker(DecisionMaker::Is(true)),
        ];
        let s = score(&truth, &got).unwrap().decision_maker.unwrap();
        assert_eq!(
            (s.subscribers, s.correct, s.households, s.households_correct),
            (5, 3, 2, 1)
        );
        // Two flagged in one household: nobody in it has a decision maker.
        let got = vec![
            Assignment::new("a", "X").with_decision_maker(DecisionMaker::Is(true)),
            Assignment::new("b", "X").with_decision_maker(DecisionMaker::Is(true)),
            Assignment::new("c", "X"),
        ];
        let s = score(&truth, &got).unwrap().decision_maker.unwrap();
        assert_eq!((s.correct, s.households_correct), (0, 0));
        // No decision maker in the prediction: no score.
        assert!(score(&truth, &groups(&[("X", &["a"])]))
            .unwrap()
            .decision_maker
            .is_none());
    }

    #[test]
    fn reads_lines() {
        let text = "{\"msisdn\":\"+351910000001\",\"household\":\"H-1\",\"extra\":[1]}\n\n{\"msisdn\":351910000002,\"household\":7,\"decision_maker\":\"351910000001\"}\n";
        let got = read_assignments(text.as_bytes(), "got").unwrap();
        assert_eq!(got[0], Assignment::new("351910000001", "H-1"));
        assert_eq!(
            got[1],
            Assignment::new("351910000002", "7").with_decision_maker(DecisionMaker::Msisdn("351910000001".into()))
        );
        let err = read_assignments("{\"msisdn\":\"1\"}\n".as_bytes(), "got").unwrap_err();
        assert!(format!("{err:#}").contains("line 1"), "{err:#}");
        assert!(score(&[Assignment::new("a", "1"), Assignment::new("a", "2")], &[]).is_err());
    }

    #[test]
    fn the_generated_truth_scores_perfectly_against_itself() {
        let spec = crate::world::WorldSpec {
            subscribers: 5_000,
            days: 1,
            start: chrono::NaiveDate::from_ymd_opt(2026, 7, 1).unwrap(),
            seed: 1,
            events_per_day: 10,
            travel_rate: 0.0,
            invalid_rate: 0.0,
            duplicate_rate: 0.0,
        };
        let pop = crate::households::Population::build(&spec, &crate::households::HouseholdSpec::default());
        let truth: Vec<Assignment> = pop.truth_records().map(|t| Assignment::from(&t)).collect();
        // Through JSON, as the command reads it.
        let lines: String = pop
            .truth_records()
            .map(|t| serde_json::to_string(&t).unwrap() + "\n")
            .collect();
        assert_eq!(read_assignments(lines.as_bytes(), "truth").unwrap(), truth);
        let s = score(&truth, &truth).unwrap();
        assert_eq!((s.f1, s.exact_share), (1.0, 1.0));
        assert_eq!(s.true_households, pop.households().len() as u64);
        assert_eq!(s.decision_maker.unwrap().accuracy, 1.0);
    }

    #[test]
    fn a_million_subscribers_quickly() {
        let truth: Vec<Assignment> = (0..1_000_002u64)
            .map(|i| Assignment::new(format!("{}", 351_910_000_000 + i), format!("T-{}", i / 3)))
            .collect();
        let got: Vec<Assignment> = (0..1_000_002u64)
            .map(|i| Assignment::new(format!("{}", 351_910_000_000 + i), format!("G-{}", i / 6)))
            .collect();
        let started = std::time::Instant::now();
        let s = score(&truth, &got).unwrap();
        assert!(started.elapsed().as_secs() < 20);
        // Each predicted 6 = two true 3s: predicted 15 pairs, 6 correct.
        assert!(close(s.precision, 0.4) && close(s.recall, 1.0));
        assert_eq!(s.largest_predicted_household, 6);
    }
}
