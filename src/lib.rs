//! kairos: a triggered-marketing engine for telecom operators.
//!
//! The modules follow the data flow (see `ARCHITECTURE.md`):
//!
//! ```text
//! ingest (files | Kafka) → decode → dataflows (kairos-dataflows) → sinks (files | Kafka)
//!                             └── errors → dead-letter
//! ```
//!
//! [`pipeline`] wires them, once, for both modes: `kairos replay` and `kairos run` run the
//! same dataflow and differ only at the edges. [`rules`] turns rule files into the rule set
//! the dataflow runs; [`config`] reads `kairos run`'s configuration; [`telemetry`] names
//! every metric. [`report`] reads the engine's decisions back (`kairos report uplift`,
//! `kairos rules try`, `kairos report summary`); [`progress`] shows how far long work has
//! come, on stderr.

pub mod admin;
pub mod config;
pub mod decode;
pub mod fuzzing;
pub mod ingest;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod rules;
pub mod sinks;
pub mod state;
pub mod telemetry;
