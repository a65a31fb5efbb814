//! kairos's vocabulary, shared by every stage of the pipeline.
//!
//! - [`event`]: the typed events of `contract.md` §1 (what decode produces, what the
//!   dataflows consume);
//! - [`time`]: event time as milliseconds since the Unix epoch, RFC 3339 in and out;
//! - [`action`]: the actions of `contract.md` §2 and the decisions behind them;
//! - [`rule`]: a rule as the dataflows run it (parsed from files by the `kairos` crate);
//! - [`country`] and [`mcc`]: ISO 3166-1 countries and the E.212 MCC table.
//!
//! This crate does no I/O and has no opinion about where events come from.

pub mod action;
pub mod country;
pub mod event;
pub mod mcc;
pub mod rule;
pub mod time;

pub use action::{Action, Channel, Decision, SuppressReason, Verdict};
pub use event::{
    CountryCode, Customer, CustomerRecord, Event, EventBody, EventKind, Msisdn, Network, NetworkKind, Origin, TimeZone,
};
pub use rule::{
    ActionClass, ChurnFactor, ChurnModel, MomentKind, Policy, Rule, RuleSet, Service, Stage, StageRule, Stages,
    Stickiness,
};
pub use time::Millis;
