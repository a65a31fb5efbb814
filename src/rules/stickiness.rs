//! `stickiness.toml`: the weights of `subscriber.stickiness` and `household.stickiness` over
//! every rule of a folder — products by kind, the family bonus, services received, tenure
//! (see `rules/README.md`). A folder without the file has the shipped weights
//! (`rules/stickiness.toml`, built in).

use std::collections::BTreeMap;
use std::path::Path;

use kairos_model::rule::ProductWeight;
use kairos_model::{Service, Stickiness};
use serde::Deserialize;
use toml::Spanned;

use super::RuleError;

/// The weights file's name in a rules folder.
pub const STICKINESS_FILE: &str = "stickiness.toml";

/// The shipped weights: what a folder without the file has.
pub const DEFAULT_STICKINESS: &str = include_str!("../../rules/stickiness.toml");

/// The largest weight or bonus: stickiness is a sum of a few, and a weight of thousands is
/// a typing error, not a judgement.
const MAX_WEIGHT: f64 = 100.0;

/// The weights file, as written. Unknown keys are errors.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "kairos stickiness weights (stickiness.toml, v1)")]
pub struct StickinessFile {
    /// The kind a product id that `[products]` does not list weighs as.
    #[schemars(with = "String")]
    unlisted: Spanned<String>,
    /// Added for each family-shared product held.
    #[schemars(with = "f64")]
    family_bonus: Spanned<f64>,
    /// What one product of each kind weighs (kind name → weight).
    #[schemars(with = "BTreeMap<String, f64>")]
    kinds: BTreeMap<String, Spanned<f64>>,
    /// Product id (as customer records list them) → its kind.
    #[serde(default)]
    products: BTreeMap<String, ProductFile>,
    services: ServicesFile,
    tenure: TenureFile,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct ProductFile {
    /// One of the names of `[kinds]`.
    #[schemars(with = "String")]
    kind: Spanned<String>,
    /// Shared by a family: the family bonus is added.
    #[serde(default)]
    family_shared: bool,
}

/// Services received: each weighs while its last use is fewer than `days` whole days ago.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct ServicesFile {
    #[schemars(with = "u32")]
    days: Spanned<u32>,
    #[serde(default)]
    #[schemars(with = "Option<f64>")]
    data: Option<Spanned<f64>>,
    #[serde(default)]
    #[schemars(with = "Option<f64>")]
    voice: Option<Spanned<f64>>,
    #[serde(default)]
    #[schemars(with = "Option<f64>")]
    sms: Option<Spanned<f64>>,
    /// Any self-care event (the operator's app or portal).
    #[serde(default)]
    #[schemars(with = "Option<f64>")]
    selfcare: Option<Spanned<f64>>,
}

/// The tenure bonus: `per_year` for each whole year since `tenure_start`, up to `max_years`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct TenureFile {
    #[schemars(with = "f64")]
    per_year: Spanned<f64>,
    #[schemars(with = "u32")]
    max_years: Spanned<u32>,
}

