//! Rule conditions in CEL (the Common Expression Language) over a documented vocabulary of
//! the customer's record, the subscriber's features and the moment's fields.
//!
//! [`VOCABULARY`] is the one list of names a condition may read: [`check`] rejects anything
//! else (with the list of what would be valid), [`context`] builds exactly these values, and
//! `rules/README.md` documents them.

use std::collections::HashMap;
use std::sync::Arc;

use cel::common::ast::{Expr, IdedExpr};
use cel::{Context, Program, Value};
use chrono_tz::Tz;
use kairos_model::event::CustomerRecord;
use kairos_model::time::format_rfc3339;
use kairos_model::{CountryCode, Millis, Msisdn};

use crate::calendar::local_date;
use crate::households::HouseholdView;
use crate::moments;
use crate::state::SubscriberState;

/// The type of a vocabulary field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    Bool,
    Int,
    Double,
    String,
}

impl FieldType {
    /// CEL's name of the type.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Bool => "bool",
            FieldType::Int => "int",
            FieldType::Double => "double",
            FieldType::String => "string",
        }
    }
}

/// One name a condition can read.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub path: &'static str,
    pub ty: FieldType,
    pub meaning: &'static str,
}

const fn field(path: &'static str, ty: FieldType, meaning: &'static str) -> Field {
    Field { path, ty, meaning }
}

