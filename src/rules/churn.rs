//! `churn.toml`: the churn-risk score over every rule of a folder — a logistic model over
//! factors that hold or not, each with its weight and reason (see `rules/README.md`). A
//! folder without the file has the shipped model (`rules/churn.toml`, built in).

use std::path::Path;

use kairos_model::{ChurnFactor, ChurnModel};
use serde::Deserialize;
use toml::Spanned;

use super::RuleError;

/// The model file's name in a rules folder.
pub const CHURN_FILE: &str = "churn.toml";

/// The shipped model: what a folder without the file has.
pub const DEFAULT_CHURN: &str = include_str!("../../rules/churn.toml");

/// The largest weight or intercept, in log-odds: e^20 is a factor of 500 million, beyond
/// anything a fit on real history gives.
const MAX_LOGIT: f64 = 20.0;
/// The longest reason: it is shown to agents and in reports, beside three others.
const MAX_REASON: usize = 60;

/// The model file, as written. Unknown keys are errors.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "kairos churn-risk model (churn.toml, v1)")]
pub struct ChurnFile {
    /// The log-odds of leaving when no factor holds.
    #[schemars(with = "f64")]
    intercept: Spanned<f64>,
    /// The `churn_risk` moment happens when the risk rises to this or above (0 < t < 1).
    #[schemars(with = "f64")]
    threshold: Spanned<f64>,
    /// Where the weights came from (the fit's command and data), for people; not read.
    #[serde(default)]
    fitted: Option<String>,
    /// The factors, in order (at most 64; `factor = []` for none).
    #[schemars(with = "Vec<FactorFile>")]
    factor: Spanned<Vec<FactorFile>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct FactorFile {
    /// Lower-case letters, digits and `_`; unique.
    #[schemars(with = "String")]
    name: Spanned<String>,
    /// CEL over `customer.*`, `subscriber.*` and `household.*` (not `subscriber.churn_*`).
    #[schemars(with = "String")]
    when: Spanned<String>,
    /// Added to the log-odds while `when` holds (negative: it keeps customers).
    #[schemars(with = "f64")]
    weight: Spanned<f64>,
    /// How `churn_reasons` names the factor.
    #[schemars(with = "String")]
    reason: Spanned<String>,
}

/// Parses and checks a model file's text.
pub fn parse_churn(path: &Path, text: &str) -> Result<ChurnModel, Vec<RuleError>> {
    let file: ChurnFile = super::parse_toml(path, text)?;
    let mut errors = Vec::new();
    let mut err = super::errors_at(path, text, &mut errors);
    let logit = |value: &Spanned<f64>, what: &str, err: &mut dyn FnMut(usize, String)| -> f64 {
        let v = *value.get_ref();
        if v.is_finite() && v.abs() <= MAX_LOGIT {
            v
        } else {
            err(
                value.span().start,
                format!("{what} = {v} is out of range — log-odds from -{MAX_LOGIT} to {MAX_LOGIT}"),
            );
            0.0
        }
    };
    let intercept = logit(&file.intercept, "intercept", &mut err);
    let threshold = *file.threshold.get_ref();
    if !(threshold > 0.0 && threshold < 1.0) {
        err(
            file.threshold.span().start,
            format!("threshold = {threshold} is out of range — a risk strictly between 0 and 1"),
        );
    }
    let definitions = file.factor.get_ref();
    if definitions.len() > ChurnModel::MAX_FACTORS {
        err(
            file.factor.span().start,
            format!("{} factors — at most {}", definitions.len(), ChurnModel::MAX_FACTORS),
        );
    }
    let mut factors: Vec<ChurnFactor> = Vec::new();
    for definition in definitions {
        let name = definition.name.get_ref();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            err(
                definition.name.span().start,
                format!("invalid factor name {name:?} — use lower-case letters, digits and '_'"),
            );
        } else if factors.iter().any(|f| f.name == *name) {
            err(definition.name.span().start, format!("duplicate factor name {name:?}"));
        }
        let when = definition.when.get_ref().trim();
        if let Err(problems) = kairos_dataflows::condition::check_factor(when) {
            for problem in problems {
                err(definition.when.span().start, format!("when: {problem}"));
            }
        }
        let weight = logit(&definition.weight, &format!("weight of {name}"), &mut err);
        let reason = definition.reason.get_ref().trim();
        if reason.is_empty() || reason.chars().count() > MAX_REASON {
            err(
                definition.reason.span().start,
                format!("reason {reason:?} — say it in 1 to {MAX_REASON} characters"),
            );
        }
        factors.push(ChurnFactor {
            name: name.clone(),
            when: when.to_string(),
            weight,
            reason: reason.to_string(),
        });
    }
    drop(err);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(ChurnModel {
        fitted: file.fitted.unwrap_or_default(),
        intercept,
        threshold,
        factors,
    })
}

