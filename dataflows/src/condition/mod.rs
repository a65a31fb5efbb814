//! Rule conditions and declared moments in CEL (the Common Expression Language), over the
//! vocabulary of `vocabulary.rs`: the customer's record, the subscriber's features, the
//! household and the moment.
//!
//! An expression is only ever read through its parsed tree: [`check`] walks it to reject
//! names outside [`VOCABULARY`] (saying what would be valid), and the same walk gives the
//! fields it reads ([`Reads`]) — so the context it is evaluated in holds those and no more,
//! and a declared moment is evaluated again only after what can change them. What the
//! engine can read, and what the rules are checked against, cannot drift apart.

mod vocabulary;

pub use vocabulary::{ChangedBy, Clock, Field, FieldSource, FieldType, MomentFields, TREND_RECENT_DAYS, VOCABULARY};

use std::collections::HashMap;
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr, IdedExpr, MapExpr, StructExpr};
use cel::{Context, Program, Value};
use kairos_model::event::EventKind;
use kairos_model::Millis;

use vocabulary::string;

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
                FieldType::StringList => Value::List(Arc::new(vec![string("")])),
            };
            (f.path, value)
        })
        .collect()
}

/// Compiles a condition (already checked).
pub fn compile(source: &str) -> Result<Program, String> {
    Program::compile(source).map_err(|e| describe_parse_error(&e.to_string()))
}

/// An expression compiled for evaluation, with the fields it reads.
pub struct Expression {
    pub program: Program,
    pub reads: Reads,
}

impl Expression {
    /// Compiles an expression (already checked) and finds what it reads.
    pub fn compile(source: &str) -> Result<Expression, String> {
        let program = compile(source)?;
        let mut walk = Walk::new(CONDITION_ROOTS);
        walk.expr(program.expression());
        let reads = Reads::of(&walk.read);
        Ok(Expression { program, reads })
    }

    /// `false`, reading nothing: what a rule's expression becomes if it no longer compiles.
    pub fn never() -> Expression {
        Expression::compile("false").expect("`false` is CEL")
    }
}

/// The vocabulary fields an expression reads: those it names, and every field under a map it
/// names whole (`size(customer.plan)` reads all of `customer.plan.*`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reads {
    /// Indices into [`VOCABULARY`], ascending.
    fields: Vec<usize>,
}

impl Reads {
    /// The fields at or under the given paths (full paths, maps, or roots).
    fn of(paths: &[String]) -> Reads {
        let under = |field: &str, path: &str| {
            field
                .strip_prefix(path)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        };
        let fields = (0..VOCABULARY.len())
            .filter(|i| paths.iter().any(|p| under(VOCABULARY[*i].path, p)))
            .collect();
        Reads { fields }
    }

    /// What any of `reads` reads.
    pub fn union<'r>(reads: impl IntoIterator<Item = &'r Reads>) -> Reads {
        let mut fields: Vec<usize> = reads.into_iter().flat_map(|r| r.fields.iter().copied()).collect();
        fields.sort_unstable();
        fields.dedup();
        Reads { fields }
    }

    /// The fields read, in vocabulary order.
    pub fn fields(&self) -> impl Iterator<Item = &'static Field> + '_ {
        self.fields.iter().map(|i| &VOCABULARY[*i])
    }

    /// A context holding the fields read, taken from `source`.
    pub fn context(&self, source: &FieldSource<'_>) -> Context<'static, 'static> {
        context(self.fields().map(|f| (f.path, (f.value)(source))).collect())
    }

    /// The kinds of event after which what is read can change: `None` for any event (it
    /// reads the moment, or nothing at all — a constant is evaluated after every event, as
    /// anything else would be a guess). Household fields need no event: every declared
    /// moment is evaluated when the household changes. What event time moves is also
    /// evaluated at the instants of its clocks ([`Reads::next_change`]).
    pub fn triggers(&self) -> Option<Vec<EventKind>> {
        if self.fields.is_empty() {
            return None;
        }
        let mut kinds = Vec::new();
        for field in self.fields() {
            match field.changed_by {
                ChangedBy::Household | ChangedBy::Lifecycle => {}
                ChangedBy::Events(changing) | ChangedBy::EventsAndTime(changing, _) => {
                    for kind in changing {
                        if !kinds.contains(kind) {
                            kinds.push(*kind);
                        }
                    }
                }
                ChangedBy::Moment => return None,
            }
        }
        Some(kinds)
    }

    /// Only the fields read that event time moves (those with a clock).
    pub fn clocked(&self) -> Reads {
        let fields = self
            .fields
            .iter()
            .copied()
            .filter(|i| matches!(VOCABULARY[*i].changed_by, ChangedBy::EventsAndTime(..)))
            .collect();
        Reads { fields }
    }

    /// Whether nothing is read.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The earliest instant after `source.at` at which a field read may change by time
    /// alone (the clocks of [`ChangedBy::EventsAndTime`]), if any.
    pub fn next_change(&self, source: &FieldSource<'_>) -> Option<Millis> {
        self.fields()
            .filter_map(|f| match f.changed_by {
                ChangedBy::EventsAndTime(_, clock) => clock(source),
                _ => None,
            })
            .filter(|t| *t > source.at)
            .min()
    }
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