/// Everything a condition can read, evaluated at the moment's event time.
pub const VOCABULARY: &[Field] = &[
    field(
        "customer.home_country",
        FieldType::String,
        "ISO 3166-1 alpha-2 code of the home country",
    ),
    field("customer.timezone", FieldType::String, "IANA time zone"),
    field(
        "customer.language",
        FieldType::String,
        "preferred language, \"\" when unknown",
    ),
    field(
        "customer.prepaid",
        FieldType::Bool,
        "prepaid subscriber (false when unknown)",
    ),
    field("customer.has_email", FieldType::Bool, "an e-mail address is known"),
    field(
        "customer.tenure_days",
        FieldType::Int,
        "days since tenure_start, local calendar; -1 when unknown",
    ),
    field("customer.plan.id", FieldType::String, "plan id, \"\" when unknown"),
    field(
        "customer.plan.data_pack_bytes",
        FieldType::Int,
        "data pack size; 0 when none",
    ),
    field(
        "customer.plan.monthly_fee",
        FieldType::Double,
        "monthly fee; 0.0 when unknown",
    ),
    field(
        "customer.device.model",
        FieldType::String,
        "handset model, \"\" when unknown",
    ),
    field(
        "customer.device.age_days",
        FieldType::Int,
        "days since device.acquired; -1 when unknown",
    ),
    field(
        "customer.contract.days_left",
        FieldType::Int,
        "days until contract_end (negative when past); 0 when none",
    ),
    field("customer.contract.known", FieldType::Bool, "a contract_end is known"),
    field("customer.consent.sms", FieldType::Bool, "marketing consent for SMS"),
    field(
        "customer.consent.email",
        FieldType::Bool,
        "marketing consent for e-mail",
    ),
    field("customer.consent.push", FieldType::Bool, "marketing consent for push"),
    field(
        "subscriber.country",
        FieldType::String,
        "current serving country, \"\" when unknown",
    ),
    field(
        "subscriber.previous_country",
        FieldType::String,
        "serving country of the network event with a country before the last one, \"\" when none",
    ),
    field(
        "subscriber.cycle.start",
        FieldType::String,
        "start of the billing cycle in progress (RFC 3339 UTC), \"\" when no data was used in it yet",
    ),
    field(
        "subscriber.cycle.used_bytes",
        FieldType::Int,
        "data used in the billing cycle in progress",
    ),
    field(
        "subscriber.cycle.ratio",
        FieldType::Double,
        "used_bytes / plan.data_pack_bytes; 0.0 without a pack",
    ),
    field(
        "subscriber.usage_7d.data_bytes",
        FieldType::Int,
        "data used in the 7 days up to the moment (UTC days)",
    ),
    field(
        "subscriber.usage_7d.voice_seconds",
        FieldType::Int,
        "voice seconds in the 7 days up to the moment",
    ),
    field(
        "subscriber.usage_7d.sms",
        FieldType::Int,
        "SMS sent in the 7 days up to the moment",
    ),
    field(
        "subscriber.usage_28d.data_bytes",
        FieldType::Int,
        "data used in the 28 days up to the moment",
    ),
    field(
        "subscriber.usage_28d.voice_seconds",
        FieldType::Int,
        "voice seconds in the 28 days up to the moment",
    ),
    field(
        "subscriber.usage_28d.sms",
        FieldType::Int,
        "SMS sent in the 28 days up to the moment",
    ),
    field(
        "subscriber.topups_30d.count",
        FieldType::Int,
        "top-ups in the 30 days up to the moment",
    ),
    field(
        "subscriber.topups_30d.amount",
        FieldType::Double,
        "amount topped up in the 30 days up to the moment",
    ),
    field(
        "subscriber.selfcare.days_since",
        FieldType::Int,
        "whole days since the last self-care visit; -1 when none",
    ),
    field(
        "subscriber.selfcare.last_page",
        FieldType::String,
        "page of the last self-care visit, \"\" when none",
    ),
    field(
        "household.id",
        FieldType::String,
        "the household's id, \"\" while none is known",
    ),
    field(
        "household.size",
        FieldType::Int,
        "members (1 for a subscriber alone; 0 while unknown)",
    ),
    field(
        "household.monthly_value",
        FieldType::Double,
        "sum of the members' monthly fees",
    ),
    field(
        "household.accounts",
        FieldType::Int,
        "distinct customer accounts among the members (separate plans)",
    ),
    field(
        "household.decision_maker",
        FieldType::String,
        "msisdn of the decision maker (postpaid first, then the highest fee, then the oldest)",
    ),
    field(
        "household.is_decision_maker",
        FieldType::Bool,
        "this subscriber is the household's decision maker",
    ),
    field(
        "household.cancel_intents",
        FieldType::Int,
        "members who visited the self-care cancel page within the window",
    ),
    field(
        "household.competitor_peer",
        FieldType::String,
        "an off-net number strongly tied to several members (likely a member on a competitor), \"\" when none",
    ),
    field(
        "household.gave_handset",
        FieldType::Bool,
        "this subscriber's handset went to another member within the window",
    ),
    field(
        "household.got_handset",
        FieldType::Bool,
        "this subscriber got a handset from another member within the window",
    ),
    field(
        "moment.kind",
        FieldType::String,
        "roaming_arrival, data_pack_threshold, handset_ageing, or a declared moment's name",
    ),
    field(
        "moment.key",
        FieldType::String,
        "the moment's dedupe key: country, cycle start, IMEI, or a declared moment's dedupe_key",
    ),
    field(
        "moment.country",
        FieldType::String,
        "roaming_arrival: the country arrived in",
    ),
    field(
        "moment.previous_country",
        FieldType::String,
        "roaming_arrival: the country before, \"\" when none",
    ),
    field(
        "moment.percent",
        FieldType::Int,
        "data_pack_threshold: the rule's threshold in percent",
    ),
    field("moment.imei", FieldType::String, "handset_ageing: the handset's IMEI"),
];

/// What a condition may read.
const CONDITION_ROOTS: &[&str] = &["customer", "subscriber", "household", "moment"];
/// What a declared moment's `when` and `dedupe_key` may read: the state, not a moment.
const STATE_ROOTS: &[&str] = &["customer", "subscriber", "household"];

/// What an expression must give.
#[derive(Clone, Copy)]
enum Gives {
    Bool,
    Key,
}