/// Parses and checks a weights file's text.
pub fn parse_stickiness(path: &Path, text: &str) -> Result<Stickiness, Vec<RuleError>> {
    let file: StickinessFile = super::parse_toml(path, text)?;
    let mut errors = Vec::new();
    let mut err = super::errors_at(path, text, &mut errors);
    let weight = |value: &Spanned<f64>, what: &str, err: &mut dyn FnMut(usize, String)| -> f64 {
        let w = *value.get_ref();
        if (0.0..=MAX_WEIGHT).contains(&w) {
            w
        } else {
            err(
                value.span().start,
                format!("{what} = {w} is out of range — a weight is from 0 to {MAX_WEIGHT}"),
            );
            0.0
        }
    };
    let kinds: BTreeMap<&str, f64> = file
        .kinds
        .iter()
        .map(|(name, w)| (name.as_str(), weight(w, &format!("kinds.{name}"), &mut err)))
        .collect();
    let kind = |name: &Spanned<String>, what: &str, err: &mut dyn FnMut(usize, String)| -> f64 {
        match kinds.get(name.get_ref().as_str()) {
            Some(w) => *w,
            None => {
                let known: Vec<&str> = kinds.keys().copied().collect();
                err(
                    name.span().start,
                    format!(
                        "{what}: unknown kind {:?} — the kinds are those of [kinds]: {}",
                        name.get_ref(),
                        known.join(", ")
                    ),
                );
                0.0
            }
        }
    };
    let unlisted = kind(&file.unlisted, "unlisted", &mut err);
    let products = file
        .products
        .iter()
        .map(|(id, p)| {
            let weight = kind(&p.kind, &format!("products.{id}"), &mut err);
            (
                id.clone(),
                ProductWeight {
                    weight,
                    family_shared: p.family_shared,
                },
            )
        })
        .collect();
    let family_bonus = weight(&file.family_bonus, "family_bonus", &mut err);
    let s = &file.services;
    let mut services = [0.0; 4];
    for (service, value) in Service::ALL.into_iter().zip([&s.data, &s.voice, &s.sms, &s.selfcare]) {
        if let Some(value) = value {
            services[service as usize] = weight(value, &format!("services.{}", service.as_str()), &mut err);
        }
    }
    let days = *s.days.get_ref();
    if !(1..=366).contains(&days) {
        err(
            s.days.span().start,
            format!("services.days = {days} is out of range — from 1 to 366 days"),
        );
    }
    let per_year = weight(&file.tenure.per_year, "tenure.per_year", &mut err);
    let max_years = *file.tenure.max_years.get_ref();
    if max_years > 100 {
        err(
            file.tenure.max_years.span().start,
            format!("tenure.max_years = {max_years} is out of range — at most 100"),
        );
    }
    drop(err);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Stickiness {
        products,
        unlisted,
        family_bonus,
        services,
        service_days: days,
        tenure_per_year: per_year,
        tenure_max_years: max_years,
    })
}

/// The JSON schema of the weights file, for editors (shipped as `rules/stickiness.schema.json`).
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(StickinessFile);
    serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        crate::rules::error_lines(parse_stickiness(Path::new("stickiness.toml"), text))
    }

    #[test]
    fn the_shipped_weights_parse_and_weigh_as_documented() {
        let weights = parse_stickiness(Path::new("stickiness.toml"), DEFAULT_STICKINESS).unwrap();
        let held = |ids: &[&str]| weights.held(&ids.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        // The file's own example: a mobile line alone, then with broadband and TV.
        assert_eq!(held(&["mobile"]), 1.0);
        assert_eq!(held(&["mobile", "broadband", "tv"]), 5.0);
        // Family-shared: its kind's weight and the bonus; an unknown id weighs as unlisted.
        assert_eq!(held(&["family-line"]), 2.0);
        assert_eq!(held(&["a-new-add-on"]), 0.5);
        assert_eq!(weights.services, [0.5, 0.5, 0.25, 0.25]);
        assert_eq!(weights.service_days, 30);
        assert_eq!(weights.tenure(2), 0.5);
        assert_eq!(weights.tenure(40), 1.5, "at most six years count");
    }

    #[test]
    fn errors_say_what_and_where() {
        let bad = r#"unlisted = "cheap"
family_bonus = 1.0

[kinds]
basic = 1.0
hard_to_replace = -2.0

[products]
mobile = { kind = "basci" }

[services]
days = 0
data = 0.5

[tenure]
per_year = 0.25
max_years = 6
"#;
        let found = errors(bad);
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(
            found
                .iter()
                .any(|e| e.starts_with("stickiness.toml:6:19: kinds.hard_to_replace = -2 is out of range")),
            "{found:#?}"
        );
        assert!(
            found
                .iter()
                .any(|e| e.starts_with("stickiness.toml:1:12: unlisted: unknown kind \"cheap\"")),
            "{found:#?}"
        );
        assert!(
            found
                .iter()
                .any(|e| e.starts_with("stickiness.toml:9:19: products.mobile: unknown kind \"basci\"")),
            "{found:#?}"
        );
        assert!(
            found
                .iter()
                .any(|e| e.starts_with("stickiness.toml:12:8: services.days = 0 is out of range")),
            "{found:#?}"
        );
        let unknown = errors(&DEFAULT_STICKINESS.replace("per_year = 0.25", "per_year = 0.25\nper_month = 1"));
        assert!(unknown[0].contains("unknown field `per_month`"), "{unknown:#?}");
    }
}