/// [`check_when`] for a lifecycle stage's definition, which also cannot read the stage it
/// decides (`subscriber.lifecycle.*`), nor the churn score decided after it.
///
/// ```
/// use kairos_dataflows::condition::check_stage;
/// assert!(check_stage("subscriber.days_since.activity >= 30").is_ok());
/// assert!(check_stage("subscriber.lifecycle.stage == 'new'").is_err());
/// assert!(check_stage("subscriber.churn_risk > 0.5").is_err());
/// ```
pub fn check_stage(source: &str) -> Result<(), Vec<String>> {
    check_not_reading(
        source,
        &["subscriber.lifecycle.", "subscriber.churn_", "household.most_at_risk"],
        "a stage's definition",
        "what the stage definitions decide, or decided after them",
    )
}

/// [`check_when`] for a churn factor (`churn.toml`), which cannot read the score it makes
/// (`subscriber.churn_risk`, `subscriber.churn_reasons`, `subscriber.churn_at_risk`) nor
/// what the household graph makes of the members' scores (`household.most_at_risk`: a score
/// that read it could move the member most at risk back and forth); it may read the stage,
/// decided before it.
///
/// ```
/// use kairos_dataflows::condition::check_factor;
/// assert!(check_factor("subscriber.lifecycle.stage == 'decline'").is_ok());
/// assert!(check_factor("subscriber.churn_risk > 0.5").is_err());
/// assert!(check_factor("household.most_at_risk").is_err());
/// ```
pub fn check_factor(source: &str) -> Result<(), Vec<String>> {
    check_not_reading(
        source,
        &["subscriber.churn_", "household.most_at_risk"],
        "a churn factor",
        "the score the factors make",
    )
}

/// Whether a declared moment's `when` reads the churn score (`subscriber.churn_risk`,
/// `subscriber.churn_at_risk`): a retention rule, for `kairos report churn`. An expression
/// that does not compile reads nothing.
pub fn reads_churn_risk(source: &str) -> bool {
    Expression::compile(source).is_ok_and(|e| {
        e.reads
            .fields()
            .any(|f| matches!(f.path, "subscriber.churn_risk" | "subscriber.churn_at_risk"))
    })
}

/// [`check_when`], and no field under one of `prefixes` read.
fn check_not_reading(source: &str, prefixes: &[&str], what: &str, why: &str) -> Result<(), Vec<String>> {
    check_when(source)?;
    let reads = Expression::compile(source).map_err(|e| vec![e])?.reads;
    let circular: Vec<String> = reads
        .fields()
        .filter(|f| prefixes.iter().any(|p| f.path.starts_with(p)))
        .map(|f| format!("{what} cannot read `{}`: it is {why}", f.path))
        .collect();
    if circular.is_empty() {
        Ok(())
    } else {
        Err(circular)
    }
}

fn check_expression(source: &str, roots: &[&str], gives: Gives) -> Result<(), Vec<String>> {
    let program = compile(source).map_err(|e| vec![e])?;
    let mut walk = Walk::new(roots);
    walk.expr(program.expression());
    let mut problems = walk.problems;
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

/// One walk over an expression's tree: the vocabulary it reads, and the names it may not.
struct Walk<'r> {
    /// The roots this expression may read.
    roots: &'r [&'r str],
    /// Comprehension variables in scope.
    bound: Vec<String>,
    problems: Vec<String>,
    /// Vocabulary paths read, and maps or roots read whole.
    read: Vec<String>,
}