/// The values of one evaluation, by vocabulary path.
pub type Values = Vec<(&'static str, Value)>;

fn string(text: &str) -> Value {
    Value::String(Arc::new(text.to_string()))
}

/// Builds nested CEL maps from dotted paths.
fn nest(values: Values) -> HashMap<String, Value> {
    let mut groups: HashMap<String, Values> = HashMap::new();
    let mut leaves = HashMap::new();
    for (path, value) in values {
        match path.split_once('.') {
            Some((head, rest)) => {
                // The rest of a vocabulary path is itself static.
                let rest: &'static str = &path[head.len() + 1..head.len() + 1 + rest.len()];
                groups.entry(head.to_string()).or_default().push((rest, value));
            }
            None => {
                leaves.insert(path.to_string(), value);
            }
        }
    }
    for (head, inner) in groups {
        leaves.insert(head, Value::from(nest(inner)));
    }
    leaves
}

/// A CEL context holding `values` (vocabulary paths) as nested maps.
pub fn context(values: Values) -> Context<'static, 'static> {
    // CEL's standard library is built once per thread, not for every evaluation
    // (`Context::default()` builds it anew: a quarter of a replay's time with declared
    // moments).
    thread_local! {
        static STDLIB: Arc<cel::Env> = Arc::new(cel::Env::stdlib());
    }
    let mut context = Context::Root {
        functions: Default::default(),
        variables: Default::default(),
        resolver: None,
        env: STDLIB.with(Arc::clone),
    };
    for (root, value) in nest(values) {
        context.add_variable_from_value(root, value);
    }
    context
}

fn days_between(from: chrono::NaiveDate, to: chrono::NaiveDate) -> i64 {
    (to - from).num_days()
}

/// The `customer.*` values of a record at event time `at`.
pub fn customer_values(record: &CustomerRecord, tz: Tz, at: Millis) -> Values {
    let today = local_date(at, tz);
    let plan = record.plan.as_ref();
    let device = record.device.as_ref();
    vec![
        ("customer.home_country", string(record.home_country.as_str())),
        ("customer.timezone", string(record.timezone.name())),
        ("customer.language", string(record.language.as_deref().unwrap_or(""))),
        ("customer.prepaid", Value::Bool(record.prepaid.unwrap_or(false))),
        ("customer.has_email", Value::Bool(record.email.is_some())),
        (
            "customer.tenure_days",
            Value::Int(record.tenure_start.map_or(-1, |d| days_between(d, today))),
        ),
        (
            "customer.plan.id",
            string(plan.and_then(|p| p.id.as_deref()).unwrap_or("")),
        ),
        (
            "customer.plan.data_pack_bytes",
            Value::Int(
                plan.and_then(|p| p.data_pack_bytes)
                    .map_or(0, |b| i64::try_from(b).unwrap_or(i64::MAX)),
            ),
        ),
        (
            "customer.plan.monthly_fee",
            Value::Float(plan.and_then(|p| p.monthly_fee).unwrap_or(0.0)),
        ),
        (
            "customer.device.model",
            string(device.and_then(|d| d.model.as_deref()).unwrap_or("")),
        ),
        (
            "customer.device.age_days",
            Value::Int(device.and_then(|d| d.acquired).map_or(-1, |d| days_between(d, today))),
        ),
        (
            "customer.contract.days_left",
            Value::Int(record.contract_end.map_or(0, |d| days_between(today, d))),
        ),
        ("customer.contract.known", Value::Bool(record.contract_end.is_some())),
        ("customer.consent.sms", Value::Bool(record.consent.sms)),
        ("customer.consent.email", Value::Bool(record.consent.email)),
        ("customer.consent.push", Value::Bool(record.consent.push)),
    ]
}

/// The `customer.*` and `subscriber.*` values of a subscriber at event time `at`.
pub fn state_values(msisdn: Msisdn, state: &SubscriberState, record: &CustomerRecord, at: Millis) -> Values {
    let mut values = customer_values(record, record.timezone.tz(), at);
    let (cycle_start, cycle) = state.cycle_used_at(at);
    let week = state.activity.usage_over(at, 7);
    let month = state.activity.usage_over(at, 28);
    let (topups, topped_up) = state.activity.topups_until(at);
    let int = |n: u64| Value::Int(i64::try_from(n).unwrap_or(i64::MAX));
    let last_visit = state.activity.last_selfcare.as_ref().filter(|(t, _)| *t <= at);
    let days_since = last_visit.map_or(-1, |(t, _)| ((at - t) / kairos_model::time::DAY) as i64);
    let country = |c: &Option<CountryCode>| string(c.as_ref().map_or("", |c| c.as_str()));
    values.extend([
        ("subscriber.usage_7d.data_bytes", int(week.data_bytes)),
        ("subscriber.usage_7d.voice_seconds", int(week.voice_seconds)),
        ("subscriber.usage_7d.sms", int(week.sms)),
        ("subscriber.usage_28d.data_bytes", int(month.data_bytes)),
        ("subscriber.usage_28d.voice_seconds", int(month.voice_seconds)),
        ("subscriber.usage_28d.sms", int(month.sms)),
        ("subscriber.topups_30d.count", int(topups)),
        ("subscriber.topups_30d.amount", Value::Float(topped_up)),
        ("subscriber.selfcare.days_since", Value::Int(days_since)),
        (
            "subscriber.selfcare.last_page",
            string(last_visit.map_or("", |(_, page)| page.as_str())),
        ),
        ("subscriber.country", country(&state.country)),
        ("subscriber.previous_country", country(&state.previous_country)),
        (
            "subscriber.cycle.start",
            string(&cycle_start.map(format_rfc3339).unwrap_or_default()),
        ),
        ("subscriber.cycle.used_bytes", int(cycle)),
        (
            "subscriber.cycle.ratio",
            Value::Float(moments::pack_ratio(record, cycle).unwrap_or(0.0)),
        ),
    ]);
    let view = state.household.view.as_ref();
    let number = |m: Option<Msisdn>| string(&m.map(|m| m.to_string()).unwrap_or_default());
    values.extend([
        ("household.id", string(&view.map(HouseholdView::id).unwrap_or_default())),
        ("household.size", int(view.map_or(0, |v| u64::from(v.size)))),
        (
            "household.monthly_value",
            Value::Float(view.map_or(0.0, |v| v.value_cents as f64 / 100.0)),
        ),
        ("household.accounts", int(view.map_or(0, |v| u64::from(v.accounts)))),
        ("household.decision_maker", number(view.map(|v| v.decision_maker))),
        (
            "household.is_decision_maker",
            Value::Bool(view.is_some_and(|v| v.decision_maker == msisdn)),
        ),
        (
            "household.cancel_intents",
            int(view.map_or(0, |v| u64::from(v.cancel_intents))),
        ),
        (
            "household.competitor_peer",
            number(view.and_then(|v| v.competitor_peer)),
        ),
        (
            "household.gave_handset",
            Value::Bool(view.is_some_and(|v| v.gave_handset)),
        ),
        (
            "household.got_handset",
            Value::Bool(view.is_some_and(|v| v.got_handset)),
        ),
    ]);
    values
}

/// A value of every vocabulary field, of the field's type: what [`check`] evaluates
/// conditions against, so that type errors surface before a rule is published.
fn sample_values() -> Values {
    VOCABULARY
        .iter()
        .map(|f| {
            let value = match f.ty {
                FieldType::Bool => Value::Bool(false),
                FieldType::Int => Value::Int(0),
                FieldType::Double => Value::Float(0.0),
                FieldType::String => string(""),
            };
            (f.path, value)
        })
        .collect()
}

/// Compiles a condition (already checked).
pub fn compile(source: &str) -> Result<Program, String> {
    Program::compile(source).map_err(|e| describe_parse_error(&e.to_string()))
}

fn describe_parse_error(error: &str) -> String {
    let first = error.lines().next().unwrap_or(error);
    let detail = first.strip_prefix("ERROR: <input>:").unwrap_or(first);
    format!("not a valid CEL expression at {detail}")
}

/// Every problem with a condition: syntax, names outside the vocabulary, type errors, or a
/// result that is not true or false.
///
/// ```
/// use kairos_dataflows::condition::check;
/// assert!(check("customer.plan.monthly_fee >= 20.0 && moment.country != 'US'").is_ok());
/// let problems = check("customer.plan.fee > 2").unwrap_err();
/// assert!(problems[0].starts_with("unknown field `customer.plan.fee`"), "{problems:?}");
/// ```
pub fn check(source: &str) -> Result<(), Vec<String>> {
    check_expression(source, CONDITION_ROOTS, Gives::Bool)
}

/// [`check`] for a declared moment's `when`: it reads only `customer.*` and `subscriber.*`.
///
/// ```
/// use kairos_dataflows::condition::check_when;
/// assert!(check_when("subscriber.cycle.ratio >= 0.5").is_ok());
/// assert!(check_when("moment.country == 'US'").is_err());
/// ```
pub fn check_when(source: &str) -> Result<(), Vec<String>> {
    check_expression(source, STATE_ROOTS, Gives::Bool)
}

/// Checks a declared moment's `dedupe_key`: it reads `customer.*` and `subscriber.*` and
/// gives a string or an int.
///
/// ```
/// use kairos_dataflows::condition::check_key;
/// assert!(check_key("subscriber.country").is_ok());
/// assert!(check_key("subscriber.cycle.ratio > 0.5").is_err());
/// ```
pub fn check_key(source: &str) -> Result<(), Vec<String>> {
    check_expression(source, STATE_ROOTS, Gives::Key)
}

fn check_expression(source: &str, roots: &[&str], gives: Gives) -> Result<(), Vec<String>> {
    let program = compile(source).map_err(|e| vec![e])?;
    let mut problems = Vec::new();
    let mut bound = Vec::new();
    walk(program.expression(), roots, &mut bound, &mut problems);
    if problems.is_empty() {
        match (program.execute(&context(sample_values())), gives) {
            (Ok(Value::Bool(_)), Gives::Bool) | (Ok(Value::String(_) | Value::Int(_)), Gives::Key) => {}
            (Ok(other), Gives::Bool) => problems.push(format!(
                "a condition must give true or false; this one gives {:?}",
                other.type_of()
            )),
            (Ok(other), Gives::Key) => problems.push(format!(
                "a dedupe key must give a string or an int; this one gives {:?}",
                other.type_of()
            )),
            (Err(e), _) => problems.push(format!("type error: {e}")),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Evaluates a dedupe key expression (already checked) to its text.
pub fn key(program: &Program, context: &Context<'_, '_>) -> Result<String, String> {
    match program.execute(context) {
        Ok(Value::String(text)) => Ok(text.to_string()),
        Ok(Value::Int(n)) => Ok(n.to_string()),
        Ok(other) => Err(format!("dedupe key gave {:?}, not a string or an int", other.type_of())),
        Err(e) => Err(e.to_string()),
    }
}

/// The dotted path of a field selection rooted at an identifier (`customer.plan.id`).
fn path_of(expr: &IdedExpr) -> Option<String> {
    match &expr.expr {
        Expr::Ident(name) => Some(name.clone()),
        Expr::Select(select) => path_of(&select.operand).map(|p| format!("{p}.{}", select.field)),
        _ => None,
    }
}

fn walk(expr: &IdedExpr, roots: &[&str], bound: &mut Vec<String>, problems: &mut Vec<String>) {
    match &expr.expr {
        Expr::Ident(name) => {
            if !bound.contains(name) && !roots.contains(&name.as_str()) {
                let readable: Vec<String> = roots.iter().map(|r| format!("{r}.*")).collect();
                problems.push(format!(
                    "unknown name `{name}` — this expression reads {} (see rules/README.md)",
                    readable.join(", ")
                ));
            }
        }
        Expr::Select(select) => match path_of(expr) {
            Some(path) if roots.iter().any(|r| path.starts_with(&format!("{r}."))) => {
                let known = VOCABULARY
                    .iter()
                    .any(|f| f.path == path || f.path.starts_with(&format!("{path}.")));
                if !known {
                    let parent = path.rsplit_once('.').map_or("", |(p, _)| p);
                    let siblings: Vec<&str> = VOCABULARY
                        .iter()
                        .filter(|f| f.path.starts_with(&format!("{parent}.")))
                        .map(|f| f.path)
                        .collect();
                    problems.push(format!(
                        "unknown field `{path}` — known fields: {}",
                        siblings.join(", ")
                    ));
                }
            }
            _ => walk(&select.operand, roots, bound, problems),
        },
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                walk(target, roots, bound, problems);
            }
            for arg in &call.args {
                walk(arg, roots, bound, problems);
            }
        }
        Expr::Comprehension(c) => {
            walk(&c.iter_range, roots, bound, problems);
            let before = bound.len();
            bound.push(c.iter_var.clone());
            if let Some(second) = &c.iter_var2 {
                bound.push(second.clone());
            }
            bound.push(c.accu_var.clone());
            for part in [&c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                walk(part, roots, bound, problems);
            }
            bound.truncate(before);
        }
        Expr::List(list) => {
            for element in &list.elements {
                walk(element, roots, bound, problems);
            }
        }
        Expr::Map(_) | Expr::Struct(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// Evaluates a condition; an evaluation error counts as false (and is the caller's to
/// count).
pub fn holds(program: &Program, context: &Context<'_, '_>) -> Result<bool, String> {
    match program.execute(context) {
        Ok(Value::Bool(value)) => Ok(value),
        Ok(other) => Err(format!("condition gave {:?}, not true or false", other.type_of())),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_vocabulary_field_is_readable_with_its_type() {
        for f in VOCABULARY {
            let condition = match f.ty {
                FieldType::Bool => format!("{} || true", f.path),
                FieldType::Int => format!("{} >= 0 || true", f.path),
                FieldType::Double => format!("{} >= 0.0 || true", f.path),
                FieldType::String => format!("{} != 'x' || true", f.path),
            };
            assert_eq!(check(&condition), Ok(()), "{condition}");
        }
    }

    #[test]
    fn problems_name_what_is_wrong() {
        let first = |source: &str| check(source).unwrap_err().remove(0);
        assert!(
            first("customer.plan.monthly_fee >").starts_with("not a valid CEL expression at 1:"),
            "{}",
            first("customer.plan.monthly_fee >")
        );
        assert!(
            first("customer.age > 3").starts_with("unknown field `customer.age` — known fields: customer.home_country")
        );
        assert!(first("account.size > 3").starts_with("unknown name `account`"));
        assert!(
            first("customer.plan.monthly_fee + 1.0").contains("must give true or false"),
            "{}",
            first("customer.plan.monthly_fee + 1.0")
        );
        assert!(
            first("customer.language > 3").starts_with("type error"),
            "{}",
            first("customer.language > 3")
        );
        // Comprehension variables are names too.
        assert_eq!(check("['PT', 'ES'].exists(c, c == moment.country)"), Ok(()));
    }

    #[test]
    fn conditions_read_nested_values() {
        let program = compile("customer.plan.monthly_fee >= 20.0 && moment.country == 'US'").unwrap();
        let values = |fee: f64, country: &str| {
            vec![
                ("customer.plan.monthly_fee", Value::Float(fee)),
                ("moment.country", string(country)),
            ]
        };
        assert_eq!(holds(&program, &context(values(25.0, "US"))), Ok(true));
        assert_eq!(holds(&program, &context(values(15.0, "US"))), Ok(false));
        assert_eq!(holds(&program, &context(values(25.0, "ES"))), Ok(false));
        assert!(holds(&compile("moment.imei == 'x'").unwrap(), &context(values(1.0, "US"))).is_err());
    }
}
