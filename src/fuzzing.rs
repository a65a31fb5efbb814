//! fuzzing: the bodies of the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer), one function
//! per kind of input kairos reads from outside. Each takes any bytes and must return, never
//! panic: bad input is an error for the operator, not a crash of the engine. Beyond that,
//! each checks what must hold of what it accepted (a checked condition compiles, an error's
//! position is in the file, a decoded value encodes and decodes again).
//!
//! `tests/fuzz_corpus.rs` runs every committed corpus input and every crash regression
//! input (`fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`) through these same
//! functions, so CI checks them on stable Rust without a fuzzer or instrumentation.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use cel::Value;
use kairos_dataflows::condition::{self, Expression, FieldType, VOCABULARY};
use kairos_model::Origin;

use crate::rules::RuleError;
use crate::state::stored::{Stored, StoredKind};

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target: its name (the folder of its corpus) and its body.
pub const TARGETS: &[(&str, Target)] = &[
    ("event", event),
    ("rule_file", rule_file),
    ("policy", policy),
    ("config", config),
    ("cel", cel),
    ("state", state),
];

/// An input message (a Kafka value, a JSON Lines line): [`crate::decode::decode`].
pub fn event(data: &[u8]) {
    let origin = Origin { source: 0, position: 1 };
    match crate::decode::decode(data, origin) {
        Ok(event) => drop(format!("{event:?}")),
        Err(error) => {
            let message = error.to_string();
            assert!(!message.is_empty(), "an empty decode error for {data:?}");
        }
    }
}

/// A rule file, checked as `kairos rules check` and the engine's start do
/// ([`crate::rules::load_files`]); what it accepts must compile as the dataflow compiles it.
pub fn rule_file(data: &[u8]) {
    // Rule files are read as UTF-8 text; other bytes are refused before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let files = BTreeMap::from([("fuzz.toml".to_string(), text.to_string())]);
    match crate::rules::load_files(Path::new("rules"), &files) {
        Ok(set) => {
            for rule in &set.rules {
                let sources = rule
                    .condition
                    .iter()
                    .chain(rule.declared.iter().map(|d| &d.when))
                    .chain(rule.declared.iter().filter_map(|d| d.dedupe_key.as_ref()));
                for source in sources {
                    if let Err(e) = Expression::compile(source) {
                        panic!("rule {} was accepted but {source:?} does not compile: {e}", rule.id);
                    }
                }
            }
        }
        Err(errors) => check_errors(text, &errors),
    }
}

/// A `policy.toml`: [`crate::rules::policy::parse_policy`].
pub fn policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = crate::rules::policy::parse_policy(Path::new("rules/policy.toml"), text) {
        check_errors(text, &errors);
    }
}

/// Every error has a message, and a position (when it has one) inside the text.
fn check_errors(text: &str, errors: &[RuleError]) {
    assert!(!errors.is_empty(), "refused without a reason");
    let lines = text.split('\n').count();
    for error in errors {
        assert!(!error.message.is_empty(), "an empty message: {error:?}");
        if let Some((line, col)) = error.position {
            assert!((1..=lines).contains(&line) && col >= 1, "{error} is outside the text");
        }
        drop(error.to_string());
    }
}

/// A `kairos run` configuration file: [`crate::config::RunConfig::from_toml`].
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match crate::config::RunConfig::from_toml(Path::new("kairos.toml"), text) {
        Ok(config) => drop(config.kafka.client_config("kairos-fuzz", &[])),
        Err(error) => {
            let message = error.to_string();
            assert!(!message.is_empty());
            if let crate::config::ConfigError::Syntax { line, col, .. } = error {
                assert!((1..=text.split('\n').count()).contains(&line) && col >= 1, "{message}");
            }
        }
    }
}

/// A CEL expression as a rule's `condition`, a declared moment's `when` and its
/// `dedupe_key`: what the checks accept compiles, and evaluates (to a value or an error,
/// never a panic) against the sample values and against edge values of every field.
pub fn cel(data: &[u8]) {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    // Most inputs are no CEL at all: one parse for those (every check parses again).
    if let Err(e) = condition::compile(source) {
        assert!(e.starts_with("not a valid CEL expression"), "{e}");
        return;
    }
    let condition_ok = condition::check(source).is_ok();
    let when_ok = condition::check_when(source).is_ok();
    let key_ok = condition::check_key(source).is_ok();
    if !(condition_ok || when_ok || key_ok) {
        return;
    }
    let expression = match Expression::compile(source) {
        Ok(expression) => expression,
        Err(e) => panic!("{source:?} passed a check but does not compile: {e}"),
    };
    for values in edge_values() {
        let context = condition::context(values);
        if condition_ok || when_ok {
            let _ = condition::holds(&expression.program, &context);
        }
        if key_ok {
            let _ = condition::key(&expression.program, &context);
        }
    }
    drop(expression.reads.triggers());
}

/// Values of every vocabulary field at the edges of its type.
fn edge_values() -> Vec<condition::Values> {
    let long = Arc::new("é".repeat(300));
    let sets: [(bool, i64, f64, Arc<String>); 3] = [
        (true, i64::MAX, f64::NAN, Arc::new(String::new())),
        (false, i64::MIN, f64::INFINITY, long),
        (true, -1, -0.0, Arc::new("+351910000001".into())),
    ];
    sets.into_iter()
        .map(|(b, i, f, s)| {
            VOCABULARY
                .iter()
                .map(|field| {
                    let value = match field.ty {
                        FieldType::Bool => Value::Bool(b),
                        FieldType::Int => Value::Int(i),
                        FieldType::Double => Value::Float(f),
                        FieldType::String => Value::String(Arc::clone(&s)),
                        FieldType::StringList => Value::List(Arc::new(vec![Value::String(Arc::clone(&s))])),
                    };
                    (field.path, value)
                })
                .collect()
        })
        .collect()
}

/// A value of the state store, as a restart reads it: the first byte says which kind
/// (subscriber state, checkpoint, waiting events), the rest is the stored bytes. What
/// decodes must encode and decode again.
pub fn state(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let kind = StoredKind::ALL[usize::from(which) % StoredKind::ALL.len()];
    match Stored::decode(kind, bytes) {
        Ok(value) => {
            let again = Stored::decode(kind, &value.encode());
            assert!(again.is_ok(), "{kind:?} decoded but its encoding does not: {again:?}");
        }
        Err(error) => drop(error.to_string()),
    }
}