impl<'r> Walk<'r> {
    fn new(roots: &'r [&'r str]) -> Walk<'r> {
        Walk {
            roots,
            bound: Vec::new(),
            problems: Vec::new(),
            read: Vec::new(),
        }
    }

    fn expr(&mut self, expr: &IdedExpr) {
        match &expr.expr {
            Expr::Ident(name) if self.bound.contains(name) => {}
            // A root named alone is read whole.
            Expr::Ident(name) if self.roots.contains(&name.as_str()) => self.read.push(name.clone()),
            Expr::Ident(name) => {
                let readable: Vec<String> = self.roots.iter().map(|r| format!("{r}.*")).collect();
                self.problems.push(format!(
                    "unknown name `{name}` — this expression reads {} (see rules/README.md)",
                    readable.join(", ")
                ));
            }
            Expr::Select(select) => match path_of(expr) {
                Some(path) if self.roots.iter().any(|r| path.starts_with(&format!("{r}."))) => {
                    let known = VOCABULARY
                        .iter()
                        .any(|f| f.path == path || f.path.starts_with(&format!("{path}.")));
                    if known {
                        self.read.push(path);
                    } else {
                        let parent = path.rsplit_once('.').map_or("", |(p, _)| p);
                        let siblings: Vec<&str> = VOCABULARY
                            .iter()
                            .filter(|f| f.path.starts_with(&format!("{parent}.")))
                            .map(|f| f.path)
                            .collect();
                        self.problems.push(format!(
                            "unknown field `{path}` — known fields: {}",
                            siblings.join(", ")
                        ));
                    }
                }
                _ => self.expr(&select.operand),
            },
            Expr::Call(call) => {
                if let Some(target) = &call.target {
                    self.expr(target);
                }
                for arg in &call.args {
                    self.expr(arg);
                }
            }
            Expr::Comprehension(c) => {
                self.expr(&c.iter_range);
                let before = self.bound.len();
                self.bound.push(c.iter_var.clone());
                if let Some(second) = &c.iter_var2 {
                    self.bound.push(second.clone());
                }
                self.bound.push(c.accu_var.clone());
                for part in [&c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                    self.expr(part);
                }
                self.bound.truncate(before);
            }
            Expr::List(list) => {
                for element in &list.elements {
                    self.expr(element);
                }
            }
            // Literal maps and messages hold expressions too: what they read must be in
            // the context.
            Expr::Map(MapExpr { entries }) | Expr::Struct(StructExpr { entries, .. }) => {
                for entry in entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(e) => {
                            self.expr(&e.key);
                            self.expr(&e.value);
                        }
                        EntryExpr::StructField(f) => self.expr(&f.value),
                    }
                }
            }
            Expr::Literal(_) | Expr::Unspecified => {}
        }
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
                FieldType::StringList => format!("'x' in {} || true", f.path),
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

    fn reads(source: &str) -> Vec<&'static str> {
        Expression::compile(source)
            .unwrap()
            .reads
            .fields()
            .map(|f| f.path)
            .collect()
    }

    #[test]
    fn what_an_expression_reads_comes_from_its_tree() {
        assert_eq!(
            reads("household.is_decision_maker && household.size >= 2"),
            ["household.size", "household.is_decision_maker"]
        );
        // A whole map read by its name brings all of its values, a root all of its maps.
        let plan = reads("size(customer.plan) > 0");
        assert_eq!(
            plan,
            [
                "customer.plan.id",
                "customer.plan.data_pack_bytes",
                "customer.plan.monthly_fee"
            ]
        );
        let household: Vec<&str> = VOCABULARY
            .iter()
            .map(|f| f.path)
            .filter(|p| p.starts_with("household."))
            .collect();
        assert_eq!(reads("size(household) > 0"), household);
        // Names in strings, comprehension variables and literal maps are what they are.
        assert_eq!(reads("'customer.language' == 'subscriber.country'"), Vec::<&str>::new());
        assert_eq!(
            reads("['PT'].exists(customer, customer == moment.country)"),
            ["moment.country"]
        );
        assert_eq!(
            reads("{'lang': customer.language}['lang'] == ''"),
            ["customer.language"]
        );
        let both = Reads::union([
            &Expression::compile("subscriber.selfcare.last_page == 'cancel'")
                .unwrap()
                .reads,
            &Expression::compile("customer.language").unwrap().reads,
        ]);
        let both: Vec<&str> = both.fields().map(|f| f.path).collect();
        assert_eq!(both, ["customer.language", "subscriber.selfcare.last_page"]);
    }

    #[test]
    fn an_expression_changes_only_with_what_changes_what_it_reads() {
        let triggers = |source: &str| Expression::compile(source).unwrap().reads.triggers();
        assert_eq!(
            triggers("subscriber.selfcare.last_page == 'cancel'"),
            Some(vec![EventKind::Selfcare])
        );
        assert_eq!(
            triggers("subscriber.country != customer.home_country"),
            Some(vec![EventKind::Customer, EventKind::Network])
        );
        assert_eq!(triggers("household.gave_handset"), Some(vec![]));
        // Time moves these too: their events, and their clocks (review timers) for the rest.
        assert_eq!(
            triggers("subscriber.selfcare.days_since == 0"),
            Some(vec![EventKind::Selfcare])
        );
        assert_eq!(triggers("customer.tenure_days > 365"), Some(vec![EventKind::Customer]));
        let reads = Expression::compile("subscriber.days_since.data >= 10 && customer.language == 'pt'")
            .unwrap()
            .reads;
        let clocked: Vec<&str> = reads.clocked().fields().map(|f| f.path).collect();
        assert_eq!(clocked, ["subscriber.days_since.data"]);
        assert!(Expression::compile("customer.language == 'pt'")
            .unwrap()
            .reads
            .clocked()
            .is_empty());
        // A constant is evaluated after every event.
        assert_eq!(triggers("true"), None);
    }

    #[test]
    fn names_inside_literal_maps_are_checked() {
        assert!(check("{'a': customer.plan.fee}['a'] > 1.0").is_err());
        assert_eq!(check("{'a': customer.plan.monthly_fee}['a'] > 1.0"), Ok(()));
    }
}