/// The JSON schema of the model file, for editors (shipped as `rules/churn.schema.json`).
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(ChurnFile);
    serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        crate::rules::error_lines(parse_churn(Path::new("churn.toml"), text))
    }

    #[test]
    fn the_shipped_model_parses_and_scores_its_factors() {
        let model = parse_churn(Path::new("churn.toml"), DEFAULT_CHURN).unwrap();
        assert!(!model.factors.is_empty() && model.factors.len() <= ChurnModel::MAX_FACTORS);
        let none = model.risk(0);
        let all = model.risk(u64::MAX);
        assert!(
            none > 0.0 && none < model.threshold,
            "nobody is at risk for nothing: {none}"
        );
        assert!(all > model.threshold, "{all}");
        assert!(model.reasons(u64::MAX).len() <= ChurnModel::REASONS);
    }

    #[test]
    fn risk_is_the_logistic_of_the_factors_that_hold_and_reasons_the_strongest_first() {
        let factor = |name: &str, weight| ChurnFactor {
            name: name.into(),
            when: "true".into(),
            weight,
            reason: name.replace('_', " "),
        };
        let model = ChurnModel {
            fitted: String::new(),
            intercept: -3.0,
            threshold: 0.5,
            factors: vec![
                factor("complaint", 1.0),
                factor("cancel_page", 2.5),
                factor("sticky", -1.5),
                factor("silent", 1.0),
                factor("contract_end", 0.5),
                factor("trend", 0.25),
            ],
        };
        assert!((model.risk(0) - 1.0 / (1.0 + 3f64.exp())).abs() < 1e-12);
        // complaint + cancel page: -3 + 1 + 2.5 = 0.5.
        assert!((model.risk(0b11) - 1.0 / (1.0 + (-0.5f64).exp())).abs() < 1e-12);
        // A negative weight is no reason; ties keep file order; four at most.
        assert_eq!(
            model.reasons(0b111111),
            vec!["cancel page", "complaint", "silent", "contract end"]
        );
        assert!(model.reasons(0b100).is_empty());
    }

    #[test]
    fn errors_say_what_and_where() {
        let bad = r#"intercept = -40.0
threshold = 1.5

[[factor]]
name = "Cancel"
when = "subscriber.churn_risk > 0.5"
weight = 1.0
reason = "looked at leaving"

[[factor]]
name = "complaint"
when = "subscriber.complaints_90d > 0"
weight = 1.0
reason = ""
"#;
        let found = errors(bad);
        let expected = [
            "churn.toml:1:13: intercept = -40 is out of range",
            "churn.toml:2:13: threshold = 1.5 is out of range",
            "churn.toml:5:8: invalid factor name \"Cancel\"",
            "churn.toml:6:8: when: a churn factor cannot read `subscriber.churn_risk`",
            "churn.toml:14:10: reason \"\"",
        ];
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        for (got, want) in found.iter().zip(expected) {
            assert!(got.starts_with(want), "{got} should start with {want}\n{found:#?}");
        }
    }
}
