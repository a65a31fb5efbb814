//! `lifecycle.toml`: the customer's lifecycle stages over every rule of a folder — which
//! stage a subscriber is in, as ordered CEL definitions (see `rules/README.md`). A folder
//! without the file has the shipped definitions (`rules/lifecycle.toml`, built in).

use std::path::Path;

use kairos_model::{Stage, StageRule, Stages};
use serde::Deserialize;
use toml::Spanned;

use super::RuleError;

/// The stage file's name in a rules folder.
pub const LIFECYCLE_FILE: &str = "lifecycle.toml";

/// The shipped definitions: what a folder without the file has.
pub const DEFAULT_LIFECYCLE: &str = include_str!("../../rules/lifecycle.toml");

/// The stage file, as written. Unknown keys are errors.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "kairos lifecycle stages (lifecycle.toml, v1)")]
pub struct LifecycleFile {
    /// The definitions, in order: a subscriber who is not terminated is in the stage of
    /// the first whose `when` holds. The last has no `when`.
    #[schemars(with = "Vec<StageFile>")]
    stage: Spanned<Vec<StageFile>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct StageFile {
    /// `new`, `growth`, `stable`, `decline` or `leaving` (`gone` is a terminated
    /// customer's, and defined by the status alone).
    #[schemars(with = "String")]
    name: Spanned<String>,
    /// CEL over `customer.*`, `subscriber.*` and `household.*` (not `subscriber.lifecycle.*`):
    /// the subscriber is in this stage when it holds. Absent on the last definition only.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    when: Option<Spanned<String>>,
}

/// Parses and checks a stage file's text.
pub fn parse_lifecycle(path: &Path, text: &str) -> Result<Stages, Vec<RuleError>> {
    let file: LifecycleFile = super::parse_toml(path, text)?;
    let mut errors = Vec::new();
    let mut err = super::errors_at(path, text, &mut errors);
    let definitions = file.stage.get_ref();
    if definitions.is_empty() {
        err(
            file.stage.span().start,
            "no stages — define at least one `[[stage]]`, the last without `when`".to_string(),
        );
    }
    let last = definitions.len().saturating_sub(1);
    let mut stages = Vec::new();
    for (i, definition) in definitions.iter().enumerate() {
        let name = definition.name.get_ref();
        let stage = match Stage::parse(name) {
            Some(Stage::Gone) => {
                err(
                    definition.name.span().start,
                    "`gone` is a terminated customer's stage, decided by the status alone — remove this definition"
                        .to_string(),
                );
                None
            }
            Some(stage) => Some(stage),
            None => {
                err(
                    definition.name.span().start,
                    format!("unknown stage {name:?} — the stages are new, growth, stable, decline and leaving"),
                );
                None
            }
        };
        match (&definition.when, i == last) {
            (Some(when), _) => {
                if let Err(problems) = kairos_dataflows::condition::check_stage(when.get_ref()) {
                    for problem in problems {
                        err(when.span().start, format!("when: {problem}"));
                    }
                }
            }
            (None, false) => err(
                definition.name.span().start,
                format!(
                    "stage {name:?} has no `when`, so it takes everyone and the definitions after it never apply — give it a `when`, or move it last"
                ),
            ),
            (None, true) => {}
        }
        if let (Some(when), true) = (&definition.when, i == last) {
            err(
                when.span().start,
                "the last definition takes everyone the others left — remove its `when`, or add a last stage without one (e.g. `stable`)"
                    .to_string(),
            );
        }
        if let Some(stage) = stage {
            stages.push(StageRule {
                stage,
                when: definition.when.as_ref().map(|w| w.get_ref().trim().to_string()),
            });
        }
    }
    drop(err);
    if errors.is_empty() {
        Ok(Stages { definitions: stages })
    } else {
        Err(errors)
    }
}

/// The JSON schema of the stage file, for editors (shipped as `rules/lifecycle.schema.json`).
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(LifecycleFile);
    serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        crate::rules::error_lines(parse_lifecycle(Path::new("lifecycle.toml"), text))
    }

    #[test]
    fn the_shipped_definitions_parse_in_their_order() {
        let stages = parse_lifecycle(Path::new(LIFECYCLE_FILE), DEFAULT_LIFECYCLE).unwrap();
        let order: Vec<Stage> = stages.definitions.iter().map(|d| d.stage).collect();
        assert_eq!(
            order,
            [Stage::Leaving, Stage::Decline, Stage::New, Stage::Growth, Stage::Stable]
        );
        assert!(stages.definitions.last().unwrap().when.is_none());
    }

    #[test]
    fn mistakes_are_named_with_their_place() {
        let unknown = errors("[[stage]]\nname = \"churned\"\nwhen = \"true\"\n[[stage]]\nname = \"stable\"\n");
        assert_eq!(unknown.len(), 1, "{unknown:?}");
        assert!(
            unknown[0].starts_with("lifecycle.toml:2:8: unknown stage \"churned\""),
            "{unknown:?}"
        );
        let gone = errors("[[stage]]\nname = \"gone\"\nwhen = \"true\"\n[[stage]]\nname = \"stable\"\n");
        assert!(gone[0].contains("decided by the status alone"), "{gone:?}");
        let early = errors("[[stage]]\nname = \"stable\"\n[[stage]]\nname = \"new\"\n");
        assert!(early.iter().any(|e| e.contains("never apply")), "{early:?}");
        let last = errors("[[stage]]\nname = \"new\"\nwhen = \"customer.tenure_days < 90\"\n");
        assert!(last[0].contains("remove its `when`"), "{last:?}");
        let circular = errors(
            "[[stage]]\nname = \"new\"\nwhen = \"subscriber.lifecycle.stage == 'new'\"\n[[stage]]\nname = \"stable\"\n",
        );
        assert!(
            circular[0].starts_with("lifecycle.toml:3:8: when: a stage's definition cannot read"),
            "{circular:?}"
        );
        let bad_cel =
            errors("[[stage]]\nname = \"new\"\nwhen = \"customer.tenure > 1\"\n[[stage]]\nname = \"stable\"\n");
        assert!(bad_cel[0].contains("unknown field `customer.tenure`"), "{bad_cel:?}");
        let unknown_key = errors("[[stage]]\nname = \"stable\"\nif = \"true\"\n");
        assert!(unknown_key[0].contains("unknown field `if`"), "{unknown_key:?}");
        let none = errors("stage = []\n");
        assert!(none[0].contains("no stages"), "{none:?}");
    }
}
